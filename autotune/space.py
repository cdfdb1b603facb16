"""Optuna distributions <-> points of the unit cube, vectorized over rows.

Both learners see a search space as columns of ``[0, 1]``:

* a float is one column, linear or log-scaled (``u = (log v − log low)/(log high − log low)``);
* an int, or a float with ``step``, is one column cut into K equal cells, one per grid value
  (cell centres ``(k + ½)/K``; log-scaled ints use the cells of ``[low−½, high+½]`` in log space,
  as Optuna's own transform does), so a uniform ``u`` gives every value its share;
* a categorical with k choices is k one-hot columns.

:meth:`SpaceCodec.snap` maps any matrix of unit points onto representable configurations, so a
candidate the meta policy scores is exactly the configuration that will be evaluated.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial

from core_rl.common.errors import ConfigError

EPS = 1e-12


@dataclass(frozen=True)
class ParamCodec:
    """One parameter's columns of the unit cube."""

    name: str
    distribution: BaseDistribution
    start: int  # first column
    width: int  # 1 for numeric, k for categorical

    @property
    def kind(self) -> str:
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return "cat"
        if isinstance(d, IntDistribution) or (isinstance(d, FloatDistribution) and d.step is not None):
            return "grid"
        return "float"

    @property
    def n_levels(self) -> int:
        """Number of values a grid or categorical parameter takes (0 for a continuous float)."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return len(d.choices)
        if self.kind == "grid" and not getattr(d, "log", False):
            return int(round((d.high - d.low) / d.step)) + 1  # type: ignore[union-attr]
        if isinstance(d, IntDistribution):  # log int: every integer of [low, high]
            return int(d.high - d.low + 1)
        return 0

    # ---- numeric columns ---------------------------------------------------------------------
    def _log_bounds(self) -> tuple[float, float]:
        d = self.distribution
        if isinstance(d, IntDistribution):
            return math.log(d.low - 0.5), math.log(d.high + 0.5)
        return math.log(d.low), math.log(d.high)  # type: ignore[union-attr]

    def encode(self, values: np.ndarray | list[Any]) -> np.ndarray:
        """External values (one per row) -> ``[rows, width]`` unit columns."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            idx = np.array([d.to_internal_repr(v) for v in values], dtype=np.int64)
            out = np.zeros((len(idx), self.width))
            out[np.arange(len(idx)), idx] = 1.0
            return out
        v = np.asarray(values, dtype=np.float64)
        if d.low == d.high:  # type: ignore[union-attr]
            return np.full((len(v), 1), 0.5)
        if getattr(d, "log", False):
            lo, hi = self._log_bounds()
            u = (np.log(np.maximum(v, EPS)) - lo) / (hi - lo)
        elif self.kind == "grid":
            k = self.n_levels
            idx = np.round((v - d.low) / d.step)  # type: ignore[union-attr]
            u = (idx + 0.5) / k
        else:
            u = (v - d.low) / (d.high - d.low)  # type: ignore[union-attr]
        return np.clip(u, 0.0, 1.0)[:, None]

    def snap(self, cols: np.ndarray) -> np.ndarray:
        """Unit columns ``[rows, width]`` -> the nearest representable unit columns."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            out = np.zeros_like(cols)
            out[np.arange(len(cols)), cols.argmax(1)] = 1.0
            return out
        return self.encode(self.decode_numeric(cols[:, 0]))

    def decode_numeric(self, u: np.ndarray) -> np.ndarray:
        d = self.distribution
        u = np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0)
        if d.low == d.high:  # type: ignore[union-attr]
            return np.full(len(u), d.low)  # type: ignore[union-attr]
        if getattr(d, "log", False):
            lo, hi = self._log_bounds()
            v = np.exp(lo + u * (hi - lo))
            if isinstance(d, IntDistribution):
                v = np.round(v)
            return np.clip(v, d.low, d.high)  # type: ignore[union-attr]
        if self.kind == "grid":
            k = self.n_levels
            idx = np.clip(np.floor(u * k), 0, k - 1)
            return np.clip(d.low + idx * d.step, d.low, d.high)  # type: ignore[union-attr]
        return d.low + u * (d.high - d.low)  # type: ignore[union-attr]

    def decode(self, cols: np.ndarray) -> list[Any]:
        """Unit columns ``[rows, width]`` -> external values, inside the distribution."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return [d.choices[int(i)] for i in cols.argmax(1)]
        v = self.decode_numeric(cols[:, 0])
        if isinstance(d, IntDistribution):
            return [int(x) for x in v]
        if d.step is not None:  # type: ignore[union-attr]
            # float grid: recompute from the index to avoid drift such as 0.30000000000000004 > high
            return [float(min(max(x, d.low), d.high)) for x in v]  # type: ignore[union-attr]
        return [float(x) for x in v]


