r"""Zero-shot transfer by domain randomization (notes 10/24–10/26).

Transfer without any data from the target domain: if the source domain is *randomized* over the
parameters ξ that may differ at test time,

.. math:: \max_\theta\ \mathbb E_{\xi \sim p(\xi)}\Big[\mathbb E_{\tau\sim p_{\theta,\xi}(\tau)}\big[\textstyle\sum_t r(s_t,a_t)\big]\Big],

the policy must do well on every ξ in the support of p(ξ), and (hopefully) on nearby held-out ξ
too, while a policy trained on the nominal :math:`\xi_0` only has no reason to. The parameters are
resampled at every reset, so each episode is a different physical system.

:class:`DomainRandomization` wraps one env and draws ξ per episode, uniformly (or log-uniformly)
in given ranges; :class:`FixedParameters` sets one ξ (a held-out test system). The parameters an
env family exposes are listed in :data:`PARAMETERS`: CartPole (pole ``length``, ``masspole``,
``masscart``, ``force_mag``, ``gravity``), Pendulum (``m``, ``l``, ``g``, ``max_torque``), Acrobot
(link lengths and masses). :func:`randomized` / :func:`fixed` build factories any agent takes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from core_rl.common.envs import make_env
from core_rl.common.errors import ConfigError


def _cartpole_update(env: Any) -> None:
    env.total_mass = env.masspole + env.masscart
    env.polemass_length = env.masspole * env.length


#: family → (parameter names, a function recomputing derived attributes after a change)
PARAMETERS: dict[str, tuple[tuple[str, ...], Callable[[Any], None] | None]] = {
    "CartPole": (("length", "masspole", "masscart", "force_mag", "gravity"), _cartpole_update),
    "Pendulum": (("m", "l", "g", "max_torque"), None),
    "Acrobot": (("LINK_LENGTH_1", "LINK_LENGTH_2", "LINK_MASS_1", "LINK_MASS_2"), None),
}


def _family(env: gym.Env) -> str:
    name = type(env.unwrapped).__name__
    for family in PARAMETERS:
        if name.startswith(family):
            return family
    raise ConfigError(f"no randomizable parameters are known for {name}; known families: {', '.join(PARAMETERS)}")


def get_parameters(env: gym.Env) -> dict[str, float]:
    """The current values of the env's randomizable parameters."""
    names, _ = PARAMETERS[_family(env)]
    return {n: float(getattr(env.unwrapped, n)) for n in names}


def set_parameters(env: gym.Env, params: Mapping[str, float]) -> None:
    """Set physical parameters of the (unwrapped) env and refresh what is derived from them."""
    names, update = PARAMETERS[_family(env)]
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {unknown} for {type(env.unwrapped).__name__}; known: {list(names)}")
    base = env.unwrapped
    for k, v in params.items():
        setattr(base, k, float(v))
    if update is not None:
        update(base)


class DomainRandomization(gym.Wrapper):
    """ξ ~ p(ξ) at every reset: uniform in ``ranges[name] = (low, high)`` (log-uniform with ``log``)."""

    def __init__(self, env: gym.Env, ranges: Mapping[str, tuple[float, float]], log: bool = False):
        super().__init__(env)
        names, _ = PARAMETERS[_family(env)]
        for k, (lo, hi) in ranges.items():
            if k not in names:
                raise ConfigError(f"unknown parameter '{k}' for {type(env.unwrapped).__name__}; known: {list(names)}")
            if not lo <= hi or (log and lo <= 0):
                raise ConfigError(f"range of '{k}' must satisfy 0 < low <= high (log) or low <= high, got {(lo, hi)}")
        self.ranges = {k: (float(lo), float(hi)) for k, (lo, hi) in ranges.items()}
        self.log = bool(log)
        self.nominal = get_parameters(env)
        self.params: dict[str, float] = dict(self.nominal)
        self.rng = np.random.default_rng()

    def sample(self) -> dict[str, float]:
        out = {}
        for k, (lo, hi) in self.ranges.items():
            u = float(self.rng.random())
            out[k] = float(np.exp(np.log(lo) + u * (np.log(hi) - np.log(lo)))) if self.log else lo + u * (hi - lo)
        return out

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        if seed is not None:
            self.rng = np.random.default_rng(seed + 7919)  # its own stream, not the env's
        self.params = {**self.nominal, **self.sample()}
        set_parameters(self.env, self.params)
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, {**info, "params": dict(self.params)}


class FixedParameters(gym.Wrapper):
    """One fixed ξ for every episode (a held-out test system)."""

    def __init__(self, env: gym.Env, params: Mapping[str, float]):
        super().__init__(env)
        set_parameters(env, params)
        self.params = get_parameters(env)

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        obs, info = self.env.reset(**kwargs)
        return obs, {**info, "params": dict(self.params)}


def randomized(
    env_id: str, ranges: Mapping[str, tuple[float, float]], log: bool = False, **env_kwargs: Any
) -> Callable[[], gym.Env]:
    """A factory of ``env_id`` envs whose parameters are redrawn every episode."""
    make_env(env_id, **env_kwargs).close()

    def factory() -> gym.Env:
        return DomainRandomization(gym.make(env_id, **env_kwargs), ranges, log)

    factory.__name__ = f"randomized_{env_id}"
    return factory


def fixed(env_id: str, params: Mapping[str, float], **env_kwargs: Any) -> Callable[[], gym.Env]:
    """A factory of ``env_id`` envs with the given parameters."""
    make_env(env_id, **env_kwargs).close()

    def factory() -> gym.Env:
        return FixedParameters(gym.make(env_id, **env_kwargs), params)

    factory.__name__ = f"fixed_{env_id}"
    return factory


__all__ = [
    "PARAMETERS",
    "DomainRandomization",
    "FixedParameters",
    "get_parameters",
    "set_parameters",
    "randomized",
    "fixed",
]
