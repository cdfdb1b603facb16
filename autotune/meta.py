r"""The meta-learned sequential policy (learning to optimize, Hyp-RL / MetaBO style).

At every trial the policy reads the whole trial history and proposes the next configuration. It
is an attention policy over a set of M candidate configurations c_1..c_M (global uniform points
and local perturbations of the best trials, snapped to representable values):

* each candidate *attends over the trial history*: for history point i (observed or still running)
  a pair embedding :math:`e_{ci} = \mathrm{MLP}(r_{ci}, \tilde y_i, \tilde y_i - \tilde y^*, \mathrm{pending}_i)`
  of the candidate's lengthscale-scaled distance r_{ci} and the point's result gives attention
  weights :math:`a_{ci} = \mathrm{softmax}_i(w^\top e_{ci})` and the read-out
  :math:`h_c = \sum_i a_{ci} V e_{ci}`;
* per-candidate features from a Gaussian process fitted to the history (posterior mean μ_c and
  deviation σ_c, :math:`z_c = (\mu_c - \tilde y^*)/\sigma_c`, log expected improvement, distances to
  the data and to the incumbent, the spent budget fraction t/T) join h_c in a scoring MLP;
* the policy is a categorical over candidates,

.. math::
    \pi_\theta(c \mid \mathcal H_t) = \mathrm{softmax}_c\big(\beta\,\overline{\log\mathrm{EI}}_c
        + f_\theta(\text{features}_c, h_c)\big),

with :math:`\overline{\log\mathrm{EI}}` the candidates' standardized log EI, so the untrained
policy (f ≈ 0) is expected-improvement search and RL learns how to deviate from it.

Results are made scale-free before anything sees them: scores (sign·value, higher is better) are
standardized and warped by a Yeo-Johnson power transform fitted by maximum likelihood
(:func:`yeo_johnson`; ``target="copula"``: the Gaussian copula of the ranks,
:math:`\tilde y_i = \Phi^{-1}((\mathrm{rank}_i + \tfrac12)/n)`); failed and pruned trials score one
spread below the worst, running trials enter the GP at their posterior mean (kriging believer), so
parallel workers spread out. The policy is trained by RL across synthetic tasks
(:mod:`autotune.pretrain`); :class:`MetaSampler` wraps it as an Optuna sampler.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F

from autotune.gp import GPHyper, GPPosterior, fit_hyper, scaled_distance
from autotune.history import History, check_single_objective, read_history
from autotune.space import ParamCodec, SpaceCodec, group_decomposition
from core_rl.common.config import parse_config
from core_rl.common.distributions import Categorical
from core_rl.common.errors import CheckpointError
from core_rl.common.networks import mlp

N_CAND_FEATURES = 8
N_PAIR_FEATURES = 4
FEATURE_VERSION = 1
DTYPE = torch.float64
NEG = -1e9
MAX_TOKENS = 32


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread: these ops are small, and extra threads only contend for cores."""
    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            torch.set_num_threads(before)


# ---- scale-free targets -----------------------------------------------------------------------
def copula(scores: torch.Tensor) -> torch.Tensor:
    """Φ^{-1}((rank + ½)/n) per row of ``scores [B,n]`` (ties share their mean rank)."""
    n = scores.shape[-1]
    less = (scores.unsqueeze(-1) > scores.unsqueeze(-2)).sum(-1).to(DTYPE)
    equal = (scores.unsqueeze(-1) == scores.unsqueeze(-2)).sum(-1).to(DTYPE)
    rank = less + 0.5 * (equal - 1)
    q = (rank + 0.5) / n
    return math.sqrt(2) * torch.erfinv(2 * q - 1)


def _yeo_johnson_psi(z: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """ψ(λ, z) elementwise (``lam`` broadcasts against ``z``)."""
    pos = z >= 0
    a = torch.log1p(z.abs())  # log(|z| + 1)
    lam_p = torch.where(lam.abs() < 1e-8, torch.ones_like(lam), lam)
    lam_n = torch.where((2 - lam).abs() < 1e-8, torch.ones_like(lam), 2 - lam)
    up = torch.where(lam.abs() < 1e-8, a, torch.expm1(lam_p * a) / lam_p)
    down = -torch.where((2 - lam).abs() < 1e-8, a, torch.expm1(lam_n * a) / lam_n)
    return torch.where(pos, up, down)


def yeo_johnson(scores: torch.Tensor, lam_range: tuple[float, float] = (-4.0, 6.0)) -> torch.Tensor:
    r"""Yeo-Johnson power transform per row of ``scores [B,n]``, λ fitted by maximum likelihood, standardized.

    Each row is standardized, :math:`z = (s - \bar s)/\mathrm{sd}(s)`, then mapped by

    .. math::
        \psi(\lambda, z) = \begin{cases} ((z+1)^\lambda - 1)/\lambda & z \ge 0,\ \lambda \ne 0 \\
            \log(z+1) & z \ge 0,\ \lambda = 0 \\
            -((1-z)^{2-\lambda} - 1)/(2-\lambda) & z < 0,\ \lambda \ne 2 \\
            -\log(1-z) & z < 0,\ \lambda = 2 \end{cases}

    with λ maximizing the Gaussian profile log-likelihood
    :math:`\ell(\lambda) = -\tfrac n2 \log \hat\sigma^2_\psi(\lambda) + (\lambda - 1)\sum_i \mathrm{sign}(z_i)\log(|z_i| + 1)`
    (Yeo & Johnson 2000; HEBO's output warping), found batched on a grid over ``lam_range`` and refined
    on a finer grid around the best point; the result is standardized again. Unlike the rank (copula)
    target it keeps the *distances* between values: near-equal values near the optimum stay near-equal
    targets instead of being spread apart as ranks, which a GP would read as noise.

    A row whose spread is rounding (sd ≤ 1e-12 of its largest magnitude: every trial of a branch scoring the same
    cross-validated error, say) has nothing to rank and maps to zeros. Dividing its rounding residue by that sd
    would give |z| up to 1e282, whose powers overflow to NaN targets, and the sampler would raise on every trial.

    >>> yeo_johnson(torch.full((1, 98), -0.02634363686995267, dtype=torch.float64)).abs().max().item()
    0.0
    """
    z = scores - scores.mean(-1, keepdim=True)
    sd = z.std(-1, correction=0, keepdim=True)
    flat = sd <= 1e-12 * scores.abs().amax(-1, keepdim=True).clamp_min(1e-300)
    z = torch.where(flat, torch.zeros_like(z), z / sd.clamp_min(1e-300))
    n = scores.shape[-1]
    log_jac = (torch.sign(z) * torch.log1p(z.abs())).sum(-1, keepdim=True)  # [B,1]

    def loglik(lam: torch.Tensor) -> torch.Tensor:  # lam [B,L] -> [B,L]
        psi = _yeo_johnson_psi(z.unsqueeze(-1), lam.unsqueeze(-2))  # [B,n,L]
        var = psi.var(-2, correction=0).clamp_min(1e-300)
        return -0.5 * n * torch.log(var) + (lam - 1) * log_jac

    lo, hi = lam_range
    coarse = torch.linspace(lo, hi, 41, dtype=scores.dtype).expand(*scores.shape[:-1], 41)
    best = coarse.gather(-1, loglik(coarse).argmax(-1, keepdim=True))
    step = (hi - lo) / 40
    fine = (best + torch.linspace(-step, step, 41, dtype=scores.dtype)).clamp(lo, hi)
    lam = fine.gather(-1, loglik(fine).argmax(-1, keepdim=True))  # [B,1]
    y = _yeo_johnson_psi(z, lam)
    y = y - y.mean(-1, keepdim=True)
    return y / y.std(-1, correction=0, keepdim=True).clamp_min(1e-12)


TARGETS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"yeo_johnson": yeo_johnson, "copula": copula}


def score_target(scores: torch.Tensor, target: str) -> torch.Tensor:
    """The GP's and the policy's targets ``[B,n]`` from scores (higher is better): :data:`TARGETS`."""
    return TARGETS[target](scores)


def log_expected_improvement(z: torch.Tensor) -> torch.Tensor:
    """log(zΦ(z) + φ(z)), stable for very negative z (EI = σ · that)."""
    normal = torch.distributions.Normal(torch.zeros((), dtype=z.dtype), torch.ones((), dtype=z.dtype))
    direct = torch.log((z * normal.cdf(z) + torch.exp(normal.log_prob(z))).clamp_min(1e-300))
    zc = z.clamp(max=-1.0)
    tail = normal.log_prob(zc) - 2 * torch.log(-zc) + torch.log1p(-3 / zc.pow(2)).clamp_min(-5)
    return torch.where(z > -6, direct, tail)


