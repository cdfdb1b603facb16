r"""Exact solutions of a tabular CMDP: the linear program over occupancy measures, and the Lagrangian
solution by dual ascent — the check that the agents' λ update solves the right problem.

With the discounted occupancy measure :math:`\rho(s,a) = \sum_t\gamma^t p(s_t=s, a_t=a)`
(:meth:`core_rl.tabular.TabularMDP.occupancy_measure`), values are linear in ρ,
:math:`V_r^\pi(\mu_0) = \sum_{s,a}\rho(s,a)r(s,a)`, and the ρ of some policy are exactly the
non-negative solutions of the flow (Bellman) constraints, so the CMDP is the LP (Altman 1999)

.. math::
    \max_{\rho\ge0} \sum_{s,a}\rho(s,a)\,r(s,a)\quad\text{s.t.}\quad
    \sum_a\rho(s',a) - \gamma\sum_{s,a}p(s'|s,a)\rho(s,a) = \mu_0(s')\ \ \forall s',\qquad
    \sum_{s,a}\rho(s,a)\,c_k(s,a) \le d_k\ \ \forall k,

with optimal policy :math:`\pi^*(a|s) = \rho^*(s,a)/\sum_{a'}\rho^*(s,a')` (stochastic in general) and
the LP's dual variables of the cost rows the optimal multipliers :math:`\lambda^*_k`
(:func:`solve_cmdp_lp`, scipy's HiGHS).

The Lagrangian route (:func:`solve_cmdp_lagrangian`) never writes the LP: for a given λ the inner
problem :math:`\max_\pi V^\pi_{r-\lambda^Tc}` is an ordinary MDP (value iteration), and the outer
problem :math:`\min_{\lambda\ge0} \max_\pi V^\pi_{r-\lambda^T c}(\mu_0) + \lambda^Td` is solved by the
same dual step the agents take, :math:`\lambda \leftarrow \max(0, \lambda + \alpha_k(V_c^{\pi_k} - d))`
(:class:`~safety.lagrangian.LagrangeMultiplier`), with :math:`\alpha_k = \alpha_0/\sqrt{k}`. Each
best response is deterministic; their running average in occupancy space — a mixture policy —
converges to the LP's optimum, and λ to :math:`\lambda^*` (strong duality holds for CMDPs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike

from core_rl.common.errors import ConfigError
from core_rl.tabular import TabularMDP, value_iteration
from safety.lagrangian import LagrangeMultiplier


@dataclass(frozen=True)
class TabularCMDP:
    """An MDP with costs ``costs[k, s, a]`` and episodic (discounted) cost limits ``limits[k]``."""

    mdp: TabularMDP
    costs: np.ndarray
    limits: np.ndarray

    @classmethod
    def build(cls, mdp: TabularMDP, costs: ArrayLike, limits: ArrayLike) -> "TabularCMDP":
        c = np.asarray(costs, dtype=np.float64)
        if c.ndim == 2:
            c = c[None]
        S, A = mdp.n_states, mdp.n_actions
        if c.ndim != 3 or c.shape[1:] != (S, A):
            raise ConfigError(f"costs must have shape (S, A) = {(S, A)} or (K, S, A), got {np.shape(costs)}")
        d = np.atleast_1d(np.asarray(limits, dtype=np.float64))
        if d.shape != (c.shape[0],):
            raise ConfigError(f"need one limit per cost, got {d.shape[0]} limits for {c.shape[0]} costs")
        if np.any(d < 0) or not np.all(np.isfinite(d)):
            raise ConfigError(f"cost limits must be finite and >= 0, got {d.tolist()}")
        if mdp.mu0 is None:
            raise ConfigError("the CMDP's MDP needs an initial state distribution mu0")
        if mdp.horizon is not None or mdp.gamma >= 1.0:
            raise ConfigError("the occupancy LP here is for infinite-horizon discounted MDPs (gamma < 1, no horizon)")
        return cls(mdp=mdp, costs=c, limits=d)

    def values(self, policy: ArrayLike) -> tuple[float, np.ndarray]:
        """(V_r^π(μ0), V_c^π(μ0) [K]) of a policy, exactly."""
        rho = self.mdp.occupancy_measure(policy)
        return float((rho * self.mdp.r).sum()), np.einsum("sa,ksa->k", rho, self.costs)


@dataclass(frozen=True)
class CMDPSolution:
    occupancy: np.ndarray  # ρ(s, a)
    policy: np.ndarray  # π(a|s) (uniform where ρ(s, ·) = 0)
    reward_value: float  # V_r(μ0) = Σ ρ r
    cost_values: np.ndarray  # V_c(μ0) [K]
    multipliers: np.ndarray  # λ [K]
    history: dict[str, np.ndarray] | None = None


def policy_from_occupancy(rho: np.ndarray) -> np.ndarray:
    """π(a|s) = ρ(s,a) / Σ_a' ρ(s,a'), uniform on states the occupancy never visits."""
    mass = rho.sum(1, keepdims=True)
    return np.where(mass > 1e-12, rho / np.maximum(mass, 1e-300), 1.0 / rho.shape[1])


def solve_cmdp_lp(cmdp: TabularCMDP) -> CMDPSolution:
    """The exact CMDP optimum from the occupancy-measure LP (scipy HiGHS); raises if infeasible."""
    from scipy.optimize import linprog

    mdp = cmdp.mdp
    S, A = mdp.n_states, mdp.n_actions
    # flow: Σ_a ρ(s', a) − γ Σ_{s,a} P(s'|s,a) ρ(s,a) = μ0(s'), variables ρ flattened as s * A + a
    A_eq = np.repeat(np.eye(S), A, axis=1) - mdp.gamma * mdp.P.reshape(S * A, S).T
    res = linprog(
        -mdp.r.reshape(-1),
        A_ub=cmdp.costs.reshape(len(cmdp.limits), -1),
        b_ub=cmdp.limits,
        A_eq=A_eq,
        b_eq=mdp.mu0,
        bounds=(0, None),
        method="highs",
    )
    if res.status == 2:
        raise ConfigError(f"the CMDP is infeasible: no policy meets the cost limits {cmdp.limits.tolist()}")
    if res.status != 0:
        raise RuntimeError(f"linprog failed: {res.message}")
    rho = np.maximum(res.x.reshape(S, A), 0.0)
    return CMDPSolution(
        occupancy=rho,
        policy=policy_from_occupancy(rho),
        reward_value=float(-res.fun),
        cost_values=np.einsum("sa,ksa->k", rho, cmdp.costs),
        multipliers=-np.asarray(res.ineqlin.marginals, dtype=np.float64),
    )


def best_response(
    cmdp: TabularCMDP, lam: np.ndarray, tol: float = 1e-10, V0: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """argmax_π V^π_{r − λᵀc} by value iteration (warm-started from ``V0``): a deterministic policy
    ``[S]``, its occupancy ``[S, A]`` and the optimal values ``[S]``."""
    penalized = cmdp.mdp.replace(r=cmdp.mdp.r - np.einsum("k,ksa->sa", lam, cmdp.costs))
    result = value_iteration(penalized, tol=tol, V0=V0)
    return result.policy, cmdp.mdp.occupancy_measure(result.policy), result.V


def solve_cmdp_lagrangian(
    cmdp: TabularCMDP, iterations: int = 3000, lr: float = 2.0, init: float = 0.0
) -> CMDPSolution:
    r"""Dual ascent on λ with exact best responses; returns the averaged (mixture) solution and the
    final λ. ``history`` holds λ_k, the best responses' values and the dual function per step."""
    if iterations < 1 or lr <= 0:
        raise ConfigError(f"need iterations >= 1 and lr > 0, got {iterations}, {lr}")
    multiplier = LagrangeMultiplier(torch.as_tensor(cmdp.limits), lr=lr, init=init)
    rho_sum = np.zeros_like(cmdp.mdp.r)
    lams, rewards, costs, duals = [], [], [], []
    V = None
    for k in range(1, iterations + 1):
        lam = multiplier.value.numpy().copy()
        _, rho, V = best_response(cmdp, lam, V0=V)
        v_r, v_c = float((rho * cmdp.mdp.r).sum()), np.einsum("sa,ksa->k", rho, cmdp.costs)
        duals.append(v_r - float(lam @ (v_c - cmdp.limits)))  # g(λ) = max_π L(π, λ)
        lams.append(lam)
        rewards.append(v_r)
        costs.append(v_c)
        rho_sum += rho
        multiplier.update(torch.as_tensor(v_c), lr=lr / np.sqrt(k))
    rho_bar = rho_sum / iterations
    return CMDPSolution(
        occupancy=rho_bar,
        policy=policy_from_occupancy(rho_bar),
        reward_value=float((rho_bar * cmdp.mdp.r).sum()),
        cost_values=np.einsum("sa,ksa->k", rho_bar, cmdp.costs),
        multipliers=multiplier.value.numpy().copy(),
        history={
            "lambda": np.array(lams),
            "reward": np.array(rewards),
            "cost": np.array(costs),
            "dual": np.array(duals),
        },
    )
