r"""Constrained policy optimization (Achiam, Held, Tamar & Abbeel 2017) on the TRPO core.

TRPO's trust-region problem (notes 9/19) gains the CMDP's constraint, linearized like the objective:

.. math::
    \max_{\Delta}\ g^T\Delta \quad\text{s.t.}\quad c + b^T\Delta \le 0,\qquad \tfrac12\Delta^T H\Delta \le \delta,

with :math:`g = \nabla_\theta\mathbb E_t[\rho_t\hat A^r_t]`, :math:`b = \nabla_\theta\mathbb E_t[\rho_t\hat A^c_t]`
(the gradient of the cost surrogate), :math:`c = (\hat J_c - d)/\bar T` (the violation per step, in
the surrogate's units), and H the Fisher matrix (damped; products by double backprop and inverses
by conjugate gradient, from :mod:`core_rl.trust_region.common`). With :math:`q = g^TH^{-1}g`,
:math:`r = g^TH^{-1}b`, :math:`s = b^TH^{-1}b`, :math:`A = q - r^2/s`, :math:`B = 2\delta - c^2/s`,
the dual of this convex problem is solved in closed form:

* the whole trust region is feasible (:math:`c<0,\ B<0`, or :math:`b\approx0`): TRPO's step
  :math:`\Delta = \sqrt{2\delta/q}\,H^{-1}g`;
* part of it is (:math:`B\ge0`): minimize the dual
  :math:`h(\lambda,\nu) = \frac{q - 2\nu r + \nu^2 s}{2\lambda} - \nu c + \lambda\delta` over
  :math:`\lambda>0,\nu\ge0`. For fixed λ, :math:`\nu^*(\lambda) = (\lambda c + r)^+/s`; where the
  constraint is active (:math:`\nu^*>0`) :math:`h = \tfrac12(A/\lambda + B\lambda) - rc/s`, minimized
  at :math:`\lambda_a = \sqrt{A/B}`, where it is not :math:`h = q/(2\lambda) + \lambda\delta`, minimized at
  :math:`\lambda_b = \sqrt{q/2\delta}`; each is projected onto its side of :math:`\lambda = -r/c`, the one
  with the smaller h is :math:`\lambda^*`, and

  .. math:: \Delta = \frac1{\lambda^*}H^{-1}(g - \nu^* b)

  (the closed form found in common implementations, :math:`\nu^* = (\lambda c - r)^+/s` with
  :math:`r = g^TH^{-1}b`, does not satisfy the KKT conditions: :math:`b^T\Delta = -c` on the active
  constraint needs :math:`\nu^* = (\lambda c + r)/s`. ``tests/test_safety.py`` checks the step
  against a numerical QCQP solver in every case);
* none of it is (:math:`c\ge0,\ B<0`): the **recovery step** that only decreases the cost,
  :math:`\Delta = -\sqrt{2\delta/s}\,H^{-1}b`.

A backtracking line search (TRPO's β and K) accepts the first :math:`\beta^k\Delta` that keeps the
KL within δ, does not lower the reward surrogate (when a feasible step was possible) and raises the
cost surrogate by at most :math:`\max(0, -c)`. CPO handles one constraint (the first cost key).
"""

from __future__ import annotations

import math

import torch
from pydantic import model_validator

from core_rl.common.buffers import FlatBatch
from core_rl.trust_region.common import (conjugate_gradient, fisher_vector_product, flat_grad, flat_params,
                                         mean_kl, policy_params, set_flat_params)
from core_rl.trust_region.trpo import TRPO, TRPOConfig
from safety.on_policy import SafeOnPolicyConfig, SafeOnPolicyMixin, SafeRolloutBatch

EPS = 1e-8


class CPOConfig(SafeOnPolicyConfig, TRPOConfig):
    @model_validator(mode="after")
    def _one_constraint(self) -> "CPOConfig":
        if len(self.cost_keys) != 1:
            raise ValueError(f"CPO handles one constraint, got cost_keys={list(self.cost_keys)} "
                             "(use ppo_lag / trpo_lag for several)")
        return self


