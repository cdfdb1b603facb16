"""PPO and A2C learn; the shared agent API (seeding, save/load, predict, errors) behaves."""

import gymnasium as gym
import numpy as np
import pytest

from core_rl import ConfigError, EnvError, SpaceError, make_agent
from core_rl.actor_critic.actor_critic import A2C, ActorCritic
from core_rl.common.base import Agent
from core_rl.common.tracking import MemoryTracker
from core_rl.trust_region.ppo import PPO
from core_rl.trust_region.trpo import TRPO
from tests.seeding import seed as shifted

PPO_CARTPOLE = dict(
    n_envs=8,
    n_steps=32,
    batch_size=256,
    n_epochs=20,
    gae_lambda=0.8,
    gamma=0.98,
    lr=1e-3,
    lr_schedule="linear",
    clip_schedule="linear",
    ent_coef=0.0,
)


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


def test_ppo_solves_cartpole():
    tracker = MemoryTracker()
    agent = PPO("CartPole-v1", {**PPO_CARTPOLE, "seed": shifted(0)}, tracker=tracker)
    agent.learn(100_000, callback=stop_when_solved())
    assert agent.mean_return >= 195, agent.mean_return  # random play: ≈ 22
    assert agent.evaluate(10)["mean_return"] >= 195
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "env_steps_per_s", "episode_return"):
        assert key in tracker.metrics
    assert tracker.params["algo"] == "ppo" and tracker.params["n_steps"] == 32


def test_a2c_solves_cartpole():
    agent = A2C("CartPole-v1", {"seed": shifted(1)})
    agent.learn(300_000, callback=stop_at(195))
    assert agent.mean_return >= 195, agent.mean_return


def test_online_actor_critic_learns_cartpole():
    """Online AC (one step per update, n_envs synchronous actors) beats random (≈22) clearly."""
    agent = ActorCritic(
        "CartPole-v1",
        {
            "n_envs": 8,
            "n_steps": 1,
            "advantage": "nstep",
            "n_step": 1,
            "optimizer": "adam",
            "lr": 1e-3,
            "seed": shifted(0),
        },
    )
    agent.learn(120_000, callback=stop_at(100))
    assert agent.mean_return >= 100, agent.mean_return


@pytest.mark.slow
@pytest.mark.timeout(1800)  # three seeds: past the 600 s default on a loaded machine
def test_ppo_improves_pendulum():
    """PPO without state-dependent exploration is seed-sensitive on Pendulum at this budget: measured at
    73 728 steps over seeds 0-4: -416, -172, -498, -480, -169 (solved ≈ -150; random ≈ -1200..-1500), so
    one seed is no test. The median of three seeds measured -416..-480 (seeds 0-2, 1-3, 2-4)."""
    cfg = dict(
        n_envs=4,
        n_steps=1024,
        batch_size=64,
        n_epochs=10,
        gae_lambda=0.95,
        gamma=0.9,
        lr=1e-3,
        normalize_obs=True,
        normalize_reward=True,
    )
    random_returns, trained = [], []
    for k in range(3):
        # the random level from an untrained twin: evaluating the learner itself first moves its RNG, and
        # with it the trajectory the numbers below were measured on
        twin = PPO("Pendulum-v1", {**cfg, "seed": shifted(k)})
        random_returns.append(twin.evaluate(5, deterministic=False, seed=shifted(1))["mean_return"])
        twin.close()
        agent = PPO("Pendulum-v1", {**cfg, "seed": shifted(k)})
        agent.learn(73_728)
        trained.append(agent.evaluate(10)["mean_return"])
    assert max(random_returns) < -900, random_returns
    # every seed improves on its own random start by ≥ 500 (≥ 700 for each measured seed against random
    # ≈ -1200); the median is well past anything random (-600 vs ≈ -1200..-1500)
    assert all(t > r + 500 for t, r in zip(trained, random_returns)), (random_returns, trained)
    assert np.median(trained) > -600, (random_returns, trained)


def test_same_seed_same_numbers():
    a = PPO("CartPole-v1", {**PPO_CARTPOLE, "seed": shifted(3)}).learn(2048)
    b = PPO("CartPole-v1", {**PPO_CARTPOLE, "seed": shifted(3)}).learn(2048)
    c = PPO("CartPole-v1", {**PPO_CARTPOLE, "seed": shifted(4)}).learn(2048)
    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    pa, pb, pc = (x.policy.distribution(x._obs_tensor(obs)).logits for x in (a, b, c))
    assert (pa == pb).all()
    assert not (pa == pc).all()
    assert list(a.episode_returns) == list(b.episode_returns)


def test_save_load_roundtrip(tmp_path):
    agent = PPO("CartPole-v1", PPO_CARTPOLE).learn(1024)
    path = agent.save(tmp_path / "ppo.pt")
    loaded = Agent.load(path)  # dispatches on the stored algorithm name
    assert isinstance(loaded, PPO) and loaded.num_timesteps == agent.num_timesteps
    obs = np.random.default_rng(1).normal(size=(32, 4)).astype(np.float32)
    assert (loaded.predict(obs) == agent.predict(obs)).all()
    assert loaded.predict(obs[0]).shape == ()
    with pytest.raises(Exception, match="holds a ppo agent"):
        A2C.load(path)


def test_normalization_state_survives_checkpoint(tmp_path):
    agent = PPO("Pendulum-v1", {"n_envs": 2, "n_steps": 64, "normalize_obs": True}).learn(256)
    loaded = PPO.load(agent.save(tmp_path / "p.pt"))
    assert np.allclose(loaded.obs_rms.mean.numpy(), agent.obs_rms.mean.numpy())
    obs = np.ones((3, 3), dtype=np.float32)
    assert np.allclose(loaded.predict(obs), agent.predict(obs))


