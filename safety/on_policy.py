r"""What every on-policy safe agent shares, as mixins over :class:`~core_rl.common.on_policy.OnPolicyAgent`.

* :class:`CostTrackingMixin` wraps the training env in a :class:`~safety.cmdp.CostMonitor` and adds
  its metrics to every iteration's (episodic cost, cost rate over all training steps, cumulative
  cost, violation steps, episodes over the limit).
* :class:`SafeOnPolicyMixin` also collects each step's cost vector :math:`c_t\in\mathbb R^K` beside
  the reward — the base class's rollout is reused unchanged, the monitor records the costs of the
  very same ``env.step`` calls — and estimates, with a cost critic :math:`V^c_\psi`, the cost
  advantages by GAE on costs,

  .. math::
      \delta^c_t = c_t + \gamma_c V^c_\psi(s_{t+1}) - V^c_\psi(s_t),\qquad
      \hat A^c_t = \sum_{l\ge0}(\gamma_c\lambda)^l\delta^c_{t+l},

  (the truncated episodes' :math:`\gamma_c V^c_\psi(s_{final})` folded into the cost, as the base
  class does for rewards), then fits :math:`V^c_\psi` on the cost returns
  :math:`\hat A^c_t + V^c_\psi(s_t)`. The policy update itself is the parent algorithm's
  (:meth:`SafeOnPolicyMixin.policy_update`), so CPO on TRPO only changes how the step is chosen.
* :class:`LagrangianMixin` turns any such agent into its Lagrangian version: before each policy
  update it takes the dual step on λ from the episodic costs of the rollout
  (:mod:`safety.lagrangian`), then hands the parent update the Lagrangian's advantage
  :math:`(\hat A^r - \sum_k\lambda_k\hat A^{c_k})/(1+\sum_k\lambda_k)`. PPO-Lag is
  ``LagrangianMixin + PPO``, TRPO-Lag ``LagrangianMixin + TRPO``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from gymnasium.vector import VectorEnv, VectorWrapper
from pydantic import Field

from core_rl.common import returns as R
from core_rl.common.buffers import RolloutBatch
from safety.cmdp import CMDPConfig, CostMonitor
from safety.lagrangian import CostValueFunction, LagrangeMultiplier, LagrangianConfig, lagrangian_advantage, \
    make_multiplier


class SafeOnPolicyConfig(CMDPConfig):
    cost_critic_lr: float = Field(1e-3, gt=0.0, description="Learning rate of the cost critic's Adam.")
    cost_critic_epochs: int = Field(5, ge=1, description="Cost critic regression epochs per iteration.")
    cost_critic_batch_size: int = Field(128, ge=1, description="Cost critic regression minibatch size.")


class LagrangianOnPolicyConfig(LagrangianConfig, SafeOnPolicyConfig):
    normalize_cost_advantage: bool = Field(
        True, description="Standardize Â^c over the batch before combining it with the (standardized) Â^r.")


@dataclass
class SafeRolloutBatch(RolloutBatch):
    """A rollout with costs: ``costs``, ``cost_values``, ``cost_advantages``, ``cost_returns`` are
    ``[T, N, K]``, ``last_cost_value`` ``[N, K]``; ``episode_costs`` ``[E, K]`` are the episodes
    that finished during the rollout."""

    costs: torch.Tensor | None = None
    cost_values: torch.Tensor | None = None
    last_cost_value: torch.Tensor | None = None
    cost_advantages: torch.Tensor | None = None
    cost_returns: torch.Tensor | None = None
    episode_costs: np.ndarray | None = None

    def masked(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, N, ...]`` → the valid steps, ``[B, ...]``, in the order of :meth:`flat`."""
        return x.reshape(-1, *x.shape[2:])[self.valid.reshape(-1).bool()]


def find_wrapper(env: VectorEnv, cls: type) -> Any:
    """The first wrapper of type ``cls`` in a chain of vector wrappers (or None)."""
    while True:
        if isinstance(env, cls):
            return env
        if not isinstance(env, VectorWrapper):
            return None
        env = env.env


