"""Transfer and meta-RL (notes 10/24–10/26) and unsupervised skills (11/2): RL² adapts to held-out bandits
where a non-adaptive policy cannot; the recurrent core replays its rollouts exactly; domain randomization
transfers zero-shot to held-out physics where nominal training does not; DIAYN's skills are distinguishable."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from core_rl import make_agent
from core_rl.common.errors import ConfigError
from core_rl.common.tracking import MemoryTracker
from core_rl.meta.domain_randomization import DomainRandomization, fixed, get_parameters, randomized
from core_rl.meta.envs import MetaTrial
from core_rl.meta.experiments import (
    bandit_references,
    nearest_mean_accuracy,
    rl2_default_benchmark,
    run_diayn,
    run_domain_randomization,
    run_rl2_bandits,
    thompson_sampling_returns,
)
from core_rl.meta.rl2 import KNOWN_TO_LEARN, RL2
from tests.seeding import seed as shifted

# ---- the task env and trials -------------------------------------------------------------------------


def test_meta_trial_keeps_one_task_and_reports_history():
    env = MetaTrial("bandit", n_arms=3, episodes_per_trial=4, tasks=[np.array([0.0, 1.0, 0.0])])
    obs, info = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [1, 0, 0, 0, 0, 0])  # o, one-hot a_{-1} (none), r_{-1}, d_{-1}
    rewards = []
    for t, a in enumerate([1, 0, 1, 2]):
        obs, r, term, trunc, info = env.step(a)
        rewards.append(r)
        np.testing.assert_array_equal(obs[1:4], np.eye(3)[a])
        assert obs[4] == r and obs[5] == 1.0 and info["inner_done"]
        assert term == (t == 3) and not trunc
    assert rewards == [1.0, 0.0, 1.0, 0.0]
    flat = MetaTrial("bandit", n_arms=3, history=False)
    assert flat.observation_space.shape == (1,)
    with pytest.raises(ConfigError, match="task env"):
        MetaTrial("nope")
    with pytest.raises(ConfigError, match="task_distribution"):
        MetaTrial("bandit", task_distribution="zipf")


def test_task_distributions():
    env = MetaTrial("bandit", n_arms=4, task_distribution="one_good").task_env
    rng = np.random.default_rng(0)
    tasks = np.stack([env.sample_task(rng) for _ in range(400)])
    assert ((tasks == 0.9).sum(1) == 1).all() and ((tasks == 0.1).sum(1) == 3).all()
    np.testing.assert_allclose((tasks == 0.9).mean(0), 0.25, atol=0.06)  # the good arm is uniform


# ---- the recurrent core ---------------------------------------------------------------------------------


def test_recurrent_replay_equals_the_rollout_with_resets_inside_sequences():
    """log π and V recomputed by BPTT over the stored sequences equal what acting computed, also when
    trials end mid-sequence (trial of 10 steps, rollouts of 16) and rollouts start from a carried state."""
    agent = RL2(
        lambda: gym.make("meta/BanditTrial-v0", n_arms=3, episodes_per_trial=10),
        dict(seed=shifted(0), n_envs=3, n_steps=16, rnn_hidden_size=16),
    )
    for i in range(3):
        batch = agent.estimate(agent.collect())
        assert bool(batch.episode_starts[1:].any())  # resets inside the sequences
        if i > 0:
            assert batch.hidden_pi0.abs().sum() > 0  # carried over from the last rollout
        flat = batch.flat()
        with torch.no_grad():
            log_prob = agent.policy.distribution(flat.obs).log_prob(flat.actions)
            value = agent.value(flat.obs)
        torch.testing.assert_close(log_prob, flat.log_probs, atol=1e-5, rtol=0)
        torch.testing.assert_close(value, flat.values, atol=1e-5, rtol=0)
        sizes = [len(mb) for mb in flat.minibatches(32)]
        assert sum(sizes) == len(flat) == 48 and len(sizes) == 2  # whole sequences of 16 steps
        agent.update(batch)


def test_rl2_with_continuous_actions_on_goal_tasks():
    """The Gaussian head of the recurrent core on the point-goal task family (Box actions, time-limit
    truncation inside trials): replay equals the rollout, and A2C's update runs on sequences too."""
    for algo in ("rl2", "rl2_a2c"):
        agent = make_agent(
            algo, "meta/PointGoalTrial-v0", dict(seed=shifted(0), n_envs=2, n_steps=25, rnn_hidden_size=8)
        )
        batch = agent.estimate(agent.collect())
        flat = batch.flat()
        with torch.no_grad():
            log_prob = agent.policy.distribution(flat.obs).log_prob(flat.actions)
        torch.testing.assert_close(log_prob, flat.log_probs, atol=1e-5, rtol=0)
        metrics = agent.update(batch)
        assert np.isfinite(metrics["policy_loss"])
    assert agent.observation_space.shape == (2 + 2 + 2,)


