r"""iLQR and DDP: LQR on local expansions of nonlinear dynamics (notes 9/21).

For x_{t+1} = f(x_t, u_t) and cost Σ_t c(x_t, u_t) + c_T(x_{T+1}), iterate around the nominal
trajectory (x̄, ū):

1. expand: :math:`F_t = \nabla_{x,u} f(\bar x_t, \bar u_t)`, :math:`c_t = \nabla_{x,u} c`,
   :math:`C_t = \nabla^2_{x,u} c` (autograd jacobians/Hessians, so f may be a known function or a
   learned network);
2. backward pass: the LQR recursion (:func:`core_rl.model_based.planners.lqr.lqr_backward`) on the
   deviations δx, δu, with Q_uu + μI (Levenberg–Marquardt regularization) and, for DDP, the
   second-order dynamics terms :math:`Q \mathrel{+}= \sum_i V'_{x,i}\,\nabla^2 f_i`;
3. forward pass in the true nonlinear f:
   :math:`\hat u_t = \bar u_t + \alpha k_t + K_t(\hat x_t - \bar x_t)`, :math:`\hat x_{t+1} = f(\hat x_t, \hat u_t)`,
   all line-search step sizes α evaluated together as one batch; accept the best α if it lowers the
   cost (then μ ← μ/10) else μ ← 10μ.

Everything is batched over B trajectories (``x0 [B, dx]``). Action bounds are handled by squashing:
u = mid + half·tanh(v), optimizing v (the constraint is built into the dynamics and cost), with a
small penalty ε‖v‖² that keeps v away from tanh's flat tails, where the expansion would vanish.

**As a controller** (:class:`ILQRController`): plan over a long horizon from several random
restarts at once (iLQR finds a local optimum; a swing-up needs the right one), run the plan
closed-loop, :math:`u_t = \bar u_t + K_t(x_t - \bar x_t)`, and replan every ``replan_every`` steps
warm-started from the rest of the plan. Its defaults are the recipe that swings Pendulum-v1 up:
a terminal cost on the upright state, horizon 100, 6 restarts, 80 iterations — a short horizon
(e.g. 40 steps, replanning every 10) with only a running cost settles in the local optimum of
hanging still and scores about −900.

Example (Pendulum-v1 from hanging down, with its true dynamics; ~10 s with one torch thread —
many threads on a small, busy machine can make it several times slower):

>>> import math, gymnasium as gym, numpy as np, torch
>>> from core_rl.model_based.env_models import angle_normalize, pendulum_dynamics
>>> def running(x, u):                      # a little control effort ...
...     return 0.01 * u[..., 0] ** 2
>>> def final(x):                           # ... and be upright and still at the horizon
...     return 100 * (1 - torch.cos(x[..., 0])) + 10 * x[..., 1] ** 2
>>> controller = ILQRController(pendulum_dynamics, running, final, seed=0)
>>> env = gym.make("Pendulum-v1")
>>> _ = env.reset(seed=0)
>>> env.unwrapped.state = np.array([math.pi, 0.0])
>>> controller.reset(env.unwrapped.state)
>>> total, upright = 0.0, []
>>> for t in range(200):
...     u = controller.act(env.unwrapped.state)
...     _, r, *_ = env.step(u.astype(np.float32))
...     total += r
...     upright.append(abs(float(angle_normalize(torch.tensor(env.unwrapped.state[0])))) < 0.1)
>>> all(upright[100:]), bool(total > -700)   # up by step 100 and balanced since (return ≈ −610)
(True, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.func import grad, jacrev

from core_rl.common.errors import ConfigError
from core_rl.model_based.planners.lqr import lqr_backward

if TYPE_CHECKING:
    from core_rl.model_based.planners.shooting import PlanResult

Dynamics = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
RunningCost = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # x [..., T, dx], u [..., T, du] -> [..., T]
FinalCost = Callable[[torch.Tensor], torch.Tensor]  # x [..., dx] -> [...]


@dataclass
class ILQRResult:
    x: torch.Tensor  # [B, T+1, dx]
    u: torch.Tensor  # [B, T, du] (within the bounds)
    cost: torch.Tensor  # [B]
    K: torch.Tensor  # [B, T, du, dx] feedback gains (in the unsquashed control v)
    k: torch.Tensor  # [B, T, du]
    v: torch.Tensor  # [B, T, du] the unsquashed nominal controls
    history: list[float] = field(default_factory=list)  # mean cost per iteration
    iterations: int = 0
    squash: Callable[[torch.Tensor], torch.Tensor] | None = None

    def control(self, t: int, x: torch.Tensor) -> torch.Tensor:
        """The closed-loop iLQR controller u_t = squash(v̄_t + K_t(x − x̄_t))."""
        v = self.v[:, t] + (self.K[:, t] @ (x - self.x[:, t])[..., None]).squeeze(-1)
        return self.squash(v) if self.squash is not None else v


class ILQR:
    """iLQR (``second_order=False``) or DDP (``True``) for batched trajectories."""

    def __init__(
        self,
        dynamics: Dynamics,
        running_cost: RunningCost,
        final_cost: FinalCost | None = None,
        action_low: torch.Tensor | float | None = None,
        action_high: torch.Tensor | float | None = None,
        second_order: bool = False,
        squash_penalty: float = 1e-3,
        n_iterations: int = 50,
        mu_init: float = 1.0,
        mu_min: float = 1e-6,
        mu_max: float = 1e10,
        tol: float = 1e-7,
        alphas: tuple[float, ...] = (1.0, 0.5, 0.25, 0.1, 0.05, 0.01, 0.001),
    ):
        if (action_low is None) != (action_high is None):
            raise ConfigError("give both action_low and action_high, or neither")
        self.f, self.c, self.cT = dynamics, running_cost, final_cost
        self.second_order, self.n_iterations, self.tol = second_order, n_iterations, tol
        self.mu_init, self.mu_min, self.mu_max = mu_init, mu_min, mu_max
        self.alphas = torch.tensor(alphas, dtype=torch.float64)
        self.bounded = action_low is not None
        self.squash_penalty = squash_penalty if self.bounded else 0.0
        if self.bounded:
            low = torch.as_tensor(action_low, dtype=torch.float64)
            high = torch.as_tensor(action_high, dtype=torch.float64)
            self.mid, self.half = (high + low) / 2, (high - low) / 2

    # -- control squashing -------------------------------------------------------------------------
    def squash(self, v: torch.Tensor) -> torch.Tensor:
        return self.mid.to(v.dtype) + self.half.to(v.dtype) * torch.tanh(v) if self.bounded else v

    def unsquash(self, u: torch.Tensor) -> torch.Tensor:
        if not self.bounded:
            return u
        return torch.atanh(((u - self.mid) / self.half).clamp(-0.995, 0.995))

    def _running(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """c(x, squash(v)) + ε‖v‖²: the small penalty keeps v out of tanh's flat tails."""
        cost = self.c(x, self.squash(v))
        return cost + self.squash_penalty * v.pow(2).sum(-1) if self.squash_penalty else cost

    def _g(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.f(x, self.squash(v))

    # -- trajectories ------------------------------------------------------------------------------
    def rollout(self, x0: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Open-loop states ``[..., T+1, dx]`` of controls ``v [..., T, du]``."""
        xs = [x0]
        for t in range(v.shape[-2]):
            xs.append(self._g(xs[-1], v[..., t, :]))
        return torch.stack(xs, -2)

    def total_cost(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        cost = self._running(x[..., :-1, :], v).sum(-1)
        if self.cT is not None:
            cost = cost + self.cT(x[..., -1, :])
        return cost

    # -- expansions (autograd; each output depends on its own (b, t) only) -------------------------
    def _expand(self, x: torch.Tensor, v: torch.Tensor) -> dict[str, torch.Tensor]:
        dx = x.shape[-1]
        z = torch.cat([x[:, :-1], v], -1).detach()  # [B, T, dz]

        def f_sum(zz: torch.Tensor) -> torch.Tensor:
            return self._g(zz[..., :dx], zz[..., dx:]).sum((0, 1))

        def c_sum(zz: torch.Tensor) -> torch.Tensor:
            return self._running(zz[..., :dx], zz[..., dx:]).sum()

        out = {"F": jacrev(f_sum)(z).permute(1, 2, 0, 3)}  # [B, T, dx, dz]
        out["c"] = grad(c_sum)(z)  # [B, T, dz]
        out["C"] = jacrev(lambda zz: grad(c_sum)(zz).sum((0, 1)))(z).permute(1, 2, 0, 3)
        if self.second_order:
            out["F2"] = jacrev(lambda zz: jacrev(f_sum)(zz).sum((1, 2)))(z).permute(2, 3, 0, 1, 4)
        if self.cT is not None:
            xT = x[:, -1].detach()
            cT_sum = lambda xx: self.cT(xx).sum()  # noqa: E731
            out["vT"] = grad(cT_sum)(xT)
            out["VT"] = jacrev(lambda xx: grad(cT_sum)(xx).sum(0))(xT).permute(1, 0, 2)
        return out

    # -- the loop ----------------------------------------------------------------------------------
    def solve(self, x0: torch.Tensor, u_init: torch.Tensor) -> ILQRResult:
        """Optimize controls from ``x0 [B, dx]`` starting at ``u_init [B, T, du]``."""
        x0 = torch.as_tensor(x0, dtype=torch.float64)
        if x0.dim() == 1:
            x0 = x0[None]
        u_init = torch.as_tensor(u_init, dtype=torch.float64)
        if u_init.dim() == 2:
            u_init = u_init[None].expand(x0.shape[0], -1, -1)
        B, T, du = u_init.shape
        dx = x0.shape[-1]
        v = self.unsquash(u_init).clone()
        with torch.no_grad():
            x = self.rollout(x0, v)
            cost = self.total_cost(x, v)
        mu = torch.full((B,), self.mu_init, dtype=torch.float64)
        K = torch.zeros(B, T, du, dx, dtype=torch.float64)
        k = torch.zeros(B, T, du, dtype=torch.float64)
        history = [cost.mean().item()]
        it = 0
        for it in range(1, self.n_iterations + 1):
            e = self._expand(x, v)
            sol = lqr_backward(
                e["F"],
                torch.zeros(B, T, dx, dtype=torch.float64),
                e["C"],
                e["c"],
                dx,
                terminal_V=e.get("VT"),
                terminal_v=e.get("vT"),
                regularization=mu,
                dynamics_hessian=e.get("F2"),
            )
            if not (torch.isfinite(sol.K).all() and torch.isfinite(sol.k).all()):
                mu = (mu * 10).clamp(max=self.mu_max)
                continue
            with torch.no_grad():  # every α at once: [A, B, ...]
                A = self.alphas.shape[0]
                xh = [x0.expand(A, B, dx)]
                vh = []
                for t in range(T):
                    vt = (
                        v[:, t]
                        + self.alphas[:, None, None] * sol.k[:, t]
                        + (sol.K[:, t] @ (xh[-1] - x[:, t])[..., None]).squeeze(-1)
                    )
                    vh.append(vt)
                    xh.append(self._g(xh[-1], vt))
                x_new, v_new = torch.stack(xh, -2), torch.stack(vh, -2)  # [A, B, T+1, dx], [A, B, T, du]
                new_cost = torch.nan_to_num(self.total_cost(x_new, v_new), nan=float("inf"))
                best_cost, best_a = new_cost.min(0)
                accept = best_cost < cost
                idx = torch.arange(B)
                x = torch.where(accept[:, None, None], x_new[best_a, idx], x)
                v = torch.where(accept[:, None, None], v_new[best_a, idx], v)
                rel = (cost - torch.where(accept, best_cost, cost)) / cost.abs().clamp_min(1e-12)
                cost = torch.where(accept, best_cost, cost)
                K, k = torch.where(accept[:, None, None, None], sol.K, K), torch.where(accept[:, None, None], sol.k, k)
                mu = torch.where(accept, (mu / 10).clamp(min=self.mu_min), (mu * 10).clamp(max=self.mu_max))
            history.append(cost.mean().item())
            if bool(((rel < self.tol) & accept).all()) or bool((mu >= self.mu_max).all()):
                break
        return ILQRResult(
            x=x,
            u=self.squash(v),
            cost=cost,
            K=K,
            k=k,
            v=v,
            history=history,
            iterations=it,
            squash=self.squash if self.bounded else None,
        )


def model_dynamics(model: torch.nn.Module) -> Dynamics:
    """A learned model's (member-averaged) mean prediction as a differentiable f(x, u) for iLQR."""

    def f(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        next_obs, _ = model.mean_step(x.float(), u.float())
        return next_obs.to(x.dtype)

    return f


class ILQRPlanner:
    """iLQR as an MPC planner on a learned (or known) model: cost −r̂(x, u), warm-started by shifting.

    Same interface as the shooting planners (``plan(obs) -> PlanResult``, ``reset(mask)``), so
    :class:`core_rl.model_based.mpc.MPC` replans with it at every step.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        action_low: torch.Tensor,
        action_high: torch.Tensor,
        horizon: int = 15,
        n_iterations: int = 5,
        reward_fn: Callable[..., torch.Tensor] | None = None,
        init_std: float = 0.1,
        seed: int = 0,
    ):
        if reward_fn is None and not getattr(model, "learn_reward", False):
            raise ConfigError("the model does not predict rewards: pass a reward_fn (reward='known')")
        self.model, self.reward_fn, self.horizon, self.n_iterations = model, reward_fn, horizon, n_iterations
        self.low = torch.as_tensor(action_low, dtype=torch.float64).reshape(-1)
        self.high = torch.as_tensor(action_high, dtype=torch.float64).reshape(-1)
        self.init_std = init_std
        self.generator = torch.Generator().manual_seed(seed)
        self._u: torch.Tensor | None = None
        self._f = model_dynamics(model)

    def _cost(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if self.reward_fn is not None:
            return -self.reward_fn(x, u, self._f(x, u))
        _, reward = self.model.mean_step(x.float(), u.float())
        return -reward.to(x.dtype)

    def _initial(self, batch: int) -> torch.Tensor:
        mid, half = (self.high + self.low) / 2, (self.high - self.low) / 2
        noise = torch.randn(batch, self.horizon, self.low.shape[0], generator=self.generator, dtype=torch.float64)
        return mid + self.init_std * half * noise

    def reset(self, mask: torch.Tensor | None = None) -> None:
        if mask is None or self._u is None:
            self._u = None
        else:
            self._u[mask] = self._initial(int(mask.sum()))

    def plan(self, obs: torch.Tensor) -> PlanResult:
        from core_rl.model_based.planners.shooting import PlanResult

        x0 = torch.as_tensor(obs, dtype=torch.float64)
        B = x0.shape[0]
        if self._u is None or self._u.shape[0] != B:
            u_init = self._initial(B)
        else:
            u_init = torch.cat([self._u[:, 1:], self._initial(B)[:, -1:]], dim=1)
        solver = ILQR(self._f, self._cost, action_low=self.low, action_high=self.high, n_iterations=self.n_iterations)
        res = solver.solve(x0, u_init)
        self._u = res.u.detach().clone()
        return PlanResult(res.u.float(), -res.cost.float())


class ILQRController:
    """Receding-horizon iLQR on known (or learned, differentiable) dynamics ``f(x, u)``.

    ``reset(x0)`` plans ``horizon`` steps from ``restarts`` initial control sequences (zeros and
    Gaussian ones of scale ``init_std``) solved as one batch, and keeps the cheapest; ``act(x)``
    returns the closed-loop control ``u_t = squash(v̄_t + K_t(x − x̄_t))`` and, every
    ``replan_every`` steps, replans from ``x`` warm-started with the rest of the plan (plus the
    restarts, ``replan_iterations`` iterations). Angles in ``x`` are compared with the plan's after
    unwrapping (``angle_dims``), so a plan that swings to θ = 2π still tracks an env reporting θ = 0.
    The defaults are the Pendulum-v1 swing-up recipe (module docstring).
    """

    def __init__(
        self,
        dynamics: Dynamics,
        running_cost: RunningCost,
        final_cost: FinalCost | None = None,
        *,
        horizon: int = 100,
        restarts: int = 6,
        n_iterations: int = 80,
        replan_every: int = 25,
        replan_iterations: int = 10,
        init_std: float = 0.5,
        action_dim: int = 1,
        angle_dims: tuple[int, ...] = (0,),
        seed: int = 0,
        **ilqr_kwargs: object,
    ):
        if horizon < 1 or restarts < 1 or n_iterations < 1 or replan_every < 1 or replan_iterations < 1:
            raise ConfigError("horizon, restarts, n_iterations, replan_every and replan_iterations must be positive")
        self.solver = ILQR(dynamics, running_cost, final_cost, n_iterations=n_iterations, **ilqr_kwargs)  # type: ignore[arg-type]
        self.replan_solver = ILQR(
            dynamics,
            running_cost,
            final_cost,
            n_iterations=replan_iterations,
            **ilqr_kwargs,  # type: ignore[arg-type]
        )
        self.horizon, self.restarts, self.replan_every = horizon, restarts, replan_every
        self.init_std, self.action_dim, self.angle_dims = init_std, action_dim, angle_dims
        self.generator = torch.Generator().manual_seed(seed)
        self.plan: ILQRResult | None = None
        self.t = 0
        self.solves: list[float] = []  # the cost of every accepted plan

    def _random(self, n: int, T: int) -> torch.Tensor:
        u = self.init_std * torch.randn(n, T, self.action_dim, generator=self.generator, dtype=torch.float64)
        u[0] = 0.0
        return u

    def _unwrap(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        for d in self.angle_dims:
            x[..., d] = (
                reference[..., d] + torch.remainder(x[..., d] - reference[..., d] + math.pi, 2 * math.pi) - math.pi
            )
        return x

    def _solve(self, solver: ILQR, x0: torch.Tensor, u_init: torch.Tensor) -> None:
        res = solver.solve(x0.expand(u_init.shape[0], -1), u_init)
        best = int(res.cost.argmin())
        self.plan = ILQRResult(
            x=res.x[best : best + 1],
            u=res.u[best : best + 1],
            cost=res.cost[best : best + 1],
            K=res.K[best : best + 1],
            k=res.k[best : best + 1],
            v=res.v[best : best + 1],
            history=res.history,
            iterations=res.iterations,
            squash=res.squash,
        )
        self.solves.append(float(res.cost[best]))
        self.t = 0

    def reset(self, x0: torch.Tensor | Sequence[float]) -> None:
        """Plan from ``x0`` with all the restarts."""
        x = torch.as_tensor(np.asarray(x0, dtype=np.float64)).reshape(1, -1)
        self._solve(self.solver, x, self._random(self.restarts, self.horizon))

    def act(self, x: torch.Tensor | Sequence[float]) -> np.ndarray:
        """The control for state ``x`` (replanning first when it is due)."""
        if self.plan is None:
            raise ConfigError("call reset(x0) before act(x)")
        x = torch.as_tensor(np.asarray(x, dtype=np.float64)).reshape(1, -1)
        if self.t >= self.replan_every:
            x = self._unwrap(x, self.plan.x[:, self.t])
            rest = self.plan.u[:, self.t :]
            warm = torch.cat(
                [rest, torch.zeros(1, self.horizon - rest.shape[1], self.action_dim, dtype=torch.float64)], 1
            )
            u_init = torch.cat([warm, self._random(self.restarts, self.horizon)[1:]], 0)
            self._solve(self.replan_solver, x, u_init)
        t = min(self.t, self.horizon - 1)
        x = self._unwrap(x, self.plan.x[:, t])
        u = self.plan.control(t, x)
        self.t += 1
        return u[0].detach().numpy()
