r"""Local models: time-varying linear-Gaussian dynamics fitted along trajectories (notes 9/26).

A global model must be right everywhere; a controller that stays near one trajectory only needs
the dynamics near it. Around trajectories of N rollouts, fit at each time step t

.. math::
    p(x_{t+1}|x_t, u_t) = \mathcal N\big(A_t x_t + B_t u_t + c_t,\ \Sigma_t\big)

by regularized least squares over the N samples (x_{i,t}, u_{i,t}, x_{i,t+1}). With few rollouts
per step (N < dim x + dim u + 1) the per-step problem is under-determined, so the fit is a MAP
estimate under a Gaussian prior centred on the *global* linear fit pooled over all time steps
(the "prior from a global model" of guided policy search), with strength n₀ pseudo-samples:

.. math::
    W_t = \big(Y_t^\top Z_t + n_0 W_{glob}\big)\big(Z_t^\top Z_t + n_0 I\big)^{-1},\qquad
    Z_t = [x_t, u_t, 1],\ W_t = [A_t, B_t, c_t].

The result is exactly what LQR/iLQR consume (``F_t = [A_t, B_t]``, ``f_t = c_t``), so
:meth:`TimeVaryingLinearGaussian.lqr_dynamics` plugs into
:func:`core_rl.model_based.planners.lqr.lqr_backward`. All T fits are one batched solve.
"""

from __future__ import annotations

import torch

from core_rl.common.errors import ConfigError


class TimeVaryingLinearGaussian:
    """x_{t+1} ~ N(A_t x_t + B_t u_t + c_t, Σ_t), one (A_t, B_t, c_t, Σ_t) per time step."""

    def __init__(self, prior_strength: float = 1.0, ridge: float = 1e-6):
        if prior_strength < 0 or ridge < 0:
            raise ConfigError("prior_strength and ridge must be non-negative")
        self.prior_strength, self.ridge = prior_strength, ridge
        self.A: torch.Tensor | None = None
        self.B: torch.Tensor | None = None
        self.c: torch.Tensor | None = None
        self.cov: torch.Tensor | None = None

    @staticmethod
    def _design(states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        ones = torch.ones(*states.shape[:-1], 1, dtype=states.dtype)
        return torch.cat([states, actions, ones], -1)

    def fit(self, states: torch.Tensor, actions: torch.Tensor) -> "TimeVaryingLinearGaussian":
        """``states [N, T+1, dx]``, ``actions [N, T, du]`` from N rollouts."""
        states = torch.as_tensor(states, dtype=torch.float64)
        actions = torch.as_tensor(actions, dtype=torch.float64)
        if (
            states.dim() != 3
            or actions.dim() != 3
            or states.shape[1] != actions.shape[1] + 1
            or states.shape[0] != actions.shape[0]
        ):
            raise ConfigError(
                f"expected states [N, T+1, dx] and actions [N, T, du], got {tuple(states.shape)} "
                f"and {tuple(actions.shape)}"
            )
        N, dx = states.shape[0], states.shape[-1]
        du = actions.shape[-1]
        Z = self._design(states[:, :-1], actions).transpose(0, 1)  # [T, N, dz+1]
        Y = states[:, 1:].transpose(0, 1)  # [T, N, dx]
        dz1 = Z.shape[-1]
        eye = torch.eye(dz1, dtype=torch.float64)
        # the global (time-pooled) linear model: the prior mean
        Zg, Yg = Z.reshape(-1, dz1), Y.reshape(-1, dx)
        W_glob = torch.linalg.solve(Zg.T @ Zg + self.ridge * eye, Zg.T @ Yg).T  # [dx, dz+1]
        n0 = self.prior_strength
        lhs = Z.transpose(1, 2) @ Z + (n0 + self.ridge) * eye  # [T, dz+1, dz+1]
        rhs = Z.transpose(1, 2) @ Y + n0 * W_glob.T  # [T, dz+1, dx]
        W = torch.linalg.solve(lhs, rhs).transpose(1, 2)  # [T, dx, dz+1]
        self.A, self.B, self.c = W[:, :, :dx], W[:, :, dx : dx + du], W[:, :, -1]
        resid = Y - (Z @ W.transpose(1, 2))
        self.cov = (resid.transpose(1, 2) @ resid + 1e-8 * torch.eye(dx, dtype=torch.float64)) / max(N, 1)
        return self

    def _check(self) -> None:
        if self.A is None:
            raise ConfigError("fit the local model before using it")

    def mean(self, t: int, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """E[x_{t+1}|x_t, u_t] = A_t x_t + B_t u_t + c_t for batched ``x [..., dx]``, ``u [..., du]``."""
        self._check()
        return x @ self.A[t].T + u @ self.B[t].T + self.c[t]

    def sample(
        self, t: int, x: torch.Tensor, u: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        self._check()
        L = torch.linalg.cholesky(self.cov[t])
        noise = torch.randn(*x.shape, dtype=torch.float64, generator=generator)
        return self.mean(t, x, u) + noise @ L.T

    def lqr_dynamics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``F [T, dx, dx+du]`` and ``f [T, dx]`` for the LQR recursion."""
        self._check()
        return torch.cat([self.A, self.B], -1), self.c.clone()
