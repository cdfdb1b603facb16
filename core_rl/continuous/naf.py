r"""NAF: Q-learning with continuous actions by an *easily maximizable Q-function* (notes 9/14).

Normalized advantage functions (Gu et al. 2016) make Q quadratic in the action,

.. math::
    Q_\phi(s,a) = V_\phi(s) - \tfrac12\,(a-\mu_\phi(s))^\top P_\phi(s)\,(a-\mu_\phi(s)), \qquad
    P_\phi(s) = L_\phi(s)L_\phi(s)^\top,

with :math:`L_\phi(s)` lower-triangular with an exponentiated (positive) diagonal, so P is
positive definite and the maximum is in closed form:
:math:`\arg\max_a Q_\phi(s,a) = \mu_\phi(s)`, :math:`\max_a Q_\phi(s,a) = V_\phi(s)`. The target is
therefore :math:`y = r + \gamma^n(1-d)\,V_{\phi'}(s')` and the greedy policy is μ(s) (in (-1, 1)^|A|
through a tanh, so the unconstrained max is also the max over the action box). The quadratic form
is :math:`\tfrac12\lVert L^\top (a-\mu)\rVert^2`, one batched triangular matmul.

Example (a point in the plane that must reach (1, 0), reward −‖x − g‖ per step for 20 steps: the
random policy scores ≈ −22, the best ≈ −2; 600 steps of NAF take it well past random)::

    >>> from core_rl.meta.envs import PointGoal
    >>> settings = {"hidden_sizes": (64, 64), "batch_size": 64, "learning_starts": 100}
    >>> agent = NAF(PointGoal(), {**settings, "seed": 0}).learn(600)
    >>> agent.evaluate(n_episodes=5)["mean_return"] > -15
    True
"""

from __future__ import annotations

import copy

import gymnasium as gym
import torch
from pydantic import Field
from torch import nn

from core_rl.common.networks import InitName, ObsEncoder, mlp
from core_rl.common.off_policy import polyak_update
from core_rl.common.optim import make_adam
from core_rl.common.replay import ReplaySample
from core_rl.continuous.critics import NoisyConfig, NoisyContinuousQAgent


class NAFNetwork(nn.Module):
    r"""One trunk with three heads: V(s), μ(s) = tanh(·), and the |A|(|A|+1)/2 entries of L(s)."""

    def __init__(
        self,
        obs_space: gym.Space,
        action_dim: int,
        hidden_sizes: tuple[int, ...] = (256, 256),
        activation: str = "relu",
        init: InitName = "orthogonal",
    ):
        super().__init__()
        self.encoder = ObsEncoder(obs_space)
        self.action_dim = action_dim
        n_tril = action_dim * (action_dim + 1) // 2
        self.sizes = (1, action_dim, n_tril)
        self.net = mlp(self.encoder.dim, sum(self.sizes), hidden_sizes, activation, out_gain=0.1, init=init)
        rows, cols = torch.tril_indices(action_dim, action_dim)
        self.register_buffer("tril_rows", rows, persistent=False)
        self.register_buffer("tril_cols", cols, persistent=False)
        self.register_buffer("diag_mask", (rows == cols), persistent=False)

    def heads(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """V(s) ``[B]``, μ(s) ``[B, |A|]`` and L(s) ``[B, |A|, |A|]``."""
        value, mu, entries = self.net(self.encoder(obs)).split(self.sizes, dim=-1)
        entries = torch.where(self.diag_mask, entries.exp(), entries)
        L = entries.new_zeros(entries.shape[0], self.action_dim, self.action_dim)
        L[:, self.tril_rows, self.tril_cols] = entries
        return value.squeeze(-1), torch.tanh(mu), L

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s) = max_a Q(s, a)."""
        return self.heads(obs)[0]

    def mu(self, obs: torch.Tensor) -> torch.Tensor:
        """μ(s) = argmax_a Q(s, a)."""
        return self.heads(obs)[1]

    @staticmethod
    def q_from_heads(value: torch.Tensor, mu: torch.Tensor, L: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        r""":math:`V - \tfrac12\lVert L^\top(a-\mu)\rVert^2` (``actions`` may carry extra leading axes)."""
        diff = actions - mu
        z = torch.matmul(diff.unsqueeze(-2), L).squeeze(-2)  # (a−μ)ᵀL = (Lᵀ(a−μ))ᵀ
        return value - 0.5 * z.pow(2).sum(-1)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.q_from_heads(*self.heads(obs), actions)


class NAFConfig(NoisyConfig):
    noise_std: float = Field(0.3, ge=0.0)
    gradient_steps: int = Field(1, ge=0)


class NAF(NoisyContinuousQAgent):
    """Normalized advantage functions (``NAF(env, config).learn(steps)``)."""

    name = "naf"
    config: NAFConfig
    config_cls = NAFConfig

    def _build_networks(self) -> None:
        cfg = self.config
        self.q_net = NAFNetwork(
            self.observation_space, self.action_dim, cfg.hidden_sizes, cfg.activation, init=cfg.init
        ).to(self.device)
        self.q_target = copy.deepcopy(self.q_net).requires_grad_(False)
        self.optimizer = make_adam(self.q_net.parameters(), cfg.lr)

    def _greedy(self, obs: torch.Tensor) -> torch.Tensor:
        return self.q_net.mu(obs)

    @torch.no_grad()
    def target_q(self, batch: ReplaySample) -> torch.Tensor:
        r""":math:`y = r + \gamma^n(1-d)\max_{a'}Q_{\phi'}(s',a') = r + \gamma^n(1-d)V_{\phi'}(s')`."""
        return batch.rewards + batch.discounts * (1.0 - batch.dones) * self.q_target.value(batch.next_obs)

    def train_step(self, batch: ReplaySample) -> dict[str, float]:
        cfg = self.config
        target_q = self.target_q(batch)
        q = self.q_net(batch.obs, self.scaler.normalize(batch.actions))
        loss = (q - target_q).pow(2).mean()
        self._step_optimizer(self.optimizer, loss)
        if (self.gradient_updates + 1) % cfg.target_update_interval == 0:
            polyak_update(self.q_net, self.q_target, cfg.tau)
        return {"critic_loss": loss.item(), "q_mean": q.mean().item()}
