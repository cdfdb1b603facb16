"""Ingestion of a user's own logs: structural checks, per-row validation with a quarantine, and
propensities estimated when the logs lack them (:func:`ingest_logs`)."""

from __future__ import annotations

import itertools
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core_rl.common.errors import ConfigError
from recsys.logs.generate import LogWriter
from recsys.logs.order import SortStats, external_sort, first_out_of_order
from recsys.logs.propensity import PropensityModel
from recsys.logs.reader import ORACLE_COLUMNS
from recsys.logs.schema import META_KEY, LogMeta, LogSchemaError, read_meta
from recsys.logs.validate import (
    Problem,
    ValidatedPart,
    check_structure,
    infer_dims,
    merge_problems,
    source_rows,
    validate_part,
)

# ---- ingestion -----------------------------------------------------------------------------------


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


@dataclass
class _Source:
    """Where the rows come from: a parquet file, a directory or glob of parquet files or an in-memory table.

    ``fragments`` (files only): the row groups in reading order, as picklable dataset fragments that
    read with ``schema`` (partition columns included), with their row counts — what a backend that
    reads the log in parallel (``backend="ray"``) hands to its tasks."""

    label: str
    schema: pa.Schema
    meta: LogMeta | None
    total: int
    batches: Callable[[Sequence[str] | None], Iterator[pa.RecordBatch]]
    fragments: Callable[[], list[tuple[Any, int]]] | None = None


def _is_glob(source: Any) -> bool:
    return isinstance(source, str) and any(ch in source for ch in "*?[")


def _row_groups(dataset: Any) -> list[tuple[Any, int]]:
    """``(fragment of one row group, its rows)`` for every non-empty row group, in reading order."""
    out = []
    for fragment in dataset.get_fragments():
        for rg in fragment.split_by_row_group():
            rows = int(rg.row_groups[0].num_rows)
            if rows:
                out.append((rg, rows))
    return out


def open_source(source: Any, chunk_rows: int = 65_536) -> _Source:
    """A parquet file, a directory of parquet files (a partitioned export, read as one log), a glob
    of parquet files (``"exports/day=*/part-*.parquet"``, read in sorted path order) or a DataFrame,
    as a re-iterable batch source. A missing path raises :class:`ConfigError`; an unreadable one
    :class:`LogSchemaError`."""
    import glob

    import pandas as pd
    import pyarrow.dataset as ds

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
    if _is_glob(source) or path.is_dir():
        if _is_glob(source):
            files = sorted(glob.glob(str(source)))
            if not files:
                raise ConfigError(f"no file matches the log pattern '{source}'")
            where: Any = files
        else:
            where = str(path)
        try:
            dataset = ds.dataset(
                where,
                format="parquet",
                partitioning="hive",
                exclude_invalid_files=False,
                ignore_prefixes=[".", "_"],
            )
            total = dataset.count_rows() if dataset.files else 0
        except (pa.ArrowInvalid, OSError) as exc:
            raise LogSchemaError(f"'{source}' is not a set of parquet files: {exc}") from None
        if not dataset.files:
            raise LogSchemaError(f"log directory '{path}' holds no parquet files")
        raw = (dataset.schema.metadata or {}).get(META_KEY)
        meta = None if raw is None else LogMeta.model_validate_json(raw)
        return _Source(
            str(source),
            dataset.schema,
            meta,
            total,
            lambda columns: dataset.to_batches(
                columns=list(columns) if columns else None, batch_size=chunk_rows, use_threads=False
            ),
            lambda: _row_groups(dataset),
        )
    if not path.is_file():
        raise ConfigError(f"log file '{path}' does not exist")
    if path.suffix.lower() == ".csv":  # per-position CSVs were converted before this point: this one is not
        from recsys.logs.positions import PER_POSITION_COLUMNS

        raise LogSchemaError(
            f"'{path}' is a CSV without the per-position columns {list(PER_POSITION_COLUMNS)} (Open Bandit "
            "Dataset's layout, one row per shown item); a slate log with a 'slate' column must be parquet"
        )
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
        lambda: _row_groups(ds.dataset(str(path), format="parquet")),
    )


BACKENDS = ("local", "ray")


