r"""Hard-exploration environments (notes 10/17): reward far away, a small distractor close by.

:class:`ChainEnv` (``explore/Chain-v0``) is the chain MDP of the exploration literature (Strens 2000,
Osband et al. 2016): states :math:`0,\dots,N-1`, the agent starts in state 1 and has two actions,
left and right. Staying at the left end pays a distractor :math:`r = 0.001` per step; reaching state
:math:`N-1` pays :math:`r = 1` and ends the episode; an episode lasts at most :math:`N + 9` steps.
The optimal return is 1, the distractor's at most :math:`\approx 0.001(N+9)`.

Undirected exploration cannot find the goal: ε-greedy's random walk must take :math:`N-2` net
right moves within :math:`N+9` steps, which happens with probability :math:`\approx 2^{-(N-2)}`
(e.g. :math:`4\cdot10^{-6}` per episode for N = 20, smaller the closer ε gets to 0), while as
soon as the distractor has been seen the greedy policy walks left. Directed exploration
(optimism, Thompson sampling, information gain) pushes towards the unvisited end instead.

With ``random_actions`` the action that moves right is drawn once per state (from ``action_seed``,
so every copy of the env is the same chain), as in Osband et al.'s experiments: a policy cannot
reach the goal by pressing one button everywhere, so neither a lucky initialization nor a network
that generalizes "action 1 is good" along the chain solves it without exploring. Registered as
``explore/ChainRandomActions-v0`` (N = 20, one-hot states, ``action_seed=0``): the task on which
``bonus_ppo`` and ``bonus_a2c`` are shown to learn in 40,960 steps at every seed tried, where plain A2C
never does and plain PPO at 2 seeds of 5 (docs/algorithms.md).

Observations are the state id (``obs="onehot"``: a Discrete space, one-hot encoded by the
networks) or a thermometer code (``obs="thermometer"``: Box, :math:`x_i = 1` for :math:`i \le s`)
that lets function approximation generalize along the chain.

:class:`SparseGridEnv` (``explore/SparseGrid-v0``) is the 2-D analogue: an n×n grid, start in a
corner, reward 1 only in the opposite corner, observations the normalized (x, y) position (Box).
"""

from __future__ import annotations

from typing import Any, Literal

import gymnasium as gym
import numpy as np

from core_rl.common.errors import ConfigError


class ChainEnv(gym.Env):
    """The N-state chain: start in state 1, distractor at 0, goal at N−1 (see the module docstring)."""

    metadata = {"render_modes": []}
    LEFT, RIGHT = 0, 1

    def __init__(
        self,
        n: int = 20,
        obs: Literal["onehot", "thermometer"] = "onehot",
        distractor: float = 0.001,
        goal_reward: float = 1.0,
        max_steps: int | None = None,
        random_actions: bool = False,
        action_seed: int = 0,
    ):
        if n < 3:
            raise ConfigError(f"the chain needs at least 3 states, got n={n}")
        if obs not in ("onehot", "thermometer"):
            raise ConfigError(f"obs must be 'onehot' or 'thermometer', got '{obs}'")
        self.n, self.obs_type = int(n), obs
        self.distractor, self.goal_reward = float(distractor), float(goal_reward)
        self.max_steps = int(max_steps) if max_steps is not None else self.n + 9
        self.action_space = gym.spaces.Discrete(2)
        if obs == "onehot":
            self.observation_space: gym.Space = gym.spaces.Discrete(self.n)
        else:
            self.observation_space = gym.spaces.Box(0.0, 1.0, (self.n,), np.float32)
        self.state, self.t = 1, 0
        # which action moves right, per state: fixed (1), or drawn once from action_seed (the same chain for
        # every copy and every episode) so that "always press the same button" is not a solution
        rng = np.random.default_rng(action_seed)
        self.right_action = rng.integers(0, 2, self.n) if random_actions else np.ones(self.n, dtype=np.int64)

    def _obs(self) -> Any:
        if self.obs_type == "onehot":
            return int(self.state)
        return (np.arange(self.n) <= self.state).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.state, self.t = 1, 0
        return self._obs(), {}

    def step(self, action: int) -> tuple[Any, float, bool, bool, dict]:
        self.t += 1
        if int(action) == int(self.right_action[self.state]):
            self.state = min(self.state + 1, self.n - 1)
        else:
            self.state = max(self.state - 1, 0)
        reached = self.state == self.n - 1
        reward = self.goal_reward if reached else (self.distractor if self.state == 0 else 0.0)
        truncated = (not reached) and self.t >= self.max_steps
        return self._obs(), float(reward), bool(reached), bool(truncated), {"goal_reached": bool(reached)}


class SparseGridEnv(gym.Env):
    """An n×n grid: start at (0, 0), reward 1 only at (n−1, n−1); 4 moves; at most ``max_steps`` steps."""

    metadata = {"render_modes": []}
    MOVES = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]])

    def __init__(self, n: int = 10, max_steps: int | None = None):
        if n < 2:
            raise ConfigError(f"the grid needs n >= 2, got n={n}")
        self.n = int(n)
        self.max_steps = int(max_steps) if max_steps is not None else 4 * self.n
        self.action_space = gym.spaces.Discrete(4)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
        self.pos = np.zeros(2, dtype=np.int64)
        self.t = 0

    def _obs(self) -> np.ndarray:
        return (self.pos / (self.n - 1)).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.pos[:] = 0
        self.t = 0
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        self.pos = np.clip(self.pos + self.MOVES[int(action)], 0, self.n - 1)
        reached = bool((self.pos == self.n - 1).all())
        truncated = (not reached) and self.t >= self.max_steps
        return self._obs(), float(reached), reached, bool(truncated), {"goal_reached": reached}


ENVS: dict[str, tuple[type[gym.Env], dict[str, Any]]] = {
    "explore/Chain-v0": (ChainEnv, {}),
    "explore/ChainThermometer-v0": (ChainEnv, {"obs": "thermometer"}),
    "explore/ChainRandomActions-v0": (ChainEnv, {"random_actions": True}),
    "explore/SparseGrid-v0": (SparseGridEnv, {}),
}


def register_envs() -> None:
    """Register the ids with gymnasium (idempotent). The envs end episodes themselves (no TimeLimit)."""
    for env_id, (cls, kwargs) in ENVS.items():
        if env_id not in gym.envs.registry:
            gym.register(id=env_id, entry_point=f"{cls.__module__}:{cls.__name__}", kwargs=kwargs)


register_envs()

__all__ = ["ChainEnv", "SparseGridEnv", "ENVS", "register_envs"]
