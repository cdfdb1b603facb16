r"""Gridworlds from text layouts: episodic tabular MDPs for dynamic programming and inverse RL.

A layout is rows of equal length, one character a cell::

    S..#
    .H.G

* ``S`` a start cell (the initial distribution is uniform over them; without one, over every
  free cell), ``.`` or ``F`` a free cell, ``#`` a wall (never entered);
* ``G`` a goal and ``H`` a hole: **terminal** cells — entering one ends the episode. They are
  absorbing with zero reward in the MDP (``mdp.terminal``), so every value is that of the episodic
  task. (Wall cells, never entered, are marked terminal too.)

Actions are FrozenLake's: 0 left, 1 down, 2 right, 3 up. With probability ``1 - slip`` the agent
moves as intended, with ``slip / 2`` to each side (perpendicular); a move into a wall or off the
grid leaves it in place. ``slip = 2/3`` is FrozenLake's slippery ice. The reward of a step from a
live cell s into s' is

.. math::
    r(s,a,s') = r_{\text{step}} + r_{\text{goal}}\,\mathbf 1[s'=G] + r_{\text{hole}}\,\mathbf 1[s'=H],

and the MDP holds its expectation :math:`r(s,a) = \sum_{s'}p(s'|s,a)\,r(s,a,s')`. States are cells
in row-major order (walls included, never reached), ``state = row * n_cols + col``.

>>> world = gridworld("S..\n.#G", gamma=0.9)
>>> from core_rl.tabular import value_iteration
>>> print(world.render_policy(value_iteration(world.mdp).policy))
→→↓
↑#G
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core_rl.common.config import format_validation_error
from core_rl.common.errors import ConfigError
from core_rl.tabular.mdp import TabularMDP

#: FrozenLake's action order: (row, col) moves of left, down, right, up
MOVES = np.array([[0, -1], [1, 0], [0, 1], [-1, 0]])
ACTION_NAMES = ("left", "down", "right", "up")
ARROWS = "←↓→↑"
CELLS = "S.F#GH"

#: built-in layouts (FrozenLake's maps are gymnasium's, so ``slip=2/3`` is FrozenLake itself)
LAYOUTS: dict[str, str] = {
    "frozenlake4x4": "SFFF\nFHFH\nFFFH\nHFFG",
    "frozenlake8x8": ("SFFFFFFF\nFFFFFFFF\nFFFHFFFF\nFFFFFHFF\nFFFHFFFF\nFHHFFFHF\nFHFFHFHF\nFFFHFFFG"),
    "cliff": "....\n....\nSHHG",
    "bridge": "H...H\nS...G\nH...H",
    "rooms": "S..#...\n...#...\n.......\n...#...\n...#..G",
}


class GridworldConfig(BaseModel):
    """A gridworld: its layout (a name from ``LAYOUTS`` or the rows themselves) and dynamics."""

    model_config = ConfigDict(extra="forbid")

    layout: str = Field(..., min_length=1, description="A name in LAYOUTS or rows separated by newlines.")
    slip: float = Field(0.0, ge=0.0, le=1.0, description="Probability of moving perpendicular (half each side).")
    gamma: float = Field(0.99, gt=0.0, le=1.0, description="Discount γ.")
    step_reward: float = Field(0.0, description="Reward of every step (a negative one is a cost of time).")
    goal_reward: float = Field(1.0, description="Reward of entering a goal cell G.")
    hole_reward: float = Field(0.0, description="Reward of entering a hole cell H.")
    horizon: int | None = Field(None, ge=1, description="Optional episode length (decisions).")


@dataclass(frozen=True)
class Gridworld:
    """A built gridworld: ``mdp`` (a :class:`TabularMDP` with terminal goal and hole cells),
    ``grid`` (rows of cell characters), ``config``."""

    mdp: TabularMDP
    grid: tuple[str, ...]
    config: GridworldConfig

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.grid), len(self.grid[0])

    def state(self, row: int, col: int) -> int:
        """The state of cell (row, col)."""
        n_rows, n_cols = self.shape
        if not (0 <= row < n_rows and 0 <= col < n_cols):
            raise ConfigError(f"cell ({row}, {col}) is outside the {n_rows}x{n_cols} grid")
        return row * n_cols + col

    def cell(self, state: int) -> tuple[int, int]:
        """The (row, col) of ``state``."""
        return divmod(int(state), self.shape[1])

    def cells(self, kind: str) -> np.ndarray:
        """The states whose cell character is ``kind`` (e.g. ``"G"``)."""
        return np.flatnonzero(np.array(list("".join(self.grid))) == kind)

    def one_hot_features(self) -> np.ndarray:
        """(S, S) identity: a reward feature per cell (the most expressive state reward)."""
        return np.eye(self.mdp.n_states)

    def cell_type_features(self) -> np.ndarray:
        """(S, 3) indicators of free (``S``, ``.``, ``F``), goal and hole cells."""
        flat = np.array(list("".join(self.grid)))
        return np.stack([np.isin(flat, list("S.F")), flat == "G", flat == "H"], axis=1).astype(np.float64)

    def render(self, values: ArrayLike, fmt: str = "{:6.2f}") -> str:
        """A per-state array (e.g. V) laid out on the grid; walls shown as ``#``."""
        v = np.asarray(values, dtype=np.float64).reshape(self.shape)
        width = len(fmt.format(0.0))
        return "\n".join(
            " ".join("#".rjust(width) if ch == "#" else fmt.format(v[i, j]) for j, ch in enumerate(row))
            for i, row in enumerate(self.grid)
        )

    def render_policy(self, policy: ArrayLike) -> str:
        """Greedy actions (S,) or a policy (S, A) as arrows; walls and terminal cells as their letter."""
        arr = np.asarray(policy)
        actions = arr.argmax(axis=1) if arr.ndim == 2 else arr.astype(np.int64)
        n_cols = self.shape[1]
        return "\n".join(
            "".join(ch if ch in "#GH" else ARROWS[actions[i * n_cols + j]] for j, ch in enumerate(row))
            for i, row in enumerate(self.grid)
        )


