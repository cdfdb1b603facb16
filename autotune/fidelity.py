r"""Multi-fidelity tuning of core_rl agents: evaluate while training, let Optuna's pruner stop bad runs.

A trial that trains an agent is a sequence of rungs: every ``eval_every`` environment steps the
agent is evaluated (mean return of ``n_episodes`` deterministic episodes) and the value
:math:`v_k` is reported to the trial at step :math:`k \cdot \text{eval\_every}` — the rung, not the
agent's exact step count, so runs whose rollouts end at different steps still line up. The study's
pruner then decides from the reported curves of all trials whether the run continues:

* ``median`` (:class:`optuna.pruners.MedianPruner`): stop when :math:`v_k` is below the median of
  the other trials' values at the same step;
* ``sha`` (:class:`optuna.pruners.SuccessiveHalvingPruner`): at rung resources
  :math:`r_0\,\eta^{s}` keep only the top :math:`1/\eta` of the trials that reached it;
* ``hyperband`` (:class:`optuna.pruners.HyperbandPruner`): several successive-halving brackets
  with different :math:`r_0`, trials assigned to brackets by hash.

A pruned trial raises :class:`optuna.TrialPruned` from inside :meth:`Agent.learn
<core_rl.common.base.Agent.learn>` (the callback), so training stops at once; the worker records
it PRUNED. The environment steps each trial spent are kept in its user attribute ``env_steps``,
so the budget a pruner saves is measured, not estimated.

Usage, in an objective for ``deeprl tune run --objective mymodule:objective --pruner median``::

    def objective(params, trial):
        agent = PPO("CartPole-v1", {**params, "seed": 0})
        return train_with_pruning(agent, trial, total_steps=20_000, eval_every=4_000)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna

from core_rl.common.errors import ConfigError

if TYPE_CHECKING:
    from core_rl.common.base import Agent

PRUNERS = ("none", "median", "sha", "hyperband")
STEPS_ATTR = "env_steps"


def make_pruner(name: str, n_startup_trials: int = 4) -> optuna.pruners.BasePruner:
    """An Optuna pruner by its ``deeprl tune run --pruner`` name.

    ``n_startup_trials``: trials the median pruner lets finish before it prunes any.
    """
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=0)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    raise ConfigError(f"--pruner must be one of {', '.join(PRUNERS)}, got '{name}'")


class PruningCallback:
    """``Agent.learn(callback=...)`` that reports evaluation returns to ``trial`` and prunes.

    Every time the agent's step count passes a multiple of ``eval_every`` it calls
    ``evaluate(agent)`` (default: mean return of ``n_episodes`` deterministic episodes seeded with
    ``seed``), reports it at that multiple, records the steps spent in the trial's user attribute
    ``env_steps`` and raises :class:`optuna.TrialPruned` when the study's pruner says so.
    """

    def __init__(
        self,
        trial: optuna.Trial,
        eval_every: int,
        n_episodes: int = 5,
        seed: int = 123,
        evaluate: Callable[[Agent], float] | None = None,
    ):
        if eval_every <= 0:
            raise ConfigError(f"eval_every must be positive, got {eval_every}")
        if n_episodes <= 0:
            raise ConfigError(f"n_episodes must be positive, got {n_episodes}")
        self.trial = trial
        self.eval_every = int(eval_every)
        self.n_episodes = n_episodes
        self.seed = seed
        self._evaluate = evaluate
        self.next_rung = self.eval_every
        self.reports: list[tuple[int, float]] = []  # (rung step, value)

    def evaluate(self, agent: Agent) -> float:
        if self._evaluate is not None:
            return float(self._evaluate(agent))
        return float(agent.evaluate(n_episodes=self.n_episodes, seed=self.seed)["mean_return"])

    def __call__(self, agent: Agent, metrics: dict[str, float]) -> bool | None:
        if agent.num_timesteps < self.next_rung:
            return None
        rung = (agent.num_timesteps // self.eval_every) * self.eval_every
        self.next_rung = rung + self.eval_every
        value = self.evaluate(agent)
        self.reports.append((rung, value))
        self.trial.set_user_attr(STEPS_ATTR, int(agent.num_timesteps))
        self.trial.report(value, rung)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {rung}: evaluation return {value:.4g}")
        return None


def train_with_pruning(
    agent: Agent,
    trial: optuna.Trial,
    total_steps: int,
    eval_every: int,
    n_episodes: int = 5,
    seed: int = 123,
    close: bool = True,
) -> float:
    """Train ``agent`` for ``total_steps`` under a :class:`PruningCallback`; the final evaluation
    return (the last rung's, when training ends on one) is the trial's value."""
    callback = PruningCallback(trial, eval_every, n_episodes, seed)
    try:
        agent.learn(total_steps, callback=callback)
        trial.set_user_attr(STEPS_ATTR, int(agent.num_timesteps))
        if callback.reports and callback.reports[-1][0] >= total_steps:
            return callback.reports[-1][1]
        return callback.evaluate(agent)
    finally:
        if close:
            agent.close()


def ppo_cartpole_space(trial: optuna.Trial) -> dict[str, Any]:
    """The PPO-on-CartPole space of the pruning benchmark (and ``autotune.suites``' cartpole task)."""
    return {
        "lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
        "n_steps": trial.suggest_categorical("n_steps", [32, 64, 128]),
        "n_epochs": trial.suggest_int("n_epochs", 1, 10),
        "clip_range": trial.suggest_float("clip_range", 0.05, 0.4),
        "ent_coef": trial.suggest_float("ent_coef", 1e-5, 0.1, log=True),
        "gamma": trial.suggest_float("gamma", 0.9, 0.999),
    }


def ppo_cartpole_objective(
    total_steps: int = 12_000, eval_every: int = 3_000, n_episodes: int = 5
) -> Callable[[optuna.Trial], float]:
    """An objective (maximize) training core_rl's PPO on CartPole-v1 with pruning."""

    def objective(trial: optuna.Trial) -> float:
        from core_rl.trust_region.ppo import PPO

        config = {**ppo_cartpole_space(trial), "n_envs": 4, "batch_size": 64, "seed": 0}
        return train_with_pruning(PPO("CartPole-v1", config), trial, total_steps, eval_every, n_episodes)

    return objective
