r"""What NPG, TRPO and the KL-dual method share (notes 9/19): the KL-constrained surrogate problem

.. math::
    \theta' \leftarrow \arg\max_{\theta'} L_\theta(\theta') =
        \mathbb E_{s,a\sim\pi_\theta}\Big[\tfrac{\pi_{\theta'}(a|s)}{\pi_\theta(a|s)}\hat A(s,a)\Big]
    \quad\text{s.t.}\quad \bar D_{KL}(\pi_{\theta'}\,\|\,\pi_\theta) \le \epsilon ,

with :math:`\bar D_{KL}` the mean over the batch's states of the distributions' closed-form KL.

Second-order pieces (natural gradient, TRPO). Around θ' = θ the mean KL is quadratic,
:math:`\bar D_{KL} \approx \tfrac12 (\theta'-\theta)^T F (\theta'-\theta)` with F the Fisher
information :math:`F = \mathbb E[\nabla\log\pi_\theta\,\nabla\log\pi_\theta^T]` = the Hessian of
the mean KL at θ' = θ. F is never formed: the Fisher-vector product is a Hessian-vector product by
double backprop (Pearlmutter's trick),

.. math:: (F + \delta I) v = \nabla_\theta\big[(\nabla_\theta \bar D_{KL})^T v\big] + \delta v ,

and :math:`F^{-1} g` is found by conjugate gradient from these products alone
(:func:`natural_gradients`). The step that meets the quadratic constraint with equality is
:math:`\Delta\theta = \sqrt{2\epsilon / x^T(F+\delta I)x}\,x` with :math:`x = (F+\delta I)^{-1}g`
(:func:`natural_step`); the quadratic model may be wrong, so a backtracking line search
(:func:`backtracking_line_search`) tries :math:`\theta + \beta^k\Delta\theta`, k = 0..K−1, and keeps
the first that its acceptance test passes (θ itself when none does). NPG, TRPO and CPO share these
functions; they differ only in the step they scale and the test they accept it with.

First-order pieces (every member): the surrogate :math:`L` (plus an optional entropy bonus), and the
critic :math:`V_\phi`, fitted by its own Adam optimizer for several epochs of minibatch regression
on the returns :math:`\hat y_t` of the shared estimator (GAE(λ) by default):
:math:`\min_\phi \sum_t (V_\phi(s_t) - \hat y_t)^2`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from pydantic import Field
from torch import nn

from core_rl.common.buffers import FlatBatch, RolloutBatch
from core_rl.common.distributions import Categorical, DiagGaussian
from core_rl.common.on_policy import OnPolicyAgent, OnPolicyConfig
from core_rl.common.optim import l2_penalty

Dist = Categorical | DiagGaussian
MatVec = Callable[[torch.Tensor], torch.Tensor]
Result = TypeVar("Result")


# ---- flat parameter vectors ------------------------------------------------------------------
def policy_params(policy: nn.Module) -> list[torch.Tensor]:
    """The trainable parameters θ, in the order the flat vectors use."""
    return [p for p in policy.parameters() if p.requires_grad]


def flat_params(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """θ as one vector (a detached copy)."""
    return torch.cat([p.detach().reshape(-1) for p in params]).clone()


def set_flat_params(params: Iterable[torch.Tensor], flat: torch.Tensor) -> None:
    """Write the vector ``flat`` back into the parameters, in the order of :func:`flat_params`."""
    params = list(params)
    total = sum(p.numel() for p in params)
    if flat.numel() != total:
        raise ValueError(f"flat vector has {flat.numel()} entries, the parameters {total}")
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(flat[offset : offset + n].view_as(p))
            offset += n


def flat_grad(
    output: torch.Tensor, params: Sequence[torch.Tensor], retain_graph: bool = False, create_graph: bool = False
) -> torch.Tensor:
    """∇_θ output as one vector (zeros for parameters the output does not depend on)."""
    grads = torch.autograd.grad(output, params, retain_graph=retain_graph, create_graph=create_graph, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])


# ---- linear algebra --------------------------------------------------------------------------
def conjugate_gradient(matvec: MatVec, b: torch.Tensor, iters: int = 10, tol: float = 1e-10) -> torch.Tensor:
    """Solve A x = b for symmetric positive definite A given only x ↦ A x.

    Stops after ``iters`` iterations or once the squared residual ‖b − A x‖² drops below ``tol``.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r @ r
    for _ in range(iters):
        if rr <= tol:
            break
        Ap = matvec(p)
        alpha = rr / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def mean_kl(new: Dist, old: Dist) -> torch.Tensor:
    """D̄_KL(π_θ' ‖ π_θ): the closed-form KL of each state's action distributions, averaged."""
    return new.kl(old).mean()


