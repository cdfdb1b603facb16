r"""Proximal policy optimization (clipped surrogate), the practical member of the trust-region family.

The notes (9/19) improve J(θ') − J(θ) by maximizing the importance-weighted surrogate under a KL
constraint,

.. math::
    \theta' \leftarrow \arg\max_{\theta'} \sum_t \mathbb E_{s_t\sim p_\theta}\Big[
        \mathbb E_{a_t\sim\pi_\theta}\Big[\tfrac{\pi_{\theta'}(a_t|s_t)}{\pi_\theta(a_t|s_t)}
        \gamma^t A^{\pi_\theta}(s_t,a_t)\Big]\Big]
    \quad\text{s.t.}\quad D_{KL}(\pi_{\theta'}\,\|\,\pi_\theta) \le \epsilon .

PPO replaces the constraint by clipping the ratio ρ_t = π_θ'(a_t|s_t)/π_θ(a_t|s_t):

.. math::
    L^{CLIP}(\theta') = \mathbb E_t\big[\min(\rho_t \hat A_t,\ \mathrm{clip}(\rho_t, 1-\epsilon, 1+\epsilon)\hat A_t)\big]

optimized for several epochs of minibatch SGD on one batch, plus a value loss
(V_φ(s_t) − \hat y_t)² and an entropy bonus. Â is GAE(λ) by default.

Example (CartPole-v1, 8 envs × 32 steps per batch, 10 epochs of minibatches of 256: 10,000 steps
take the greedy policy far past the random policy's ≈ 22)::

    >>> settings = {"n_envs": 8, "n_steps": 32, "batch_size": 256, "lr": 1e-3}
    >>> agent = PPO("CartPole-v1", {**settings, "seed": 0}).learn(10_000)
    >>> agent.evaluate(n_episodes=5)["mean_return"] > 100
    True
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator

from core_rl.common.buffers import FlatBatch, RolloutBatch
from core_rl.common.fused_actor_critic import FusedActorCritic
from core_rl.common.on_policy import OnPolicyAgent, OnPolicyConfig
from core_rl.common.schedules import scheduled


class PPOConfig(OnPolicyConfig):
    n_steps: int = Field(256, ge=1)
    batch_size: int = Field(64, ge=1, description="Minibatch size.")
    n_epochs: int = Field(10, ge=1)
    clip_range: float = Field(0.2, gt=0.0, description="ε of the clipped ratio.")
    clip_schedule: Literal["constant", "linear"] = "constant"
    clip_range_vf: float | None = Field(None, gt=0.0)
    target_kl: float | None = Field(None, gt=0.0, description="Stop the epochs early past this KL.")

    schedule_fields: ClassVar[dict[str, str]] = {"lr": "lr_schedule", "clip_range": "clip_schedule"}

    @field_validator("use_critic")
    @classmethod
    def _needs_critic(cls, use_critic: bool) -> bool:
        if not use_critic:
            raise ValueError(
                "use_critic=False is not supported: PPO's loss fits V_φ(s) beside the policy "
                "(its value loss and clip_range_vf need it); set use_critic=True"
            )
        return use_critic


class PPO(OnPolicyAgent):
    """PPO-clip over a vector env (``PPO(env, config).learn(steps)``)."""

    name = "ppo"
    config: PPOConfig
    config_cls = PPOConfig
    supports_sde = True
    fused_update_supported = True
    shared_encoder_supported = True

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        cfg = self.config
        flat = batch.flat()
        clip = scheduled(cfg.clip_range, cfg.clip_schedule, self._progress_remaining())
        fused = self._fused_actor_critic()
        minibatch_step = self._fused_minibatch if fused is not None else self._autograd_minibatch
        record: list[tuple[torch.Tensor, ...]] = []  # per minibatch: ρ, log ρ, −surrogate, V − ŷ, entropy
        stop = False
        for _epoch in range(cfg.n_epochs):
            for mb in flat.minibatches(cfg.batch_size):
                advantage = self.normalize(mb.advantages) if cfg.normalize_advantage else mb.advantages
                with torch.no_grad():
                    step = minibatch_step(fused, mb, advantage, clip)
                record.append(step)
                if cfg.target_kl is not None and self._minibatch_stats([step], clip)[3].item() > 1.5 * cfg.target_kl:
                    stop = True
                    break
            if stop:
                break
        names = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")
        out: dict[str, float] = dict(zip(names, self._minibatch_stats(record, clip).tolist()))
        out["clip_range"] = clip
        out["n_updates"] = float(len(record))
        return out

    @staticmethod
    def _minibatch_stats(record: list[tuple[torch.Tensor, ...]], clip: float) -> torch.Tensor:
        """Mean over minibatches of (policy loss, value loss, entropy, approx KL, clip fraction), computed
        once per update from the minibatches' per-sample tensors (not a dozen small ops per minibatch).
        The approx KL is the k3 estimator of KL(π_old‖π), mean of (ρ − 1) − log ρ."""
        ratio, log_ratio, policy_loss, error, entropy = (list(x) for x in zip(*record))
        entropy = torch.stack(entropy).mean()
        if len({r.shape[0] for r in ratio}) == 1:  # equal minibatches: the mean of means is the mean
            ratio, log_ratio, policy_loss, error = (torch.cat(x) for x in (ratio, log_ratio, policy_loss, error))
            weight = None
        else:  # a smaller last minibatch: weight each sample by 1/(M·B_m)
            weight = torch.cat([torch.full_like(r, 1.0 / (len(ratio) * r.shape[0])) for r in ratio])
            ratio, log_ratio, policy_loss, error = (torch.cat(x) for x in (ratio, log_ratio, policy_loss, error))
        terms = torch.stack(
            [policy_loss, error.square(), (ratio - 1) - log_ratio, ((ratio - 1).abs() > clip).to(ratio.dtype)]
        )
        means = terms.mean(1) if weight is None else terms @ weight
        return torch.cat([means[:2], entropy.reshape(1), means[2:]])

    def _autograd_minibatch(
        self, _fused: None, mb: FlatBatch, advantage: torch.Tensor, clip: float
    ) -> tuple[torch.Tensor, ...]:
        """One clipped-surrogate step by autograd: ``(ρ, log ρ, −surrogate, V − ŷ, mean entropy)``."""
        cfg = self.config
        with torch.enable_grad():
            dist, value = self._distribution_and_value(mb.obs)
            log_prob = dist.log_prob(mb.actions)
            log_ratio = log_prob - mb.log_probs
            ratio = log_ratio.exp()
            surrogate = torch.min(ratio * advantage, ratio.clamp(1 - clip, 1 + clip) * advantage)
            policy_loss = -surrogate.mean()
            if cfg.clip_range_vf is not None:
                value = mb.values + (value - mb.values).clamp(-cfg.clip_range_vf, cfg.clip_range_vf)
            error = value - mb.returns
            value_loss = error.pow(2).mean()
            entropy = dist.entropy().mean()
            loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy
            self._clip_and_step(loss)
        return ratio.detach(), log_ratio.detach(), -surrogate.detach(), error.detach(), entropy.detach()

    def _fused_minibatch(
        self, fused: FusedActorCritic, mb: FlatBatch, advantage: torch.Tensor, clip: float
    ) -> tuple[torch.Tensor, ...]:
        r"""The same step with the gradients written out (:mod:`core_rl.common.fused_actor_critic`). With
        u = ρÂ, c = clip(ρ, 1±ε)Â and ∂ρ/∂log π = ρ, the loss L = −mean min(u, c) + c_v mean(V − ŷ)² − c_H H̄ has

        .. math:: \frac{\partial L}{\partial\log\pi_i} = -\frac{u_i [u_i \le c_i]}{B},\qquad
            \frac{\partial L}{\partial V_i} = \frac{2c_v}{B}(V^{c}_i - \hat y_i)\,[|V_i - V^{old}_i| \le \epsilon_v],

        V^c the value clipped to ±ε_v around the old one (ε_v = ∞ without ``clip_range_vf``); where u = c
        (ρ inside the clip range) the gradient is the unclipped one, as autograd's min and clamp give."""
        cfg = self.config
        n = advantage.shape[0]
        f = fused.forward(mb.obs, mb.actions)
        log_ratio = f.log_prob - mb.log_probs
        ratio = log_ratio.exp()
        unclipped = ratio * advantage
        clipped = ratio.clamp(1 - clip, 1 + clip).mul_(advantage)
        surrogate = torch.minimum(unclipped, clipped)
        g_log_prob = torch.where(unclipped <= clipped, unclipped, 0.0).mul_(-1.0 / n)
        if cfg.clip_range_vf is None:
            error = f.value - mb.returns
            g_value = error * (2.0 * cfg.vf_coef / n)
        else:
            delta = f.value - mb.values
            error = (mb.values - mb.returns) + delta.clamp(-cfg.clip_range_vf, cfg.clip_range_vf)
            g_value = (error * (2.0 * cfg.vf_coef / n)).mul_(delta.abs() <= cfg.clip_range_vf)
        fused.backward(f, g_log_prob, -cfg.ent_coef, g_value)
        fused.step(cfg.max_grad_norm)
        return ratio, log_ratio, surrogate.neg_(), error, f.entropy
