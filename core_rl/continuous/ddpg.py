r"""DDPG: Q-learning with continuous actions by *training a maximizer* (notes 9/14).

The max over actions in the Q-learning target is replaced by a deterministic actor
:math:`\mu_\theta(s) \approx \arg\max_a Q_\phi(s,a)`, itself trained by the chain rule through the critic:

.. math::
    y = r + \gamma (1-d)\, Q_{\phi'}\big(s', \mu_{\theta'}(s')\big), \qquad
    \min_\phi\ \big(Q_\phi(s,a) - y\big)^2, \qquad
    \max_\theta\ Q_\phi\big(s, \mu_\theta(s)\big)
    \quad\big(\nabla_\theta = \nabla_a Q_\phi(s,a)\big|_{a=\mu_\theta(s)}\nabla_\theta\mu_\theta(s)\big),

with target networks φ', θ' tracked by Polyak averaging and a behaviour policy
:math:`a = \mathrm{clip}(\mu_\theta(s) + \epsilon)`, ε Gaussian or Ornstein-Uhlenbeck.

The same update, parametrized, is TD3 (:mod:`core_rl.continuous.td3`): ``n_critics=2`` takes the
clipped double-Q :math:`\min_{k} Q_{\phi'_k}` in the target, ``target_noise`` smooths the target
policy :math:`\tilde a' = \mathrm{clip}(\mu_{\theta'}(s') + \mathrm{clip}(\epsilon, -c, c), -1, 1)`,
and ``policy_delay`` updates actor and targets once per that many critic steps.

Example (a point in the plane that must reach (1, 0), reward −‖x − g‖ per step for 20 steps: the
random policy scores ≈ −22, the best ≈ −2; 600 steps of DDPG take it past random)::

    >>> from core_rl.meta.envs import PointGoal
    >>> settings = {"hidden_sizes": (64, 64), "batch_size": 64, "learning_starts": 100}
    >>> agent = DDPG(PointGoal(), {**settings, "seed": 0}).learn(600)
    >>> agent.evaluate(n_episodes=5)["mean_return"] > -18
    True
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from pydantic import Field

from core_rl.common.off_policy import polyak_update
from core_rl.common.optim import make_adam
from core_rl.common.replay import ReplaySample
from core_rl.continuous.critics import DeterministicActor, NoisyConfig, NoisyContinuousQAgent


class DDPGConfig(NoisyConfig):
    n_critics: int = Field(1, ge=1, description="Critics whose minimum forms the target (2: TD3's clipped double Q).")
    policy_delay: int = Field(1, ge=1, description="Critic steps per actor/target step (TD3: 2).")
    target_noise: float = Field(0.0, ge=0.0, description="σ of the target policy smoothing noise (TD3: 0.2).")
    target_noise_clip: float = Field(0.5, ge=0.0, description="c: the smoothing noise is clipped to [-c, c].")
    actor_lr: float | None = Field(None, gt=0.0, description="Actor step size (None: lr).")


class DDPG(NoisyContinuousQAgent):
    """Deep deterministic policy gradient (``DDPG(env, config).learn(steps)``)."""

    name = "ddpg"
    config: DDPGConfig
    config_cls = DDPGConfig
    bf16_updates = True
    flat_optimizers = ("critic_optimizer", "actor_optimizer")

    def _build_networks(self) -> None:
        cfg = self.config
        self.actor = DeterministicActor(
            self.observation_space,
            self.action_dim,
            cfg.hidden_sizes,
            cfg.activation,
            encoder=cfg.encoder,
            init=cfg.init,
        ).to(self.device)
        self.critic = self._make_critic(cfg.n_critics)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = make_adam(self.actor.parameters(), cfg.actor_lr or cfg.lr)
        self.critic_optimizer = make_adam(self.critic.parameters(), cfg.lr)

    def _greedy(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(obs)

    def _numpy_behaviour_mirrors_explore(self) -> bool:
        return (
            type(self.actor).forward is DeterministicActor.forward
            and type(self)._greedy is DDPG._greedy
            and type(self)._explore is NoisyContinuousQAgent._explore
        )

    def _numpy_behaviour(self, out: np.ndarray) -> np.ndarray:
        """clip(tanh(f_θ(s)) + ε, −1, 1) with the exploration noise's own draw."""
        return np.clip(np.tanh(out) + self.noise().numpy(), -1.0, 1.0)

    @torch.no_grad()
    def target_action(self, next_obs: torch.Tensor) -> torch.Tensor:
        r""":math:`\mu_{\theta'}(s')`, smoothed by clipped Gaussian noise when ``target_noise > 0``."""
        cfg = self.config
        next_action = self.actor_target(next_obs)
        if cfg.target_noise > 0:
            eps = (cfg.target_noise * torch.randn_like(next_action)).clamp_(
                -cfg.target_noise_clip, cfg.target_noise_clip
            )
            next_action = (next_action + eps).clamp_(-1.0, 1.0)
        return next_action

    @torch.no_grad()
    def target_q(self, batch: ReplaySample) -> torch.Tensor:
        r""":math:`y = r + \gamma^n (1-d)\min_k Q_{\phi'_k}(s', \tilde a')`."""
        next_q = self.critic_target.min_q(batch.next_obs, self.target_action(batch.next_obs))
        return batch.rewards + batch.discounts * (1.0 - batch.dones) * next_q

    def train_step(self, batch: ReplaySample) -> dict[str, float]:
        cfg = self.config
        step = self.gradient_updates + 1
        target_q = self.target_q(batch)
        q = self.critic(batch.obs, self.scaler.normalize(batch.actions))  # [K, B]
        critic_loss = (q - target_q).pow(2).mean(1).sum()  # Σ_k MSE_k
        self._step_optimizer(self.critic_optimizer, critic_loss)
        log = self.log_metrics
        metrics = {"critic_loss": critic_loss.item(), "q_mean": q.mean().item()} if log else {}
        if step % cfg.policy_delay == 0:
            # ∇_θ Q_φ1(s, μ_θ(s)): the critic's weights are detached, only the action carries gradient
            actor_loss = -self.critic.member(0, batch.obs, self.actor(batch.obs), detach_params=True).mean()
            self._step_optimizer(self.actor_optimizer, actor_loss)
            if log:
                metrics["actor_loss"] = actor_loss.item()
            if (step // cfg.policy_delay) % cfg.target_update_interval == 0:
                polyak_update(self.critic, self.critic_target, cfg.tau)
                polyak_update(self.actor, self.actor_target, cfg.tau)
        return metrics