def fisher_vector_product(kl: torch.Tensor, params: Sequence[torch.Tensor], damping: float = 0.0) -> MatVec:
    """v ↦ (F + δI) v, with F the Hessian of ``kl`` (the mean KL, built with a graph to ``params``).

    ∇D̄_KL is computed once with ``create_graph=True``; each product is one more backward pass
    through (∇D̄_KL)ᵀv.
    """
    grad_kl = flat_grad(kl, params, retain_graph=True, create_graph=True)

    def fvp(v: torch.Tensor) -> torch.Tensor:
        return flat_grad(grad_kl @ v.detach(), params, retain_graph=True) + damping * v

    return fvp


# ---- the natural step and the line search (NPG, TRPO, CPO) ------------------------------------
@dataclass
class NaturalGradients:
    """The second-order model of the policy at θ for one or more objectives L_i(θ').

    ``values[i]`` = L_i(θ), ``grads[i]`` = ∇_θ L_i, ``directions[i]`` ≈ (F+δI)⁻¹∇_θ L_i (conjugate
    gradient), ``fvp`` = v ↦ (F+δI)v; ``old``/``old_log_prob`` are π_θ and log π_θ(a_t|s_t), detached.
    """

    theta: torch.Tensor
    old: Dist
    old_log_prob: torch.Tensor
    values: list[float]
    grads: list[torch.Tensor]
    directions: list[torch.Tensor]
    fvp: MatVec


def natural_gradients(
    policy: nn.Module,
    obs: torch.Tensor,
    actions: torch.Tensor,
    objectives: Callable[[Dist, torch.Tensor], Sequence[torch.Tensor]],
    damping: float,
    cg_iters: int,
    cg_tol: float,
) -> NaturalGradients:
    r"""Gradients :math:`g_i = \nabla_\theta L_i` of the ``objectives(π_θ', log π_θ(a|s))`` at θ' = θ and the
    natural directions :math:`(F+\delta I)^{-1}g_i`, by conjugate gradient on Fisher-vector products."""
    params = policy_params(policy)
    theta = flat_params(params)
    dist = policy.distribution(obs)
    old = dist.detach()
    old_log_prob = old.log_prob(actions)
    values = objectives(dist, old_log_prob)
    grads = [flat_grad(v, params, retain_graph=True) for v in values]
    fvp = fisher_vector_product(mean_kl(dist, old), params, damping)
    directions = [conjugate_gradient(fvp, g, cg_iters, cg_tol) for g in grads]
    return NaturalGradients(
        theta=theta,
        old=old,
        old_log_prob=old_log_prob.detach(),
        values=[float(v.detach()) for v in values],
        grads=[g.detach() for g in grads],
        directions=directions,
        fvp=fvp,
    )


def natural_step(
    grad: torch.Tensor, direction: torch.Tensor, fvp: MatVec, max_kl: float
) -> tuple[torch.Tensor, float, float]:
    r"""The full natural step :math:`\Delta\theta = \sqrt{2\epsilon / x^T(F+\delta I)x}\,x` for
    :math:`x \approx (F+\delta I)^{-1}g`, so that ½Δθᵀ(F+δI)Δθ = ε.

    Returns ``(Δθ, expected gain gᵀΔθ, CG's relative residual ‖(F+δI)x − g‖ / ‖g‖)``.
    """
    fx = fvp(direction)
    x_f_x = float(direction @ fx)
    scale = math.sqrt(2.0 * max_kl / x_f_x) if x_f_x > 0 else 0.0
    full_step = (scale * direction).detach()
    return (full_step, float(grad @ full_step), float((fx - grad).norm() / grad.norm().clamp_min(1e-12)))


