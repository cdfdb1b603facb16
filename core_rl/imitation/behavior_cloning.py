r"""Behavior cloning: imitation learning as supervised learning (notes 9/5).

Given expert demonstrations D = {(s_i, a_i)} with a_i ~ π*(·|s_i), fit

.. math::
    \theta^\star = \arg\max_\theta \sum_{(s,a)\in D} \log \pi_\theta(a|s)

by minibatch gradient ascent. The head decides what log π_θ is (:mod:`core_rl.imitation.policies`):
categorical cross-entropy, Gaussian likelihood, least squares for a deterministic head, a
mixture's log-sum-exp, a VAE's ELBO, or per-dimension categorical over action bins. A recurrent
head is trained on windows of whole episodes, with the loss masked past each episode's end.

The notes' caveat: trained on p_data(s) but run on p_{π_θ}(s), a learner that errs with
probability ε per step drifts off the expert's states and its expected cost grows as O(εT²);
DAgger (:mod:`core_rl.imitation.dagger`) fixes the data instead.

Example (clone CartPole-v1's scripted expert from four of its episodes)::

    >>> from core_rl.imitation import cartpole_expert, collect_demonstrations
    >>> demos = collect_demonstrations(cartpole_expert, "CartPole-v1", n_episodes=4, seed=0)
    >>> bc = BehaviorCloning("CartPole-v1", {"n_epochs": 20, "seed": 0})
    >>> policy = bc.fit(demos)
    >>> len(demos), bc.evaluate("CartPole-v1", n_episodes=5)["mean_return"] >= 400   # the expert: 500
    (2000, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import pandas as pd
import torch
from pydantic import Field

from core_rl.common import optim
from core_rl.common.config import AgentConfig, parse_config
from core_rl.common.envs import EnvLike
from core_rl.common.seeding import configure_torch, set_seed
from core_rl.common.tracking import NullTracker, Tracker
from core_rl.imitation.demonstrations import Demonstrations, evaluate_actor, load_demonstrations, spaces_of
from core_rl.imitation.policies import ImitationPolicy, make_policy

DemoSource = Demonstrations | pd.DataFrame | str


class BCConfig(AgentConfig):
    policy: Literal["mlp", "recurrent", "mixture", "latent", "autoregressive"] = Field(
        "mlp", description="Which head (core_rl.imitation.policies) models π_θ(a|s)."
    )
    head: Literal["auto", "categorical", "gaussian", "deterministic"] = Field(
        "auto", description="Output of the mlp/recurrent policy: auto = categorical (Discrete) or gaussian (Box)."
    )
    lr: float = Field(1e-3, gt=0.0, description="Adam step size.")
    batch_size: int = Field(256, ge=1, description="Samples per minibatch (recurrent: steps, in windows).")
    n_epochs: int = Field(30, ge=1, description="Passes over the demonstrations per fit.")
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float | None = Field(10.0, gt=0.0)
    normalize_obs: bool = Field(True, description="Standardize Box observations with the first data set's statistics.")
    n_components: int = Field(5, ge=1, description="Mixture components K.")
    latent_dim: int = Field(2, ge=1, description="Dimension of the latent variable z.")
    kl_coef: float = Field(1.0, ge=0.0, description="β on the KL term of the negative ELBO.")
    n_importance: int = Field(32, ge=1, description="Importance samples of the latent policy's log_prob.")
    n_bins: int = Field(21, ge=2, description="Bins per action dimension (autoregressive).")
    rnn_hidden_size: int = Field(64, ge=1, description="GRU state size (recurrent).")
    seq_len: int | None = Field(64, ge=1, description="Training window in steps (recurrent); None: whole episodes.")

    def policy_kwargs(self) -> dict[str, Any]:
        common: dict[str, Any] = {"hidden_sizes": self.hidden_sizes, "activation": self.activation}
        extra: dict[str, dict[str, Any]] = {
            "mlp": {"head": self.head},
            "recurrent": {"head": self.head, "hidden_size": self.rnn_hidden_size},
            "mixture": {"n_components": self.n_components},
            "latent": {"latent_dim": self.latent_dim, "kl_coef": self.kl_coef, "n_importance": self.n_importance},
            "autoregressive": {"n_bins": self.n_bins},
        }
        return {**common, **extra[self.policy]}


class BehaviorCloning:
    """``bc = BehaviorCloning(env, config); policy = bc.fit(demos); bc.predict(obs)``.

    ``env`` gives the spaces: an env id, Env, factory, vector env or an
    ``(observation_space, action_space)`` tuple. ``fit`` may be called again (more epochs, or a
    bigger data set as in DAgger); the policy keeps training from where it is.
    """

    name: ClassVar[str] = "bc"
    config_cls: ClassVar[type[BCConfig]] = BCConfig

    def __init__(
        self,
        env: EnvLike | tuple[gym.Space, gym.Space],
        config: BCConfig | Mapping[str, Any] | None = None,
        tracker: Tracker | None = None,
        **overrides: Any,
    ):
        self.config = parse_config(self.config_cls, config, **overrides)
        cfg = self.config
        configure_torch(cfg.torch_threads)
        set_seed(cfg.seed)
        self.device = torch.device(cfg.device)
        self.observation_space, self.action_space = spaces_of(env)
        self.tracker: Tracker = tracker or NullTracker()
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.epochs_done = 0
        self._params_logged = False
        self.reset_policy()

    def reset_policy(self) -> None:
        """A freshly initialized π_θ and optimizer (normalization is fitted again on the next fit)."""
        cfg = self.config
        self.policy: ImitationPolicy = make_policy(
            cfg.policy, self.observation_space, self.action_space, **cfg.policy_kwargs()
        ).to(self.device)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self._normalized = False

    def _dataset(self, demonstrations: DemoSource) -> Demonstrations:
        if (
            isinstance(demonstrations, Demonstrations)
            and demonstrations.observation_space == self.observation_space
            and demonstrations.action_space == self.action_space
        ):
            return demonstrations
        return load_demonstrations(demonstrations, self.observation_space, self.action_space)

    def _tensors(self, data: Demonstrations) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
        """(obs, actions, mask, samples per minibatch) with the leading axis the one to shuffle."""
        cfg = self.config
        if self.policy.recurrent:
            obs, actions, mask = data.sequences(cfg.seq_len)
            per_batch = max(1, cfg.batch_size // obs.shape[1])
            return (
                obs.to(self.device),
                self.policy.flat_actions(actions).to(self.device),
                mask.to(self.device),
                per_batch,
            )
        return (
            data.observations.to(self.device),
            self.policy.flat_actions(data.actions).to(self.device),
            None,
            cfg.batch_size,
        )

    def fit(self, demonstrations: DemoSource, n_epochs: int | None = None) -> ImitationPolicy:
        """Maximize Σ log π_θ(a|s) over the demonstrations for ``n_epochs`` (default: config) epochs.

        Logs ``bc_loss`` (and the head's other terms, e.g. ``bc_kl``) per epoch, step = epochs so far.
        """
        cfg = self.config
        data = self._dataset(demonstrations)
        if not self._params_logged:
            self.tracker.log_params({"algo": self.name, **cfg.model_dump()})
            self._params_logged = True
        if cfg.normalize_obs and not self._normalized:
            self.policy.fit_normalization(data.observations)
            self._normalized = True
        obs, actions, mask, per_batch = self._tensors(data)
        n = obs.shape[0]
        self.policy.train()
        for _ in range(n_epochs or cfg.n_epochs):
            perm = torch.randperm(n, generator=self.generator).to(self.device)
            totals: dict[str, float] = {}
            weight = 0
            for start in range(0, n, per_batch):
                idx = perm[start : start + per_batch]
                loss, metrics = self.policy.loss(obs[idx], actions[idx], None if mask is None else mask[idx])
                optim.step(self.optimizer, loss, cfg.max_grad_norm)
                w = int(idx.numel())
                totals["loss"] = totals.get("loss", 0.0) + float(loss.detach()) * w
                for k, v in metrics.items():
                    totals[k] = totals.get(k, 0.0) + v * w
                weight += w
            self.epochs_done += 1
            self.last_metrics = {f"bc_{k}": v / max(weight, 1) for k, v in totals.items()}
            self.tracker.log_metrics({**self.last_metrics, "bc_samples": float(len(data))}, step=self.epochs_done)
        self.policy.eval()
        self.policy.reset()
        return self.policy

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return self.policy.predict(obs, deterministic)

    def evaluate(
        self,
        env: EnvLike,
        n_episodes: int = 10,
        seed: int | None = None,
        deterministic: bool = True,
        n_envs: int | None = None,
    ) -> dict[str, Any]:
        """Mean/std return of the cloned policy over ``n_episodes`` episodes of ``env``."""
        self.policy.reset()
        return evaluate_actor(
            PolicyActor(self.policy, deterministic),
            env,
            n_episodes,
            seed=self.config.seed + 10_000 if seed is None else seed,
            n_envs=n_envs,
        )


class PolicyActor:
    """A policy as a rollout actor with a fixed ``deterministic`` flag, keeping its ``reset`` hook."""

    def __init__(self, policy: ImitationPolicy, deterministic: bool = True):
        self.policy = policy
        self.deterministic = deterministic

    def predict(self, obs: np.ndarray) -> np.ndarray:
        return self.policy.predict(obs, deterministic=self.deterministic)

    def reset(self, mask: np.ndarray | None = None) -> None:
        self.policy.reset(mask)
