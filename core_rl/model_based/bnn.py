r"""A Bayesian neural network dynamics model: mean-field variational inference (notes 9/28).

Instead of a point estimate φ, keep a distribution over the weights. The exact posterior p(W|D) is
intractable; mean-field variational inference ("Bayes by backprop") fits a factorized Gaussian
:math:`q_\eta(W) = \prod_i \mathcal N(w_i; \mu_i, \sigma_i^2)`, σ_i = softplus(ρ_i), by maximizing the ELBO

.. math::
    \mathcal L(\eta) = \sum_{i=1}^N \mathbb E_{W\sim q_\eta}\big[\log p(y_i | x_i, W)\big]
                        - D_{KL}\big(q_\eta(W)\,\|\,p(W)\big), \qquad p(W) = \mathcal N(0, \sigma_p^2 I),

with the reparameterization W = μ + σ ⊙ ε (here the *local* reparameterization: the Gaussian
pre-activations x W ~ N(x μ, x² σ²) are sampled directly, which lowers the gradient variance) and a
learned homoscedastic noise p(y|x, W) = N(f_W(x), diag σ_y²). Predictions average over weight
samples, :math:`p(y|x,D) \approx \frac1M\sum_m p(y|x,W_m)`, W_m ~ q; for planning,
:meth:`BNNDynamics.begin_rollout` draws M weight sets once, so each particle follows one sampled
function over the horizon (the same trajectory-sampling scheme as the bootstrap ensemble).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from core_rl.common import optim
from core_rl.common.errors import ConfigError
from core_rl.common.transitions import Transitions
from core_rl.model_based.dynamics import MODEL_ACTIVATIONS, Normalizer, split_and_normalize


class BayesianLinear(nn.Module):
    """A linear layer with a factorized Gaussian posterior over its weights and biases."""

    def __init__(self, in_dim: int, out_dim: int, prior_std: float = 1.0, rho_init: float = -5.0):
        super().__init__()
        self.weight_mu = nn.Parameter(torch.empty(in_dim, out_dim))
        nn.init.trunc_normal_(self.weight_mu, std=1.0 / (2.0 * math.sqrt(in_dim)))
        self.weight_rho = nn.Parameter(torch.full((in_dim, out_dim), rho_init))
        self.bias_mu = nn.Parameter(torch.zeros(out_dim))
        self.bias_rho = nn.Parameter(torch.full((out_dim,), rho_init))
        self.prior_std = prior_std

    def stds(self) -> tuple[torch.Tensor, torch.Tensor]:
        return nn.functional.softplus(self.weight_rho), nn.functional.softplus(self.bias_rho)

    def forward_local(self, x: torch.Tensor) -> torch.Tensor:
        """Local reparameterization: sample x W + b ~ N(x μ_W + μ_b, x² σ_W² + σ_b²) per example."""
        w_std, b_std = self.stds()
        mean = x @ self.weight_mu + self.bias_mu
        var = x.pow(2) @ w_std.pow(2) + b_std.pow(2)
        return mean + var.sqrt() * torch.randn_like(mean)

    def forward_mean(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight_mu + self.bias_mu

    def sample_weights(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n weight sets W_m = μ + σ ε: ``[n, in, out]`` and ``[n, 1, out]``."""
        w_std, b_std = self.stds()
        w = self.weight_mu + w_std * torch.randn(n, *self.weight_mu.shape, device=w_std.device)
        b = self.bias_mu + b_std * torch.randn(n, 1, *self.bias_mu.shape, device=b_std.device)
        return w, b

    def kl(self) -> torch.Tensor:
        """D_KL(q‖p) = Σ log(σ_p/σ) + (σ² + μ²)/(2σ_p²) − ½."""
        total = torch.zeros(())
        for mu, std in ((self.weight_mu, self.stds()[0]), (self.bias_mu, self.stds()[1])):
            total = (
                total
                + (
                    math.log(self.prior_std) - std.log() + (std.pow(2) + mu.pow(2)) / (2 * self.prior_std**2) - 0.5
                ).sum()
            )
        return total


