r"""The on-policy base: rollout collection and advantage estimation shared by REINFORCE,
actor-critic/A2C, NPG, TRPO and PPO.

One iteration is the notes' anatomy of an RL algorithm: run the policy to generate samples
(:meth:`OnPolicyAgent.collect`), estimate returns (:meth:`OnPolicyAgent.estimate`), improve the
policy (the subclass's :meth:`update`). Collection steps a vector env in lockstep, batched through
the policy, with no Python loop over envs. The agent's parts (:mod:`core_rl.common.parts`) are
called at each of these points: at the rollout's start and end, after the estimate, around the update.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field, model_validator

from core_rl.common import optim
from core_rl.common import returns as R
from core_rl.common.base import Agent
from core_rl.common.buffers import RolloutBatch
from core_rl.common.config import AgentConfig
from core_rl.common.distributions import Distribution, StochasticPolicy, ValueFunction
from core_rl.common.envs import EnvLike
from core_rl.common.errors import ConfigError
from core_rl.common.fused_actor_critic import FusedActorCritic
from core_rl.common.normalization import RewardScaler, RunningMeanStd
from core_rl.common.numpy_acting import NumpyActor
from core_rl.common.optim import make_adam
from core_rl.common.schedules import scheduled
from core_rl.common.tracking import Tracker


class OnPolicyConfig(AgentConfig):
    n_envs: int = Field(8, ge=1, description="Parallel envs in the vector env.")
    n_steps: int = Field(128, ge=1, description="Steps per env per iteration (batch = n_envs·n_steps).")
    lr: float = Field(3e-4, gt=0.0, description="Learning rate.")
    lr_schedule: Literal["constant", "linear"] = Field(
        "constant", description="'linear': lr decays to 0 over the run (RL-Zoo's lin_<lr>)."
    )
    max_grad_norm: float | None = Field(0.5, gt=0.0)
    advantage: Literal["gae", "nstep", "reward_to_go", "return"] = Field(
        "gae", description="How Â is estimated: GAE(λ), n-step, reward-to-go or the whole return."
    )
    gae_lambda: float = Field(0.95, ge=0.0, le=1.0)
    n_step: int = Field(5, ge=1, description="n of the n-step return (advantage='nstep').")
    normalize_advantage: bool = True
    normalize_obs: bool = False
    normalize_reward: bool = False
    vf_coef: float = Field(0.5, ge=0.0)
    ent_coef: float = Field(0.0, ge=0.0)
    log_std_init: float = 0.0
    log_std_final: float | None = Field(
        None,
        description="Gaussian head (no gSDE): a ceiling on the state-independent log σ that falls linearly "
        "from log_std_init to log_std_final over the first log_std_anneal_fraction of the run; before "
        "every rollout log σ ← min(log σ, ceiling), so the exploration noise is scheduled down while the "
        "update may still lower it further. None: log σ is only learned. Must be ≤ log_std_init.",
    )
    log_std_anneal_fraction: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="The fraction of the run over which the ceiling of log_std_final falls (it stays at "
        "log_std_final after).",
    )
    use_critic: bool = Field(True, description="Learn V_φ(s) (needed by GAE, n-step and bootstrapping).")
    use_sde: bool = Field(
        False, description="Box actions: generalized state-dependent exploration (gSDE) instead of i.i.d. noise."
    )
    sde_sample_freq: int = Field(
        -1, ge=-1, description="gSDE: steps between noise resamples (-1: once per rollout, at its start)."
    )
    fused_update: bool = Field(
        True,
        description="PPO and A2C: the update's gradients written out by the chain rule, without autograd "
        "(core_rl.common.fused_actor_critic), where the networks allow it (flat observations, tanh/ReLU "
        "MLPs, categorical or Gaussian head without gSDE); the same gradients to float rounding. "
        "False: autograd always.",
    )
    numpy_acting: bool = Field(
        True,
        description="Rollouts of a few envs with flat observations and a tanh/ReLU MLP policy (categorical or "
        "Gaussian head, no gSDE) and value function act in NumPy on views of the weights "
        "(core_rl.common.numpy_acting): the same distribution, log-probabilities and values to float rounding, "
        "without torch's per-op overhead. False: torch always.",
    )
    share_encoder: bool | None = Field(
        None,
        description="PPO and A2C: one observation encoder φ(s) for the policy and the value function, trained "
        "by their one loss and run once per batch (SB3's share_features_extractor). None: shared when the "
        "encoder is convolutional (image observations, as SB3's CnnPolicy), separate otherwise (a flat "
        "encoder has no parameters). True is refused by agents that fit V_φ by a loss or optimizer of its own.",
    )

    schedule_fields: ClassVar[dict[str, str]] = {"lr": "lr_schedule"}

    @model_validator(mode="after")
    def _log_std_schedule(self) -> "OnPolicyConfig":
        if self.log_std_final is None:
            return self
        if not math.isfinite(self.log_std_final) or self.log_std_final > self.log_std_init:
            raise ValueError(
                f"log_std_final={self.log_std_final} must be a finite number ≤ log_std_init={self.log_std_init} "
                "(the ceiling on log σ only falls)"
            )
        if self.use_sde:
            raise ValueError("log_std_final schedules the state-independent log σ; gSDE (use_sde=True) has none")
        return self

    @model_validator(mode="after")
    def _critic_needed(self) -> "OnPolicyConfig":
        if not self.use_critic and self.advantage in ("gae", "nstep"):
            raise ValueError(f"advantage='{self.advantage}' needs use_critic=True")
        return self


class OnPolicyAgent(Agent):
    config: OnPolicyConfig
    config_cls = OnPolicyConfig
    #: StochasticPolicy's heads: categorical, Gaussian, and MultiDiscrete (Plackett–Luce for a Slate)
    action_spaces = (gym.spaces.Discrete, gym.spaces.Box, gym.spaces.MultiDiscrete)
    collect_mode: Literal["steps", "episodes"] = "steps"
    #: whether the agent's update takes gSDE's policy (its own distribution of the current parameters)
    supports_sde: bool = False
    #: whether the agent's update has the autograd-free form of :meth:`_fused_actor_critic` (PPO, A2C)
    fused_update_supported: bool = False
    #: whether the policy and V_φ may share one encoder: one loss and one optimizer train both (PPO, A2C)
    shared_encoder_supported: bool = False
    #: whether V_φ reads the policy's encoder in this agent (set by ``_build`` from ``share_encoder``)
    shared_encoder: bool = False

    def _build(self) -> None:
        cfg = self.config
        if cfg.log_std_final is not None and not isinstance(self.action_space, gym.spaces.Box):
            raise ConfigError(
                f"config field 'log_std_final': it schedules a Gaussian's log σ; {self.name} on "
                f"{self.action_space} has none"
            )
        if cfg.use_sde and not (self.supports_sde and isinstance(self.action_space, gym.spaces.Box)):
            raise ConfigError(
                f"config field 'use_sde': gSDE is for Box actions of ppo and a2c; {self.name} on "
                f"{self.action_space} cannot use it"
            )
        self.policy = StochasticPolicy(
            self.observation_space,
            self.action_space,
            cfg.hidden_sizes,
            cfg.activation,
            cfg.log_std_init,
            use_sde=cfg.use_sde,
            encoder=cfg.encoder,
        ).to(self.device)
        self.value = (
            ValueFunction(self.observation_space, cfg.hidden_sizes, cfg.activation, cfg.encoder).to(self.device)
            if cfg.use_critic
            else None
        )
        self.shared_encoder = self._shares_encoder()
        if self.shared_encoder:
            self.value.encoder = self.policy.encoder
        self.obs_rms = RunningMeanStd(self.observation_space.shape) if cfg.normalize_obs else None
        self.reward_scaler = RewardScaler(self.n_envs, cfg.gamma) if cfg.normalize_reward else None
        self._build_optimizers()

    @staticmethod
    def _checkpoint_config(config: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint's config as this version reads it: one written before ``share_encoder`` existed
        trained separate encoders, and keeps them."""
        return config if "share_encoder" in config else {**config, "share_encoder": False}

    @classmethod
    def _restore(cls, env: EnvLike, config: dict[str, Any], tracker: Tracker | None) -> Agent:
        return super()._restore(env, cls._checkpoint_config(config), tracker)

    def _shares_encoder(self) -> bool:
        """Whether V_φ reads the policy's encoder (``share_encoder``; None: for a convolutional encoder)."""
        share = self.config.share_encoder
        if share is None:
            return self.shared_encoder_supported and self.value is not None and self.policy.encoder.cnn is not None
        if share and not (self.shared_encoder_supported and self.value is not None):
            why = "it has no value function" if self.value is None else "it fits V_φ by a loss of its own"
            raise ConfigError(f"config field 'share_encoder': {self.name} cannot share its encoder ({why})")
        return share

    def _policy_value_parameters(self) -> list[torch.nn.Parameter]:
        """The policy's and V_φ's parameters, a shared encoder's once."""
        value = list(self.value.parameters()) if self.value is not None else []
        return list(dict.fromkeys([*self.policy.parameters(), *value]))

    def _build_optimizers(self) -> None:
        self.optimizer = make_adam(self._policy_value_parameters(), lr=self.config.lr, eps=1e-5)

    def _distribution_and_value(self, obs_t: torch.Tensor) -> tuple[Distribution, torch.Tensor]:
        """π_θ(·|s) and V_φ(s) of a batch, a shared encoder run once."""
        if self.shared_encoder:
            features = self.policy.encoder(obs_t)
            return self.policy.distribution_of_features(features), self.value.of_features(features)
        return self.policy.distribution(obs_t), self.value(obs_t)

    # ---- helpers ---------------------------------------------------------------------------
    def _preprocess_obs(self, obs: np.ndarray) -> np.ndarray:
        if self.obs_rms is not None:
            return self.obs_rms.normalize(obs)
        return obs.astype(np.float32) if obs.dtype == np.float64 else obs

    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        dist = self.policy.distribution(obs)
        return dist.mode() if deterministic else dist.sample()

    def _value_of(self, obs_t: torch.Tensor) -> torch.Tensor:
        if self.value is None:
            return torch.zeros(obs_t.shape[0], device=self.device)
        fused = self._fused_actor_critic()
        return fused.values(obs_t) if fused is not None else self.value(obs_t)

    def _progress_remaining(self, total: int | None = None) -> float:
        total = total or getattr(self, "_target_steps", None)
        if not total:
            return 1.0
        return max(0.0, 1.0 - self.num_timesteps / total)

    def _apply_lr_schedule(self) -> float:
        lr = scheduled(self.config.lr, self.config.lr_schedule, self._progress_remaining())
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def log_std_ceiling(self) -> float | None:
        r"""The ceiling on log σ now (``log_std_final``; None without it):

        .. math:: \bar\ell(t) = \ell_0 + (\ell_1 - \ell_0)\,\min\big(1,\ \tfrac{t}{fT}\big),

        with :math:`\ell_0` = ``log_std_init``, :math:`\ell_1` = ``log_std_final``, f =
        ``log_std_anneal_fraction``, t the steps taken and T the run's (``learn``'s target)."""
        cfg = self.config
        if cfg.log_std_final is None:
            return None
        elapsed = 1.0 - self._progress_remaining()
        frac = min(1.0, elapsed / cfg.log_std_anneal_fraction)
        return cfg.log_std_init + (cfg.log_std_final - cfg.log_std_init) * frac

    @torch.no_grad()
    def _apply_log_std_ceiling(self) -> float | None:
        """log σ ← min(log σ, :meth:`log_std_ceiling`) in place (the optimizers keep their state); the ceiling."""
        ceiling = self.log_std_ceiling()
        if ceiling is not None:
            self.policy.log_std.clamp_(max=ceiling)
        return ceiling

    def learn(self, total_steps: int, **kwargs):  # type: ignore[override]
        self._target_steps = (
            self.num_timesteps + int(total_steps)
            if not getattr(self, "_target_steps", None)
            else max(self._target_steps, self.num_timesteps + int(total_steps))
        )
        return super().learn(total_steps, **kwargs)

    # ---- sampling --------------------------------------------------------------------------
    @torch.no_grad()
    def collect(self) -> RolloutBatch:
        """Run π_θ in the vector env: ``n_steps`` steps per env, or whole episodes.

        In ``episodes`` mode the envs are reset first, stepped until at least n_envs·n_steps steps
        are gathered, and each env's last episode is finished; steps an env takes after its
        last counted episode are masked out (``valid``), so no episode is cut short.
        """
        cfg = self.config
        episodes = self.collect_mode == "episodes"
        if episodes:
            self._obs, _ = self.env.reset()
            self._ep_return[:] = 0.0
            self._ep_length[:] = 0
        N, min_steps = self.n_envs, cfg.n_envs * cfg.n_steps
        obs_l, act_l, logp_l, rew_l, done_l, start_l, val_l, valid_l = ([] for _ in range(8))
        active = np.ones(N, dtype=bool)
        episode_start = np.ones(N, dtype=bool) if episodes else getattr(self, "_episode_start", np.ones(N, dtype=bool))
        counted = 0
        t = 0
        sde = getattr(self.policy, "sde", None)
        actor = self._numpy_actor(cfg.n_steps if not episodes else 256)
        self._rollout_begin(episode_start)
        for part in self.parts:
            part.rollout_begin(self)
        while True:
            if sde is not None and (t == 0 or (cfg.sde_sample_freq > 0 and t % cfg.sde_sample_freq == 0)):
                sde.reset(N)  # gSDE: new exploration matrices, one per env
            if self.obs_rms is not None:
                self.obs_rms.update(self._obs)
            if actor is not None:  # NumPy rows, one tensor each per rollout
                obs_t = self._preprocess_obs(np.asarray(self._obs))
                actions, log_probs, values = actor.act(obs_t)
                env_actions = self._env_action(actions)
            else:
                obs_t = self._obs_tensor(self._obs)
                dist, values = self._policy_step(obs_t, episode_start)
                actions = dist.sample()
                log_probs = dist.log_prob(actions)
                env_actions = self._to_env_action(actions)
            next_obs, rewards, terminated, truncated, info = self.env.step(env_actions)
            dones = terminated | truncated
            self._track_episodes(rewards * active if episodes else rewards, dones & active if episodes else dones, info)
            rewards = rewards.astype(np.float32)
            if self.reward_scaler is not None:
                rewards = self.reward_scaler(rewards, dones).astype(np.float32)
            bootstrap = truncated & ~terminated
            if bootstrap.any() and self.value is not None:
                idx = np.flatnonzero(bootstrap)
                final_obs = np.stack([info["final_obs"][i] for i in idx])
                rewards[bootstrap] += cfg.gamma * self._bootstrap_values(self._obs_tensor(final_obs), idx).cpu().numpy()
            obs_l.append(obs_t)
            act_l.append(actions)
            logp_l.append(log_probs)
            val_l.append(values)
            # NumPy rows, one tensor each per rollout (four tensor conversions per step cost ~10 µs)
            rew_l.append(rewards)
            done_l.append(dones)
            start_l.append(episode_start)
            if episodes:
                valid_l.append(active.copy())
                counted += int(active.sum())
            episode_start = dones
            self._rollout_advance()
            self._obs = next_obs
            t += 1
            self.num_timesteps += N
            if episodes:
                if counted >= min_steps:
                    active &= ~dones
                if not active.any():
                    break
            elif t >= cfg.n_steps:
                break
        self._episode_start = episode_start
        last_value = self._rollout_end_value(self._obs_tensor(self._obs), episode_start)
        if episodes:
            last_value = last_value * torch.as_tensor(~episode_start, device=last_value.device)
        stack = lambda xs: torch.stack(xs, 0).to(self.device)  # noqa: E731
        rows = lambda xs: torch.from_numpy(np.stack(xs).astype(np.float32, copy=False)).to(self.device)  # noqa: E731
        if actor is not None:
            stack = lambda xs: torch.from_numpy(np.stack(xs))  # noqa: E731
        batch = self._make_rollout_batch(
            obs=stack(obs_l),
            actions=stack(act_l),
            log_probs=stack(logp_l),
            rewards=rows(rew_l),
            dones=rows(done_l),
            episode_starts=rows(start_l),
            values=stack(val_l),
            valid=rows(valid_l) if episodes else torch.ones(t, N, device=self.device),
            last_value=last_value.float(),
        )
        for part in self.parts:
            batch = part.rollout_batch(self, batch)
        return batch

    def _numpy_actor(self, block: int) -> NumpyActor | None:
        """This rollout's :class:`~core_rl.common.numpy_acting.NumpyActor` (``numpy_acting``), or None: acting
        in torch, where it does not apply or a subclass steps the policy itself (``_policy_step``)."""
        if not self.config.numpy_acting or type(self)._policy_step is not OnPolicyAgent._policy_step:
            return None
        key = NumpyActor.key_of(self.policy, self.value, self.n_envs)
        cached = getattr(self, "_numpy_actor_cache", None)  # (key, actor or None): building costs ~70 µs
        if cached is None or cached[0] != key:
            cached = self._numpy_actor_cache = (key, NumpyActor.build(self.policy, self.value, self.n_envs))
        actor = cached[1]
        noise = getattr(self, "_given_noise", None)  # a distributed worker's share of the learner's draws
        return None if actor is None else actor.start(block, noise)

    # ---- the rollout's per-step hooks (a recurrent agent threads its hidden states through them) ----
    def _rollout_begin(self, episode_start: np.ndarray) -> None:
        """Called once before the first step of a rollout."""

    def _policy_step(self, obs_t: torch.Tensor, episode_start: np.ndarray) -> tuple[Distribution, torch.Tensor]:
        """π_θ(·|s_t) and V(s_t) for the current observations (``episode_start``: which envs just reset)."""
        fused = self._fused_actor_critic()
        if fused is not None:
            return fused.act(obs_t)
        if self.value is None:
            return self.policy.distribution(obs_t), self._value_of(obs_t)
        return self._distribution_and_value(obs_t)

    def _bootstrap_values(self, final_obs_t: torch.Tensor, env_idx: np.ndarray) -> torch.Tensor:
        """V(s_final) of the truncated episodes of envs ``env_idx`` at the current step."""
        return self._value_of(final_obs_t)

    def _rollout_advance(self) -> None:
        """Called after every env step of a rollout."""

    def _rollout_end_value(self, obs_t: torch.Tensor, episode_start: np.ndarray) -> torch.Tensor:
        """V(s_T) of the observations after the last step (the GAE bootstrap)."""
        return self._value_of(obs_t)

    def _make_rollout_batch(self, **fields: torch.Tensor) -> RolloutBatch:
        return RolloutBatch(**fields)

    # ---- estimation --------------------------------------------------------------------------
    def estimate(self, batch: RolloutBatch) -> RolloutBatch:
        """Fill ``batch.returns`` (the critic's regression target) and ``batch.advantages``, then let
        every part add its estimates (:meth:`~core_rl.common.parts.Part.estimate`)."""
        cfg = self.config
        r, d, v, last = batch.rewards, batch.dones, batch.values, batch.last_value
        if cfg.advantage == "gae":
            adv = R.gae(r, v, d, last, cfg.gamma, cfg.gae_lambda)
            ret = adv + v
        elif cfg.advantage == "nstep":
            ret = R.nstep_returns(r, v, d, cfg.gamma, cfg.n_step, last)
            adv = ret - v
        elif cfg.advantage == "reward_to_go":
            ret = R.reward_to_go(r, d, cfg.gamma, last if self.value is not None else None)
            adv = ret - v if self.value is not None else ret.clone()
        else:  # "return": the whole trajectory's return r(τ) at every step (no causality)
            ret = R.reward_to_go(r, d, cfg.gamma, last if self.value is not None else None)
            adv = R.discounted_return(r, d, cfg.gamma, batch.episode_starts)
        batch.returns, batch.advantages = ret, adv
        for part in self.parts:
            batch = part.estimate(self, batch)
        return batch

    @staticmethod
    def normalize(x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean()) / (x.std() + 1e-8) if x.numel() > 1 else x - x.mean()

    def _iterate(self) -> dict[str, float]:
        """Collect, estimate, improve; the parts' ``before_update``/``after_update`` around :meth:`update`."""
        self._apply_lr_schedule()
        ceiling = self._apply_log_std_ceiling()
        with self.weights_fixed():  # the rollout and its estimates read one set of weights
            batch = self.estimate(self.collect())
        before: dict[str, float] = {} if ceiling is None else {"log_std_ceiling": ceiling}
        for part in self.parts:
            before.update(part.before_update(self, batch))
        metrics = self.update(batch)
        metrics.update(before)
        for part in self.parts:
            metrics.update(part.after_update(self, batch))
        return metrics

    def update(self, batch: RolloutBatch) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fused_actor_critic(self) -> FusedActorCritic | None:
        """The autograd-free update of the policy and value MLPs (:mod:`core_rl.common.fused_actor_critic`),
        or None when ``fused_update`` is off or the networks or optimizer do not fit it."""
        if not (self.fused_update_supported and self.config.fused_update):
            return None
        key = (self.policy, self.value, self.optimizer)
        cached = getattr(self, "_fused_cache", None)
        if cached is None or any(a is not b for a, b in zip(cached[0], key)):
            cached = self._fused_cache = (key, FusedActorCritic.build(*key))
        return cached[1]

    def _clip_and_step(
        self, loss: torch.Tensor, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.Tensor | float:
        """:func:`core_rl.common.optim.step` with this config's ``max_grad_norm``; the pre-clip norm, or 0.0."""
        norm = optim.step(optimizer or self.optimizer, loss, self.config.max_grad_norm)
        return 0.0 if norm is None else norm  # a tensor: callers convert once per update, not once per minibatch
