"""The model-based safe agent (safety/model_based.py, ``safe_mpc``): its fused pessimistic cost
ensemble against the plain per-member computation, PointGoal's known reward against the env's, the
config's resolution, a checkpoint round trip, and — learning, seeded, one core — that planning with
the pessimistic learned cost violates far less *while learning* than the same planner without it,
and still makes progress toward the goals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core_rl.common.tracking import MemoryTracker
from core_rl.registry import get_algo
from safety.envs import PointGoalVectorEnv
from safety.evaluation import evaluate_cmdp
from safety.model_based import CostEnsemble, SafeMPC, SafeMPCConfig, point_goal_reward
from safety.parts import CostMonitorPart
from tests.seeding import seed as shifted

ENV = "safety/PointGoal-v0"
LIMIT = 5.0


@pytest.mark.parametrize("hidden", [(32, 32), (16,), ()])
def test_fused_cost_ensemble_is_the_max_over_its_members(hidden: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    ens = CostEnsemble(3, 2, n_members=4, hidden_sizes=hidden)
    x = torch.randn(500, ens.in_dim) * 3 + 1
    y = (x[:, 0] > 1.5).float()
    ens.fit(x, y, steps=30, generator=torch.Generator().manual_seed(0))
    obs, act, nxt = torch.randn(6, 7, 3) * 2, torch.randn(6, 7, 2), torch.randn(6, 7, 3)

    def plain() -> torch.Tensor:
        flat = torch.cat([obs, act, nxt], -1).reshape(1, -1, ens.in_dim).expand(4, -1, -1)
        with torch.no_grad():
            return torch.sigmoid(ens.logits(flat)).amax(0).reshape(6, 7)

    got = ens.pessimistic(obs, act, nxt)
    assert got.shape == (6, 7)
    torch.testing.assert_close(got, plain(), rtol=1e-5, atol=1e-6)
    # the planner's per-step risk is −log(1 − max_j p̂_j), and keeps growing where p̂ saturates
    torch.testing.assert_close(ens.risk(obs, act, nxt), -torch.log1p(-plain()), rtol=1e-4, atol=1e-5)
    ens.fit(x, 1 - y, steps=30, generator=torch.Generator().manual_seed(1))  # new weights: the folded cache follows
    torch.testing.assert_close(ens.pessimistic(obs, act, nxt), plain(), rtol=1e-5, atol=1e-6)


def test_point_goal_known_reward_is_the_env_reward() -> None:
    env = PointGoalVectorEnv(num_envs=256, start_low=(-2.0, -2.0), start_high=(2.0, 2.0))
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    reward_fn = point_goal_reward(env.goal_radius, env.goal_bonus)
    got, want = [], []
    for _ in range(200):
        action = rng.uniform(-1, 1, (256, 2)).astype(np.float32)
        next_obs, reward, terminated, truncated, info = env.step(action)
        real_next = next_obs.copy()
        for i in np.flatnonzero(terminated | truncated):
            real_next[i] = info["final_obs"][i]
        got.append(reward_fn(*(torch.as_tensor(v) for v in (obs, action, real_next))).numpy())
        want.append(reward)
        obs = next_obs
    got, want = np.concatenate(got), np.concatenate(want)
    assert (want > 0.5).sum() > 20  # goals were reached (bonus steps), walls were hit
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_config_resolves_the_reward_and_keeps_the_model_activations() -> None:
    cfg = SafeMPCConfig()
    assert cfg.activation == "silu" and cfg.hidden_sizes == (64, 64) and cfg.gamma == 1.0  # PETS's, not AgentConfig's
    agent = SafeMPC(ENV, dict(seed=shifted(0), n_envs=2))
    assert agent.config.reward == "known" and agent.model.learn_reward is False
    assert agent.evaluator.evaluator.reward_fn is not None
    learned = SafeMPC(ENV, dict(seed=shifted(0), n_envs=2, reward="learned"))
    assert learned.model.learn_reward is True and learned.evaluator.evaluator.reward_fn is None
    assert get_algo("safe_mpc").cls is SafeMPC
    with pytest.raises(ValueError):
        SafeMPC(ENV, dict(n_particles=7))  # not a multiple of the 5 members


def test_checkpoint_keeps_the_cost_model(tmp_path) -> None:
    agent = SafeMPC(
        ENV,
        dict(
            seed=shifted(0),
            n_envs=2,
            initial_random_steps=200,
            n_candidates=16,
            n_elites=4,
            horizon=5,
            cost_fit_steps=20,
            model_epochs=2,
        ),
    )
    agent.learn(220)
    obs = np.stack([PointGoalVectorEnv(num_envs=2).reset(seed=3)[0]]).reshape(2, -1)
    loaded = SafeMPC.load(agent.save(tmp_path / "safe_mpc.pt"))
    torch.manual_seed(5)  # the particles' noise
    actions = agent.predict(obs)
    torch.testing.assert_close(loaded.cost_model.mean, agent.cost_model.mean)
    for a, b in zip(loaded.cost_model.parameters(), agent.cost_model.parameters()):
        torch.testing.assert_close(a, b)
    assert loaded.config == agent.config and loaded.config.reward == "known"
    torch.manual_seed(5)
    np.testing.assert_allclose(loaded.predict(obs), actions, atol=1e-5)


# ---- learning: fewer violations while learning than the same planner without the cost ----------------
SMALL = dict(
    n_envs=8,
    horizon=10,
    n_candidates=32,
    n_elites=4,
    initial_random_steps=400,
    train_every=800,
    model_epochs=15,
    seed=shifted(0),
    cost_limit=LIMIT,
)
STEPS = 2400  # 1.5 episodes per env after 50 random steps each


def cumulative_cost_at(tracker: MemoryTracker, step: int) -> float:
    return max(v for s, v in tracker.metrics["cumulative_cost"] if s <= step)


@pytest.mark.slow  # ~1.5 min alone (3.6 min under load); CI runs it
def test_pessimistic_cost_keeps_training_violations_far_below_the_unconstrained_planner() -> None:
    runs = {}
    for name, extra in (
        ("safe", {}),
        ("unconstrained", dict(plan_cost_threshold=1e9, cost_train_every=10**9, cost_fit_steps=1)),
    ):
        tracker = MemoryTracker()
        agent = SafeMPC(ENV, {**SMALL, **extra}, tracker=tracker)
        agent.learn(STEPS)
        runs[name] = (agent, tracker, evaluate_cmdp(agent, 8))
    safe, safe_tracker, safe_eval = runs["safe"]
    free, _, free_eval = runs["unconstrained"]
    safe_cum = safe.part(CostMonitorPart).monitor.total_cost[0]
    free_cum = free.part(CostMonitorPart).monitor.total_cost[0]
    # measured (seed 0): 47 violations in 2400 steps (41 in the first half) against 636 (140); final policies:
    # return 19.2 at cost 0 against 22.3 at cost 77 (seeds 1, 2: 77 vs 476 and 41 vs 590; returns 16.3, 15.7)
    assert free_eval["mean_cost"][0] > 3 * LIMIT  # the fast shuttle runs through the hazard ...
    assert free_cum > 300  # ... on every trip while it learns
    assert safe_cum < 0.25 * free_cum  # planning with the pessimistic cost: far fewer
    # most of them are the first encounters with the hazard; once the cost model has seen it, hardly any
    safe_late = safe_cum - cumulative_cost_at(safe_tracker, STEPS // 2)
    free_late = free_cum - cumulative_cost_at(runs["unconstrained"][1], STEPS // 2)
    assert safe_late < 0.1 * free_late
    assert safe_eval["mean_cost"][0] <= LIMIT and safe_eval["mean_return"] > 10.0  # around it, goal to goal
