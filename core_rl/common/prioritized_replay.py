r"""Prioritized experience replay (Schaul et al., 2016) on top of :class:`ReplayBuffer`.

Transition i is sampled with probability

.. math:: P(i) = \frac{p_i^\alpha}{\sum_k p_k^\alpha}, \qquad p_i = |\delta_i| + \epsilon,

where δ_i is its latest TD error (new transitions get the largest priority seen so far, so each is
replayed at least once soon). The bias this introduces into the expected gradient is corrected
with importance weights

.. math:: w_i = \frac{(N\,P(i))^{-\beta}}{\max_j (N\,P(j))^{-\beta}},

β annealed towards 1 over training. The priorities :math:`p_i^\alpha` live in a sum tree over the
flat indices ``t * n_envs + env`` (the ``indices`` of :class:`ReplaySample`): updating leaves and
descending the tree are vectorized over the whole batch (one loop over the tree's depth, none over
samples). Sampling is stratified: the total mass is cut into ``batch_size`` equal segments and one
point is drawn uniformly in each.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from core_rl.common.errors import ConfigError
from core_rl.common.replay import ReplayBuffer, ReplaySample


class SumTree:
    """A complete binary tree whose internal nodes hold the sum of their children (float64 leaves)."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ConfigError(f"sum tree capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.depth = max(1, int(np.ceil(np.log2(capacity))))
        self.n_leaves = 1 << self.depth
        self.nodes = torch.zeros(2 * self.n_leaves, dtype=torch.float64)  # node 1 is the root

    @property
    def total(self) -> float:
        return float(self.nodes[1])

    @property
    def leaves(self) -> torch.Tensor:
        return self.nodes[self.n_leaves : self.n_leaves + self.capacity]

    def update(self, indices: torch.Tensor, values: torch.Tensor) -> None:
        """Set leaves ``indices`` to ``values`` and recompute their ancestors, one level at a time."""
        node = indices.long() + self.n_leaves
        self.nodes[node] = values.to(torch.float64)
        for _ in range(self.depth):
            # repeated parents are written with the same value (the sum of their stored children)
            node = node // 2
            self.nodes[node] = self.nodes[2 * node] + self.nodes[2 * node + 1]

    def find(self, mass: torch.Tensor) -> torch.Tensor:
        """The leaf i with prefix sum S_{i} ≤ mass < S_{i+1}, for every entry of ``mass`` at once."""
        mass = mass.to(torch.float64).clone()
        node = torch.ones(mass.shape[0], dtype=torch.long)
        for _ in range(self.depth):
            left = 2 * node
            left_mass = self.nodes[left]
            go_right = mass >= left_mass
            mass = torch.where(go_right, mass - left_mass, mass)
            node = torch.where(go_right, left + 1, left)
        return node - self.n_leaves


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritized replay: ``sample`` fills ``weights`` and ``indices``;
    call :meth:`update_priorities` with the batch's |TD errors| after each gradient step."""

    def __init__(
        self,
        capacity: int,
        n_envs: int,
        obs_shape: tuple[int, ...],
        action_shape: tuple[int, ...],
        alpha: float = 0.6,
        beta: float = 0.4,
        eps: float = 1e-6,
        **kwargs: Any,
    ):
        """``kwargs``: :class:`~core_rl.common.replay.ReplayBuffer`'s other arguments."""
        super().__init__(capacity, n_envs, obs_shape, action_shape, **kwargs)
        if alpha < 0:
            raise ConfigError(f"prioritized replay alpha must be ≥ 0, got {alpha}")
        if eps <= 0:
            raise ConfigError(f"prioritized replay eps must be > 0, got {eps}")
        self.alpha, self.eps = float(alpha), float(eps)
        self.beta = float(beta)
        self.tree = SumTree(self.size_per_env * self.n_envs)
        self.max_priority = 1.0  # the largest p_i seen (before the power α)

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
        flat = p * self.n_envs + torch.arange(self.n_envs)
        self.tree.update(flat, torch.full((self.n_envs,), self.max_priority**self.alpha, dtype=torch.float64))

    def probabilities(self) -> torch.Tensor:
        """P(i) for every stored transition, in flat-index order."""
        n = len(self)
        return self.tree.leaves[:n] / self.tree.total

    def sample_indices(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self)
        if n == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        total = self.tree.total
        u = torch.rand(batch_size, generator=self.generator, dtype=torch.float64)
        mass = (torch.arange(batch_size, dtype=torch.float64) + u) * (total / batch_size)
        mass = mass.clamp_(max=total * (1.0 - 1e-12))
        flat = self.tree.find(mass).clamp_(0, n - 1)
        return flat // self.n_envs, flat % self.n_envs

    def importance_weights(self, flat: torch.Tensor) -> torch.Tensor:
        """w_i = (N P(i))^{-β} / max_j (N P(j))^{-β}; the max is over the whole buffer."""
        n = len(self)
        leaves = self.tree.leaves[:n]
        p_min = leaves.min().clamp(min=1e-300)
        w = (leaves[flat].clamp(min=1e-300) / p_min).pow(-self.beta)  # (N P_i)^-β / (N P_min)^-β
        return w.float()

    def sample(self, batch_size: int) -> ReplaySample:
        t, env = self.sample_indices(batch_size)
        batch = self.gather(t, env)
        batch.weights = self.importance_weights(t * self.n_envs + env).to(self.device)
        return batch

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        """p_i ← |δ_i| + ε for the sampled flat ``indices``."""
        priority = td_errors.detach().abs().to("cpu", torch.float64) + self.eps
        self.max_priority = max(self.max_priority, float(priority.max()))
        self.tree.update(indices.cpu(), priority.pow(self.alpha))
