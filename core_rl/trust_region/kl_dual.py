r"""The KL-constrained surrogate problem solved by dual gradient descent (notes 9/19: "use dual
gradient descent to enforce the KL constraint").

The constrained problem
:math:`\max_{\theta'} L_\theta(\theta')\ \text{s.t.}\ \bar D_{KL}(\pi_{\theta'}\|\pi_\theta)\le\epsilon`,
with :math:`L_\theta(\theta') = \mathbb E_t[\tfrac{\pi_{\theta'}(a_t|s_t)}{\pi_\theta(a_t|s_t)}\hat A_t]`,
has the Lagrangian

.. math::
    \mathcal L(\theta', \lambda) = L_\theta(\theta')
        - \lambda\big(\bar D_{KL}(\pi_{\theta'}\,\|\,\pi_\theta) - \epsilon\big).

Dual gradient descent alternates

1. the primal step: maximize :math:`\mathcal L(\theta', \lambda)` over θ' with λ fixed (here
   ``n_epochs`` epochs of minibatch Adam on the batch, first-order, no Fisher matrix);
2. the dual step: :math:`\partial\mathcal L/\partial\lambda = -(\bar D_{KL} - \epsilon)`, so
   :math:`\lambda \leftarrow \max\big(0,\ \lambda + \alpha(\bar D_{KL}(\pi_{\theta'}\|\pi_\theta) - \epsilon)\big)`
   with the KL measured on the whole batch, after every primal epoch (``dual_every="epoch"``, the
   default: λ reacts within an iteration, before an unconstrained surrogate can run away) or once
   per iteration (``dual_every="iteration"``).

λ rises while the policy moves further than ε and decays toward 0 while it stays inside, so the
KL of each iteration's update is driven to ε. The critic V_φ is fitted as in NPG/TRPO.

Example (CartPole-v1 with the defaults, ε = 0.01: 5 updates of 2,048 steps)::

    >>> agent = KLDual("CartPole-v1", {"seed": 0}).learn(10_000)
    >>> agent.last_metrics["kl"] < 2 * agent.config.target_kl, agent.last_metrics["kl_coef"] > 0
    (True, True)
    >>> agent.evaluate(n_episodes=5)["mean_return"] > 200   # random ≈ 22
    True
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from core_rl.common.buffers import FlatBatch
from core_rl.trust_region.common import TrustRegionAgent, TrustRegionConfig, mean_kl


class KLDualConfig(TrustRegionConfig):
    policy_lr: float = Field(1e-3, gt=0.0, description="Learning rate of the policy's Adam (the primal step).")
    n_epochs: int = Field(10, ge=1, description="Primal epochs over the batch per dual step.")
    batch_size: int = Field(256, ge=1, description="Primal minibatch size.")
    target_kl: float = Field(0.01, gt=0.0, description="ε, the KL constraint's bound.")
    kl_coef_init: float = Field(1.0, ge=0.0, description="λ₀, the initial Lagrange multiplier.")
    dual_lr: float = Field(50.0, gt=0.0, description="α, the step size of the dual update of λ.")
    dual_every: Literal["epoch", "iteration"] = Field(
        "epoch", description="Take the dual step after every primal epoch, or once after all of them."
    )


class DualVariable(nn.Module):
    """The Lagrange multiplier λ ≥ 0, as a buffer so that checkpoints keep it."""

    def __init__(self, value: float):
        super().__init__()
        self.register_buffer("value", torch.tensor(float(value), dtype=torch.float64))

    def __float__(self) -> float:
        return float(self.value)

    def ascend(self, constraint: float, lr: float) -> float:
        """λ ← max(0, λ + α·constraint); returns the new λ."""
        self.value.copy_((self.value + lr * constraint).clamp_min(0.0))
        return float(self.value)


class KLDual(TrustRegionAgent):
    """First-order KL-constrained policy optimization: primal Adam on the Lagrangian, dual ascent on λ."""

    name = "kl_dual"
    config: KLDualConfig
    config_cls = KLDualConfig

    def _build_optimizers(self) -> None:
        super()._build_optimizers()
        self.policy_optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.config.policy_lr, eps=1e-5)
        self.kl_coef = DualVariable(self.config.kl_coef_init)

    def _scheduled_optimizers(self) -> list[tuple[torch.optim.Optimizer, float]]:
        return super()._scheduled_optimizers() + [(self.policy_optimizer, self.config.policy_lr)]

    def improve_policy(self, flat: FlatBatch, advantage: torch.Tensor) -> dict[str, float]:
        cfg = self.config
        old_policy = copy.deepcopy(self.policy).requires_grad_(False)
        data = dataclasses.replace(flat, advantages=advantage)
        with torch.no_grad():
            old_full = old_policy.distribution(flat.obs)
            surrogate_old = float(self.surrogate(old_full, flat.actions, flat.log_probs, advantage))
        lam_used = []
        for epoch in range(cfg.n_epochs):
            # 1. primal: max_θ' L(θ') − λ(D̄_KL(π_θ'‖π_θ) − ε), λ fixed
            lam = float(self.kl_coef)
            lam_used.append(lam)
            for mb in data.minibatches(cfg.batch_size):
                dist = self.policy.distribution(mb.obs)
                with torch.no_grad():
                    old = old_policy.distribution(mb.obs)
                lagrangian = self.surrogate(dist, mb.actions, mb.log_probs, mb.advantages) - lam * (
                    mean_kl(dist, old) - cfg.target_kl
                )
                self._clip_and_step(-lagrangian, self.policy_optimizer)
            # 2. dual: λ ← max(0, λ + α(D̄_KL − ε)), with the KL of the whole batch
            if cfg.dual_every == "epoch" or epoch == cfg.n_epochs - 1:
                with torch.no_grad():
                    kl = float(mean_kl(self.policy.distribution(flat.obs), old_full))
                self.kl_coef.ascend(kl - cfg.target_kl, cfg.dual_lr)
        with torch.no_grad():
            dist = self.policy.distribution(flat.obs)
            surrogate_new = float(self.surrogate(dist, flat.actions, flat.log_probs, advantage))
            entropy = float(dist.entropy().mean())
        return {
            "kl": kl,
            "kl_coef": float(self.kl_coef),
            "kl_coef_used": sum(lam_used) / len(lam_used),
            "surrogate_gain": surrogate_new - surrogate_old,
            "entropy": entropy,
        }
