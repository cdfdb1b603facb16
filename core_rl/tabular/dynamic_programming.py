r"""Dynamic programming on a known tabular MDP (notes 9/12: "use dynamic programming for cases
with few states (the OPT values are Q or V)").

Everything here is exact given the model ``mdp.P[s, a, s'] = p(s'|s,a)``, ``mdp.r[s, a]``, γ.
Vectors are over states, ``P @ V`` is :math:`\mathbb E_{s'\sim p(\cdot|s,a)}[V(s')]` for all (s, a).

**Policy evaluation** (9/7): :math:`V^\pi` is the fixed point of the Bellman expectation operator

.. math::
    V^\pi = r_\pi + \gamma P_\pi V^\pi \iff (I - \gamma P_\pi)V^\pi = r_\pi,\qquad
    r_\pi(s) = \sum_a \pi(a|s) r(s,a),\quad P_\pi(s,s') = \sum_a\pi(a|s)p(s'|s,a),

solved exactly (a linear solve) or iteratively :math:`V_{k+1} = r_\pi + \gamma P_\pi V_k`; then
:math:`Q^\pi(s,a) = r(s,a) + \gamma\,\mathbb E_{s'}[V^\pi(s')]`.

**Policy iteration**: evaluate :math:`Q^\pi`, improve with the notes' greedy policy
:math:`\pi'(a|s) = 1` iff :math:`a = \arg\max_a Q^\pi(s,a)`, repeat until the policy is stable.

**Value iteration**: :math:`V_{k+1}(s) = \max_a\big[r(s,a) + \gamma\sum_{s'}p(s'|s,a)V_k(s')\big]`.

**Q iteration** (9/12, the tabular form of fitted Q iteration's target
:math:`y = r + \gamma\max_{a'}Q(s',a')`):
:math:`Q_{k+1}(s,a) = r(s,a) + \gamma\sum_{s'}p(s'|s,a)\max_{a'}Q_k(s',a')`.

The iterative solvers stop when the sup-norm change of one sweep is at most ``tol``; for γ < 1 the
answer is then within :math:`\gamma\,\mathrm{tol}/(1-\gamma)` of the fixed point (contraction).

**Backward induction** (finite horizon H, the notes' :math:`\sum_{t'=t}^T`):
:math:`V_H = 0`, :math:`Q_t = r + \gamma P V_{t+1}`, :math:`V_t = \max_a Q_t` (or
:math:`\mathbb E_{\pi_t}[Q_t]` to evaluate a policy), giving time-varying values and policies.

With γ = 1 and no horizon the infinite-horizon values are finite only for policies that reach a
terminal state (``mdp.terminal``) with probability one; exact evaluation checks that.

**Episodic tasks.** Terminal states end the episode: they are absorbing with zero reward, and
every solver pins their value to 0 (a start value ``V0``/``Q0`` there is ignored — with γ = 1 an
absorbing state would otherwise keep it forever). Policy iteration with γ = 1 starts from
:func:`proper_policy`, which ends the episode almost surely, so that every evaluation is finite.

Example (FrozenLake-v1's exact model; the three solvers agree)::

    >>> import numpy as np
    >>> from core_rl.tabular import TabularMDP
    >>> mdp = TabularMDP.from_gym("FrozenLake-v1", gamma=0.99)
    >>> vi, pi = value_iteration(mdp), policy_iteration(mdp)
    >>> round(float(mdp.mu0 @ vi.V), 3), bool(np.allclose(vi.V, pi.V, atol=1e-6))
    (0.542, True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core_rl.common.config import format_validation_error
from core_rl.common.errors import ConfigError
from core_rl.tabular.markov_chain import MarkovChain, as_float_array
from core_rl.tabular.mdp import TabularMDP


class SolverSettings(BaseModel):
    """Stopping rule of the iterative solvers."""

    model_config = ConfigDict(extra="forbid")

    tol: float = Field(1e-10, gt=0.0, description="Stop when a sweep changes V (or Q) by at most tol (sup norm).")
    max_iterations: int = Field(100_000, ge=1, description="Give up (converged=False) after this many sweeps.")


def _settings(tol: float, max_iterations: int) -> SolverSettings:
    try:
        return SolverSettings(tol=tol, max_iterations=max_iterations)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, prefix="solver")) from None


@dataclass(frozen=True)
class DPResult:
    """Result of an infinite-horizon solver.

    ``V`` (S,), ``Q`` (S, A) with ``Q = r + γ P V``; ``policy`` (S,) the greedy actions
    argmax_a Q(s, a) (for policy evaluation: the improved policy); ``iterations`` sweeps (or
    evaluations, for policy iteration); ``converged``; ``residual`` the last sweep's sup-norm change.
    """

    V: np.ndarray
    Q: np.ndarray
    policy: np.ndarray
    iterations: int
    converged: bool
    residual: float

    @property
    def policy_matrix(self) -> np.ndarray:
        """The greedy policy as a one-hot π(a|s), shape (S, A)."""
        return np.eye(self.Q.shape[1])[self.policy]


@dataclass(frozen=True)
class FiniteHorizonResult:
    """Result of backward induction over ``horizon`` H decisions.

    ``V`` (H+1, S) with ``V[t]`` the value with H - t decisions left (``V[H]`` the terminal value);
    ``Q`` (H, S, A); ``policy`` (H, S) time-varying greedy actions argmax_a Q[t, s, a].
    """

    V: np.ndarray
    Q: np.ndarray
    policy: np.ndarray
    horizon: int

    @property
    def policy_matrix(self) -> np.ndarray:
        """The greedy policy as one-hot π_t(a|s), shape (H, S, A)."""
        return np.eye(self.Q.shape[2])[self.policy]


def _check_v(mdp: TabularMDP, V: ArrayLike | None, name: str = "V0") -> np.ndarray:
    """A start (or terminal-time) value; terminal states are worth 0 whatever it says there
    (an ended episode earns nothing, and with γ = 1 an absorbing state would keep any other value)."""
    if V is None:
        return np.zeros(mdp.n_states)
    V = as_float_array(V, name)
    if V.shape != (mdp.n_states,):
        raise ConfigError(f"{name} must have shape ({mdp.n_states},), got {V.shape}")
    return np.where(mdp.terminal, 0.0, V)


def _fixed_point(
    operator: Callable[[np.ndarray], np.ndarray], x: np.ndarray, cfg: SolverSettings
) -> tuple[np.ndarray, int, float]:
    r"""Iterate :math:`x_{k+1} = \mathcal T x_k` until :math:`\|x_{k+1}-x_k\|_\infty \le` ``tol`` (or
    ``max_iterations`` sweeps); returns (x, sweeps, the last residual)."""
    residual, it = np.inf, 0
    while residual > cfg.tol and it < cfg.max_iterations:
        x_next = operator(x)
        residual = float(np.abs(x_next - x).max())
        x, it = x_next, it + 1
    return x, it, residual


def bellman_operator(mdp: TabularMDP, V: ArrayLike, policy: ArrayLike | None = None) -> np.ndarray:
    r"""One backup: :math:`(\mathcal B^\pi V)(s) = \mathbb E_\pi[r + \gamma V(s')]`, or the optimality
    backup :math:`\max_a [r(s,a) + \gamma \mathbb E V(s')]` without a policy."""
    return mdp.v_from_q(mdp.q_from_v(V), policy)


def _check_proper(mdp: TabularMDP, P_pi: np.ndarray) -> None:
    """With γ = 1 the value is finite only if every closed class of the induced chain is terminal."""
    bad = [c.tolist() for c in MarkovChain(P_pi.T).closed_classes if not mdp.terminal[c].all()]
    if bad:
        raise ConfigError(
            f"gamma = 1 without a horizon: the policy never leaves the non-terminal state set(s) "
            f"{bad[:3]}, so its value is undefined; use gamma < 1, a horizon "
            f"(backward_induction) or a policy that reaches a terminal state"
        )


def policy_evaluation(
    mdp: TabularMDP,
    policy: ArrayLike,
    *,
    method: Literal["exact", "iterative"] = "exact",
    tol: float = 1e-10,
    max_iterations: int = 100_000,
    V0: ArrayLike | None = None,
) -> DPResult:
    r""":math:`V^\pi` of a stationary policy.

    ``method="exact"``: solve :math:`(I - \gamma P_\pi)V = r_\pi` on the non-terminal states
    (:math:`V = 0` on terminal ones). ``method="iterative"``: :math:`V_{k+1} = r_\pi + \gamma P_\pi V_k`
    from ``V0`` until :math:`\|V_{k+1} - V_k\|_\infty \le` ``tol``.
    """
    cfg = _settings(tol, max_iterations)
    P_pi, r_pi = mdp.P_pi(policy), mdp.r_pi(policy)
    if method == "exact":
        if mdp.gamma >= 1.0:
            _check_proper(mdp, P_pi)
        live = ~mdp.terminal
        V = np.zeros(mdp.n_states)
        A = np.eye(int(live.sum())) - mdp.gamma * P_pi[np.ix_(live, live)]
        V[live] = np.linalg.solve(A, r_pi[live])
        Q = mdp.q_from_v(V)
        return DPResult(
            V=V,
            Q=Q,
            policy=mdp.greedy(Q),
            iterations=1,
            converged=True,
            residual=float(np.abs(r_pi + mdp.gamma * P_pi @ V - V).max()),
        )
    if method != "iterative":
        raise ConfigError(f"method must be 'exact' or 'iterative', got {method!r}")
    V, it, residual = _fixed_point(lambda V: r_pi + mdp.gamma * (P_pi @ V), _check_v(mdp, V0), cfg)
    Q = mdp.q_from_v(V)
    return DPResult(V=V, Q=Q, policy=mdp.greedy(Q), iterations=it, converged=residual <= cfg.tol, residual=residual)


def value_iteration(
    mdp: TabularMDP, *, tol: float = 1e-10, max_iterations: int = 100_000, V0: ArrayLike | None = None
) -> DPResult:
    r"""Value iteration :math:`V_{k+1}(s) = \max_a [r(s,a) + \gamma\sum_{s'}p(s'|s,a)V_k(s')]` from ``V0``
    (default 0) until :math:`\|V_{k+1}-V_k\|_\infty \le` ``tol``."""
    cfg = _settings(tol, max_iterations)
    V, it, residual = _fixed_point(lambda V: (mdp.r + mdp.gamma * (mdp.P @ V)).max(axis=1), _check_v(mdp, V0), cfg)
    Q = mdp.q_from_v(V)
    return DPResult(V=V, Q=Q, policy=mdp.greedy(Q), iterations=it, converged=residual <= cfg.tol, residual=residual)


def q_iteration(
    mdp: TabularMDP, *, tol: float = 1e-10, max_iterations: int = 100_000, Q0: ArrayLike | None = None
) -> DPResult:
    r"""Q iteration :math:`Q_{k+1}(s,a) = r(s,a) + \gamma\sum_{s'}p(s'|s,a)\max_{a'}Q_k(s',a')` from ``Q0``
    (default 0) until :math:`\|Q_{k+1}-Q_k\|_\infty \le` ``tol``; ``V = max_a Q``."""
    cfg = _settings(tol, max_iterations)
    if Q0 is None:
        Q = np.zeros((mdp.n_states, mdp.n_actions))
    else:
        Q = as_float_array(Q0, "Q0")
        if Q.shape != (mdp.n_states, mdp.n_actions):
            raise ConfigError(f"Q0 must have shape {(mdp.n_states, mdp.n_actions)}, got {Q.shape}")
        Q = np.where(mdp.terminal[:, None], 0.0, Q)  # terminal states are worth 0
    Q, it, residual = _fixed_point(lambda Q: mdp.r + mdp.gamma * (mdp.P @ Q.max(axis=1)), Q, cfg)
    return DPResult(
        V=Q.max(axis=1), Q=Q, policy=mdp.greedy(Q), iterations=it, converged=residual <= cfg.tol, residual=residual
    )


def proper_policy(mdp: TabularMDP) -> np.ndarray:
    r"""A deterministic policy that reaches a terminal state with probability one from every state
    that can reach one (an *attractor* construction): rank the terminal states 0, then repeatedly give
    each unranked state an action that moves to a ranked state with positive probability. Every step
    then has a positive chance of lowering the rank, so the episode ends almost surely — the start
    policy of policy iteration on an episodic task with γ = 1. States that cannot reach a terminal
    state keep action 0."""
    reach = np.asarray(mdp.terminal).copy()
    actions = np.zeros(mdp.n_states, dtype=np.int64)
    while True:
        hits = mdp.P[:, :, reach].sum(axis=2) > 0  # (S, A): the action may enter the ranked set
        new = ~reach & hits.any(axis=1)
        if not new.any():
            return actions
        actions[new] = hits[new].argmax(axis=1)
        reach |= new


def policy_iteration(
    mdp: TabularMDP,
    policy0: ArrayLike | None = None,
    *,
    evaluation: Literal["exact", "iterative"] = "exact",
    tol: float = 1e-10,
    max_iterations: int = 1_000,
) -> DPResult:
    r"""Policy iteration: :math:`Q^{\pi_k}` by :func:`policy_evaluation`, then
    :math:`\pi_{k+1}(s) = \arg\max_a Q^{\pi_k}(s,a)`, until the policy no longer changes.

    ``policy0`` defaults to action 0 everywhere, or with γ = 1 (an episodic task) to
    :func:`proper_policy`, which ends the episode almost surely (a given one must too).
    The current action is kept when it ties the best within roundoff (so the loop cannot cycle
    between equally good actions). ``iterations`` counts policy evaluations; ``tol`` is the
    iterative evaluation's tolerance; ``max_iterations`` caps the improvement steps.
    """
    cfg = _settings(tol, max_iterations)
    if policy0 is None:
        policy0 = proper_policy(mdp) if mdp.gamma >= 1.0 else np.zeros(mdp.n_states, dtype=np.int64)
    current = mdp.policy_matrix(policy0)
    if current.ndim != 2:
        raise ConfigError("policy0 must be stationary: shape (S,) or (S, A)")
    actions = None if not np.all((current == 0) | (current == 1)) else current.argmax(axis=1)
    eval_error = cfg.tol / (1.0 - mdp.gamma) if evaluation == "iterative" and mdp.gamma < 1 else 0.0
    V = None
    for it in range(1, cfg.max_iterations + 1):
        ev = policy_evaluation(mdp, current, method=evaluation, tol=cfg.tol, V0=V)
        V, Q = ev.V, ev.Q
        best = Q.max(axis=1)
        new_actions = Q.argmax(axis=1)
        if actions is not None:
            tie_tol = 1e-9 * (1.0 + np.abs(Q).max()) + 10 * eval_error
            keep = Q[np.arange(mdp.n_states), actions] >= best - tie_tol
            new_actions = np.where(keep, actions, new_actions)
            if np.array_equal(new_actions, actions):
                return DPResult(
                    V=V, Q=Q, policy=actions, iterations=it, converged=True, residual=float(np.abs(best - V).max())
                )
        actions = new_actions
        current = np.eye(mdp.n_actions)[actions]
    return DPResult(
        V=V,
        Q=Q,
        policy=actions,
        iterations=cfg.max_iterations,
        converged=False,
        residual=float(np.abs(Q.max(axis=1) - V).max()),
    )


def backward_induction(
    mdp: TabularMDP,
    horizon: int | None = None,
    *,
    policy: ArrayLike | None = None,
    terminal_value: ArrayLike | None = None,
) -> FiniteHorizonResult:
    r"""Finite-horizon dynamic programming over H decisions (t = 0, ..., H-1):

    .. math::
        V_H = V_{\text{terminal}} \ (\text{default } 0),\quad
        Q_t(s,a) = r(s,a) + \gamma\sum_{s'}p(s'|s,a)V_{t+1}(s'),\quad
        V_t(s) = \max_a Q_t(s,a)

    (the optimal time-varying policy), or :math:`V_t(s) = \sum_a\pi_t(a|s)Q_t(s,a)` to evaluate a
    given (stationary or (H, S, A) time-varying) ``policy``. ``horizon`` defaults to ``mdp.horizon``.
    """
    H = horizon if horizon is not None else mdp.horizon
    if H is None or int(H) != H or H < 1:
        raise ConfigError(f"horizon must be a positive integer (or set mdp.horizon), got {H}")
    H = int(H)
    pi = None
    if policy is not None:
        pi = mdp.policy_matrix(policy)
        if pi.ndim == 3 and pi.shape[0] != H:
            raise ConfigError(f"a time-varying policy must have {H} steps, got {pi.shape[0]}")
    V = np.empty((H + 1, mdp.n_states))
    V[H] = _check_v(mdp, terminal_value, "terminal_value")
    Q = np.empty((H, mdp.n_states, mdp.n_actions))
    for t in range(H - 1, -1, -1):
        Q[t] = mdp.r + mdp.gamma * (mdp.P @ V[t + 1])
        if pi is None:
            V[t] = Q[t].max(axis=1)
        else:
            V[t] = np.einsum("sa,sa->s", pi[t] if pi.ndim == 3 else pi, Q[t])
    return FiniteHorizonResult(V=V, Q=Q, policy=mdp.greedy(Q), horizon=H)
