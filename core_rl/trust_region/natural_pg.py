r"""Natural policy gradient (notes 9/19).

Linearize the surrogate and take the quadratic approximation of the KL constraint,

.. math::
    \theta' \leftarrow \arg\max_{\theta'} \nabla_\theta J(\theta)^T(\theta'-\theta)
    \quad\text{s.t.}\quad \tfrac12(\theta'-\theta)^T F (\theta'-\theta) \le \epsilon ,

whose solution is the natural gradient step

.. math::
    \theta' = \theta + \sqrt{\frac{2\epsilon}{\nabla_\theta J(\theta)^T F^{-1}\nabla_\theta J(\theta)}}\;
              F^{-1}\nabla_\theta J(\theta),
    \qquad F = \mathbb E_{\pi_\theta}\big[\nabla_\theta\log\pi_\theta(a|s)\,\nabla_\theta\log\pi_\theta(a|s)^T\big].

(The notes print :math:`\nabla J^T F \nabla J` under the root; the step that meets the constraint
with equality has :math:`F^{-1}`, as here.)
:math:`\nabla_\theta J = \nabla_{\theta'} L_\theta(\theta')|_{\theta'=\theta}` is the gradient of the
importance-weighted surrogate with advantages Â (GAE(λ) by default); :math:`x = F^{-1}\nabla J`
comes from conjugate gradient on damped Fisher-vector products, and the step length uses
:math:`x^T(F+\delta I)x` so that ½Δθᵀ(F+δI)Δθ = ε exactly.

:meth:`NaturalPG.apply_step` takes the full step; TRPO (``core_rl.trust_region.trpo``) overrides it
with a backtracking line search.

Example (CartPole-v1 with the defaults, ε = 0.01 per update: 10,000 steps are 5 natural gradient
steps)::

    >>> agent = NaturalPG("CartPole-v1", {"seed": 0}).learn(10_000)
    >>> agent.evaluate(n_episodes=5)["mean_return"] > 200   # random ≈ 22
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from pydantic import Field

from core_rl.common.buffers import FlatBatch
from core_rl.trust_region.common import (
    TrustRegionAgent,
    TrustRegionConfig,
    flat_params,
    mean_kl,
    natural_gradients,
    natural_step,
    policy_params,
    set_flat_params,
)

# evaluate(θ') -> (L_θ(θ'), D̄_KL(π_θ'‖π_θ)), with θ' written into the policy
Evaluate = Callable[[torch.Tensor], tuple[float, float]]
#: (params, θ, Δθ, expected gain, old surrogate, evaluate, config) → the accepted step's metrics
StepRule = Callable[..., dict[str, float]]


class NaturalPGConfig(TrustRegionConfig):
    max_kl: float = Field(
        0.01,
        gt=0.0,
        description="ε, the KL trust-region radius of each step: the mean over states of the KL of the whole action "
        "distribution (summed over a diagonal Gaussian's dimensions, as in SB3; OmniSafe averages over them, so its "
        "target_kl 0.01 is ε = 0.01·dim(A)).",
    )
    cg_iters: int = Field(10, ge=1, description="Conjugate gradient iterations for F⁻¹∇J.")
    cg_tol: float = Field(1e-10, ge=0.0, description="Stop CG once the squared residual is below this.")
    damping: float = Field(0.1, ge=0.0, description="δ of the damped Fisher F + δI.")


class NaturalPG(TrustRegionAgent):
    """Natural policy gradient with an ε-sized step in the Fisher metric, and a separate critic."""

    name = "npg"
    config: NaturalPGConfig
    config_cls = NaturalPGConfig

    def natural_step(self, flat: FlatBatch, advantage: torch.Tensor) -> dict[str, torch.Tensor | float]:
        """∇J, x ≈ (F+δI)⁻¹∇J and the full step Δθ = √(2ε / xᵀ(F+δI)x) x, at the current θ
        (the shared :func:`~core_rl.trust_region.common.natural_gradients` and
        :func:`~core_rl.trust_region.common.natural_step`)."""
        cfg = self.config
        model = natural_gradients(
            self.policy,
            flat.obs,
            flat.actions,
            lambda dist, old_log_prob: [self.surrogate(dist, flat.actions, old_log_prob, advantage)],
            cfg.damping,
            cfg.cg_iters,
            cfg.cg_tol,
        )
        grad_j = model.grads[0]
        full_step, expected_gain, cg_residual = natural_step(grad_j, model.directions[0], model.fvp, cfg.max_kl)
        return {
            "full_step": full_step,
            "grad": grad_j,
            "old": model.old,
            "old_log_prob": model.old_log_prob,
            "surrogate": model.values[0],
            "expected_gain": expected_gain,
            "cg_residual": cg_residual,
        }

    #: how a step is accepted: ``None`` takes the full natural step (NPG); TRPO and TRPO-Lag set TRPO's
    #: backtracking line search (:func:`~core_rl.trust_region.trpo.trpo_line_search`), with its config fields
    step_rule: ClassVar[StepRule | None] = None

    def apply_step(
        self,
        theta: torch.Tensor,
        full_step: torch.Tensor,
        expected_gain: float,
        surrogate_old: float,
        evaluate: Evaluate,
    ) -> dict[str, float]:
        """θ ← θ + Δθ, or the step the class's ``step_rule`` accepts. Returns the step's metrics."""
        if self.step_rule is not None:
            return type(self).step_rule(
                policy_params(self.policy), theta, full_step, expected_gain, surrogate_old, evaluate, self.config
            )
        surrogate_new, kl = evaluate(theta + full_step)
        return {
            "kl": kl,
            "surrogate_gain": surrogate_new - surrogate_old,
            "step_fraction": 1.0,
            "backtracks": 0.0,
            "accepted": 1.0,
        }

    def improve_policy(self, flat: FlatBatch, advantage: torch.Tensor) -> dict[str, float]:
        params = policy_params(self.policy)
        theta = flat_params(params)
        step = self.natural_step(flat, advantage)
        old, old_log_prob = step["old"], step["old_log_prob"]

        @torch.no_grad()
        def evaluate(theta_new: torch.Tensor) -> tuple[float, float]:
            set_flat_params(params, theta_new)
            dist = self.policy.distribution(flat.obs)
            return (float(self.surrogate(dist, flat.actions, old_log_prob, advantage)), float(mean_kl(dist, old)))

        metrics = self.apply_step(theta, step["full_step"], step["expected_gain"], step["surrogate"], evaluate)
        with torch.no_grad():
            entropy = float(self.policy.distribution(flat.obs).entropy().mean())
        return {
            **metrics,
            "expected_gain": step["expected_gain"],
            "grad_norm": float(step["grad"].norm()),
            "step_norm": float(step["full_step"].norm()),
            "cg_residual": step["cg_residual"],
            "entropy": entropy,
        }
