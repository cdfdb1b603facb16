r"""Soft optimality (notes 10/10): the backward messages, computed from their definition, are soft
value iteration.

The backward message is a probability over the whole future,

.. math::
    \beta_t(s_t,a_t) = p(\mathcal O_{t:H-1}\mid s_t,a_t)
    = \sum_{s_{t+1:H-1},\,a_{t+1:H-1}} \prod_{t'=t}^{H-1} p(\mathcal O_{t'}|s_{t'},a_{t'})
      \prod_{t'=t}^{H-2} p(s_{t'+1}|s_{t'},a_{t'})\,p(a_{t'+1}|s_{t'+1}),

with :math:`p(\mathcal O_t|s,a) = \exp(r(s,a)/\alpha)` (r ≤ 0) and the uniform action prior
:math:`p(a|s) = 1/|\mathcal A|`. :func:`enumerated_messages` sums this over every future
trajectory; :func:`recursive_messages` runs the notes' recursion in probability space,
:math:`\beta_t(s,a) = p(\mathcal O_t|s,a)\,\mathbb E_{s'}[\beta_{t+1}(s')]`,
:math:`\beta_t(s) = \mathbb E_{a\sim p(a|s)}[\beta_t(s,a)]`. Soft value iteration
(:func:`~core_rl.inference.soft_value_iteration`, log-sum-exp in place of max, exact backup, the
uniform prior) gives :math:`Q_t, V_t`; the claim is :math:`Q_t = \alpha\log\beta_t(s,a)`,
:math:`V_t = \alpha\log\beta_t(s)` and the posterior
:math:`p(a_t|s_t,\mathcal O_{t:H-1}) = p(a|s)\beta_t(s,a)/\beta_t(s)` is the soft-optimal policy.
The exact-inference backup :math:`\alpha\log\mathbb E_{s'}[\exp(V_{t+1}(s')/\alpha)]` is optimistic under
stochastic dynamics: as α → 0 it tends to the best reachable next state, not to the expectation, so
the messages do **not** approach hard value iteration's :math:`\max_a Q_t`
(:func:`~core_rl.tabular.dynamic_programming.backward_induction`). The variational (expected) backup
:math:`Q_t = r + \mathbb E_{s'}[V_{t+1}(s')]` does, with
:math:`|V^{soft}_t - V^{hard}_t| \le \alpha\,(H-t)\log|\mathcal A|` (uniform prior). Both gaps are measured, and ``optimism`` = :math:`\min_s(V^{messages}_0 - V^{expected}_0) \ge 0` (Jensen).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from core_rl.common.errors import ConfigError
from core_rl.common.tracking import NullTracker, Tracker
from core_rl.inference.control_as_inference import soft_value_iteration
from core_rl.tabular.dynamic_programming import backward_induction
from core_rl.tabular.mdp import TabularMDP


def enumerated_messages(mdp: TabularMDP, horizon: int, temperature: float) -> np.ndarray:
    """β_t(s, a) for t = 0..H−1 by summing p(O_{t:H−1}, future | s_t, a_t) over every future
    (s, a) sequence: (H, S, A). Exponential in H: for checking on small MDPs only."""
    S, A = mdp.n_states, mdp.n_actions
    P, opt, prior = np.asarray(mdp.P), np.exp(np.asarray(mdp.r) / temperature), 1.0 / A
    beta = np.empty((horizon, S, A))
    for t in range(horizon):
        k = horizon - 1 - t  # future steps after (s_t, a_t)
        for s, a in itertools.product(range(S), range(A)):
            total = 0.0
            for future in itertools.product(itertools.product(range(S), range(A)), repeat=k):
                p, (s_prev, a_prev) = opt[s, a], (s, a)
                for s_next, a_next in future:
                    p *= P[s_prev, a_prev, s_next] * prior * opt[s_next, a_next]
                    s_prev, a_prev = s_next, a_next
                total += p
            beta[t, s, a] = total
    return beta


def recursive_messages(mdp: TabularMDP, horizon: int, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """The notes' recursion in probability space: β_t(s, a) (H, S, A) and β_t(s) (H+1, S), β_H ≡ 1."""
    P, opt = np.asarray(mdp.P), np.exp(np.asarray(mdp.r) / temperature)
    beta_sa = np.empty((horizon, mdp.n_states, mdp.n_actions))
    beta_s = np.ones((horizon + 1, mdp.n_states))
    for t in range(horizon - 1, -1, -1):
        beta_sa[t] = opt * (P @ beta_s[t + 1])
        beta_s[t] = beta_sa[t].mean(axis=1)  # E_{a ~ uniform}
    return beta_sa, beta_s


def random_cost_mdp(n_states: int, n_actions: int, horizon: int, mdp_seed: int) -> TabularMDP:
    """A random stochastic MDP with rewards in [−1, 0] (so exp(r) is a probability), γ = 1."""
    rng = np.random.default_rng(mdp_seed)
    P = rng.dirichlet(np.full(n_states, 0.5), size=(n_states, n_actions))
    r = -rng.uniform(0.0, 1.0, size=(n_states, n_actions))
    return TabularMDP(P, r, gamma=1.0, horizon=horizon, mu0=np.full(n_states, 1.0 / n_states))


