r"""Model-predictive control with a learned model: MPC and PETS (notes 9/21–9/28).

The model-based RL loop of the notes ("version 1.5"):

1. run a base policy (uniform random actions) to collect D = {(s, a, s')};
2. learn a dynamics model f̂(s, a) (and reward r̂) minimizing Σ ‖f̂(s_i, a_i) − s'_i‖²;
3. plan through f̂ to choose actions;
4. execute only the first planned action, observe s', append (s, a, s') to D — replanning at every
   step corrects the open-loop plan's errors ("as replanning increases, the need for perfecting
   individual plans decreases");
5. every ``train_every`` steps go back to 2.

Step 3 is an open-loop shooting planner (:mod:`core_rl.model_based.planners.shooting`: random
shooting, CEM or MPPI), or iLQR through the model's mean prediction
(:class:`core_rl.model_based.planners.ilqr.ILQRPlanner`), maximizing the expected return over the horizon H,

.. math:: a_{t:t+H} = \arg\max \tfrac1P\sum_{p=1}^P \sum_{k=0}^{H-1}\gamma^k\, \hat r(s^p_{t+k}, a_{t+k}),
          \qquad s^p_{k+1} \sim \hat f_{b(p)}(s^p_k, a_k),

PETS (:class:`PETS`) uses a bootstrap ensemble of Gaussian networks and trajectory sampling: particle
p follows member b(p) = p mod M, so the average over particles integrates over both aleatoric noise
and model uncertainty; ``risk='penalty'`` subtracts β·std over particles instead (pessimism under
model disagreement). Any model of :mod:`core_rl.model_based` (deterministic/Gaussian network,
ensemble, BNN, GP) can be planned through.

Example (Pendulum-v1 with one learned deterministic dynamics network, CEM and the known reward: the
first episode is random actions, ≈ −1200; from the fifth or sixth of 200 steps the planner swings
the pendulum up and holds it; ~15 s)::

    >>> settings = {"hidden_sizes": (64, 64), "model": "deterministic", "reward": "known", "horizon": 25}
    >>> settings |= {"n_candidates": 100, "n_iterations": 3, "n_elites": 10, "initial_random_steps": 200}
    >>> agent = MPC("Pendulum-v1", {**settings, "train_every": 200, "seed": 0}).learn(1200)
    >>> returns = list(agent.episode_returns)
    >>> len(returns), returns[0] < -600, max(returns[-2:]) > -400
    (6, True, True)
"""

from __future__ import annotations

from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field, model_validator

from core_rl.common.base import Agent
from core_rl.common.config import Widths
from core_rl.common.envs import final_next_obs
from core_rl.common.errors import SpaceError
from core_rl.common.replay import ReplayBuffer
from core_rl.common.transitions import Transitions
from core_rl.model_based.env_models import RewardFn, known_reward, known_termination
from core_rl.model_based.models import ModelConfig, ModelKind, build_model, fit_model
from core_rl.model_based.planners.ilqr import ILQRPlanner
from core_rl.model_based.planners.shooting import CEM, MPPI, RandomShooting, ShootingPlanner, TrajectoryEvaluator


class MPCConfig(ModelConfig):
    n_envs: int = Field(1, ge=1)
    hidden_sizes: Widths = Field((200, 200), description="Hidden widths of the dynamics network.")
    activation: str = Field("silu", pattern="^(tanh|relu|elu|gelu|silu)$")
    buffer_size: int = Field(100_000, ge=1)
    gamma: float = Field(1.0, gt=0.0, le=1.0, description="Discount of the planning objective.")
    model: ModelKind = "deterministic"
    initial_random_steps: int = Field(200, ge=1, description="Uniform-random env steps before the first model fit.")
    train_every: int = Field(200, ge=1, description="Env steps between model refits.")
    planner: Literal["random", "cem", "mppi", "ilqr"] = Field(
        "cem", description="Shooting planner (random/CEM/MPPI) or iLQR through the model's mean."
    )
    horizon: int = Field(15, ge=1)
    n_candidates: int = Field(200, ge=1, description="Action sequences sampled per planner iteration.")
    n_iterations: int = Field(5, ge=1, description="Planner iterations per step (random shooting: rounds).")
    n_elites: int = Field(20, ge=1)
    cem_alpha: float = Field(0.1, ge=0.0, lt=1.0, description="CEM smoothing: μ ← αμ + (1−α)μ_elites.")
    mppi_temperature: float = Field(1.0, gt=0.0)
    init_std: float = Field(0.5, gt=0.0, description="Initial sampling std as a fraction of the half action range.")
    ilqr_iterations: int = Field(5, ge=1, description="iLQR iterations per step (planner='ilqr').")
    n_particles: int | None = Field(None, ge=1, description="Particles per candidate (default: one per member).")
    risk: Literal["mean", "penalty"] = Field("mean", description="Average over particles or penalize their spread.")
    risk_coef: float = Field(1.0, ge=0.0, description="β of mean − β·std (risk='penalty').")

    @model_validator(mode="after")
    def _check(self) -> "MPCConfig":
        if self.planner == "cem" and self.n_elites > self.n_candidates:
            raise ValueError(f"n_elites ({self.n_elites}) exceeds n_candidates ({self.n_candidates})")
        members = self.n_members if self.model in ("ensemble", "bnn") else 1
        if self.n_particles is not None and self.n_particles % members:
            raise ValueError(f"n_particles ({self.n_particles}) must be a multiple of n_members ({members})")
        return self


