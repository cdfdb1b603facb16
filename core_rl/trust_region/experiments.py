r"""The natural gradient is invariant to reparametrization; the vanilla gradient is not (notes 9/19).

A tabular softmax policy :math:`\pi(a|s) = \mathrm{softmax}(z_s)_a` on a small finite-horizon MDP is
written in two parametrizations of the same logits, :math:`z = \theta` and :math:`z = M\phi`
(:math:`M` invertible, condition number κ; :math:`\phi = M^{-1}\theta` is the same policy). By the
chain rule :math:`g_\phi = M^T g_\theta` and :math:`F_\phi = M^T F_\theta M`, so

.. math::
    \text{vanilla: } \Delta z = M\,\Delta\phi \propto M M^T g_\theta \;\ne\; g_\theta ,\qquad
    \text{natural: } \Delta z = M F_\phi^{-1} g_\phi = M M^{-1}F_\theta^{-1}M^{-T}M^T g_\theta
        = F_\theta^{-1} g_\theta .

The natural step is the notes' :math:`\theta' = \theta + \sqrt{2\epsilon/(g^T F^{-1} g)}\,F^{-1}g`
(:func:`~core_rl.trust_region.common.natural_step`, F⁻¹g by conjugate gradient on Fisher-vector
products); the vanilla step is scaled to the same quadratic KL, :math:`\Delta = \sqrt{2\epsilon/g^TFg}\,g`,
so both move the policy equally far. We measure how much the two parametrizations' new policies
disagree, :math:`\frac1{|S|}\sum_s D_{KL}(\pi^{(\theta)}_{new}(\cdot|s)\,\|\,\pi^{(\phi)}_{new}(\cdot|s))`,
and the improvement :math:`J(\theta') - J(\theta)` of each (J exact, as in
:mod:`core_rl.policy_gradient.experiments`). F is the Hessian of the KL averaged uniformly over the
states; the invariance holds for any fixed state weighting. An orthogonal M (κ = 1) leaves the vanilla
gradient invariant too (:math:`MM^T = I`); the larger κ, the more it is distorted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from core_rl.common.distributions import Categorical
from core_rl.common.errors import ConfigError
from core_rl.common.tracking import NullTracker, Tracker
from core_rl.policy_gradient.experiments import exact_return, random_mdp
from core_rl.trust_region.common import natural_gradients, natural_step, set_flat_params


class LinearSoftmaxPolicy(nn.Module):
    """π(a|s) = softmax((M φ)_s)_a with a fixed invertible M (S·A × S·A) and parameters φ."""

    def __init__(self, M: torch.Tensor, n_states: int, n_actions: int):
        super().__init__()
        self.register_buffer("M", M)
        self.n_states, self.n_actions = n_states, n_actions
        self.phi = nn.Parameter(torch.zeros(M.shape[1], dtype=M.dtype))

    def logits(self) -> torch.Tensor:
        return (self.M @ self.phi).view(self.n_states, self.n_actions)

    def distribution(self, obs: torch.Tensor) -> Categorical:
        return Categorical(self.logits()[obs.long()])


def conditioned_matrix(dim: int, kappa: float, rng: np.random.Generator) -> torch.Tensor:
    """M = U diag(σ) Vᵀ with random orthogonal U, V and singular values log-spaced from 1 to 1/κ."""
    U, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    V, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    return torch.as_tensor(U @ np.diag(np.geomspace(1.0, 1.0 / kappa, dim)) @ V.T, dtype=torch.float64)


def _step(policy: LinearSoftmaxPolicy, mdp: Any, natural: bool, max_kl: float) -> tuple[torch.Tensor, float]:
    """The new logits after one natural or (KL-scaled) vanilla step, and the exact gain J(θ') − J(θ)."""
    states = torch.arange(policy.n_states)
    ng = natural_gradients(
        policy,
        states,
        torch.zeros(policy.n_states, dtype=torch.long),
        lambda dist, _old: [exact_return(mdp, dist.probs)],
        damping=0.0,
        cg_iters=4 * policy.phi.numel(),
        cg_tol=1e-24,
    )
    g = ng.grads[0]
    direction = ng.directions[0] if natural else g
    delta, _, _ = natural_step(g, direction, ng.fvp, max_kl)
    J0 = ng.values[0]
    set_flat_params([policy.phi], ng.theta + delta)
    with torch.no_grad():
        logits = policy.logits().clone()
        gain = float(exact_return(mdp, torch.softmax(logits, -1))) - J0
    set_flat_params([policy.phi], ng.theta)
    return logits, gain


def _mean_kl(a: torch.Tensor, b: torch.Tensor) -> float:
    return max(0.0, float(Categorical(a).kl(Categorical(b)).mean()))  # ≥ 0 up to rounding


def run_natural_gradient_invariance(
    tracker: Tracker | None = None,
    seed: int = 0,
    kappas: Sequence[float] = (1.0, 3.0, 10.0, 30.0, 100.0),
    n_states: int = 3,
    n_actions: int = 3,
    horizon: int = 4,
    max_kl: float = 0.01,
    mdp_seed: int = 7,
) -> dict[str, Any]:
    """For each condition number κ: the disagreement (mean KL) between the new policies of the θ and
    the φ = M⁻¹θ parametrization after one natural and one vanilla step of KL ``max_kl``."""
    if not kappas or min(kappas) < 1.0:
        raise ConfigError(f"kappas must be condition numbers >= 1, got {list(kappas)}")
    if max_kl <= 0:
        raise ConfigError(f"max_kl must be positive, got {max_kl}")
    tracker = tracker or NullTracker()
    mdp = random_mdp(n_states, n_actions, horizon, mdp_seed)
    rng = np.random.default_rng(seed)
    dim = n_states * n_actions
    z0 = torch.as_tensor(rng.normal(size=dim), dtype=torch.float64)
    base = LinearSoftmaxPolicy(torch.eye(dim, dtype=torch.float64), n_states, n_actions)
    set_flat_params([base.phi], z0)
    reference = {nat: _step(base, mdp, nat, max_kl) for nat in (True, False)}
    rows: dict[str, list[float]] = {k: [] for k in ("natural_kl", "vanilla_kl", "natural_gain", "vanilla_gain")}
    for kappa in kappas:
        M = conditioned_matrix(dim, float(kappa), rng)
        policy = LinearSoftmaxPolicy(M, n_states, n_actions)
        set_flat_params([policy.phi], torch.linalg.solve(M, z0))  # the same policy as `base`
        for nat, name in ((True, "natural"), (False, "vanilla")):
            logits, gain = _step(policy, mdp, nat, max_kl)
            rows[f"{name}_kl"].append(_mean_kl(reference[nat][0], logits))
            rows[f"{name}_gain"].append(gain)
        tracker.log_metrics({k: v[-1] for k, v in rows.items()}, step=len(rows["natural_kl"]))
    out: dict[str, Any] = {
        "kappas": [float(k) for k in kappas],
        "step_kl": max_kl,
        "natural_gain_theta": reference[True][1],
        "vanilla_gain_theta": reference[False][1],
        "max_natural_kl_between_parametrizations": max(rows["natural_kl"]),
        "max_vanilla_kl_between_parametrizations": max(rows["vanilla_kl"]),
        **rows,
    }

    from core_rl.common.plotting import plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    floor = 1e-18
    ax1.loglog(kappas, np.maximum(rows["vanilla_kl"], floor), "o-", label="vanilla")
    ax1.loglog(kappas, np.maximum(rows["natural_kl"], floor), "s-", label="natural")
    ax1.set_xlabel("condition number κ of the reparametrization M")
    ax1.set_ylabel("KL(π_new(θ) ‖ π_new(φ)), mean over s")
    ax1.set_title(f"same policy, two parametrizations, step KL {max_kl}")
    ax1.legend()
    ax2.semilogx(kappas, rows["vanilla_gain"], "o-", label="vanilla (φ)")
    ax2.semilogx(kappas, rows["natural_gain"], "s-", label="natural (φ)")
    ax2.axhline(reference[False][1], color="tab:blue", ls=":", label="vanilla (θ)")
    ax2.axhline(reference[True][1], color="tab:orange", ls="--", label="natural (θ)")
    ax2.set_xlabel("κ")
    ax2.set_ylabel("exact J(θ') − J(θ)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    tracker.log_figure(fig, "natural_gradient_invariance.png")
    plt.close(fig)
    return out


__all__ = ["LinearSoftmaxPolicy", "conditioned_matrix", "run_natural_gradient_invariance"]
