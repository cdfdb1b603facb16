r"""Agents that explore with a bonus: any agent class + :class:`~core_rl.exploration.bonus.BonusMixin`.

The bonus lives in the env (a vector-env wrapper), so one mixin serves every algorithm: DQN learns
:math:`Q` of :math:`r + \beta\,b(s,a,s')`, PPO/A2C estimate advantages of it. These are the
registered combinations (``bonus_dqn``, ``bonus_ppo``, ``bonus_a2c``); any other is one line,
``class X(BonusMixin, Algo)`` with a config ``class XConfig(AlgoConfig, BonusConfig)``
(:func:`~core_rl.common.compose.compose_agent`).
"""

from __future__ import annotations

from core_rl.actor_critic.actor_critic import A2C
from core_rl.common.compose import compose_agent
from core_rl.exploration.bonus import BonusConfig, BonusMixin
from core_rl.q_learning.dqn import DQN
from core_rl.trust_region.ppo import PPO


BonusDQN, BonusDQNConfig = compose_agent(
    BonusMixin, BonusConfig, DQN, "bonus_dqn", "BonusDQN",
    "DQN on r + β·bonus (count, SimHash, density pseudo-count or ensemble disagreement).", __name__)
BonusPPO, BonusPPOConfig = compose_agent(BonusMixin, BonusConfig, PPO, "bonus_ppo", "BonusPPO", "PPO on r + β·bonus.",
                                         __name__)
BonusA2C, BonusA2CConfig = compose_agent(BonusMixin, BonusConfig, A2C, "bonus_a2c", "BonusA2C", "A2C on r + β·bonus.",
                                         __name__)

__all__ = ["BonusDQN", "BonusDQNConfig", "BonusPPO", "BonusPPOConfig", "BonusA2C", "BonusA2CConfig"]
