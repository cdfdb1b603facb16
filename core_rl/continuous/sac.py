r"""Soft actor-critic: a trained *stochastic* maximizer of a soft Q-function (Haarnoja et al. 2018).

Q-learning with continuous actions by training a maximizer (notes 9/14), in the maximum-entropy
objective :math:`\sum_t \mathbb E[r_t + \alpha\mathcal H(\pi(\cdot|s_t))]`. The soft Bellman target
replaces :math:`\max_{a'}Q` by the soft state value

.. math::
    V(s') = \mathbb E_{a'\sim\pi}\big[\min_{k=1,2} Q_{\phi'_k}(s',a') - \alpha\log\pi(a'|s')\big], \qquad
    y = r + \gamma^n (1-d)\, V(s'),

the actor :math:`a = \tanh(\mu_\theta(s) + \sigma_\theta(s)\,\epsilon)` (reparametrized) minimizes
:math:`\mathbb E_{s,\epsilon}[\alpha\log\pi_\theta(a|s) - \min_k Q_{\phi_k}(s,a)]`, and the temperature
follows the constraint :math:`\mathbb E[-\log\pi] \ge \bar{\mathcal H} = -|A|` by dual descent on
:math:`\log\alpha`: :math:`\min_{\log\alpha} -\log\alpha\,(\log\pi(a|s) + \bar{\mathcal H})`.

:func:`soft_state_value` and :func:`soft_bellman_target` are the pieces a soft Q-learning agent
reuses: with the importance-sampled ``estimator="logsumexp"``,
:math:`V(s) \approx \alpha\big(\log\sum_m e^{Q(s,a_m)/\alpha - \log q(a_m|s)} - \log M\big)`, the soft
maximum :math:`\alpha\log\int e^{Q(s,a)/\alpha}da` of soft Q-learning for any proposal q.

``use_sde``: the actor explores with gSDE (:class:`~core_rl.common.distributions.StateDependentNoise`),
as SB3's SAC: the mean is clipped to [-2, 2] before the tanh, the noise matrix log σ starts at
``log_std_init``; it is resampled at the start of every collection phase (one matrix per env) and
every ``sde_sample_freq`` env steps within it, and once per gradient step for the actor's loss.

Example (a point in the plane that must reach (1, 0), reward −‖x − g‖ per step for 20 steps: the
random policy scores ≈ −22, the best ≈ −2; 600 steps of SAC take it well past random)::

    >>> from core_rl.meta.envs import PointGoal
    >>> settings = {"hidden_sizes": (64, 64), "batch_size": 64, "learning_starts": 100}
    >>> agent = SAC(PointGoal(), {**settings, "seed": 0}).learn(600)
    >>> agent.evaluate(n_episodes=5)["mean_return"] > -15
    True
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field
from torch import nn

from core_rl.common.distributions import GSDEGaussian, StateDependentNoise, TanhGaussian
from core_rl.common.errors import ConfigError
from core_rl.common.networks import InitName, ObsEncoder, mlp
from core_rl.common.off_policy import polyak_update
from core_rl.common.optim import make_adam
from core_rl.common.replay import ReplaySample
from core_rl.continuous.critics import ContinuousQAgent, ContinuousQConfig


def soft_state_value(
    q: torch.Tensor,
    log_prob: torch.Tensor,
    alpha: torch.Tensor | float,
    estimator: Literal["mean", "logsumexp"] = "mean",
) -> torch.Tensor:
    r"""Soft value V(s) from M action samples per state: ``q`` and ``log_prob`` are ``[M, B]`` or ``[B]``.

    ``"mean"``: :math:`\frac1M\sum_m Q(s,a_m) - \alpha\log\pi(a_m|s)` with :math:`a_m\sim\pi` (SAC).
    ``"logsumexp"``: :math:`\alpha(\mathrm{logsumexp}_m(Q/\alpha - \log q) - \log M)`, an
    importance-sampled :math:`\alpha\log\int\exp(Q(s,a)/\alpha)\,da` with proposal q (soft Q-learning).
    """
    if q.dim() == 1:
        q, log_prob = q.unsqueeze(0), log_prob.unsqueeze(0)
    if estimator == "mean":
        return (q - alpha * log_prob).mean(0)
    m = q.shape[0]
    return alpha * (torch.logsumexp(q / alpha - log_prob, dim=0) - math.log(m))


def soft_bellman_target(batch: ReplaySample, next_value: torch.Tensor) -> torch.Tensor:
    r""":math:`y = \sum_{k<n}\gamma^k r_{t+k} + \gamma^n(1-d)\,V_{soft}(s_{t+n})`."""
    return batch.rewards + batch.discounts * (1.0 - batch.dones) * next_value


class TanhGaussianActor(nn.Module):
    r""":math:`\pi_\theta(a|s)`: a = tanh(u), u ~ N(μ_θ(s), σ_θ(s)²), log σ clamped to [min, max];
    with ``use_sde``, u = clip(μ_θ(s), ±2) + z(s)ᵀW (gSDE, ``self.sde``)."""

    #: SB3's clip_mean for gSDE: μ ∈ [-2, 2] before the tanh
    sde_clip_mean = 2.0

    def __init__(
        self,
        obs_space: gym.Space,
        action_dim: int,
        hidden_sizes: tuple[int, ...] = (256, 256),
        activation: str = "relu",
        log_std_min: float = -20.0,
        log_std_max: float = 2.0,
        use_sde: bool = False,
        log_std_init: float = -3.0,
        encoder: str = "auto",
        init: InitName = "orthogonal",
    ):
        super().__init__()
        self.encoder = ObsEncoder(obs_space, encoder)
        self.sde = (
            StateDependentNoise(hidden_sizes[-1] if hidden_sizes else self.encoder.dim, action_dim, log_std_init)
            if use_sde
            else None
        )
        out = action_dim if use_sde else 2 * action_dim
        self.net = mlp(self.encoder.dim, out, hidden_sizes, activation, out_gain=0.01, init=init)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def distribution(self, obs: torch.Tensor) -> TanhGaussian | GSDEGaussian:
        if self.sde is not None:
            latent = self.net[:-1](self.encoder(obs)).float()
            mean = self.net[-1](latent).float().clamp(-self.sde_clip_mean, self.sde_clip_mean)
            return self.sde.distribution(mean, latent, squash=True)
        # float32 also under a bf16 autocast (matmul_dtype): log π needs it
        mean, log_std = self.net(self.encoder(obs)).float().chunk(2, dim=-1)
        return TanhGaussian(mean, log_std.clamp(self.log_std_min, self.log_std_max))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparametrized sample a ∈ (-1, 1)^|A| and log π(a|s)."""
        return self.distribution(obs).rsample_and_log_prob()


