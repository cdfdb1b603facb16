"""The Q-learning family (notes 9/12, 9/14): DQN and double DQN learn CartPole; fitted Q iteration and
online Q-learning recover the dynamic-programming Q*; prioritized replay samples ∝ p^α with correct
importance weights; double Q removes the overestimation of a noisy max; the exploration policies
choose with the specified probabilities."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from core_rl import ConfigError, SpaceError, make_agent
from core_rl.common.base import Agent
from core_rl.common.prioritized_replay import PrioritizedReplayBuffer, SumTree
from core_rl.common.tracking import MemoryTracker
from core_rl.common.transitions import Transitions
from core_rl.q_learning.dqn import DQN, DoubleDQN, QNetwork
from core_rl.q_learning.experiments import CARTPOLE_DQN, predicted_vs_actual, run_nstep_sweep, run_overestimation
from core_rl.q_learning.fitted_q import FittedQIteration, OnlineQLearning
from tests.seeding import seed as shifted


def stop_at(bar):
    return lambda agent, metrics: not (len(agent.episode_returns) >= 20 and agent.mean_return >= bar)


def stop_when_solved(bar: float = 195, target: float = 475, every: int = 1024):
    """Train on until the last 20 training episodes average ≥ ``bar`` AND the greedy policy, checked every
    ``every`` steps from then on, evaluates ≥ ``target`` of 500 on starts of its own (seed + 20 000).

    Stopping the moment the training mean first crosses 195 leaves a policy on the edge: the evaluation
    that follows then lands on either side of 195 by the CPU's rounding (issue 12: 189.9 on a Xeon). A
    greedy policy at ≥ 475 on other starts clearly solves the task, so the evaluation bar below has margin.
    """
    next_check = [0]

    def callback(agent, metrics) -> bool:
        if len(agent.episode_returns) < 20 or agent.mean_return < bar or agent.num_timesteps < next_check[0]:
            return True
        next_check[0] = agent.num_timesteps + every
        return agent.evaluate(10, seed=agent.config.seed + 20_000)["mean_return"] < target

    return callback


def q_star(P: np.ndarray, R: np.ndarray, gamma: float, terminal: np.ndarray | None = None) -> np.ndarray:
    """Exact Q* by value iteration with numpy: Q = R + γ P max_a Q (terminal states have value 0)."""
    S, A = R.shape
    keep = np.ones(S) if terminal is None else 1.0 - terminal
    Q = np.zeros((S, A))
    for _ in range(100_000):
        new = R + gamma * P @ (keep * Q.max(1))
        if np.abs(new - Q).max() < 1e-13:
            return new
        Q = new
    raise AssertionError("value iteration did not converge")


# ---- DQN learns ----------------------------------------------------------------------------------


def test_dqn_solves_cartpole():
    tracker = MemoryTracker()
    agent = DQN("CartPole-v1", {**CARTPOLE_DQN, "seed": shifted(0)}, tracker=tracker)
    agent.learn(50_000, callback=stop_when_solved())
    assert agent.mean_return >= 195, agent.mean_return  # random play: ≈ 22
    assert agent.evaluate(10)["mean_return"] >= 195
    for key in ("loss", "q_mean", "td_error_abs", "epsilon", "episode_return"):
        assert key in tracker.metrics
    assert tracker.params["algo"] == "dqn" and tracker.params["double_q"] is False


@pytest.mark.slow  # ~1 min; DQN's CartPole test and the double-Q target tests stay in the fast tier
def test_double_dqn_solves_cartpole():
    agent = make_agent("double_dqn", "CartPole-v1", {**CARTPOLE_DQN, "seed": shifted(0)})
    assert isinstance(agent, DoubleDQN) and agent.config.double_q
    agent.learn(50_000, callback=stop_when_solved())
    assert agent.mean_return >= 195, agent.mean_return  # random play: ≈ 22
    assert agent.evaluate(10)["mean_return"] >= 195


# ---- fitted Q iteration and online Q-learning recover Q* -----------------------------------------


def random_mdp(S: int, A: int, seed: int):
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(S) * 0.5, size=(S, A))
    R = rng.normal(size=(S, A))
    terminal = np.zeros(S)
    terminal[-1] = 1.0  # one absorbing terminal state
    P[-1] = 0.0
    P[-1, :, -1] = 1.0
    R[-1] = 0.0
    return P, R, terminal


def sample_dataset(P, R, terminal, per_pair: int, seed: int) -> Transitions:
    rng = np.random.default_rng(seed)
    S, A = R.shape
    s = np.repeat(np.arange(S - 1), A * per_pair)  # the non-terminal states, every action
    a = np.tile(np.repeat(np.arange(A), per_pair), S - 1)
    cdf = P[s, a].cumsum(-1)
    s_next = (rng.random(len(s))[:, None] > cdf).sum(-1).clip(max=S - 1)
    return Transitions.from_arrays(s, a, R[s, a], s_next, terminal[s_next])


def test_fitted_q_iteration_tabular_is_exact_on_deterministic_mdp():
    """Deterministic dynamics: one transition per (s, a) determines the MDP, so FQI must hit Q* exactly."""
    S, A, gamma = 7, 3, 0.9
    rng = np.random.default_rng(3)
    nxt = rng.integers(0, S, size=(S, A))
    P = np.zeros((S, A, S))
    P[np.arange(S)[:, None], np.arange(A)[None], nxt] = 1.0
    R = rng.normal(size=(S, A))
    s, a = np.meshgrid(np.arange(S), np.arange(A), indexing="ij")
    data = Transitions.from_arrays(s.ravel(), a.ravel(), R.ravel(), nxt.ravel(), np.zeros(S * A))
    fqi = FittedQIteration(gym.spaces.Discrete(S), gym.spaces.Discrete(A), gamma=gamma, iterations=1000, tol=1e-12)
    result = fqi.fit(data)
    assert result.converged
    np.testing.assert_allclose(fqi.q_table, q_star(P, R, gamma), atol=1e-5)
    assert (fqi.greedy_policy(torch.arange(S)) == q_star(P, R, gamma).argmax(1)).all()


def test_fitted_q_iteration_recovers_q_star_from_samples():
    """Stochastic MDP with a terminal state: FQI's fixed point is the Q* of the empirical MDP exactly,
    and close to the true Q* given enough samples per (s, a)."""
    S, A, gamma = 6, 3, 0.9
    P, R, terminal = random_mdp(S, A, seed=shifted(0))
    data = sample_dataset(P, R, terminal, per_pair=2000, seed=shifted(1))
    tracker = MemoryTracker()
    fqi = FittedQIteration(gym.spaces.Discrete(S), gym.spaces.Discrete(A), gamma=gamma, iterations=1000, tol=1e-10)
    result = fqi.fit(data, tracker=tracker)
    assert result.converged and result.target_change[-1] < 1e-4  # a fixed point (to float32 precision)
    assert "fqi_bellman_error" in tracker.metrics and "fqi_target_change" in tracker.metrics
    # the empirical MDP the data describe
    pair = data.obs.numpy() * A + data.actions.numpy()
    counts = np.zeros((S * A, S))
    np.add.at(counts, (pair, data.next_obs.numpy()), 1.0)
    P_hat = P.copy().reshape(S * A, S)
    seen = counts.sum(1) > 0
    P_hat[seen] = counts[seen] / counts[seen].sum(1, keepdims=True)
    np.testing.assert_allclose(fqi.q_table, q_star(P_hat.reshape(S, A, S), R, gamma, terminal), atol=1e-4)
    true = q_star(P, R, gamma, terminal)
    assert np.abs(fqi.q_table - true).max() < 0.1, np.abs(fqi.q_table - true).max()
    assert np.abs(true).max() > 1.0  # the comparison is not trivially small


def test_fitted_q_iteration_with_an_mlp_approximates_q_star():
    S, A, gamma = 6, 3, 0.8
    rng = np.random.default_rng(5)
    nxt = rng.integers(0, S, size=(S, A))
    P = np.zeros((S, A, S))
    P[np.arange(S)[:, None], np.arange(A)[None], nxt] = 1.0
    R = rng.normal(size=(S, A))
    s, a = np.meshgrid(np.arange(S), np.arange(A), indexing="ij")
    data = Transitions.from_arrays(s.ravel(), a.ravel(), R.ravel(), nxt.ravel(), np.zeros(S * A))
    fqi = FittedQIteration(
        gym.spaces.Discrete(S),
        gym.spaces.Discrete(A),
        gamma=gamma,
        function="mlp",
        hidden_sizes=(64,),
        iterations=60,
        regression_steps=50,
        lr=1e-2,
        seed=shifted(0),
    )
    fqi.fit(data)
    true = q_star(P, R, gamma)
    err = np.abs(fqi.q_table - true).max()
    assert err < 0.05 * np.abs(true).max(), (err, np.abs(true).max())
    assert (fqi.greedy_policy(torch.arange(S)) == true.argmax(1)).all()


def frozen_lake_q_star(gamma: float) -> np.ndarray:
    env = gym.make("FrozenLake-v1", is_slippery=False)
    model = env.unwrapped.P
    S, A = env.observation_space.n, env.action_space.n
    P, R, terminal = np.zeros((S, A, S)), np.zeros((S, A)), np.zeros(S)
    for s in range(S):
        for a in range(A):
            for prob, s_next, r, done in model[s][a]:
                P[s, a, s_next] += prob
                R[s, a] += prob * r
                terminal[s_next] = max(terminal[s_next], float(done))
    for s in np.flatnonzero(terminal):  # absorbing, zero value
        P[s], R[s] = 0.0, 0.0
        P[s, :, s] = 1.0
    return q_star(P, R, gamma, terminal)


def test_fitted_q_iteration_on_a_random_policy_dataset_from_gym_recovers_q_star():
    """Off-policy: a uniformly random policy's transitions from deterministic FrozenLake give the optimal Q*."""
    env = gym.make("FrozenLake-v1", is_slippery=False)
    data = Transitions.collect(env, 4000, seed=shifted(0))
    assert len(data) == 4000 and data.dones.sum() > 0
    fqi = FittedQIteration(env.observation_space, env.action_space, gamma=0.9, iterations=500, tol=1e-9)
    assert fqi.fit(data).converged
    np.testing.assert_allclose(fqi.q_table, frozen_lake_q_star(0.9), atol=1e-5)


