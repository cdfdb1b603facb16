r"""Per-position logs → the per-slate schema (what :func:`~recsys.logs.ingest_logs` reads).

Public real-world logs (e.g. the Open Bandit Dataset) record one row per *shown item*: the
position :math:`k`, the item :math:`a`, the click and the logging propensity
:math:`\mu(a \text{ at } k \mid x)`, not one row per slate. :func:`to_slates` turns such rows into
schema rows, in one of two ways:

* **with an** ``impression_id`` **column** (the rows of one served slate share it): each impression
  becomes one slate row of :math:`K` positions (every impression must show positions 0..K−1);
  ``position_propensity`` holds the per-position propensities and ``slate_propensity`` their product
  :math:`\mu(A|x) = \prod_k \mu(a_k \text{ at } k|x)` (exact when the logging policy fills the
  positions independently given x — say so if yours does not); the click position is the first
  clicked position;
* **without one** (rows are separate impressions, as in the Open Bandit Dataset's sample): each row
  is a slate of one position, :math:`K = 1`, with the position one-hot appended to the user features
  (position-aware policies and estimators, the protocol of Saito et al. 2021), ``slate_propensity``
  :math:`= \mu(a \text{ at } k \mid x)`.

Columns (per row): ``position`` (int; 1-based positions are ranked densely to 0-based, as OBP
does), ``item_id``, ``click`` (0/1), ``propensity`` or ``propensity_score``; optional
``impression_id``, ``session_id``/``step``, ``user_id``; user features are the columns whose names
start with ``user_feature`` — categorical (e.g. hashed strings) ones are one-hot encoded, numeric
ones kept; ``user-item_affinity_<j>`` (or ``user_item_affinity_<j>``) columns give a per-row feature
of candidate j. Item features come from a table with ``item_id`` and ``item_feature*`` columns
(categorical ones one-hot encoded) and are joined to every row's candidate table; without one the
candidates are described by their identity (one-hot). Every item of the table (or every item seen)
is a candidate, so C = the number of items.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.logs.schema import LogSchemaError

PER_POSITION_COLUMNS: tuple[str, ...] = ("position", "item_id", "click")
PROPENSITY_COLUMNS: tuple[str, ...] = ("propensity", "propensity_score")
ITEM_TABLE_NAMES: tuple[str, ...] = ("item_context.csv", "items.csv", "items.parquet", "item_features.parquet")


def is_per_position(columns: Any) -> bool:
    """True when ``columns`` are per-position rows (``position``, ``item_id``, ``click``, no ``slate``)."""
    names = set(columns)
    return set(PER_POSITION_COLUMNS) <= names and "slate" not in names


def _read_table(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        frame = pd.read_csv(path)
        return frame.drop(columns=[c for c in frame.columns if c.startswith("Unnamed")])
    return pd.read_parquet(path)


def _columns_of(path: Path) -> list[str]:
    if path.suffix == ".csv":
        from recsys.logs.schema import LogSchemaError

        try:
            return list(pd.read_csv(path, nrows=0).columns)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise LogSchemaError(f"'{path}' is not a readable CSV log: {exc}") from None
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(str(path)).names)
    except Exception:  # not parquet: ingestion reports it
        return []


def _encode(frame: pd.DataFrame, columns: list[str]) -> tuple[np.ndarray, list[str]]:
    """Numeric columns as floats, categorical (non-numeric) ones one-hot over their sorted values."""
    parts, names = [], []
    for col in columns:
        values = frame[col]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            parts.append(values.to_numpy(np.float32)[:, None])
            names.append(col)
        else:
            cats = sorted(values.astype(str).unique())
            codes = pd.Categorical(values.astype(str), categories=cats).codes
            parts.append(np.eye(len(cats), dtype=np.float32)[codes])
            names += [f"{col}={c}" for c in cats]
    if not parts:
        return np.zeros((len(frame), 0), np.float32), []
    return np.concatenate(parts, axis=1), names


def _affinity_columns(columns: Any) -> dict[int, str]:
    out = {}
    for col in columns:
        for prefix in ("user-item_affinity_", "user_item_affinity_"):
            if str(col).startswith(prefix) and str(col)[len(prefix) :].isdigit():
                out[int(str(col)[len(prefix) :])] = col
    return out


def to_slates(frame: pd.DataFrame, items: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-position rows → schema rows (a DataFrame for :func:`~recsys.logs.ingest_logs`) and the
    metadata it should record (feature names, ``source_format``)."""
    missing = [c for c in PER_POSITION_COLUMNS if c not in frame.columns]
    prop_col = next((c for c in PROPENSITY_COLUMNS if c in frame.columns), None)
    if missing:
        raise LogSchemaError(f"per-position log: column(s) {missing} missing (needs {list(PER_POSITION_COLUMNS)})")
    if len(frame) == 0:
        raise LogSchemaError("per-position log: the log has no rows")
    # candidates: the item table's items (sorted ids), else every item seen
    if items is not None:
        if "item_id" not in items.columns:
            raise LogSchemaError("per-position log: the item feature table has no 'item_id' column")
        items = items.sort_values("item_id").reset_index(drop=True)
        item_ids = items["item_id"].to_numpy(np.int64)
        feat_cols = [c for c in items.columns if c != "item_id" and not str(c).startswith("Unnamed")]
        item_x, doc_names = _encode(items, feat_cols)
    else:
        item_ids = np.sort(frame["item_id"].unique()).astype(np.int64)
        item_x = np.eye(len(item_ids), dtype=np.float32)
        doc_names = [f"item={i}" for i in item_ids]
    c = len(item_ids)
    index_of = pd.Series(np.arange(c), index=item_ids)
    unknown = ~frame["item_id"].isin(item_ids)
    if unknown.any():
        raise LogSchemaError(
            f"column 'item_id': {int(unknown.sum())} rows show an item missing from the item "
            f"table (first bad row: {int(np.flatnonzero(unknown.to_numpy())[0])})"
        )
    item_idx = index_of.loc[frame["item_id"].to_numpy()].to_numpy(np.int64)
    position = pd.Series(frame["position"]).rank(method="dense").to_numpy(np.int64) - 1
    k_max = int(position.max()) + 1
    affinity = _affinity_columns(frame.columns)
    n = len(frame)
    if affinity:
        aff = np.zeros((n, c), dtype=np.float32)
        for item, col in affinity.items():
            if item in index_of.index:
                aff[:, int(index_of.loc[item])] = frame[col].to_numpy(np.float32)
        doc_names = doc_names + ["user_item_affinity"]
    user_cols = [col for col in frame.columns if str(col).startswith("user_feature")]
    user_x, user_names = _encode(frame, user_cols)
    click = pd.to_numeric(frame["click"], errors="coerce").to_numpy(np.float64)
    not_binary = ~np.isin(click, (0.0, 1.0))  # NaN too: a click is shown-and-clicked or not, nothing else
    if not_binary.any():
        first = int(np.flatnonzero(not_binary)[0])
        raise LogSchemaError(
            f"column 'click': {int(not_binary.sum())} rows are not 0 or 1 (first bad row: {first}, value "
            f"{frame['click'].iloc[first]}); a per-position log records each shown item as clicked (1) or not (0)"
        )
    prop = frame[prop_col].to_numpy(np.float64) if prop_col is not None else None

    def candidates(rows: np.ndarray) -> list[np.ndarray]:
        if affinity:
            table = np.concatenate(
                [np.broadcast_to(item_x, (len(rows), c, item_x.shape[1])), aff[rows, :, None]], axis=2
            )
        else:
            table = np.broadcast_to(item_x, (len(rows), c, item_x.shape[1]))
        return list(np.ascontiguousarray(table).reshape(len(rows), -1))

    ids = np.broadcast_to(item_ids, (1, c))[0]
    if "impression_id" in frame.columns:
        imp = frame["impression_id"].to_numpy()
        order = np.lexsort((position, imp))
        imp_sorted, pos_sorted = imp[order], position[order]
        starts = np.flatnonzero(np.r_[True, imp_sorted[1:] != imp_sorted[:-1]])
        sizes = np.diff(np.r_[starts, len(order)])
        expected = np.tile(np.arange(k_max), len(starts))
        if not (sizes == k_max).all() or not np.array_equal(
            np.concatenate([pos_sorted[s : s + z] for s, z in zip(starts, sizes)]), expected
        ):
            bad = int((sizes != k_max).sum()) or len(starts)
            raise LogSchemaError(
                f"column 'position': {bad} impression(s) do not show every position 0..{k_max - 1} "
                "once (drop 'impression_id' to ingest the rows as one-position slates)"
            )
        rows = order.reshape(-1, k_max)  # [S, K] source rows by position
        first = rows[:, 0]
        clicks = click[rows] > 0
        click_pos = np.where(clicks.any(1), clicks.argmax(1), -1)
        out = pd.DataFrame(
            {
                "session_id": frame["session_id"].to_numpy(np.int64)[first]
                if "session_id" in frame.columns
                else np.arange(len(rows), dtype=np.int64),
                "step": frame["step"].to_numpy(np.int64)[first]
                if "step" in frame.columns
                else np.zeros(len(rows), np.int64),
                "user_features": list(user_x[first]),
                "candidate_features": candidates(first),
                "candidate_doc_ids": [ids] * len(rows),
                "slate": list(item_idx[rows]),
                "click_position": click_pos.astype(np.int64),
                "engagement": clicks.any(1).astype(np.float64),
            }
        )
        if prop is not None:
            out["slate_propensity"] = prop[rows].prod(1)
            out["position_propensity"] = list(prop[rows])
        mode = "per_position_slates"
    else:
        pos_x = np.eye(k_max, dtype=np.float32)[position]
        user_x = np.concatenate([user_x, pos_x], axis=1)
        user_names = user_names + [f"position={k}" for k in range(k_max)]
        out = pd.DataFrame(
            {
                "session_id": frame["session_id"].to_numpy(np.int64)
                if "session_id" in frame.columns
                else np.arange(n, dtype=np.int64),
                "step": frame["step"].to_numpy(np.int64) if "step" in frame.columns else np.zeros(n, np.int64),
                "user_features": list(user_x),
                "candidate_features": candidates(np.arange(n)),
                "candidate_doc_ids": [ids] * n,
                "slate": list(item_idx[:, None]),
                "click_position": np.where(click > 0, 0, -1).astype(np.int64),
                "engagement": (click > 0).astype(np.float64),
            }
        )
        if prop is not None:
            out["slate_propensity"] = prop
            out["position_propensity"] = list(prop[:, None])
        mode = "per_position_items"
    if "user_id" in frame.columns and mode == "per_position_items":
        out["user_id"] = frame["user_id"].to_numpy(np.int64)
    meta = {
        "user_feature_names": user_names,
        "doc_feature_names": doc_names,
        "source_format": mode,
        "source_positions": k_max,
        "item_ids": [int(i) for i in item_ids],
    }
    return out, meta


