"""core_rl: every algorithm of the CS294 deep RL notes on one set of abstractions.

>>> from core_rl import PPO
>>> agent = PPO("CartPole-v1", {"n_steps": 32}).learn(10_000)   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core_rl.common.base import Agent
from core_rl.common.errors import ConfigError, DeepRLError, EnvError, SpaceError
from core_rl.registry import ALGORITHMS, get_algo

__all__ = ["Agent", "ALGORITHMS", "get_algo", "ConfigError", "DeepRLError", "EnvError", "SpaceError", "make_agent"]
__version__ = "0.1.0"


def make_agent(algo: str, env: Any, config: Any = None, preset: str | None = "auto", **kwargs: Any) -> Agent:
    """Build an agent by registry name: ``make_agent("ppo", "CartPole-v1", {"n_steps": 64})``.

    ``preset="auto"`` starts from RL-Zoo's published hyperparameters for ``env`` (an env id) when
    :mod:`core_rl.presets` has them, with ``config`` on top; ``"none"`` from our defaults; a name
    such as ``"rl-zoo/dqn/CartPole-v1"`` from that preset. ``agent.preset`` is the one used (or None).
    """
    spec = get_algo(algo)
    if spec.kind != "agent":
        raise ConfigError(
            f"'{algo}' is a {spec.kind}, not an agent: build it with get_algo('{algo}').cls(env, config) "
            f"and call .run(tracker, out_dir), or run it with `deeprl train --algo {algo}`"
        )
    from core_rl.presets import apply_preset

    if config is not None and not isinstance(config, Mapping):  # a config model: used as it is
        agent = spec.cls(env, config, **kwargs)
        agent.preset = None
        return agent
    merged, chosen = apply_preset(algo, env, config, preset)
    agent = spec.cls(env, merged, **kwargs)
    agent.preset = chosen
    return agent


def __getattr__(name: str) -> Any:  # `from core_rl import PPO` without importing every module
    for spec in ALGORITHMS.values():
        if spec.target.endswith(":" + name):
            return spec.cls
    raise AttributeError(name)
