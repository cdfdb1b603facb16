r"""Logged slate interactions: the schema, generation from a simulator, ingestion of a user's own
logs (validation, quarantine, propensity estimation) and a chunked reader whose memory stays flat.

**Schema** (one parquet row per served slate; ``docs/recsys.md`` has the full table). Rows of a
session are contiguous and in step order. ``U`` user features, ``C`` candidates of ``F`` features,
slates of ``K``:

=========================  ========================  ==================================================
column                     type                      meaning
=========================  ========================  ==================================================
``session_id``             int64                     one user visit (required)
``user_id``                int64                     the user (optional; default the session)
``step``                   int64                     0, 1, … within the session (required)
``user_features``          list<float32>[U]          user features seen by the policy (required)
``candidate_features``     list<float32>[C·F]        candidate table, row-major (or nested [C][F]) (required)
``candidate_doc_ids``      list<int64>[C]            document ids of the candidates (optional)
``slate``                  list<int64>[K]            shown slate: candidate indices by position (required)
``slate_propensity``       float64                   μ(A | x) of the logging policy (optional → estimated)
``position_propensity``    list<float64>[K]          μ(a_k at position k | x) (optional)
``click_position``         int64                     clicked position 0..K−1, or −1 for no click (required)
``engagement``             float64                   engagement earned (0 without a click) (required)
``terminated``             bool                      the session ended after this row (optional)
``oracle_*``               —                         simulator ground truth (generated logs only)
=========================  ========================  ==================================================

The file's key-value metadata ``deeprl.recsys`` (:class:`LogMeta`) records the dimensions, the
feature names, the simulator and config that produced it and the logging policy (kind, spec and
state), so evaluation can rebuild both.

**Ingestion** (:func:`ingest_logs`) streams a parquet file (or a DataFrame) in chunks: structural
problems (a missing column, a column of the wrong type, no way to tell C) raise one
:class:`LogSchemaError` listing every problem; row problems (nulls, wrong list lengths, non-finite
features, slate indices out of range or repeated, a click position out of range, negative
engagement or engagement without a click, propensities outside (0, 1], duplicated
``(session_id, step)``) send the row to a quarantine parquet beside the output, with its source row
and the rules it broke, and are reported as one :class:`Problem` each — column, rule, row count and
first bad row. Nothing is dropped silently: ``rows_in = rows_clean + rows_quarantined``. Logs
without propensities get them from a learned logging-policy model (:class:`PropensityModel`,
Plackett–Luce over an MLP score, fitted by streaming maximum likelihood).

**Reading** (:class:`LogReader`) yields :class:`LogChunk` s of about ``chunk_rows`` rows as torch
tensors. Chunks hold whole *segments* (runs of consecutive steps of one session), so next states
and reward-to-go never cross a chunk; files written here keep whole sessions in each row group,
which also lets the reader visit row groups in a shuffled order.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from pydantic import BaseModel, ConfigDict, Field

from core_rl.common.errors import ConfigError, DeepRLError
from recsys.policies import (
    ObsLayout,
    PlackettLucePolicy,
    ScoreFn,
    SlateObs,
    SlatePolicy,
    plackett_luce_log_prob,
    policy_from_spec,
)

META_KEY = b"deeprl.recsys"
SCHEMA_VERSION = 1


class LogSchemaError(DeepRLError, ValueError):
    """Logs that cannot be read as the schema says (structure or, in strict mode, rows)."""


# ---- the schema ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: str            # int | float | bool | list_float | list_int
    required: bool
    length: str | None   # U, CF, C, K for list columns
    description: str


COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("session_id", "int", True, None, "one user visit; its rows are contiguous and in step order"),
    ColumnSpec("user_id", "int", False, None, "the user (default: the session id)"),
    ColumnSpec("step", "int", True, None, "0, 1, 2, … within the session"),
    ColumnSpec("user_features", "list_float", True, "U", "user features the policy saw"),
    ColumnSpec("candidate_features", "list_float", True, "CF", "candidate feature table [C, F], row-major"),
    ColumnSpec("candidate_doc_ids", "list_int", False, "C", "document id of each candidate"),
    ColumnSpec("slate", "list_int", True, "K", "shown slate: candidate indices by position"),
    ColumnSpec("slate_propensity", "float", False, None, "μ(A|x): logging probability of the ordered slate"),
    ColumnSpec("position_propensity", "list_float", False, "K", "μ(a_k at position k | x) per position"),
    ColumnSpec("click_position", "int", True, None, "clicked slate position 0..K-1, or -1 for no click"),
    ColumnSpec("engagement", "float", True, None, "engagement earned on the click (0 without one)"),
    ColumnSpec("terminated", "bool", False, None, "the session ended (terminated) after this row"),
    ColumnSpec("oracle_candidate_logit", "list_float", False, "C", "simulator choice logit of each candidate"),
    ColumnSpec("oracle_no_click_logit", "float", False, None, "simulator no-click logit"),
    ColumnSpec("oracle_candidate_engagement", "list_float", False, "C", "simulator engagement if clicked"),
)
COLUMN_BY_NAME = {c.name: c for c in COLUMNS}
REQUIRED = tuple(c.name for c in COLUMNS if c.required)


class LogMeta(BaseModel):
    """What a log file says about itself (stored as JSON in the parquet key-value metadata)."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION
    user_dim: int = Field(ge=0)
    num_candidates: int = Field(ge=1)
    doc_dim: int = Field(ge=1)
    slate_size: int = Field(ge=1)
    user_feature_names: list[str] = []
    doc_feature_names: list[str] = []
    env_id: str | None = None
    env_kind: str | None = None          # "ng" | "recsim" (to rebuild the simulator)
    env_config: dict[str, Any] | None = None
    logging_policy: dict[str, Any] | None = None   # {"kind", "spec", "state"} (JSON-able)
    propensity_source: str | None = None            # "logged" | "estimated" | None
    session_aligned: bool = False                   # every row group holds whole sessions
    has_oracle: bool = False

    @property
    def layout(self) -> ObsLayout:
        return ObsLayout(self.user_dim, self.num_candidates, self.doc_dim)

    def arrow_schema(self, oracle: bool | None = None, propensity: bool = True) -> pa.Schema:
        u, c, f, k = self.user_dim, self.num_candidates, self.doc_dim, self.slate_size
        fields = [pa.field("session_id", pa.int64(), False), pa.field("user_id", pa.int64(), False),
                  pa.field("step", pa.int64(), False),
                  pa.field("user_features", pa.list_(pa.float32(), u), False),
                  pa.field("candidate_features", pa.list_(pa.float32(), c * f), False),
                  pa.field("candidate_doc_ids", pa.list_(pa.int64(), c), False),
                  pa.field("slate", pa.list_(pa.int64(), k), False)]
        if propensity:
            fields += [pa.field("slate_propensity", pa.float64(), False),
                       pa.field("position_propensity", pa.list_(pa.float64(), k), True)]
        fields += [pa.field("click_position", pa.int64(), False), pa.field("engagement", pa.float64(), False),
                   pa.field("terminated", pa.bool_(), False)]
        if self.has_oracle if oracle is None else oracle:
            fields += [pa.field("oracle_candidate_logit", pa.list_(pa.float32(), c), False),
                       pa.field("oracle_no_click_logit", pa.float32(), False),
                       pa.field("oracle_candidate_engagement", pa.list_(pa.float32(), c), False)]
        return pa.schema(fields, metadata={META_KEY: self.model_dump_json().encode()})

    def logging_policy_object(self) -> SlatePolicy | None:
        """The logging policy rebuilt from the metadata (None if not recorded)."""
        if not self.logging_policy or "spec" not in self.logging_policy:
            return None
        lp = self.logging_policy
        pol = policy_from_spec(lp["kind"], lp["spec"], _state_from_json(lp.get("state", {})))
        pol.layout = self.layout
        return pol

    def make_env(self, num_envs: int, seed: int | None = None) -> Any:
        """The simulator that produced the logs (needs ``env_kind`` and ``env_config``)."""
        from recsys.simulation import InterestEvolutionVectorEnv, RecSimInterestEvolutionVectorEnv

        if self.env_kind is None or self.env_config is None:
            raise ConfigError("these logs do not record the simulator that produced them; pass --env")
        cls = InterestEvolutionVectorEnv if self.env_kind == "ng" else RecSimInterestEvolutionVectorEnv
        return cls(num_envs, config=self.env_config, seed=seed)


