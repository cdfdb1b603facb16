r"""POMDPs through a learned latent state: a VAE observation model and latent dynamics (notes 9/28, 10/5).

When only images o_t of the state are seen, model-based RL can learn an encoder from o to a small
latent state z and learn the dynamics there (notes 9/28: "use autoencoder to invert observation to
state"). The latent-variable model of notes 10/5 is trained by amortized variational inference:
an encoder q_φ(z|o) = N(μ_φ(o), σ²_φ(o)) shared by all data points, the reparameterization
z = μ_φ(o) + σ_φ(o)⊙ε, ε ~ N(0, I), and the evidence lower bound

.. math::
    \mathcal L_i = \mathbb E_{z\sim q_\phi(z|o_i)}\big[\log p_\theta(o_i|z)\big] - D_{KL}\big(q_\phi(z|o_i)\,\|\,p(z)\big)
    \approx \log p_\theta\big(o_i \,|\, \mu_\phi(o_i) + \epsilon\,\sigma_\phi(o_i)\big) - D_{KL}(q_\phi(z|o_i)\|\mathcal N(0, I)).

:class:`LatentDynamicsModel` extends it to a transition (o_t, a_t, o_{t+1}) with a latent dynamics
prior p_ψ(z_{t+1}|z_t, a_t) = N(z_t + μ_ψ(z_t, a_t), σ²_ψ): the two-step ELBO

.. math::
    \mathbb E_q\big[\log p_\theta(o_t|z_t) + \log p_\theta(o_{t+1}|z_{t+1})\big]
    - D_{KL}\big(q(z_t|o_t)\|\mathcal N(0,I)\big) - \mathbb E_{z_t}\,D_{KL}\big(q(z_{t+1}|o_{t+1})\,\|\,p_\psi(z_{t+1}|z_t,a_t)\big)

plus a prediction term log p_θ(o_{t+1}|ẑ_{t+1}), ẑ_{t+1} ~ p_ψ(·|z_t, a_t), so the prior alone
predicts decodable futures. :class:`MovingDotEnv` (registered as ``pomdp/MovingDot-v0``) is the
small synthetic image POMDP it is tested on: a dot drawn into a 16×16 array with numpy, moved by the
action; the state (x, y) is never observed.

Example (a VAE with a 2-d latent on MovingDot's 16×16 images, 500 Adam steps on the ELBO: the
reconstruction of held-out images is far better than the mean image)::

    >>> import torch
    >>> from core_rl.common import optim
    >>> _ = torch.manual_seed(0)
    >>> images = torch.as_tensor(collect_image_transitions(MovingDotEnv(), 1000, seed=0)["obs"])
    >>> held_out = torch.as_tensor(collect_image_transitions(MovingDotEnv(), 200, seed=1)["obs"])
    >>> vae = VAE(images.shape[1:], latent_dim=2, hidden_sizes=(128, 128))
    >>> optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    >>> for step in range(500):
    ...     loss, stats = vae.negative_elbo(images[torch.randint(0, len(images), (128,))])
    ...     optim.step(optimizer, loss)
    >>> error = (vae.reconstruct(held_out) - held_out).pow(2).mean()
    >>> bool(error < 0.6 * (images.mean(0) - held_out).pow(2).mean())
    True
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from core_rl.common import optim
from core_rl.common.errors import ConfigError
from core_rl.common.networks import mlp


class MovingDotEnv(gym.Env):
    """A dot at hidden position (x, y) ∈ [0, 1]², seen only as a ``size×size`` image; a ∈ [−1, 1]² moves it.

    x' = clip(x + step·a, 0, 1); reward −‖(x, y) − (½, ½)‖ (reach the centre); 50-step episodes.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, size: int = 16, step_size: float = 0.08, blob_std: float = 1.0, max_steps: int = 50):
        super().__init__()
        if size < 4:
            raise ConfigError(f"image size must be at least 4, got {size}")
        self.size, self.step_size, self.blob_std, self.max_steps = size, step_size, blob_std, max_steps
        self.observation_space = gym.spaces.Box(0.0, 1.0, (size, size), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.state = np.full(2, 0.5)
        self._t = 0
        grid = np.arange(size, dtype=np.float64)
        self._rows, self._cols = np.meshgrid(grid, grid, indexing="ij")

    def render_state(self, state: np.ndarray) -> np.ndarray:
        """The image of a batch of states ``[..., 2] -> [..., size, size]`` (a Gaussian blob)."""
        state = np.asarray(state, dtype=np.float64)
        margin = 1.5
        px = margin + state[..., 0] * (self.size - 1 - 2 * margin)
        py = margin + state[..., 1] * (self.size - 1 - 2 * margin)
        d2 = (self._cols - px[..., None, None]) ** 2 + (self._rows - py[..., None, None]) ** 2
        return np.exp(-d2 / (2 * self.blob_std**2)).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):  # type: ignore[override]
        super().reset(seed=seed)
        self.state = self.np_random.uniform(0.0, 1.0, size=2)
        self._t = 0
        return self.render_state(self.state), {"state": self.state.copy()}

    def step(self, action: np.ndarray):  # type: ignore[override]
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        self.state = np.clip(self.state + self.step_size * a, 0.0, 1.0)
        self._t += 1
        reward = -float(np.linalg.norm(self.state - 0.5))
        return self.render_state(self.state), reward, False, self._t >= self.max_steps, {"state": self.state.copy()}

    def render(self) -> np.ndarray:
        img = (255 * self.render_state(self.state)).astype(np.uint8)
        return np.repeat(img[..., None], 3, axis=-1)