def test_box_actions_are_clipped_to_bounds():
    agent = PPO("Pendulum-v1", {"n_envs": 1, "n_steps": 16, "log_std_init": 3.0})
    actions = agent.predict(np.zeros((200, 3), dtype=np.float32), deterministic=False)
    assert actions.min() >= -2.0 and actions.max() <= 2.0


def test_bad_config_field_names_the_field():
    with pytest.raises(ConfigError, match="'lr'"):
        PPO("CartPole-v1", {"lr": "fast"})
    with pytest.raises(ConfigError, match="'learning_rate': unknown field"):
        PPO("CartPole-v1", {"learning_rate": 1e-3})
    with pytest.raises(ConfigError, match="'clip_range'"):
        PPO("CartPole-v1", {"clip_range": -1})
    with pytest.raises(ConfigError, match="unknown algorithm 'dqnn'"):
        make_agent("dqnn", "CartPole-v1")


@pytest.mark.parametrize("cls", [PPO, TRPO])
def test_log_std_ceiling_falls_linearly_and_binds(cls):
    """``log_std_final``: the ceiling on log σ falls linearly from log_std_init to log_std_final over the
    first ``log_std_anneal_fraction`` of the run and holds the learned log σ under it before every rollout
    (PPO's fused update and TRPO's natural step alike); without it, log σ stays where the updates leave it."""
    settings = {"n_envs": 2, "n_steps": 64, "seed": shifted(0)}
    seen = []

    def record(agent, metrics) -> bool:
        seen.append((agent.num_timesteps - 128, metrics["log_std_ceiling"]))
        # clamped before the rollout, then moved by one update only (a small step)
        assert float(agent.policy.log_std.detach().max()) <= metrics["log_std_ceiling"] + 0.1
        return True

    agent = cls("Pendulum-v1", {**settings, "log_std_final": -1.5, "log_std_anneal_fraction": 0.5})
    agent.learn(2048, callback=record)
    assert len(seen) == 16
    for before, ceiling in seen:  # ℓ(t) = 0 + (−1.5 − 0)·min(1, t / (0.5·2048))
        assert ceiling == pytest.approx(-1.5 * min(1.0, before / 1024), abs=1e-9)
    assert seen[0][1] == 0.0 and seen[-1][1] == -1.5
    agent._apply_log_std_ceiling()
    assert float(agent.policy.log_std.detach().max()) <= -1.5
    plain = cls("Pendulum-v1", settings).learn(2048)
    assert float(plain.policy.log_std.detach().min()) > -0.5  # the schedule, not the updates, moved it
    assert "log_std_ceiling" not in plain.last_metrics and plain.log_std_ceiling() is None


def test_log_std_final_is_validated():
    with pytest.raises(ConfigError, match="log_std_final=0.5 must be a finite number ≤ log_std_init=0.0"):
        PPO("Pendulum-v1", {"log_std_final": 0.5})
    with pytest.raises(ConfigError, match="log_std_final.*use_sde"):
        PPO("Pendulum-v1", {"log_std_final": -1.0, "use_sde": True})
    with pytest.raises(ConfigError, match="'log_std_anneal_fraction'"):
        PPO("Pendulum-v1", {"log_std_final": -1.0, "log_std_anneal_fraction": 0.0})
    with pytest.raises(ConfigError, match="config field 'log_std_final'.*Discrete"):
        PPO("CartPole-v1", {"log_std_final": -1.0})


def test_unknown_env_id():
    with pytest.raises(EnvError, match="unknown env id 'NoSuchEnv-v9'"):
        PPO("NoSuchEnv-v9")


class MultiBinaryEnv(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (2,), dtype=np.float32)
    action_space = gym.spaces.MultiBinary(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, True, False, {}


def test_unsupported_action_space_is_named():
    with pytest.raises(SpaceError, match="MultiBinary"):
        PPO(MultiBinaryEnv())


def test_user_env_instance_and_discrete_observations():
    """A user's Env instance works, and Discrete observations are one-hot encoded."""
    env = gym.make("FrozenLake-v1", is_slippery=False)
    agent = PPO(env, {"n_envs": 2, "n_steps": 64, "batch_size": 64})
    agent.learn(256)
    assert agent.predict(0).shape == ()


def test_evaluating_on_an_env_with_other_spaces_is_one_error_naming_both():
    """`deeprl eval --run <CartPole run> --env Acrobot-v1` failed in a matmul (4 inputs against 6); an env with the
    same observations but more actions would have run a policy that never picks the new ones. Both are refused."""
    import gymnasium as gym

    from core_rl.common.errors import SpaceError

    class ThreeActions(gym.Wrapper):
        def __init__(self, env: gym.Env):
            super().__init__(env)
            self.action_space = gym.spaces.Discrete(3)

        def step(self, action):
            return self.env.step(min(int(action), 1))

    agent = PPO("CartPole-v1", {"n_envs": 1, "n_steps": 32, "batch_size": 32, "seed": 0})
    agent.learn(32)
    with pytest.raises(SpaceError, match=r"trained on CartPole-v1 \(its observations: Box of shape \(4,\)\); "):
        agent.evaluate(2, env="Acrobot-v1")
    with pytest.raises(SpaceError, match=r"its actions: Discrete\(2\)\); .* has actions Discrete\(3\)"):
        agent.evaluate(2, env=lambda: ThreeActions(gym.make("CartPole-v1")))
    assert agent.evaluate(2, env="CartPole-v0")["mean_return"] > 0  # same spaces: runs