def test_online_q_learning_recovers_q_star_off_policy():
    """Tabular online Q-learning with a uniformly random behaviour policy (ε = 1) learns the greedy Q*."""
    gamma = 0.9
    agent = OnlineQLearning(
        gym.make("FrozenLake-v1", is_slippery=False),
        {"gamma": gamma, "lr": 0.5, "exploration_initial_eps": 1.0, "exploration_final_eps": 1.0, "seed": shifted(0)},
    )
    assert make_agent("online_q", "CartPole-v1").config.hidden_sizes == ()
    agent.learn(10_000)
    true = frozen_lake_q_star(gamma)
    err = np.abs(agent.q_table - true).max()
    assert err < 1e-3, err
    assert np.abs(true).max() > 0.5


def test_online_q_learning_config_is_checked():
    with pytest.raises(ConfigError, match="batch_size"):
        OnlineQLearning("CartPole-v1", {"batch_size": 4})
    with pytest.raises(ConfigError, match="n_step"):
        OnlineQLearning("CartPole-v1", {"n_step": 3})


# ---- prioritized replay ----------------------------------------------------------------------------


def filled_prioritized(alpha: float, beta: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    buf = PrioritizedReplayBuffer(64, 2, (3,), (), action_dtype=torch.long, alpha=alpha, beta=beta, seed=seed)
    for _ in range(32):
        buf.add(
            rng.normal(size=(2, 3)),
            rng.integers(0, 2, 2),
            rng.normal(size=2),
            rng.normal(size=(2, 3)),
            np.zeros(2, bool),
            np.zeros(2, bool),
        )
    td = torch.as_tensor(rng.exponential(size=64) ** 2)
    td[5] = 0.0  # priority ε only: almost never sampled
    buf.update_priorities(torch.arange(64), td)
    return buf, td


def test_prioritized_replay_samples_proportionally_to_priority():
    alpha = 0.7
    buf, td = filled_prioritized(alpha, beta=0.5)
    p = (td.double().abs() + buf.eps) ** alpha
    expected = (p / p.sum()).numpy()
    np.testing.assert_allclose(buf.probabilities().numpy(), expected, rtol=1e-10)
    n_draws = 400_000
    counts = np.zeros(64)
    for _ in range(n_draws // 1000):
        s = buf.sample(1000)
        np.add.at(counts, s.indices.numpy(), 1)
    freq = counts / n_draws
    sigma = np.sqrt(expected * (1 - expected) / n_draws)
    assert np.all(np.abs(freq - expected) <= 5 * sigma + 1e-9), np.max(np.abs(freq - expected) / (sigma + 1e-12))
    assert counts[5] <= 2
    # high priority is really sampled more: frequency order follows priority order
    top, bottom = np.argsort(expected)[-8:], np.argsort(expected)[:8]
    assert freq[top].min() > freq[bottom].max()


def test_prioritized_replay_importance_weights():
    beta = 0.6
    buf, td = filled_prioritized(0.6, beta=beta, seed=1)
    s = buf.sample(4096)
    P = buf.probabilities().numpy()
    raw = (64 * P[s.indices.numpy()]) ** -beta
    np.testing.assert_allclose(s.weights.numpy(), raw / ((64 * P.min()) ** -beta), rtol=1e-5)
    assert s.weights.max() <= 1.0 + 1e-6
    # with β = 1 the weighted sample mean is unbiased for the uniform mean (up to the max normalizer)
    buf.beta = 1.0
    f = torch.arange(64, dtype=torch.float64) ** 1.5
    total = 0.0
    for _ in range(100):
        s = buf.sample(2000)
        total += float((s.weights.double() * f[s.indices]).mean())
    estimate = total / 100 / (64 * P.min())
    assert abs(estimate - float(f.mean())) < 0.02 * float(f.mean()), (estimate, float(f.mean()))


def test_priorities_come_from_td_errors_and_new_transitions_get_the_max():
    buf, td = filled_prioritized(0.5, beta=0.4)
    leaves = buf.tree.leaves[:64]
    np.testing.assert_allclose(leaves.numpy(), ((td.double().abs() + buf.eps) ** 0.5).numpy(), rtol=1e-12)
    assert buf.tree.total == pytest.approx(float(leaves.sum()), rel=1e-12)
    buf.add(
        np.zeros((2, 3)), np.zeros(2, np.int64), np.zeros(2), np.zeros((2, 3)), np.zeros(2, bool), np.zeros(2, bool)
    )  # overwrites flat slots 0 and 1 (wrapped)
    new_p = (float(td.abs().max()) + buf.eps) ** 0.5
    assert buf.tree.leaves[0].item() == pytest.approx(new_p) and buf.tree.leaves[1].item() == pytest.approx(new_p)


def test_sum_tree_find_matches_prefix_sums():
    rng = np.random.default_rng(2)
    tree = SumTree(37)
    values = torch.as_tensor(rng.random(37))
    tree.update(torch.arange(37), values)
    mass = torch.as_tensor(rng.random(5000) * float(values.sum()))
    expected = np.searchsorted(np.cumsum(values.numpy()), mass.numpy(), side="right")
    assert (tree.find(mass).numpy() == expected).all()


# ---- double Q-learning reduces overestimation ------------------------------------------------------


class NoisyBranch(gym.Env):
    """s0 --any action, r=0--> s1 --any of K actions, r ~ N(0, 1)--> end. True Q*(s, a) = 0 everywhere."""

    def __init__(self, n_actions: int = 8):
        self.observation_space = gym.spaces.Discrete(2)
        self.action_space = gym.spaces.Discrete(n_actions)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.state = 0
        return 0, {}

    def step(self, action):
        if self.state == 0:
            self.state = 1
            return 1, 0.0, False, False, {}
        return 0, float(self.np_random.normal()), True, False, {}


def mean_q_estimates(double_q: bool, seed: int) -> np.ndarray:
    agent = DQN(
        NoisyBranch(),
        dict(
            hidden_sizes=(),
            optimizer="sgd",
            lr=0.5,
            loss="mse",
            batch_size=4,
            train_freq=1,
            gradient_steps=1,
            learning_starts=100,
            target_update_interval=100,
            exploration_initial_eps=1.0,
            exploration_final_eps=1.0,
            gamma=1.0,
            double_q=double_q,
            seed=seed,
        ),
    )
    history = []

    def record(a, metrics):
        if a.num_timesteps > 1000:
            with torch.no_grad():
                history.append(a.q_net(torch.arange(2)).numpy())

    agent.learn(3000, callback=record)
    return np.mean(history, axis=0)  # time-averaged Q(s, a), shape (2, K)


def test_double_q_reduces_overestimation_of_a_noisy_max():
    q_dqn = np.mean([mean_q_estimates(False, shifted(s)) for s in (0, 1)], axis=0)
    q_double = np.mean([mean_q_estimates(True, shifted(s)) for s in (0, 1)], axis=0)
    # Q(s1, ·) is an unbiased average of the noisy rewards for both ...
    assert abs(q_dqn[1].mean()) < 0.15 and abs(q_double[1].mean()) < 0.15
    # ... but Q(s0, ·) backs up max_a Q(s1, a): E[max] > max E = 0 for DQN; double Q removes most of it
    bias_dqn, bias_double = q_dqn[0].mean(), q_double[0].mean()
    assert bias_dqn > 0.2, bias_dqn
    assert abs(bias_double) < 0.5 * bias_dqn, (bias_dqn, bias_double)


# ---- exploration policies ----------------------------------------------------------------------------


def test_epsilon_greedy_chooses_as_specified():
    agent = DQN(
        "CartPole-v1",
        {"exploration_initial_eps": 1.0, "exploration_final_eps": 0.1, "exploration_fraction": 0.5, "seed": 0},
    )
    agent._target_steps, agent.num_timesteps = 1000, 250  # a quarter of training: half-way down the ramp
    assert agent.epsilon == pytest.approx(0.55)
    agent.num_timesteps = 800  # past the ramp: final ε
    assert agent.epsilon == pytest.approx(0.1)
    agent.num_timesteps = 250
    q = torch.tensor([1.0, 3.0]).repeat(200_000, 1)  # greedy action 1
    actions = agent.explore(q)
    eps = 0.55
    freq_greedy = (actions == 1).double().mean().item()
    expected = 1 - eps + eps / 2
    assert abs(freq_greedy - expected) < 5 * np.sqrt(expected * (1 - expected) / 200_000)
    obs = torch.randn(32, 4)
    assert torch.equal(agent._act(obs, deterministic=True), agent.q_net(obs).argmax(-1))


def test_coin_first_epsilon_greedy_and_one_env_numpy_greedy_action():
    """ε-greedy tosses the coin first: ε = 1 never computes Q, ε = 0 always takes argmax Q; one env's greedy
    action (by NumPy on the parameters' memory) is torch's argmax Q_φ(s, ·), also after gradient steps."""
    agent = DQN("CartPole-v1", {"seed": 0, "learning_starts": 64, "train_freq": 32, "gradient_steps": 4})
    agent.learn(128)
    calls = []
    agent._greedy_one = lambda obs: calls.append(1) or DQN._greedy_one(agent, obs)
    obs = torch.as_tensor(np.random.default_rng(0).normal(size=(200, 1, 4)).astype(np.float32))
    agent._target_steps, agent.config.exploration_fraction = 128, 1.0
    agent.config.exploration_initial_eps = agent.config.exploration_final_eps = 1.0
    assert all(int(agent._explore(o)) in (0, 1) for o in obs) and not calls  # ε = 1: no forward pass
    agent.config.exploration_initial_eps = agent.config.exploration_final_eps = 0.0
    for o in obs:
        assert torch.equal(agent._explore(o), agent.q_net(o).argmax(-1))
    assert len(calls) == len(obs)


@pytest.mark.parametrize(
    ("cfg", "batched"),
    [
        ({"target_update_interval": 10, "target_update_unit": "env_steps"}, True),  # SB3's convention
        ({"target_update_interval": 3}, True),  # φ' changes inside each phase: one pass per segment
        ({"double_q": True}, False),  # y needs the online network: per minibatch
    ],
)
def test_dqn_phase_targets_are_each_minibatchs_targets(cfg, batched):
    """The targets computed for many minibatches of a training phase at once (one forward pass of Q_φ' per
    stretch without a target update, over the distinct transitions) are the ones each gradient step would
    have computed itself at that moment."""
    base = {"seed": 0, "learning_starts": 100, "train_freq": 32, "gradient_steps": 8, "batch_size": 16}
    agent = DQN("CartPole-v1", {**base, "hidden_sizes": (32, 32), **cfg})
    passes, checked = [], []
    agent.target_q = lambda batch: passes.append(len(batch.rewards)) or DQN.target_q(agent, batch)
    own = agent._minibatch_targets

    def check(batch):
        y = own(batch)
        torch.testing.assert_close(y, DQN.target_q(agent, batch), rtol=1e-6, atol=1e-6)
        checked.append(1)
        return y

    agent._minibatch_targets = check
    agent.learn(100 + 32 * 4)
    assert len(checked) == agent.gradient_updates == 40
    if batched:  # 5 phases of 8 steps: one pass each, or one per stretch between target updates (after
        # the steps g with (g + 1) % 3 == 0), over at most the phase's distinct transitions
        stretches = sum(1 for g in range(40) if g % 8 == 0 or ("target_update_unit" not in cfg and g % 3 == 0))
        assert len(passes) == stretches and sum(passes) <= 40 * 16
    else:
        assert passes == [16] * 40


def test_boltzmann_chooses_softmax_of_q_over_temperature():
    agent = DQN(
        "CartPole-v1",
        {
            "exploration": "boltzmann",
            "temperature": 2.0,
            "temperature_final": 0.5,
            "exploration_fraction": 1.0,
            "seed": 0,
        },
    )
    agent._target_steps, agent.num_timesteps = 1000, 500
    assert agent.temperature == pytest.approx(1.25)
    n = 200_000
    q_row = torch.tensor([0.0, 1.0, 2.5, -1.0])
    probs = torch.softmax(q_row / 1.25, -1).numpy()
    freq = np.bincount(agent.explore(q_row.repeat(n, 1)).numpy(), minlength=4) / n
    assert np.all(np.abs(freq - probs) < 5 * np.sqrt(probs * (1 - probs) / n)), (freq, probs)


# ---- networks, API, errors ---------------------------------------------------------------------------


def test_dueling_head_is_value_plus_centred_advantage():
    net = QNetwork(gym.spaces.Box(-1, 1, (4,)), 3, (32, 32), "relu", dueling=True)
    obs = torch.randn(16, 4)
    h = net.trunk(net.encoder(obs))
    q = net(obs)
    torch.testing.assert_close(q.mean(-1), net.value_head(h).squeeze(-1))
    torch.testing.assert_close(
        q - q.mean(-1, keepdim=True), net.advantage_head(h) - net.advantage_head(h).mean(-1, keepdim=True)
    )
    table = QNetwork(gym.spaces.Discrete(5), 2, ())  # tabular: a zero-initialised table
    assert (table(torch.arange(5)) == 0).all() and table.net.bias is None


def test_dueling_prioritized_dqn_learns_and_updates_priorities():
    """The options together (dueling head, prioritized replay with β annealing, 3-step returns)."""
    agent = DQN("CartPole-v1", {**CARTPOLE_DQN, "dueling": True, "prioritized": True, "seed": shifted(0)})
    assert isinstance(agent.replay, PrioritizedReplayBuffer)
    agent.learn(50_000, callback=stop_at(120))
    assert agent.mean_return >= 120, agent.mean_return  # random play: ≈ 22
    leaves = agent.replay.tree.leaves[: len(agent.replay)]
    assert leaves.std() > 0.1 * leaves.mean()  # priorities really differ
    assert agent.replay.beta > agent.config.prioritized_beta  # β annealed upwards


def test_dqn_same_seed_same_numbers_and_save_load(tmp_path):
    cfg = {**CARTPOLE_DQN, "learning_starts": 200, "train_freq": 64, "gradient_steps": 8, "hidden_sizes": (32, 32)}
    a = DQN("CartPole-v1", {**cfg, "seed": shifted(3)}).learn(1000)
    b = DQN("CartPole-v1", {**cfg, "seed": shifted(3)}).learn(1000)
    c = DQN("CartPole-v1", {**cfg, "seed": shifted(4)}).learn(1000)
    obs = torch.as_tensor(np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32))
    assert torch.equal(a.q_net(obs), b.q_net(obs)) and not torch.equal(a.q_net(obs), c.q_net(obs))
    assert list(a.episode_returns) == list(b.episode_returns)
    loaded = Agent.load(a.save(tmp_path / "dqn.pt"))
    assert isinstance(loaded, DQN) and torch.equal(loaded.q_net(obs), a.q_net(obs))
    assert torch.equal(loaded.q_target(obs), a.q_target(obs))


def test_dqn_rejects_bad_spaces_and_configs():
    with pytest.raises(SpaceError):
        DQN("Pendulum-v1")
    with pytest.raises(ConfigError, match="dueling"):
        DQN("CartPole-v1", {"dueling": True, "hidden_sizes": ()})
    with pytest.raises(ConfigError, match="exploration"):
        DQN("CartPole-v1", {"exploration": "softmax"})
    with pytest.raises(SpaceError):
        FittedQIteration(gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(2), function="tabular")


def test_dqn_init_is_orthogonal_or_torchs_default():
    """``init``: 'orthogonal' gives W Wᵀ = g²I (or WᵀW, g = √2 hidden, 1 output) and zero biases; 'torch_default'
    keeps nn.Linear's own init, as SB3's QNetwork: W, b ~ U(±1/√fan_in) (std bound/√3), not orthogonal, and the
    fused gradient step still applies. A bad value is one error naming the field."""

    def linears(agent):
        return [m for m in agent.q_net.modules() if isinstance(m, torch.nn.Linear)]

    cfg = {"seed": shifted(0), "hidden_sizes": (64, 64)}
    ortho, default = DQN("CartPole-v1", cfg), DQN("CartPole-v1", {**cfg, "init": "torch_default"})
    assert ortho.config.init == "orthogonal" and default.config.init == "torch_default"
    for i, lin in enumerate(linears(ortho)):
        w, gain = lin.weight.detach().double(), 1.0 if i == 2 else 2.0**0.5
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        torch.testing.assert_close(gram, gain**2 * torch.eye(len(gram), dtype=torch.float64), rtol=0, atol=1e-5)
        assert not lin.bias.detach().any()
    for lin in linears(default):
        bound = lin.in_features**-0.5
        assert bound >= lin.weight.abs().max() > 0.9 * bound and bound >= lin.bias.abs().max() > 0
        assert abs(lin.weight.std().item() - bound / 3**0.5) < 0.15 * bound / 3**0.5
        w = lin.weight.detach().double()
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        assert (gram - torch.diag(torch.diagonal(gram))).abs().max() > 1e-3  # not orthogonal
    assert default._fused_q() is not None
    dueling = DQN("CartPole-v1", {**cfg, "init": "torch_default", "dueling": True})
    assert all(lin.bias.detach().any() for lin in linears(dueling))
    with pytest.raises(ConfigError, match="config field 'init'") as err:
        DQN("CartPole-v1", {"init": "xavier"})
    assert str(err.value).count("config field") == 1


# ---- the experiments --------------------------------------------------------------------------------


def test_predicted_vs_actual_uses_true_discounted_returns():
    """On CartPole every reward is 1, so the Monte Carlo value of a state t steps before the end is
    (1 − γ^{T−t})/(1 − γ); a fresh agent's greedy policy falls fast, which pins the mean exactly."""
    agent = DQN("CartPole-v1", {"gamma": 0.9, "seed": 0})
    predicted, actual = predicted_vs_actual(agent, "CartPole-v1", episodes=1, seed=7)
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=7)
    T = 0
    while True:
        obs, _, term, trunc, _ = env.step(int(agent.predict(obs)))
        T += 1
        if term or trunc:
            break
    expected = np.mean([(1 - 0.9 ** (T - t)) / (1 - 0.9) for t in range(T)])
    assert actual == pytest.approx(expected, rel=1e-6)
    assert np.isfinite(predicted)


