"""Exploration (notes 10/17–10/19): counters count exactly (and pseudo-counts match counts where they should),
the bonus wrapper adds β/√N on the true next state for any agent, bootstrapped DQN keeps one head per
episode and masks per head, ensemble disagreement is high off the data; and on a chain with a distractor,
the count bonus and Thompson sampling find the far reward where ε-greedy DQN does not; and on the chain whose
action meanings change per state, PPO and A2C with a count bonus reach the goal (A2C without it never does)."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from core_rl import make_agent
from core_rl.common.envs import make_vec_env
from core_rl.common.errors import ConfigError, SpaceError
from core_rl.common.seeding import configure_torch
from core_rl.common.tracking import MemoryTracker
from core_rl.exploration.agents import BonusDQN, BonusPPO
from core_rl.exploration.bonus import (
    CountBonus,
    DensityCounter,
    DisagreementBonus,
    ExactCounter,
    ExplorationBonusWrapper,
    SimHashCounter,
)
from core_rl.exploration.bootstrapped_dqn import BootstrappedDQN
from core_rl.exploration.envs import ChainEnv
from core_rl.exploration.experiments import run_chain_exploration
from tests.seeding import seed as shifted

# ---- the chain ------------------------------------------------------------------------------------


def test_chain_dynamics_and_rewards():
    env = ChainEnv(n=5)
    obs, _ = env.reset(seed=0)
    assert obs == 1
    obs, r, term, trunc, _ = env.step(ChainEnv.LEFT)
    assert (obs, r, term) == (0, 0.001, False)  # the distractor
    for _ in range(3):
        obs, r, term, trunc, _ = env.step(ChainEnv.RIGHT)
    obs, r, term, trunc, info = env.step(ChainEnv.RIGHT)
    assert (obs, r, term, info["goal_reached"]) == (4, 1.0, True, True)
    thermo = gym.make("explore/ChainThermometer-v0", n=6)
    np.testing.assert_array_equal(thermo.reset(seed=0)[0], [1, 1, 0, 0, 0, 0])
    env = ChainEnv(n=5)
    env.reset(seed=0)
    steps = [env.step(ChainEnv.LEFT) for _ in range(env.max_steps)]
    assert steps[-1][3] and not any(s[3] for s in steps[:-1])  # truncated after N + 9 steps
    with pytest.raises(ConfigError, match="at least 3"):
        ChainEnv(n=2)


# ---- counters ---------------------------------------------------------------------------------------


def test_exact_counts():
    c = ExactCounter(gym.spaces.Discrete(5))
    c.update(torch.tensor([0, 3, 3, 4, 3]))
    np.testing.assert_array_equal(c.counts(torch.tensor([3, 0, 1, 4])).numpy(), [3, 1, 0, 1])
    with pytest.raises(SpaceError, match="simhash"):
        ExactCounter(gym.spaces.Box(0, 1, (2,)))


def test_simhash_counts_identical_states_together_and_separates_far_ones():
    space = gym.spaces.Box(-1.0, 1.0, (8,), np.float32)
    c = SimHashCounter(space, bits=16, seed=shifted(0))
    rng = np.random.default_rng(0)
    states = torch.as_tensor(rng.uniform(-1, 1, (50, 8)), dtype=torch.float32)
    c.update(states[[0, 0, 0, 1]])
    assert c.counts(states[:1]).item() == 3 and c.counts(states[1:2]).item() == 1
    codes = c.code(states)
    assert len(set(codes.tolist())) >= 45  # 16 random hyperplanes separate 50 random states
    near = states[:1] + 1e-4
    assert c.code(near).item() == codes[0].item()  # a tiny move keeps the code


def test_density_pseudo_count_equals_the_count_plus_prior_in_one_dimension():
    """For the add-one histogram, ρ(1−ρ')/(ρ'−ρ) = c + 1 exactly in 1-D."""
    c = DensityCounter(gym.spaces.Box(0.0, 1.0, (1,), np.float32), bins=4)
    x = torch.tensor([[0.1], [0.1], [0.15], [0.9], [0.6]])
    c.update(x)
    pseudo = c.counts(torch.tensor([[0.05], [0.95], [0.4]]))
    np.testing.assert_allclose(pseudo.numpy(), [3 + 1, 1 + 1, 0 + 1], rtol=1e-9)


def test_bonus_wrapper_adds_beta_over_sqrt_count_of_the_true_next_state():
    vec = make_vec_env(lambda: ChainEnv(n=4, max_steps=3), 2, seed=shifted(0))
    bonus = CountBonus(ExactCounter(gym.spaces.Discrete(4)), beta=0.5)
    env = ExplorationBonusWrapper(vec, bonus, offset=0.1)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(bonus.counter.table.numpy(), [0, 2, 0, 0])  # both start in state 1
    obs, r, term, trunc, info = env.step(np.array([1, 1]))  # both to state 2
    np.testing.assert_allclose(r, 0.5 / np.sqrt(2) - 0.1)
    obs, r, term, trunc, info = env.step(np.array([1, 0]))  # env 0 reaches the goal (3)
    assert term[0] and obs[0] == 1  # SAME_STEP: already reset
    np.testing.assert_allclose(info["extrinsic_reward"], [1.0, 0.0])
    np.testing.assert_allclose(r, [1.0 + 0.5 / 1 - 0.1, 0.5 / np.sqrt(3) - 0.1])  # counted on s' = 3, not 1
    np.testing.assert_array_equal(bonus.counter.table.numpy(), [0, 4, 2, 1])  # + the new episode's start
    assert env.extrinsic_returns == [1.0]


def test_disagreement_is_high_off_the_data():
    configure_torch(1)  # as agents do: small nets run fastest on one thread
    space, actions = gym.spaces.Discrete(12), gym.spaces.Discrete(2)
    b = DisagreementBonus(space, actions, beta=1.0, fit_every=10_000, fit_steps=200, clip=1e9, seed=shifted(0))
    s = torch.arange(6).repeat(40)  # only states 0..5 are ever seen
    a = torch.randint(2, s.shape, generator=torch.Generator().manual_seed(0))
    b.fit_every = len(s)
    b.bonus(s, a, (s + 2 * a - 1).clamp(0, 11))  # stores and fits
    seen = b.model.disagreement(*b._features(torch.arange(6), torch.zeros(6))).mean()
    unseen = b.model.disagreement(*b._features(torch.arange(8, 12), torch.zeros(4))).mean()
    assert unseen > 5 * seen, (seen, unseen)


# ---- bootstrapped DQN -------------------------------------------------------------------------------


def test_bootstrapped_dqn_keeps_one_head_per_episode_and_masks_per_head():
    agent = BootstrappedDQN(
        lambda: ChainEnv(n=6),
        dict(
            seed=shifted(0),
            n_envs=2,
            n_heads=6,
            bootstrap_prob=0.3,
            learning_starts=0,
            batch_size=8,
            hidden_sizes=(16,),
        ),
    )
    heads, ended = [], []
    for _ in range(150):
        before, done_before = agent.active_head.clone(), agent.episodes_done
        agent._iterate()
        heads.append((before, agent.active_head.clone()))
        ended.append(agent.episodes_done - done_before)
    # a head changes only where an episode ended (the chain of 6 lasts 15 steps when it does not finish) ...
    lengths = np.array(agent.episode_lengths)
    assert len(lengths) > 0
    per_step = [int((a != b).sum()) for a, b in heads]
    assert all(c <= e for c, e in zip(per_step, ended)), list(zip(per_step, ended))
    changes = sum(per_step)
    assert changes <= agent.episodes_done
    # ... and there it IS redrawn: uniform over K = 6 heads, so it changes with probability 5/6 per episode
    # end (80 episodes end in 150 iterations: changes ~ Binomial(80, 5/6), mean 66.7, sd 3.3; measured at
    # shifts 0, 1, 2, 7: 67, 69, 66, 65 changes, all 6 heads acting); never redrawing gives 0
    assert agent.episodes_done >= 40, agent.episodes_done
    assert changes >= 0.7 * agent.episodes_done, (changes, agent.episodes_done)
    assert len({int(h) for _, after in heads for h in after}) >= 3  # many heads act, not one or two
    masks = agent.replay.masks[:60]
    assert masks.shape == (60, 2, 6)
    assert 0.2 < masks.mean().item() < 0.4  # m ~ Bernoulli(0.3)
    batch = agent.replay.sample(16)
    assert batch.masks.shape == (16, 6)
    q = agent.q_net(torch.zeros(3, dtype=torch.long))
    assert q.shape == (3, 6, 2)
    assert not torch.allclose(q[:, 0], q[:, 1])  # heads differ from the start
    with pytest.raises(ConfigError, match="prioritized"):
        BootstrappedDQN(lambda: ChainEnv(n=6), dict(prioritized=True))
    with pytest.raises(ConfigError, match="init"):
        BootstrappedDQN(lambda: ChainEnv(n=6), dict(init="torch_default"))


def test_bootstrapped_vote_is_the_majority():
    agent = make_agent("bootstrapped_dqn", "explore/Chain-v0", dict(n_heads=3))
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]]])  # heads vote 0, 1, 0
    assert agent.vote(q).item() == 0


# ---- any agent takes a bonus ------------------------------------------------------------------------


def test_bonus_mixin_wraps_training_envs_of_dqn_and_ppo_only():
    for algo in ("bonus_dqn", "bonus_ppo", "bonus_a2c"):
        agent = make_agent(algo, "explore/ChainThermometer-v0", dict(bonus="simhash", n_envs=2))
        assert isinstance(agent.env, ExplorationBonusWrapper) and "counter.table" in agent.bonus.state_dict()
        agent.learn(64)
        assert agent.bonus.counter.table.sum() >= 64
        assert agent.evaluate(1, n_envs=1)["mean_length"] > 0  # evaluation is on the plain env
    plain = BonusPPO("explore/Chain-v0", dict(bonus="none"))
    assert not isinstance(plain.env, ExplorationBonusWrapper)


def test_count_bonus_and_thompson_sampling_find_what_epsilon_greedy_misses():
    tracker = MemoryTracker()
    out = run_chain_exploration(
        tracker,
        methods=("epsilon_greedy", "count", "bootstrapped"),
        seeds=tuple(shifted(s) for s in (0, 1, 2)),
        budget=3000,
        n=20,
        obs="thermometer",
        eval_every=300,
    )
    # measured over seeds 0-4 (run_chain_exploration's defaults): ε-greedy 1/5, count 5/5, bootstrapped 5/5
    assert out["epsilon_greedy"]["success_rate"] <= 1 / 3, out
    assert out["count"]["success_rate"] == 1.0, out
    assert out["bootstrapped"]["success_rate"] == 1.0, out
    assert "chain_exploration.png" in tracker.artifacts
    assert tracker.last("count.success_rate") == out["count"]["success_rate"]


CHAIN_RANDOM = "explore/ChainRandomActions-v0"  # 20 states, the right-moving action drawn per state
CHAIN_BUDGET = 40_960


def greedy_chain_return(agent) -> float:
    """The deterministic policy's return on the deterministic chain: 1 at the goal, 0.029 at the distractor."""
    return agent.evaluate(1, n_envs=1)["mean_return"]


