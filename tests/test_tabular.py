"""Tabular foundations (notes 9/5, 9/12): Markov chains, MDPs and dynamic programming, checked
against closed forms, brute force, and Monte-Carlo rollouts in the real gymnasium envs."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest

from core_rl.common.errors import ConfigError, EnvError
from core_rl.tabular import (
    MarkovChain,
    TabularMDP,
    backward_induction,
    bellman_operator,
    policy_evaluation,
    policy_iteration,
    q_iteration,
    value_iteration,
)

# ---- helpers ------------------------------------------------------------------------------------


def savings_mdp(gamma: float) -> TabularMDP:
    """Two states (0 poor, 1 rich), two actions.

    poor: a=0 "save"  -> reward 0, rich w.p. 0.5, else poor;  a=1 "spend" -> reward 1, stay poor.
    rich: a=0 "keep"  -> reward 2, stay rich w.p. 0.9, else poor; a=1 "cash out" -> reward 3, poor.
    """
    P = np.zeros((2, 2, 2))
    P[0, 0] = [0.5, 0.5]
    P[0, 1] = [1.0, 0.0]
    P[1, 0] = [0.1, 0.9]
    P[1, 1] = [1.0, 0.0]
    r = np.array([[0.0, 1.0], [2.0, 3.0]])
    return TabularMDP(P, r, gamma)


def random_mdp(S: int, A: int, gamma: float, seed: int) -> TabularMDP:
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(S, 0.7), size=(S, A))
    r = rng.normal(size=(S, A))
    return TabularMDP(P, r, gamma, mu0=rng.dirichlet(np.ones(S)))


def random_chain(S: int, seed: int) -> MarkovChain:
    rng = np.random.default_rng(seed)
    return MarkovChain(rng.dirichlet(np.full(S, 0.5), size=S).T)  # columns are distributions


def run_episodes(env: gym.Env, act, n: int, seed: int, gamma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Discounted returns and 'reached a positive reward' flags of ``n`` episodes; ``act(t, s)``."""
    returns, success = np.zeros(n), np.zeros(n)
    s, _ = env.reset(seed=seed)
    for ep in range(n):
        if ep:
            s, _ = env.reset()
        t, done = 0, False
        while not done:
            s, rew, term, trunc, _ = env.step(int(act(t, s)))
            returns[ep] += gamma**t * rew
            success[ep] = max(success[ep], float(rew > 0))
            t, done = t + 1, term or trunc
    return returns, success


@pytest.fixture(scope="module")
def frozen() -> TabularMDP:
    return TabularMDP.from_gym("FrozenLake-v1", gamma=0.99, is_slippery=True)


# ---- Markov chains ------------------------------------------------------------------------------


def test_two_state_chain_stationary_closed_form():
    # T = [[1-a, b], [a, 1-b]] (column j = p(. | s=j)); balance a*mu0 = b*mu1 -> mu = (b, a)/(a+b)
    a, b = 0.3, 0.1
    chain = MarkovChain([[1 - a, b], [a, 1 - b]])
    expected = np.array([b, a]) / (a + b)
    np.testing.assert_allclose(chain.stationary_distribution("eigen"), expected, atol=1e-12)
    np.testing.assert_allclose(chain.stationary_distribution("power"), expected, atol=1e-10)
    np.testing.assert_allclose(chain.step([1.0, 0.0]), [1 - a, a])  # mu_1 = T mu_0: column 0
    assert chain.is_ergodic and chain.is_unichain


