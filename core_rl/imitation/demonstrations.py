r"""Demonstration tables: the data behavior cloning and DAgger learn from.

Imitation learning (notes 9/5–9/7) fits π_θ(a_t|o_t) to a data set D = {(o_t, a_t)} recorded from
an expert π*. Here D is a pandas DataFrame (one row per time step, stored as parquet) with this
schema, and :func:`load_demonstrations` checks it against the env's spaces:

=================  =========================================================================
column             meaning
=================  =========================================================================
``episode``        integer id of the episode the step belongs to (any non-negative ints)
``step``           integer time index t within the episode (0, 1, …; unique per episode)
``obs``            a ``Discrete(n)`` observation: one integer in [0, n)
``obs_0…obs_{d-1}`` a ``Box`` observation flattened in C order, d = prod(shape), numbers
``action``         a ``Discrete(n)`` action: one integer in [0, n)
``action_0…``      a ``Box`` action flattened in C order, numbers within the space's bounds
``reward``         optional: the reward r(s_t, a_t), a number
=================  =========================================================================

Any other column is kept in the frame and ignored. A table that breaks the schema raises one
:class:`DataError` that names the column, the problem and the first bad row (0-based position in
the table).

**Demonstrations as arrays** (``.npz``, e.g. ``np.savez(path, obs=..., actions=...)``): one row per
time step, episodes one after the other.

==================  ========================================================================
field               meaning
==================  ========================================================================
``obs``             (N,) integers for a ``Discrete`` observation space, (N, \*shape) for a ``Box``
``actions``         (N,) integers for ``Discrete`` actions, (N, \*shape) numbers for a ``Box``
``rewards``         optional (N,) numbers
``episode_starts``  optional (N,) bools, True on the first step of each episode (default: one
                    episode); row 0 must start one
``next_obs``        optional, shaped like ``obs``: the observation after each step (inverse RL
                    reads the state an episode ends in from it)
==================  ========================================================================

Other fields are ignored. A bad file raises one :class:`DataError` naming the file, the field and
the problem; the values are then checked like a table's (ranges, bounds, NaN).

:func:`rollout` runs any *actor* — a callable ``obs batch -> action batch`` or an object with
``predict`` (a core_rl agent, an imitation policy) — in a vector env and records the table;
:func:`collect_demonstrations` records an expert that way and writes parquet. An actor that keeps
memory across steps (a non-Markovian expert, a recurrent policy) may define ``reset(mask)``: it is
called with a boolean mask of the envs whose episode starts, before the actor sees their first
observation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
import torch

from core_rl.common.envs import EnvLike, make_env, make_vec_env
from core_rl.common.errors import DeepRLError, SpaceError

Actor = Callable[[np.ndarray], Any] | Any

__all__ = [
    "DataError",
    "Demonstrations",
    "load_demonstrations",
    "collect_demonstrations",
    "rollout",
    "evaluate_actor",
    "observation_columns",
    "action_columns",
    "spaces_of",
]


class DataError(DeepRLError, ValueError):
    """A demonstration table is malformed: a column is missing, mistyped, NaN or out of range."""


# ---- schema -----------------------------------------------------------------------------------
def _check_space(space: gym.Space, what: str) -> None:
    if not isinstance(space, (gym.spaces.Box, gym.spaces.Discrete)):
        raise SpaceError(f"demonstrations support Box or Discrete {what} spaces, got {space}")


def _columns(space: gym.Space, prefix: str) -> list[str]:
    _check_space(space, prefix)
    if isinstance(space, gym.spaces.Discrete):
        return [prefix]
    return [f"{prefix}_{i}" for i in range(int(np.prod(space.shape)))]


def observation_columns(space: gym.Space) -> list[str]:
    """``["obs"]`` for Discrete, ``["obs_0", …, "obs_{d-1}"]`` for Box (flattened)."""
    return _columns(space, "obs")


def action_columns(space: gym.Space) -> list[str]:
    """``["action"]`` for Discrete, ``["action_0", …]`` for Box (flattened)."""
    return _columns(space, "action")


def spaces_of(env: EnvLike | tuple[gym.Space, gym.Space]) -> tuple[gym.Space, gym.Space]:
    """(single observation space, single action space) of an env id, Env, factory or vector env."""
    if isinstance(env, tuple):
        return env[0], env[1]
    if isinstance(env, gym.vector.VectorEnv):
        return env.single_observation_space, env.single_action_space
    if isinstance(env, gym.Env):
        return env.observation_space, env.action_space
    made = make_env(env) if isinstance(env, str) else env()
    try:
        return made.observation_space, made.action_space
    finally:
        made.close()


# ---- the validated data set ---------------------------------------------------------------------
@dataclass
class Demonstrations:
    """A validated demonstration table as tensors, rows sorted by (episode, step).

    ``observations`` is ``[N, *obs_shape]`` float32 (Box) or ``[N]`` int64 (Discrete);
    ``actions`` is ``[N, *action_shape]`` float32 (Box) or ``[N]`` int64 (Discrete).
    """

    observations: torch.Tensor
    actions: torch.Tensor
    episodes: torch.Tensor
    steps: torch.Tensor
    rewards: torch.Tensor | None
    observation_space: gym.Space = field(repr=False)
    action_space: gym.Space = field(repr=False)
    #: the observation after each step (from an ``.npz`` file's ``next_obs``), else None
    next_observations: torch.Tensor | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @property
    def n_episodes(self) -> int:
        return int(torch.unique(self.episodes).numel())

    def to_frame(self) -> pd.DataFrame:
        data: dict[str, Any] = {"episode": self.episodes.numpy(), "step": self.steps.numpy()}
        obs = self.observations.reshape(len(self), -1).numpy()
        for i, col in enumerate(observation_columns(self.observation_space)):
            data[col] = obs[:, i]
        act = self.actions.reshape(len(self), -1).numpy()
        for i, col in enumerate(action_columns(self.action_space)):
            data[col] = act[:, i]
        if self.rewards is not None:
            data["reward"] = self.rewards.numpy()
        return pd.DataFrame(data)

    def to_parquet(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.to_frame().to_parquet(path, index=False)
        return path

    def concat(self, other: "Demonstrations") -> "Demonstrations":
        """D ∪ D': the rows of both, ``other``'s episode ids shifted past this one's."""
        offset = int(self.episodes.max()) + 1 if len(self) else 0
        rewards = (
            torch.cat([self.rewards, other.rewards]) if self.rewards is not None and other.rewards is not None else None
        )
        return Demonstrations(
            torch.cat([self.observations, other.observations]),
            torch.cat([self.actions, other.actions]),
            torch.cat([self.episodes, other.episodes - int(other.episodes.min()) + offset]),
            torch.cat([self.steps, other.steps]),
            rewards,
            self.observation_space,
            self.action_space,
        )

    def sequences(self, seq_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Episodes cut into windows of ``seq_len`` steps (whole episodes if None), zero-padded.

        Returns ``(obs [C, L, ...], actions [C, L, ...], mask [C, L])``; each window starts at an
        episode start or where the previous window of the same episode ended.
        """
        n = len(self)
        episodes = self.episodes
        new_episode = torch.ones(n, dtype=torch.bool)
        new_episode[1:] = episodes[1:] != episodes[:-1]
        episode_index = torch.cumsum(new_episode.long(), 0) - 1
        starts = torch.nonzero(new_episode).squeeze(-1)
        position = torch.arange(n) - starts[episode_index]  # t within the episode
        if seq_len is None:
            lengths = torch.bincount(episode_index)
            seq_len = int(lengths.max())
        window = position // seq_len
        # a window id per row, consecutive over the whole table
        new_window = new_episode.clone()
        new_window[1:] |= window[1:] != window[:-1]
        window_id = torch.cumsum(new_window.long(), 0) - 1
        offset = position % seq_len
        c = int(window_id[-1]) + 1 if n else 0
        obs = torch.zeros((c, seq_len, *self.observations.shape[1:]), dtype=self.observations.dtype)
        act = torch.zeros((c, seq_len, *self.actions.shape[1:]), dtype=self.actions.dtype)
        mask = torch.zeros((c, seq_len), dtype=torch.bool)
        obs[window_id, offset] = self.observations
        act[window_id, offset] = self.actions
        mask[window_id, offset] = True
        return obs, act, mask


# ---- validation ---------------------------------------------------------------------------------
def _first(bad: np.ndarray) -> int:
    return int(np.flatnonzero(bad)[0])


def _numeric(df: pd.DataFrame, col: str, integer: bool, expected: str) -> np.ndarray:
    """The column as a float64 array, or a DataError naming the first row that is not a number."""
    s = df[col]
    if pd.api.types.is_bool_dtype(s.dtype):
        raise DataError(f"demonstrations column '{col}' has dtype bool, expected {expected}; first bad row 0")
    if not pd.api.types.is_numeric_dtype(s.dtype):
        coerced = pd.to_numeric(s, errors="coerce")
        bad = (coerced.isna() & s.notna()).to_numpy() | s.map(lambda v: isinstance(v, (bool, np.bool_))).to_numpy()
        if bad.any():
            row = _first(bad)
            raise DataError(
                f"demonstrations column '{col}' has dtype {s.dtype}, expected {expected}; "
                f"first bad row {row} holds {s.iloc[row]!r}"
            )
        s = coerced
    values = s.to_numpy(dtype=np.float64, na_value=np.nan)
    for bad, what in ((np.isnan(values), "NaN/missing"), (np.isinf(values), "infinite")):
        if bad.any():
            raise DataError(
                f"demonstrations column '{col}' has {int(bad.sum())} {what} value(s), expected "
                f"{expected}; first bad row {_first(bad)}"
            )
    if integer:
        frac = values != np.round(values)
        if frac.any():
            row = _first(frac)
            raise DataError(
                f"demonstrations column '{col}' must hold integers ({expected}); "
                f"first bad row {row} holds {values[row]:g}"
            )
    return values


def _in_range(values: np.ndarray, low: np.ndarray | float, high: np.ndarray | float, col: str, what: str) -> None:
    bad = (values < low) | (values > high)
    if bad.any():
        row = _first(bad)
        lo = low if np.isscalar(low) else float(np.asarray(low).flat[0])
        hi = high if np.isscalar(high) else float(np.asarray(high).flat[0])
        raise DataError(
            f"demonstrations column '{col}' is outside the {what} [{lo:g}, {hi:g}]; "
            f"first bad row {row} holds {values[row]:g}"
        )


def _short(space: gym.Space) -> str:
    return f"Box{tuple(space.shape)}" if isinstance(space, gym.spaces.Box) else str(space)


def _space_matrix(df: pd.DataFrame, space: gym.Space, prefix: str, check_bounds: bool) -> np.ndarray:
    cols = _columns(space, prefix)
    kind = "observation" if prefix == "obs" else prefix
    name = _short(space)
    present = [c for c in cols if c in df.columns]
    if len(present) < len(cols):
        missing = [c for c in cols if c not in df.columns]
        raise DataError(
            f"demonstrations table is missing column '{missing[0]}' ({len(missing)} of the "
            f"{len(cols)} columns {cols[0]}…{cols[-1]} of the {kind} space {name} are missing)"
            if len(cols) > 1
            else f"demonstrations table is missing column '{missing[0]}' (needed for the {kind} space {name})"
        )
    # a column past the space's size (obs_4 for a 4-dim space) means the table's shape does not match
    extra = sorted(
        (
            c
            for c in df.columns
            if isinstance(c, str) and c.startswith(prefix + "_") and c[len(prefix) + 1 :].isdigit() and c not in cols
        ),
        key=lambda c: int(c[len(prefix) + 1 :]),
    )
    if extra:
        raise DataError(
            f"demonstrations column '{extra[0]}' does not fit the {kind} space {name} "
            f"(expected exactly {len(cols)} column(s) {cols[0]}…{cols[-1]}); shape mismatch from row 0"
        )
    if isinstance(space, gym.spaces.Discrete):
        expected = f"integers in [{space.start}, {space.start + space.n - 1}] for {name}"
        values = _numeric(df, cols[0], integer=True, expected=expected)
        _in_range(values, space.start, space.start + space.n - 1, cols[0], f"range of the {kind} space {name}")
        return values[:, None]
    matrix = np.empty((len(df), len(cols)))
    low, high = space.low.reshape(-1).astype(np.float64), space.high.reshape(-1).astype(np.float64)
    for i, col in enumerate(cols):
        matrix[:, i] = _numeric(df, col, integer=False, expected=f"numbers for the {kind} space {name}")
        if check_bounds:
            tol = 1e-6 * np.maximum(1.0, np.abs([low[i], high[i]])).max()
            _in_range(matrix[:, i], low[i] - tol, high[i] + tol, col, f"bounds of the {kind} space")
    return matrix


def load_demonstrations(
    source: str | Path | pd.DataFrame | Demonstrations, observation_space: gym.Space, action_space: gym.Space
) -> Demonstrations:
    """Read (parquet or csv path) or take a DataFrame, check it against the spaces, return tensors.

    Raises :class:`DataError` naming the column, the problem and the first bad row on a missing
    column, a non-numeric or non-integer value, NaN/inf, a value outside a Discrete range or the
    action bounds, a column that does not fit the space's shape, or a duplicate (episode, step).
    """
    _check_space(observation_space, "observation")
    _check_space(action_space, "action")
    if isinstance(source, Demonstrations):
        source = source.to_frame()
    if isinstance(source, (str, Path)) and Path(source).suffix == ".npz":
        return _load_npz(Path(source), observation_space, action_space)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise DataError(f"demonstrations file '{path}' does not exist")
        try:
            df = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
        except Exception as exc:  # pyarrow / csv parser errors
            raise DataError(f"demonstrations file '{path}' cannot be read: {exc}") from None
    elif isinstance(source, pd.DataFrame):
        df = source
    else:
        raise DataError(f"demonstrations must be a DataFrame or a parquet/csv path, got {type(source).__name__}")
    if len(df) == 0:
        raise DataError("demonstrations table is empty (no rows)")
    for col in ("episode", "step"):
        if col not in df.columns:
            raise DataError(f"demonstrations table is missing column '{col}' (schema: episode, step, obs…, action…)")
    episodes = _numeric(df, "episode", integer=True, expected="integer episode ids")
    steps = _numeric(df, "step", integer=True, expected="integer time steps")
    for col, v in (("episode", episodes), ("step", steps)):
        if (v < 0).any():
            raise DataError(f"demonstrations column '{col}' must be non-negative; first bad row {_first(v < 0)}")
    obs = _space_matrix(df, observation_space, "obs", check_bounds=False)
    act = _space_matrix(df, action_space, "action", check_bounds=True)
    rewards = _numeric(df, "reward", integer=False, expected="numbers") if "reward" in df.columns else None

    key = pd.DataFrame({"e": episodes.astype(np.int64), "s": steps.astype(np.int64)})
    dup = key.duplicated().to_numpy()
    if dup.any():
        row = _first(dup)
        raise DataError(
            f"demonstrations columns 'episode', 'step' repeat (episode {int(episodes[row])}, "
            f"step {int(steps[row])}); first bad row {row}"
        )
    order = np.lexsort((steps, episodes))

    if isinstance(observation_space, gym.spaces.Discrete):
        obs_t = torch.as_tensor(obs[order, 0], dtype=torch.int64)
    else:
        obs_t = torch.as_tensor(obs[order], dtype=torch.float32).reshape(-1, *observation_space.shape)
    if isinstance(action_space, gym.spaces.Discrete):
        act_t = torch.as_tensor(act[order, 0], dtype=torch.int64)
    else:
        act_t = torch.as_tensor(act[order], dtype=torch.float32).reshape(-1, *action_space.shape)
    return Demonstrations(
        obs_t,
        act_t,
        torch.as_tensor(episodes[order], dtype=torch.int64),
        torch.as_tensor(steps[order], dtype=torch.int64),
        None if rewards is None else torch.as_tensor(rewards[order], dtype=torch.float32),
        observation_space,
        action_space,
    )


def _npz_field(data: Any, name: str, path: Path) -> np.ndarray:
    if name not in data.files:
        raise DataError(
            f"demonstrations file '{path}' has no field '{name}' (fields: {sorted(data.files)}; "
            "needed: obs, actions; optional: rewards, episode_starts, next_obs)"
        )
    try:
        return np.asarray(data[name])
    except ValueError as exc:  # object arrays (pickled) are refused
        raise DataError(f"demonstrations file '{path}' field '{name}' cannot be read: {exc}") from None


def _npz_shape(values: np.ndarray, space: gym.Space, name: str, path: Path, n: int | None) -> None:
    shape = () if isinstance(space, gym.spaces.Discrete) else tuple(space.shape)
    flat_ok = len(shape) == 1 and values.ndim == 1 and shape == (1,)
    if values.ndim != 1 + len(shape) or tuple(values.shape[1:]) != shape:
        if not flat_ok:
            raise DataError(
                f"demonstrations file '{path}' field '{name}' has shape {values.shape}, expected "
                f"(N{''.join(f', {d}' for d in shape)}) for the space {_short(space)}"
            )
    if n is not None and values.shape[0] != n:
        raise DataError(f"demonstrations file '{path}' field '{name}' has {values.shape[0]} rows, 'obs' has {n}")
    if values.dtype == np.bool_ or not np.issubdtype(values.dtype, np.number):
        raise DataError(f"demonstrations file '{path}' field '{name}' has dtype {values.dtype}, expected numbers")


def _load_npz(path: Path, observation_space: gym.Space, action_space: gym.Space) -> Demonstrations:
    """Read the ``.npz`` layout of the module docstring into a validated :class:`Demonstrations`."""
    if not path.is_file():
        raise DataError(f"demonstrations file '{path}' does not exist")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # not a zip / not npz
        raise DataError(f"demonstrations file '{path}' cannot be read as .npz: {exc}") from None
    with data:
        obs = _npz_field(data, "obs", path)
        if obs.ndim == 0 or obs.shape[0] == 0:
            raise DataError(f"demonstrations file '{path}' field 'obs' is empty (no rows)")
        n = int(obs.shape[0])
        _npz_shape(obs, observation_space, "obs", path, None)
        actions = _npz_field(data, "actions", path)
        _npz_shape(actions, action_space, "actions", path, n)
        optional = {k: np.asarray(data[k]) for k in ("rewards", "episode_starts", "next_obs") if k in data.files}
    if "next_obs" in optional:
        _npz_shape(optional["next_obs"], observation_space, "next_obs", path, n)
    starts = optional.get("episode_starts")
    if starts is None:
        starts = np.zeros(n, dtype=bool)
        starts[0] = True
    if starts.shape != (n,) or not (starts.dtype == np.bool_ or np.isin(starts, (0, 1)).all()):
        raise DataError(
            f"demonstrations file '{path}' field 'episode_starts' must be {n} bools (True where an "
            f"episode begins), got dtype {starts.dtype} shape {starts.shape}"
        )
    starts = starts.astype(bool)
    if not starts[0]:
        raise DataError(f"demonstrations file '{path}' field 'episode_starts': row 0 must start an episode")
    episode = np.cumsum(starts) - 1
    first_row = np.flatnonzero(starts)[episode]
    frame: dict[str, Any] = {"episode": episode, "step": np.arange(n) - first_row}
    for i, col in enumerate(observation_columns(observation_space)):
        frame[col] = obs.reshape(n, -1)[:, i]
    for i, col in enumerate(action_columns(action_space)):
        frame[col] = actions.reshape(n, -1)[:, i]
    if "rewards" in optional:
        rewards = optional["rewards"]
        if rewards.shape != (n,):
            raise DataError(f"demonstrations file '{path}' field 'rewards' has shape {rewards.shape}, expected ({n},)")
        frame["reward"] = rewards
    fields = {"obs": "obs", "action": "actions", "reward": "rewards"}
    try:
        demos = load_demonstrations(pd.DataFrame(frame), observation_space, action_space)
        next_obs = None
        if "next_obs" in optional:
            nxt = optional["next_obs"].reshape(n, -1)
            table = pd.DataFrame({c: nxt[:, i] for i, c in enumerate(observation_columns(observation_space))})
            fields["obs"] = "next_obs"
            values = _space_matrix(table, observation_space, "obs", check_bounds=False)
            next_obs = (
                torch.as_tensor(values[:, 0], dtype=torch.int64)
                if isinstance(observation_space, gym.spaces.Discrete)
                else torch.as_tensor(values, dtype=torch.float32).reshape(-1, *observation_space.shape)
            )
    except DataError as err:
        message = str(err)
        column = message.split("'")[1] if "'" in message else ""
        name = fields.get(column.split("_")[0] if column.split("_")[-1].isdigit() else column, column)
        raise DataError(f"demonstrations file '{path}' field '{name}': {message}") from None
    demos.next_observations = next_obs  # rows keep the file's order: episodes in sequence
    return demos


# ---- recording ------------------------------------------------------------------------------------
def _as_call(actor: Actor) -> Callable[[np.ndarray], Any]:
    return actor.predict if hasattr(actor, "predict") else actor


def _reset(actor: Actor | None, mask: np.ndarray) -> None:
    hook = getattr(actor, "reset", None)
    if actor is not None and callable(hook) and not isinstance(actor, gym.Env):
        hook(mask)


def _env_actions(actions: Any, space: gym.Space, n: int) -> np.ndarray:
    a = np.asarray(actions.detach().cpu().numpy() if isinstance(actions, torch.Tensor) else actions)
    if isinstance(space, gym.spaces.Discrete):
        return a.reshape(n).astype(np.int64)
    a = a.reshape(n, *space.shape).astype(space.dtype)
    return np.clip(a, space.low, space.high)


def _random_actions(space: gym.Space, rng: np.random.Generator, n: int) -> np.ndarray:
    """n uniform actions (Box: uniform within the bounds, which must then be finite)."""
    if isinstance(space, gym.spaces.Discrete):
        return space.start + rng.integers(0, space.n, size=n)
    if not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
        raise SpaceError(f"action_noise needs a bounded action space, got {space}")
    return rng.uniform(space.low, space.high, size=(n, *space.shape)).astype(space.dtype)


def rollout(
    actor: Actor,
    env: EnvLike,
    n_episodes: int | None = None,
    n_steps: int | None = None,
    seed: int = 0,
    n_envs: int | None = None,
    labeler: Actor | None = None,
    action_noise: float = 0.0,
) -> pd.DataFrame:
    """Run ``actor`` and record a demonstration table (schema above).

    Stops after ``n_episodes`` whole episodes (each env runs its share, so short episodes are
    not favoured) or after ``n_steps`` recorded steps (partial episodes kept). ``action_noise`` = ε
    replaces the actor's action by a uniformly random one with probability ε on each step (a
    learner that errs with probability ε, the notes' model π_θ(a ≠ π*(s)|s) ≤ ε). With ``labeler``
    (DAgger's expert), the ``action`` columns hold the labeler's action for every visited state,
    ``policy_action…`` the actor's own choice and ``executed_action…`` what was run (after noise).
    """
    if (n_episodes is None) == (n_steps is None):
        raise DataError("rollout needs exactly one of n_episodes and n_steps")
    if (n_episodes is not None and n_episodes < 1) or (n_steps is not None and n_steps < 1):
        raise DataError(f"rollout needs a positive count, got n_episodes={n_episodes}, n_steps={n_steps}")
    if isinstance(env, gym.vector.VectorEnv):
        vec = make_vec_env(env)
    else:
        n_envs = n_envs or (min(n_episodes, 8) if n_episodes is not None else 8)
        vec = make_vec_env(env, n_envs)
    n = vec.num_envs
    obs_space, act_space = vec.single_observation_space, vec.single_action_space
    _check_space(obs_space, "observation")
    _check_space(act_space, "action")
    noise_rng = np.random.default_rng(seed + 1)
    act_call = _as_call(actor)
    label_call = _as_call(labeler) if labeler is not None else None

    if n_episodes is not None:
        quota = np.full(n, n_episodes // n) + (np.arange(n) < n_episodes % n)
    else:
        quota = np.full(n, np.iinfo(np.int64).max)
    episode_id = np.where(quota > 0, np.arange(n), -1)
    next_id = n
    t = np.zeros(n, dtype=np.int64)
    obs, _ = vec.reset(seed=seed)
    starting = np.ones(n, dtype=bool)
    rec_obs: list[np.ndarray] = []
    rec_act: list[np.ndarray] = []
    rec_exec: list[np.ndarray] = []
    rec_chosen: list[np.ndarray] = []
    rec_rew: list[np.ndarray] = []
    rec_ep: list[np.ndarray] = []
    rec_t: list[np.ndarray] = []
    recorded = 0
    try:
        while True:
            active = episode_id >= 0
            if not active.any() or (n_steps is not None and recorded >= n_steps):
                break
            _reset(actor, starting)
            if labeler is not None:
                _reset(labeler, starting)
            chosen = _env_actions(act_call(obs), act_space, n)
            executed = chosen
            if action_noise > 0:
                flip = noise_rng.random(n) < action_noise
                if flip.any():
                    random_actions = _random_actions(act_space, noise_rng, n)
                    executed = np.where(flip.reshape(-1, *([1] * (chosen.ndim - 1))), random_actions, chosen)
            label = _env_actions(label_call(obs), act_space, n) if label_call is not None else executed
            next_obs, reward, term, trunc, _ = vec.step(executed)
            rec_obs.append(np.asarray(obs)[active])
            rec_act.append(label[active])
            rec_exec.append(executed[active])
            rec_chosen.append(chosen[active])
            rec_rew.append(np.asarray(reward, dtype=np.float64)[active])
            rec_ep.append(episode_id[active])
            rec_t.append(t[active])
            recorded += int(active.sum())
            t += 1
            done = np.asarray(term | trunc)
            starting = done
            t[done] = 0
            for i in np.flatnonzero(done & active):
                quota[i] -= 1
                if quota[i] > 0:
                    episode_id[i] = next_id
                    next_id += 1
                else:
                    episode_id[i] = -1
            obs = next_obs
    finally:
        if not isinstance(env, gym.vector.VectorEnv):
            vec.close()
    all_obs = np.concatenate(rec_obs).reshape(recorded, -1)
    all_act = np.concatenate(rec_act).reshape(recorded, -1)
    all_exec = np.concatenate(rec_exec).reshape(recorded, -1)
    all_chosen = np.concatenate(rec_chosen).reshape(recorded, -1)
    ep = np.concatenate(rec_ep)
    data: dict[str, Any] = {"episode": pd.factorize(ep)[0].astype(np.int64), "step": np.concatenate(rec_t)}
    for i, col in enumerate(observation_columns(obs_space)):
        data[col] = all_obs[:, i]
    for i, col in enumerate(action_columns(act_space)):
        data[col] = all_act[:, i]
    data["reward"] = np.concatenate(rec_rew)
    if labeler is not None:
        for i, col in enumerate(action_columns(act_space)):
            data["policy_" + col] = all_chosen[:, i]
            data["executed_" + col] = all_exec[:, i]
    df = pd.DataFrame(data).sort_values(["episode", "step"], kind="stable").reset_index(drop=True)
    if n_steps is not None:
        df = df.iloc[:n_steps].reset_index(drop=True) if len(df) > n_steps else df
    return df


def collect_demonstrations(
    expert: Actor,
    env: EnvLike,
    n_episodes: int,
    seed: int = 0,
    path: str | Path | None = None,
    n_envs: int | None = None,
) -> pd.DataFrame:
    """Record ``n_episodes`` episodes of ``expert`` (obs batch → actions) as a demonstration table.

    The table follows the module's schema (episode, step, obs…, action…, reward); with ``path``
    it is also written as parquet. Same seed → same table (for a deterministic expert).
    """
    df = rollout(expert, env, n_episodes=n_episodes, seed=seed, n_envs=n_envs)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(path, index=False)
    return df


def episode_returns(df: pd.DataFrame) -> np.ndarray:
    """Undiscounted return of each episode of a recorded table."""
    return df.groupby("episode", sort=True)["reward"].sum().to_numpy()


def evaluate_actor(
    actor: Actor,
    env: EnvLike,
    n_episodes: int = 10,
    seed: int = 10_000,
    n_envs: int | None = None,
    action_noise: float = 0.0,
) -> dict[str, Any]:
    """Mean/std undiscounted return of ``actor`` over ``n_episodes`` whole episodes."""
    df = rollout(actor, env, n_episodes=n_episodes, seed=seed, n_envs=n_envs, action_noise=action_noise)
    returns = episode_returns(df)
    lengths = df.groupby("episode", sort=True).size().to_numpy()
    return {
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "mean_length": float(lengths.mean()),
        "returns": returns.tolist(),
    }
