r"""Data-parallel training of the recommender's learners from logs: DDP-style gradient all-reduce
with ``torch.distributed`` over gloo on CPUs (:class:`DataParallel`, :func:`run_data_parallel`).

W worker processes each hold a replica of the model (rank 0's parameters are broadcast at the
start). Every rank draws the *same* global minibatch of B rows a single worker would draw — the same
seeded chunk order and row permutation (:func:`recsys.training.fit_offline`) — and takes its rows
:math:`r, r+W, r+2W, \dots` (:meth:`DataParallel.shard`): :math:`n_r` of them. Its learner computes
the mean loss over its rows, :math:`\bar\ell_r = \frac1{n_r}\sum_{i\in r}\ell_i`, and before the
optimizer steps the gradients are all-reduced with weights :math:`n_r/B`:

.. math::  g = \sum_r \frac{n_r}{B}\,\nabla\bar\ell_r = \nabla\,\frac1B\sum_{i=1}^{B}\ell_i,

the single worker's gradient at global batch B (one flat all-reduce per step). The reported metrics
are reduced the same way, so the loss curve is the global batch's. Same seed, same data → the same
loss curve as one worker up to float rounding (summation order), which the tests check.

What it parallelises is the forward/backward pass (each rank does 1/W of the rows); each rank still
reads and decodes the whole log (every rank needs every minibatch's row indices), and pays one
all-reduce of |θ| floats per step. The processes meet through a rendezvous file (torch's TCP
store would listen on every interface) and talk over gloo on the loopback interface only: one
machine's worth of workers (across machines the same code needs a TCP rendezvous on the nodes'
network, e.g. under ``torchrun`` or Ray Train).

This is exact for learners whose loss is a mean of per-row terms and that step their optimizer once
per minibatch with nothing else batch-dependent (behaviour cloning / the propensity model,
:meth:`recsys.logs.PropensityModel.fit`); a learner with batch statistics (a mean baseline) or
gradient clipping needs those reduced too before it can use this.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from core_rl.common.errors import ConfigError

LOOPBACK_INTERFACE = "lo"


@dataclass
class DataParallel:
    """One rank's view of the data-parallel group (``world`` processes, this one ``rank``)."""

    rank: int
    world: int
    rows: int = 0  # rows this rank took from the current global minibatch
    total: int = 0  # rows of the current global minibatch
    steps: int = 0
    comm_seconds: float = 0.0  # wall time spent in all-reduces

    @property
    def weight(self) -> float:
        return self.rows / self.total if self.total else 0.0

    def shard(
        self, batches: Callable[[Any, torch.Generator], Iterable[Any]]
    ) -> Callable[[Any, torch.Generator], Iterator[Any]]:
        """Wrap a learner's ``(chunk, generator) → minibatches`` (tuples of row-first tensors) so that
        this rank gets rows ``rank::world`` of each global minibatch."""

        def sharded(chunk: Any, generator: torch.Generator) -> Iterator[Any]:
            for batch in batches(chunk, generator):
                self.total = int(batch[0].shape[0])
                part = tuple(x[self.rank :: self.world] for x in batch)
                self.rows = int(part[0].shape[0])
                yield part

        return sharded

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Every rank starts from rank 0's parameters."""
        for p in module.parameters():
            dist.broadcast(p.data, src=0)

    def all_reduce_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """``grad ← Σ_r (n_r/B) grad_r`` over the ranks, as one flat buffer."""
        w = self.weight
        flat = torch.cat(
            [(p.grad.reshape(-1) * w if (p.grad is not None and w > 0) else torch.zeros(p.numel())) for p in params]
        )
        t0 = time.perf_counter()
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        self.comm_seconds += time.perf_counter() - t0
        start = 0
        for p in params:
            n = p.numel()
            p.grad = flat[start : start + n].view_as(p).clone()
            start += n
        self.steps += 1

    def optimizer(self, opt: torch.optim.Optimizer) -> "AllReduceOptimizer":
        return AllReduceOptimizer(opt, self)

    def reduce_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """The global minibatch's metrics: ``Σ_r (n_r/B) m_r`` (metrics that are means over rows)."""
        if not metrics:
            return metrics
        keys = sorted(metrics)
        w = self.weight
        vals = torch.tensor([metrics[k] * w if w > 0 else 0.0 for k in keys], dtype=torch.float64)
        dist.all_reduce(vals, op=dist.ReduceOp.SUM)
        return dict(zip(keys, vals.tolist(), strict=True))