def test_random_chain_stationary_matches_long_run_simulation():
    chain = random_chain(6, seed=3)
    mu = chain.stationary_distribution()
    np.testing.assert_allclose(chain.T @ mu, mu, atol=1e-12)
    assert mu.min() >= 0 and abs(mu.sum() - 1) < 1e-12
    power = chain.power_iteration(tol=1e-13)
    assert power.converged
    np.testing.assert_allclose(power.mu, mu, atol=1e-10)
    assert chain.is_ergodic
    # mixing: T^t mu0 -> mu from a point mass, and propagate == matrix power
    mu0 = np.eye(6)[0]
    np.testing.assert_allclose(chain.propagate(mu0, 300), mu, atol=1e-10)
    np.testing.assert_allclose(chain.propagate(mu0, 7), np.linalg.matrix_power(chain.T, 7) @ mu0, atol=1e-14)
    assert chain.propagate(mu0, 5, return_all=True).shape == (6, 6)
    # the ergodic theorem: long-run visitation frequencies of simulated chains -> mu
    states = chain.sample(mu0, steps=5000, n_chains=20, seed=0)[:, 200:]
    freq = np.bincount(states.ravel(), minlength=6) / states.size
    assert np.abs(freq - mu).max() < 0.01, (freq, mu)
    assert np.abs(mu - 1 / 6).max() > 0.05  # the check above can tell mu from uniform
    # same seed -> same numbers
    np.testing.assert_array_equal(chain.sample(mu0, 50, 3, seed=1), chain.sample(mu0, 50, 3, seed=1))


def test_periodic_chain_structure():
    cycle = MarkovChain(np.roll(np.eye(3), 1, axis=0))  # 0 -> 1 -> 2 -> 0
    assert cycle.is_irreducible and cycle.period() == 3
    assert not cycle.is_aperiodic and not cycle.is_ergodic
    np.testing.assert_allclose(cycle.stationary_distribution(), np.full(3, 1 / 3), atol=1e-12)
    np.testing.assert_allclose(cycle.stationary_distribution("power"), np.full(3, 1 / 3), atol=1e-10)
    np.testing.assert_allclose(cycle.propagate([1, 0, 0], 3), [1, 0, 0])  # never mixes
    np.testing.assert_allclose(cycle.propagate([1, 0, 0], 1), [0, 1, 0])  # T[i, j] = p(i | j)


def test_gamblers_ruin_absorption_closed_form():
    # states 0..4, win a unit w.p. p; 0 and 4 absorb. P(reach 4 | i) = (1 - (q/p)^i) / (1 - (q/p)^4)
    p, q, n = 0.4, 0.6, 4
    T = np.zeros((n + 1, n + 1))
    T[0, 0] = T[n, n] = 1.0
    for i in range(1, n):
        T[i + 1, i], T[i - 1, i] = p, q
    chain = MarkovChain(T)
    assert [c.tolist() for c in chain.closed_classes] == [[0], [4]]
    assert not chain.is_unichain and not chain.is_irreducible
    with pytest.raises(ConfigError, match="not unique"):
        chain.stationary_distribution()
    for i in range(1, n):
        win = (1 - (q / p) ** i) / (1 - (q / p) ** n)
        lim = chain.limiting_distribution(np.eye(n + 1)[i])
        np.testing.assert_allclose(lim, [1 - win, 0, 0, 0, win], atol=1e-12)
        np.testing.assert_allclose(chain.propagate(np.eye(n + 1)[i], 2000), lim, atol=1e-10)


@pytest.mark.parametrize(
    "T, match",
    [
        (np.ones((2, 3)) / 2, "square"),
        ([[1.2, 0.0], [-0.2, 1.0]], "negative"),
        ([[0.9, 0.1], [0.5, 0.5]], "column 0 sums to 1.4"),  # row-stochastic given by mistake
        ([[np.nan, 0.5], [0.5, 0.5]], "NaN"),
        ([["a", "b"], ["c", "d"]], "numeric"),
    ],
)
def test_markov_chain_rejects_malformed_operators(T, match):
    with pytest.raises(ConfigError, match=match):
        MarkovChain(T)


def test_markov_chain_rejects_malformed_distributions():
    chain = MarkovChain(np.eye(2))
    with pytest.raises(ConfigError, match="sums to"):
        chain.propagate([0.5, 0.6], 3)
    with pytest.raises(ConfigError, match="shape"):
        chain.step([1.0, 0.0, 0.0])
    with pytest.raises(ConfigError, match="steps"):
        chain.propagate([1.0, 0.0], -1)


