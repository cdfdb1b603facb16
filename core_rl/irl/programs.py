r"""Tabular inverse RL as runnable programs (``deeprl train --algo maxent_irl --env FrozenLake-v1``).

The task is a finite env or a gridworld (see :mod:`core_rl.tabular.programs`). The expert is the
optimal policy of the task's true reward (value iteration), given to the IRL method either exactly
(``n_demos = 0``: its visitation) or as ``n_demos`` sampled demonstrations of ``demo_length``
steps. The true reward is never shown to the learner; it is used only to score the result:

* ``learned_return``: the real return (``mean_return``, in the env) of the optimal policy of the
  **learned** reward, beside ``expert_return`` — and ``return_ratio`` of their exact start values;
* MaxEnt IRL logs its feature gap, visitation gap and the expert's log-likelihood per iteration.

The learned reward is the artifact ``reward.json`` (``reward``: the (S, A) MDP reward, terminal
entries folded in, ready for ``TabularMDP.replace(r=...)`` or a reward wrapper; ``raw_reward``:
r_ψ(s, a) on every state; ``weights`` of a linear reward) and ``reward.npy`` (the MDP reward).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field

from core_rl.common.errors import ConfigError
from core_rl.common.program import Program, ProgramResult
from core_rl.common.tracking import Tracker
from core_rl.irl.max_margin import max_margin_irl
from core_rl.irl.maxent_irl import maxent_irl
from core_rl.tabular.dynamic_programming import policy_evaluation, value_iteration
from core_rl.tabular.programs import FiniteTaskConfig, evaluate_tabular_policy, load_finite_task


class IRLTaskConfig(FiniteTaskConfig):
    features: Literal["one_hot", "cell_type"] = Field(
        "one_hot", description="one_hot: a feature per state; cell_type: free/goal/hole (gridworld only)."
    )
    n_demos: int = Field(0, ge=0, description="Sampled expert demonstrations (0: the expert's exact visitation).")
    demo_length: int = Field(100, ge=1, description="Steps per demonstration.")


class MaxEntIRLProgramConfig(IRLTaskConfig):
    iterations: int = Field(300, ge=1, description="Gradient steps on the demonstrations' likelihood.")
    lr: float = Field(0.05, gt=0.0, description="Adam learning rate.")
    temperature: float = Field(1.0, gt=0.0, description="α of the soft-optimal model.")


class MaxMarginProgramConfig(IRLTaskConfig):
    method: Literal["svm", "projection"] = "svm"
    max_iterations: int = Field(50, ge=1, description="Policies generated (constraints / projection steps).")


class _IRLProgram(Program):
    def setup(self) -> None:
        cfg: IRLTaskConfig = self.config  # type: ignore[assignment]
        self.task = load_finite_task(self.env_id, cfg)
        if self.task.mdp.mu0 is None:
            raise ConfigError(f"env {self.env_id} has no initial state distribution to start the expert from")
        if cfg.features == "cell_type" and self.task.world is None:
            raise ConfigError("config field 'features': 'cell_type' needs --env gridworld[:NAME]")

    def features(self) -> np.ndarray:
        cfg: IRLTaskConfig = self.config  # type: ignore[assignment]
        if cfg.features == "cell_type":
            assert self.task.world is not None
            return self.task.world.cell_type_features()
        return np.eye(self.task.mdp.n_states)

    def expert(self) -> tuple[np.ndarray, object]:
        cfg: IRLTaskConfig = self.config  # type: ignore[assignment]
        policy = value_iteration(self.task.mdp).policy
        if cfg.n_demos == 0:
            return policy, policy
        return policy, self.task.mdp.sample(policy, cfg.n_demos, cfg.demo_length, seed=cfg.seed)

    def learn(self, features: np.ndarray, expert: object, tracker: Tracker) -> tuple[np.ndarray, dict, int]:
        raise NotImplementedError

    def run(self, tracker: Tracker, out_dir: Path) -> ProgramResult:
        cfg: IRLTaskConfig = self.config  # type: ignore[assignment]
        mdp = self.task.mdp
        phi = self.features()
        expert_policy, expert = self.expert()
        reward, extra, steps = self.learn(phi, expert, tracker)
        learned_policy = value_iteration(mdp.replace(r=reward)).policy
        learned = evaluate_tabular_policy(self.task, learned_policy, cfg)
        expert_eval = evaluate_tabular_policy(self.task, expert_policy, cfg)
        J_expert = float(mdp.mu0 @ policy_evaluation(mdp, expert_policy).V)  # type: ignore[operator]
        J_learned = float(mdp.mu0 @ policy_evaluation(mdp, learned_policy).V)  # type: ignore[operator]
        metrics = {
            "mean_return": learned["mean_return"],
            "learned_return": learned["mean_return"],
            "expert_return": expert_eval["mean_return"],
            "learned_start_value": J_learned,
            "expert_start_value": J_expert,
            "return_ratio": J_learned / J_expert if J_expert != 0 else float("nan"),
        }
        tracker.log_metrics(metrics, steps)
        out_dir.mkdir(parents=True, exist_ok=True)
        np.save(out_dir / "reward.npy", reward)
        payload = {
            "env": self.env_id,
            "algo": self.name,
            "shape": list(reward.shape),
            "reward": reward.tolist(),
            "features": cfg.features,
            "learned_policy": learned_policy.tolist(),
            **extra,
        }
        (out_dir / "reward.json").write_text(json.dumps(payload))
        files = ["reward.npy", "reward.json"]
        if self.task.world is not None:
            (out_dir / "learned_policy.txt").write_text(self.task.world.render_policy(learned_policy) + "\n")
            files.append("learned_policy.txt")
        return ProgramResult(learned["mean_return"], steps, metrics, files)


class MaxEntIRLProgram(_IRLProgram):
    r"""Exact tabular MaxEnt IRL (Ziebart): ascend :math:`\sum_{s,a}(\hat\rho_E - \rho_\psi)\nabla r_\psi`."""

    name = "maxent_irl"
    config_cls: ClassVar[type[BaseModel]] = MaxEntIRLProgramConfig
    budget_field: ClassVar[str | None] = "iterations"

    def learn(self, features: np.ndarray, expert: object, tracker: Tracker) -> tuple[np.ndarray, dict, int]:
        cfg: MaxEntIRLProgramConfig = self.config  # type: ignore[assignment]
        res = maxent_irl(
            self.task.mdp,
            features,
            expert,  # type: ignore[arg-type]
            iterations=cfg.iterations,
            lr=cfg.lr,
            temperature=cfg.temperature,
            seed=cfg.seed,
        )
        for i, h in enumerate(res.history):
            tracker.log_metrics(h, i)
        weights = res.weights
        extra = {
            "raw_reward": res.raw_reward.tolist(),
            "weights": None if weights is None else weights.tolist(),
            "feature_gap_first": res.history[0]["feature_gap"],
            "feature_gap_last": res.history[-1]["feature_gap"],
        }
        return res.reward, extra, cfg.iterations


class MaxMarginIRLProgram(_IRLProgram):
    r"""Max-margin IRL: :math:`w^\top\mu_E \ge w^\top\mu(\pi) + D(\pi,\pi_E)` (SVM) or Abbeel & Ng's
    projection, with value iteration as the inner RL."""

    name = "max_margin_irl"
    config_cls: ClassVar[type[BaseModel]] = MaxMarginProgramConfig
    budget_field: ClassVar[str | None] = "max_iterations"

    def learn(self, features: np.ndarray, expert: object, tracker: Tracker) -> tuple[np.ndarray, dict, int]:
        cfg: MaxMarginProgramConfig = self.config  # type: ignore[assignment]
        res = max_margin_irl(
            self.task.mdp,
            features,
            expert,  # type: ignore[arg-type]
            method=cfg.method,
            max_iterations=cfg.max_iterations,
        )
        for i, h in enumerate(res.history):
            tracker.log_metrics(h, i)
        extra = {"weights": res.w.tolist(), "converged": res.converged, "iterations": res.iterations}
        return res.reward, extra, res.iterations


__all__ = ["MaxEntIRLProgram", "MaxMarginIRLProgram", "MaxEntIRLProgramConfig", "MaxMarginProgramConfig"]
