r"""Experts for imitation learning (notes 9/5): scripted controllers and trained agents as actors.

An *expert* is an actor (``obs batch -> action batch``, or an object with ``predict``) whose
actions behaviour cloning copies and DAgger asks for labels. :func:`load_expert` builds one from a
short spec, so the command line can name it:

* ``"scripted"`` — the scripted expert of the env (:data:`SCRIPTED_EXPERTS`, e.g. CartPole-v1's
  linear controller :func:`cartpole_expert`, which balances the pole for the full 500 steps);
* a path to an agent checkpoint (``agent.save(path)``; e.g. the ``checkpoint/agent.pt`` of a
  ``deeprl train`` run) — the trained agent acting deterministically.

The command line also accepts ``run:RUN_ID`` and a registered model URI ``models:/NAME/VERSION``;
it fetches those into a checkpoint file first (the core reads no tracking store).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from core_rl.common.errors import CheckpointError, ConfigError

#: (x, ẋ, θ, θ̇) weights of a linear CartPole controller: push right iff w·s > 0 (return 500)
CARTPOLE_EXPERT_WEIGHTS = np.array([0.1, 0.5, 3.0, 1.0])


def cartpole_expert(obs: np.ndarray) -> np.ndarray:
    """Scripted CartPole expert: push in the direction of 0.1x + 0.5ẋ + 3θ + θ̇ (balances 500 steps)."""
    obs = np.asarray(obs, dtype=np.float64)
    return (obs @ CARTPOLE_EXPERT_WEIGHTS > 0).astype(np.int64)


#: env id -> its scripted expert
SCRIPTED_EXPERTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"CartPole-v1": cartpole_expert}


class AgentExpert:
    """A trained agent as a deterministic actor (``predict(obs) -> actions``)."""

    def __init__(self, agent: Any):
        self.agent = agent

    def predict(self, obs: np.ndarray) -> np.ndarray:
        return self.agent.predict(obs, deterministic=True)


def load_expert(spec: str, env_id: str, spaces: tuple[gym.Space, gym.Space] | None = None) -> Any:
    """The expert named by ``spec`` (``"scripted"`` or an agent checkpoint path) for ``env_id``.

    With ``spaces`` (the env's observation and action spaces) a checkpoint whose agent was trained
    on other spaces is refused. Raises :class:`ConfigError` / :class:`CheckpointError` naming the cause.
    """
    if spec == "scripted":
        if env_id not in SCRIPTED_EXPERTS:
            raise ConfigError(
                f"no scripted expert for {env_id} (known: {sorted(SCRIPTED_EXPERTS)}); "
                "give a checkpoint path, run:RUN_ID or a demonstrations file"
            )
        return SCRIPTED_EXPERTS[env_id]
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(
            f"expert '{spec}' is neither 'scripted' nor an existing checkpoint file (or run:RUN_ID, models:/...)"
        )
    from core_rl.common.base import Agent

    try:
        agent = Agent.load(path, env=env_id)
    except CheckpointError:
        raise
    except Exception as exc:  # a file that is not a checkpoint, or an env the agent cannot act in
        raise CheckpointError(f"expert checkpoint '{spec}' cannot be loaded for {env_id}: {exc}") from None
    if spaces is not None and (agent.observation_space, agent.action_space) != spaces:
        raise CheckpointError(
            f"expert checkpoint '{spec}' acts in {agent.observation_space} -> {agent.action_space}, "
            f"not in {env_id}'s {spaces[0]} -> {spaces[1]}"
        )
    return AgentExpert(agent)


__all__ = ["CARTPOLE_EXPERT_WEIGHTS", "SCRIPTED_EXPERTS", "AgentExpert", "cartpole_expert", "load_expert"]