def _local_parts(
    batches: Iterator[pa.RecordBatch], dims: tuple[int, int, int, int], keep_quarantine: bool
) -> Iterator[ValidatedPart]:
    """:func:`validate_part` over the batches in this process, each with the previous batch's last key."""
    first = 0
    prev_key: tuple[int, int] | None = None
    for batch in batches:
        rows, batch = source_rows(batch, first)
        first += batch.num_rows
        part = validate_part(batch, rows, dims, prev_key, keep_quarantine)
        prev_key = part.last_key
        yield part


class _CleanOutput:
    """Writes validated parts in order: clean rows to the log (whole segments per row group: a segment
    that may go on in the next part is carried over) and bad rows to the quarantine."""

    def __init__(self, writer: LogWriter | None, quarantine: Path):
        self.writer, self.quarantine = writer, quarantine
        self.qwriter: pq.ParquetWriter | None = None
        self.carry: dict[str, np.ndarray] | None = None

    def add(self, part: ValidatedPart) -> None:
        if part.quarantine is not None:
            if self.qwriter is None:
                self.quarantine.parent.mkdir(parents=True, exist_ok=True)
                self.qwriter = pq.ParquetWriter(str(self.quarantine), part.quarantine.schema)
            self.qwriter.write_table(part.quarantine)
        if self.writer is None:
            return
        good = part.clean
        if self.carry is not None:
            good = {key: np.concatenate([self.carry[key], good[key]]) for key in good}
        self.carry = None
        m = len(good["session_id"])
        if m:
            s, t = good["session_id"], good["step"]
            cont = np.zeros(m, dtype=bool)
            cont[1:] = (s[1:] == s[:-1]) & (t[1:] == t[:-1] + 1)
            cut = int(np.flatnonzero(~cont)[-1])
            if cut > 0:
                self.carry = {key: v[cut:] for key, v in good.items()}
                good = {key: v[:cut] for key, v in good.items()}
            self.writer.write(good)

    def close(self) -> None:
        try:
            if self.writer is not None and self.carry is not None:
                self.writer.write(self.carry)
        finally:
            if self.writer is not None:
                self.writer.close()
            if self.qwriter is not None:
                self.qwriter.close()


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
    backend: str = "local",
    ray_address: str | None = None,
    work_dir: str | Path | None = None,
) -> IngestReport:
    """Validate ``source`` chunk by chunk into a clean, schema-normal log at ``output``.

    ``source``: a parquet file, a directory or glob of parquet files (a partitioned export) or a DataFrame.
    Rows are ordered by ``(session_id, step)``: ``order="sort"`` (default) checks the order in one
    streaming pass and, when it is broken, sorts the log with a memory-bounded external sort
    (:func:`recsys.logs.order.external_sort`: sorted runs of ``chunk_rows`` rows, merged by batches);
    ``order="require"`` raises one :class:`LogSchemaError` naming the first out-of-order row instead.
    Bad rows go to ``quarantine`` (default ``<output>.quarantine.parquet``) with ``_source_row`` (the
    row number in the source) and ``_problems`` columns. ``strict=True`` raises one
    :class:`LogSchemaError` listing every problem instead of writing anything. ``estimate``:
    ``"auto"`` fits a logging-policy model when the logs have no ``slate_propensity``; ``"always"``
    replaces logged propensities; ``"never"`` leaves them out.

    ``backend="ray"`` validates the row groups as Ray Data tasks (:mod:`recsys.logs.ray_ingest`: the
    same :func:`~recsys.logs.validate.validate_part` per batch, on the cluster at ``ray_address`` or
    ``$RAY_ADDRESS``, else a local Ray) and writes what they return here, in order: the clean log,
    quarantine and report are the local backend's. The order check, a sort, the writing and the
    propensity fit stay in this process; a sorted (or in-memory) log is first spooled as parquet parts
    under ``work_dir`` (default a temporary folder), which on a cluster every node must be able to read.
    """
    if estimate not in ("auto", "always", "never"):
        raise ConfigError(f"estimate must be auto, always or never, got '{estimate}'")
    if order not in ("sort", "require"):
        raise ConfigError(f"order must be sort or require, got '{order}'")
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be local or ray, got '{backend}'")
    output = Path(output)
    quarantine = Path(quarantine) if quarantine is not None else output.with_name(output.stem + ".quarantine.parquet")
    # per-position rows (one row per shown item, e.g. the Open Bandit Dataset) become per-slate rows
    from recsys.logs.positions import maybe_per_position

    source, meta_overrides = maybe_per_position(source, meta_overrides)
    src = open_source(source, chunk_rows)
    schema, src_meta, total, label = src.schema, src.meta, src.total, src.label
    if total == 0:  # before the type checks: an empty file's columns are all of type null
        raise LogSchemaError(f"log {label} has no rows: there is nothing to ingest")
    structural = check_structure(schema, label)
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
        batches = iter(src.batches(None))
    elif order == "require":
        tmp_dir.cleanup()
        raise LogSchemaError(
            f"log {label} is not ordered by (session_id, step): {unordered.message()} "
            "(ingest with order='sort' / without --require-sorted to sort it)"
        )
    else:
        report.sort = SortStats()
        batches = external_sort(src.batches, Path(tmp_dir.name) / "runs", chunk_rows, report.sort)
    has_prop = "slate_propensity" in schema.names
    has_oracle = all(c in schema.names for c in ORACLE_COLUMNS)
    clean_path = (
        Path(tmp_dir.name) / "clean.parquet"
        if (not strict and (estimate == "always" or (estimate == "auto" and not has_prop)))
        else output
    )
    # the dimensions come from the metadata or the first batch
    head = next(batches)
    dims = infer_dims(source_rows(head, 0)[1], src_meta, num_candidates)
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
    writer: LogWriter | None = None
    if not strict:
        keep_prop = has_prop and estimate != "always"
        writer = (LogWriter if keep_prop else _NoPropWriter)(clean_path, report.meta)
    out = _CleanOutput(writer, quarantine)
    problems: dict[tuple[str, str], Problem] = {}
    stream = itertools.chain([head], batches)
    spool: Path | None = None
    try:
        if backend == "local":
            parts = _local_parts(stream, dims, keep_quarantine=not strict)
        else:
            from recsys.logs.ray_ingest import validated_parts_on_ray

            if src.fragments is not None and report.sort is None:
                fragments, read_schema = src.fragments(), schema
            else:  # the sorted stream (or a DataFrame) is spooled to parquet parts the tasks can read
                spool = Path(work_dir or tmp_dir.name) / f"spool-{uuid.uuid4().hex[:8]}"
                fragments, read_schema = _spool(stream, spool, chunk_rows)
            parts = validated_parts_on_ray(
                fragments, read_schema, dims, chunk_rows, keep_quarantine=not strict, ray_address=ray_address
            )
        for part in parts:
            merge_problems(problems, part.problems)
            report.rows_in += part.rows_in
            report.rows_quarantined += part.rows_quarantined
            if not strict:
                out.add(part)
    finally:
        out.close()
        if spool is not None:
            shutil.rmtree(spool, ignore_errors=True)
    report.problems = sorted(problems.values(), key=lambda p: p.first_row)
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


