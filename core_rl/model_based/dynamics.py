r"""Learned dynamics models p(s'|s, a) and reward models r̂(s, a), trained on replay transitions.

Model-based RL (notes 9/21–9/28) fits a model of the transition function and plans or learns a
policy through it. The network predicts the *change* of state and the reward from normalized
inputs:

.. math::
    \Delta s = s_{t+1} - s_t, \qquad
    \big(\widehat{\Delta s}, \hat r\big) = f_\phi\Big(\tfrac{(s_t, a_t) - \mu_{in}}{\sigma_{in}}\Big)\,\sigma_{out} + \mu_{out}

* deterministic: :math:`\min_\phi \sum_i \|f_\phi(s_i, a_i) - y_i\|^2` (y normalized),
* Gaussian: :math:`p_\phi(y|s,a) = \mathcal N(\mu_\phi(s,a), \mathrm{diag}\,\sigma^2_\phi(s,a))`, trained by the
  negative log-likelihood :math:`\sum_i (\mu_\phi - y_i)^\top\Sigma_\phi^{-1}(\mu_\phi - y_i) + \log\det\Sigma_\phi`,
  with log σ² softly bounded by learned limits (as in PETS) so that it cannot collapse or explode.

All members of an ensemble live in one set of ``[M, in, out]`` weight tensors: the M networks are
evaluated as batched matrix products (``torch.baddbmm``), never in a Python loop. A single model is
the case M = 1; :mod:`core_rl.model_based.ensemble` adds the bootstrap resampling of the notes.

Every model follows one small protocol (:class:`DynamicsModel`) that planners, MPC and MBPO use:
``propagate(obs [M, N, ds], act [M, N, da]) -> (next_obs [M, N, ds], reward [M, N] | None)``, the M
leading slices going to the M members (PETS's trajectory sampling: each particle follows one
member for the whole horizon).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from core_rl.common import optim
from core_rl.common.errors import ConfigError
from core_rl.common.networks import ACTIVATIONS
from core_rl.common.transitions import Transitions

MODEL_ACTIVATIONS: dict[str, type[nn.Module]] = {**ACTIVATIONS, "silu": nn.SiLU}


# ---- data ----------------------------------------------------------------------------------------
def split_and_normalize(
    model: Any, data: Transitions, holdout_ratio: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shared first step of every model's ``fit``: a seeded train/holdout split, normalization
    statistics refitted on the training split, and the normalized inputs and targets."""
    if len(data) == 0:
        raise ConfigError("cannot fit a dynamics model on zero transitions")
    x, y = data.inputs(), data.targets(model.learn_reward)
    n = x.shape[0]
    perm = torch.randperm(n, generator=model.generator)
    n_hold = int(n * holdout_ratio) if n >= 20 else 0
    hold, train = perm[:n_hold], perm[n_hold:]
    model.in_norm.fit(x[train])
    model.out_norm.fit(y[train])
    return model.in_norm(x), model.out_norm(y), hold, train


