"""Ray Data as an ordered parallel map: the recommender's passes over a partitioned log (:func:`map_in_order`).

Ingestion and off-policy evaluation of a log split into parquet row groups both reduce to three
parts: a list of row-group fragments, one function per fragment that is *the same function the local
path applies to a batch* (:func:`recsys.logs.validate.validate_part`, :func:`recsys.ope.chunk_terms`),
and a combination of the per-fragment results on the driver in fragment order (problem counts and
per-session sums add up). Ray Data runs the middle part: one dataset row per fragment,
``Dataset.map`` across the cluster's CPUs with its streaming executor's backpressure, results read
back in order (``preserve_order`` plus a reorder buffer, so the combination is deterministic).

Fragments must be readable from every node (a shared filesystem or object store); Ray is joined at
``ray_address`` or ``$RAY_ADDRESS``, else started locally (:func:`core_rl.distributed.ray_utils.init_ray`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from core_rl.distributed.ray_utils import init_ray


def map_in_order(
    fn: Callable[[Any], Any], items: Sequence[Any], ray_address: str | None = None, num_cpus: float = 1.0
) -> Iterator[Any]:
    """``fn(item)`` for every item as Ray Data tasks (``num_cpus`` each), yielded in the items' order."""
    if not items:
        return
    init_ray(ray_address)
    import ray.data

    rows = [{"index": i, "item": item} for i, item in enumerate(items)]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    ds = ds.map(_Apply(fn), num_cpus=num_cpus)
    ds.context.execution_options.preserve_order = True
    ds.context.enable_progress_bars = False
    pending: dict[int, Any] = {}
    following = 0
    for row in ds.iter_rows():
        pending[int(row["index"])] = row["result"]
        while following in pending:
            yield pending.pop(following)
            following += 1
    if following != len(items):  # cannot happen unless Ray lost rows: never combine a partial pass
        raise RuntimeError(f"Ray Data returned {following} of {len(items)} fragments")


class _Apply:
    """``row → {"index", "result": fn(item)}`` (a picklable callable, not a closure)."""

    def __init__(self, fn: Callable[[Any], Any]):
        self.fn = fn

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"index": row["index"], "result": self.fn(row["item"])}


__all__ = ["map_in_order"]
