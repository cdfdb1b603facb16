r"""A model-based safe agent: CEM-MPC through a probabilistic ensemble (PETS, notes 9/21–9/28) that
plans with a *pessimistic* cost, aiming at few violations while it learns.

Besides PETS's bootstrap ensemble of dynamics (and reward) models, a bootstrap ensemble of M cost
classifiers :math:`\hat p_j(s,a) \approx P(c>0\mid s,a)` is fitted on every real transition. Each
candidate action sequence is rolled out by PETS's particles (particle p follows dynamics member
b(p)); along each particle the cost is summed with the *largest* member's prediction, and the
candidate's cost is the worst particle's:

.. math::
    \hat C(a_{t:t+H}) = \max_p \sum_{k<H} \max_j \hat p_j(s^p_{t+k}, a_{t+k}),

pessimistic under both model uncertainties (which member of the dynamics, which of the cost).
CEM then ranks candidates the way Liu et al.'s robust CEM (2020) does: the feasible ones
(:math:`\hat C \le` ``plan_cost_threshold``) by their expected return, all of them above every
infeasible one, and infeasible ones by their cost — so when no plan looks safe the planner picks
the least unsafe. Only the first action is executed; replanning at every step corrects the rest.
The dynamics and reward model, the evaluator and the CEM planner are core_rl.model_based's.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from core_rl.model_based.dynamics import BatchedMLP
from core_rl.model_based.mpc import PETS, PETSConfig
from core_rl.model_based.planners.shooting import TrajectoryEvaluator
from safety.cmdp import CMDPConfig
from safety.on_policy import CostTrackingMixin
from safety.sac_lag import CostReplayBuffer


class CostEnsemble(nn.Module):
    """M bootstrap logistic classifiers of P(c > 0 | s, a) (one constraint); inputs are normalized."""

    def __init__(self, obs_dim: int, act_dim: int, n_members: int = 5, hidden_sizes: tuple[int, ...] = (64, 64)):
        super().__init__()
        self.n_members = n_members
        self.net = BatchedMLP(n_members, obs_dim + act_dim, 1, hidden_sizes, "silu")
        self.register_buffer("mean", torch.zeros(obs_dim + act_dim))
        self.register_buffer("std", torch.ones(obs_dim + act_dim))
        with torch.no_grad():  # prior: costs are rare
            self.net.layers[-1].bias.fill_(-4.0)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``x [M, B, in]`` (member m sees its own rows) → ``[M, B]``."""
        return self.net((x - self.mean) / self.std).squeeze(-1)

    @torch.no_grad()
    def pessimistic(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """max_j p̂_j(s, a) for inputs of any leading shape ``[..., ds]`` → ``[...]``."""
        x = torch.cat([obs, act], -1)
        lead = x.shape[:-1]
        flat = x.reshape(1, -1, x.shape[-1]).expand(self.n_members, -1, -1)
        return torch.sigmoid(self.logits(flat)).amax(0).reshape(lead)

    @torch.enable_grad()
    def fit(self, x: torch.Tensor, y: torch.Tensor, steps: int = 200, batch_size: int = 256, lr: float = 1e-3,
            generator: torch.Generator | None = None) -> float:
        """Class-balanced BCE; each member trains on its own bootstrap resample."""
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(1e-6))
        n = x.shape[0]
        rate = y.mean().clamp(1e-4, 1.0)
        pos_weight = ((1 - rate) / rate).clamp(max=50.0)
        boot = torch.randint(0, n, (self.n_members, n), generator=generator)
        optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)
        total = 0.0
        for _ in range(steps):
            pick = torch.randint(0, n, (self.n_members, min(batch_size, n)), generator=generator)
            idx = boot.gather(1, pick)
            loss = nn.functional.binary_cross_entropy_with_logits(self.logits(x[idx]), y[idx], pos_weight=pos_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
        return total / max(steps, 1)


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

    def propagate(self, obs: torch.Tensor, act: torch.Tensor, sample: bool = True):  # type: ignore[no-untyped-def]
        cost = self.cost_model.pessimistic(obs, act)
        self.cost_total = cost if self.cost_total is None else self.cost_total + cost
        return self.model.propagate(obs, act, sample)


class PessimisticCostPlanning:
    """Candidate scores for the shooting planner: expected return if the worst particle's pessimistic
    horizon cost is within the threshold, else below every feasible candidate, ordered by cost."""

    def __init__(self, evaluator: TrajectoryEvaluator, tracker: CostTrackingModel, threshold: float):
        self.evaluator, self.tracker, self.threshold = evaluator, tracker, threshold
        self.last_feasible_fraction = float("nan")

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        B, C = actions.shape[:2]
        returns = self.evaluator.particle_returns(obs, actions)            # [B, C, P]
        M, P = self.tracker.n_members, returns.shape[-1]
        cost = self.tracker.cost_total.reshape(M, B, C, P // M).permute(1, 2, 3, 0).reshape(B, C, P)
        worst = cost.amax(-1)
        feasible = worst <= self.threshold
        self.last_feasible_fraction = float(feasible.float().mean())
        score = torch.nan_to_num(returns.mean(-1), nan=-1e10, posinf=-1e10, neginf=-1e10)
        return torch.where(feasible, score, -1e6 - worst)


class SafeMPCConfig(CMDPConfig, PETSConfig):
    cost_members: int = Field(5, ge=1, description="Members of the cost-classifier ensemble.")
    cost_hidden_sizes: tuple[int, ...] = (64, 64)
    cost_fit_steps: int = Field(300, ge=1, description="Minibatch steps per cost-model fit.")
    plan_cost_threshold: float = Field(0.3, ge=0.0, description="Largest pessimistic cost over the horizon of a feasible plan.")


class SafeMPC(CostTrackingMixin, PETS):
    """PETS with a pessimistic learned cost in the planner (feasible-first CEM)."""

    name = "safe_mpc"
    config: SafeMPCConfig
    config_cls = SafeMPCConfig

    def _build(self) -> None:
        super()._build()
        cfg = self.config
        monitor = self.cost_monitor
        self.replay = CostReplayBuffer(cfg.buffer_size, self.n_envs, (self.obs_dim,), (self.act_dim,), seed=cfg.seed,
                                       device=self.device, n_constraints=cfg.n_constraints,
                                       cost_source=lambda: monitor.last_costs)
        self.cost_model = CostEnsemble(self.obs_dim, self.act_dim, cfg.cost_members, cfg.cost_hidden_sizes)
        self.cost_tracker = CostTrackingModel(self.model, self.cost_model)
        inner = TrajectoryEvaluator(self.cost_tracker, cfg.n_particles, reward_fn=self.evaluator.reward_fn,
                                    termination_fn=self.evaluator.termination_fn, gamma=cfg.gamma)
        self.evaluator = PessimisticCostPlanning(inner, self.cost_tracker, cfg.plan_cost_threshold)  # type: ignore[assignment]
        self.planner = self._make_planner(cfg.seed)
        self._cost_generator = torch.Generator().manual_seed(cfg.seed + 3)

    def fit_model(self) -> dict[str, float]:
        metrics = super().fit_model()
        replay = self.replay
        T = replay.size_per_env if replay.full else replay.pos
        x = torch.cat([replay.obs[:T], replay.actions[:T]], -1).reshape(T * self.n_envs, -1)
        y = (replay.costs[:T, :, 0] > 0).float().reshape(-1)
        metrics["cost_model_loss"] = self.cost_model.fit(x, y, self.config.cost_fit_steps,
                                                         generator=self._cost_generator)
        metrics["cost_model_positives"] = float(y.sum())
        return metrics

    def _iterate(self) -> dict[str, float]:
        metrics = super()._iterate()
        metrics["plan_feasible_fraction"] = self.evaluator.last_feasible_fraction  # type: ignore[attr-defined]
        return metrics


__all__ = ["CostEnsemble", "CostTrackingModel", "PessimisticCostPlanning", "SafeMPC", "SafeMPCConfig"]
