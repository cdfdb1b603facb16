"""The learned logging policy μ̂(A|x) (:class:`PropensityModel`): Plackett–Luce over an MLP score."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from core_rl.common.distributions import plackett_luce_log_prob
from core_rl.common.tracking import NullTracker, Tracker
from recsys.logs.generate import LogWriter
from recsys.logs.reader import LogReader
from recsys.logs.schema import LogMeta, _list_matrix, _scalar, _state_to_json
from recsys.policies.baselines import PlackettLucePolicy, ScoreFn
from recsys.training import fit_offline, row_batches


# ---- the learned logging policy ------------------------------------------------------------------
class PropensityModel(torch.nn.Module):
    """μ̂(A | x): a Plackett–Luce policy over an MLP score s_ψ(x, i), fitted by maximum likelihood
    of the logged ordered slates, streaming over chunks (the "β" of off-policy correction)."""

    def __init__(self, user_dim: int, doc_dim: int, hidden_sizes: tuple[int, ...] = (64, 64), seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.score = ScoreFn(user_dim, doc_dim, hidden_sizes, "relu")

    def log_prob(self, user: torch.Tensor, docs: torch.Tensor, slates: torch.Tensor) -> torch.Tensor:
        return plackett_luce_log_prob(self.score(user, docs), slates)

    def fit(
        self,
        reader: Any,
        epochs: int = 3,
        batch_size: int = 512,
        lr: float = 3e-3,
        seed: int = 0,
        tracker: Tracker | None = None,
        history: list[dict[str, float]] | None = None,
        metric: str = "nll",
        data_parallel: Any | None = None,
        log_every: int = 0,
    ) -> "PropensityModel":
        """Maximum likelihood of the logged ordered slates, min_ψ −(1/B) Σ_b log μ_ψ(A_b | x_b), by
        :func:`~recsys.training.fit_offline` (the NLL is tracked as ``metric``).

        ``data_parallel`` (a :class:`recsys.data_parallel.DataParallel`, inside a process group): this
        rank takes its share of every global minibatch of ``batch_size`` rows and the gradients and
        metrics are all-reduced, so the W ranks follow the single worker's loss curve. ``log_every`` > 0
        sends every ``log_every``-th step's ``metric`` to the tracker."""
        dp = data_parallel
        opt: Any = torch.optim.Adam(self.parameters(), lr=lr)

        def batches(chunk: Any, generator: torch.Generator) -> Any:
            for rows in row_batches(chunk, generator, batch_size):
                yield chunk.user[rows], chunk.docs[rows], chunk.slate[rows]

        def step(batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> dict[str, float]:
            loss = -self.log_prob(*batch).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            metrics = {metric: float(loss.detach())}
            return metrics if dp is None else dp.reduce_metrics(metrics)

        if dp is not None:
            dp.broadcast_parameters(self)
            opt, batches = dp.optimizer(opt), dp.shard(batches)
        fit_offline(
            reader, epochs, seed, batches, step, tracker or NullTracker(), [] if history is None else history, log_every
        )
        return self

    def fit_file(
        self,
        path: str | Path,
        epochs: int = 3,
        chunk_rows: int = 65_536,
        batch_size: int = 512,
        lr: float = 3e-3,
        seed: int = 0,
    ) -> tuple[float, float]:
        """Streaming SGD over the file; returns (mean NLL per slate, uniform policy's NLL)."""
        reader = LogReader(
            path,
            chunk_rows=chunk_rows,
            columns=(
                "session_id",
                "step",
                "user_features",
                "candidate_features",
                "slate",
                "click_position",
                "engagement",
            ),
        )
        self.fit(reader, epochs, batch_size, lr, seed)
        total, count = 0.0, 0
        with torch.no_grad():
            for chunk in reader.chunks():
                total += float(-self.log_prob(chunk.user, chunk.docs, chunk.slate).sum())
                count += len(chunk)
        m = reader.meta
        uniform = math.log(math.perm(m.num_candidates, m.slate_size))
        return total / max(count, 1), uniform

    def as_policy(self, num_candidates: int, slate_size: int) -> PlackettLucePolicy:
        return PlackettLucePolicy(num_candidates, slate_size, self.score)

    def annotate(self, source: str | Path, output: str | Path, chunk_rows: int = 65_536) -> None:
        """Copy ``source`` to ``output`` adding the model's ``slate_propensity``/``position_propensity``."""
        reader = LogReader(source, chunk_rows=chunk_rows, oracle=True, columns=None)
        m = reader.meta
        policy = self.as_policy(m.num_candidates, m.slate_size)
        meta = m.model_copy(
            update={
                "propensity_source": "estimated",
                "logging_policy": {
                    "kind": policy.kind,
                    "spec": policy.spec(),
                    "state": _state_to_json(policy.state()),
                    "description": "estimated Plackett-Luce logging model",
                },
            }
        )
        pf = pq.ParquetFile(str(source), pre_buffer=False)
        with LogWriter(output, meta) as writer:
            for g in range(pf.metadata.num_row_groups):
                table = pf.read_row_group(g)
                chunk = reader._to_chunk(table, 0)
                with torch.no_grad():
                    scores = self.score(chunk.user, chunk.docs).double()
                    prop = plackett_luce_log_prob(scores, chunk.slate).exp().clamp_min(1e-300)
                    if policy._can_enumerate():
                        pos = policy._position_marginals(scores).gather(1, policy._pos_index(chunk.slate))
                    else:
                        pos = torch.full(chunk.slate.shape, torch.nan, dtype=torch.float64)
                cols = {name: _column_numpy(table.column(name), name, m) for name in table.schema.names}
                cols["slate_propensity"] = prop.numpy()
                cols["position_propensity"] = pos.numpy()
                writer.write(cols)


def _column_numpy(arr: pa.ChunkedArray, name: str, m: LogMeta) -> np.ndarray:
    widths = {
        "user_features": m.user_dim,
        "candidate_features": m.num_candidates * m.doc_dim,
        "candidate_doc_ids": m.num_candidates,
        "slate": m.slate_size,
        "position_propensity": m.slate_size,
        "oracle_candidate_logit": m.num_candidates,
        "oracle_candidate_engagement": m.num_candidates,
    }
    if name in ("candidate_doc_ids", "slate"):
        return _list_matrix(arr, widths[name], np.int64)
    if name in widths:
        return _list_matrix(arr, widths[name], np.float64 if "propensity" in name else np.float32)
    return _scalar(arr, arr.type.to_pandas_dtype())