def test_rl2_beats_a_non_adaptive_policy_on_held_out_bandits():
    tracker = MemoryTracker()
    out = run_rl2_bandits(tracker, steps=20_000, seed=shifted(0), n_held_out=50, eval_trials=200)
    # a non-adaptive policy can at best pull the arm best on average (≈ 0.37 per pull here)
    best_non_adaptive = 10 * out["average_arm_per_pull"]  # the expected trial return of the best fixed arm
    assert out["non_adaptive"] <= best_non_adaptive + 0.6, out
    # measured over seeds 0-4 (at 20k and 40k steps alike): RL² 5.6-7.0, the trained non-adaptive policy
    # 2.8-3.8, RL² minus it 1.8-4.2; two seeds in five settle at ≈ 5.6, so the bars sit below that
    assert out["rl2"] >= best_non_adaptive + 1.0, out
    assert out["rl2"] >= out["non_adaptive"] + 1.2, out
    curve = out["rl2_curve"]
    # it learns the task within the trial (measured +0.19 to +0.50 per pull)
    assert np.mean(curve[-3:]) >= np.mean(curve[:1]) + 0.1, curve
    assert "rl2_bandits.png" in tracker.artifacts


def test_thompson_sampling_reference_adapts_where_a_fixed_arm_cannot():
    rng = np.random.default_rng(shifted(5))
    tasks = rng.uniform(0, 1, (300, 2))
    ref = bandit_references(tasks, 20, seed=shifted(0))
    # uniform tasks: no single arm is better on average, so the best fixed arm is random's ≈ 10
    assert abs(ref["best_fixed_arm"] - ref["random"]) < 0.5 and abs(ref["random"] - 10) < 0.6, ref
    # Thompson sampling adapts: most of the way from a fixed arm to the oracle (measured ≈ 60-70 %)
    gap = ref["oracle"] - ref["best_fixed_arm"]
    assert ref["best_fixed_arm"] + 0.45 * gap <= ref["thompson"] <= ref["oracle"], ref
    # one certain arm: it finds it within a few pulls; two equal arms: it can only be as good as random
    sure = thompson_sampling_returns(np.array([[0.0, 1.0]]), 20, repeats=200, seed=shifted(1))
    assert 17.5 <= sure.mean() < 20.0
    same = thompson_sampling_returns(np.full((50, 3), 0.3), 20, repeats=20, seed=shifted(2))
    assert abs(same.mean() - 6.0) < 0.3
    np.testing.assert_array_equal(
        thompson_sampling_returns(tasks, 20, seed=3), thompson_sampling_returns(tasks, 20, seed=3)
    )
    with pytest.raises(ValueError, match="probabilities"):
        thompson_sampling_returns(np.array([0.2, 1.5]), 20)
    with pytest.raises(ValueError, match="no known budget for 'ppo'"):
        rl2_default_benchmark("ppo")


@pytest.mark.slow  # ≈ 45 s each on one core: 200k steps (rl2), 400k (rl2_a2c)
@pytest.mark.parametrize("algo", ["rl2", "rl2_a2c"])
def test_default_rl2_learns_the_registered_bandit_meta_task(algo):
    """``deeprl train --algo rl2 --env meta/BanditTrial-v0`` (and ``rl2_a2c``) with the DEFAULT config, at the budget the docs
    state (KNOWN_TO_LEARN), adapts on held-out tasks: clearly above the best non-adaptive policy (one fixed
    arm, ≈ random on uniform tasks) and toward Thompson sampling. Measured: see docs/algorithms.md."""
    out = rl2_default_benchmark(algo, seed=shifted(0), n_held_out=200, eval_trials=1000)
    assert out["steps"] == KNOWN_TO_LEARN[algo]["steps"]
    assert out[algo] >= out["best_fixed_arm"] + 0.8, out  # the held-out standard error is ≈ 0.15
    assert out[algo] <= out["oracle"] + 0.3, out  # nothing beats knowing the task


def test_rl2_registered_and_predicts_with_memory():
    agent = make_agent("rl2", "meta/BanditTrial-v0", dict(n_envs=2, n_steps=20, rnn_hidden_size=8))
    obs, _ = gym.make("meta/BanditTrial-v0").reset(seed=0)
    agent.reset_memory()
    agent.predict(obs)
    h1 = agent._eval_hidden.clone()
    agent.predict(obs)
    assert not torch.equal(h1, agent._eval_hidden)  # the memory moved
    agent.reset_memory()
    assert agent._eval_hidden is None
    assert agent.evaluate(4)["mean_length"] == 20


