r"""The model a planner-as-controller plans in: the env's true one, one fitted here, or one a run learned.

The planner programs (``deeprl train --algo cem|mppi|random_shooting|ilqr``) choose every action by
planning in a model of the env; the ``dynamics`` field says which (notes 9/21, model-based RL
"version 0.5": collect data with a base policy, learn :math:`\hat f`, plan through it):

* ``known`` (default) — the env's true step, reward and termination
  (:data:`~core_rl.model_based.env_models.KNOWN_DYNAMICS`);
* ``fit`` — run the uniformly random policy for ``dynamics_steps`` env steps,
  :math:`\mathcal D = \{(s_i, a_i, r_i, s'_i)\}`, and fit the library's network model of
  :mod:`core_rl.model_based.dynamics` (``model``: a deterministic or Gaussian network, or a bootstrap
  ensemble of them, :mod:`core_rl.model_based.ensemble`) to
  :math:`\min_\phi \sum_i \|\hat f_\phi(s_i, a_i) - (s'_i - s_i, r_i)\|^2` (the Gaussian NLL for
  Gaussian members), then plan through it;
* a checkpoint of an agent that learned a model (``mpc``, ``pets``, ``mbpo``: ``agent.save``; on the
  command line ``run:RUN_ID`` or ``models:/NAME/VERSION``, which the pipeline fetches into a file) —
  its model, with the reward it was trained with.

The reward planned for (``reward``): ``known`` — the env's r(s, a, s')
(:data:`~core_rl.model_based.env_models.KNOWN_REWARDS`); ``learned`` — the model's reward head
:math:`\hat r_\phi(s, a)`. By default the known one where the env has one (``fit``), or the one
the checkpoint's agent planned with. Terminations are the env's where known, else model rollouts
never end.

Model error is measured on ``heldout_steps`` fresh uniformly-random transitions (a seed of their
own) with the member-averaged mean prediction :math:`\hat s'`:

.. math::
    \text{model\_mse} = \tfrac{1}{N d}\sum_i \|\hat s'_i - s'_i\|^2, \qquad
    \text{model\_error\_ratio} = \frac{\sum_i \|\widehat{\Delta s}_i - \Delta s_i\|^2}
                                       {\sum_i \|\Delta s_i - \overline{\Delta s}\|^2}

(0: exact; 1: no better than predicting the average change), plus ``reward_mse`` of a learned
reward, and the same one-step error on the transitions the controller itself visited
(``model_mse_visited``), where the planner exploits the model.

Example (a deterministic network fitted on 1000 random Pendulum-v1 steps predicts held-out
steps far better than "the average change")::

    >>> from core_rl.model_based.planning_models import PlanningModelConfig, build_planning_model
    >>> cfg = PlanningModelConfig(dynamics="fit", dynamics_steps=1000, heldout_steps=200, model="deterministic",
    ...                           model_epochs=30)
    >>> planning = build_planning_model("cem", "Pendulum-v1", cfg)
    >>> planning.fit()["model_error_ratio"] < 0.1
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from core_rl.common.config import Widths
from core_rl.common.envs import make_env
from core_rl.common.errors import CheckpointError, ConfigError, DeepRLError, EnvError, SpaceError
from core_rl.common.transitions import Transitions
from core_rl.model_based.env_models import (
    KNOWN_DYNAMICS,
    KNOWN_REWARDS,
    RewardFn,
    TerminationFn,
    known_termination,
)
from core_rl.model_based.planners.shooting import FunctionModel

#: the fields that shape the model ``dynamics=fit`` trains (a checkpoint brings its own)
FIT_FIELDS = ("dynamics_steps", "model", "n_members", "model_hidden_sizes", "model_epochs")
LEARNED_FIELDS = ("heldout_steps", "reward")


class PlanningModelConfig(BaseModel):
    """Which model a planner plans in (module docstring)."""

    model_config = ConfigDict(extra="forbid")

    dynamics: str = Field(
        "known",
        description="known (the env's true model), fit (fit a network on dynamics_steps random steps) or "
        "an mpc/pets/mbpo checkpoint (command line: run:RUN_ID, models:/NAME/VERSION).",
    )
    dynamics_steps: int = Field(2000, ge=10, description="Uniformly random env steps the model is fitted on (fit).")
    heldout_steps: int = Field(500, ge=1, description="Fresh random steps the learned model's error is measured on.")
    model: Literal["deterministic", "gaussian", "ensemble"] = Field(
        "ensemble",
        description="The network dynamics=fit trains: one deterministic/Gaussian net or a bootstrap ensemble.",
    )
    n_members: int = Field(5, ge=1, description="Ensemble members (model=ensemble).")
    model_hidden_sizes: Widths = Field((200, 200), description="Hidden widths of the fitted network.")
    model_epochs: int = Field(50, ge=1, description="Max epochs of the fit (early stopping on a 10% holdout).")
    reward: Literal["known", "learned"] | None = Field(
        None, description="Reward planned for in a learned model; default: the env's if known (fit), the checkpoint's."
    )


@dataclass
class PlanningModel:
    """A model with the reward and termination a planner scores rollouts with."""

    model: Any  # the DynamicsModel protocol (FunctionModel for a known model)
    obs_dim: int
    act_dim: int
    reward_fn: RewardFn | None  # None: the model's learned reward
    termination_fn: TerminationFn | None
    learned: bool
    source: str  # known / fit / the checkpoint's algorithm
    config: Any  # the program's config (a PlanningModelConfig)
    env_id: str
    fit_config: Any = None  # the MPCConfig that builds and fits the model (dynamics=fit)
    metrics: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        """The model in words, for the run's params: ``true Pendulum-v1 step``, ``ensemble of 5 Gaussian nets``."""
        if not self.learned:
            return f"true {self.env_id} step"
        model = self.model
        members = int(getattr(model, "n_members", 1))
        kind = "Gaussian" if getattr(model, "probabilistic", False) else "deterministic"
        net = f"{kind} net" if members == 1 else f"ensemble of {members} {kind} nets"
        return (
            f"{type(model).__name__}: {net}"
            if type(model).__name__ not in ("NeuralDynamics", "BootstrapEnsemble")
            else net
        )

    def seed_of(self, stream: int) -> int:
        """Seeds of the fit data (0) and of the held-out data (1), apart from the episodes' seeds."""
        return 100_003 * (stream + 1) + int(getattr(self.config, "seed", 0))

    def fit(self) -> dict[str, float]:
        """``dynamics=fit``: collect, fit, measure; a checkpoint's model is only measured. Returns
        (and keeps in ``metrics``) the fit statistics and the held-out model error."""
        cfg = self.config
        if not self.learned:
            return {}
        if cfg.dynamics == "fit":
            from core_rl.model_based.models import fit_model

            data = Transitions.collect(self.env_id, cfg.dynamics_steps, seed=self.seed_of(0))
            self.metrics.update(fit_model(self.model, self.fit_config, data))
            self.metrics["dynamics_transitions"] = float(len(data))
        heldout = Transitions.collect(self.env_id, cfg.heldout_steps, seed=self.seed_of(1))
        self.metrics.update(self.error(heldout))
        return dict(self.metrics)

    @torch.no_grad()
    def error(self, data: Transitions, suffix: str = "") -> dict[str, float]:
        """One-step error of the mean prediction on ``data`` (module docstring)."""
        pred, reward = self.model.mean_step(data.obs, data.actions)
        delta, delta_hat = data.next_obs - data.obs, pred - data.obs
        spread = (delta - delta.mean(0)).pow(2).sum().clamp_min(1e-12)
        out = {
            "model_mse": (pred - data.next_obs).pow(2).mean().item(),
            "model_error_ratio": ((delta_hat - delta).pow(2).sum() / spread).item(),
        }
        if self.reward_fn is None and reward is not None:
            out["reward_mse"] = (reward - data.rewards).pow(2).mean().item()
        return {f"{k}{suffix}": v for k, v in out.items()}

    def step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The differentiable mean step x' = f(x, u) (iLQR linearizes it by autograd)."""
        if not self.learned:
            return self.model.step_fn(x, u)
        next_obs, _ = self.model.mean_step(x.float(), u.float())
        return next_obs.to(x.dtype)

    def reward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """r(x, u) planned for: the known r(x, u, f(x, u)) or the learned head (differentiable)."""
        if self.reward_fn is not None:
            return self.reward_fn(x, u, self.step(x, u))
        _, r = self.model.mean_step(x.float(), u.float())
        return r.to(x.dtype)


