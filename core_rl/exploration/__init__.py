"""Exploration (notes 10/17–10/19): optimism (count and pseudo-count bonuses), Thompson sampling
(bootstrapped DQN), information gain (ensemble disagreement), and hard-exploration envs.

* :mod:`.envs` — ``explore/Chain-v0`` (chain MDP with a distractor), ``explore/ChainThermometer-v0``,
  ``explore/ChainRandomActions-v0`` (the right-moving action drawn per state), ``explore/SparseGrid-v0``;
  importing this package registers them;
* :mod:`.bonus` — counters (exact, SimHash, density pseudo-count), the disagreement bonus, the
  vector-env wrapper that adds any of them to the reward, and the agent mixin;
* :mod:`.agents` — ``bonus_dqn``, ``bonus_ppo``, ``bonus_a2c``;
* :mod:`.bootstrapped_dqn` — ``bootstrapped_dqn``;
* :mod:`.experiments` — ε-greedy vs bonuses vs Thompson sampling on the chain: success rates and
  steps to the goal over seeds, plotted.
"""

from core_rl.exploration import envs as _envs  # noqa: F401  (registers the env ids)