def test_experiments_log_plots_and_return_numbers():
    tracker = MemoryTracker()
    small = {**CARTPOLE_DQN, "learning_starts": 200, "train_freq": 64, "gradient_steps": 16, "hidden_sizes": (32, 32)}
    over = run_overestimation(tracker, steps=1200, seed=shifted(0), n_evals=2, eval_episodes=1, config=small)
    for label in ("dqn", "double_dqn"):
        c = over[label]
        assert len(c["steps"]) == len(c["predicted_q"]) == len(c["true_return"]) >= 2
        assert np.all(np.isfinite(c["predicted_q"])) and np.all(np.array(c["true_return"]) > 0)
        # something was learned: every reward is +1, so Q grows from a fresh net's ≈ 0 as the 3-step targets
        # (≥ 1 + γ + γ² for a non-terminal step) propagate, and stays below the ceiling Σ γ^t = 1/(1 − γ) = 100
        # (measured at shifts 0, 1, 2, 7: ≈ 2.8-3.1 after 600 steps, 4.3-6.0 after 1200)
        q = np.array(c["predicted_q"])
        assert q[0] > 1.5 and q[-1] > q[0] + 0.5 and q[-1] < 1 / (1 - small["gamma"]), (label, q)
    sweep = run_nstep_sweep(tracker, steps=1200, seed=shifted(0), n_values=(1, 3), config=small)
    for n in (1, 3):
        assert len(sweep[f"n{n}"]["returns"]) > 0 and np.isfinite(sweep[f"n{n}"]["final_eval_return"])
    # n-step returns propagate the reward n times faster early in training: after 1200 steps the 1-step
    # agent's greedy policy still pushes one way (≈ 9.4 steps), the 3-step one balances longer
    # (measured at shifts 0, 1, 2, 7: n=1 9.3-9.5, n=3 20.9-52.3)
    assert sweep["n3"]["final_eval_return"] > sweep["n1"]["final_eval_return"] + 5, sweep
    assert "overestimation.png" in tracker.artifacts and "nstep_sweep.png" in tracker.artifacts
    assert "dqn/predicted_q" in tracker.metrics and "n3/episode_return" in tracker.metrics


