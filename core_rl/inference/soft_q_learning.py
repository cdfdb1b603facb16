r"""Soft Q-learning: maximum-entropy RL with function approximation (notes 10/10, control as
inference: the soft-optimal policy :math:`\pi(a|s) = \exp((Q(s,a) - V(s))/\alpha)`).

Soft value iteration (:mod:`core_rl.inference.control_as_inference`) with the expected backup,
:math:`Q(s,a) = r + \gamma\,\mathbb E_{s'}[V(s')]`, :math:`V(s) = \alpha\log\sum_a\exp(Q(s,a)/\alpha)`,
made sample-based and fitted exactly as DQN makes Q iteration (9/12-9/14): regress
:math:`Q_\phi(s,a)` on the soft Bellman target

.. math::
    y = r + \gamma\,(1-d)\;\alpha\log\sum_{a'}\exp\big(Q_{\phi'}(s',a')/\alpha\big)

(target network φ', replay buffer, Huber loss) and act with the Boltzmann policy
:math:`\pi(a|s)\propto\exp(Q_\phi(s,a)/\alpha)`. As α → 0 the target becomes DQN's max. The solution
maximizes :math:`\sum_t\mathbb E[r_t + \alpha\mathcal H(\pi(\cdot|s_t))]`.

The agent is :class:`~core_rl.q_learning.dqn.DQN` with its ``target_q`` replaced; the soft value
is SAC's :func:`~core_rl.continuous.sac.soft_state_value` with every discrete action as a sample
under a uniform proposal q = 1/|A| (then its importance-sampled log-sum-exp is exact), and the target
is :func:`~core_rl.continuous.sac.soft_bellman_target`. α is the config's ``temperature`` (the
Boltzmann temperature *is* the entropy weight), optionally annealed to ``temperature_final``.
With ``n_step`` > 1 the intermediate steps' entropy bonuses are not in the target.

Example (CartPole-v1 on a small budget, the DQN example's settings with the soft target and
Boltzmann exploration at α = 0.1: the greedy policy already beats the random policy's ≈ 22 —
`tests/test_control_as_inference.py` solves it in 50,000 steps)::

    >>> settings = {"lr": 2.3e-3, "batch_size": 64, "learning_starts": 1000, "train_freq": 256, "gradient_steps": 64}
    >>> settings |= {"target_update_interval": 64, "n_step": 3}
    >>> agent = SoftQLearning("CartPole-v1", {**settings, "seed": 0}).learn(6000)
    >>> agent.evaluate(n_episodes=5)["mean_return"] > 50
    True
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator

from core_rl.common.replay import ReplaySample
from core_rl.continuous.sac import soft_bellman_target, soft_state_value
from core_rl.q_learning.dqn import DQN, DQNConfig


class SoftQConfig(DQNConfig):
    exploration: Literal["epsilon", "boltzmann"] = Field(
        "boltzmann", description="Behaviour policy; 'boltzmann' is the soft-optimal π ∝ exp(Q/α)."
    )
    temperature: float = Field(
        0.1, gt=0.0, description="α: entropy weight of the soft target and Boltzmann temperature."
    )

    @model_validator(mode="after")
    def _no_double(self) -> "SoftQConfig":
        if self.double_q:
            raise ValueError("double_q is not defined for the soft target (use the plain soft backup)")
        return self


def soft_value_discrete(q_values: torch.Tensor, alpha: float) -> torch.Tensor:
    r""":math:`V(s) = \alpha\log\sum_a\exp(Q(s,a)/\alpha)` for ``q_values`` [B, A], via SAC's
    importance-sampled soft value with all A actions under the uniform proposal."""
    n_actions = q_values.shape[-1]
    q = q_values.transpose(0, 1)  # [M = A, B]
    return soft_state_value(q, torch.full_like(q, -math.log(n_actions)), alpha, estimator="logsumexp")


class SoftQLearning(DQN):
    """Soft (MaxEnt) Q-learning for discrete actions: DQN with the soft Bellman target."""

    name = "soft_q"
    config: SoftQConfig
    config_cls = SoftQConfig

    @torch.no_grad()
    def target_q(self, batch: ReplaySample) -> torch.Tensor:
        r""":math:`y = \sum\gamma^k r + \gamma^n(1-d)\,\alpha\log\sum_{a'}\exp(Q_{\phi'}(s',a')/\alpha)`."""
        return soft_bellman_target(batch, soft_value_discrete(self.q_target(batch.next_obs), self.temperature))

    def soft_policy(self, obs: torch.Tensor) -> torch.Tensor:
        r""":math:`\pi(a|s) = \exp((Q(s,a) - V(s))/\alpha)` for a batch of observation tensors, [B, A]."""
        with torch.no_grad():
            return torch.softmax(self.q_net(obs) / self.temperature, -1)


__all__ = ["SoftQLearning", "SoftQConfig", "soft_value_discrete"]
