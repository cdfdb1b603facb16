"""safety: constrained MDPs and safe-exploration agents (issue 8), built on core_rl's PG/TRPO/PPO core.

Importing the package registers its CMDP tasks with gymnasium (``safety/PointGoal-v0``,
``safety/CartPole-v0``, ``safety/HazardGrid-v0``, ``safety/Recommender-v0``; see :mod:`safety.envs`). The pieces:

* :mod:`safety.cmdp` — the CMDP interface: constraints (``cost_keys``, ``cost_limit``) on the
  per-step ``info["cost"]`` of any gymnasium vector env, and the :class:`CostMonitor` that reads
  them and keeps the safety metrics;
* :mod:`safety.lagrangian` and :mod:`safety.on_policy` — the components an agent is composed of
  instead of inheriting them: Lagrange multipliers (dual ascent / PID on λ), the cost critic (cost
  values, GAE on costs, its fit); :mod:`safety.parts` — them and the cost monitor as the agent's
  parts (:mod:`core_rl.common.parts`), which the base classes call;
* agents, one per module: ``ppo_lag`` (PPO-Lag, PID-Lag), ``trpo_lag``, ``cpo``, ``saute``,
  ``shield``, ``sac_lag``, ``model_based`` (SafeMPC), ``unconstrained`` (the PPO baseline), all in
  ``core_rl.registry``;
* :mod:`safety.tabular` — the exact CMDP LP over occupancy measures and its Lagrangian solution;
* :mod:`safety.evaluation` — return and costs of fresh evaluation episodes for any agent.

Agents import lazily, so ``import safety`` stays light (numpy, gymnasium, pydantic, torch).
"""

from safety.cmdp import CMDPConfig, CostKeyError, CostMonitor, read_costs
from safety.envs import TASKS, register_envs

__all__ = ["CMDPConfig", "CostKeyError", "CostMonitor", "read_costs", "TASKS", "register_envs"]
