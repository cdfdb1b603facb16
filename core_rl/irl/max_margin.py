r"""Feature matching / max-margin inverse RL (notes 10/12: "have features and use SVM essentially to
learn weights on the reward function").

With a linear reward :math:`r_w(s,a) = w^\top\phi(s,a)`, any policy whose feature expectations
:math:`\mu(\pi) = \mathbb E_\pi[\sum_t\gamma^t\phi(s_t,a_t)]` match the expert's,
:math:`\mu(\pi) = \mu(\pi_E)`, has the expert's return :math:`w^\top\mu` for *every* w. Which w?
Pick the one under which the expert beats every other policy by the largest margin — an SVM:

.. math::
    \min_{w,\xi\ge 0}\ \tfrac12\|w\|^2 + C\sum_j\xi_j
    \quad\text{s.t.}\quad w^\top\mu(\pi_E) \ge w^\top\mu(\pi_j) + D(\pi_j,\pi_E) - \xi_j
    \quad\forall j,

where the margin :math:`D(\pi,\pi_E) = \sum_{s,a}\rho_\pi(s,a)\,\ell(s,a)` grows with how much π
disagrees with the expert (:math:`\ell(s,a) = 1 - \hat\pi_E(a|s)` on states the expert visited:
"structured" max-margin planning). The constraint set over all policies is generated lazily: solve
the QP for w, then find the most violated constraint by **tabular DP** on the loss-augmented reward
:math:`w^\top\phi(s,a) + \ell(s,a)` (``method="svm"``).

``method="projection"`` is Abbeel & Ng's projection algorithm for feature matching:
:math:`w_i = \mu_E - \bar\mu_{i-1}`, :math:`\pi_i = \arg\max_\pi w_i^\top\mu(\pi)` (value iteration),
:math:`\bar\mu_i` the projection of :math:`\mu_E` onto the line through :math:`\bar\mu_{i-1}` and
:math:`\mu(\pi_i)`, stopping when :math:`t_i = \|\mu_E - \bar\mu_{i-1}\| \le \epsilon`. Its answer is a
mixture :math:`\sum_i\lambda_i\pi_i` whose feature expectations are closest to :math:`\mu_E`
(:math:`\lambda` from a small QP over the simplex); the single reward reported is the :math:`w_i`
whose optimal policy comes closest.

Example::

    >>> from core_rl.tabular import policy_evaluation, value_iteration
    >>> from core_rl.tabular.gridworld import gridworld
    >>> world = gridworld("bridge", slip=0.2, gamma=0.95)  # goal right, holes in the corners
    >>> mdp = world.mdp
    >>> expert = value_iteration(mdp).policy
    >>> def start_value(policy):
    ...     return float(mdp.mu0 @ policy_evaluation(mdp, policy).V)
    >>> result = max_margin_irl(mdp, world.cell_type_features(), expert)
    >>> learned = value_iteration(mdp.replace(r=result.reward)).policy
    >>> round(start_value(learned) / start_value(expert), 2), bool(result.converged)
    (0.98, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from scipy.optimize import minimize

from core_rl.common.config import format_validation_error
from core_rl.common.errors import ConfigError
from core_rl.irl.features import (
    Expert,
    check_features,
    empirical_policy,
    expert_visitation,
    feature_expectations,
    initial_distribution,
)
from core_rl.tabular.dynamic_programming import value_iteration
from core_rl.tabular.mdp import TabularMDP, Trajectories


class MaxMarginConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["svm", "projection"] = Field("svm", description="SVM-style QP or Abbeel & Ng projection.")
    max_iterations: int = Field(50, ge=1, description="Policies generated (constraints / projection steps).")
    epsilon: float = Field(
        1e-3, gt=0.0, description="Stop when the margin violation (svm) or t_i (projection) is below this."
    )
    C: float = Field(100.0, gt=0.0, description="Slack penalty of the SVM.")
    margin_scale: float = Field(1.0, ge=0.0, description="Scale of the structured margin D(π, π_E).")
    solver_tol: float = Field(1e-10, gt=0.0, description="Value-iteration tolerance of the inner RL.")


@dataclass
class MaxMarginResult:
    """``w`` (K,) the learned reward weights, ``reward`` (S, A) = φ w (terminal entries folded, see
    :meth:`~core_rl.tabular.TabularMDP.fold_terminal_reward`), ``policy`` (S,) the greedy
    optimal policy of ``reward``; ``policies`` / ``feature_expectations`` of every generated policy,
    ``expert_features`` μ_E, ``mixture`` λ (projection) and per-iteration ``history``."""

    w: np.ndarray
    reward: np.ndarray
    policy: np.ndarray
    expert_features: np.ndarray
    policies: list[np.ndarray]
    feature_expectations: np.ndarray
    mixture: np.ndarray | None
    iterations: int
    converged: bool
    history: list[dict[str, float]] = field(default_factory=list)


def _config(config: MaxMarginConfig | dict | None, overrides: dict) -> MaxMarginConfig:
    try:
        if isinstance(config, MaxMarginConfig):
            return config.model_copy(update=overrides) if overrides else config
        return MaxMarginConfig.model_validate({**(config or {}), **overrides})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, prefix="max_margin")) from None


def _optimal(mdp: TabularMDP, reward: np.ndarray, tol: float) -> np.ndarray:
    """The greedy optimal policy of ``reward`` (S, A), terminal entries folded into the transitions."""
    return value_iteration(mdp.replace(r=mdp.fold_terminal_reward(reward)), tol=tol).policy


def solve_margin_qp(diffs: np.ndarray, margins: np.ndarray, C: float) -> np.ndarray:
    r""":math:`\min_{w,\xi\ge0}\frac12\|w\|^2 + C\sum_j\xi_j` s.t. :math:`w^\top d_j \ge m_j - \xi_j`, with
    ``diffs`` :math:`d_j = \mu_E - \mu_j` (J, K) and ``margins`` :math:`m_j` (J,); returns w (K,)."""
    J, K = diffs.shape
    x0 = np.zeros(K + J)
    x0[K:] = np.maximum(margins, 0.0)
    cons = [
        {
            "type": "ineq",
            "fun": lambda x: diffs @ x[:K] - margins + x[K:],
            "jac": lambda x: np.hstack([diffs, np.eye(J)]),
        }
    ]
    res = minimize(
        lambda x: 0.5 * x[:K] @ x[:K] + C * x[K:].sum(),
        x0,
        jac=lambda x: np.concatenate([x[:K], np.full(J, C)]),
        constraints=cons,
        bounds=[(None, None)] * K + [(0.0, None)] * J,
        method="SLSQP",
        options={"maxiter": 500, "ftol": 1e-12},
    )
    return res.x[:K]


def _closest_mixture(mus: np.ndarray, target: np.ndarray, steps: int = 5000) -> np.ndarray:
    r""":math:`\min_{\lambda\in\Delta}\|\mu_E - \sum_i\lambda_i\mu_i\|^2` by projected gradient (simplex projection)."""
    n = len(mus)
    lam = np.full(n, 1.0 / n)
    G = mus @ mus.T
    lr = 1.0 / (np.linalg.eigvalsh(G).max() + 1e-12)
    b = mus @ target
    for _ in range(steps):
        v = lam - lr * (G @ lam - b)
        # Euclidean projection onto the simplex
        u = np.sort(v)[::-1]
        css = np.cumsum(u) - 1.0
        k = np.flatnonzero(u - css / np.arange(1, n + 1) > 0)[-1]
        lam = np.maximum(v - css[k] / (k + 1), 0.0)
    return lam


def max_margin_irl(
    mdp: TabularMDP,
    features: ArrayLike,
    expert: Expert,
    config: MaxMarginConfig | dict | None = None,
    *,
    mu0: ArrayLike | None = None,
    **overrides: object,
) -> MaxMarginResult:
    r"""Learn reward weights w with :math:`w^\top\mu_E \ge w^\top\mu(\pi) + D(\pi,\pi_E)` for the
    policies the inner RL (value iteration) finds; see the module docstring.

    ``expert`` is demonstrations (:class:`~core_rl.tabular.Trajectories`, discounted with ``mdp.gamma``)
    or the expert's policy; ``features`` (S, K) or (S, A, K); the MDP's reward is not used.
    On an episodic MDP (``mdp.terminal``) feature expectations count each terminal state once, on
    entry (``episodic_occupancy``), and ``result.reward`` is the MDP reward with the terminal
    entries folded into the transitions (``fold_terminal_reward``), so ``mdp.replace(r=...)`` takes it.
    """
    cfg = _config(config, dict(overrides))
    phi = check_features(mdp, features)
    start = initial_distribution(mdp, expert if isinstance(expert, Trajectories) else None, mu0)
    rho_E = expert_visitation(mdp, expert, start)
    mu_E = feature_expectations(rho_E, phi)
    if isinstance(expert, Trajectories):
        pi_E, visited = empirical_policy(mdp, expert)
    else:
        pi_E = mdp.policy_matrix(expert)
        visited = rho_E.sum(axis=1) > 0
    visited &= ~np.asarray(mdp.terminal)  # no decision is taken in a terminal state
    loss = np.where(visited[:, None], 1.0 - pi_E, 0.0) * cfg.margin_scale  # ℓ(s, a)

    def evaluate(policy: np.ndarray) -> tuple[np.ndarray, float]:
        rho = mdp.episodic_occupancy(policy, start)
        return feature_expectations(rho, phi), float((rho * loss).sum())

    policies = [np.zeros(mdp.n_states, dtype=np.int64)]  # start: action 0 everywhere
    mu0_feat, m0 = evaluate(policies[0])
    mus, margins = [mu0_feat], [m0]
    history: list[dict[str, float]] = []
    converged = False
    if cfg.method == "svm":
        w = np.zeros(phi.shape[2])
        for it in range(1, cfg.max_iterations + 1):
            w = solve_margin_qp(mu_E[None] - np.array(mus), np.array(margins), cfg.C)
            reward = phi @ w
            # the most violated constraint: loss-augmented planning max_π w·μ(π) + D(π, π_E)
            candidate = _optimal(mdp, reward + loss, cfg.solver_tol)
            mu_c, m_c = evaluate(candidate)
            violation = float(w @ mu_c + m_c - w @ mu_E)
            slack = max(0.0, max(float(w @ mu + m - w @ mu_E) for mu, m in zip(mus, margins)))
            history.append({"violation": violation, "slack": slack, "w_norm": float(np.linalg.norm(w))})
            if violation <= slack + cfg.epsilon:
                converged = True
                break
            policies.append(candidate)
            mus.append(mu_c)
            margins.append(m_c)
        policy = _optimal(mdp, phi @ w, cfg.solver_tol)
        return MaxMarginResult(
            w=w,
            reward=mdp.fold_terminal_reward(phi @ w),
            policy=policy,
            expert_features=mu_E,
            policies=policies,
            feature_expectations=np.array(mus),
            mixture=None,
            iterations=it,
            converged=converged,
            history=history,
        )

    # Abbeel & Ng's projection algorithm
    mu_bar = mus[0]
    ws: list[np.ndarray] = [mu_E - mu_bar]
    for it in range(1, cfg.max_iterations + 1):
        w = mu_E - mu_bar
        t = float(np.linalg.norm(w))
        history.append({"t": t})
        if t <= cfg.epsilon:
            converged = True
            break
        candidate = _optimal(mdp, phi @ w, cfg.solver_tol)
        mu_c, _ = evaluate(candidate)
        policies.append(candidate)
        mus.append(mu_c)
        ws.append(w)
        step = mu_c - mu_bar
        denom = float(step @ step)
        if denom <= 1e-300:  # the new policy adds nothing: t cannot shrink
            break
        mu_bar = mu_bar + (step @ (mu_E - mu_bar)) / denom * step
    mus_arr = np.array(mus)
    mixture = _closest_mixture(mus_arr, mu_E)
    best = int(np.argmin(np.linalg.norm(mus_arr[1:] - mu_E, axis=1))) + 1 if len(mus) > 1 else 0
    w_best = ws[best]
    return MaxMarginResult(
        w=w_best,
        reward=mdp.fold_terminal_reward(phi @ w_best),
        policy=policies[best],
        expert_features=mu_E,
        policies=policies,
        feature_expectations=mus_arr,
        mixture=mixture,
        iterations=it,
        converged=converged,
        history=history,
    )
