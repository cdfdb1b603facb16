r"""DIAYN, "diversity is all you need": unsupervised skill discovery (notes 11/2, unsupervised RL).

Without any reward, learn a repertoire of skills :math:`\pi_\theta(a|s, z)`, :math:`z \sim p(z)` (K
skills, p uniform), that are as different from each other as possible: maximize the mutual
information between skills and the states they visit while acting as randomly as possible,

.. math::
    \mathcal F(\theta) = I(S; Z) + \mathcal H[A|S] - I(A; Z|S)
                       = \mathcal H[Z] - \mathcal H[Z|S] + \mathcal H[A|S, Z].

A learned discriminator :math:`q_\phi(z|s)` lower-bounds :math:`-\mathcal H[Z|S]` by
:math:`\mathbb E[\log q_\phi(z|s)]` (Barber–Agakov), which gives the pseudo-reward

.. math:: r_z(s, a, s') = \log q_\phi(z|s') - \log p(z)

(positive when s' reveals its skill better than chance), maximized together with the entropy term
by soft actor-critic (:class:`core_rl.continuous.sac.SAC`), while :math:`q_\phi` is trained by
cross-entropy on the visited states. The skill is sampled at every episode start and appended
one-hot to the observation (:class:`SkillWrapper`); the reward is recomputed at *replay* time
with the current discriminator, so stale pseudo-rewards never enter the target (hence ``n_step=1``).

Example (4 skills of a reward-free point mass in the square, the settings of
``deeprl experiment diayn``: after 4,000 steps the discriminator tells the skills apart from the
states they visit far more often than chance, 1/4)::

    >>> from core_rl.meta.experiments import DIAYN_POINT
    >>> agent = DIAYN("meta/Point-v0", {**DIAYN_POINT, "n_envs": 4, "seed": 0}).learn(4000)
    >>> states = agent.skill_rollouts(5, deterministic=False)   # [skill, episode, step, (x, y)]
    >>> states.shape[:2], agent.discriminator_accuracy(states[:, :, 1:]) > 0.5
    ((4, 5), True)
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv, VectorWrapper
from pydantic import Field, model_validator
from torch import nn

from core_rl.common.config import Widths
from core_rl.common.envs import make_vec_env
from core_rl.common.errors import ConfigError, SpaceError
from core_rl.common.networks import mlp
from core_rl.common.optim import make_adam
from core_rl.common.replay import ReplaySample
from core_rl.continuous.sac import SAC, SACConfig


class SkillWrapper(VectorWrapper):
    """Appends a one-hot skill z to every observation; z ~ Uniform{0..K−1} per env at each episode start.

    ``fixed_skills`` (an int per env, or None) pins the skills instead. ``info["final_obs"]`` of a
    finished episode carries the skill of the episode that finished.
    """

    def __init__(self, env: VectorEnv, n_skills: int, seed: int = 0):
        super().__init__(env)
        space = env.single_observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise SpaceError(f"DIAYN needs a flat Box observation space, got {space}")
        self.n_skills = int(n_skills)
        low = np.concatenate([space.low, np.zeros(self.n_skills)]).astype(np.float32)
        high = np.concatenate([space.high, np.ones(self.n_skills)]).astype(np.float32)
        self.single_observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.rng = np.random.default_rng(seed)
        self.skills = np.zeros(self.num_envs, dtype=np.int64)
        self.fixed_skills: np.ndarray | None = None
        self._eye = np.eye(self.n_skills, dtype=np.float32)

    def _draw(self, mask: np.ndarray) -> None:
        if self.fixed_skills is not None:
            self.skills[mask] = np.asarray(self.fixed_skills)[mask]
        else:
            self.skills[mask] = self.rng.integers(self.n_skills, size=int(mask.sum()))

    def _with_skill(self, obs: np.ndarray, skills: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(obs, dtype=np.float32), self._eye[skills]], axis=-1)

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if isinstance(seed, int):
            self.rng = np.random.default_rng(seed + 104729)
        obs, info = self.env.reset(seed=seed, options=options)
        self._draw(np.ones(self.num_envs, dtype=bool))
        return self._with_skill(obs, self.skills), info

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        dones = np.asarray(terminated) | np.asarray(truncated)
        if dones.any():
            final = np.array(info["final_obs"], dtype=object)
            for i in np.flatnonzero(dones):
                final[i] = self._with_skill(info["final_obs"][i], self.skills[i])
            info = {**info, "final_obs": final}
            self._draw(dones)
        return self._with_skill(obs, self.skills), rewards, terminated, truncated, info


class Discriminator(nn.Module):
    """q_φ(z|s): logits over the K skills from the state (the skill part of the observation dropped)."""

    def __init__(self, state_dim: int, n_skills: int, hidden_sizes: tuple[int, ...] = (64, 64)):
        super().__init__()
        self.state_dim = int(state_dim)
        self.net = mlp(self.state_dim, n_skills, hidden_sizes, "relu")

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs[..., : self.state_dim].float())


class DIAYNConfig(SACConfig):
    n_skills: int = Field(8, ge=2, description="K, the number of skills (p(z) uniform).")
    disc_lr: float = Field(3e-4, gt=0.0, description="Learning rate of the discriminator q_φ(z|s).")
    disc_hidden_sizes: Widths = Field((64, 64), description="Hidden sizes of the discriminator.")

    @model_validator(mode="after")
    def _one_step(self) -> "DIAYNConfig":
        if self.n_step != 1:
            raise ValueError("diayn recomputes rewards at replay time and needs n_step=1")
        return self


class DIAYN(SAC):
    """SAC on the DIAYN pseudo-reward log q_φ(z|s') − log p(z); see the module docstring."""

    name = "diayn"
    config: DIAYNConfig
    config_cls = DIAYNConfig

    def _wrap_env(self, env: VectorEnv, training: bool) -> VectorEnv:
        env = super()._wrap_env(env, training)
        if not isinstance(env.single_observation_space, gym.spaces.Box):
            raise SpaceError(f"DIAYN needs a Box observation space, got {env.single_observation_space}")
        self.state_dim = int(np.prod(env.single_observation_space.shape))
        return SkillWrapper(env, self.config.n_skills, seed=self.config.seed + (0 if training else 1))

    def _build_networks(self) -> None:
        super()._build_networks()
        cfg = self.config
        self.discriminator = Discriminator(self.state_dim, cfg.n_skills, cfg.disc_hidden_sizes).to(self.device)
        self.disc_optimizer = make_adam(self.discriminator.parameters(), cfg.disc_lr)
        self.log_p_z = -math.log(cfg.n_skills)

    def skill_of(self, obs: torch.Tensor) -> torch.Tensor:
        """The skill index encoded in (a batch of) augmented observations."""
        return obs[..., self.state_dim :].argmax(-1)

    def pseudo_reward(self, next_obs: torch.Tensor) -> torch.Tensor:
        """r = log q_φ(z|s') − log p(z) for augmented next observations."""
        with torch.no_grad():
            log_q = torch.log_softmax(self.discriminator(next_obs), -1)
            return log_q.gather(-1, self.skill_of(next_obs)[:, None]).squeeze(-1) - self.log_p_z

    def train_step(self, batch: ReplaySample) -> dict[str, float]:
        z = self.skill_of(batch.next_obs)
        disc_loss = nn.functional.cross_entropy(self.discriminator(batch.next_obs), z)
        self._step_optimizer(self.disc_optimizer, disc_loss)
        batch.rewards = self.pseudo_reward(batch.next_obs)
        metrics = super().train_step(batch)
        metrics.update(disc_loss=disc_loss.item(), pseudo_reward=batch.rewards.mean().item())
        return metrics

    # ---- using the skills ------------------------------------------------------------------------
    @torch.no_grad()
    def skill_rollouts(
        self, episodes_per_skill: int = 1, deterministic: bool = True, seed: int | None = None, env: Any = None
    ) -> np.ndarray:
        """States of every step of ``episodes_per_skill`` episodes per skill: ``[K, E, T, state_dim]``.

        All K·E episodes run at once in one vector env (skills pinned per env); every episode must
        have the same length T (the point mass has a fixed horizon).
        """
        K, E = self.config.n_skills, int(episodes_per_skill)
        vec = make_vec_env(env if env is not None else self._env_source, K * E, seed=None)
        wrapped = SkillWrapper(vec, K)
        wrapped.fixed_skills = np.repeat(np.arange(K), E)
        obs, _ = wrapped.reset(seed=self.config.seed + 20_000 if seed is None else seed)
        states, finished = [obs[:, : self.state_dim]], np.zeros(K * E, dtype=bool)
        while not finished.all():
            obs, _, term, trunc, info = wrapped.step(self.predict(obs, deterministic=deterministic))
            dones = term | trunc
            if dones.any() and not dones.all() and not finished.any():
                raise ConfigError("skill_rollouts needs episodes of one fixed length")
            finished |= dones
            s = obs[:, : self.state_dim].copy()
            for i in np.flatnonzero(dones):
                s[i] = info["final_obs"][i][: self.state_dim]
            states.append(s)
        wrapped.close()
        arr = np.stack(states, 1)  # [K·E, T+1, d]
        return arr.reshape(K, E, arr.shape[1], self.state_dim)

    @torch.no_grad()
    def discriminator_accuracy(self, states: np.ndarray) -> float:
        """Accuracy of argmax_z q_φ(z|s) on skill-labelled states ``[K, ...]`` (chance: 1/K)."""
        K = states.shape[0]
        x = torch.as_tensor(states.reshape(K, -1, self.state_dim), dtype=torch.float32)
        pred = self.discriminator(x.reshape(-1, self.state_dim)).argmax(-1).reshape(K, -1)
        return float((pred == torch.arange(K)[:, None]).float().mean())


__all__ = ["DIAYN", "DIAYNConfig", "Discriminator", "SkillWrapper"]
