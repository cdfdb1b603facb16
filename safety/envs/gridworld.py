r"""A tabular hazard gridworld: a CMDP small enough to solve exactly.

The grid is drawn as text: ``S`` start, ``G`` goal (terminal), ``H`` hazard, ``#`` wall, ``.``
free. Actions are up/right/down/left; with probability ``slip`` the move goes in a uniformly random
direction instead, and moves into walls or off the grid stay put. Entering the goal pays 1 and ends
the episode, entering (or staying in) a hazard costs 1:

.. math::
    r(s,a) = \sum_{s'} p(s'|s,a)\,\mathbb 1[s'=G], \qquad c(s,a) = \sum_{s'} p(s'|s,a)\,\mathbb 1[s'\in H].

The default layout has a short corridor to the goal through a hazard and a longer safe detour, so
the discounted CMDP :math:`\max_\pi V_r^\pi(\mu_0)\ \text{s.t.}\ V_c^\pi(\mu_0)\le d` has a
stochastic optimum for limits between the two paths' costs. :class:`HazardGridworld` exposes the
exact model (a :class:`~core_rl.tabular.TabularMDP` and the cost table) for
:mod:`safety.tabular`'s LP and Lagrangian solvers; :class:`HazardGridVectorEnv` samples it as a
vector env for agents (observations are state indices).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from core_rl.common.errors import ConfigError
from core_rl.tabular import TabularMDP
from safety.envs.base import BatchedCMDP, SingleCMDPEnv

DEFAULT_LAYOUT = (
    ".......",
    ".##H##.",
    "S..H..G",
    ".##H##.",
    ".......",
)
MOVES = np.array([(-1, 0), (0, 1), (1, 0), (0, -1)])  # up, right, down, left (row, col)


@dataclass(frozen=True)
class HazardGridworld:
    """The exact model of a hazard gridworld: ``mdp`` (P, r, γ, μ0, terminal goal) and ``cost[s, a]``."""

    layout: tuple[str, ...]
    cells: np.ndarray  # (S, 2) row, col of each state
    mdp: TabularMDP
    cost: np.ndarray  # (S, A) expected cost c(s, a)
    hazard: np.ndarray  # (S,) bool
    goal: np.ndarray  # (S,) bool

    @classmethod
    def from_layout(
        cls, layout: Sequence[str] = DEFAULT_LAYOUT, slip: float = 0.1, gamma: float = 0.95
    ) -> "HazardGridworld":
        rows = tuple(layout)
        if not rows or len({len(r) for r in rows}) != 1:
            raise ConfigError("layout must be a non-empty list of equally long strings")
        if not 0.0 <= slip < 1.0:
            raise ConfigError(f"slip must be in [0, 1), got {slip}")
        chars = np.array([list(r) for r in rows])
        if set(np.unique(chars)) - set("SGH#."):
            raise ConfigError(f"layout characters must be S, G, H, # or ., got {sorted(set(np.unique(chars)))}")
        if not (chars == "S").any() or not (chars == "G").any():
            raise ConfigError("layout needs at least one start 'S' and one goal 'G'")
        cells = np.argwhere(chars != "#")
        index = -np.ones(chars.shape, dtype=np.int64)
        index[cells[:, 0], cells[:, 1]] = np.arange(len(cells))
        kinds = chars[cells[:, 0], cells[:, 1]]
        S, A = len(cells), len(MOVES)
        # deterministic successor of each (s, a): the move, or stay if blocked
        target = cells[:, None, :] + MOVES[None, :, :]
        inside = (
            (target[..., 0] >= 0)
            & (target[..., 0] < chars.shape[0])
            & (target[..., 1] >= 0)
            & (target[..., 1] < chars.shape[1])
        )
        tr, tc = np.clip(target[..., 0], 0, chars.shape[0] - 1), np.clip(target[..., 1], 0, chars.shape[1] - 1)
        succ = np.where(inside & (index[tr, tc] >= 0), index[tr, tc], np.arange(S)[:, None])
        move = np.zeros((S, A, S))
        move[np.arange(S)[:, None], np.arange(A)[None, :], succ] = 1.0
        P = (1.0 - slip) * move + slip * move.mean(axis=1, keepdims=True)
        goal, hazard = kinds == "G", kinds == "H"
        P[goal] = 0.0
        P[goal, :, goal] = 1.0
        r = P[:, :, goal].sum(-1)
        r[goal] = 0.0
        cost = P[:, :, hazard].sum(-1)
        cost[goal] = 0.0
        mu0 = (kinds == "S").astype(np.float64)
        mdp = TabularMDP(P, r, gamma, mu0=mu0 / mu0.sum(), terminal=goal, name="safety/HazardGrid")
        return cls(layout=rows, cells=cells, mdp=mdp, cost=cost, hazard=hazard, goal=goal)


class HazardGridVectorEnv(BatchedCMDP):
    """``num_envs`` copies of a :class:`HazardGridworld`, sampled from its exact model."""

    cost_keys = ("cost", "cost_hazard")

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int | None = 50,
        layout: Sequence[str] = DEFAULT_LAYOUT,
        slip: float = 0.1,
        gamma: float = 0.95,
    ):
        self.world = HazardGridworld.from_layout(layout, slip, gamma)
        mdp = self.world.mdp
        self._cdf = np.cumsum(mdp.P, axis=-1)
        self._cdf[..., -1] = 1.0
        self._mu0_cdf = np.cumsum(mdp.mu0)
        self.single_observation_space = gym.spaces.Discrete(mdp.n_states)
        self.single_action_space = gym.spaces.Discrete(mdp.n_actions)
        self.s = np.zeros(num_envs, dtype=np.int64)
        super().__init__(num_envs, max_episode_steps)

    def _reset_envs(self, mask: np.ndarray) -> None:
        u = self.np_random.random(int(mask.sum()))
        self.s[mask] = np.minimum((u[:, None] >= self._mu0_cdf[None]).sum(1), len(self._mu0_cdf) - 1)

    def _transition(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        u = self.np_random.random(self.num_envs)
        nxt = (u[:, None] >= self._cdf[self.s, actions]).sum(1)
        self.s = np.minimum(nxt, self.world.mdp.n_states - 1)
        reward = self.world.goal[self.s].astype(np.float64)
        cost = self.world.hazard[self.s].astype(np.float64)
        return reward, self.world.goal[self.s].copy(), {"cost": cost, "cost_hazard": cost}

    def _observe(self) -> np.ndarray:
        return self.s.copy()


class HazardGridEnv(SingleCMDPEnv):
    """One :class:`HazardGridVectorEnv` as a ``gymnasium.Env`` (id ``safety/HazardGrid-v0``)."""

    batched_cls = HazardGridVectorEnv
