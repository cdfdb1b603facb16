r"""Policy heads for imitation, one for each way the notes (9/7) say a learner fails to fit the expert.

Behavior cloning maximizes :math:`\sum_{(s,a)\in D}\log\pi_\theta(a|s)`, so each head provides
``log_prob(obs, actions)`` (the per-sample log-likelihood it is trained on), ``loss`` (what
behavior cloning minimizes, −log-likelihood or −ELBO), ``act`` (batched torch actions) and
``predict`` (numpy, one observation or a batch, clipped to the action space), plus ``reset`` for
policies with memory.

* :class:`MLPPolicy` — π(a|s) categorical (Discrete), Gaussian N(μ_θ(s), diag σ_θ(s)²) or
  deterministic a = μ_θ(s) (log-likelihood of N(μ_θ(s), I): behavior cloning is then least squares).
* :class:`RecurrentPolicy` — π(a_t|o_1, …, o_t): a GRU over the observation history, for experts
  that are not Markovian in the observation (partial observability, an expert that looks at the
  previous frames).
* :class:`MixtureGaussianPolicy` — multimodal experts, π(a|s) = Σ_k w_k(s) N(a; μ_k(s), σ_k(s)²),
  log π = logsumexp_k(log w_k + log N_k).
* :class:`LatentVariablePolicy` — π(a|s) = ∫ p_θ(a|s,z) p(z) dz with p(z) = N(0, I), fitted as a
  conditional VAE (notes 10/5): amortized q_φ(z|s,a) and the ELBO

  .. math::
      \mathcal L(s,a) = \mathbb E_{z\sim q_\phi(z|s,a)}[\log p_\theta(a|s,z) + \log p(z)] + \mathcal H(q_\phi)
                      = \mathbb E_{q_\phi}[\log p_\theta(a|s,z)] - D_{KL}(q_\phi(z|s,a)\,\|\,p(z)),

  with the reparameterization z = μ_φ(s,a) + σ_φ(s,a)·ε, ε ~ N(0, I).
* :class:`AutoregressiveDiscretePolicy` — each action dimension discretized into bins and
  predicted in turn, π(a|s) = Π_j p(bin_j | s, bin_1, …, bin_{j-1}) / width_j: a categorical per
  dimension captures any 1-D shape, the chain rule the correlations between dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from core_rl.common.distributions import LOG_2PI, Categorical, DiagGaussian
from core_rl.common.errors import ConfigError, SpaceError
from core_rl.common.networks import ObsEncoder, mlp

LOG_STD_MIN, LOG_STD_MAX = -6.0, 2.0
MlpHead = Literal["auto", "categorical", "gaussian", "deterministic"]


class ImitationPolicy(nn.Module):
    """Base of every head: observation features (with normalization fitted to the data) and the
    numpy ``predict`` / ``reset`` interface used by rollouts, DAgger and evaluation."""

    recurrent: ClassVar[bool] = False
    kind: ClassVar[str] = "policy"

    def __init__(self, observation_space: gym.Space, action_space: gym.Space):
        super().__init__()
        if not isinstance(action_space, (gym.spaces.Discrete, gym.spaces.Box)):
            raise SpaceError(f"imitation policies support Discrete or Box action spaces, got {action_space}")
        self.observation_space = observation_space
        self.action_space = action_space
        self.encoder = ObsEncoder(observation_space)
        self.obs_dim = self.encoder.dim
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        self.act_dim = 1 if self.discrete else int(np.prod(action_space.shape))
        self.register_buffer("obs_mean", torch.zeros(self.obs_dim))
        self.register_buffer("obs_std", torch.ones(self.obs_dim))

    # ---- features ------------------------------------------------------------------------------
    def fit_normalization(self, observations: torch.Tensor) -> None:
        """Standardize Box observation features with the data's mean and std (constant features,
        as the expert's never-visited directions, keep std 1 so unseen values are not blown up)."""
        if self.encoder.n:  # one-hot features stay as they are
            return
        x = self.encoder(observations.to(self.obs_mean.device)).double()
        std = x.std(0, unbiased=False)
        std = torch.where(std < 1e-6, torch.ones_like(std), std.clamp_min(1e-3))
        self.obs_mean.copy_(x.mean(0).float())
        self.obs_std.copy_(std.float())

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """Flat, normalized float features ``[B, obs_dim]`` of a batch of observations."""
        return (self.encoder(obs.to(self.obs_mean.device)) - self.obs_mean) / self.obs_std

    # ---- what heads provide ------------------------------------------------------------------
    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log π_θ(a|s) per sample (recurrent: per step, ``[B, L]``)."""
        raise NotImplementedError

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Batched actions (``[B]`` long or ``[B, act_dim]`` float) for a batch of observations."""
        raise NotImplementedError

    def loss(
        self, obs: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Behavior cloning's objective: −(1/|D|) Σ log π_θ(a|s) (masked mean for sequences)."""
        nll = -self.log_prob(obs, actions)
        loss = _masked_mean(nll, mask)
        return loss, {"nll": float(loss.detach())}

    def reset(self, mask: np.ndarray | None = None) -> None:
        """Forget the memory of the envs in ``mask`` (all if None); a no-op for Markovian heads."""

    # ---- numpy interface -------------------------------------------------------------------
    def _is_single(self, obs: np.ndarray) -> bool:
        if isinstance(self.observation_space, gym.spaces.Discrete):
            return obs.ndim == 0
        return obs.shape == self.observation_space.shape

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Action(s) for one observation or a batch, as the env takes them."""
        obs = np.asarray(obs)
        single = self._is_single(obs)
        batch = obs[None] if single else obs
        with torch.no_grad():
            actions = self.act(torch.tensor(batch, device=self.obs_mean.device), deterministic)
        a = actions.detach().cpu().numpy()
        if self.discrete:
            a = a.astype(np.int64) + int(self.action_space.start)
        else:
            space = self.action_space
            a = np.clip(a.reshape(len(batch), *space.shape), space.low, space.high).astype(space.dtype)
        return a[0] if single else a

    def flat_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Data actions as the heads take them: ``[B]`` long from 0 (Discrete) or ``[B, act_dim]``."""
        if self.discrete:
            return actions.long() - int(self.action_space.start)
        lead = actions.shape[: actions.dim() - len(self.action_space.shape)]
        return actions.reshape(*lead, self.act_dim).float()


def _masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return x.mean()
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp_min(1.0)


def _require_box(space: gym.Space, what: str) -> None:
    if not isinstance(space, gym.spaces.Box):
        raise SpaceError(f"the {what} head needs a Box action space, got {space}")


def _resolve_head(head: str, action_space: gym.Space) -> str:
    if head == "auto":
        return "categorical" if isinstance(action_space, gym.spaces.Discrete) else "gaussian"
    if head == "categorical" and not isinstance(action_space, gym.spaces.Discrete):
        raise SpaceError(f"the categorical head needs a Discrete action space, got {action_space}")
    if head in ("gaussian", "deterministic"):
        _require_box(action_space, head)
    if head not in ("categorical", "gaussian", "deterministic"):
        raise ConfigError(f"unknown policy head '{head}' (auto, categorical, gaussian, deterministic)")
    return head


class _DistributionHead:
    """Raw network output → Categorical, DiagGaussian (state-dependent σ) or unit-variance Gaussian."""

    def __init__(self, head: str, action_space: gym.Space):
        self.head = head
        self.n = int(action_space.n) if head == "categorical" else int(np.prod(action_space.shape))

    @property
    def out_dim(self) -> int:
        return 2 * self.n if self.head == "gaussian" else self.n

    def __call__(self, out: torch.Tensor) -> Categorical | DiagGaussian:
        if self.head == "categorical":
            return Categorical(out)
        if self.head == "gaussian":
            mean, log_std = out.split(self.n, dim=-1)
            return DiagGaussian(mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX))
        return DiagGaussian(out, torch.zeros_like(out))  # log N(a; μ, I) = −½‖a − μ‖² + const