# ---- domain randomization ------------------------------------------------------------------------


def test_domain_randomization_resamples_parameters_each_episode():
    env = DomainRandomization(gym.make("CartPole-v1"), dict(length=(0.2, 2.0), masspole=(0.05, 1.0)))
    seen = []
    for ep in range(20):
        _, info = env.reset(seed=5 if ep == 0 else None)
        p = info["params"]
        assert 0.2 <= p["length"] <= 2.0 and 0.05 <= p["masspole"] <= 1.0
        assert env.unwrapped.polemass_length == pytest.approx(p["masspole"] * p["length"])
        assert env.unwrapped.total_mass == pytest.approx(p["masspole"] + env.unwrapped.masscart)
        seen.append(p["length"])
    assert len(set(seen)) == 20
    again = DomainRandomization(gym.make("CartPole-v1"), dict(length=(0.2, 2.0), masspole=(0.05, 1.0)))
    assert again.reset(seed=5)[1]["params"]["length"] == seen[0]  # seeded
    held = fixed("CartPole-v1", dict(length=4.0))()
    held.reset(seed=0)
    assert get_parameters(held)["length"] == 4.0
    pend = DomainRandomization(gym.make("Pendulum-v1"), dict(m=(0.5, 2.0), l=(0.5, 1.5)), log=True)
    p = pend.reset(seed=1)[1]["params"]
    assert 0.5 <= p["m"] <= 2.0 and pend.unwrapped.m == p["m"] and pend.unwrapped.l == p["l"]
    with pytest.raises(ConfigError, match="unknown parameter"):
        randomized("CartPole-v1", dict(wheels=(1, 2)))()
    with pytest.raises(ConfigError, match="no randomizable parameters"):
        DomainRandomization(gym.make("MountainCar-v0"), {})


@pytest.mark.slow
@pytest.mark.timeout(1800)  # three seeds: past the 600 s default on a loaded machine
def test_domain_randomization_transfers_to_held_out_physics():
    """Over three seeds: randomized training transfers to poles 1.75-2.5x longer than any trained on,
    nominal training mostly does not. One seed is a coin flip (issue 12: 72.5 held-out on a Xeon where this CPU
    gave 362): whether a run extrapolates is bimodal per seed. Measured, seeds 1-6, held-out mean
    nominal / randomized: 29/362, 30/500, 30/57, 158/388 (one held-out system at 406),
    29/324 (one at 29.5), 223/500 (nominal scored 199 on the nominal system itself), so neither every
    randomized system ≥ 200 nor every nominal one ≤ 100 holds for every seed."""
    tracker = MemoryTracker()
    outs = [run_domain_randomization(tracker, steps=40_960, seed=shifted(1 + k), eval_episodes=4) for k in range(3)]
    for name in ("nominal", "randomized"):  # both learned the nominal task (max 500)
        assert np.median([out[f"{name}_nominal_env"] for out in outs]) >= 400, outs
    gain = np.mean([out["randomized_mean"] - out["nominal_mean"] for out in outs])
    # random actions keep these long poles up ≈ 82 steps, nominal training (tuned to a short pole, it
    # over-corrects) ≈ 30, randomized training 324-500 in 5 of 6 measured seeds; over 3 seeds (1-3, 2-4,
    # 3-5, 4-6) the mean gain measured 184-277 and the mean randomized return 256-404
    assert gain >= 100, outs
    assert np.mean([out["randomized_mean"] for out in outs]) >= 200, outs  # well above random's 82
    assert max(out["randomized_mean"] for out in outs) >= 300, outs
    assert "domain_randomization.png" in tracker.artifacts


# ---- DIAYN ---------------------------------------------------------------------------------------


def test_nearest_mean_accuracy():
    pts = np.array([[[0, 0], [0, 0.1]], [[5, 5], [5, 5.1]]], dtype=float)
    assert nearest_mean_accuracy(pts) == 1.0
    same = np.zeros((2, 3, 2))
    assert nearest_mean_accuracy(same) <= 0.5


def test_diayn_skills_visit_distinguishable_states():
    tracker = MemoryTracker()
    # at 8000 steps, seeds 0-4 measured discriminator accuracy 0.97-1.00, nearest-mean 1.00, min end-point
    # distance 0.58-1.32 (at 4000 steps two seeds in five were still at 0.63-0.72)
    out = run_diayn(tracker, steps=8000, seed=shifted(0), config=dict(n_envs=4))
    assert out["discriminator_accuracy"] >= 0.85, out  # chance: 1/4
    assert out["nearest_mean_accuracy"] >= 0.9, out
    assert out["min_pairwise_distance"] >= 0.3, out
    assert "diayn_skills.png" in tracker.artifacts
    assert "disc_loss" in tracker.metrics