def _spaces(env_id: str) -> tuple[gym.Space, gym.Space]:
    env = make_env(env_id)
    spaces = (env.observation_space, env.action_space)
    env.close()
    return spaces


def build_planning_model(
    algo: str, env_id: str, cfg: Any, known: dict[str, tuple[Any, int, int]] | None = None
) -> PlanningModel:
    """Check ``cfg`` against the env and build the (unfitted) model the planner ``algo`` plans in.

    ``known`` maps env ids to the true models this planner can use (default
    :data:`KNOWN_DYNAMICS`). Raises one :class:`~core_rl.common.errors.DeepRLError` naming the field."""
    known = KNOWN_DYNAMICS if known is None else known
    dynamics = cfg.dynamics
    set_fields = cfg.model_fields_set
    seed = int(getattr(cfg, "seed", 0))
    if dynamics == "known":
        for name in (*FIT_FIELDS, *LEARNED_FIELDS):
            if name in set_fields:
                raise ConfigError(
                    f"config field '{name}' applies to "
                    + ("dynamics=fit" if name in FIT_FIELDS else "a learned model (dynamics=fit or run:RUN_ID)")
                    + ", not to dynamics=known"
                )
        if env_id not in known:
            discrete = isinstance(_spaces(env_id)[1], gym.spaces.Discrete)
            raise EnvError(
                f"{algo} plans in a known model of {', '.join(sorted(known))}; got env '{env_id}' "
                + (
                    "(a discrete-action env: use mcts, which searches the known model of a finite env or CartPole-v1)"
                    if discrete
                    else "(plan in a learned model instead: --set dynamics=fit, or dynamics=run:RUN_ID of an "
                    "mpc/pets run)"
                )
            )
        step, obs_dim, act_dim = known[env_id]
        return PlanningModel(
            FunctionModel(step, obs_dim, act_dim),
            obs_dim,
            act_dim,
            KNOWN_REWARDS.get(env_id),
            known_termination(env_id),
            False,
            "known",
            cfg,
            env_id,
        )
    obs_space, act_space = _spaces(env_id)
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        raise SpaceError(f"{algo} with a learned model needs a flat Box observation space; {env_id} has {obs_space}")
    if not (
        isinstance(act_space, gym.spaces.Box)
        and len(act_space.shape) == 1
        and np.all(np.isfinite(act_space.low) & np.isfinite(act_space.high))
    ):
        raise SpaceError(
            f"{algo} plans continuous actions: it needs a bounded Box action space; {env_id} has {act_space}"
            + (
                " (mcts searches discrete actions in a known model)"
                if isinstance(act_space, gym.spaces.Discrete)
                else ""
            )
        )
    obs_dim, act_dim = int(obs_space.shape[0]), int(act_space.shape[0])
    if dynamics == "fit":
        reward = cfg.reward or ("known" if env_id in KNOWN_REWARDS else "learned")
        from core_rl.model_based.models import build_model
        from core_rl.model_based.mpc import MPCConfig

        model_cfg = MPCConfig(
            seed=seed,
            model=cfg.model,
            n_members=cfg.n_members,
            probabilistic=cfg.model != "deterministic",
            reward=reward,
            model_epochs=cfg.model_epochs,
            hidden_sizes=cfg.model_hidden_sizes,
        )
        model = build_model(model_cfg, obs_dim, act_dim, model_cfg.hidden_sizes, model_cfg.activation)
        return _learned(model, obs_dim, act_dim, reward, "fit", cfg, env_id, fit_config=model_cfg)
    return _from_checkpoint(algo, env_id, cfg, (obs_space, act_space), obs_dim, act_dim)


