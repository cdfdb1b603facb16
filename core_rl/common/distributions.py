"""Action distributions: categorical, diagonal Gaussian and tanh-squashed Gaussian.

Light classes over raw tensors (no argument validation in the hot path) with the operations the
algorithms need: ``sample``, ``log_prob``, ``entropy``, ``mode`` and closed-form ``kl`` (for NPG,
TRPO and PPO diagnostics). Continuous log-probabilities are summed over action dimensions.
"""

from __future__ import annotations

import math
from typing import Protocol

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from core_rl.common.errors import SpaceError
from core_rl.common.networks import ObsEncoder, mlp

LOG_2PI = math.log(2 * math.pi)


class Distribution(Protocol):
    def sample(self) -> torch.Tensor: ...
    def log_prob(self, actions: torch.Tensor) -> torch.Tensor: ...
    def entropy(self) -> torch.Tensor: ...
    def mode(self) -> torch.Tensor: ...
    def kl(self, other: "Distribution") -> torch.Tensor: ...


class Categorical:
    """π(a|s) = softmax(logits)_a."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits - logits.logsumexp(-1, keepdim=True)

    @property
    def probs(self) -> torch.Tensor:
        return self.logits.exp()

    def sample(self) -> torch.Tensor:
        # Gumbel-max: argmax(logits + G) ~ Categorical(softmax(logits))
        u = torch.rand_like(self.logits).clamp_(1e-20, 1.0)
        return (self.logits - torch.log(-torch.log(u))).argmax(-1)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return self.logits.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        return -(self.probs * self.logits).sum(-1)

    def mode(self) -> torch.Tensor:
        return self.logits.argmax(-1)

    def kl(self, other: "Categorical") -> torch.Tensor:
        """D_KL(self ‖ other) = Σ_a p(a)(log p(a) − log q(a))."""
        return (self.probs * (self.logits - other.logits)).sum(-1)

    def detach(self) -> "Categorical":
        return Categorical(self.logits.detach())


class DiagGaussian:
    """π(a|s) = N(μ_θ(s), diag σ²)."""

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor):
        self.mean = mean
        self.log_std = log_std.expand_as(mean)

    def sample(self) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample()

    def rsample(self) -> torch.Tensor:
        return self.mean + self.log_std.exp() * torch.randn_like(self.mean)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        z = (actions - self.mean) * torch.exp(-self.log_std)
        return (-0.5 * z.pow(2) - self.log_std - 0.5 * LOG_2PI).sum(-1)

    def entropy(self) -> torch.Tensor:
        return (self.log_std + 0.5 * (1.0 + LOG_2PI)).sum(-1)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self, other: "DiagGaussian") -> torch.Tensor:
        var, ovar = (2 * self.log_std).exp(), (2 * other.log_std).exp()
        return (other.log_std - self.log_std + (var + (self.mean - other.mean).pow(2)) / (2 * ovar) - 0.5).sum(-1)

    def detach(self) -> "DiagGaussian":
        return DiagGaussian(self.mean.detach(), self.log_std.detach())


class TanhGaussian:
    """a = tanh(u), u ~ N(μ, σ²): log π(a|s) = log N(u) − Σ log(1 − tanh²u) (SAC's squashing)."""

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor):
        self.base = DiagGaussian(mean, log_std)

    def rsample_and_log_prob(self) -> tuple[torch.Tensor, torch.Tensor]:
        u = self.base.rsample()
        a = torch.tanh(u)
        # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), numerically stable
        correction = (2 * (math.log(2) - u - nn.functional.softplus(-2 * u))).sum(-1)
        return a, self.base.log_prob(u) - correction

    def sample(self) -> torch.Tensor:
        with torch.no_grad():
            return torch.tanh(self.base.rsample())

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        a = actions.clamp(-1 + 1e-6, 1 - 1e-6)
        u = torch.atanh(a)
        return self.base.log_prob(u) - torch.log1p(-a.pow(2)).sum(-1)

    def entropy(self) -> torch.Tensor:  # no closed form: a one-sample estimate
        _, logp = self.rsample_and_log_prob()
        return -logp

    def mode(self) -> torch.Tensor:
        return torch.tanh(self.base.mean)

    def kl(self, other: "TanhGaussian") -> torch.Tensor:  # tanh is a bijection: KL is unchanged
        return self.base.kl(other.base)


class StochasticPolicy(nn.Module):
    """π_θ(a|s) for Discrete (categorical) or Box (diagonal Gaussian, state-independent log σ)."""

    def __init__(self, obs_space: gym.Space, action_space: gym.Space, hidden_sizes=(64, 64),
                 activation: str = "tanh", log_std_init: float = 0.0):
        super().__init__()
        self.encoder = ObsEncoder(obs_space)
        if isinstance(action_space, gym.spaces.Discrete):
            self.discrete = True
            out = int(action_space.n)
        elif isinstance(action_space, gym.spaces.Box):
            self.discrete = False
            out = int(np.prod(action_space.shape))
            self.log_std = nn.Parameter(torch.full((out,), float(log_std_init)))
        else:
            raise SpaceError(f"policies support Discrete or Box action spaces, got {action_space}")
        self.net = mlp(self.encoder.dim, out, hidden_sizes, activation, out_gain=0.01)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self.encoder(obs))

    def distribution(self, obs: torch.Tensor) -> Categorical | DiagGaussian:
        out = self.net(self.encoder(obs))
        if self.discrete:
            return Categorical(out)
        return DiagGaussian(out, self.log_std)


class ValueFunction(nn.Module):
    """V_φ(s), a scalar per observation."""

    def __init__(self, obs_space: gym.Space, hidden_sizes=(64, 64), activation: str = "tanh"):
        super().__init__()
        self.encoder = ObsEncoder(obs_space)
        self.net = mlp(self.encoder.dim, 1, hidden_sizes, activation, out_gain=1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self.encoder(obs)).squeeze(-1)
