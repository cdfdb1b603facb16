r"""Constrained policy optimization (Achiam, Held, Tamar & Abbeel 2017) on the TRPO core.

TRPO's trust-region problem (notes 9/19) gains the CMDP's constraint, linearized like the objective:

.. math::
    \max_{\Delta}\ g^T\Delta \quad\text{s.t.}\quad c + b^T\Delta \le 0,\qquad \tfrac12\Delta^T H\Delta \le \delta,

with :math:`g = \nabla_\theta\mathbb E_t[\rho_t\hat A^r_t]`, :math:`b = \nabla_\theta\mathbb E_t[\rho_t\hat A^c_t]`
(the gradient of the cost surrogate), :math:`c = (\hat J_c - (d - m))/\bar T` (the violation per
step, in the surrogate's units, of the limit d tightened by the margin m = ``cost_margin``, 0 by
default: the linearized surrogate can promise cost drops that do not come, and a margin aims below
d), and H the Fisher matrix (damped; products by double backprop and inverses by conjugate
gradient, from :mod:`core_rl.trust_region.common`). With :math:`q = g^TH^{-1}g`,
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

**A noisy b** (``cost_gradient``). b is estimated from the rollout's cost advantages; where costs
are sparse (Safety-Gymnasium's hazards) it is mostly noise, and the linearized constraint then
promises cost drops that are fitted to that noise: on SafetyPointGoal1 (10,000-step rollouts,
``benchmarks/cpo_diagnostics.py``) the step computed on one half of a rollout promised a drop of 54
per episode on that half and delivered +0.8 on the other half, whose cost gradient it barely shared
(:math:`b_A^TH^{-1}b_B/\sqrt{s_As_B}` ≈ 0.04). With ``cost_gradient="split_half"`` b is shrunk by its
split-half reliability κ (:func:`split_half_reliability`): the constraint becomes
:math:`c + \kappa b^T\Delta \le 0` (and the line search's cost test κ·Δcost ≤ max(0, −c)), so a violation
that a noisy b cannot be trusted to remove gets the recovery step instead of a reward step that
merely promises to.

Ĵ_c is the mean cost of the rollout's finished episodes, or of the last ``cost_window`` training
episodes. ``violation_scale="episode"`` drops the ÷T̄ (OmniSafe 0.5.0's c = Ĵ_c − d: about 1000 times
the per-step violation, so only its sign matters), kept to compare with OmniSafe.

g, b, :math:`H^{-1}g`, :math:`H^{-1}b` come from the trust-region core's
:func:`~core_rl.trust_region.common.natural_gradients` and the line search is its
:func:`~core_rl.trust_region.common.backtracking_line_search` (NPG's and TRPO's); the agent is a
:class:`~core_rl.trust_region.common.TrustRegionAgent` composed of the cost monitor around its env and
the cost critic (:mod:`safety.parts`), whose cost advantages it reads from the batch.

Example (safety/CartPole-v0, whose costs count the steps outside a safe band or over a speed cap:
with a limit of 0 the constraint is active in every update — case 0, the recovery step, or 1, the
dual solution on the boundary — and the step lowers the cost surrogate)::

    >>> import safety  # registers the safety/ envs
    >>> agent = CPO("safety/CartPole-v0", {"n_envs": 8, "n_steps": 64, "cost_limit": 0.0, "seed": 0}).learn(2048)
    >>> agent.last_metrics["cpo_case"] <= 1, agent.last_metrics["cost_surrogate_change"] < 0
    (True, True)
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator

from core_rl.common.buffers import FlatBatch, RolloutBatch
from core_rl.trust_region.common import (
    Dist,
    TrustRegionAgent,
    backtracking_line_search,
    conjugate_gradient,
    flat_grad,
    mean_kl,
    natural_gradients,
    policy_params,
    set_flat_params,
)
from core_rl.trust_region.trpo import TRPOConfig
from safety.cmdp import CostMarginConfig
from safety.on_policy import SafeOnPolicyConfig
from safety.parts import CostCriticPart, CostMonitorPart

EPS = 1e-8


class CPOConfig(CostMarginConfig, SafeOnPolicyConfig, TRPOConfig):
    """TRPO's fields (δ = ``max_kl``, the line search's β and K; ``accept_ratio`` is not used), the cost
    critic's and the margin m (``cost_margin``: the constraint aims at d − m)."""

    cost_gradient: Literal["plain", "split_half"] = Field(
        "plain",
        description="b as estimated ('plain'), or shrunk by its split-half reliability ('split_half'): "
        "b ← κb, κ = clip(b_Aᵀ H⁻¹ b_B / bᵀH⁻¹b, 0, 1) from the cost gradients b_A, b_B of the rollout's two "
        "halves in time (bᵀH⁻¹b overstates the signal by the noise; b_Aᵀ H⁻¹ b_B does not).",
    )
    cost_window: int = Field(
        0,
        ge=0,
        le=100,
        description="Ĵ_c from the episodes that finished in the rollout (0), or from the last k finished "
        "training episodes (k; OmniSafe's window is 100).",
    )
    violation_scale: Literal["per_step", "episode"] = Field(
        "per_step",
        description="c = (Ĵ_c − (d − m)) / T̄ in the surrogate's per-step units (the paper's linearization, "
        "Achiam's safety-starter-agents), or Ĵ_c − (d − m) unscaled (OmniSafe 0.5.0: about T̄ = 1000 "
        "times larger, so the constraint binds by its sign only: the recovery step above the limit, "
        "TRPO's step below it).",
    )

    @model_validator(mode="after")
    def _one_constraint(self) -> "CPOConfig":
        if len(self.cost_keys) != 1:
            raise ValueError(
                f"CPO handles one constraint, got cost_keys={list(self.cost_keys)} (use ppo_lag / trpo_lag for several)"
            )
        return self