class AllReduceOptimizer:
    """An optimizer whose ``step`` first all-reduces the gradients (:meth:`DataParallel.all_reduce_gradients`)."""

    def __init__(self, opt: torch.optim.Optimizer, group: DataParallel):
        self.opt, self.group = opt, group
        self.params = [p for g in opt.param_groups for p in g["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.group.all_reduce_gradients(self.params)
        self.opt.step()


# ---- launching W processes ---------------------------------------------------------------------------
@dataclass
class RankResult:
    """What one rank's job returned, with its CPU and wall seconds and time in all-reduces."""

    rank: int
    value: Any
    cpu_seconds: float
    wall_seconds: float
    comm_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def _rank_main(rank: int, world: int, job: Callable[[DataParallel], Any], out_dir: str) -> None:
    # rendezvous through a file (no TCP store: torch's listens on every interface); gloo's own
    # connections are pinned to the loopback interface
    os.environ["GLOO_SOCKET_IFNAME"] = LOOPBACK_INTERFACE
    dist.init_process_group("gloo", init_method=f"file://{Path(out_dir) / 'rendezvous'}", rank=rank, world_size=world)
    group = DataParallel(rank, world)
    try:
        dist.barrier()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        value = job(group)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        torch.save(RankResult(rank, value, cpu, wall, group.comm_seconds), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_data_parallel(job: Callable[[DataParallel], Any], workers: int, timeout_s: float = 600.0) -> list[RankResult]:
    """Run ``job(group)`` in ``workers`` processes joined by gloo on loopback; every rank's result, by rank.

    ``job`` must be picklable (a module-level function or a dataclass with ``__call__``). A rank that
    fails makes this raise with its error (``torch.multiprocessing`` re-raises it here)."""
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="recsys-ddp-") as out_dir:
        ctx = mp.start_processes(
            _rank_main, args=(workers, job, out_dir), nprocs=workers, join=False, start_method="spawn"
        )
        deadline = time.monotonic() + timeout_s
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                for p in ctx.processes:
                    p.kill()
                raise TimeoutError(f"data-parallel job did not finish in {timeout_s:.0f} s")
        return [torch.load(Path(out_dir) / f"rank{r}.pt", weights_only=False) for r in range(workers)]


# ---- the recommender's learner as a data-parallel job ----------------------------------------------------
BC_COLUMNS = ("session_id", "step", "user_features", "candidate_features", "slate", "click_position", "engagement")


@dataclass
class BehaviorCloningJob:
    """Behaviour cloning (:class:`recsys.offline.BehaviorCloning`) of an ingested log, one rank's part.

    Returns the per-step NLL of the global minibatch (``curve``), the epoch history, the final
    parameters, the rows trained on (epochs × log rows) and the fit's own CPU and wall seconds
    (``fit_cpu_s``, ``fit_wall_s``: without the process start and imports) and the clocks at every
    step (``clocks``: (CPU s, wall s)). ``group=None`` runs it as one plain worker."""

    log: str
    config: dict[str, Any]
    chunk_rows: int = 65_536

    def __call__(self, group: DataParallel | None = None) -> dict[str, Any]:
        from recsys.logs import LogReader
        from recsys.offline import BehaviorCloning

        reader = LogReader(self.log, chunk_rows=self.chunk_rows, columns=BC_COLUMNS)
        tracker = StepCurve("bc_nll")
        bc = BehaviorCloning(reader.layout, reader.meta.slate_size, self.config, tracker=tracker)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        bc.fit(reader, data_parallel=group, log_every=1)
        return {
            "fit_cpu_s": time.process_time() - cpu0,
            "fit_wall_s": time.perf_counter() - wall0,
            "curve": tracker.values,
            "clocks": tracker.clocks,
            "history": bc.history,
            "state": {k: v.clone() for k, v in bc.model.state_dict().items()},
            "rows": reader.num_rows * bc.config.epochs,
        }


class StepCurve:
    """A tracker that keeps one metric of every step (not the epoch means, which carry ``epoch``) and
    the process's CPU and wall clocks at each (steady-state rates leave out the first steps' warm-up)."""

    def __init__(self, key: str):
        self.key = key
        self.values: list[float] = []
        self.clocks: list[tuple[float, float]] = []

    def log_params(self, params: Any) -> None:
        pass

    def log_metrics(self, metrics: Any, step: int) -> None:
        if self.key in metrics and "epoch" not in metrics:
            self.values.append(float(metrics[self.key]))
            self.clocks.append((time.process_time(), time.perf_counter()))

    def log_artifact(self, path: Any, artifact_path: str | None = None) -> None:
        pass

    def log_figure(self, figure: Any, name: str) -> None:
        pass


__all__ = [
    "BehaviorCloningJob",
    "StepCurve",
    "DataParallel",
    "AllReduceOptimizer",
    "RankResult",
    "run_data_parallel",
]