def gaussian_kl(
    mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor | None = None, logvar_p: torch.Tensor | None = None
) -> torch.Tensor:
    """D_KL(N(μ_q, σ_q²) ‖ N(μ_p, σ_p²)) summed over the last dim (standard normal prior by default)."""
    if mu_p is None:
        mu_p, logvar_p = torch.zeros_like(mu_q), torch.zeros_like(logvar_q)
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / logvar_p.exp() - 1).sum(-1)


class VAE(nn.Module):
    """Amortized Gaussian encoder q_φ(z|o), Bernoulli decoder p_θ(o|z) over pixel intensities."""

    def __init__(self, obs_shape: tuple[int, ...], latent_dim: int = 4, hidden_sizes: tuple[int, ...] = (256, 256)):
        super().__init__()
        self.obs_shape, self.latent_dim = tuple(obs_shape), latent_dim
        self.obs_dim = int(np.prod(obs_shape))
        self.encoder = mlp(self.obs_dim, 2 * latent_dim, hidden_sizes, "elu")
        self.decoder = mlp(latent_dim, self.obs_dim, hidden_sizes[::-1], "elu")

    def encode(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """μ_φ(o), log σ²_φ(o)."""
        mu, logvar = self.encoder(obs.reshape(obs.shape[0], -1)).chunk(2, -1)
        return mu, logvar.clamp(-10.0, 5.0)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """z = μ + σ ⊙ ε, ε ~ N(0, I): a sample whose gradient flows into μ and σ."""
        return mu + (0.5 * logvar).exp() * torch.randn_like(mu)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).reshape(z.shape[0], *self.obs_shape)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean image E[o|z] = sigmoid(logits)."""
        return torch.sigmoid(self.decode_logits(z))

    def reconstruction_nll(self, logits: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """−log p_θ(o|z) per example (Bernoulli cross-entropy summed over pixels)."""
        return (
            nn.functional.binary_cross_entropy_with_logits(logits, obs, reduction="none")
            .reshape(obs.shape[0], -1)
            .sum(-1)
        )

    def negative_elbo(self, obs: torch.Tensor, beta: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
        mu, logvar = self.encode(obs)
        z = self.reparameterize(mu, logvar)
        nll = self.reconstruction_nll(self.decode_logits(z), obs)
        kl = gaussian_kl(mu, logvar)
        loss = (nll + beta * kl).mean()
        return loss, {"recon_nll": nll.mean().item(), "kl": kl.mean().item()}

    @torch.no_grad()
    def reconstruct(self, obs: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(obs)[0])


class LatentDynamicsModel(nn.Module):
    """VAE + latent transition prior p_ψ(z'|z, a): an observation model for image POMDPs."""

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        act_dim: int,
        latent_dim: int = 4,
        hidden_sizes: tuple[int, ...] = (256, 256),
        dynamics_hidden: tuple[int, ...] = (128, 128),
        lr: float = 1e-3,
        beta: float = 1.0,
        prediction_weight: float = 1.0,
        seed: int = 0,
    ):
        super().__init__()
        torch.manual_seed(seed)
        self.vae = VAE(obs_shape, latent_dim, hidden_sizes)
        self.act_dim, self.latent_dim = act_dim, latent_dim
        self.transition = mlp(latent_dim + act_dim, 2 * latent_dim, dynamics_hidden, "elu", out_gain=0.1)
        self.beta, self.prediction_weight = beta, prediction_weight
        self.optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        self.generator = torch.Generator().manual_seed(seed)

    def prior(self, z: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p_ψ(z'|z, a) = N(z + μ_ψ(z, a), σ²_ψ(z, a))."""
        delta, logvar = self.transition(torch.cat([z, act], -1)).chunk(2, -1)
        return z + delta, logvar.clamp(-10.0, 5.0)

    def loss(
        self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The negative two-step ELBO plus the prior-prediction term, averaged over the batch."""
        vae = self.vae
        mu, logvar = vae.encode(obs)
        z = vae.reparameterize(mu, logvar)
        mu_next, logvar_next = vae.encode(next_obs)
        z_next = vae.reparameterize(mu_next, logvar_next)
        prior_mu, prior_logvar = self.prior(z, act)
        recon = vae.reconstruction_nll(vae.decode_logits(z), obs)
        recon_next = vae.reconstruction_nll(vae.decode_logits(z_next), next_obs)
        kl0 = gaussian_kl(mu, logvar)
        kl_dyn = gaussian_kl(mu_next, logvar_next, prior_mu, prior_logvar)
        z_pred = vae.reparameterize(prior_mu, prior_logvar)
        pred = vae.reconstruction_nll(vae.decode_logits(z_pred), next_obs)
        total = (recon + recon_next + self.beta * (kl0 + kl_dyn) + self.prediction_weight * pred).mean()
        return total, {
            "recon_nll": recon.mean().item(),
            "kl": kl0.mean().item(),
            "kl_dynamics": kl_dyn.mean().item(),
            "prediction_nll": pred.mean().item(),
        }

    def fit(
        self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor, steps: int = 2000, batch_size: int = 128
    ) -> dict[str, float]:
        """Minibatch Adam on transitions ``obs [N, *obs_shape]``, ``act [N, da]``, ``next_obs``."""
        obs, act, next_obs = (torch.as_tensor(np.asarray(x), dtype=torch.float32) for x in (obs, act, next_obs))
        n = obs.shape[0]
        if n == 0:
            raise ConfigError("cannot fit the latent model on zero transitions")
        stats: dict[str, float] = {}
        for _ in range(steps):
            idx = torch.randint(0, n, (min(batch_size, n),), generator=self.generator)
            loss, stats = self.loss(obs[idx], act[idx], next_obs[idx])
            optim.step(self.optimizer, loss)
            stats["loss"] = loss.item()
        return stats

    @torch.no_grad()
    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """The latent state estimate μ_φ(o)."""
        return self.vae.encode(torch.as_tensor(obs, dtype=torch.float32))[0]

    @torch.no_grad()
    def predict_next_obs(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """E[o'|o, a] through the latent: decode(mean of p_ψ(z'|μ_φ(o), a))."""
        z = self.encode(obs)
        z_next, _ = self.prior(z, torch.as_tensor(act, dtype=torch.float32))
        return self.vae.decode(z_next)

    @torch.no_grad()
    def imagine(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Open-loop image predictions ``[B, H, *obs_shape]`` for action sequences ``[B, H, da]``, in the latent only."""
        z = self.encode(obs)
        frames = []
        for t in range(actions.shape[1]):
            z, _ = self.prior(z, actions[:, t])
            frames.append(self.vae.decode(z))
        return torch.stack(frames, 1)


def collect_image_transitions(env: MovingDotEnv, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """n transitions of uniform random actions: obs, actions, next_obs and the hidden states."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    out: dict[str, list[np.ndarray]] = {"obs": [], "actions": [], "next_obs": [], "states": [], "next_states": []}
    for _ in range(n):
        a = rng.uniform(-1.0, 1.0, size=2).astype(np.float32)
        next_obs, _, term, trunc, next_info = env.step(a)
        for k, v in (
            ("obs", obs),
            ("actions", a),
            ("next_obs", next_obs),
            ("states", info["state"]),
            ("next_states", next_info["state"]),
        ):
            out[k].append(np.asarray(v, dtype=np.float32))
        obs, info = (env.reset()) if (term or trunc) else (next_obs, next_info)
    return {k: np.stack(v) for k, v in out.items()}


#: the env id of :class:`MovingDotEnv` (``gym.make("pomdp/MovingDot-v0")``; it ends its own episodes)
MOVING_DOT_ID = "pomdp/MovingDot-v0"


def register_envs() -> None:
    """Register :data:`MOVING_DOT_ID` with gymnasium (idempotent)."""
    if MOVING_DOT_ID not in gym.envs.registry:
        gym.register(id=MOVING_DOT_ID, entry_point=f"{__name__}:MovingDotEnv")


register_envs()

__all__ = [
    "MOVING_DOT_ID",
    "register_envs",
    "MovingDotEnv",
    "VAE",
    "LatentDynamicsModel",
    "gaussian_kl",
    "collect_image_transitions",
]
