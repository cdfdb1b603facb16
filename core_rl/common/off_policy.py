r"""The off-policy base shared by the Q-learning family (DQN, NAF, DDPG, TD3, SAC, ...).

One iteration: act with the exploration policy in the vector env for ``train_freq`` steps, store
the transitions in the replay buffer, then take ``gradient_steps`` gradient steps on sampled
minibatches (the subclass's :meth:`train_step`). Target networks are updated by Polyak averaging
φ' ← τφ + (1−τ)φ' (τ=1 with an interval is the periodic hard copy of the notes).

RL-Zoo's conventions: ``gradient_steps=-1`` takes as many gradient steps as env steps the phase
collected (``train_freq · n_envs``); ``target_update_unit="env_steps"`` counts
``target_update_interval`` in env steps, as SB3's DQN does (an update every
``max(interval // n_envs, 1)`` vector-env steps, warm-up included), instead of gradient steps;
``lr_schedule="linear"`` (or ``lr="lin_<lr>"``) decays every optimizer's step size to 0 over the run.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field
from torch import nn

from core_rl.common import optim
from core_rl.common.base import Agent
from core_rl.common.checkpoint import object_state, restore_object_state
from core_rl.common.config import AgentConfig
from core_rl.common.envs import final_next_obs
from core_rl.common.errors import ConfigError
from core_rl.common.frame_replay import FrameStackReplayBuffer, frame_stack_size
from core_rl.common.replay import ReplayBuffer, ReplaySample


class OffPolicyConfig(AgentConfig):
    n_envs: int = Field(1, ge=1)
    buffer_size: int = Field(100_000, ge=1)
    learning_starts: int = Field(1000, ge=0, description="Env steps of pure exploration before learning.")
    batch_size: int = Field(256, ge=1)
    train_freq: int = Field(1, ge=1, description="Vector-env steps between training phases.")
    gradient_steps: int = Field(
        1, ge=-1, description="Gradient steps per training phase (-1: as many as env steps collected)."
    )
    lr: float = Field(3e-4, gt=0.0)
    lr_schedule: Literal["constant", "linear"] = Field(
        "constant", description="'linear': every step size decays to 0 over the run (RL-Zoo's lin_<lr>)."
    )
    tau: float = Field(0.005, gt=0.0, le=1.0, description="Polyak coefficient (1.0 = hard copy).")
    target_update_interval: int = Field(1, ge=1, description="Steps between target updates (target_update_unit).")
    target_update_unit: Literal["gradient_steps", "env_steps"] = Field(
        "gradient_steps", description="What target_update_interval counts ('env_steps': SB3's DQN convention)."
    )
    n_step: int = Field(1, ge=1, description="N of the N-step return target.")
    max_grad_norm: float | None = Field(None, gt=0.0)
    frame_stack_replay: bool | None = Field(
        None,
        description="Store each frame of frame-stacked observations once (core_rl.common.frame_replay); "
        "None: whenever the env's uint8 observations come from FrameStackObservation (every ALE/ id).",
    )

    schedule_fields: ClassVar[dict[str, str]] = {"lr": "lr_schedule"}


@torch.no_grad()
def polyak_update(source: nn.Module, target: nn.Module, tau: float) -> None:
    """φ' ← τ φ + (1 − τ) φ' (τ = 1: a copy), one foreach kernel over all parameters."""
    pairs = list(zip(source.parameters(), target.parameters()))
    sources, targets = [p for p, _ in pairs], [tp for _, tp in pairs]
    if pairs and tau == 1.0:
        torch._foreach_copy_(targets, sources)
    elif pairs:
        torch._foreach_lerp_(targets, sources, tau)
    for b, tb in zip(source.buffers(), target.buffers()):
        tb.copy_(b)


class OffPolicyAgent(Agent):
    config: OffPolicyConfig
    config_cls = OffPolicyConfig
    log_every_steps = 1000
    #: whether the gradient step being taken reports its metrics: a training phase keeps only its last
    #: step's, so :meth:`train_step` may return ``{}`` (and skip the ``.item()`` reads) when this is False
    log_metrics: bool = True
    #: the optimizer attributes whose every parameter each of their losses reaches, stepped on flat buffers by
    #: :meth:`_step_optimizer` (:class:`~core_rl.common.optim.FlatGradStep`: one zeroing and one fused Adam kernel)
    flat_optimizers: ClassVar[tuple[str, ...]] = ()

    def _build(self) -> None:
        if (
            self.config.target_update_unit == "env_steps"
            and type(self)._update_targets is OffPolicyAgent._update_targets
        ):
            raise ConfigError(
                f"config field 'target_update_unit': {self.name} updates its targets per gradient step; "
                "'env_steps' is for dqn and sac"
            )
        obs_space, act_space = self.observation_space, self.action_space
        discrete_obs = isinstance(obs_space, gym.spaces.Discrete)
        discrete_act = isinstance(act_space, gym.spaces.Discrete)
        stack = frame_stack_size(self.env)
        use_frames = self.config.frame_stack_replay
        if use_frames is None:
            use_frames = stack is not None and obs_space.dtype == np.uint8 and obs_space.shape[:1] == (stack,)
        elif use_frames and (discrete_obs or len(obs_space.shape) < 2):
            raise ConfigError(
                "config field 'frame_stack_replay': needs observations that are stacks of frames "
                f"[k, *frame_shape], got {obs_space}"
            )
        replay_cls = FrameStackReplayBuffer if use_frames else ReplayBuffer
        self.replay = replay_cls(
            self.config.buffer_size,
            self.n_envs,
            () if discrete_obs else obs_space.shape,
            () if discrete_act else act_space.shape,
            obs_dtype=torch.long if discrete_obs else (torch.uint8 if obs_space.dtype == np.uint8 else torch.float32),
            action_dtype=torch.long if discrete_act else torch.float32,
            n_step=self.config.n_step,
            gamma=self.config.gamma,
            seed=self.config.seed,
            device=self.device,
        )
        self.gradient_updates = 0
        self._build_networks()

    def _build_networks(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _explore(self, obs_t: torch.Tensor) -> torch.Tensor:
        """Actions of the behaviour (exploration) policy for a batch of observations."""
        raise NotImplementedError

    def _explore_numpy(self, obs: np.ndarray) -> np.ndarray | None:
        """The behaviour policy's actions for raw observations, computed in NumPy, or None: act in torch
        (:meth:`_explore`). The continuous agents' ``numpy_acting``."""
        return None

    def _random_actions(self) -> np.ndarray:
        return np.stack([self.action_space.sample() for _ in range(self.n_envs)])

    def _update_targets(self) -> None:
        """φ' ← τφ + (1−τ)φ' for every target network (agents that support ``target_update_unit='env_steps'``)."""
        raise NotImplementedError

    def _target_update_due(self) -> bool:
        """Whether the gradient step now being taken ends with a target update (``gradient_steps`` unit)."""
        cfg = self.config
        return (
            cfg.target_update_unit == "gradient_steps" and (self.gradient_updates + 1) % cfg.target_update_interval == 0
        )

    def _update_context(self) -> AbstractContextManager[Any]:
        """The context each :meth:`train_step` runs in (the continuous agents' bf16 autocast mode)."""
        return nullcontext()

    def _before_env_step(self, step: int) -> None:
        """Called before the ``step``-th env step of a collection phase (gSDE resamples its noise here)."""

    # ---- schedules ---------------------------------------------------------------------------
    def learn(self, total_steps: int, **kwargs: Any) -> "OffPolicyAgent":  # type: ignore[override]
        """As :meth:`Agent.learn`; the schedules (ε, lr, ...) run over the steps of the first call."""
        target = self.num_timesteps + int(total_steps)
        self._target_steps = max(getattr(self, "_target_steps", 0) or 0, target)
        if target <= self.config.learning_starts:
            warnings.warn(
                f"{self.name}: learn({int(total_steps)}) ends at step {target}, before learning_starts="
                f"{self.config.learning_starts}: no gradient step is taken and the policy stays the untrained one "
                "(raise the steps or lower learning_starts)",
                stacklevel=2,
            )
        return super().learn(total_steps, **kwargs)  # type: ignore[return-value]

    def _progress(self) -> float:
        """Fraction of training done, in [0, 1]."""
        total = getattr(self, "_target_steps", None)
        return min(1.0, self.num_timesteps / total) if total else 1.0

    def _apply_lr_schedule(self) -> None:
        """x(p) = p·x₀ for every optimizer's step size (each group keeps its x₀ as ``initial_lr``)."""
        remaining = 1.0 - self._progress()
        for opt in (v for v in vars(self).values() if isinstance(v, torch.optim.Optimizer)):
            for group in opt.param_groups:
                group.setdefault("initial_lr", group["lr"])
                group["lr"] = group["initial_lr"] * remaining

    def train_step(self, batch: ReplaySample) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _iterate(self) -> dict[str, float]:
        cfg = self.config
        if cfg.lr_schedule == "linear":
            self._apply_lr_schedule()
        env_unit = cfg.target_update_unit == "env_steps"
        every = max(cfg.target_update_interval // self.n_envs, 1)
        for step in range(cfg.train_freq):
            self._before_env_step(step)
            if self.num_timesteps < cfg.learning_starts:
                env_actions = self._random_actions()
                stored = env_actions
            else:
                stored = self._explore_numpy(self._obs)
                if stored is None:
                    with torch.no_grad():
                        stored = self._explore(self._obs_tensor(self._obs)).cpu().numpy()
                env_actions = self._env_action(stored)
            next_obs, rewards, terminated, truncated, info = self.env.step(env_actions)
            dones = terminated | truncated
            self.replay.add(self._obs, stored, rewards, final_next_obs(next_obs, dones, info), terminated, truncated)
            self._track_episodes(rewards, dones, info)
            self._obs = next_obs
            self.num_timesteps += self.n_envs
            if env_unit and (self.num_timesteps // self.n_envs) % every == 0:
                self._update_targets()
        metrics: dict[str, Any] = {}
        if self.num_timesteps >= cfg.learning_starts and len(self.replay) >= cfg.batch_size:
            n_grad = cfg.gradient_steps if cfg.gradient_steps >= 0 else cfg.train_freq * self.n_envs
            for i, batch in enumerate(self._phase_batches(n_grad)):
                # only the phase's last step reports: the others skip their metrics' host reads
                self.log_metrics = i == n_grad - 1
                with self._update_context():
                    metrics = self.train_step(batch)
                self.gradient_updates += 1
            self.log_metrics = True
        metrics["gradient_updates"] = float(self.gradient_updates)
        return metrics

    def _phase_batches(self, n_grad: int) -> Iterator[ReplaySample]:
        """The minibatches of a training phase of ``n_grad`` gradient steps: those of ``n_grad`` successive
        ``replay.sample(batch_size)`` calls, drawn and gathered at once where the buffer allows it
        (:meth:`ReplayBuffer.phase_samples`; nothing is added to the buffer during the phase)."""
        if isinstance(self.replay, ReplayBuffer):
            return self.replay.phase_samples(self.config.batch_size, n_grad)
        return (self.replay.sample(self.config.batch_size) for _ in range(n_grad))

    # ---- checkpoints: the replay buffer, on request -----------------------------------------
    def replay_nbytes(self) -> int:
        """Bytes the replay buffer's tensors take (what ``save(include_replay=True)`` adds)."""
        return self.replay.nbytes()

    def _extra_state(self, include_replay: bool) -> dict[str, Any]:
        return {"replay": object_state(self.replay)} if include_replay else {}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        if "replay" in extra:
            restore_object_state(self.replay, extra["replay"])

    def _step_optimizer(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor | None) -> None:
        """:func:`core_rl.common.optim.step` with this config's ``max_grad_norm`` (``loss=None``: the gradients are
        already in ``.grad``); the optimizers named in ``flat_optimizers`` step on flat buffers
        (:class:`~core_rl.common.optim.FlatGradStep`, the same bits)."""
        flat = self._flat_grad_step(optimizer) if loss is not None and self.flat_optimizers else None
        if flat is not None:
            flat.step(loss, self.config.max_grad_norm)
        else:
            optim.step(optimizer, loss, self.config.max_grad_norm)

    def _flat_grad_step(self, optimizer: torch.optim.Optimizer) -> optim.FlatGradStep | None:
        """The flat step of ``optimizer`` if this agent names it in ``flat_optimizers`` (built at its first step)."""
        steps: dict[torch.optim.Optimizer, optim.FlatGradStep | None] = self.__dict__.setdefault("_flat_steps", {})
        if optimizer not in steps:  # optimizers hash by identity
            named = any(getattr(self, name, None) is optimizer for name in self.flat_optimizers)
            steps[optimizer] = optim.FlatGradStep.build(optimizer) if named else None
        return steps[optimizer]
