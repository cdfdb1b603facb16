r"""Finite-horizon LQR by the backward Riccati recursion (notes 9/21: closed-loop planning, linear case).

For linear dynamics and quadratic cost

.. math::
    x_{t+1} = F_t \begin{bmatrix}x_t\\u_t\end{bmatrix} + f_t, \qquad
    c(x_t, u_t) = \tfrac12 \begin{bmatrix}x_t\\u_t\end{bmatrix}^\top C_t \begin{bmatrix}x_t\\u_t\end{bmatrix}
                 + \begin{bmatrix}x_t\\u_t\end{bmatrix}^\top c_t,

the optimal cost-to-go is quadratic, V_{t}(x) = ½xᵀV_t x + xᵀv_t, and the recursion from t = T
down to 1 is (with V_{T+1}, v_{T+1} the terminal cost, zero by default)

.. math::
    Q_t = C_t + F_t^\top V_{t+1} F_t, \qquad q_t = c_t + F_t^\top V_{t+1} f_t + F_t^\top v_{t+1},

    u_t = K_t x_t + k_t, \quad K_t = -Q_{uu}^{-1}Q_{ux}, \quad k_t = -Q_{uu}^{-1} q_u,

    V_t = Q_{xx} + Q_{xu}K_t + K_t^\top Q_{ux} + K_t^\top Q_{uu}K_t, \quad
    v_t = q_x + Q_{xu}k_t + K_t^\top q_u + K_t^\top Q_{uu}k_t.

The controller is closed-loop: the feedback K_t x_t reacts to the state actually reached. Every
tensor may carry a leading batch dim (many problems solved together); only the time recursion is a
Python loop. :func:`lqr_backward` also serves iLQR/DDP, which call it on local expansions
(``regularization`` μI added to Q_uu, and ``dynamics_hessian`` for DDP's second-order terms).

Example (a double integrator steered from x = 1 to rest; the closed-loop rollout costs exactly the
cost-to-go ½x₀ᵀV₀x₀ that the recursion predicted)::

    >>> import torch
    >>> A = torch.tensor([[1.0, 0.1], [0.0, 1.0]], dtype=torch.float64)   # position, velocity; dt = 0.1
    >>> B = torch.tensor([[0.0], [0.1]], dtype=torch.float64)
    >>> Q, R = torch.eye(2, dtype=torch.float64), 0.1 * torch.eye(1, dtype=torch.float64)
    >>> solution = lqr(A, B, Q, R, horizon=50)
    >>> x0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    >>> F, f = torch.cat([A, B], -1).expand(50, 2, 3), torch.zeros(50, 2, dtype=torch.float64)
    >>> xs, us = lqr_rollout(solution, F, f, x0)
    >>> cost = 0.5 * ((xs[:-1] @ Q * xs[:-1]).sum() + (us @ R * us).sum())
    >>> round(float(cost), 3), round(float(0.5 * x0 @ solution.V[0] @ x0), 3), bool(xs[-1].abs().max() < 0.05)
    (6.913, 6.913, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core_rl.common.errors import ConfigError


@dataclass
class LQRSolution:
    K: torch.Tensor  # [..., T, du, dx] feedback gains
    k: torch.Tensor  # [..., T, du] feedforward terms
    V: torch.Tensor  # [..., T+1, dx, dx] cost-to-go Hessians (V[T] is the terminal one)
    v: torch.Tensor  # [..., T+1, dx] cost-to-go gradients
    expected_improvement: torch.Tensor  # [...] Σ_t (k_tᵀ q_u + ½ k_tᵀ Q_uu k_t): the model's predicted cost change

    def control(self, t: int, x: torch.Tensor) -> torch.Tensor:
        """u_t = K_t x_t + k_t."""
        return (self.K[..., t, :, :] @ x[..., None]).squeeze(-1) + self.k[..., t, :]


def lqr_backward(
    F: torch.Tensor,
    f: torch.Tensor,
    C: torch.Tensor,
    c: torch.Tensor,
    dx: int,
    terminal_V: torch.Tensor | None = None,
    terminal_v: torch.Tensor | None = None,
    regularization: float | torch.Tensor = 0.0,
    dynamics_hessian: torch.Tensor | None = None,
) -> LQRSolution:
    """The Riccati recursion. Shapes: ``F [..., T, dx, dx+du]``, ``f [..., T, dx]``,
    ``C [..., T, dx+du, dx+du]``, ``c [..., T, dx+du]``; optional ``dynamics_hessian
    [..., T, dx, dx+du, dx+du]`` (∂²f/∂z², DDP) is contracted with v_{t+1}: Q += Σ_i v_{t+1,i} ∂²f_i/∂z².
    """
    T, dz = F.shape[-3], F.shape[-1]
    du = dz - dx
    if du < 1 or C.shape[-1] != dz or f.shape[-1] != dx:
        raise ConfigError(f"inconsistent LQR shapes: F {tuple(F.shape)}, f {tuple(f.shape)}, C {tuple(C.shape)}")
    batch = F.shape[:-3]
    dtype = F.dtype
    V = torch.zeros(*batch, dx, dx, dtype=dtype) if terminal_V is None else terminal_V.to(dtype).expand(*batch, dx, dx)
    v = torch.zeros(*batch, dx, dtype=dtype) if terminal_v is None else terminal_v.to(dtype).expand(*batch, dx)
    mu = torch.as_tensor(regularization, dtype=dtype)
    mu = mu.reshape(*mu.shape, 1, 1) if mu.dim() else mu
    eye_u = torch.eye(du, dtype=dtype)
    Ks, ks, Vs, vs = [], [], [V], [v]
    improvement = torch.zeros(batch, dtype=dtype)
    for t in reversed(range(T)):
        Ft, ft = F[..., t, :, :], f[..., t, :]
        FtT = Ft.transpose(-1, -2)
        Q = C[..., t, :, :] + FtT @ V @ Ft
        q = c[..., t, :] + (FtT @ (V @ ft[..., None] + v[..., None])).squeeze(-1)
        if dynamics_hessian is not None:
            Q = Q + torch.einsum("...i,...ijk->...jk", v, dynamics_hessian[..., t, :, :, :])
        Q = 0.5 * (Q + Q.transpose(-1, -2))
        Qxx, Qxu, Qux, Quu = Q[..., :dx, :dx], Q[..., :dx, dx:], Q[..., dx:, :dx], Q[..., dx:, dx:]
        qx, qu = q[..., :dx], q[..., dx:]
        Quu_reg = Quu + mu * eye_u
        K = -torch.linalg.solve(Quu_reg, Qux)
        k = -torch.linalg.solve(Quu_reg, qu[..., None]).squeeze(-1)
        KT = K.transpose(-1, -2)
        V = Qxx + Qxu @ K + KT @ Qux + KT @ Quu @ K
        V = 0.5 * (V + V.transpose(-1, -2))
        v = (
            qx
            + (Qxu @ k[..., None]).squeeze(-1)
            + (KT @ qu[..., None]).squeeze(-1)
            + (KT @ Quu @ k[..., None]).squeeze(-1)
        )
        improvement = improvement + (k * qu).sum(-1) + 0.5 * (k[..., None, :] @ Quu @ k[..., :, None])[..., 0, 0]
        Ks.append(K)
        ks.append(k)
        Vs.append(V)
        vs.append(v)
    stack = lambda xs, d: torch.stack(xs[::-1], dim=d)  # noqa: E731
    return LQRSolution(
        K=stack(Ks, -3), k=stack(ks, -2), V=stack(Vs, -3), v=stack(vs, -2), expected_improvement=improvement
    )


def lqr_rollout(
    solution: LQRSolution, F: torch.Tensor, f: torch.Tensor, x0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the closed-loop controller in the linear dynamics: states ``[..., T+1, dx]``, controls ``[..., T, du]``."""
    T = F.shape[-3]
    xs, us = [x0], []
    x = x0
    for t in range(T):
        u = solution.control(t, x)
        x = (F[..., t, :, :] @ torch.cat([x, u], -1)[..., None]).squeeze(-1) + f[..., t, :]
        xs.append(x)
        us.append(u)
    return torch.stack(xs, -2), torch.stack(us, -2)


def lqr(
    A: torch.Tensor,
    B: torch.Tensor,
    Q: torch.Tensor,
    R: torch.Tensor,
    horizon: int,
    terminal_Q: torch.Tensor | None = None,
) -> LQRSolution:
    """Time-invariant x' = Ax + Bu with cost ½xᵀQx + ½uᵀRu over ``horizon`` steps."""
    dx, du = A.shape[-1], B.shape[-1]
    F = torch.cat([A, B], -1).expand(horizon, dx, dx + du)
    C = torch.block_diag(Q, R).to(A.dtype).expand(horizon, dx + du, dx + du)
    zeros_f = torch.zeros(horizon, dx, dtype=A.dtype)
    zeros_c = torch.zeros(horizon, dx + du, dtype=A.dtype)
    return lqr_backward(F, zeros_f, C, zeros_c, dx, terminal_V=terminal_Q)
