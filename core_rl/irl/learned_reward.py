r"""A learned tabular reward handed to any agent: :class:`TabularRewardWrapper`.

Inverse RL learns :math:`r(s,a)` as an (S, A) table (``MaxEntIRLResult.reward``, the ``reward.npy``
artifact of ``deeprl train --algo maxent_irl``). Wrapping a finite env (Discrete observations and
actions) with it replaces the env's reward by :math:`r(s_t, a_t)` of the state the action was taken
in, so any agent (DQN, PPO, online Q-learning, ...) trains on the learned reward instead of the
true one; the true reward stays in ``info["env_reward"]``. The table is an MDP reward (zero on
terminal states, entries into them folded in), so its expected return equals the learned return.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import ArrayLike

from core_rl.common.errors import ConfigError, SpaceError
from core_rl.tabular.markov_chain import as_float_array


class TabularRewardWrapper(gym.Wrapper):
    """``env`` with reward ``reward[s_t, a_t]``; ``reward`` is an (S, A) array or a ``.npy`` path."""

    def __init__(self, env: gym.Env, reward: ArrayLike | str | Path):
        super().__init__(env)
        if not isinstance(env.observation_space, gym.spaces.Discrete) or not isinstance(
            env.action_space, gym.spaces.Discrete
        ):
            raise SpaceError(
                f"a tabular reward needs Discrete observations and actions, got "
                f"{env.observation_space} and {env.action_space}"
            )
        if isinstance(reward, (str, Path)):
            if not Path(reward).is_file():
                raise ConfigError(f"reward file '{reward}' does not exist")
            reward = np.load(reward)
        table = as_float_array(reward, "reward")
        shape = (int(env.observation_space.n), int(env.action_space.n))
        if table.shape != shape:
            raise ConfigError(f"reward must have shape (S, A) = {shape} for this env, got {table.shape}")
        self.table = table
        self._state: int | None = None

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._state = int(obs)
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self._state is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        obs, env_reward, terminated, truncated, info = self.env.step(action)
        reward = float(self.table[self._state, int(action)])
        self._state = int(obs)
        return obs, reward, terminated, truncated, {**info, "env_reward": env_reward}


__all__ = ["TabularRewardWrapper"]