# ---- MDP model --------------------------------------------------------------------------------


def test_index_conventions_and_both_views(frozen):
    T, P = frozen.T, frozen.P
    assert T.shape == (16, 16, 4) and P.shape == (16, 4, 16)
    s, a = 6, 2
    for i in range(16):
        assert T[i, s, a] == P[s, a, i]  # T[i, j, k] = p(s'=i | s=j, a=k)
    np.testing.assert_allclose(T.sum(axis=0), 1.0)  # column-stochastic over s'
    again = TabularMDP.from_transition_operator(T, frozen.r, frozen.gamma)
    np.testing.assert_array_equal(again.P, P)
    with pytest.raises(ValueError):
        P[0, 0, 0] = 1.0  # read-only


def test_from_gym_matches_the_env_dynamics(frozen):
    env = gym.make("FrozenLake-v1", is_slippery=True)
    table = env.unwrapped.P
    holes_and_goal = [5, 7, 11, 12, 15]
    np.testing.assert_array_equal(np.flatnonzero(frozen.terminal), holes_and_goal)
    for s in set(range(16)) - set(holes_and_goal):
        for a in range(4):
            expected = np.zeros(16)
            for prob, s2, _, _ in table[s][a]:
                expected[s2] += prob
            np.testing.assert_allclose(frozen.P[s, a], expected)
            np.testing.assert_allclose(frozen.r[s, a], expected[15])  # reward 1 on entering the goal
    np.testing.assert_allclose(frozen.mu0, np.eye(16)[0])
    with pytest.raises(EnvError, match="no tabular model"):
        TabularMDP.from_gym("CartPole-v1")


def test_state_marginals_follow_the_notes_formula_and_simulation(frozen):
    pi = np.random.default_rng(0).dirichlet(np.ones(4), size=16)  # a stochastic closed-loop policy
    steps = 12
    mu = frozen.state_marginals(pi, steps=steps)
    assert mu.shape == (steps + 1, 16)
    np.testing.assert_allclose(mu.sum(axis=1), 1.0, atol=1e-12)
    assert mu.min() >= 0
    # the notes' non-vectorized sum mu_{t+1,i} = sum_{j,k} T_{i,j,k} mu_{t,j} pi(k|j)
    T = frozen.T
    ref = [np.asarray(frozen.mu0)]
    for _ in range(steps):
        ref.append(
            np.array([sum(T[i, j, k] * ref[-1][j] * pi[j, k] for j in range(16) for k in range(4)) for i in range(16)])
        )
    np.testing.assert_allclose(mu, np.array(ref), atol=1e-12)
    # ... and the model's own sampler
    traj = frozen.sample(pi, n=20_000, steps=steps, seed=1)
    freq = np.stack([np.bincount(traj.states[:, t], minlength=16) for t in range(steps + 1)]) / 20_000
    se = np.sqrt(mu * (1 - mu) / 20_000)
    assert np.all(np.abs(freq - mu) <= 5 * se + 1e-3)
    # ... and the real gymnasium env (terminal states absorb: the episode stays where it ended)
    env = gym.make("FrozenLake-v1", is_slippery=True)
    rng = np.random.default_rng(2)
    n = 3000
    counts = np.zeros((steps + 1, 16))
    s, _ = env.reset(seed=3)
    for ep in range(n):
        if ep:
            s, _ = env.reset()
        done = False
        for t in range(steps + 1):
            counts[t, s] += 1
            if not done and t < steps:
                s, _, term, _, _ = env.step(int(rng.choice(4, p=pi[s])))
                done = term
    freq = counts / n
    se = np.sqrt(mu * (1 - mu) / n)
    assert np.all(np.abs(freq - mu) <= 5 * se + 2e-3), np.abs(freq - mu).max()