def cpo_step(
    g: torch.Tensor, b: torch.Tensor, x: torch.Tensor, p: torch.Tensor, c: float, delta: float
) -> tuple[torch.Tensor, int, float, float]:
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
    if c < 0:  # active for λ < edge
        lam_a, lam_b = min(lam_a, max(edge, EPS)), max(lam_b, edge)
    else:  # active for λ > edge
        lam_a, lam_b = max(lam_a, edge), min(lam_b, max(edge, EPS))
    candidates = [v for v in (lam_a, lam_b) if math.isfinite(v) and v > 0]
    lam = min(candidates, key=dual)
    nu = nu_of(lam)
    return (x - nu * p) / (lam + EPS), case, lam, nu


#: the least split-half reliability κ: where the halves' cost gradients disagree, b shrinks to κ_min·b
#: (and the recovery step, whose length does not depend on |b|, stays defined)
MIN_RELIABILITY = 0.05


def split_half_reliability(b: torch.Tensor, b_a: torch.Tensor, p_a: torch.Tensor, p: torch.Tensor) -> float:
    r"""The share of :math:`s = b^TH^{-1}b` that is signal, from the cost gradients of the two halves.

    With :math:`b = \tfrac12(b_A + b_B)` (``b_a`` = b_A, ``p_a`` = H⁻¹b_A, ``p`` = H⁻¹b) and independent
    noise ε_A, ε_B of the halves around the true gradient β, :math:`\mathbb E[s] = \beta^TH^{-1}\beta +
    \sigma^2` (the noise inflates s) while :math:`\mathbb E[b_B^TH^{-1}b_A] = \beta^TH^{-1}\beta`, so

    .. math:: \kappa = \mathrm{clip}\Big(\frac{b_B^TH^{-1}b_A}{b^TH^{-1}b},\ \kappa_{min},\ 1\Big),
       \qquad b_B = 2b - b_A,

    is the reliability by which the linearized constraint :math:`c + \kappa b^T\Delta \le 0` discounts
    the cost drop the in-sample gradient promises (κ_min = :data:`MIN_RELIABILITY`).
    """
    s = float(b @ p)
    if not s > 0:
        return MIN_RELIABILITY
    cross = float((2 * b - b_a) @ p_a)
    return min(1.0, max(MIN_RELIABILITY, cross / s))


