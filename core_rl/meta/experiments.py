r"""Experiments of the transfer / meta-RL / unsupervised-RL lectures (10/24–11/2), each plotted to a tracker.

1. :func:`run_rl2_bandits` — RL² vs a non-adaptive policy on *held-out* bandit tasks. Both are
   trained with PPO on the same task distribution for the same steps; the non-adaptive policy is a
   feed-forward policy that sees no history, so it can only learn the arm that is best on average.
   The plot shows the reward of each pull within a trial: RL²'s rises as it identifies the task.
2. :func:`run_domain_randomization` — zero-shot transfer: PPO trained on nominal CartPole vs PPO
   trained with physics randomized per episode, both evaluated on held-out physical parameters.
3. :func:`run_diayn` — DIAYN on the reward-free point mass: where each skill goes, and how well the
   states a skill visits identify it (discriminator accuracy, distances between skills' end points).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from core_rl.common.base import Agent
from core_rl.common.envs import make_vec_env
from core_rl.common.tracking import NullTracker, Tracker
from core_rl.meta.diayn import DIAYN
from core_rl.meta.domain_randomization import fixed, randomized
from core_rl.meta.envs import MetaTrial
from core_rl.meta.rl2 import RL2
from core_rl.trust_region.ppo import PPO

#: the bandit task family of the RL² experiment: one of 3 arms pays 0.9, the others 0.1; 10 pulls a trial
BANDIT_TASKS: dict[str, Any] = dict(n_arms=3, task_distribution="one_good", episodes_per_trial=10)
#: PPO settings shared by RL² and the non-adaptive baseline (λ = 0.3 as in RL²'s bandit experiments; γ
#: pinned so the experiment does not move with RL2Config's defaults, which are tuned for meta/BanditTrial-v0)
RL2_PPO: dict[str, Any] = dict(
    n_envs=32, n_steps=10, batch_size=320, n_epochs=4, lr=3e-3, gamma=0.99, gae_lambda=0.3, ent_coef=0.01
)
#: PPO on CartPole for the transfer experiment
CARTPOLE_PPO: dict[str, Any] = dict(n_envs=8, n_steps=128, batch_size=256, n_epochs=10, lr=1e-3, ent_coef=0.0)
#: randomized CartPole physics (training) and held-out test systems (longer/heavier poles than any trained on)
CARTPOLE_RANGES: dict[str, tuple[float, float]] = dict(length=(0.2, 2.0), force_mag=(5.0, 20.0), masspole=(0.05, 1.0))
CARTPOLE_HELD_OUT: tuple[dict[str, float], ...] = (
    dict(length=4.0),
    dict(length=5.0),
    dict(length=3.5, masspole=1.5),
    dict(length=4.0, force_mag=5.0),
)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---- RL² -----------------------------------------------------------------------------------------
def held_out_tasks(n: int, seed: int, **task_kwargs: Any) -> list[np.ndarray]:
    """``n`` tasks from the task distribution with a seed that training never uses."""
    env = MetaTrial("bandit", **{**BANDIT_TASKS, **task_kwargs})
    rng = np.random.default_rng(10_000_019 + seed)
    return [env.task_env.sample_task(rng) for _ in range(n)]


def trial_reward_curve(
    agent: Agent, env_factory: Any, n_trials: int, seed: int, deterministic: bool = False
) -> np.ndarray:
    """Mean reward of pull t of a trial, t = 1..H, over ``n_trials`` trials run in parallel."""
    vec = agent._wrap_env(make_vec_env(env_factory, n_trials, seed=None), training=False)
    obs, _ = vec.reset(seed=seed)
    rewards: list[np.ndarray] = []
    done = np.zeros(n_trials, dtype=bool)
    while not done.all():
        obs, r, term, trunc, _ = vec.step(agent.predict(obs, deterministic=deterministic))
        rewards.append(np.where(done, np.nan, r))
        done |= term | trunc
    vec.close()
    return np.nanmean(np.stack(rewards), axis=1)


def run_rl2_bandits(
    tracker: Tracker | None = None,
    steps: int = 40_000,
    seed: int = 0,
    n_held_out: int = 50,
    eval_trials: int = 200,
    task_kwargs: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train RL² and a non-adaptive PPO policy; mean trial return of each on held-out tasks."""
    tracker = tracker or NullTracker()
    ek = {**BANDIT_TASKS, **(task_kwargs or {})}
    held = held_out_tasks(n_held_out, seed, **(task_kwargs or {}))
    train_env = lambda: gym.make("meta/BanditTrial-v0", **ek)  # noqa: E731
    train_flat = lambda: gym.make("meta/BanditTrial-v0", history=False, **ek)  # noqa: E731
    test_env = lambda: gym.make("meta/BanditTrial-v0", tasks=held, **ek)  # noqa: E731
    test_flat = lambda: gym.make("meta/BanditTrial-v0", tasks=held, history=False, **ek)  # noqa: E731
    cfg = {**RL2_PPO, **(config or {}), "seed": seed}
    rl2 = RL2(train_env, cfg, tracker=tracker).learn(steps)
    flat = PPO(train_flat, cfg).learn(steps)
    out: dict[str, Any] = {}
    for name, agent, env in (("rl2", rl2, test_env), ("non_adaptive", flat, test_flat)):
        out[name] = agent.evaluate(eval_trials, env=env, deterministic=False, seed=seed + 777)["mean_return"]
        out[f"{name}_curve"] = trial_reward_curve(agent, env, eval_trials, seed + 777).tolist()
    p = np.stack(held)
    out["best_arm_per_pull"] = float(p.max(1).mean())  # knowing the task: always pull its best arm
    out["average_arm_per_pull"] = float(p.mean(0).max())  # the best single arm over all tasks
    tracker.log_metrics(
        {"rl2_held_out_return": out["rl2"], "non_adaptive_held_out_return": out["non_adaptive"]}, step=steps
    )
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    H = len(out["rl2_curve"])
    ax.plot(range(1, H + 1), out["rl2_curve"], "o-", label=f"RL² (trial return {out['rl2']:.2f})")
    ax.plot(
        range(1, H + 1), out["non_adaptive_curve"], "s-", label=f"non-adaptive (trial return {out['non_adaptive']:.2f})"
    )
    ax.axhline(out["best_arm_per_pull"], color="grey", ls="--", lw=1, label="task's best arm")
    ax.set_xlabel("pull within the trial")
    ax.set_ylabel("mean reward on held-out tasks")
    ax.legend()
    fig.tight_layout()
    tracker.log_figure(fig, "rl2_bandits.png")
    plt.close(fig)
    rl2.close()
    flat.close()
    return out


