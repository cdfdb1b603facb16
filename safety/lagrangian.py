r"""The Lagrangian relaxation of a CMDP and the updates of its multipliers (notes 9/19: "use dual
gradient descent to enforce the constraint", here on costs instead of the KL).

.. math::
    \max_\pi \min_{\lambda\ge0} \mathcal L(\pi,\lambda) = J_r(\pi) - \sum_k \lambda_k\,(J_{c_k}(\pi) - d_k).

Dual gradient descent alternates a primal step on π with λ fixed and a dual step on λ with π
fixed. Since :math:`\partial\mathcal L/\partial\lambda_k = -(J_{c_k} - d_k)`, descending on λ is

.. math:: \lambda_k \leftarrow \max\big(0,\ \lambda_k + \alpha\,(\hat J_{c_k} - d_k)\big)

(:class:`LagrangeMultiplier`, "dual ascent" on the constraint violation): λ grows while the
measured episodic cost :math:`\hat J_{c_k}` is over the limit and shrinks toward 0 while it is
under. With a margin m (``cost_margin``, :class:`~safety.cmdp.CostMarginConfig`) every
:math:`d_k` of the dual step is :math:`d_k - m`: λ then settles where the cost is about m under the
limit, so a cost that swings by less than m around the target stays under d. The step is in λ per
unit of cost, so a violation of 50 with α = 0.05 adds 2.5 to λ in one update. ``dual_optimizer="adam"`` instead descends the dual loss
:math:`\ell(\lambda) = -\sum_k\lambda_k(\hat J_{c_k} - d_k)` with Adam (Kingma & Ba 2015; OmniSafe's
Lagrange multiplier does this with α = 0.035, λ₀ = 0.001): with :math:`g_k = -(\hat J_{c_k} - d_k)`,

.. math::
    m_k \leftarrow \beta_1 m_k + (1-\beta_1) g_k,\quad v_k \leftarrow \beta_2 v_k + (1-\beta_2) g_k^2,\quad
    \lambda_k \leftarrow \mathrm{clip}\Big(\lambda_k - \alpha\,\frac{m_k/(1-\beta_1^{t_k})}{\sqrt{v_k/(1-\beta_2^{t_k})}+\epsilon},
    0, \lambda_{max}\Big),

whose step is about α whatever the violation's size: λ rises by at most ≈ α per update and the
cost's unit drops out. Either is an integral controller on the violation, so it overshoots and oscillates;
:class:`PIDLagrangeMultiplier` (Stooke, Achiam & Abbeel 2020) adds the proportional and derivative
terms,

.. math::
    e_k = \hat J_{c_k} - d_k,\quad I_k \leftarrow \max(0, I_k + K_I e_k),\quad
    \lambda_k = \max\big(0,\ K_P\,\bar e_k + I_k + K_D \max(0, \bar J_{c_k} - \bar J_{c_k}^{(-\tau)})\big),

with :math:`\bar e, \bar J` exponential moving averages and :math:`\bar J^{(-\tau)}` the average τ
updates ago.

The primal step with a policy-gradient method uses the Lagrangian's advantage,
:math:`\hat A^{\mathcal L} = \hat A^r - \sum_k\lambda_k \hat A^{c_k}`, divided by
:math:`1+\sum_k\lambda_k` so that its scale stays that of one advantage however large λ grows
(:func:`lagrangian_advantage`); :math:`\hat A^{c_k}` is GAE on the costs with a cost critic
:math:`V^{c}_\psi(s)` (:class:`CostValueFunction`, one head per constraint).
"""

from __future__ import annotations

from typing import Literal

import gymnasium as gym
import torch
from pydantic import Field
from torch import nn

from core_rl.common.networks import ObsEncoder, mlp
from safety.cmdp import CostMarginConfig


