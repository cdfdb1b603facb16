r"""The VAE and the latent-state model as runnable programs (``deeprl train --algo vae --env pomdp/MovingDot-v0``).

Both learn an observation model of an env seen through images (notes 9/28, 10/5; see
:mod:`core_rl.model_based.vae`) from ``n_transitions`` transitions of the uniformly random policy,
spending ``gradient_steps`` (``--steps``) minibatch Adam steps, and are scored on
``test_transitions`` held-out transitions (another seed):

* ``vae`` — :class:`~core_rl.model_based.vae.VAE` on single observations, maximizing the ELBO
  :math:`\mathbb E_q[\log p_\theta(o|z)] - \beta D_{KL}(q_\phi(z|o)\|\mathcal N(0,I))`;
* ``latent_dynamics`` — :class:`~core_rl.model_based.vae.LatentDynamicsModel`: the VAE plus the
  latent transition prior :math:`p_\psi(z'|z,a)`, trained on the two-step ELBO and prediction term.

Metrics: the training losses every ``log_every`` steps; ``recon_mse`` beside ``mean_image_mse``
(predicting the training mean image) and their ratio ``recon_ratio``; for ``latent_dynamics``
``prediction_mse`` of :math:`E[o'|o,a]` through the latent beside ``no_motion_mse`` (predicting
:math:`o' = o`) and ``prediction_ratio``; where the env reports its hidden state as
``info["state"]`` (MovingDot does), ``state_r2``: the smallest :math:`R^2` of a linear regression
from the latent mean :math:`\mu_\phi(o)` to each state coordinate (the latent as a state estimate).
A model learns no controller, so ``mean_return`` is the mean episode return of the data-collecting
random policy (reported for the record, not a score). Artifacts: ``model.pt`` (the state dict, the
config, the observation shape and action size) and ``samples.npz`` (held-out observations with
their reconstructions, and for ``latent_dynamics`` the next observations and their predictions).

The observations must lie in [0, 1] (the decoder is Bernoulli per pixel); actions are a ``Box``
(flattened) or ``Discrete`` (one-hot).

Example (a small budget: the held-out reconstruction error falls well below the mean image's;
~5 s)::

    >>> import tempfile
    >>> from pathlib import Path
    >>> from core_rl.common.tracking import MemoryTracker
    >>> settings = {"n_transitions": 2000, "test_transitions": 300, "gradient_steps": 800}
    >>> result = VAEProgram("pomdp/MovingDot-v0", settings).run(MemoryTracker(), Path(tempfile.mkdtemp()))
    >>> result.metrics["recon_ratio"] < 0.4, result.artifacts
    (True, ['model.pt', 'samples.npz'])
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from core_rl.common import optim
from core_rl.common.config import Widths
from core_rl.common.envs import make_env
from core_rl.common.errors import SpaceError
from core_rl.common.program import Program, ProgramResult
from core_rl.common.seeding import configure_torch, set_seed
from core_rl.common.tracking import Tracker
from core_rl.model_based.vae import VAE, LatentDynamicsModel


class LatentModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_transitions: int = Field(3000, ge=2, description="Training transitions of the uniformly random policy.")
    test_transitions: int = Field(500, ge=2, description="Held-out transitions (seed + 1) the model is scored on.")
    gradient_steps: int = Field(1200, ge=1, description="Minibatch Adam steps.")
    batch_size: int = Field(128, ge=1)
    latent_dim: int = Field(4, ge=1, description="Size of the latent state z.")
    hidden_sizes: Widths = Field((128, 128), description="Encoder widths (the decoder mirrors them).")
    lr: float = Field(1e-3, gt=0.0, description="Adam learning rate.")
    beta: float = Field(1.0, ge=0.0, description="Weight of the KL terms.")
    log_every: int = Field(50, ge=1, description="Gradient steps between logged training losses.")
    env_kwargs: dict[str, Any] = Field(default_factory=dict, description="gym.make kwargs.")
    seed: int = Field(0, ge=0)
    torch_threads: int = Field(1, ge=0, description="torch intra-op threads; 0 leaves torch's default.")


class LatentDynamicsConfig(LatentModelConfig):
    dynamics_hidden: tuple[int, ...] = Field((128, 128), description="Widths of the latent transition network.")
    prediction_weight: float = Field(1.0, ge=0.0, description="Weight of the prior-prediction term.")


def collect_random_transitions(env: gym.Env, n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` transitions of uniformly random actions: ``obs``, ``actions`` (as the model's input:
    a Box flattened, Discrete one-hot), ``next_obs``, ``states``/``next_states`` when the env reports
    ``info["state"]``, and ``returns`` of the episodes that finished (or the one partial episode)."""
    space = env.action_space
    space.seed(seed)
    obs, info = env.reset(seed=seed)
    keys = ("obs", "actions", "next_obs", "states", "next_states")
    out: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    returns, total = [], 0.0
    has_state = "state" in info
    for _ in range(n):
        action = space.sample()
        next_obs, reward, term, trunc, next_info = env.step(action)
        total += float(reward)
        x = np.eye(space.n, dtype=np.float32)[int(action)] if isinstance(space, gym.spaces.Discrete) else action
        out["obs"].append(np.asarray(obs, dtype=np.float32))
        out["actions"].append(np.asarray(x, dtype=np.float32).reshape(-1))
        out["next_obs"].append(np.asarray(next_obs, dtype=np.float32))
        if has_state:
            out["states"].append(np.asarray(info["state"], dtype=np.float32))
            out["next_states"].append(np.asarray(next_info["state"], dtype=np.float32))
        if term or trunc:
            returns.append(total)
            total = 0.0
            obs, info = env.reset()
        else:
            obs, info = next_obs, next_info
    data = {k: np.stack(v) for k, v in out.items() if v}
    data["returns"] = np.asarray(returns or [total], dtype=np.float64)
    return data