def backtracking_line_search(
    params: Sequence[torch.Tensor],
    theta: torch.Tensor,
    full_step: torch.Tensor,
    evaluate: Callable[[torch.Tensor], Result],
    accept: Callable[[Result, float], bool],
    max_backtracks: int,
    backtrack_coef: float,
) -> tuple[int, float, Result | None]:
    r"""Try :math:`\theta' = \theta + \beta^k\Delta\theta` for k = 0..K−1 and keep the first that passes.

    ``evaluate(θ')`` writes θ' into the policy and measures it; ``accept(result, β^k)`` decides.
    Returns ``(k, β^k, result)`` of the accepted step, or ``(K, 0, None)`` with θ written back.
    """
    for k in range(max_backtracks):
        fraction = backtrack_coef**k
        result = evaluate(theta + fraction * full_step)
        if accept(result, fraction):
            return k, fraction, result
    set_flat_params(params, theta)
    return max_backtracks, 0.0, None


# ---- the agent base --------------------------------------------------------------------------
class TrustRegionConfig(OnPolicyConfig):
    n_envs: int = Field(8, ge=1)
    n_steps: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0.0, description="Learning rate of the critic's Adam optimizer.")
    vf_epochs: int = Field(5, ge=1, description="Critic regression epochs per iteration.")
    vf_batch_size: int = Field(64, ge=1, description="Critic regression minibatch size.")
    critic_l2: float = Field(
        0.0,
        ge=0.0,
        description="c of the L2 penalty c·Σ_φ ‖φ‖² added to the critic's regression loss (OmniSafe's "
        "critic_norm_coef, 0.001 in its TRPO/CPO/Lagrangian configs); 0: none.",
    )


class TrustRegionAgent(OnPolicyAgent):
    """On-policy agent whose policy improves on the surrogate L under a KL trust region.

    ``update`` estimates Â (shared estimator), lets the subclass improve π (:meth:`improve_policy`),
    then fits V_φ. ``self.optimizer`` is the critic's own Adam optimizer (None without a critic).
    """

    config: TrustRegionConfig
    config_cls = TrustRegionConfig

    def _build_optimizers(self) -> None:
        self.optimizer = (
            torch.optim.Adam(self.value.parameters(), lr=self.config.lr, eps=1e-5) if self.value is not None else None
        )

    def _scheduled_optimizers(self) -> list[tuple[torch.optim.Optimizer, float]]:
        """(optimizer, base learning rate) pairs that ``lr_schedule`` scales."""
        return [(self.optimizer, self.config.lr)] if self.optimizer is not None else []

    def _apply_lr_schedule(self) -> float:
        frac = self._progress_remaining() if self.config.lr_schedule == "linear" else 1.0
        for opt, base in self._scheduled_optimizers():
            for group in opt.param_groups:
                group["lr"] = base * frac
        return self.config.lr * frac

    def surrogate(
        self, dist: Dist, actions: torch.Tensor, old_log_prob: torch.Tensor, advantage: torch.Tensor
    ) -> torch.Tensor:
        """L(θ') = mean_t ρ_t Â_t (+ c_H H[π_θ']), ρ_t = π_θ'(a_t|s_t) / π_θ(a_t|s_t)."""
        ratio = (dist.log_prob(actions) - old_log_prob).exp()
        out = (ratio * advantage).mean()
        if self.config.ent_coef > 0:
            out = out + self.config.ent_coef * dist.entropy().mean()
        return out

    def fit_critic(self, flat: FlatBatch) -> float:
        """Minibatch Adam regression of V_φ(s_t) on the estimator's returns ŷ_t,
        min_φ mean_t (V_φ(s_t) − ŷ_t)² + c·Σ‖φ‖² (``critic_l2`` = c); mean squared error."""
        if self.value is None:
            return 0.0
        cfg = self.config
        total, n = 0.0, 0
        for _ in range(cfg.vf_epochs):
            for mb in flat.minibatches(cfg.vf_batch_size):
                value_loss = (self.value(mb.obs) - mb.returns).pow(2).mean()
                self._clip_and_step(value_loss + l2_penalty(self.value, cfg.critic_l2), self.optimizer)
                total += value_loss.item()
                n += 1
        return total / max(n, 1)

    def improve_policy(self, flat: FlatBatch, advantage: torch.Tensor) -> dict[str, float]:
        raise NotImplementedError

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        flat = batch.flat()
        advantage = self.normalize(flat.advantages) if self.config.normalize_advantage else flat.advantages
        metrics = self.improve_policy(flat, advantage.detach())
        metrics["value_loss"] = self.fit_critic(flat)
        return metrics
