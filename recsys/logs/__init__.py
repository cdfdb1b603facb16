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
feature names, the simulator that produced it (config and, for the NG twin, its frozen corpus) and the logging policy (kind, spec and
state), so evaluation can rebuild both.

**Ingestion** (:func:`ingest_logs`) streams a parquet file, a directory or glob of parquet files (a
partitioned export) or a DataFrame in chunks, applying the per-batch rules of
:mod:`recsys.logs.validate` here or, with ``backend="ray"``, as Ray Data tasks over the row groups
(:mod:`recsys.logs.ray_ingest`; the same clean log, quarantine and counts). Rows out of ``(session_id, step)`` order are sorted
by a memory-bounded external sort (:mod:`recsys.logs.order`: sorted runs of ``chunk_rows`` rows
merged by batches), or refused with one error naming the first out-of-order row. Structural
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

from recsys.logs.generate import GenerateResult, LogWriter, generate_logs
from recsys.logs.ingest import IngestReport, Problem, ingest_logs, open_source
from recsys.logs.order import OutOfOrder, SortStats, external_sort, first_out_of_order
from recsys.logs.propensity import PropensityModel
from recsys.logs.reader import LogChunk, LogReader, read_logs_frame
from recsys.logs.schema import (
    COLUMNS,
    SCHEMA_VERSION,
    ColumnSpec,
    LogMeta,
    LogSchemaError,
    corpus_from_json,
    corpus_to_json,
    env_corpus_of,
    env_kind_of,
    read_meta,
)

__all__ = [
    "COLUMNS",
    "ColumnSpec",
    "LogMeta",
    "LogSchemaError",
    "LogWriter",
    "generate_logs",
    "GenerateResult",
    "LogChunk",
    "LogReader",
    "read_logs_frame",
    "read_meta",
    "env_kind_of",
    "Problem",
    "IngestReport",
    "ingest_logs",
    "PropensityModel",
    "SCHEMA_VERSION",
    "open_source",
    "OutOfOrder",
    "SortStats",
    "external_sort",
    "first_out_of_order",
    "corpus_to_json",
    "corpus_from_json",
    "env_corpus_of",
]