class SACConfig(ContinuousQConfig):
    n_critics: int = Field(2, ge=1, description="Critics whose minimum is the soft target (clipped double Q).")
    ent_coef: float | Literal["auto"] = Field("auto", description="α, or 'auto' to tune it to the target entropy.")
    init_ent_coef: float = Field(1.0, gt=0.0, description="Initial α when ent_coef='auto'.")
    target_entropy: float | Literal["auto"] = Field("auto", description="H̄ of the α constraint ('auto': −|A|).")
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    use_sde: bool = Field(False, description="Explore with gSDE (state-dependent noise) instead of i.i.d. noise.")
    sde_sample_freq: int = Field(
        -1, ge=-1, description="gSDE: env steps between noise resamples (-1: once per collection phase)."
    )
    log_std_init: float = Field(-3.0, description="gSDE: initial log σ of the noise matrix (SB3's default -3).")


class SAC(ContinuousQAgent):
    """Soft actor-critic with twin critics and automatic temperature (``SAC(env, config).learn(steps)``)."""

    name = "sac"
    config: SACConfig
    config_cls = SACConfig
    bf16_updates = True
    flat_optimizers = ("critic_optimizer", "actor_optimizer")

    def _build_networks(self) -> None:
        cfg = self.config
        if cfg.use_sde and cfg.matmul_dtype != "float32":
            raise ConfigError("config field 'matmul_dtype': 'bfloat16' is not supported with use_sde=True")
        self.actor = TanhGaussianActor(
            self.observation_space,
            self.action_dim,
            cfg.hidden_sizes,
            cfg.activation,
            cfg.log_std_min,
            cfg.log_std_max,
            use_sde=cfg.use_sde,
            log_std_init=cfg.log_std_init,
            encoder=cfg.encoder,
            init=cfg.init,
        ).to(self.device)
        self.critic = self._make_critic(cfg.n_critics)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = make_adam(self.actor.parameters(), cfg.lr)
        self.critic_optimizer = make_adam(self.critic.parameters(), cfg.lr)
        self.target_entropy = -float(self.action_dim) if cfg.target_entropy == "auto" else float(cfg.target_entropy)
        self.auto_alpha = cfg.ent_coef == "auto"
        init = cfg.init_ent_coef if self.auto_alpha else float(cfg.ent_coef)
        # a module so that checkpoints keep it; a fixed α is the same parameter, never stepped
        self.temperature = nn.Module()
        self.temperature.log_alpha = nn.Parameter(
            torch.tensor(math.log(init), device=self.device), requires_grad=self.auto_alpha
        )
        if self.auto_alpha:
            self.alpha_optimizer = make_adam([self.temperature.log_alpha], cfg.lr)

    def _before_env_step(self, step: int) -> None:
        freq = self.config.sde_sample_freq
        if self.actor.sde is not None and (step == 0 or (freq > 0 and step % freq == 0)):
            self.actor.sde.reset(self.n_envs)

    def _update_targets(self) -> None:
        polyak_update(self.critic, self.critic_target, self.config.tau)

    @property
    def alpha(self) -> float:
        return float(self.temperature.log_alpha.detach().exp())

    def _normalized_action(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        dist = self.actor.distribution(obs)
        return dist.mode() if deterministic else dist.sample()

    def _numpy_behaviour_mirrors_explore(self) -> bool:
        return (
            self.actor.sde is None
            and type(self.actor).distribution is TanhGaussianActor.distribution
            and type(self)._normalized_action is SAC._normalized_action
            and type(self)._explore is ContinuousQAgent._explore
        )

    def _numpy_behaviour(self, out: np.ndarray) -> np.ndarray:
        """a = tanh(μ + σ ε), ε ~ N(0, I) from torch's generator (the draw ``TanhGaussian.sample`` takes)."""
        mean, log_std = np.split(out, 2, axis=-1)
        std = np.exp(np.clip(log_std, self.actor.log_std_min, self.actor.log_std_max))
        return np.tanh(mean + std * torch.randn(mean.shape).numpy())

    @torch.no_grad()
    def target_q(self, batch: ReplaySample, alpha: torch.Tensor) -> torch.Tensor:
        next_action, next_log_prob = self.actor(batch.next_obs)
        next_q = self.critic_target.min_q(batch.next_obs, next_action)
        return soft_bellman_target(batch, soft_state_value(next_q, next_log_prob, alpha))

    def actor_loss(
        self, batch: ReplaySample, action: torch.Tensor, log_prob: torch.Tensor, alpha: torch.Tensor
    ) -> torch.Tensor:
        """E[α log π(a|s) − min_k Q_k(s, a)] for reparametrized a ~ π(·|s) (a hook: SAC-Lag adds λ Q_c)."""
        q_pi = self.critic.min_q(batch.obs, action, detach_params=True)
        return (alpha * log_prob - q_pi).mean()

    def train_step(self, batch: ReplaySample) -> dict[str, float]:
        log_alpha = self.temperature.log_alpha
        if self.actor.sde is not None:
            self.actor.sde.reset(1)  # a fresh noise matrix per gradient step (SB3)
        action, log_prob = self.actor(batch.obs)  # a ~ π_θ(·|s), reparametrized
        metrics: dict[str, float] = {}
        if self.auto_alpha:
            # the loss −log α · mean(log π + H̄) has the gradient −mean(log π + H̄): set in closed form, without
            # an autograd pass for one scalar (~0.2 ms of a ~10 ms step, measured)
            entropy_gap = log_prob.detach().mean() + self.target_entropy
            log_alpha.grad = -entropy_gap
            if self.log_metrics:
                metrics["alpha_loss"] = -(log_alpha.detach() * entropy_gap).item()
            self._step_optimizer(self.alpha_optimizer, None)
        alpha = log_alpha.detach().exp()

        target_q = self.target_q(batch, alpha)
        q = self.critic(batch.obs, self.scaler.normalize(batch.actions))  # [K, B]
        critic_loss = 0.5 * (q - target_q).pow(2).mean(1).sum()
        self._step_optimizer(self.critic_optimizer, critic_loss)

        actor_loss = self.actor_loss(batch, action, log_prob, alpha)
        self._step_optimizer(self.actor_optimizer, actor_loss)

        if self._target_update_due():
            self._update_targets()
        if not self.log_metrics:
            return metrics
        metrics.update(
            critic_loss=critic_loss.item(),
            actor_loss=actor_loss.item(),
            q_mean=q.mean().item(),
            alpha=float(alpha),
            entropy=-log_prob.mean().item(),
        )
        return metrics
