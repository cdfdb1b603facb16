r"""QT-Opt: Q-learning with continuous actions by *sampling actions* (notes 9/14; Kalashnikov et al. 2018).

No actor and no special Q-form: :math:`\max_a Q_\phi(s,a)` is approximated by evaluating the critic
on sampled actions, batched over states, both to act, :math:`\pi(s) = \arg\max_a Q_{\phi_1}(s,a)`, and
in the target, with QT-Opt's clipped double Q (the argmax of the first target critic, evaluated by
the minimum of both)

.. math:: a^\star = \arg\max_{a'} Q_{\phi'_1}(s', a'), \qquad
          y = r + \gamma^n (1-d)\, \min_{k=1,2} Q_{\phi'_k}(s', a^\star).

Two maximizers:

* random sampling: :math:`a_1..a_N \sim U[-1,1]^{|A|}`, take the best;
* the cross-entropy method (CEM): sample N actions from :math:`\mathcal N(m, \mathrm{diag}\,\sigma^2)`
  (uniform at the first iteration), keep the :math:`N_e` elites of highest Q, refit
  :math:`m, \sigma` to them, repeat; the answer is the best action evaluated.

Both return the best *evaluated* action, so with equal sample counts CEM is never worse than its
own first (uniform) round, and is much better where the action space is larger than a handful of samples covers.

Example (a point in the plane that must reach (1, 0), reward −‖x − g‖ per step for 20 steps: the
random policy scores ≈ −22, the best ≈ −2; 600 steps of QT-Opt, 32 CEM samples per
iteration, take it well past random)::

    >>> from core_rl.meta.envs import PointGoal
    >>> settings = {"hidden_sizes": (64, 64), "batch_size": 64, "learning_starts": 100, "n_samples": 32}
    >>> agent = QTOpt(PointGoal(), {**settings, "seed": 0}).learn(600)
    >>> agent.evaluate(n_episodes=5)["mean_return"] > -15
    True
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field, model_validator

from core_rl.common.config import Widths
from core_rl.common.off_policy import polyak_update
from core_rl.common.optim import make_adam
from core_rl.common.replay import ReplaySample
from core_rl.continuous.critics import NoisyConfig, NoisyContinuousQAgent

QFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (obs [M, ...], actions [M, |A|]) → Q [M]


def _evaluate(q_fn: QFunction, obs_rep: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    b, n, d = actions.shape
    return q_fn(obs_rep, actions.reshape(b * n, d)).reshape(b, n)


def _best(actions: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    value, idx = q.max(dim=1)
    return actions[torch.arange(actions.shape[0], device=actions.device), idx], value


def random_shooting_max(
    q_fn: QFunction, obs: torch.Tensor, action_dim: int, n_samples: int = 64, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r""":math:`\arg\max_{a_i} Q(s,a_i)` over ``n_samples`` uniform actions per state: ``([B, |A|], [B])``."""
    b = obs.shape[0]
    actions = torch.rand((b, n_samples, action_dim), generator=generator, device=obs.device) * 2 - 1
    obs_rep = obs.repeat_interleave(n_samples, dim=0)
    return _best(actions, _evaluate(q_fn, obs_rep, actions))


def cem_max(
    q_fn: QFunction,
    obs: torch.Tensor,
    action_dim: int,
    n_samples: int = 64,
    n_iters: int = 2,
    n_elites: int = 6,
    min_std: float = 1e-3,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Cross-entropy maximization of Q(s, ·) over [-1, 1]^|A|, batched over states.

    Uses ``n_samples * n_iters`` evaluations per state; returns the best evaluated action and its Q.
    """
    b, device = obs.shape[0], obs.device
    obs_rep = obs.repeat_interleave(n_samples, dim=0)
    actions = torch.rand((b, n_samples, action_dim), generator=generator, device=device) * 2 - 1
    best_action = best_value = None
    mean = std = actions[:, 0]  # refitted to the elites before they are used (it > 0)
    for it in range(n_iters):
        if it > 0:
            eps = torch.randn((b, n_samples, action_dim), generator=generator, device=device)
            actions = torch.addcmul(mean.unsqueeze(1), std.unsqueeze(1), eps).clamp_(-1.0, 1.0)
        q = _evaluate(q_fn, obs_rep, actions)
        action, value = _best(actions, q)
        if best_value is None:
            best_action, best_value = action, value
        else:
            better = value > best_value
            best_action = torch.where(better.unsqueeze(-1), action, best_action)
            best_value = torch.where(better, value, best_value)
        if it < n_iters - 1:
            elite_idx = q.topk(n_elites, dim=1).indices  # [B, N_e]
            elites = actions.gather(1, elite_idx.unsqueeze(-1).expand(-1, -1, action_dim))  # [B, N_e, |A|]
            mean = elites.mean(1)
            std = elites.std(1, unbiased=False).clamp_min(min_std)
    return best_action, best_value


