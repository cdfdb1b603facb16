"""The log schema: columns, the file metadata (:class:`LogMeta`) and arrow ↔ numpy helpers.

Logs come in two shapes; both ingest with the same command (``deeprl recsys ingest``):

* **per slate** (:data:`COLUMNS`): one row per served slate — ``slate`` [K], ``slate_propensity``,
  ``click_position``, …;
* **per position** (public real-world logs such as the Open Bandit Dataset): one row per shown item —
  ``position``, ``item_id``, ``click``, ``propensity`` (or ``propensity_score``) = μ(item at position | x),
  optional ``impression_id`` (rows of one slate), ``user_feature*`` columns (hashed categoricals are
  one-hot encoded), ``user-item_affinity_<j>`` columns, and an item table (``item_id`` +
  ``item_feature*``) beside the file. :mod:`recsys.logs.positions` turns them into per-slate rows: whole
  slates of K positions when ``impression_id`` groups them, otherwise one-position slates with the
  position one-hot in the user features.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from pydantic import BaseModel, ConfigDict, Field

from core_rl.common.errors import ConfigError, DeepRLError
from recsys.policies.registry import policy_from_spec
from recsys.policies.types import ObsLayout, SlatePolicy

META_KEY = b"deeprl.recsys"
SCHEMA_VERSION = 1


class LogSchemaError(DeepRLError, ValueError):
    """Logs that cannot be read as the schema says (structure or, in strict mode, rows)."""


# ---- the schema ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: str  # int | float | bool | list_float | list_int
    required: bool
    length: str | None  # U, CF, C, K for list columns
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
    env_kind: str | None = None  # "ng" | "recsim" (to rebuild the simulator)
    env_config: dict[str, Any] | None = None
    # what else the simulator needs to be rebuilt exactly: the NG twin's frozen corpus
    # ({"doc_id", "topic", "quality", "length": [D], "features": [D][T]}, see corpus_to_json)
    env_corpus: dict[str, Any] | None = None
    logging_policy: dict[str, Any] | None = None  # {"kind", "spec", "state"} (JSON-able)
    propensity_source: str | None = None  # "logged" | "estimated" | None
    session_aligned: bool = False  # every row group holds whole sessions
    has_oracle: bool = False

    @property
    def layout(self) -> ObsLayout:
        return ObsLayout(self.user_dim, self.num_candidates, self.doc_dim)

    def arrow_schema(self, oracle: bool | None = None, propensity: bool = True) -> pa.Schema:
        u, c, f, k = self.user_dim, self.num_candidates, self.doc_dim, self.slate_size
        fields = [
            pa.field("session_id", pa.int64(), False),
            pa.field("user_id", pa.int64(), False),
            pa.field("step", pa.int64(), False),
            pa.field("user_features", pa.list_(pa.float32(), u), False),
            pa.field("candidate_features", pa.list_(pa.float32(), c * f), False),
            pa.field("candidate_doc_ids", pa.list_(pa.int64(), c), False),
            pa.field("slate", pa.list_(pa.int64(), k), False),
        ]
        if propensity:
            fields += [
                pa.field("slate_propensity", pa.float64(), False),
                pa.field("position_propensity", pa.list_(pa.float64(), k), True),
            ]
        fields += [
            pa.field("click_position", pa.int64(), False),
            pa.field("engagement", pa.float64(), False),
            pa.field("terminated", pa.bool_(), False),
        ]
        if self.has_oracle if oracle is None else oracle:
            fields += [
                pa.field("oracle_candidate_logit", pa.list_(pa.float32(), c), False),
                pa.field("oracle_no_click_logit", pa.float32(), False),
                pa.field("oracle_candidate_engagement", pa.list_(pa.float32(), c), False),
            ]
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
        """The simulator that produced the logs: its config and, for the NG twin, the logged frozen
        corpus (``env_corpus``), so every seed runs on the logged documents. ``seed`` draws users
        (and RecSim's per-step documents), never a new corpus."""
        from recsys.simulation import InterestEvolutionVectorEnv, RecSimInterestEvolutionVectorEnv

        if self.env_kind is None or self.env_config is None:
            raise ConfigError("these logs do not record the simulator that produced them; pass --env")
        if self.env_kind == "ng":
            corpus = corpus_from_json(self.env_corpus) if self.env_corpus is not None else None
            return InterestEvolutionVectorEnv(num_envs, config=self.env_config, seed=seed, corpus=corpus)
        return RecSimInterestEvolutionVectorEnv(num_envs, config=self.env_config, seed=seed)


def corpus_to_json(corpus: Any) -> dict[str, Any]:
    """A :class:`recsys.simulation.Corpus` as JSON lists (float32 values round-trip exactly)."""
    return {
        "doc_id": corpus.doc_id.cpu().tolist(),
        "topic": corpus.topic.cpu().tolist(),
        "quality": corpus.quality.cpu().tolist(),
        "length": corpus.length.cpu().tolist(),
        "features": corpus.features.cpu().tolist(),
    }


def corpus_from_json(data: Mapping[str, Any]) -> Any:
    """Inverse of :func:`corpus_to_json`; a :class:`ConfigError` naming the field when one is missing."""
    from recsys.simulation import Corpus

    missing = [k for k in ("doc_id", "topic", "quality", "length", "features") if k not in data]
    if missing:
        raise ConfigError(f"log metadata field 'env_corpus' lacks {', '.join(missing)}")
    return Corpus(
        doc_id=torch.tensor(data["doc_id"], dtype=torch.int64),
        topic=torch.tensor(data["topic"], dtype=torch.int64),
        quality=torch.tensor(data["quality"], dtype=torch.float32),
        features=torch.tensor(data["features"], dtype=torch.float32),
        length=torch.tensor(data["length"], dtype=torch.float32),
    )


def env_corpus_of(env: Any) -> dict[str, Any] | None:
    """The frozen corpus of an NG-twin env as JSON (None for simulators without one)."""
    corpus = getattr(getattr(env, "unwrapped", env), "corpus", None)
    return None if corpus is None or env_kind_of(env) != "ng" else corpus_to_json(corpus)


def _state_to_json(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return {
            "__tensor__": state.detach().cpu().reshape(-1).tolist(),
            "shape": list(state.shape),
            "dtype": str(state.dtype).replace("torch.", ""),
        }
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