class MPC(Agent):
    """Learn a model from real steps, act by replanning through it at every step."""

    name = "mpc"
    config: MPCConfig
    config_cls = MPCConfig
    action_spaces = (gym.spaces.Box,)
    log_every_steps = 200

    def _build(self) -> None:
        cfg = self.config
        if not isinstance(self.observation_space, gym.spaces.Box) or len(self.observation_space.shape) != 1:
            raise SpaceError(f"{self.name} needs a flat Box observation space, got {self.observation_space}")
        self.obs_dim = int(np.prod(self.observation_space.shape))
        self.act_dim = int(np.prod(self.action_space.shape))
        self.replay = ReplayBuffer(
            cfg.buffer_size, self.n_envs, (self.obs_dim,), (self.act_dim,), seed=cfg.seed, device=self.device
        )
        self.model = build_model(cfg, self.obs_dim, self.act_dim, cfg.hidden_sizes, cfg.activation)
        self.model_optimizer = getattr(self.model, "optimizer", None)
        self.evaluator = TrajectoryEvaluator(
            self.model,
            cfg.n_particles,
            reward_fn=self._known_reward(),
            termination_fn=known_termination(self.env_id),
            gamma=cfg.gamma,
            risk=cfg.risk,
            risk_coef=cfg.risk_coef,
        )
        self.planner = self._make_planner(cfg.seed)
        self._eval_planner: ShootingPlanner | ILQRPlanner | None = None
        self._last_fit_step = 0
        self._fit_metrics: dict[str, float] = {}
        self._action_rng = torch.Generator().manual_seed(cfg.seed + 1)

    def _make_planner(self, seed: int) -> ShootingPlanner | ILQRPlanner:
        cfg = self.config
        low = torch.as_tensor(self.action_space.low, dtype=torch.float32)
        high = torch.as_tensor(self.action_space.high, dtype=torch.float32)
        common = dict(
            horizon=cfg.horizon,
            n_candidates=cfg.n_candidates,
            n_iterations=cfg.n_iterations,
            init_std=cfg.init_std,
            seed=seed,
        )
        if cfg.planner == "cem":
            return CEM(self.evaluator, low, high, n_elites=cfg.n_elites, alpha=cfg.cem_alpha, **common)
        if cfg.planner == "mppi":
            return MPPI(self.evaluator, low, high, temperature=cfg.mppi_temperature, **common)
        if cfg.planner == "ilqr":
            return ILQRPlanner(
                self.model,
                low,
                high,
                cfg.horizon,
                cfg.ilqr_iterations,
                reward_fn=self._known_reward(),
                init_std=0.1,
                seed=seed,
            )
        return RandomShooting(self.evaluator, low, high, **common)

    def _known_reward(self) -> RewardFn | None:
        """r(s, a, s') the planner uses with reward='known' (None: the model's learned reward)."""
        return known_reward(self.env_id) if self.config.reward == "known" else None

    @property
    def model_fitted(self) -> bool:
        return bool(self.model.fitted)

    def _random_actions(self, n: int) -> torch.Tensor:
        low = torch.as_tensor(self.action_space.low, dtype=torch.float32)
        high = torch.as_tensor(self.action_space.high, dtype=torch.float32)
        return low + (high - low) * torch.rand((n, self.act_dim), generator=self._action_rng)

    def fit_model(self) -> dict[str, float]:
        """Refit the dynamics model on every real transition so far."""
        metrics = fit_model(self.model, self.config, Transitions.from_replay(self.replay))
        self._last_fit_step = self.num_timesteps
        return metrics

    def _obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(obs), dtype=torch.float32).reshape(-1, self.obs_dim)

    def _iterate(self) -> dict[str, float]:
        cfg = self.config
        if self.num_timesteps >= cfg.initial_random_steps and (
            not self.model_fitted or self.num_timesteps - self._last_fit_step >= cfg.train_every
        ):
            self._fit_metrics = self.fit_model()
        if self.model_fitted:
            actions = self.planner.plan(self._obs_tensor(self._obs)).actions[:, 0]
        else:
            actions = self._random_actions(self.n_envs)
        env_actions = self._to_env_action(actions)
        next_obs, rewards, terminated, truncated, info = self.env.step(env_actions)
        dones = terminated | truncated
        if dones.any():
            self.planner.reset(torch.as_tensor(dones))
        self.replay.add(self._obs, env_actions, rewards, final_next_obs(next_obs, dones, info), terminated, truncated)
        self._track_episodes(rewards, dones, info)
        self._obs = next_obs
        self.num_timesteps += self.n_envs
        return dict(self._fit_metrics)

    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        if not self.model_fitted:
            return self._random_actions(obs.shape[0])
        if self._eval_planner is None:
            self._eval_planner = self._make_planner(self.config.seed + 7)
        return self._eval_planner.plan(obs).actions[:, 0]


class PETSConfig(MPCConfig):
    model: ModelKind = "ensemble"
    probabilistic: bool = True
    n_particles: int | None = Field(20, ge=1)


class PETS(MPC):
    """Probabilistic ensembles with trajectory sampling: CEM-MPC through a bootstrap Gaussian ensemble."""

    name = "pets"
    config: PETSConfig
    config_cls = PETSConfig
