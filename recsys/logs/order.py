r"""Row order of a log: the check that rows are ordered by ``(session_id, step)`` and a memory-bounded
external sort for logs that are not (:func:`first_out_of_order`, :func:`external_sort`).

Exports from a warehouse are usually unordered; the learners read *segments* (runs of consecutive
steps of one session), so an unordered log would silently become one-step segments. Ingestion
therefore checks the order in one streaming pass over the two key columns and, when it is broken,
sorts the log by the key

.. math::  \kappa(i) = (\text{session\_id}_i,\ \text{step}_i,\ i)

(the source row number ``i`` breaks ties, so the key is unique and the sort is stable; a null
session id or step sorts last — such rows are quarantined anyway).

**External sort.** Phase 1 cuts the log into *runs* of at most ``chunk_rows`` rows, sorts each in
memory (``np.lexsort``) and writes it to a temporary parquet file. Phase 2 merges the ``R`` runs by
batches: every run contributes a buffer of ``b = max(1, ⌊chunk_rows / R⌋)`` rows; with
``κ* = min_r κ(last row of run r's buffer)`` every buffered row with ``κ ≤ κ*`` can be emitted (a row
not yet loaded from run ``r`` has ``κ > κ(last of r) ≥ κ*`` because runs are sorted and keys
unique), so the rows ``κ ≤ κ*`` of all buffers are sorted together and yielded, and each run whose
buffer emptied loads its next batch. Each round empties at least one buffer, so the merge ends.

**Memory bound.** Phase 1 holds one run (≤ ``chunk_rows`` rows, plus one source batch); phase 2
holds the ``R`` buffers, ``R·b ≤ max(chunk_rows, R)`` rows, plus the emitted rows (a subset of
them). :class:`SortStats` records the largest number of rows held (``peak_rows``), which the tests
compare with ``chunk_rows``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

SOURCE_ROW = "__source_row"
_KEY_S, _KEY_T = "__sort_session", "__sort_step"
_NULL_KEY = np.iinfo(np.int64).max

BatchSource = Callable[[Sequence[str] | None], Iterator[pa.RecordBatch]]


@dataclass
class SortStats:
    """What the external sort did: rows, sorted runs, merge batch size, and the most rows held at once."""

    rows: int = 0
    runs: int = 0
    merge_batch: int = 0
    peak_rows: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"rows": self.rows, "runs": self.runs, "merge_batch": self.merge_batch, "peak_rows": self.peak_rows}


def _keys(batch: pa.RecordBatch | pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(session_id, step) as int64 with nulls as +∞ (sorted last), and the null mask."""
    out = []
    nulls = np.zeros(batch.num_rows, dtype=bool)
    for name in ("session_id", "step"):
        arr = batch.column(name)
        if arr.null_count:
            nulls |= arr.is_null().to_numpy(zero_copy_only=False)
            arr = pc.fill_null(arr, _NULL_KEY)
        out.append(arr.to_numpy(zero_copy_only=False).astype(np.int64, copy=False))
    return out[0], out[1], nulls


@dataclass(frozen=True)
class OutOfOrder:
    """The first row that breaks the order: a step smaller than the one before it in its session,
    or a session that comes back after other sessions began (``reason`` says which)."""

    row: int
    session_id: int
    step: int
    prev_row: int
    reason: str  # "step" | "session" | "key"

    def message(self) -> str:
        if self.reason == "step":
            return (
                f"row {self.row} (session_id {self.session_id}, step {self.step}) comes after a later step of "
                f"its session at row {self.prev_row}"
            )
        if self.reason == "session":
            return (
                f"row {self.row} (session_id {self.session_id}, step {self.step}) comes back to a session "
                f"that other sessions interrupted (it started at row {self.prev_row})"
            )
        return (
            f"row {self.row} (session_id {self.session_id}, step {self.step}) has a smaller (session_id, step) "
            f"than row {self.prev_row}"
        )


