"""``safety/Recommender-v0``: a slate recommender (RecSim NG twin) with a cap on clickbait exposure.

The costs are the clickbait items of the served slate, read off the observation; the task is seeded;
the greedy-engagement policy violates the limit while a quality filter keeps most of the return; and
PPO-Lag learns to meet the limit where unconstrained PPO (which earns more) does not. CPO and
TRPO-Lag take their KL-checked steps through the Plackett–Luce slate policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import safety  # noqa: F401  (registers the task)
from core_rl.common.envs import make_vec_env
from core_rl.common.errors import ConfigError
from core_rl.common.spaces import Slate
from core_rl.trust_region.common import flat_params, policy_params
from safety.cmdp import CostMonitor, read_costs
from safety.cpo import CPO
from safety.envs.recommender import (
    COST_LIMIT,
    ClickbaitRecommenderVectorEnv,
    greedy_engagement_slates,
    quality_filtered_slates,
)
from safety.parts import CostMonitorPart
from safety.ppo_lag import PPOLag
from safety.trpo_lag import TRPOLag
from safety.unconstrained import UnconstrainedPPO
from tests.seeding import seed as shifted

ENV_ID = "safety/Recommender-v0"
C, F = 10, 4  # candidates, features per candidate (2 topic features, quality, length)


def candidate_table(obs: np.ndarray) -> np.ndarray:
    """``[N, C, F]`` from the flat observation (the user's 2 interest numbers come first)."""
    return obs[:, 2:].reshape(obs.shape[0], C, F)


def play(policy, n_envs: int = 64, episodes: int = 2, seed: int = 0) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Mean episodic return and clickbait cost of ``policy(env) -> [N, 2]`` over whole episodes."""
    env = make_vec_env(ENV_ID, n_envs, seed=seed)
    monitor = CostMonitor(env, ("cost",), [COST_LIMIT])
    monitor.reset(seed=seed)
    for _ in range(30 * episodes):
        monitor.step(policy(env))
    return monitor.mean_episode_return, float(monitor.mean_episode_cost[0])


def test_costs_are_the_clickbait_items_shown_and_reach_the_cost_monitor() -> None:
    env = make_vec_env(ENV_ID, 8, seed=shifted(0))
    assert isinstance(env, ClickbaitRecommenderVectorEnv) and isinstance(env.single_action_space, Slate)
    assert env.metadata["cost_keys"] == ("cost", "cost_clickbait")
    monitor = CostMonitor(env, ("cost", "cost_clickbait"), [COST_LIMIT, COST_LIMIT])
    obs, _ = monitor.reset(seed=0)
    assert obs.shape == (8, 2 + C * F)
    rng = np.random.default_rng(0)
    episode = np.zeros(8)
    finished: list[np.ndarray] = []
    for t in range(65):
        slate = np.argsort(rng.random((8, C)), 1)[:, :2]
        table = candidate_table(obs)
        quality = np.take_along_axis(table[:, :, 2], slate, 1)
        expected_cost = (quality < -0.5).sum(1)
        obs, reward, terminated, truncated, info = monitor.step(slate)
        done = terminated | truncated
        np.testing.assert_array_equal(monitor.last_costs, np.stack([expected_cost] * 2, 1))
        np.testing.assert_array_equal(read_costs(info, ["cost_clickbait"], 8, done)[:, 0], expected_cost)
        # reward: σ(−q)·length of the clicked item, 0 without a click
        step = info["final_info"] if done.any() else info
        clicked, pos = np.asarray(step["clicked"]), np.asarray(step["choice"]).clip(max=1)
        chosen = np.take_along_axis(table, slate[:, :, None], 1)[np.arange(8), pos]
        np.testing.assert_allclose(
            reward, np.where(clicked, 1 / (1 + np.exp(chosen[:, 2])) * chosen[:, 3], 0.0), rtol=1e-5
        )
        episode += expected_cost
        assert done.all() == ((t + 1) % 30 == 0) and not terminated.any()
        if done.any():
            finished.extend(episode[done])
            episode[done] = 0
    assert monitor.episodes == 16
    np.testing.assert_allclose(np.stack(monitor.episode_costs)[:, 1], finished)


def test_task_is_seeded_and_configurable() -> None:
    def run(seed: int) -> tuple[np.ndarray, np.ndarray]:
        env = make_vec_env(ENV_ID, 4, seed=seed)
        obs, rewards = [env.reset(seed=seed)[0]], []
        for _ in range(35):
            o, r, *_ = env.step(quality_filtered_slates(env))
            obs.append(o)
            rewards.append(r)
        return np.stack(obs), np.stack(rewards)

    a, b, c = run(5), run(5), run(6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    # the threshold moves the cost: everything is clickbait below +10
    strict = make_vec_env(ENV_ID, 4, seed=shifted(0), env_kwargs={"clickbait_threshold": 10.0})
    strict.reset(seed=0)
    assert (strict.step(strict.action_space.sample())[4]["cost"] == 2).all()
    short = make_vec_env(ENV_ID, 2, seed=shifted(0), env_kwargs={"max_episode_steps": 5})
    assert [short.step(short.action_space.sample())[3].all() for _ in range(5)] == [False] * 4 + [True]
    with pytest.raises(ConfigError, match="max_episode_steps"):
        ClickbaitRecommenderVectorEnv(2, horizon=20)


def test_greedy_engagement_violates_the_limit_and_a_quality_filter_keeps_most_return() -> None:
    greedy_return, greedy_cost = play(greedy_engagement_slates)
    filtered_return, filtered_cost = play(quality_filtered_slates)
    random_return, random_cost = play(lambda env: env.action_space.sample())
    assert greedy_cost > 3 * COST_LIMIT  # ≈ 48 of 60 items shown are clickbait
    assert filtered_cost < 0.1 * COST_LIMIT  # ≈ 0.1: the filter is feasible
    assert 1.5 * COST_LIMIT < random_cost < greedy_cost
    # the limit costs engagement, but not all of it
    assert 0.75 * greedy_return < filtered_return < greedy_return - 2.0
    assert random_return < greedy_return


@pytest.fixture(scope="module")
def trained() -> dict[str, object]:
    """PPO-Lag and unconstrained PPO, 120k steps each (≈ 20 s each on one core)."""
    torch.set_num_threads(1)
    config = dict(
        n_envs=16,
        n_steps=60,
        batch_size=240,
        n_epochs=10,
        lr=1e-3,
        gamma=0.9,
        hidden_sizes=(64, 64),
        cost_limit=COST_LIMIT,
        seed=shifted(0),
        torch_threads=1,
    )
    lambdas: list[float] = []
    lag = PPOLag(ENV_ID, **config).learn(120_000, callback=lambda agent, m: lambdas.append(m["lambda"]))
    ppo = UnconstrainedPPO(ENV_ID, **config).learn(120_000)
    return {"lag": lag, "ppo": ppo, "lambdas": lambdas}


def test_ppo_lag_meets_the_clickbait_limit(trained: dict[str, object]) -> None:
    lag = trained["lag"]
    assert isinstance(lag, PPOLag)
    assert max(trained["lambdas"]) > 0.5  # type: ignore[arg-type]  (random slates start at ≈ 26 > 10)
    lag_monitor = lag.part(CostMonitorPart)
    assert lag_monitor.mean_episode_cost <= COST_LIMIT + 1.5, (
        lag_monitor.mean_episode_cost
    )  # ≈ 9.9 over the last 100 episodes
    # above the best a feasible policy gets without reading the users (random non-clickbait slates: 21.4)
    assert lag.mean_return > 22.0, lag.mean_return


def test_unconstrained_ppo_seeks_clickbait_and_earns_more(trained: dict[str, object]) -> None:
    lag, ppo = trained["lag"], trained["ppo"]
    assert isinstance(ppo, UnconstrainedPPO) and isinstance(lag, PPOLag)
    ppo_monitor = ppo.part(CostMonitorPart)
    assert ppo_monitor.mean_episode_cost > 2 * COST_LIMIT, (
        ppo_monitor.mean_episode_cost
    )  # ≈ 30, above random slates' 26
    assert ppo.mean_return > lag.mean_return + 0.5, (ppo.mean_return, lag.mean_return)


@pytest.mark.parametrize("cls", [CPO, TRPOLag])
def test_trust_region_safe_agents_step_through_the_slate_policy(cls: type) -> None:
    torch.set_num_threads(1)
    agent = cls(
        ENV_ID, n_envs=8, n_steps=60, hidden_sizes=(32,), seed=shifted(0), cost_limit=COST_LIMIT, torch_threads=1
    )
    theta = flat_params(policy_params(agent.policy))
    agent.learn(480)
    metrics = agent.last_metrics
    assert metrics["accepted"] == 1.0 and 0.0 < metrics["kl"] <= agent.config.max_kl
    assert float((flat_params(policy_params(agent.policy)) - theta).norm()) > 0.0
    assert metrics["episode_cost"] > COST_LIMIT  # the initial, near-uniform slates
    assert agent.predict(agent._obs).shape == (8, 2)


def test_same_seed_same_training_run() -> None:
    torch.set_num_threads(1)
    config = dict(n_envs=4, n_steps=30, batch_size=60, n_epochs=2, hidden_sizes=(16,), seed=shifted(3), torch_threads=1)
    a = PPOLag(ENV_ID, **config).learn(360)
    b = PPOLag(ENV_ID, **config).learn(360)
    torch.testing.assert_close(flat_params(policy_params(a.policy)), flat_params(policy_params(b.policy)))
    assert a.last_metrics["episode_cost"] == b.last_metrics["episode_cost"]
