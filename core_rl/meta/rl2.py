r"""RL²: meta-reinforcement learning as a recurrent policy (notes 10/24–10/26, "meta-RL can be expressed as an RNN").

Meta-RL learns to learn: across tasks :math:`\mathcal T \sim p(\mathcal T)` that share structure, find
an agent that adapts quickly to a new task. RL² (Duan et al. 2016) makes the adaptation procedure
itself the hidden state of a recurrent policy,

.. math::
    h_t = \mathrm{GRU}_\theta\big(h_{t-1},\, (o_t, a_{t-1}, r_{t-1}, d_{t-1})\big), \qquad a_t \sim \pi_\theta(\cdot|h_t),

and trains θ with an ordinary policy gradient to maximize the return of a whole *trial* — several
episodes of one sampled task, with :math:`h` carried across the episodes within the trial and reset
only between trials:

.. math:: \max_\theta\ \mathbb E_{\mathcal T\sim p(\mathcal T)}\Big[\mathbb E_{\pi_\theta}\Big[\sum_{\text{episodes } e}\sum_t r^{(e)}_t\Big]\Big].

Exploring early in a trial pays off later in the same trial, so the "fast" RL algorithm that
emerges in :math:`h` trades exploration off against exploitation by itself (on Bernoulli bandits
Duan et al. report returns close to Gittins-index and Thompson-sampling baselines). The environment side is
:class:`core_rl.meta.envs.MetaTrial` (``meta/BanditTrial-v0``); the learner is PPO's clipped surrogate
(:class:`core_rl.trust_region.ppo.PPO`) made recurrent by
:class:`core_rl.meta.recurrent.RecurrentOnPolicyMixin` (BPTT over whole sequences).
``rl2_a2c`` is the same with A2C's update.

With their default configs both learn ``meta/BanditTrial-v0`` (2 arms, :math:`p_i \sim U(0, 1)`, 20
pulls): held-out trial return above the best non-adaptive policy's by 1.3–1.8 and near Thompson
sampling's, within the budgets of :data:`KNOWN_TO_LEARN` (``rl2`` 200k steps, ``rl2_a2c`` 400k);
``deeprl train --algo rl2 --env meta/BanditTrial-v0 --steps 200000``. Measurements: docs/algorithms.md.

Example (RL²'s 3-arm bandits where one arm, unknown, pays with p = 0.9 and the others with 0.1, 10 pulls
a trial; the best fixed arm scores ≈ 3.7 a trial, and after 10,000 steps the recurrent policy finds
the good arm within the trial and beats it)::

    >>> import gymnasium as gym
    >>> from core_rl.meta.experiments import BANDIT_TASKS, RL2_PPO
    >>> agent = RL2(lambda: gym.make("meta/BanditTrial-v0", **BANDIT_TASKS), {**RL2_PPO, "seed": 0}).learn(10_000)
    >>> agent.evaluate(n_episodes=200, deterministic=False)["mean_return"] > 4.2
    True
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from core_rl.actor_critic.actor_critic import A2C, A2CConfig
from core_rl.common.config import Widths
from core_rl.meta.recurrent import RecurrentOnPolicyMixin
from core_rl.trust_region.ppo import PPO, PPOConfig


class RL2Config(PPOConfig):
    """Defaults tuned on the registered ``meta/BanditTrial-v0`` (2 arms, p ~ U(0, 1), 20 pulls): whole
    trials per rollout, many trials per update (the adaptive gain is ≈ 2 pulls in a trial whose return
    has a standard deviation ≈ 4), γ = 1 (the objective is the undiscounted trial return) and λ = 0.3
    as in RL²'s bandit experiments; no entropy bonus (with it the policy stays near-uniform longer).
    See :data:`KNOWN_TO_LEARN` for the budget and docs/algorithms.md for the measurements."""

    n_envs: int = Field(64, ge=1, description="Trials collected in parallel.")
    n_steps: int = Field(20, ge=1, description="Steps per env per iteration (a trial's length aligns rollouts).")
    rnn_hidden_size: int = Field(64, ge=1, description="Width of the GRU hidden state h_t.")
    hidden_sizes: Widths = (64,)
    batch_size: int = Field(1280, ge=1, description="Steps per minibatch, rounded to whole sequences.")
    n_epochs: int = Field(4, ge=1)
    gamma: float = Field(1.0, gt=0.0, le=1.0)
    gae_lambda: float = Field(0.3, ge=0.0, le=1.0)
    ent_coef: float = Field(0.0, ge=0.0)
    lr: float = Field(3e-3, gt=0.0)


class RL2(RecurrentOnPolicyMixin, PPO):
    """RL² with PPO updates: ``RL2("meta/BanditTrial-v0", config).learn(steps)``."""

    name = "rl2"
    config: RL2Config
    config_cls = RL2Config


class RL2A2CConfig(A2CConfig):
    """Defaults tuned on ``meta/BanditTrial-v0`` like :class:`RL2Config` (whole trials, 64 per update,
    γ = 1, λ = 0.3), plus what A2C's single policy step per batch needs: normalized advantages, 4 critic
    steps per batch, RMSprop at 1.5e-3 and an entropy bonus of 0.01 (with Adam, or without the bonus,
    the policy commits to one arm before it learns to adapt)."""

    n_envs: int = Field(64, ge=1)
    n_steps: int = Field(20, ge=1)
    n_step: int = Field(20, ge=1)
    rnn_hidden_size: int = Field(64, ge=1, description="Width of the GRU hidden state h_t.")
    hidden_sizes: Widths = (64,)
    gamma: float = Field(1.0, gt=0.0, le=1.0)
    gae_lambda: float = Field(0.3, ge=0.0, le=1.0)
    normalize_advantage: bool = True
    value_epochs: int = Field(4, ge=1)
    lr: float = Field(1.5e-3, gt=0.0)
    ent_coef: float = Field(0.01, ge=0.0)


class RL2A2C(RecurrentOnPolicyMixin, A2C):
    """RL² with the A2C update."""

    name = "rl2_a2c"
    config: RL2A2CConfig
    config_cls = RL2A2CConfig


#: the budget at which each agent's DEFAULT config is known to learn ``meta/BanditTrial-v0``: held-out mean
#: trial return above the best non-adaptive policy (one fixed arm) by ``margin`` (tests/test_meta.py::
#: test_default_rl2_learns_the_registered_bandit_meta_task; measurements in docs/algorithms.md)
KNOWN_TO_LEARN: dict[str, dict[str, Any]] = {
    "rl2": {"env": "meta/BanditTrial-v0", "steps": 200_000, "margin": 0.8},
    "rl2_a2c": {"env": "meta/BanditTrial-v0", "steps": 400_000, "margin": 0.8},
}

__all__ = ["RL2", "RL2Config", "RL2A2C", "RL2A2CConfig", "KNOWN_TO_LEARN"]
