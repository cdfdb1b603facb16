"""Imitation learning: BC clones a CartPole expert, DAgger beats BC at equal labels on a task with
compounding error, the multimodal heads fit a bimodal expert a Gaussian cannot, the recurrent head
imitates a non-Markovian expert, and malformed demonstration tables get a clear error."""

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch

from core_rl.common.tracking import MemoryTracker
from core_rl.imitation import (
    BehaviorCloning,
    DAgger,
    DataError,
    collect_demonstrations,
    evaluate_actor,
    load_demonstrations,
)
from core_rl.imitation.experiments import (
    CARTPOLE_EXPERT_WEIGHTS,
    LaneKeepingVecEnv,
    cartpole_expert,
    lane_keeping_expert,
    run_compounding_error,
)
from tests.seeding import seed as shifted


# ---- demonstrations -----------------------------------------------------------------------------
def test_collect_demonstrations_schema_parquet_and_seed(tmp_path):
    path = tmp_path / "demos" / "cartpole.parquet"
    df = collect_demonstrations(cartpole_expert, "CartPole-v1", n_episodes=3, seed=shifted(0), path=path)
    assert list(df.columns) == ["episode", "step", "obs_0", "obs_1", "obs_2", "obs_3", "action", "reward"]
    assert sorted(df.episode.unique()) == [0, 1, 2]
    assert (df.groupby("episode").step.apply(lambda s: (s.to_numpy() == np.arange(len(s))).all())).all()
    assert (df.groupby("episode").size() == 500).all()  # the scripted expert balances 500 steps
    obs = df[["obs_0", "obs_1", "obs_2", "obs_3"]].to_numpy()
    assert (df.action.to_numpy() == cartpole_expert(obs)).all()  # the recorded labels are the expert's
    assert pd.read_parquet(path).equals(df)
    again = collect_demonstrations(cartpole_expert, "CartPole-v1", n_episodes=3, seed=shifted(0))
    other = collect_demonstrations(cartpole_expert, "CartPole-v1", n_episodes=3, seed=shifted(1))
    assert again.equals(df) and not other.equals(df)
    env = gym.make("CartPole-v1")
    demos = load_demonstrations(path, env.observation_space, env.action_space)
    assert demos.observations.shape == (1500, 4) and demos.actions.dtype == torch.int64
    assert len(demos) == 1500 and demos.n_episodes == 3 and demos.rewards.sum() == 1500


def test_sequences_cut_episodes_into_masked_windows():
    space = gym.spaces.Box(-10, 10, (1,), np.float32)
    df = pd.DataFrame(
        {
            "episode": [7, 7, 7, 7, 7, 2, 2],
            "step": [0, 1, 2, 3, 4, 1, 0],
            "obs_0": [0.0, 1, 2, 3, 4, 11, 10],
            "action": [0, 1, 0, 1, 0, 1, 1],
        }
    )
    demos = load_demonstrations(df, space, gym.spaces.Discrete(2))
    assert demos.episodes.tolist() == [2, 2, 7, 7, 7, 7, 7]  # sorted by (episode, step)
    obs, actions, mask = demos.sequences(2)
    assert obs[..., 0].tolist() == [[10, 11], [0, 1], [2, 3], [4, 0]]
    assert mask.tolist() == [[True, True], [True, True], [True, True], [True, False]]
    assert actions.tolist() == [[1, 1], [0, 1], [0, 1], [0, 0]]
    obs, _, mask = demos.sequences(None)  # whole episodes, padded
    assert obs.shape == (2, 5, 1) and mask.sum(1).tolist() == [2, 5]


