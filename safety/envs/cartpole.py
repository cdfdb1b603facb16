r"""Constrained CartPole: gymnasium's CartPole physics, batched in numpy, with a safe band and a speed
limit as constraints.

Dynamics, termination (pole past 12°, cart past ±2.4) and the alive reward are CartPole-v1's
(Barto, Sutton & Anderson; Euler steps of τ = 0.02 s). On top of the alive reward the task pays
``target_reward`` per step spent right of ``target_x``, a lure out of the safe band, so that the
constraints bind:

.. math::
    r_t = 1 + w\,\mathbb 1[x_{t+1} > x_{target}], \qquad
    c^{pos}_t = \mathbb 1[|x_{t+1}| > x_{safe}], \qquad c^{speed}_t = \mathbb 1[|\dot x_{t+1}| > v_{max}],

with ``info["cost_position"]``, ``info["cost_speed"]`` and their sum ``info["cost"]``. A constraint
may name the sum or either component (several constraints at once: both components, each with
its own limit).
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

from core_rl.common.errors import ConfigError
from safety.envs.base import BatchedCMDP, SingleCMDPEnv


class ConstrainedCartPoleVectorEnv(BatchedCMDP):
    """``num_envs`` constrained CartPoles stepped at once (Discrete(2) push left/right)."""

    cost_keys = ("cost", "cost_position", "cost_speed")
    gravity, masscart, masspole, length, force_mag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    theta_threshold = 12 * 2 * math.pi / 360
    x_threshold = 2.4

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int | None = 200,
        safe_x: float = 1.0,
        max_speed: float = 1.0,
        target_x: float = 1.2,
        target_reward: float = 0.5,
    ):
        if safe_x <= 0 or max_speed <= 0:
            raise ConfigError(f"safe_x and max_speed must be positive, got {safe_x}, {max_speed}")
        self.safe_x, self.max_speed = float(safe_x), float(max_speed)
        self.target_x, self.target_reward = float(target_x), float(target_reward)
        high = np.array([self.x_threshold * 2, np.inf, self.theta_threshold * 2, np.inf], dtype=np.float32)
        self.single_observation_space = gym.spaces.Box(-high, high, dtype=np.float32)
        self.single_action_space = gym.spaces.Discrete(2)
        self.state = np.zeros((num_envs, 4))
        super().__init__(num_envs, max_episode_steps)

    def _reset_envs(self, mask: np.ndarray) -> None:
        self.state[mask] = self.np_random.uniform(-0.05, 0.05, size=(int(mask.sum()), 4))

    def _transition(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        x, x_dot, theta, theta_dot = self.state.T
        force = np.where(actions == 1, self.force_mag, -self.force_mag)
        cos, sin = np.cos(theta), np.sin(theta)
        total_mass = self.masspole + self.masscart
        polemass_length = self.masspole * self.length
        temp = (force + polemass_length * theta_dot**2 * sin) / total_mass
        theta_acc = (self.gravity * sin - cos * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * cos**2 / total_mass)
        )
        x_acc = temp - polemass_length * theta_acc * cos / total_mass
        x = x + self.tau * x_dot
        x_dot = x_dot + self.tau * x_acc
        theta = theta + self.tau * theta_dot
        theta_dot = theta_dot + self.tau * theta_acc
        self.state = np.stack([x, x_dot, theta, theta_dot], axis=1)
        terminated = (np.abs(x) > self.x_threshold) | (np.abs(theta) > self.theta_threshold)
        # CartPole-v1 rewards the terminating step too
        reward = 1.0 + self.target_reward * (x > self.target_x)
        cost_position = (np.abs(x) > self.safe_x).astype(np.float64)
        cost_speed = (np.abs(x_dot) > self.max_speed).astype(np.float64)
        return (
            reward,
            terminated,
            {"cost": cost_position + cost_speed, "cost_position": cost_position, "cost_speed": cost_speed},
        )

    def _observe(self) -> np.ndarray:
        return self.state.astype(np.float32)


class ConstrainedCartPoleEnv(SingleCMDPEnv):
    """One :class:`ConstrainedCartPoleVectorEnv` as a ``gymnasium.Env`` (id ``safety/CartPole-v0``)."""

    batched_cls = ConstrainedCartPoleVectorEnv
