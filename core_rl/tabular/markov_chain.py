r"""Finite Markov chains, the notes' (9/5) :math:`\mathcal M = \{\mathcal S, \mathcal T\}`.

A chain is a state space :math:`\mathcal S = \{0, \dots, S-1\}` and a transition operator
:math:`\mathcal T` that maps the distribution over states at one step to the next:

.. math::
    \mu_{t+1} = \mathcal T \mu_t, \qquad \mu_{t,i} = p(s_t = i), \qquad
    \mathcal T_{i,j} = p(s_{t+1} = i \mid s_t = j).

Index convention (the notes'): **column** ``j`` of ``T`` is the distribution of the next state given
the current state ``j``, so ``T`` is column-stochastic (``T.sum(axis=0) == 1``) and acts on column
vectors from the left. ``chain.P`` is the row-stochastic transpose ``P[j, i] = p(s'=i | s=j)``.

A stationary distribution is a fixed point :math:`\mu = \mathcal T\mu` — an eigenvector of
:math:`\mathcal T` with eigenvalue 1, normalized to sum to one. It is unique iff the chain has
exactly one closed communicating class (a *unichain*); power iteration on the lazy operator
:math:`\tfrac12(I + \mathcal T)` (same fixed points, always aperiodic) converges to it from any start.
A finite chain is *ergodic* (irreducible and aperiodic) iff :math:`\mathcal T^k > 0` for some k, and
then :math:`\mathcal T^t \mu_0 \to \mu` for every :math:`\mu_0`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, reduce
from math import gcd
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from core_rl.common.errors import ConfigError

PROB_ATOL = 1e-6  # how far a probability vector may sum from one before it is rejected (float32 input)


# ---- validation helpers shared by the tabular modules -----------------------------------------


def as_float_array(x: Any, name: str) -> np.ndarray:
    """``x`` (list, numpy array, CPU torch tensor) as a float64 array, or ConfigError naming ``name``."""
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    try:
        arr = np.array(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a numeric array: {exc}") from None
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name} contains NaN or infinite entries")
    return arr


def check_distribution(mu: Any, n: int, name: str = "mu") -> np.ndarray:
    """A probability vector of length ``n`` (nonnegative, sums to one), renormalized exactly."""
    arr = as_float_array(mu, name)
    if arr.shape != (n,):
        raise ConfigError(f"{name} must have shape ({n},), got {arr.shape}")
    if np.any(arr < 0):
        raise ConfigError(f"{name} has negative entries (min {arr.min():.3g})")
    total = arr.sum()
    if abs(total - 1.0) > PROB_ATOL:
        raise ConfigError(f"{name} sums to {total:.10g}, must sum to 1")
    return arr / total


def readonly(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


def make_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def sampling_cdf(probs: np.ndarray) -> np.ndarray:
    """Cumulative sums along the last axis, set to exactly 1 from each row's last positive entry on,
    so that ``argmax(cdf > u)`` for ``u ~ U[0, 1)`` never picks a zero-probability outcome."""
    cdf = np.cumsum(probs, axis=-1)
    k = probs.shape[-1]
    last_positive = k - 1 - np.argmax(probs[..., ::-1] > 0, axis=-1)
    cdf[np.arange(k) >= last_positive[..., None]] = 1.0
    return cdf


def sample_from_cdf(cdf_rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per row of ``cdf_rows`` (n, K), vectorized over rows: the first index with cdf > u."""
    u = rng.random(cdf_rows.shape[0])
    return np.argmax(cdf_rows > u[:, None], axis=1)


def reachability(adjacency: np.ndarray) -> np.ndarray:
    """``R[i, j]``: state ``j`` is reachable from ``i`` in zero or more steps, for ``adjacency[i, j]``
    = one-step edge i→j (transitive closure by repeated squaring, log2(S) matrix products)."""
    n = adjacency.shape[0]
    reach = (adjacency | np.eye(n, dtype=bool)).astype(np.float64)
    for _ in range(max(1, int(np.ceil(np.log2(max(n, 2))))) + 1):
        new = (reach @ reach) > 0
        if np.array_equal(new, reach > 0):
            break
        reach = new.astype(np.float64)
    return reach > 0