def test_open_loop_marginals_are_the_notes_literal_formula():
    mdp = random_mdp(5, 3, 0.9, seed=4)
    xi = np.array([0.2, 0.5, 0.3])  # p(a_t = k), independent of the state
    mu = mdp.state_marginals(np.tile(xi, (5, 1)), steps=4)
    for t in range(4):
        np.testing.assert_allclose(mu[t + 1], np.einsum("ijk,j,k->i", mdp.T, mu[t], xi), atol=1e-14)
    sa = mdp.state_action_marginals(np.tile(xi, (5, 1)), steps=4)
    np.testing.assert_allclose(sa, mu[:4, :, None] * xi[None, None], atol=1e-14)


def test_stationary_state_action_distribution():
    mdp = random_mdp(5, 3, 0.9, seed=5)
    pi = np.random.default_rng(6).dirichlet(np.ones(3), size=5)
    rho = mdp.stationary_state_action_distribution(pi)
    # the notes' chain on (s, a) pairs has the same stationary distribution
    sa_chain = mdp.state_action_chain(pi)
    np.testing.assert_allclose(sa_chain.stationary_distribution().reshape(5, 3), rho, atol=1e-12)
    # flow conservation: sum_a rho(s', a) = sum_{s, a} p(s'|s, a) rho(s, a)
    np.testing.assert_allclose(rho.sum(axis=1), np.einsum("sat,sa->t", mdp.P, rho), atol=1e-12)
    np.testing.assert_allclose(rho.sum(axis=1), mdp.induced_chain(pi).T @ rho.sum(axis=1), atol=1e-12)
    # long-run simulated (s, a) frequencies
    traj = mdp.sample(pi, n=20, steps=5000, seed=7)
    idx = traj.states[:, 200:-1] * 3 + traj.actions[:, 200:]
    freq = np.bincount(idx.ravel(), minlength=15).reshape(5, 3) / idx.size
    assert np.abs(freq - rho).max() < 0.01


def test_occupancy_measure_gives_the_return():
    mdp = random_mdp(6, 2, 0.9, seed=8)
    pi = np.random.default_rng(9).dirichlet(np.ones(2), size=6)
    rho = mdp.occupancy_measure(pi)
    V = policy_evaluation(mdp, pi).V
    np.testing.assert_allclose((rho * mdp.r).sum(), mdp.mu0 @ V, atol=1e-10)
    np.testing.assert_allclose(rho.sum(), 1 / (1 - 0.9), atol=1e-10)
    finite = mdp.replace(horizon=7)
    rho7 = finite.occupancy_measure(pi)
    np.testing.assert_allclose((rho7 * mdp.r).sum(), mdp.mu0 @ backward_induction(finite, policy=pi).V[0], atol=1e-12)


def test_frozenlake_absorption_probability_is_the_gamma_one_value(frozen):
    undiscounted = frozen.replace(gamma=1.0)
    opt = value_iteration(undiscounted)
    chain = frozen.induced_chain(opt.policy)
    goal_prob = chain.limiting_distribution(frozen.mu0)[15]  # long-run mass on the goal
    np.testing.assert_allclose(goal_prob, opt.V[0], atol=1e-8)
    assert len(chain.closed_classes) == 5  # each hole and the goal absorb


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(P=np.ones((2, 2)), r=np.zeros((2, 2))), "shape"),
        (dict(P=np.full((2, 2, 2), 0.6), r=np.zeros((2, 2))), r"P\[0, 0, :\].*sums to 1.2"),
        (dict(P=np.stack([np.eye(2)] * 2, 1) * [1.5, -0.5], r=np.zeros((2, 2))), "negative"),
        (dict(P=np.full((2, 2, 2), 0.5), r=np.zeros(3)), "r must have shape"),
        (dict(P=np.full((2, 2, 2), 0.5), r=np.zeros((2, 2)), gamma=0.0), "gamma"),
        (dict(P=np.full((2, 2, 2), 0.5), r=np.zeros((2, 2)), gamma=1.5), "gamma"),
        (dict(P=np.full((2, 2, 2), 0.5), r=np.zeros((2, 2)), horizon=0), "horizon"),
        (dict(P=np.full((2, 2, 2), 0.5), r=np.zeros((2, 2)), mu0=[0.5, 0.2]), "mu0 sums"),
        (dict(P=np.full((2, 2, 2), 0.5), r=np.zeros((2, 2)), terminal=np.array([True, False])), "absorbing"),
    ],
)
def test_mdp_rejects_malformed_inputs(kwargs, match):
    kwargs.setdefault("gamma", 0.9)
    with pytest.raises(ConfigError, match=match):
        TabularMDP(**kwargs)


