"""Environment construction: gymnasium ids or user envs, always as a vector env.

Every agent steps a :class:`gymnasium.vector.VectorEnv` in ``SAME_STEP`` autoreset mode, so that
the observation returned at the end of an episode is already the first one of the next, and the
true final observation of a truncated episode is in ``info["final_obs"]`` for bootstrapping.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv

from core_rl.common.atari import is_atari_id, make_atari_env
from core_rl.common.errors import EnvError, SpaceError

EnvLike = str | gym.Env | VectorEnv | Callable[[], gym.Env]


def env_id_of(env: EnvLike) -> str:
    if isinstance(env, str):
        return env
    spec = getattr(env, "spec", None)
    if spec is None and isinstance(env, VectorEnv):
        spec = getattr(env, "spec", None)
    if spec is not None and getattr(spec, "id", None):
        return spec.id
    return type(env).__name__ if not callable(env) or isinstance(env, gym.Env) else getattr(env, "__name__", "custom")


def ensure_registered(env_id: str) -> None:
    """Import the package that registers ``env_id``'s namespace (the apps declare theirs as plugins,
    see :mod:`core_rl.registry`)."""
    if env_id in gym.envs.registry or "/" not in env_id:
        return
    if is_atari_id(env_id):
        from core_rl.common.atari import register_ale

        register_ale()
        return
    from core_rl.registry import env_namespace_package

    package = env_namespace_package(env_id.split("/", 1)[0])
    if package is not None:
        import importlib

        try:
            importlib.import_module(package)
        except ImportError:
            pass


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    """``gym.make`` with a clear error for unknown ids; an ``ALE/...`` id comes with the standard Atari
    preprocessing (:func:`core_rl.common.atari.make_atari_env`, whose options ``kwargs`` may set)."""
    ensure_registered(env_id)
    try:
        if is_atari_id(env_id):
            return make_atari_env(env_id, **kwargs)
        return gym.make(env_id, **kwargs)
    except gym.error.Error as exc:
        known = sorted(k for k in gym.envs.registry if "/" not in k)[:12]
        hint = ""
        if env_id.startswith("Safety") and "/" not in env_id:  # Safety-Gymnasium's task names live under a prefix
            hint = f"; Safety-Gymnasium's tasks are 'safety-gymnasium/{env_id}' (their venv: make safety-env)"
        raise EnvError(f"unknown env id '{env_id}' ({exc}){hint}; e.g. {', '.join(known)} …") from None
    except TypeError as exc:
        raise EnvError(f"env '{env_id}' cannot be built with {kwargs}: {exc}") from None


def _has_same_step_vector_env(env_id: str) -> bool:
    """Whether ``env_id`` registers a ``vector_entry_point`` class that autoresets in SAME_STEP mode."""
    entry = gym.spec(env_id.split(":")[-1]).vector_entry_point
    if entry is None:
        return False
    creator = gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
    return getattr(creator, "metadata", {}).get("autoreset_mode") == AutoresetMode.SAME_STEP


def _deepcopy(env: Any) -> Any:
    try:
        return copy.deepcopy(env)
    except Exception as exc:
        raise EnvError(
            f"the env instance {type(env).__name__} cannot be copied ({type(exc).__name__}: {exc}); "
            "pass an env id or a zero-argument factory instead"
        ) from None


def make_vec_env(
    env: EnvLike,
    n_envs: int = 1,
    seed: int | None = None,
    asynchronous: bool = False,
    env_kwargs: dict[str, Any] | None = None,
    copy_instances: bool = False,
) -> VectorEnv:
    """Build ``n_envs`` copies of ``env`` as a SAME_STEP-autoreset vector env and seed it.

    ``env`` may be a registered id (an ``ALE/...`` id gets the standard Atari preprocessing,
    :mod:`core_rl.common.atari`), a ``gymnasium.Env`` instance (deep-copied for each extra copy),
    a zero-argument factory, or a ready vector env (used as it is). With ``copy_instances`` an
    instance is never used itself: every copy (and a vector env) is a deep copy, so the caller's
    object is neither stepped nor closed.
    """
    if n_envs < 1:
        raise EnvError(f"n_envs must be at least 1, got {n_envs}")
    if isinstance(env, VectorEnv):
        vec = _deepcopy(env) if copy_instances else env
    else:
        if isinstance(env, str):
            make_env(env, **(env_kwargs or {})).close()  # fail early, with the clear message
            build = make_atari_env if is_atari_id(env) else gym.make
            fns = [lambda: build(env, **(env_kwargs or {})) for _ in range(n_envs)]
            if not asynchronous and not is_atari_id(env) and _has_same_step_vector_env(env):
                fns = []  # the id names its own batched SAME_STEP vector env: use it
                vec = gym.make_vec(env, n_envs, vectorization_mode="vector_entry_point", **(env_kwargs or {}))
        elif isinstance(env, gym.Env):
            if copy_instances:
                _deepcopy(env)  # fail early, with the clear message
            first = (lambda: _deepcopy(env)) if copy_instances else (lambda: env)
            fns = [first] + [lambda: _deepcopy(env) for _ in range(n_envs - 1)]
        elif callable(env):
            fns = [env for _ in range(n_envs)]
        else:
            raise EnvError(f"cannot build an env from {type(env).__name__}; pass an id, an Env or a factory")
        if fns:
            cls = AsyncVectorEnv if asynchronous and n_envs > 1 else SyncVectorEnv
            vec = cls(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    mode = vec.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    if mode != AutoresetMode.SAME_STEP:
        raise EnvError("vector envs must use AutoresetMode.SAME_STEP (pass an id or Env and we build one)")
    if seed is not None:
        vec.reset(seed=seed)
        vec.action_space.seed(seed)
        vec.single_action_space.seed(seed)
    return vec


def obs_dim(space: gym.Space) -> int:
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)  # one-hot encoded
    raise SpaceError(f"observation space {space} is not supported (Box or Discrete expected)")


def check_action_space(space: gym.Space, algo: str, allowed: tuple[type, ...]) -> None:
    if not isinstance(space, allowed):
        names = " or ".join(a.__name__ for a in allowed)
        raise SpaceError(f"{algo} needs a {names} action space, but the env has {space}")


def final_next_obs(next_obs: np.ndarray, dones: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """The true :math:`s_{t+1}` of every env of a SAME_STEP vector env step: ``next_obs``, except that envs
    which finished (and were reset) get their episode's last observation from ``info["final_obs"]``
    (a copy is made only then)."""
    dones = np.asarray(dones)
    if not dones.any():
        return next_obs
    real_next = np.array(next_obs, copy=True)
    for i in np.flatnonzero(dones):  # only the finished envs, which are few
        real_next[i] = info["final_obs"][i]
    return real_next


class SpacesOnlyEnv(gym.Env):
    """Stands in for an env that is not at hand (a custom env of a loaded checkpoint): it has the
    stored spaces, so ``predict`` works, and refuses to step, so nothing runs on a guessed world."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, env_id: str = "custom"):
        self.observation_space, self.action_space, self.env_id = observation_space, action_space, env_id

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> Any:
        raise EnvError(
            f"this agent was loaded without its env '{self.env_id}': pass env= (an id, an Env or a "
            "factory) to Agent.load or to evaluate() to run it"
        )


def can_make(env_id: str) -> bool:
    """Whether ``env_id`` names a registered env (the suite's namespaces are imported first)."""
    ensure_registered(env_id)
    return env_id in gym.envs.registry