def _spool(batches: Iterator[pa.RecordBatch], folder: Path, chunk_rows: int) -> tuple[list[tuple[Any, int]], pa.Schema]:
    """Write a batch stream as parquet parts of about ``chunk_rows`` rows (one row group each) under
    ``folder``; their row-group fragments and schema."""
    import pyarrow.dataset as ds

    folder.mkdir(parents=True, exist_ok=True)
    paths: list[str] = []
    pending: list[pa.RecordBatch] = []
    held = 0

    def flush() -> None:
        nonlocal pending, held
        if held:
            table = pa.Table.from_batches(pending)
            path = folder / f"part-{len(paths):06d}.parquet"
            pq.write_table(table, str(path), row_group_size=max(held, 1))
            paths.append(str(path))
        pending, held = [], 0

    for batch in batches:
        pending.append(batch)
        held += batch.num_rows
        if held >= chunk_rows:
            flush()
    flush()
    dataset = ds.dataset(paths, format="parquet")
    return _row_groups(dataset), dataset.schema


class _NoPropWriter(LogWriter):
    """A clean log without propensity columns (they are estimated afterwards)."""

    def __init__(self, path: str | Path, meta: LogMeta, compression: str = "zstd"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.meta = meta
        self.schema = meta.arrow_schema(propensity=False)
        self._writer = pq.ParquetWriter(str(self.path), self.schema, compression=compression)
        self.rows = 0
