r"""Planners as controllers on envs with known or learned dynamics (``deeprl train --algo cem --env Pendulum-v1``).

Each program runs ``episodes`` episodes of at most ``max_steps`` steps (``--steps``) in the real
gymnasium env, choosing every action by planning in a model of the env, and reports the episode
returns (``mean_return``) and planning statistics. Artifacts: ``episodes.json`` (returns, lengths,
the per-step actions of the first episode). The model is the ``dynamics`` field
(:mod:`core_rl.model_based.planning_models`): ``known`` — the env's **true** model (default);
``fit`` — a network (ensemble) fitted on ``dynamics_steps`` random steps before the episodes;
or the model an ``mpc``/``pets``/``mbpo`` run learned (``run:RUN_ID`` on the command line). A
learned model's one-step error on held-out random transitions and on the visited ones is logged.

* ``random_shooting``, ``cem``, ``mppi`` — open-loop shooting MPC (replan every step, execute the
  first action) in observation space, with the env's reward and termination where known: the true
  model of every env in :data:`~core_rl.model_based.env_models.KNOWN_DYNAMICS` (Pendulum-v1,
  MountainCarContinuous-v0), or a learned one of any env with Box observations and actions;
* ``ilqr`` — :class:`~core_rl.model_based.planners.ilqr.ILQRController` on Pendulum-v1's true state
  dynamics (θ, θ̇): the swing-up recipe (terminal cost, horizon 100, restarts), closed-loop with its
  feedback gains, replanning every ``replan_every`` steps. In a learned model it linearizes the
  network's mean step by autograd around the nominal trajectory, in observation space: Pendulum-v1
  keeps the recipe's cost (1 − cos θ is 1 − o₀), any other env minimizes −r;
* ``lqr`` — the infinite-horizon LQR of Pendulum-v1 linearized at the upright equilibrium,
  :math:`u = K x` (clipped to the torque limit), started near upright (``init_angle``, ``init_speed``:
  the half-widths of the uniform start; a linear controller cannot swing up); known dynamics only;
* ``mcts`` — UCT search at every step in the exact model of a deterministic finite env
  (FrozenLake with ``is_slippery=False``, CliffWalking, Taxi; :meth:`TabularMDP.from_gym`) or of an
  env in :data:`~core_rl.model_based.env_models.KNOWN_SEARCH_MODELS` (CartPole-v1, searched from
  its true state); known dynamics only (a tree of exact steps over discrete actions).

With ``dynamics=known`` any other env gets one error listing the envs whose dynamics the planner knows.

Example (UCT on CartPole-v1's true model holds the pole for the whole budget; ~2 s)::

    >>> import tempfile
    >>> from pathlib import Path
    >>> from core_rl.common.tracking import NullTracker
    >>> program = MCTSProgram("CartPole-v1", {"max_steps": 100, "n_simulations": 30, "rollout_depth": 30})
    >>> program.run(NullTracker(), Path(tempfile.mkdtemp())).mean_return
    100.0
    >>> CEMProgram("CartPole-v1")
    Traceback (most recent call last):
    ...
    core_rl.common.errors.EnvError: cem plans in a known model of MountainCarContinuous-v0, Pendulum-v1; got env 'CartPole-v1' (a discrete-action env: use mcts, which searches the known model of a finite env or CartPole-v1)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from core_rl.common.envs import make_env
from core_rl.common.errors import ConfigError, DeepRLError, EnvError
from core_rl.common.program import Program, ProgramResult
from core_rl.common.seeding import configure_torch
from core_rl.common.tracking import Tracker
from core_rl.model_based.env_models import KNOWN_DYNAMICS, KNOWN_SEARCH_MODELS
from core_rl.model_based.planning_models import PlanningModel, PlanningModelConfig, build_planning_model

PENDULUM = "Pendulum-v1"


class ControlConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    episodes: int = Field(1, ge=1, description="Episodes the controller is run for.")
    max_steps: int = Field(200, ge=1, description="Step limit of an episode (Pendulum's own limit is 200).")
    seed: int = Field(0, ge=0)
    torch_threads: int = Field(1, ge=0, description="torch intra-op threads; 0 leaves torch's default.")
    dynamics: str = Field("known", description="The model planned in: known (the env's true model).")


class _ControlProgram(Program):
    """Runs a controller (``start(obs, env) -> obs``, ``act(obs, env) -> action``) in the real env."""

    budget_field: ClassVar[str | None] = "max_steps"
    envs: ClassVar[tuple[str, ...] | None] = (PENDULUM,)
    hint: ClassVar[str] = ""
    #: why the controller plans in known dynamics only (None: it takes dynamics=fit / a checkpoint)
    known_only: ClassVar[str | None] = None
    planning: PlanningModel | None = None

    def setup(self) -> None:
        cfg: Any = self.config
        if self.known_only is not None and cfg.dynamics != "known":
            raise ConfigError(f"config field 'dynamics': {self.name} plans in known dynamics only: {self.known_only}")
        if self.envs is not None and self.env_id not in self.envs:
            raise EnvError(
                f"{self.name} plans in a known model of {', '.join(self.envs)}; got env '{self.env_id}'{self.hint}"
            )
        make_env(self.env_id, **self.env_kwargs()).close()

    def env_kwargs(self) -> dict[str, Any]:
        return {}

    def reset_options(self) -> dict[str, Any] | None:
        return None

    def start(self, obs: Any, env: gym.Env) -> Any:
        """Get ready for an episode starting at ``obs``; returns the observation to act on (a
        controller that sets the env's state returns the matching one)."""
        raise NotImplementedError

    def act(self, obs: Any, env: gym.Env) -> Any:
        raise NotImplementedError

    def run(self, tracker: Tracker, out_dir: Path) -> ProgramResult:
        cfg: Any = self.config
        configure_torch(cfg.torch_threads)
        torch.manual_seed(cfg.seed)  # a Gaussian model's sampled rollouts
        returns, lengths, first_actions = [], [], []
        model_metrics: dict[str, float] = {}
        if self.planning is not None and self.planning.learned:
            model_metrics = self.planning.fit()
            tracker.log_metrics(model_metrics, 0)
        visited: list[tuple[Any, Any, Any, Any]] = []
        env = make_env(self.env_id, **self.env_kwargs())
        steps = 0
        for episode in range(cfg.episodes):
            obs, _ = env.reset(seed=cfg.seed + episode, options=self.reset_options())
            obs = self.start(obs, env)
            total, t = 0.0, 0
            for t in range(1, cfg.max_steps + 1):
                action = self.act(obs, env)
                if episode == 0:
                    first_actions.append(np.asarray(action).tolist())
                next_obs, reward, terminated, truncated, _ = env.step(action)
                visited.append((obs, action, next_obs, reward))
                obs = next_obs
                total += float(reward)
                if terminated or truncated:
                    break
            steps += t
            returns.append(total)
            lengths.append(t)
            tracker.log_metrics({"episode_return": total, "episode_length": float(t)}, steps)
        env.close()
        metrics = {
            "mean_return": float(np.mean(returns)),
            "std_return": float(np.std(returns)),
            "mean_length": float(np.mean(lengths)),
            **model_metrics,
            **self.summary(),
        }
        if self.planning is not None and self.planning.learned:
            metrics.update(self.planning.error(_visited_transitions(visited), "_visited"))
        tracker.log_metrics(metrics, steps)
        out_dir.mkdir(parents=True, exist_ok=True)
        payload = {"env": self.env_id, "returns": returns, "lengths": lengths, "actions_episode_0": first_actions}
        (out_dir / "episodes.json").write_text(json.dumps(payload))
        return ProgramResult(metrics["mean_return"], steps, metrics, ["episodes.json"])

    def summary(self) -> dict[str, float]:
        return {}

    def params(self) -> dict[str, Any]:
        if self.planning is None:
            return {}
        return {"dynamics_source": self.planning.source, "dynamics_model": self.planning.describe()}


def _visited_transitions(visited: list[tuple[Any, Any, Any, Any]]) -> Any:
    from core_rl.common.transitions import Transitions

    obs, actions, next_obs, rewards = (np.asarray([row[i] for row in visited], dtype=np.float32) for i in range(4))
    return Transitions.from_arrays(obs, actions, rewards, next_obs)


# ---- shooting MPC --------------------------------------------------------------------------------


class ShootingConfig(PlanningModelConfig, ControlConfig):
    horizon: int = Field(30, ge=1, description="Planning horizon H.")
    n_candidates: int = Field(400, ge=1, description="Action sequences scored per iteration.")
    n_iterations: int = Field(5, ge=1, description="Refits of the sampling distribution per step.")
    init_std: float = Field(0.5, gt=0.0, description="Initial std of the Gaussian candidates (fraction of the range).")
    gamma: float = Field(1.0, gt=0.0, le=1.0)


class CEMConfig(ShootingConfig):
    n_elites: int = Field(40, ge=1)
    alpha: float = Field(0.1, ge=0.0, lt=1.0, description="Smoothing of the mean/std refit.")


class MPPIConfig(ShootingConfig):
    temperature: float = Field(1.0, gt=0.0, description="λ of the exponentiated-return weights.")


class _ShootingProgram(_ControlProgram):
    """A shooting planner of :mod:`core_rl.model_based.planners.shooting` named by ``planner``, built from
    the shared shooting fields plus the config fields listed in ``planner_fields``, planning in the
    model the ``dynamics`` field names (:mod:`core_rl.model_based.planning_models`)."""

    planner: ClassVar[str]
    planner_fields: ClassVar[tuple[str, ...]] = ()
    envs: ClassVar[tuple[str, ...] | None] = None

    def setup(self) -> None:
        super().setup()
        self.planning = build_planning_model(self.name, self.env_id, self.config)

    def make_planner(self, evaluator: Any, low: torch.Tensor, high: torch.Tensor) -> Any:
        from core_rl.model_based.planners import shooting

        cfg: Any = self.config
        extra = {name: getattr(cfg, name) for name in self.planner_fields}
        return getattr(shooting, self.planner)(
            evaluator, low, high, cfg.horizon, cfg.n_candidates, cfg.n_iterations, cfg.init_std, seed=cfg.seed, **extra
        )

    def start(self, obs: Any, env: gym.Env) -> Any:
        from core_rl.model_based.planners.shooting import TrajectoryEvaluator

        cfg: Any = self.config
        planning = self.planning
        assert planning is not None
        evaluator = TrajectoryEvaluator(
            planning.model,
            reward_fn=planning.reward_fn,
            termination_fn=planning.termination_fn,
            gamma=cfg.gamma,
        )
        space = env.action_space
        # not self.planner: that names the planner class (a second episode would lose it)
        self.shooting = self.make_planner(evaluator, torch.as_tensor(space.low), torch.as_tensor(space.high))
        return obs

    def act(self, obs: Any, env: gym.Env) -> Any:
        plan = self.shooting.plan(torch.as_tensor(obs, dtype=torch.float32)[None])
        return plan.actions[0, 0].numpy().astype(np.float32)


class RandomShootingProgram(_ShootingProgram):
    """Random shooting MPC: the best of ``n_candidates`` uniform sequences, first action executed."""

    name = "random_shooting"
    config_cls: ClassVar[type[BaseModel]] = ShootingConfig

    planner = "RandomShooting"


class CEMProgram(_ShootingProgram):
    """Cross-entropy method MPC: refit a Gaussian to the top ``n_elites`` sequences."""

    name = "cem"
    config_cls: ClassVar[type[BaseModel]] = CEMConfig

    planner = "CEM"
    planner_fields = ("n_elites", "alpha")

    def setup(self) -> None:
        super().setup()
        cfg: CEMConfig = self.config  # type: ignore[assignment]
        if cfg.n_elites > cfg.n_candidates:
            raise ConfigError(f"config field 'n_elites' ({cfg.n_elites}) exceeds n_candidates ({cfg.n_candidates})")


class MPPIProgram(_ShootingProgram):
    """MPPI: average perturbed sequences weighted by exp(return / λ)."""

    name = "mppi"
    config_cls: ClassVar[type[BaseModel]] = MPPIConfig

    planner = "MPPI"
    planner_fields = ("temperature",)


# ---- iLQR and LQR ----------------------------------------------------------------------------------


def _pendulum_state(env: gym.Env) -> np.ndarray:
    return np.asarray(env.unwrapped.state, dtype=np.float64)  # type: ignore[attr-defined]


class ILQRConfig(PlanningModelConfig, ControlConfig):
    horizon: int = Field(100, ge=1, description="Planning horizon.")
    restarts: int = Field(6, ge=1, description="Initial control sequences solved as one batch.")
    n_iterations: int = Field(80, ge=1, description="iLQR iterations of the first plan.")
    replan_every: int = Field(25, ge=1, description="Steps between replans.")
    replan_iterations: int = Field(10, ge=1, description="iLQR iterations of a warm-started replan.")
    control_cost: float = Field(0.01, ge=0.0, description="Running cost weight on u².")
    upright_cost: float = Field(100.0, gt=0.0, description="Terminal cost weight on 1 − cos θ.")
    speed_cost: float = Field(10.0, ge=0.0, description="Terminal cost weight on θ̇².")
    start: str = Field("down", pattern="^(down|random)$", description="down: hanging still; random: the env's reset.")

    #: the fields of the Pendulum-v1 swing-up cost (another env's cost is −r of the learned model)
    pendulum_fields: ClassVar[tuple[str, ...]] = ("upright_cost", "speed_cost", "start")


class ILQRProgram(_ControlProgram):
    """iLQR swing-up of Pendulum-v1 (the ILQRController recipe) on its true dynamics, or closed-loop
    iLQR on a learned model (autograd jacobians of the network's mean step) of any continuous env."""

    name = "ilqr"
    config_cls: ClassVar[type[BaseModel]] = ILQRConfig
    envs: ClassVar[tuple[str, ...] | None] = None

    def setup(self) -> None:
        super().setup()
        cfg: ILQRConfig = self.config  # type: ignore[assignment]
        self.planning = build_planning_model(self.name, self.env_id, cfg, {PENDULUM: KNOWN_DYNAMICS[PENDULUM]})
        if self.env_id != PENDULUM:
            for name in ILQRConfig.pendulum_fields:
                if name in cfg.model_fields_set:
                    raise ConfigError(
                        f"config field '{name}' shapes the Pendulum-v1 swing-up cost; on {self.env_id} iLQR "
                        "minimizes −r (the learned or known reward)"
                    )

    def _controller(self, dynamics: Any, running: Any, final: Any, angle_dims: tuple[int, ...]) -> Any:
        from core_rl.model_based.planners.ilqr import ILQRController

        cfg: ILQRConfig = self.config  # type: ignore[assignment]
        assert self.planning is not None
        return ILQRController(
            dynamics,
            running,
            final,
            horizon=cfg.horizon,
            restarts=cfg.restarts,
            n_iterations=cfg.n_iterations,
            replan_every=cfg.replan_every,
            replan_iterations=cfg.replan_iterations,
            action_dim=self.planning.act_dim,
            angle_dims=angle_dims,
            seed=cfg.seed,
            # the true Pendulum step clips the torque itself; a learned model gets the bounds
            **({"action_low": self.low, "action_high": self.high} if self.planning.learned else {}),
        )

    def start(self, obs: Any, env: gym.Env) -> Any:
        from core_rl.model_based.env_models import pendulum_dynamics, pendulum_obs

        cfg: ILQRConfig = self.config  # type: ignore[assignment]
        planning = self.planning
        assert planning is not None
        space: Any = env.action_space
        self.low, self.high = (
            torch.as_tensor(space.low, dtype=torch.float64),
            torch.as_tensor(space.high, dtype=torch.float64),
        )
        pendulum = self.env_id == PENDULUM
        if pendulum and cfg.start == "down":
            env.unwrapped.state = np.array([math.pi, 0.0])  # type: ignore[attr-defined]
            obs = pendulum_obs(torch.as_tensor(_pendulum_state(env))).numpy().astype(np.float32)

        def control(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
            return cfg.control_cost * u.pow(2).sum(-1)

        if not planning.learned:  # the true state (θ, θ̇)

            def final(x: torch.Tensor) -> torch.Tensor:
                return cfg.upright_cost * (1 - torch.cos(x[..., 0])) + cfg.speed_cost * x[..., 1] ** 2

            self.controller = self._controller(pendulum_dynamics, control, final, (0,))
            self.controller.reset(_pendulum_state(env))
        elif pendulum:  # the same cost on the observation (cos θ, sin θ, θ̇) of the learned model

            def final_obs(x: torch.Tensor) -> torch.Tensor:
                return cfg.upright_cost * (1 - x[..., 0]) + cfg.speed_cost * x[..., 2] ** 2

            self.controller = self._controller(planning.step, control, final_obs, ())
            self.controller.reset(obs)
        else:  # any env: minimize −r + a little control effort

            def running(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
                return -planning.reward(x, u) + control(x, u)

            self.controller = self._controller(planning.step, running, None, ())
            self.controller.reset(obs)
        self.upright: list[bool] = []
        return obs

    def act(self, obs: Any, env: gym.Env) -> Any:
        from core_rl.model_based.env_models import angle_normalize

        assert self.planning is not None
        if self.env_id == PENDULUM:
            state = _pendulum_state(env)
            self.upright.append(abs(float(angle_normalize(torch.tensor(state[0])))) < 0.1)
        x = _pendulum_state(env) if not self.planning.learned else np.asarray(obs, dtype=np.float64)
        return self.controller.act(x).astype(np.float32)

    def summary(self) -> dict[str, float]:
        tail = self.upright[len(self.upright) // 2 :]
        out = {"plans": float(len(self.controller.solves))}
        if self.env_id == PENDULUM:
            out["upright_fraction_second_half"] = float(np.mean(tail)) if tail else 0.0
        return out


class LQRConfig(ControlConfig):
    angle_cost: float = Field(1.0, gt=0.0, description="Q weight on θ.")
    speed_cost: float = Field(0.1, ge=0.0, description="Q weight on θ̇.")
    control_cost: float = Field(0.001, gt=0.0, description="R weight on u.")
    init_angle: float = Field(0.3, ge=0.0, le=math.pi, description="Start θ uniform in ±init_angle.")
    init_speed: float = Field(0.5, ge=0.0, le=8.0, description="Start θ̇ uniform in ±init_speed.")


class LQRProgram(_ControlProgram):
    r"""LQR balance of Pendulum-v1: :math:`u = Kx` from the Riccati recursion on the dynamics
    linearized at the upright equilibrium (autograd jacobians of the true step)."""

    name = "lqr"
    config_cls: ClassVar[type[BaseModel]] = LQRConfig
    known_only = "it linearizes Pendulum-v1's true (θ, θ̇) dynamics at the upright state (for a learned model use ilqr)"

    def reset_options(self) -> dict[str, Any] | None:
        cfg: LQRConfig = self.config  # type: ignore[assignment]
        return {"x_init": cfg.init_angle, "y_init": cfg.init_speed}

    def start(self, obs: Any, env: gym.Env) -> Any:
        if hasattr(self, "K"):
            return obs
        from torch.func import jacrev

        from core_rl.model_based.env_models import pendulum_dynamics
        from core_rl.model_based.planners.lqr import lqr

        cfg: LQRConfig = self.config  # type: ignore[assignment]
        x0, u0 = torch.zeros(2, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
        A = jacrev(lambda x: pendulum_dynamics(x, u0, clip_speed=False))(x0)
        B = jacrev(lambda u: pendulum_dynamics(x0, u, clip_speed=False))(u0)
        Q = torch.diag(torch.tensor([cfg.angle_cost, cfg.speed_cost], dtype=torch.float64))
        R = torch.tensor([[cfg.control_cost]], dtype=torch.float64)
        self.K = lqr(A, B, Q, R, horizon=500).K[0].numpy()  # the stationary gain
        return obs

    def act(self, obs: Any, env: gym.Env) -> Any:
        from core_rl.model_based.env_models import PENDULUM_MAX_TORQUE

        state = _pendulum_state(env)
        x = np.array([math.remainder(state[0], 2 * math.pi), state[1]])
        return np.clip(self.K @ x, -PENDULUM_MAX_TORQUE, PENDULUM_MAX_TORQUE).astype(np.float32)


# ---- MCTS ------------------------------------------------------------------------------------------


class MCTSConfig(ControlConfig):
    n_simulations: int = Field(200, ge=1, description="Simulations per decision.")
    c_uct: float = Field(math.sqrt(2), ge=0.0, description="UCT exploration constant.")
    gamma: float = Field(0.99, gt=0.0, le=1.0)
    rollout_depth: int = Field(50, ge=0, description="Random-policy rollout length after expansion.")
    env_kwargs: dict[str, Any] = Field(default_factory=dict, description="gym.make kwargs (e.g. is_slippery).")


class _TabularSearchModel:
    """A deterministic finite MDP as MCTS's model: ``step(s, a) -> (s', r, done)``."""

    def __init__(self, mdp: Any):
        self.mdp, self.n_actions = mdp, mdp.n_actions
        self.next = mdp.P.argmax(axis=2)

    def step(self, state: int, action: int) -> tuple[int, float, bool]:
        s2 = int(self.next[state, action])
        return s2, float(self.mdp.r[state, action]), bool(self.mdp.terminal[s2])


class _StateSearchModel:
    """A known deterministic step of a continuous-state env as MCTS's model (reward 1 per step,
    CartPole's)."""

    def __init__(self, step: Any, n_actions: int):
        self.step_fn, self.n_actions = step, n_actions

    def step(self, state: np.ndarray, action: int) -> tuple[np.ndarray, float, bool]:
        nxt, done = self.step_fn(state, action)
        return nxt, 1.0, done


class MCTSProgram(_ControlProgram):
    """UCT search at every step in the exact model of a deterministic finite env or a known one."""

    name = "mcts"
    config_cls: ClassVar[type[BaseModel]] = MCTSConfig
    envs: ClassVar[tuple[str, ...] | None] = None
    known_only = (
        "UCT builds a tree of exact, deterministic steps over discrete actions, and a learned network "
        "predicts continuous states that never repeat, with errors that compound down the tree "
        "(for a learned model use cem, mppi, random_shooting or ilqr, or the mpc/pets agents)"
    )

    def env_kwargs(self) -> dict[str, Any]:
        return dict(self.config.env_kwargs)  # type: ignore[attr-defined]

    def setup(self) -> None:
        from core_rl.tabular import TabularMDP

        super().setup()
        cfg: MCTSConfig = self.config  # type: ignore[assignment]
        if self.env_id in KNOWN_SEARCH_MODELS:
            if cfg.env_kwargs:
                raise ConfigError(f"config field 'env_kwargs': the known model of {self.env_id} is of the default env")
            env = make_env(self.env_id)
            self.model: Any = _StateSearchModel(KNOWN_SEARCH_MODELS[self.env_id], int(env.action_space.n))  # type: ignore[attr-defined]
            env.close()
            return
        try:
            mdp = TabularMDP.from_gym(self.env_id, cfg.gamma, **cfg.env_kwargs)
        except DeepRLError as err:
            raise EnvError(
                f"mcts searches a known deterministic model: a finite env's (FrozenLake, CliffWalking, Taxi) "
                f"or one of {', '.join(sorted(KNOWN_SEARCH_MODELS))}; {self.env_id}: {err}"
            ) from None
        if not np.all(np.isclose(mdp.P.max(axis=2), 1.0)):
            raise EnvError(
                f"mcts searches a deterministic model; {self.env_id} is stochastic "
                "(for FrozenLake pass --set 'env_kwargs={\"is_slippery\": false}')"
            )
        self.model = _TabularSearchModel(mdp)

    def start(self, obs: Any, env: gym.Env) -> Any:
        from core_rl.model_based.planners.mcts import MCTS

        cfg: MCTSConfig = self.config  # type: ignore[assignment]
        self.search = MCTS(self.model, cfg.n_simulations, cfg.c_uct, cfg.gamma, cfg.rollout_depth, seed=cfg.seed)
        return obs

    def act(self, obs: Any, env: gym.Env) -> Any:
        if isinstance(self.model, _StateSearchModel):  # search from the true state, not the float32 obs
            return int(self.search.search(np.asarray(env.unwrapped.state, dtype=np.float64)))  # type: ignore[attr-defined]
        return int(self.search.search(int(obs)))


__all__ = [
    "RandomShootingProgram",
    "CEMProgram",
    "MPPIProgram",
    "ILQRProgram",
    "LQRProgram",
    "MCTSProgram",
]