def thompson_sampling_returns(tasks: np.ndarray, n_pulls: int, repeats: int = 10, seed: int = 0) -> np.ndarray:
    r"""Trial returns of Beta-Bernoulli Thompson sampling, ``[len(tasks) · repeats]``, all trials at once.

    Each arm keeps a posterior :math:`\mathrm{Beta}(1 + s_i, 1 + f_i)` (successes, failures); each pull
    draws :math:`\tilde p_i` from every posterior and pulls :math:`\arg\max_i \tilde p_i`. Near the
    Bayes-optimal (Gittins) return on :math:`p_i \sim U(0, 1)` tasks, it is the reference an adaptive
    learner such as RL² is measured against (Duan et al. 2016, Table 1)."""
    p = np.asarray(tasks, dtype=np.float64)
    if p.ndim != 2 or np.any((p < 0) | (p > 1)):
        raise ValueError(f"tasks must be [n_tasks, n_arms] probabilities in [0, 1], got shape {p.shape}")
    if n_pulls < 1 or repeats < 1:
        raise ValueError(f"n_pulls and repeats must be at least 1, got {n_pulls} and {repeats}")
    rng = np.random.default_rng(seed)
    p = np.repeat(p, repeats, axis=0)
    rows = np.arange(len(p))
    wins, losses, total = np.ones_like(p), np.ones_like(p), np.zeros(len(p))
    for _ in range(n_pulls):
        arm = rng.beta(wins, losses).argmax(1)
        r = (rng.random(len(p)) < p[rows, arm]).astype(np.float64)
        wins[rows, arm] += r
        losses[rows, arm] += 1.0 - r
        total += r
    return total


