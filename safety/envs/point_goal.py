r"""PointGoal: a point mass that shuttles between goals past hazards (Safety-Gymnasium's PointGoal
idea in plain numpy, no MuJoCo).

A point in the square :math:`[-B, B]^2` with damped double-integrator dynamics

.. math::
    v_{t+1} = \kappa\, v_t + g\, a_t,\qquad p_{t+1} = \mathrm{clip}(p_t + v_{t+1}, -B, B),
    \qquad a_t\in[-1,1]^2,

chases goals that it visits in turn (reaching goal i, within its radius, makes goal i+1 the next
one). The reward is the progress toward the current goal plus a bonus per goal reached,

.. math:: r_t = \|p_t - g_t\| - \|p_{t+1} - g_t\| + b\,\mathbb 1[\text{goal reached}],

and the cost is 1 for every step that ends inside a hazard disc,
:math:`c_t = \mathbb 1[\exists h: \|p_{t+1} - h\| < r_h]` (``info["cost"]`` and
``info["cost_hazard"]``). The default layout puts one hazard on the straight line between the two
goals, so the fastest shuttle (what an unconstrained agent learns) crosses it on every trip, and a
safe one detours around it at some loss of reward: a CMDP whose constraint binds.

The observation is the position, the velocity, the vector to the current goal, and for every
hazard the vector to its centre and the signed distance to its edge (negative inside), all in
world coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np

from core_rl.common.errors import ConfigError
from safety.envs.base import BatchedCMDP, SingleCMDPEnv

DEFAULT_GOALS = ((-1.2, 0.0), (1.2, 0.0))
DEFAULT_HAZARDS = ((0.0, 0.0, 0.45),)


class PointGoalVectorEnv(BatchedCMDP):
    """``num_envs`` point masses, stepped at once. ``hazards`` are ``(x, y, radius)`` triples."""

    cost_keys = ("cost", "cost_hazard")

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int | None = 200,
        goals: Sequence[Sequence[float]] = DEFAULT_GOALS,
        hazards: Sequence[Sequence[float]] = DEFAULT_HAZARDS,
        goal_radius: float = 0.3,
        goal_bonus: float = 1.0,
        damping: float = 0.7,
        gain: float = 0.03,
        bound: float = 2.0,
        start_low: Sequence[float] = (-1.7, -0.6),
        start_high: Sequence[float] = (-0.9, 0.6),
    ):
        self.goals = np.asarray(goals, dtype=np.float64)
        self.hazards = np.asarray(hazards, dtype=np.float64).reshape(-1, 3)
        if self.goals.ndim != 2 or self.goals.shape[1] != 2 or len(self.goals) < 1:
            raise ConfigError(f"goals must be a list of (x, y) points, got shape {self.goals.shape}")
        if np.any(self.hazards[:, 2] <= 0):
            raise ConfigError("every hazard must be (x, y, radius) with radius > 0")
        if not 0.0 <= damping < 1.0 or gain <= 0 or goal_radius <= 0 or bound <= 0:
            raise ConfigError("need 0 <= damping < 1 and positive gain, goal_radius and bound")
        self.goal_radius, self.goal_bonus = float(goal_radius), float(goal_bonus)
        self.damping, self.gain, self.bound = float(damping), float(gain), float(bound)
        self.start_low, self.start_high = np.asarray(start_low, float), np.asarray(start_high, float)
        n_h = len(self.hazards)
        dim = 6 + 3 * n_h
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.pos = np.zeros((num_envs, 2))
        self.vel = np.zeros((num_envs, 2))
        self.goal_idx = np.zeros(num_envs, dtype=np.int64)
        super().__init__(num_envs, max_episode_steps)

    def _reset_envs(self, mask: np.ndarray) -> None:
        n = int(mask.sum())
        self.pos[mask] = self.np_random.uniform(self.start_low, self.start_high, size=(n, 2))
        self.vel[mask] = 0.0
        self.goal_idx[mask] = len(self.goals) - 1 if len(self.goals) > 1 else 0

    def hazard_distance(self, pos: np.ndarray) -> np.ndarray:
        """Signed distance of each position to each hazard's edge, ``[N, H]`` (negative inside)."""
        return np.linalg.norm(pos[:, None, :] - self.hazards[None, :, :2], axis=-1) - self.hazards[None, :, 2]

    def _transition(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        goal = self.goals[self.goal_idx]
        dist_before = np.linalg.norm(self.pos - goal, axis=-1)
        self.vel = self.damping * self.vel + self.gain * actions
        new_pos = self.pos + self.vel
        clipped = np.clip(new_pos, -self.bound, self.bound)
        self.vel[new_pos != clipped] = 0.0  # walls stop the motion across them
        self.pos = clipped
        dist_after = np.linalg.norm(self.pos - goal, axis=-1)
        reached = dist_after < self.goal_radius
        reward = dist_before - dist_after + self.goal_bonus * reached
        self.goal_idx = np.where(reached, (self.goal_idx + 1) % len(self.goals), self.goal_idx)
        cost = (
            (self.hazard_distance(self.pos) < 0).any(axis=-1).astype(np.float64)
            if len(self.hazards)
            else np.zeros(self.num_envs)
        )
        return reward, np.zeros(self.num_envs, dtype=bool), {"cost": cost, "cost_hazard": cost}

    def _observe(self) -> np.ndarray:
        goal = self.goals[self.goal_idx]
        parts = [self.pos, self.vel * 10.0, goal - self.pos]
        if len(self.hazards):
            parts += [
                (self.hazards[None, :, :2] - self.pos[:, None, :]).reshape(self.num_envs, -1),
                self.hazard_distance(self.pos),
            ]
        return np.concatenate(parts, axis=1).astype(np.float32)


class PointGoalEnv(SingleCMDPEnv):
    """One :class:`PointGoalVectorEnv` as a ``gymnasium.Env`` (id ``safety/PointGoal-v0``)."""

    batched_cls = PointGoalVectorEnv