class BNNDynamics(nn.Module):
    """p(Δs, r | s, a) with a mean-field Gaussian posterior over the network weights."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        n_members: int = 5,
        hidden_sizes: tuple[int, ...] = (200, 200),
        activation: str = "silu",
        learn_reward: bool = True,
        prior_std: float = 1.0,
        lr: float = 1e-3,
        kl_weight: float = 1.0,
        seed: int = 0,
    ):
        super().__init__()
        if activation not in MODEL_ACTIVATIONS:
            raise ConfigError(f"activation '{activation}' unknown; choose one of {sorted(MODEL_ACTIVATIONS)}")
        self.obs_dim, self.act_dim, self.n_members = int(obs_dim), int(act_dim), int(n_members)
        self.learn_reward = bool(learn_reward)
        self.out_dim = self.obs_dim + (1 if learn_reward else 0)
        dims = (self.obs_dim + self.act_dim, *hidden_sizes, self.out_dim)
        self.layers = nn.ModuleList(BayesianLinear(a, b, prior_std) for a, b in zip(dims[:-1], dims[1:]))
        self.act = MODEL_ACTIVATIONS[activation]()
        self.log_noise_std = nn.Parameter(torch.full((self.out_dim,), -1.0))  # σ_y in normalized units
        self.in_norm = Normalizer(dims[0])
        self.out_norm = Normalizer(self.out_dim)
        self.register_buffer("fitted", torch.tensor(False))
        self.kl_weight = kl_weight
        self.optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        self.generator = torch.Generator().manual_seed(seed)
        self._weights: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    # -- networks ----------------------------------------------------------------------------------
    def _forward_local(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = self.act(layer.forward_local(x))
        return self.layers[-1].forward_local(x)

    def _forward_mean(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = self.act(layer.forward_mean(x))
        return self.layers[-1].forward_mean(x)

    def _forward_sampled(self, x: torch.Tensor, weights: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """``x [M, N, in]`` through M sampled weight sets, one batched matmul per layer."""
        for i, (w, b) in enumerate(weights):
            x = torch.baddbmm(b, x, w)
            if i < len(weights) - 1:
                x = self.act(x)
        return x

    def kl(self) -> torch.Tensor:
        return sum((layer.kl() for layer in self.layers), torch.zeros(()))

    # -- prediction --------------------------------------------------------------------------------
    def begin_rollout(self) -> None:
        """Draw the M weight sets W_m ~ q(W) that the particles follow for one planning rollout."""
        with torch.no_grad():
            self._weights = [layer.sample_weights(self.n_members) for layer in self.layers]

    def propagate(
        self, obs: torch.Tensor, act: torch.Tensor, sample: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._weights is None or self._weights[0][0].shape[0] != obs.shape[0]:
            with torch.no_grad():
                self._weights = [layer.sample_weights(obs.shape[0]) for layer in self.layers]
        x = self.in_norm(torch.cat([obs, act], dim=-1))
        y = self._forward_sampled(x, self._weights)
        if sample:
            y = y + self.log_noise_std.exp() * torch.randn_like(y)
        y = self.out_norm.inverse(y)
        return obs + y[..., : self.obs_dim], (y[..., self.obs_dim] if self.learn_reward else None)

    def mean_step(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Prediction of the posterior-mean weights, any leading shape (differentiable)."""
        y = self.out_norm.inverse(self._forward_mean(self.in_norm(torch.cat([obs, act], dim=-1))))
        return obs + y[..., : self.obs_dim], (y[..., self.obs_dim] if self.learn_reward else None)

    @torch.no_grad()
    def predictive_moments(
        self, obs: torch.Tensor, act: torch.Tensor, n_samples: int = 32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Monte Carlo mean and epistemic variance (over weight samples) of y for inputs ``[N, ·]``."""
        weights = [layer.sample_weights(n_samples) for layer in self.layers]
        x = self.in_norm(torch.cat([obs, act], dim=-1))[None].expand(n_samples, -1, -1)
        y = self.out_norm.inverse(self._forward_sampled(x, weights))
        return y.mean(0), y.var(0, unbiased=False)

    @torch.no_grad()
    def disagreement(self, obs: torch.Tensor, act: torch.Tensor, n_samples: int = 32) -> torch.Tensor:
        """Epistemic uncertainty Σ_d Var_W[f_W(s,a)_d] in units of the targets' std ``[N]``."""
        _, var = self.predictive_moments(obs, act, n_samples)
        return (var / self.out_norm.std.pow(2)).sum(-1)

    # -- training ----------------------------------------------------------------------------------
    def negative_elbo(self, x_norm: torch.Tensor, y_norm: torch.Tensor, n_data: int) -> torch.Tensor:
        """−ELBO per datum: E_q[−log p(y|x,W)] + KL(q‖p)/N, one local-reparameterized sample."""
        pred = self._forward_local(x_norm)
        log_std = self.log_noise_std
        nll = (0.5 * ((pred - y_norm) / log_std.exp()).pow(2) + log_std + 0.5 * math.log(2 * math.pi)).sum(-1).mean()
        return nll + self.kl_weight * self.kl() / n_data

    def fit(
        self,
        data: Transitions,
        epochs: int = 50,
        batch_size: int = 256,
        holdout_ratio: float = 0.1,
        patience: int = 5,
        max_steps: int | None = None,
    ) -> dict[str, float]:
        xn, yn, hold, train = split_and_normalize(self, data, holdout_ratio)
        n_hold = hold.shape[0]
        best, best_state, since, steps, loss_value = math.inf, None, 0, 0, float("nan")
        for epoch in range(epochs):
            order = train[torch.randperm(train.shape[0], generator=self.generator)]
            for start in range(0, order.shape[0], batch_size):
                idx = order[start : start + batch_size]
                loss = self.negative_elbo(xn[idx], yn[idx], train.shape[0])
                optim.step(self.optimizer, loss)
                loss_value, steps = loss.item(), steps + 1
                if max_steps is not None and steps >= max_steps:
                    break
            if max_steps is not None and steps >= max_steps:
                break
            if n_hold:
                with torch.no_grad():
                    score = (self._forward_mean(xn[hold]) - yn[hold]).pow(2).mean().item()
                if score < best - 1e-4 * abs(best) or best == math.inf:
                    best, since, best_state = score, 0, copy.deepcopy(self.state_dict())
                else:
                    since += 1
                    if since >= patience:
                        break
        if best_state is not None:
            self.load_state_dict(best_state)
        self.fitted.fill_(True)
        self._weights = None
        out: dict[str, Any] = {"model_loss": loss_value, "model_epochs": float(epoch + 1), "model_steps": float(steps)}
        if n_hold:
            with torch.no_grad():
                out["model_holdout_mse"] = (self._forward_mean(xn[hold]) - yn[hold]).pow(2).mean().item()
        return out
