r"""Saute RL: safety state augmentation (Sootla et al. 2022).

Saute turns the CMDP into an MDP whose optimal policies satisfy the constraint almost surely. The
state is augmented with the remaining safety budget, normalized to start at 1,

.. math::
    z_0 = 1,\qquad z_{t+1} = \frac{z_t - c_t / d}{\gamma_s}

(:math:`\gamma_s = 1`: :math:`z_t = 1 - \sum_{\tau<t} c_\tau / d`, the fraction of the episodic budget d
left). With :math:`\gamma_s < 1` the paper's budget is a discounted one; ``budget_horizon`` T then
rescales the limit to the per-step average of its discounted sum over T steps,

.. math::
    d \leftarrow d\,\frac{1-\gamma_s^{T}}{(1-\gamma_s)\,T},

as OmniSafe 0.5.0's PPOSaute does with T = ``max_ep_len`` (on SafetyPointGoal1 and SafetyCarGoal1 its
γ_s = 0.9999: d = 25 → 23.8; its default γ_s = 0.999: 25 → 15.8). The reward is replaced by a penalty
once the budget is spent,

.. math::
    \tilde r_t = \begin{cases} r_t & z_{t+1} \ge 0 \\ r_{unsafe} & z_{t+1} < 0 \end{cases},

so that the policy, which sees :math:`z_t`, can learn to spend its budget and stop at 0. Any RL
algorithm then solves the augmented MDP; here PPO. :class:`SauteWrapper` is the augmentation as a
vector-env wrapper (one z per constraint, unsafe once any is spent); observations must be Box.
The logged ``episode_return`` is the env's own reward, not :math:`\tilde r`.

Example (safety/CartPole-v0, whose costs count the steps outside a safe band or over a speed cap:
the policy sees the state and the budget left, z, one more observation)::

    >>> import numpy as np, safety  # registers the safety/ envs
    >>> agent = Saute("safety/CartPole-v0", {"n_envs": 8, "n_steps": 64, "cost_limit": 5.0, "seed": 0})
    >>> agent.env_spaces[0].shape, agent.observation_space.shape
    ((4,), (5,))
    >>> _ = agent.learn(2048)
    >>> bool(np.all(agent.predict(np.zeros((3, 5), np.float32)) >= 0))   # it acts on (s, z)
    True
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorEnv, VectorWrapper
from pydantic import Field

from core_rl.common.errors import SpaceError
from core_rl.common.parts import Part
from core_rl.trust_region.ppo import PPO, PPOConfig
from safety.cmdp import CMDPConfig, read_costs
from safety.parts import CostMonitorPart


def saute_budget_scale(saute_gamma: float, budget_horizon: int | None) -> float:
    """(1 − γ_s^T) / ((1 − γ_s) T), the factor on the limit of a budget discounted over T steps (1 without T)."""
    if budget_horizon is None or saute_gamma == 1.0:
        return 1.0
    if budget_horizon < 1:
        raise ValueError(f"budget_horizon must be a positive number of steps, got {budget_horizon}")
    return (1.0 - saute_gamma**budget_horizon) / ((1.0 - saute_gamma) * budget_horizon)


class SauteWrapper(VectorWrapper):
    """Appends the remaining budgets z ∈ R^K to the observation and replaces the reward by
    ``unsafe_reward`` while any z is negative (``shape_reward=False``: augmentation only); the limits are
    rescaled by :func:`saute_budget_scale` when ``budget_horizon`` is given."""

    def __init__(
        self,
        env: VectorEnv,
        cost_keys: tuple[str, ...],
        limits: np.ndarray,
        unsafe_reward: float = -1.0,
        saute_gamma: float = 1.0,
        z_clip: float = 2.0,
        shape_reward: bool = True,
        budget_horizon: int | None = None,
    ):
        super().__init__(env)
        self.shape_reward = shape_reward
        space = env.single_observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise SpaceError(f"Saute augments flat Box observations, got {space}")
        self.unsafe_reward, self.saute_gamma, self.z_clip = float(unsafe_reward), float(saute_gamma), float(z_clip)
        budgets = np.asarray(limits, dtype=np.float64) * saute_budget_scale(self.saute_gamma, budget_horizon)
        self.cost_keys, self.limits = tuple(cost_keys), np.maximum(budgets, 1e-8)
        K = len(self.cost_keys)
        low = np.concatenate([space.low, np.full(K, -z_clip)]).astype(np.float32)
        high = np.concatenate([space.high, np.full(K, z_clip)]).astype(np.float32)
        self.single_observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.z = np.ones((self.num_envs, K))

    def _augment(self, obs: np.ndarray) -> np.ndarray:
        return np.concatenate([obs, np.clip(self.z, -self.z_clip, self.z_clip)], axis=1).astype(np.float32)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.z[:] = 1.0
        return self._augment(obs), info

    def step(self, actions: Any):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        done = np.asarray(terminated) | np.asarray(truncated)
        costs = info["costs"] if "costs" in info else read_costs(info, self.cost_keys, self.num_envs, done)
        self.z = (self.z - costs / self.limits) / self.saute_gamma
        safe = (self.z >= 0).all(axis=1)
        info = dict(info)
        info["env_reward"] = np.asarray(reward)  # the env's own reward, for evaluation
        if self.shape_reward:
            reward = np.where(safe, reward, self.unsafe_reward)
        if done.any():
            if "final_obs" in info:  # the finished episode's last state, with its budget
                idx = np.flatnonzero(done)
                final = np.stack([np.asarray(info["final_obs"][i]) for i in idx]).reshape(len(idx), -1)
                final_aug = np.zeros((self.num_envs, self.single_observation_space.shape[0]), dtype=np.float32)
                final_aug[idx] = np.concatenate([final, np.clip(self.z[idx], -self.z_clip, self.z_clip)], axis=1)
                info["final_obs"] = final_aug
            self.z[done] = 1.0
        return self._augment(obs), reward, terminated, truncated, info


class SauteConfig(CMDPConfig, PPOConfig):
    unsafe_reward: float = Field(
        -0.1,
        le=0.0,
        description="r_unsafe, the reward per step once a budget is spent (scale it to the task's rewards).",
    )
    saute_gamma: float = Field(1.0, gt=0.0, le=1.0, description="γ_s of the budget update (1: undiscounted budget).")
    budget_horizon: int | None = Field(
        None,
        ge=1,
        description="T of a discounted budget: the limit d becomes d·(1 − γ_s^T)/((1 − γ_s)·T), OmniSafe's PPOSaute "
        "with T = max_ep_len (None: d as given).",
    )


class SautePart(Part):
    """The Saute augmentation as a part: a :class:`SauteWrapper` around the env (evaluation keeps the
    budget in the observation but reports the env's own reward)."""

    config: SauteConfig

    def wrap_env(self, env: VectorEnv, training: bool) -> VectorEnv:
        cfg = self.config
        return SauteWrapper(
            env,
            cfg.cost_keys,
            cfg.limits,
            cfg.unsafe_reward,
            cfg.saute_gamma,
            shape_reward=training,
            budget_horizon=cfg.budget_horizon,
        )


class Saute(PPO):
    """PPO on the Saute-augmented MDP (``Saute(env, cost_limit=25)``): the env's costs pass the cost
    monitor, then the Saute wrapper."""

    name = "saute_ppo"
    config: SauteConfig
    config_cls = SauteConfig
    part_types = (CostMonitorPart, SautePart)

    @property
    def mean_return(self) -> float:
        """Mean return of the env's own reward (not the Saute reward) over the last 100 training episodes."""
        return self.part(CostMonitorPart).monitor.mean_episode_return if hasattr(self, "env") else float("nan")