class MLPPolicy(ImitationPolicy):
    """π_θ(a|s) from an MLP: categorical, Gaussian (state-dependent σ) or deterministic."""

    kind = "mlp"

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        head: MlpHead = "auto",
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
    ):
        super().__init__(observation_space, action_space)
        self.head = _resolve_head(head, action_space)
        self._dist = _DistributionHead(self.head, action_space)
        self.net = mlp(self.obs_dim, self._dist.out_dim, hidden_sizes, activation, out_gain=0.01)

    def distribution(self, obs: torch.Tensor) -> Categorical | DiagGaussian:
        return self._dist(self.net(self.features(obs)))

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.distribution(obs).log_prob(actions)

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        dist = self.distribution(obs)
        return dist.mode() if deterministic or self.head == "deterministic" else dist.sample()


class RecurrentPolicy(ImitationPolicy):
    """π_θ(a_t|o_{1:t}): h_t = GRU(h_{t-1}, o_t), a_t ~ head(h_t, o_t).

    Trained on (windows of) whole episodes, ``log_prob`` takes ``[B, L, ...]`` sequences; acting
    keeps one hidden state per env, cleared by ``reset(mask)`` at episode starts.
    """

    recurrent = True
    kind = "recurrent"

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        head: MlpHead = "auto",
        hidden_size: int = 64,
        hidden_sizes: Sequence[int] = (64,),
        activation: str = "tanh",
    ):
        super().__init__(observation_space, action_space)
        self.head = _resolve_head(head, action_space)
        if self.head == "deterministic":
            raise ConfigError("the recurrent policy supports the categorical and gaussian heads")
        self._dist = _DistributionHead(self.head, action_space)
        self.hidden_size = int(hidden_size)
        self.gru = nn.GRU(self.obs_dim, self.hidden_size, batch_first=True)
        self.net = mlp(self.hidden_size + self.obs_dim, self._dist.out_dim, hidden_sizes, activation, out_gain=0.01)
        self._hidden: torch.Tensor | None = None

    def _sequence_features(self, obs: torch.Tensor) -> torch.Tensor:
        b, length = obs.shape[0], obs.shape[1]
        return self.features(obs.reshape(b * length, *obs.shape[2:])).reshape(b, length, -1)

    def distribution(
        self, obs: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> tuple[Categorical | DiagGaussian, torch.Tensor]:
        """The per-step distributions of a ``[B, L, ...]`` batch of sequences, and the last hidden state."""
        x = self._sequence_features(obs)
        h, last = self.gru(x, hidden)
        return self._dist(self.net(torch.cat([h, x], -1))), last

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.distribution(obs)[0].log_prob(actions)

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        n = obs.shape[0]
        if self._hidden is None or self._hidden.shape[1] != n:
            self._hidden = torch.zeros(1, n, self.hidden_size, device=self.obs_mean.device)
        dist, self._hidden = self.distribution(obs[:, None], self._hidden)
        a = dist.mode() if deterministic else dist.sample()
        return a[:, 0]

    def reset(self, mask: np.ndarray | None = None) -> None:
        if mask is None or self._hidden is None:
            self._hidden = None
            return
        mask_t = torch.as_tensor(np.asarray(mask, dtype=bool), device=self._hidden.device)
        if mask_t.shape[0] != self._hidden.shape[1]:
            self._hidden = None
            return
        self._hidden = self._hidden.masked_fill(mask_t[None, :, None], 0.0)


class MixtureGaussianPolicy(ImitationPolicy):
    """π(a|s) = Σ_k w_k(s) N(a; μ_k(s), diag σ_k(s)²), K components from one MLP."""

    kind = "mixture"

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        n_components: int = 5,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
    ):
        super().__init__(observation_space, action_space)
        _require_box(action_space, "mixture-of-Gaussians")
        if n_components < 1:
            raise ConfigError(f"n_components must be at least 1, got {n_components}")
        self.n_components = int(n_components)
        k, m = self.n_components, self.act_dim
        # output gain 1: the component means start apart, which breaks their symmetry
        self.net = mlp(self.obs_dim, k + 2 * k * m, hidden_sizes, activation, out_gain=1.0)

    def mixture(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log w [B, K], μ [B, K, m], log σ [B, K, m])."""
        k, m = self.n_components, self.act_dim
        out = self.net(self.features(obs))
        logits, mean, log_std = out.split([k, k * m, k * m], dim=-1)
        log_w = logits.log_softmax(-1)
        return log_w, mean.reshape(-1, k, m), log_std.reshape(-1, k, m).clamp(LOG_STD_MIN, LOG_STD_MAX)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        log_w, mean, log_std = self.mixture(obs)
        z = (actions[:, None, :] - mean) * torch.exp(-log_std)
        component = (-0.5 * z.pow(2) - log_std - 0.5 * LOG_2PI).sum(-1)  # log N_k(a) [B, K]
        return torch.logsumexp(log_w + component, dim=-1)

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        log_w, mean, log_std = self.mixture(obs)
        k = log_w.argmax(-1) if deterministic else Categorical(log_w).sample()
        idx = k[:, None, None].expand(-1, 1, self.act_dim)
        mu = mean.gather(1, idx).squeeze(1)
        if deterministic:
            return mu
        return mu + log_std.gather(1, idx).squeeze(1).exp() * torch.randn_like(mu)


class LatentVariablePolicy(ImitationPolicy):
    """Conditional VAE policy: q_φ(z|s,a) = N(μ_φ, σ_φ²), p_θ(a|s,z) = N(μ_θ, σ_θ²), p(z) = N(0, I).

    ``loss`` is the negative ELBO (with ``kl_coef`` β on the KL term); ``log_prob`` is the
    importance-weighted estimate log (1/K) Σ_k p_θ(a|s,z_k) p(z_k) / q_φ(z_k|s,a), z_k ~ q_φ,
    a lower bound of log π(a|s) that tightens with K (K = 1 is the ELBO). Acting samples
    z ~ p(z) and a ~ p_θ(a|s,z); ``deterministic`` decodes the prior's mode z = 0.
    """

    kind = "latent"

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        latent_dim: int = 2,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        kl_coef: float = 1.0,
        n_importance: int = 32,
    ):
        super().__init__(observation_space, action_space)
        _require_box(action_space, "latent-variable")
        if latent_dim < 1:
            raise ConfigError(f"latent_dim must be at least 1, got {latent_dim}")
        self.latent_dim = int(latent_dim)
        self.kl_coef = float(kl_coef)
        self.n_importance = int(n_importance)
        m = self.act_dim
        self.encoder_net = mlp(self.obs_dim + m, 2 * self.latent_dim, hidden_sizes, activation, out_gain=0.1)
        self.decoder_net = mlp(self.obs_dim + self.latent_dim, 2 * m, hidden_sizes, activation, out_gain=1.0)

    def posterior(self, x: torch.Tensor, actions: torch.Tensor) -> DiagGaussian:
        """Amortized q_φ(z|s,a) from features x and actions."""
        mean, log_std = self.encoder_net(torch.cat([x, actions], -1)).split(self.latent_dim, -1)
        return DiagGaussian(mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX))

    def decode(self, x: torch.Tensor, z: torch.Tensor) -> DiagGaussian:
        """p_θ(a|s,z)."""
        mean, log_std = self.decoder_net(torch.cat([x, z], -1)).split(self.act_dim, -1)
        return DiagGaussian(mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX))

    def prior(self, like: torch.Tensor) -> DiagGaussian:
        zeros = torch.zeros(*like.shape[:-1], self.latent_dim, device=like.device)
        return DiagGaussian(zeros, zeros)

    def elbo_terms(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E_q log p_θ(a|s,z) with one reparameterized z, D_KL(q_φ(z|s,a) ‖ N(0, I))), per sample."""
        x = self.features(obs)
        q = self.posterior(x, actions)
        z = q.rsample()  # z = μ_φ + σ_φ ε
        reconstruction = self.decode(x, z).log_prob(actions)
        kl = q.kl(self.prior(z))
        return reconstruction, kl

    def loss(
        self, obs: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        reconstruction, kl = self.elbo_terms(obs, actions)
        loss = _masked_mean(-(reconstruction - self.kl_coef * kl), mask)
        return loss, {
            "nll": float(_masked_mean(-(reconstruction - kl), mask).detach()),
            "reconstruction": float(_masked_mean(reconstruction, mask).detach()),
            "kl": float(_masked_mean(kl, mask).detach()),
        }

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        k = self.n_importance
        x = self.features(obs)
        q = self.posterior(x, actions)
        z = q.mean + q.log_std.exp() * torch.randn(k, *q.mean.shape, device=x.device)  # [K, B, d]
        xk, ak = x.expand(k, *x.shape), actions.expand(k, *actions.shape)
        log_w = (
            self.decode(xk, z).log_prob(ak)
            + self.prior(z).log_prob(z)
            - DiagGaussian(q.mean.expand_as(z), q.log_std.expand_as(z)).log_prob(z)
        )
        return torch.logsumexp(log_w, 0) - math.log(k)

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        x = self.features(obs)
        z = torch.zeros(x.shape[0], self.latent_dim, device=x.device)
        if not deterministic:
            z = torch.randn_like(z)
        dist = self.decode(x, z)
        return dist.mode() if deterministic else dist.sample()


class AutoregressiveDiscretePolicy(ImitationPolicy):
    """Each action dimension in ``n_bins`` uniform bins, predicted in order, conditioned on the
    bins chosen for the earlier dimensions: log π(a|s) = Σ_j [log p(b_j | s, b_{<j}) − log width_j].

    Sampling draws bin b_j, then a_j uniformly inside it; ``deterministic`` takes the most likely
    bin of each dimension in turn and returns its centre.
    """

    kind = "autoregressive"

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        n_bins: int = 21,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
    ):
        super().__init__(observation_space, action_space)
        _require_box(action_space, "autoregressive discretization")
        low = np.asarray(action_space.low, dtype=np.float64).reshape(-1)
        high = np.asarray(action_space.high, dtype=np.float64).reshape(-1)
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise SpaceError(f"autoregressive discretization needs finite action bounds, got {action_space}")
        if n_bins < 2:
            raise ConfigError(f"n_bins must be at least 2, got {n_bins}")
        self.n_bins = int(n_bins)
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("width", torch.as_tensor((high - low) / n_bins, dtype=torch.float32))
        self.nets = nn.ModuleList(
            mlp(self.obs_dim + j, self.n_bins, hidden_sizes, activation, out_gain=0.01) for j in range(self.act_dim)
        )

    def bins(self, actions: torch.Tensor) -> torch.Tensor:
        return ((actions - self.low) / self.width).floor().long().clamp(0, self.n_bins - 1)

    def _centres(self, bins: torch.Tensor) -> torch.Tensor:
        """Bin indices as inputs for the later dimensions, scaled to [−1, 1]."""
        return (bins.float() + 0.5) * (2.0 / self.n_bins) - 1.0

    def bin_log_probs(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log p(b_j | s, b_{<j}) per dimension, ``[B, m]`` (teacher forcing: all dims at once)."""
        x = self.features(obs)
        b = self.bins(actions)
        inputs = self._centres(b)
        return torch.stack(
            [
                self.nets[j](torch.cat([x, inputs[:, :j]], -1)).log_softmax(-1).gather(-1, b[:, j : j + 1]).squeeze(-1)
                for j in range(self.act_dim)
            ],
            -1,
        )

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.bin_log_probs(obs, actions).sum(-1) - self.width.log().sum()

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        x = self.features(obs)
        chosen: list[torch.Tensor] = []
        for j in range(self.act_dim):
            prev = self._centres(torch.stack(chosen, -1)) if chosen else x[:, :0]
            dist = Categorical(self.nets[j](torch.cat([x, prev], -1)))
            chosen.append(dist.mode() if deterministic else dist.sample())
        b = torch.stack(chosen, -1).float()
        offset = torch.full_like(b, 0.5) if deterministic else torch.rand_like(b)
        return self.low + (b + offset) * self.width


POLICIES: dict[str, type[ImitationPolicy]] = {
    "mlp": MLPPolicy,
    "recurrent": RecurrentPolicy,
    "mixture": MixtureGaussianPolicy,
    "latent": LatentVariablePolicy,
    "autoregressive": AutoregressiveDiscretePolicy,
}


def make_policy(kind: str, observation_space: gym.Space, action_space: gym.Space, **kwargs: Any) -> ImitationPolicy:
    """Build a head by name (mlp, recurrent, mixture, latent, autoregressive)."""
    try:
        cls = POLICIES[kind]
    except KeyError:
        raise ConfigError(f"unknown imitation policy '{kind}'; known: {', '.join(POLICIES)}") from None
    return cls(observation_space, action_space, **kwargs)
