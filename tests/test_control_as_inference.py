"""Control as inference (notes 10/10): backward and forward messages against brute-force
enumeration of every trajectory, soft value iteration against its limits and its MaxEnt objective."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from core_rl.common.errors import ConfigError
from core_rl.inference import (
    backward_messages,
    forward_messages,
    soft_value_iteration,
    soft_visitation,
)
from core_rl.tabular import TabularMDP, backward_induction, policy_evaluation, value_iteration
from tests.seeding import seed as shifted


def small_mdp(seed: int = 0, terminal: bool = True) -> tuple[TabularMDP, np.ndarray]:
    """4 states (state 3 terminal), 2 actions, stochastic sparse dynamics, rewards ≤ 0, a random
    normalized action prior."""
    rng = np.random.default_rng(seed)
    S, A = 4, 2
    P = rng.dirichlet(np.full(S, 0.6), size=(S, A))
    P[P < 0.08] = 0.0  # some impossible transitions
    P /= P.sum(-1, keepdims=True)
    r = -rng.uniform(0.0, 2.0, size=(S, A))
    term = np.zeros(S, dtype=bool)
    if terminal:
        term[3] = True
        P[3] = 0.0
        P[3, :, 3] = 1.0
        r[3] = 0.0
    prior = rng.dirichlet(np.ones(A), size=S)
    return TabularMDP(P, r, 1.0, horizon=3, mu0=rng.dirichlet(np.ones(S)), terminal=term), prior


def brute_beta(mdp: TabularMDP, prior: np.ndarray, H: int, tau: float) -> np.ndarray:
    """β_t(s,a) = Σ over every continuation of Π p(s'|s,a) p(a'|s') exp(Σ r/τ), by enumeration."""
    S, A = mdp.n_states, mdp.n_actions
    beta = np.zeros((H, S, A))
    for t in range(H):
        n_future = H - t - 1  # decisions after t
        for s, a in itertools.product(range(S), range(A)):
            total = 0.0
            for seq in itertools.product(range(S), range(A), repeat=n_future):
                states = [s] + list(seq[0::2])
                actions = [a] + list(seq[1::2])
                for s_last in range(S):  # the state after the last decision
                    w = np.exp(sum(mdp.r[x, y] for x, y in zip(states, actions)) / tau)
                    nxt = states[1:] + [s_last]
                    for k in range(len(actions)):
                        w *= mdp.P[states[k], actions[k], nxt[k]]
                        if k > 0:
                            w *= prior[states[k], actions[k]]
                    total += w
            beta[t, s, a] = total
    return beta


def brute_posterior(mdp: TabularMDP, prior: np.ndarray, H: int, tau: float):
    """p(s_t | O), p(s_t, a_t | O) and p(O) by summing over all (s_0, a_0, ..., s_H)."""
    S, A = mdp.n_states, mdp.n_actions
    ps, psa, Z = np.zeros((H + 1, S)), np.zeros((H, S, A)), 0.0
    for seq in itertools.product(*([range(S), range(A)] * H + [range(S)])):
        states, actions = seq[0::2], seq[1::2]
        w = mdp.mu0[states[0]]
        for k in range(H):
            w *= (
                prior[states[k], actions[k]]
                * mdp.P[states[k], actions[k], states[k + 1]]
                * np.exp(mdp.r[states[k], actions[k]] / tau)
            )
        if w == 0.0:
            continue
        Z += w
        for k in range(H + 1):
            ps[k, states[k]] += w
        for k in range(H):
            psa[k, states[k], actions[k]] += w
    return ps / Z, psa / Z, Z


@pytest.mark.parametrize("tau", [1.0, 0.6])
def test_backward_messages_equal_brute_force(tau):
    mdp, prior = small_mdp(0)
    H = 3
    msg = backward_messages(mdp, temperature=tau, log_prior=np.log(prior))
    beta = brute_beta(mdp, prior, H, tau)
    np.testing.assert_allclose(np.exp(msg.log_beta_sa), beta, rtol=1e-10)
    np.testing.assert_allclose(np.exp(msg.log_beta_s[:H]), np.einsum("sa,tsa->ts", prior, beta), rtol=1e-10)
    np.testing.assert_allclose(msg.log_beta_s[H], 0.0)
    # the soft-optimal policy is p(a|s) beta(s,a) / beta(s)
    np.testing.assert_allclose(msg.policy, prior * beta / np.einsum("sa,tsa->ts", prior, beta)[..., None], rtol=1e-10)
    # terminal state: no more reward, so every message is one
    np.testing.assert_allclose(msg.log_beta_sa[:, 3], 0.0, atol=1e-12)


def test_forward_backward_marginals_equal_brute_force_posterior():
    mdp, prior = small_mdp(1)
    H, tau = 3, 0.8
    msg = backward_messages(mdp, temperature=tau, log_prior=np.log(prior))
    fwd = forward_messages(mdp, msg)
    ps, psa, Z = brute_posterior(mdp, prior, H, tau)
    np.testing.assert_allclose(fwd.state_marginals, ps, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(fwd.state_action_marginals, psa, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(fwd.log_evidence, np.log(Z), rtol=1e-10)
    np.testing.assert_allclose(fwd.log_evidence, np.log(mdp.mu0 @ np.exp(msg.log_beta_s[0])), rtol=1e-10)
    # alpha_0 is the prior over s_0; the posterior over s_0 is tilted towards high beta_0
    np.testing.assert_allclose(np.exp(fwd.log_alpha[0]), mdp.mu0)
    assert not np.allclose(fwd.state_marginals[0], mdp.mu0)
    # started from the posterior p(s_0|O), the posterior policy run in the tilted (posterior)
    # dynamics gives the same marginals (soft_visitation conditions on s_0 ~ mu0 otherwise)
    rho = soft_visitation(mdp, msg, mu0=fwd.state_marginals[0])
    np.testing.assert_allclose(rho, psa.sum(0), rtol=1e-9, atol=1e-14)


def test_posterior_policy_is_optimistic_but_expected_backup_is_not():
    """With stochastic dynamics exact inference tilts the transitions; the expected backup keeps them."""
    mdp, prior = small_mdp(1)
    msg = backward_messages(mdp, log_prior=np.log(prior))
    _, psa, _ = brute_posterior(mdp, prior, 3, 1.0)
    real = mdp.occupancy_measure(msg.policy)  # the same policy in the real dynamics
    assert np.abs(real - psa.sum(0)).max() > 1e-2
    expected = soft_value_iteration(mdp, backup="expected", log_prior=np.log(prior))
    np.testing.assert_allclose(soft_visitation(mdp, expected), mdp.occupancy_measure(expected.policy), atol=1e-12)


def test_soft_value_iteration_low_temperature_approaches_value_iteration():
    rng = np.random.default_rng(3)
    S, A, gamma = 12, 4, 0.9
    P = rng.dirichlet(np.full(S, 0.3), size=(S, A))
    mdp = TabularMDP(P, rng.normal(size=(S, A)), gamma, mu0=np.ones(S) / S)
    hard = value_iteration(mdp)
    for alpha in (1e-1, 1e-2, 1e-3):
        soft = soft_value_iteration(mdp, temperature=alpha, backup="expected")
        gap = soft.V - hard.V
        # V ≤ max Q + α log A at every backup, so 0 ≤ V_soft − V* ≤ α log A / (1 − γ)
        assert soft.converged and gap.min() >= -1e-8 and gap.max() <= alpha * np.log(A) / (1 - gamma) + 1e-8
    assert np.array_equal(soft.greedy, hard.policy)
    assert np.abs(soft.policy.max(-1) - 1).max() < 1e-6  # near-deterministic
    # exact inference's log E exp backup is optimistic under stochastic dynamics: it does not converge to V*
    optimistic = soft_value_iteration(mdp, temperature=1e-3, backup="optimistic")
    assert (optimistic.V - hard.V).max() > 0.5
    # on deterministic dynamics both backups are the same
    det = mdp.replace(P=np.eye(S)[rng.integers(0, S, size=(S, A))])
    for backup in ("optimistic", "expected"):
        v = soft_value_iteration(det, temperature=1e-3, backup=backup).V
        assert np.abs(v - value_iteration(det).V).max() <= 1e-3 * np.log(A) / (1 - gamma) + 1e-8
    # finite horizon: the soft backward pass approaches backward induction
    fh = soft_value_iteration(mdp, temperature=1e-3, horizon=7, backup="expected")
    bi = backward_induction(mdp, 7)
    assert np.abs(fh.V - bi.V).max() <= 7 * 1e-3 * np.log(A) + 1e-8
    assert np.array_equal(fh.greedy, bi.policy)


def test_soft_values_are_the_maxent_objective_and_soft_policy_maximizes_it():
    """V_soft = V^π of the entropy-augmented reward r − α log π, and no other policy does better."""
    rng = np.random.default_rng(4)
    S, A, gamma, alpha = 6, 3, 0.8, 0.5
    mdp = TabularMDP(rng.dirichlet(np.ones(S), size=(S, A)), rng.normal(size=(S, A)), gamma, mu0=np.ones(S) / S)
    soft = soft_value_iteration(mdp, temperature=alpha, backup="expected")
    pi = soft.policy
    np.testing.assert_allclose(pi, np.exp((soft.Q - soft.V[:, None]) / alpha))
    np.testing.assert_allclose(pi.sum(-1), 1.0)

    def maxent_value(policy):
        return policy_evaluation(mdp.replace(r=mdp.r - alpha * np.log(policy)), policy).V

    np.testing.assert_allclose(maxent_value(pi), soft.V, atol=1e-8)
    for _ in range(20):
        other = rng.dirichlet(np.ones(A), size=S)
        assert (maxent_value(other) <= soft.V + 1e-9).all()
    # the discounted visitation is the soft policy's occupancy measure
    np.testing.assert_allclose(soft_visitation(mdp, soft), mdp.occupancy_measure(pi), atol=1e-10)


def test_uniform_prior_only_shifts_values():
    mdp, _ = small_mdp(2, terminal=False)
    plain = soft_value_iteration(mdp, horizon=3)  # V = log Σ_a exp Q
    msgs = backward_messages(mdp)  # uniform prior 1/A
    steps_left = np.arange(3, -1, -1)
    np.testing.assert_allclose(msgs.log_beta_s, plain.V - steps_left[:, None] * np.log(2), atol=1e-12)
    np.testing.assert_allclose(msgs.policy, plain.policy, atol=1e-12)


def test_errors_name_the_cause():
    mdp, prior = small_mdp(0)
    with pytest.raises(ConfigError, match="temperature"):
        soft_value_iteration(mdp, temperature=0.0)
    with pytest.raises(ConfigError, match="backup"):
        soft_value_iteration(mdp, backup="max")
    with pytest.raises(ConfigError, match="gamma < 1"):
        soft_value_iteration(mdp.replace(horizon=None))
    with pytest.raises(ConfigError, match="reward must have shape"):
        soft_value_iteration(mdp, reward=np.zeros(7))
    with pytest.raises(ConfigError, match="gamma=1"):
        forward_messages(mdp, backward_messages(mdp.replace(gamma=0.9)))


# ---- soft Q-learning (MaxEnt RL with function approximation) ------------------------------------


def test_soft_q_learning_recovers_the_soft_q_of_soft_value_iteration():
    """Tabular soft Q-learning from a uniformly random behaviour policy converges to the fixed point
    Q = r + γ E[α log Σ exp(Q'/α)] that soft value iteration computes from the model."""
    import gymnasium as gym

    from core_rl.inference.soft_q_learning import SoftQLearning

    gamma, alpha = 0.9, 0.1
    mdp = TabularMDP.from_gym(gym.make("FrozenLake-v1", is_slippery=False), gamma)
    soft = soft_value_iteration(mdp, temperature=alpha, backup="expected")
    hard = value_iteration(mdp)
    agent = SoftQLearning(
        gym.make("FrozenLake-v1", is_slippery=False),
        dict(
            hidden_sizes=(),
            exploration="epsilon",
            exploration_initial_eps=1.0,
            exploration_final_eps=1.0,
            temperature=alpha,
            gamma=gamma,
            optimizer="sgd",
            lr=10.0,
            learning_starts=2000,
            batch_size=256,
            train_freq=50,
            gradient_steps=50,
            target_update_interval=50,
            tau=1.0,
            loss="mse",
            max_grad_norm=None,
            buffer_size=20_000,
            seed=shifted(0),
        ),
    )
    agent.learn(8000)
    Q = agent.q_net.net.weight.detach().numpy().T
    live = ~mdp.terminal
    err = np.abs(Q - soft.Q)[live].max()
    print(
        f"soft Q-learning vs soft VI: max |ΔQ| = {err:.2e}; soft vs hard Q* differ by "
        f"{np.abs(soft.Q - hard.Q)[live].max():.3f}"
    )
    assert err < 1e-3
    assert np.abs(soft.Q - hard.Q)[live].max() > 0.05  # the soft target is not DQN's max
    obs = np.arange(16)
    np.testing.assert_allclose(agent.soft_policy(agent._obs_tensor(obs)).numpy()[live], soft.policy[live], atol=1e-3)


def test_soft_q_learning_solves_cartpole():
    from core_rl import make_agent
    from core_rl.common.tracking import MemoryTracker
    from core_rl.inference.soft_q_learning import SoftQLearning, soft_value_discrete
    from core_rl.q_learning.experiments import CARTPOLE_DQN

    tracker = MemoryTracker()
    agent = make_agent(
        "soft_q",
        "CartPole-v1",
        {**CARTPOLE_DQN, "hidden_sizes": (64, 64), "temperature": 0.1, "seed": shifted(0)},
        tracker=tracker,
    )
    assert isinstance(agent, SoftQLearning) and agent.config.exploration == "boltzmann"
    agent.learn(50_000, callback=lambda a, m: not (len(a.episode_returns) >= 20 and a.mean_return >= 195))
    print(f"soft Q on CartPole: {agent.num_timesteps} steps, train return {agent.mean_return:.1f}")
    assert agent.mean_return >= 195
    assert agent.evaluate(10, deterministic=False)["mean_return"] >= 195  # the Boltzmann policy itself
    assert "temperature" in tracker.metrics
    # the soft value is α logsumexp(Q/α): between max Q and max Q + α log|A|
    q = torch.randn(5, 2) * 3
    v = soft_value_discrete(q, 0.1)
    torch.testing.assert_close(v, 0.1 * torch.logsumexp(q / 0.1, -1))
    with pytest.raises(ConfigError, match="double_q"):
        make_agent("soft_q", "CartPole-v1", {"double_q": True})
