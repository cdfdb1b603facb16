r"""Behaviour cloning and DAgger as runnable programs (``deeprl train --algo bc --env CartPole-v1``).

The expert (config field ``expert``, see :func:`~core_rl.imitation.experts.load_expert`) is
``"scripted"``, an agent checkpoint file, or — from the command line — ``run:RUN_ID`` / a
registered model URI. Behaviour cloning learns from a demonstrations file (``demonstrations``:
parquet or CSV in the schema of :mod:`core_rl.imitation.demonstrations`) or from
``n_demo_episodes`` episodes it records of the expert; DAgger starts the same way, then runs
``n_iterations`` rounds of π_θ rollouts labelled by the expert. The cloned policy is run for
``eval_episodes`` episodes (``mean_return``, beside ``expert_return`` when there is an expert).
Artifacts: ``policy.pt`` (the imitation policy's state dict and config) and
``demonstrations.parquet`` (the data it was finally trained on).

Example (behaviour cloning of the scripted CartPole expert)::

    >>> import tempfile
    >>> from pathlib import Path
    >>> from core_rl.common.tracking import NullTracker
    >>> settings = {"expert": "scripted", "n_demo_episodes": 4, "n_epochs": 20, "eval_episodes": 5}
    >>> result = BCProgram("CartPole-v1", settings).run(NullTracker(), Path(tempfile.mkdtemp()))
    >>> result.metrics["expert_return"], result.mean_return >= 450
    (500.0, True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch
from pydantic import BaseModel, Field

from core_rl.common.envs import make_env
from core_rl.common.errors import ConfigError
from core_rl.common.program import Program, ProgramResult
from core_rl.common.tracking import Tracker
from core_rl.imitation.behavior_cloning import BCConfig, BehaviorCloning
from core_rl.imitation.dagger import DAgger, DAggerConfig
from core_rl.imitation.demonstrations import (
    Demonstrations,
    collect_demonstrations,
    evaluate_actor,
    load_demonstrations,
)
from core_rl.imitation.experts import load_expert


class _ExpertFields(BaseModel):
    expert: str | None = Field(None, description="'scripted', an agent checkpoint path, run:RUN_ID or models:/...")
    demonstrations: str | None = Field(None, description="A demonstrations file (parquet or CSV).")
    n_demo_episodes: int = Field(10, ge=1, description="Expert episodes recorded when no file is given.")
    eval_episodes: int = Field(20, ge=1, description="Episodes the cloned policy is evaluated for.")


class BCProgramConfig(BCConfig, _ExpertFields):
    pass


class DAggerProgramConfig(DAggerConfig, _ExpertFields):
    pass


class _ImitationProgram(Program):
    base_cls: ClassVar[type[BCConfig]]

    def setup(self) -> None:
        cfg: Any = self.config
        env = make_env(self.env_id)
        self.spaces = (env.observation_space, env.action_space)
        env.close()
        self.expert = None if cfg.expert is None else load_expert(cfg.expert, self.env_id, self.spaces)
        self.demos: Demonstrations | None = None
        if cfg.demonstrations is not None:
            if not Path(cfg.demonstrations).is_file():
                raise ConfigError(f"config field 'demonstrations': no file '{cfg.demonstrations}'")
            self.demos = load_demonstrations(cfg.demonstrations, *self.spaces)
        self.check_sources()

    def check_sources(self) -> None:
        if self.expert is None and self.demos is None:
            raise ConfigError(f"{self.name} needs an expert (config field 'expert') or a 'demonstrations' file")

    def algo_config(self) -> BCConfig:
        return self.base_cls.model_validate(self.config.model_dump(include=set(self.base_cls.model_fields)))

    def initial_data(self) -> Demonstrations | pd.DataFrame:
        cfg: Any = self.config
        if self.demos is not None:
            return self.demos
        return collect_demonstrations(self.expert, self.env_id, cfg.n_demo_episodes, seed=cfg.seed)

    def finish(self, learner: Any, data: Demonstrations, steps: int, out_dir: Path) -> ProgramResult:
        cfg: Any = self.config
        evaluation = learner.evaluate(self.env_id, n_episodes=cfg.eval_episodes, seed=cfg.seed + 10_000)
        metrics = {"mean_return": evaluation["mean_return"], "std_return": evaluation["std_return"]}
        if self.expert is not None:
            metrics["expert_return"] = evaluate_actor(
                self.expert, self.env_id, cfg.eval_episodes, seed=cfg.seed + 10_000
            )["mean_return"]
        metrics["n_samples"] = float(len(data))
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "algo": self.name,
                "env_id": self.env_id,
                "config": self.algo_config().model_dump(mode="json"),
                "state_dict": learner.policy.state_dict(),
            },
            out_dir / "policy.pt",
        )
        data.to_frame().to_parquet(out_dir / "demonstrations.parquet", index=False)
        return ProgramResult(metrics["mean_return"], steps, metrics, ["policy.pt", "demonstrations.parquet"])


class BCProgram(_ImitationProgram):
    r"""Behaviour cloning: :math:`\max_\theta\sum_{(s,a)\in D}\log\pi_\theta(a|s)` on expert data."""

    name = "bc"
    config_cls: ClassVar[type[BaseModel]] = BCProgramConfig
    base_cls: ClassVar[type[BCConfig]] = BCConfig
    budget_field: ClassVar[str | None] = "n_epochs"

    def run(self, tracker: Tracker, out_dir: Path) -> ProgramResult:
        bc = BehaviorCloning(self.env_id, self.algo_config(), tracker=tracker)
        initial = self.initial_data()
        data = initial if isinstance(initial, Demonstrations) else load_demonstrations(initial, *self.spaces)
        bc.fit(data)
        result = self.finish(bc, data, bc.epochs_done, out_dir)
        tracker.log_metrics(result.metrics, bc.epochs_done)
        return result


class DAggerProgram(_ImitationProgram):
    r"""DAgger: run π_θ, let the expert label its states, aggregate, retrain (:math:`O(\epsilon T)`)."""

    name = "dagger"
    config_cls: ClassVar[type[BaseModel]] = DAggerProgramConfig
    base_cls: ClassVar[type[BCConfig]] = DAggerConfig
    budget_field: ClassVar[str | None] = "n_iterations"

    def check_sources(self) -> None:
        if self.expert is None:
            raise ConfigError("dagger needs an expert to label its states (config field 'expert')")

    def run(self, tracker: Tracker, out_dir: Path) -> ProgramResult:
        dagger = DAgger(self.env_id, self.expert, self.algo_config(), tracker=tracker)
        dagger.learn(self.demos)
        assert dagger.dataset is not None
        result = self.finish(dagger, dagger.dataset, dagger.n_expert_labels, out_dir)
        tracker.log_metrics(result.metrics, dagger.n_expert_labels)
        return result


__all__ = ["BCProgram", "DAggerProgram", "BCProgramConfig", "DAggerProgramConfig"]
