"""Distributed RL (notes 10/31): rollout workers give the local run's numbers, bit for bit; Ape-X's actors
feed one learner that learns; Ray is optional (its tests skip without it) and its absence is a clear error."""

import builtins

import numpy as np
import pytest
import torch

from core_rl import make_agent
from core_rl.actor_critic.actor_critic import A2C
from core_rl.common.errors import ConfigError
from core_rl.distributed.apex import ApeXDQN, actor_epsilons
from core_rl.distributed.on_policy import DistributedA2C, DistributedPPO
from core_rl.distributed.ray_utils import RayMissingError, require_ray
from core_rl.trust_region.ppo import PPO
from tests.seeding import seed as shifted

try:
    import ray  # noqa: F401

    HAVE_RAY = True
except ImportError:  # pragma: no cover - depends on the extra
    HAVE_RAY = False

needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed (pip install 'deeprl-suite[distributed]')")

PPO_CFG = dict(seed=shifted(3), n_envs=4, n_steps=64, batch_size=64, n_epochs=2)


def same_params(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def run(agent, steps):
    """Train from the agent's own seed: the global RNG is set by the agent's constructor."""
    return agent.learn(steps)


# ---- on-policy workers reproduce the local run ---------------------------------------------------


def test_two_local_workers_reproduce_ppo_bit_for_bit():
    local = run(PPO("CartPole-v1", PPO_CFG), 1024)
    dist = run(DistributedPPO("CartPole-v1", PPO_CFG, n_workers=2, backend="local"), 1024)
    assert dist.num_timesteps == local.num_timesteps == 1024
    assert len(local.episode_returns) > 20
    assert list(dist.episode_returns) == list(local.episode_returns)
    assert list(dist.episode_lengths) == list(local.episode_lengths)
    assert same_params(dist.policy, local.policy) and same_params(dist.value, local.value)
    dist.close()


def test_workers_reproduce_a2c_and_one_worker_per_env():
    cfg = dict(seed=shifted(1), n_envs=4)
    local = run(A2C("CartPole-v1", cfg), 800)
    dist = run(DistributedA2C("CartPole-v1", cfg, n_workers=4, backend="local"), 800)
    assert list(dist.episode_returns) == list(local.episode_returns) and len(local.episode_returns) > 10
    assert same_params(dist.policy, local.policy)


def test_a_different_seed_gives_a_different_run():
    a = run(DistributedPPO("CartPole-v1", PPO_CFG, n_workers=2, backend="local"), 512)
    b = run(DistributedPPO("CartPole-v1", {**PPO_CFG, "seed": shifted(4)}, n_workers=2, backend="local"), 512)
    assert list(a.episode_returns) != list(b.episode_returns)


def test_distributed_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="multiple of n_workers"):
        DistributedPPO("CartPole-v1", dict(n_envs=3, n_workers=2, backend="local"))
    with pytest.raises(ConfigError, match="normalize_obs"):
        DistributedPPO("CartPole-v1", dict(n_envs=4, n_workers=2, normalize_obs=True, backend="local"))
    with pytest.raises(ConfigError, match="backend"):
        DistributedPPO("CartPole-v1", dict(n_envs=4, backend="spark"))
    import gymnasium as gym

    agent = DistributedPPO(gym.make("CartPole-v1"), dict(n_envs=2, n_workers=2, backend="local"))
    with pytest.raises(ConfigError, match="registered id or a zero-argument factory"):
        agent.learn(10)


def test_worker_resources_are_validated():
    with pytest.raises(ConfigError, match="worker_resources"):
        DistributedPPO("CartPole-v1", {"n_envs": 2, "worker_resources": {"worker_node": 0}})
    with pytest.raises(ConfigError, match="worker_resources: 'CPU' is not a custom resource"):
        DistributedPPO("CartPole-v1", {"n_envs": 2, "worker_resources": {"CPU": 1}})