def cpo_step(g: torch.Tensor, b: torch.Tensor, x: torch.Tensor, p: torch.Tensor, c: float,
             delta: float) -> tuple[torch.Tensor, int, float, float]:
    r"""The CPO step Δ from ``x = H⁻¹g``, ``p = H⁻¹b``, the violation ``c`` and radius δ.

    Returns ``(Δ, case, λ*, ν*)``; cases 3/4 = whole region feasible (TRPO step), 1/2 = partly
    feasible (dual solution), 0 = infeasible (recovery step).
    """
    q, r, s = float(g @ x), float(g @ p), float(b @ p)
    if float(b @ b) <= 1e-8 and c < 0:
        case = 4
    else:
        A, B = q - r * r / (s + EPS), 2 * delta - c * c / (s + EPS)
        case = 3 if (c < 0 and B < 0) else 2 if (c < 0 and B >= 0) else 1 if (c >= 0 and B >= 0) else 0
    if case in (3, 4):
        lam = math.sqrt(max(q, EPS) / (2 * delta))
        return x / lam, case, lam, 0.0
    if case == 0:
        nu = math.sqrt(2 * delta / (s + EPS))
        return -nu * p, case, 0.0, nu
    # the dual h(λ) = min_{ν≥0} (q − 2νr + ν²s)/(2λ) − νc + λδ, minimized over λ > 0; its minimizer
    # with the constraint active (ν* = (λc + r)/s > 0) is √(A/B), with it inactive √(q/2δ)
    def nu_of(lam: float) -> float:
        return max(0.0, (lam * c + r) / (s + EPS))

    def dual(lam: float) -> float:
        nu = nu_of(lam)
        return (q - 2 * nu * r + nu * nu * s) / (2 * lam) - nu * c + lam * delta

    edge = -r / c if abs(c) > EPS else math.inf  # where λc + r changes sign
    lam_a = math.sqrt(max(A, EPS) / B) if B > 0 else math.inf
    lam_b = math.sqrt(max(q, EPS) / (2 * delta))
    if c < 0:   # active for λ < edge
        lam_a, lam_b = min(lam_a, max(edge, EPS)), max(lam_b, edge)
    else:       # active for λ > edge
        lam_a, lam_b = max(lam_a, edge), min(lam_b, max(edge, EPS))
    candidates = [v for v in (lam_a, lam_b) if math.isfinite(v) and v > 0]
    lam = min(candidates, key=dual)
    nu = nu_of(lam)
    return (x - nu * p) / (lam + EPS), case, lam, nu


class CPO(SafeOnPolicyMixin, TRPO):
    """TRPO whose step solves the trust-region problem with the linearized cost constraint."""

    name = "cpo"
    config: CPOConfig
    config_cls = CPOConfig

    def policy_update(self, batch: SafeRolloutBatch) -> dict[str, float]:
        if batch.episode_costs is not None and len(batch.episode_costs):
            cost = float(batch.episode_costs[:, 0].mean())
        else:
            cost = float(self.cost_monitor.mean_episode_cost[0])
        length = float(torch.tensor(list(self.episode_lengths), dtype=torch.float64).mean()) \
            if self.episode_lengths else float(batch.n_steps)
        # c in the surrogate's units: the episodic violation per step (0 until an episode finished)
        self._violation = 0.0 if math.isnan(cost) else (cost - float(self.config.limits[0])) / max(length, 1.0)
        return super().policy_update(batch)

    def improve_policy(self, flat: FlatBatch, advantage: torch.Tensor) -> dict[str, float]:
        cfg = self.config
        cost_advantage = self._cost_advantages[:, 0]
        cost_advantage = cost_advantage - cost_advantage.mean()
        params = policy_params(self.policy)
        theta = flat_params(params)
        dist = self.policy.distribution(flat.obs)
        old = dist.detach()
        old_log_prob = old.log_prob(flat.actions)
        surrogate = self.surrogate(dist, flat.actions, old_log_prob, advantage)
        ratio = (dist.log_prob(flat.actions) - old_log_prob).exp()
        cost_surrogate = (ratio * cost_advantage).mean()
        g = flat_grad(surrogate, params, retain_graph=True)
        b = flat_grad(cost_surrogate, params, retain_graph=True)
        fvp = fisher_vector_product(mean_kl(dist, old), params, cfg.damping)
        x = conjugate_gradient(fvp, g, cfg.cg_iters, cfg.cg_tol)
        p = conjugate_gradient(fvp, b, cfg.cg_iters, cfg.cg_tol)
        c = self._violation
        step, case, lam, nu = cpo_step(g, b, x, p, c, cfg.max_kl)
        surrogate_old, cost_old = float(surrogate.detach()), float(cost_surrogate.detach())
        accepted, fraction, kl, gain, cost_change = 0.0, 0.0, 0.0, 0.0, 0.0
        with torch.no_grad():
            for k in range(cfg.max_backtracks):
                frac = cfg.backtrack_coef ** k
                set_flat_params(params, theta + frac * step)
                new = self.policy.distribution(flat.obs)
                kl = float(mean_kl(new, old))
                ratio = (new.log_prob(flat.actions) - old_log_prob).exp()
                gain = float(self.surrogate(new, flat.actions, old_log_prob, advantage)) - surrogate_old
                cost_change = float((ratio * cost_advantage).mean()) - cost_old
                if not math.isfinite(gain) or not math.isfinite(kl):
                    continue
                if case > 1 and gain < 0:
                    continue  # a feasible step must not lower the reward surrogate
                if cost_change > max(-c, 0.0):
                    continue  # nor raise the cost past what the constraint allows
                if kl > cfg.max_kl:
                    continue
                accepted, fraction = 1.0, frac
                break
            if not accepted:
                set_flat_params(params, theta)
                kl = gain = cost_change = 0.0
            entropy = float(self.policy.distribution(flat.obs).entropy().mean())
        return {"kl": kl, "surrogate_gain": gain, "cost_surrogate_change": cost_change, "step_fraction": fraction,
                "accepted": accepted, "cpo_case": float(case), "cpo_lambda": lam, "cpo_nu": nu, "violation": c,
                "step_norm": float(step.norm()), "entropy": entropy}
