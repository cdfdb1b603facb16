r"""Open-loop shooting planners: random shooting, CEM and MPPI on one sampling core (notes 9/21).

Open-loop planning chooses a whole action sequence from the current state,

.. math::
    a_{1:H} = \arg\max_{a_{1:H}} \mathbb E\Big[\sum_{t=1}^{H} \gamma^{t-1} r(s_t, a_t) \,\Big|\, s_1, a_{1:H}\Big],

without reacting to the states it will meet ("guess and check"). All three planners share the
loop *sample candidates → score them with the model → refit the sampling distribution*:

* random shooting: one round of C uniform sequences, keep the best;
* CEM: sample from N(μ, σ²) (clipped to the action bounds), keep the top-k "elites",
  μ ← α μ + (1−α) mean(elites), σ ← α σ + (1−α) std(elites), repeat;
* MPPI: perturb the mean, a^{(c)} = μ + ε^{(c)}, and average by exponentiated return,
  μ ← Σ_c w_c a^{(c)}, w_c ∝ exp((R_c − max R)/λ).

Scoring (:class:`TrajectoryEvaluator`) propagates P particles per candidate through the model;
with an ensemble particle p follows member p mod M for the whole horizon (PETS's TS∞ trajectory
sampling), and the candidate's score is the particle mean (uncertainty averaging) or the mean
minus β times the particle standard deviation (uncertainty penalty). One tensor holds
``envs × candidates × particles`` states; only the horizon is a Python loop.

Example (a point on a line, s' = s + a with a ∈ [−1, 1], rewarded −(s' − 1)² per step: the best
plan moves 1 and stays, return 0; with 100 candidates per round, CEM and MPPI refine what random
shooting only samples)::

    >>> import torch
    >>> def reward(s, a, s_next):
    ...     return -((s_next - 1.0) ** 2).sum(-1)
    >>> evaluator = TrajectoryEvaluator(FunctionModel(lambda s, a: s + a, 1, 1), reward_fn=reward)
    >>> bounds = torch.tensor([-1.0]), torch.tensor([1.0])
    >>> start = torch.zeros(1, 1)
    >>> rs = RandomShooting(evaluator, *bounds, horizon=5, n_candidates=100, n_iterations=1, seed=0).plan(start)
    >>> cem = CEM(evaluator, *bounds, horizon=5, n_candidates=100, n_elites=10, seed=0).plan(start)
    >>> mppi = MPPI(evaluator, *bounds, horizon=5, n_candidates=100, temperature=0.1, seed=0).plan(start)
    >>> bool(rs.score < -0.15), bool(cem.score > -0.15), bool(mppi.score > -0.15)
    (True, True, True)
    >>> bool(cem.actions[0, 0, 0] > 0.75)   # the first move of CEM's plan
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from core_rl.common.errors import ConfigError
from core_rl.model_based.dynamics import DynamicsModel
from core_rl.model_based.env_models import RewardFn, TerminationFn


class FunctionModel:
    """A known (true) dynamics function wrapped in the model protocol: s' = f(s, a), r = r(s, a, s')."""

    n_members = 1
    learn_reward = False

    def __init__(self, step_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], obs_dim: int, act_dim: int):
        self.step_fn, self.obs_dim, self.act_dim = step_fn, obs_dim, act_dim

    def begin_rollout(self) -> None:
        pass

    def propagate(self, obs: torch.Tensor, act: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, None]:
        return self.step_fn(obs, act), None

    def fit(self, data: object, **kwargs: object) -> dict[str, float]:
        return {}


class TrajectoryEvaluator:
    """Scores action sequences ``[B, C, H, da]`` from states ``[B, ds]`` by particle rollouts in a model."""

    def __init__(
        self,
        model: DynamicsModel,
        n_particles: int | None = None,
        reward_fn: RewardFn | None = None,
        termination_fn: TerminationFn | None = None,
        gamma: float = 1.0,
        risk: Literal["mean", "penalty"] = "mean",
        risk_coef: float = 1.0,
        sample: bool = True,
        terminal_value: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.model = model
        self.n_members = int(getattr(model, "n_members", 1))
        self.n_particles = int(n_particles or self.n_members)
        if self.n_particles % self.n_members:
            raise ConfigError(
                f"n_particles ({self.n_particles}) must be a multiple of the model's "
                f"{self.n_members} members (each particle follows one member)"
            )
        if reward_fn is None and not getattr(model, "learn_reward", False):
            raise ConfigError("the model does not predict rewards: pass a reward_fn (reward='known')")
        if risk not in ("mean", "penalty"):
            raise ConfigError(f"risk must be 'mean' or 'penalty', got '{risk}'")
        self.reward_fn, self.termination_fn, self.gamma = reward_fn, termination_fn, gamma
        self.risk, self.risk_coef, self.sample = risk, risk_coef, sample
        self.terminal_value = terminal_value

    def particle_returns(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Discounted returns of every particle ``[B, C, P]``."""
        B, C, H, da = actions.shape
        M, P = self.n_members, self.n_particles
        per = P // M
        ds = obs.shape[-1]
        # particle layout [M, B·C·per]: slice m is what member m propagates
        state = obs[None, :, None, None, :].expand(M, B, C, per, ds).reshape(M, -1, ds)
        total = torch.zeros(M, B * C * per, dtype=obs.dtype, device=obs.device)
        alive = torch.ones_like(total)
        discount = 1.0
        self.model.begin_rollout()
        for t in range(H):
            act = actions[None, :, :, t, None, :].expand(M, B, C, per, da).reshape(M, -1, da)
            next_state, reward = self.model.propagate(state, act, sample=self.sample)
            if self.reward_fn is not None:
                reward = self.reward_fn(state, act, next_state)
            total = total + discount * alive * reward
            if self.termination_fn is not None:
                alive = alive * (~self.termination_fn(state, act, next_state)).to(alive.dtype)
            discount *= self.gamma
            state = next_state
        if self.terminal_value is not None:
            total = total + discount * alive * self.terminal_value(state)
        return total.reshape(M, B, C, per).permute(1, 2, 3, 0).reshape(B, C, P)

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Candidate scores ``[B, C]``: mean over particles, minus β·std with ``risk='penalty'``."""
        returns = self.particle_returns(obs, actions)
        score = returns.mean(-1)
        if self.risk == "penalty" and returns.shape[-1] > 1:
            score = score - self.risk_coef * returns.std(-1)
        return torch.nan_to_num(score, nan=-1e10, posinf=-1e10, neginf=-1e10)


@dataclass
class PlanResult:
    actions: torch.Tensor  # [B, H, da] the planned sequence
    score: torch.Tensor  # [B] the evaluator's score of the best candidate seen


class ShootingPlanner:
    """The shared core: sample → evaluate → update, with warm-started means between calls."""

    def __init__(
        self,
        evaluator: TrajectoryEvaluator | Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        action_low: torch.Tensor,
        action_high: torch.Tensor,
        horizon: int = 20,
        n_candidates: int = 400,
        n_iterations: int = 5,
        init_std: float = 0.5,
        seed: int = 0,
    ):
        if horizon < 1 or n_candidates < 1 or n_iterations < 1:
            raise ConfigError("horizon, n_candidates and n_iterations must be positive")
        self.evaluator = evaluator
        self.low = torch.as_tensor(action_low, dtype=torch.float32).reshape(-1)
        self.high = torch.as_tensor(action_high, dtype=torch.float32).reshape(-1)
        self.horizon, self.n_candidates, self.n_iterations = horizon, n_candidates, n_iterations
        self.init_std = init_std
        self.generator = torch.Generator().manual_seed(seed)
        self._mean: torch.Tensor | None = None

    # -- the sampling core -------------------------------------------------------------------------
    @property
    def act_dim(self) -> int:
        return int(self.low.shape[0])

    def _initial_mean(self, batch: int) -> torch.Tensor:
        return ((self.low + self.high) / 2).expand(batch, self.horizon, self.act_dim).clone()

    def _initial_std(self, batch: int) -> torch.Tensor:
        return (self.init_std * (self.high - self.low) / 2).expand(batch, self.horizon, self.act_dim).clone()

    def gaussian_candidates(self, mean: torch.Tensor, std: torch.Tensor, n: int) -> torch.Tensor:
        """n sequences ``[B, n, H, da]`` from N(mean, std²), clipped to the action bounds."""
        noise = torch.randn((mean.shape[0], n, *mean.shape[1:]), generator=self.generator)
        return torch.clamp(mean[:, None] + std[:, None] * noise, self.low, self.high)

    def uniform_candidates(self, batch: int, n: int) -> torch.Tensor:
        u = torch.rand((batch, n, self.horizon, self.act_dim), generator=self.generator)
        return self.low + (self.high - self.low) * u

    # -- what each planner defines -------------------------------------------------------------------
    def sample(self, mean: torch.Tensor, std: torch.Tensor, iteration: int) -> torch.Tensor:
        return self.gaussian_candidates(mean, std, self.n_candidates)

    def update(
        self, mean: torch.Tensor, std: torch.Tensor, candidates: torch.Tensor, scores: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def output(self, mean: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
        """The plan returned: the distribution's mean by default."""
        return mean

    # -- the loop ------------------------------------------------------------------------------------
    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Forget the warm start (of the envs in ``mask``, or all)."""
        if mask is None or self._mean is None:
            self._mean = None
        else:
            self._mean[mask] = self._initial_mean(int(mask.sum()))

    def plan(self, obs: torch.Tensor) -> PlanResult:
        """Optimize a sequence for each state in ``obs [B, ds]``; warm-start from the previous plan."""
        obs = torch.as_tensor(obs, dtype=torch.float32)
        B = obs.shape[0]
        if self._mean is None or self._mean.shape[0] != B:
            mean = self._initial_mean(B)
        else:  # shift the previous plan one step: MPC executed its first action
            mean = torch.cat([self._mean[:, 1:], self._initial_mean(B)[:, -1:]], dim=1)
        std = self._initial_std(B)
        best = mean.clone()
        best_score = torch.full((B,), -float("inf"))
        for it in range(self.n_iterations):
            candidates = self.sample(mean, std, it)  # [B, C, H, da]
            scores = self.evaluator(obs, candidates)  # [B, C]
            top, arg = scores.max(1)
            improved = top > best_score
            best = torch.where(improved[:, None, None], candidates[torch.arange(B), arg], best)
            best_score = torch.where(improved, top, best_score)
            mean, std = self.update(mean, std, candidates, scores)
        plan = self.output(mean, best)
        self._mean = plan.clone()
        return PlanResult(plan, best_score)


class RandomShooting(ShootingPlanner):
    """Guess and check: C uniformly random sequences, execute the best (one round per iteration)."""

    def sample(self, mean: torch.Tensor, std: torch.Tensor, iteration: int) -> torch.Tensor:
        return self.uniform_candidates(mean.shape[0], self.n_candidates)

    def update(
        self, mean: torch.Tensor, std: torch.Tensor, candidates: torch.Tensor, scores: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return mean, std

    def output(self, mean: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
        return best


class CEM(ShootingPlanner):
    """Cross-entropy method: refit N(μ, σ²) to the top ``n_elites`` sequences, smoothed by α."""

    def __init__(self, *args: object, n_elites: int = 40, alpha: float = 0.1, min_std: float = 1e-3, **kwargs: object):
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if not 1 <= n_elites <= self.n_candidates:
            raise ConfigError(f"n_elites must lie in [1, n_candidates={self.n_candidates}], got {n_elites}")
        self.n_elites, self.alpha, self.min_std = n_elites, alpha, min_std

    def update(
        self, mean: torch.Tensor, std: torch.Tensor, candidates: torch.Tensor, scores: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        idx = scores.topk(self.n_elites, dim=1).indices  # [B, k]
        elites = candidates.gather(1, idx[:, :, None, None].expand(-1, -1, *candidates.shape[2:]))
        new_mean, new_std = elites.mean(1), elites.std(1, unbiased=False)
        mean = self.alpha * mean + (1 - self.alpha) * new_mean
        std = (self.alpha * std + (1 - self.alpha) * new_std).clamp_min(self.min_std)
        return mean, std


class MPPI(ShootingPlanner):
    """Model-predictive path integral: return-weighted average of Gaussian perturbations of the mean."""

    def __init__(self, *args: object, temperature: float = 1.0, **kwargs: object):
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def update(
        self, mean: torch.Tensor, std: torch.Tensor, candidates: torch.Tensor, scores: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        weights = torch.softmax((scores - scores.max(1, keepdim=True).values) / self.temperature, dim=1)
        return (weights[:, :, None, None] * candidates).sum(1), std
