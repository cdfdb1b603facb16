"""POMDP observation models (notes 9/28, 10/5): a VAE maps 16×16 images of a moving dot to a latent
state, and a latent dynamics model trained with it predicts the next image from the latent alone."""

import numpy as np
import pytest
import torch

from core_rl.model_based.vae import VAE, LatentDynamicsModel, MovingDotEnv, collect_image_transitions, gaussian_kl


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_moving_dot_env_renders_the_hidden_state():
    env = MovingDotEnv(size=16)
    obs, info = env.reset(seed=0)
    assert obs.shape == (16, 16) and obs.dtype == np.float32 and 0.0 <= obs.min() and obs.max() <= 1.0
    row, col = np.unravel_index(obs.argmax(), obs.shape)
    x, y = info["state"]
    assert abs(col - (1.5 + x * 12)) <= 1 and abs(row - (1.5 + y * 12)) <= 1  # the brightest pixel is the dot
    nxt, reward, term, trunc, info2 = env.step(np.array([1.0, 0.0], np.float32))
    assert info2["state"][0] == pytest.approx(min(x + 0.08, 1.0)) and info2["state"][1] == pytest.approx(y)
    assert reward == pytest.approx(-np.linalg.norm(info2["state"] - 0.5))


def test_gaussian_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu_q, logvar_q = torch.tensor([0.3, -1.0]), torch.tensor([-0.5, 0.4])
    mu_p, logvar_p = torch.tensor([0.0, 0.5]), torch.tensor([0.2, -0.3])
    z = mu_q + (0.5 * logvar_q).exp() * torch.randn(400_000, 2, generator=g)
    log_q = (-0.5 * ((z - mu_q) ** 2 / logvar_q.exp() + logvar_q)).sum(-1)
    log_p = (-0.5 * ((z - mu_p) ** 2 / logvar_p.exp() + logvar_p)).sum(-1)
    assert gaussian_kl(mu_q, logvar_q, mu_p, logvar_p).item() == pytest.approx((log_q - log_p).mean().item(), abs=0.01)
    assert gaussian_kl(torch.zeros(3), torch.zeros(3)).item() == 0.0


def test_reparameterization_carries_gradients_into_the_encoder():
    vae = VAE((4, 4), latent_dim=2, hidden_sizes=(16,))
    mu = torch.zeros(5, 2, requires_grad=True)
    logvar = torch.zeros(5, 2, requires_grad=True)
    z = vae.reparameterize(mu, logvar)
    z.pow(2).sum().backward()
    assert mu.grad.abs().sum() > 0 and logvar.grad.abs().sum() > 0


def test_vae_reconstructs_and_latent_dynamics_predict_the_image_env():
    torch.manual_seed(0)
    env = MovingDotEnv(size=16)
    train = collect_image_transitions(env, 3000, seed=0)
    test = collect_image_transitions(MovingDotEnv(size=16), 500, seed=1)
    model = LatentDynamicsModel((16, 16), act_dim=2, latent_dim=4, hidden_sizes=(128, 128), seed=0)
    stats = model.fit(train["obs"], train["actions"], train["next_obs"], steps=1200, batch_size=128)
    assert np.isfinite(stats["loss"]) and stats["kl"] > 0
    obs, act, next_obs = (torch.as_tensor(test[k]) for k in ("obs", "actions", "next_obs"))

    # reconstruction: far below the error of predicting the mean image
    recon = ((model.vae.reconstruct(obs) - obs) ** 2).mean().item()
    mean_image = ((obs - torch.as_tensor(train["obs"]).mean(0)) ** 2).mean().item()
    assert recon < 0.15 * mean_image, (recon, mean_image)

    # one-step prediction through the latent dynamics beats "the dot does not move"
    pred = ((model.predict_next_obs(obs, act) - next_obs) ** 2).mean().item()
    no_motion = ((obs - next_obs) ** 2).mean().item()
    assert pred < 0.5 * no_motion, (pred, no_motion)

    # the latent is a state estimate: linear regression from μ_φ(o) recovers the hidden (x, y)
    z = model.encode(obs).numpy()
    X = np.c_[z, np.ones(len(z))]
    coef, *_ = np.linalg.lstsq(X, test["states"], rcond=None)
    resid = ((X @ coef - test["states"]) ** 2).sum(0)
    r2 = 1 - resid / ((test["states"] - test["states"].mean(0)) ** 2).sum(0)
    assert (r2 > 0.9).all(), r2

    # open-loop imagination in the latent alone for 3 steps stays better than a frozen image
    H = 3
    acts = torch.as_tensor(np.random.default_rng(0).uniform(-1, 1, (100, H, 2)), dtype=torch.float32)
    states, frames = test["states"][:100].astype(np.float64), []
    for t in range(H):
        states = np.clip(states + env.step_size * acts[:, t].numpy(), 0.0, 1.0)
        frames.append(env.render_state(states))
    truth = torch.as_tensor(np.stack(frames, 1))
    imagined = model.imagine(obs[:100], acts)
    assert ((imagined - truth) ** 2).mean() < 0.5 * ((obs[:100, None] - truth) ** 2).mean()