def chain_success_rate(agent, episodes: int = 50) -> float:
    """The share of seeded episodes in which the (stochastic) policy reaches the goal: about 4e-6 for a
    uniform policy (18 right moves in the 29-step limit, each the one action of two)."""
    returns = np.asarray(agent.evaluate(episodes, deterministic=False, seed=123, n_envs=1)["returns"])
    return float(np.mean(returns >= 1.0))


@pytest.mark.parametrize("algo", [pytest.param("bonus_ppo", marks=pytest.mark.slow), "bonus_a2c"])
def test_bonus_on_policy_agents_solve_the_chain_with_random_actions(algo):
    """``bonus_ppo`` (~10 s) and ``bonus_a2c`` (~5 s) with their defaults (count bonus, β = 0.1) reach the far
    end of the 20-state chain whose right-moving action changes from state to state; the greedy policy then
    walks to the goal (return 1). Measured at 40,960 steps, seed shifts 0-4: both 5/5 (first greedy success at
    the 10k/20k/30k checkpoints: PPO 20k, 20k, 20k, 10k, 30k; A2C 10k, 20k, 10k, 10k, 20k). Without the bonus
    (``bonus="none"``) at the same budget and shifts, A2C never leaves the distractor (0/5, greedy return
    0.029; :func:`test_plain_a2c_stays_at_the_distractor`) and PPO reaches the goal at 2/5 (shifts 2 and 3, by
    undirected drift: at shift 2 its policy pushed right through states 2-8 before its first goal episode),
    so for PPO the bonus turns a chance into a certainty rather than a failure into a success.

    The check is the policy's success rate, not its greedy episode: over 28 seed shifts (2026-12-05) PPO's
    greedy policy missed the goal at 2 (torch acting) or 4 (NumPy acting) of them, oscillating at one state
    of the 18 whose action it had not settled, while its stochastic policy reached the goal in 50-96 % of
    episodes at those seeds and 100 % at the others measured."""
    agent = make_agent(algo, CHAIN_RANDOM, dict(seed=shifted(0)))
    agent.learn(CHAIN_BUDGET)
    assert agent.bonus.counter.table[-1] > 0  # it found the goal while training ...
    assert chain_success_rate(agent) >= 0.25  # ... and its policy walks there


def test_plain_a2c_stays_at_the_distractor():
    """The contrast to the bonus test: A2C without the bonus, same budget, same seed, collects the distractor
    (greedy return 0.029) — measured at seed shifts 0-4, 0/5 reach the goal at 10k, 20k, 30k or 40,960 steps. ~5 s."""
    agent = make_agent("bonus_a2c", CHAIN_RANDOM, dict(seed=shifted(0), bonus="none"))
    agent.learn(CHAIN_BUDGET)
    assert greedy_chain_return(agent) < 0.5


def test_bonus_dqn_checkpoint_keeps_counts(tmp_path):
    agent = BonusDQN("explore/Chain-v0", dict(bonus="count", learning_starts=10))
    agent.learn(50)
    path = agent.save(tmp_path / "agent.pt")
    loaded = BonusDQN.load(path)
    assert torch.equal(loaded.bonus.counter.table, agent.bonus.counter.table)