class CPO(TrustRegionAgent):
    """TRPO whose step solves the trust-region problem with the linearized cost constraint."""

    name = "cpo"
    config: CPOConfig
    config_cls = CPOConfig
    part_types = (CostMonitorPart, CostCriticPart)

    # ---- the update ----------------------------------------------------------------------------
    def violation(self, batch: RolloutBatch) -> float:
        """c = (Ĵ_c − (d − m)) / T̄: the episodic violation of the limit tightened by the margin m, per
        step, in the surrogate's units (unscaled with ``violation_scale="episode"``; 0 until an episode
        finished); Ĵ_c from the last ``cost_window`` training episodes, or the rollout's finished
        episodes, else the monitor's last 100."""
        cfg = self.config
        monitor = self.part(CostMonitorPart)
        recent = list(monitor.monitor.episode_costs)[-cfg.cost_window :] if cfg.cost_window else []
        if recent:
            cost = float(sum(float(v[0]) for v in recent) / len(recent))
        elif batch.episode_costs is not None and len(batch.episode_costs):
            cost = float(batch.episode_costs[:, 0].mean())
        else:
            cost = monitor.mean_episode_cost
        length = (
            float(torch.tensor(list(self.episode_lengths), dtype=torch.float64).mean())
            if self.episode_lengths
            else float(batch.n_steps)
        )
        target = float(cfg.targets[0])
        scale = max(length, 1.0) if cfg.violation_scale == "per_step" else 1.0
        return 0.0 if math.isnan(cost) else (cost - target) / scale

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        flat = batch.flat()
        advantage = flat.advantages
        if advantage is None or batch.cost_advantages is None:
            raise ValueError("the batch has no advantages: estimate() them first")
        c = self.violation(batch)
        if self.config.normalize_advantage:
            advantage = self.normalize(advantage)
        metrics = self.constrained_step(flat, advantage.detach(), batch.masked(batch.cost_advantages)[:, 0], c)
        metrics["value_loss"] = self.fit_critic(flat)
        return metrics  # the cost critic's fit follows (its part's after_update)

    def constrained_step(
        self, flat: FlatBatch, advantage: torch.Tensor, cost_advantage: torch.Tensor, c: float
    ) -> dict[str, float]:
        """The CPO step on the batch (``cost_advantage``: Â^c of the constraint, ``c``: the violation)."""
        cfg = self.config
        cost_advantage = cost_advantage - cost_advantage.mean()

        split = cfg.cost_gradient == "split_half"
        first_half = (torch.arange(len(flat), device=cost_advantage.device) < len(flat) // 2).to(cost_advantage)

        def objectives(dist: Dist, old_log_prob: torch.Tensor) -> list[torch.Tensor]:
            surrogate = self.surrogate(dist, flat.actions, old_log_prob, advantage)
            ratio = (dist.log_prob(flat.actions) - old_log_prob).exp()
            return [surrogate, (ratio * cost_advantage).mean()]

        model = natural_gradients(
            self.policy, flat.obs, flat.actions, objectives, cfg.damping, cfg.cg_iters, cfg.cg_tol
        )
        (g, b), (x, p) = model.grads, model.directions
        kappa = 1.0
        if split:  # b_A: the first half's cost gradient (weighted 2/n, so that b = (b_A + b_B)/2)
            dist = self.policy.distribution(flat.obs)
            ratio = (dist.log_prob(flat.actions) - model.old_log_prob).exp()
            b_a = flat_grad((ratio * cost_advantage * first_half).mean() * 2, policy_params(self.policy))
            kappa = split_half_reliability(b, b_a, conjugate_gradient(model.fvp, b_a, cfg.cg_iters, cfg.cg_tol), p)
        step, case, lam, nu = cpo_step(g, kappa * b, x, kappa * p, c, cfg.max_kl)
        surrogate_old, cost_old = model.values
        params = policy_params(self.policy)

        @torch.no_grad()
        def evaluate(theta_new: torch.Tensor) -> tuple[float, float, float]:
            set_flat_params(params, theta_new)
            new = self.policy.distribution(flat.obs)
            kl = float(mean_kl(new, model.old))
            ratio = (new.log_prob(flat.actions) - model.old_log_prob).exp()
            gain = float(self.surrogate(new, flat.actions, model.old_log_prob, advantage)) - surrogate_old
            return kl, gain, float((ratio * cost_advantage).mean()) - cost_old

        def accept(result: tuple[float, float, float], fraction: float) -> bool:
            kl, gain, cost_change = result
            if not math.isfinite(gain) or not math.isfinite(kl):
                return False
            if case > 1 and gain < 0:
                return False  # a feasible step must not lower the reward surrogate
            if kappa * cost_change > max(-c, 0.0):
                return False  # nor raise the cost past what the constraint allows
            return kl <= cfg.max_kl

        _, fraction, result = backtracking_line_search(
            params, model.theta, step, evaluate, accept, cfg.max_backtracks, cfg.backtrack_coef
        )
        kl, gain, cost_change = result if result is not None else (0.0, 0.0, 0.0)
        with torch.no_grad():
            entropy = float(self.policy.distribution(flat.obs).entropy().mean())
        return {
            "kl": kl,
            "surrogate_gain": gain,
            "cost_surrogate_change": cost_change,
            "step_fraction": fraction,
            "accepted": float(result is not None),
            "cpo_case": float(case),
            "cpo_lambda": lam,
            "cpo_nu": nu,
            "violation": c,
            "step_norm": float(step.norm()),
            "cost_gradient_reliability": kappa,
            "entropy": entropy,
        }