def bandit_references(tasks: np.ndarray, n_pulls: int, seed: int = 0) -> dict[str, float]:
    """Expected trial returns on ``tasks`` (``[n, k]``) of the reference policies: uniformly ``random``
    arms (n_pulls · mean p), the ``best_fixed_arm`` (the best a non-adaptive policy can do: one arm for
    all tasks, n_pulls · max_i mean_tasks p_i), ``thompson`` sampling (adaptive, near Bayes-optimal) and
    the ``oracle`` that knows each task's best arm (n_pulls · mean max_i p_i)."""
    p = np.asarray(tasks, dtype=np.float64)
    return {
        "random": float(n_pulls * p.mean()),
        "best_fixed_arm": float(n_pulls * p.mean(0).max()),
        "thompson": float(thompson_sampling_returns(p, n_pulls, seed=seed).mean()),
        "oracle": float(n_pulls * p.max(1).mean()),
    }


def rl2_default_benchmark(
    algo: str = "rl2",
    steps: int | None = None,
    seed: int = 0,
    n_held_out: int = 200,
    eval_trials: int = 1000,
    env_id: str = "meta/BanditTrial-v0",
) -> dict[str, Any]:
    """Train ``algo`` with its *default* config on the registered bandit meta-task ``env_id`` for
    ``steps`` (default: :data:`core_rl.meta.rl2.KNOWN_TO_LEARN` budget) and return its mean trial return
    on ``n_held_out`` held-out tasks beside :func:`bandit_references` on the same tasks."""
    from core_rl import make_agent
    from core_rl.meta.rl2 import KNOWN_TO_LEARN

    if steps is None and algo not in KNOWN_TO_LEARN:
        raise ValueError(f"no known budget for '{algo}' (known: {', '.join(KNOWN_TO_LEARN)}); pass steps")
    steps = int(steps if steps is not None else KNOWN_TO_LEARN[algo]["steps"])
    probe = gym.make(env_id).unwrapped
    if not isinstance(probe, MetaTrial) or not hasattr(probe.task_env, "n_arms"):
        raise ValueError(f"{env_id} is not a bandit meta-task (a MetaTrial of a BernoulliBandit)")
    bandit, pulls = probe.task_env, probe.episodes_per_trial
    rng = np.random.default_rng(10_000_019 + seed)  # a stream training never draws from
    held = [bandit.sample_task(rng) for _ in range(n_held_out)]
    agent = make_agent(algo, env_id, {"seed": seed}).learn(steps)
    test_env = lambda: gym.make(env_id, tasks=held)  # noqa: E731
    out: dict[str, Any] = {"algo": algo, "steps": steps, "seed": seed, "n_pulls": pulls}
    out[algo] = agent.evaluate(eval_trials, env=test_env, deterministic=False, seed=seed + 777)["mean_return"]
    out.update(bandit_references(np.stack(held), pulls, seed=seed))
    agent.close()
    return out


# ---- domain randomization ----------------------------------------------------------------------
def run_domain_randomization(
    tracker: Tracker | None = None,
    env_id: str = "CartPole-v1",
    steps: int = 40_960,
    seed: int = 0,
    ranges: Mapping[str, tuple[float, float]] = CARTPOLE_RANGES,
    held_out: Sequence[Mapping[str, float]] = CARTPOLE_HELD_OUT,
    config: Mapping[str, Any] | None = None,
    eval_episodes: int = 8,
) -> dict[str, Any]:
    """Mean evaluation return of nominal vs randomized training on each held-out parameter set."""
    tracker = tracker or NullTracker()
    cfg = {**CARTPOLE_PPO, **(config or {}), "seed": seed}
    agents = {"nominal": PPO(env_id, cfg), "randomized": PPO(randomized(env_id, ranges), cfg)}
    out: dict[str, Any] = {"held_out": [dict(h) for h in held_out]}
    for name, agent in agents.items():
        agent.learn(steps)
        out[name] = [
            agent.evaluate(eval_episodes, env=fixed(env_id, h), seed=seed + 555)["mean_return"] for h in held_out
        ]
        out[f"{name}_nominal_env"] = agent.evaluate(eval_episodes, env=env_id, seed=seed + 555)["mean_return"]
        agent.close()
    out["nominal_mean"], out["randomized_mean"] = float(np.mean(out["nominal"])), float(np.mean(out["randomized"]))
    tracker.log_metrics(
        {"nominal_held_out_return": out["nominal_mean"], "randomized_held_out_return": out["randomized_mean"]},
        step=steps,
    )
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    x = np.arange(len(held_out))
    ax.bar(x - 0.2, out["nominal"], 0.4, label="trained on nominal")
    ax.bar(x + 0.2, out["randomized"], 0.4, label="trained randomized")
    ax.set_xticks(x, [", ".join(f"{k}={v:g}" for k, v in h.items()) for h in held_out])
    ax.set_ylabel("return on the held-out system")
    ax.set_title(f"{env_id}: zero-shot transfer")
    ax.legend()
    fig.tight_layout()
    tracker.log_figure(fig, "domain_randomization.png")
    plt.close(fig)
    return out


