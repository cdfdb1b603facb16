"""Synthetic training tasks for the meta policy, batched in torch.

Two families, both on the unit cube and both disjoint from the evaluation suites (no BBOB
function — sphere, ellipsoids, Rastrigin, Rosenbrock, … — no tabular benchmark, no real model):

* ``gp``: samples of a Gaussian process with a Matérn-5/2-like spectrum drawn by random Fourier
  features, random ARD lengthscales (some columns irrelevant, as in most HPO problems) and an
  optional bowl-shaped trend;
* ``analytic``: classic test functions that BBOB does not contain (Branin, six-hump camel,
  Goldstein–Price, Hartmann-3/6, Ackley, Levy, Styblinski–Tang, Michalewicz), each on a random
  sub-box of its domain, with extra irrelevant columns.

On top of either, columns can be discretized into grids (ints) and one-hot categorical groups can
be added (each category shifts the inputs and offsets the value), so the policy meets the mixed
spaces of real hyperparameter tuning. Every task is a minimization problem.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from autotune.meta import DTYPE, Layout

Fn = Callable[[torch.Tensor], torch.Tensor]  # [B,q,d] in the function's own domain -> [B,q]


# ---- analytic functions (minimized), batched over B and q -------------------------------------
def _branin(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., 0], x[..., 1]
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * torch.cos(x1) + 10


def _camel(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., 0], x[..., 1]
    return (4 - 2.1 * x1**2 + x1**4 / 3) * x1**2 + x1 * x2 + (-4 + 4 * x2**2) * x2**2


def _goldstein_price(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., 0], x[..., 1]
    a = 1 + (x1 + x2 + 1) ** 2 * (19 - 14 * x1 + 3 * x1**2 - 14 * x2 + 6 * x1 * x2 + 3 * x2**2)
    b = 30 + (2 * x1 - 3 * x2) ** 2 * (18 - 32 * x1 + 12 * x1**2 + 48 * x2 - 36 * x1 * x2 + 27 * x2**2)
    return torch.log(a * b)


_H3_A = torch.tensor([[3.0, 10, 30], [0.1, 10, 35], [3.0, 10, 30], [0.1, 10, 35]], dtype=DTYPE)
_H3_P = 1e-4 * torch.tensor(
    [[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547], [381, 5743, 8828]], dtype=DTYPE
)
_H6_A = torch.tensor(
    [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]],
    dtype=DTYPE,
)
_H6_P = 1e-4 * torch.tensor(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ],
    dtype=DTYPE,
)
_H_ALPHA = torch.tensor([1.0, 1.2, 3.0, 3.2], dtype=DTYPE)


def _hartmann(a: torch.Tensor, p: torch.Tensor) -> Fn:
    def f(x: torch.Tensor) -> torch.Tensor:
        inner = (a * (x.unsqueeze(-2) - p).pow(2)).sum(-1)  # [...,4]
        return -(_H_ALPHA * torch.exp(-inner)).sum(-1)

    return f


def _ackley(x: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1]
    return (
        -20 * torch.exp(-0.2 * torch.sqrt(x.pow(2).sum(-1) / d))
        - torch.exp(torch.cos(2 * math.pi * x).sum(-1) / d)
        + 20
        + math.e
    )


def _levy(x: torch.Tensor) -> torch.Tensor:
    w = 1 + (x - 1) / 4
    head = torch.sin(math.pi * w[..., 0]) ** 2
    mid = ((w[..., :-1] - 1) ** 2 * (1 + 10 * torch.sin(math.pi * w[..., :-1] + 1) ** 2)).sum(-1)
    tail = (w[..., -1] - 1) ** 2 * (1 + torch.sin(2 * math.pi * w[..., -1]) ** 2)
    return head + mid + tail


def _styblinski_tang(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (x.pow(4) - 16 * x.pow(2) + 5 * x).sum(-1)


def _michalewicz(x: torch.Tensor) -> torch.Tensor:
    i = torch.arange(1, x.shape[-1] + 1, dtype=x.dtype)
    return -(torch.sin(x) * torch.sin(i * x.pow(2) / math.pi) ** 20).sum(-1)


# name -> (function, fixed dimension or None, per-dimension domain)
ANALYTIC: dict[str, tuple[Fn, int | None, tuple[float, float] | list[tuple[float, float]]]] = {
    "branin": (_branin, 2, [(-5.0, 10.0), (0.0, 15.0)]),
    "camel": (_camel, 2, [(-3.0, 3.0), (-2.0, 2.0)]),
    "goldstein_price": (_goldstein_price, 2, (-2.0, 2.0)),
    "hartmann3": (_hartmann(_H3_A, _H3_P), 3, (0.0, 1.0)),
    "hartmann6": (_hartmann(_H6_A, _H6_P), 6, (0.0, 1.0)),
    "ackley": (_ackley, None, (-5.0, 5.0)),
    "levy": (_levy, None, (-10.0, 10.0)),
    "styblinski_tang": (_styblinski_tang, None, (-5.0, 5.0)),
    "michalewicz": (_michalewicz, None, (0.0, math.pi)),
}


@dataclass
class TaskBatch:
    """B minimization tasks sharing one unit-cube layout."""

    layout: Layout
    levels: torch.Tensor  # [D] grid levels per column (0: continuous or categorical)
    fn: Callable[[torch.Tensor], torch.Tensor]  # unit cube [B,q,D] -> [B,q]
    name: str

    @property
    def dim(self) -> int:
        return self.layout.dim

    def snap(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.levels > 0
        if not bool(grid.any()):
            return x
        k = self.levels.to(x.dtype).clamp_min(1)
        snapped = ((x * k).floor().clamp(max=k - 1) + 0.5) / k
        return torch.where(grid, snapped, x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def uniform(self, B: int, q: int, gen: torch.Generator) -> torch.Tensor:
        x = torch.rand(B, q, self.dim, generator=gen, dtype=DTYPE)
        for s, w in self.layout.cat_groups:
            x[..., s : s + w] = torch.nn.functional.one_hot(torch.randint(0, w, (B, q), generator=gen), w).to(DTYPE)
        return self.snap(x)

    def star(self, B: int, step: float, gen: torch.Generator) -> torch.Tensor:
        """``[B, 1 + d, dim]``: the star design :class:`autotune.meta.MetaSampler` opens a study with, in unit
        coordinates — the centre of the box, then each of the d numeric columns alone moved by ``step`` (the
        other way, or one grid level, where the step stays in the centre's grid cell); the categoricals take one
        uniform draw per task, shared by every point (as the design keeps trial 0's choices)."""
        centre = self.uniform(B, 1, gen)
        numeric = self.layout.numeric
        centre[..., numeric] = 0.5
        centre = self.snap(centre)
        points = [centre]
        for j in numeric.nonzero().flatten().tolist():
            k = int(self.levels[j])
            for u in (0.5 + step, 0.5 - step) + ((0.5 + 1.0 / k, 0.5 - 1.0 / k) if k > 0 else ()):
                moved = centre.clone()
                moved[..., j] = min(max(u, 0.0), 1.0)
                moved = self.snap(moved)
                if not torch.equal(moved[..., j], centre[..., j]):
                    break
            points.append(moved)
        return torch.cat(points, 1)


def _rand(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=gen, dtype=DTYPE)


def _gp_function(B: int, d: int, gen: torch.Generator, n_features: int = 256) -> Fn:
    log_ls = math.log(0.06) + _rand(gen, B, d) * (math.log(0.7) - math.log(0.06))
    irrelevant = (_rand(gen, B, d) < 0.3) & (torch.arange(d) > 0)
    ls = torch.where(irrelevant, torch.full_like(log_ls, 1e3), log_ls.exp())
    # Student-t(ν = 5/2) spectral density: ω = g / sqrt(s), s ~ Gamma(ν, ν)
    nu = 2.5
    g = torch.randn(B, n_features, d, generator=gen, dtype=DTYPE)
    s = torch.distributions.Gamma(torch.full((B, n_features, 1), nu, dtype=DTYPE), nu).sample()
    omega = g / s.sqrt() / ls.unsqueeze(1)
    phase = 2 * math.pi * _rand(gen, B, n_features)
    amp = torch.randn(B, n_features, generator=gen, dtype=DTYPE) * math.sqrt(2.0 / n_features)
    bowl = (_rand(gen, B) < 0.5).to(DTYPE) * (0.5 + 2.0 * _rand(gen, B))
    center = _rand(gen, B, d)
    relevant = (~irrelevant).to(DTYPE)

    def f(x: torch.Tensor) -> torch.Tensor:
        proj = torch.einsum("bqd,bfd->bqf", x, omega) + phase.unsqueeze(1)
        wave = (torch.cos(proj) * amp.unsqueeze(1)).sum(-1)
        trend = ((x - center.unsqueeze(1)).pow(2) * relevant.unsqueeze(1)).sum(-1)
        return wave + bowl.unsqueeze(1) * trend

    return f


def _analytic_function(name: str, B: int, d: int, gen: torch.Generator) -> tuple[Fn, int]:
    fn, fixed, domain = ANALYTIC[name]
    d_f = fixed or d
    bounds = torch.tensor(domain if isinstance(domain, list) else [domain] * d_f, dtype=DTYPE)  # [d_f,2]
    width = bounds[:, 1] - bounds[:, 0]
    frac = 0.5 + 0.5 * _rand(gen, B, d_f)  # each task sees a random sub-box
    lo = bounds[:, 0] + (1 - frac) * width * _rand(gen, B, d_f)
    hi = lo + frac * width
    flip = _rand(gen, B, d_f) < 0.5
    lo, hi = torch.where(flip, hi, lo), torch.where(flip, lo, hi)

    def f(u: torch.Tensor) -> torch.Tensor:
        return fn(lo.unsqueeze(1) + u[..., :d_f] * (hi - lo).unsqueeze(1))

    return f, d_f


def sample_tasks(
    B: int, gen: torch.Generator, family: str | None = None, max_dim: int = 8, mixed: bool | None = None
) -> TaskBatch:
    """B tasks of one random family, dimension and layout (each task its own random draw)."""
    fam = family or ("gp" if float(_rand(gen, 1)) < 0.5 else "analytic")
    if fam == "gp":
        d_num = int(torch.randint(1, max_dim + 1, (1,), generator=gen))
        base: Fn = _gp_function(B, d_num, gen)
        name = f"gp{d_num}"
    else:
        names = sorted(ANALYTIC)
        name = names[int(torch.randint(0, len(names), (1,), generator=gen))]
        d = int(torch.randint(2, 7, (1,), generator=gen))
        base, d_f = _analytic_function(name, B, d, gen)
        d_num = min(max_dim, d_f + int(torch.randint(0, 3, (1,), generator=gen)))  # + irrelevant columns
        d_num = max(d_num, d_f)
        name = f"{name}{d_f}+{d_num - d_f}"
    mix = bool(_rand(gen, 1) < 0.5) if mixed is None else mixed
    levels = torch.zeros(d_num, dtype=torch.long)
    groups: list[tuple[int, int]] = []
    if mix:
        gridded = _rand(gen, d_num) < 0.3
        levels = torch.where(gridded, torch.randint(3, 13, (d_num,), generator=gen), levels)
        n_cat = int(torch.randint(0, 3, (1,), generator=gen))
        col = d_num
        for _ in range(n_cat):
            k = int(torch.randint(2, 6, (1,), generator=gen))
            groups.append((col, k))
            col += k
        levels = torch.cat([levels, torch.zeros(col - d_num, dtype=torch.long)])
    D = d_num + sum(w for _, w in groups)
    shifts = [0.08 * torch.randn(B, w, d_num, generator=gen, dtype=DTYPE) for _, w in groups]
    offsets = [0.5 * torch.randn(B, w, generator=gen, dtype=DTYPE) for _, w in groups]
    scale_probe = _rand(gen, B, 256, d_num)
    spread = base(scale_probe).std(1).clamp_min(1e-9)  # [B]

    def fn(x: torch.Tensor) -> torch.Tensor:
        xn = x[..., :d_num]
        extra = torch.zeros(x.shape[:-1], dtype=x.dtype)
        for (s, w), shift, off in zip(groups, shifts, offsets):
            onehot = x[..., s : s + w]
            xn = xn + torch.einsum("bqk,bkd->bqd", onehot, shift)
            extra = extra + (onehot * off.unsqueeze(1)).sum(-1) * spread.unsqueeze(1)
        return base(xn.clamp(0.0, 1.0)) + extra

    tb = TaskBatch(Layout(D, groups, levels=levels), levels, fn, name + (f"+mixed{len(groups)}" if mix else ""))
    return tb
