r"""The tabular solvers as runnable programs (``deeprl train --algo value_iteration ...``).

The task is any finite gymnasium env (Discrete observations and actions with a tabular model
``env.unwrapped.P``: FrozenLake, Taxi, CliffWalking, ...), read exactly with
:meth:`TabularMDP.from_gym`, or a built-in gridworld: ``--env gridworld:NAME`` with NAME in
:data:`~core_rl.tabular.gridworld.LAYOUTS`, or ``--env gridworld`` with the rows in the config
field ``layout`` (``/`` or newlines between rows). The program solves the MDP exactly, then runs the
greedy policy: in the real env for a gymnasium task (undiscounted episode returns under the env's
own time limit), in the model for a gridworld. Artifacts: ``solution.json`` (V, Q, the greedy
policy) and, for a gridworld, ``policy.txt`` (arrows) and ``values.txt``.

Example::

    >>> import tempfile
    >>> from pathlib import Path
    >>> from core_rl.common.tracking import NullTracker
    >>> program = ValueIterationProgram("gridworld", {"layout": "S..#/.#.G/...H", "gamma": 0.9})
    >>> result = program.run(NullTracker(), Path(tempfile.mkdtemp()))
    >>> round(result.metrics["start_value"], 4), result.mean_return
    (0.729, 1.0)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from core_rl.common.errors import ConfigError
from core_rl.common.program import Program, ProgramResult
from core_rl.common.tracking import Tracker
from core_rl.tabular.dynamic_programming import DPResult, policy_iteration, q_iteration, value_iteration
from core_rl.tabular.gridworld import LAYOUTS, Gridworld, gridworld
from core_rl.tabular.mdp import TabularMDP

GRIDWORLD = "gridworld"


class FiniteTaskConfig(BaseModel):
    """Which finite MDP, and how the resulting policy is evaluated."""

    model_config = ConfigDict(extra="forbid")

    gamma: float = Field(0.99, gt=0.0, le=1.0, description="Discount γ of the MDP.")
    env_kwargs: dict[str, Any] = Field(default_factory=dict, description="gym.make kwargs (e.g. map_name).")
    layout: str | None = Field(None, description="Gridworld rows ('/' or newlines between rows) for --env gridworld.")
    slip: float = Field(0.0, ge=0.0, le=1.0, description="Gridworld: probability of slipping sideways.")
    step_reward: float = Field(0.0, description="Gridworld: reward of every step.")
    goal_reward: float = Field(1.0, description="Gridworld: reward of entering G.")
    hole_reward: float = Field(0.0, description="Gridworld: reward of entering H.")
    eval_episodes: int = Field(100, ge=1, description="Episodes the resulting policy is run for.")
    eval_steps: int = Field(200, ge=1, description="Gridworld: step limit of an evaluation episode.")
    seed: int = Field(0, ge=0)


@dataclass(frozen=True)
class FiniteTask:
    """A finite MDP and where it came from: a gymnasium env id (``gym_id``) or a gridworld."""

    mdp: TabularMDP
    world: Gridworld | None
    gym_id: str | None
    env_kwargs: dict[str, Any]


def load_finite_task(env: str, cfg: FiniteTaskConfig) -> FiniteTask:
    """The MDP of ``env`` (a finite gymnasium id or ``gridworld[:NAME]``), errors naming the cause."""
    if env == GRIDWORLD or env.startswith(GRIDWORLD + ":"):
        name = env.partition(":")[2]
        if name and cfg.layout:
            raise ConfigError(f"--env {env} names a layout; drop the config field 'layout' (or use --env gridworld)")
        layout = name or cfg.layout
        if not layout:
            raise ConfigError(
                f"--env gridworld needs a layout: --env gridworld:NAME (NAME in {sorted(LAYOUTS)}) "
                "or the config field 'layout' (rows separated by '/')"
            )
        world = gridworld(
            layout.replace("/", "\n"),
            slip=cfg.slip,
            gamma=cfg.gamma,
            step_reward=cfg.step_reward,
            goal_reward=cfg.goal_reward,
            hole_reward=cfg.hole_reward,
        )
        return FiniteTask(world.mdp, world, None, {})
    if cfg.layout is not None:
        raise ConfigError(f"config field 'layout' is for --env gridworld, not {env}")
    mdp = TabularMDP.from_gym(env, cfg.gamma, **cfg.env_kwargs)
    return FiniteTask(mdp, None, env, dict(cfg.env_kwargs))


def evaluate_tabular_policy(task: FiniteTask, policy: np.ndarray, cfg: FiniteTaskConfig) -> dict[str, float]:
    """``mean_return`` (undiscounted, per episode) of the deterministic ``policy`` (S,) — in the real
    env for a gymnasium task, in the model for a gridworld — and ``start_value`` μ0·V^π (exact,
    discounted)."""
    from core_rl.tabular.dynamic_programming import policy_evaluation

    mdp = task.mdp
    policy = np.asarray(policy, dtype=np.int64)
    out: dict[str, float] = {}
    if mdp.gamma < 1.0 or _proper(mdp, policy):
        out["start_value"] = float(mdp.mu0 @ policy_evaluation(mdp, policy).V) if mdp.mu0 is not None else np.nan
    if task.gym_id is not None:
        from core_rl.common.envs import make_env
        from core_rl.imitation.demonstrations import evaluate_actor

        kwargs = task.env_kwargs
        result = evaluate_actor(
            lambda obs: policy[np.asarray(obs, dtype=np.int64)],
            lambda: make_env(task.gym_id, **kwargs),  # type: ignore[arg-type]
            n_episodes=cfg.eval_episodes,
            seed=cfg.seed + 10_000,
        )
        out["mean_return"] = result["mean_return"]
        out["std_return"] = result["std_return"]
    else:
        runs = mdp.sample(policy, cfg.eval_episodes, cfg.eval_steps, seed=cfg.seed + 10_000)
        returns = runs.rewards.sum(axis=1)
        out["mean_return"] = float(returns.mean())
        out["std_return"] = float(returns.std())
    return out


def _proper(mdp: TabularMDP, policy: np.ndarray) -> bool:
    from core_rl.tabular.markov_chain import MarkovChain

    return all(mdp.terminal[c].all() for c in MarkovChain(mdp.P_pi(policy).T).closed_classes)


def write_solution(task: FiniteTask, result: DPResult, out_dir: Path) -> list[str]:
    """``solution.json`` (V, Q, policy) and, for a gridworld, ``policy.txt`` and ``values.txt``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "env": task.mdp.name,
        "gamma": task.mdp.gamma,
        "policy": result.policy.tolist(),
        "V": result.V.tolist(),
        "Q": result.Q.tolist(),
        "iterations": result.iterations,
        "converged": result.converged,
    }
    (out_dir / "solution.json").write_text(json.dumps(payload))
    files = ["solution.json"]
    if task.world is not None:
        (out_dir / "policy.txt").write_text(task.world.render_policy(result.policy) + "\n")
        (out_dir / "values.txt").write_text(task.world.render(result.V) + "\n")
        files += ["policy.txt", "values.txt"]
    return files


