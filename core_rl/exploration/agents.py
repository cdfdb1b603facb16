r"""Agents that explore with a bonus: any agent class + :class:`~core_rl.exploration.bonus.BonusMixin`.

The bonus lives in the env (a vector-env wrapper), so one mixin serves every algorithm: DQN learns
:math:`Q` of :math:`r + \beta\,b(s,a,s')`, PPO/A2C estimate advantages of it. These are the
registered combinations (``bonus_dqn``, ``bonus_ppo``, ``bonus_a2c``); any other is one line,
``class X(BonusMixin, Algo)`` with a config ``class XConfig(AlgoConfig, BonusConfig)``.

Example (a 10-state chain, one-hot states, the DQN of :mod:`core_rl.exploration.experiments` with
the count bonus β/√N(s'): within 1,000 steps the greedy policy walks to the goal, return ≥ 1)::

    >>> import gymnasium as gym
    >>> from core_rl.exploration.experiments import CHAIN_DQN
    >>> env = lambda: gym.make("explore/Chain-v0", n=10, obs="onehot")
    >>> settings = {**CHAIN_DQN, "bonus": "count", "bonus_beta": 0.1, "bonus_shift": 1.0}
    >>> agent = BonusDQN(env, {**settings, "seed": 0}).learn(1000)
    >>> agent.evaluate(n_episodes=1)["mean_return"] >= 1.0
    True
"""

from __future__ import annotations

from core_rl.actor_critic.actor_critic import A2C, A2CConfig
from core_rl.exploration.bonus import BonusConfig, BonusMixin
from core_rl.q_learning.dqn import DQN, DQNConfig
from core_rl.trust_region.ppo import PPO, PPOConfig


class BonusDQNConfig(DQNConfig, BonusConfig):
    pass


class BonusDQN(BonusMixin, DQN):
    """DQN on r + β·bonus (count, SimHash, density pseudo-count or ensemble disagreement)."""

    name = "bonus_dqn"
    config: BonusDQNConfig
    config_cls = BonusDQNConfig


class BonusPPOConfig(PPOConfig, BonusConfig):
    pass


class BonusPPO(BonusMixin, PPO):
    """PPO on r + β·bonus."""

    name = "bonus_ppo"
    config: BonusPPOConfig
    config_cls = BonusPPOConfig


class BonusA2CConfig(A2CConfig, BonusConfig):
    pass


class BonusA2C(BonusMixin, A2C):
    """A2C on r + β·bonus."""

    name = "bonus_a2c"
    config: BonusA2CConfig
    config_cls = BonusA2CConfig


__all__ = ["BonusDQN", "BonusDQNConfig", "BonusPPO", "BonusPPOConfig", "BonusA2C", "BonusA2CConfig"]
