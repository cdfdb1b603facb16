r"""Replay for frame-stacked pixels that stores every frame once.

An Atari observation is a stack of the last k = 4 frames, :math:`s_t = (f_{t-3}, f_{t-2}, f_{t-1}, f_t)`,
and :math:`s_{t+1}` shares three of them. A plain buffer stores both stacks of every transition, 2k
frames; this one stores each frame once, in a per-env stream, and rebuilds the stacks at sample time.
For 84×84 ``uint8`` frames: 7,056 B per transition against 56,448 B, so 10⁶ transitions take about
7 GB instead of 56 GB (:meth:`~core_rl.common.replay.ReplayBuffer.nbytes`; ``storage_device="meta"``
sizes a buffer without allocating it).

The stream of env e, one position per frame, ring of ``P = capacity // n_envs`` positions:

* the first step of an episode writes all k frames of :math:`s_0` (whatever the env's padding —
  ``FrameStackObservation`` repeats the first frame), then the newest frame of :math:`s_1`;
* every later step writes only the newest frame of its :math:`s_{t+1}` (the true final
  observation's on the episode's last step, not the next episode's first).

A transition lives at the position of its :math:`s_t`'s newest frame, p, so that
:math:`s_t` = frames p−k+1..p and :math:`s_{t+1}` = frames p−k+2..p+1: within one episode always (an
episode's frames are contiguous and start with a whole stack), so frames of an earlier episode
never leak into a stack. The n-step window walks p, p+1, … of the same env exactly as the plain
buffer walks time, stopping at the episode's end and at the newest transition. Positions that hold
no transition (the k−1 older frames of an episode's first stack, an episode's final frame) and
transitions whose oldest frame the ring has overwritten are never sampled; sampling is uniform over
the rest (drawn by rejection: a few redraws, vectorized).

Contract of :meth:`FrameStackReplayBuffer.add`: consecutive calls for an env continue its episode
(:math:`s_t` of a call is :math:`s_{t+1}` of the previous one) unless the previous call ended it;
observations are ``[n_envs, k, *frame_shape]``, stacked along axis 1, oldest first.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.wrappers import FrameStackObservation

from core_rl.common.errors import ConfigError
from core_rl.common.replay import ReplayBuffer


class FrameStackReplayBuffer(ReplayBuffer):
    """:class:`~core_rl.common.replay.ReplayBuffer`'s interface and samples (n-step returns, costs)
    for observations ``[k, *frame_shape]`` that are stacks of the last k frames; see the module
    docstring. ``capacity`` counts frames, i.e. transitions plus k per episode start and one per end."""

    def __init__(
        self,
        capacity: int,
        n_envs: int,
        obs_shape: tuple[int, ...],
        action_shape: tuple[int, ...],
        obs_dtype: torch.dtype = torch.uint8,
        **kwargs: Any,
    ):
        """``kwargs``: :class:`~core_rl.common.replay.ReplayBuffer`'s other arguments."""
        if len(obs_shape) < 2:
            raise ConfigError(
                f"a frame-stack replay buffer needs observations [k, *frame_shape], got shape {obs_shape}"
            )
        self.stack = int(obs_shape[0])
        if capacity // n_envs < 2 * self.stack + 1:
            raise ConfigError(
                f"config field 'buffer_size': a frame-stack replay buffer needs at least {2 * self.stack + 1} "
                f"frames per env ({n_envs} envs), got {capacity}"
            )
        super().__init__(capacity, n_envs, obs_shape, action_shape, obs_dtype, **kwargs)
        N = n_envs
        self.is_step = self._zeros((self.size_per_env, N), dtype=torch.bool)  # a transition starts here
        self.head = torch.zeros(N, dtype=torch.long)  # frames written per env (absolute; ring index = head % P)
        self.new_episode = torch.ones(N, dtype=torch.bool)  # the next add starts an episode
        self.live_steps = torch.zeros(N, dtype=torch.long)  # positions with is_step set, per env
        self.steps_added = 0

    def _init_obs(self, obs_shape: tuple[int, ...], obs_dtype: torch.dtype) -> None:
        self.frames = self._zeros((self.size_per_env, self.n_envs, *obs_shape[1:]), dtype=obs_dtype)

    def __len__(self) -> int:
        """Transitions that can be sampled now: those stored, less the (at most k−1 per env) oldest
        whose stack reaches frames the ring has overwritten."""
        P = self.size_per_env
        ages = torch.arange(P - self.stack + 1, P)[None, :]  # too old to stack
        absolute = self.head[:, None] - 1 - ages
        env = torch.arange(self.n_envs)[:, None].expand_as(absolute)
        stale = self.is_step[absolute.clamp(min=0) % P, env] & (absolute >= 0)
        return int(self.live_steps.sum()) - int(stale.sum())

    def _write(self, env: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Append one frame per env of ``env`` to its stream; returns the ring positions written."""
        at = self.head[env] % self.size_per_env
        self.frames[at, env] = frames
        self.live_steps[env] -= self.is_step[at, env].long()  # an overwritten transition is gone
        self.is_step[at, env] = False
        self.head[env] += 1
        return at

    def add(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        costs: np.ndarray | None = None,
    ) -> None:
        """One vector-env step (the contract in the module docstring)."""
        obs_t = torch.as_tensor(np.asarray(obs), dtype=self.obs_dtype)
        next_t = torch.as_tensor(np.asarray(next_obs), dtype=self.obs_dtype)
        everyone = torch.arange(self.n_envs)
        starting = everyone[self.new_episode]
        if starting.numel():
            for j in range(self.stack - 1):  # the older frames of s_0; its newest is written below
                self._write(starting, obs_t[starting, j])
            self._write(starting, obs_t[starting, self.stack - 1])
        p = (self.head - 1) % self.size_per_env  # where each env's s_t ends: its transition's position
        self._write(everyone, next_t[:, self.stack - 1])
        if self.costs is not None:
            if costs is None:
                if self.cost_source is None:
                    raise ConfigError(
                        "this replay buffer stores costs (n_costs > 0): pass costs to add() or give it a cost_source"
                    )
                costs = self.cost_source()
            self.costs[p, everyone] = torch.as_tensor(np.asarray(costs), dtype=torch.float32)
        self.actions[p, everyone] = torch.as_tensor(np.asarray(actions), dtype=self.actions.dtype).reshape(
            self.actions[p, everyone].shape
        )
        self.rewards[p, everyone] = torch.as_tensor(np.asarray(rewards), dtype=torch.float32)
        term = np.asarray(terminated, dtype=bool)
        ended = term | np.asarray(truncated, dtype=bool)
        self.terminated[p, everyone] = torch.as_tensor(term, dtype=torch.float32)
        self.episode_end[p, everyone] = torch.as_tensor(ended, dtype=torch.float32)
        self.is_step[p, everyone] = True
        self.live_steps += 1
        self.new_episode = torch.as_tensor(ended)
        self.steps_added += 1
        self.full = bool((self.head >= self.size_per_env).all())

    def _valid(self, t: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
        """Transitions at ring positions ``t`` of ``env`` whose frames are all still in the ring."""
        P = self.size_per_env
        age = (self.head[env] - 1 - t) % P  # 0 for the newest frame written
        written = t < self.head[env]
        return self.is_step[t, env] & written & (age <= P - self.stack)

    def _valid_time_count(self) -> int:
        return int(min(int(self.head.max()), self.size_per_env))

    def sample_indices(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Uniform over the sampleable transitions: draws over the written positions, redrawing those
        that hold none (a few rounds; then an exact draw from the list of valid positions)."""
        upper = self._valid_time_count()
        if self.steps_added == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        t = torch.randint(0, upper, (batch_size,), generator=self.generator)
        env = torch.randint(0, self.n_envs, (batch_size,), generator=self.generator)
        for _ in range(16):
            bad = ~self._valid(t, env)
            n_bad = int(bad.sum())
            if n_bad == 0:
                return t, env
            t[bad] = torch.randint(0, upper, (n_bad,), generator=self.generator)
            env[bad] = torch.randint(0, self.n_envs, (n_bad,), generator=self.generator)
        bad = ~self._valid(t, env)
        if bad.any():  # rare: most positions hold no transition; draw the rest from the valid ones
            grid_t, grid_env = torch.meshgrid(torch.arange(upper), torch.arange(self.n_envs), indexing="ij")
            ok = self._valid(grid_t, grid_env).reshape(-1).nonzero().squeeze(-1)
            if ok.numel() == 0:
                raise RuntimeError("the replay buffer holds no complete transition yet")
            pick = ok[torch.randint(0, ok.numel(), (int(bad.sum()),), generator=self.generator)]
            t[bad], env[bad] = grid_t.reshape(-1)[pick], grid_env.reshape(-1)[pick]
        return t, env

    def _stack_at(self, t: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
        """The k frames ending at ring position t of each env: ``[B, k, *frame_shape]``."""
        offsets = torch.arange(-self.stack + 1, 1)
        rows = (t[:, None] + offsets[None, :]) % self.size_per_env
        return self.frames[rows, env[:, None]]

    def _obs_at(self, t: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
        return self._stack_at(t, env)

    def _next_obs_at(self, t: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
        return self._stack_at((t + 1) % self.size_per_env, env)

    def _newest(self, env: torch.Tensor) -> torch.Tensor:
        return (self.head[env] - 2) % self.size_per_env


def frame_stack_size(env: Any) -> int | None:
    """k when ``env`` (a vector env, possibly wrapped) steps copies of an env whose observations come
    from :class:`gymnasium.wrappers.FrameStackObservation`, else None (also for envs it cannot look into,
    such as an asynchronous vector env's)."""
    inner = env
    while not hasattr(inner, "envs") and hasattr(inner, "env"):
        inner = inner.env
    envs = getattr(inner, "envs", None)
    if not envs:
        return None
    e = envs[0]
    while isinstance(e, gym.Wrapper):
        if isinstance(e, FrameStackObservation):
            return int(e.stack_size)
        e = e.env
    return None


__all__ = ["FrameStackReplayBuffer", "frame_stack_size"]
