r"""A batched Gaussian-process regressor in torch: the meta policy's view of the trial history.

Matérn-5/2 kernel with one lengthscale per unit-cube column (ARD),

.. math::
    k(x, x') = s^2\,(1 + \sqrt5 r + \tfrac53 r^2)\,e^{-\sqrt5 r},\qquad
    r^2 = \sum_d (x_d - x'_d)^2/\ell_d^2,

and Gaussian noise σ_n². With categoricals (one-hot columns, mask m) the kernel adds one random
effect per value of each categorical,

.. math::
    k(x, x') = k_{\text{Matérn}}(x, x') + s_c^2 \sum_g [\,c_g = c'_g\,]
             = k_{\text{Matérn}}(x, x') + s_c^2 \sum_j m_j x_j x'_j ,

i.e. :math:`f(x) = g(x) + \sum_g \beta_{g, c_g}` with :math:`\beta_{g,v} \sim \mathcal N(0, s_c^2)`:
the posterior keeps a per-choice value estimate with its own uncertainty, learned from every trial
wherever its numeric part lies, so a choice never tried keeps the prior deviation s_c and expected
improvement tries it next to the incumbent's numeric values. The Matérn part still sees the one-hot
columns (interactions between a choice and the numeric parameters), with a lengthscale prior
centred ``CAT_LS_FACTOR`` = 4 times longer than the numeric columns'. (With the Matérn term alone, a
choice's effect was only learned within a numeric lengthscale of where it had been tried, and with
the short lengthscales BBOB-like objectives fit the search stayed on its first categorical values.)
Hyperparameters maximize the log marginal likelihood
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
    log_cat: torch.Tensor | None = None  # [B] scale of the per-choice effects (None: no categoricals)
    cat_mask: torch.Tensor | None = None  # [D] 1.0 on the one-hot columns of categoricals

    def detach(self) -> "GPHyper":
        return GPHyper(
            self.log_ls.detach(),
            self.log_scale.detach(),
            self.log_noise.detach(),
            None if self.log_cat is None else self.log_cat.detach(),
            self.cat_mask,
        )


def kernel(x1: torch.Tensor, x2: torch.Tensor, h: GPHyper) -> torch.Tensor:
    r"""The covariance ``[B,n,m]``: Matérn-5/2 over every column plus, with categoricals, the
    per-choice effects :math:`s_c^2 \sum_j m_j x_j x'_j` (1 per categorical whose choice agrees)."""
    k = matern52(x1, x2, h.log_ls, h.log_scale)
    if h.log_cat is None or h.cat_mask is None:
        return k
    m = h.cat_mask.to(x1.dtype)
    return k + torch.exp(2 * h.log_cat)[:, None, None] * ((x1 * m) @ x2.transpose(1, 2))


CAT_SCALE0 = math.log(0.5)  # prior centre of the per-choice effects' scale s_c (targets have unit variance)
CAT_LS_FACTOR = math.log(4.0)  # one-hot columns' lengthscale prior centre: this factor longer


def ls_center(dim: int, cat_mask: torch.Tensor | None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Prior centre of the log lengthscales ``[dim]``: log(0.5·sqrt(D)), one-hot columns CAT_LS_FACTOR longer."""
    c = torch.full((dim,), math.log(0.5 * math.sqrt(max(dim, 1))), dtype=dtype)
    if cat_mask is not None:
        c = c + CAT_LS_FACTOR * cat_mask.to(dtype)
    return c


def default_hyper(
    batch: int, dim: int, dtype: torch.dtype = torch.float64, cat_mask: torch.Tensor | None = None
) -> GPHyper:
    has_cat = cat_mask is not None and bool(cat_mask.any())
    return GPHyper(
        ls_center(dim, cat_mask if has_cat else None, dtype).expand(batch, dim).clone(),
        torch.zeros(batch, dtype=dtype),
        torch.full((batch,), math.log(1e-2), dtype=dtype),
        torch.full((batch,), CAT_SCALE0, dtype=dtype) if has_cat else None,
        cat_mask.to(dtype) if has_cat else None,
    )