def test_malformed_policies_and_solver_settings():
    mdp = savings_mdp(0.9)
    with pytest.raises(ConfigError, match="sums to"):
        mdp.policy_matrix([[0.5, 0.6], [1.0, 0.0]])
    with pytest.raises(ConfigError, match="in \\[0, 2\\)"):
        mdp.policy_matrix([0, 2])
    with pytest.raises(ConfigError, match="shape"):
        mdp.policy_matrix(np.ones((2, 3)) / 3)
    with pytest.raises(ConfigError, match="integer"):
        mdp.policy_matrix([0.5, 1.0])
    with pytest.raises(ConfigError, match="tol"):
        value_iteration(mdp, tol=0.0)
    with pytest.raises(ConfigError, match="max_iterations"):
        q_iteration(mdp, max_iterations=0)
    with pytest.raises(ConfigError, match="mu0 is required"):
        mdp.state_marginals([0, 0], steps=3)
    with pytest.raises(ConfigError, match="horizon"):
        backward_induction(mdp)
    with pytest.raises(ConfigError, match="gamma = 1"):
        policy_evaluation(mdp.replace(gamma=1.0), [0, 0])  # no terminal state: value undefined
    with pytest.raises(ConfigError, match="unknown"):
        mdp.replace(discount=0.5)


# ---- dynamic programming: exact answers ---------------------------------------------------------


@pytest.mark.parametrize(
    "gamma, V_star, policy_star",
    [
        # gamma = 0.9, optimal (save, keep):
        #   V0 = 0.9 (0.5 V0 + 0.5 V1)           -> V0 = 0.45 V1 / 0.55
        #   V1 = 2 + 0.9 (0.1 V0 + 0.9 V1)       -> V1 = 2 / (1 - 0.81 - 0.05 * 0.81 / 0.55) = 17.1875
        #   V0 = 0.45 * 17.1875 / 0.55 = 14.0625; beats spend (1 / 0.1 = 10) and cash-out (V1 = 11.38)
        (0.9, [14.0625, 17.1875], [0, 0]),
        # gamma = 0.5, optimal (spend, cash out): V0 = 1 / (1 - 0.5) = 2, V1 = 3 + 0.5 * 2 = 4;
        #   (save, keep) gives V1 = 2 / (0.55 - 0.0125 / 0.75) = 3.75 < 4, (spend, keep) V1 = 2.1 / 0.55 < 4
        (0.5, [2.0, 4.0], [1, 1]),
    ],
)
def test_hand_built_mdp_closed_form(gamma, V_star, policy_star):
    mdp = savings_mdp(gamma)
    results = {
        "value_iteration": value_iteration(mdp, tol=1e-13),
        "q_iteration": q_iteration(mdp, tol=1e-13),
        "policy_iteration": policy_iteration(mdp),
        "policy_iteration_iterative": policy_iteration(mdp, evaluation="iterative", tol=1e-13),
    }
    for name, res in results.items():
        assert res.converged, name
        np.testing.assert_allclose(res.V, V_star, atol=1e-10, err_msg=name)
        np.testing.assert_array_equal(res.policy, policy_star, err_msg=name)
    # Q*(s, a) = r(s, a) + gamma sum_s' p(s'|s, a) V*(s'), by hand
    v0, v1 = V_star
    Q_star = [[gamma * (0.5 * v0 + 0.5 * v1), 1 + gamma * v0], [2 + gamma * (0.1 * v0 + 0.9 * v1), 3 + gamma * v0]]
    np.testing.assert_allclose(results["q_iteration"].Q, Q_star, atol=1e-10)
    np.testing.assert_allclose(bellman_operator(mdp, V_star), V_star, atol=1e-12)  # fixed point