def state_r2(latent: np.ndarray, states: np.ndarray) -> float:
    r"""The smallest :math:`R^2` over the state coordinates of a least-squares fit ``[z, 1] → state``."""
    X = np.c_[latent, np.ones(len(latent))]
    coef, *_ = np.linalg.lstsq(X, states, rcond=None)
    resid = ((X @ coef - states) ** 2).sum(0)
    total = ((states - states.mean(0)) ** 2).sum(0)
    return float((1 - resid / np.maximum(total, 1e-12)).min())


class _LatentProgram(Program):
    budget_field: ClassVar[str | None] = "gradient_steps"

    def setup(self) -> None:
        cfg: LatentModelConfig = self.config  # type: ignore[assignment]
        env = make_env(self.env_id, **cfg.env_kwargs)
        obs_space, act_space = env.observation_space, env.action_space
        env.close()
        if not isinstance(obs_space, gym.spaces.Box) or obs_space.low.min() < 0 or obs_space.high.max() > 1:
            raise SpaceError(
                f"{self.name} models observations in [0, 1] (a Bernoulli decoder per pixel, e.g. images); "
                f"env '{self.env_id}' observes {obs_space} (try pomdp/MovingDot-v0)"
            )
        if not isinstance(act_space, (gym.spaces.Box, gym.spaces.Discrete)):
            raise SpaceError(f"{self.name} needs Box or Discrete actions; env '{self.env_id}' has {act_space}")
        self.obs_shape = tuple(obs_space.shape)
        self.act_dim = int(act_space.n) if isinstance(act_space, gym.spaces.Discrete) else int(np.prod(act_space.shape))

    def data(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        cfg: LatentModelConfig = self.config  # type: ignore[assignment]
        env = make_env(self.env_id, **cfg.env_kwargs)
        try:
            train = collect_random_transitions(env, cfg.n_transitions, cfg.seed)
            test = collect_random_transitions(env, cfg.test_transitions, cfg.seed + 1)
        finally:
            env.close()
        return train, test

    def fit(self, train: dict[str, np.ndarray], tracker: Tracker) -> Any:
        raise NotImplementedError

    def vae(self, model: Any) -> VAE:
        raise NotImplementedError

    def score(self, model: Any, test: dict[str, np.ndarray], samples: dict[str, np.ndarray]) -> dict[str, float]:
        return {}

    def run(self, tracker: Tracker, out_dir: Path) -> ProgramResult:
        cfg: LatentModelConfig = self.config  # type: ignore[assignment]
        configure_torch(cfg.torch_threads)
        set_seed(cfg.seed)
        train, test = self.data()
        model = self.fit(train, tracker)
        vae = self.vae(model)
        obs = torch.as_tensor(test["obs"])
        with torch.no_grad():
            recon = vae.reconstruct(obs)
            latent = vae.encode(obs)[0].numpy()
        recon_mse = float(((recon - obs) ** 2).mean())
        mean_image_mse = float(((obs - torch.as_tensor(train["obs"]).mean(0)) ** 2).mean())
        metrics = {
            "recon_mse": recon_mse,
            "mean_image_mse": mean_image_mse,
            "recon_ratio": recon_mse / max(mean_image_mse, 1e-12),
            "mean_return": float(train["returns"].mean()),
        }
        if "states" in test:
            metrics["state_r2"] = state_r2(latent, test["states"])
        k = min(16, len(obs))
        samples = {"obs": test["obs"][:k], "reconstructions": recon[:k].numpy()}
        metrics.update(self.score(model, test, samples))
        tracker.log_metrics(metrics, cfg.gradient_steps)
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "algo": self.name,
                "env_id": self.env_id,
                "config": cfg.model_dump(mode="json"),
                "obs_shape": list(self.obs_shape),
                "act_dim": self.act_dim,
                "state_dict": model.state_dict(),
            },
            out_dir / "model.pt",
        )
        np.savez(out_dir / "samples.npz", **samples)
        (out_dir / "metrics.json").write_text(json.dumps(metrics))
        return ProgramResult(metrics["mean_return"], cfg.gradient_steps, metrics, ["model.pt", "samples.npz"])