def _log_prior_terms(h: GPHyper, dim: int, dtype: torch.dtype) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The weak priors' negative log density ``[B]`` (lengthscales around 0.5·sqrt(D), signal scale around 1,
    small noise, per-choice scale around :data:`CAT_SCALE0`) and its gradient in the order of
    ``[log_ls, log_scale, log_noise(, log_cat)]``."""
    center = ls_center(dim, h.cat_mask if h.log_cat is not None else None, dtype)
    d_ls, d_noise = h.log_ls - center, (h.log_noise - math.log(1e-2)) / 2.0
    value = 0.5 * d_ls.pow(2).sum(-1) + 0.5 * h.log_scale.pow(2) + 0.5 * d_noise.pow(2)
    grads = [d_ls, h.log_scale, d_noise / 2.0]
    if h.log_cat is not None:
        value = value + 0.5 * (h.log_cat - CAT_SCALE0).pow(2)
        grads.append(h.log_cat - CAT_SCALE0)
    return value, grads


def _neg_log_marginal(x: torch.Tensor, y: torch.Tensor, h: GPHyper) -> torch.Tensor:
    """The fitted objective, summed over the batch: −log p(y | x, θ) (without the n/2·log 2π constant)
    plus the weak log-normal priors. Kept differentiable by autograd as the reference for
    :func:`_neg_log_marginal_and_grad`."""
    n, dim = x.shape[1], x.shape[2]
    k = kernel(x, x, h)
    eye = torch.eye(n, dtype=x.dtype)
    k = k + (torch.exp(2 * h.log_noise)[:, None, None] + JITTER) * eye
    chol, _ = torch.linalg.cholesky_ex(k)
    alpha = torch.cholesky_solve(y.unsqueeze(-1), chol).squeeze(-1)
    nll = 0.5 * (y * alpha).sum(-1) + torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(-1)
    return (nll + _log_prior_terms(h, dim, x.dtype)[0]).sum()


def _neg_log_marginal_and_grad(x: torch.Tensor, y: torch.Tensor, h: GPHyper) -> tuple[torch.Tensor, list[torch.Tensor]]:
    r""":func:`_neg_log_marginal` and its gradient in closed form (no autograd graph: a fit step is
    one kernel, one Cholesky factorization and a few matrix products).

    With :math:`W = K_y^{-1} - \alpha\alpha^\top` (:math:`\alpha = K_y^{-1}y`), the data term's gradient is
    :math:`\tfrac12\operatorname{tr}(W\,\partial K_y/\partial\theta)`, and

    * :math:`\partial K/\partial\log s = 2K_{\text{Matérn}}`, :math:`\partial K/\partial\log\sigma_n = 2\sigma_n^2 I`,
      :math:`\partial K/\partial\log s_c = 2 s_c^2 C`;
    * :math:`\partial K_{ij}/\partial\log\ell_d = \tfrac53 s^2 (1+\sqrt5 r_{ij}) e^{-\sqrt5 r_{ij}}\,\Delta_{ijd}^2`
      with :math:`\Delta_{ijd} = (x_{id}-x_{jd})/\ell_d`, so with :math:`P = W\circ G` (G that factor)
      :math:`\tfrac12\sum_{ij}P_{ij}\Delta_{ijd}^2 = \sum_i a_{id}^2 (P\mathbf 1)_i - \sum_i a_{id}(Pa)_{id}`, a = x/ℓ.

    Returns the loss and the gradients of ``[log_ls, log_scale, log_noise(, log_cat)]``.
    """
    n, dim = x.shape[1], x.shape[2]
    a = x * torch.exp(-h.log_ls).unsqueeze(1)  # [B,n,D]
    sq = a.pow(2).sum(-1)
    r2 = (sq.unsqueeze(-1) + sq.unsqueeze(1) - 2 * a @ a.transpose(1, 2)).clamp_min(0.0)
    r = torch.sqrt(r2 + 1e-12)
    s2 = torch.exp(2 * h.log_scale)[:, None, None]
    e = torch.exp(-SQRT5 * r)
    k_matern = s2 * (1 + SQRT5 * r + 5.0 / 3.0 * r2) * e
    k = k_matern
    k_cat = None
    if h.log_cat is not None and h.cat_mask is not None:
        m = h.cat_mask.to(x.dtype)
        k_cat = torch.exp(2 * h.log_cat)[:, None, None] * ((x * m) @ x.transpose(1, 2))
        k = k + k_cat
    noise = torch.exp(2 * h.log_noise)
    k = k + (noise[:, None, None] + JITTER) * torch.eye(n, dtype=x.dtype)
    chol, _ = torch.linalg.cholesky_ex(k)
    alpha = torch.cholesky_solve(y.unsqueeze(-1), chol).squeeze(-1)  # [B,n]
    nll = 0.5 * (y * alpha).sum(-1) + torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(-1)
    w = torch.cholesky_inverse(chol) - alpha.unsqueeze(-1) * alpha.unsqueeze(1)  # [B,n,n]
    p = w * (5.0 / 3.0) * s2 * (1 + SQRT5 * r) * e
    data_grads = [
        (a.pow(2) * p.sum(-1, keepdim=True)).sum(1) - (a * (p @ a)).sum(1),
        (w * k_matern).sum((1, 2)),
        noise * torch.diagonal(w, dim1=1, dim2=2).sum(-1),
    ]
    if h.log_cat is not None:
        data_grads.append((w * k_cat).sum((1, 2)) if k_cat is not None else torch.zeros_like(h.log_cat))
    prior, prior_grads = _log_prior_terms(h, dim, x.dtype)
    return (nll + prior).sum(), [g + q for g, q in zip(data_grads, prior_grads)]


def fit_hyper(
    x: torch.Tensor,
    y: torch.Tensor,
    init: GPHyper | None = None,
    steps: int = 12,
    lr: float = 0.1,
    max_points: int = 80,
    cat_mask: torch.Tensor | None = None,
) -> GPHyper:
    """Maximize the marginal likelihood of ``y [B,n]`` at ``x [B,n,D]`` from ``init``.

    Past ``max_points`` observations the fit uses the best half of them and an evenly spaced
    half of the rest (the posterior itself always conditions on every point), which keeps one
    fit within a few milliseconds at hundreds of trials. Adam is written out (β=(0.9, 0.999)) on the
    closed-form gradient (:func:`_neg_log_marginal_and_grad`): torch.optim's per-construction overhead
    and an autograd graph per step would dominate a 10-step fit.
    """
    B, n, D = x.shape
    h0 = init if init is not None else default_hyper(B, D, x.dtype, cat_mask)
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
    x, y = x.detach(), y.detach()
    params = [h0.log_ls.detach().clone(), h0.log_scale.detach().clone(), h0.log_noise.detach().clone()]
    lo = [math.log(1e-2), math.log(0.05), math.log(1e-4)]
    hi = [math.log(30.0), math.log(20.0), math.log(1.0)]
    if h0.log_cat is not None:
        params.append(h0.log_cat.detach().clone())
        lo.append(math.log(1e-3))
        hi.append(math.log(5.0))
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]

    def hyper(ps: list[torch.Tensor]) -> GPHyper:
        return GPHyper(ps[0], ps[1], ps[2], ps[3] if len(ps) > 3 else None, h0.cat_mask)

    with torch.no_grad():
        for step in range(1, steps + 1):
            _, grads = _neg_log_marginal_and_grad(x, y, hyper(params))
            for i, (p, g) in enumerate(zip(params, grads)):
                g = torch.nan_to_num(g)
                m[i].mul_(0.9).add_(g, alpha=0.1)
                v[i].mul_(0.999).addcmul_(g, g, value=0.001)
                p.sub_(lr * (m[i] / (1 - 0.9**step)) / ((v[i] / (1 - 0.999**step)).sqrt() + 1e-8))
                p.clamp_(lo[i], hi[i])
    return hyper(params).detach()


class GPPosterior:
    """Posterior of a zero-mean GP given ``x [B,n,D]``, ``y [B,n]`` (``mask`` 0 for padding rows)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, hyper: GPHyper):
        self.x, self.y, self.h = x, y, hyper
        n = x.shape[1]
        k = kernel(x, x, hyper)
        k = k + (torch.exp(2 * hyper.log_noise)[:, None, None] + JITTER) * torch.eye(n, dtype=x.dtype)
        self.chol, _ = torch.linalg.cholesky_ex(k)
        self.alpha = torch.cholesky_solve(y.unsqueeze(-1), self.chol).squeeze(-1)

    def predict(self, xq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of f at ``xq [B,m,D]`` -> two ``[B,m]``."""
        ks = kernel(self.x, xq, self.h)  # [B,n,m]
        mean = (ks * self.alpha.unsqueeze(-1)).sum(1)
        v = torch.linalg.solve_triangular(self.chol, ks, upper=False)  # [B,n,m]
        prior = torch.exp(2 * self.h.log_scale)[:, None]
        if self.h.log_cat is not None and self.h.cat_mask is not None:
            prior = prior + torch.exp(2 * self.h.log_cat)[:, None] * (xq.pow(2) * self.h.cat_mask).sum(-1)
        var = prior - v.pow(2).sum(1)
        return mean, var.clamp_min(1e-10).sqrt()