def _from_checkpoint(
    algo: str,
    env_id: str,
    cfg: Any,
    spaces: tuple[gym.Space, gym.Space],
    obs_dim: int,
    act_dim: int,
) -> PlanningModel:
    path = Path(cfg.dynamics)
    if not path.is_file():
        raise ConfigError(
            f"config field 'dynamics': '{cfg.dynamics}' is neither known, fit, run:RUN_ID, models:/NAME/VERSION "
            "nor a checkpoint file"
        )
    for name in FIT_FIELDS:
        if name in cfg.model_fields_set:
            raise ConfigError(f"config field '{name}' applies to dynamics=fit; the checkpoint brings its own model")
    from core_rl.common.base import Agent

    try:
        agent = Agent.load(path)
    except DeepRLError:
        raise
    except Exception as exc:
        raise CheckpointError(f"config field 'dynamics': checkpoint '{path}' cannot be loaded: {exc}") from None
    model = getattr(agent, "model", None)
    if not (isinstance(model, torch.nn.Module) and hasattr(model, "mean_step") and hasattr(model, "propagate")):
        raise CheckpointError(
            f"config field 'dynamics': the checkpoint is a '{agent.name}' agent, which learns no dynamics model "
            "(train one with mpc, pets or mbpo)"
        )
    if (agent.observation_space, agent.action_space) != spaces:
        raise CheckpointError(
            f"config field 'dynamics': the checkpoint's model is of {agent.env_id} "
            f"({agent.observation_space} -> {agent.action_space}), not of {env_id}'s {spaces[0]} -> {spaces[1]}"
        )
    trained = getattr(agent.config, "reward", "learned")
    reward = cfg.reward or trained
    if reward == "learned" and not getattr(model, "learn_reward", False):
        raise ConfigError(
            f"config field 'reward': the checkpoint's {agent.name} model was trained with reward=known and "
            "predicts no reward; use reward=known"
        )
    model.eval()
    return _learned(model, obs_dim, act_dim, reward, agent.name, cfg, env_id)


def _learned(
    model: Any,
    obs_dim: int,
    act_dim: int,
    reward: str,
    source: str,
    cfg: Any,
    env_id: str,
    fit_config: Any = None,
) -> PlanningModel:
    """A learned model planned with the env's known reward or the model's own (``reward``); ``cfg.reward``
    records the reward that was used."""
    if reward == "known" and env_id not in KNOWN_REWARDS:
        raise ConfigError(
            f"config field 'reward': no known reward for env '{env_id}' "
            f"(known: {', '.join(sorted(KNOWN_REWARDS))}); use reward=learned"
        )
    cfg.reward = reward
    reward_fn = KNOWN_REWARDS[env_id] if reward == "known" else None
    return PlanningModel(
        model, obs_dim, act_dim, reward_fn, known_termination(env_id), True, source, cfg, env_id, fit_config
    )


__all__ = ["PlanningModel", "PlanningModelConfig", "build_planning_model", "FIT_FIELDS", "LEARNED_FIELDS"]
