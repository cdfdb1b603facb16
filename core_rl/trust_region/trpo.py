r"""Trust region policy optimization (notes 9/19): the natural gradient step, checked on the true
objective of the constrained problem

.. math::
    \max_{\theta'} L_\theta(\theta') = \mathbb E_t\Big[\tfrac{\pi_{\theta'}(a_t|s_t)}{\pi_\theta(a_t|s_t)}\hat A_t\Big]
    \quad\text{s.t.}\quad \bar D_{KL}(\pi_{\theta'}\,\|\,\pi_\theta) \le \epsilon .

The direction :math:`x = F^{-1}\nabla_\theta J` and the full step
:math:`\Delta\theta = \sqrt{2\epsilon / x^T F x}\,x` are NPG's (:class:`~core_rl.trust_region.natural_pg.NaturalPG`);
the quadratic model may be wrong, so TRPO backtracks: for :math:`k = 0,1,\dots,K-1` it tries
:math:`\theta' = \theta + \beta^k \Delta\theta` and accepts the first one with

.. math::
    \bar D_{KL}(\pi_{\theta'}\,\|\,\pi_\theta) \le \epsilon, \qquad
    L_\theta(\theta') - L_\theta(\theta) > 0, \qquad
    \frac{L_\theta(\theta') - L_\theta(\theta)}{\beta^k\,\nabla_\theta J^T\Delta\theta} \ge r_{accept},

keeping θ when none passes (:func:`~core_rl.trust_region.common.backtracking_line_search`, shared
with CPO, which accepts its steps by a different test). :func:`trpo_line_search` is TRPO's step
acceptance as a plain function, used by :class:`TRPO` and TRPO-Lag.

Example (CartPole-v1 with the defaults: 5 updates of 2,048 steps, each inside the trust region)::

    >>> agent = TRPO("CartPole-v1", {"seed": 0}).learn(10_000)
    >>> agent.last_metrics["kl"] <= agent.config.max_kl
    True
    >>> agent.evaluate(n_episodes=5)["mean_return"] > 200   # random ≈ 22
    True
"""

from __future__ import annotations

import torch
from pydantic import Field

from core_rl.trust_region.common import backtracking_line_search
from core_rl.trust_region.natural_pg import Evaluate, NaturalPG, NaturalPGConfig


class TRPOConfig(NaturalPGConfig):
    max_backtracks: int = Field(10, ge=1, description="K, the most step sizes β^k tried by the line search.")
    backtrack_coef: float = Field(0.8, gt=0.0, lt=1.0, description="β, the step's shrink factor per backtrack.")
    accept_ratio: float = Field(0.1, ge=0.0, description="Least ratio of actual to expected surrogate gain.")


def trpo_line_search(
    params: list[torch.Tensor],
    theta: torch.Tensor,
    full_step: torch.Tensor,
    expected_gain: float,
    surrogate_old: float,
    evaluate: Evaluate,
    cfg: TRPOConfig,
) -> dict[str, float]:
    """TRPO's backtracking line search: the first θ + β^k Δθ with D̄_KL ≤ ε, a positive surrogate gain and
    gain / (β^k gᵀΔθ) ≥ r_accept; θ is kept when none passes. Returns the step's metrics."""

    def accept(result: tuple[float, float], fraction: float) -> bool:
        surrogate_new, kl = result
        gain, expected = surrogate_new - surrogate_old, fraction * expected_gain
        return kl <= cfg.max_kl and gain > 0 and expected > 0 and gain / expected >= cfg.accept_ratio

    k, fraction, result = backtracking_line_search(
        params, theta, full_step, evaluate, accept, cfg.max_backtracks, cfg.backtrack_coef
    )
    if result is None:
        return {
            "kl": 0.0,
            "surrogate_gain": 0.0,
            "step_fraction": 0.0,
            "backtracks": float(cfg.max_backtracks),
            "accepted": 0.0,
        }
    surrogate_new, kl = result
    return {
        "kl": kl,
        "surrogate_gain": surrogate_new - surrogate_old,
        "step_fraction": fraction,
        "backtracks": float(k),
        "accepted": 1.0,
    }


class TRPO(NaturalPG):
    """NPG whose step is found by a KL- and improvement-checked backtracking line search."""

    name = "trpo"
    config: TRPOConfig
    config_cls = TRPOConfig
    step_rule = trpo_line_search
