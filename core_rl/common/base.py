"""The base class every agent shares: ``agent = Algo(env, config); agent.learn(steps);
agent.predict(obs); agent.save(path); Algo.load(path)``.

Subclasses provide ``_build`` (networks and optimizers), ``_iterate`` (one iteration of the
algorithm: collect, estimate, improve; returns metrics) and ``_act`` (batched actions).
The base class owns env construction, seeding, episode statistics, metric logging, progress,
checkpoints and evaluation, so that each algorithm's module holds only its own mathematics. An
agent may also be composed of parts (``part_types``; :mod:`core_rl.common.parts`), components such
as a cost critic or a Lagrange multiplier that the base classes call at fixed points.
"""

from __future__ import annotations

import time
import warnings
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv
from torch import nn

from core_rl.common.atari import episode_end
from core_rl.common.checkpoint import check_finite, load_checkpoint, save_checkpoint
from core_rl.common.config import AgentConfig, parse_config
from core_rl.common.envs import EnvLike, SpacesOnlyEnv, can_make, check_action_space, env_id_of, make_vec_env
from core_rl.common.errors import CheckpointError, ConfigError, SpaceError
from core_rl.common.networks import ObsEncoder, image_layout, weights_fixed
from core_rl.common.parts import Part
from core_rl.common.runs import check_stop, graceful_stop
from core_rl.common.seeding import configure_torch, preserve_rng, set_seed
from core_rl.common.spaces import space_from_dict, space_to_dict
from core_rl.common.tracking import NullTracker, Tracker

Callback = Callable[["Agent", dict[str, float]], bool | None]
P = TypeVar("P", bound=Part)


