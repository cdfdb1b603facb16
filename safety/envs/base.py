r"""The machinery every one of our CMDP tasks shares: a numpy-batched vector env and its one-env twin.

A task subclasses :class:`BatchedCMDP` and provides three array functions over a batch of envs —
``_reset_envs(mask)`` (draw new initial states where ``mask``), ``_transition(actions)`` (advance
every env one step; return the reward, the termination flags and the per-constraint costs) and
``_observe()`` (the observations). :class:`BatchedCMDP` is then a real
:class:`gymnasium.vector.VectorEnv` stepping all envs at once with numpy, in ``SAME_STEP``
autoreset mode (what ``core_rl.common.envs`` requires): an env whose episode ends is reset in the
same step, its true last observation goes to ``info["final_obs"]`` and its step info to
``info["final_info"]``. :class:`SingleCMDPEnv` runs the same code with one env as a plain
:class:`gymnasium.Env` (the registered single-env ids, wrapped by gymnasium's ``TimeLimit``).

Costs are reported the way Safety-Gymnasium's gymnasium variants report them: ``info["cost"]``
is the step's total cost, and each component has its own key (``info["cost_hazard"]``, ...), so
a constraint may name the total or any component.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from core_rl.common.errors import ConfigError


class BatchedCMDP(VectorEnv):
    """``num_envs`` copies of one CMDP task, stepped together with numpy (SAME_STEP autoreset)."""

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}
    #: the info keys of the step costs this task reports ("cost" is their sum)
    cost_keys: ClassVar[tuple[str, ...]] = ("cost",)

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = None):
        if int(num_envs) < 1:
            raise ConfigError(f"num_envs must be at least 1, got {num_envs}")
        if max_episode_steps is not None and int(max_episode_steps) < 1:
            raise ConfigError(f"max_episode_steps must be a positive integer, got {max_episode_steps}")
        self.num_envs = int(num_envs)
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.metadata = {**type(self).metadata, "cost_keys": self.cost_keys}
        self._elapsed = np.zeros(self.num_envs, dtype=np.int64)
        self._np_random, self._np_random_seed = seeding.np_random(None)
        self._reset_envs(np.ones(self.num_envs, dtype=bool))

    # ---- what a task provides ------------------------------------------------------------------
    def _reset_envs(self, mask: np.ndarray) -> None:
        """Draw new initial states for the envs where ``mask`` is true (using ``self.np_random``)."""
        raise NotImplementedError

    def _transition(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Advance every env: ``(reward [N], terminated [N] bool, {cost_key: cost [N]})``."""
        raise NotImplementedError

    def _observe(self) -> np.ndarray:
        """The current observations, ``[N, *single_observation_space.shape]`` (or ``[N]`` if discrete)."""
        raise NotImplementedError

    # ---- gymnasium API -------------------------------------------------------------------------
    def _prepare_actions(self, actions: Any) -> np.ndarray:
        space = self.single_action_space
        if isinstance(space, gym.spaces.Box):
            a = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, *space.shape)
            return np.clip(a, space.low, space.high)
        return np.asarray(actions, dtype=np.int64).reshape(self.num_envs)

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            first = seed[0] if isinstance(seed, (list, tuple)) else seed
            self._np_random, self._np_random_seed = seeding.np_random(first)
        self._reset_envs(np.ones(self.num_envs, dtype=bool))
        self._elapsed[:] = 0
        return self._observe(), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        reward, terminated, costs = self._transition(self._prepare_actions(actions))
        self._elapsed += 1
        terminated = np.asarray(terminated, dtype=bool)
        truncated = (
            ~terminated & (self._elapsed >= self.max_episode_steps)
            if self.max_episode_steps
            else np.zeros(self.num_envs, dtype=bool)
        )
        obs = self._observe()
        info: dict[str, Any] = {k: np.asarray(v, dtype=np.float64) for k, v in costs.items()}
        done = terminated | truncated
        if done.any():
            final_info = {**{k: v.copy() for k, v in info.items()}, **{f"_{k}": done.copy() for k in info}}
            info.update(final_obs=obs.copy(), _final_obs=done.copy(), final_info=final_info, _final_info=done.copy())
            self._reset_envs(done)
            self._elapsed[done] = 0
            obs = self._observe()
        return obs, np.asarray(reward, dtype=np.float64), terminated, truncated, info


class SingleCMDPEnv(gym.Env):
    """One env of a :class:`BatchedCMDP` task as a plain ``gymnasium.Env`` (time limit left to
    gymnasium's ``TimeLimit`` wrapper, which ``gymnasium.make`` adds from the registration)."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    batched_cls: ClassVar[type[BatchedCMDP]] = BatchedCMDP

    def __init__(self, **kwargs: Any):
        self.core = self.batched_cls(num_envs=1, max_episode_steps=None, **kwargs)
        self.observation_space = self.core.single_observation_space
        self.action_space = self.core.single_action_space
        self.metadata = {**type(self).metadata, "cost_keys": self.core.cost_keys}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        self.core._np_random = self.np_random
        self.core._reset_envs(np.ones(1, dtype=bool))
        return self._one(self.core._observe()), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        reward, terminated, costs = self.core._transition(self.core._prepare_actions(np.asarray(action)[None]))
        info = {k: float(np.asarray(v)[0]) for k, v in costs.items()}
        return self._one(self.core._observe()), float(reward[0]), bool(terminated[0]), False, info

    def _one(self, obs: np.ndarray) -> Any:
        return int(obs[0]) if isinstance(self.observation_space, gym.spaces.Discrete) else obs[0]