def run_soft_optimality(
    tracker: Tracker | None = None,
    seed: int = 0,
    temperatures: Sequence[float] = (0.02, 0.05, 0.1, 0.3, 1.0, 3.0),
    n_states: int = 3,
    n_actions: int = 2,
    horizon: int = 5,
) -> dict[str, Any]:
    """Max |α log β − Q_softVI| (enumerated and recursive messages), the max error of the posterior
    policy and the gap between soft and hard values, for each temperature α, on a random MDP
    drawn from ``seed``."""
    if n_states < 1 or n_actions < 2 or horizon < 1:
        raise ConfigError(
            f"need n_states >= 1, n_actions >= 2 and horizon >= 1, got {n_states}, {n_actions}, {horizon}"
        )
    if (n_states * n_actions) ** (horizon - 1) > 300_000:
        raise ConfigError(
            f"horizon={horizon} with {n_states} states × {n_actions} actions is too many futures to enumerate"
        )
    if not temperatures or min(temperatures) < 0.01:
        raise ConfigError(f"temperatures must be at least 0.01 (exp(r/α) underflows below), got {list(temperatures)}")
    tracker = tracker or NullTracker()
    mdp = random_cost_mdp(n_states, n_actions, horizon, seed)
    hard = backward_induction(mdp, horizon)
    uniform = np.full((n_states, n_actions), -np.log(n_actions))
    rows: dict[str, list[float]] = {
        k: []
        for k in (
            "enumerated_q_error",
            "recursive_q_error",
            "v_error",
            "policy_error",
            "optimistic_minus_hard_v",
            "expected_minus_hard_v",
            "optimism",
        )
    }
    for i, alpha in enumerate(temperatures):
        soft = soft_value_iteration(mdp, temperature=alpha, horizon=horizon, log_prior=uniform, backup="optimistic")
        beta_enum = enumerated_messages(mdp, horizon, alpha)
        beta_sa, beta_s = recursive_messages(mdp, horizon, alpha)
        posterior = beta_enum / beta_enum.sum(axis=2, keepdims=True)  # p(a|s) β(s,a) / β(s), p uniform
        rows["enumerated_q_error"].append(float(np.abs(alpha * np.log(beta_enum) - soft.Q).max()))
        rows["recursive_q_error"].append(float(np.abs(alpha * np.log(beta_sa) - soft.Q).max()))
        rows["v_error"].append(float(np.abs(alpha * np.log(beta_s) - soft.V).max()))
        rows["policy_error"].append(float(np.abs(posterior - soft.policy).max()))
        expected = soft_value_iteration(mdp, temperature=alpha, horizon=horizon, log_prior=uniform, backup="expected")
        rows["optimistic_minus_hard_v"].append(float(np.abs(soft.V[0] - hard.V[0]).max()))
        rows["expected_minus_hard_v"].append(float(np.abs(expected.V[0] - hard.V[0]).max()))
        rows["optimism"].append(float((soft.V[0] - expected.V[0]).min()))  # ≥ 0 by Jensen
        tracker.log_metrics({k: v[-1] for k, v in rows.items()}, step=i)
    out: dict[str, Any] = {
        "temperatures": [float(a) for a in temperatures],
        "max_message_error": max(rows["enumerated_q_error"] + rows["recursive_q_error"] + rows["v_error"]),
        "max_policy_error": max(rows["policy_error"]),
        **rows,
    }

    from core_rl.common.plotting import plt

    soft1 = soft_value_iteration(mdp, temperature=1.0, horizon=horizon, log_prior=uniform)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.scatter(np.log(enumerated_messages(mdp, horizon, 1.0)).ravel(), soft1.Q.ravel(), s=14)
    lo, hi = soft1.Q.min(), soft1.Q.max()
    ax1.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax1.set_xlabel("log β_t(s,a), enumerated over all futures")
    ax1.set_ylabel("soft value iteration Q_t(s,a) (α = 1)")
    ax1.set_title(f"{n_states} states, {n_actions} actions, H = {horizon}")
    ax2.loglog(temperatures, rows["optimistic_minus_hard_v"], "o-", label="messages (exact backup)")
    ax2.loglog(temperatures, rows["expected_minus_hard_v"], "s-", label="expected backup")
    ax2.loglog(temperatures, np.asarray(temperatures) * horizon * np.log(n_actions), "k:", label="α H log|A| bound")
    ax2.set_xlabel("temperature α")
    ax2.legend()
    ax2.set_ylabel("max_s |V_0^soft(s) − V_0^hard(s)|")
    ax2.set_title("soft vs hard value iteration as α → 0")
    fig.tight_layout()
    tracker.log_figure(fig, "soft_optimality.png")
    plt.close(fig)
    return out


__all__ = ["enumerated_messages", "random_cost_mdp", "recursive_messages", "run_soft_optimality"]
