r"""The per-row rules of a log, applied to one batch at a time (:func:`validate_part`).

Every rule is a vectorized test over a batch's columns; a row that breaks any rule is *bad* and goes
to the quarantine with its source row number and the list of rules it broke. The rules need nothing
from outside the batch but the dimensions ``(U, C, F, K)`` and the key of the row just before it
(``prev_key``: a duplicate ``(session_id, step)`` of an ordered log is always the next row), so a log
is validated by mapping :func:`validate_part` over its batches — in this process
(:func:`recsys.logs.ingest_logs`) or on Ray Data (:mod:`recsys.logs.ray_ingest`) — and combining what
each batch returns: its clean rows, its quarantined rows and its :class:`Problem` counts, which add
up (``rows``) and take the minimum (``first_row``) across batches (:func:`merge_problems`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys.logs.order import SOURCE_ROW
from recsys.logs.reader import ORACLE_COLUMNS
from recsys.logs.schema import COLUMN_BY_NAME, COLUMNS, REQUIRED, LogMeta, LogSchemaError


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


_INT_OK = (pa.types.is_integer,)
_FLOAT_OK = (pa.types.is_integer, pa.types.is_floating)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def check_structure(schema: pa.Schema, source: str) -> list[str]:
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
                want = (
                    pa.types.is_integer
                    if spec.kind == "list_int"
                    else (lambda x: pa.types.is_integer(x) or pa.types.is_floating(x))
                )
                ok = bool(want(inner))
        if not ok:
            problems.append(f"column '{spec.name}': type {t} cannot hold {spec.kind.replace('_', ' of ')} values")
    return problems


class _RowChecker:
    """Accumulates row problems over chunks."""

    def __init__(self) -> None:
        self.problems: dict[tuple[str, str], Problem] = {}

    def add(self, column: str, rule: str, bad: np.ndarray, rows: np.ndarray, reasons: list[list[str]]) -> None:
        """``rows``: the source row number of each row of the batch (the first bad row is the smallest)."""
        idx = np.flatnonzero(bad)
        if not len(idx):
            return
        p = self.problems.setdefault((column, rule), Problem(column, rule))
        first = int(rows[idx].min())
        if p.rows == 0 or first < p.first_row:
            p.first_row = first
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
        full = arr.values.to_numpy(zero_copy_only=False)[arr.offset * width : (arr.offset + n) * width]
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
        vals = (
            inner.flatten().to_numpy(zero_copy_only=False)
            if inner.null_count == 0
            else pc.list_flatten(inner).to_numpy(zero_copy_only=False)
        )
        inner_start = np.concatenate([[0], np.cumsum(np.where(inner_len < 0, 0, inner_len))])
        outer_start = np.concatenate([[0], np.cumsum(np.where(outer_len < 0, 0, outer_len))])
        rows = np.flatnonzero(ok)
        first_val = inner_start[outer_start[rows]]
        out[rows] = vals[first_val[:, None] + np.arange(c * f)[None, :]].astype(np.float32)
    return out, ok


def infer_dims(batch: pa.RecordBatch, meta: LogMeta | None, num_candidates: int | None) -> tuple[int, int, int, int]:
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
            raise LogSchemaError(
                "column 'candidate_features': cannot tell the number of candidates C from a flat "
                "list: add 'candidate_doc_ids', nest the features as [C][F], or pass num_candidates"
            )
        if total is None or total % c:
            raise LogSchemaError(
                f"column 'candidate_features': {total} values per row is not a multiple of the {c} candidates"
            )
        f = total // c
    if None in (u, k, c, f):
        raise LogSchemaError("no row has complete user_features / slate / candidate_features lists")
    return int(u), int(c), int(f), int(k)  # type: ignore[arg-type]


def _validate_batch(
    batch: pa.RecordBatch,
    dims: tuple[int, int, int, int],
    first_row: np.ndarray,
    checker: _RowChecker,
    prev_key: tuple[int, int] | None,
) -> tuple[dict[str, np.ndarray], np.ndarray, list[list[str]]]:
    """Normalized numpy columns, the bad-row mask and per-row reasons for one batch (``first_row``: the
    source row number of each row)."""
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
        checker.add(
            "position_propensity",
            "a value not in (0, 1]",
            ~((pp > 0) & (pp <= 1)).all(1) & (_lengths(batch.column("position_propensity")) == k),
            first_row,
            reasons,
        )
        cols["position_propensity"] = pp
    elif "position_propensity" in names:
        cols["position_propensity"] = np.full((n, k), np.nan)
    for name in ORACLE_COLUMNS:
        if name in names:
            cols[name] = (
                listcol(name, c, np.float32) if name != "oracle_no_click_logit" else scalar(name, np.float32, 0.0)
            )

    # value rules
    for name in ("user_features", "candidate_features"):
        checker.add(name, "a non-finite value", ~np.isfinite(cols[name]).all(1), first_row, reasons)
    slate = cols["slate"]
    checker.add("slate", f"a candidate index outside [0, {c})", ((slate < 0) | (slate >= c)).any(1), first_row, reasons)
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


@dataclass
class ValidatedPart:
    """One validated batch: its clean rows (schema-normal numpy columns), its quarantined source rows
    (with ``_source_row`` and ``_problems``; None when there are none or they are not kept), the
    problems found and the key of its last row (the next batch's ``prev_key``)."""

    rows_in: int
    rows_quarantined: int
    clean: dict[str, np.ndarray]
    quarantine: pa.Table | None
    problems: list[Problem] = field(default_factory=list)
    last_key: tuple[int, int] | None = None


def validate_part(
    batch: pa.RecordBatch,
    rows: np.ndarray,
    dims: tuple[int, int, int, int],
    prev_key: tuple[int, int] | None,
    keep_quarantine: bool = True,
) -> ValidatedPart:
    """Every row rule on one batch. ``rows``: each row's number in the source; ``prev_key``: the
    ``(session_id, step)`` of the row before the batch (nulls read as 0), or None for the first batch."""
    checker = _RowChecker()
    cols, bad, reasons = _validate_batch(batch, dims, rows, checker, prev_key)
    n = batch.num_rows
    qtable = None
    if keep_quarantine and bad.any():
        qtable = pa.Table.from_batches([batch]).filter(pa.array(bad))
        qtable = qtable.append_column("_source_row", pa.array(rows[bad], pa.int64()))
        qtable = qtable.append_column("_problems", pa.array(["; ".join(reasons[i]) for i in np.flatnonzero(bad)]))
    last = (int(cols["session_id"][-1]), int(cols["step"][-1])) if n else prev_key
    clean = {key: v[~bad] for key, v in cols.items()}
    return ValidatedPart(n, int(bad.sum()), clean, qtable, list(checker.problems.values()), last)


def source_rows(batch: pa.RecordBatch, first: int) -> tuple[np.ndarray, pa.RecordBatch]:
    """The source row numbers of a batch (a sorted stream carries them in :data:`~recsys.logs.order.SOURCE_ROW`;
    else ``first``, ``first+1``, …) and the batch without that column."""
    if SOURCE_ROW in batch.schema.names:
        rows = batch.column(SOURCE_ROW).to_numpy(zero_copy_only=False).astype(np.int64)
        return rows, batch.drop_columns([SOURCE_ROW])
    return np.arange(first, first + batch.num_rows, dtype=np.int64), batch


def merge_problems(into: dict[tuple[str, str], Problem], problems: Iterable[Problem]) -> None:
    """Add one batch's problems to the running totals (rows add up; the first bad row is the minimum)."""
    for p in problems:
        total = into.setdefault((p.column, p.rule), Problem(p.column, p.rule))
        if total.rows == 0 or p.first_row < total.first_row:
            total.first_row = p.first_row
        total.rows += p.rows


__all__ = [
    "Problem",
    "ValidatedPart",
    "validate_part",
    "merge_problems",
    "source_rows",
    "check_structure",
    "infer_dims",
]