def test_hand_built_policy_evaluation_closed_form():
    mdp = savings_mdp(0.9)
    # (spend, cash out): V0 = 1 / (1 - 0.9) = 10, V1 = 3 + 0.9 * 10 = 12
    for method in ("exact", "iterative"):
        res = policy_evaluation(mdp, [1, 1], method=method, tol=1e-13)
        np.testing.assert_allclose(res.V, [10.0, 12.0], atol=1e-10)
    # 50/50 at both states: solve the 2x2 system by Cramer's rule
    # V0 = 0.5 + 0.9 (0.75 V0 + 0.25 V1), V1 = 2.5 + 0.9 (0.55 V0 + 0.45 V1)
    a11, a12, b1 = 1 - 0.675, -0.225, 0.5
    a21, a22, b2 = -0.495, 1 - 0.405, 2.5
    det = a11 * a22 - a12 * a21
    expected = [(b1 * a22 - a12 * b2) / det, (a11 * b2 - b1 * a21) / det]
    np.testing.assert_allclose(policy_evaluation(mdp, np.full((2, 2), 0.5)).V, expected, atol=1e-12)


def test_hand_built_backward_induction():
    mdp = savings_mdp(0.9)
    res = backward_induction(mdp, horizon=2)
    # last decision: V_1 = max_a r = (1, 3) by spending / cashing out
    np.testing.assert_allclose(res.V[1], [1.0, 3.0])
    np.testing.assert_array_equal(res.policy[1], [1, 1])
    # first: poor max(0 + .9 (.5*1 + .5*3), 1 + .9*1) = 1.9 spend; rich max(2 + .9 (.1*1 + .9*3), 3 + .9) = 4.52 keep
    np.testing.assert_allclose(res.V[0], [1.9, 4.52], atol=1e-12)
    np.testing.assert_array_equal(res.policy[0], [1, 0])
    np.testing.assert_allclose(res.V[2], 0.0)
    # evaluating that time-varying policy gives back its values; long horizons approach V*
    np.testing.assert_allclose(backward_induction(mdp, 2, policy=res.policy).V, res.V, atol=1e-12)
    np.testing.assert_allclose(backward_induction(mdp, 400).V[0], [14.0625, 17.1875], atol=1e-9)
    # marginals under a time-varying policy from "poor": t=1 still poor (spent)
    mu = mdp.state_marginals(res.policy, mu0=[1.0, 0.0], steps=2)
    np.testing.assert_allclose(mu, [[1, 0], [1, 0], [1, 0]])


def test_random_mdp_solvers_equal_brute_force_over_all_deterministic_policies():
    mdp = random_mdp(4, 3, 0.95, seed=10)
    values = np.array([policy_evaluation(mdp, list(pi)).V for pi in itertools.product(range(3), repeat=4)])
    V_brute = values.max(axis=0)
    assert np.any(np.all(values >= V_brute - 1e-12, axis=1))  # one policy is optimal in every state
    for res in (
        value_iteration(mdp, tol=1e-12),
        q_iteration(mdp, tol=1e-12),
        policy_iteration(mdp),
        policy_iteration(mdp, [2, 2, 2, 2], evaluation="iterative", tol=1e-12),
    ):
        assert res.converged
        np.testing.assert_allclose(res.V, V_brute, atol=1e-9)


