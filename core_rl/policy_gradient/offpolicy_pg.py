r"""Off-policy policy gradient with importance sampling (notes, 9/5).

Policy gradients are on-policy: the expectation is over :math:`\tau\sim\pi_\theta(\tau)`. With samples
from another distribution :math:`\bar\pi(\tau) = \beta(\tau)`, importance sampling
:math:`\mathbb E_{x\sim p}[f(x)] = \mathbb E_{x\sim q}[\tfrac{p(x)}{q(x)} f(x)]` gives

.. math::
    \nabla_{\theta'} J(\theta') = \mathbb E_{\tau\sim\beta(\tau)}\Big[\frac{\pi_{\theta'}(\tau)}{\beta(\tau)}
        \nabla_{\theta'}\log\pi_{\theta'}(\tau)\, r(\tau)\Big],
    \qquad \frac{\pi_{\theta'}(\tau)}{\beta(\tau)} = \prod_{t=1}^T \rho_t,\quad
    \rho_t = \frac{\pi_{\theta'}(a_t|s_t)}{\beta(a_t|s_t)},

since the dynamics cancel in the ratio (``advantage="return"``). Adding causality after writing
τ out as its steps: an action cannot change earlier rewards, and a reward at t' depends only on the
actions up to t', so with the per-decision weight :math:`w_{t} = \prod_{t'\le t}\rho_{t'}`

.. math::
    \nabla_{\theta'} J(\theta') = \mathbb E_\beta\Big[\sum_{t=1}^T \nabla_{\theta'}\log\pi_{\theta'}(a_t|s_t)
        \sum_{t'=t}^T \gamma^{t'-t}\, w_{t'}\, r_{t'}\Big]

(``correction="per_decision"``: exact, unbiased, but its variance grows with the horizon). The
first-order form drops the ratios of the actions after t,
:math:`\sum_t w_t\,\nabla\log\pi_{\theta'}(a_t|s_t)\,\hat Q_t` with the behaviour reward-to-go
:math:`\hat Q_t` (``correction="past_only"``, the default: biased toward :math:`Q^\beta` once
π_θ' ≠ β, much lower variance; exact when β = π_θ'). With γ < 1 both use the usual estimator that
omits the γ^{t} factor in front of each term.

Variance control: ``clip_ratio`` truncates each :math:`\rho_t\le c`, ``max_weight`` caps the
cumulative :math:`w_t\le C` (both biased), and ``self_normalize`` divides :math:`w_{i,t}` by its
mean over the trajectories still running at t (weighted importance sampling). A constant baseline
b (``baseline="mean"``, the other trajectories' mean reward-to-go) enters as :math:`-w_t b`, which
keeps the estimate unbiased because :math:`\mathbb E_\beta[w_t\nabla\log\pi_{\theta'}(a_t|s_t)] = 0`.

As an agent: collect whole episodes with the current policy (storing the behaviour log-probs
log β), then take ``n_updates`` gradient steps on that batch; from the second step on π_θ' ≠ β and
the ratios correct for it. :meth:`OffPolicyPG.fit_offline` learns purely from another policy's data.

Example (CartPole-v1 with the defaults: 4 gradient steps per batch, 3 of them on an older
policy's data; 15,000 steps take the greedy policy well past the random policy's ≈ 22)::

    >>> agent = OffPolicyPG("CartPole-v1", {"seed": 0}).learn(15_000)
    >>> agent.evaluate(n_episodes=5)["mean_return"] > 75
    True
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from core_rl.common.buffers import RolloutBatch
from core_rl.common.errors import ConfigError
from core_rl.policy_gradient.reinforce import (
    EpisodeBatch,
    EpisodicPGConfig,
    EpisodicPolicyGradient,
    ascent_step,
    constant_baseline,
    flat_grad,
    policy_parameters,
)


class OffPolicyPGConfig(EpisodicPGConfig):
    lr: float = Field(1e-3, gt=0.0)
    advantage: Literal["reward_to_go", "return"] = Field(
        "reward_to_go", description="Per-decision weights with causality, or the whole-trajectory ratio times r(τ)."
    )
    normalize_advantage: bool = Field(
        False, description="Divide the coefficients of ∇log π by their batch std (a positive scale)."
    )
    use_critic: bool = Field(False, description="OffPolicyPG learns no critic: must be False.")
    n_updates: int = Field(4, ge=1, description="Gradient steps per collected batch (later ones are off-policy).")
    correction: Literal["per_decision", "past_only"] = Field(
        "past_only", description="Weight each reward by its own ratio product (exact) or only the past ratios."
    )
    clip_ratio: float | None = Field(None, gt=0.0, description="Truncate each ρ_t = π/β at this value.")
    max_weight: float | None = Field(None, gt=0.0, description="Cap on the cumulative product w_t = Π ρ.")
    self_normalize: bool = Field(False, description="Weighted IS: w_{i,t} / mean over trajectories running at t.")
    baseline: Literal["none", "mean"] = Field("mean", description="Constant baseline: none, or the mean reward-to-go.")
    leave_one_out: bool = Field(True, description="baseline='mean' for trajectory i from the other trajectories.")

    @model_validator(mode="after")
    def _no_critic(self) -> "OffPolicyPGConfig":
        if self.use_critic:
            raise ValueError("use_critic=True is not supported: OffPolicyPG learns no value function")
        return self


class OffPolicyPG(EpisodicPolicyGradient):
    """Importance-sampled policy gradient (``OffPolicyPG(env).learn(n)`` or ``.fit_offline(data)``); the
    episodes' ``log_probs`` are the behaviour policy β's for the later updates on them."""

    name = "offpolicy_pg"
    config: OffPolicyPGConfig
    config_cls = OffPolicyPGConfig

    def _build(self) -> None:
        super()._build()
        self.offline_updates = 0

    # ---- data ----------------------------------------------------------------------------------
    def as_episodes(self, data: Any) -> EpisodeBatch:
        """An :class:`EpisodeBatch` from an EpisodeBatch, a whole-episode RolloutBatch or a DataFrame
        (see :meth:`EpisodeBatch.from_dataframe` for its columns)."""
        if isinstance(data, EpisodeBatch):
            batch = data
        elif isinstance(data, RolloutBatch):
            batch = EpisodeBatch.from_rollout(data)
        else:
            batch = EpisodeBatch.from_dataframe(data, self.observation_space, self.action_space, self.device)
            if self.obs_rms is not None:
                batch.obs = self._obs_tensor(batch.obs.cpu().numpy())
        if self.policy.discrete:
            n = self.action_space.n
            if len(batch) and (int(batch.actions.min()) < 0 or int(batch.actions.max()) >= n):
                raise ConfigError(f"data actions must lie in 0..{n - 1} for the env's Discrete({n}) action space")
        return batch

    # ---- importance weights --------------------------------------------------------------------
    def importance_weights(self, batch: EpisodeBatch, log_prob: torch.Tensor) -> torch.Tensor:
        """:math:`w_{i,t} = \\prod_{t'\\le t}\\rho_{i,t'}` (clipped, capped, self-normalized as configured),
        ``[E, T_max]``, 0 past each episode's end."""
        cfg = self.config
        log_rho = log_prob.detach() - batch.log_probs
        if cfg.clip_ratio is not None:
            log_rho = log_rho.clamp(max=math.log(cfg.clip_ratio))
        running = batch.padded(torch.ones_like(log_rho))
        weights = batch.padded(log_rho).cumsum(1).clamp(max=80.0).exp() * running
        if cfg.max_weight is not None:
            weights = weights.clamp(max=cfg.max_weight)
        if cfg.self_normalize:
            if cfg.advantage == "return":  # one weight per trajectory: w(τ_i) / mean_j w(τ_j)
                final = weights.gather(1, (batch.lengths - 1).unsqueeze(1))
                weights = running * final / final.mean().clamp_min(1e-30)
            else:  # per decision: normalize over the trajectories running at t
                weights = weights * running.sum(0) / weights.sum(0).clamp_min(1e-30)
        return weights

    def coefficients(self, batch: EpisodeBatch, log_prob: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The coefficient of each ∇log π_θ'(a_t|s_t) in the estimate, ``[B]``, and weight diagnostics."""
        cfg = self.config
        n = max(batch.n_episodes, 1)
        weights = self.importance_weights(batch, log_prob)  # [E, T_max]
        final = weights.gather(1, (batch.lengths - 1).unsqueeze(1)).squeeze(1)  # w(τ_i)
        mean_baseline = cfg.baseline == "mean"
        if cfg.advantage == "return":  # w(τ)(r(τ) − b) at every step
            r_tau = batch.episode_return(cfg.gamma)
            b = (
                constant_baseline(r_tau, r_tau.new_ones(batch.n_episodes), cfg.leave_one_out)
                if mean_baseline
                else torch.zeros_like(r_tau)
            )
            coef = (final * (r_tau - b))[batch.episode]
        else:
            w = batch.unpad(weights)  # w_{i,t}, [B]
            reward_to_go = batch.reward_to_go(cfg.gamma)
            b = (
                constant_baseline(batch.episode_sum(reward_to_go), batch.lengths.to(w.dtype), cfg.leave_one_out)[
                    batch.episode
                ]
                if mean_baseline
                else torch.zeros_like(w)
            )
            if cfg.correction == "per_decision":  # Σ γ^{t′−t} w_t′ r_t′ − w_t b
                coef = batch.reward_to_go(cfg.gamma, rewards=w * batch.rewards) - w * b
            else:  # w_t (Q̂_t − b)
                coef = w * (reward_to_go - b)
        if cfg.normalize_advantage and coef.numel() > 1:
            coef = coef / (coef.std() + 1e-8)
        ess = float(final.sum().square() / final.square().sum().clamp_min(1e-30))
        return coef, {"weight_mean": float(final.mean()), "weight_max": float(final.max()), "ess_fraction": ess / n}

    # ---- the estimator -------------------------------------------------------------------------
    def policy_gradient(self, batch: Any) -> torch.Tensor:
        """The importance-sampled estimate of ∇_θ' J(θ') at the current policy from ``batch`` (whose
        ``log_probs`` are the behaviour policy's), one flat vector over ``policy.parameters()``."""
        return self._policy_gradient(self.as_episodes(batch))[0]

    def _policy_gradient(self, batch: EpisodeBatch) -> tuple[torch.Tensor, dict[str, float]]:
        log_prob = self.policy.distribution(batch.obs).log_prob(batch.actions)
        coef, stats = self.coefficients(batch, log_prob)
        surrogate = (log_prob * coef.detach()).sum() / max(batch.n_episodes, 1)
        return flat_grad(surrogate, policy_parameters(self.policy)), {
            **stats,
            "policy_loss": -float(surrogate.detach()),
        }

    # ---- improvement ---------------------------------------------------------------------------
    def _step(self, batch: EpisodeBatch) -> dict[str, float]:
        cfg = self.config
        direction, stats = self._policy_gradient(batch)
        ascent_step(self.policy, self.optimizer, direction, stats, batch.obs, cfg.ent_coef, cfg.max_grad_norm)
        return stats

    def update(self, batch: Any, n_updates: int | None = None) -> dict[str, float]:  # type: ignore[override]
        """``n_updates`` steps on one batch; metrics of the first (on-policy) and last step."""
        batch = self.as_episodes(batch)
        history = [self._step(batch) for _ in range(n_updates or self.config.n_updates)]
        out = {k: sum(h[k] for h in history) / len(history) for k in history[0]}
        out.update(
            {
                "last_weight_max": history[-1]["weight_max"],
                "last_ess_fraction": history[-1]["ess_fraction"],
                "n_episodes": float(batch.n_episodes),
            }
        )
        return out

    def _iterate(self) -> dict[str, float]:
        self._apply_lr_schedule()
        return self.update(self.collect_episodes())

    def fit_offline(self, data: Any, n_updates: int = 100, log_every: int = 1) -> dict[str, float]:
        """Learn purely from another policy's trajectories: ``n_updates`` gradient steps on ``data``
        (EpisodeBatch, whole-episode RolloutBatch, or a DataFrame with ``behaviour_log_prob``).
        Metrics go to the tracker against the count of offline steps; returns the last step's."""
        if n_updates < 1:
            raise ConfigError(f"n_updates must be at least 1, got {n_updates}")
        batch = self.as_episodes(data)
        if batch.n_episodes == 0:
            raise ConfigError("data holds no complete episode")
        if self.offline_updates == 0 and self.iteration == 0:
            self.tracker.log_params({"algo": self.name, "env_id": self.env_id, **self.config.model_dump()})
        stats: dict[str, float] = {}
        for _ in range(n_updates):
            stats = self._step(batch)
            self.offline_updates += 1
            if self.offline_updates % log_every == 0:
                self.tracker.log_metrics({f"offline_{k}": v for k, v in stats.items()}, step=self.offline_updates)
        return stats
