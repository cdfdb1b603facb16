r"""A flat batch of transitions :math:`\{(s_i, a_i, r_i, s'_i, d_i)\}_{i=1}^N`, the data of batch RL.

Fitted Q iteration regresses :math:`Q_\phi(s_i, a_i)` on :math:`y_i = r_i + \gamma(1-d_i)\max_{a'}Q_\phi(s'_i, a')`,
and a learned dynamics model regresses :math:`(s'_i - s_i, r_i)` on :math:`(s_i, a_i)` (:meth:`Transitions.inputs`,
:meth:`Transitions.targets`); both read this one container. ``dones`` :math:`d_i = 1` iff :math:`s'_i` is
terminal (a truncated episode's last :math:`s'` is not), and ``next_obs`` is the true :math:`s_{t+1}`
(:func:`~core_rl.common.envs.final_next_obs` at episode ends).

Encoding (:meth:`Transitions.from_arrays`): integer observations and actions are indices (``long``,
actions ``[N]``); floating ones are features (``float32``, actions ``[N, d_a]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from core_rl.common.envs import EnvLike, final_next_obs, make_vec_env
from core_rl.common.errors import ConfigError, SpaceError
from core_rl.common.replay import ReplayBuffer


@dataclass
class Transitions:
    """(s_i, a_i, r_i, s'_i, done_i), every tensor ``[N, ...]``; ``dones`` = s'_i is terminal."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    dones: torch.Tensor

    def __post_init__(self) -> None:
        n = self.actions.shape[0]
        for name in ("obs", "rewards", "next_obs", "dones"):
            if getattr(self, name).shape[0] != n:
                raise ConfigError(
                    f"transitions field '{name}' has {getattr(self, name).shape[0]} rows, actions has {n}"
                )
        if self.obs.shape != self.next_obs.shape:
            raise ConfigError(
                f"transitions 'obs' {tuple(self.obs.shape)} and 'next_obs' {tuple(self.next_obs.shape)} differ in shape"
            )
        if n == 0:
            raise ConfigError("transitions dataset is empty")

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls, obs: Any, actions: Any, rewards: Any, next_obs: Any, dones: Any | None = None
    ) -> "Transitions":
        """Build from array-likes (``dones`` None: no terminal s'); integers are indices, floats features."""
        obs_a, act_a, next_a = np.asarray(obs), np.asarray(actions), np.asarray(next_obs)
        obs_dtype = torch.long if np.issubdtype(obs_a.dtype, np.integer) else torch.float32
        if np.issubdtype(act_a.dtype, np.integer):
            actions_t = torch.as_tensor(act_a).long()
        else:
            actions_t = torch.as_tensor(act_a, dtype=torch.float32).reshape(act_a.shape[0], -1)
        n = act_a.shape[0]
        dones_t = torch.zeros(n) if dones is None else torch.as_tensor(np.asarray(dones), dtype=torch.float32)
        return cls(
            obs=torch.as_tensor(obs_a, dtype=obs_dtype),
            actions=actions_t,
            rewards=torch.as_tensor(np.asarray(rewards), dtype=torch.float32).reshape(-1),
            next_obs=torch.as_tensor(next_a, dtype=obs_dtype),
            dones=dones_t.reshape(-1),
        )

    @classmethod
    def from_replay(cls, replay: ReplayBuffer, last: int | None = None) -> "Transitions":
        """Every stored transition of a replay buffer (or only the ``last`` ones per env), oldest first,
        as float features (actions ``[N, d_a]``), ``dones`` = terminated."""
        upper = len(replay) // replay.n_envs
        if upper == 0:
            raise ConfigError("the replay buffer holds no transitions to fit a model on")
        idx = torch.arange(upper)
        if replay.full:  # oldest first, so that `last` keeps the newest
            idx = (torch.arange(upper) + replay.pos) % upper
        if last is not None:
            idx = idx[-max(1, last // replay.n_envs) :]

        def flat(x: torch.Tensor) -> torch.Tensor:
            return x[idx].reshape(-1, *x.shape[2:]).float()

        actions = flat(replay.actions)
        return cls(
            obs=flat(replay.obs),
            actions=actions.reshape(actions.shape[0], -1),
            rewards=flat(replay.rewards),
            next_obs=flat(replay.next_obs),
            dones=flat(replay.terminated),
        )

    @classmethod
    def collect(cls, env: EnvLike, n_steps: int, seed: int = 0, n_envs: int = 1) -> "Transitions":
        """Run the uniformly random policy for ``n_steps`` env steps (over ``n_envs`` copies): uniform
        over a Discrete action space, or over the box of a bounded Box one (the data a dynamics model
        of notes 9/21 is first fitted on)."""
        if n_steps < 1:
            raise ConfigError(f"n_steps must be positive, got {n_steps}")
        vec = make_vec_env(env, n_envs, seed=seed)
        space = vec.single_action_space
        box = isinstance(space, gym.spaces.Box) and bool(np.all(np.isfinite(space.low) & np.isfinite(space.high)))
        if not (isinstance(space, gym.spaces.Discrete) or box):
            vec.close()
            raise SpaceError(
                f"Transitions.collect samples a Discrete or a bounded Box action space uniformly, got {space}"
            )
        rng = np.random.default_rng(seed)
        obs, _ = vec.reset(seed=seed)
        rows: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "actions", "rewards", "next_obs", "dones")}
        for _ in range(-(-n_steps // n_envs)):
            if box:
                actions = rng.uniform(space.low, space.high, (n_envs, *space.shape)).astype(space.dtype)
            else:
                actions = rng.integers(0, int(space.n), n_envs)
            next_obs, rewards, terminated, truncated, info = vec.step(actions)
            real_next = final_next_obs(next_obs, terminated | truncated, info)
            for k, v in (
                ("obs", obs),
                ("actions", actions),
                ("rewards", rewards),
                ("next_obs", real_next),
                ("dones", terminated),
            ):
                rows[k].append(np.asarray(v))
            obs = next_obs
        vec.close()
        data = {k: np.concatenate(v)[:n_steps] for k, v in rows.items()}
        return cls.from_arrays(**data)

    # ---- the regression pair of a dynamics model ----------------------------------------------
    def inputs(self) -> torch.Tensor:
        """x = (s, a), a dynamics model's input."""
        return torch.cat([self.obs, self.actions], dim=-1)

    def targets(self, with_reward: bool = True) -> torch.Tensor:
        """y = (s' − s, r), a dynamics model's target."""
        delta = self.next_obs - self.obs
        return torch.cat([delta, self.rewards[:, None]], dim=-1) if with_reward else delta


__all__ = ["Transitions"]