def standardize(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """(x − mean) / std along ``dim`` (just centred where there is a single sample)."""
    if x.shape[dim] <= 1:
        return x - x.mean(dim, keepdim=True)
    return (x - x.mean(dim, keepdim=True)) / (x.std(dim, keepdim=True) + 1e-8)


class CostTrackingMixin:
    """Wraps the env in a :class:`CostMonitor` and logs its safety metrics every iteration."""

    config: CMDPConfig

    def _wrap_env(self, env: VectorEnv, training: bool) -> VectorEnv:
        env = super()._wrap_env(env, training)  # type: ignore[misc]
        return CostMonitor(env, self.config.cost_keys, self.config.limits)

    @property
    def cost_monitor(self) -> CostMonitor:
        return find_wrapper(self.env, CostMonitor)  # type: ignore[attr-defined]

    @property
    def mean_episode_cost(self) -> float:
        """Mean episodic cost (first constraint) of the last 100 finished training episodes."""
        return float(self.cost_monitor.mean_episode_cost[0])

    def _iterate(self) -> dict[str, float]:
        metrics = super()._iterate()  # type: ignore[misc]
        metrics.update(self.cost_monitor.metrics())
        return metrics


class SafeOnPolicyMixin(CostTrackingMixin):
    """Cost collection, cost critic and cost GAE for an :class:`OnPolicyAgent`."""

    config: SafeOnPolicyConfig

    def _build(self) -> None:
        super()._build()  # type: ignore[misc]
        cfg = self.config
        self.cost_value = CostValueFunction(self.observation_space, cfg.n_constraints, cfg.hidden_sizes,  # type: ignore[attr-defined]
                                            cfg.activation).to(self.device)  # type: ignore[attr-defined]
        self.cost_optimizer = torch.optim.Adam(self.cost_value.parameters(), lr=cfg.cost_critic_lr, eps=1e-5)

    # ---- sampling ------------------------------------------------------------------------------
    @torch.no_grad()
    def collect(self) -> SafeRolloutBatch:
        monitor = self.cost_monitor
        monitor.begin_rollout()
        try:
            batch = super().collect()  # type: ignore[misc]
        finally:
            costs_np, bootstrap, finished = monitor.end_rollout()
        T, N = batch.rewards.shape[:2]
        K = self.config.n_constraints
        costs = torch.as_tensor(costs_np, dtype=torch.float32, device=self.device)
        cost_values = self.cost_value(batch.obs.reshape(T * N, *batch.obs.shape[2:])).reshape(T, N, K)
        if bootstrap:  # truncated episodes: c_t += γ_c V^c(s_final), one batched forward pass
            final_obs = np.concatenate([obs for _, _, obs in bootstrap], 0)
            t_idx = np.concatenate([np.full(len(idx), t) for t, idx, _ in bootstrap])
            e_idx = np.concatenate([idx for _, idx, _ in bootstrap])
            costs[t_idx, e_idx] += self.config.gamma_c * self.cost_value(self._obs_tensor(final_obs))  # type: ignore[attr-defined]
        last = self.cost_value(self._obs_tensor(self._obs))  # type: ignore[attr-defined]
        if self.collect_mode == "episodes":  # type: ignore[attr-defined]
            last = last * torch.as_tensor(~self._episode_start, dtype=last.dtype, device=self.device)[:, None]  # type: ignore[attr-defined]
        base = {f.name: getattr(batch, f.name) for f in fields(RolloutBatch)}
        return SafeRolloutBatch(**base, costs=costs, cost_values=cost_values, last_cost_value=last.float(),
                                episode_costs=finished)

    # ---- estimation ----------------------------------------------------------------------------
    def estimate(self, batch: SafeRolloutBatch) -> SafeRolloutBatch:  # type: ignore[override]
        batch = super().estimate(batch)  # type: ignore[misc]
        T, N, K = batch.costs.shape
        dones = batch.dones[:, :, None].expand(T, N, K).reshape(T, N * K)
        adv = R.gae(batch.costs.reshape(T, N * K), batch.cost_values.reshape(T, N * K), dones,
                    batch.last_cost_value.reshape(N * K), self.config.gamma_c, self.config.gae_lambda)  # type: ignore[attr-defined]
        batch.cost_advantages = adv.reshape(T, N, K)
        batch.cost_returns = batch.cost_advantages + batch.cost_values
        return batch

    # ---- update --------------------------------------------------------------------------------
    def policy_update(self, batch: SafeRolloutBatch) -> dict[str, float]:
        """The parent algorithm's update (PPO's, TRPO's, ...)."""
        return super().update(batch)  # type: ignore[misc]

    def update(self, batch: SafeRolloutBatch) -> dict[str, float]:
        self._cost_obs = batch.masked(batch.obs)
        self._cost_advantages = batch.masked(batch.cost_advantages)
        metrics = self.policy_update(batch)
        metrics["cost_value_loss"] = self.fit_cost_critic(self._cost_obs, batch.masked(batch.cost_returns))
        if batch.episode_costs is not None and len(batch.episode_costs):
            metrics["rollout_episode_cost"] = float(batch.episode_costs[:, 0].mean())
        return metrics

    def fit_cost_critic(self, obs: torch.Tensor, cost_returns: torch.Tensor) -> float:
        """Minibatch Adam regression of V^c_ψ(s_t) on the cost returns; mean loss."""
        cfg = self.config
        n = obs.shape[0]
        total, count = 0.0, 0
        for _ in range(cfg.cost_critic_epochs):
            perm = torch.randperm(n)
            for start in range(0, n, cfg.cost_critic_batch_size):
                idx = perm[start:start + cfg.cost_critic_batch_size]
                loss = (self.cost_value(obs[idx]) - cost_returns[idx]).pow(2).mean()
                self._clip_and_step(loss, self.cost_optimizer)  # type: ignore[attr-defined]
                total += loss.item()
                count += 1
        return total / max(count, 1)


class LagrangianMixin(SafeOnPolicyMixin):
    """Dual ascent (or PID) on λ, and the parent's policy update on the Lagrangian's advantage."""

    config: LagrangianOnPolicyConfig
    lagrange: LagrangeMultiplier

    def _build(self) -> None:
        super()._build()
        self.lagrange = make_multiplier(self.config, torch.as_tensor(self.config.limits))

    def episode_cost_estimate(self, batch: SafeRolloutBatch) -> np.ndarray:
        """Ĵ_c: the mean cost of the episodes that finished in this rollout (else of the last 100; nan if none)."""
        if batch.episode_costs is not None and len(batch.episode_costs):
            return batch.episode_costs.mean(0)
        return self.cost_monitor.mean_episode_cost

    def policy_update(self, batch: SafeRolloutBatch) -> dict[str, float]:
        cfg = self.config
        lam = self.lagrange.update(torch.as_tensor(self.episode_cost_estimate(batch)))
        valid = batch.valid.bool()
        adv_r, adv_c = batch.advantages, batch.cost_advantages
        if cfg.normalize_advantage:  # type: ignore[attr-defined]
            adv_r = torch.zeros_like(adv_r).masked_scatter(valid, standardize(adv_r[valid]))
        if cfg.normalize_cost_advantage:
            adv_c = torch.zeros_like(adv_c).masked_scatter(valid[..., None].expand_as(adv_c),
                                                           standardize(adv_c[valid]))
        batch.advantages = lagrangian_advantage(adv_r, adv_c, lam.float().to(adv_r.device))
        metrics = super().policy_update(batch)
        metrics["lambda"] = float(lam[0])
        if cfg.n_constraints > 1:
            metrics.update({f"lambda/{k}": float(v) for k, v in zip(cfg.cost_keys, lam)})
        return metrics