@runtime_checkable
class DynamicsModel(Protocol):
    """What planners, MPC and MBPO need of a model."""

    n_members: int
    obs_dim: int
    act_dim: int
    learn_reward: bool

    def propagate(
        self, obs: torch.Tensor, act: torch.Tensor, sample: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def begin_rollout(self) -> None: ...

    def fit(self, data: Transitions, **kwargs: Any) -> dict[str, float]: ...


# ---- normalization -------------------------------------------------------------------------------
class Normalizer(nn.Module):
    """x ↦ (x − μ)/σ with μ, σ fitted on the training data (kept in the state dict)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.eps = eps

    def fit(self, x: torch.Tensor) -> None:
        self.mean.copy_(x.mean(0))
        std = x.std(0) if x.shape[0] > 1 else torch.ones_like(self.std)
        self.std.copy_(torch.where(std < self.eps, torch.ones_like(std), std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.std + self.mean


# ---- batched networks ----------------------------------------------------------------------------
class BatchedLinear(nn.Module):
    """M independent affine maps in one tensor: ``y[m] = x[m] W[m] + b[m]`` for ``x [M, N, in]``."""

    def __init__(self, n_members: int, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_members, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(n_members, 1, out_dim))
        # truncated normal with std 1/(2√in), as in the PETS/MBPO ensembles
        nn.init.trunc_normal_(
            self.weight, std=1.0 / (2.0 * math.sqrt(in_dim)), a=-2.0 / math.sqrt(in_dim), b=2.0 / math.sqrt(in_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)

    def decay(self) -> torch.Tensor:
        return self.weight.pow(2).sum()


class BatchedMLP(nn.Module):
    """An MLP per member, all members evaluated together: ``[M, N, in] -> [M, N, out]``."""

    def __init__(
        self, n_members: int, in_dim: int, out_dim: int, hidden_sizes: tuple[int, ...], activation: str = "silu"
    ):
        super().__init__()
        if activation not in MODEL_ACTIVATIONS:
            raise ConfigError(f"activation '{activation}' unknown; choose one of {sorted(MODEL_ACTIVATIONS)}")
        dims = (in_dim, *hidden_sizes, out_dim)
        self.layers = nn.ModuleList(BatchedLinear(n_members, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = MODEL_ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = self.act(layer(x))
        return self.layers[-1](x)


# ---- the neural dynamics model -------------------------------------------------------------------
class NeuralDynamics(nn.Module):
    """Deterministic or Gaussian neural dynamics (and reward) model; M ≥ 1 members in one tensor.

    ``probabilistic=False``: :math:`\\hat y = f_\\phi(s, a)` fit by squared error.
    ``probabilistic=True``: :math:`y \\sim \\mathcal N(\\mu_\\phi, \\sigma_\\phi^2)` fit by Gaussian NLL.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        n_members: int = 1,
        hidden_sizes: tuple[int, ...] = (200, 200),
        activation: str = "silu",
        probabilistic: bool = False,
        learn_reward: bool = True,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        seed: int = 0,
    ):
        super().__init__()
        if n_members < 1:
            raise ConfigError(f"n_members must be at least 1, got {n_members}")
        self.obs_dim, self.act_dim, self.n_members = int(obs_dim), int(act_dim), int(n_members)
        self.probabilistic, self.learn_reward = bool(probabilistic), bool(learn_reward)
        self.out_dim = self.obs_dim + (1 if learn_reward else 0)
        in_dim = self.obs_dim + self.act_dim
        self.net = BatchedMLP(n_members, in_dim, self.out_dim * (2 if probabilistic else 1), hidden_sizes, activation)
        self.in_norm = Normalizer(in_dim)
        self.out_norm = Normalizer(self.out_dim)
        if probabilistic:
            self.max_logvar = nn.Parameter(torch.full((self.out_dim,), 0.5))
            self.min_logvar = nn.Parameter(torch.full((self.out_dim,), -10.0))
        self.register_buffer("fitted", torch.tensor(False))
        self.weight_decay = weight_decay
        self.optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        self.generator = torch.Generator().manual_seed(seed)

    # -- prediction --------------------------------------------------------------------------------
    def forward_normalized(self, x_norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mean and log-variance of the normalized target for normalized inputs ``[M, N, in]``."""
        out = self.net(x_norm)
        if not self.probabilistic:
            return out, None
        mean, logvar = out.split(self.out_dim, dim=-1)
        logvar = self.max_logvar - nn.functional.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + nn.functional.softplus(logvar - self.min_logvar)
        return mean, logvar

    def predict(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mean and variance of y = (Δs, r) in raw units, for inputs ``[M, N, ·]``."""
        x = self.in_norm(torch.cat([obs, act], dim=-1))
        mean, logvar = self.forward_normalized(x)
        var = None if logvar is None else logvar.exp() * self.out_norm.std.pow(2)
        return self.out_norm.inverse(mean), var

    def begin_rollout(self) -> None:
        """Nothing to resample: each member is one fixed function."""

    def propagate(
        self, obs: torch.Tensor, act: torch.Tensor, sample: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """s' = s + Δs, Δs ~ p_φ (or its mean); member m gets slice m of ``[M, N, ·]`` inputs."""
        mean, var = self.predict(obs, act)
        y = mean
        if sample and var is not None:
            y = mean + var.sqrt() * torch.randn_like(mean)
        next_obs = obs + y[..., : self.obs_dim]
        reward = y[..., self.obs_dim] if self.learn_reward else None
        return next_obs, reward

    def mean_step(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Member-averaged mean prediction for inputs of any leading shape ``[..., ·]`` (differentiable)."""
        lead = obs.shape[:-1]
        o = obs.reshape(1, -1, self.obs_dim).expand(self.n_members, -1, -1)
        a = act.reshape(1, -1, self.act_dim).expand(self.n_members, -1, -1)
        mean, _ = self.predict(o, a)
        mean = mean.mean(0)
        next_obs = (obs.reshape(-1, self.obs_dim) + mean[:, : self.obs_dim]).reshape(*lead, self.obs_dim)
        reward = mean[:, self.obs_dim].reshape(lead) if self.learn_reward else None
        return next_obs, reward

    # -- training ----------------------------------------------------------------------------------
    def member_loss(self, x_norm: torch.Tensor, y_norm: torch.Tensor) -> torch.Tensor:
        """Per-member loss ``[M]`` on normalized ``[M, B, ·]`` inputs/targets."""
        mean, logvar = self.forward_normalized(x_norm)
        if logvar is None:
            return (mean - y_norm).pow(2).mean((1, 2))
        inv_var = torch.exp(-logvar)
        return ((mean - y_norm).pow(2) * inv_var + logvar).mean((1, 2))

    def _training_loss(self, x_norm: torch.Tensor, y_norm: torch.Tensor) -> torch.Tensor:
        loss = self.member_loss(x_norm, y_norm).sum()
        if self.probabilistic:
            loss = loss + 0.01 * (self.max_logvar.sum() - self.min_logvar.sum())
        if self.weight_decay > 0:
            loss = loss + self.weight_decay * sum(layer.decay() for layer in self.net.layers)
        return loss

    def _member_indices(self, n: int) -> torch.Tensor:
        """The training indices of each member ``[M, n]``: the whole data set (no resampling)."""
        return torch.arange(n).expand(self.n_members, n)

    @torch.no_grad()
    def _holdout_mse(self, x_norm: torch.Tensor, y_norm: torch.Tensor) -> torch.Tensor:
        mean, _ = self.forward_normalized(x_norm.expand(self.n_members, -1, -1))
        return (mean - y_norm).pow(2).mean((1, 2))

    def fit(
        self,
        data: Transitions,
        epochs: int = 50,
        batch_size: int = 256,
        holdout_ratio: float = 0.1,
        patience: int = 5,
        max_steps: int | None = None,
    ) -> dict[str, float]:
        """Minibatch training on ``data``; early stops on held-out MSE and keeps the best weights.

        Normalization statistics are refitted on the training split each call (a model trained
        further on growing data, as MPC and MBPO do).
        """
        xn, yn, hold, train = split_and_normalize(self, data, holdout_ratio)
        n_hold = hold.shape[0]
        x_train, y_train = xn[train], yn[train]
        x_hold, y_hold = xn[hold][None], yn[hold][None]
        member_idx = self._member_indices(train.shape[0])  # [M, n_train]
        n_train = member_idx.shape[1]
        best, best_state, since, steps = math.inf, None, 0, 0
        last_loss = float("nan")
        for epoch in range(epochs):
            order = torch.argsort(torch.rand(self.n_members, n_train, generator=self.generator), dim=1)
            shuffled = member_idx.gather(1, order)
            for start in range(0, n_train, batch_size):
                idx = shuffled[:, start : start + batch_size]  # [M, B]
                loss = self._training_loss(x_train[idx], y_train[idx])
                optim.step(self.optimizer, loss)
                last_loss = loss.item()
                steps += 1
                if max_steps is not None and steps >= max_steps:
                    break
            if max_steps is not None and steps >= max_steps:
                break
            if n_hold:
                score = self._holdout_mse(x_hold, y_hold).mean().item()
                if score < best - 1e-4 * abs(best) or best == math.inf:
                    best, since = score, 0
                    best_state = copy.deepcopy(self.net.state_dict())
                else:
                    since += 1
                    if since >= patience:
                        break
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.fitted.fill_(True)
        metrics = {"model_loss": last_loss, "model_epochs": float(epoch + 1), "model_steps": float(steps)}
        if n_hold:
            metrics["model_holdout_mse"] = self._holdout_mse(x_hold, y_hold).mean().item()
        return metrics


def deterministic_dynamics(obs_dim: int, act_dim: int, **kwargs: Any) -> NeuralDynamics:
    """s' = s + f_φ(s, a): one deterministic network."""
    return NeuralDynamics(obs_dim, act_dim, n_members=1, probabilistic=False, **kwargs)