class QTOptConfig(NoisyConfig):
    hidden_sizes: Widths = Field((64, 64), description="Critic hidden widths (every max costs N×iters forwards).")
    n_critics: int = Field(
        2, ge=1, description="Critics whose minimum at argmax Q'_1 is the target (clipped double Q)."
    )
    maximizer: Literal["cem", "random"] = "cem"
    n_samples: int = Field(64, ge=1, description="Actions sampled per state per iteration when acting.")
    n_iters: int = Field(2, ge=1, description="CEM iterations (random: the samples are n_samples·n_iters).")
    n_elites: int = Field(6, ge=1, description="CEM elites refitted per iteration.")
    target_n_samples: int | None = Field(
        None, ge=1, description="Samples per state for the target max (None: n_samples)."
    )

    @model_validator(mode="after")
    def _elites_fit(self) -> "QTOptConfig":
        if self.maximizer == "cem" and self.n_elites > min(self.n_samples, self.target_n_samples or self.n_samples):
            raise ValueError(f"n_elites={self.n_elites} exceeds the samples per CEM iteration")
        return self


class QTOpt(NoisyContinuousQAgent):
    """Q-learning whose max over actions is found by sampling (``QTOpt(env, config).learn(steps)``)."""

    name = "qt_opt"
    config: QTOptConfig
    config_cls = QTOptConfig

    def _build_networks(self) -> None:
        cfg = self.config
        self.critic = self._make_critic(cfg.n_critics)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.critic_optimizer = make_adam(self.critic.parameters(), cfg.lr)

    def maximize(
        self, q_fn: QFunction, obs: torch.Tensor, n_samples: int | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The configured maximizer: (argmax_a Q(s, a), max_a Q(s, a)) per state."""
        cfg = self.config
        n = n_samples or cfg.n_samples
        if cfg.maximizer == "cem":
            return cem_max(q_fn, obs, self.action_dim, n, cfg.n_iters, cfg.n_elites, generator=generator)
        return random_shooting_max(q_fn, obs, self.action_dim, n * cfg.n_iters, generator=generator)

    def _q1(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.critic.member(0, obs, actions)

    def _target_q1(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.critic_target.member(0, obs, actions)

    @torch.no_grad()
    def _greedy(self, obs: torch.Tensor) -> torch.Tensor:
        return self.maximize(self._q1, obs)[0]

    @torch.no_grad()
    def _normalized_action(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        if deterministic:  # the same samples every call: the greedy policy is a function of (φ, s)
            generator = torch.Generator(device=obs.device).manual_seed(self.config.seed)
            return self.maximize(self._q1, obs, generator=generator)[0]
        return super()._normalized_action(obs, deterministic)

    @torch.no_grad()
    def target_q(self, batch: ReplaySample) -> torch.Tensor:
        best_action = self.maximize(self._target_q1, batch.next_obs, self.config.target_n_samples)[0]
        next_q = self.critic_target.min_q(batch.next_obs, best_action)
        return batch.rewards + batch.discounts * (1.0 - batch.dones) * next_q

    def train_step(self, batch: ReplaySample) -> dict[str, float]:
        cfg = self.config
        target_q = self.target_q(batch)
        q = self.critic(batch.obs, self.scaler.normalize(batch.actions))
        critic_loss = (q - target_q).pow(2).mean(1).sum()
        self._step_optimizer(self.critic_optimizer, critic_loss)
        if (self.gradient_updates + 1) % cfg.target_update_interval == 0:
            polyak_update(self.critic, self.critic_target, cfg.tau)
        return {"critic_loss": critic_loss.item(), "q_mean": q.mean().item()}
