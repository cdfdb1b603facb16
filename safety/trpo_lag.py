r"""TRPO-Lag: TRPO's KL-constrained natural step on the Lagrangian of the CMDP.

Each iteration takes the dual step on λ from the rollout's episodic costs (:mod:`safety.lagrangian`),

.. math:: \lambda_k \leftarrow \max\big(0,\ \lambda_k + \alpha(\hat J_{c_k} - d_k)\big),

then TRPO's step (notes 9/19) on the surrogate of the Lagrangian's advantage,

.. math::
    \max_{\theta'} \mathbb E_t\Big[\tfrac{\pi_{\theta'}(a_t|s_t)}{\pi_\theta(a_t|s_t)}
        \frac{\hat A^r_t - \sum_k\lambda_k\hat A^{c_k}_t}{1+\sum_k\lambda_k}\Big]
    \quad\text{s.t.}\quad \bar D_{KL}(\pi_{\theta'}\|\pi_\theta)\le\epsilon,

by conjugate gradient on Fisher-vector products and a backtracking line search — the natural step
of :class:`~core_rl.trust_region.natural_pg.NaturalPG` and TRPO's line search
(:func:`~core_rl.trust_region.trpo.trpo_line_search`), which see only a different advantage. The
agent holds the same components as PPO-Lag (:mod:`safety.on_policy`): the cost monitor, a cost critic
(``cost_value``) and a Lagrange multiplier (``lagrange``).
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium.vector import VectorEnv

from core_rl.common.buffers import RolloutBatch
from core_rl.trust_region.common import policy_params
from core_rl.trust_region.natural_pg import Evaluate, NaturalPG
from core_rl.trust_region.trpo import TRPOConfig, trpo_line_search
from safety.cmdp import CostMonitor
from safety.lagrangian import LagrangeMultiplier, make_multiplier
from safety.on_policy import (CostCritic, LagrangianOnPolicyConfig, cost_metrics, cost_monitor_of,
                              episode_cost_estimate, lagrangian_advantages, lambda_metrics, monitor_costs,
                              safety_metrics)


class TRPOLagConfig(LagrangianOnPolicyConfig, TRPOConfig):
    pass


class TRPOLag(NaturalPG):
    """TRPO on the Lagrangian's advantage, λ by dual ascent (or PID with ``multiplier="pid"``)."""

    name = "trpo_lag"
    config: TRPOLagConfig
    config_cls = TRPOLagConfig
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

    # ---- the dual step, TRPO's step on the Lagrangian's advantage, the cost critic's fit ---------------
    def apply_step(self, theta: torch.Tensor, full_step: torch.Tensor, expected_gain: float,
                   surrogate_old: float, evaluate: Evaluate) -> dict[str, float]:
        """TRPO's backtracking line search."""
        return trpo_line_search(policy_params(self.policy), theta, full_step, expected_gain, surrogate_old, evaluate,
                                self.config)

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
