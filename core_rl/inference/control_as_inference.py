r"""Control as inference on a known tabular MDP (notes 10/10): optimality variables, backward
messages, soft value iteration, forward messages and posterior state marginals.

**Graphical model.** Add a binary optimality variable :math:`\mathcal O_t` to every step with

.. math:: p(\mathcal O_t = 1 \mid s_t, a_t) = \exp\big(r(s_t,a_t)/\alpha\big)

(temperature α = 1 in the notes; rewards ≤ 0 make it a probability, but every formula below only
needs the unnormalized factor). With an action prior :math:`p(a_t|s_t)` (uniform by default), the
trajectory posterior is :math:`p(\tau\mid\mathcal O_{0:H-1}) \propto p(s_0)\prod_t p(a_t|s_t)\,
p(s_{t+1}|s_t,a_t)\exp(r(s_t,a_t)/\alpha)` — near-optimal behaviour: the best trajectory is the most
likely, worse ones keep some probability.

**Backward messages** (computed recursively, t = H-1, ..., 0, with :math:`\beta_H \equiv 1`):

.. math::
    \beta_t(s_t,a_t) = p(\mathcal O_{t:H-1}\mid s_t,a_t)
        = p(\mathcal O_t|s_t,a_t)\;\mathbb E_{s_{t+1}\sim p(\cdot|s_t,a_t)}[\beta_{t+1}(s_{t+1})],
    \qquad
    \beta_t(s_t) = \mathbb E_{a_t\sim p(a_t|s_t)}[\beta_t(s_t,a_t)].

In log space, with :math:`Q_t = \alpha\log\beta_t(s,a)` and :math:`V_t = \alpha\log\beta_t(s)`,
this is **soft value iteration** (log-sum-exp in place of max):

.. math::
    Q_t(s,a) = r(s,a) + \gamma\,\alpha\log\mathbb E_{s'}\big[\exp(V_{t+1}(s')/\alpha)\big],\qquad
    V_t(s) = \alpha\log\sum_a p(a|s)\exp(Q_t(s,a)/\alpha),

and the posterior ("soft-optimal") policy is
:math:`\pi_t(a|s) = p(a_t|s_t,\mathcal O_{t:H-1}) = p(a|s)\beta_t(s,a)/\beta_t(s) = p(a|s)\exp((Q_t - V_t)/\alpha)`.
The notes' soft value iteration uses the improper prior :math:`p(a|s) = 1` (``log_prior = 0``), so
:math:`V = \alpha\log\sum_a\exp(Q/\alpha)`; a uniform prior only shifts V by :math:`\alpha\log|\mathcal A|`
per remaining step and leaves the policy unchanged. As α → 0, :math:`V \to \max_a Q`.

The log-expectation backup (``backup="optimistic"``) is exact inference: it lets the posterior
"choose" lucky transitions, :math:`p(s_{t+1}|s_t,a_t,\mathcal O_{t+1:}) \propto p(s_{t+1}|s_t,a_t)
\beta_{t+1}(s_{t+1}) \ne p(s_{t+1}|s_t,a_t)`, which is optimistic under stochastic dynamics.
``backup="expected"`` uses :math:`Q = r + \gamma\,\mathbb E_{s'}[V(s')]`, the variational
(maximum-entropy RL) fix that keeps the real dynamics; the two agree on deterministic MDPs.
The discount γ multiplies the backup; the message reading is exact for γ = 1.

**Forward messages** and marginals (γ = 1):

.. math::
    \alpha_{t+1}(s') = p(s_{t+1}=s'\mid\mathcal O_{0:t}) \propto
        \sum_{s,a} p(s'|s,a)\,p(\mathcal O_t|s,a)\,p(a|s)\,\alpha_t(s),\qquad \alpha_0 = p(s_0),

    p(s_t\mid\mathcal O_{0:H-1}) \propto \beta_t(s_t)\,\alpha_t(s_t),\qquad
    p(s_t,a_t\mid\mathcal O_{0:H-1}) \propto \alpha_t(s_t)\,p(a_t|s_t)\,\beta_t(s_t,a_t).

Finite horizon H (``horizon``, default ``mdp.horizon``): time-varying Q_t, V_t, π_t. Without a horizon
(γ < 1): the discounted infinite-horizon fixed point, iterated to ``tol`` (the soft backup is a
γ-contraction in sup norm). Terminal states (``mdp.terminal``) end the episode: V = 0 there.

Example (a 2×3 gridworld: as α → 0 the soft values are value iteration's; with a cost of −1 per
step, :math:`p(\mathcal O_t|s,a) = e^{-1}`, the posterior policy prefers the shortest way to the
goal but keeps every action possible)::

    >>> import numpy as np
    >>> from core_rl.tabular import value_iteration
    >>> from core_rl.tabular.gridworld import gridworld
    >>> world = gridworld("S..\n.#G", gamma=0.9)
    >>> cold = soft_value_iteration(world.mdp, temperature=0.01)
    >>> bool(np.allclose(cold.V, value_iteration(world.mdp).V, atol=1e-3))
    True
    >>> print(world.render_policy(cold.greedy))
    →→↓
    ↑#G
    >>> timed = gridworld("S..\n.#G", gamma=1.0, step_reward=-1.0, goal_reward=0.0, horizon=6)
    >>> messages = backward_messages(timed.mdp)
    >>> messages.policy[0, timed.state(0, 0)].round(2)   # π_0(a|start): left, down, right, up
    array([0.19, 0.17, 0.45, 0.19])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import logsumexp

from core_rl.common.errors import ConfigError
from core_rl.tabular.markov_chain import as_float_array, check_distribution
from core_rl.tabular.mdp import TabularMDP

Backup = Literal["optimistic", "expected"]


@dataclass(frozen=True)
class SoftVIResult:
    r"""Soft values of a finite-horizon or discounted infinite-horizon problem.

    Finite horizon H: ``Q`` (H, S, A), ``V`` (H+1, S) with ``V[H]`` the terminal value.
    Infinite horizon: ``Q`` (S, A), ``V`` (S,). ``log_prior`` (S, A) is log p(a|s) (0 for the improper
    prior of plain soft VI). ``iterations``/``converged``/``residual`` describe the infinite-horizon
    iteration (one backward sweep for a finite horizon).
    """

    Q: np.ndarray
    V: np.ndarray
    log_prior: np.ndarray
    temperature: float
    gamma: float
    backup: Backup
    horizon: int | None
    iterations: int
    converged: bool
    residual: float

    @property
    def finite(self) -> bool:
        return self.horizon is not None

    @property
    def log_policy(self) -> np.ndarray:
        r""":math:`\log\pi(a|s) = \log p(a|s) + (Q - V)/\alpha`, shape (H, S, A) or (S, A)."""
        V = self.V[:-1] if self.finite else self.V
        return self.log_prior + (self.Q - V[..., None]) / self.temperature

    @property
    def policy(self) -> np.ndarray:
        r"""The soft-optimal policy :math:`\pi(a|s) = \beta(s,a)p(a|s)/\beta(s)` (rows sum to one)."""
        logp = self.log_policy
        return np.exp(logp - logsumexp(logp, axis=-1, keepdims=True))

    @property
    def greedy(self) -> np.ndarray:
        """argmax_a Q(s, a): the most likely action (ties to the lowest index)."""
        return np.argmax(self.Q, axis=-1)

    # the message view (exact for gamma = 1 and a normalized prior)
    @property
    def log_beta_sa(self) -> np.ndarray:
        r""":math:`\log\beta_t(s,a) = \log p(\mathcal O_{t:H-1}|s_t,a_t) = Q_t/\alpha`."""
        return self.Q / self.temperature

    @property
    def log_beta_s(self) -> np.ndarray:
        r""":math:`\log\beta_t(s) = \log p(\mathcal O_{t:H-1}|s_t) = V_t/\alpha` (``[H]`` is 0)."""
        return self.V / self.temperature


@dataclass(frozen=True)
class ForwardMessages:
    r"""``log_alpha`` (H+1, S): :math:`\log p(s_t\mid\mathcal O_{0:t-1})`; ``state_marginals``
    (H+1, S): :math:`p(s_t\mid\mathcal O_{0:H-1})`; ``state_action_marginals`` (H, S, A):
    :math:`p(s_t,a_t\mid\mathcal O_{0:H-1})`; ``log_evidence``: :math:`\log p(\mathcal O_{0:H-1})`."""

    log_alpha: np.ndarray
    state_marginals: np.ndarray
    state_action_marginals: np.ndarray
    log_evidence: float


# ---- argument checks ---------------------------------------------------------------------------


def _reward(mdp: TabularMDP, reward: ArrayLike | None) -> np.ndarray:
    if reward is None:
        return np.asarray(mdp.r)
    r = as_float_array(reward, "reward")
    S, A = mdp.n_states, mdp.n_actions
    if r.shape == (S,):
        r = np.repeat(r[:, None], A, axis=1)
    if r.shape != (S, A):
        raise ConfigError(f"reward must have shape (S,) = ({S},) or (S, A) = {(S, A)}, got {r.shape}")
    return np.where(mdp.terminal[:, None], 0.0, r)  # terminal states carry no reward


def _log_prior(mdp: TabularMDP, log_prior: ArrayLike | None, uniform: bool) -> np.ndarray:
    S, A = mdp.n_states, mdp.n_actions
    if log_prior is None:
        return np.full((S, A), -np.log(A) if uniform else 0.0)
    lp = np.asarray(log_prior, dtype=np.float64)
    if lp.shape != (S, A) or np.isnan(lp).any() or np.isposinf(lp).any():
        raise ConfigError(
            f"log_prior must be an (S, A) = {(S, A)} array of log p(a|s) (finite or -inf), got {lp.shape}"
        )
    return lp


def _check(temperature: float, backup: str) -> None:
    if not (temperature > 0 and np.isfinite(temperature)):
        raise ConfigError(f"temperature must be a positive number, got {temperature}")
    if backup not in ("optimistic", "expected"):
        raise ConfigError(f"backup must be 'optimistic' or 'expected', got {backup!r}")


# ---- the two soft operators ----------------------------------------------------------------------


def _lse(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """log Σ exp over ``axis``, stable per row (a row of -inf gives -inf)."""
    m = x.max(axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(x - m).sum(axis=axis)) + np.squeeze(m, axis)


def soft_max(Q: np.ndarray, temperature: float = 1.0, log_prior: np.ndarray | float = 0.0) -> np.ndarray:
    r""":math:`V(s) = \alpha\log\sum_a p(a|s)\exp(Q(s,a)/\alpha)` over the last axis."""
    return temperature * _lse(Q / temperature + log_prior)


def _log(P: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(P)


def soft_expectation(
    P: np.ndarray,
    V: np.ndarray,
    temperature: float = 1.0,
    backup: Backup = "optimistic",
    log_P: np.ndarray | None = None,
) -> np.ndarray:
    r""":math:`\alpha\log\mathbb E_{s'\sim P(\cdot|s,a)}[\exp(V(s')/\alpha)]` (``optimistic``) or
    :math:`\mathbb E_{s'}[V(s')]` (``expected``), for every (s, a); ``P`` is (S, A, S) (``log_P``
    its log, if already at hand)."""
    if backup == "expected":
        return P @ V
    return temperature * _lse((_log(P) if log_P is None else log_P) + V / temperature)


# ---- solvers -------------------------------------------------------------------------------------


def soft_value_iteration(
    mdp: TabularMDP,
    *,
    temperature: float = 1.0,
    horizon: int | None = None,
    backup: Backup = "optimistic",
    log_prior: ArrayLike | None = None,
    reward: ArrayLike | None = None,
    gamma: float | None = None,
    terminal_value: ArrayLike | None = None,
    V0: ArrayLike | None = None,
    tol: float = 1e-10,
    max_iterations: int = 100_000,
) -> SoftVIResult:
    r"""Soft value iteration :math:`Q = r + \gamma\,\mathrm{backup}(V')`, :math:`V = \alpha\log\sum_a p(a|s)e^{Q/\alpha}`.

    ``horizon`` (default ``mdp.horizon``) gives the finite-horizon backward pass; without one the
    discounted (γ < 1) fixed point is iterated until the sup-norm change is at most ``tol``.
    ``log_prior`` defaults to 0 (the notes' :math:`V = \alpha\log\sum_a\exp(Q/\alpha)`); ``reward``
    (S,) or (S, A) replaces ``mdp.r`` (inverse RL evaluates learned rewards); ``gamma`` defaults to
    ``mdp.gamma``. ``terminal_value`` is V_H of a finite horizon; ``V0`` starts the infinite-horizon
    iteration (a warm start; default 0).
    """
    _check(temperature, backup)
    r = _reward(mdp, reward)
    lp = _log_prior(mdp, log_prior, uniform=False)
    gamma = mdp.gamma if gamma is None else float(gamma)
    if not 0.0 < gamma <= 1.0:
        raise ConfigError(f"gamma must be in (0, 1], got {gamma}")
    live = ~np.asarray(mdp.terminal)
    P = np.asarray(mdp.P)
    log_P = _log(P) if backup == "optimistic" else None

    def soft_q(V_next: np.ndarray) -> np.ndarray:
        return r + gamma * soft_expectation(P, V_next, temperature, backup, log_P)

    H = mdp.horizon if horizon is None else horizon
    if H is not None:
        if int(H) != H or H < 1:
            raise ConfigError(f"horizon must be a positive integer, got {H}")
        H = int(H)
        V = np.empty((H + 1, mdp.n_states))
        V[H] = 0.0 if terminal_value is None else _check_values(mdp, terminal_value, "terminal_value")
        Q = np.empty((H, mdp.n_states, mdp.n_actions))
        for t in range(H - 1, -1, -1):
            Q[t] = soft_q(V[t + 1])
            V[t] = np.where(live, soft_max(Q[t], temperature, lp), 0.0)
        return SoftVIResult(
            Q=Q,
            V=V,
            log_prior=lp,
            temperature=temperature,
            gamma=gamma,
            backup=backup,
            horizon=H,
            iterations=1,
            converged=True,
            residual=0.0,
        )
    if gamma >= 1.0:
        raise ConfigError("infinite-horizon soft value iteration needs gamma < 1 (or give a horizon)")
    V = np.zeros(mdp.n_states) if V0 is None else np.where(live, _check_values(mdp, V0, "V0"), 0.0)
    residual, it = np.inf, 0
    while residual > tol and it < max_iterations:
        Q = soft_q(V)
        V_next = np.where(live, soft_max(Q, temperature, lp), 0.0)
        residual = float(np.abs(V_next - V).max())
        V, it = V_next, it + 1
    Q = soft_q(V)
    return SoftVIResult(
        Q=Q,
        V=V,
        log_prior=lp,
        temperature=temperature,
        gamma=gamma,
        backup=backup,
        horizon=None,
        iterations=it,
        converged=residual <= tol,
        residual=residual,
    )


def _check_values(mdp: TabularMDP, V: ArrayLike, name: str = "V") -> np.ndarray:
    V = as_float_array(V, name)
    if V.shape != (mdp.n_states,):
        raise ConfigError(f"{name} must have shape ({mdp.n_states},), got {V.shape}")
    return V


def backward_messages(
    mdp: TabularMDP,
    horizon: int | None = None,
    *,
    temperature: float = 1.0,
    log_prior: ArrayLike | None = None,
    reward: ArrayLike | None = None,
    gamma: float | None = None,
) -> SoftVIResult:
    r"""The backward messages :math:`\beta_t(s,a) = p(\mathcal O_{t:H-1}|s_t,a_t)` and
    :math:`\beta_t(s) = \mathbb E_{a\sim p(a|s)}\beta_t(s,a)` over ``horizon`` steps (default
    ``mdp.horizon``), computed recursively in log space (``result.log_beta_sa``, ``result.log_beta_s``).

    ``log_prior`` defaults to the uniform :math:`\log(1/|\mathcal A|)`. This is
    :func:`soft_value_iteration` with the exact (optimistic) backup and that prior; the reading as
    probabilities is exact for γ = 1 (``gamma`` defaults to ``mdp.gamma``).
    """
    H = mdp.horizon if horizon is None else horizon
    if H is None:
        raise ConfigError("backward messages need a horizon (pass horizon= or set mdp.horizon)")
    return soft_value_iteration(
        mdp,
        temperature=temperature,
        horizon=H,
        backup="optimistic",
        log_prior=_log_prior(mdp, log_prior, uniform=True),
        reward=reward,
        gamma=gamma,
    )


def forward_messages(
    mdp: TabularMDP, messages: SoftVIResult, mu0: ArrayLike | None = None, reward: ArrayLike | None = None
) -> ForwardMessages:
    r"""Forward messages :math:`\alpha_t(s) = p(s_t|\mathcal O_{0:t-1})` and the posterior marginals
    :math:`p(s_t|\mathcal O_{0:H-1}) \propto \beta_t(s)\alpha_t(s)`.

    ``messages`` is a finite-horizon :func:`backward_messages` result with γ = 1 (the same
    ``reward`` override, if any). ``mu0`` defaults to ``mdp.mu0``.
    """
    if not messages.finite:
        raise ConfigError("forward messages need finite-horizon backward messages")
    if messages.gamma != 1.0 or messages.backup != "optimistic":
        raise ConfigError(
            "forward messages are the exact posterior of the undiscounted model: "
            "compute the backward messages with gamma=1 (backward_messages(..., gamma=1))"
        )
    start = _start(mdp, mu0)
    r = _reward(mdp, reward)
    H, tau = messages.horizon, messages.temperature
    assert H is not None
    lp = messages.log_prior
    with np.errstate(divide="ignore"):
        log_alpha = np.empty((H + 1, mdp.n_states))
        log_alpha[0] = np.log(start)
        log_evidence = 0.0
        for t in range(H):
            # log of sum_{s,a} p(s'|s,a) exp(r/alpha) p(a|s) alpha_t(s), via weights b = P
            w = log_alpha[t][:, None] + lp + r / tau  # (S, A)
            shift = np.max(w[np.isfinite(w)]) if np.isfinite(w).any() else 0.0
            unnorm = np.einsum("sa,sat->t", np.exp(w - shift), mdp.P)  # (S',)
            log_norm = np.log(unnorm.sum())
            log_alpha[t + 1] = np.log(unnorm) - log_norm
            log_evidence += log_norm + shift
        log_post = log_alpha + messages.log_beta_s
        state_marginals = np.exp(log_post - logsumexp(log_post, axis=1, keepdims=True))
        log_post_sa = log_alpha[:-1, :, None] + lp[None] + messages.log_beta_sa
        sa = np.exp(log_post_sa - logsumexp(log_post_sa, axis=(1, 2), keepdims=True))
    # log p(O_{0:H-1}) = sum_t log p(O_t | O_{0:t-1}); it equals log sum_s mu0(s) beta_0(s)
    return ForwardMessages(
        log_alpha=log_alpha,
        state_marginals=state_marginals,
        state_action_marginals=sa,
        log_evidence=float(log_evidence),
    )


def _start(mdp: TabularMDP, mu0: ArrayLike | None) -> np.ndarray:
    if mu0 is None:
        if mdp.mu0 is None:
            raise ConfigError("mu0 is required: this MDP has no initial state distribution")
        return np.asarray(mdp.mu0)
    return check_distribution(mu0, mdp.n_states, "mu0")


def posterior_dynamics(mdp: TabularMDP, V_next: np.ndarray, temperature: float, backup: Backup) -> np.ndarray:
    r"""The dynamics the soft policy experiences: :math:`p(s'|s,a)` for ``expected``; the tilted
    :math:`p(s'|s,a,\mathcal O) \propto p(s'|s,a)\exp(V(s')/\alpha)` for ``optimistic`` (exact inference)."""
    if backup == "expected":
        return np.asarray(mdp.P)
    logits = V_next / temperature
    tilted = mdp.P * np.exp(logits - logits.max())
    return tilted / tilted.sum(axis=-1, keepdims=True)


def soft_visitation(
    mdp: TabularMDP, result: SoftVIResult, mu0: ArrayLike | None = None, *, episodic: bool = False
) -> np.ndarray:
    r"""Discounted state-action visitation :math:`\rho(s,a) = \sum_t\gamma^t p(s_t=s,a_t=a)` of the
    soft-optimal behaviour, shape (S, A) — MaxEnt IRL's forward pass.

    ``expected`` backup: the soft policy in the real dynamics (Ziebart's state visitation
    frequencies); ``optimistic``: the exact posterior :math:`p(s_t,a_t|\mathcal O)`, i.e. the posterior
    policy in the tilted dynamics (for γ = 1 and a finite horizon this equals the forward-backward
    marginals summed over t).

    ``episodic=True``: terminal states are counted once, on entry (the episode ends there), as in
    :meth:`~core_rl.tabular.TabularMDP.episodic_occupancy` — MaxEnt IRL's visitation on episodic MDPs.
    """
    start = _start(mdp, mu0)
    if episodic:
        model = mdp
        if result.horizon != mdp.horizon or result.gamma != mdp.gamma:
            model = mdp.replace(horizon=result.horizon, gamma=result.gamma)
        if result.finite:
            assert result.horizon is not None
            dynamics = np.stack(
                [
                    posterior_dynamics(mdp, result.V[t + 1], result.temperature, result.backup)
                    for t in range(result.horizon)
                ]
            )
        else:
            dynamics = posterior_dynamics(mdp, result.V, result.temperature, result.backup)
        return model.episodic_occupancy(result.policy, start, dynamics=dynamics)
    pi, gamma = result.policy, result.gamma
    if result.finite:
        H = result.horizon
        assert H is not None
        mu = start.copy()
        rho = np.zeros((mdp.n_states, mdp.n_actions))
        for t in range(H):
            sa = mu[:, None] * pi[t]
            rho += gamma**t * sa
            mu = np.einsum("sa,sat->t", sa, posterior_dynamics(mdp, result.V[t + 1], result.temperature, result.backup))
        return rho
    if gamma >= 1.0:
        raise ConfigError("the infinite-horizon visitation needs gamma < 1")
    P_post = posterior_dynamics(mdp, result.V, result.temperature, result.backup)
    P_pi = np.einsum("sa,sat->st", pi, P_post)
    d = np.linalg.solve(np.eye(mdp.n_states) - gamma * P_pi.T, start)
    return d[:, None] * pi
