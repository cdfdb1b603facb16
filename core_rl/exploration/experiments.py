r"""The exploration experiment of the notes (10/17–10/19): who finds the far reward of the chain?

On ``explore/Chain-v0`` (N states, goal at the far end, a distractor at the start; see
:mod:`core_rl.exploration.envs`) every method is the same DQN (same network, replay, N-step target,
budget) with a different way to explore:

* ``epsilon_greedy`` — ε decayed from 1 to 0.05 (undirected dithering);
* ``count`` — optimism, r + β/√N(s') (exact counts for one-hot states, SimHash for thermometer codes);
* ``bootstrapped`` — Thompson sampling with a bootstrapped Q-ensemble, one head per episode;
* ``disagreement`` — information gain, r + β·(ensemble disagreement of a learned dynamics model).

Every ``eval_every`` env steps the greedy policy is run once on the (deterministic) chain; a run
*succeeds* when that policy collects the goal reward after the agent has found the goal itself in
training, and its *steps to goal* are the env steps trained until then. :func:`run_chain_exploration` returns, per method, the success rate over seeds
and the steps to goal of each seed (None for a failure), and logs a two-panel figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from core_rl.common.base import Agent
from core_rl.common.errors import ConfigError
from core_rl.common.tracking import NullTracker, Tracker
from core_rl.exploration.agents import BonusDQN
from core_rl.exploration.bonus import ExplorationBonusWrapper
from core_rl.exploration.bootstrapped_dqn import BootstrappedDQN

#: the DQN every method shares on the chain (n-step targets carry the far reward back quickly)
CHAIN_DQN: dict[str, Any] = dict(
    lr=1e-3,
    learning_starts=64,
    train_freq=2,
    gradient_steps=1,
    batch_size=64,
    target_update_interval=50,
    buffer_size=10_000,
    hidden_sizes=(64,),
    n_step=3,
    exploration_fraction=0.5,
)

METHODS: tuple[str, ...] = ("epsilon_greedy", "count", "bootstrapped", "disagreement")


def method_agent(method: str, env: Any, seed: int, obs: str, overrides: Mapping[str, Any] | None = None) -> Agent:
    """The agent of one exploration ``method`` on ``env`` (a chain with ``obs`` observations)."""
    cfg: dict[str, Any] = {**CHAIN_DQN, "seed": seed}
    if method == "epsilon_greedy":
        cls: type[Agent] = BonusDQN
        cfg.update(bonus="none")
    elif method == "count":
        cls = BonusDQN
        cfg.update(bonus="count" if obs == "onehot" else "simhash", bonus_beta=0.1, bonus_shift=1.0)
    elif method == "disagreement":
        cls = BonusDQN
        cfg.update(
            bonus="disagreement",
            bonus_beta=0.1,
            bonus_shift=1.0,
            disagreement_fit_every=100,
            disagreement_fit_steps=100,
            disagreement_hidden=(32,),
        )
    elif method == "bootstrapped":
        cls = BootstrappedDQN
        cfg.update(n_heads=10, bootstrap_prob=0.5)
    else:
        raise ConfigError(f"unknown exploration method '{method}'; known: {', '.join(METHODS)}")
    cfg.update(overrides or {})
    return cls(env, cfg)


def steps_to_goal(agent: Agent, budget: int, eval_every: int = 300, goal_return: float = 1.0) -> int | None:
    """Train ``agent`` for up to ``budget`` steps; the step count at which its greedy policy first
    reached ``goal_return`` in one evaluation episode, counted only once the agent has itself collected
    the goal reward in training (so a lucky initialization never counts); None if that never happened."""
    found: list[int] = []
    next_eval = [eval_every]
    seen = {"episodes": 0, "discovered": False}

    def check(a: Agent, _metrics: dict[str, float]) -> bool:
        new = a.episodes_done - seen["episodes"]
        if new > 0 and not seen["discovered"]:
            wrapper = getattr(a, "env", None)
            returns = wrapper.extrinsic_returns if isinstance(wrapper, ExplorationBonusWrapper) else a.episode_returns
            seen["discovered"] = any(r >= goal_return for r in list(returns)[-new:])
        seen["episodes"] = a.episodes_done
        if a.num_timesteps < next_eval[0]:
            return True
        next_eval[0] += eval_every
        if seen["discovered"] and a.evaluate(1, n_envs=1)["mean_return"] >= goal_return:
            found.append(a.num_timesteps)
            return False
        return True

    agent.learn(budget, callback=check)
    return found[0] if found else None


def run_chain_exploration(
    tracker: Tracker | None = None,
    methods: Sequence[str] = METHODS,
    seeds: Sequence[int] = (0, 1, 2),
    budget: int = 3000,
    n: int = 20,
    obs: str = "thermometer",
    eval_every: int = 300,
    random_actions: bool = False,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Success rate and steps to goal of each method on an ``n``-state chain (see the module docstring).

    ``seed`` (as ``deeprl experiment`` passes it), when given, replaces ``seeds`` by
    ``seed, seed + 1, ...`` (as many as ``seeds`` holds).
    """
    tracker = tracker or NullTracker()
    if seed is not None:
        seeds = [int(seed) + i for i in range(len(seeds))]
    results: dict[str, dict[str, Any]] = {}
    for method in methods:
        steps: list[int | None] = []
        for seed in seeds:
            env = lambda: gym.make("explore/Chain-v0", n=n, obs=obs, random_actions=random_actions)  # noqa: E731
            agent = method_agent(method, env, seed, obs, (overrides or {}).get(method))
            steps.append(steps_to_goal(agent, budget, eval_every, goal_return=1.0))
            agent.close()
        solved = [s for s in steps if s is not None]
        results[method] = {
            "success_rate": len(solved) / len(steps),
            "steps_to_goal": steps,
            "median_steps_to_goal": float(np.median(solved)) if solved else float("nan"),
        }
        tracker.log_metrics({f"{method}.success_rate": results[method]["success_rate"]}, step=0)
    _plot(tracker, results, budget, n)
    return results


def _plot(tracker: Tracker, results: dict[str, dict[str, Any]], budget: int, n: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.bar(names, [results[m]["success_rate"] for m in names], color="tab:blue")
    ax1.set_ylim(0, 1.05)
    ax1.set_ylabel("success rate over seeds")
    ax1.set_title(f"{n}-state chain, budget {budget} steps")
    for i, m in enumerate(names):
        ys = [s if s is not None else budget * 1.05 for s in results[m]["steps_to_goal"]]
        ax2.scatter(
            [i] * len(ys), ys, c=["tab:green" if s is not None else "tab:red" for s in results[m]["steps_to_goal"]]
        )
    ax2.axhline(budget, color="grey", ls="--", lw=1)
    ax2.set_xticks(range(len(names)), names)
    ax2.set_ylabel("env steps to goal (red: not within budget)")
    ax2.set_title("greedy policy reaches the goal after")
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    tracker.log_figure(fig, "chain_exploration.png")
    plt.close(fig)


__all__ = ["CHAIN_DQN", "METHODS", "method_agent", "steps_to_goal", "run_chain_exploration"]
