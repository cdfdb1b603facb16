r"""PPO-Lag and PID-Lag: PPO on the Lagrangian of the CMDP (Ray, Achiam & Amodei 2019; Stooke et al. 2020).

The CMDP :math:`\max_\theta J_r(\theta)\ \text{s.t.}\ J_{c_k}(\theta)\le d_k` becomes the saddle
point problem :math:`\max_\theta\min_{\lambda\ge0} J_r - \sum_k\lambda_k(J_{c_k}-d_k)`, solved by dual
gradient descent (notes 9/19): each iteration

1. the dual step on the rollout's episodic costs,
   :math:`\lambda_k \leftarrow \max(0, \lambda_k + \alpha(\hat J_{c_k} - d_k))` (``multiplier="dual_ascent"``)
   or the PID Lagrangian's :math:`\lambda_k = (K_P e + K_I\!\int\! e + K_D\,\dot{\bar J}_c)^+` (``"pid"``);
2. the primal step, PPO's clipped surrogate (9/19) on the Lagrangian's advantage

   .. math::
       \hat A_t = \frac{\hat A^r_t - \sum_k\lambda_k\hat A^{c_k}_t}{1 + \sum_k\lambda_k},\qquad
       L^{CLIP}(\theta') = \mathbb E_t\big[\min(\rho_t\hat A_t,\ \mathrm{clip}(\rho_t,1-\epsilon,1+\epsilon)\hat A_t)\big],

with :math:`\hat A^{c}` GAE on costs from the cost critic. The agent is
:class:`~core_rl.trust_region.ppo.PPO` holding three components (:mod:`safety.on_policy`): the cost
monitor around its env, a cost critic (``cost_value``) and a Lagrange multiplier (``lagrange``, plain
or PID by the config's ``multiplier``); everything but the advantage is PPO's.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from gymnasium.vector import VectorEnv

from core_rl.common.buffers import RolloutBatch
from core_rl.trust_region.ppo import PPO, PPOConfig
from safety.cmdp import CostMonitor
from safety.lagrangian import LagrangeMultiplier, make_multiplier
from safety.on_policy import (CostCritic, LagrangianOnPolicyConfig, cost_metrics, cost_monitor_of,
                              episode_cost_estimate, lagrangian_advantages, lambda_metrics, monitor_costs,
                              safety_metrics)


class PPOLagConfig(LagrangianOnPolicyConfig, PPOConfig):
    pass


class PPOLag(PPO):
    """PPO on the Lagrangian's advantage, λ by dual ascent (``PPOLag(env, cost_limit=25).learn(steps)``)."""

    name = "ppo_lag"
    config: PPOLagConfig
    config_cls = PPOLagConfig
    cost_value: CostCritic
    lagrange: LagrangeMultiplier

    def _wrap_env(self, env: VectorEnv, training: bool) -> VectorEnv:
        return monitor_costs(super()._wrap_env(env, training), self.config)

    def _build(self) -> None:
        super()._build()
        self.cost_value = CostCritic(self.observation_space, self.config, self.config.gae_lambda).to(self.device)
        self.lagrange = make_multiplier(self.config, torch.as_tensor(self.config.limits))

    @property
    def cost_monitor(self) -> CostMonitor:
        return cost_monitor_of(self.env)

    @property
    def mean_episode_cost(self) -> float:
        """Mean episodic cost (first constraint) of the last 100 finished training episodes."""
        return float(self.cost_monitor.mean_episode_cost[0])

    # ---- the rollout carries the costs ----------------------------------------------------------
    def _rollout_begin(self, episode_start: np.ndarray) -> None:
        super()._rollout_begin(episode_start)
        self.cost_monitor.begin_rollout()

    def _make_rollout_batch(self, **fields: torch.Tensor) -> RolloutBatch:
        alive = ~self._episode_start if self.collect_mode == "episodes" else None
        return self.cost_value.attach(super()._make_rollout_batch(**fields), self.cost_monitor.end_rollout(),
                                      self._obs_tensor, self._obs, alive)

    def estimate(self, batch: RolloutBatch) -> RolloutBatch:
        return self.cost_value.estimate(super().estimate(batch))

    # ---- the dual step, PPO's step on the Lagrangian's advantage, the cost critic's fit ----------------
    def update(self, batch: RolloutBatch) -> dict[str, float]:
        cfg = self.config
        lam = self.lagrange.update(torch.as_tensor(episode_cost_estimate(batch, self.cost_monitor)))
        batch.advantages = lagrangian_advantages(batch, lam, cfg.normalize_advantage, cfg.normalize_cost_advantage)
        metrics = super().update(batch)
        metrics.update(lambda_metrics(lam, cfg.cost_keys))
        metrics.update(cost_metrics(batch, self.cost_value.fit(batch, self._clip_and_step)))
        return metrics

    def _iterate(self) -> dict[str, float]:
        return safety_metrics(super()._iterate(), self.cost_monitor)


class PIDLagConfig(PPOLagConfig):
    multiplier: Literal["dual_ascent", "pid"] = "pid"


class PIDLag(PPOLag):
    """PPO-Lag whose λ follows the PID Lagrangian (less overshoot and oscillation of the cost): only
    the config's default ``multiplier`` differs."""

    name = "pid_lag"
    config: PIDLagConfig
    config_cls = PIDLagConfig