def first_out_of_order(batches: Iterator[pa.RecordBatch], max_sessions: int = 1 << 20) -> OutOfOrder | None:
    """One streaming pass over ``(session_id, step)`` batches: None when the rows can be used as they
    are, else the first row that breaks the order.

    Usable as is: rows sorted by ``(session_id, step)``, or — what generated logs and most session
    exports are — every session's rows contiguous and in step order (session ids in any order).
    Contiguity is checked by remembering the first row and id of each run of one session
    (24 bytes a session: its id, first row and step) for at most ``max_sessions`` sessions; a log with more sessions that is not
    sorted by ``(session_id, step)`` is reported as out of order (sorting it is always correct).
    Rows with a null key are skipped (they are quarantined); equal keys are not out of order (the
    duplicate rule reports them). Memory: one batch of the two key columns plus the run starts.
    """
    first = 0
    prev: tuple[int, int, int] | None = None  # (row, session, step) of the last non-null row
    first_step_back: tuple[int, int, int, int] | None = None  # (row, session, step, prev row)
    first_key_back: tuple[int, int, int, int] | None = None
    start_ids: list[np.ndarray] = []
    start_rows: list[np.ndarray] = []
    start_steps: list[np.ndarray] = []
    n_starts = 0
    for batch in batches:
        n = batch.num_rows
        s, t, nulls = _keys(batch)
        rows = first + np.flatnonzero(~nulls)
        s, t = s[~nulls], t[~nulls]
        first += n
        if not len(s):
            continue
        if prev is not None:
            s, t, rows = np.r_[prev[1], s], np.r_[prev[2], t], np.r_[prev[0], rows]
            new_run = np.r_[False, s[1:] != s[:-1]]
        else:
            new_run = np.r_[True, s[1:] != s[:-1]]
        same = s[1:] == s[:-1]
        step_back = np.flatnonzero(same & (t[1:] < t[:-1]))
        if first_step_back is None and len(step_back):
            i = int(step_back[0]) + 1
            first_step_back = (int(rows[i]), int(s[i]), int(t[i]), int(rows[i - 1]))
        key_back = np.flatnonzero((s[1:] < s[:-1]) | (same & (t[1:] < t[:-1])))
        if first_key_back is None and len(key_back):
            i = int(key_back[0]) + 1
            first_key_back = (int(rows[i]), int(s[i]), int(t[i]), int(rows[i - 1]))
        if n_starts <= max_sessions:
            idx = np.flatnonzero(new_run)
            start_ids.append(s[idx])
            start_rows.append(rows[idx])
            start_steps.append(t[idx])
            n_starts += len(idx)
        prev = (int(rows[-1]), int(s[-1]), int(t[-1]))
    if first_key_back is None:
        return None  # sorted by (session_id, step)
    found: list[OutOfOrder] = []
    if first_step_back is not None:
        found.append(OutOfOrder(*first_step_back, reason="step"))
    if n_starts > max_sessions:
        found.append(OutOfOrder(*first_key_back, reason="key"))
    elif start_ids:
        ids, srows = np.concatenate(start_ids), np.concatenate(start_rows)
        order = np.argsort(ids, kind="stable")
        again = np.flatnonzero(ids[order][1:] == ids[order][:-1]) + 1  # a later run of the same session
        if len(again):
            j = int(again[np.argmin(srows[order][again])])
            row = int(srows[order][j])
            step = int(np.concatenate(start_steps)[order][j])
            found.append(OutOfOrder(row, int(ids[order][j]), step, int(srows[order][j - 1]), reason="session"))
    return min(found, key=lambda o: o.row) if found else None


