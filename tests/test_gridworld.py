"""Gridworlds from text layouts and episodic MDPs (terminal states): the solvers' exact values on
tiny grids, FrozenLake rebuilt from its map, the episodic visitation and reward folding, and MaxEnt /
max-margin IRL recovering the expert on FrozenLake and a gridworld (issue 18)."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest

from core_rl.common.errors import ConfigError
from core_rl.inference import soft_value_iteration, soft_visitation
from core_rl.irl import empirical_visitation, expert_visitation, feature_expectations, max_margin_irl, maxent_irl
from core_rl.tabular import (
    TabularMDP,
    gridworld,
    policy_evaluation,
    policy_iteration,
    q_iteration,
    value_iteration,
)
from tests.seeding import seed


def solve_all(mdp: TabularMDP) -> dict[str, np.ndarray]:
    return {
        "value_iteration": value_iteration(mdp).V,
        "q_iteration": q_iteration(mdp).V,
        "policy_iteration": policy_iteration(mdp).V,
    }


def start_return(mdp: TabularMDP, policy) -> float:
    return float(mdp.mu0 @ policy_evaluation(mdp, policy).V)


# ---- the builder: known answers ------------------------------------------------------------------


def test_deterministic_grid_values_are_discounted_distances():
    """Reward 1 on entering G: V(s) = γ^(d(s) - 1) with d the shortest path length around the wall."""
    world = gridworld("S..\n.#G", gamma=0.9)
    distance = {(0, 0): 3, (0, 1): 2, (0, 2): 1, (1, 0): 4}
    expected = np.zeros(world.mdp.n_states)
    for (i, j), d in distance.items():
        expected[world.state(i, j)] = 0.9 ** (d - 1)
    for name, V in solve_all(world.mdp).items():
        np.testing.assert_allclose(V, expected, atol=1e-9, err_msg=name)
    assert world.render_policy(value_iteration(world.mdp).policy) == "→→↓\n↑#G"
    assert world.mdp.terminal[world.cells("G")].all() and world.mdp.terminal[world.cells("#")].all()
    np.testing.assert_array_equal(world.mdp.mu0, np.eye(6)[0])


def test_step_cost_with_gamma_one_counts_steps():
    """γ = 1, a cost of 1 a step and no goal reward: V(s) = −d(s), the episodic value (finite only
    because the goal terminates the episode)."""
    world = gridworld("S..\n.#G", gamma=1.0, step_reward=-1.0, goal_reward=0.0)
    V = {name: v[[world.state(0, 0), world.state(1, 0)]] for name, v in solve_all(world.mdp).items()}
    for name, v in V.items():
        np.testing.assert_allclose(v, [-3.0, -4.0], atol=1e-9, err_msg=name)


@pytest.mark.parametrize("slip", [0.0, 0.3, 0.6])
def test_slippery_corridor_closed_form(slip):
    """In the corridor S.G a perpendicular slip bumps the wall (stays), so from the middle cell
    V = (1 − p) + pγV, i.e. V = (1 − p)/(1 − pγ), and from S: V_S = γ(1 − p)V_mid/(1 − pγ) (moving
    right is optimal while 1 − p > p/2, the chance of slipping right when pushing up)."""
    gamma = 0.95
    world = gridworld("S.G", slip=slip, gamma=gamma)
    V = value_iteration(world.mdp).V
    v_mid = (1 - slip) / (1 - slip * gamma)
    np.testing.assert_allclose(V[:2], [gamma * (1 - slip) * v_mid / (1 - slip * gamma), v_mid], rtol=1e-9)
    assert world.render_policy(value_iteration(world.mdp).policy) == "→→G"


@pytest.mark.parametrize(("layout", "map_name"), [("frozenlake4x4", "4x4"), ("frozenlake8x8", "8x8")])
def test_frozenlake_map_with_slip_two_thirds_is_frozenlake(layout, map_name):
    world = gridworld(layout, slip=2 / 3, gamma=0.99)
    gym_mdp = TabularMDP.from_gym("FrozenLake-v1", gamma=0.99, map_name=map_name)
    np.testing.assert_allclose(world.mdp.P, gym_mdp.P, atol=1e-12)
    np.testing.assert_allclose(world.mdp.r, gym_mdp.r, atol=1e-12)
    np.testing.assert_array_equal(world.mdp.terminal, gym_mdp.terminal)
    np.testing.assert_array_equal(world.mdp.mu0, gym_mdp.mu0)


def test_terminal_states_keep_zero_value_whatever_the_start():
    """With γ = 1 an absorbing state would keep any start value: the solvers pin terminals to 0."""
    world = gridworld("cliff", gamma=1.0, step_reward=-1.0, goal_reward=0.0, hole_reward=-100.0)
    mdp = world.mdp
    reference = value_iteration(mdp)
    warm = value_iteration(mdp, V0=np.full(mdp.n_states, 7.0))
    np.testing.assert_allclose(warm.V, reference.V, atol=1e-9)
    assert np.all(warm.V[mdp.terminal] == 0.0)
    q = q_iteration(mdp, Q0=np.full((mdp.n_states, mdp.n_actions), 7.0))
    np.testing.assert_allclose(q.V, reference.V, atol=1e-9)
    # the cliff: the shortest safe path goes up, along and down (5 steps from S)
    assert reference.V[world.state(2, 0)] == pytest.approx(-5.0)


def test_layout_and_settings_errors_name_the_field():
    with pytest.raises(ConfigError, match="gridworld field 'layout'.*equal lengths"):
        gridworld("S..\n.G")
    with pytest.raises(ConfigError, match=r"gridworld field 'layout'.*unknown cell.*'X'"):
        gridworld("SXG")
    with pytest.raises(ConfigError, match="built-in layout"):
        gridworld("no-such-layout")
    with pytest.raises(ConfigError, match="gridworld field 'slip'"):
        gridworld("S.G", slip=1.5)
    with pytest.raises(ConfigError, match="gridworld field 'gamma'"):
        gridworld("S.G", gamma=0.0)
    with pytest.raises(ConfigError, match="no free or start cell"):
        gridworld("G#H")


def test_module_docstring_example_runs():
    module = importlib.import_module("core_rl.tabular.gridworld")  # the package exports the function
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3 and result.failed == 0


# ---- episodic visitation and reward folding --------------------------------------------------------


@pytest.mark.parametrize("horizon", [None, 6])
def test_episodic_visitation_gives_the_return_of_the_folded_reward(horizon):
    """Σ ρ(s,a) r(s,a) over the episodic visitation (terminals counted once, on entry) is the return
    under the folded MDP reward, for any reward on any state, stationary policies and finite
    horizons alike; the demonstrations' empirical visitation estimates it."""
    rng = np.random.default_rng(3)
    mdp = gridworld("frozenlake4x4", slip=0.4, gamma=0.9, horizon=horizon).mdp
    raw = rng.normal(size=(mdp.n_states, mdp.n_actions))
    policy = rng.dirichlet(np.ones(mdp.n_actions), size=mdp.n_states)
    rho = mdp.episodic_occupancy(policy)
    folded = mdp.fold_terminal_reward(raw)
    assert np.all(folded[mdp.terminal] == 0.0)
    folded_mdp = mdp.replace(r=folded)  # a valid MDP reward
    if horizon is None:
        J = start_return(folded_mdp, policy)
    else:
        from core_rl.tabular import backward_induction

        J = float(mdp.mu0 @ backward_induction(folded_mdp, policy=policy).V[0])
    assert float((rho * raw).sum()) == pytest.approx(J, rel=1e-10)
    # every terminal state entered is counted once: entry mass = P(reach it), discounted
    assert rho[mdp.terminal].sum() > 0.05
    demos = mdp.sample(policy, 4000, horizon or 80, seed=seed(0))
    np.testing.assert_allclose(empirical_visitation(mdp, demos), rho, atol=0.05)
    assert float((empirical_visitation(mdp, demos) * raw).sum()) == pytest.approx(J, abs=0.1)