class LagrangianConfig(CostMarginConfig):
    """The constraints, the margin m (``cost_margin``: λ's dual step aims at d − m) and the fields of the
    λ update (a base of the Lagrangian agents' configs)."""

    multiplier: Literal["dual_ascent", "pid"] = Field(
        "dual_ascent", description="λ update: plain dual ascent on the violation, or the PID Lagrangian."
    )
    lagrangian_init: float = Field(0.0, ge=0.0, description="λ₀, the initial multiplier(s).")
    lagrangian_lr: float = Field(0.05, gt=0.0, description="α, the dual-ascent step size on λ.")
    dual_optimizer: Literal["sgd", "adam"] = Field(
        "sgd",
        description="How dual ascent (multiplier='dual_ascent') steps λ: 'sgd' λ += α(Ĵc − d); 'adam' Adam on −λ(Ĵc − d), step ≈ α per update.",
    )
    lagrangian_max: float | None = Field(100.0, gt=0.0, description="Upper clip of λ (None: unbounded).")
    pid_kp: float = Field(0.1, ge=0.0, description="K_P of the PID Lagrangian.")
    pid_ki: float = Field(0.01, ge=0.0, description="K_I of the PID Lagrangian.")
    pid_kd: float = Field(0.01, ge=0.0, description="K_D of the PID Lagrangian.")
    pid_ema_alpha: float = Field(0.95, ge=0.0, lt=1.0, description="EMA factor of the P and D terms' inputs.")
    pid_d_delay: int = Field(10, ge=1, description="τ: the D term compares with the cost average τ updates ago.")


class LagrangeMultiplier(nn.Module):
    r"""λ ∈ R^K_{≥0} by projected dual ascent: :math:`\lambda \leftarrow \mathrm{clip}(\lambda + \alpha(\hat J_c - d), 0, \lambda_{max})`
    (``optimizer="sgd"``), or by Adam on the dual loss :math:`-\lambda(\hat J_c - d)` (``"adam"``).

    Buffers (checkpointed): ``value`` [K], ``limits`` [K]; with Adam also its moments ``adam_m``,
    ``adam_v`` [K] and step counts ``adam_t`` [K].
    """

    ADAM_BETAS: tuple[float, float] = (0.9, 0.999)
    ADAM_EPS: float = 1e-8

    def __init__(
        self,
        limits: torch.Tensor | list[float],
        lr: float = 0.05,
        init: float = 0.0,
        max_value: float | None = None,
        optimizer: Literal["sgd", "adam"] = "sgd",
    ):
        super().__init__()
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"dual_optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        limits = torch.as_tensor(limits, dtype=torch.float64).reshape(-1)
        self.register_buffer("limits", limits.clone())
        self.register_buffer("value", torch.full_like(limits, float(init)))
        self.lr, self.max_value, self.optimizer = float(lr), max_value, optimizer
        if optimizer == "adam":
            self.register_buffer("adam_m", torch.zeros_like(limits))
            self.register_buffer("adam_v", torch.zeros_like(limits))
            self.register_buffer("adam_t", torch.zeros_like(limits))

    def _clip(self, lam: torch.Tensor) -> torch.Tensor:
        return lam.clamp(min=0.0, max=self.max_value) if self.max_value is not None else lam.clamp_min(0.0)

    @torch.no_grad()
    def update(self, episode_cost: torch.Tensor | list[float], lr: float | None = None) -> torch.Tensor:
        """One dual step from the measured episodic costs ``[K]``; returns the new λ.
        Entries that are nan (no episode finished) leave their λ (and Adam's moments) unchanged."""
        cost = torch.as_tensor(episode_cost, dtype=torch.float64).reshape(self.value.shape)
        lr = self.lr if lr is None else lr
        if self.optimizer == "sgd":
            violation = torch.nan_to_num(cost - self.limits, nan=0.0)
            self.value.copy_(self._clip(self.value + lr * violation))
            return self.value.clone()
        seen = ~torch.isnan(cost)
        grad = torch.nan_to_num(self.limits - cost, nan=0.0)  # ∂/∂λ of −λ(Ĵc − d)
        (b1, b2), t = self.ADAM_BETAS, self.adam_t + seen.double()
        m = torch.where(seen, b1 * self.adam_m + (1 - b1) * grad, self.adam_m)
        v = torch.where(seen, b2 * self.adam_v + (1 - b2) * grad * grad, self.adam_v)
        t_safe = t.clamp_min(1.0)
        step = lr * (m / (1 - b1**t_safe)) / ((v / (1 - b2**t_safe)).sqrt() + self.ADAM_EPS)
        self.adam_m.copy_(m), self.adam_v.copy_(v), self.adam_t.copy_(t)
        self.value.copy_(torch.where(seen, self._clip(self.value - step), self.value))
        return self.value.clone()


