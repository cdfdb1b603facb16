r"""Adversarial imitation: GAIL and AIRL on top of PPO (notes 10/12: "a discriminator to distinguish
between the expert's actions and the agent's policy actions" — MaxEnt IRL with sampling).

A discriminator :math:`D_\psi(s,a)` = p(expert | s, a) is trained to tell expert state-actions from
the policy's,

.. math::
    \max_\psi\ \mathbb E_{(s,a)\sim\pi_E}[\log D_\psi(s,a)] + \mathbb E_{(s,a)\sim\pi_\theta}[\log(1 - D_\psi(s,a))],

and the policy is trained by PPO (:class:`~core_rl.trust_region.ppo.PPO`, unchanged) on the reward

.. math::
    r(s,a) = -\log(1 - D_\psi(s,a))\ (\texttt{"gail"}) \quad\text{or}\quad
    r(s,a) = \log D_\psi(s,a) - \log(1 - D_\psi(s,a))\ (\texttt{"logit"}),

so that it moves towards what the discriminator takes for the expert. ``"gail"`` is always
positive (a survival bonus in tasks that end on failure); ``"logit"`` has no sign bias.

Both treat the time after a termination as reward 0, so the reward's sign is a bias in tasks that
end on failure: ``"gail"`` favours long episodes, ``"logit"`` (negative where D sees the policy)
favours ending them — on CartPole the latter learns to fall.

**AIRL** (``reward_type="airl"``) gives the discriminator the MaxEnt IRL structure,

.. math::
    D_\psi(s,a,s') = \frac{\exp f_\psi(s,a,s')}{\exp f_\psi(s,a,s') + \pi_\theta(a|s)},\qquad
    f_\psi = g_\psi(s) + \gamma h_\psi(s') - h_\psi(s),

whose logit is :math:`f_\psi - \log\pi_\theta(a|s)`; the policy reward is that logit,
:math:`f_\psi - \log\pi_\theta`: MaxEnt RL on f. At the optimum :math:`g_\psi` recovers the
expert's reward up to a constant (state-only g: disentangled from the dynamics) and h the value.

**Composition with PPO.** The vector env is wrapped (:class:`RewardRelabel`) so that every step's
reward is the discriminator's, computed in a batch from (s, a, s', terminated); PPO's rollout,
advantage estimation (GAE on the discriminator reward, with bootstrapping of time limits) and
clipped update run as they are. The wrapper records the transitions, on which the discriminator
takes its step each iteration; training statistics (``episode_return``) report the true env reward.

Demonstrations: a table in the schema of :mod:`core_rl.imitation.demonstrations` (config field
``demonstrations``: a parquet/csv path — the CLI's way), or in Python ``GAIL(env, cfg,
demonstrations=frame_or_path)`` or ``GAIL(env, cfg, expert=callable)`` (obs batch → actions; it is
recorded for ``expert_episodes`` episodes).

Example (CartPole-v1 from 4 episodes of the scripted expert: 8,192 steps take the greedy policy
far past the random policy's ≈ 22 — `tests/test_irl.py` reaches the expert's 500 in 60,000)::

    >>> from core_rl.imitation import cartpole_expert
    >>> agent = GAIL("CartPole-v1", {"expert_episodes": 4, "seed": 0}, expert=cartpole_expert).learn(8192)
    >>> agent.evaluate(n_episodes=5)["mean_return"] > 75
    True

Without demonstrations or an expert the agent is refused when it is built::

    >>> GAIL("CartPole-v1")
    Traceback (most recent call last):
    ...
    core_rl.common.errors.ConfigError: gail needs demonstrations: set the config field 'demonstrations' to a parquet/csv path, or pass demonstrations= or expert= in Python
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv, VectorWrapper
from pydantic import Field, field_validator
from torch import nn

from core_rl.common import optim
from core_rl.common.config import Widths
from core_rl.common.envs import EnvLike, final_next_obs
from core_rl.common.errors import ConfigError
from core_rl.common.networks import ObsEncoder, mlp
from core_rl.common.tracking import Tracker
from core_rl.trust_region.ppo import PPO, PPOConfig

RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class RewardRelabel(VectorWrapper):
    """Replaces a vector env's reward by ``reward_fn(obs, actions, next_obs, terminated)``.

    ``next_obs`` is the true successor (``info["final_obs"]`` where an episode ended); the env's
    own reward of the last step is kept in ``true_rewards``; with ``record=True`` every transition
    is appended to ``transitions`` (cleared by the caller).
    """

    def __init__(self, env: VectorEnv, reward_fn: RewardFn, record: bool = True):
        super().__init__(env)
        self.reward_fn = reward_fn
        self.record = record
        self.true_rewards = np.zeros(self.num_envs)
        self.transitions: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._last_obs: np.ndarray | None = None

    def reset(self, **kwargs: Any):  # type: ignore[no-untyped-def]
        obs, info = self.env.reset(**kwargs)
        self._last_obs = obs
        return obs, info

    def step(self, actions: np.ndarray):  # type: ignore[no-untyped-def]
        if self._last_obs is None:
            raise RuntimeError("RewardRelabel: reset the env (or set_last_obs) before stepping")
        obs = self._last_obs
        next_obs, rewards, terminated, truncated, info = self.env.step(actions)
        done = np.asarray(terminated | truncated)
        real_next = final_next_obs(next_obs, done, info)
        self.true_rewards = np.asarray(rewards, dtype=np.float64)
        actions = np.asarray(actions)
        if self.record:
            self.transitions.append((np.array(obs, copy=True), actions.copy(), real_next, np.asarray(terminated)))
        new_rewards = np.asarray(self.reward_fn(obs, actions, real_next, np.asarray(terminated)), dtype=np.float64)
        self._last_obs = next_obs
        return next_obs, new_rewards, terminated, truncated, info

    def set_last_obs(self, obs: np.ndarray) -> None:
        """The observation the next step starts from (for an env reset before wrapping)."""
        self._last_obs = obs


NO_DEMONSTRATIONS = (
    "gail needs demonstrations: set the config field 'demonstrations' to a parquet/csv "
    "path, or pass demonstrations= or expert= in Python"
)


class GAILConfig(PPOConfig):
    n_envs: int = Field(8, ge=1)
    n_steps: int = Field(32, ge=1)
    batch_size: int = Field(256, ge=1)
    n_epochs: int = Field(20, ge=1)
    gae_lambda: float = Field(0.8, ge=0.0, le=1.0)
    gamma: float = Field(0.98, gt=0.0, le=1.0)
    lr: float = Field(1e-3, gt=0.0)
    ent_coef: float = Field(0.01, ge=0.0)
    normalize_reward: bool = True
    demonstrations: str | None = Field(
        None, description="Path of the expert's demonstration table (parquet or csv: episode, step, obs…, action…)."
    )
    expert_episodes: int = Field(20, ge=1, description="Episodes recorded from an `expert` callable.")
    reward_type: Literal["gail", "logit", "airl"] = Field(
        "gail", description="Policy reward: -log(1-D) (gail), log D - log(1-D) (logit), or AIRL's f - log π."
    )
    disc_hidden_sizes: Widths = Field((64, 64), description="Hidden widths of the discriminator.")
    disc_lr: float = Field(3e-4, gt=0.0, description="Discriminator learning rate.")
    disc_epochs: int = Field(1, ge=1, description="Discriminator passes over each policy batch.")
    disc_batch_size: int = Field(256, ge=2, description="Discriminator minibatch (policy + expert halves).")
    disc_weight_decay: float = Field(0.0, ge=0.0)
    disc_normalize_obs: bool = Field(
        True, description="Standardize the discriminator's observations by the expert's statistics."
    )
    disc_grad_penalty: float = Field(
        1.0,
        ge=0.0,
        description="λ of the zero-centred gradient penalty λ E‖∇_inputs logit‖² (keeps D from saturating).",
    )
    airl_state_only: bool = Field(True, description="AIRL: reward g(s) of the state only (else g(s, a)).")

    @field_validator("demonstrations")
    @classmethod
    def _file_exists(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).is_file():
            raise ValueError(f"demonstrations file '{v}' does not exist")
        return v


class Discriminator(nn.Module):
    r"""The discriminator's logit: :math:`\mathrm{logit}\,D(s,a)` (GAIL) or, for AIRL,
    :math:`f(s,a,s') - \log\pi(a|s)` with :math:`f = g(s) + \gamma h(s') - h(s)`.

    Inputs are features: observations standardized by the expert's statistics and one-hot
    (Discrete) or raw (Box) actions.
    """

    def __init__(
        self,
        obs_space: gym.Space,
        action_space: gym.Space,
        hidden_sizes: tuple[int, ...],
        activation: str,
        kind: Literal["gail", "logit", "airl"],
        gamma: float,
        state_only: bool = True,
    ):
        super().__init__()
        self.encoder = ObsEncoder(obs_space)
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        self.action_dim = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))
        self.airl = kind == "airl"
        self.gamma, self.state_only = gamma, state_only
        d = self.encoder.dim
        self.register_buffer("obs_mean", torch.zeros(d))
        self.register_buffer("obs_std", torch.ones(d))
        if self.airl:
            self.g = mlp(d if state_only else d + self.action_dim, 1, hidden_sizes, activation)
            self.h = mlp(d, 1, hidden_sizes, activation)
        else:
            self.net = mlp(d + self.action_dim, 1, hidden_sizes, activation)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        return (self.encoder(obs) - self.obs_mean) / self.obs_std

    def action_features(self, actions: torch.Tensor) -> torch.Tensor:
        if self.discrete:
            return nn.functional.one_hot(actions.long().reshape(-1), self.action_dim).float()
        return actions.reshape(actions.shape[0], -1).float()

    def encode(
        self, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Float input features (x, a, x') of the networks (the gradient penalty differentiates them)."""
        return (
            self.features(obs),
            self.action_features(actions),
            None if next_obs is None else self.features(next_obs),
        )

    def g_of(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.g(x if self.state_only else torch.cat([x, a], -1)).squeeze(-1)

    def f(self, x: torch.Tensor, a: torch.Tensor, x_next: torch.Tensor, terminated: torch.Tensor) -> torch.Tensor:
        r"""AIRL's :math:`f(s,a,s') = g + \gamma h(s')(1 - \text{terminated}) - h(s)` on features."""
        h_next = self.h(x_next).squeeze(-1) * (1.0 - terminated.float())
        return self.g_of(x, a) + self.gamma * h_next - self.h(x).squeeze(-1)

    def logit(
        self,
        x: torch.Tensor,
        a: torch.Tensor,
        x_next: torch.Tensor | None = None,
        terminated: torch.Tensor | None = None,
        log_pi: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """logit D from features: the net's output (GAIL) or f − log π (AIRL)."""
        if self.airl:
            assert x_next is not None and terminated is not None and log_pi is not None
            return self.f(x, a, x_next, terminated) - log_pi
        return self.net(torch.cat([x, a], -1)).squeeze(-1)

    def reward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The learned reward: g(s) (AIRL) or logit D(s, a) (GAIL)."""
        x, a, _ = self.encode(obs, actions)
        return self.g_of(x, a) if self.airl else self.logit(x, a)


class GAIL(PPO):
    """GAIL / AIRL: PPO on a discriminator's reward (``GAIL(env, cfg, demonstrations=...).learn(n)``)."""

    name = "gail"
    config: GAILConfig
    config_cls = GAILConfig
    action_spaces = (gym.spaces.Discrete, gym.spaces.Box)  # the discriminator encodes no slate actions
    collect_mode = "steps"

    def __init__(
        self,
        env: EnvLike,
        config: GAILConfig | Mapping[str, Any] | None = None,
        tracker: Tracker | None = None,
        *,
        demonstrations: Any = None,
        expert: Callable[[np.ndarray], Any] | None = None,
        restoring: bool = False,
        **overrides: Any,
    ):
        if demonstrations is not None and expert is not None:
            raise ConfigError("give either demonstrations or an expert, not both")
        self._demo_source = demonstrations
        self._expert_actor = expert
        self._restoring = restoring  # Agent.load: a checkpoint's agent can predict without demonstrations
        super().__init__(env, config, tracker, **overrides)

    @classmethod
    def _restore(cls, env: EnvLike, config: dict[str, Any], tracker: Tracker | None) -> "GAIL":
        return cls(env, cls._checkpoint_config(config), tracker=tracker, restoring=True)

    # ---- construction ----------------------------------------------------------------------
    def _build(self) -> None:
        super()._build()
        cfg = self.config
        self.discriminator = Discriminator(
            self.observation_space,
            self.action_space,
            cfg.disc_hidden_sizes,
            cfg.activation,
            cfg.reward_type,
            cfg.gamma,
            cfg.airl_state_only,
        ).to(self.device)
        self.disc_optimizer = torch.optim.Adam(
            self.discriminator.parameters(), lr=cfg.disc_lr, weight_decay=cfg.disc_weight_decay
        )
        self.env = RewardRelabel(self.env, self._policy_reward)
        self.env.set_last_obs(self._obs)
        self.expert_data: dict[str, torch.Tensor] | None = None
        self._disc_generator = torch.Generator().manual_seed(cfg.seed + 7)
        source = self._demo_source if self._demo_source is not None else cfg.demonstrations
        if source is not None or self._expert_actor is not None:
            self._load_expert(source)
        elif not self._restoring:  # refused when it is built, not when it first trains
            raise ConfigError(NO_DEMONSTRATIONS)

    def _load_expert(self, source: Any) -> None:
        from core_rl.imitation.demonstrations import collect_demonstrations, load_demonstrations

        if source is None:  # record the expert callable
            source = collect_demonstrations(
                self._expert_actor, self._env_source, self.config.expert_episodes, seed=self.config.seed + 20_000
            )
        demos = load_demonstrations(source, self.observation_space, self.action_space)
        obs, actions = demos.observations, demos.actions
        # successors within an episode (AIRL needs s'); an episode's last step has none in the table
        has_next = torch.zeros(len(demos), dtype=torch.bool)
        has_next[:-1] = (demos.episodes[1:] == demos.episodes[:-1]) & (demos.steps[1:] == demos.steps[:-1] + 1)
        self.expert_data = {
            "obs": obs.to(self.device),
            "actions": actions.to(self.device),
            "next_obs": torch.roll(obs, -1, 0).to(self.device),
            "has_next": has_next.to(self.device),
        }
        if isinstance(self.observation_space, gym.spaces.Box) and self.config.disc_normalize_obs:
            x = self.discriminator.encoder(obs)
            self.discriminator.obs_mean.copy_(x.mean(0))
            self.discriminator.obs_std.copy_(x.std(0).clamp_min(1e-3) if len(x) > 1 else torch.ones_like(x[0]))

    # ---- the discriminator's logit and the policy's reward ---------------------------------------
    def _policy_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw observations as the policy sees them (PPO may normalize them)."""
        return self._obs_tensor(obs.cpu().numpy())

    def _tensors(
        self, obs: np.ndarray, actions: np.ndarray, next_obs: np.ndarray, terminated: np.ndarray
    ) -> tuple[torch.Tensor, ...]:
        dev = self.device
        return (
            torch.as_tensor(np.asarray(obs), device=dev),
            torch.as_tensor(np.asarray(actions), device=dev),
            torch.as_tensor(np.asarray(next_obs), device=dev),
            torch.as_tensor(np.asarray(terminated), dtype=torch.float32, device=dev),
        )

    def _inputs(
        self, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor, terminated: torch.Tensor
    ) -> dict[str, torch.Tensor | None]:
        """The discriminator's input features of a batch (with log π for AIRL)."""
        airl = self.config.reward_type == "airl"
        x, a, x_next = self.discriminator.encode(obs, actions, next_obs if airl else None)
        log_pi = None
        if airl:
            with torch.no_grad():
                log_pi = self.policy.distribution(self._policy_obs(obs)).log_prob(actions)
        return {"x": x, "a": a, "x_next": x_next, "terminated": terminated if airl else None, "log_pi": log_pi}

    def _logit(
        self, inputs: dict[str, torch.Tensor | None], penalty: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | float]:
        """logit D of a batch, and E‖∇_inputs logit‖² (the zero-centred gradient penalty) if asked."""
        if not penalty:
            return self.discriminator.logit(**inputs), 0.0
        diff = {k: inputs[k].detach().requires_grad_(True) for k in ("x", "a", "x_next") if inputs[k] is not None}
        logit = self.discriminator.logit(**{**inputs, **diff})
        grads = torch.autograd.grad(logit.sum(), list(diff.values()), create_graph=True, allow_unused=True)
        return logit, sum(g.pow(2).sum(-1) for g in grads if g is not None).mean()

    def _reward_of(self, logit: torch.Tensor) -> torch.Tensor:
        if self.config.reward_type == "gail":
            return nn.functional.softplus(logit)  # -log(1 - D) = log(1 + e^logit)
        return logit  # log D - log(1 - D) (AIRL: f - log π)

    @torch.no_grad()
    def _policy_reward(
        self, obs: np.ndarray, actions: np.ndarray, next_obs: np.ndarray, terminated: np.ndarray
    ) -> np.ndarray:
        if self.expert_data is None:
            return np.zeros(len(actions))
        t = self._tensors(obs, actions, next_obs, terminated)
        return self._reward_of(self._logit(self._inputs(*t))[0]).cpu().numpy()

    def learned_reward(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """The discriminator's reward estimate per (s, a): g(s) for AIRL, logit D(s, a) for GAIL."""
        with torch.no_grad():
            return (
                self.discriminator.reward(
                    torch.as_tensor(np.array(obs), device=self.device),
                    torch.as_tensor(np.array(actions), device=self.device),
                )
                .cpu()
                .numpy()
            )

    # ---- one iteration: collect, discriminator step, PPO step ----------------------------------
    def _track_episodes(self, rewards: np.ndarray, dones: np.ndarray, info: dict[str, Any] | None = None) -> None:
        env = self.env
        super()._track_episodes(env.true_rewards if isinstance(env, RewardRelabel) else rewards, dones, info)

    def _iterate(self) -> dict[str, float]:
        if self.expert_data is None:  # an agent loaded from a checkpoint of Python-given demonstrations
            raise ConfigError(NO_DEMONSTRATIONS)
        self._apply_lr_schedule()
        self.env.transitions.clear()
        batch = self.collect()  # rewards: the discriminator's, D_k
        disc_metrics = self.train_discriminator()  # D_k -> D_{k+1} on this rollout
        metrics = self.update(self.estimate(batch))  # PPO, unchanged
        metrics.update(disc_metrics)
        metrics["disc_reward"] = float(batch.rewards.mean())
        return metrics

    def train_discriminator(self) -> dict[str, float]:
        r"""``disc_epochs`` passes over the last rollout: minibatches of policy transitions (label 0)
        and as many expert ones (label 1), binary cross-entropy on the logit, plus the gradient penalty."""
        cfg = self.config
        assert self.expert_data is not None
        p_obs, p_act, p_next, p_term = self._tensors(*(np.concatenate(x) for x in zip(*self.env.transitions)))
        e = self.expert_data
        airl = cfg.reward_type == "airl"
        expert_idx = torch.nonzero(e["has_next"]).squeeze(-1) if airl else torch.arange(len(e["actions"]))
        if len(expert_idx) == 0:
            raise ConfigError("AIRL needs expert transitions (s, a, s'): the demonstrations have no consecutive steps")
        n, half = len(p_act), max(1, cfg.disc_batch_size // 2)
        gp = cfg.disc_grad_penalty > 0
        stats = {"disc_loss": 0.0, "disc_expert_acc": 0.0, "disc_policy_acc": 0.0}
        updates = 0
        for _ in range(cfg.disc_epochs):
            perm = torch.randperm(n, generator=self._disc_generator)
            for start in range(0, n, half):
                idx = perm[start : start + half].to(self.device)
                ej = expert_idx[
                    torch.randint(0, len(expert_idx), (len(idx),), generator=self._disc_generator).to(self.device)
                ]
                p_in = self._inputs(p_obs[idx], p_act[idx], p_next[idx], p_term[idx])
                e_in = self._inputs(
                    e["obs"][ej], e["actions"][ej], e["next_obs"][ej], torch.zeros(len(ej), device=self.device)
                )
                policy_logit, pen_p = self._logit(p_in, gp)
                expert_logit, pen_e = self._logit(e_in, gp)
                # -E_expert log D - E_policy log(1 - D)  (+ λ E‖∇ logit‖²)
                loss = (
                    nn.functional.softplus(-expert_logit).mean()
                    + nn.functional.softplus(policy_logit).mean()
                    + cfg.disc_grad_penalty * 0.5 * (pen_p + pen_e)
                )
                optim.step(self.disc_optimizer, loss)
                stats["disc_loss"] += loss.item()
                stats["disc_expert_acc"] += (expert_logit > 0).float().mean().item()
                stats["disc_policy_acc"] += (policy_logit < 0).float().mean().item()
                updates += 1
        return {k: v / max(updates, 1) for k, v in stats.items()}


__all__ = ["GAIL", "GAILConfig", "Discriminator", "RewardRelabel"]