def test_episodic_maxent_gradient_is_the_exact_likelihood_gradient():
    """Finite horizon, γ = 1, a terminal state whose entry the reward scores: (ρ_E − ρ_ψ)·φ with the
    episodic visitations is the gradient of the expert's causal log-likelihood
    E_{π_E}[Σ_{t, live} log π_t(a_t|s_t)] under the folded reward (finite differences)."""
    rng = np.random.default_rng(7)
    S, A, K, H = 5, 3, 4, 4
    P = rng.dirichlet(np.full(S, 0.5), size=(S, A))
    P[4] = 0.0
    P[4, :, 4] = 1.0
    terminal = np.zeros(S, dtype=bool)
    terminal[4] = True
    mu0 = np.array([0.4, 0.3, 0.2, 0.1, 0.0])
    mdp = TabularMDP(P, np.zeros((S, A)), 1.0, horizon=H, mu0=mu0, terminal=terminal)
    phi = rng.normal(size=(S, A, K))
    expert = rng.dirichlet(np.ones(A), size=S)
    marginals = mdp.state_action_marginals(expert)  # (H, S, A); terminal rows are not decisions
    live = ~terminal

    def log_likelihood(w):
        soft = soft_value_iteration(mdp, reward=mdp.fold_terminal_reward(phi @ w), backup="expected")
        return float((marginals * soft.log_policy)[:, live].sum())

    w = rng.normal(size=K) * 0.5
    soft = soft_value_iteration(mdp, reward=mdp.fold_terminal_reward(phi @ w), backup="expected")
    analytic = feature_expectations(expert_visitation(mdp, expert), phi) - feature_expectations(
        soft_visitation(mdp, soft, episodic=True), phi
    )
    eps = 1e-6
    numeric = np.array([(log_likelihood(w + eps * e) - log_likelihood(w - eps * e)) / (2 * eps) for e in np.eye(K)])
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)
    assert np.abs(analytic).max() > 0.05


