r"""DAgger (Dataset Aggregation, notes 9/5–9/7): make p_data(s) match p_{π_θ}(s) by labelling the
learner's own states.

Behavior cloning trains on the expert's state distribution and is run on its own, so an error
rate ε on the training states compounds: E[Σ_t c(s_t, a_t)] = O(εT²). DAgger changes the data:

1. train π_θ on human data D = {o_1, a_1, …, o_N, a_N}
2. run π_θ(a_t|o_t) to get D_π = {o_1, …, o_M}
3. ask the expert to label D_π with actions a_t
4. aggregate D ← D ∪ D_π, and repeat from 1.

Trained on the states it visits, the learner's cost stays E[Σ_t c(s_t, a_t)] ≤ εT. The expert is
any callable ``obs batch -> actions`` (or an object with ``predict``; a stateful expert may define
``reset(mask)``); every state it labels, the initial demonstrations included, counts towards
``n_expert_labels``, so DAgger can be compared with behavior cloning at equal labelling cost.

Example (CartPole-v1's scripted expert: one episode of demonstrations, then three rounds of 500
labels on the learner's own states)::

    >>> from core_rl.imitation import cartpole_expert
    >>> settings = {"initial_episodes": 1, "n_iterations": 3, "labels_per_iteration": 500, "n_epochs": 20, "seed": 0}
    >>> dagger = DAgger("CartPole-v1", cartpole_expert, settings)
    >>> policy = dagger.learn()
    >>> dagger.n_expert_labels, dagger.evaluate(n_episodes=5)["mean_return"] >= 450   # the expert: 500
    (2000, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import pandas as pd
from pydantic import Field

from core_rl.common.config import parse_config
from core_rl.common.envs import EnvLike, env_id_of
from core_rl.common.tracking import NullTracker, Tracker
from core_rl.imitation.behavior_cloning import BCConfig, BehaviorCloning, PolicyActor
from core_rl.imitation.demonstrations import (
    Actor,
    Demonstrations,
    action_columns,
    collect_demonstrations,
    load_demonstrations,
    rollout,
)
from core_rl.imitation.policies import ImitationPolicy


class DAggerConfig(BCConfig):
    n_iterations: int = Field(5, ge=0, description="Rounds of run π_θ → expert labels → aggregate → retrain.")
    labels_per_iteration: int = Field(1000, ge=1, description="States of π_θ's rollouts the expert labels per round.")
    initial_episodes: int = Field(5, ge=1, description="Expert episodes recorded when no demonstrations are given.")
    n_envs: int = Field(8, ge=1, description="Parallel envs of the rollouts.")
    rollout_noise: float = Field(
        0.0, ge=0.0, le=1.0, description="ε: probability that a rollout step runs a random action instead of π_θ's."
    )
    retrain: Literal["warm", "scratch"] = Field(
        "warm", description="Keep training π_θ, or re-initialize it each round."
    )
    epochs_per_iteration: int | None = Field(None, ge=1, description="Epochs per round (None: n_epochs).")


class DAgger:
    """``dagger = DAgger(env, expert, config); policy = dagger.learn(demonstrations)``."""

    name: ClassVar[str] = "dagger"
    config_cls: ClassVar[type[DAggerConfig]] = DAggerConfig

    def __init__(
        self,
        env: EnvLike,
        expert: Actor,
        config: DAggerConfig | Mapping[str, Any] | None = None,
        tracker: Tracker | None = None,
        **overrides: Any,
    ):
        self.config = parse_config(self.config_cls, config, **overrides)
        self.env = env
        self.expert = expert
        self.tracker: Tracker = tracker or NullTracker()
        self.bc = BehaviorCloning(env, self.config, tracker=self.tracker)
        self.bc._params_logged = True  # DAgger logs the params, under its own name
        self.dataset: Demonstrations | None = None
        self.n_expert_labels = 0
        self.iteration = 0
        self.history: list[dict[str, float]] = []

    @property
    def policy(self) -> ImitationPolicy:
        return self.bc.policy

    @property
    def observation_space(self) -> gym.Space:
        return self.bc.observation_space

    @property
    def action_space(self) -> gym.Space:
        return self.bc.action_space

    def _load(self, table: Demonstrations | pd.DataFrame | str) -> Demonstrations:
        return load_demonstrations(table, self.observation_space, self.action_space)

    def _disagreement(self, table: pd.DataFrame) -> float:
        """On π_θ's own states: P(π_θ(s) ≠ π*(s)) (Discrete) or mean |π_θ(s) − π*(s)| (Box)."""
        cols = action_columns(self.action_space)
        label = table[cols].to_numpy(dtype=np.float64)
        chosen = table[["policy_" + c for c in cols]].to_numpy(dtype=np.float64)
        if isinstance(self.action_space, gym.spaces.Discrete):
            return float((label != chosen).mean())
        return float(np.abs(label - chosen).mean())

    def learn(
        self, demonstrations: Demonstrations | pd.DataFrame | str | None = None, n_iterations: int | None = None
    ) -> ImitationPolicy:
        """Train on ``demonstrations`` (or ``initial_episodes`` expert episodes), then run
        ``n_iterations`` (default: config) DAgger rounds. Calling again continues the rounds."""
        cfg = self.config
        if self.dataset is None:
            self.tracker.log_params({"algo": self.name, "env_id": env_id_of(self.env), **cfg.model_dump()})
            if demonstrations is None:
                demonstrations = collect_demonstrations(
                    self.expert,
                    self.env,
                    cfg.initial_episodes,
                    seed=cfg.seed,
                    n_envs=min(cfg.n_envs, cfg.initial_episodes),
                )
            self.dataset = self._load(demonstrations)
            self.n_expert_labels += len(self.dataset)
            self.bc.fit(self.dataset)
        elif demonstrations is not None:
            extra = self._load(demonstrations)
            self.dataset = self.dataset.concat(extra)
            self.n_expert_labels += len(extra)
        for _ in range(cfg.n_iterations if n_iterations is None else n_iterations):
            self.iteration += 1
            # 2.–3. run π_θ, the expert labels every state it visits
            self.policy.reset()
            table = rollout(
                PolicyActor(self.policy, deterministic=True),
                self.env,
                n_steps=cfg.labels_per_iteration,
                seed=cfg.seed + 7919 * self.iteration,
                n_envs=cfg.n_envs,
                labeler=self.expert,
                action_noise=cfg.rollout_noise,
            )
            disagreement = self._disagreement(table)
            on_policy = self._load(table)
            # 4. D ← D ∪ D_π, retrain
            self.dataset = self.dataset.concat(on_policy)
            self.n_expert_labels += len(on_policy)
            if cfg.retrain == "scratch":
                self.bc.reset_policy()
            self.bc.fit(self.dataset, cfg.epochs_per_iteration)
            metrics = {
                "dagger_iteration": float(self.iteration),
                "dagger_expert_labels": float(self.n_expert_labels),
                "dagger_dataset_size": float(len(self.dataset)),
                "dagger_disagreement": disagreement,
                "dagger_rollout_reward_per_step": float(table["reward"].mean()),
                **{k: v for k, v in self.bc.last_metrics.items()},
            }
            self.history.append(metrics)
            self.tracker.log_metrics(metrics, step=self.n_expert_labels)
        return self.policy

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return self.policy.predict(obs, deterministic)

    def evaluate(
        self,
        env: EnvLike | None = None,
        n_episodes: int = 10,
        seed: int | None = None,
        deterministic: bool = True,
        n_envs: int | None = None,
    ) -> dict[str, Any]:
        return self.bc.evaluate(self.env if env is None else env, n_episodes, seed, deterministic, n_envs)