# ---- DIAYN ---------------------------------------------------------------------------------------
#: SAC settings for DIAYN on the point mass
DIAYN_POINT: dict[str, Any] = dict(
    n_skills=4,
    hidden_sizes=(64, 64),
    disc_hidden_sizes=(64, 64),
    batch_size=128,
    learning_starts=500,
    lr=1e-3,
    disc_lr=1e-3,
)


def run_diayn(
    tracker: Tracker | None = None,
    steps: int = 6000,
    seed: int = 0,
    env: Any = "meta/Point-v0",
    config: Mapping[str, Any] | None = None,
    episodes_per_skill: int = 10,
) -> dict[str, Any]:
    """Train DIAYN; measure how distinguishable the skills' states are and plot their trajectories."""
    tracker = tracker or NullTracker()
    agent = DIAYN(env, {**DIAYN_POINT, **(config or {}), "seed": seed}, tracker=tracker).learn(steps)
    greedy = agent.skill_rollouts(1, deterministic=True)  # [K, 1, T, d]
    sampled = agent.skill_rollouts(episodes_per_skill, deterministic=False)  # [K, E, T, d]
    ends = greedy[:, 0, -1]
    dist = np.linalg.norm(ends[:, None] - ends[None], axis=-1)
    K = ends.shape[0]
    out = {
        "end_points": ends.tolist(),
        "min_pairwise_distance": float(dist[~np.eye(K, dtype=bool)].min()),
        "discriminator_accuracy": agent.discriminator_accuracy(sampled[:, :, 1:]),
        "nearest_mean_accuracy": nearest_mean_accuracy(sampled[:, :, -1]),
        "chance": 1.0 / K,
    }
    tracker.log_metrics(
        {
            "diayn_discriminator_accuracy": out["discriminator_accuracy"],
            "diayn_min_pairwise_distance": out["min_pairwise_distance"],
        },
        step=steps,
    )
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for k in range(K):
        for e in range(sampled.shape[1]):
            ax.plot(sampled[k, e, :, 0], sampled[k, e, :, 1], color=f"C{k}", alpha=0.3, lw=0.8)
        ax.plot(greedy[k, 0, :, 0], greedy[k, 0, :, 1], color=f"C{k}", lw=2, label=f"skill {k}")
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-1.05, 1.05)
    ax.set_aspect("equal")
    ax.set_title("DIAYN skills (no reward)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    tracker.log_figure(fig, "diayn_skills.png")
    plt.close(fig)
    agent.close()
    return out


def nearest_mean_accuracy(points: np.ndarray) -> float:
    """Leave-one-out nearest-class-mean accuracy of skill-labelled points ``[K, E, d]`` (chance 1/K)."""
    K, E, _ = points.shape
    sums = points.sum(1)  # [K, d]
    correct = 0
    for k in range(K):
        means = np.repeat(sums[None] / E, E, 0)  # [E, K, d]
        means[:, k] = (sums[k][None] - points[k]) / max(E - 1, 1)  # leave the point itself out
        d = np.linalg.norm(points[k][:, None] - means, axis=-1)  # [E, K]
        correct += int((d.argmin(1) == k).sum())
    return correct / (K * E)


__all__ = [
    "BANDIT_TASKS",
    "RL2_PPO",
    "CARTPOLE_PPO",
    "CARTPOLE_RANGES",
    "CARTPOLE_HELD_OUT",
    "DIAYN_POINT",
    "held_out_tasks",
    "trial_reward_curve",
    "run_rl2_bandits",
    "thompson_sampling_returns",
    "bandit_references",
    "rl2_default_benchmark",
    "run_domain_randomization",
    "run_diayn",
    "nearest_mean_accuracy",
]
