r"""TD3: DDPG with three fixes to its overestimation (Fujimoto et al. 2018).

The notes (9/14) fix Q-learning's optimism ("actual ≠ predicted Q-values, too optimistic due to
noise") with double Q-learning; TD3 carries that to the trained maximizer of DDPG:

* clipped double Q: two critics, target :math:`y = r + \gamma(1-d)\min_{k=1,2} Q_{\phi'_k}(s', \tilde a')`;
* target policy smoothing: :math:`\tilde a' = \mathrm{clip}\big(\mu_{\theta'}(s') + \mathrm{clip}(\epsilon,-c,c), -1, 1\big)`,
  :math:`\epsilon\sim\mathcal N(0,\sigma^2)`;
* delayed updates: actor and targets step once per ``policy_delay`` critic steps; the actor
  maximizes :math:`Q_{\phi_1}(s, \mu_\theta(s))`.

It is :class:`~core_rl.continuous.ddpg.DDPG` with these switches on, not a separate implementation.

Example (a point in the plane that must reach (1, 0), reward −‖x − g‖ per step for 20 steps: the
random policy scores ≈ −22, the best ≈ −2; 600 steps of TD3 take it past random)::

    >>> from core_rl.meta.envs import PointGoal
    >>> settings = {"hidden_sizes": (64, 64), "batch_size": 64, "learning_starts": 100}
    >>> agent = TD3(PointGoal(), {**settings, "seed": 0}).learn(600)
    >>> agent.evaluate(n_episodes=5)["mean_return"] > -18
    True
"""

from __future__ import annotations

from pydantic import Field

from core_rl.continuous.ddpg import DDPG, DDPGConfig


class TD3Config(DDPGConfig):
    n_critics: int = Field(2, ge=1)
    policy_delay: int = Field(2, ge=1)
    target_noise: float = Field(0.2, ge=0.0)
    target_noise_clip: float = Field(0.5, ge=0.0)


class TD3(DDPG):
    """Twin delayed DDPG (``TD3(env, config).learn(steps)``)."""

    name = "td3"
    config: TD3Config
    config_cls = TD3Config
    bf16_updates = True
