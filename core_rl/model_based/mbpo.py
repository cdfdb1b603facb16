r"""Model-based policy optimization: model-generated data for a model-free learner (notes 10/3).

The notes' alternative to backpropagating through a model: use the model only to *generate data*
for a model-free off-policy learner ("less prone to chaos and error building up from a faulty model,
and has more data than model-free"). Dyna-style MBPO (Janner et al. 2019):

1. act in the real env with the learner's policy, append to D_env;
2. every ``model_train_freq`` steps fit a bootstrap ensemble p_φ(s', r | s, a) on D_env;
3. branch short rollouts from real states: s_0 ~ D_env, a_t ~ π(·|s_t), (s_{t+1}, r_t) ~ p_{φ_m}
   with a member m drawn at random per transition, for k steps (k grows from ``rollout_length_min``
   to ``rollout_length_max``), appended to D_model — short branches keep the compounding model
   error small while still covering the states the current policy visits;
4. train the learner on minibatches mixing a fraction ``real_ratio`` of D_env with D_model,
   with a high update-to-data ratio (``gradient_steps`` per env step).

:func:`mbpo_agent` turns *any* off-policy agent class with a replay buffer (SAC, TD3, DDPG, ...)
into its MBPO version: the learner's own ``_iterate`` and ``train_step`` run unchanged on a
:class:`MixedReplay` that serves the mixed minibatches. :class:`MBPO` is the SAC version.

Example (MBPO's SAC on a point that must reach (1, 0): every 100 real steps the ensemble is refitted,
every 25 it branches 64 short rollouts from real states into the model replay, and the rollout
length k grows from 1 to 5 over steps 100–300)::

    >>> from core_rl.meta.envs import PointGoal
    >>> settings = {"hidden_sizes": (64, 64), "batch_size": 64, "learning_starts": 100, "n_members": 3}
    >>> settings |= {"model_hidden_sizes": (64, 64), "model_epochs": 10, "model_train_freq": 100}
    >>> settings |= {"rollout_batch_size": 64, "rollout_schedule": (100, 300)}
    >>> agent = MBPO(PointGoal(), {**settings, "seed": 0}).learn(400)
    >>> agent.rollout_length(), len(agent.model_replay) > 0
    (5, True)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field, create_model

from core_rl.common.config import Widths
from core_rl.common.errors import ConfigError, SpaceError
from core_rl.common.off_policy import OffPolicyAgent, OffPolicyConfig
from core_rl.common.replay import ReplayBuffer, ReplaySample
from core_rl.common.transitions import Transitions
from core_rl.continuous.sac import SAC, SACConfig
from core_rl.model_based.env_models import known_reward, known_termination
from core_rl.model_based.models import ModelConfig, build_model, fit_model


class MixedReplay:
    """Minibatches with a fraction ``real_ratio`` of real transitions, the rest model-generated.

    ``add`` and ``len`` are the real buffer's, so an off-policy learner's loop runs unchanged.
    """

    def __init__(self, real: ReplayBuffer, model: ReplayBuffer, real_ratio: float):
        self.real, self.model, self.real_ratio = real, model, real_ratio

    def __len__(self) -> int:
        return len(self.real)

    def add(self, *args: Any, **kwargs: Any) -> None:
        self.real.add(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # anything else a learner reads from its buffer
        return getattr(self.real, name)

    def sample(self, batch_size: int) -> ReplaySample:
        n_model = 0 if len(self.model) == 0 else int(round(batch_size * (1.0 - self.real_ratio)))
        n_real = batch_size - n_model
        parts = [self.real.sample(n_real)] if n_real else []
        if n_model:
            parts.append(self.model.sample(n_model))
        if len(parts) == 1:
            return parts[0]
        a, b = parts
        return ReplaySample(
            obs=torch.cat([a.obs, b.obs]),
            actions=torch.cat([a.actions, b.actions]),
            rewards=torch.cat([a.rewards, b.rewards]),
            next_obs=torch.cat([a.next_obs, b.next_obs]),
            dones=torch.cat([a.dones, b.dones]),
            discounts=torch.cat([a.discounts, b.discounts]),
        )


class MBPOFields(ModelConfig):
    """The MBPO part of the config (added to the learner's own config)."""

    model_hidden_sizes: Widths = Field((200, 200), description="Hidden widths of the dynamics network.")
    model_activation: str = Field("silu", pattern="^(tanh|relu|elu|gelu|silu)$")
    model_train_freq: int = Field(250, ge=1, description="Env steps between model fits.")
    rollout_batch_size: int = Field(400, ge=1, description="Branched model rollouts per rollout phase.")
    rollout_every: int = Field(25, ge=1, description="Env steps between rollout phases.")
    rollout_length_min: int = Field(1, ge=1)
    rollout_length_max: int = Field(5, ge=1)
    rollout_schedule: tuple[int, int] = Field((2_000, 10_000), description="Env steps over which k grows min→max.")
    model_buffer_size: int = Field(100_000, ge=1, description="Model transitions kept (older ones are replaced).")
    real_ratio: float = Field(0.05, ge=0.0, le=1.0, description="Fraction of real transitions in each minibatch.")


def mbpo_config(base: type[OffPolicyConfig]) -> type[OffPolicyConfig]:
    """The learner's config class plus the :class:`MBPOFields`."""
    return create_model(f"MBPO{base.__name__}", __base__=(base, MBPOFields))  # type: ignore[call-overload]


class MBPOMixin:
    """Dyna/MBPO on top of an :class:`OffPolicyAgent` subclass (placed before it in the MRO)."""

    config: Any

    def _build(self) -> None:
        super()._build()  # type: ignore[misc]
        cfg = self.config
        if not hasattr(self, "replay") or not isinstance(self.replay, ReplayBuffer):  # type: ignore[has-type]
            raise SpaceError(f"{type(self).__name__}: MBPO needs an off-policy learner with a ReplayBuffer")
        if len(self.observation_space.shape) != 1:  # type: ignore[attr-defined]
            raise SpaceError(f"MBPO needs flat Box observations, got {self.observation_space}")  # type: ignore
        self.obs_dim = int(self.observation_space.shape[0])  # type: ignore[attr-defined]
        self.act_dim = int(np.prod(self.action_space.shape))  # type: ignore[attr-defined]
        self.real_replay: ReplayBuffer = self.replay  # type: ignore[has-type]
        self.model = build_model(cfg, self.obs_dim, self.act_dim, cfg.model_hidden_sizes, cfg.model_activation)
        self.model_optimizer = getattr(self.model, "optimizer", None)
        self.model_replay = ReplayBuffer(
            max(cfg.model_buffer_size, cfg.rollout_batch_size),
            cfg.rollout_batch_size,
            (self.obs_dim,),
            (self.act_dim,),
            gamma=cfg.gamma,
            seed=cfg.seed + 1,
            device=self.device,
        )  # type: ignore[attr-defined]
        self.replay = MixedReplay(self.real_replay, self.model_replay, cfg.real_ratio)
        env_id = self.env_id  # type: ignore[attr-defined]
        self.reward_fn = known_reward(env_id) if cfg.reward == "known" else None
        self.termination_fn = known_termination(env_id)
        self._last_fit_step = -(10**12)
        self._last_rollout_step = -(10**12)
        self._model_metrics: dict[str, float] = {}
        self._rollout_rng = torch.Generator().manual_seed(cfg.seed + 2)

    def rollout_length(self) -> int:
        cfg = self.config
        start, end = cfg.rollout_schedule
        frac = float(np.clip((self.num_timesteps - start) / max(end - start, 1), 0.0, 1.0))  # type: ignore
        return int(round(cfg.rollout_length_min + frac * (cfg.rollout_length_max - cfg.rollout_length_min)))

    def fit_model(self) -> dict[str, float]:
        metrics = fit_model(self.model, self.config, Transitions.from_replay(self.real_replay))
        self._last_fit_step = self.num_timesteps  # type: ignore[attr-defined]
        return metrics

    def _real_starts(self, n: int) -> torch.Tensor:
        t, env = self.real_replay.sample_indices(n)
        return self.real_replay.obs[t, env].float()

    @torch.no_grad()
    def rollout_model(self) -> dict[str, float]:
        """Branch ``rollout_batch_size`` k-step rollouts of the current policy from real states."""
        cfg = self.config
        n, k = cfg.rollout_batch_size, self.rollout_length()
        M = int(getattr(self.model, "n_members", 1))
        s = self._real_starts(n)
        total_reward, terminations = 0.0, 0
        self.model.begin_rollout()
        for _ in range(k):
            a = self._explore(s.to(self.device)).float().cpu().reshape(n, self.act_dim)  # type: ignore[attr-defined]
            # a random member for every transition: shuffle the batch into M groups
            member_of = torch.randint(0, M, (n,), generator=self._rollout_rng)
            order = torch.argsort(member_of * n + torch.randperm(n, generator=self._rollout_rng))
            per = -(-n // M)
            pad = per * M - n
            idx = torch.cat([order, order[:pad]]) if pad else order
            s_next, r = self.model.propagate(s[idx].reshape(M, per, -1), a[idx].reshape(M, per, -1), sample=True)
            s_next_flat = torch.empty_like(s)
            s_next_flat[order] = s_next.reshape(M * per, -1)[:n]
            if self.reward_fn is not None:
                reward = self.reward_fn(s, a, s_next_flat)
            else:
                r_flat = torch.empty(n)
                r_flat[order] = r.reshape(-1)[:n]
                reward = r_flat
            done = (
                self.termination_fn(s, a, s_next_flat)
                if self.termination_fn is not None
                else torch.zeros(n, dtype=torch.bool)
            )
            self.model_replay.add(
                s.numpy(), a.numpy(), reward.numpy(), s_next_flat.numpy(), done.numpy(), np.ones(n, dtype=bool)
            )
            total_reward += float(reward.mean())
            terminations += int(done.sum())
            # terminated branches restart from fresh real states
            s = torch.where(done[:, None], self._real_starts(n), s_next_flat)
        self._last_rollout_step = self.num_timesteps  # type: ignore[attr-defined]
        return {
            "rollout_length": float(k),
            "model_reward": total_reward / k,
            "model_buffer": float(len(self.model_replay)),
            "model_terminations": float(terminations),
        }

    def _iterate(self) -> dict[str, float]:
        cfg = self.config
        steps = self.num_timesteps  # type: ignore[attr-defined]
        if steps >= cfg.learning_starts and len(self.real_replay) >= max(cfg.batch_size, 2):
            if steps - self._last_fit_step >= cfg.model_train_freq:
                self._model_metrics = self.fit_model()
            if steps - self._last_rollout_step >= cfg.rollout_every:
                self._model_metrics.update(self.rollout_model())
        metrics = super()._iterate()  # type: ignore[misc]
        return {**metrics, **self._model_metrics}


def mbpo_agent(base: type[OffPolicyAgent], name: str | None = None) -> type[OffPolicyAgent]:
    """The MBPO version of any off-policy agent class: ``mbpo_agent(TD3)("Pendulum-v1").learn(5000)``."""
    if not (isinstance(base, type) and issubclass(base, OffPolicyAgent)):
        raise ConfigError(f"mbpo_agent needs an OffPolicyAgent subclass, got {base!r}")
    config_cls = mbpo_config(base.config_cls)
    return type(
        f"MBPO{base.__name__}",
        (MBPOMixin, base),
        {
            "name": name or f"mbpo_{base.name}",
            "config_cls": config_cls,
            "__module__": __name__,
            "__doc__": f"MBPO with {base.__name__} as the model-free learner.",
        },
    )


class MBPOConfig(SACConfig, MBPOFields):
    gradient_steps: int = Field(
        10, ge=0, description="Learner updates per env step (MBPO's high update-to-data ratio)."
    )
    learning_starts: int = Field(250, ge=0, description="Random env steps before the first model fit and update.")


class MBPO(MBPOMixin, SAC):  # type: ignore[misc]
    """MBPO with soft actor-critic as the learner (Janner et al.'s setup)."""

    name = "mbpo"
    config_cls = MBPOConfig
