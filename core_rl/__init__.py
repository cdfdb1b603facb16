"""core_rl: every algorithm of the CS294 deep RL notes on one set of abstractions.

>>> from core_rl import PPO
>>> agent = PPO("CartPole-v1", {"n_steps": 32}).learn(10_000)   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from core_rl.common.base import Agent
from core_rl.common.errors import ConfigError, DeepRLError, EnvError, SpaceError
from core_rl.registry import ALGORITHMS, get_algo

__all__ = ["Agent", "ALGORITHMS", "get_algo", "ConfigError", "DeepRLError", "EnvError", "SpaceError", "make_agent"]
__version__ = "0.1.0"


def make_agent(algo: str, env: Any, config: Any = None, **kwargs: Any) -> Agent:
    """Build an agent by registry name: ``make_agent("ppo", "CartPole-v1", {"n_steps": 64})``."""
    spec = get_algo(algo)
    if spec.kind != "agent":
        raise ConfigError(
            f"'{algo}' is a {spec.kind}, not an agent: build it with get_algo('{algo}').cls(env, config) "
            f"and call .run(tracker, out_dir), or run it with `deeprl train --algo {algo}`"
        )
    return spec.cls(env, config, **kwargs)


def __getattr__(name: str) -> Any:  # `from core_rl import PPO` without importing every module
    for spec in ALGORITHMS.values():
        if spec.target.endswith(":" + name):
            return spec.cls
    raise AttributeError(name)
