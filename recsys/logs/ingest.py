"""Ingestion of a user's own logs: structural checks, per-row validation with a quarantine, and
propensities estimated when the logs lack them (:func:`ingest_logs`)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core_rl.common.errors import ConfigError
from recsys.logs.generate import LogWriter
from recsys.logs.order import SOURCE_ROW, SortStats, external_sort, first_out_of_order
from recsys.logs.propensity import PropensityModel
from recsys.logs.reader import ORACLE_COLUMNS
from recsys.logs.schema import COLUMN_BY_NAME, COLUMNS, META_KEY, REQUIRED, LogMeta, LogSchemaError, read_meta


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
    sort: SortStats | None = None  # set when the rows had to be sorted

    def lines(self) -> list[str]:
        out = [
            f"{self.rows_in} rows read from {self.source}: {self.rows_clean} clean, "
            f"{self.rows_quarantined} quarantined" + (f" into {self.quarantine}" if self.rows_quarantined else "")
        ]
        if self.sort is not None:
            out.append(
                f"  rows were not ordered by (session_id, step): sorted externally in {self.sort.runs} "
                f"run(s), at most {self.sort.peak_rows} rows in memory"
            )
        out += ["  " + p.message() for p in self.problems]
        if self.propensity_source == "estimated":
            out.append(
                f"  propensities estimated by a Plackett–Luce logging model: NLL {self.propensity_nll:.3f} "
                f"per slate (uniform: {self.uniform_nll:.3f})"
            )
        return out

    def metrics(self) -> dict[str, float]:
        out = {
            "rows_in": float(self.rows_in),
            "rows_clean": float(self.rows_clean),
            "rows_quarantined": float(self.rows_quarantined),
        }
        for p in self.problems:
            out[f"bad_rows.{p.column}"] = out.get(f"bad_rows.{p.column}", 0.0) + p.rows
        out["sorted"] = float(self.sort is not None)
        if self.sort is not None:
            out.update({"sort_runs": float(self.sort.runs), "sort_peak_rows": float(self.sort.peak_rows)})
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
class _Source:
    """Where the rows come from: a parquet file, a directory of parquet files or an in-memory table."""

    label: str
    schema: pa.Schema
    meta: LogMeta | None
    total: int
    batches: Callable[[Sequence[str] | None], Iterator[pa.RecordBatch]]


def open_source(source: Any, chunk_rows: int = 65_536) -> _Source:
    """A parquet file, a directory of parquet files (a partitioned export, read as one log) or a
    DataFrame, as a re-iterable batch source. A missing path raises :class:`ConfigError`; an
    unreadable one :class:`LogSchemaError`."""
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        table = pa.Table.from_pandas(source, preserve_index=False)
        return _Source(
            "<DataFrame>",
            table.schema,
            None,
            table.num_rows,
            lambda columns: iter(
                (table.select(list(columns)) if columns else table).to_batches(max_chunksize=chunk_rows)
            ),
        )
    path = Path(source)
    if path.is_dir():
        import pyarrow.dataset as ds

        try:
            dataset = ds.dataset(
                str(path),
                format="parquet",
                partitioning="hive",
                exclude_invalid_files=False,
                ignore_prefixes=[".", "_"],
            )
            total = dataset.count_rows() if dataset.files else 0
        except (pa.ArrowInvalid, OSError) as exc:
            raise LogSchemaError(f"'{path}' is not a directory of parquet files: {exc}") from None
        if not dataset.files:
            raise LogSchemaError(f"log directory '{path}' holds no parquet files")
        raw = (dataset.schema.metadata or {}).get(META_KEY)
        meta = None if raw is None else LogMeta.model_validate_json(raw)
        return _Source(
            str(path),
            dataset.schema,
            meta,
            total,
            lambda columns: dataset.to_batches(
                columns=list(columns) if columns else None, batch_size=chunk_rows, use_threads=False
            ),
        )
    if not path.is_file():
        raise ConfigError(f"log file '{path}' does not exist")
    try:
        pf = pq.ParquetFile(str(path), pre_buffer=False)
    except (pa.ArrowInvalid, OSError) as exc:
        raise LogSchemaError(f"'{path}' is not a parquet file: {exc}") from None
    return _Source(
        str(path),
        pf.schema_arrow,
        read_meta(path),
        pf.metadata.num_rows,
        lambda columns: pf.iter_batches(batch_size=chunk_rows, columns=list(columns) if columns else None),
    )


def ingest_logs(
    source: Any,
    output: str | Path,
    quarantine: str | Path | None = None,
    chunk_rows: int = 65_536,
    strict: bool = False,
    num_candidates: int | None = None,
    estimate: str = "auto",
    propensity_epochs: int = 3,
    seed: int = 0,
    meta_overrides: Mapping[str, Any] | None = None,
    order: str = "sort",
) -> IngestReport:
    """Validate ``source`` chunk by chunk into a clean, schema-normal log at ``output``.

    ``source``: a parquet file, a directory of parquet files (a partitioned export) or a DataFrame.
    Rows are ordered by ``(session_id, step)``: ``order="sort"`` (default) checks the order in one
    streaming pass and, when it is broken, sorts the log with a memory-bounded external sort
    (:func:`recsys.logs.order.external_sort`: sorted runs of ``chunk_rows`` rows, merged by batches);
    ``order="require"`` raises one :class:`LogSchemaError` naming the first out-of-order row instead.
    Bad rows go to ``quarantine`` (default ``<output>.quarantine.parquet``) with ``_source_row`` (the
    row number in the source) and ``_problems`` columns. ``strict=True`` raises one
    :class:`LogSchemaError` listing every problem instead of writing anything. ``estimate``:
    ``"auto"`` fits a logging-policy model when the logs have no ``slate_propensity``; ``"always"``
    replaces logged propensities; ``"never"`` leaves them out.
    """
    if estimate not in ("auto", "always", "never"):
        raise ConfigError(f"estimate must be auto, always or never, got '{estimate}'")
    if order not in ("sort", "require"):
        raise ConfigError(f"order must be sort or require, got '{order}'")
    output = Path(output)
    quarantine = Path(quarantine) if quarantine is not None else output.with_name(output.stem + ".quarantine.parquet")
    # per-position rows (one row per shown item, e.g. the Open Bandit Dataset) become per-slate rows
    from recsys.logs.positions import maybe_per_position

    source, meta_overrides = maybe_per_position(source, meta_overrides)
    src = open_source(source, chunk_rows)
    schema, src_meta, total, label = src.schema, src.meta, src.total, src.label
    if total == 0:  # before the type checks: an empty file's columns are all of type null
        raise LogSchemaError(f"log {label} has no rows: there is nothing to ingest")
    structural = _check_structure(schema, label)
    if structural:
        plural = "s" if len(structural) > 1 else ""
        raise LogSchemaError(
            f"log {label} cannot be read ({len(structural)} problem{plural}):\n  " + "\n  ".join(structural)
        )
    report = IngestReport(source=label, output=None if strict else output, quarantine=None if strict else quarantine)
    tmp_dir = tempfile.TemporaryDirectory(prefix="recsys-ingest-")
    # row order: (session_id, step), checked in one pass over the two key columns, sorted if broken
    unordered = first_out_of_order(src.batches(["session_id", "step"]))
    batches: Iterator[pa.RecordBatch]
    if unordered is None:
        batches = src.batches(None)
    elif order == "require":
        tmp_dir.cleanup()
        raise LogSchemaError(
            f"log {label} is not ordered by (session_id, step): {unordered.message()} "
            "(ingest with order='sort' / without --require-sorted to sort it)"
        )
    else:
        report.sort = SortStats()
        batches = external_sort(src.batches, Path(tmp_dir.name) / "runs", chunk_rows, report.sort)
    checker = _RowChecker()
    has_prop = "slate_propensity" in schema.names
    writer: LogWriter | None = None
    qwriter: pq.ParquetWriter | None = None
    dims: tuple[int, int, int, int] | None = None
    first = 0
    prev_key: tuple[int, int] | None = None
    has_oracle = all(c in schema.names for c in ORACLE_COLUMNS)
    clean_path = (
        Path(tmp_dir.name) / "clean.parquet"
        if (not strict and (estimate == "always" or (estimate == "auto" and not has_prop)))
        else output
    )
    # segments that cross a chunk boundary are written with their chunk: carry keeps row groups whole
    carry: dict[str, np.ndarray] | None = None
    try:
        for batch in batches:
            n = batch.num_rows
            if SOURCE_ROW in batch.schema.names:  # sorted: the rows' numbers in the source
                rows = batch.column(SOURCE_ROW).to_numpy(zero_copy_only=False).astype(np.int64)
                batch = batch.drop_columns([SOURCE_ROW])
            else:
                rows = np.arange(first, first + n, dtype=np.int64)
            if dims is None:
                dims = _infer_dims(batch, src_meta, num_candidates)
                u, c, f, k = dims
                base = src_meta.model_dump() if src_meta is not None else {}
                base.update(
                    user_dim=u,
                    num_candidates=c,
                    doc_dim=f,
                    slate_size=k,
                    has_oracle=has_oracle,
                    session_aligned=True,
                    propensity_source="logged" if has_prop and estimate != "always" else None,
                )
                base.update(dict(meta_overrides or {}))
                report.meta = LogMeta.model_validate(base)
                if not strict:
                    keep_prop = has_prop and estimate != "always"
                    writer = (LogWriter if keep_prop else _NoPropWriter)(clean_path, report.meta)
            cols, bad, reasons = _validate_batch(batch, dims, rows, checker, prev_key)
            if n:
                prev_key = (int(cols["session_id"][-1]), int(cols["step"][-1]))
            if not strict and bad.any():
                qtable = pa.Table.from_batches([batch]).filter(pa.array(bad))
                qtable = qtable.append_column("_source_row", pa.array(rows[bad], pa.int64()))
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
            raise LogSchemaError(
                f"log {label} has {report.rows_quarantined} bad row(s):\n  "
                + "\n  ".join(p.message() for p in report.problems)
            )
        return report
    if report.rows_clean == 0:
        tmp_dir.cleanup()
        raise LogSchemaError(
            f"log {label}: every one of its {report.rows_in} rows is bad:\n  "
            + "\n  ".join(p.message() for p in report.problems)
        )
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
