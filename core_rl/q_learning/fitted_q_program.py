r"""Fitted Q iteration as a runnable program (``deeprl train --algo fitted_q --env FrozenLake-v1``).

The data set is ``n_transitions`` transitions of the uniformly random policy in the env
(:meth:`~core_rl.common.transitions.Transitions.collect`): fitted Q iteration is off-policy, so any
behaviour's data will do. ``--steps`` sets K, the number of target recomputations. The run logs
the Bellman error and target change per iteration (:meth:`FittedQIteration.fit`), the greedy
policy's real return (``mean_return``) and, when the env has a tabular model (FrozenLake, Taxi, ...),
``q_star_error`` = max |Q_φ − Q*| on the state-action pairs the data visited. Artifacts:
``q_function.pt`` (the Q network's state dict and config) and, for a Discrete observation space,
``q_table.json``.

Example (deterministic FrozenLake, γ = 0.9: the greedy policy of the fitted Q reaches the goal)::

    >>> import tempfile
    >>> from pathlib import Path
    >>> from core_rl.common.tracking import NullTracker
    >>> settings = {"env_kwargs": {"is_slippery": False}, "gamma": 0.9, "n_transitions": 4000, "eval_episodes": 5}
    >>> result = FittedQProgram("FrozenLake-v1", settings).run(NullTracker(), Path(tempfile.mkdtemp()))
    >>> result.mean_return, result.metrics["q_star_error"] < 1e-3
    (1.0, True)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, Field

from core_rl.common.envs import make_env
from core_rl.common.program import Program, ProgramResult
from core_rl.common.tracking import Tracker
from core_rl.common.transitions import Transitions
from core_rl.q_learning.fitted_q import FittedQConfig, FittedQIteration


class FittedQProgramConfig(FittedQConfig):
    n_transitions: int = Field(10_000, ge=1, description="Random-policy transitions in the fixed data set.")
    env_kwargs: dict[str, Any] = Field(default_factory=dict, description="gym.make kwargs (e.g. is_slippery).")
    eval_episodes: int = Field(100, ge=1, description="Episodes the greedy policy is evaluated for.")


class FittedQProgram(Program):
    r"""Fitted Q iteration: :math:`y_i = r_i + \gamma\max_{a'}Q_\phi(s'_i,a')`, regress, repeat K times."""

    name = "fitted_q"
    config_cls: ClassVar[type[BaseModel]] = FittedQProgramConfig
    budget_field: ClassVar[str | None] = "iterations"

    def setup(self) -> None:
        cfg: FittedQProgramConfig = self.config  # type: ignore[assignment]
        env = make_env(self.env_id, **cfg.env_kwargs)
        self.fqi = FittedQIteration(
            env.observation_space,
            env.action_space,
            FittedQConfig.model_validate(cfg.model_dump(include=set(FittedQConfig.model_fields))),
        )  # checks the spaces
        env.close()

    def _factory(self) -> Any:
        cfg: FittedQProgramConfig = self.config  # type: ignore[assignment]
        return lambda: make_env(self.env_id, **cfg.env_kwargs)

    def run(self, tracker: Tracker, out_dir: Path) -> ProgramResult:
        from core_rl.imitation.demonstrations import evaluate_actor

        cfg: FittedQProgramConfig = self.config  # type: ignore[assignment]
        data = Transitions.collect(self._factory(), cfg.n_transitions, seed=cfg.seed)
        result = self.fqi.fit(data, tracker)
        evaluation = evaluate_actor(
            lambda obs: self.fqi.greedy_policy(obs), self._factory(), cfg.eval_episodes, seed=cfg.seed + 10_000
        )
        metrics = {
            "mean_return": evaluation["mean_return"],
            "std_return": evaluation["std_return"],
            "iterations": float(result.iterations),
            "converged": float(result.converged),
            "n_transitions": float(len(data)),
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        files = ["q_function.pt"]
        torch.save(
            {"config": self.fqi.config.model_dump(mode="json"), "state_dict": self.fqi.q_net.state_dict()},
            out_dir / files[0],
        )
        if cfg.function == "tabular":
            table = self.fqi.q_table
            (out_dir / "q_table.json").write_text(json.dumps({"Q": table.tolist(), "env": self.env_id}))
            files.append("q_table.json")
            q_star = self._q_star()
            if q_star is not None:
                pairs = np.unique(np.stack([data.obs.long().numpy(), data.actions.numpy()], 1), axis=0)
                metrics["q_star_error"] = float(np.abs(table - q_star)[pairs[:, 0], pairs[:, 1]].max())
        tracker.log_metrics(metrics, result.iterations)
        return ProgramResult(metrics["mean_return"], result.iterations, metrics, files)

    def _q_star(self) -> np.ndarray | None:
        from core_rl.common.errors import DeepRLError
        from core_rl.tabular import TabularMDP, value_iteration

        cfg: FittedQProgramConfig = self.config  # type: ignore[assignment]
        try:
            mdp = TabularMDP.from_gym(self.env_id, cfg.gamma, **cfg.env_kwargs)
        except DeepRLError:
            return None  # no tabular model to compare with
        return value_iteration(mdp).Q


__all__ = ["FittedQProgram", "FittedQProgramConfig"]
