r"""SAC-Lag: soft actor-critic on the Lagrangian of the CMDP (Ha et al. 2020; OmniSafe's SACLag).

Beside SAC's soft critics :math:`Q^r_\phi` a cost critic :math:`Q^c_\psi(s,a)` (twin, the *larger* of
the two taken: pessimism about cost) is fitted to the cost's Bellman target, without entropy,

.. math:: y^c = c + \gamma_c (1-d)\,\max_j Q^c_{\psi'_j}(s', a'),\quad a'\sim\pi_\theta(\cdot|s'),

and the actor minimizes the Lagrangian of the soft objective, scaled to stay one objective's size,

.. math::
    \mathcal L_\pi = \frac{1}{1+\lambda}\,\mathbb E_{s,\,a\sim\pi_\theta}\big[\alpha\log\pi_\theta(a|s)
        - \min_k Q^r_{\phi_k}(s,a) + \lambda\,\max_j Q^c_{\psi_j}(s,a)\big].

λ takes the same dual step as the on-policy agents (:mod:`safety.lagrangian`) each time training
episodes finish, :math:`\lambda \leftarrow \max(0, \lambda + \alpha_\lambda(\hat J_c - d))`. Everything
else — temperature, soft critics, replay, targets — is :class:`~core_rl.continuous.sac.SAC`'s; the
replay buffer stores the step costs beside the rewards (:class:`~core_rl.common.replay.ReplayBuffer`'s
``n_costs``, read from the cost monitor around the env; one-step targets: ``n_step`` must be 1). The
agent is SAC composed of the cost monitor (its part, :class:`~safety.parts.CostMonitorPart`) and holding a
cost critic and a Lagrange multiplier. One constraint.

Example (safety/PointGoal-v0 with one hazard disc laid over the start area, so that every early
episode pays a cost above the limit: the cost critic learns it and dual ascent raises λ from 0)::

    >>> import gymnasium as gym, safety  # registers the safety/ envs
    >>> env = lambda: gym.make("safety/PointGoal-v0", hazards=[[-1.3, 0.0, 1.0]])
    >>> settings = {"hidden_sizes": (64, 64), "batch_size": 64, "learning_starts": 100, "cost_limit": 5.0}
    >>> agent = SACLag(env, {**settings, "seed": 0}).learn(300)
    >>> agent.last_metrics["episode_cost"] > 5.0, agent.last_metrics["lambda"] > 0
    (True, True)
"""

from __future__ import annotations

import copy

import torch
from pydantic import Field, model_validator

from core_rl.common.off_policy import polyak_update
from core_rl.common.optim import make_adam
from core_rl.common.replay import ReplayBuffer, ReplaySample
from core_rl.continuous.critics import QEnsemble
from core_rl.continuous.sac import SAC, SACConfig
from safety.lagrangian import LagrangianConfig, make_multiplier
from safety.parts import CostMonitorPart


class SACLagConfig(LagrangianConfig, SACConfig):
    lagrangian_lr: float = Field(0.01, gt=0.0, description="α, the dual-ascent step size on λ (per update).")

    @model_validator(mode="after")
    def _one_step_one_constraint(self) -> "SACLagConfig":
        if self.n_step != 1:
            raise ValueError(f"SAC-Lag's cost target is one-step: n_step must be 1, got {self.n_step}")
        if len(self.cost_keys) != 1:
            raise ValueError(f"SAC-Lag handles one constraint, got cost_keys={list(self.cost_keys)}")
        return self


class SACLag(SAC):
    """SAC with a pessimistic cost critic and a Lagrange multiplier on the episodic cost."""

    name = "sac_lag"
    config: SACLagConfig
    config_cls = SACLagConfig
    part_types = (CostMonitorPart,)

    def _build_networks(self) -> None:
        super()._build_networks()
        cfg = self.config
        old = self.replay
        monitor = self.part(CostMonitorPart).monitor
        self.replay = ReplayBuffer(
            cfg.buffer_size,
            self.n_envs,
            tuple(old.obs.shape[2:]),
            tuple(old.actions.shape[2:]),
            n_step=1,
            gamma=cfg.gamma,
            seed=cfg.seed,
            device=self.device,
            n_costs=1,
            cost_source=lambda: monitor.last_costs,
        )
        self.cost_critic = QEnsemble(self.observation_space, self.action_dim, 2, cfg.hidden_sizes, cfg.activation).to(
            self.device
        )
        self.cost_critic_target = copy.deepcopy(self.cost_critic).requires_grad_(False)
        self.cost_critic_optimizer = make_adam(self.cost_critic.parameters(), cfg.lr)
        self.lagrange = make_multiplier(cfg, torch.as_tensor(cfg.targets))  # d − m

    def _iterate(self) -> dict[str, float]:
        monitor = self.part(CostMonitorPart).monitor
        monitor.begin_rollout()
        try:
            metrics = super()._iterate()
        finally:
            _, _, finished = monitor.end_rollout()
        if len(finished):  # the dual step, whenever training episodes end
            self.lagrange.update(torch.as_tensor(finished.mean(0)))
        metrics["lambda"] = float(self.lagrange.value[0])
        return metrics

    def actor_loss(
        self, batch: ReplaySample, action: torch.Tensor, log_prob: torch.Tensor, alpha: torch.Tensor
    ) -> torch.Tensor:
        """(α log π − min_k Q^r_k + λ max_j Q^c_j) / (1 + λ), averaged over the batch."""
        lam = float(self.lagrange.value[0])
        qc = self.cost_critic(batch.obs, action, detach_params=True).amax(0)
        return (super().actor_loss(batch, action, log_prob, alpha) + lam * qc.mean()) / (1.0 + lam)

    def train_step(self, batch: ReplaySample) -> dict[str, float]:
        cfg = self.config
        if batch.costs is None:
            raise ValueError("SAC-Lag's replay stores costs: the sampled batch has none")
        # the cost critic first, so that the actor's Lagrangian (in SAC's step) sees its update
        with torch.no_grad():
            next_action, _ = self.actor(batch.next_obs)
            next_qc = self.cost_critic_target(batch.next_obs, next_action).amax(0)
            target_qc = batch.costs[:, 0] + cfg.gamma_c * (1.0 - batch.dones) * next_qc
        qc = self.cost_critic(batch.obs, self.scaler.normalize(batch.actions))
        cost_critic_loss = 0.5 * (qc - target_qc).pow(2).mean(1).sum()
        self._step_optimizer(self.cost_critic_optimizer, cost_critic_loss)
        metrics = super().train_step(batch)  # SAC's temperature, soft critics, actor, targets
        if (self.gradient_updates + 1) % cfg.target_update_interval == 0:
            polyak_update(self.cost_critic, self.cost_critic_target, cfg.tau)
        metrics.update(cost_critic_loss=cost_critic_loss.item(), qc_mean=qc.mean().item())
        return metrics