class Agent(ABC):
    """Base of every agent. ``name`` is the registry name used by ``deeprl train --algo``."""

    name: ClassVar[str] = "agent"
    config_cls: ClassVar[type[AgentConfig]] = AgentConfig
    action_spaces: ClassVar[tuple[type, ...]] = (gym.spaces.Discrete, gym.spaces.Box)
    #: metrics go to the tracker at most once per this many env steps (0: every iteration)
    log_every_steps: ClassVar[int] = 0
    #: the agent's parts (:mod:`core_rl.common.parts`), each built from the config: ``PartType(config)``
    part_types: ClassVar[tuple[type[Part], ...]] = ()

    def __init__(
        self,
        env: EnvLike,
        config: AgentConfig | Mapping[str, Any] | None = None,
        tracker: Tracker | None = None,
        **overrides: Any,
    ):
        self.config = parse_config(self.config_cls, config, **overrides)
        cfg = self.config
        self.parts: tuple[Part, ...] = tuple(self._make_parts())
        configure_torch(cfg.torch_threads)
        self.rng = set_seed(cfg.seed)
        self.device = torch.device(cfg.device)
        self.env_id = env_id_of(env)
        self._env_source = env
        raw_env = make_vec_env(env, self.n_envs, seed=cfg.seed)
        # the env's own spaces (before this agent's wrappers): checkpoints keep them for env-free loading
        self.env_spaces = (raw_env.single_observation_space, raw_env.single_action_space)
        self.env = self._wrap_env(raw_env, training=True)
        self.observation_space = self.env.single_observation_space
        self.action_space = self.env.single_action_space
        check_action_space(self.action_space, self.name, self.action_spaces)
        self.tracker: Tracker = tracker or NullTracker()
        self.num_timesteps = 0
        self.iteration = 0
        self.episode_returns: deque[float] = deque(maxlen=100)
        self.episode_lengths: deque[int] = deque(maxlen=100)
        self.episodes_done = 0
        self._ep_return = np.zeros(self.n_envs)
        self._ep_length = np.zeros(self.n_envs, dtype=np.int64)
        self._obs, _ = self.env.reset(seed=cfg.seed)
        self._last_log_step = -(10**12)
        self._last_strip_step = 0
        self._resume_rng: dict[str, Any] | None = None
        self._build()
        for part in self.parts:
            part.build(self)
        self._check_encoder()

    def _check_encoder(self) -> None:
        """A named ``encoder`` that this agent's networks do not use is refused, never ignored; an
        ``encoder_dtype`` other than float32 reaches every convolutional encoder (target networks too),
        and is refused where there is none."""
        encoders = [
            m
            for module in self._modules().values()
            if isinstance(module, nn.Module)
            for m in module.modules()
            if isinstance(m, ObsEncoder)
        ]
        dtype = getattr(self.config, "encoder_dtype", "float32")
        self._cast_encoders: list[ObsEncoder] = []  # what weights_fixed scopes: the encoders that compute in bf16
        if dtype != "float32":
            cnns = [m for m in encoders if m.cnn is not None]
            if not cnns:
                raise ConfigError(
                    f"config field 'encoder_dtype': {dtype} applies to convolutional encoders, and {self.name} "
                    f"has none here (observations {self.observation_space}); leave it float32"
                )
            for m in cnns:
                m.compute_dtype = getattr(torch, dtype)
            self._cast_encoders = cnns
        wanted = getattr(self.config, "encoder", "auto")
        if wanted == "auto":
            return
        used = {m.kind for m in encoders}
        if used != {wanted}:
            raise ConfigError(
                f"config field 'encoder': {self.name} does not build its observation encoder from it "
                f"(its encoders: {', '.join(sorted(used)) or 'none'}); leave encoder='auto'"
            )

    # ---- what subclasses provide -------------------------------------------------------------
    @property
    def n_envs(self) -> int:
        return int(getattr(self.config, "n_envs", 1))

    @abstractmethod
    def _build(self) -> None:
        """Create networks and optimizers."""

    @abstractmethod
    def _iterate(self) -> dict[str, float]:
        """Run one iteration, advance ``num_timesteps``, return metrics."""

    @abstractmethod
    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """Batched actions for batched (normalized) observation tensors."""

    def _make_parts(self) -> tuple[Part, ...]:
        """Hook: the components this agent is composed of (:mod:`core_rl.common.parts`), from
        ``self.config``; the bases call them in this order. Here: one of each of :attr:`part_types`."""
        return tuple(part_type(self.config) for part_type in self.part_types)

    def part(self, cls: type[P]) -> P:
        """This agent's first part of type ``cls``."""
        for part in self.parts:
            if isinstance(part, cls):
                return part
        raise ConfigError(
            f"{self.name} has no part {cls.__name__} (its parts: "
            f"{', '.join(type(p).__name__ for p in self.parts) or 'none'})"
        )

    def _wrap_env(self, env: VectorEnv, training: bool) -> VectorEnv:
        """Hook: wrap the vector env this agent trains on (``training``) or is evaluated on.
        Runs before the spaces are read; called during ``__init__``, before ``_build``. Here: every
        part's wrapper, in the parts' order (the first part's innermost)."""
        for part in self.parts:
            env = part.wrap_env(env, training)
        return env

    def _modules(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        """Everything whose state a checkpoint keeps: by default every attribute that is one, and
        every part's :meth:`~core_rl.common.parts.Part.modules`."""
        modules = {k: v for k, v in vars(self).items() if isinstance(v, (nn.Module, torch.optim.Optimizer))}
        for part in self.parts:
            for key, module in part.modules().items():
                if key in modules:
                    raise CheckpointError(
                        f"{self.name}: the part {type(part).__name__}'s module '{key}' has the "
                        "name of another module of the agent"
                    )
                modules[key] = module
        return modules

    # ---- observation / action conversion -------------------------------------------------
    def _preprocess_obs(self, obs: np.ndarray) -> np.ndarray:
        return obs

    def _obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(self._preprocess_obs(np.asarray(obs)), device=self.device)

    def _to_env_action(self, actions: torch.Tensor) -> np.ndarray:
        return self._env_action(actions.detach().cpu().numpy())

    def _env_action(self, a: np.ndarray) -> np.ndarray:
        """The policy's actions as the env takes them: clipped into a Box, integers otherwise."""
        if isinstance(self.action_space, gym.spaces.Box):
            return np.clip(a, self.action_space.low, self.action_space.high).astype(self.action_space.dtype)
        return a.astype(np.int64)

    # ---- episode bookkeeping -----------------------------------------------------------------
    def _track_episodes(self, rewards: np.ndarray, dones: np.ndarray, info: dict[str, Any] | None = None) -> None:
        """Sum rewards per env; on an episode's end record its return and length.

        With the vector env's ``info`` an env may speak for itself (:func:`core_rl.common.atari.episode_end`):
        a lost life that ends the episode for learning only is not an episode here, and a game that
        reports its true score (the Atari envs, whose training rewards are clipped) is recorded with
        that score and length instead of the sums of what the agent saw."""
        self._ep_return += rewards
        self._ep_length += 1
        if dones.any():
            finished = []
            for i in np.flatnonzero(dones):
                life_lost, score, length = episode_end(info, int(i))
                if life_lost:
                    continue
                self.episode_returns.append(float(self._ep_return[i]) if score is None else score)
                self.episode_lengths.append(int(self._ep_length[i]) if length is None else length)
                finished.append(int(i))
            self.episodes_done += len(finished)
            self._ep_return[finished] = 0.0
            self._ep_length[finished] = 0

    @property
    def mean_return(self) -> float:
        """Mean undiscounted return of the last 100 finished training episodes (nan if none)."""
        return float(np.mean(self.episode_returns)) if self.episode_returns else float("nan")

    # ---- public API --------------------------------------------------------------------------
    def learn(
        self,
        total_steps: int,
        progress: bool = False,
        callback: Callback | None = None,
        checkpoint_path: str | Path | None = None,
        checkpoint_every: int = 10,
    ) -> "Agent":
        """Train for ``total_steps`` more env steps (counted over all envs)."""
        if total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        if self.iteration == 0:
            self.tracker.log_params({"algo": self.name, "env_id": self.env_id, **self.config.model_dump()})
        target = self.num_timesteps + int(total_steps)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=int(total_steps), unit="step", desc=f"{self.name} {self.env_id}", dynamic_ncols=True)
        start_steps, t0 = self.num_timesteps, time.perf_counter()
        if self._resume_rng is not None:  # a loaded checkpoint continues its own random stream
            torch.set_rng_state(self._resume_rng["torch"])
            self._resume_rng = None
        try:
            with graceful_stop():
                while self.num_timesteps < target:
                    before = self.num_timesteps
                    try:
                        metrics = self._iterate()
                        for part in self.parts:
                            metrics = part.iteration_metrics(self, metrics)
                    except BaseException:
                        self.num_timesteps = before  # a checkpoint then counts completed iterations only
                        raise
                    self.iteration += 1
                    elapsed = max(time.perf_counter() - t0, 1e-9)
                    metrics = {
                        **metrics,
                        "episode_return": self.mean_return,
                        "episode_length": float(np.mean(self.episode_lengths))
                        if self.episode_lengths
                        else float("nan"),
                        "episodes": float(self.episodes_done),
                        "env_steps_per_s": (self.num_timesteps - start_steps) / elapsed,
                    }
                    self.last_metrics = metrics
                    if self.num_timesteps - self._last_log_step >= self.log_every_steps or self.num_timesteps >= target:
                        self.tracker.log_metrics(metrics, step=self.num_timesteps)
                        self._last_log_step = self.num_timesteps
                    if bar is not None:
                        bar.update(self.num_timesteps - before)
                        bar.set_postfix(ret=f"{self.mean_return:.1f}")
                    self._log_frame_strip(final=self.num_timesteps >= target)
                    if checkpoint_path is not None and self.iteration % checkpoint_every == 0:
                        self.save(checkpoint_path)
                    if callback is not None and callback(self, metrics) is False:
                        break
                    check_stop()  # a SIGINT/SIGTERM asked to stop: the iteration is complete and logged
        finally:
            if bar is not None:
                bar.close()
        if checkpoint_path is not None:
            self.save(checkpoint_path)
        return self

    def _log_frame_strip(self, final: bool = False) -> None:
        """Every ``frame_strip_every`` env steps (and at the end of :meth:`learn`), on image observations:
        env 0's current observation as a PNG strip (:mod:`core_rl.common.frame_strip`), logged under
        ``frames/`` as ``step_<num_timesteps>.png``."""
        every = self.config.frame_strip_every
        if every <= 0 or image_layout(self.observation_space) is None:
            return
        if not final and self.num_timesteps - self._last_strip_step < every:
            return
        if self._last_strip_step == self.num_timesteps:
            return
        self._last_strip_step = self.num_timesteps
        import tempfile

        from core_rl.common.frame_strip import save_frame_strip

        with tempfile.TemporaryDirectory() as tmp:
            path = save_frame_strip(
                Path(tmp) / f"step_{self.num_timesteps:09d}.png", self._obs[0], self.observation_space
            )
            self.tracker.log_artifact(path, "frames")

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Action(s) for one observation or a batch of them."""
        obs = np.asarray(obs)
        single = obs.shape == self.observation_space.shape
        batch = obs[None] if single else obs
        with torch.no_grad():
            actions = self._act(self._obs_tensor(batch), deterministic)
        env_actions = self._to_env_action(actions)
        return env_actions[0] if single else env_actions

    def _check_same_spaces(self, vec: Any, env: EnvLike) -> None:
        """An env to evaluate on must have the observation and action spaces the agent was trained on (shape,
        and the number of actions): a policy for CartPole's 4 numbers cannot act on Acrobot's 6 (it failed in a
        matmul), nor pick among 3 actions having learned 2. The vector env is closed before the error."""

        def describe(space: Any) -> str:  # what a policy depends on: a Box's shape (not its bounds), the actions
            if isinstance(space, gym.spaces.Box):
                return f"Box of shape {tuple(space.shape)}"
            return f"Discrete({int(space.n)})" if isinstance(space, gym.spaces.Discrete) else str(space)

        trained, given = self.env_spaces, (vec.single_observation_space, vec.single_action_space)
        for what, a, b in (("observation", trained[0], given[0]), ("action", trained[1], given[1])):
            if describe(a) != describe(b):
                vec.close()
                name = env if isinstance(env, str) else type(env).__name__
                raise SpaceError(
                    f"{self.name} was trained on {self.env_id} (its {what}s: {describe(a)}); {name} has {what}s "
                    f"{describe(b)}: evaluate it on an env with the spaces it was trained on"
                )

    def evaluate(
        self,
        n_episodes: int = 10,
        env: EnvLike | None = None,
        deterministic: bool = True,
        seed: int | None = None,
        n_envs: int | None = None,
    ) -> dict[str, Any]:
        """Run ``n_episodes`` full episodes on envs of its own; returns mean/std/returns.

        Evaluation never steps or closes an object the user handed in: an env id or a factory makes
        fresh envs, and an ``Env``/``VectorEnv`` instance is deep-copied (one that cannot be copied is
        refused with an :class:`EnvError`)."""
        if n_episodes <= 0:
            raise ValueError(f"n_episodes must be positive, got {n_episodes}")
        n_envs = n_envs or min(n_episodes, 8)
        raw = make_vec_env(self._evaluation_source(env), n_envs, seed=None, copy_instances=True)
        if env is not None:
            self._check_same_spaces(raw, env)
        vec = self._wrap_env(raw, training=False)
        obs, _ = vec.reset(seed=self.config.seed + 10_000 if seed is None else seed)
        returns: list[float] = []
        lengths: list[int] = []
        ep_ret, ep_len = np.zeros(n_envs), np.zeros(n_envs, dtype=np.int64)
        # each env runs only the episodes assigned to it, so the result does not favour short episodes
        quota = np.full(n_envs, n_episodes // n_envs) + (np.arange(n_envs) < n_episodes % n_envs)
        try:
            with self.weights_fixed():  # no weight changes while it plays
                while len(returns) < n_episodes:
                    actions = self.predict(obs, deterministic=deterministic)
                    obs, r, term, trunc, info = vec.step(actions)
                    ep_ret += r
                    ep_len += 1
                    for i in np.flatnonzero(term | trunc):
                        life_lost, score, length = episode_end(info, int(i))  # an Atari game's true score
                        if life_lost:
                            continue
                        if quota[i] > 0:
                            returns.append(float(ep_ret[i]) if score is None else score)
                            lengths.append(int(ep_len[i]) if length is None else length)
                            quota[i] -= 1
                        ep_ret[i], ep_len[i] = 0.0, 0
        finally:
            vec.close()
        return {
            "mean_return": float(np.mean(returns)),
            "std_return": float(np.std(returns)),
            "mean_length": float(np.mean(lengths)),
            "returns": returns,
        }

    def _evaluation_source(self, env: EnvLike | None) -> EnvLike:
        """What evaluation builds its envs from: ``env``, else what the agent was built from."""
        return env if env is not None else self._env_source

    def weights_fixed(self) -> AbstractContextManager[None]:
        """:func:`core_rl.common.networks.weights_fixed` over the agent's bf16 encoders (``encoder_dtype``): for a
        stretch in which no weight changes (a rollout, an evaluation) they cast their weights once. A no-op in
        float32."""
        return weights_fixed(*getattr(self, "_cast_encoders", ()))

    # ---- checkpoints -------------------------------------------------------------------------
    def _counters(self) -> dict[str, int]:
        """Every integer attribute (steps, iterations, gradient updates, schedule targets, ...): a resumed
        run continues its counters, and its metric grid, where the checkpoint left them."""
        return {k: v for k, v in vars(self).items() if type(v) is int}

    def _extra_state(self, include_replay: bool) -> dict[str, Any]:
        """Hook: more state for the checkpoint (tensors and plain values only). Off-policy agents add
        their replay buffer here when ``include_replay``."""
        return {}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        """Hook: restore what :meth:`_extra_state` saved."""

    def save(self, path: str | Path, include_replay: bool = False) -> Path:
        """Write a checkpoint: weights and optimizer states, counters, episode statistics, every part's
        :meth:`~core_rl.common.parts.Part.state`, the torch RNG state, the env's spaces (so :meth:`load`
        needs no env) and, with ``include_replay``, the replay buffer of an off-policy agent."""
        state = {k: m.state_dict() for k, m in self._modules().items()}
        meta = {
            "env_id": self.env_id,
            "counters": self._counters(),
            "episode_returns": list(self.episode_returns),
            "episode_lengths": list(self.episode_lengths),
            "torch_rng": torch.get_rng_state(),
            "spaces": {"observation": space_to_dict(self.env_spaces[0]), "action": space_to_dict(self.env_spaces[1])},
            "extra": self._extra_state(include_replay),
            "parts": {f"{i}.{type(part).__name__}": part.state() for i, part in enumerate(self.parts)},
        }
        return save_checkpoint(path, algo=self.name, config=self.config.model_dump(mode="json"), state=state, meta=meta)

    @classmethod
    def load(
        cls, path: str | Path, env: EnvLike | None = None, tracker: Tracker | None = None, **overrides: Any
    ) -> "Agent":
        """Rebuild an agent from a checkpoint; with no ``env``, from its registered env id, else from
        the stored spaces (it can ``predict``, not step). The caller's global RNG states are left as
        they were; the checkpoint's torch RNG state takes over when :meth:`learn` continues."""
        payload = load_checkpoint(path, algo=None if cls.name == "agent" else cls.name)
        if cls.name == "agent":  # Agent.load: dispatch on the stored algorithm name
            from core_rl.registry import get_algo

            cls = get_algo(payload["algo"]).cls
        meta = payload["meta"]
        if env is None:
            env = (
                meta["env_id"]
                if can_make(meta["env_id"]) or "spaces" not in meta
                else SpacesOnlyEnv(
                    space_from_dict(meta["spaces"]["observation"]),
                    space_from_dict(meta["spaces"]["action"]),
                    meta["env_id"],
                )
            )
        config = {**payload["config"], **overrides}
        if "device" not in overrides and "device" in config:  # trained on a GPU, evaluated where there is none
            from core_rl.common.config import check_device

            try:
                check_device(str(config["device"]))
            except ValueError as exc:
                warnings.warn(f"checkpoint {path}: device {exc}; loading it on cpu", stacklevel=2)
                config["device"] = "cpu"
        with preserve_rng():
            agent = cls._restore(env, config, tracker)
        agent._load_state(payload["state"], path)
        for key, value in meta.get("counters", {}).items():
            setattr(agent, key, int(value))
        if "counters" not in meta:  # format of older checkpoints
            agent.num_timesteps, agent.iteration = int(meta["num_timesteps"]), int(meta["iteration"])
            agent.episodes_done = int(meta.get("episodes_done", 0))
        agent.episode_returns.extend(meta.get("episode_returns", []))
        agent.episode_lengths.extend(meta.get("episode_lengths", []))
        if meta.get("extra"):
            agent._load_extra_state(meta["extra"])
        for i, part in enumerate(agent.parts):  # checkpoints older than the parts' state hold none
            part.load_state(meta.get("parts", {}).get(f"{i}.{type(part).__name__}", {}))
        if "torch_rng" in meta:
            agent._resume_rng = {"torch": meta["torch_rng"]}
        return agent

    @classmethod
    def _restore(cls, env: EnvLike, config: dict[str, Any], tracker: Tracker | None) -> "Agent":
        """Hook: the agent that :meth:`load` fills from a checkpoint (a subclass may relax what a
        fresh agent needs before it can train, e.g. GAIL's demonstrations)."""
        return cls(env, config, tracker=tracker)

    def _load_state(self, state: dict[str, Any], path: str | Path) -> None:
        """Load every module's state, or raise :class:`CheckpointError` naming what does not fit."""
        modules = self._modules()
        missing = sorted(set(modules) - set(state))
        if missing:
            raise CheckpointError(f"checkpoint '{path}' lacks module(s) {', '.join(missing)} of {self.name}")
        unexpected = sorted(set(state) - set(modules))
        if unexpected:
            raise CheckpointError(
                f"checkpoint '{path}' holds module(s) {', '.join(unexpected)} that {self.name} "
                "does not have (another configuration?)"
            )
        for key, sd in state.items():
            check_finite(sd, f"checkpoint '{path}', module '{key}'")
            try:
                modules[key].load_state_dict(sd)
            except (RuntimeError, ValueError, KeyError) as exc:
                first = str(exc).strip().splitlines()
                raise CheckpointError(
                    f"checkpoint '{path}', module '{key}' does not fit {self.name}: "
                    f"{' '.join(ln.strip() for ln in first[:3])[:400]}"
                ) from None

    def close(self) -> None:
        self.env.close()