def _good_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 20
    df = pd.DataFrame({"episode": np.repeat([0, 1], n // 2), "step": np.tile(np.arange(n // 2), 2)})
    for i in range(4):
        df[f"obs_{i}"] = rng.normal(size=n).astype(np.float32)
    df["action"] = rng.integers(0, 2, n)
    df["reward"] = 1.0
    return df


def _broken(kind: str) -> pd.DataFrame:
    df = _good_table()
    if kind == "missing":
        return df.drop(columns=["obs_2"])
    if kind == "missing_action":
        return df.drop(columns=["action"])
    if kind == "string":
        df["obs_1"] = df["obs_1"].astype(object)
        df.loc[7, "obs_1"] = "left"
    elif kind == "nan":
        df.loc[11, "obs_3"] = np.nan
    elif kind == "inf":
        df.loc[4, "obs_0"] = np.inf
    elif kind == "float_action":
        df["action"] = df["action"].astype(float)
        df.loc[5, "action"] = 0.5
    elif kind == "out_of_range":
        df.loc[13, "action"] = 2
    elif kind == "extra_dim":
        df["obs_4"] = 0.0
    elif kind == "duplicate":
        df.loc[3, "step"] = 2
    elif kind == "nan_episode":
        df["episode"] = df["episode"].astype(float)
        df.loc[6, "episode"] = np.nan
    elif kind == "bool_reward":
        df["reward"] = True
    return df


@pytest.mark.parametrize(
    "kind, pattern",
    [
        ("missing", r"missing column 'obs_2'"),
        ("missing_action", r"missing column 'action'"),
        ("string", r"column 'obs_1' has dtype object, expected numbers.*first bad row 7 holds 'left'"),
        ("nan", r"column 'obs_3' has 1 NaN.*first bad row 11"),
        ("inf", r"column 'obs_0' has 1 infinite.*first bad row 4"),
        ("float_action", r"column 'action' must hold integers.*first bad row 5 holds 0.5"),
        ("out_of_range", r"column 'action' is outside the range of the action space Discrete\(2\).*first bad row 13"),
        ("extra_dim", r"column 'obs_4' does not fit the observation space.*shape mismatch"),
        ("duplicate", r"'episode', 'step' repeat \(episode 0, step 2\); first bad row 3"),
        ("nan_episode", r"column 'episode' has 1 NaN.*first bad row 6"),
        ("bool_reward", r"column 'reward' has dtype bool"),
    ],
)
def test_malformed_tables_name_column_problem_and_row(kind, pattern, tmp_path):
    env = gym.make("CartPole-v1")
    load_demonstrations(_good_table(), env.observation_space, env.action_space)  # the intact table loads
    df = _broken(kind)
    with pytest.raises(DataError, match=pattern):
        load_demonstrations(df, env.observation_space, env.action_space)
    if kind in ("nan", "missing", "string"):  # the same error from a parquet file
        path = tmp_path / f"{kind}.parquet"
        df.astype({"obs_1": str} if kind == "string" else {}).to_parquet(path)
        with pytest.raises(DataError, match=pattern.replace("dtype object", "dtype (object|str)")):
            load_demonstrations(path, env.observation_space, env.action_space)


def test_unreadable_or_empty_sources():
    env = gym.make("CartPole-v1")
    with pytest.raises(DataError, match="'nope.parquet' does not exist"):
        load_demonstrations("nope.parquet", env.observation_space, env.action_space)
    with pytest.raises(DataError, match="empty"):
        load_demonstrations(_good_table().iloc[:0], env.observation_space, env.action_space)
    box = gym.spaces.Box(-1, 1, (2,), np.float32)
    df = pd.DataFrame(
        {
            "episode": [0, 0],
            "step": [0, 1],
            "obs_0": [0.0, 0.0],
            "obs_1": [0.0, 0.0],
            "obs_2": [0.0, 0.0],
            "obs_3": [0.0, 0.0],
            "action_0": [0.1, 1.5],
            "action_1": [0.0, 0.0],
        }
    )
    with pytest.raises(
        DataError,
        match=r"column 'action_0' is outside the bounds of the action space \[-1, 1\]; first bad row 1 holds 1.5",
    ):
        load_demonstrations(df, env.observation_space, box)


# ---- behavior cloning ---------------------------------------------------------------------------
def test_bc_reaches_the_cartpole_expert(tmp_path):
    expert_return = evaluate_actor(cartpole_expert, "CartPole-v1", n_episodes=10)["mean_return"]
    path = tmp_path / "expert.parquet"
    collect_demonstrations(cartpole_expert, "CartPole-v1", n_episodes=4, seed=shifted(0), path=path)
    tracker = MemoryTracker()
    bc = BehaviorCloning("CartPole-v1", {"n_epochs": 20, "seed": shifted(0)}, tracker=tracker)
    policy = bc.fit(path)
    result = bc.evaluate("CartPole-v1", n_episodes=10)
    print(f"expert {expert_return}, BC {result['mean_return']}")
    assert expert_return == 500.0
    assert result["mean_return"] >= 195 and result["mean_return"] >= 0.9 * expert_return
    losses = [v for _, v in tracker.metrics["bc_loss"]]
    assert len(losses) == 20 and losses[-1] < 0.5 * losses[0]
    assert tracker.params["algo"] == "bc"
    assert policy.predict(np.zeros(4, np.float32)).shape == ()
    assert bc.predict(np.zeros((3, 4), np.float32)).shape == (3,)


def test_bc_same_seed_same_policy():
    df = collect_demonstrations(cartpole_expert, "CartPole-v1", n_episodes=1, seed=shifted(0))
    a, b, c = (BehaviorCloning("CartPole-v1", {"n_epochs": 2, "seed": s}) for s in (3, 3, 4))
    for bc in (a, b, c):
        bc.fit(df)
    obs = torch.as_tensor(np.random.default_rng(0).normal(size=(16, 4)), dtype=torch.float32)
    la, lb, lc = (bc.policy.distribution(obs).logits for bc in (a, b, c))
    assert torch.equal(la, lb) and not torch.equal(la, lc)


# ---- DAgger against BC: the notes' O(εT²) vs O(εT) ------------------------------------------------
def test_dagger_beats_bc_at_equal_expert_labels_on_compounding_error():
    tracker = MemoryTracker()
    eps = 0.02
    result = run_compounding_error(
        tracker,
        horizons=(10, 20, 40, 80, 160),
        epsilon=eps,
        label_budget=1500,
        dagger_iterations=3,
        n_eval_episodes=1000,
        seed=shifted(0),
    )
    print({k: v for k, v in result.items() if k != "dagger_history"})
    t = np.array(result["horizons"], float)
    bc, dagger, expert = (np.array(result[k]) for k in ("bc_cost", "dagger_cost", "expert_cost"))
    assert result["bc_expert_labels"] == result["dagger_expert_labels"] == 1500
    # both learners copy the expert perfectly on its own states: all of BC's excess cost is drift
    assert result["bc_error_on_expert_states"] == 0.0 and result["dagger_error_on_expert_states"] == 0.0
    assert (dagger < bc).all() and dagger[-1] < 0.2 * bc[-1]
    assert result["bc_slope"] > 1.4  # super-linear growth: O(εT²)
    assert 0.85 < result["dagger_slope"] < 1.15  # linear growth: O(εT)
    assert (bc / dagger)[-1] > 3 * (bc / dagger)[0]  # the gap widens with the horizon
    assert (dagger <= 1.5 * expert).all()  # DAgger recovers like the expert does
    assert (dagger <= eps * t).all() and (bc <= eps * t + 2 * eps * t**2).all()  # the notes' bounds
    assert "compounding_error.png" in tracker.artifacts
    assert [s for s, _ in tracker.metrics["bc_cost"]] == [10, 20, 40, 80, 160]
    assert tracker.metrics["dagger_expert_labels"][-1][1] == 1500


def test_dagger_collects_its_own_demonstrations_and_counts_labels():
    env = LaneKeepingVecEnv(4, horizon=50)
    calls = []

    def expert(obs):
        calls.append(len(obs))
        return lane_keeping_expert(obs)

    dagger = DAgger(
        env,
        expert,
        {"n_iterations": 2, "labels_per_iteration": 120, "initial_episodes": 2, "rollout_noise": 0.2, "n_epochs": 5},
    )
    policy = dagger.learn()
    assert dagger.n_expert_labels == 2 * 50 + 2 * 120 == len(dagger.dataset)
    assert dagger.dataset.n_episodes >= 4
    assert len(dagger.history) == 2 and 0.0 <= dagger.history[-1]["dagger_disagreement"] <= 1.0
    assert policy.predict(np.zeros(2, np.float32)) in (0, 1, 2)


# ---- multimodal experts ---------------------------------------------------------------------------
MODE = 0.6


def _bimodal(n: int, seed: int) -> pd.DataFrame:
    """a = ±(0.6, 0.6) + 0.2 s + N(0, 0.05²): two modes, both dimensions share the sign."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(-1, 1, (n, 2))
    sign = rng.choice([-1.0, 1.0], n)[:, None]
    a = np.clip(MODE * sign + 0.2 * s + 0.05 * rng.normal(size=(n, 2)), -1, 1)
    return pd.DataFrame(
        {
            "episode": np.arange(n),
            "step": 0,
            "obs_0": s[:, 0],
            "obs_1": s[:, 1],
            "action_0": a[:, 0],
            "action_1": a[:, 1],
        }
    )


BOX2 = gym.spaces.Box(-1, 1, (2,), np.float32)


def _fit_bimodal(policy: str, **extra):
    bc = BehaviorCloning((BOX2, BOX2), {"policy": policy, "n_epochs": 40, "seed": shifted(0), **extra})
    bc.fit(_bimodal(4000, 0))
    test = load_demonstrations(_bimodal(2000, 1), BOX2, BOX2)
    p = bc.policy
    with torch.no_grad():
        log_lik = p.log_prob(test.observations, p.flat_actions(test.actions)).mean().item()
    s = test.observations.numpy()
    torch.manual_seed(0)
    samples = p.predict(s, deterministic=False)
    mean = 0.2 * s  # the conditional mean E[a|s]: between the modes
    to_mode = np.minimum(
        np.linalg.norm(samples - (mean + MODE), axis=1), np.linalg.norm(samples - (mean - MODE), axis=1)
    )
    near_mode = float((to_mode < 0.2).mean())
    near_mean = float((np.linalg.norm(samples - mean, axis=1) < 0.2).mean())
    print(f"{policy}: log-likelihood {log_lik:.2f}, near a mode {near_mode:.3f}, near the mean {near_mean:.3f}")
    return bc, log_lik, near_mode, near_mean, s


def test_mixture_fits_bimodal_actions_a_gaussian_cannot():
    gauss, ll_g, mode_g, mean_g, s = _fit_bimodal("mlp", head="gaussian")
    mix, ll_m, mode_m, mean_m, _ = _fit_bimodal("mixture", n_components=5)
    # the true log-density is about log N(0; 0, 0.05² I₂) − log 2 ≈ 2.46
    assert ll_m > 2.0 and ll_m > ll_g + 3.0
    assert mode_m > 0.9 and mean_m < 0.02
    assert mode_g < 0.2  # the single Gaussian spreads over both modes …
    # … and its most likely action is the average of the modes, which the expert never takes
    det_g, det_m = gauss.predict(s), mix.predict(s)
    assert np.abs(det_g - 0.2 * s).max(1).mean() < 0.15
    assert (np.abs(np.abs(det_m - 0.2 * s) - MODE).max(1) < 0.15).mean() > 0.95


@pytest.mark.parametrize(
    "policy, extra, min_near_mode",
    [
        ("latent", {"latent_dim": 2, "n_epochs": 60}, 0.7),
        ("autoregressive", {"n_bins": 21}, 0.9),
    ],
)
def test_latent_variable_and_autoregressive_policies_capture_bimodal_actions(policy, extra, min_near_mode):
    _, ll_g, mode_g, mean_g, _ = _fit_bimodal("mlp", head="gaussian")
    bc, ll, near_mode, near_mean, s = _fit_bimodal(policy, **extra)
    assert ll > ll_g + 3.0
    assert near_mode > min_near_mode and near_mode > 4 * mode_g
    assert near_mean < 0.1
    if policy == "autoregressive":  # the second dimension follows the first: never (+, −) or (−, +)
        a = bc.predict(s, deterministic=False) - 0.2 * s
        assert (np.sign(a[:, 0]) == np.sign(a[:, 1])).mean() > 0.97


# ---- non-Markovian expert ---------------------------------------------------------------------------
class PositionOnly(gym.ObservationWrapper):
    """CartPole without the velocities: o = (x, θ), a partial observation of s = (x, ẋ, θ, θ̇)."""

    def __init__(self, env):
        super().__init__(env)
        low, high = env.observation_space.low[[0, 2]], env.observation_space.high[[0, 2]]
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)

    def observation(self, obs):
        return obs[[0, 2]].astype(np.float32)


def position_only_cartpole():
    return PositionOnly(gym.make("CartPole-v1"))


class HistoryExpert:
    """Non-Markovian in o: estimates the velocities from the previous observation, (o_t − o_{t−1})/Δt."""

    def __init__(self):
        self.prev, self.fresh = None, None

    def reset(self, mask):
        mask = np.asarray(mask, bool)
        if self.fresh is None or len(self.fresh) != len(mask):
            self.prev, self.fresh = None, np.ones(len(mask), bool)
        else:
            self.fresh |= mask

    def __call__(self, obs):
        obs = np.asarray(obs, np.float64)
        prev = obs if self.prev is None else np.where(self.fresh[:, None], obs, self.prev)
        velocity = (obs - prev) / 0.02
        state = np.stack([obs[:, 0], velocity[:, 0], obs[:, 1], velocity[:, 1]], -1)
        self.prev, self.fresh[:] = obs.copy(), False
        return (state @ CARTPOLE_EXPERT_WEIGHTS > 0).astype(np.int64)


def test_recurrent_policy_imitates_a_non_markovian_expert_better_than_mlp():
    expert_return = evaluate_actor(HistoryExpert(), position_only_cartpole, n_episodes=10)["mean_return"]
    df = collect_demonstrations(HistoryExpert(), position_only_cartpole, n_episodes=6, seed=shifted(0))
    cfg = {"n_epochs": 20, "batch_size": 512, "lr": 2e-3, "seed": shifted(0)}
    mlp = BehaviorCloning(position_only_cartpole, {**cfg, "policy": "mlp"})
    mlp.fit(df)
    rnn = BehaviorCloning(position_only_cartpole, {**cfg, "policy": "recurrent", "seq_len": 64})
    rnn.fit(df)
    mlp_return = mlp.evaluate(position_only_cartpole, n_episodes=10)["mean_return"]
    rnn_return = rnn.evaluate(position_only_cartpole, n_episodes=10)["mean_return"]
    print(f"expert {expert_return}, MLP {mlp_return}, GRU {rnn_return}")
    assert expert_return == 500.0
    assert rnn_return >= 195 and rnn_return >= 0.9 * expert_return
    assert mlp_return < 150 and rnn_return > 2 * mlp_return
    assert rnn.last_metrics["bc_loss"] < 0.5 * mlp.last_metrics["bc_loss"]
