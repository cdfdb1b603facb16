r"""Two experiments of the notes (9/14), each logging its plot to a :class:`Tracker`.

1. **Overestimation** (":math:`actual \ne predicted` Q-values, too optimistic due to noise"): during
   training of DQN and double DQN on the same env and seeds, compare the *predicted* value of the
   states the greedy policy visits, :math:`\frac1{|\mathcal D|}\sum_{s\in\mathcal D}\max_a Q_\phi(s,a)`,
   with the *actual* discounted Monte Carlo return from those states,
   :math:`\frac1{|\mathcal D|}\sum_{s_t\in\mathcal D}\sum_{t'\ge t}\gamma^{t'-t} r_{t'}`.
   Because :math:`\mathbb E[\max_a \hat Q] \ge \max_a \mathbb E[\hat Q]`, DQN's prediction sits above
   the truth; double Q-learning decorrelates the argmax from the evaluation and shrinks the gap.
   The evaluation episodes run past the env's usual time limit by a tail long enough
   (:math:`\gamma^{\text{tail}} \le 10^{-3}`) that the Monte Carlo returns of the counted states
   (those before the usual limit) are not cut short.

2. **N-step returns** ("faster, less biased if the Q-function is not great"): the learning curve
   of DQN with :math:`y_t = \sum_{t'=t}^{t+N-1}\gamma^{t'-t}r_{t'} + \gamma^N\max_a Q_{\phi'}(s_{t+N},a)`
   for N ∈ {1, 3, 5} on one env.

``run_overestimation(tracker, steps, seed)`` and ``run_nstep_sweep(tracker, steps, seed)`` return
the numbers they plot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from core_rl.common.errors import ConfigError
from core_rl.common.returns import reward_to_go
from core_rl.common.tracking import Tracker
from core_rl.q_learning.dqn import DQN

#: DQN on CartPole (after RL-Zoo's tuned DQN, with 3-step returns; target copy after each training phase)
CARTPOLE_DQN: dict[str, Any] = dict(
    lr=2.3e-3,
    batch_size=64,
    buffer_size=100_000,
    learning_starts=1000,
    gamma=0.99,
    target_update_interval=128,
    train_freq=256,
    gradient_steps=128,
    exploration_fraction=0.16,
    exploration_final_eps=0.04,
    hidden_sizes=(256, 256),
    n_step=3,
)


def _episode_limit(env_id: str) -> int:
    spec = gym.spec(env_id)
    return int(spec.max_episode_steps) if spec.max_episode_steps else 1000


def predicted_vs_actual(agent: DQN, env_id: str, episodes: int, seed: int) -> tuple[float, float]:
    """Mean of max_a Q_φ(s,a) and of the discounted return G from the states the greedy policy visits."""
    gamma = agent.config.gamma
    limit = _episode_limit(env_id)
    tail = int(math.ceil(math.log(1e-3) / math.log(gamma))) if gamma < 1 else 0
    env = gym.make(env_id, max_episode_steps=limit + tail)
    states: list[np.ndarray] = []
    returns: list[np.ndarray] = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        visited, rewards = [obs], []
        while True:
            obs, r, terminated, truncated, _ = env.step(int(agent.predict(obs, deterministic=True)))
            rewards.append(float(r))
            if terminated or truncated:
                break
            visited.append(obs)
        count = min(limit, len(rewards))  # states with a long enough Monte Carlo tail
        states.append(np.asarray(visited[:count]))
        rewards_t = torch.tensor(rewards, dtype=torch.float64).unsqueeze(-1)  # [T, 1]
        returns.append(reward_to_go(rewards_t, torch.zeros_like(rewards_t), gamma)[:count, 0].numpy())
    env.close()
    with torch.no_grad():
        q = agent.q_net(agent._obs_tensor(np.concatenate(states)))
    return float(q.max(-1).values.mean()), float(np.concatenate(returns).mean())


def _figure() -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    return fig, fig.add_subplot(1, 1, 1)


def run_overestimation(
    tracker: Tracker,
    steps: int = 50_000,
    seed: int = 0,
    env_id: str = "CartPole-v1",
    n_evals: int = 10,
    eval_episodes: int = 2,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Predicted Q vs actual discounted return over training, DQN vs double DQN (same env, same seed).

    Returns ``{"env_id", "dqn": {"steps", "predicted_q", "true_return", "overestimation"}, "double_dqn": ...}``
    and logs ``overestimation.png`` plus the metrics ``{algo}/predicted_q`` and ``{algo}/true_return``.
    """
    if steps < 1 or n_evals < 1 or eval_episodes < 1:
        raise ConfigError("steps, n_evals and eval_episodes must be positive")
    base = {**(CARTPOLE_DQN if config is None else dict(config)), "seed": seed}
    results: dict[str, Any] = {"env_id": env_id}
    every = max(1, steps // n_evals)
    for label, double_q in (("dqn", False), ("double_dqn", True)):
        agent = DQN(env_id, {**base, "double_q": double_q})
        curve: dict[str, list[float]] = {"steps": [], "predicted_q": [], "true_return": []}
        next_eval = [every]

        def evaluate(a: DQN, curve: dict[str, list[float]] = curve, label: str = label) -> None:
            predicted, actual = predicted_vs_actual(a, env_id, eval_episodes, seed + 1000)
            curve["steps"].append(float(a.num_timesteps))
            curve["predicted_q"].append(predicted)
            curve["true_return"].append(actual)
            tracker.log_metrics(
                {f"{label}/predicted_q": predicted, f"{label}/true_return": actual}, step=a.num_timesteps
            )

        def callback(
            a: DQN, metrics: dict[str, float], next_eval: list[int] = next_eval, evaluate: Any = evaluate
        ) -> None:
            if a.num_timesteps >= next_eval[0]:
                evaluate(a)
                next_eval[0] += every

        agent.learn(steps, callback=callback)
        if not curve["steps"] or curve["steps"][-1] < agent.num_timesteps:
            evaluate(agent)
        curve["overestimation"] = [p - t for p, t in zip(curve["predicted_q"], curve["true_return"])]
        results[label] = curve
        agent.close()

    fig, ax = _figure()
    for label, color in (("dqn", "tab:red"), ("double_dqn", "tab:blue")):
        c = results[label]
        ax.plot(c["steps"], c["predicted_q"], color=color, label=f"{label}: predicted max_a Q(s,a)")
        ax.plot(c["steps"], c["true_return"], color=color, linestyle="--", label=f"{label}: actual discounted return")
    ax.set_xlabel("env steps")
    ax.set_ylabel("value of visited states")
    ax.set_title(f"Q overestimation on {env_id} (seed {seed})")
    ax.legend(fontsize=8)
    tracker.log_figure(fig, "overestimation.png")
    return results


def run_nstep_sweep(
    tracker: Tracker,
    steps: int = 30_000,
    seed: int = 0,
    env_id: str = "CartPole-v1",
    n_values: Sequence[int] = (1, 3, 5),
    threshold: float = 195.0,
    window: int = 20,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Learning speed of DQN vs N of the N-step target, same env and seed, ``steps`` each.

    For each N: the curve of the mean return of the last ``window`` training episodes after each
    iteration, its mean over training (area under the curve, the speed summary), the first step at
    which it reached ``threshold`` (None if never) and a final greedy evaluation. Logs
    ``nstep_sweep.png`` and the metric ``n{N}/episode_return``.
    """
    if steps < 1 or window < 1 or not n_values or min(n_values) < 1:
        raise ConfigError("steps and window must be positive and n_values non-empty with N ≥ 1")
    base = {**(CARTPOLE_DQN if config is None else dict(config)), "seed": seed}
    results: dict[str, Any] = {"env_id": env_id, "threshold": threshold}
    for n in n_values:
        agent = DQN(env_id, {**base, "n_step": int(n)})
        curve: dict[str, list[float]] = {"steps": [], "returns": []}

        def callback(a: DQN, metrics: dict[str, float], curve: dict[str, list[float]] = curve, n: int = n) -> None:
            if a.episode_returns:
                recent = float(np.mean(list(a.episode_returns)[-window:]))
                curve["steps"].append(float(a.num_timesteps))
                curve["returns"].append(recent)
                tracker.log_metrics({f"n{n}/episode_return": recent}, step=a.num_timesteps)

        agent.learn(steps, callback=callback)
        reached = [s for s, r in zip(curve["steps"], curve["returns"]) if r >= threshold]
        results[f"n{n}"] = {
            **curve,
            "mean_return_over_training": float(np.mean(curve["returns"])) if curve["returns"] else float("nan"),
            "steps_to_threshold": reached[0] if reached else None,
            "final_eval_return": agent.evaluate(10)["mean_return"],
        }
        agent.close()

    fig, ax = _figure()
    for n in n_values:
        c = results[f"n{n}"]
        ax.plot(c["steps"], c["returns"], label=f"N = {n}")
    ax.axhline(threshold, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"mean return (last {window} episodes)")
    ax.set_title(f"DQN with N-step returns on {env_id} (seed {seed})")
    ax.legend()
    tracker.log_figure(fig, "nstep_sweep.png")
    return results


__all__ = ["CARTPOLE_DQN", "predicted_vs_actual", "run_overestimation", "run_nstep_sweep"]
