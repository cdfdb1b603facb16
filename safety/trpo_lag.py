r"""TRPO-Lag: TRPO's KL-constrained natural step on the Lagrangian of the CMDP.

Each iteration takes the dual step on λ from the rollout's episodic costs (:mod:`safety.lagrangian`),

.. math:: \lambda_k \leftarrow \max\big(0,\ \lambda_k + \alpha(\hat J_{c_k} - d_k)\big),

then TRPO's step (notes 9/19) on the surrogate of the Lagrangian's advantage,

.. math::
    \max_{\theta'} \mathbb E_t\Big[\tfrac{\pi_{\theta'}(a_t|s_t)}{\pi_\theta(a_t|s_t)}
        \frac{\hat A^r_t - \sum_k\lambda_k\hat A^{c_k}_t}{1+\sum_k\lambda_k}\Big]
    \quad\text{s.t.}\quad \bar D_{KL}(\pi_{\theta'}\|\pi_\theta)\le\epsilon,

by conjugate gradient on Fisher-vector products and a backtracking line search — the natural step
of :class:`~core_rl.trust_region.natural_pg.NaturalPG` and TRPO's line search
(:func:`~core_rl.trust_region.trpo.trpo_line_search`), which see only a different advantage. The
agent is composed of the same parts as PPO-Lag (:mod:`safety.parts`): the cost monitor, the cost
critic and the Lagrange multiplier.

Example (safety/CartPole-v0, whose costs count the steps outside a safe band or over a speed cap:
with a limit of 0 every episode's cost is a violation, and dual ascent raises λ from 0)::

    >>> import safety  # registers the safety/ envs
    >>> settings = {"n_envs": 8, "n_steps": 64, "cost_limit": 0.0}
    >>> agent = TRPOLag("safety/CartPole-v0", {**settings, "seed": 0}).learn(2048)
    >>> agent.last_metrics["episode_cost"] > 0, agent.last_metrics["lambda"] > 0
    (True, True)
"""

from __future__ import annotations

from core_rl.trust_region.natural_pg import NaturalPG
from core_rl.trust_region.trpo import TRPOConfig, trpo_line_search
from safety.on_policy import LagrangianOnPolicyConfig
from safety.parts import LAGRANGIAN_PARTS


class TRPOLagConfig(LagrangianOnPolicyConfig, TRPOConfig):
    """TRPO's fields (ε = ``max_kl``, the line search's), the constraints, the cost critic's and λ's."""


class TRPOLag(NaturalPG):
    """TRPO on the Lagrangian's advantage, λ by dual ascent (or PID with ``multiplier="pid"``)."""

    name = "trpo_lag"
    config: TRPOLagConfig
    config_cls = TRPOLagConfig
    part_types = LAGRANGIAN_PARTS

    step_rule = trpo_line_search  # TRPO's backtracking line search
