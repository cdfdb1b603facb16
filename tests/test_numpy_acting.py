"""Acting in NumPy (core_rl.common.numpy_acting) against the torch distributions it replaces."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from core_rl.common.distributions import StochasticPolicy, ValueFunction
from core_rl.common.normalization import RewardScaler, RunningMeanStd
from core_rl.common.numpy_acting import MAX_WORK, NumpyActor

BOX = gym.spaces.Box(-1.0, 1.0, (5,), np.float32)


def _nets(obs_space: gym.Space, action_space: gym.Space, activation: str, hidden=(32, 32), **kw):
    torch.manual_seed(0)
    policy = StochasticPolicy(obs_space, action_space, hidden, activation, log_std_init=-0.7, **kw)
    value = ValueFunction(obs_space, hidden, activation)
    return policy, value


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_gaussian_actions_log_probs_and_values_equal_the_torch_path(activation):
    policy, value = _nets(BOX, gym.spaces.Box(-2.0, 2.0, (3,), np.float32), activation)
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-0.7, 0.1, -1.3]))  # a log σ per dimension
    actor = NumpyActor.build(policy, value, n_envs=4)
    assert actor is not None
    obs = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
    torch.manual_seed(7)
    actions, log_probs, values = actor.start(block=8).act(obs)
    torch.manual_seed(7)
    eps = torch.randn(4, 3)  # the torch path's first draw, randn_like(μ): the same stream
    with torch.no_grad():
        dist = policy.distribution(torch.from_numpy(obs))
        expected = dist.mean + dist.log_std.exp() * eps
        np.testing.assert_allclose(actions, expected.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(log_probs, dist.log_prob(torch.from_numpy(actions)).numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(values, value(torch.from_numpy(obs)).numpy(), rtol=1e-5, atol=1e-6)
    assert actions.dtype == log_probs.dtype == values.dtype == np.float32
    assert actions.shape == (4, 3) and log_probs.shape == values.shape == (4,)


def test_categorical_samples_follow_the_softmax_and_log_probs_equal_the_torch_path():
    space = gym.spaces.Discrete(7)  # a Discrete observation: one-hot inside the actor, as in ObsEncoder
    policy, value = _nets(space, gym.spaces.Discrete(3), "tanh")
    with torch.no_grad():
        policy.net[-1].weight.mul_(100.0)  # a policy far from uniform, so that a wrong sampler shows
    actor = NumpyActor.build(policy, value, n_envs=2).start(block=4096)
    assert actor is not None
    obs = np.array([2, 5])
    draws = np.stack([actor.act(obs)[0] for _ in range(4000)])
    actions, log_probs, values = actor.act(obs)
    assert actions.dtype == np.int64
    with torch.no_grad():
        dist = policy.distribution(torch.from_numpy(obs))
        probs = dist.probs.numpy()
        np.testing.assert_allclose(log_probs, dist.log_prob(torch.from_numpy(actions)).numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(values, value(torch.from_numpy(obs)).numpy(), rtol=1e-5, atol=1e-6)
    for env in range(2):
        freq = np.bincount(draws[:, env], minlength=3) / len(draws)
        np.testing.assert_allclose(freq, probs[env], atol=0.03)


def test_the_actor_reads_the_weights_through_views_and_without_a_critic_values_are_zero():
    policy, _ = _nets(BOX, gym.spaces.Discrete(2), "relu")
    actor = NumpyActor.build(policy, None, n_envs=1)
    obs = np.ones((1, 5), np.float32)
    before = actor.act(obs)
    with torch.no_grad():  # an optimizer's in-place step
        for p in policy.parameters():
            p.add_(0.5)
    after = actor.act(obs)
    with torch.no_grad():
        lp = policy.distribution(torch.from_numpy(obs)).log_prob(torch.from_numpy(after[0]))
    np.testing.assert_allclose(after[1], lp.numpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(before[1], after[1]) and after[2].tolist() == [0.0]


def test_build_declines_what_it_cannot_act_for():
    act = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    policy, value = _nets(BOX, act, "tanh")
    assert NumpyActor.build(policy, value, n_envs=1) is not None
    gsde, _ = _nets(BOX, act, "tanh", use_sde=True)
    assert NumpyActor.build(gsde, value, n_envs=1) is None
    wide, wide_v = _nets(BOX, act, "tanh", hidden=(256, 256))
    assert NumpyActor.build(wide, wide_v, n_envs=MAX_WORK // 256**2) is not None
    assert NumpyActor.build(wide, wide_v, n_envs=MAX_WORK // 256**2 + 1) is None  # a real matrix product
    slate = gym.spaces.MultiDiscrete([3, 4])
    multi, _ = _nets(BOX, slate, "tanh")
    assert NumpyActor.build(multi, value, n_envs=1) is None
    image = gym.spaces.Box(0, 255, (4, 42, 42), np.uint8)
    cnn_policy, cnn_value = _nets(image, gym.spaces.Discrete(3), "relu", hidden=(16,))
    assert NumpyActor.build(cnn_policy, cnn_value, n_envs=1) is None


@pytest.mark.parametrize("n", [1, 3])
def test_running_statistics_and_the_reward_scaler_equal_the_batch_formulas(n):
    rng = np.random.default_rng(0)
    rms, scalar = RunningMeanStd((4,)), RunningMeanStd(())
    xs = rng.standard_normal((50, n, 4)) * 3 + 1
    for x in xs:
        rms.update(x)
        scalar.update(x[:, 0].copy())
    flat = xs.reshape(-1, 4)
    w = 1e-4 / (1e-4 + len(flat))  # the prior's pseudo-count: mean 0, var 1
    np.testing.assert_allclose(rms.mean.numpy(), flat.mean(0) * (1 - w), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(rms.var.numpy(), flat.var(0), rtol=1e-4)
    np.testing.assert_allclose(float(scalar.mean), flat[:, 0].mean() * (1 - w), rtol=1e-9, atol=1e-9)
    kept = xs[-1].copy()
    rms.update(xs[-1])
    assert np.array_equal(xs[-1], kept)  # the caller's array is not written to
    scaler, rewards = RewardScaler(n, 0.9), rng.standard_normal((30, n))
    ret, seen = np.zeros(n), []
    for t, r in enumerate(rewards):
        dones = np.full(n, t % 7 == 6)
        out = scaler(r.copy(), dones)
        ret = ret * 0.9 + r
        seen.append(ret.copy())
        ret[dones] = 0.0
        history = np.concatenate(seen)
        if t >= 2:  # before, the prior's variance of 1 (pseudo-count 1e-4) is not yet negligible
            std = np.sqrt(np.var(history) * len(history) / (len(history) + 1e-4))
            np.testing.assert_allclose(out, np.clip(r / std, -10, 10), rtol=1e-3)


def test_ppo_rebuilds_its_actor_when_the_optimizer_moves_the_weights_and_reads_log_std_every_rollout():
    from core_rl.common.tracking import MemoryTracker
    from core_rl.trust_region.ppo import PPO

    agent = PPO("Pendulum-v1", dict(n_envs=1, n_steps=64, batch_size=32, n_epochs=1, seed=0), tracker=MemoryTracker())
    first = agent._numpy_actor(8)
    assert first is not None and agent._numpy_actor(8) is first  # cached while the storage stays
    agent.learn(64)  # the fused update's FlatStep re-points every p.data at a flat buffer
    actor = agent._numpy_actor(8)
    assert actor is not None and actor is not first
    obs = np.zeros((1, 3), np.float32)
    with torch.no_grad():
        agent.policy.log_std.fill_(-1.5)
        mean = agent.policy.distribution(torch.from_numpy(obs)).mean.numpy()
    actions, log_probs, _ = agent._numpy_actor(8).act(obs)  # the same actor, started again: σ = e^-1.5
    assert agent._numpy_actor(8) is actor
    z = (actions - mean) / np.exp(-1.5)
    np.testing.assert_allclose(log_probs, -0.5 * (z**2).sum(-1) + 1.5 - 0.5 * np.log(2 * np.pi), rtol=1e-5)


def _explore_both_ways(agent, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The agent's exploration actions for ``obs`` in NumPy and in torch, from the same generator (and OU) state."""
    rng = torch.get_rng_state()
    ou = agent.noise.state.clone() if hasattr(getattr(agent, "noise", None), "state") else None
    numpy_actions = agent._explore_numpy(obs)
    torch.set_rng_state(rng)
    if ou is not None:
        agent.noise.state.copy_(ou)
    with torch.no_grad():
        torch_actions = agent._explore(agent._obs_tensor(obs)).numpy()
    return numpy_actions, torch_actions