class PIDLagrangeMultiplier(LagrangeMultiplier):
    """λ from a PID controller on the violation (Stooke et al. 2020; OmniSafe's PID Lagrangian)."""

    def __init__(
        self,
        limits: torch.Tensor | list[float],
        kp: float = 0.1,
        ki: float = 0.01,
        kd: float = 0.01,
        ema_alpha: float = 0.95,
        d_delay: int = 10,
        init: float = 0.0,
        max_value: float | None = None,
    ):
        super().__init__(limits, lr=ki, init=init, max_value=max_value)
        self.kp, self.ki, self.kd, self.ema_alpha, self.d_delay = kp, ki, kd, ema_alpha, int(d_delay)
        K = self.limits.numel()
        self.register_buffer("integral", torch.full((K,), float(init), dtype=torch.float64))
        self.register_buffer("delta_p", torch.zeros(K, dtype=torch.float64))
        self.register_buffer("cost_ema", torch.zeros(K, dtype=torch.float64))
        self.register_buffer("cost_history", torch.zeros(self.d_delay, K, dtype=torch.float64))
        self.register_buffer("n_updates", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def update(self, episode_cost: torch.Tensor | list[float], lr: float | None = None) -> torch.Tensor:
        cost = torch.as_tensor(episode_cost, dtype=torch.float64).reshape(self.value.shape)
        seen = ~torch.isnan(cost)
        cost = torch.where(seen, cost, self.cost_ema)
        delta = torch.where(seen, cost - self.limits, torch.zeros_like(cost))
        first = bool(self.n_updates == 0)
        self.integral.copy_((self.integral + self.ki * delta).clamp_min(0.0))
        a = self.ema_alpha
        self.delta_p.copy_(delta if first else a * self.delta_p + (1 - a) * delta)
        self.cost_ema.copy_(cost if first else a * self.cost_ema + (1 - a) * cost)
        if first:
            self.cost_history[:] = self.cost_ema
        derivative = (self.cost_ema - self.cost_history[0]).clamp_min(0.0)
        self.value.copy_(self._clip(self.kp * self.delta_p + self.integral + self.kd * derivative))
        self.cost_history.copy_(torch.cat([self.cost_history[1:], self.cost_ema[None]], 0))
        self.n_updates += 1
        return self.value.clone()


def make_multiplier(cfg: LagrangianConfig, limits: torch.Tensor | list[float]) -> LagrangeMultiplier:
    """The λ update a config asks for."""
    if cfg.multiplier == "pid":
        return PIDLagrangeMultiplier(
            limits,
            cfg.pid_kp,
            cfg.pid_ki,
            cfg.pid_kd,
            cfg.pid_ema_alpha,
            cfg.pid_d_delay,
            init=cfg.lagrangian_init,
            max_value=cfg.lagrangian_max,
        )
    return LagrangeMultiplier(
        limits, cfg.lagrangian_lr, cfg.lagrangian_init, cfg.lagrangian_max, optimizer=cfg.dual_optimizer
    )


def lagrangian_advantage(
    reward_advantage: torch.Tensor, cost_advantage: torch.Tensor, lam: torch.Tensor
) -> torch.Tensor:
    r""":math:`(\hat A^r - \sum_k\lambda_k\hat A^{c_k}) / (1 + \sum_k\lambda_k)`; ``cost_advantage`` is ``[..., K]``."""
    lam = lam.to(reward_advantage.dtype)
    return (reward_advantage - (cost_advantage * lam).sum(-1)) / (1.0 + lam.sum())


class CostValueFunction(nn.Module):
    r""":math:`V^{c_k}_\psi(s)` for K constraints: one MLP with K outputs, ``[B, K]``."""

    def __init__(
        self,
        obs_space: gym.Space,
        n_constraints: int,
        hidden_sizes: tuple[int, ...] = (64, 64),
        activation: str = "tanh",
    ):
        super().__init__()
        self.encoder = ObsEncoder(obs_space)
        self.net = mlp(self.encoder.dim, n_constraints, hidden_sizes, activation, out_gain=1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self.encoder(obs))
