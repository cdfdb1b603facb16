r"""Bootstrapped DQN: Thompson sampling with a bootstrap ensemble of Q-functions (notes 10/19).

Thompson sampling explores by "sampling a Q-function from its distribution and acting according
to it for the whole episode". The posterior :math:`p(Q|D)` is approximated, as the notes do for
models (9/28), by the bootstrap: K heads :math:`Q_k(s,a) = h_k(f_\theta(s))_a` on one shared torso
:math:`f_\theta`, head k trained only on the transitions its bootstrap mask selects,
:math:`m_{i,k} \sim \mathrm{Bernoulli}(p)` drawn once when transition i is stored:

.. math::
    \mathcal L(\theta, \{h_k\}) = \frac{1}{\sum_{i,k} m_{i,k}} \sum_{i}\sum_{k=1}^K m_{i,k}\,
        \ell\big(Q_k(s_i,a_i) - y_{i,k}\big),\qquad
    y_{i,k} = r_i + \gamma \max_{a'} Q'_k(s'_i, a')

(each head its own target head; with ``double_q`` the online head picks a'). At the start of each
episode every env samples :math:`k \sim \mathrm{Uniform}\{1..K\}` and acts greedily on
:math:`Q_k` until the episode ends: the randomness is in the *value function*, not in the action,
so exploration is temporally consistent ("deep") rather than dithering like ε-greedy. Optionally
(``prior_scale`` > 0) each head gets a fixed random prior network, :math:`Q_k = h_k + \beta_p\,p_k`
(randomized prior functions, Osband et al. 2018), keeping the heads diverse where there is no data.

The deterministic (evaluation) policy takes the majority vote of the heads' greedy actions, ties
broken by the mean Q. Everything else (replay, N-step targets, target network, Huber loss, ε
schedule, which defaults to ε = 0) is :class:`core_rl.q_learning.dqn.DQN`.

Example (a 10-state chain with thermometer observations, the DQN of
:mod:`core_rl.exploration.experiments`: Thompson sampling over 10 heads walks to the far end,
return ≥ 1, within 1,000 steps)::

    >>> import gymnasium as gym
    >>> from core_rl.exploration.experiments import CHAIN_DQN
    >>> env = lambda: gym.make("explore/Chain-v0", n=10, obs="thermometer")
    >>> agent = BootstrappedDQN(env, {**CHAIN_DQN, "n_heads": 10, "seed": 0}).learn(1000)
    >>> max(agent.episode_returns) >= 1.0
    True
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from core_rl.common.networks import ACTIVATIONS, ObsEncoder, mlp
from core_rl.common.replay import ReplayBuffer, ReplaySample
from core_rl.q_learning.dqn import DQN, DQNConfig


# ---- replay with bootstrap masks -----------------------------------------------------------------
@dataclass
class MaskedReplaySample(ReplaySample):
    masks: torch.Tensor | None = None  # [B, K] bootstrap masks m_{i,k}


class MaskedReplayBuffer(ReplayBuffer):
    """A replay buffer that draws m_{i,k} ~ Bernoulli(p) for each stored transition and each head."""

    def __init__(
        self,
        capacity: int,
        n_envs: int,
        obs_shape: tuple[int, ...],
        action_shape: tuple[int, ...],
        n_heads: int,
        mask_prob: float,
        **kwargs,
    ):  # type: ignore[no-untyped-def]
        super().__init__(capacity, n_envs, obs_shape, action_shape, **kwargs)
        self.n_heads, self.mask_prob = int(n_heads), float(mask_prob)
        self.masks = torch.zeros((self.size_per_env, n_envs, self.n_heads))

    def add(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> None:
        p = self.pos
        super().add(obs, actions, rewards, next_obs, terminated, truncated)
        self.masks[p] = (torch.rand(self.n_envs, self.n_heads, generator=self.generator) < self.mask_prob).float()

    def gather(self, t: torch.Tensor, env: torch.Tensor) -> MaskedReplaySample:
        s = super().gather(t, env)
        return MaskedReplaySample(
            **{f.name: getattr(s, f.name) for f in fields(ReplaySample)}, masks=self.masks[t, env].to(self.device)
        )


# ---- the K-headed network ------------------------------------------------------------------------
class BootstrappedQNetwork(nn.Module):
    """Q_k(s, ·) for K heads on a shared torso: ``forward(obs) -> [B, K, |A|]``.

    The torso is the MLP of ``hidden_sizes`` (all but a linear output); each head is an independent
    linear map (one batched einsum for all K). ``prior_scale`` > 0 adds a frozen random prior network
    per head.
    """

    def __init__(
        self,
        obs_space: gym.Space,
        n_actions: int,
        n_heads: int,
        hidden_sizes: tuple[int, ...] = (64, 64),
        activation: str = "relu",
        prior_scale: float = 0.0,
    ):
        super().__init__()
        self.encoder = ObsEncoder(obs_space)
        self.n_heads, self.n_actions, self.prior_scale = int(n_heads), int(n_actions), float(prior_scale)
        if hidden_sizes:
            *inner, width = hidden_sizes
            self.torso: nn.Module = mlp(
                self.encoder.dim,
                width,
                inner,
                activation,
                out_gain=float(np.sqrt(2)),
                output_activation=ACTIVATIONS[activation],
            )
        else:
            width = self.encoder.dim
            self.torso = nn.Identity()
        self.head_weight = nn.Parameter(torch.empty(self.n_heads, width, self.n_actions))
        self.head_bias = nn.Parameter(torch.zeros(self.n_heads, self.n_actions))
        for k in range(self.n_heads):
            nn.init.orthogonal_(self.head_weight.data[k], gain=1.0)
        if self.prior_scale > 0:
            self.prior = nn.ModuleList(
                mlp(self.encoder.dim, self.n_actions, hidden_sizes, activation) for _ in range(self.n_heads)
            )
            self.prior.requires_grad_(False)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.encoder(obs)
        h = self.torso(x)
        q = torch.einsum("bw,kwa->bka", h, self.head_weight) + self.head_bias
        if self.prior_scale > 0:
            q = q + self.prior_scale * torch.stack([p(x) for p in self.prior], 1)
        return q


class BootstrappedDQNConfig(DQNConfig):
    n_heads: int = Field(10, ge=1, description="K, the number of bootstrap heads.")
    bootstrap_prob: float = Field(0.5, gt=0.0, le=1.0, description="p of the masks m ~ Bernoulli(p).")
    prior_scale: float = Field(0.0, ge=0.0, description="Scale of the fixed random prior per head (0: none).")
    exploration_initial_eps: float = Field(0.0, ge=0.0, le=1.0)
    exploration_final_eps: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _no_priorities(self) -> "BootstrappedDQNConfig":
        if self.prioritized:
            raise ValueError("prioritized replay is not supported by bootstrapped_dqn (masks live in the replay)")
        if self.dueling:
            raise ValueError("dueling heads are not supported by bootstrapped_dqn")
        if self.init != "orthogonal":
            raise ValueError("init: bootstrapped_dqn's K heads are initialised orthogonally only")
        return self


class BootstrappedDQN(DQN):
    """DQN with K bootstrapped heads; one head sampled per env per episode (see the module docstring)."""

    name = "bootstrapped_dqn"
    config: BootstrappedDQNConfig
    config_cls = BootstrappedDQNConfig

    def _make_q_network(self) -> nn.Module:
        cfg = self.config
        return BootstrappedQNetwork(
            self.observation_space,
            int(self.action_space.n),
            cfg.n_heads,
            cfg.hidden_sizes,
            cfg.activation,
            cfg.prior_scale,
        )

    def _build_networks(self) -> None:
        cfg = self.config
        super()._build_networks()
        self.replay = MaskedReplayBuffer.like(self.replay, n_heads=cfg.n_heads, mask_prob=cfg.bootstrap_prob)
        self.active_head = torch.randint(cfg.n_heads, (self.n_envs,))

    # ---- acting: one head per env per episode --------------------------------------------------
    def _track_episodes(self, rewards: np.ndarray, dones: np.ndarray, info: dict[str, Any] | None = None) -> None:
        super()._track_episodes(rewards, dones, info)
        if dones.any():
            done_t = torch.as_tensor(np.asarray(dones, dtype=bool))
            self.active_head = torch.where(done_t, torch.randint(self.config.n_heads, (self.n_envs,)), self.active_head)

    def _explore(self, obs_t: torch.Tensor) -> torch.Tensor:
        q_all = self.q_net(obs_t)  # [N, K, A]
        q = q_all[torch.arange(q_all.shape[0]), self.active_head.to(q_all.device)]
        return self.explore(q)  # greedy unless ε > 0

    def vote(self, q_all: torch.Tensor) -> torch.Tensor:
        """Majority vote of the heads' greedy actions, ties broken by the mean Q: ``[B, K, A] -> [B]``."""
        votes = nn.functional.one_hot(q_all.argmax(-1), q_all.shape[-1]).sum(1).float()
        return (votes + 0.5 * torch.sigmoid(q_all.mean(1))).argmax(-1)  # the tie-break is < 1 vote

    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        q_all = self.q_net(obs)
        if deterministic:
            return self.vote(q_all)
        heads = torch.randint(self.config.n_heads, (q_all.shape[0],), device=q_all.device)
        return self.explore(q_all[torch.arange(q_all.shape[0]), heads])

    # ---- learning --------------------------------------------------------------------------------
    def train_step(self, batch: MaskedReplaySample) -> dict[str, float]:  # type: ignore[override]
        cfg = self.config
        target_q = self.target_q(batch)
        actions = batch.actions.long().reshape(-1, 1, 1).expand(-1, cfg.n_heads, 1)
        q = self.q_net(batch.obs).gather(-1, actions).squeeze(-1)  # [B, K]
        td_error = q - target_q  # y_{i,k}: [B, K] (DQN.target_q)
        per_sample = self.td_loss(q, target_q)
        masks = batch.masks if batch.masks is not None else torch.ones_like(per_sample)
        loss = (per_sample * masks).sum() / masks.sum().clamp_min(1.0)
        self._step_optimizer(self.optimizer, loss)
        if self._target_update_due():
            self._update_targets()
        with torch.no_grad():
            head_spread = q.std(1).mean() if cfg.n_heads > 1 else torch.zeros(())
        return {
            "loss": loss.item(),
            "q_mean": q.mean().item(),
            "td_error_abs": td_error.abs().mean().item(),
            "head_spread": head_spread.item(),
        }


__all__ = [
    "BootstrappedDQN",
    "BootstrappedDQNConfig",
    "BootstrappedQNetwork",
    "MaskedReplayBuffer",
    "MaskedReplaySample",
]
