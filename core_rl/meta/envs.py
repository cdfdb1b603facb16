r"""Task distributions for meta-RL and an open 2-D world for skill discovery (notes 10/24–11/2).

**Tasks.** A task env exposes ``sample_task(rng)`` (draw :math:`\mathcal T \sim p(\mathcal T)`) and
``set_task(task)``. :class:`BernoulliBandit` is the k-armed bandit of RL² (Duan et al. 2016): a task
is the vector of arm probabilities :math:`p_i \sim U(0, 1)`, each inner episode is one pull with
:math:`r \sim \mathrm{Bernoulli}(p_a)`. :class:`PointGoal` is a goal-reaching task family: a point in
the plane must reach a goal drawn on a circle; the goal is never observed, only rewarded
(:math:`r = -\|x - g\|`).

**Trials.** :class:`MetaTrial` turns a task env into the RL² problem: one outer episode (a *trial*)
is ``episodes_per_trial`` inner episodes of the *same* task; the observation is
:math:`(o_t, a_{t-1}, r_{t-1}, d_{t-1})` (one-hot previous action, previous reward, whether the previous
step ended an inner episode), and only the trial's end is an episode end, so a recurrent policy's
memory survives inner resets and can learn to identify the task. With ``history=False`` the
observation is :math:`o_t` alone, the input of a non-adaptive policy. A fixed ``tasks`` list (e.g.
held-out tasks) replaces :math:`p(\mathcal T)`.

**Skills.** :class:`PointEnv` (``meta/Point-v0``) is a reward-free point mass in :math:`[-1, 1]^2`,
the playground of DIAYN's skill discovery.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from core_rl.common.errors import ConfigError, SpaceError


class BernoulliBandit(gym.Env):
    r"""k arms; a task is p ∈ [0, 1]^k; an episode is one pull, r ~ Bernoulli(p_a).

    ``tasks="uniform"``: :math:`p_i \sim U(0, 1)` (RL²'s distribution); ``tasks="one_good"``: one arm,
    chosen uniformly, pays with ``good_p``, the others with ``bad_p``.
    """

    metadata = {"render_modes": []}

    def __init__(self, n_arms: int = 2, task_distribution: str = "uniform", good_p: float = 0.9, bad_p: float = 0.1):
        if n_arms < 2:
            raise ConfigError(f"a bandit needs at least 2 arms, got n_arms={n_arms}")
        if task_distribution not in ("uniform", "one_good"):
            raise ConfigError(f"task_distribution must be 'uniform' or 'one_good', got '{task_distribution}'")
        self.task_distribution, self.good_p, self.bad_p = task_distribution, float(good_p), float(bad_p)
        self.n_arms = int(n_arms)
        self.action_space = gym.spaces.Discrete(self.n_arms)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.p = np.full(self.n_arms, 0.5)

    def sample_task(self, rng: np.random.Generator) -> np.ndarray:
        if self.task_distribution == "one_good":
            p = np.full(self.n_arms, self.bad_p)
            p[int(rng.integers(self.n_arms))] = self.good_p
            return p
        return rng.uniform(0.0, 1.0, self.n_arms)

    def set_task(self, task: Any) -> None:
        p = np.asarray(task, dtype=np.float64).reshape(-1)
        if p.shape != (self.n_arms,) or np.any((p < 0) | (p > 1)):
            raise ConfigError(f"a bandit task is {self.n_arms} probabilities in [0, 1], got {task}")
        self.p = p

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.ones(1, np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = float(self.np_random.random() < self.p[int(action)])
        return np.ones(1, np.float32), reward, True, False, {}


class PointEnv(gym.Env):
    """A point mass: x ∈ [-b, b]^2 from 0, x ← clip(x + η a), a ∈ [-1, 1]^2, ``max_steps`` steps; reward-free
    (η = ``step_size``, b = ``bound``; :meth:`reward` is 0, subclasses give it a task)."""

    metadata = {"render_modes": []}

    def __init__(self, max_steps: int = 30, step_size: float = 0.1, bound: float = 1.0):
        self.max_steps, self.step_size, self.bound = int(max_steps), float(step_size), float(bound)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = gym.spaces.Box(-self.bound, self.bound, (2,), np.float32)
        self.x = np.zeros(2)
        self.t = 0

    def reward(self) -> float:
        """r(x) after the move."""
        return 0.0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.x = np.zeros(2)
        self.t = 0
        return self.x.astype(np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        self.x = np.clip(self.x + self.step_size * a, -self.bound, self.bound)
        return self.x.astype(np.float32), self.reward(), False, self.t >= self.max_steps, {}


class PointGoal(PointEnv):
    """A point in [-2, 2]^2 starting at 0, actions Δx ∈ [-0.2, 0.2]^2, r = −‖x − g‖; the goal g is the task."""

    def __init__(self, radius: float = 1.0, max_steps: int = 20):
        super().__init__(max_steps, step_size=0.2, bound=2.0)
        self.radius = float(radius)
        self.goal = np.array([self.radius, 0.0])

    def sample_task(self, rng: np.random.Generator) -> np.ndarray:
        angle = rng.uniform(0.0, 2 * np.pi)
        return self.radius * np.array([np.cos(angle), np.sin(angle)])

    def set_task(self, task: Any) -> None:
        self.goal = np.asarray(task, dtype=np.float64).reshape(2)

    def reward(self) -> float:
        return -float(np.linalg.norm(self.x - self.goal))


TASK_ENVS: dict[str, type[gym.Env]] = {"bandit": BernoulliBandit, "point_goal": PointGoal}


class MetaTrial(gym.Env):
    """RL²'s trial: ``episodes_per_trial`` inner episodes of one task, history in the observation."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        task_env: str | gym.Env = "bandit",
        episodes_per_trial: int = 10,
        history: bool = True,
        tasks: Sequence[Any] | np.ndarray | None = None,
        **task_kwargs: Any,
    ):
        if isinstance(task_env, str):
            if task_env not in TASK_ENVS:
                raise ConfigError(f"unknown task env '{task_env}'; known: {', '.join(TASK_ENVS)}")
            task_env = TASK_ENVS[task_env](**task_kwargs)
        if not (hasattr(task_env, "sample_task") and hasattr(task_env, "set_task")):
            raise ConfigError("a task env needs sample_task(rng) and set_task(task) methods")
        if episodes_per_trial < 1:
            raise ConfigError(f"episodes_per_trial must be at least 1, got {episodes_per_trial}")
        self.task_env = task_env
        self.episodes_per_trial, self.history = int(episodes_per_trial), bool(history)
        self.tasks = None if tasks is None else [np.asarray(t) for t in tasks]
        if self.tasks is not None and not self.tasks:
            raise ConfigError("tasks must be None or a non-empty list")
        inner_obs, act = task_env.observation_space, task_env.action_space
        if not isinstance(inner_obs, gym.spaces.Box):
            raise SpaceError(f"MetaTrial needs a Box inner observation space, got {inner_obs}")
        self.action_space = act
        if isinstance(act, gym.spaces.Discrete):
            self._act_dim = int(act.n)
        elif isinstance(act, gym.spaces.Box):
            self._act_dim = int(np.prod(act.shape))
        else:
            raise SpaceError(f"MetaTrial needs a Discrete or Box action space, got {act}")
        self._obs_dim = int(np.prod(inner_obs.shape))
        dim = self._obs_dim + (self._act_dim + 2 if self.history else 0)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self.task: Any = None
        self._episode = 0

    def _augment(self, obs: np.ndarray, action: Any, reward: float, done: bool) -> np.ndarray:
        o = np.asarray(obs, dtype=np.float32).reshape(-1)
        if not self.history:
            return o
        a = np.zeros(self._act_dim, np.float32)
        if action is not None:
            if isinstance(self.action_space, gym.spaces.Discrete):
                a[int(action)] = 1.0
            else:
                a[:] = np.asarray(action, dtype=np.float32).reshape(-1)
        return np.concatenate([o, a, np.array([reward, float(done)], np.float32)])

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self.task_env.reset(seed=seed + 1)
        if self.tasks is not None:
            self.task = self.tasks[int(self.np_random.integers(len(self.tasks)))]
        else:
            self.task = self.task_env.sample_task(self.np_random)
        self.task_env.set_task(self.task)
        self._episode = 0
        obs, _ = self.task_env.reset()
        return self._augment(obs, None, 0.0, False), {"task": np.array(self.task)}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.task_env.step(action)
        inner_done = bool(terminated or truncated)
        trial_over = False
        if inner_done:
            self._episode += 1
            trial_over = self._episode >= self.episodes_per_trial
            if not trial_over:
                obs, _ = self.task_env.reset()
        return (
            self._augment(obs, action, float(reward), inner_done),
            float(reward),
            trial_over,
            False,
            {"task": np.array(self.task), "inner_done": inner_done},
        )


ENVS: dict[str, tuple[type[gym.Env], dict[str, Any]]] = {
    "meta/BanditTrial-v0": (MetaTrial, {"task_env": "bandit", "n_arms": 2, "episodes_per_trial": 20}),
    "meta/PointGoalTrial-v0": (MetaTrial, {"task_env": "point_goal", "episodes_per_trial": 2}),
    "meta/Point-v0": (PointEnv, {}),
}


def register_envs() -> None:
    """Register the ids with gymnasium (idempotent)."""
    for env_id, (cls, kwargs) in ENVS.items():
        if env_id not in gym.envs.registry:
            gym.register(id=env_id, entry_point=f"{cls.__module__}:{cls.__name__}", kwargs=kwargs)


register_envs()

__all__ = ["BernoulliBandit", "PointGoal", "MetaTrial", "PointEnv", "TASK_ENVS", "ENVS", "register_envs"]
