r"""Learning a policy through a model (notes 10/3).

**Backpropagation through time.** With a differentiable model f̂ and reward r̂ the return of a
deterministic policy u = π_θ(x) over a short horizon H is a differentiable function of θ,

.. math::
    J(\theta) = \mathbb E_{x_0\sim D}\Big[\sum_{t=0}^{H-1} \gamma^t\, \hat r(x_t, \pi_\theta(x_t))\Big],
    \qquad x_{t+1} = \hat f(x_t, \pi_\theta(x_t)) \;(+\ \sigma\epsilon \text{ reparameterized}),

so θ ← θ + η∇_θJ by backpropagating through the unrolled model (:class:`BPTTPolicyTrainer`).
Start states are real states from the data, and H is short: the notes warn that long chains of
Jacobians are ill-conditioned (exploding/vanishing gradients, like an RNN without gating).

**Collocation / dual gradient descent.** The stabilised alternative optimizes a trajectory
τ = (x_{1:T}, u_{1:T}) and the policy jointly under the constraint u_t = π_θ(x_t), with the
augmented Lagrangian of the notes

.. math::
    L(\tau, \theta, \lambda) = c(\tau) + \sum_{t=1}^T \lambda_t\big(\pi_\theta(x_t) - u_t\big)
                                + \sum_{t=1}^T \rho_t\big(\pi_\theta(x_t) - u_t\big)^2,

and alternates (:class:`DualGradientDescentTrainer`)

1. τ ← argmin_τ L(τ, θ, λ) — trajectory optimization (iLQR through the model) with the constraint
   terms added to the cost;
2. θ ← argmin_θ L(τ, θ, λ) — supervised regression of π_θ(x_t) onto u_t, shifted by λ_t/2ρ_t;
3. λ ← λ + α ∇_λ L = λ + α(π_θ(x_t) − u_t) — dual ascent on the multipliers.

The trajectory optimizer only ever sees one time step's policy Jacobian, so the long chain of
Jacobians of BPTT is avoided.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from core_rl.common import optim
from core_rl.common.errors import ConfigError
from core_rl.common.networks import mlp
from core_rl.model_based.env_models import RewardFn
from core_rl.model_based.planners.ilqr import ILQR, Dynamics, FinalCost, RunningCost


class DeterministicPolicy(nn.Module):
    """u = mid + half·tanh(MLP(x)): a deterministic policy within the action bounds."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        action_low: np.ndarray | torch.Tensor | float,
        action_high: np.ndarray | torch.Tensor | float,
        hidden_sizes: tuple[int, ...] = (64, 64),
        activation: str = "tanh",
        features: Callable[[torch.Tensor], torch.Tensor] | None = None,
        feature_dim: int | None = None,
    ):
        super().__init__()
        low = torch.as_tensor(action_low, dtype=torch.float32).expand(act_dim)
        high = torch.as_tensor(action_high, dtype=torch.float32).expand(act_dim)
        self.register_buffer("action_mid", (high + low) / 2)
        self.register_buffer("action_half", (high - low) / 2)
        self.features = features
        self.net = mlp(feature_dim or obs_dim, act_dim, hidden_sizes, activation, out_gain=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()
        if self.features is not None:
            h = self.features(h)
        return (self.action_mid + self.action_half * torch.tanh(self.net(h))).to(dtype)


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Temporarily stop gradients into a module's parameters (the model, while the policy learns)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


class BPTTPolicyTrainer:
    """Maximize the H-step model return of π_θ by backpropagating through the learned model."""

    def __init__(
        self,
        model: nn.Module,
        policy: nn.Module,
        horizon: int = 10,
        gamma: float = 0.99,
        lr: float = 1e-3,
        reward_fn: RewardFn | None = None,
        sample: bool = False,
        terminal_value: Callable[[torch.Tensor], torch.Tensor] | None = None,
        max_grad_norm: float = 10.0,
        seed: int = 0,
    ):
        if horizon < 1:
            raise ConfigError(f"horizon must be positive, got {horizon}")
        if reward_fn is None and not getattr(model, "learn_reward", False):
            raise ConfigError("the model does not predict rewards: pass a reward_fn")
        self.model, self.policy, self.horizon, self.gamma = model, policy, horizon, gamma
        self.reward_fn, self.sample, self.terminal_value = reward_fn, sample, terminal_value
        self.max_grad_norm = max_grad_norm
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
        self.generator = torch.Generator().manual_seed(seed)

    def model_return(self, start: torch.Tensor) -> torch.Tensor:
        """Differentiable H-step return ``[N]`` from start states ``[N, ds]``; each start follows one member."""
        M = int(getattr(self.model, "n_members", 1))
        N, ds = start.shape
        n = -(-N // M)  # ceil: pad to M·n particles
        pad = start[torch.randint(0, N, (M * n - N,), generator=self.generator)] if M * n > N else start[:0]
        x = torch.cat([start, pad]).reshape(M, n, ds)
        total = torch.zeros(M, n)
        discount = 1.0
        self.model.begin_rollout()
        for _ in range(self.horizon):
            u = self.policy(x)
            x_next, r = self.model.propagate(x, u, sample=self.sample)
            if self.reward_fn is not None:
                r = self.reward_fn(x, u, x_next)
            total = total + discount * r
            discount *= self.gamma
            x = x_next
        if self.terminal_value is not None:
            total = total + discount * self.terminal_value(x)
        return total.reshape(-1)[:N]

    def train(self, start_states: torch.Tensor, n_steps: int = 200, batch_size: int = 256) -> dict[str, float]:
        """``n_steps`` gradient steps, each on a minibatch of real start states."""
        start_states = torch.as_tensor(start_states, dtype=torch.float32)
        value = float("nan")
        with frozen(self.model):
            for _ in range(n_steps):
                idx = torch.randint(
                    0, start_states.shape[0], (min(batch_size, start_states.shape[0]),), generator=self.generator
                )
                loss = -self.model_return(start_states[idx]).mean()
                optim.step(self.optimizer, loss, self.max_grad_norm)
                value = -loss.item()
        return {"model_return": value}


class DualGradientDescentTrainer:
    """Collocation-style joint trajectory/policy optimization with the augmented Lagrangian of the notes."""

    def __init__(
        self,
        dynamics: Dynamics,
        running_cost: RunningCost,
        policy: nn.Module,
        final_cost: FinalCost | None = None,
        rho: float = 1.0,
        dual_lr: float | None = None,
        policy_lr: float = 1e-3,
        policy_steps: int = 200,
        ilqr_iterations: int = 10,
        action_low: float | torch.Tensor | None = None,
        action_high: float | torch.Tensor | None = None,
        rho_growth: float = 1.0,
    ):
        if rho <= 0:
            raise ConfigError(f"rho must be positive, got {rho}")
        self.f, self.c, self.cT, self.policy = dynamics, running_cost, final_cost, policy
        self.rho, self.rho_growth = rho, rho_growth
        self.dual_lr = 2 * rho if dual_lr is None else dual_lr  # the method-of-multipliers step 2ρ
        self.policy_steps, self.ilqr_iterations = policy_steps, ilqr_iterations
        self.bounds = (action_low, action_high)
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=policy_lr)
        self.lam: torch.Tensor | None = None
        self.x: torch.Tensor | None = None
        self.u: torch.Tensor | None = None

    def lagrangian_terms(self, x: torch.Tensor, u: torch.Tensor, lam: torch.Tensor, rho: float) -> torch.Tensor:
        """Σ_d λ_t(π_θ(x_t) − u_t) + ρ(π_θ(x_t) − u_t)² per (b, t)."""
        gap = self.policy(x) - u
        return (lam * gap).sum(-1) + rho * gap.pow(2).sum(-1)

    def trajectory_step(
        self, x0: torch.Tensor, u: torch.Tensor, lam: torch.Tensor, rho: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """τ ← argmin_τ L(τ, θ, λ) by iLQR (warm-started at u)."""

        def cost(x: torch.Tensor, uu: torch.Tensor) -> torch.Tensor:
            return self.c(x, uu) + self.lagrangian_terms(x, uu, lam, rho)

        with frozen(self.policy):
            solver = ILQR(
                self.f,
                cost,
                self.cT,
                action_low=self.bounds[0],
                action_high=self.bounds[1],
                n_iterations=self.ilqr_iterations,
            )
            res = solver.solve(x0, u)
        return res.x, res.u, res.cost

    def policy_step(self, x: torch.Tensor, u: torch.Tensor, lam: torch.Tensor, rho: float) -> float:
        """θ ← argmin_θ Σ_t λ_t π_θ(x_t) + ρ(π_θ(x_t) − u_t)² on the trajectory's states."""
        xs, us, ls = x[:, :-1].detach(), u.detach(), lam.detach()
        loss_value = float("nan")
        for _ in range(self.policy_steps):
            loss = self.lagrangian_terms(xs, us, ls, rho).mean()
            optim.step(self.optimizer, loss)
            loss_value = loss.item()
        return loss_value

    def train(self, x0: torch.Tensor, u_init: torch.Tensor, n_outer: int = 10) -> list[dict[str, float]]:
        """Alternate trajectory optimization, policy regression and dual ascent ``n_outer`` times."""
        x0 = torch.as_tensor(x0, dtype=torch.float64)
        u = torch.as_tensor(u_init, dtype=torch.float64)
        if self.lam is None or self.lam.shape != u.shape:
            self.lam = torch.zeros_like(u)
        rho = self.rho
        history = []
        for _ in range(n_outer):
            x, u, _ = self.trajectory_step(x0, u, self.lam, rho)
            policy_loss = self.policy_step(x, u, self.lam, rho)
            with torch.no_grad():
                gap = self.policy(x[:, :-1]) - u
                self.lam = self.lam + self.dual_lr * gap
                task_cost = self.c(x[:, :-1], u).sum(-1) + (self.cT(x[:, -1]) if self.cT is not None else 0.0)
            history.append(
                {
                    "task_cost": float(task_cost.mean()),
                    "constraint_violation": float(gap.abs().mean()),
                    "policy_loss": policy_loss,
                    "rho": rho,
                }
            )
            rho *= self.rho_growth
        self.x, self.u = x, u
        return history
