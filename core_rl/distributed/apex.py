r"""Ape-X-style distributed replay (notes 10/31; Horgan et al. 2018): many actors, one learner, one replay.

Q-learning is off-policy, so the data may come from *any* behaviour policy — in particular from
many actors at once, each exploring differently. W actors, each with k env copies and a copy of
:math:`Q_\phi`, act ε-greedily with their own fixed

.. math:: \epsilon_w = \epsilon^{\,1 + \alpha\, w/(W-1)} \qquad (\epsilon = 0.4,\ \alpha = 7 \text{ in Ape-X}),

from nearly random (w = 0) to nearly greedy (w = W−1), and send their transitions to the learner,
which stores them in its replay buffer (uniform or prioritized, :math:`P(i)\propto(|\delta_i|+\varepsilon)^\alpha`)
and runs DQN's update (target network, double Q, N-step targets: everything of
:class:`core_rl.q_learning.dqn.DQN`); fresh weights go back to the actors after every round.

Rounds are synchronous here (actors step ``actor_steps`` steps while the learner waits, then the
learner takes ``actor_steps / train_freq · gradient_steps`` gradient steps), which keeps a run
reproducible: the same seed gives the same numbers with Ray actors and with in-process actors.
Actor w's env j is seeded ``seed + w·k + j``, as the learner's replay layout (one column per env) expects.

Example (4 in-process actors of CartPole-v1, from ε = 0.4 to nearly greedy, filling one replay;
each round of 64 steps per actor, the learner takes 64 / 4 = 16 gradient steps once it has 1,000
transitions)::

    >>> settings = {"n_workers": 4, "backend": "local", "actor_steps": 64, "train_freq": 4, "learning_starts": 1000}
    >>> agent = ApeXDQN("CartPole-v1", {**settings, "seed": 0})
    >>> agent.epsilons.round(3)
    array([0.4  , 0.047, 0.006, 0.001])
    >>> _ = agent.learn(2048)
    >>> agent.num_timesteps, len(agent.replay), agent.gradient_updates
    (2048, 2048, 80)
    >>> agent.close()
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, model_validator

from core_rl.common.prioritized_replay import PrioritizedReplayBuffer
from core_rl.distributed.on_policy import DistributedFields
from core_rl.distributed.workers import (
    ReplayActor,
    WorkerGroup,
    check_shippable,
    class_target,
    env_module,
    merge_episodes,
)
from core_rl.q_learning.dqn import DQN, DQNConfig


def actor_epsilons(n_actors: int, base: float = 0.4, alpha: float = 7.0) -> np.ndarray:
    """Ape-X's ε_w = ε^(1 + α w/(W−1)), w = 0..W−1 (ε itself for a single actor)."""
    if n_actors == 1:
        return np.array([base])
    w = np.arange(n_actors)
    return base ** (1.0 + alpha * w / (n_actors - 1))


class ApeXConfig(DQNConfig, DistributedFields):
    n_workers: int = Field(2, ge=1, description="Actors W.")
    envs_per_worker: int = Field(1, ge=1, description="Env copies k per actor (the learner's n_envs is W·k).")
    actor_steps: int = Field(50, ge=1, description="Steps per env per round before the learner trains.")
    eps_base: float = Field(0.4, gt=0.0, le=1.0, description="ε of ε_w = ε^(1 + α w/(W−1)).")
    eps_alpha: float = Field(7.0, ge=0.0, description="α of ε_w = ε^(1 + α w/(W−1)).")
    train_freq: int = Field(1, ge=1, description="Actor steps (per env) per training phase of the learner.")
    gradient_steps: int = Field(1, ge=1, description="Gradient steps per training phase.")

    @model_validator(mode="before")
    @classmethod
    def _n_envs(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            data["n_envs"] = int(data.get("n_workers", 2)) * int(data.get("envs_per_worker", 1))
        return data


class ApeXDQN(DQN):
    """DQN trained on the transitions of W ε-greedy actors (Ray or in-process); see the module docstring."""

    name = "apex_dqn"
    config: ApeXConfig
    config_cls = ApeXConfig

    @property
    def epsilons(self) -> np.ndarray:
        return actor_epsilons(self.config.n_workers, self.config.eps_base, self.config.eps_alpha)

    def _start_actors(self) -> WorkerGroup:
        group = getattr(self, "_actors", None)
        if group is not None:
            return group
        cfg = self.config
        check_shippable(self._env_source)
        base = {k: v for k, v in cfg.model_dump().items() if k in DQNConfig.model_fields}
        k = cfg.envs_per_worker
        starts = -(-cfg.learning_starts // self.n_envs)  # warm-up steps per env, as one local vector env
        args = [
            (
                class_target(DQN),
                self._env_source,
                base,
                w,
                k,
                float(eps),
                cfg.actor_steps,
                starts * k,
                env_module(self._env_source),
            )
            for w, eps in enumerate(self.epsilons)
        ]
        self._actors = WorkerGroup(
            ReplayActor, args, cfg.backend, cfg.ray_address, cfg.worker_cpus, cfg.worker_resources
        )
        return self._actors

    def _iterate(self) -> dict[str, float]:
        cfg = self.config
        group = self._start_actors()
        if isinstance(self.replay, PrioritizedReplayBuffer):
            self.replay.beta = cfg.prioritized_beta + (1.0 - cfg.prioritized_beta) * self._progress()
        weights = group.share({k: v.detach().cpu().clone() for k, v in self.q_net.state_dict().items()})
        parts = group.call("run", [(weights,)] * len(group))
        cat = lambda key, s: np.concatenate([p[key][s] for p in parts], 0)  # noqa: E731
        for s in range(cfg.actor_steps):
            self.replay.add(
                cat("obs", s),
                cat("actions", s),
                cat("rewards", s),
                cat("next_obs", s),
                cat("terminated", s),
                cat("truncated", s),
            )
        for ret, length in merge_episodes([p["episodes"] for p in parts], cfg.envs_per_worker):
            self.episode_returns.append(ret)
            self.episode_lengths.append(length)
            self.episodes_done += 1
        self.num_timesteps += cfg.actor_steps * self.n_envs
        metrics: dict[str, float] = {}
        if self.num_timesteps >= cfg.learning_starts and len(self.replay) >= cfg.batch_size:
            for _ in range(max(1, cfg.actor_steps // cfg.train_freq) * cfg.gradient_steps):
                metrics = self.train_step(self.replay.sample(cfg.batch_size))
                self.gradient_updates += 1
        metrics["gradient_updates"] = float(self.gradient_updates)
        metrics["epsilon_min"], metrics["epsilon_max"] = float(self.epsilons.min()), float(self.epsilons.max())
        return metrics

    def close(self) -> None:
        group = getattr(self, "_actors", None)
        if group is not None:
            group.close()
            self._actors = None
        super().close()


__all__ = ["ApeXDQN", "ApeXConfig", "actor_epsilons"]