class SpaceCodec:
    """A search space (``{name: distribution}``) as columns of the unit cube."""

    def __init__(self, search_space: Mapping[str, BaseDistribution]):
        self.params: list[ParamCodec] = []
        col = 0
        for name in sorted(search_space):
            dist = search_space[name]
            if not isinstance(dist, (FloatDistribution, IntDistribution, CategoricalDistribution)):
                raise ConfigError(f"parameter '{name}': unsupported distribution {type(dist).__name__}")
            width = len(dist.choices) if isinstance(dist, CategoricalDistribution) else 1
            self.params.append(ParamCodec(name, dist, col, width))
            col += width
        self.dim = col
        self.search_space = dict(search_space)

    def __len__(self) -> int:
        return len(self.params)

    @property
    def categorical_columns(self) -> list[tuple[int, int]]:
        return [(p.start, p.width) for p in self.params if p.kind == "cat"]

    @property
    def grid_levels(self) -> np.ndarray:
        """Per column: number of grid levels of its parameter (0 continuous, k categorical)."""
        out = np.zeros(self.dim, dtype=np.int64)
        for p in self.params:
            out[p.start : p.start + p.width] = p.n_levels
        return out

    def encode(self, rows: list[Mapping[str, Any]]) -> np.ndarray:
        """Param dicts (all holding every parameter of the space) -> ``[rows, dim]``."""
        out = np.empty((len(rows), self.dim))
        for p in self.params:
            out[:, p.start : p.start + p.width] = p.encode([r[p.name] for r in rows])
        return out

    def snap(self, x: np.ndarray) -> np.ndarray:
        out = np.empty_like(x)
        for p in self.params:
            out[:, p.start : p.start + p.width] = p.snap(x[:, p.start : p.start + p.width])
        return out

    def decode(self, x: np.ndarray) -> list[dict[str, Any]]:
        cols = {p.name: p.decode(x[:, p.start : p.start + p.width]) for p in self.params}
        return [{name: cols[name][i] for name in cols} for i in range(len(x))]

    def uniform(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` snapped points, each parameter uniform over its values (categoricals: uniform choice)."""
        x = rng.random((n, self.dim))
        for p in self.params:
            if p.kind == "cat":
                x[:, p.start : p.start + p.width] = np.eye(p.width)[rng.integers(0, p.width, n)]
        return self.snap(x)


def group_decomposition(trials: Iterable[FrozenTrial]) -> list[frozenset[str]]:
    """Split the parameters of ``trials`` into groups that always appear together.

    Two parameters share a group iff exactly the same trials hold both: the partition Optuna's
    ``_SearchSpaceGroup`` reaches by splitting every group into (in, out) of each trial's keys
    (``TPESampler(group=True)``). In a conditional space, the parameters every trial takes form
    the root group(s) and each branch's parameters their own, e.g. ``{optimizer, batch}``,
    ``{sgd_lr, momentum}``, ``{adam_lr, beta1}``. Groups come in order of first appearance.
    """
    holders: dict[str, list[int]] = {}
    for i, t in enumerate(trials):
        for name in t.params:
            holders.setdefault(name, []).append(i)
    groups: dict[tuple[int, ...], set[str]] = {}
    for name, where in holders.items():
        groups.setdefault(tuple(where), set()).add(name)
    return [frozenset(g) for g in groups.values()]
