r"""The parts a safe agent is composed of (:class:`~core_rl.common.parts.Part`): its base algorithm
calls them, so an agent only declares them (``_make_parts``) and overrides no hook for them.

* :class:`CostMonitorPart` — the **cost monitor** (:class:`~safety.cmdp.CostMonitor`) around the env:
  it reads every step's cost vector :math:`c_t\in\mathbb R^K` from the env's infos and keeps the
  safety metrics (episodic cost, cost rate over all training steps, cumulative cost, violation
  steps, episodes over the limit), added to every iteration's metrics. Every safe agent has one,
  first, so that the other parts' wrappers see its costs.
* :class:`CostCriticPart` — the **cost value function** :math:`V^c_\psi` of an on-policy agent
  (:class:`~safety.on_policy.CostCritic`): the monitor's record of the rollout's costs goes into the
  rollout batch (the base class's rollout is reused unchanged), the cost advantages are estimated by
  GAE on costs,

  .. math::
      \delta^c_t = c_t + \gamma_c V^c_\psi(s_{t+1}) - V^c_\psi(s_t),\qquad
      \hat A^c_t = \sum_{l\ge0}(\gamma_c\lambda_c)^l\delta^c_{t+l}

  (λ_c = ``cost_gae_lambda``, by default the agent's GAE λ), and after the policy's update
  :math:`V^c_\psi` is fitted on the cost returns :math:`\hat A^c_t + V^c_\psi(s_t)`.
* :class:`LagrangianPart` — the **Lagrange multiplier** (dual ascent, or the PID Lagrangian, by the
  config's ``multiplier``; :mod:`safety.lagrangian`): before the policy's update, the dual step on λ
  from the rollout's episodic costs, then the advantage the update sees becomes the Lagrangian's,
  :math:`(\hat A^r - \sum_k\lambda_k\hat A^{c_k})/(1+\sum_k\lambda_k)`. Needs the cost critic part.

PPO-Lag is PPO with the three, TRPO-Lag TRPO's natural step with the three, CPO TRPO's machinery with
the monitor and the cost critic (and its own step), and the unconstrained baseline, Saute, SAC-Lag
and SafeMPC hold the monitor. A checkpoint keeps the cost critic as ``cost_value`` and λ as ``lagrange``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from gymnasium.vector import VectorEnv
from torch import nn

from core_rl.common.buffers import RolloutBatch
from core_rl.common.errors import EnvError
from core_rl.common.parts import Metrics, Part
from safety.cmdp import CMDPConfig, CostMonitor
from safety.lagrangian import LagrangeMultiplier, make_multiplier
from safety.on_policy import (
    CostCritic,
    LagrangianOnPolicyConfig,
    SafeOnPolicyConfig,
    cost_metrics,
    episode_cost_estimate,
    lagrangian_advantages,
    lambda_metrics,
)

if TYPE_CHECKING:
    from core_rl.common.base import Agent
    from core_rl.common.on_policy import OnPolicyAgent


class CostMonitorPart(Part):
    """The :class:`CostMonitor` of the config's constraints around the env; its training env's monitor
    is :attr:`monitor`, whose safety metrics join every iteration's."""

    config: CMDPConfig

    def __init__(self, config: CMDPConfig):
        super().__init__(config)
        self._monitor: CostMonitor | None = None

    def wrap_env(self, env: VectorEnv, training: bool) -> VectorEnv:
        monitor = CostMonitor(env, self.config.cost_keys, self.config.limits)
        if training:
            self._monitor = monitor
        return monitor

    @property
    def monitor(self) -> CostMonitor:
        """The cost monitor around the training env."""
        if self._monitor is None:
            raise EnvError("the agent's training env has no CostMonitor yet (the part wraps it in __init__)")
        return self._monitor

    @property
    def mean_episode_cost(self) -> float:
        """Mean episodic cost (first constraint) of the last 100 finished training episodes."""
        return float(self.monitor.mean_episode_cost[0])

    def iteration_metrics(self, agent: "Agent", metrics: Metrics) -> Metrics:
        metrics.update(self.monitor.metrics())
        return metrics

    def state(self) -> dict[str, Any]:
        """The training monitor's bookkeeping (:meth:`CostMonitor.state`): a resumed run keeps its
        cumulative cost, its counts and its last episodes' costs."""
        return self.monitor.state() if self._monitor is not None else {}

    def load_state(self, state: dict[str, Any]) -> None:
        if state and self._monitor is not None:
            self._monitor.load_state(state)


class CostCriticPart(Part):
    r"""The cost critic :math:`V^c_\psi` of an on-policy agent: the rollout's costs into the batch, GAE on
    costs after the agent's estimate, the regression after its update (needs a :class:`CostMonitorPart`)."""

    config: SafeOnPolicyConfig
    critic: CostCritic

    def build(self, agent: "Agent") -> None:
        gae_lambda = self.config.cost_gae_lambda  # λ_c, else the agent's λ
        if gae_lambda is None:
            gae_lambda = getattr(agent.config, "gae_lambda", 1.0)
        self.critic = CostCritic(agent.observation_space, self.config, float(gae_lambda)).to(agent.device)
        self._monitor_part = agent.part(CostMonitorPart)

    def rollout_begin(self, agent: "OnPolicyAgent") -> None:
        self._monitor_part.monitor.begin_rollout()

    def rollout_batch(self, agent: "OnPolicyAgent", batch: RolloutBatch) -> RolloutBatch:
        alive = ~agent._episode_start if agent.collect_mode == "episodes" else None
        return self.critic.attach(batch, self._monitor_part.monitor.end_rollout(), agent._obs_tensor, agent._obs, alive)

    def estimate(self, agent: "OnPolicyAgent", batch: RolloutBatch) -> RolloutBatch:
        return self.critic.estimate(batch)

    def after_update(self, agent: "OnPolicyAgent", batch: RolloutBatch) -> Metrics:
        return cost_metrics(batch, self.critic.fit(batch, agent._clip_and_step))

    def modules(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        return {"cost_value": self.critic}


class LagrangianPart(Part):
    """λ (:attr:`multiplier`, plain or PID by the config's ``multiplier``): the dual step and the
    Lagrangian's advantage before the agent's update, λ among the update's metrics."""

    config: LagrangianOnPolicyConfig
    multiplier: LagrangeMultiplier

    def build(self, agent: "Agent") -> None:
        self.multiplier = make_multiplier(self.config, torch.as_tensor(self.config.targets))  # d − m
        self._monitor_part = agent.part(CostMonitorPart)

    def before_update(self, agent: "OnPolicyAgent", batch: RolloutBatch) -> Metrics:
        cfg = self.config
        lam = self.multiplier.update(torch.as_tensor(episode_cost_estimate(batch, self._monitor_part.monitor)))
        batch.advantages = lagrangian_advantages(
            batch, lam, agent.config.normalize_advantage, cfg.normalize_cost_advantage
        )
        return lambda_metrics(lam, cfg.cost_keys)

    def modules(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        return {"lagrange": self.multiplier}


#: the parts of an on-policy Lagrangian agent (PPO-Lag, TRPO-Lag): the monitor, the cost critic, λ
LAGRANGIAN_PARTS: tuple[type[Part], ...] = (CostMonitorPart, CostCriticPart, LagrangianPart)

__all__ = ["LAGRANGIAN_PARTS", "CostCriticPart", "CostMonitorPart", "LagrangianPart"]