def _parse(layout: str) -> tuple[str, ...]:
    text = LAYOUTS.get(layout, layout)
    rows = tuple(line.strip() for line in text.strip().splitlines() if line.strip())
    if not rows:
        raise ConfigError("gridworld field 'layout': empty layout")
    if len({len(r) for r in rows}) != 1:
        raise ConfigError(f"gridworld field 'layout': rows must have equal lengths, got {[len(r) for r in rows]}")
    bad = sorted(set("".join(rows)) - set(CELLS))
    if bad:
        hint = "" if "\n" in layout or len(rows) > 1 else f" (or a built-in layout: {sorted(LAYOUTS)})"
        raise ConfigError(f"gridworld field 'layout': unknown cell(s) {bad}; use one of {list(CELLS)}{hint}")
    if not any(ch in "S.F" for ch in "".join(rows)):
        raise ConfigError("gridworld field 'layout': no free or start cell")
    return rows


def gridworld(layout: str, **settings: object) -> Gridworld:
    """Build the gridworld of ``layout`` (a name in :data:`LAYOUTS` or rows; see the module docstring)
    with :class:`GridworldConfig` ``settings`` (``slip``, ``gamma``, ``step_reward``, ``goal_reward``,
    ``hole_reward``, ``horizon``)."""
    try:
        cfg = GridworldConfig(layout=layout, **settings)  # type: ignore[arg-type]
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, prefix="gridworld")) from None
    grid = _parse(cfg.layout)
    n_rows, n_cols = len(grid), len(grid[0])
    flat = np.array(list("".join(grid)))
    S, A = flat.size, len(MOVES)
    rows, cols = np.divmod(np.arange(S), n_cols)
    # where each (state, direction) move lands: blocked moves stay in place
    dest = np.empty((S, A), dtype=np.int64)
    for d, (dr, dc) in enumerate(MOVES):
        r2, c2 = rows + dr, cols + dc
        inside = (r2 >= 0) & (r2 < n_rows) & (c2 >= 0) & (c2 < n_cols)
        target = np.where(inside, np.clip(r2, 0, n_rows - 1) * n_cols + np.clip(c2, 0, n_cols - 1), 0)
        dest[:, d] = np.where(inside & (flat[target] != "#"), target, np.arange(S))
    # intended direction a with 1 - slip, each perpendicular (a ± 1 mod 4) with slip / 2
    P = np.zeros((S, A, S))
    s_idx = np.arange(S)[:, None]
    for offset, prob in ((0, 1.0 - cfg.slip), (1, cfg.slip / 2), (-1, cfg.slip / 2)):
        direction = (np.arange(A) + offset) % A
        np.add.at(P, (s_idx, np.arange(A)[None], dest[:, direction]), prob)
    entry = cfg.goal_reward * (flat == "G") + cfg.hole_reward * (flat == "H")
    r = cfg.step_reward + P @ entry
    # goal and hole cells end the episode: absorbing with zero reward. Walls are never entered (nor
    # started in); they are marked terminal too, so that no unreachable non-terminal absorbing state
    # makes γ = 1 values undefined.
    terminal = np.isin(flat, ["G", "H", "#"])
    P[terminal] = 0.0
    P[terminal, :, terminal] = 1.0
    r[terminal] = 0.0
    starts = flat == "S"
    if not starts.any():
        starts = np.isin(flat, [".", "F"])
    mu0 = starts / starts.sum()
    name = f"gridworld:{cfg.layout}" if cfg.layout in LAYOUTS else "gridworld"
    mdp = TabularMDP(P, r, cfg.gamma, horizon=cfg.horizon, mu0=mu0, terminal=terminal, name=name)
    return Gridworld(mdp=mdp, grid=grid, config=cfg)


__all__ = ["ACTION_NAMES", "LAYOUTS", "MOVES", "Gridworld", "GridworldConfig", "gridworld"]
