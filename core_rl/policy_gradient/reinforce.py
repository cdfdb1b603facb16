r"""REINFORCE: the Monte Carlo policy gradient, with causality and baselines (notes, 9/5).

The objective is :math:`J(\theta) = \mathbb E_{\tau\sim\pi_\theta(\tau)}[r(\tau)]`, and the
log-derivative trick gives, since the dynamics do not depend on θ,

.. math::
    \nabla_\theta J(\theta) = \mathbb E_{\tau\sim\pi_\theta(\tau)}\big[\nabla_\theta\log\pi_\theta(\tau)\, r(\tau)\big]
    \approx \frac1N\sum_{i=1}^N\Big(\sum_{t=1}^T\nabla_\theta\log\pi_\theta(a_{i,t}|s_{i,t})\Big)
    \Big(\sum_{t=1}^T r(s_{i,t},a_{i,t})\Big).

Reducing its variance:

* causality (``advantage="reward_to_go"``): the action at t cannot change earlier rewards, so the
  weight of :math:`\nabla\log\pi(a_t|s_t)` becomes the reward-to-go
  :math:`\hat Q_{i,t} = \sum_{t'=t}^T \gamma^{t'-t} r_{i,t'}`; ``advantage="return"`` keeps the
  whole return :math:`r(\tau_i)` at every step. (With γ < 1, as usual, the γ^{t-1} in front of
  each term of the discounted objective's gradient is dropped.)
* a baseline b, unbiased because :math:`\mathbb E[\nabla_\theta\log\pi_\theta(\tau)\,b] = 0`:
  ``"mean"`` :math:`b = \frac1N\sum_i r(\tau_i)`; ``"value"`` a learned :math:`\hat V_\phi(s_t)` fitted to
  :math:`\hat Q_t`; ``"optimal"`` the variance-minimizing constant. Writing
  :math:`g(\tau) = \nabla_\theta\log\pi_\theta(\tau)`,
  :math:`\mathrm{Var} = \mathbb E[(g(\tau)(r(\tau)-b))^2] - \mathbb E[g(\tau)(r(\tau)-b)]^2`, and
  setting the derivative of the first term in b to zero gives, per parameter k,

  .. math:: b_k = \frac{\mathbb E[g_k(\tau)^2\, r(\tau)]}{\mathbb E[g_k(\tau)^2]},

  a weighted mean of returns. Each b_k differs, so the estimate
  :math:`\frac1N\sum_i g_{i,k}(r(\tau_i) - b_k)` is formed directly from per-sample gradients
  (``torch.func.vmap`` of ``grad``); with reward-to-go the samples are the steps,
  :math:`g_{i,t} = \nabla\log\pi(a_{i,t}|s_{i,t})` and weight :math:`\hat Q_{i,t}` (the per-step
  analogue of the notes' trajectory-level derivation).

The batch baselines (``"mean"``, ``"optimal"``) are by default estimated leave-one-out: trajectory i
gets b computed from the other trajectories, so b is independent of τ_i and the estimate stays
exactly unbiased (the whole-batch b shrinks it by O(1/N)).

The loss minimized (for every baseline but ``"optimal"``) is the surrogate
:math:`L(\theta) = -\frac1N\sum_i\sum_t\log\pi_\theta(a_{i,t}|s_{i,t})\,(w_{i,t} - b_{i,t})`,
N the number of trajectories, whose gradient is the estimate above. Batches are whole episodes.

Example (CartPole-v1 with the defaults: reward-to-go and a learned value baseline; 15,000 steps
take the greedy policy well past the random policy's ≈ 22)::

    >>> agent = REINFORCE("CartPole-v1", {"seed": 0}).learn(15_000)
    >>> agent.evaluate(n_episodes=5)["mean_return"] > 75
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field, model_validator
from torch.func import functional_call, grad, vmap

from core_rl.common import optim
from core_rl.common import returns as R
from core_rl.common.buffers import RolloutBatch
from core_rl.common.distributions import StochasticPolicy
from core_rl.common.errors import ConfigError
from core_rl.common.on_policy import OnPolicyAgent, OnPolicyConfig


# ---- whole-episode batches ---------------------------------------------------------------------
@dataclass
class EpisodeBatch:
    """Whole episodes, flattened to their steps and sorted by (episode, t): tensors are ``[B, ...]``.

    ``log_probs`` are the log-probabilities of the policy that collected the data (the behaviour
    policy β for off-policy learning). ``episode[j]`` is the episode (0..E-1) of step j and
    ``step[j]`` its time index within it. Episodes are complete: the last step of each one ended it.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    rewards: torch.Tensor
    episode: torch.Tensor
    step: torch.Tensor
    n_episodes: int

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def max_len(self) -> int:
        return int(self.step.max().item()) + 1 if len(self) else 0

    @property
    def lengths(self) -> torch.Tensor:
        return torch.bincount(self.episode, minlength=self.n_episodes)

    # -- layout changes ---------------------------------------------------------------------------
    def padded(self, x: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """``[B]`` per-step values to ``[E, T_max]`` (episode, t), ``fill`` past each episode's end."""
        out = torch.full((self.n_episodes * self.max_len,), fill, dtype=x.dtype, device=x.device)
        out[self.episode * self.max_len + self.step] = x
        return out.view(self.n_episodes, self.max_len)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """``[E, T_max]`` back to ``[B]``."""
        return x[self.episode, self.step]

    def episode_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Σ over each episode's steps: ``[B, ...]`` to ``[E, ...]``."""
        out = torch.zeros((self.n_episodes, *x.shape[1:]), dtype=x.dtype, device=x.device)
        return out.index_add_(0, self.episode, x)

    # -- Monte Carlo weights ----------------------------------------------------------------------
    def reward_to_go(self, gamma: float, rewards: torch.Tensor | None = None) -> torch.Tensor:
        """:math:`\\hat Q_t = \\sum_{t'\\ge t}\\gamma^{t'-t} r_{t'}` within each episode, ``[B]``."""
        r = self.padded(self.rewards if rewards is None else rewards).T  # [T_max, E]
        return self.unpad(R.reward_to_go(r, torch.zeros_like(r), gamma).T)

    def episode_return(self, gamma: float) -> torch.Tensor:
        """The discounted return r(τ) of each episode, ``[E]``."""
        r = self.padded(self.rewards).T
        return R.reward_to_go(r, torch.zeros_like(r), gamma)[0]

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_rollout(cls, batch: RolloutBatch) -> "EpisodeBatch":
        """The valid steps of a whole-episode rollout (``collect_mode="episodes"``)."""
        T, N = batch.rewards.shape[:2]
        device = batch.rewards.device
        starts = batch.episode_starts.bool()
        valid = batch.valid.bool()
        t_idx = torch.arange(T, device=device).unsqueeze(1).expand(T, N)
        start_time = torch.cummax(torch.where(starts, t_idx, torch.full_like(t_idx, -1)), 0).values
        local = starts.long().cumsum(0) - 1  # episode index within its env
        if bool((valid & (local < 0)).any()):
            raise ValueError("EpisodeBatch needs whole episodes: a valid step precedes its episode's start")
        count = local[-1] + 1
        global_id = local + (count.cumsum(0) - count)  # offset of each env's episodes
        ids, step = global_id[valid], (t_idx - start_time)[valid]
        _, episode = torch.unique(ids, return_inverse=True)
        n_episodes = int(episode.max().item()) + 1 if episode.numel() else 0
        key = episode * T + step
        order = torch.argsort(key)
        flat = lambda x: x[valid][order]  # noqa: E731
        out = cls(
            obs=flat(batch.obs),
            actions=flat(batch.actions),
            log_probs=flat(batch.log_probs),
            rewards=flat(batch.rewards),
            episode=episode[order],
            step=step[order],
            n_episodes=n_episodes,
        )
        last = out.padded(flat(batch.dones)).gather(1, (out.lengths - 1).unsqueeze(1))
        if n_episodes and not bool((last > 0).all()):
            raise ValueError("EpisodeBatch needs whole episodes: an episode in the batch does not end")
        return out

    @classmethod
    def from_dataframe(
        cls, df: Any, observation_space: gym.Space, action_space: gym.Space, device: torch.device | str = "cpu"
    ) -> "EpisodeBatch":
        """Trajectories from a pandas DataFrame, one row per step.

        Columns: ``episode`` (any id), ``reward``, ``behaviour_log_prob`` (log β(a|s) of the policy
        that acted), the observation as ``obs`` (scalars or arrays) or ``obs_0, obs_1, …``, the action
        as ``action`` or ``action_0, action_1, …``, and optionally ``step`` (time within the episode;
        otherwise row order is time order). Each episode must be complete.
        """
        import pandas as pd

        if not isinstance(df, pd.DataFrame):
            raise ConfigError(f"data must be a pandas DataFrame, got {type(df).__name__}")
        for col in ("episode", "reward", "behaviour_log_prob"):
            if col not in df.columns:
                raise ConfigError(f"data column '{col}' is missing (have: {', '.join(map(str, df.columns))})")
        if len(df) == 0:
            raise ConfigError("data holds no rows")

        def column(prefix: str, shape: tuple[int, ...]) -> np.ndarray:
            if prefix in df.columns:
                return np.stack([np.asarray(v) for v in df[prefix].to_numpy()]).reshape(len(df), *shape)
            cols = [
                c
                for c in df.columns
                if isinstance(c, str) and c.startswith(prefix + "_") and c[len(prefix) + 1 :].isdigit()
            ]
            if not cols:
                raise ConfigError(f"data column '{prefix}' (or '{prefix}_0', '{prefix}_1', …) is missing")
            cols.sort(key=lambda c: int(c[len(prefix) + 1 :]))
            return df[cols].to_numpy().reshape(len(df), *shape)

        obs_shape = () if isinstance(observation_space, gym.spaces.Discrete) else tuple(observation_space.shape)
        act_shape = () if isinstance(action_space, gym.spaces.Discrete) else tuple(action_space.shape)
        try:
            obs = column("obs", obs_shape)
            actions = column("action", act_shape)
        except ValueError as exc:
            raise ConfigError(f"data observations/actions do not match the env's spaces: {exc}") from None
        _, episode_np = np.unique(df["episode"].to_numpy(), return_inverse=True)
        if "step" in df.columns:
            step_np = df["step"].to_numpy().astype(np.int64)
        else:
            step_np = pd.Series(np.arange(len(df))).groupby(episode_np).cumcount().to_numpy()
        order = np.lexsort((step_np, episode_np))
        episode_t = torch.as_tensor(episode_np[order], dtype=torch.long, device=device)
        step_t = torch.as_tensor(step_np[order], dtype=torch.long, device=device)
        n_episodes = int(episode_t.max().item()) + 1
        lengths = torch.bincount(episode_t, minlength=n_episodes)
        expected = torch.arange(len(df), device=device) - (lengths.cumsum(0) - lengths)[episode_t]
        if not torch.equal(step_t, expected):
            raise ConfigError("data column 'step' must run 0, 1, 2, … without gaps within each episode")
        obs_t = torch.as_tensor(obs[order], device=device)
        if obs_t.dtype == torch.float64:
            obs_t = obs_t.float()
        if isinstance(action_space, gym.spaces.Discrete):
            act_t = torch.as_tensor(actions[order].astype(np.int64), device=device)
        else:
            act_t = torch.as_tensor(actions[order], dtype=torch.float32, device=device)
        f32 = lambda name: torch.as_tensor(df[name].to_numpy()[order], dtype=torch.float32, device=device)  # noqa: E731
        log_probs = f32("behaviour_log_prob")
        if not bool(torch.isfinite(log_probs).all()):
            raise ConfigError("data column 'behaviour_log_prob' must be finite log-probabilities")
        return cls(
            obs=obs_t,
            actions=act_t,
            log_probs=log_probs,
            rewards=f32("reward"),
            episode=episode_t,
            step=step_t,
            n_episodes=n_episodes,
        )

    def to_dataframe(self) -> Any:
        """The inverse of :meth:`from_dataframe` (obs and action as ``obs_i`` / ``action_i`` columns)."""
        import pandas as pd

        data: dict[str, Any] = {"episode": self.episode.cpu().numpy(), "step": self.step.cpu().numpy()}
        obs = self.obs.reshape(len(self), -1).cpu().numpy()
        acts = self.actions.reshape(len(self), -1).cpu().numpy()
        for i in range(obs.shape[1]):
            data[f"obs_{i}"] = obs[:, i]
        for i in range(acts.shape[1]):
            data[f"action_{i}"] = acts[:, i]
        data["reward"] = self.rewards.cpu().numpy()
        data["behaviour_log_prob"] = self.log_probs.cpu().numpy()
        return pd.DataFrame(data)


# ---- gradients ---------------------------------------------------------------------------------
def policy_parameters(policy: torch.nn.Module) -> list[torch.Tensor]:
    """θ as the list of the policy's parameter tensors, in ``parameters()`` order (the order of every
    flat gradient vector here)."""
    return list(policy.parameters())


def flat_grad(objective: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """∇ of a scalar as one flat vector, zeros for parameters it does not depend on."""
    grads = torch.autograd.grad(objective, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])


def assign_flat_grad(params: list[torch.Tensor], vector: torch.Tensor) -> None:
    """Write a flat vector into ``p.grad`` of each parameter (for an optimizer step)."""
    i = 0
    for p in params:
        n = p.numel()
        p.grad = vector[i : i + n].view_as(p).clone()
        i += n


def ascent_step(
    policy: StochasticPolicy,
    optimizer: torch.optim.Optimizer,
    direction: torch.Tensor,
    stats: dict[str, float],
    obs: torch.Tensor,
    ent_coef: float = 0.0,
    max_grad_norm: float | None = None,
) -> dict[str, float]:
    r"""One step along an estimated policy gradient ĝ (a flat vector over :func:`policy_parameters`):

    .. math:: \theta \leftarrow \mathrm{opt}\big(\theta, \operatorname{clip}_c(-(\hat g + c_H \nabla_\theta \bar H))\big),

    with the entropy bonus c_H H̄ (mean over ``obs``) when ``ent_coef`` > 0; the optimizer minimizes −J.
    Returns ``stats`` with ``grad_norm`` = ‖ĝ + c_H∇H̄‖ (before the clip) and ``entropy`` (with a bonus).
    """
    params = policy_parameters(policy)
    if ent_coef > 0:
        entropy = policy.distribution(obs).entropy().mean()
        direction = direction + ent_coef * flat_grad(entropy, params)
        stats["entropy"] = float(entropy)
    optimizer.zero_grad(set_to_none=True)
    assign_flat_grad(params, -direction)
    stats["grad_norm"] = float(direction.norm())
    optim.step(optimizer, None, max_grad_norm, params)
    return stats


def log_prob_grads(
    policy: StochasticPolicy, obs: torch.Tensor, actions: torch.Tensor, chunk_size: int | None = 4096
) -> torch.Tensor:
    """Per-sample :math:`\\nabla_\\theta\\log\\pi_\\theta(a_j|s_j)`, ``[B, P]`` in ``policy.parameters()``
    order, by ``vmap(grad(...))`` over the samples (observations are encoded outside the vmap)."""
    named = dict(policy.named_parameters())
    params = {k: v.detach() for k, v in named.items()}
    net_params = {k for k in params if k.startswith("net.")}
    if set(params) - net_params - {"log_std"}:
        raise TypeError(f"log_prob_grads expects a StochasticPolicy, got parameters {sorted(params)}")
    features = policy.encoder(obs)

    def log_prob(p: dict[str, torch.Tensor], feature: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        out = functional_call(policy.net, {k[4:]: p[k] for k in net_params}, (feature.unsqueeze(0),))
        dist = policy.head(out, p.get("log_std"))
        return dist.log_prob(action.unsqueeze(0)).squeeze(0)

    g = vmap(grad(log_prob), in_dims=(None, 0, 0), chunk_size=chunk_size)(params, features, actions)
    return torch.cat([g[k].reshape(features.shape[0], -1) for k in named], 1)


def constant_baseline(numerator: torch.Tensor, denominator: torch.Tensor, leave_one_out: bool) -> torch.Tensor:
    """b = Σ_i num_i / Σ_i den_i from per-trajectory sums ``[E, ...]``, returned per trajectory.

    With ``leave_one_out`` trajectory i gets :math:`b^{(-i)} = \\sum_{j\ne i} num_j / \\sum_{j\ne i} den_j`,
    independent of τ_i, so that :math:`\\mathbb E[\nabla\\log\\pi(\tau_i)\\, b^{(-i)}] = 0` exactly and the
    estimate stays unbiased; the whole-batch b is biased by O(1/N). 0 where no other data exists.
    """
    num, den = numerator.double(), denominator.double()
    total_num, total_den = num.sum(0, keepdim=True), den.sum(0, keepdim=True)
    if leave_one_out:
        total_num, total_den = total_num - num, total_den - den
    b = torch.where(total_den > 0, total_num / total_den, torch.zeros_like(total_num))
    return b.to(numerator.dtype).expand_as(numerator)


# ---- the agent ---------------------------------------------------------------------------------
class EpisodicPGConfig(OnPolicyConfig):
    """The batch of the policy gradients on whole episodes: episodes until n_envs·n_steps steps, no clip."""

    n_envs: int = Field(8, ge=1)
    n_steps: int = Field(125, ge=1, description="Batch: whole episodes until n_envs·n_steps steps are gathered.")
    max_grad_norm: float | None = Field(None, gt=0.0)
    advantage: Literal["reward_to_go", "return"] = Field(
        "reward_to_go", description="Weight of ∇log π(a_t|s_t): reward-to-go (causality) or the whole return r(τ)."
    )


class REINFORCEConfig(EpisodicPGConfig):
    lr: float = Field(5e-3, gt=0.0)
    baseline: Literal["none", "mean", "optimal", "value"] = Field(
        "value", description="b subtracted from the weight: none, batch mean, the variance-optimal b_k, or V_φ(s_t)."
    )
    normalize_advantage: bool = Field(
        False, description="Divide the weights by their batch std (a positive scale; keeps the direction)."
    )
    use_critic: bool = Field(True, description="Learn V_φ(s); must be True exactly for baseline='value'.")
    leave_one_out: bool = Field(
        True, description="Baselines 'mean'/'optimal': estimate b for trajectory i from the others (unbiased)."
    )
    value_lr: float = Field(1e-2, gt=0.0, description="Learning rate of V_φ's own optimizer.")
    value_steps: int = Field(20, ge=1, description="Full-batch regression steps of V_φ on the reward-to-go per batch.")

    @model_validator(mode="before")
    @classmethod
    def _default_critic(cls, data: Any) -> Any:
        if isinstance(data, dict) and "use_critic" not in data:
            data = {**data, "use_critic": data.get("baseline", "value") == "value"}
        return data

    @model_validator(mode="after")
    def _critic_matches_baseline(self) -> "REINFORCEConfig":
        if self.use_critic != (self.baseline == "value"):
            raise ValueError(
                f"use_critic={self.use_critic} does not fit baseline='{self.baseline}': "
                "use_critic must be True exactly when baseline='value'"
            )
        return self


class EpisodicPolicyGradient(OnPolicyAgent):
    """The base of the policy gradients on whole episodes (REINFORCE, off-policy PG): rollouts are
    collected as :class:`EpisodeBatch` es and θ is stepped by Adam along an estimated ∇_θ J."""

    collect_mode = "episodes"

    def _build_optimizers(self) -> None:
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.config.lr)

    def collect_episodes(self) -> EpisodeBatch:
        """Run π_θ for whole episodes (at least n_envs·n_steps steps) and return them, with π_θ's log-probs."""
        return EpisodeBatch.from_rollout(self.collect())


class REINFORCE(EpisodicPolicyGradient):
    """Monte Carlo policy gradient on whole episodes (``REINFORCE(env, baseline="optimal").learn(n)``)."""

    name = "reinforce"
    config: REINFORCEConfig
    config_cls = REINFORCEConfig

    def _build_optimizers(self) -> None:
        super()._build_optimizers()
        self.value_optimizer = (
            torch.optim.Adam(self.value.parameters(), lr=self.config.value_lr) if self.value is not None else None
        )

    # ---- data ----------------------------------------------------------------------------------
    @staticmethod
    def _as_episodes(batch: EpisodeBatch | RolloutBatch) -> EpisodeBatch:
        return batch if isinstance(batch, EpisodeBatch) else EpisodeBatch.from_rollout(batch)

    def weights(self, batch: EpisodeBatch) -> torch.Tensor:
        """w_t before the baseline: reward-to-go Q̂_t, or r(τ) at every step of τ, ``[B]``."""
        cfg = self.config
        if cfg.advantage == "reward_to_go":
            w = batch.reward_to_go(cfg.gamma)
        else:
            w = batch.episode_return(cfg.gamma)[batch.episode]
        if cfg.normalize_advantage and w.numel() > 1:
            w = w / (w.std() + 1e-8)
        return w

    # ---- the estimator -------------------------------------------------------------------------
    def policy_gradient(self, batch: EpisodeBatch | RolloutBatch) -> torch.Tensor:
        """The REINFORCE estimate of ∇_θ J(θ) (ascent direction) for ``batch``, as one flat vector
        over ``policy.parameters()``; nothing is stepped."""
        return self._policy_gradient(self._as_episodes(batch))[0]

    def _policy_gradient(self, batch: EpisodeBatch) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        weight = self.weights(batch)  # w_{i,t}: Q̂_{i,t} or r(τ_i)
        params = policy_parameters(self.policy)
        n = max(batch.n_episodes, 1)
        per_trajectory = cfg.advantage == "return"
        stats = {"weight_mean": float(weight.mean())}
        if cfg.baseline == "optimal":
            g = log_prob_grads(self.policy, batch.obs, batch.actions)  # g_{i,t} = ∇log π(a_t|s_t), [B, P]
            g_episode = batch.episode_sum(g)  # ∇log π(τ_i), [E, P]
            if per_trajectory:  # samples are trajectories
                w = weight[batch.step == 0].unsqueeze(1)
                b = constant_baseline(g_episode.square() * w, g_episode.square(), cfg.leave_one_out)
                estimate = (g_episode * (w - b)).sum(0) / n
            else:  # samples are steps
                g2 = g.square()
                b = constant_baseline(
                    batch.episode_sum(g2 * weight.unsqueeze(1)), batch.episode_sum(g2), cfg.leave_one_out
                )
                estimate = ((g * weight.unsqueeze(1)).sum(0) - (g_episode * b).sum(0)) / n
            return estimate, {**stats, "baseline": float(b.mean())}
        if cfg.baseline == "none":
            b = torch.zeros_like(weight)
        elif cfg.baseline == "mean":
            # b = (1/N) Σ_i r(τ_i) over trajectories, or the mean reward-to-go over steps
            if per_trajectory:
                b_episode = constant_baseline(
                    weight[batch.step == 0], weight.new_ones(batch.n_episodes), cfg.leave_one_out
                )
            else:
                b_episode = constant_baseline(
                    batch.episode_sum(weight), batch.lengths.to(weight.dtype), cfg.leave_one_out
                )
            b = b_episode[batch.episode]
        else:  # "value": V_φ fitted to earlier batches only
            with torch.no_grad():
                b = self.value(batch.obs)
        advantage = (weight - b).detach()
        log_prob = self.policy.distribution(batch.obs).log_prob(batch.actions)
        surrogate = (log_prob * advantage).sum() / n
        return flat_grad(surrogate, params), {
            **stats,
            "policy_loss": -float(surrogate.detach()),
            "baseline": float(b.mean()),
        }

    # ---- one iteration -------------------------------------------------------------------------
    def _iterate(self) -> dict[str, float]:
        self._apply_lr_schedule()
        return self.update(self.collect_episodes())

    def update(self, batch: EpisodeBatch | RolloutBatch) -> dict[str, float]:  # type: ignore[override]
        cfg = self.config
        batch = self._as_episodes(batch)
        direction, stats = self._policy_gradient(batch)
        stats = ascent_step(self.policy, self.optimizer, direction, stats, batch.obs, cfg.ent_coef, cfg.max_grad_norm)
        out = {**stats, "n_episodes": float(batch.n_episodes)}
        if self.value is not None:
            out["value_loss"] = self.fit_value(batch)
        return out

    def fit_value(self, batch: EpisodeBatch) -> float:
        """Regress V_φ(s_t) on the reward-to-go Q̂_t: ``value_steps`` full-batch steps; last loss."""
        reward_to_go = batch.reward_to_go(self.config.gamma)
        loss = torch.zeros(())
        for _ in range(self.config.value_steps):
            loss = (self.value(batch.obs) - reward_to_go).pow(2).mean()
            optim.step(self.value_optimizer, loss)
        return float(loss.detach())
