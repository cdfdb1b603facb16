r"""A batched Gaussian-process regressor in torch: the meta policy's view of the trial history.

Matérn-5/2 kernel with one lengthscale per unit-cube column (ARD),

.. math::
    k(x, x') = s^2\,(1 + \sqrt5 r + \tfrac53 r^2)\,e^{-\sqrt5 r},\qquad
    r^2 = \sum_d (x_d - x'_d)^2/\ell_d^2,

and Gaussian noise σ_n². Hyperparameters maximize the log marginal likelihood
:math:`-\tfrac12 y^\top K_y^{-1} y - \tfrac12\log|K_y| - \tfrac n2\log 2\pi` plus weak log-normal
priors, by a few Adam steps warm-started from the previous fit, so one fit at 200 trials costs
milliseconds. Every tensor carries a leading batch dimension B (B parallel tasks while the meta
policy trains; B = 1 in the sampler), so fitting and prediction are single batched Cholesky
factorizations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SQRT5 = math.sqrt(5.0)
JITTER = 1e-6


def matern52(x1: torch.Tensor, x2: torch.Tensor, log_ls: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """k(x1, x2) for ``x1 [B,n,D]``, ``x2 [B,m,D]``, ``log_ls [B,D]``, ``log_scale [B]`` -> ``[B,n,m]``."""
    inv = torch.exp(-log_ls).unsqueeze(1)
    a, b = x1 * inv, x2 * inv
    r2 = (a.pow(2).sum(-1, keepdim=True) + b.pow(2).sum(-1).unsqueeze(1) - 2 * a @ b.transpose(1, 2)).clamp_min(0.0)
    r = torch.sqrt(r2 + 1e-12)
    return torch.exp(2 * log_scale)[:, None, None] * (1 + SQRT5 * r + 5.0 / 3.0 * r2) * torch.exp(-SQRT5 * r)


def scaled_distance(x1: torch.Tensor, x2: torch.Tensor, log_ls: torch.Tensor) -> torch.Tensor:
    """r(x1, x2) in lengthscale units, ``[B,n,m]``."""
    inv = torch.exp(-log_ls).unsqueeze(1)
    a, b = x1 * inv, x2 * inv
    r2 = (a.pow(2).sum(-1, keepdim=True) + b.pow(2).sum(-1).unsqueeze(1) - 2 * a @ b.transpose(1, 2)).clamp_min(0.0)
    return torch.sqrt(r2 + 1e-12)


@dataclass
class GPHyper:
    log_ls: torch.Tensor  # [B, D]
    log_scale: torch.Tensor  # [B]
    log_noise: torch.Tensor  # [B]

    def detach(self) -> "GPHyper":
        return GPHyper(self.log_ls.detach(), self.log_scale.detach(), self.log_noise.detach())


def default_hyper(batch: int, dim: int, dtype: torch.dtype = torch.float64) -> GPHyper:
    ls0 = math.log(0.5 * math.sqrt(max(dim, 1)))
    return GPHyper(
        torch.full((batch, dim), ls0, dtype=dtype),
        torch.zeros(batch, dtype=dtype),
        torch.full((batch,), math.log(1e-2), dtype=dtype),
    )


def _neg_log_marginal(x: torch.Tensor, y: torch.Tensor, h: GPHyper) -> torch.Tensor:
    n, dim = x.shape[1], x.shape[2]
    k = matern52(x, x, h.log_ls, h.log_scale)
    eye = torch.eye(n, dtype=x.dtype)
    k = k + (torch.exp(2 * h.log_noise)[:, None, None] + JITTER) * eye
    chol, _ = torch.linalg.cholesky_ex(k)
    alpha = torch.cholesky_solve(y.unsqueeze(-1), chol).squeeze(-1)
    nll = 0.5 * (y * alpha).sum(-1) + torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(-1)
    # weak priors: lengthscales around 0.5·sqrt(D), signal scale around 1, small noise
    ls_center = math.log(0.5 * math.sqrt(dim))
    prior = (
        0.5 * ((h.log_ls - ls_center) / 1.0).pow(2).sum(-1)
        + 0.5 * (h.log_scale / 1.0).pow(2)
        + 0.5 * ((h.log_noise - math.log(1e-2)) / 2.0).pow(2)
    )
    return (nll + prior).sum()


def fit_hyper(
    x: torch.Tensor,
    y: torch.Tensor,
    init: GPHyper | None = None,
    steps: int = 12,
    lr: float = 0.1,
    max_points: int = 80,
) -> GPHyper:
    """Maximize the marginal likelihood of ``y [B,n]`` at ``x [B,n,D]`` from ``init``.

    Past ``max_points`` observations the fit uses the best half of them and an evenly spaced
    half of the rest (the posterior itself always conditions on every point), which keeps one
    fit within a few milliseconds at hundreds of trials. Adam is written out (β=(0.9, 0.999)):
    torch.optim's per-construction overhead would dominate a 10-step fit.
    """
    B, n, D = x.shape
    h0 = init if init is not None else default_hyper(B, D, x.dtype)
    if n < 2 or steps <= 0:
        return h0.detach()
    if n > max_points:
        order = y.argsort(dim=1, descending=True)
        half = max_points // 2
        rest = order[:, half:]
        pick = torch.linspace(0, rest.shape[1] - 1, max_points - half).round().long()
        idx = torch.cat([order[:, :half], rest[:, pick]], 1)
        x = x.gather(1, idx.unsqueeze(-1).expand(B, max_points, D))
        y = y.gather(1, idx)
    params = [
        h0.log_ls.detach().clone().requires_grad_(True),
        h0.log_scale.detach().clone().requires_grad_(True),
        h0.log_noise.detach().clone().requires_grad_(True),
    ]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    lo = [math.log(1e-2), math.log(0.05), math.log(1e-4)]
    hi = [math.log(30.0), math.log(20.0), math.log(1.0)]
    for step in range(1, steps + 1):
        loss = _neg_log_marginal(x, y, GPHyper(*params))
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(params, grads)):
                g = torch.nan_to_num(g)
                m[i].mul_(0.9).add_(g, alpha=0.1)
                v[i].mul_(0.999).addcmul_(g, g, value=0.001)
                p.sub_(lr * (m[i] / (1 - 0.9**step)) / ((v[i] / (1 - 0.999**step)).sqrt() + 1e-8))
                p.clamp_(lo[i], hi[i])
    return GPHyper(*params).detach()


class GPPosterior:
    """Posterior of a zero-mean GP given ``x [B,n,D]``, ``y [B,n]`` (``mask`` 0 for padding rows)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, hyper: GPHyper):
        self.x, self.y, self.h = x, y, hyper
        n = x.shape[1]
        k = matern52(x, x, hyper.log_ls, hyper.log_scale)
        k = k + (torch.exp(2 * hyper.log_noise)[:, None, None] + JITTER) * torch.eye(n, dtype=x.dtype)
        self.chol, _ = torch.linalg.cholesky_ex(k)
        self.alpha = torch.cholesky_solve(y.unsqueeze(-1), self.chol).squeeze(-1)

    def predict(self, xq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of f at ``xq [B,m,D]`` -> two ``[B,m]``."""
        ks = matern52(self.x, xq, self.h.log_ls, self.h.log_scale)  # [B,n,m]
        mean = (ks * self.alpha.unsqueeze(-1)).sum(1)
        v = torch.linalg.solve_triangular(self.chol, ks, upper=False)  # [B,n,m]
        var = torch.exp(2 * self.h.log_scale)[:, None] - v.pow(2).sum(1)
        return mean, var.clamp_min(1e-10).sqrt()