# ---- inverse RL on episodic tasks ------------------------------------------------------------------


@pytest.fixture(scope="module")
def frozenlake():
    mdp = TabularMDP.from_gym("FrozenLake-v1", gamma=0.99)
    expert = value_iteration(mdp).policy
    return mdp, expert, start_return(mdp, expert)


def test_maxent_irl_on_frozenlake_recovers_the_expert(frozenlake):
    """The issue's repro: one-hot state features, the value-iteration expert. The feature gap must
    shrink, the learned reward must be a valid MDP reward, and its optimal policy must score ≥ 90%
    of the expert's return (the uniform policy scores ~1%)."""
    mdp, expert, J_expert = frozenlake
    res = maxent_irl(mdp, np.eye(mdp.n_states), expert, iterations=300)
    gaps = [h["feature_gap"] for h in res.history]
    learned = mdp.replace(r=res.reward)
    J_greedy = start_return(mdp, value_iteration(learned).policy)
    J_soft = start_return(mdp, res.soft.policy)
    J_uniform = start_return(mdp, mdp.uniform_policy())
    print(f"maxent frozenlake: gap {gaps[0]:.3f} -> {gaps[-1]:.3f}, J greedy {J_greedy:.4f} soft {J_soft:.4f}")
    print(f"  expert {J_expert:.4f} uniform {J_uniform:.4f}")
    assert gaps[-1] < 0.05 * gaps[0]
    assert J_greedy >= 0.9 * J_expert
    assert J_soft > 5 * J_uniform
    assert np.all(res.reward[mdp.terminal] == 0.0)
    goal = int(np.flatnonzero(mdp.terminal)[-1])
    holes = np.flatnonzero(mdp.terminal)[:-1]
    assert res.raw_reward[goal].mean() > res.raw_reward[holes].mean(axis=1).max()  # the goal is what pays


def test_maxent_and_max_margin_from_demonstrations_on_a_gridworld():
    """A slippery gridworld with holes along a bridge; state-type features (free, goal, hole);
    the expert is known only from sampled demonstrations."""
    world = gridworld("bridge", slip=0.2, gamma=0.95)
    mdp = world.mdp
    expert = value_iteration(mdp).policy
    J_expert = start_return(mdp, expert)
    demos = mdp.sample(expert, 500, 40, seed=seed(1))
    phi = world.cell_type_features()
    res = maxent_irl(mdp, phi, demos, iterations=150, lr=0.1)
    J = start_return(mdp, value_iteration(mdp.replace(r=res.reward)).policy)
    mm = max_margin_irl(mdp, phi, demos)
    J_mm = start_return(mdp, value_iteration(mdp.replace(r=mm.reward)).policy)
    print(f"bridge: expert {J_expert:.4f}, maxent {J:.4f} (w {np.round(res.weights, 2)}), max-margin {J_mm:.4f}")
    assert J >= 0.9 * J_expert and J_mm >= 0.9 * J_expert
    assert res.weights[1] > res.weights[2]  # goal over hole
    assert res.history[-1]["feature_gap"] < 0.25 * res.history[0]["feature_gap"]


def test_proper_policy_ends_every_episode():
    world = gridworld("rooms", gamma=1.0, step_reward=-1.0, goal_reward=0.0)
    from core_rl.tabular import proper_policy

    policy = proper_policy(world.mdp)
    V = policy_evaluation(world.mdp, policy).V  # raises if some state never reaches a terminal
    live = ~world.mdp.terminal
    assert np.all(V[live] < 0)  # every live state pays at least one step before the episode ends
    np.testing.assert_allclose(policy_iteration(world.mdp, policy).V, value_iteration(world.mdp).V, atol=1e-9)


def test_learned_reward_wrapper_hands_the_reward_to_any_agent(frozenlake):
    """The learned MaxEnt reward as the env's reward, for any agent: the wrapped env pays the table's
    entry of the state the action was taken in and keeps the true reward in ``info``."""
    import gymnasium as gym

    from core_rl.irl import TabularRewardWrapper

    mdp, expert, J_expert = frozenlake
    res = maxent_irl(mdp, np.eye(mdp.n_states), expert, iterations=100)
    env = TabularRewardWrapper(gym.make("FrozenLake-v1"), res.reward)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = int(rng.integers(4))
        nxt, r, term, trunc, info = env.step(a)
        assert r == res.reward[obs, a] and "env_reward" in info
        obs = nxt
        if term or trunc:
            obs, _ = env.reset()
    with pytest.raises(ConfigError, match="shape"):
        TabularRewardWrapper(gym.make("FrozenLake-v1"), res.reward[:3])
