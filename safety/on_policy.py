r"""The components every safe on-policy agent is assembled from (by composition, not inheritance), and
the functions of the notes they apply; :mod:`safety.parts` holds them as the agent's parts, which
the base classes call (:mod:`core_rl.common.parts`). The costs travel in the rollout batch itself
(:class:`~core_rl.common.buffers.RolloutBatch`'s cost fields) and in the replay buffer (``n_costs``),
never through attributes set by one method for another.

* The **cost critic** (:class:`CostCritic`) :math:`V^c_\psi` attaches the costs of the very same
  ``env.step`` calls, as recorded by the cost monitor (:class:`~safety.cmdp.CostMonitor`), to a
  rollout batch, estimates the cost advantages by GAE on costs,

  .. math::
      \delta^c_t = c_t + \gamma_c V^c_\psi(s_{t+1}) - V^c_\psi(s_t),\qquad
      \hat A^c_t = \sum_{l\ge0}(\gamma_c\lambda)^l\delta^c_{t+l},

  (the truncated episodes' :math:`\gamma_c V^c_\psi(s_{final})` folded into the cost, as the base
  class does for rewards), and fits :math:`V^c_\psi` on the cost returns :math:`\hat A^c_t + V^c_\psi(s_t)`.
* The **Lagrange multiplier** (:class:`~safety.lagrangian.LagrangeMultiplier` or its PID form, chosen
  by the config's ``multiplier``) takes the dual step on λ from the rollout's episodic costs
  (:func:`episode_cost_estimate`); the parent's policy update then sees the Lagrangian's advantage
  :math:`(\hat A^r - \sum_k\lambda_k\hat A^{c_k})/(1+\sum_k\lambda_k)` (:func:`lagrangian_advantages`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv, VectorWrapper
from pydantic import Field

from core_rl.common import returns as R
from core_rl.common.buffers import RolloutBatch
from core_rl.common.optim import l2_penalty
from safety.cmdp import CMDPConfig, CostMonitor
from safety.lagrangian import CostValueFunction, LagrangianConfig, lagrangian_advantage

#: the base class's ``_clip_and_step(loss, optimizer)``: one clipped optimizer step
ClipAndStep = Callable[[torch.Tensor, torch.optim.Optimizer], Any]
#: what ``CostMonitor.end_rollout()`` returns: costs [T, N, K], truncated steps' final obs, episode costs [E, K]
CostRollout = tuple[np.ndarray, list[tuple[int, np.ndarray, np.ndarray]], np.ndarray]


class SafeOnPolicyConfig(CMDPConfig):
    cost_critic_lr: float = Field(1e-3, gt=0.0, description="Learning rate of the cost critic's Adam.")
    cost_critic_epochs: int = Field(5, ge=1, description="Cost critic regression epochs per iteration.")
    cost_critic_batch_size: int = Field(128, ge=1, description="Cost critic regression minibatch size.")
    cost_critic_l2: float = Field(
        0.0,
        ge=0.0,
        description="c of the L2 penalty c·Σ_ψ ‖ψ‖² added to the cost critic's regression loss (OmniSafe's "
        "critic_norm_coef, 0.001 in its configs); 0: none.",
    )
    cost_gae_lambda: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="λ_c of GAE on costs, Â^c_t = Σ_l (γ_c λ_c)^l δ^c_{t+l} (None: the agent's gae_lambda). "
        "A lower λ_c leans on the cost critic: less variance of Â^c (and of the cost gradient b) where costs "
        "are sparse, more bias where the critic is wrong.",
    )


class LagrangianOnPolicyConfig(LagrangianConfig, SafeOnPolicyConfig):
    normalize_cost_advantage: bool | Literal["center"] = Field(
        True,
        description="True: standardize Â^c over the batch, (Â^c − mean) / std, before combining it with the "
        "(standardized) Â^r; 'center': only subtract the mean (OmniSafe's standardized_cost_adv), so that the "
        "cost term's weight λ·std(Â^c) shrinks as costs get rare; False: Â^c as it is.",
    )


# ---- env wrappers --------------------------------------------------------------------------------
def find_wrapper(env: VectorEnv, cls: type) -> Any:
    """The first wrapper of type ``cls`` in a chain of vector wrappers (or None)."""
    while True:
        if isinstance(env, cls):
            return env
        if not isinstance(env, VectorWrapper):
            return None
        env = env.env


# ---- the cost critic -----------------------------------------------------------------------------
def standardize(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """(x − mean) / std along ``dim`` (just centred where there is a single sample)."""
    if x.shape[dim] <= 1:
        return x - x.mean(dim, keepdim=True)
    return (x - x.mean(dim, keepdim=True)) / (x.std(dim, keepdim=True) + 1e-8)


class CostCritic(CostValueFunction):
    r""":math:`V^{c_k}_\psi(s)` (``forward``: ``[B, K]``) with what an on-policy agent does with it:
    :meth:`attach` the rollout's costs and cost values to a batch, :meth:`estimate` GAE on costs,
    :meth:`fit` the regression on the cost returns. Its Adam optimizer is part of its state dict
    (``get_extra_state``), so checkpoints keep both."""

    def __init__(self, obs_space: gym.Space, config: SafeOnPolicyConfig, gae_lambda: float):
        super().__init__(obs_space, config.n_constraints, config.hidden_sizes, config.activation)
        self.gamma_c, self.gae_lambda = float(config.gamma_c), float(gae_lambda)
        self.epochs, self.batch_size = config.cost_critic_epochs, config.cost_critic_batch_size
        self.l2 = float(config.cost_critic_l2)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=config.cost_critic_lr, eps=1e-5)

    def get_extra_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])

    @torch.no_grad()
    def attach(
        self,
        batch: RolloutBatch,
        rollout: CostRollout,
        encode: Callable[[np.ndarray], torch.Tensor],
        next_obs: np.ndarray,
        next_alive: np.ndarray | None = None,
    ) -> RolloutBatch:
        """Fill ``batch``'s ``costs``, ``cost_values``, ``last_cost_value`` and ``episode_costs`` from the
        monitor's record of the rollout. ``encode`` turns raw observations into the policy's inputs;
        ``next_obs`` are the observations after the last step, ``next_alive`` (whole-episode
        collection) masks the envs whose episode ended there."""
        costs_np, bootstrap, finished = rollout
        T, N = batch.rewards.shape[:2]
        device = batch.rewards.device
        costs = torch.as_tensor(costs_np, dtype=torch.float32, device=device)
        cost_values = self(batch.obs.reshape(T * N, *batch.obs.shape[2:])).reshape(T, N, -1)
        if bootstrap:  # truncated episodes: c_t += γ_c V^c(s_final), one batched forward pass
            final_obs = np.concatenate([obs for _, _, obs in bootstrap], 0)
            t_idx = np.concatenate([np.full(len(idx), t) for t, idx, _ in bootstrap])
            e_idx = np.concatenate([idx for _, idx, _ in bootstrap])
            costs[t_idx, e_idx] += self.gamma_c * self(encode(final_obs))
        last = self(encode(next_obs))
        if next_alive is not None:
            last = last * torch.as_tensor(next_alive, dtype=last.dtype, device=last.device)[:, None]
        batch.costs, batch.cost_values, batch.last_cost_value = costs, cost_values, last.float()
        batch.episode_costs = finished
        return batch

    def estimate(self, batch: RolloutBatch) -> RolloutBatch:
        """Fill ``batch.cost_advantages`` (GAE(λ) on costs, per env and constraint) and ``batch.cost_returns``."""
        if batch.costs is None or batch.cost_values is None or batch.last_cost_value is None:
            raise ValueError("the batch has no costs: attach() them before estimate()")
        T, N, K = batch.costs.shape
        dones = batch.dones[:, :, None].expand(T, N, K).reshape(T, N * K)
        adv = R.gae(
            batch.costs.reshape(T, N * K),
            batch.cost_values.reshape(T, N * K),
            dones,
            batch.last_cost_value.reshape(N * K),
            self.gamma_c,
            self.gae_lambda,
        )
        batch.cost_advantages = adv.reshape(T, N, K)
        batch.cost_returns = batch.cost_advantages + batch.cost_values
        return batch

    def fit(self, batch: RolloutBatch, clip_and_step: ClipAndStep) -> float:
        """Minibatch Adam regression of V^c_ψ(s_t) on the batch's cost returns (valid steps), plus
        c·Σ‖ψ‖² (``cost_critic_l2`` = c); mean squared error."""
        if batch.cost_returns is None:
            raise ValueError("the batch has no cost returns: estimate() them before fit()")
        obs, cost_returns = batch.masked(batch.obs), batch.masked(batch.cost_returns)
        n = obs.shape[0]
        total, count = 0.0, 0
        for _ in range(self.epochs):
            perm = torch.randperm(n)
            for start in range(0, n, self.batch_size):
                idx = perm[start : start + self.batch_size]
                loss = (self(obs[idx]) - cost_returns[idx]).pow(2).mean()
                clip_and_step(loss + l2_penalty(self, self.l2), self.optimizer)
                total += loss.item()
                count += 1
        return total / max(count, 1)


def cost_metrics(batch: RolloutBatch, cost_value_loss: float) -> dict[str, float]:
    """The cost critic's loss and the mean episodic cost (first constraint) of the rollout's finished episodes."""
    metrics = {"cost_value_loss": cost_value_loss}
    if batch.episode_costs is not None and len(batch.episode_costs):
        metrics["rollout_episode_cost"] = float(batch.episode_costs[:, 0].mean())
    return metrics


# ---- the Lagrangian ------------------------------------------------------------------------------
def episode_cost_estimate(batch: RolloutBatch, monitor: CostMonitor) -> np.ndarray:
    """Ĵ_c ``[K]``: the mean cost of the episodes that finished in this rollout (else of the monitor's
    last 100; nan if none)."""
    if batch.episode_costs is not None and len(batch.episode_costs):
        return batch.episode_costs.mean(0)
    return monitor.mean_episode_cost


def lagrangian_advantages(
    batch: RolloutBatch, lam: torch.Tensor, normalize_reward: bool, normalize_cost: bool | Literal["center"]
) -> torch.Tensor:
    r"""The Lagrangian's advantage ``[T, N]``, :math:`(\hat A^r - \sum_k\lambda_k\hat A^{c_k})/(1+\sum_k\lambda_k)`,
    each advantage first standardized over the batch's valid steps if asked (the cost's only centred with
    ``normalize_cost="center"``)."""
    if batch.advantages is None or batch.cost_advantages is None:
        raise ValueError("the batch has no advantages: estimate() them first")
    valid = batch.valid.bool()
    adv_r, adv_c = batch.advantages, batch.cost_advantages
    if normalize_reward:
        adv_r = torch.zeros_like(adv_r).masked_scatter(valid, standardize(adv_r[valid]))
    if normalize_cost:
        rows = adv_c[valid]
        rows = rows - rows.mean(0, keepdim=True) if normalize_cost == "center" else standardize(rows)
        adv_c = torch.zeros_like(adv_c).masked_scatter(valid[..., None].expand_as(adv_c), rows)
    return lagrangian_advantage(adv_r, adv_c, lam.float().to(adv_r.device))


def lambda_metrics(lam: torch.Tensor, cost_keys: tuple[str, ...]) -> dict[str, float]:
    """``lambda`` (first constraint) and, with several constraints, ``lambda/<cost key>``."""
    metrics = {"lambda": float(lam[0])}
    if len(cost_keys) > 1:
        metrics.update({f"lambda/{k}": float(v) for k, v in zip(cost_keys, lam)})
    return metrics