def _sorted_run(tables: list[pa.Table], first_row: int) -> pa.Table:
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    n = table.num_rows
    s, t, _ = _keys(table)
    order = np.lexsort((t, s))  # lexsort is stable: ties keep the source order
    table = table.append_column(SOURCE_ROW, pa.array(np.arange(first_row, first_row + n, dtype=np.int64)))
    table = table.append_column(_KEY_S, pa.array(s)).append_column(_KEY_T, pa.array(t))
    return table.take(pa.array(order))


def external_sort(
    source: BatchSource, tmp_dir: str | Path, chunk_rows: int, stats: SortStats | None = None
) -> Iterator[pa.RecordBatch]:
    """The rows of ``source(None)`` ordered by ``(session_id, step, source row)``, in batches.

    Each yielded batch carries the source row number in column :data:`SOURCE_ROW`. ``tmp_dir``
    receives the sorted runs (one parquet file each). Memory: see the module docstring.
    """
    stats = stats if stats is not None else SortStats()
    chunk_rows = max(int(chunk_rows), 1)
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    runs: list[Path] = []
    pending: list[pa.Table] = []
    held = 0
    first = 0

    def flush() -> None:
        nonlocal pending, held, first
        if not held:
            return
        run = _sorted_run(pending, first)
        path = tmp_dir / f"run-{len(runs):06d}.parquet"
        pq.write_table(run, str(path), row_group_size=max(1, min(chunk_rows, 1 << 16)))
        runs.append(path)
        first += held
        pending, held = [], 0

    # phase 1: sorted runs of at most chunk_rows rows
    for batch in source(None):
        start = 0
        while start < batch.num_rows:
            take = min(batch.num_rows - start, chunk_rows - held)
            pending.append(pa.Table.from_batches([batch.slice(start, take)]))
            held += take
            start += take
            stats.peak_rows = max(stats.peak_rows, held)
            if held >= chunk_rows:
                flush()
    flush()
    stats.rows, stats.runs = first, len(runs)
    if not runs:
        return
    b = max(1, chunk_rows // len(runs))
    stats.merge_batch = b

    # phase 2: batched k-way merge
    readers = [pq.ParquetFile(str(p), pre_buffer=False).iter_batches(batch_size=b) for p in runs]
    buffers: list[pa.RecordBatch | None] = [next(r, None) for r in readers]
    while True:
        live = [i for i, buf in enumerate(buffers) if buf is not None and buf.num_rows]
        if not live:
            break
        stats.peak_rows = max(stats.peak_rows, sum(buffers[i].num_rows for i in live))  # type: ignore[union-attr]
        keys = {
            i: (
                buffers[i].column(_KEY_S).to_numpy(),
                buffers[i].column(_KEY_T).to_numpy(),  # type: ignore[union-attr]
                buffers[i].column(SOURCE_ROW).to_numpy(),
            )
            for i in live
        }  # type: ignore[union-attr]
        bound = min((int(k[0][-1]), int(k[1][-1]), int(k[2][-1])) for k in keys.values())
        bs, bt, br = bound
        parts = []
        for i in live:
            s, t, r = keys[i]
            ok = (s < bs) | ((s == bs) & ((t < bt) | ((t == bt) & (r <= br))))
            cut = int(ok.sum())  # a prefix: the run is sorted
            buf = buffers[i]
            parts.append(buf.slice(0, cut))  # type: ignore[union-attr]
            rest = buf.slice(cut)  # type: ignore[union-attr]
            buffers[i] = rest if rest.num_rows else next(readers[i], None)
        out = pa.Table.from_batches([p for p in parts if p.num_rows])
        s, t, r = (out.column(c).to_numpy() for c in (_KEY_S, _KEY_T, SOURCE_ROW))
        out = out.take(pa.array(np.lexsort((r, t, s)))).drop_columns([_KEY_S, _KEY_T])
        for batch in out.combine_chunks().to_batches():
            yield batch
    for p in runs:
        p.unlink(missing_ok=True)


__all__ = ["SOURCE_ROW", "SortStats", "OutOfOrder", "first_out_of_order", "external_sort"]
