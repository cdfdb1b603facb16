r"""Off-policy evaluation of a partitioned log — a file, a directory or a glob of ingested parquet
files — in this process or on Ray Data (:func:`evaluate_log_files`).

Every estimator of :mod:`recsys.ope` is a ratio of sums of per-row terms,
:math:`\hat V = \sum_i a_i / \sum_i b_i`, and its bootstrap resamples sessions, so what a row group
contributes is its per-session sums of :math:`a` and :math:`b` (:func:`recsys.ope.chunk_terms`, the
function the local evaluation applies to each chunk). ``backend="ray"`` computes them for every row
group as Ray Data tasks (:func:`recsys.ray_data.map_in_order`: the policy, reward model and logging
policy travel to the tasks once per task) and combines them on the driver in row order
(:func:`recsys.ope.combine_terms`): the same estimates as the local path up to the order of float
additions, and the same bootstrap groups. The driver holds O(sessions) numbers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from core_rl.common.errors import ConfigError
from recsys.choice_model import SlateRewardModel
from recsys.logs.ingest import open_source
from recsys.logs.reader import ORACLE_COLUMNS, TRAIN_COLUMNS, table_to_chunk
from recsys.logs.schema import LogMeta, LogSchemaError
from recsys.ope import ESTIMATORS, ChunkTerms, OPEResult, chunk_terms, combine_terms, usable_estimators
from recsys.policies import SlatePolicy

BACKENDS = ("local", "ray")


@dataclass
class OPETask:
    """One row group to evaluate on: its fragment, first row number, the log's metadata and what to compute."""

    fragment: Any
    first_row: int
    schema: pa.Schema
    meta: LogMeta
    chunk_rows: int
    policy: SlatePolicy
    want: list[str]
    reward_model: SlateRewardModel | None
    logging_policy: SlatePolicy | None


def fragment_terms(task: OPETask) -> list[ChunkTerms]:
    """:func:`~recsys.ope.chunk_terms` of each batch of one row group (a Ray Data task, or a local step)."""
    columns = [c for c in (*TRAIN_COLUMNS, *ORACLE_COLUMNS) if c in task.schema.names]
    out = []
    first = task.first_row
    for batch in task.fragment.to_batches(
        schema=task.schema, columns=columns, batch_size=task.chunk_rows, use_threads=False
    ):
        chunk = table_to_chunk(batch, task.meta, first)
        first += batch.num_rows
        out.append(chunk_terms(task.policy, chunk, task.want, task.reward_model, task.logging_policy))
    return out


def evaluate_log_files(
    policy: SlatePolicy,
    source: str,
    reward_model: SlateRewardModel | None = None,
    logging_policy: SlatePolicy | None = None,
    estimators: Sequence[str] = ESTIMATORS,
    n_bootstrap: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    chunk_rows: int = 65_536,
    backend: str = "local",
    ray_address: str | None = None,
) -> OPEResult:
    """:func:`recsys.ope.evaluate_on_logs` over every row group of ``source`` (an ingested parquet file, a
    directory or a glob of them), row groups in path order; ``backend="ray"`` computes the per-row
    terms on Ray Data (the cluster at ``ray_address`` / ``$RAY_ADDRESS``, else a local Ray)."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be local or ray, got '{backend}'")
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be positive, got {chunk_rows}")
    want, notes = usable_estimators(estimators, reward_model, logging_policy)
    src = open_source(source, chunk_rows)
    if src.meta is None:
        raise LogSchemaError(
            f"'{src.label}' has no deeprl.recsys metadata: ingest it first (deeprl recsys ingest / recsys.logs.ingest_logs)"
        )
    assert src.fragments is not None  # a path: open_source lists its row groups
    fragments = src.fragments()
    tasks, first = [], 0
    for fragment, rows in fragments:
        tasks.append(
            OPETask(fragment, first, src.schema, src.meta, chunk_rows, policy, want, reward_model, logging_policy)
        )
        first += rows
    results: Iterator[list[ChunkTerms]]
    if backend == "local":
        results = (fragment_terms(task) for task in tasks)
    else:
        from recsys.ray_data import map_in_order

        results = map_in_order(fragment_terms, tasks, ray_address)
    parts = (terms for result in results for terms in result)
    return combine_terms(parts, want, n_bootstrap, alpha, seed, notes)


__all__ = ["OPETask", "fragment_terms", "evaluate_log_files"]