@dataclass(frozen=True)
class PowerIterationResult:
    """Outcome of :meth:`MarkovChain.power_iteration`."""

    mu: np.ndarray
    iterations: int
    converged: bool
    residual: float  # ||T mu - mu||_1 at the end


class MarkovChain:
    r"""A finite Markov chain :math:`\{\mathcal S, \mathcal T\}` with column-stochastic ``T[i, j] =
    p(s_{t+1}=i | s_t=j)``.

    >>> chain = MarkovChain([[0.9, 0.5], [0.1, 0.5]])
    >>> chain.stationary_distribution().round(4)
    array([0.8333, 0.1667])
    """

    def __init__(self, T: ArrayLike, *, atol: float = PROB_ATOL):
        T = as_float_array(T, "T")
        if T.ndim != 2 or T.shape[0] != T.shape[1] or T.shape[0] == 0:
            raise ConfigError(f"T must be a square (S, S) matrix with S >= 1, got shape {T.shape}")
        if np.any(T < 0):
            i, j = np.argwhere(T < 0)[0]
            raise ConfigError(f"T has negative entries, e.g. T[{i}, {j}] = {T[i, j]:.3g}")
        col_sums = T.sum(axis=0)
        bad = np.flatnonzero(np.abs(col_sums - 1.0) > atol)
        if bad.size:
            j = bad[0]
            raise ConfigError(
                f"T must be column-stochastic (T[i, j] = p(s'=i | s=j)): column {j} sums to "
                f"{col_sums[j]:.10g} ({bad.size} bad column(s)); did you pass the row-stochastic transpose?"
            )
        self._T = readonly(T / col_sums)

    # ---- views --------------------------------------------------------------------------------
    @property
    def T(self) -> np.ndarray:
        """The notes' column-stochastic operator, ``T[i, j] = p(s'=i | s=j)`` (read-only)."""
        return self._T

    @property
    def P(self) -> np.ndarray:
        """Row-stochastic view ``P[j, i] = p(s'=i | s=j)`` (read-only)."""
        return self._T.T

    @property
    def n_states(self) -> int:
        return self._T.shape[0]

    def __repr__(self) -> str:
        return f"MarkovChain(n_states={self.n_states})"

    # ---- dynamics -----------------------------------------------------------------------------
    def step(self, mu: ArrayLike) -> np.ndarray:
        r""":math:`\mu_{t+1} = \mathcal T \mu_t` for one distribution."""
        return self._T @ check_distribution(mu, self.n_states)

    def propagate(self, mu0: ArrayLike, steps: int, *, return_all: bool = False) -> np.ndarray:
        r"""Apply :math:`\mu_{t+1} = \mathcal T\mu_t` ``steps`` times.

        Returns :math:`\mu_{steps}` (S,), or with ``return_all`` the stack ``[\mu_0, ..., \mu_{steps}]``
        of shape (steps + 1, S).
        """
        if steps < 0:
            raise ConfigError(f"steps must be >= 0, got {steps}")
        mu = check_distribution(mu0, self.n_states, "mu0")
        out = np.empty((steps + 1, self.n_states))
        out[0] = mu
        for t in range(steps):
            out[t + 1] = self._T @ out[t]
        return out if return_all else out[-1]

    def sample(
        self, mu0: ArrayLike, steps: int, n_chains: int = 1, seed: int | np.random.Generator | None = None
    ) -> np.ndarray:
        """Simulate ``n_chains`` independent chains for ``steps`` steps (vectorized over chains).

        Returns integer states of shape (n_chains, steps + 1), starting from ``s_0 ~ mu0``.
        """
        if steps < 0 or n_chains < 1:
            raise ConfigError(f"need steps >= 0 and n_chains >= 1, got steps={steps}, n_chains={n_chains}")
        mu = check_distribution(mu0, self.n_states, "mu0")
        rng = make_rng(seed)
        states = np.empty((n_chains, steps + 1), dtype=np.int64)
        states[:, 0] = sample_from_cdf(np.broadcast_to(sampling_cdf(mu), (n_chains, self.n_states)), rng)
        cdf = self._cdf
        for t in range(steps):
            states[:, t + 1] = sample_from_cdf(cdf[states[:, t]], rng)
        return states

    @cached_property
    def _cdf(self) -> np.ndarray:  # row j: cumulative p(s' | s = j)
        return sampling_cdf(self._T.T.copy())

    # ---- structure ----------------------------------------------------------------------------
    @cached_property
    def _reach(self) -> np.ndarray:
        return reachability(self._T.T > 0)  # edge j -> i iff T[i, j] > 0

    @cached_property
    def communicating_classes(self) -> tuple[np.ndarray, ...]:
        """The communicating classes (states reachable from each other), each a sorted index array."""
        mutual = self._reach & self._reach.T
        seen = np.zeros(self.n_states, dtype=bool)
        classes = []
        for s in range(self.n_states):
            if not seen[s]:
                members = np.flatnonzero(mutual[s])
                seen[members] = True
                classes.append(members)
        return tuple(classes)

    @cached_property
    def closed_classes(self) -> tuple[np.ndarray, ...]:
        """Classes that cannot be left (the recurrent classes); every other state is transient."""
        return tuple(
            c
            for c in self.communicating_classes
            if not np.any(self._reach[c][:, np.setdiff1d(np.arange(self.n_states), c)])
        )

    @property
    def is_irreducible(self) -> bool:
        """Every state reaches every other."""
        return len(self.communicating_classes) == 1

    @property
    def is_unichain(self) -> bool:
        """Exactly one closed class, i.e. the stationary distribution is unique."""
        return len(self.closed_classes) == 1

    def period(self, states: ArrayLike | None = None) -> int:
        """Period of a communicating class (default: the whole chain, which must be irreducible):
        the gcd of the lengths of all cycles through it."""
        if states is None:
            if not self.is_irreducible:
                raise ConfigError("the chain is reducible; pass the states of one communicating class")
            cls = np.arange(self.n_states)
        else:
            cls = np.unique(np.asarray(states, dtype=np.int64))
            if not any(np.array_equal(cls, c) for c in self.communicating_classes):
                raise ConfigError(f"states {cls.tolist()} are not one communicating class")
        sub = self._T.T[np.ix_(cls, cls)] > 0  # sub[u, v]: edge u -> v inside the class
        level = np.full(cls.size, -1, dtype=np.int64)
        level[0] = 0
        frontier = np.zeros(cls.size, dtype=bool)
        frontier[0] = True
        depth = 0
        while frontier.any():  # breadth-first levels
            depth += 1
            nxt = sub[frontier].any(axis=0) & (level < 0)
            level[nxt] = depth
            frontier = nxt
        u, v = np.nonzero(sub)
        diffs = np.abs(level[u] + 1 - level[v])
        return int(reduce(gcd, diffs.tolist(), 0)) or 1

    @property
    def is_aperiodic(self) -> bool:
        """Every closed class has period 1."""
        return all(self.period(c) == 1 for c in self.closed_classes)

    @property
    def is_ergodic(self) -> bool:
        """Irreducible and aperiodic: T^t mu0 converges to the unique stationary mu for every mu0."""
        return self.is_irreducible and self.period() == 1

    # ---- stationary and limiting distributions ------------------------------------------------
    def _require_unichain(self) -> None:
        if not self.is_unichain:
            classes = [c.tolist() for c in self.closed_classes]
            raise ConfigError(
                f"the stationary distribution is not unique: the chain has {len(classes)} closed classes "
                f"{classes}; use limiting_distribution(mu0) for the long-run distribution from a start"
            )

    def stationary_distribution(
        self, method: Literal["eigen", "power"] = "eigen", *, tol: float = 1e-12, max_iterations: int = 1_000_000
    ) -> np.ndarray:
        r"""The unique :math:`\mu` with :math:`\mathcal T\mu = \mu`, :math:`\sum_i \mu_i = 1`.

        ``method="eigen"``: the eigenvector of :math:`\mathcal T` for the eigenvalue closest to 1.
        ``method="power"``: :meth:`power_iteration` from the uniform distribution.
        Raises ConfigError when the chain has several closed classes (no unique answer).
        """
        self._require_unichain()
        if method == "power":
            res = self.power_iteration(tol=tol, max_iterations=max_iterations)
            if not res.converged:
                raise ConfigError(
                    f"power iteration did not reach tol={tol} in max_iterations="
                    f"{max_iterations} (residual {res.residual:.3g}); raise max_iterations"
                )
            return res.mu
        if method != "eigen":
            raise ConfigError(f"method must be 'eigen' or 'power', got {method!r}")
        eigvals, eigvecs = np.linalg.eig(self._T)
        k = int(np.argmin(np.abs(eigvals - 1.0)))
        mu = np.real(eigvecs[:, k])
        mu = mu / mu.sum()
        mu = np.clip(mu, 0.0, None)  # roundoff on transient states
        return mu / mu.sum()

    def power_iteration(
        self, mu0: ArrayLike | None = None, *, tol: float = 1e-12, max_iterations: int = 1_000_000
    ) -> PowerIterationResult:
        r"""Iterate the lazy operator :math:`\mu \leftarrow \tfrac12(\mu + \mathcal T\mu)` until
        :math:`\|\mathcal T\mu - \mu\|_1 \le` ``tol``. The lazy chain has the same fixed points as
        :math:`\mathcal T` and is aperiodic, so this converges even for periodic chains."""
        if tol <= 0 or max_iterations < 1:
            raise ConfigError(f"need tol > 0 and max_iterations >= 1, got tol={tol}, max_iterations={max_iterations}")
        mu = (
            np.full(self.n_states, 1.0 / self.n_states)
            if mu0 is None
            else check_distribution(mu0, self.n_states, "mu0")
        )
        t_mu = self._T @ mu
        residual = float(np.abs(t_mu - mu).sum())
        it = 0
        while residual > tol and it < max_iterations:
            mu = 0.5 * (mu + t_mu)
            t_mu = self._T @ mu
            residual = float(np.abs(t_mu - mu).sum())
            it += 1
        return PowerIterationResult(mu=mu, iterations=it, converged=residual <= tol, residual=residual)

    def limiting_distribution(self, mu0: ArrayLike) -> np.ndarray:
        r"""The long-run (Cesàro) distribution :math:`\lim_n \frac1n\sum_{t<n}\mathcal T^t\mu_0`.

        Exact for any chain: the mass ``mu0`` sends into each closed class C (absorption
        probabilities through the transient states, :math:`(I - Q)^{-1}`) times C's own stationary
        distribution. Equals :math:`\lim_t \mathcal T^t\mu_0` when the closed classes are aperiodic.
        """
        mu = check_distribution(mu0, self.n_states, "mu0")
        closed = self.closed_classes
        recurrent = np.concatenate(closed)
        transient = np.setdiff1d(np.arange(self.n_states), recurrent)
        if transient.size:
            Q = self._T[np.ix_(transient, transient)]
            visits = np.linalg.solve(np.eye(transient.size) - Q, mu[transient])  # expected visits
        out = np.zeros(self.n_states)
        for c in closed:
            mass = mu[c].sum()
            if transient.size:
                mass += self._T[np.ix_(c, transient)].sum(axis=0) @ visits
            out[c] = mass * MarkovChain(self._T[np.ix_(c, c)]).stationary_distribution()
        return out / out.sum()