def test_polyak_update_is_each_parameters_lerp_and_a_copy_at_tau_one():
    from core_rl.common.off_policy import polyak_update

    torch.manual_seed(0)
    source, target = (torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Linear(5, 2)) for _ in range(2))
    expected = [tp.detach().clone().lerp_(p.detach(), 0.05) for p, tp in zip(source.parameters(), target.parameters())]
    polyak_update(source, target, 0.05)
    assert all(torch.equal(tp, e) for tp, e in zip(target.parameters(), expected))
    polyak_update(source, target, 1.0)
    assert all(torch.equal(tp, p) for p, tp in zip(source.parameters(), target.parameters()))


def test_a_run_that_ends_before_learning_starts_says_it_learned_nothing():
    """`deeprl train --algo dqn --env CartPole-v1 --steps 500` takes RL-Zoo's learning_starts=1000: no gradient step,
    and until 2026-12-08 nothing said so. Now a warning names both numbers; a run past learning_starts stays quiet."""
    import warnings

    import pytest

    from core_rl.q_learning.dqn import DQN

    agent = DQN("CartPole-v1", {"learning_starts": 1000, "batch_size": 8, "seed": 0})
    with pytest.warns(UserWarning, match=r"learn\(200\) ends at step 200, before learning_starts=1000"):
        agent.learn(200)
    short = DQN("CartPole-v1", {"learning_starts": 50, "batch_size": 8, "seed": 0})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        short.learn(200)
