"""Validation of a partitioned log on Ray Data (``ingest_logs(..., backend="ray")``).

Each task takes one parquet row group and applies :func:`recsys.logs.validate.validate_part` — the
rules the local path applies — to it in batches of ``chunk_rows`` rows. The only state a batch needs
from outside it is the key of the row just before it (``prev_key``, for the duplicate rule); a task
reads it from the previous row group's two key columns, so the tasks are independent. Row numbers
come from the row groups' offsets (or, for a spooled sorted log, from its source-row column), so the
quarantine names the same source rows as the local path. The driver (:func:`recsys.logs.ingest_logs`)
writes the parts in order and adds up their problems: the clean log, quarantine and counts are the
local backend's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys.logs.validate import ValidatedPart, source_rows, validate_part


@dataclass
class FragmentTask:
    """One row group to validate: its fragment, the previous one (for ``prev_key``), its first row's
    number in the log, the schema to read with, the dimensions and the batch size."""

    fragment: Any
    previous: Any | None
    first_row: int
    schema: pa.Schema
    dims: tuple[int, int, int, int]
    chunk_rows: int
    keep_quarantine: bool


def last_key(fragment: Any, schema: pa.Schema) -> tuple[int, int]:
    """``(session_id, step)`` of a fragment's last row, nulls read as 0 (as the rules read them)."""
    keys = fragment.to_table(schema=schema, columns=["session_id", "step"])
    s, t = (pc.fill_null(keys.column(name), 0) for name in ("session_id", "step"))
    return int(s[len(s) - 1].as_py()), int(t[len(t) - 1].as_py())


def validate_fragment(task: FragmentTask) -> list[ValidatedPart]:
    """The validated batches of one row group (runs in a Ray Data task)."""
    prev_key = None if task.previous is None else last_key(task.previous, task.schema)
    parts = []
    first = task.first_row
    for batch in task.fragment.to_batches(schema=task.schema, batch_size=task.chunk_rows, use_threads=False):
        rows, batch = source_rows(batch, first)
        first += batch.num_rows
        part = validate_part(batch, rows, task.dims, prev_key, task.keep_quarantine)
        prev_key = part.last_key
        parts.append(part)
    return parts


def validated_parts_on_ray(
    fragments: list[tuple[Any, int]],
    schema: pa.Schema,
    dims: tuple[int, int, int, int],
    chunk_rows: int,
    keep_quarantine: bool = True,
    ray_address: str | None = None,
) -> Iterator[ValidatedPart]:
    """Every row group's validated batches, computed on Ray Data, in the log's row order."""
    from recsys.ray_data import map_in_order

    offsets = np.concatenate([[0], np.cumsum([rows for _, rows in fragments])]).astype(np.int64)
    tasks = [
        FragmentTask(
            frag, fragments[i - 1][0] if i else None, int(offsets[i]), schema, dims, chunk_rows, keep_quarantine
        )
        for i, (frag, _) in enumerate(fragments)
    ]
    for parts in map_in_order(validate_fragment, tasks, ray_address):
        yield from parts


__all__ = ["FragmentTask", "validate_fragment", "validated_parts_on_ray", "last_key"]