# ---- candidates ---------------------------------------------------------------------------------
@dataclass
class Layout:
    """Which unit-cube columns are one-hot groups (categoricals); the rest are numeric.

    ``fixed`` (``[dim]``, NaN where free) pins columns to given values in every candidate: the
    context a conditional group is sampled in (the parameters the trial has already taken).
    ``active`` (points ``[..., dim]`` -> bool ``[..., dim]``) says which columns a point of a
    conditional space uses, so local moves perturb only the parent's active parameters.
    """

    dim: int
    cat_groups: list[tuple[int, int]]
    fixed: torch.Tensor | None = None
    active: Callable[[torch.Tensor], torch.Tensor] | None = None
    levels: torch.Tensor | None = None  # [dim] SpaceCodec.grid_levels (0: continuous; None: all continuous)

    def trust_half_width(self, length: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """``[B,1,dim]`` half-sides of the trust-region box for side ``length`` [B]: L/2 (times ``weights``
        ``[B,1,dim]`` per column when given: :func:`trust_region_weights`), but at least two grid cells on a
        grid column (a box narrower than that would pin a coarse grid to the incumbent); entries of
        categorical columns are never read (the box bounds numeric columns only)."""
        half = length.to(DTYPE)[:, None, None] / 2 * torch.ones(self.dim, dtype=DTYPE)
        if weights is not None:
            half = half * weights
        if self.levels is None:
            return half
        k = self.levels.to(DTYPE)
        return torch.where(k > 0, torch.maximum(half, 2.0 / k.clamp_min(1.0)), half)

    @property
    def categorical(self) -> torch.Tensor:
        """``[dim]`` 1.0 on the one-hot columns of categoricals."""
        mask = torch.zeros(self.dim, dtype=DTYPE)
        for s, w in self.cat_groups:
            mask[s : s + w] = 1.0
        return mask

    @property
    def numeric(self) -> torch.Tensor:
        mask = torch.ones(self.dim, dtype=torch.bool)
        for s, w in self.cat_groups:
            mask[s : s + w] = False
        if self.fixed is not None:
            mask &= torch.isnan(self.fixed)
        return mask

    def pin(self, c: torch.Tensor) -> torch.Tensor:
        """``c`` with the fixed columns set to their values."""
        if self.fixed is None:
            return c
        return torch.where(torch.isnan(self.fixed), c, self.fixed.to(c.dtype))


def trust_region_length(
    scores: torch.Tensor,
    n_numeric: int,
    n_startup: int,
    length_init: float = 0.4,
    length_min: float = 0.5**7,
    length_max: float = 1.6,
    success_tolerance: int = 3,
    length_floor: float = 0.0,
    restart_global: bool = False,
) -> torch.Tensor:
    r"""TuRBO's trust-region side length ``L`` [B], replayed from the scores in trial order.

    After the ``n_startup`` random trials every trial is a success if it improves the best score by
    more than :math:`10^{-3}\,|y^*|` and a failure otherwise; ``success_tolerance`` successes in a row
    double ``L`` (up to ``length_max``), :math:`\tau_f = \max(4, \lceil d/2 \rceil)` failures in a row
    halve it, and a length below ``length_min`` restarts at ``length_init`` (Eriksson et al. 2019, whose
    defaults are L₀ = 0.8 and τ_f = max(4, d) for thousands of evaluations; the shorter start and patience
    measured better at 50 trials, docs/autotune.md). Replaying the history keeps the sampler stateless
    across workers.

    ``length_floor`` (:func:`trust_region_floor`): the box has also collapsed once ``L`` is below it, where
    halving it narrows no column any more. ``restart_global``: a collapsed box restarts at ``length_max`` (the
    whole cube, as TuRBO's fresh design after a collapse) instead of ``length_init`` around the same incumbent.
    """
    B, n = scores.shape
    fail_tol = max(4, math.ceil(n_numeric / 2))
    out = torch.empty(B, dtype=DTYPE)
    for b in range(B):  # a sampler decides one task (B = 1); a scalar recursion over at most n trials
        y = scores[b].tolist()
        length, succ, fail = length_init, 0, 0
        best = max(y[:n_startup]) if n_startup > 0 and n > 0 else -math.inf
        for v in y[n_startup:]:
            if v > best + 1e-3 * abs(best):
                succ, fail = succ + 1, 0
            else:
                succ, fail = 0, fail + 1
            best = max(best, v)
            if succ == success_tolerance:
                length, succ = min(2.0 * length, length_max), 0
            elif fail == fail_tol:
                length, fail = length / 2.0, 0
            if length < max(length_min, length_floor):
                length = length_max if restart_global else length_init
        out[b] = length
    return out


def trust_region_floor(layout: Layout) -> float:
    """The side below which halving the trust region narrows no numeric column: every numeric column is a
    grid kept at two cells either side (:meth:`Layout.trust_half_width`); 0 if any is continuous."""
    if layout.levels is None:
        return 0.0
    k = layout.levels[layout.numeric].to(DTYPE)
    if k.numel() == 0 or bool((k <= 0).any()):
        return 0.0
    return float((4.0 / k.clamp_min(1.0)).min())


def trust_region_weights(log_ls: torch.Tensor, numeric: torch.Tensor, ratio_max: float = 8.0) -> torch.Tensor:
    r"""TuRBO's per-column stretch of the trust region from the GP's ARD lengthscales ``log_ls`` [B, D]:
    :math:`w_i = \ell_i / (\prod_j \ell_j)^{1/d}` over the ``numeric`` columns (a box of the same volume,
    longer where the objective changes slowly), clipped to ``[1/ratio_max, ratio_max]``; 1 elsewhere.
    Returns ``[B,1,D]``."""
    num = numeric.to(DTYPE)
    n = num.sum().clamp_min(1.0)
    log_ls = log_ls.to(DTYPE)
    centred = (log_ls - (log_ls * num).sum(-1, keepdim=True) / n) * num
    bound = math.log(ratio_max)
    return centred.clamp(-bound, bound).exp()[:, None, :]


def make_candidates(
    x: torch.Tensor,
    y: torch.Tensor,
    n_cand: int,
    layout: Layout,
    gen: torch.Generator,
    snap: Callable[[torch.Tensor], torch.Tensor],
    tr_length: torch.Tensor | None = None,
    tr_weights: torch.Tensor | None = None,
    spread_ties: bool = False,
) -> torch.Tensor:
    """``n_cand`` snapped candidates per task: a quarter uniform, the rest perturbations of the top trials.

    With ``tr_length`` [B] (a trust region, :func:`trust_region_length`) the uniform quarter is drawn in
    the box of that side around the best trial instead of the whole cube (the numeric columns the best
    trial uses; :meth:`Layout.trust_half_width`), and the numeric perturbations' scales are multiplied by
    the box's side; ``tr_weights`` ``[B,1,D]`` stretch the box per column (:func:`trust_region_weights`).

    ``spread_ties``: when several trials share the best score (a plateau, e.g. an error count), the box's
    centre and the perturbed top trials are drawn uniformly among them each time instead of always the first
    one found; without ties nothing changes (not even the random stream).
    """
    B, n, D = x.shape
    n_loc = (3 * n_cand) // 4 if n > 0 else 0
    n_glob = n_cand - n_loc
    glob = torch.rand(B, n_glob, D, generator=gen, dtype=DTYPE)
    order = y  # the trials' order of preference: the centre is its first, the perturbed parents its top k
    if spread_ties and n > 1:
        tied = y >= y.max(1, keepdim=True).values  # [B,n]: the trials at the best score
        if bool((tied.sum(1) > 1).any()):
            rank = y.argsort(1).argsort(1).to(DTYPE)  # 0 .. n-1; the tied best come first, in random order
            order = torch.where(tied, n + torch.rand(B, n, generator=gen, dtype=DTYPE), rank)
    if tr_length is not None and n > 0:
        centre = x.gather(1, order.argmax(1)[:, None, None].expand(B, 1, D))  # [B,1,D]
        half = layout.trust_half_width(tr_length, tr_weights)
        lo, hi = (centre - half).clamp(0.0, 1.0), (centre + half).clamp(0.0, 1.0)
        boxed = layout.numeric.to(DTYPE).expand(B, 1, D)
        if layout.active is not None:  # a parameter the best trial does not use stays free: another branch's
            boxed = boxed * layout.active(centre).to(DTYPE)  # parameters are not boxed around an imputed value
        glob = torch.where(boxed > 0, lo + (hi - lo) * glob, glob)
    for s, w in layout.cat_groups:
        glob[..., s : s + w] = nn.functional.one_hot(torch.randint(0, w, (B, n_glob), generator=gen), w).to(DTYPE)
    parts = [glob]
    if n_loc:
        k = min(5, n)
        top = order.topk(k, dim=1).indices  # [B,k]
        weights = torch.linspace(1.0, 0.3, k, dtype=DTYPE).expand(B, k)
        pick = torch.multinomial(weights, n_loc, replacement=True, generator=gen)
        parent = x.gather(1, top.gather(1, pick).unsqueeze(-1).expand(B, n_loc, D))
        scales = torch.tensor([0.01, 0.03, 0.1, 0.3], dtype=DTYPE)
        flip_scale = scale = scales[torch.randint(0, 4, (B, n_loc, 1), generator=gen)]
        if tr_length is not None:  # the trust region bounds the numeric steps, not how often a choice flips
            scale = scale * 2 * layout.trust_half_width(tr_length, tr_weights)
        numeric = layout.numeric.to(DTYPE).expand(B, n_loc, D)
        if layout.active is not None:  # only the parameters the parent uses
            used = numeric * layout.active(parent).to(DTYPE)
            numeric = torch.where(used.sum(-1, keepdim=True) > 0, used, numeric)
        n_num = numeric.sum(-1, keepdim=True).clamp_min(1.0)
        p_dim = (3.0 / n_num).clamp(max=1.0)
        move = (torch.rand(B, n_loc, D, generator=gen, dtype=DTYPE) < p_dim).to(DTYPE) * numeric
        # every local candidate moves at least one numeric column
        if numeric.sum() > 0:
            weights = numeric.reshape(B * n_loc, D) + 1e-12
            forced = torch.multinomial(weights, 1, generator=gen).view(B, n_loc)
            move = torch.maximum(move, nn.functional.one_hot(forced, D).to(DTYPE) * numeric)
        loc = (parent + torch.randn(B, n_loc, D, generator=gen, dtype=DTYPE) * scale * move).clamp(0.0, 1.0)
        for s, w in layout.cat_groups:
            flip = torch.rand(B, n_loc, 1, generator=gen, dtype=DTYPE) < (2 * flip_scale).clamp(max=0.6)
            new = nn.functional.one_hot(torch.randint(0, w, (B, n_loc), generator=gen), w).to(DTYPE)
            loc[..., s : s + w] = torch.where(flip, new, loc[..., s : s + w])
        parts.append(loc)
    return snap(layout.pin(torch.cat(parts, 1)))


def sweep_categoricals(x: torch.Tensor, scores: torch.Tensor, k: int, layout: Layout) -> torch.Tensor:
    """``[B, k·Σ(w−1), D]``: each of the ``k`` best trials with one free categorical set to another value."""
    B, n, D = x.shape
    if B != 1:  # the sampler decides one task at a time; batched pretraining does not sweep
        return x[:, :0]
    parents = x.gather(1, scores.topk(min(k, n), dim=1).indices.unsqueeze(-1).expand(B, min(k, n), D))
    out = []
    for s, w in layout.cat_groups:
        if layout.fixed is not None and not torch.isnan(layout.fixed[s]):
            continue  # a pinned context column
        for j in range(w):
            c = parents.clone()
            c[..., s : s + w] = 0.0
            c[..., s + j] = 1.0
            keep = parents[..., s + j] < 0.5  # only a change of value
            out.append(torch.where(keep.unsqueeze(-1), c, torch.full_like(c, math.nan)))
    if not out:
        return x[:, :0]
    cand = torch.cat(out, 1)
    return cand[:, ~torch.isnan(cand[0, :, 0])]


def sweep_bounds(
    x: torch.Tensor,
    scores: torch.Tensor,
    k: int,
    layout: Layout,
    snap: Callable[[torch.Tensor], torch.Tensor],
    grid_only: bool = False,
) -> torch.Tensor:
    """``[B, ≤ 2k·d, D]``: each of the ``k`` best trials with one numeric parameter moved to its lower or its
    upper bound (snapped; only moves that change the configuration, and on a conditional space only the
    parameters the trial uses). Hyperparameter optima often sit on a bound (the fewest trees, the smallest
    leaf, the deepest tree), where perturbations of the incumbents land only by chance; these candidates put
    every bound next to the incumbents in front of the policy, which scores them like any other."""
    B, n, D = x.shape
    numeric = layout.numeric
    if grid_only:  # only the grid columns (``Layout.levels`` > 0): integers and stepped floats
        numeric = numeric & (layout.levels > 0) if layout.levels is not None else torch.zeros_like(numeric)
    cols = numeric.nonzero().flatten()
    if B != 1 or n == 0 or len(cols) == 0:  # the sampler decides one task at a time; pretraining does not sweep
        return x[:, :0]
    k = min(k, n)
    parents = x[0].gather(0, scores[0].topk(k).indices[:, None].expand(k, D))  # [k,D]
    m = len(cols)
    cand = parents[:, None, None, :].expand(k, m, 2, D).clone()  # [k, column, (lower, upper), D]
    ar = torch.arange(m)
    cand[:, ar, 0, cols] = 0.0
    cand[:, ar, 1, cols] = 1.0
    cand = snap(layout.pin(cand.reshape(1, k * m * 2, D)))[0].view(k, m, 2, D)
    keep = (cand != parents[:, None, None, :]).any(-1)  # [k,m,2]: the bound changes the configuration
    if layout.active is not None:
        keep &= layout.active(parents)[:, cols][:, :, None]
    return cand[keep][None]


def quadratic_candidates(
    x: torch.Tensor,
    scores: torch.Tensor,
    n_cand: int,
    layout: Layout,
    gen: torch.Generator,
    snap: Callable[[torch.Tensor], torch.Tensor],
    fallback: Literal["none", "diagonal", "subspace"] = "none",
    log_ls: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""``[B, n_cand, D]`` candidates from a local quadratic model of the raw scores (none while the history is
    too short to fit one: ``[B, 0, D]``).

    Over the numeric columns, in coordinates :math:`u = (x - x^*)/\sigma` centred at the best trial
    :math:`x^*` and scaled by the spread σ of the :math:`k = \min(n, 2p)` best trials
    (:math:`p = 1 + d + d(d+1)/2` coefficients), a least-squares fit (minimum-norm where degenerate)
    :math:`s(u) \approx c + g^\top u + \tfrac12 u^\top H u` gives Newton's step to the model's maximum,
    :math:`u_N = -H^{-1} g = V |\Lambda|^{-1} V^\top g` with :math:`H = V \Lambda V^\top` (eigenvalues taken by
    magnitude, so a saddle or a convex direction still steps uphill; floored at :math:`10^{-6}\max|\lambda|`).
    The candidates are :math:`u = a\,u_N + \epsilon \sqrt{2G/d}\, V |\Lambda|^{-1/2} z` with a step fraction
    :math:`a \in \{0.25, 0.5, 1, 1.5\}`, :math:`z \sim \mathcal N(0, I)`, :math:`\epsilon \in \{0, 0.1, 0.3\}` and
    the model's gain :math:`G = \tfrac12 g^\top |H|^{-1} g` (the noise costs about ε²G by the model): points along
    the model's valley, spread where the model is flat. A rotated, ill-conditioned valley (BBOB's
    f10) is what the trust region's axis-aligned perturbations cannot follow and this model can. Categorical and
    pinned columns keep the best trial's values; the numeric step is capped at twice the k trials' extent. On a
    space with both grid (integer, stepped) and continuous numeric columns, every other candidate then takes
    the model's maximum over the continuous columns given its snapped grid values,
    :math:`u_c = -H_{cc}^{-1}(g_c + H_{cg} u_g)` (eigenvalues by magnitude again): rounding the joint step
    moves a rotated valley's floor, and the continuous columns follow it.

    While the history is too short for the full model, ``fallback`` "diagonal" fits a separable one (1 + 2d
    coefficients, no cross terms) and "subspace" (one task, ``log_ls`` [1, D] given) the full model over the m
    numeric columns with the shortest GP lengthscales, the largest m whose model the history can fit, the other
    columns kept at the best trial's values.
    """
    B, n, D = x.shape
    numeric = layout.numeric
    d = int(numeric.sum())
    if d == 0 or n_cand <= 0 or layout.active is not None:
        return x[:, :0]

    def n_full(j: int) -> int:  # coefficients of the full quadratic in j columns
        return 1 + j + j * (j + 1) // 2

    n_coef, separable = n_full(d), False
    if n < int(1.5 * n_coef) and fallback == "diagonal":  # no cross terms
        n_coef, separable = 1 + 2 * d, d > 1
    elif n < int(1.5 * n_coef) and fallback == "subspace" and log_ls is not None and B == 1:
        m = max((j for j in range(2, d) if 1.5 * n_full(j) <= n), default=0)
        if m:
            cols = numeric.nonzero().squeeze(-1)
            numeric = torch.zeros_like(numeric)
            numeric[cols[log_ls[0, cols].argsort()[:m]]] = True
            d, n_coef = m, n_full(m)
    if n < int(1.5 * n_coef):
        return x[:, :0]
    k = min(n, 2 * n_coef)
    top = scores.topk(k, dim=1).indices  # [B,k]
    xs = x.gather(1, top.unsqueeze(-1).expand(B, k, D))[..., numeric]  # [B,k,d]
    ys = scores.to(DTYPE).gather(1, top)  # [B,k]
    centre = xs[:, :1]  # the best trial [B,1,d]
    sigma = xs.std(1, keepdim=True).clamp_min(1e-9)  # [B,1,d]
    u = (xs - centre) / sigma
    iu, ju = (torch.arange(d), torch.arange(d)) if separable else torch.triu_indices(d, d)
    feats = torch.cat([torch.ones(B, k, 1, dtype=DTYPE), u, u[..., iu] * u[..., ju]], -1)  # [B,k,p]
    y_scale = ys.std(1, keepdim=True).clamp_min(1e-12)
    yc = (ys - ys[:, :1]) / y_scale
    coef = torch.linalg.lstsq(feats, yc.unsqueeze(-1), driver="gelsd").solution.squeeze(-1)  # [B,p]
    g = coef[:, 1 : 1 + d]
    h = coef[:, 1 + d :]
    hess = torch.zeros(B, d, d, dtype=DTYPE)
    hess[:, iu, ju] = h
    hess = hess + hess.mT  # off-diagonal h_ij once each way, the diagonal 2 h_ii: ∂²s/∂u²
    mag, vec = _abs_eigh(hess)  # [B,d], [B,d,d]
    g_eig = (g.unsqueeze(-2) @ vec).squeeze(-2)  # g in the eigenbasis, Vᵀg [B,d]
    newton = ((g_eig / mag).unsqueeze(-2) @ vec.mT).squeeze(-2)  # V|Λ|⁻¹Vᵀg [B,d]
    fracs = torch.tensor([0.25, 0.5, 1.0, 1.5], dtype=DTYPE)
    noise = torch.tensor([0.0, 0.1, 0.3], dtype=DTYPE)
    a = fracs[torch.randint(0, len(fracs), (B, n_cand, 1), generator=gen)]
    eps = noise[torch.randint(0, len(noise), (B, n_cand, 1), generator=gen)]
    eps[:, 0] = 0.0  # the first candidate is the model's own step (a as drawn)
    z = torch.randn(B, n_cand, d, generator=gen, dtype=DTYPE)
    gain = 0.5 * (g_eig.pow(2) / mag).sum(-1)  # the model's ½ gᵀ|H|⁻¹g [B]
    spread = (z / mag.sqrt()[:, None, :]) @ vec.mT * (2 * gain / d).sqrt()[:, None, None]
    step = (a * newton[:, None, :] + eps * spread) * sigma
    extent = 2 * (xs.amax(1, keepdim=True) - xs.amin(1, keepdim=True)).clamp_min(1e-9)
    step = step.clamp(-extent, extent)
    out = x.gather(1, top[:, :1, None].expand(B, 1, D)).expand(B, n_cand, D).clone()
    out[..., numeric] = (centre + step).clamp(0.0, 1.0)
    out = snap(layout.pin(out))
    grid = (layout.levels[numeric] > 0) if layout.levels is not None else torch.zeros(d, dtype=torch.bool)
    if grid.any() and not grid.all():  # every other candidate: the continuous columns' best given its grid values
        u_g = (out[..., numeric][..., grid] - centre[..., grid]) / sigma[..., grid]  # [B,n_cand,d_g]
        u_c = _conditional_newton(g, hess, grid, u_g)
        c = ~grid
        cont = (centre[..., c] + (u_c * sigma[..., c]).clamp(-extent[..., c], extent[..., c])).clamp(0.0, 1.0)
        out[:, 1::2, numeric.nonzero().squeeze(-1)[c]] = cont[:, 1::2]
        out = snap(layout.pin(out))
    return out


def _abs_eigh(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``|λ|`` (floored at 10⁻⁶ of the largest) and ``V`` of the symmetric ``h [B,d,d]``."""
    lam, vec = torch.linalg.eigh(h)
    return lam.abs().clamp_min(1e-6 * lam.abs().amax(-1, keepdim=True).clamp_min(1e-12)), vec


def _conditional_newton(g: torch.Tensor, hess: torch.Tensor, grid: torch.Tensor, u_g: torch.Tensor) -> torch.Tensor:
    r"""Newton's step over the non-``grid`` coordinates of :math:`s(u) = g^\top u + \tfrac12 u^\top H u` with the
    ``grid`` ones held at ``u_g [B,N,d_g]``: :math:`u_c = V|\Lambda|^{-1}V^\top (g_c + H_{cg} u_g)` for
    :math:`H_{cc} = V\Lambda V^\top`. Returns ``[B,N,d_c]``."""
    c = ~grid
    grad_c = g[:, None, c] + u_g @ hess[:, c][..., grid].mT  # ∂s/∂u_c at u_c = 0
    mag_c, vec_c = _abs_eigh(hess[:, c][..., c])
    return ((grad_c @ vec_c) / mag_c[:, None, :]) @ vec_c.mT


def refine_candidates(
    cand: torch.Tensor,
    logits: torch.Tensor,
    n: int,
    layout: Layout,
    gen: torch.Generator,
    snap: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``n`` small perturbations (numeric columns only) of the 8 candidates the policy scored best."""
    B, M, D = cand.shape
    k = min(8, M)
    top = logits.topk(k, dim=1).indices  # [B,k]
    pick = top.gather(1, torch.randint(0, k, (B, n), generator=gen))
    parent = cand.gather(1, pick.unsqueeze(-1).expand(B, n, D))
    scales = torch.tensor([0.003, 0.01, 0.03], dtype=DTYPE)
    scale = scales[torch.randint(0, 3, (B, n, 1), generator=gen)]
    numeric = layout.numeric.to(DTYPE)
    n_num = int(numeric.sum())
    if n_num == 0:
        return cand[:, :0]
    move = (torch.rand(B, n, D, generator=gen, dtype=DTYPE) < min(1.0, 3.0 / n_num)).to(DTYPE) * numeric
    forced = torch.multinomial(numeric.expand(B * n, D), 1, generator=gen).view(B, n)
    move = torch.maximum(move, nn.functional.one_hot(forced, D).to(DTYPE))
    out = (parent + torch.randn(B, n, D, generator=gen, dtype=DTYPE) * scale * move).clamp(0.0, 1.0)
    return snap(layout.pin(out))


def unseen_candidates(cand: torch.Tensor, seen: torch.Tensor, decimals: int = 9) -> torch.Tensor:
    """``[M]`` mask of the candidates ``cand`` ``[M,D]`` that equal no row of ``seen`` ``[n,D]`` (rounded to
    ``decimals`` in every column; rows compared as bytes, in O((M + n)·D)).

    >>> unseen_candidates(torch.tensor([[0.0, 1.0], [0.5, 0.5]]), torch.tensor([[0.5, 0.5]])).tolist()
    [True, False]
    """
    if seen.shape[0] == 0 or cand.shape[1] == 0:
        return torch.ones(cand.shape[0], dtype=torch.bool)

    def rows(t: torch.Tensor) -> np.ndarray:
        a = np.ascontiguousarray(np.round(t.detach().numpy().astype(np.float64), decimals) + 0.0)  # -0.0 → 0.0
        return a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).ravel()

    return torch.from_numpy(~np.isin(rows(cand), rows(seen)))


# ---- observations -------------------------------------------------------------------------------
@dataclass
class Observation:
    """What the policy sees at one decision (batched over B tasks)."""

    cand: torch.Tensor  # [B,M,F]
    pair: torch.Tensor  # [B,M,n,P]
    pair_mask: torch.Tensor  # [B,n] True where a history point exists
    prior: torch.Tensor  # [B,M] standardized log EI
    valid: torch.Tensor  # [B,M] False for candidates already evaluated or running

    def to(self, dtype: torch.dtype) -> "Observation":
        return Observation(self.cand.to(dtype), self.pair.to(dtype), self.pair_mask, self.prior.to(dtype), self.valid)


def observe(
    x: torch.Tensor,
    y: torch.Tensor,
    x_pending: torch.Tensor | None,
    cand: torch.Tensor,
    hyper: GPHyper,
    t_frac: torch.Tensor,
    multiplicity: torch.Tensor | None = None,
) -> tuple[Observation, GPPosterior]:
    """Features of ``cand [B,M,D]`` given scale-free targets ``y [B,n]`` (:func:`score_target`) at ``x [B,n,D]``;
    ``multiplicity [B,M]``: how many generated candidates each one stands for (distinct candidates scored once
    weigh as their copies in the standardization of the prior)."""
    B, n, _ = x.shape
    gp = GPPosterior(x, y, hyper)
    pend = torch.zeros(B, n, dtype=DTYPE)
    xa, ya = x, y
    if x_pending is not None and x_pending.shape[1] > 0:
        mu_p, _ = gp.predict(x_pending)
        xa, ya = torch.cat([x, x_pending], 1), torch.cat([y, mu_p], 1)
        pend = torch.cat([pend, torch.ones(B, x_pending.shape[1], dtype=DTYPE)], 1)
        gp = GPPosterior(xa, ya, hyper)
    mu, sd = gp.predict(cand)
    best = y.max(1).values  # [B]
    z = (mu - best[:, None]) / sd
    log_ei = log_expected_improvement(z) + torch.log(sd)
    r = scaled_distance(cand, xa, hyper.log_ls)  # [B,M,n+p]
    inc = xa.gather(1, y.argmax(1)[:, None, None].expand(B, 1, x.shape[2]))
    r_best = scaled_distance(cand, inc, hyper.log_ls).squeeze(-1)
    valid = r.min(-1).values > 1e-6
    valid = torch.where(valid.any(1, keepdim=True), valid, torch.ones_like(valid))
    M = cand.shape[1]
    feats = torch.stack(
        [
            mu,
            torch.log(sd),
            z.clamp(-10, 10),
            log_ei.clamp(min=-30),
            t_frac[:, None].expand(B, M),
            torch.log(r.min(-1).values + 1e-3),
            torch.log(r_best + 1e-3),
            torch.full((B, M), math.log(n + 1) / math.log(200), dtype=DTYPE),
        ],
        -1,
    )
    if r.shape[-1] > MAX_TOKENS:  # each candidate attends to its MAX_TOKENS nearest history points
        near = (-r).topk(MAX_TOKENS, dim=-1).indices  # [B,M,K]
        r_near = r.gather(2, near)
        y_near = ya.gather(1, near.flatten(1)).view_as(near)
        pend_near = pend.gather(1, near.flatten(1)).view_as(near)
    else:
        r_near, y_near, pend_near = r, ya[:, None, :].expand_as(r), pend[:, None, :].expand_as(r)
    pair = torch.stack([r_near, y_near, y_near - best[:, None, None], pend_near], -1)  # [B,M,K,P]
    w = valid.to(DTYPE) if multiplicity is None else torch.where(valid, multiplicity.to(DTYPE), 0.0)
    le = torch.where(valid, log_ei, 0.0)
    mean = (w * le).sum(1, keepdim=True) / w.sum(1, keepdim=True)
    std = torch.sqrt((w * (le - mean).pow(2)).sum(1, keepdim=True) / w.sum(1, keepdim=True)) + 1e-6
    prior = torch.where(valid, (log_ei - mean) / std, torch.zeros_like(log_ei))
    mask = torch.ones(B, pair.shape[2], dtype=torch.bool)
    return Observation(feats.float(), pair.float(), mask, prior.float(), valid), gp


# ---- the policy ---------------------------------------------------------------------------------
class MetaPolicyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hidden: int = Field(32, ge=4, description="Width of the pair embedding and the scoring MLP.")
    beta_init: float = Field(12.0, description="Initial weight of the standardized log EI prior.")


class MetaPolicy(nn.Module):
    """π_θ(c | history): attention over history points per candidate, then a scoring MLP."""

    def __init__(self, config: MetaPolicyConfig | None = None):
        super().__init__()
        self.config = config or MetaPolicyConfig()
        h = self.config.hidden
        self.pair = mlp(N_PAIR_FEATURES, h, (h,), "tanh")
        self.attend = nn.Linear(h, 1)
        self.value = nn.Linear(h, h)
        self.score = mlp(N_CAND_FEATURES + h, 1, (h, h), "tanh", out_gain=0.01)
        self.beta = nn.Parameter(torch.tensor(float(self.config.beta_init)))

    def logits(self, obs: Observation) -> torch.Tensor:
        r"""Per pair token :math:`e_i = W_2 h_i + b_2` with :math:`h_i = \tanh(W_1 p_i + b_1)`, attention
        :math:`a_i = w_a^\top e_i + b_a` and read-out :math:`V\sum_i \mathrm{softmax}(a)_i e_i + b_V`. Both
        affine maps after the tanh are taken out of the per-token work (the attention weights sum to one):
        :math:`a_i = (W_2^\top w_a)^\top h_i + w_a^\top b_2 + b_a` and
        :math:`\sum_i \mathrm{softmax}(a)_i e_i = W_2 \sum_i \mathrm{softmax}(a)_i h_i + b_2`, so only the first
        layer runs per (candidate, history point)."""
        hidden, out = self.pair[:-1](obs.pair), self.pair[-1]  # h_i [B,M,n,H]; W_2, b_2
        w_att = self.attend.weight @ out.weight  # [1,H]
        b_att = self.attend.weight @ out.bias + self.attend.bias
        a = F.linear(hidden, w_att, b_att).squeeze(-1).masked_fill(~obs.pair_mask[:, None, :], NEG)
        read = self.value(out((torch.softmax(a, -1).unsqueeze(-1) * hidden).sum(2)))  # [B,M,H]
        f = self.score(torch.cat([obs.cand, read], -1)).squeeze(-1)
        return (self.beta * obs.prior + f).masked_fill(~obs.valid, NEG)

    def distribution(self, obs: Observation) -> Categorical:
        return Categorical(self.logits(obs))


def default_weights_path() -> Path:
    return Path(str(resources.files("autotune") / "weights" / "meta_policy.pt"))


def save_policy(policy: MetaPolicy, path: str | Path, meta: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "state": {k: v.detach().clone() for k, v in policy.state_dict().items()},
        "config": policy.config.model_dump(),
        "feature_version": FEATURE_VERSION,
        "meta": {k: v for k, v in meta.items() if isinstance(v, (int, float, str, bool, list, dict))},
    }
    torch.save(payload, path)
    return path


def load_policy(path: str | Path | None = "default") -> MetaPolicy:
    """The pretrained policy (``"default"``: the weights shipped in the package); ``None``: untrained."""
    if path is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the untrained policy is the same everywhere
            return MetaPolicy()
    p = default_weights_path() if path == "default" else Path(path)
    if not p.is_file():
        raise CheckpointError(f"meta policy weights '{p}' not found; train them with `python -m autotune.pretrain`")
    payload = torch.load(p, map_location="cpu", weights_only=True)
    if payload.get("feature_version") != FEATURE_VERSION:
        raise CheckpointError(
            f"meta policy weights '{p}' were trained on feature version "
            f"{payload.get('feature_version')}, this code computes {FEATURE_VERSION}; retrain them"
        )
    policy = MetaPolicy(MetaPolicyConfig(**payload["config"]))
    policy.load_state_dict(payload["state"])
    return policy


# ---- conditional spaces: the tree read from the history ------------------------------------------
IMPUTE = 0.5  # unit value of an inactive numeric parameter (an inactive categorical: all one-hot columns 0)


class TreeRule:
    """Which parameter groups a configuration activates, read from the trials of a conditional space.

    Each branch group g has a *decider*: a discrete parameter p (categorical, int or stepped float)
    such that, in every trial, g is active iff p is active and p's value is in a set V_g (e.g.
    ``sgd_lr`` iff ``optimizer = "sgd"``, ``width_2`` iff ``n_layers ∈ {3, 4}``, ``l1_ratio`` iff
    ``penalty = "elasticnet"`` under ``family = "linear"``). A value of p never seen counts as opening g.
    """

    def __init__(self, codec: SpaceCodec, rules: list[tuple[list[int], int, np.ndarray]]):
        self.codec = codec
        self.rules = rules  # (columns of g, index of p in codec.params, active[value index of p])

    @staticmethod
    def _levels(codec: SpaceCodec, i: int, x: np.ndarray) -> np.ndarray:
        """Value index of discrete parameter ``i`` in unit rows ``x`` (−1 where inactive)."""
        p = codec.params[i]
        cols = x[:, p.start : p.start + p.width]
        if p.kind == "cat":
            return np.where(cols.max(1) > 0.5, cols.argmax(1), -1)
        return np.clip(np.floor(cols[:, 0] * p.n_levels), 0, p.n_levels - 1).astype(np.int64)

    @classmethod
    def read(
        cls, codec: SpaceCodec, branch_groups: list[frozenset[str]], rows: list[dict[str, Any]]
    ) -> "TreeRule | None":
        index = {p.name: i for i, p in enumerate(codec.params)}
        discrete = [i for i, p in enumerate(codec.params) if p.kind == "cat" or 0 < p.n_levels <= 64]
        rules = []
        for g in branch_groups:
            member = sorted(g)[0]
            on = np.array([member in r for r in rows])
            found = None
            for i in discrete:
                name = codec.params[i].name
                if name in g:
                    continue
                has = np.array([name in r for r in rows])
                if on[~has].any():
                    continue  # g active where p is not
                lv = codec.params[i].encode([r[name] for r in rows if name in r])
                level = cls._levels(codec, i, codec_cols(codec, i, lv))
                act = on[has]
                n_lv = codec.params[i].n_levels
                seen_on = np.bincount(level[act], minlength=n_lv) > 0
                seen_off = np.bincount(level[~act], minlength=n_lv) > 0
                if (seen_on & seen_off).any() or not seen_on.any() or not seen_off.any():
                    continue  # not a function of p's value, or p does not switch g
                found = (i, ~seen_off)  # unseen values open g
                break
            if found is None:
                return None
            cols = [
                c
                for name in g
                for c in range(
                    codec.params[index[name]].start, codec.params[index[name]].start + codec.params[index[name]].width
                )
            ]  # noqa: E501
            rules.append((cols, found[0], found[1]))
        # deciders before the groups they sit in
        order = []
        pending = list(rules)
        while pending:
            placed = False
            for r in list(pending):
                decider_cols = range(codec.params[r[1]].start, codec.params[r[1]].start + codec.params[r[1]].width)
                if not any(set(decider_cols) & set(q[0]) for q in pending if q is not r):
                    order.append(r)
                    pending.remove(r)
                    placed = True
            if not placed:
                return None  # a cycle: not a tree
        return cls(codec, order)

    def mask(self, x: np.ndarray) -> np.ndarray:
        """``[rows, dim]`` True where a column is active."""
        active = np.ones(x.shape, dtype=bool)
        for cols, i, opens in self.rules:
            p = self.codec.params[i]
            level = self._levels(self.codec, i, x)
            on = active[:, p.start] & (level >= 0) & opens[np.maximum(level, 0)]
            active[:, cols] = on[:, None]
        return active

    def impute(self, x: np.ndarray) -> np.ndarray:
        """Inactive columns set to their imputed values."""
        fill = np.full(self.codec.dim, IMPUTE)
        for s, w in self.codec.categorical_columns:
            fill[s : s + w] = 0.0
        return np.where(self.mask(x), x, fill[None, :])

    def encode(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Param dicts (any subset of the space) -> unit rows with inactive parameters imputed."""
        out = np.zeros((len(rows), self.codec.dim))
        for p in self.codec.params:
            have = [j for j, r in enumerate(rows) if p.name in r]
            if have:
                out[have, p.start : p.start + p.width] = p.encode([rows[j][p.name] for j in have])
        return self.impute(out)

    def snap(self, c: torch.Tensor) -> torch.Tensor:
        """Candidates ``[B,M,D]`` snapped onto representable values, then imputed as their tree says."""
        B, M, D = c.shape
        x = self.codec.snap(c.reshape(B * M, D).numpy())
        return torch.as_tensor(self.impute(x)).view(B, M, D)

    def active_mask(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`mask` for a tensor of points ``[..., dim]``."""
        shape = x.shape
        return torch.as_tensor(self.mask(x.reshape(-1, shape[-1]).numpy())).view(shape)

    def active_params(self, x: np.ndarray) -> list[set[str]]:
        active = self.mask(x)
        return [{p.name for p in self.codec.params if row[p.start]} for row in active]


def codec_cols(codec: SpaceCodec, i: int, cols: np.ndarray) -> np.ndarray:
    """Rows holding only parameter ``i``'s columns -> full-width rows (for :meth:`TreeRule._levels`)."""
    p = codec.params[i]
    out = np.zeros((len(cols), codec.dim))
    out[:, p.start : p.start + p.width] = cols
    return out


# ---- the Optuna sampler -------------------------------------------------------------------------
class MetaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_candidates: int = Field(512, ge=8, description="Candidates scored per trial.")
    n_branch_candidates: int = Field(
        128, ge=8, description="Candidates scored for a conditional branch's group (given the root's choice)."
    )
    n_startup_trials: int = Field(4, ge=1, description="Uniform random trials before the policy takes over.")
    initial_design: Literal["star", "centre", "random"] = Field(
        "star",
        description="The first trials: 'star' — trial 0 at the box's centre (numeric parameters; log-scaled ones "
        "at their geometric middle, grids at their middle level), then trial k = 1..D moves the k-th of the D "
        "numeric parameters (by name) by star_step of its range, the others kept at the centre and the "
        "categoricals at trial 0's values (when D + 1 trials fit in design_fraction of n_trials_hint; else "
        "the centre only); 'centre': trial 0 at the centre, then n_startup_trials random ones; 'random': "
        "every startup trial uniform. A parameter first met after trial 0 (a branch's) starts at its centre too, "
        "unless an earlier trial already holds it.",
    )
    star_step: float = Field(
        0.2,
        gt=0.0,
        le=0.5,
        description="The star design's step, a fraction of each numeric parameter's unit range (on a grid, at "
        "least one level).",
    )
    design_fraction: float = Field(
        0.25,
        gt=0.0,
        le=1.0,
        description="The most of the study (of n_trials_hint) the star design may take: with D numeric "
        "parameters it needs D + 1 trials.",
    )
    n_trials_hint: int = Field(100, ge=1, description="Expected study length T (the policy reads t/T).")
    deterministic: bool = Field(True, description="Take the policy's most likely candidate (else sample).")
    fit_steps: int = Field(15, ge=0, description="Adam steps of the GP's marginal likelihood per trial.")
    fit_steps_late: int = Field(
        7,
        ge=0,
        description="Adam steps (warm-started) once a decision's history holds 100 trials, and for a "
        "conditional branch's group: hyperparameters then move little, and the fit is most of the CPU.",
    )
    refit_every_late: int = Field(
        2,
        ge=1,
        description="Once a decision's history holds 100 trials, refit the GP's hyperparameters only when k "
        "new points arrived since this process's last fit for that space (before: when any arrived); the "
        "decisions in between reuse that fit (1: whenever the history grew).",
    )
    n_refine: int = Field(
        0,
        ge=0,
        description="A second round of this many candidates: small perturbations (scales 0.003–0.03) "
        "of the 8 best-scored ones, scored together with the first round (0: one round).",
    )
    categorical_sweep: int = Field(
        0,
        ge=0,
        description="For this many best trials, candidates that change exactly one categorical to each "
        "of its other values (replacing as many local candidates): every untried value next to the "
        "incumbents gets scored (0: off).",
    )
    bound_sweep: int = Field(
        0,
        ge=0,
        description="For this many best trials, candidates that move exactly one numeric parameter to its "
        "lower or upper bound (replacing as many local candidates; :func:`sweep_bounds`) (0: off).",
    )
    bound_sweep_filter: Literal["none", "mean", "grid"] = Field(
        "grid",
        description="Which bound candidates are offered: 'grid' the bounds of grid parameters (integers and "
        "stepped floats) only, 'mean' those whose GP posterior mean is at least the incumbent's, 'none' all.",
    )
    quadratic_candidates: int = Field(
        32,
        ge=0,
        description="Replace this many local candidates by points along the Newton step of a quadratic model "
        "fitted to the best trials (numeric parameters; once the history holds 1.5× the model's "
        "1 + d + d(d+1)/2 coefficients): a rotated, ill-conditioned valley is followed where axis-wise "
        "perturbations stall (0: off, the earlier default).",
    )
    quadratic_fallback: Literal["none", "diagonal", "subspace"] = Field(
        "none",
        description="While the history is too short for the full quadratic model: 'diagonal' fits a separable "
        "one (1 + 2d coefficients); 'subspace' the full model over the numeric parameters with the shortest GP "
        "lengthscales, as many as the history can fit; 'none' waits.",
    )
    categorical_effects: bool = Field(
        True,
        description="Give the GP a per-choice effect for every categorical value (an additive random "
        "effect shared across the numeric space) on top of the Matérn kernel over the one-hot columns.",
    )
    joint_conditional: bool = Field(
        True,
        description="On a conditional space, decide the whole tree at once (root and every branch, inactive "
        "parameters imputed) from one history of all trials; off: the root, then each branch group given it.",
    )
    joint_fraction: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Fraction of the study (t/T) decided by the joint tree decision; the rest by the root "
        "and branch decisions, which explore the root's choices more and tune each branch on its own history.",
    )
    trust_region: bool = Field(
        True,
        description="Draw the candidates in a TuRBO trust region around the best trial (numeric columns; at "
        "least two cells either side on a grid): its side starts at 0.4, doubles after 3 improvements in a "
        "row and halves after max(4, ⌈d/2⌉) trials without one (replayed from the history); off: the "
        "whole cube.",
    )
    trust_region_ard: bool = Field(
        False,
        description="Stretch the trust region per numeric parameter by the GP's ARD lengthscales, as TuRBO "
        "does (same volume, longer where the objective changes slowly; at most 8× either way).",
    )
    trust_region_restart: Literal["init", "global"] = Field(
        "init",
        description="Where a collapsed trust region restarts: 'init' (a box of side 0.4 around the best "
        "trial, once the side is below 0.5⁷) or 'global' (the whole cube, side 1.6, as TuRBO's fresh design; "
        "a box on grid parameters also counts as collapsed once halving it narrows no column).",
    )
    target: Literal["yeo_johnson", "copula"] = Field(
        "yeo_johnson",
        description="How scores become the GP's and the policy's targets: 'yeo_johnson' (standardized, "
        "power-warped by a maximum-likelihood λ: distances between values kept) or 'copula' (ranks through "
        "Φ⁻¹, the earlier default).",
    )
    avoid_repeats: bool = Field(
        True,
        description="Drop the candidates that equal a finished or running trial's configuration (snapping to "
        "grids and choices makes exact repeats): on a deterministic objective a repeat costs a trial and "
        "tells nothing. When every candidate is a repeat, as many are drawn uniformly from the whole space instead "
        "(the unseen among them; every one when the space is used up). Off: the "
        "policy may pick the incumbent again, as for a noisy objective whose repeats are worth their cost.",
    )
    spread_ties: bool = Field(
        False,
        description="When several trials share the best score (a plateau: error counts, tabulated grids), "
        "centre the trust region and pick the perturbed top trials uniformly among them at each trial, "
        "instead of always the first one found.",
    )
    seed: int | None = None


class MetaSampler(BaseSampler):
    r"""Optuna sampler driven by the pretrained meta policy, on flat and conditional spaces.

    Every type is handled (floats linear and log, ints and stepped floats on their grids,
    categoricals one-hot, with a per-choice random effect in the GP: :mod:`autotune.gp`).

    A conditional space is split the way Optuna's group decomposition (``TPESampler(group=True)``)
    splits it: parameters that appear in exactly the same finished trials form one group
    (:func:`autotune.space.group_decomposition`). By default (``joint_conditional``) the policy
    decides the *whole tree* at once, in ``sample_relative``: the space is the union of all
    groups, every trial enters one GP with its inactive parameters imputed (numeric ½, categorical
    no choice), and :class:`TreeRule` reads from the history which discrete parameter value opens
    which group (``width_2`` iff ``n_layers`` ≥ 3), so every candidate is imputed as the
    configuration it will be — :math:`\pi_\theta(x \mid \mathcal H)` over tree-structured
    configurations, a branch's parameters learned together with the choice that opens it; the
    chosen branch values are returned by ``sample_independent``. With ``joint_conditional=False``
    (sampler ``meta-branch``), or when the history shows no such tree, it decides twice per
    trial, each time over the trials that hold the parameters it decides:

    * the *root* — the intersection search space (the parameters of every trial, e.g. the
      optimizer's name and the shared ones) — jointly, in ``sample_relative``;
    * a *branch group* — the first time the trial asks for one of its parameters, e.g. ``sgd_lr``
      once the trial took ``optimizer = "sgd"`` — jointly over the group, on the trials that hold
      it, with the parameters the trial has already taken (and every such trial holds) pinned as
      context columns of the GP and the candidates: the model is
      :math:`\pi_\theta(x_g \mid x_{\text{context}}, \mathcal H_g)`, so a branch's
      parameters are tuned from that branch's own history, conditioned on the root's choice.

    The study opens with a *star design* (``initial_design``): trial 0 at the centre of the box, then one
    trial per numeric parameter, each moving that parameter alone by ``star_step`` — an axis probe of every
    direction from the centre, as a local method (COBYLA's first simplex) starts, before the GP has data.
    A parameter no earlier trial holds starts at its centre; one never seen in a finished trial since, or
    (branch decisions) a group with fewer than ``n_startup_trials`` complete trials, is drawn by
    ``independent_sampler`` (uniform).

    A configuration already finished or running is not proposed again (``avoid_repeats``, on by default): on
    grids and choices snapping makes the incumbent and its evaluated neighbours candidates again, and on a
    deterministic objective such a trial is spent for nothing (:func:`unseen_candidates`). Turn it off for a noisy
    objective where re-evaluating the incumbent is worth a trial.
    """

    def __init__(
        self,
        weights: str | Path | None = "default",
        config: MetaConfig | dict[str, Any] | None = None,
        independent_sampler: BaseSampler | None = None,
        **overrides: Any,
    ):
        self.config = parse_config(MetaConfig, config, **overrides)
        self._seed = self.config.seed if self.config.seed is not None else int.from_bytes(os.urandom(4), "little")
        self.policy = load_policy(weights)
        self.policy.eval()
        self._independent = independent_sampler or RandomSampler(seed=self._seed)
        self._lock = threading.Lock()
        self._spaces: dict[tuple[int, int], IntersectionSearchSpace] = {}
        self._hyper: dict[tuple[Any, ...], tuple[GPHyper, int]] = {}  # space -> (last fit, its n)
        self._branch: dict[tuple[int, int, int], dict[str, Any]] = {}  # trial -> its sampled branch values
        # trial -> (the history its first decision read, that history's parameter groups once needed)
        self._snapshots: dict[tuple[int, int, int], tuple[History, list[frozenset[str]] | None]] = {}
        self._signatures: dict[tuple[int, int], dict[int, int]] = {}  # study -> finished trial -> its id below
        self._signature_ids: dict[frozenset[tuple[str, BaseDistribution]], int] = {}  # distinct distribution sets
        self.last_fit_time = 0.0

    def __str__(self) -> str:
        return "MetaSampler"

    def __getstate__(self) -> dict[str, Any]:  # picklable (Ray ships samplers to its workers)
        state = dict(self.__dict__)
        state.pop("_lock")
        state["_spaces"], state["_hyper"], state["_branch"] = {}, {}, {}
        state["_signatures"], state["_signature_ids"], state["_snapshots"] = {}, {}, {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def reseed_rng(self) -> None:
        self._seed = int.from_bytes(os.urandom(4), "little")
        self._independent.reseed_rng()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        check_single_objective(study, "MetaSampler")
        key = (id(study._storage), study._study_id)
        with self._lock:
            space = self._spaces.setdefault(key, IntersectionSearchSpace(include_pruned=True))
            full = space.calculate(study)
        return {k: d for k, d in full.items() if not d.single()}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        history = self._history(study, trial)
        design = self._star_point(trial, history, search_space)
        if design is not None:
            return design
        t_frac = len(history.finished) / self.config.n_trials_hint
        if self.config.joint_conditional and t_frac < self.config.joint_fraction:
            joint = self._decide_tree(study, trial, history, search_space)
            if joint is not None:
                return joint
        return self._decide(study, trial, history, search_space, {}) or {}

    def _star_point(
        self, trial: FrozenTrial, history: History, space: dict[str, BaseDistribution]
    ) -> dict[str, Any] | None:
        """Trial k = 1..D of the star design (``initial_design="star"``): the centre of the box with the k-th
        numeric parameter (in name order) moved by ``star_step`` (the other way, or a grid level further, where
        that lands back on the centre); categoricals as trial 0 took them. Derived from the trial's number alone,
        so parallel workers take distinct points; None outside the design."""
        cfg = self.config
        if cfg.initial_design != "star" or not 0 < trial.number <= len(space):
            return None  # past the design (it needs one trial per numeric parameter): no codec to build
        codec = SpaceCodec(space)
        numeric = [p for p in codec.params if p.kind != "cat"]
        if trial.number > len(numeric) or len(numeric) + 1 > max(
            cfg.n_startup_trials, cfg.design_fraction * cfg.n_trials_hint
        ):
            return None
        first = next((t for t in history.finished if t.number == 0), None)
        values: dict[str, Any] = {}
        for p in codec.params:
            if p.kind == "cat":
                if first is None or p.name not in first.params:
                    return None  # no centre trial to take the choices from: the policy or random search decides
                values[p.name] = first.params[p.name]
            else:
                values[p.name] = centre_value(p)
        moved = numeric[trial.number - 1]
        centre = moved.encode([values[moved.name]])[0, 0]
        for u in (centre + cfg.star_step, centre - cfg.star_step):
            value = moved.decode(np.array([[min(max(u, 0.0), 1.0)]]))[0]
            if value != values[moved.name]:
                values[moved.name] = value
                return values
        if moved.kind == "grid":  # a step smaller than a level: one level up (or down)
            level = moved.distribution.step or 1  # type: ignore[union-attr]
            for value in (values[moved.name] + level, values[moved.name] - level):
                if moved.distribution._contains(moved.distribution.to_internal_repr(value)):
                    values[moved.name] = type(values[moved.name])(value)
                    return values
        return None

    def _centre(self, study: Study, trial: FrozenTrial, name: str, distribution: BaseDistribution) -> Any:
        """The centre of ``distribution`` for a numeric parameter that no earlier trial holds or may still take
        (``initial_design`` "star" or "centre": trial 0, or a branch's first trial; parallel workers that start
        together leave it to the lowest trial); None otherwise."""
        if self.config.initial_design == "random" or distribution.single():
            return None
        codec = SpaceCodec({name: distribution})
        p = codec.params[0]
        if p.kind == "cat":
            return None
        for t in study.get_trials(deepcopy=False):  # an earlier trial that holds it or, still running, may take it
            if t.number < trial.number and (name in t.params or t.state in (TrialState.RUNNING, TrialState.WAITING)):
                return None
        return centre_value(p)

    def _propose(
        self,
        study: Study,
        trial: FrozenTrial,
        history: History,
        x: np.ndarray,
        scores: np.ndarray,
        xp: np.ndarray,
        layout_snap: tuple[Layout, Any],
        space_key: Any,
        stream: int,
        n_params: int,
        config: MetaConfig,
    ) -> Any:
        """The policy's proposal from encoded history ``x`` / ``scores`` (failed or pruned trials, non-finite
        scores, take the worst rank) and pending ``xp``; its GP hyperparameters are warm-started from and
        stored under ``space_key`` per study, and its draws come from a generator seeded by (seed, trial,
        ``stream``, ``n_params``)."""
        finite = scores[np.isfinite(scores)]
        gap = float(finite.max() - finite.min()) or 1.0  # one spread below the worst: last in any target
        scores = np.where(np.isfinite(scores), scores, finite.min() - gap)
        gen = torch.Generator().manual_seed(
            int(np.random.SeedSequence([self._seed, trial.number, stream, n_params]).generate_state(1)[0])
        )
        t_frac = min(1.0, len(history.finished) / self.config.n_trials_hint)
        hkey = (id(study._storage), study._study_id, space_key)
        with self._lock:
            init, n_fitted = self._hyper.get(hkey, (None, 0))
        n = len(scores)
        late = n >= 100
        steps = min(config.fit_steps, config.fit_steps_late) if late else config.fit_steps
        # refit once the history holds new points: one (early) or refit_every_late (late) since the last fit;
        # a branch group's history grows only on the trials that take its branch
        if init is not None and n - n_fitted < (config.refit_every_late if late else 1):
            steps = 0
        else:
            n_fitted = n
        if steps != config.fit_steps:
            config = config.model_copy(update={"fit_steps": steps})
        with single_thread():
            choice = propose(
                self.policy,
                torch.as_tensor(x)[None],
                torch.as_tensor(scores)[None],
                torch.as_tensor(xp)[None],
                layout_snap,
                gen,
                t_frac,
                config,
                init,
            )
        with self._lock:
            self._hyper[hkey] = (choice.hyper, n_fitted)
        return choice

    @staticmethod
    def _trial_key(study: Study, trial: FrozenTrial) -> tuple[int, int, int]:
        return (id(study._storage), study._study_id, trial.number)

    def _history(self, study: Study, trial: FrozenTrial) -> History:
        """The study as this trial's first decision read it: its branch decisions (one per group it
        opens) reuse that snapshot rather than re-reading and re-scoring every trial."""
        key = self._trial_key(study, trial)
        with self._lock:
            snapshot = self._snapshots.get(key)
        if snapshot is None:
            snapshot = (read_history(study, exclude=trial.number), None)
            with self._lock:
                self._snapshots[key] = snapshot
        return snapshot[0]

    def _groups(self, study: Study, trial: FrozenTrial, seen: list[FrozenTrial]) -> list[frozenset[str]]:
        """:func:`group_decomposition` of ``seen`` (this trial's snapshot), computed once per trial."""
        key = self._trial_key(study, trial)
        with self._lock:
            history, groups = self._snapshots.get(key, (None, None))
        if groups is None:
            groups = group_decomposition(seen)
            if history is not None:
                with self._lock:
                    self._snapshots[key] = (history, groups)
        return groups

    def _finished_where(
        self, study: Study, finished: list[FrozenTrial], predicate: Callable[[FrozenTrial], bool]
    ) -> list[bool]:
        """``predicate`` (a function of a trial's distributions only) of each finished trial, evaluated once
        per distinct set of distributions: a finished trial's set never changes, so it is interned by
        trial number (per study), and comparing Optuna distributions is the slow part at 200 trials."""
        with self._lock:
            numbered = self._signatures.setdefault((id(study._storage), study._study_id), {})
        verdict: dict[int, bool] = {}
        out = []
        for t in finished:
            sig = numbered.get(t.number)
            if sig is None:
                with self._lock:
                    sig = numbered[t.number] = self._signature_ids.setdefault(
                        frozenset(t.distributions.items()), len(self._signature_ids)
                    )
            if sig not in verdict:
                verdict[sig] = predicate(t)
            out.append(verdict[sig])
        return out

    def _decide_tree(
        self, study: Study, trial: FrozenTrial, history: History, root: dict[str, BaseDistribution]
    ) -> dict[str, Any] | None:
        """One decision over the whole tree of a conditional space (None: the space is flat, or its
        tree could not be read from the history).

        The space is the union of every finished trial's parameters; a trial's inactive parameters
        take the imputed unit value ½ (numeric) or no choice (categorical one-hot all 0), so one GP
        learns from all trials together — a branch's parameters and the choice that opens it. Which
        groups a configuration activates is read from the history (:class:`TreeRule`); candidates get
        the same imputation, so the policy scores each one as the configuration it will be. The
        chosen branch values are kept for ``sample_independent``.
        """
        seen = [t for t in history.finished if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        dists: dict[str, BaseDistribution] = {}
        for t in seen:  # the latest distribution of every parameter seen
            dists.update(t.distributions)
        dists.update(root)
        dists = {k: d for k, d in dists.items() if not d.single()}
        if set(dists) <= set(root):
            return None  # flat space
        keep = self._finished_where(
            study,
            history.finished,
            lambda t: (
                all(k in t.params for k in root) and all(t.distributions[k] == dists[k] for k in t.params if k in dists)
            ),
        )
        rows = [(t, sc) for t, sc, ok in zip(history.finished, history.scores, keep) if ok]
        if sum(1 for _, sc in rows if np.isfinite(sc)) < self.config.n_startup_trials:
            return None
        codec = SpaceCodec(dists)
        groups = [g & set(dists) for g in group_decomposition([t for t, _ in rows])]
        rule = TreeRule.read(codec, [g for g in groups if g and not g <= set(root)], [t.params for t, _ in rows])
        if rule is None:
            return None
        pending = [t.params for t in history.running if all(k in t.params for k in root)]
        choice = self._propose(
            study,
            trial,
            history,
            rule.encode([t.params for t, _ in rows]),
            np.array([sc for _, sc in rows]),
            rule.encode(pending) if pending else np.zeros((0, codec.dim)),
            (
                Layout(
                    codec.dim,
                    codec.categorical_columns,
                    active=rule.active_mask,
                    levels=torch.as_tensor(codec.grid_levels),
                ),
                rule.snap,
            ),
            ("tree", tuple(sorted(dists))),
            2,
            len(dists),
            self.config,
        )
        chosen = choice.x.numpy()
        values = codec.decode(chosen)[0]
        active = rule.active_params(chosen)[0]
        key = self._trial_key(study, trial)
        with self._lock:
            self._branch[key] = {k: v for k, v in values.items() if k not in root and k in active}
        return {k: v for k, v in values.items() if k in root}

    def _decide(
        self,
        study: Study,
        trial: FrozenTrial,
        history: History,
        space: dict[str, BaseDistribution],
        context: dict[str, tuple[BaseDistribution, Any]],
        branch: bool = False,
    ) -> dict[str, Any] | None:
        """One decision of the policy over ``space``, with ``context`` (name -> (distribution,
        value)) pinned; the trials used are those holding every parameter of both with the same
        distributions. None while fewer than ``n_startup_trials`` of them are complete."""
        dists = {**space, **{k: d for k, (d, _) in context.items()}}

        def holds(t: FrozenTrial) -> bool:
            return all(t.distributions.get(k) == d for k, d in dists.items())

        keep = self._finished_where(study, history.finished, holds)
        rows = [(t, s) for t, s, ok in zip(history.finished, history.scores, keep) if ok]
        n_ok = sum(1 for _, s in rows if np.isfinite(s))
        if n_ok < self.config.n_startup_trials:
            return None
        codec = SpaceCodec(dists)
        pending = [t.params for t in history.running if holds(t)]
        fixed = None
        if context:
            ctx_codec = SpaceCodec({k: d for k, (d, _) in context.items()})
            ctx = ctx_codec.encode([{k: v for k, (_, v) in context.items()}])[0]
            fixed = torch.full((codec.dim,), math.nan, dtype=DTYPE)
            for p in codec.params:
                if p.name in context:
                    q = next(c for c in ctx_codec.params if c.name == p.name)
                    fixed[p.start : p.start + p.width] = torch.as_tensor(ctx[q.start : q.start + q.width])
        config = self.config
        if branch:
            config = config.model_copy(
                update={
                    "fit_steps": min(config.fit_steps, config.fit_steps_late),
                    "n_candidates": config.n_branch_candidates,
                    # a branch group's columns are not the whole configuration: a repeat of them is not a repeat
                    "avoid_repeats": False,
                }
            )
        choice = self._propose(
            study,
            trial,
            history,
            codec.encode([t.params for t, _ in rows]),
            np.array([s for _, s in rows]),
            codec.encode(pending) if pending else np.zeros((0, codec.dim)),
            (
                Layout(codec.dim, codec.categorical_columns, fixed, levels=torch.as_tensor(codec.grid_levels)),
                codec_snap(codec),
            ),
            tuple(sorted(dists)),
            int(branch),
            len(dists),
            config,
        )
        values = codec.decode(choice.x.numpy())[0]
        return {k: v for k, v in values.items() if k in space}

    def _sample_branch(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> dict[str, Any] | None:
        """The values of ``param_name``'s whole group for this trial (None: not modelled yet)."""
        history = self._history(study, trial)
        seen = [t for t in history.finished if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        group = next((g for g in self._groups(study, trial, seen) if param_name in g), None)
        if group is None:  # never seen in a finished trial
            return None
        holders = [t for t in seen if param_name in t.params]
        latest = max(holders, key=lambda t: t.number)
        space = {k: latest.distributions[k] for k in group if k in latest.distributions}
        space = {k: d for k, d in space.items() if not d.single()}
        space[param_name] = param_distribution
        common = set.intersection(*(set(t.params) for t in holders))
        context = {
            k: (trial.distributions[k], v)
            for k, v in trial.params.items()
            if k in common and k not in space and not trial.distributions[k].single()
        }
        return self._decide(study, trial, history, space, context, branch=True)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        key = self._trial_key(study, trial)
        with self._lock:
            cached = self._branch.get(key, {})
        if param_name not in cached:
            values = self._sample_branch(study, trial, param_name, param_distribution)
            if values:
                cached = {**cached, **{k: v for k, v in values.items() if k not in trial.params}}
                with self._lock:
                    self._branch[key] = cached
        if param_name in cached:
            value = cached[param_name]
            try:
                if param_distribution._contains(param_distribution.to_internal_repr(value)):
                    return value
            except (ValueError, TypeError):
                pass
        centre = self._centre(study, trial, param_name, param_distribution)
        if centre is not None:
            return centre
        return self._independent.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._independent.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: list[float] | None) -> None:
        key = self._trial_key(study, trial)
        with self._lock:
            self._branch.pop(key, None)
            self._snapshots.pop(key, None)
        self._independent.after_trial(study, trial, state, values)


@dataclass
class Proposal:
    x: torch.Tensor  # [B,D] chosen configurations (unit cube)
    index: torch.Tensor  # [B]
    log_prob: torch.Tensor  # [B]
    obs: Observation
    cand: torch.Tensor  # [B,M,D]
    hyper: GPHyper


def centre_value(p: ParamCodec) -> Any:
    """The representable value at the middle of a numeric parameter's unit range (a log range's geometric
    middle, a grid's middle level)."""
    return p.decode(p.encode([p.decode_numeric(np.array([0.5]))[0]]))[0]


def codec_snap(codec: SpaceCodec) -> Callable[[torch.Tensor], torch.Tensor]:
    def snap(c: torch.Tensor) -> torch.Tensor:
        B, M, D = c.shape
        return torch.as_tensor(codec.snap(c.reshape(B * M, D).numpy())).view(B, M, D)

    return snap


@torch.no_grad()
def propose(
    policy: MetaPolicy,
    x: torch.Tensor,
    scores: torch.Tensor,
    x_pending: torch.Tensor | None,
    codec_or_layout: SpaceCodec | tuple[Layout, Callable[[torch.Tensor], torch.Tensor]],
    gen: torch.Generator,
    t_frac: float | torch.Tensor,
    config: MetaConfig,
    init: GPHyper | None = None,
    deterministic: bool | None = None,
) -> Proposal:
    """One decision of the policy for B tasks: fit the GP, make candidates, score, pick."""
    if isinstance(codec_or_layout, SpaceCodec):
        layout = Layout(
            codec_or_layout.dim,
            codec_or_layout.categorical_columns,
            levels=torch.as_tensor(codec_or_layout.grid_levels),
        )
        snap = codec_snap(codec_or_layout)
    else:
        layout, snap = codec_or_layout
    B = x.shape[0]
    y = score_target(scores, config.target)
    with torch.enable_grad():
        cat_mask = layout.categorical if config.categorical_effects and layout.cat_groups else None
        hyper = fit_hyper(
            x,
            y,
            init,
            steps=config.fit_steps if init is not None else 3 * config.fit_steps,
            cat_mask=cat_mask,
        )
    tr_length = None
    if config.trust_region and x.shape[1] > 0:
        restart = {}
        if config.trust_region_restart == "global":
            restart = {"length_floor": trust_region_floor(layout), "restart_global": True}
        tr_length = trust_region_length(scores, int(layout.numeric.sum()), config.n_startup_trials, **restart)
    tr_weights = None
    if tr_length is not None and config.trust_region_ard:
        tr_weights = trust_region_weights(hyper.log_ls, layout.numeric)
    cand = make_candidates(
        x, scores, config.n_candidates, layout, gen, snap, tr_length, tr_weights, spread_ties=config.spread_ties
    )
    extra: list[torch.Tensor] = []  # candidates that replace as many local ones, at most half of them in all
    if config.categorical_sweep > 0 and x.shape[1] > 0:
        sweep = sweep_categoricals(x, scores, config.categorical_sweep, layout)
        if 0 < sweep.shape[1] <= cand.shape[1] // 2:
            extra.append(snap(sweep))
    if config.bound_sweep > 0 and x.shape[1] > 0:
        grid_only = config.bound_sweep_filter == "grid"
        bounds = sweep_bounds(x, scores, config.bound_sweep, layout, snap, grid_only=grid_only)
        if config.bound_sweep_filter == "mean" and bounds.shape[1] > 0:
            # only bounds the model's mean already prefers to the incumbent: a trend toward the bound, not
            # the posterior's width at the edge of the data (which EI alone would reward)
            gp = GPPosterior(x, y, hyper)
            inc = x.gather(1, y.argmax(1)[:, None, None].expand(B, 1, x.shape[2]))
            mu, _ = gp.predict(torch.cat([inc, bounds], 1))
            bounds = bounds[:, mu[0, 1:] >= mu[0, 0]]
        if 0 < bounds.shape[1] <= cand.shape[1] // 2 - sum(e.shape[1] for e in extra):
            extra.append(bounds)
    if config.quadratic_candidates > 0 and x.shape[1] > 0:
        quad = quadratic_candidates(
            x, scores, config.quadratic_candidates, layout, gen, snap, config.quadratic_fallback, hyper.log_ls
        )
        if 0 < quad.shape[1] <= cand.shape[1] // 2 - sum(e.shape[1] for e in extra):
            extra.append(quad)
    if extra:
        cand = torch.cat([cand[:, : cand.shape[1] - sum(e.shape[1] for e in extra)], *extra], 1)
    det = config.deterministic if deterministic is None else deterministic
    seen = None  # the finished and running configurations no candidate may repeat (one task, avoid_repeats)
    if B == 1 and config.avoid_repeats:
        seen = x[0] if x_pending is None else torch.cat([x[0], x_pending[0]], 0)
        fresh = unseen_candidates(cand[0], seen)
        if not fresh.any():  # the region around the incumbents is used up: candidates from the whole space
            cand = make_candidates(x[:, :0], scores[:, :0], config.n_candidates, layout, gen, snap)
            fresh = unseen_candidates(cand[0], seen)
        if fresh.any():
            cand = cand[:, fresh]
    multiplicity = None
    if B == 1 and det:  # snapping to grids and choices repeats configurations: score each distinct one once
        _, first, counts = np.unique(cand[0].numpy(), axis=0, return_index=True, return_counts=True)
        if len(first) < cand.shape[1]:
            order = np.argsort(first)  # first occurrences in their order: the argmax picks the same configuration
            cand, multiplicity = cand[:, torch.as_tensor(first[order])], torch.as_tensor(counts[order])[None]
    tf = torch.as_tensor(t_frac, dtype=DTYPE).expand(B) if not torch.is_tensor(t_frac) else t_frac.to(DTYPE)
    obs, _ = observe(x, y, x_pending, cand, hyper, tf, multiplicity)
    dist = policy.distribution(obs)
    if config.n_refine > 0:  # refine around the best-scored candidates, then score both rounds together
        refined = refine_candidates(cand, dist.logits, config.n_refine, layout, gen, snap)
        if seen is not None:
            refined = refined[:, unseen_candidates(refined[0], seen)]
        if multiplicity is not None:
            multiplicity = torch.cat([multiplicity, torch.ones(B, refined.shape[1], dtype=multiplicity.dtype)], 1)
        cand = torch.cat([cand, refined], 1)
        obs, _ = observe(x, y, x_pending, cand, hyper, tf, multiplicity)
        dist = policy.distribution(obs)
    if det:
        index = dist.mode()
    else:
        u = torch.rand(dist.logits.shape, generator=gen, dtype=dist.logits.dtype).clamp_(1e-20, 1.0)
        index = (dist.logits - torch.log(-torch.log(u))).argmax(-1)
    chosen = cand.gather(1, index[:, None, None].expand(B, 1, cand.shape[2])).squeeze(1)
    return Proposal(chosen, index, dist.log_prob(index), obs, cand, hyper)