def test_frozenlake_solvers_agree_and_greedy_policy_attains_v_star(frozen):
    vi = value_iteration(frozen)
    qi = q_iteration(frozen)
    pi = policy_iteration(frozen)
    pi_iter = policy_iteration(frozen, evaluation="iterative")
    for res in (vi, qi, pi, pi_iter):
        assert res.converged
    np.testing.assert_allclose(qi.V, vi.V, atol=1e-7)
    np.testing.assert_allclose(pi.V, vi.V, atol=1e-7)
    np.testing.assert_allclose(pi_iter.V, vi.V, atol=1e-7)
    np.testing.assert_allclose(qi.Q, vi.Q, atol=1e-7)
    # exact evaluation of every solver's greedy policy equals V*
    for res in (vi, qi, pi_iter):
        np.testing.assert_allclose(policy_evaluation(frozen, res.policy).V, pi.V, atol=1e-10)
    iterative = policy_evaluation(frozen, vi.policy, method="iterative", tol=1e-12)
    np.testing.assert_allclose(iterative.V, pi.V, atol=1e-9)
    np.testing.assert_allclose(bellman_operator(frozen, pi.V), pi.V, atol=1e-12)
    assert np.all(pi.V[frozen.terminal] == 0)
    # the optimum is far above a random policy (so the rollout checks below can fail)
    assert policy_evaluation(frozen, frozen.uniform_policy()).V[0] < pi.V[0] - 0.4


def test_frozenlake_greedy_policy_rollouts_match_v_star(frozen):
    res = policy_iteration(frozen)
    # no time limit to speak of, so the infinite-horizon discounted value is what the env pays
    env = gym.make("FrozenLake-v1", is_slippery=True, max_episode_steps=100_000)
    returns, _ = run_episodes(env, lambda t, s: res.policy[s], n=3000, seed=11, gamma=frozen.gamma)
    se = returns.std(ddof=1) / np.sqrt(len(returns))
    assert abs(returns.mean() - res.V[0]) < 4 * se, (returns.mean(), res.V[0], se)


def test_frozenlake_finite_horizon_success_rate_under_the_time_limit(frozen):
    # FrozenLake-v1 stops after 100 steps: the best success probability is V_0(s0) of backward
    # induction with gamma = 1 and H = 100, achieved by a time-varying policy
    undiscounted = frozen.replace(gamma=1.0, horizon=100)
    bi = backward_induction(undiscounted)
    success_star = bi.V[0, 0]
    stationary = value_iteration(undiscounted)  # max P(ever reaching the goal)
    assert success_star < stationary.V[0] - 0.05  # the time limit costs success
    assert backward_induction(undiscounted, policy=stationary.policy).V[0, 0] <= success_star + 1e-12
    env = gym.make("FrozenLake-v1", is_slippery=True)
    assert env.spec.max_episode_steps == 100
    _, success = run_episodes(env, lambda t, s: bi.policy[t, s], n=3000, seed=12)
    se = np.sqrt(success_star * (1 - success_star) / len(success))
    assert abs(success.mean() - success_star) < 4 * se, (success.mean(), success_star, se)


def test_cliffwalking_and_taxi_optimal_returns_are_exact_in_the_env():
    cliff = TabularMDP.from_gym("CliffWalking-v1", gamma=1.0)
    vi = value_iteration(cliff)
    assert vi.converged and vi.V[36] == -13.0  # up, 11 x right, down along the cliff edge
    env = gym.make("CliffWalking-v1")
    returns, _ = run_episodes(env, lambda t, s: vi.policy[s], n=3, seed=0)
    np.testing.assert_array_equal(returns, -13.0)

    taxi = TabularMDP.from_gym("Taxi-v4", gamma=1.0)
    assert taxi.terminal.sum() == 4  # passenger delivered at each of the four locations
    vi = value_iteration(taxi)
    assert vi.converged
    env = gym.make("Taxi-v4")
    starts, rets = [], []
    s, _ = env.reset(seed=13)
    for ep in range(40):  # deterministic env: every episode earns exactly V*(s0)
        if ep:
            s, _ = env.reset()
        starts.append(s)
        ret, done = 0.0, False
        while not done:
            s, rew, term, trunc, _ = env.step(int(vi.policy[s]))
            ret, done = ret + rew, term or trunc
        rets.append(ret)
    np.testing.assert_array_equal(rets, vi.V[starts])
    assert taxi.mu0 @ vi.V > 7  # mean optimal return over the env's start states
