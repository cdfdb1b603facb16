r"""Unconstrained PPO with the safety bookkeeping: the baseline every safe agent is compared with.

It optimizes :math:`J_r` alone, exactly :class:`~core_rl.trust_region.ppo.PPO`; the costs named by
``cost_keys`` are only measured by the cost monitor around its env (its one part,
:class:`~safety.parts.CostMonitorPart`), so its episodic cost, cost rate and violations are logged
like the constrained agents'. ``cost_limit`` is used only to count the episodes over the limit.

Example (safety/CartPole-v0, whose costs count the steps outside a safe band or over a speed cap:
PPO learns to balance, 200 steps an episode, while the costs are only measured)::

    >>> import safety  # registers the safety/ envs
    >>> from safety.evaluation import evaluate_cmdp
    >>> agent = UnconstrainedPPO("safety/CartPole-v0", {"n_envs": 8, "n_steps": 64, "seed": 0}).learn(4096)
    >>> result = evaluate_cmdp(agent, n_episodes=4)
    >>> result["mean_return"] > 100, len(result["mean_cost"]), "episode_cost" in agent.last_metrics
    (True, 1, True)
"""

from __future__ import annotations

from core_rl.trust_region.ppo import PPO, PPOConfig
from safety.cmdp import CMDPConfig
from safety.parts import CostMonitorPart


class UnconstrainedPPOConfig(CMDPConfig, PPOConfig):
    """PPO's fields and the constraints it only measures (``cost_keys``, ``cost_limit``)."""


class UnconstrainedPPO(PPO):
    """PPO that ignores the costs but logs them."""

    name = "ppo_unconstrained"
    config: UnconstrainedPPOConfig
    config_cls = UnconstrainedPPOConfig
    part_types = (CostMonitorPart,)
