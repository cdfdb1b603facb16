"""Our CMDP tasks, registered with gymnasium on import (``import safety`` does it).

=========================  ===============================  =========================  ===========
id                         task                             costs (info keys)          episode
=========================  ===============================  =========================  ===========
``safety/PointGoal-v0``    point mass, goals past a hazard  cost, cost_hazard          200 steps
``safety/CartPole-v0``     CartPole, safe band + speed cap  cost, cost_position,        200 steps
                                                            cost_speed
``safety/HazardGrid-v0``   tabular hazard gridworld         cost, cost_hazard          50 steps
``safety/Recommender-v0``  slate recommender (RecSim NG     cost, cost_clickbait       30 steps
                           twin), cap on clickbait shown
=========================  ===============================  =========================  ===========

Each id has an ``entry_point`` (one ``gymnasium.Env``, for ``gymnasium.make``) and a
``vector_entry_point`` (the numpy-batched :class:`~safety.envs.base.BatchedCMDP`; the recommender's
is the torch-batched simulator of :mod:`recsys.simulation` with a cost, slate actions), which
``gymnasium.make_vec(id, n, vectorization_mode="vector_entry_point")`` and the suite's
``make_vec_env`` use. ``"safety:safety/PointGoal-v0"`` makes gymnasium import this package first.
"""

from __future__ import annotations

import gymnasium as gym
from gymnasium.vector import VectorEnv

from safety.envs.base import BatchedCMDP, SingleCMDPEnv
from safety.envs.cartpole import ConstrainedCartPoleEnv, ConstrainedCartPoleVectorEnv
from safety.envs.gridworld import HazardGridEnv, HazardGridVectorEnv, HazardGridworld
from safety.envs.point_goal import PointGoalEnv, PointGoalVectorEnv
from safety.envs.recommender import ClickbaitRecommenderEnv, ClickbaitRecommenderVectorEnv

#: id -> (single env class, vector env class, episode length)
TASKS: dict[str, tuple[type[gym.Env], type[VectorEnv], int]] = {
    "safety/PointGoal-v0": (PointGoalEnv, PointGoalVectorEnv, 200),
    "safety/CartPole-v0": (ConstrainedCartPoleEnv, ConstrainedCartPoleVectorEnv, 200),
    "safety/HazardGrid-v0": (HazardGridEnv, HazardGridVectorEnv, 50),
    "safety/Recommender-v0": (ClickbaitRecommenderEnv, ClickbaitRecommenderVectorEnv, 30),
}


def register_envs() -> None:
    """Register every task id with gymnasium (idempotent)."""
    for env_id, (single, vector, steps) in TASKS.items():
        if env_id in gym.envs.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=f"{single.__module__}:{single.__name__}",
            vector_entry_point=f"{vector.__module__}:{vector.__name__}",
            max_episode_steps=steps,
        )


register_envs()

__all__ = [
    "TASKS",
    "register_envs",
    "BatchedCMDP",
    "SingleCMDPEnv",
    "PointGoalEnv",
    "PointGoalVectorEnv",
    "ConstrainedCartPoleEnv",
    "ConstrainedCartPoleVectorEnv",
    "HazardGridEnv",
    "HazardGridVectorEnv",
    "HazardGridworld",
    "ClickbaitRecommenderEnv",
    "ClickbaitRecommenderVectorEnv",
]