class VAEProgram(_LatentProgram):
    r"""A VAE of the env's observations: amortized :math:`q_\phi(z|o)`, reparameterized ELBO."""

    name = "vae"
    config_cls: ClassVar[type[BaseModel]] = LatentModelConfig

    def fit(self, train: dict[str, np.ndarray], tracker: Tracker) -> VAE:
        cfg: LatentModelConfig = self.config  # type: ignore[assignment]
        torch.manual_seed(cfg.seed)
        vae = VAE(self.obs_shape, cfg.latent_dim, cfg.hidden_sizes)
        optimizer = torch.optim.Adam(vae.parameters(), lr=cfg.lr)
        generator = torch.Generator().manual_seed(cfg.seed)
        obs = torch.as_tensor(train["obs"])
        n = obs.shape[0]
        for step in range(1, cfg.gradient_steps + 1):
            idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=generator)
            loss, stats = vae.negative_elbo(obs[idx], beta=cfg.beta)
            optim.step(optimizer, loss)
            if step % cfg.log_every == 0 or step == cfg.gradient_steps:
                tracker.log_metrics({"loss": loss.item(), **stats}, step)
        return vae

    def vae(self, model: Any) -> VAE:
        return model


class LatentDynamicsProgram(_LatentProgram):
    r"""A latent-state model: the VAE plus :math:`p_\psi(z'|z,a)`; predicts the next image in the latent."""

    name = "latent_dynamics"
    config_cls: ClassVar[type[BaseModel]] = LatentDynamicsConfig

    def fit(self, train: dict[str, np.ndarray], tracker: Tracker) -> LatentDynamicsModel:
        cfg: LatentDynamicsConfig = self.config  # type: ignore[assignment]
        model = LatentDynamicsModel(
            self.obs_shape,
            self.act_dim,
            latent_dim=cfg.latent_dim,
            hidden_sizes=cfg.hidden_sizes,
            dynamics_hidden=cfg.dynamics_hidden,
            lr=cfg.lr,
            beta=cfg.beta,
            prediction_weight=cfg.prediction_weight,
            seed=cfg.seed,
        )
        done = 0
        while done < cfg.gradient_steps:  # chunks share the model's generator: one run of fit
            chunk = min(cfg.log_every, cfg.gradient_steps - done)
            stats = model.fit(train["obs"], train["actions"], train["next_obs"], steps=chunk, batch_size=cfg.batch_size)
            done += chunk
            tracker.log_metrics(stats, done)
        return model

    def vae(self, model: Any) -> VAE:
        return model.vae

    def score(self, model: Any, test: dict[str, np.ndarray], samples: dict[str, np.ndarray]) -> dict[str, float]:
        obs, act, nxt = (torch.as_tensor(test[k]) for k in ("obs", "actions", "next_obs"))
        pred = model.predict_next_obs(obs, act)
        prediction_mse = float(((pred - nxt) ** 2).mean())
        no_motion_mse = float(((obs - nxt) ** 2).mean())
        k = len(samples["obs"])
        samples.update(actions=test["actions"][:k], next_obs=test["next_obs"][:k], predictions=pred[:k].numpy())
        return {
            "prediction_mse": prediction_mse,
            "no_motion_mse": no_motion_mse,
            "prediction_ratio": prediction_mse / max(no_motion_mse, 1e-12),
        }


__all__ = [
    "VAEProgram",
    "LatentDynamicsProgram",
    "LatentModelConfig",
    "LatentDynamicsConfig",
    "collect_random_transitions",
    "state_r2",
]