class TabularSolverConfig(FiniteTaskConfig):
    tol: float = Field(1e-10, gt=0.0, description="Stop when a sweep changes V (or Q) by at most tol.")
    max_iterations: int = Field(100_000, ge=1, description="Sweeps (policy iteration: improvement steps).")


class _TabularSolver(Program):
    config_cls: ClassVar[type[BaseModel]] = TabularSolverConfig
    budget_field: ClassVar[str | None] = "max_iterations"

    def setup(self) -> None:
        self.task = load_finite_task(self.env_id, self.config)  # type: ignore[arg-type]

    def solve(self, mdp: TabularMDP) -> DPResult:
        raise NotImplementedError

    def run(self, tracker: Tracker, out_dir: Path) -> ProgramResult:
        cfg: TabularSolverConfig = self.config  # type: ignore[assignment]
        result = self.solve(self.task.mdp)
        metrics = {
            "iterations": float(result.iterations),
            "converged": float(result.converged),
            "residual": result.residual,
            **evaluate_tabular_policy(self.task, result.policy, cfg),
        }
        tracker.log_metrics(metrics, result.iterations)
        files = write_solution(self.task, result, out_dir)
        return ProgramResult(metrics["mean_return"], result.iterations, metrics, files)


class ValueIterationProgram(_TabularSolver):
    r"""Value iteration :math:`V_{k+1}(s) = \max_a[r(s,a) + \gamma\sum_{s'}p(s'|s,a)V_k(s')]` on the
    exact model of a finite env or gridworld."""

    name = "value_iteration"

    def solve(self, mdp: TabularMDP) -> DPResult:
        cfg: TabularSolverConfig = self.config  # type: ignore[assignment]
        return value_iteration(mdp, tol=cfg.tol, max_iterations=cfg.max_iterations)


class QIterationProgram(_TabularSolver):
    r"""Q iteration :math:`Q_{k+1}(s,a) = r(s,a) + \gamma\sum_{s'}p(s'|s,a)\max_{a'}Q_k(s',a')`."""

    name = "q_iteration"

    def solve(self, mdp: TabularMDP) -> DPResult:
        cfg: TabularSolverConfig = self.config  # type: ignore[assignment]
        return q_iteration(mdp, tol=cfg.tol, max_iterations=cfg.max_iterations)


class PolicyIterationProgram(_TabularSolver):
    """Policy iteration: exact evaluation, greedy improvement, until the policy is stable."""

    name = "policy_iteration"

    def solve(self, mdp: TabularMDP) -> DPResult:
        cfg: TabularSolverConfig = self.config  # type: ignore[assignment]
        return policy_iteration(mdp, tol=cfg.tol, max_iterations=min(cfg.max_iterations, 100_000))


__all__ = [
    "FiniteTask",
    "FiniteTaskConfig",
    "TabularSolverConfig",
    "load_finite_task",
    "evaluate_tabular_policy",
    "write_solution",
    "ValueIterationProgram",
    "QIterationProgram",
    "PolicyIterationProgram",
]