def test_missing_ray_is_a_clear_error(monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(RayMissingError, match=r"deeprl-suite\[distributed\]"):
        require_ray()
    agent = DistributedPPO("CartPole-v1", dict(n_envs=2, n_workers=2, backend="ray"))  # no Ray needed to build
    with pytest.raises(RayMissingError, match="distributed"):
        agent.learn(10)


# ---- Ape-X ------------------------------------------------------------------------------------------


def test_apex_epsilons_follow_the_schedule():
    eps = actor_epsilons(4, 0.4, 7.0)
    np.testing.assert_allclose(eps, 0.4 ** (1 + 7 * np.arange(4) / 3))
    assert eps[0] == pytest.approx(0.4) and eps[-1] == pytest.approx(0.4**8)
    agent = make_agent("apex_dqn", "CartPole-v1", dict(n_workers=3, envs_per_worker=2, backend="local"))
    assert agent.n_envs == 6 and agent.replay.n_envs == 6


def test_apex_learns_cartpole_from_four_actors():
    from core_rl.q_learning.experiments import CARTPOLE_DQN

    cfg = {
        **CARTPOLE_DQN,
        "seed": shifted(0),
        "n_workers": 4,
        "backend": "local",
        "actor_steps": 64,
        "train_freq": 2,
        "gradient_steps": 1,
    }
    agent = ApeXDQN("CartPole-v1", cfg)
    agent.learn(10_240)
    result = agent.evaluate(10)["mean_return"]
    assert result >= 120, result  # a random policy scores ≈ 22
    assert agent.mean_return >= 50, agent.mean_return  # the actors' returns, ε's included, rose too
    assert agent.episodes_done > 100


# ---- Ray ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_session():
    from core_rl.distributed.ray_utils import init_ray

    ray_mod = init_ray(num_cpus=2)
    yield ray_mod
    ray_mod.shutdown()


@needs_ray
@pytest.mark.ray_local
def test_ray_ppo_with_two_workers_matches_the_local_run(ray_session):
    local = run(PPO("CartPole-v1", PPO_CFG), 1024)
    dist = run(DistributedPPO("CartPole-v1", PPO_CFG, n_workers=2, backend="ray"), 1024)
    try:
        assert list(dist.episode_returns) == list(local.episode_returns) and len(local.episode_returns) > 20
        assert same_params(dist.policy, local.policy) and same_params(dist.value, local.value)
        assert dist.evaluate(5)["mean_return"] == local.evaluate(5)["mean_return"]
    finally:
        dist.close()


@needs_ray
@pytest.mark.ray_local
def test_ray_apex_matches_in_process_actors(ray_session):
    cfg = dict(seed=shifted(0), n_workers=2, actor_steps=16, learning_starts=64, batch_size=32)
    local = ApeXDQN("CartPole-v1", cfg, backend="local").learn(640)
    remote = ApeXDQN("CartPole-v1", cfg, backend="ray").learn(640)
    try:
        assert remote.gradient_updates == local.gradient_updates > 0
        assert list(remote.episode_returns) == list(local.episode_returns)
        assert same_params(remote.q_net, local.q_net)
    finally:
        remote.close()


class _FakeActorError(Exception):
    pass


class _FakeRay:
    """Enough of Ray for :meth:`WorkerGroup._lost`: refs are outcomes, the node table is fixed."""

    class exceptions:
        RayActorError = _FakeActorError

    def __init__(self, alive: dict[str, bool]):
        self.alive = alive

    def get(self, ref):
        if isinstance(ref, Exception):
            raise ref
        return ref

    def nodes(self):
        return [{"NodeID": n, "Alive": a} for n, a in self.alive.items()]


def _group(ray, nodes):
    from core_rl.distributed.workers import WorkerGroup

    group = WorkerGroup.__new__(WorkerGroup)
    group.ray, group._nodes, group.handles = ray, nodes, [None] * len(nodes)
    return group


def test_a_dead_node_loses_every_worker_on_it_even_one_whose_call_finished():
    """A node's death can reach one actor's call first; the other worker there finished its call but is gone too."""
    died = _FakeActorError("The actor died because its node has died.")
    group = _group(_FakeRay({"a": False, "b": True}), ["a", "a", "b"])
    lost = group._lost([died, "result", "result"])
    assert str(lost).startswith("the loss of workers 0, 1 of 3 (node died)"), str(lost)


def test_a_dead_worker_process_on_a_live_node_is_named_alone():
    died = _FakeActorError("The actor died unexpectedly before finishing this task.")
    group = _group(_FakeRay({"a": True, "b": True}), ["a", "a"])
    group._dead_nodes = lambda nodes, wait_s=0.0: set()  # no 20 s wait for a node that stays alive
    lost = group._lost(["result", died])
    assert str(lost).startswith("the loss of worker 1 of 2 (worker process died)"), str(lost)