def item_table_beside(path: Path) -> pd.DataFrame | None:
    """The item feature table next to a per-position log file (``item_context.csv``, ``items.parquet`` …)."""
    for name in ITEM_TABLE_NAMES:
        candidate = path.parent / name
        if candidate.is_file() and candidate != path:
            return _read_table(candidate)
    return None


def maybe_per_position(source: Any, meta_overrides: Mapping[str, Any] | None) -> tuple[Any, Mapping[str, Any] | None]:
    """Ingestion's one entry point: per-position rows (a DataFrame, or a parquet/CSV file detected by its
    columns) become schema rows; anything else is returned unchanged. A DataFrame's item table is
    ``frame.attrs["items"]``; a file's is found beside it (:data:`ITEM_TABLE_NAMES`)."""
    if isinstance(source, pd.DataFrame):
        if not is_per_position(source.columns):
            return source, meta_overrides
        frame, items = source, source.attrs.get("items")
    else:
        path = Path(source)
        if not path.is_file() or not is_per_position(_columns_of(path)):
            return source, meta_overrides
        frame, items = _read_table(path), item_table_beside(path)
    out, meta = to_slates(frame, items)
    return out, {**meta, **dict(meta_overrides or {})}


__all__ = ["PER_POSITION_COLUMNS", "is_per_position", "to_slates", "maybe_per_position", "item_table_beside"]
