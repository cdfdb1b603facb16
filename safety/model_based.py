r"""A model-based safe agent: CEM-MPC through a probabilistic ensemble (PETS, notes 9/21–9/28) that
plans with a *pessimistic* cost, aiming at few violations while it learns.

Besides PETS's bootstrap ensemble of dynamics models, a bootstrap ensemble of M cost classifiers
:math:`\hat p_j(s,a,s') \approx P(c>0\mid s,a,s')` is fitted on every real transition (with the
dynamics model, and in between as soon as new violations have been seen, so that the first
encounters with a hazard teach the planner at once). Each candidate action sequence is rolled out
by PETS's particles (particle p follows dynamics member b(p)); along each particle the step risk
is taken from the *most pessimistic* member, and the candidate's cost is the worst particle's:

.. math::
    \hat C(a_{t:t+H}) = \max_p \sum_{k<H} -\log\big(1 - \max_j \hat p_j(s^p_{t+k}, a_{t+k}, s^p_{t+k+1})\big)
                      = \max_p\, -\log \prod_{k<H}\big(1 - \max_j \hat p_j\big),

the negative log-probability of a violation-free horizon under the most pessimistic models
(≈ the expected number of violations, :math:`\sum_k \max_j \hat p_j`, where they are unlikely; and,
unlike a probability, still growing deeper inside a hazard, so that an agent already in one plans
its way out). CEM then ranks candidates the way Liu et al.'s robust CEM (2020) does: the feasible
ones (:math:`\hat C \le` ``plan_cost_threshold``) by their expected return, all of them above every
infeasible one, and infeasible ones by their cost — so when no plan looks safe the planner picks
the least unsafe. Only the first action is executed; replanning at every step corrects the rest.

Choices that matter on the hazard task (``safety/PointGoal-v0``): particles follow their members'
*means* (``particle_noise=False``; sampling the Gaussian noise of a deterministic task only adds
noise to the ranking, enough to keep the agent in the local optimum in front of a hazard), and the
planner uses the task's *known* reward where there is one (``reward='auto'``; PETS's usual setup —
:func:`point_goal_reward` for PointGoal, whose learned reward does not generalize from one goal to
the next within the budget), while the cost, what safety is about, is always learned.

The dynamics model, the evaluator and the CEM planner are core_rl.model_based's; all envs are
planned in one batched CEM call (``envs × candidates × particles`` rows per model call) and the M
cost members run as one fused matrix product with the input normalization folded into it.

Example (safety/PointGoal-v0 with one hazard disc laid over the start area, 8 envs: 400 random
steps to fit the dynamics and cost models, then CEM plans against the pessimistic cost; the cost
model has seen the hazard, and the planner reports the fraction of its plans that it expects to
stay within the limit)::

    >>> import gymnasium as gym, safety  # registers the safety/ envs
    >>> env = lambda: gym.make("safety/PointGoal-v0", hazards=[[-1.3, 0.0, 1.0]])
    >>> settings = {"n_envs": 8, "horizon": 10, "n_candidates": 32, "n_elites": 4, "initial_random_steps": 400}
    >>> settings |= {"train_every": 800, "model_epochs": 15, "cost_limit": 5.0}
    >>> agent = SafeMPC(env, {**settings, "seed": 0}).learn(480)
    >>> agent.last_metrics["cost_model_positives"] > 0, 0.0 < agent.last_metrics["plan_feasible_fraction"] <= 1.0
    (True, True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from core_rl.common.config import Widths
from core_rl.common.replay import ReplayBuffer
from core_rl.model_based.dynamics import BatchedMLP
from core_rl.model_based.env_models import KNOWN_REWARDS, RewardFn
from core_rl.model_based.mpc import PETS, PETSConfig
from core_rl.model_based.planners.shooting import TrajectoryEvaluator
from safety.cmdp import CMDPConfig
from safety.envs import PointGoalVectorEnv
from safety.on_policy import find_wrapper
from safety.parts import CostMonitorPart


# ---- the tasks' known rewards, as functions of observations (PETS's usual r(s, a, s')) ---------------
def point_goal_reward(goal_radius: float = 0.3, goal_bonus: float = 1.0) -> RewardFn:
    """PointGoal's reward from its observations ``(p, 10·v, g − p, ...)``: the progress
    ‖g − p‖ − ‖g − p'‖ toward the goal g of the step's start, plus the bonus if p' reaches it."""

    def reward(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        to_goal = obs[..., 4:6]
        dist = (to_goal - (next_obs[..., 0:2] - obs[..., 0:2])).norm(dim=-1)
        return to_goal.norm(dim=-1) - dist + goal_bonus * (dist < goal_radius).to(obs.dtype)

    return reward


#: env class -> its reward function built from the env's parameters
TASK_REWARDS: dict[type, Callable[[Any], RewardFn]] = {
    PointGoalVectorEnv: lambda env: point_goal_reward(env.goal_radius, env.goal_bonus),
}


class CostEnsemble(nn.Module):
    """M bootstrap logistic classifiers of P(c > 0 | s, a, s') (any constrained cost); inputs normalized."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        n_members: int = 5,
        hidden_sizes: tuple[int, ...] = (32, 32),
        activation: str = "silu",
    ):
        super().__init__()
        self.n_members = n_members
        self.in_dim = 2 * obs_dim + act_dim
        self.net = BatchedMLP(n_members, self.in_dim, 1, hidden_sizes, activation)
        self.register_buffer("mean", torch.zeros(self.in_dim))
        self.register_buffer("std", torch.ones(self.in_dim))
        with torch.no_grad():  # prior: costs are rare
            self.net.layers[-1].bias.fill_(-4.0)

    @staticmethod
    def inputs(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        return torch.cat([obs, act, next_obs], -1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``x [M, B, in]`` (member m sees its own rows) → ``[M, B]``."""
        return self.net((x - self.mean) / self.std).squeeze(-1)

    def _folded(self) -> tuple[torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """The first layers of all members side by side ``[in, M·h]`` with the normalization folded
        in (every member sees the same rows when planning), the other layers as they are, and the
        output layer transposed ``[M, 1, h]``; recomputed only after a fit or load."""
        tensors = [*self.net.parameters(), self.mean, self.std]
        key = tuple((t.data_ptr(), t._version) for t in tensors)
        cached = self.__dict__.get("_folded_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        with torch.no_grad():
            first, last = self.net.layers[0], self.net.layers[-1]
            w = first.weight / self.std[:, None]  # [M, in, h]
            b = first.bias - torch.matmul((self.mean / self.std)[None, None, :], first.weight)
            w_in = w.permute(1, 0, 2).reshape(self.in_dim, -1).contiguous()
            b_in = b.reshape(-1).clone()
            layers = [(layer.weight.detach().clone(), layer.bias.detach().clone()) for layer in self.net.layers[1:]]
            if len(self.net.layers) > 1:
                layers[-1] = (last.weight.detach().transpose(1, 2).contiguous(), last.bias.detach().clone())
        value = (w_in, b_in, layers)
        self.__dict__["_folded_cache"] = (key, value)
        return value

    @torch.no_grad()
    def pessimistic_logit(self, x: torch.Tensor) -> torch.Tensor:
        """max_j logit p̂_j for rows ``[N, in]`` → ``[N]`` (one matrix product for all first layers)."""
        w_in, b_in, layers = self._folded()
        N, M = x.shape[0], self.n_members
        h = torch.addmm(b_in, x, w_in)  # [N, M·h1]
        if not layers:  # a logistic regression per member
            return h.amax(-1)
        h = self.net.act(h).view(N, M, -1).transpose(0, 1)  # [M, N, h1]
        for w, b in layers[:-1]:
            h = self.net.act(torch.baddbmm(b, h, w))
        w, b = layers[-1]
        return torch.baddbmm(b, w, h.transpose(1, 2)).amax(0).squeeze(0)  # [N]

    @torch.no_grad()
    def pessimistic(self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """max_j p̂_j(s, a, s') for inputs of any leading shape ``[..., ·]`` → ``[...]``."""
        x = self.inputs(obs, act, next_obs)
        return torch.sigmoid(self.pessimistic_logit(x.reshape(-1, self.in_dim))).reshape(x.shape[:-1])

    @torch.no_grad()
    def risk(self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """−log(1 − max_j p̂_j(s, a, s')) = softplus of the largest logit, ``[...]``: ≈ p̂ where costs are
        unlikely, and still growing with the logit where p̂ has saturated at 1 (deeper inside)."""
        x = self.inputs(obs, act, next_obs)
        return nn.functional.softplus(self.pessimistic_logit(x.reshape(-1, self.in_dim))).reshape(x.shape[:-1])

    @torch.enable_grad()
    def fit(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        steps: int = 200,
        batch_size: int = 256,
        lr: float = 1e-3,
        generator: torch.Generator | None = None,
        max_pos_weight: float = 50.0,
    ) -> float:
        """Class-balanced BCE (positives weighted up by at most ``max_pos_weight``); each member trains on
        its own bootstrap resample."""
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(1e-6))
        n = x.shape[0]
        rate = y.mean().clamp(1e-4, 1.0)
        pos_weight = ((1 - rate) / rate).clamp(max=max_pos_weight)
        boot = torch.randint(0, n, (self.n_members, n), generator=generator)
        optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)
        total = torch.zeros(())
        for _ in range(steps):
            pick = torch.randint(0, n, (self.n_members, min(batch_size, n)), generator=generator)
            idx = boot.gather(1, pick)
            loss = nn.functional.binary_cross_entropy_with_logits(self.logits(x[idx]), y[idx], pos_weight=pos_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        return float(total) / max(steps, 1)


class CostTrackingModel:
    """The dynamics model as the evaluator sees it, also summing the pessimistic cost of each particle."""

    def __init__(self, model: nn.Module, cost_model: CostEnsemble):
        self.model, self.cost_model = model, cost_model
        self.n_members = int(getattr(model, "n_members", 1))
        self.learn_reward = bool(getattr(model, "learn_reward", False))
        self.cost_total: torch.Tensor | None = None

    def begin_rollout(self) -> None:
        self.model.begin_rollout()
        self.cost_total = None

    def propagate(self, obs: torch.Tensor, act: torch.Tensor, sample: bool = True) -> tuple[Any, Any]:
        next_obs, reward = self.model.propagate(obs, act, sample)
        cost = self.cost_model.risk(obs, act, next_obs)
        self.cost_total = cost if self.cost_total is None else self.cost_total + cost
        return next_obs, reward


class PessimisticCostPlanning:
    """Candidate scores for the shooting planner: expected return if the worst particle's pessimistic
    horizon cost is within the threshold, else below every feasible candidate, ordered by cost."""

    def __init__(self, evaluator: TrajectoryEvaluator, tracker: CostTrackingModel, threshold: float):
        self.evaluator, self.tracker, self.threshold = evaluator, tracker, threshold
        self._feasible: torch.Tensor | None = None

    @property
    def last_feasible_fraction(self) -> float:
        """Fraction of the last call's candidates that were feasible (nan before any call)."""
        return float("nan") if self._feasible is None else float(self._feasible.float().mean())

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        B, C = actions.shape[:2]
        returns = self.evaluator.particle_returns(obs, actions)  # [B, C, P]
        M, P = self.tracker.n_members, returns.shape[-1]
        worst = self.tracker.cost_total.reshape(M, B, C, P // M).amax((0, 3))
        feasible = worst <= self.threshold
        self._feasible = feasible
        score = torch.nan_to_num(returns.mean(-1), nan=-1e10, posinf=-1e10, neginf=-1e10)
        return torch.where(feasible, score, -1e6 - worst)


class SafeMPCConfig(PETSConfig, CMDPConfig):
    reward: Literal["learned", "known", "auto"] = Field(
        "auto",
        description="Learn r̂(s,a) or plan with the task's known r(s,a,s'); 'auto': known where the task's "
        "reward function is known (safety.model_based.TASK_REWARDS, core_rl env_models), else learned.",
    )
    # defaults tuned on safety/PointGoal-v0 (see tests/test_safe_mpc.py and the module docstring)
    n_envs: int = Field(8, ge=1)
    hidden_sizes: Widths = Field((64, 64), description="Hidden widths of the dynamics network.")
    horizon: int = Field(12, ge=1)
    n_candidates: int = Field(64, ge=1, description="Action sequences sampled per planner iteration.")
    n_iterations: int = Field(2, ge=1, description="Planner iterations per step.")
    n_elites: int = Field(8, ge=1)
    n_particles: int | None = Field(5, ge=1)
    model_epochs: int = Field(25, ge=1, description="Max epochs per model fit (early stopping on holdout).")
    initial_random_steps: int = Field(800, ge=1, description="Random-action env steps before the first model fit.")
    random_action_correlation: float = Field(
        0.95,
        ge=0.0,
        lt=1.0,
        description="ρ of the AR(1) random actions of the initial exploration (0: i.i.d. uniform).",
    )
    train_every: int = Field(1600, ge=1, description="Env steps between model refits.")
    cost_members: int = Field(5, ge=1, description="Members of the cost-classifier ensemble.")
    cost_hidden_sizes: Widths = (32, 32)
    cost_fit_steps: int = Field(1000, ge=1, description="Minibatch steps per cost-model fit.")
    cost_lr: float = Field(3e-3, gt=0.0, description="Adam step size of the cost-model fit.")
    cost_train_every: int = Field(
        40, ge=1, description="Env steps between extra cost-model refits, done only when new violations were seen."
    )
    particle_noise: bool = Field(
        False,
        description="Particles sample the Gaussian members' noise (PETS) rather than follow their means: "
        "only the members' disagreement then spreads them (the tasks are deterministic).",
    )
    plan_cost_threshold: float = Field(
        0.3, ge=0.0, description="Largest pessimistic horizon risk Ĉ (≈ expected violations) of a feasible plan."
    )


class SafeMPC(PETS):
    """PETS with a pessimistic learned cost in the planner (feasible-first CEM)."""

    name = "safe_mpc"
    config: SafeMPCConfig
    config_cls = SafeMPCConfig
    part_types = (CostMonitorPart,)

    def _random_actions(self, n: int) -> torch.Tensor:
        """The initial exploration: per env an AR(1) process a_t = ρ a_{t−1} + √(1−ρ²) ε_t, ε ~ N(0, 1),
        in units of the half action range (clipped), so that each env sweeps across the state space
        rather than jittering where it starts — negatives for the cost model far and wide."""
        rho = self.config.random_action_correlation
        if rho == 0.0 or n != self.n_envs:
            return super()._random_actions(n)
        noise = torch.randn((n, self.act_dim), generator=self._action_rng)
        prev = self._random_state
        state = noise if prev is None else rho * prev + (1 - rho**2) ** 0.5 * noise
        self._random_state = state
        low = torch.as_tensor(self.action_space.low, dtype=torch.float32)
        high = torch.as_tensor(self.action_space.high, dtype=torch.float32)
        return ((low + high) / 2 + state * (high - low) / 2).clamp(low, high)

    def _task_reward(self) -> RewardFn | None:
        for cls, make in TASK_REWARDS.items():
            env = find_wrapper(self.env, cls)
            if env is not None:
                return make(env)
        return KNOWN_REWARDS.get(self.env_id)

    def _known_reward(self) -> RewardFn | None:
        if self.config.reward != "known":
            return None
        reward = self._task_reward()
        return reward if reward is not None else super()._known_reward()  # the latter raises the ConfigError

    def _build(self) -> None:
        if self.config.reward == "auto":  # resolved once; a checkpoint keeps the choice
            known = self._task_reward() is not None
            self.config = self.config.model_copy(update={"reward": "known" if known else "learned"})
        super()._build()
        cfg = self.config
        monitor = self.part(CostMonitorPart).monitor
        self.replay = ReplayBuffer(
            cfg.buffer_size,
            self.n_envs,
            (self.obs_dim,),
            (self.act_dim,),
            seed=cfg.seed,
            device=self.device,
            n_costs=cfg.n_constraints,
            cost_source=lambda: monitor.last_costs,
        )
        self.cost_model = CostEnsemble(
            self.obs_dim, self.act_dim, cfg.cost_members, cfg.cost_hidden_sizes, cfg.activation
        )
        self.cost_tracker = CostTrackingModel(self.model, self.cost_model)
        inner = TrajectoryEvaluator(
            self.cost_tracker,
            cfg.n_particles,
            reward_fn=self.evaluator.reward_fn,
            termination_fn=self.evaluator.termination_fn,
            gamma=cfg.gamma,
            sample=cfg.particle_noise,
        )
        self.cost_planning = PessimisticCostPlanning(inner, self.cost_tracker, cfg.plan_cost_threshold)
        self.evaluator = self.cost_planning  # type: ignore[assignment]  # the planner scores through it
        self.planner = self._make_planner(cfg.seed)
        self._cost_generator = torch.Generator().manual_seed(cfg.seed + 3)
        self._cost_fit_step, self._violations_at_cost_fit, self._violations = 0, 0, 0
        self._random_state: torch.Tensor | None = None

    def _cost_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        replay = self.replay
        T = replay.size_per_env if replay.full else replay.pos
        x = CostEnsemble.inputs(replay.obs[:T], replay.actions[:T], replay.next_obs[:T]).reshape(T * self.n_envs, -1)
        if replay.costs is None:
            raise ValueError("SafeMPC's replay stores costs: it has none")
        y = (replay.costs[:T] > 0).any(-1).float().reshape(-1)
        return x.float(), y

    def fit_cost_model(self) -> dict[str, float]:
        """Refit the cost ensemble on every real transition so far."""
        x, y = self._cost_data()
        loss = self.cost_model.fit(
            x, y, self.config.cost_fit_steps, lr=self.config.cost_lr, generator=self._cost_generator
        )
        self._cost_fit_step, self._violations_at_cost_fit = self.num_timesteps, self._violations
        return {"cost_model_loss": loss, "cost_model_positives": float(y.sum())}

    def fit_model(self) -> dict[str, float]:
        metrics = super().fit_model()
        metrics.update(self.fit_cost_model())
        return metrics

    def _iterate(self) -> dict[str, float]:
        cfg = self.config
        if (
            self.model_fitted
            and self._violations > self._violations_at_cost_fit
            and self.num_timesteps - self._cost_fit_step >= cfg.cost_train_every
        ):
            self._fit_metrics.update(self.fit_cost_model())  # react to new violations before the next model fit
        metrics = super()._iterate()
        self._violations += int((self.part(CostMonitorPart).monitor.last_costs > 0).any(-1).sum())
        metrics["plan_feasible_fraction"] = self.cost_planning.last_feasible_fraction
        return metrics


__all__ = ["CostEnsemble", "CostTrackingModel", "PessimisticCostPlanning", "SafeMPC", "SafeMPCConfig"]
