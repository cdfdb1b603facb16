"""Inverse RL (notes 10/12): max-margin and MaxEnt IRL recover rewards whose optimal policies do
what the expert does on a gridworld; the MaxEnt gradient is the exact likelihood gradient; guided
cost learning works from samples only; GAIL imitates a scripted CartPole expert."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core_rl.common.errors import ConfigError
from core_rl.inference import soft_value_iteration, soft_visitation
from core_rl.irl import (
    FeatureReward,
    expert_visitation,
    feature_expectations,
    gcl_reward_loss,
    guided_cost_learning,
    importance_weights,
    max_margin_irl,
    maxent_irl,
)
from core_rl.tabular import TabularMDP, policy_evaluation, value_iteration
from tests.seeding import seed

# ---- a gridworld with terrain features -----------------------------------------------------------


def gridworld(n: int = 8, slip: float = 0.1, gamma: float = 0.9, seed: int = 0):
    """n×n grid, actions stay/up/down/left/right, with probability ``slip`` a uniformly random move.
    Each cell has one of three terrains (rewards 0, −0.5, −1.5); the bottom-right cell is the goal
    (+2). Features: terrain one-hot and goal indicator; the true reward is linear in them."""
    rng = np.random.default_rng(seed)
    S, A = n * n, 5
    moves = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]])
    P = np.zeros((S, A, S))
    for s in range(S):
        i, j = divmod(s, n)
        for a in range(A):
            for b in range(A):
                ii, jj = np.clip([i + moves[b, 0], j + moves[b, 1]], 0, n - 1)
                P[s, a, ii * n + jj] += (1 - slip) * (a == b) + slip / A
    terrain = rng.choice(3, size=S, p=[0.6, 0.25, 0.15])
    goal = np.zeros(S)
    goal[S - 1] = 1.0
    phi = np.concatenate([np.eye(3)[terrain], goal[:, None]], 1)
    w_true = np.array([0.0, -0.5, -1.5, 2.0])
    mdp = TabularMDP(P, np.repeat((phi @ w_true)[:, None], A, 1), gamma, mu0=np.ones(S) / S)
    return mdp, phi


def true_return(mdp: TabularMDP, policy) -> float:
    return float(mdp.mu0 @ policy_evaluation(mdp, policy).V)


def optimal_action_agreement(mdp: TabularMDP, actions: np.ndarray) -> float:
    """Fraction of states whose action is one of the expert's (true-optimal) actions; moves into a
    wall and 'stay' tie exactly, so ties count as agreement."""
    Q = value_iteration(mdp).Q
    best = Q.max(1)
    return float(np.mean(Q[np.arange(mdp.n_states), actions] >= best - 1e-6 * (1 + np.abs(best))))


@pytest.fixture(scope="module")
def grid():
    mdp, phi = gridworld()
    expert = value_iteration(mdp).policy
    demos = mdp.sample(expert, 1000, 60, seed=seed(0))  # γ^60 ≈ 0.002: the tail is negligible
    uniform = true_return(mdp, mdp.uniform_policy())
    return mdp, phi, expert, demos, true_return(mdp, expert), uniform


def learned_policy(mdp: TabularMDP, reward: np.ndarray) -> np.ndarray:
    return value_iteration(mdp.replace(r=reward)).policy


# ---- MaxEnt IRL ----------------------------------------------------------------------------------


@pytest.mark.parametrize("reward", ["linear", "neural"])
def test_maxent_irl_recovers_the_expert_on_a_gridworld(grid, reward):
    mdp, phi, expert, demos, J_expert, J_uniform = grid
    assert J_expert > 0 > J_uniform
    res = maxent_irl(mdp, phi, demos, reward=reward, iterations=200, lr=0.1 if reward == "linear" else 0.01)
    policy = learned_policy(mdp, res.reward)
    agreement = optimal_action_agreement(mdp, policy)
    ratio = true_return(mdp, policy) / J_expert
    print(
        f"maxent {reward}: agreement {agreement:.3f}, return ratio {ratio:.4f}, "
        f"feature gap {res.history[0]['feature_gap']:.3f} -> {res.history[-1]['feature_gap']:.3f}"
    )
    assert agreement >= 0.9
    assert ratio >= 0.95
    assert res.history[-1]["feature_gap"] < 0.25 * res.history[0]["feature_gap"]
    if reward == "linear":  # goal good, swamp bad (terrains are one-hot, so only differences matter)
        w = res.weights
        assert w[3] > 0 and w[2] < w[1] < w[0]


@pytest.mark.parametrize("backup", ["expected", "optimistic"])
def test_maxent_gradient_is_the_exact_likelihood_gradient(backup):
    """Finite horizon, γ = 1: (ρ_E − ρ_ψ)·φ equals the finite-difference gradient of the expert's
    log-likelihood: E_{π_E}[Σ_t log π_t(a_t|s_t)] (max causal entropy, expected backup; exact in
    expectation over the dynamics, so the expert's exact visitation is used), or
    mean_i r(τ_i) − log β_0(s_0) = log p(τ|s_0,O) − log p(τ|s_0) per demonstration (exact inference)."""
    rng = np.random.default_rng(5)
    S, A, K, H = 5, 3, 4, 4
    mdp = TabularMDP(
        rng.dirichlet(np.full(S, 0.5), size=(S, A)), np.zeros((S, A)), 1.0, horizon=H, mu0=rng.dirichlet(np.ones(S))
    )
    phi = rng.normal(size=(S, A, K))
    expert_pi = rng.dirichlet(np.ones(A), size=S)
    demos = mdp.sample(expert_pi, 50, H, seed=seed(1))
    w = rng.normal(size=K) * 0.5
    if backup == "expected":
        expert, start = expert_pi, mdp.mu0
        marginals = mdp.state_action_marginals(expert_pi)  # (H, S, A)
    else:
        expert, start = demos, np.bincount(demos.states[:, 0], minlength=S) / 50

    def log_likelihood(weights):
        soft = soft_value_iteration(mdp, reward=phi @ weights, backup=backup)
        if backup == "expected":
            return float((marginals * soft.log_policy).sum())
        s, a = demos.states[:, :H], demos.actions
        return ((phi @ weights)[s, a].sum(1) - soft.V[0][s[:, 0]]).mean()

    soft = soft_value_iteration(mdp, reward=phi @ w, backup=backup)
    analytic = feature_expectations(expert_visitation(mdp, expert, start), phi) - feature_expectations(
        soft_visitation(mdp, soft, start), phi
    )
    eps = 1e-6
    numeric = np.array([(log_likelihood(w + eps * e) - log_likelihood(w - eps * e)) / (2 * eps) for e in np.eye(K)])
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)
    assert np.abs(analytic).max() > 0.1  # not trivially zero


# ---- max-margin IRL ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["svm", "projection"])
def test_max_margin_irl_matches_expert_return(grid, method):
    mdp, phi, expert, demos, J_expert, _ = grid
    res = max_margin_irl(mdp, phi, demos, method=method)
    policy = learned_policy(mdp, res.reward)
    np.testing.assert_array_equal(policy, res.policy)
    ratio = true_return(mdp, policy) / J_expert
    print(
        f"max-margin {method}: {res.iterations} iterations, return ratio {ratio:.4f}, "
        f"agreement {optimal_action_agreement(mdp, policy):.3f}, w {np.round(res.w, 3)}"
    )
    assert ratio >= 0.95
    if method == "svm":
        # from sampled demonstrations μ_E is an estimate that some policy may beat under every w: the
        # soft-margin QP then separates only up to its slack (5.7 at seed shift 1); the hard separation is
        # asserted with the exact expert below
        assert res.converged
    else:
        # feature matching: the mixture's feature expectations approach the expert's
        mixed = res.mixture @ res.feature_expectations
        first = np.linalg.norm(res.feature_expectations[0] - res.expert_features)
        assert np.linalg.norm(mixed - res.expert_features) < 0.05 * first
        assert res.history[-1]["t"] < 0.05 * res.history[0]["t"]


def test_max_margin_with_exact_expert_policy_and_errors(grid):
    mdp, phi, expert, _, J_expert, _ = grid
    res = max_margin_irl(mdp, phi, expert)
    assert true_return(mdp, res.policy) >= 0.95 * J_expert
    # with the exact μ_E the expert beats every generated policy under the learned w (the structured
    # margin D itself is met only up to the QP's slack: these features cannot express all of it)
    assert res.converged
    assert (res.feature_expectations @ res.w <= res.expert_features @ res.w + 1e-6).all()
    with pytest.raises(ConfigError, match="features must have shape"):
        max_margin_irl(mdp, phi[:10], expert)
    with pytest.raises(ConfigError, match="max_margin field 'C'"):
        max_margin_irl(mdp, phi, expert, C=-1.0)
    with pytest.raises(ConfigError, match="maxent_irl field 'reward'"):
        maxent_irl(mdp, phi, expert, reward="quadratic")


# ---- guided cost learning ------------------------------------------------------------------------


def test_gcl_loss_gradient_is_the_importance_weighted_maxent_gradient():
    torch.manual_seed(0)
    K = 3
    model = FeatureReward(K)
    torch.nn.init.normal_(model.net.weight)
    phi_E, phi_S = torch.randn(6, K), torch.randn(9, K)  # per-trajectory feature sums
    log_q = torch.randn(9)
    loss = gcl_reward_loss(model(phi_E), model(phi_S), log_q)
    loss.backward()
    with torch.no_grad():
        w = importance_weights(model(phi_S), log_q)
        expected = -(phi_E.mean(0) - (w[:, None] * phi_S).sum(0))
        assert torch.allclose(w, torch.exp(model(phi_S) - log_q) / torch.exp(model(phi_S) - log_q).sum())
    assert torch.allclose(model.net.weight.grad[0], expected, atol=1e-6)


def test_guided_cost_learning_from_samples_only():
    mdp, phi = gridworld()
    mdp = mdp.replace(mu0=np.eye(mdp.n_states)[0])  # every episode starts top-left
    expert = value_iteration(mdp).policy
    demos = mdp.sample(expert, 1000, 30, seed=seed(0))
    calls = []

    def sample(policy, n, steps, rng):  # the algorithm only ever samples
        calls.append(n)
        return mdp.sample(policy, n, steps, seed=rng)

    # reward_lr 0.01 over 400 rounds: the default 0.05 over 150 sometimes settles on a detour (ratio
    # ≈ 0.81-0.84) or diverges (ratio < 0) depending on the seed; measured at 0.01/400 over seeds
    # 0-11: ratio 0.986-0.998 (uniform policy ≈ -1.6, so 0.9 is far above anything unlearned)
    res = guided_cost_learning(
        sample, np.repeat(phi[:, None], 5, 1), demos, seed=seed(0), reward_lr=0.01, iterations=400
    )
    ratio = true_return(mdp, learned_policy(mdp, res.reward)) / true_return(mdp, expert)
    uniform = true_return(mdp, mdp.uniform_policy()) / true_return(mdp, expert)
    print(
        f"GCL: reward's optimal policy return ratio {ratio:.4f} (uniform {uniform:.3f}), "
        f"final ESS {res.history[-1]['ess']:.1f}"
    )
    assert len(calls) == 400  # one sampling call per round
    assert ratio >= 0.9


# ---- GAIL / AIRL ---------------------------------------------------------------------------------


def scripted_cartpole_expert(obs: np.ndarray) -> np.ndarray:
    """Push towards where the pole falls, with a little cart-position and -velocity feedback."""
    x, x_dot, theta, theta_dot = np.asarray(obs, dtype=np.float64).T
    return (theta + 0.5 * theta_dot + 0.01 * x + 0.1 * x_dot > 0).astype(np.int64)


@pytest.fixture(scope="module")
def cartpole_demos(tmp_path_factory):
    from core_rl.imitation.demonstrations import collect_demonstrations

    path = tmp_path_factory.mktemp("demos") / "cartpole_expert.parquet"
    df = collect_demonstrations(scripted_cartpole_expert, "CartPole-v1", 10, seed=0, path=path)
    return df, path


def test_scripted_expert_is_an_expert(cartpole_demos):
    df, _ = cartpole_demos
    returns = df.groupby("episode")["reward"].sum()
    assert len(returns) == 10 and (returns == 500).all()


@pytest.mark.parametrize("reward_type", ["gail", pytest.param("airl", marks=pytest.mark.slow)])  # AIRL: ~1 min
def test_gail_imitates_the_scripted_expert_on_cartpole(cartpole_demos, reward_type):
    from core_rl.common.tracking import MemoryTracker
    from core_rl.irl.gail import GAIL

    df, _ = cartpole_demos
    tracker = MemoryTracker()
    agent = GAIL("CartPole-v1", {"seed": seed(0), "reward_type": reward_type}, tracker=tracker, demonstrations=df)
    random_return = agent.evaluate(10, deterministic=False)["mean_return"]
    agent.learn(60_000)
    result = agent.evaluate(10)["mean_return"]
    obs = df[[f"obs_{i}" for i in range(4)]].to_numpy(np.float32).copy()
    expert_actions = df["action"].to_numpy()
    agreement = float((agent.predict(obs) == expert_actions).mean())
    print(
        f"{reward_type}: return {result:.1f} (random policy {random_return:.1f}, expert 500), action agreement "
        f"on expert states {agreement:.3f}, disc expert acc {tracker.last('disc_expert_acc'):.2f}"
    )
    assert random_return < 50
    assert result >= 0.9 * 500
    # the episode statistics are the env's reward, not the discriminator's
    assert tracker.last("episode_return") > 100 and "disc_loss" in tracker.metrics
    # the policy imitates the expert's choices on the expert's own states (measured 0.79-0.89 at seed
    # shifts 0-2; a random policy agrees on half). The discriminator's own preference for the expert's
    # action is not asserted: at GAIL's equilibrium π = π_E it tends to chance (0.55-0.83 measured)
    assert agreement >= 0.7, agreement


def test_reward_relabel_wrapper_passes_true_successors_and_keeps_env_reward():
    import gymnasium as gym

    from core_rl.common.envs import make_vec_env
    from core_rl.irl.gail import RewardRelabel

    seen = []

    def reward_fn(obs, actions, next_obs, terminated):
        seen.append((obs.copy(), next_obs.copy(), terminated.copy()))
        return -np.ones(len(actions)) * 7.0

    env = RewardRelabel(make_vec_env("CartPole-v1", 2, seed=0), reward_fn)
    obs, _ = env.reset(seed=0)
    for _ in range(60):
        prev = obs
        obs, reward, term, trunc, info = env.step(np.array([0, 0]))  # always left: episodes end fast
        assert (reward == -7.0).all() and (env.true_rewards == 1.0).all()
        s, s_next, t = seen[-1]
        np.testing.assert_array_equal(s, prev)
        done = term | trunc
        for i in range(2):  # the successor is the real next state, not the reset observation
            np.testing.assert_array_equal(s_next[i], info["final_obs"][i] if done[i] else obs[i])
    assert any(t.any() for _, _, t in seen) and len(env.transitions) == 60
    env.close()
    assert isinstance(env, gym.vector.VectorWrapper)


def test_gail_from_config_path_cli_style_and_checkpoint(cartpole_demos, tmp_path):
    from core_rl import Agent, make_agent

    _, path = cartpole_demos
    agent = make_agent("gail", "CartPole-v1", {"demonstrations": str(path), "seed": seed(1)})
    agent.learn(512)
    assert agent.expert_data is not None and len(agent.expert_data["actions"]) == 5000
    saved = agent.save(tmp_path / "gail.pt")
    loaded = Agent.load(saved)
    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs), agent.predict(obs))
    np.testing.assert_allclose(
        loaded.learned_reward(obs, np.zeros(16, dtype=np.int64)),
        agent.learned_reward(obs, np.zeros(16, dtype=np.int64)),
        rtol=1e-6,
    )


def test_gail_errors_name_the_cause(tmp_path):
    from core_rl.irl.gail import GAIL

    with pytest.raises(ConfigError, match="demonstrations file .* does not exist"):
        GAIL("CartPole-v1", {"demonstrations": str(tmp_path / "missing.parquet")})
    with pytest.raises(ConfigError, match="gail needs demonstrations"):  # when it is built, not when it trains
        GAIL("CartPole-v1", {"n_envs": 2, "n_steps": 8})
    with pytest.raises(ConfigError, match="reward_type"):
        GAIL("CartPole-v1", {"reward_type": "wasserstein"})


def test_gail_given_demonstrations_in_python_loads_to_predict_but_not_to_train(cartpole_demos, tmp_path):
    from core_rl import Agent
    from core_rl.irl.gail import GAIL

    df, _ = cartpole_demos
    agent = GAIL("CartPole-v1", {"n_envs": 2, "n_steps": 8, "seed": seed(0)}, demonstrations=df).learn(16)
    loaded = Agent.load(agent.save(tmp_path / "gail.pt"))  # the checkpoint holds no demonstrations
    obs = np.zeros((3, 4), dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict(obs), agent.predict(obs))
    with pytest.raises(ConfigError, match="gail needs demonstrations"):
        loaded.learn(16)
