"""Evaluation of any agent on a CMDP: episodic return *and* episodic costs of fresh episodes.

:func:`evaluate_cmdp` runs the agent's ``predict`` (so a shielded agent acts through its safety
layer) on a fresh vector env built and wrapped the way the agent is evaluated
(``agent._wrap_env(..., training=False)``: Saute's budget augmentation, for one), each env
playing only its assigned episodes so that short episodes are not favoured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core_rl.common.base import Agent
from core_rl.common.envs import EnvLike, make_vec_env
from safety.cmdp import read_costs


def evaluate_cmdp(
    agent: Agent,
    n_episodes: int = 20,
    env: EnvLike | None = None,
    deterministic: bool = True,
    seed: int | None = None,
    cost_keys: Sequence[str] | None = None,
    n_envs: int | None = None,
) -> dict[str, Any]:
    """Mean/std of return and of each cost over ``n_episodes`` episodes; ``costs`` is ``[E, K]``."""
    keys = tuple(cost_keys or getattr(agent.config, "cost_keys", ("cost",)))
    n_envs = n_envs or min(n_episodes, 8)
    vec = agent._wrap_env(
        make_vec_env(env if env is not None else agent._env_source, n_envs, seed=None), training=False
    )
    obs, _ = vec.reset(seed=agent.config.seed + 10_000 if seed is None else seed)
    quota = np.full(n_envs, n_episodes // n_envs) + (np.arange(n_envs) < n_episodes % n_envs)
    ep_ret, ep_cost = np.zeros(n_envs), np.zeros((n_envs, len(keys)))
    returns: list[float] = []
    costs: list[np.ndarray] = []
    while len(returns) < n_episodes:
        obs, reward, terminated, truncated, info = vec.step(agent.predict(obs, deterministic=deterministic))
        done = np.asarray(terminated) | np.asarray(truncated)
        ep_ret += np.asarray(info.get("env_reward", reward), dtype=np.float64)
        ep_cost += read_costs(info, keys, n_envs, done)
        for i in np.flatnonzero(done):
            if quota[i] > 0:
                returns.append(float(ep_ret[i]))
                costs.append(ep_cost[i].copy())
                quota[i] -= 1
        ep_ret[done], ep_cost[done] = 0.0, 0.0
    vec.close()
    c = np.stack(costs)
    return {
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "mean_cost": c.mean(0).tolist(),
        "std_cost": c.std(0).tolist(),
        "returns": returns,
        "costs": c.tolist(),
    }
