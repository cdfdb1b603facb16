r"""Actor-critic: batch or online, with n-step returns or GAE(λ); A2C is its synchronous-parallel form.

From the notes (9/7): fit V_φ^π(s) to bootstrapped targets
:math:`y_{i,t} \approx r(s_{i,t},a_{i,t}) + \gamma \hat V_\phi^\pi(s_{i,t+1})`, evaluate the advantage
:math:`\hat A^\pi(s_t,a_t) = r(s_t,a_t) + \gamma\hat V_\phi^\pi(s_{t+1}) - \hat V_\phi^\pi(s_t)`, and
step along :math:`\nabla_\theta J(\theta) \approx \sum_{i,t}\nabla_\theta\log\pi_\theta(a_{i,t}|s_{i,t})\hat A(s_{i,t},a_{i,t})`.
Between Monte Carlo and one-step bootstrapping lies the n-step advantage

.. math:: \hat A_n(s_t,a_t) = \sum_{t'=t}^{t+n-1}\gamma^{t'-t} r_{t'} - \hat V_\phi(s_t) + \gamma^n \hat V_\phi(s_{t+n})

and GAE(λ) weights all n by (γλ)^{n−1}. Batch actor-critic is ``n_envs=1`` with a long
``n_steps``; online actor-critic is ``n_steps=1``; A2C steps ``n_envs`` actors synchronously and
updates on their pooled ``n_envs × n_steps`` batch.

Example (A2C with its defaults, 8 actors × 5 steps per update, on CartPole-v1: 10,000 steps take
the greedy policy far past the random policy's ≈ 22)::

    >>> agent = A2C("CartPole-v1", {"seed": 0}).learn(10_000)
    >>> agent.evaluate(n_episodes=5)["mean_return"] > 200
    True
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator

from core_rl.common.buffers import FlatBatch, RolloutBatch
from core_rl.common.fused_actor_critic import FusedActorCritic
from core_rl.common.on_policy import OnPolicyAgent, OnPolicyConfig
from core_rl.common.optim import make_optimizer


class ActorCriticConfig(OnPolicyConfig):
    n_envs: int = Field(1, ge=1)
    n_steps: int = Field(200, ge=1)
    lr: float = Field(7e-4, gt=0.0)
    advantage: Literal["gae", "nstep", "reward_to_go", "return"] = "nstep"
    n_step: int = Field(200, ge=1)
    normalize_advantage: bool = False
    optimizer: Literal["adam", "rmsprop"] = "rmsprop"
    rms_alpha: float = Field(0.99, gt=0.0, lt=1.0)
    rms_eps: float = Field(1e-5, gt=0.0)
    value_epochs: int = Field(1, ge=1, description="Critic regression steps per batch (batch actor-critic: >1).")

    @field_validator("use_critic")
    @classmethod
    def _needs_critic(cls, use_critic: bool) -> bool:
        if not use_critic:
            raise ValueError(
                "use_critic=False is not supported: actor-critic learns V_φ(s) in its shared loss "
                "(without a critic it is REINFORCE: use algo 'reinforce'); set use_critic=True"
            )
        return use_critic


class ActorCritic(OnPolicyAgent):
    """Advantage actor-critic on one shared loss: −log π·Â + c_v (V−y)² − c_H H[π]."""

    name = "actor_critic"
    config: ActorCriticConfig
    config_cls = ActorCriticConfig
    supports_sde = True
    fused_update_supported = True
    shared_encoder_supported = True

    def _build_optimizers(self) -> None:
        cfg = self.config
        self.optimizer = make_optimizer(
            cfg.optimizer,
            self._policy_value_parameters(),
            cfg.lr,
            adam_eps=1e-5,
            rms_alpha=cfg.rms_alpha,
            rms_eps=cfg.rms_eps,
        )

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        cfg = self.config
        flat = batch.flat()
        advantage = self.normalize(flat.advantages) if cfg.normalize_advantage else flat.advantages
        fused = self._fused_actor_critic() if cfg.value_epochs == 1 else None
        if fused is not None:
            return self._fused_update(fused, flat, advantage)
        value_loss_total = 0.0
        for i in range(cfg.value_epochs):
            dist, value = self._distribution_and_value(flat.obs)
            value_loss = (flat.returns - value).pow(2).mean()
            if i == 0:  # one policy step per batch: the samples are on-policy only once
                log_prob = dist.log_prob(flat.actions)
                policy_loss = -(log_prob * advantage).mean()
                entropy = dist.entropy().mean()
                loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy
            else:
                loss = cfg.vf_coef * value_loss
            grad_norm = self._clip_and_step(loss)
            value_loss_total = value_loss_total + value_loss.detach()
        stats = torch.stack(
            [
                policy_loss.detach(),
                value_loss_total / cfg.value_epochs,
                entropy.detach(),
                torch.as_tensor(grad_norm, dtype=torch.float32),
            ]
        ).tolist()
        return dict(zip(("policy_loss", "value_loss", "entropy", "grad_norm"), stats))

    @torch.no_grad()
    def _fused_update(self, fused: FusedActorCritic, flat: FlatBatch, advantage: torch.Tensor) -> dict[str, float]:
        r"""The same step (``value_epochs=1``) with the gradients written out
        (:mod:`core_rl.common.fused_actor_critic`): L = −mean(log π·Â) + c_v mean(V − ŷ)² − c_H H̄ has

        .. math:: \frac{\partial L}{\partial\log\pi_i} = -\frac{\hat A_i}{B},\qquad
            \frac{\partial L}{\partial V_i} = \frac{2c_v}{B}(V_i - \hat y_i),\qquad
            \frac{\partial L}{\partial\bar H} = -c_H."""
        cfg = self.config
        n = advantage.shape[0]
        f = fused.forward(flat.obs, flat.actions)
        error = f.value - flat.returns
        fused.backward(f, advantage * (-1.0 / n), -cfg.ent_coef, error * (2.0 * cfg.vf_coef / n))
        norm = fused.step(cfg.max_grad_norm)
        terms = [(f.log_prob * advantage).mean().neg(), error.square().mean(), f.entropy]
        terms.append(norm if norm is not None else torch.zeros(()))
        return dict(zip(("policy_loss", "value_loss", "entropy", "grad_norm"), torch.stack(terms).tolist()))


class A2CConfig(ActorCriticConfig):
    n_envs: int = Field(8, ge=1)
    n_steps: int = Field(5, ge=1)
    n_step: int = Field(5, ge=1)
    advantage: Literal["gae", "nstep", "reward_to_go", "return"] = "gae"
    gae_lambda: float = Field(1.0, ge=0.0, le=1.0)


class A2C(ActorCritic):
    """Synchronous advantage actor-critic: ActorCritic with parallel-actor defaults."""

    name = "a2c"
    config: A2CConfig
    config_cls = A2CConfig