@pytest.mark.parametrize("algo", ["sac", "td3", "ddpg"])
def test_off_policy_exploration_in_numpy_takes_the_torch_paths_noise_and_actions(algo):
    """SAC's tanh-Gaussian sample and DDPG/TD3's clipped noisy action (Gaussian, OU for DDPG here), acted in
    NumPy on views of the trained actor's weights, equal the torch path's actions in the env's units (the same
    noise draws), and the views follow the optimizer's in-place steps."""
    from core_rl.continuous.ddpg import DDPG
    from core_rl.continuous.sac import SAC
    from core_rl.continuous.td3 import TD3

    cls = {"sac": SAC, "td3": TD3, "ddpg": DDPG}[algo]
    config = {"seed": 2, "hidden_sizes": (32, 32), "batch_size": 32, "learning_starts": 64}
    if algo == "ddpg":
        config["exploration_noise"] = "ou"
    agent = cls(gym.make("Pendulum-v1"), config)
    agent.learn(100)  # 36 gradient steps: the weights the views read have moved since they were built
    assert agent._numpy_actor() is not None
    obs = np.random.default_rng(3).standard_normal((1, 3))
    low, high = agent.action_space.low, agent.action_space.high
    for _ in range(3):
        numpy_actions, torch_actions = _explore_both_ways(agent, obs)
        assert numpy_actions.shape == (1, 1) and np.all((numpy_actions >= low) & (numpy_actions <= high))
        np.testing.assert_allclose(numpy_actions, torch_actions, rtol=1e-5, atol=1e-5)
        agent.learn(2)


def test_off_policy_exploration_stays_in_torch_where_numpy_would_not_mirror_it():
    from core_rl.continuous.sac import SAC
    from core_rl.continuous.td3 import TD3

    env = gym.make("Pendulum-v1")
    assert SAC(env, {"seed": 0, "hidden_sizes": (16,), "numpy_acting": False})._numpy_actor() is None
    assert SAC(env, {"seed": 0, "hidden_sizes": (16,), "use_sde": True})._numpy_actor() is None  # gSDE
    assert SAC(env, {"seed": 0, "hidden_sizes": (16,)})._numpy_actor() is not None

    class Greedier(TD3):  # a subclass that acts its own way
        def _explore(self, obs_t):
            return super()._explore(obs_t) * 0.5

    assert Greedier(env, {"seed": 0, "hidden_sizes": (16,)})._numpy_actor() is None
    wide = TD3(env, {"seed": 0, "hidden_sizes": (1024,)})  # a real matrix product: torch
    assert wide._numpy_actor() is None
