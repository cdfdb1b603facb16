"""The chunked reader (:class:`LogReader`): :class:`LogChunk` s of whole session segments, flat memory."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from core_rl.common.errors import ConfigError
from recsys.logs.schema import REQUIRED, LogMeta, LogSchemaError, _list_matrix, _scalar, read_meta
from recsys.policies.types import ObsLayout, SlateObs


# ---- reading -------------------------------------------------------------------------------------
@dataclass
class LogChunk:
    """Rows of whole segments (runs of consecutive steps of one session), as tensors."""

    session: torch.Tensor  # [B] int64
    step: torch.Tensor  # [B] int64
    user: torch.Tensor  # [B, U]
    docs: torch.Tensor  # [B, C, F]
    slate: torch.Tensor  # [B, K] int64
    click: torch.Tensor  # [B] int64: clicked position, K = no click (the env's convention)
    engagement: torch.Tensor  # [B] float32
    terminated: torch.Tensor  # [B] bool
    doc_ids: torch.Tensor | None = None
    slate_propensity: torch.Tensor | None = None  # [B] float64
    position_propensity: torch.Tensor | None = None  # [B, K] float64
    oracle_logit: torch.Tensor | None = None  # [B, C]
    oracle_no_click: torch.Tensor | None = None  # [B]
    oracle_engagement: torch.Tensor | None = None  # [B, C]
    row: torch.Tensor | None = None  # [B] row number in the file

    def __len__(self) -> int:
        return int(self.session.shape[0])

    @property
    def slate_size(self) -> int:
        return int(self.slate.shape[1])

    @property
    def has_next(self) -> torch.Tensor:
        """Row i+1 is the next step of row i's session."""
        nxt = torch.zeros(len(self), dtype=torch.bool)
        if len(self) > 1:
            nxt[:-1] = (self.session[1:] == self.session[:-1]) & (self.step[1:] == self.step[:-1] + 1)
        return nxt

    @property
    def segment(self) -> torch.Tensor:
        """Segment id 0..E-1 of each row (a new one wherever ``has_next`` of the previous row is False)."""
        start = torch.ones(len(self), dtype=torch.bool)
        if len(self) > 1:
            start[1:] = ~self.has_next[:-1]
        return torch.cumsum(start.long(), 0) - 1

    @property
    def clicked(self) -> torch.Tensor:
        return self.click < self.slate_size

    def obs(self) -> SlateObs:
        return SlateObs(self.user, self.docs, self.doc_ids)

    def info(self) -> dict[str, np.ndarray] | None:
        """The simulator info of each row's context (oracle columns), for oracle policies."""
        out: dict[str, np.ndarray] = {}
        if self.doc_ids is not None:
            out["candidate_doc_id"] = self.doc_ids.numpy()
        if self.oracle_logit is not None:
            out.update(
                candidate_choice_logit=self.oracle_logit.numpy(),
                no_click_logit=self.oracle_no_click.numpy(),  # type: ignore[union-attr]
                candidate_engagement=self.oracle_engagement.numpy(),
            )  # type: ignore[union-attr]
        return out

    def reward_to_go(self, gamma: float) -> torch.Tensor:
        """Σ_{t'≥t} γ^{t'−t} r_{t'} within each segment, ``[B]`` (the core's EpisodeBatch)."""
        from core_rl.policy_gradient.reinforce import EpisodeBatch

        seg = self.segment
        n_seg = int(seg.max()) + 1 if len(self) else 0
        starts = torch.ones(len(self), dtype=torch.bool)
        starts[1:] = seg[1:] != seg[:-1]
        local = torch.arange(len(self)) - starts.nonzero().squeeze(1)[seg]
        empty = torch.zeros(len(self), 0)
        batch = EpisodeBatch(
            obs=empty,
            actions=empty,
            log_probs=empty,
            rewards=self.engagement.float(),
            episode=seg,
            step=local,
            n_episodes=n_seg,
        )
        return batch.reward_to_go(gamma)

    def index(self, rows: torch.Tensor) -> "LogChunk":
        def pick(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x[rows]

        fields = {name: pick(getattr(self, name)) for name in self.__dataclass_fields__}
        return LogChunk(**fields)  # type: ignore[arg-type]

    def slice(self, start: int, stop: int) -> "LogChunk":
        """Rows ``start:stop`` as views of this chunk's tensors."""
        fields = {
            name: None if getattr(self, name) is None else getattr(self, name)[start:stop]
            for name in self.__dataclass_fields__
        }
        return LogChunk(**fields)  # type: ignore[arg-type]

    @staticmethod
    def concat(chunks: Sequence["LogChunk"]) -> "LogChunk":
        def cat(name: str) -> torch.Tensor | None:
            xs = [getattr(c, name) for c in chunks]
            return None if any(x is None for x in xs) else torch.cat(xs)

        return LogChunk(**{name: cat(name) for name in LogChunk.__dataclass_fields__})  # type: ignore[arg-type]


TRAIN_COLUMNS = (
    "session_id",
    "step",
    "user_features",
    "candidate_features",
    "slate",
    "click_position",
    "engagement",
    "terminated",
    "slate_propensity",
    "position_propensity",
    "candidate_doc_ids",
)
ORACLE_COLUMNS = ("oracle_candidate_logit", "oracle_no_click_logit", "oracle_candidate_engagement")


class LogReader:
    """Chunked reading of a validated log: memory holds one chunk (plus one segment) at a time.

    ``columns`` limits what is decoded (default: everything but the oracle columns unless
    ``oracle=True``). With ``shuffle`` (needs a session-aligned file, which this module writes),
    row groups are visited in a seeded random order.
    """

    def __init__(
        self, path: str | Path, chunk_rows: int = 65_536, oracle: bool = False, columns: Sequence[str] | None = None
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"log file '{self.path}' does not exist")
        try:
            self.file = pq.ParquetFile(str(self.path), pre_buffer=False)
        except (pa.ArrowInvalid, OSError) as exc:
            raise LogSchemaError(f"'{self.path}' is not a parquet file: {exc}") from None
        meta = read_meta(self.path)
        if meta is None:
            raise LogSchemaError(
                f"'{self.path}' has no deeprl.recsys metadata: ingest it first "
                "(deeprl recsys ingest / recsys.logs.ingest_logs)"
            )
        self.meta = meta
        self.chunk_rows = int(chunk_rows)
        names = set(self.file.schema_arrow.names)
        wanted = (
            list(columns) if columns is not None else list(TRAIN_COLUMNS) + (list(ORACLE_COLUMNS) if oracle else [])
        )
        self.columns = [c for c in wanted if c in names]
        missing = [c for c in REQUIRED if c not in names]
        if missing:
            raise LogSchemaError(f"log file '{self.path}' lacks required column(s) {', '.join(missing)}")

    @property
    def num_rows(self) -> int:
        return int(self.file.metadata.num_rows)

    @property
    def layout(self) -> ObsLayout:
        return self.meta.layout

    def _to_chunk(self, table: pa.Table | pa.RecordBatch, first_row: int) -> LogChunk:
        return table_to_chunk(table, self.meta, first_row)

    def __iter__(self) -> Iterator[LogChunk]:
        return self.chunks()

    def chunks(self, shuffle: bool = False, seed: int = 0) -> Iterator[LogChunk]:
        """Chunks of whole segments; ``shuffle`` visits row groups in a seeded random order."""
        if shuffle and self.meta.session_aligned:
            yield from self._row_group_chunks(seed)
            return
        carry: LogChunk | None = None
        first = 0
        for batch in self.file.iter_batches(batch_size=self.chunk_rows, columns=self.columns):
            chunk = self._to_chunk(batch, first)
            first += batch.num_rows
            if carry is not None:
                chunk = LogChunk.concat([carry, chunk])
            seg = chunk.segment
            last_start = int((seg == seg[-1]).nonzero()[0])
            if last_start == 0 and len(chunk) < 4 * self.chunk_rows:
                carry = chunk  # one long segment so far: keep reading
                continue
            if last_start == 0:  # a segment longer than 4 chunks is cut (one transition lost)
                carry = None
                yield chunk
                continue
            carry = chunk.index(torch.arange(last_start, len(chunk)))  # a small copy: the chunk can go
            yield chunk.slice(0, last_start)  # a view: no copy
        if carry is not None and len(carry):
            yield carry

    def _row_group_chunks(self, seed: int) -> Iterator[LogChunk]:
        md = self.file.metadata
        starts = np.concatenate([[0], np.cumsum([md.row_group(i).num_rows for i in range(md.num_row_groups)])])
        order = np.random.default_rng(seed).permutation(md.num_row_groups)
        pending: list[LogChunk] = []
        size = 0
        for g in order:
            table = self.file.read_row_group(int(g), columns=self.columns)
            pending.append(self._to_chunk(table, int(starts[g])))
            size += table.num_rows
            if size >= self.chunk_rows:
                yield LogChunk.concat(pending) if len(pending) > 1 else pending[0]
                pending, size = [], 0
        if pending:
            yield LogChunk.concat(pending) if len(pending) > 1 else pending[0]

    def read_all(self) -> LogChunk:
        """The whole file as one chunk (small logs only)."""
        return LogChunk.concat(list(self.chunks()))


def table_to_chunk(table: pa.Table | pa.RecordBatch, meta: LogMeta, first_row: int = 0) -> LogChunk:
    """Rows of a validated log (``meta``: its :class:`LogMeta`) as a :class:`LogChunk`; ``first_row``: the
    first row's number in the log."""
    m = meta
    n = table.num_rows
    col = {name: table.column(name) for name in table.schema.names}
    t = torch.from_numpy

    def lst(name: str, width: int, dtype: Any) -> np.ndarray:
        return _list_matrix(col[name], width, dtype)

    click = _scalar(col["click_position"], np.int64)
    click = np.where(click < 0, m.slate_size, click)
    has = lambda name: name in col and col[name].null_count < n  # noqa: E731
    return LogChunk(
        session=t(_scalar(col["session_id"], np.int64)),
        step=t(_scalar(col["step"], np.int64)),
        user=t(lst("user_features", m.user_dim, np.float32)).reshape(n, m.user_dim),
        docs=t(lst("candidate_features", m.num_candidates * m.doc_dim, np.float32)).reshape(
            n, m.num_candidates, m.doc_dim
        ),
        slate=t(lst("slate", m.slate_size, np.int64)),
        click=t(click),
        engagement=t(_scalar(col["engagement"], np.float32)),
        terminated=t(_scalar(col["terminated"], bool)) if "terminated" in col else torch.zeros(n, dtype=torch.bool),
        doc_ids=t(lst("candidate_doc_ids", m.num_candidates, np.int64)) if has("candidate_doc_ids") else None,
        slate_propensity=t(_scalar(col["slate_propensity"], np.float64)) if has("slate_propensity") else None,
        position_propensity=(
            t(lst("position_propensity", m.slate_size, np.float64)) if has("position_propensity") else None
        ),
        oracle_logit=t(lst("oracle_candidate_logit", m.num_candidates, np.float32))
        if has("oracle_candidate_logit")
        else None,
        oracle_no_click=(
            t(_scalar(col["oracle_no_click_logit"], np.float32)) if has("oracle_no_click_logit") else None
        ),
        oracle_engagement=t(lst("oracle_candidate_engagement", m.num_candidates, np.float32))
        if has("oracle_candidate_engagement")
        else None,
        row=torch.arange(first_row, first_row + n, dtype=torch.int64),
    )


def read_logs_frame(path: str | Path) -> Any:
    """The whole log as a pandas DataFrame (list columns as arrays; small logs only)."""
    return pq.read_table(str(path)).to_pandas()