def _state_to_json(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return {"__tensor__": state.detach().cpu().reshape(-1).tolist(), "shape": list(state.shape),
                "dtype": str(state.dtype).replace("torch.", "")}
    if isinstance(state, Mapping):
        return {str(k): _state_to_json(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return [_state_to_json(v) for v in state]
    return state


def _state_from_json(state: Any) -> Any:
    if isinstance(state, Mapping):
        if "__tensor__" in state:
            return torch.tensor(state["__tensor__"], dtype=getattr(torch, state["dtype"])).reshape(state["shape"])
        from collections import OrderedDict

        return OrderedDict((k, _state_from_json(v)) for k, v in state.items())
    if isinstance(state, list):
        return [_state_from_json(v) for v in state]
    return state


def env_kind_of(env: Any) -> str | None:
    from recsys.simulation import InterestEvolutionConfig, RecSimInterestEvolutionConfig

    cfg = getattr(getattr(env, "unwrapped", env), "config", None)
    if isinstance(cfg, InterestEvolutionConfig):
        return "ng"
    if isinstance(cfg, RecSimInterestEvolutionConfig):
        return "recsim"
    return None


def read_meta(path: str | Path) -> LogMeta | None:
    """The file's :class:`LogMeta`, or None when it has none."""
    schema = pq.read_schema(str(path))
    raw = (schema.metadata or {}).get(META_KEY)
    return None if raw is None else LogMeta.model_validate_json(raw)


# ---- arrow <-> numpy -------------------------------------------------------------------------------
def _fixed(values: np.ndarray, dtype: pa.DataType) -> pa.Array:
    n = values.shape[0]
    width = int(np.prod(values.shape[1:])) if values.ndim > 1 else 1
    flat = pa.array(np.ascontiguousarray(values).reshape(-1), type=dtype)
    return pa.FixedSizeListArray.from_arrays(flat, width) if n or width else pa.array([], pa.list_(dtype, width))


def _list_matrix(arr: pa.Array, width: int, dtype: Any) -> np.ndarray:
    """A list column whose rows all have ``width`` values as an ``[n, width]`` array."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_list(arr.type.value_type) if hasattr(arr.type, "value_type") else False:
        arr = arr.flatten()  # nested [C][F] lists: the inner lists in row-major order
    flat = arr.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    flat = flat if flat.flags.writeable else flat.copy()
    return flat.reshape(len(arr), width)


def _scalar(arr: pa.Array, dtype: Any) -> np.ndarray:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    out = arr.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    return out if out.flags.writeable else out.copy()


# ---- generation ----------------------------------------------------------------------------------
class LogWriter:
    """Appends whole-session tables to a parquet file; every :meth:`write` is one row group."""

    def __init__(self, path: str | Path, meta: LogMeta, compression: str = "zstd"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.meta = meta
        self.schema = meta.arrow_schema()
        self._writer = pq.ParquetWriter(str(self.path), self.schema, compression=compression)
        self.rows = 0

    def write(self, cols: Mapping[str, np.ndarray]) -> None:
        n = len(cols["session_id"])
        if n == 0:
            return
        arrays = []
        for f in self.schema:
            v = cols.get(f.name)
            if v is None and f.name == "position_propensity":
                arrays.append(pa.nulls(n, f.type))
                continue
            if v is None:
                raise ConfigError(f"log column '{f.name}' was not produced")
            if pa.types.is_fixed_size_list(f.type):
                arrays.append(_fixed(np.asarray(v).reshape(n, -1), f.type.value_type))
            else:
                arrays.append(pa.array(np.asarray(v), type=f.type))
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema), row_group_size=max(n, 1))
        self.rows += n

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> "LogWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass
class GenerateResult:
    path: Path
    rows: int
    sessions: int
    mean_session_engagement: float
    mean_step_engagement: float
    meta: LogMeta


def generate_logs(env: Any, policy: SlatePolicy, path: str | Path, sessions: int, seed: int = 0,
                  include_oracle: bool = True, env_id: str | None = None,
                  rows_per_group: int = 50_000) -> GenerateResult:
    """Run ``policy`` in the vector ``env`` for ``sessions`` whole sessions and write the log.

    Each of the env's N user slots runs a fixed quota of sessions (so short sessions are not
    favoured); rows are buffered and written session-complete, sorted by (session, step).
    """
    if sessions < 1:
        raise ConfigError(f"sessions must be positive, got {sessions}")
    base = getattr(env, "unwrapped", env)
    layout = ObsLayout.from_env(env)
    policy.layout = layout
    try:  # the logging policy is recorded when it can be rebuilt from a spec (not from a bare function)
        recorded: dict[str, Any] = {"kind": policy.kind, "spec": policy.spec(),
                                    "state": _state_to_json(policy.state()), "description": policy.describe()}
    except (ConfigError, AttributeError, TypeError):
        recorded = {"kind": policy.kind, "description": policy.describe()}
    meta = LogMeta(user_dim=layout.user_dim, num_candidates=layout.num_candidates, doc_dim=layout.doc_dim,
                   slate_size=int(base.slate_size), user_feature_names=list(base.user_feature_names),
                   doc_feature_names=list(base.doc_feature_names), env_id=env_id, env_kind=env_kind_of(env),
                   env_config=base.config.model_dump(mode="json"),
                   logging_policy=recorded,
                   propensity_source="logged", session_aligned=True, has_oracle=include_oracle)
    n = env.num_envs
    quota = np.full(n, sessions // n) + (np.arange(n) < sessions % n)
    slot_session = np.arange(n, dtype=np.int64)
    next_session = n
    ep_len = np.zeros(n, dtype=np.int64)
    finished = np.zeros(sessions + n + 1, dtype=bool)
    buffer: list[dict[str, np.ndarray]] = []
    ready_rows = 0          # buffered rows of finished sessions
    total_eng = 0.0
    total_rows = 0
    done_sessions = 0
    obs, info = env.reset(seed=seed)
    k = int(base.slate_size)
    with LogWriter(path, meta) as writer:
        def flush(final: bool) -> None:
            nonlocal buffer, ready_rows
            if not buffer:
                return
            cols = {key: np.concatenate([b[key] for b in buffer]) for key in buffer[0]}
            ready = finished[cols["session_id"]]
            order = np.flatnonzero(ready)
            order = order[np.argsort(cols["session_id"][order], kind="stable")]
            writer.write({key: v[order] for key, v in cols.items()})
            rest = np.flatnonzero(~ready)
            buffer = [{key: v[rest] for key, v in cols.items()}] if (len(rest) and not final) else []
            ready_rows = 0

        while quota.sum() > 0:
            decision = policy(obs, info)
            slates = decision.numpy()
            active = np.flatnonzero(quota > 0)
            row = {
                "session_id": slot_session[active].copy(), "user_id": slot_session[active].copy(),
                "step": ep_len[active].copy(),
                "user_features": np.asarray(obs["user"], dtype=np.float32)[active].reshape(len(active), -1),
                "candidate_features": np.asarray(obs["doc"], dtype=np.float32)[active].reshape(len(active), -1),
                "candidate_doc_ids": np.asarray(info["candidate_doc_id"], dtype=np.int64)[active],
                "slate": slates[active],
                "slate_propensity": decision.slate_propensity.numpy()[active],
                "position_propensity": decision.position_propensity.numpy()[active],
            }
            if include_oracle:
                row["oracle_candidate_logit"] = np.asarray(info["candidate_choice_logit"], dtype=np.float32)[active]
                row["oracle_no_click_logit"] = np.asarray(info["no_click_logit"], dtype=np.float32)[active]
                row["oracle_candidate_engagement"] = np.asarray(info["candidate_engagement"], dtype=np.float32)[active]
            obs, reward, terminated, truncated, info = env.step(slates)
            choice = np.asarray(info["choice"])
            row["click_position"] = np.where(choice[active] >= k, -1, choice[active]).astype(np.int64)
            row["engagement"] = np.asarray(reward, dtype=np.float64)[active]
            row["terminated"] = np.asarray(terminated, dtype=bool)[active]
            buffer.append(row)
            total_eng += float(row["engagement"].sum())
            total_rows += len(active)
            ep_len += 1
            ended = np.asarray(terminated | truncated)
            done_active = ended & (quota > 0)
            if done_active.any():
                finished[slot_session[done_active]] = True
                ready_rows += int(ep_len[done_active].sum())
                quota[done_active] -= 1
                done_sessions += int(done_active.sum())
            if ended.any():
                idx = np.flatnonzero(ended)
                slot_session[idx] = next_session + np.arange(len(idx))
                next_session += len(idx)
                if next_session >= finished.shape[0]:
                    finished = np.concatenate([finished, np.zeros(finished.shape[0], dtype=bool)])
                ep_len[idx] = 0
            if ready_rows >= rows_per_group:
                flush(final=False)
        flush(final=True)
    return GenerateResult(Path(path), total_rows, done_sessions, total_eng / max(done_sessions, 1),
                          total_eng / max(total_rows, 1), meta)


# ---- reading -------------------------------------------------------------------------------------
@dataclass
class LogChunk:
    """Rows of whole segments (runs of consecutive steps of one session), as tensors."""

    session: torch.Tensor          # [B] int64
    step: torch.Tensor             # [B] int64
    user: torch.Tensor             # [B, U]
    docs: torch.Tensor             # [B, C, F]
    slate: torch.Tensor            # [B, K] int64
    click: torch.Tensor            # [B] int64: clicked position, K = no click (the env's convention)
    engagement: torch.Tensor       # [B] float32
    terminated: torch.Tensor       # [B] bool
    doc_ids: torch.Tensor | None = None
    slate_propensity: torch.Tensor | None = None      # [B] float64
    position_propensity: torch.Tensor | None = None   # [B, K] float64
    oracle_logit: torch.Tensor | None = None          # [B, C]
    oracle_no_click: torch.Tensor | None = None       # [B]
    oracle_engagement: torch.Tensor | None = None     # [B, C]
    row: torch.Tensor | None = None                   # [B] row number in the file

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
            out.update(candidate_choice_logit=self.oracle_logit.numpy(),
                       no_click_logit=self.oracle_no_click.numpy(),  # type: ignore[union-attr]
                       candidate_engagement=self.oracle_engagement.numpy())  # type: ignore[union-attr]
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
        batch = EpisodeBatch(obs=empty, actions=empty, log_probs=empty, rewards=self.engagement.float(),
                             episode=seg, step=local, n_episodes=n_seg)
        return batch.reward_to_go(gamma)

    def index(self, rows: torch.Tensor) -> "LogChunk":
        def pick(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x[rows]

        fields = {name: pick(getattr(self, name)) for name in self.__dataclass_fields__}
        return LogChunk(**fields)  # type: ignore[arg-type]

    def slice(self, start: int, stop: int) -> "LogChunk":
        """Rows ``start:stop`` as views of this chunk's tensors."""
        fields = {name: None if getattr(self, name) is None else getattr(self, name)[start:stop]
                  for name in self.__dataclass_fields__}
        return LogChunk(**fields)  # type: ignore[arg-type]

    @staticmethod
    def concat(chunks: Sequence["LogChunk"]) -> "LogChunk":
        def cat(name: str) -> torch.Tensor | None:
            xs = [getattr(c, name) for c in chunks]
            return None if any(x is None for x in xs) else torch.cat(xs)

        return LogChunk(**{name: cat(name) for name in LogChunk.__dataclass_fields__})  # type: ignore[arg-type]


TRAIN_COLUMNS = ("session_id", "step", "user_features", "candidate_features", "slate", "click_position",
                 "engagement", "terminated", "slate_propensity", "position_propensity", "candidate_doc_ids")
ORACLE_COLUMNS = ("oracle_candidate_logit", "oracle_no_click_logit", "oracle_candidate_engagement")


class LogReader:
    """Chunked reading of a validated log: memory holds one chunk (plus one segment) at a time.

    ``columns`` limits what is decoded (default: everything but the oracle columns unless
    ``oracle=True``). With ``shuffle`` (needs a session-aligned file, which this module writes),
    row groups are visited in a seeded random order.
    """

    def __init__(self, path: str | Path, chunk_rows: int = 65_536, oracle: bool = False,
                 columns: Sequence[str] | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"log file '{self.path}' does not exist")
        try:
            self.file = pq.ParquetFile(str(self.path), pre_buffer=False)
        except (pa.ArrowInvalid, OSError) as exc:
            raise LogSchemaError(f"'{self.path}' is not a parquet file: {exc}") from None
        meta = read_meta(self.path)
        if meta is None:
            raise LogSchemaError(f"'{self.path}' has no deeprl.recsys metadata: ingest it first "
                                 "(deeprl recsys ingest / recsys.logs.ingest_logs)")
        self.meta = meta
        self.chunk_rows = int(chunk_rows)
        names = set(self.file.schema_arrow.names)
        wanted = (list(columns) if columns is not None
                  else list(TRAIN_COLUMNS) + (list(ORACLE_COLUMNS) if oracle else []))
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
        m = self.meta
        n = table.num_rows
        col = {name: table.column(name) for name in table.schema.names}
        t = torch.from_numpy

        def lst(name: str, width: int, dtype: Any) -> np.ndarray:
            return _list_matrix(col[name], width, dtype)

        click = _scalar(col["click_position"], np.int64)
        click = np.where(click < 0, m.slate_size, click)
        has = lambda name: name in col and col[name].null_count < n  # noqa: E731
        return LogChunk(
            session=t(_scalar(col["session_id"], np.int64)), step=t(_scalar(col["step"], np.int64)),
            user=t(lst("user_features", m.user_dim, np.float32)).reshape(n, m.user_dim),
            docs=t(lst("candidate_features", m.num_candidates * m.doc_dim, np.float32)).reshape(
                n, m.num_candidates, m.doc_dim),
            slate=t(lst("slate", m.slate_size, np.int64)), click=t(click),
            engagement=t(_scalar(col["engagement"], np.float32)),
            terminated=t(_scalar(col["terminated"], bool)) if "terminated" in col else torch.zeros(n, dtype=torch.bool),
            doc_ids=t(lst("candidate_doc_ids", m.num_candidates, np.int64)) if has("candidate_doc_ids") else None,
            slate_propensity=t(_scalar(col["slate_propensity"], np.float64)) if has("slate_propensity") else None,
            position_propensity=(t(lst("position_propensity", m.slate_size, np.float64))
                                 if has("position_propensity") else None),
            oracle_logit=t(lst("oracle_candidate_logit", m.num_candidates, np.float32))
            if has("oracle_candidate_logit") else None,
            oracle_no_click=(t(_scalar(col["oracle_no_click_logit"], np.float32))
                             if has("oracle_no_click_logit") else None),
            oracle_engagement=t(lst("oracle_candidate_engagement", m.num_candidates, np.float32))
            if has("oracle_candidate_engagement") else None,
            row=torch.arange(first_row, first_row + n, dtype=torch.int64),
        )

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
                carry = chunk      # one long segment so far: keep reading
                continue
            if last_start == 0:    # a segment longer than 4 chunks is cut (one transition lost)
                carry = None
                yield chunk
                continue
            carry = chunk.index(torch.arange(last_start, len(chunk)))   # a small copy: the chunk can go
            yield chunk.slice(0, last_start)                                # a view: no copy
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


def read_logs_frame(path: str | Path) -> Any:
    """The whole log as a pandas DataFrame (list columns as arrays; small logs only)."""
    return pq.read_table(str(path)).to_pandas()


# ---- validation and ingestion --------------------------------------------------------------------
@dataclass
class Problem:
    """One kind of problem in one column: how many rows have it and the first one."""

    column: str
    rule: str
    rows: int = 0
    first_row: int = -1

    def message(self) -> str:
        s = "" if self.rows == 1 else "s"
        return f"column '{self.column}': {self.rows} bad row{s}, {self.rule} (first bad row: {self.first_row})"


@dataclass
class IngestReport:
    source: str
    output: Path | None
    quarantine: Path | None
    rows_in: int = 0
    rows_clean: int = 0
    rows_quarantined: int = 0
    problems: list[Problem] = field(default_factory=list)
    propensity_source: str | None = None
    propensity_nll: float | None = None
    uniform_nll: float | None = None
    meta: LogMeta | None = None

    def lines(self) -> list[str]:
        out = [f"{self.rows_in} rows read from {self.source}: {self.rows_clean} clean, "
               f"{self.rows_quarantined} quarantined" + (f" into {self.quarantine}" if self.rows_quarantined else "")]
        out += ["  " + p.message() for p in self.problems]
        if self.propensity_source == "estimated":
            out.append(f"  propensities estimated by a Plackett–Luce logging model: NLL {self.propensity_nll:.3f} "
                       f"per slate (uniform: {self.uniform_nll:.3f})")
        return out

    def metrics(self) -> dict[str, float]:
        out = {"rows_in": float(self.rows_in), "rows_clean": float(self.rows_clean),
               "rows_quarantined": float(self.rows_quarantined)}
        for p in self.problems:
            out[f"bad_rows.{p.column}"] = out.get(f"bad_rows.{p.column}", 0.0) + p.rows
        return out


_INT_OK = (pa.types.is_integer,)
_FLOAT_OK = (pa.types.is_integer, pa.types.is_floating)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _check_structure(schema: pa.Schema, source: str) -> list[str]:
    problems = []
    for name in REQUIRED:
        if name not in schema.names:
            problems.append(f"column '{name}': missing (every row needs it: {COLUMN_BY_NAME[name].description})")
    for spec in COLUMNS:
        if spec.name not in schema.names:
            continue
        t = schema.field(spec.name).type
        ok = True
        if spec.kind == "int":
            ok = pa.types.is_integer(t)
        elif spec.kind == "float":
            ok = pa.types.is_integer(t) or pa.types.is_floating(t)
        elif spec.kind == "bool":
            ok = pa.types.is_boolean(t) or pa.types.is_integer(t)
        else:
            ok = _is_list(t)
            if ok:
                inner = t.value_type
                if spec.name == "candidate_features" and _is_list(inner):
                    inner = inner.value_type
                want = pa.types.is_integer if spec.kind == "list_int" else (
                    lambda x: pa.types.is_integer(x) or pa.types.is_floating(x))
                ok = bool(want(inner))
        if not ok:
            problems.append(f"column '{spec.name}': type {t} cannot hold {spec.kind.replace('_', ' of ')} values")
    return problems


class _RowChecker:
    """Accumulates row problems over chunks."""

    def __init__(self) -> None:
        self.problems: dict[tuple[str, str], Problem] = {}

    def add(self, column: str, rule: str, bad: np.ndarray, first_row: int, reasons: list[list[str]]) -> None:
        idx = np.flatnonzero(bad)
        if not len(idx):
            return
        p = self.problems.setdefault((column, rule), Problem(column, rule))
        if p.rows == 0:
            p.first_row = first_row + int(idx[0])
        p.rows += len(idx)
        tag = f"{column}: {rule}"
        for i in idx:
            reasons[i].append(tag)


def _lengths(arr: pa.Array) -> np.ndarray:
    if pa.types.is_fixed_size_list(arr.type):
        out = np.full(len(arr), arr.type.list_size, dtype=np.int64)
    else:
        out = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        out = (np.where(np.isnan(out.astype(float)), -1, out) if out.dtype.kind == "f" else out).astype(np.int64)
    if arr.null_count:
        out = np.where(arr.is_null().to_numpy(zero_copy_only=False), -1, out)
    return out


def _gather_rows(arr: pa.Array, ok: np.ndarray, width: int, dtype: Any) -> np.ndarray:
    """``[n, width]`` values of a list column (rows not ``ok`` are filled with 0)."""
    n = len(arr)
    out = np.zeros((n, width), dtype=dtype)
    if not ok.any() or width == 0:
        return out
    if pa.types.is_fixed_size_list(arr.type):
        # nulls in a fixed-size list still occupy slots
        full = arr.values.to_numpy(zero_copy_only=False)[arr.offset * width:(arr.offset + n) * width]
        out[ok] = full.reshape(n, width)[ok].astype(dtype)
        return out
    offsets = arr.offsets.to_numpy(zero_copy_only=False)
    values = arr.values.to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(ok)
    idx = offsets[rows, None] + np.arange(width)[None, :]
    out[rows] = values[idx].astype(dtype)
    return out


def _nested_features(arr: pa.Array, c: int, f: int) -> tuple[np.ndarray, np.ndarray]:
    """Nested ``[C][F]`` candidate features: (values [n, C·F], ok [n])."""
    n = len(arr)
    outer_len = _lengths(arr)
    ok = outer_len == c
    inner = arr.flatten() if not arr.null_count else pc.list_flatten(arr)
    inner_len = _lengths(inner)
    # owner row of each inner list
    owner = np.repeat(np.arange(n), np.where(outer_len < 0, 0, outer_len))
    bad_inner = np.zeros(n, dtype=bool)
    if len(owner):
        np.logical_or.at(bad_inner, owner, inner_len != f)
    ok &= ~bad_inner
    out = np.zeros((n, c * f), dtype=np.float32)
    if ok.any():
        vals = inner.flatten().to_numpy(zero_copy_only=False) if inner.null_count == 0 else \
            pc.list_flatten(inner).to_numpy(zero_copy_only=False)
        inner_start = np.concatenate([[0], np.cumsum(np.where(inner_len < 0, 0, inner_len))])
        outer_start = np.concatenate([[0], np.cumsum(np.where(outer_len < 0, 0, outer_len))])
        rows = np.flatnonzero(ok)
        first_val = inner_start[outer_start[rows]]
        out[rows] = vals[first_val[:, None] + np.arange(c * f)[None, :]].astype(np.float32)
    return out, ok


def _infer_dims(batch: pa.RecordBatch, meta: LogMeta | None, num_candidates: int | None) -> tuple[int, int, int, int]:
    """(U, C, F, K) from metadata, or from the first row that has the lists."""
    if meta is not None:
        return meta.user_dim, meta.num_candidates, meta.doc_dim, meta.slate_size

    def first_len(name: str) -> int | None:
        if name not in batch.schema.names:
            return None
        lens = _lengths(batch.column(name))
        good = lens[lens >= 0]
        return int(np.bincount(good).argmax()) if len(good) else None

    u = first_len("user_features")
    k = first_len("slate")
    cf_type = batch.schema.field("candidate_features").type
    if _is_list(cf_type.value_type):
        c = first_len("candidate_features")
        inner = _lengths(batch.column("candidate_features").flatten())
        f = int(np.bincount(inner[inner >= 0]).argmax()) if len(inner) else None
    else:
        c = first_len("candidate_doc_ids") or num_candidates
        total = first_len("candidate_features")
        if c is None:
            raise LogSchemaError("column 'candidate_features': cannot tell the number of candidates C from a flat "
                                 "list: add 'candidate_doc_ids', nest the features as [C][F], or pass num_candidates")
        if total is None or total % c:
            raise LogSchemaError(f"column 'candidate_features': {total} values per row is not a multiple of the "
                                 f"{c} candidates")
        f = total // c
    if None in (u, k, c, f):
        raise LogSchemaError("no row has complete user_features / slate / candidate_features lists")
    return int(u), int(c), int(f), int(k)  # type: ignore[arg-type]


def _validate_batch(batch: pa.RecordBatch, dims: tuple[int, int, int, int], first_row: int,
                    checker: _RowChecker, prev_key: tuple[int, int] | None
                    ) -> tuple[dict[str, np.ndarray], np.ndarray, list[list[str]]]:
    """Normalized numpy columns, the bad-row mask and per-row reasons for one batch."""
    u, c, f, k = dims
    n = batch.num_rows
    reasons: list[list[str]] = [[] for _ in range(n)]
    names = batch.schema.names
    cols: dict[str, np.ndarray] = {}

    def null_mask(name: str) -> np.ndarray:
        arr = batch.column(name)
        return arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else np.zeros(n, dtype=bool)

    def scalar(name: str, dtype: Any, fill: Any) -> np.ndarray:
        arr = batch.column(name)
        nulls = null_mask(name)
        if nulls.any():
            checker.add(name, "null", nulls, first_row, reasons)
            arr = pc.fill_null(arr, fill)
        return arr.to_numpy(zero_copy_only=False).astype(dtype)

    def listcol(name: str, width: int, dtype: Any) -> np.ndarray:
        arr = batch.column(name)
        lens = _lengths(arr)
        nulls = lens < 0
        if nulls.any():
            checker.add(name, "null", nulls, first_row, reasons)
        wrong = (~nulls) & (lens != width)
        if wrong.any():
            checker.add(name, f"list length is not {width}", wrong, first_row, reasons)
        return _gather_rows(arr, lens == width, width, dtype)

    for name in ("session_id", "step", "click_position"):
        cols[name] = scalar(name, np.int64, 0)
    cols["engagement"] = scalar("engagement", np.float64, 0.0)
    cols["user_id"] = scalar("user_id", np.int64, 0) if "user_id" in names else cols["session_id"].copy()
    cols["terminated"] = scalar("terminated", bool, False) if "terminated" in names else np.zeros(n, dtype=bool)
    cols["user_features"] = listcol("user_features", u, np.float32)
    if _is_list(batch.schema.field("candidate_features").type.value_type):
        feats, ok = _nested_features(batch.column("candidate_features"), c, f)
        bad = ~ok
        if bad.any():
            checker.add("candidate_features", f"not a [{c}][{f}] table", bad, first_row, reasons)
        cols["candidate_features"] = feats
    else:
        cols["candidate_features"] = listcol("candidate_features", c * f, np.float32)
    cols["slate"] = listcol("slate", k, np.int64)
    if "candidate_doc_ids" in names:
        cols["candidate_doc_ids"] = listcol("candidate_doc_ids", c, np.int64)
    else:
        cols["candidate_doc_ids"] = np.broadcast_to(np.arange(c, dtype=np.int64), (n, c)).copy()
    if "slate_propensity" in names:
        cols["slate_propensity"] = scalar("slate_propensity", np.float64, 1.0)
        p = cols["slate_propensity"]
        checker.add("slate_propensity", "not in (0, 1]", ~((p > 0) & (p <= 1)), first_row, reasons)
    if "position_propensity" in names and batch.column("position_propensity").null_count < n:
        pp = listcol("position_propensity", k, np.float64)
        checker.add("position_propensity", "a value not in (0, 1]",
                    ~((pp > 0) & (pp <= 1)).all(1) & (_lengths(batch.column("position_propensity")) == k),
                    first_row, reasons)
        cols["position_propensity"] = pp
    elif "position_propensity" in names:
        cols["position_propensity"] = np.full((n, k), np.nan)
    for name in ORACLE_COLUMNS:
        if name in names:
            cols[name] = (listcol(name, c, np.float32) if name != "oracle_no_click_logit"
                          else scalar(name, np.float32, 0.0))

    # value rules
    for name in ("user_features", "candidate_features"):
        checker.add(name, "a non-finite value", ~np.isfinite(cols[name]).all(1), first_row, reasons)
    slate = cols["slate"]
    checker.add("slate", f"a candidate index outside [0, {c})", ((slate < 0) | (slate >= c)).any(1),
                first_row, reasons)
    if k > 1:
        srt = np.sort(slate, axis=1)
        checker.add("slate", "the same candidate twice", (srt[:, 1:] == srt[:, :-1]).any(1), first_row, reasons)
    cp = cols["click_position"]
    checker.add("click_position", f"outside [-1, {k})", (cp < -1) | (cp >= k), first_row, reasons)
    e = cols["engagement"]
    checker.add("engagement", "negative or not finite", ~np.isfinite(e) | (e < 0), first_row, reasons)
    checker.add("engagement", "positive without a click", (e > 0) & (cp == -1), first_row, reasons)
    checker.add("step", "negative", cols["step"] < 0, first_row, reasons)
    # duplicates of (session_id, step) within the chunk and with the previous chunk's last row
    order = np.lexsort((cols["step"], cols["session_id"]))
    s_sorted, t_sorted = cols["session_id"][order], cols["step"][order]
    dup_sorted = np.zeros(n, dtype=bool)
    if n > 1:
        dup_sorted[1:] = (s_sorted[1:] == s_sorted[:-1]) & (t_sorted[1:] == t_sorted[:-1])
    dup = np.zeros(n, dtype=bool)
    dup[order] = dup_sorted
    if prev_key is not None and n:
        dup[0] |= (cols["session_id"][0], cols["step"][0]) == prev_key
    checker.add("step", "repeats an earlier (session_id, step)", dup, first_row, reasons)
    bad = np.array([bool(r) for r in reasons], dtype=bool) if n else np.zeros(0, dtype=bool)
    return cols, bad, reasons


def ingest_logs(source: Any, output: str | Path, quarantine: str | Path | None = None, chunk_rows: int = 65_536,
                strict: bool = False, num_candidates: int | None = None, estimate: str = "auto",
                propensity_epochs: int = 3, seed: int = 0, meta_overrides: Mapping[str, Any] | None = None
                ) -> IngestReport:
    """Validate ``source`` (parquet path or DataFrame) chunk by chunk into a clean, schema-normal log.

    Bad rows go to ``quarantine`` (default ``<output>.quarantine.parquet``) with ``_source_row`` and
    ``_problems`` columns. ``strict=True`` raises one :class:`LogSchemaError` listing every problem
    instead of writing anything. ``estimate``: ``"auto"`` fits a logging-policy model when the logs
    have no ``slate_propensity``; ``"always"`` replaces logged propensities; ``"never"`` leaves them out.
    """
    import pandas as pd

    if estimate not in ("auto", "always", "never"):
        raise ConfigError(f"estimate must be auto, always or never, got '{estimate}'")
    output = Path(output)
    quarantine = Path(quarantine) if quarantine is not None else output.with_name(output.stem + ".quarantine.parquet")
    if isinstance(source, pd.DataFrame):
        table = pa.Table.from_pandas(source, preserve_index=False)
        schema, src_meta, total, label = table.schema, None, table.num_rows, "<DataFrame>"
        batches: Iterator[pa.RecordBatch] = iter(table.to_batches(max_chunksize=chunk_rows))
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"log file '{path}' does not exist")
        try:
            pf = pq.ParquetFile(str(path), pre_buffer=False)
        except (pa.ArrowInvalid, OSError) as exc:
            raise LogSchemaError(f"'{path}' is not a parquet file: {exc}") from None
        schema, src_meta, total, label = pf.schema_arrow, read_meta(path), pf.metadata.num_rows, str(path)
        batches = pf.iter_batches(batch_size=chunk_rows)
    structural = _check_structure(schema, label)
    if total == 0:
        structural.append("the log has no rows")
    if structural:
        plural = "s" if len(structural) > 1 else ""
        raise LogSchemaError(f"log {label} cannot be read ({len(structural)} problem{plural}):\n  "
                             + "\n  ".join(structural))
    report = IngestReport(source=label, output=None if strict else output,
                          quarantine=None if strict else quarantine)
    checker = _RowChecker()
    has_prop = "slate_propensity" in schema.names
    writer: LogWriter | None = None
    qwriter: pq.ParquetWriter | None = None
    dims: tuple[int, int, int, int] | None = None
    first = 0
    prev_key: tuple[int, int] | None = None
    has_oracle = all(c in schema.names for c in ORACLE_COLUMNS)
    tmp_dir = tempfile.TemporaryDirectory(prefix="recsys-ingest-")
    clean_path = Path(tmp_dir.name) / "clean.parquet" if (not strict and (estimate == "always" or (
        estimate == "auto" and not has_prop))) else output
    # segments that cross a chunk boundary are written with their chunk: carry keeps row groups whole
    carry: dict[str, np.ndarray] | None = None
    try:
        for batch in batches:
            if dims is None:
                dims = _infer_dims(batch, src_meta, num_candidates)
                u, c, f, k = dims
                base = src_meta.model_dump() if src_meta is not None else {}
                base.update(user_dim=u, num_candidates=c, doc_dim=f, slate_size=k, has_oracle=has_oracle,
                            session_aligned=True,
                            propensity_source="logged" if has_prop and estimate != "always" else None)
                base.update(dict(meta_overrides or {}))
                report.meta = LogMeta.model_validate(base)
                if not strict:
                    keep_prop = has_prop and estimate != "always"
                    writer = (LogWriter if keep_prop else _NoPropWriter)(clean_path, report.meta)
            cols, bad, reasons = _validate_batch(batch, dims, first, checker, prev_key)
            n = batch.num_rows
            if n:
                prev_key = (int(cols["session_id"][-1]), int(cols["step"][-1]))
            if not strict and bad.any():
                qtable = pa.Table.from_batches([batch]).filter(pa.array(bad))
                qtable = qtable.append_column("_source_row", pa.array(first + np.flatnonzero(bad), pa.int64()))
                why = ["; ".join(reasons[i]) for i in np.flatnonzero(bad)]
                qtable = qtable.append_column("_problems", pa.array(why))
                if qwriter is None:
                    quarantine.parent.mkdir(parents=True, exist_ok=True)
                    qwriter = pq.ParquetWriter(str(quarantine), qtable.schema)
                qwriter.write_table(qtable)
            report.rows_in += n
            report.rows_quarantined += int(bad.sum())
            first += n
            if strict or writer is None:
                continue
            good = {key: v[~bad] for key, v in cols.items()}
            if carry is not None:
                good = {key: np.concatenate([carry[key], good[key]]) for key in good}
            carry = None
            m = len(good["session_id"])
            if m:
                s, t = good["session_id"], good["step"]
                cont = np.zeros(m, dtype=bool)
                cont[1:] = (s[1:] == s[:-1]) & (t[1:] == t[:-1] + 1)
                starts = np.flatnonzero(~cont)
                cut = int(starts[-1])
                if cut > 0:
                    carry = {key: v[cut:] for key, v in good.items()}
                    good = {key: v[:cut] for key, v in good.items()}
                writer.write(good)
        if writer is not None and carry is not None:
            writer.write(carry)
    finally:
        if writer is not None:
            writer.close()
        if qwriter is not None:
            qwriter.close()
    report.problems = sorted(checker.problems.values(), key=lambda p: p.first_row)
    report.rows_clean = report.rows_in - report.rows_quarantined
    if strict:
        tmp_dir.cleanup()
        if report.problems:
            raise LogSchemaError(f"log {label} has {report.rows_quarantined} bad row(s):\n  "
                                 + "\n  ".join(p.message() for p in report.problems))
        return report
    if report.rows_clean == 0:
        tmp_dir.cleanup()
        raise LogSchemaError(f"log {label}: every one of its {report.rows_in} rows is bad:\n  "
                             + "\n  ".join(p.message() for p in report.problems))
    if clean_path != output:
        model = PropensityModel(report.meta.user_dim, report.meta.doc_dim, seed=seed)  # type: ignore[union-attr]
        nll, uniform = model.fit_file(clean_path, epochs=propensity_epochs, chunk_rows=chunk_rows, seed=seed)
        model.annotate(clean_path, output, chunk_rows=chunk_rows)
        report.propensity_source, report.propensity_nll, report.uniform_nll = "estimated", nll, uniform
        report.meta = read_meta(output)
    else:
        report.propensity_source = report.meta.propensity_source if report.meta else None  # type: ignore[union-attr]
        report.meta = read_meta(output)
    tmp_dir.cleanup()
    return report


class _NoPropWriter(LogWriter):
    """A clean log without propensity columns (they are estimated afterwards)."""

    def __init__(self, path: str | Path, meta: LogMeta, compression: str = "zstd"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.meta = meta
        self.schema = meta.arrow_schema(propensity=False)
        self._writer = pq.ParquetWriter(str(self.path), self.schema, compression=compression)
        self.rows = 0


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

    def fit_file(self, path: str | Path, epochs: int = 3, chunk_rows: int = 65_536, batch_size: int = 512,
                 lr: float = 3e-3, seed: int = 0) -> tuple[float, float]:
        """Streaming SGD over the file; returns (mean NLL per slate, uniform policy's NLL)."""
        reader = LogReader(path, chunk_rows=chunk_rows, columns=("session_id", "step", "user_features",
                                                                  "candidate_features", "slate", "click_position",
                                                                  "engagement"))
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(seed)
        for epoch in range(epochs):
            for chunk in reader.chunks(shuffle=True, seed=seed + epoch):
                perm = torch.randperm(len(chunk), generator=gen)
                for start in range(0, len(chunk), batch_size):
                    rows = perm[start:start + batch_size]
                    loss = -self.log_prob(chunk.user[rows], chunk.docs[rows], chunk.slate[rows]).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
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
        meta = m.model_copy(update={"propensity_source": "estimated",
                                    "logging_policy": {"kind": policy.kind, "spec": policy.spec(),
                                                       "state": _state_to_json(policy.state()),
                                                       "description": "estimated Plackett-Luce logging model"}})
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
    widths = {"user_features": m.user_dim, "candidate_features": m.num_candidates * m.doc_dim,
              "candidate_doc_ids": m.num_candidates, "slate": m.slate_size, "position_propensity": m.slate_size,
              "oracle_candidate_logit": m.num_candidates, "oracle_candidate_engagement": m.num_candidates}
    if name in ("candidate_doc_ids", "slate"):
        return _list_matrix(arr, widths[name], np.int64)
    if name in widths:
        return _list_matrix(arr, widths[name], np.float64 if "propensity" in name else np.float32)
    return _scalar(arr, arr.type.to_pandas_dtype())


__all__ = [
    "COLUMNS", "ColumnSpec", "LogMeta", "LogSchemaError", "LogWriter", "generate_logs", "GenerateResult",
    "LogChunk", "LogReader", "read_logs_frame", "read_meta", "Problem", "IngestReport", "ingest_logs",
    "PropensityModel", "SCHEMA_VERSION",
]
