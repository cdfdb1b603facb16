r"""PPO-Lag and PID-Lag: PPO on the Lagrangian of the CMDP (Ray, Achiam & Amodei 2019; Stooke et al. 2020).

The CMDP :math:`\max_\theta J_r(\theta)\ \text{s.t.}\ J_{c_k}(\theta)\le d_k` becomes the saddle
point problem :math:`\max_\theta\min_{\lambda\ge0} J_r - \sum_k\lambda_k(J_{c_k}-d_k)`, solved by dual
gradient descent (notes 9/19): each iteration

1. the dual step on the rollout's episodic costs,
   :math:`\lambda_k \leftarrow \max(0, \lambda_k + \alpha(\hat J_{c_k} - d_k))` (``multiplier="dual_ascent"``)
   or the PID Lagrangian's :math:`\lambda_k = (K_P e + K_I\!\int\! e + K_D\,\dot{\bar J}_c)^+` (``"pid"``);
2. the primal step, PPO's clipped surrogate (9/19) on the Lagrangian's advantage

   .. math::
       \hat A_t = \frac{\hat A^r_t - \sum_k\lambda_k\hat A^{c_k}_t}{1 + \sum_k\lambda_k},\qquad
       L^{CLIP}(\theta') = \mathbb E_t\big[\min(\rho_t\hat A_t,\ \mathrm{clip}(\rho_t,1-\epsilon,1+\epsilon)\hat A_t)\big],

with :math:`\hat A^{c}` GAE on costs from the cost critic. The agent is
:class:`~core_rl.trust_region.ppo.PPO` composed of three parts (:mod:`safety.parts`): the cost
monitor around its env, the cost critic and the Lagrange multiplier (plain or PID by the config's
``multiplier``), which PPO's base calls around its update; everything but the advantage is PPO's.

Example (safety/CartPole-v0, whose costs count the steps outside a safe band or over a speed cap:
with a limit of 0 every episode's cost is a violation, and dual ascent raises λ from 0)::

    >>> import safety  # registers the safety/ envs
    >>> settings = {"n_envs": 8, "n_steps": 64, "cost_limit": 0.0}
    >>> agent = PPOLag("safety/CartPole-v0", {**settings, "seed": 0}).learn(2048)
    >>> agent.last_metrics["episode_cost"] > 0, agent.last_metrics["lambda"] > 0
    (True, True)
    >>> PIDLag("safety/CartPole-v0", {**settings, "seed": 0}).learn(2048).last_metrics["lambda"] > 0
    True
"""

from __future__ import annotations

from typing import Literal

from core_rl.trust_region.ppo import PPO, PPOConfig
from safety.on_policy import LagrangianOnPolicyConfig
from safety.parts import LAGRANGIAN_PARTS


class PPOLagConfig(LagrangianOnPolicyConfig, PPOConfig):
    """PPO's fields, the constraints (``cost_keys``, ``cost_limit``), the cost critic's and λ's (``multiplier``)."""


class PPOLag(PPO):
    """PPO on the Lagrangian's advantage, λ by dual ascent (``PPOLag(env, cost_limit=25).learn(steps)``)."""

    name = "ppo_lag"
    config: PPOLagConfig
    config_cls = PPOLagConfig
    part_types = LAGRANGIAN_PARTS


class PIDLagConfig(PPOLagConfig):
    multiplier: Literal["dual_ascent", "pid"] = "pid"


class PIDLag(PPOLag):
    """PPO-Lag whose λ follows the PID Lagrangian (less overshoot and oscillation of the cost): only
    the config's default ``multiplier`` differs."""

    name = "pid_lag"
    config: PIDLagConfig
    config_cls = PIDLagConfig
