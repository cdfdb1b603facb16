r"""Unconstrained PPO with the safety bookkeeping: the baseline every safe agent is compared with.

It optimizes :math:`J_r` alone, exactly :class:`~core_rl.trust_region.ppo.PPO`; the costs named by
``cost_keys`` are only measured by the cost monitor around its env (:func:`~safety.on_policy.monitor_costs`),
so its episodic cost, cost rate and violations are logged like the constrained agents'. ``cost_limit``
is used only to count the episodes over the limit.
"""

from __future__ import annotations

from gymnasium.vector import VectorEnv

from core_rl.trust_region.ppo import PPO, PPOConfig
from safety.cmdp import CMDPConfig, CostMonitor
from safety.on_policy import cost_monitor_of, monitor_costs, safety_metrics


class UnconstrainedPPOConfig(CMDPConfig, PPOConfig):
    pass


class UnconstrainedPPO(PPO):
    """PPO that ignores the costs but logs them."""

    name = "ppo_unconstrained"
    config: UnconstrainedPPOConfig
    config_cls = UnconstrainedPPOConfig

    def _wrap_env(self, env: VectorEnv, training: bool) -> VectorEnv:
        return monitor_costs(super()._wrap_env(env, training), self.config)

    @property
    def cost_monitor(self) -> CostMonitor:
        return cost_monitor_of(self.env)

    @property
    def mean_episode_cost(self) -> float:
        """Mean episodic cost (first constraint) of the last 100 finished training episodes."""
        return float(self.cost_monitor.mean_episode_cost[0])

    def _iterate(self) -> dict[str, float]:
        return safety_metrics(super()._iterate(), self.cost_monitor)
