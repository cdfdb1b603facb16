r"""Model error compounds with the planning horizon; a bootstrap ensemble reduces it and knows where
it is wrong (notes 9/26–9/28), measured on Pendulum-v1.

A model :math:`\hat f_\phi(s,a) = s + \Delta_\phi(s,a)` is fitted on random-action transitions, then
rolled out open loop along a held-out action sequence, :math:`\hat s_{h+1} = \hat f_\phi(\hat s_h, a_h)`,
:math:`\hat s_0 = s_0`. The prediction error

.. math:: e(h) = \Big(\mathbb E\,\|\hat s_h - s_h\|^2\Big)^{1/2}, \qquad h = 1..H,

grows with h: each step's error moves the next input off the data, where the model is worse (the
distribution shift behind the notes' "error building up from a faulty model").
Compared, with equal data and training:

* ``single``: one deterministic network (squared error), its mean rollout;
* ``gaussian``: one probabilistic network (Gaussian NLL), its mean rollout;
* ``ensemble_mean``: PETS's probabilistic bootstrap ensemble
  (:class:`~core_rl.model_based.ensemble.BootstrapEnsemble`), rolling out the member-averaged mean
  :math:`\hat s_{h+1} = \hat s_h + \frac1M\sum_m\mu_{\phi_m}(\hat s_h,a_h)`;
* ``det_ensemble_mean``: the same bootstrap ensemble of deterministic (squared-error) members,
  against ``single`` the effect of ensembling alone;
* ``ensemble_ts``: PETS's trajectory sampling (TS∞): K particles per member, each keeping its member
  and sampling :math:`\Delta\sim\mathcal N(\mu_{\phi_m},\sigma^2_{\phi_m})`; the prediction is the
  particle mean and the particles' spread :math:`\hat\sigma_h` its uncertainty.

``uncertainty_error_correlation`` is the rank correlation, over held-out sequences, between
:math:`\hat\sigma_h` and the actual error at h = H/2: an uncertainty-aware planner can only avoid
the model's errors if the spread points to them.

**Planning.** From ``n_plan`` held-out start states, CEM
(:class:`~core_rl.model_based.planners.shooting.CEM`) optimizes a ``plan_horizon``-step action
sequence for the known Pendulum reward under each model: the single deterministic network, and the
ensemble scored by TS∞ particles (PETS; particle mean). The plan is then run open loop in the true
dynamics. ``exploitation`` = predicted − true return: how much the optimizer found model errors
instead of reward (the notes' "planning through the model exploits its mistakes"); ``true_return``
is what the plan is worth, next to a plan made with the true dynamics.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from scipy.stats import spearmanr

from core_rl.common.errors import ConfigError
from core_rl.common.tracking import NullTracker, Tracker
from core_rl.common.transitions import Transitions
from core_rl.model_based.dynamics import NeuralDynamics
from core_rl.model_based.ensemble import BootstrapEnsemble
from core_rl.model_based.env_models import pendulum_obs_dynamics, pendulum_reward
from core_rl.model_based.planners.shooting import CEM, FunctionModel, TrajectoryEvaluator


def random_action_rollouts(n_episodes: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Observations (n, length+1, 3) and uniform random actions (n, length, 1) of Pendulum-v1 episodes."""
    env = gym.make("Pendulum-v1")
    env.action_space.seed(seed)
    obs = np.empty((n_episodes, length + 1, 3), dtype=np.float32)
    act = np.empty((n_episodes, length, 1), dtype=np.float32)
    for i in range(n_episodes):
        obs[i, 0], _ = env.reset(seed=seed + i)
        for t in range(length):
            act[i, t] = env.action_space.sample()
            obs[i, t + 1], *_ = env.step(act[i, t])
    env.close()
    return obs, act


@torch.no_grad()
def mean_rollout(model: NeuralDynamics, obs0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Open-loop rollout of the member-averaged mean: (N, 3), (N, H, 1) -> (N, H, 3)."""
    out, s = [], obs0
    for h in range(actions.shape[1]):
        s, _ = model.mean_step(s, actions[:, h])
        out.append(s)
    return torch.stack(out, dim=1)


@torch.no_grad()
def ts_rollout(
    model: BootstrapEnsemble, obs0: torch.Tensor, actions: torch.Tensor, particles: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """TS∞: ``particles`` per member, each propagated by its own member with sampled noise.
    Returns the particle mean and the particles' total standard deviation, (N, H, 3) and (N, H)."""
    M, (N, H, _) = model.n_members, actions.shape
    s = obs0.repeat(M, particles, 1)  # [M, K·N, 3]: member m owns slice m
    means, stds = [], []
    for h in range(H):
        a = actions[:, h].repeat(M, particles, 1)
        s, _ = model.propagate(s, a, sample=True)
        cloud = s.reshape(M * particles, N, -1)
        means.append(cloud.mean(0))
        stds.append(cloud.var(0).sum(-1).sqrt())
    return torch.stack(means, 1), torch.stack(stds, 1)


def plan_and_execute(
    model: Any, starts: torch.Tensor, horizon: int, particles: int, seed: int, candidates: int = 100
) -> dict[str, float]:
    """CEM plans from ``starts`` scored in ``model``; their predicted and true (exact dynamics) returns."""
    n_members = int(getattr(model, "n_members", 1))
    scorer = TrajectoryEvaluator(
        model, n_particles=n_members * particles, reward_fn=pendulum_reward, sample=n_members > 1
    )
    truth = TrajectoryEvaluator(FunctionModel(pendulum_obs_dynamics, 3, 1), reward_fn=pendulum_reward)
    low, high = torch.tensor([-2.0]), torch.tensor([2.0])
    cem = CEM(scorer, low, high, horizon=horizon, n_candidates=candidates, n_iterations=4, n_elites=10, seed=seed)
    with torch.no_grad():
        plan = cem.plan(starts).actions[:, None]  # [B, 1, H, 1]
        predicted = scorer(starts, plan)[:, 0]
        true = truth(starts, plan)[:, 0]
    return {
        "predicted_return": float(predicted.mean()),
        "true_return": float(true.mean()),
        "exploitation": float((predicted - true).mean()),
    }


def run_model_error(
    tracker: Tracker | None = None,
    seed: int = 0,
    n_train_episodes: int = 20,
    horizon: int = 30,
    n_test: int = 100,
    n_members: int = 5,
    particles: int = 4,
    hidden: int = 128,
    epochs: int = 60,
    n_plan: int = 10,
    plan_horizon: int = 20,
) -> dict[str, Any]:
    """Open-loop prediction error e(h) of a single model and of a PETS ensemble fitted on
    ``n_train_episodes`` random-action Pendulum episodes (200 steps each), on ``n_test`` held-out
    random action sequences of length ``horizon``."""
    if n_train_episodes < 1 or horizon < 2 or n_test < max(10, n_plan) or n_members < 2 or n_plan < 0:
        raise ConfigError(
            "need n_train_episodes >= 1, horizon >= 2, n_test >= max(10, n_plan), n_members >= 2 and "
            f"n_plan >= 0, got {n_train_episodes}, {horizon}, {n_test}, {n_members}, {n_plan}"
        )
    tracker = tracker or NullTracker()
    torch.manual_seed(seed)
    obs, act = random_action_rollouts(n_train_episodes, 200, seed)
    data = Transitions.from_arrays(
        obs[:, :-1].reshape(-1, 3), act.reshape(-1, 1), np.zeros(obs[:, :-1].size // 3), obs[:, 1:].reshape(-1, 3)
    )
    test_obs, test_act = random_action_rollouts(n_test, horizon, seed + 10_000)
    s0, a_seq, truth = (torch.as_tensor(x) for x in (test_obs[:, 0], test_act, test_obs[:, 1:]))

    common = dict(hidden_sizes=(hidden, hidden), learn_reward=False, seed=seed)
    models: dict[str, NeuralDynamics] = {
        "single": NeuralDynamics(3, 1, n_members=1, probabilistic=False, **common),
        "gaussian": NeuralDynamics(3, 1, n_members=1, probabilistic=True, **common),
        "ensemble": BootstrapEnsemble(3, 1, n_members=n_members, probabilistic=True, **common),
        "det_ensemble": BootstrapEnsemble(3, 1, n_members=n_members, probabilistic=False, **common),
    }
    holdout = {name: m.fit(data, epochs=epochs, patience=8)["model_holdout_mse"] for name, m in models.items()}
    preds = {name: mean_rollout(models[name], s0, a_seq) for name in ("single", "gaussian")}
    preds["ensemble_mean"] = mean_rollout(models["ensemble"], s0, a_seq)
    preds["det_ensemble_mean"] = mean_rollout(models["det_ensemble"], s0, a_seq)
    preds["ensemble_ts"], spread = ts_rollout(models["ensemble"], s0, a_seq, particles)

    errors = {name: (p - truth).pow(2).sum(-1) for name, p in preds.items()}  # (N, H) squared errors
    rmse = {name: e.mean(0).sqrt().numpy() for name, e in errors.items()}
    mid = horizon // 2 - 1
    rho = float(spearmanr(spread[:, mid].numpy(), errors["ensemble_ts"][:, mid].sqrt().numpy())[0])
    out: dict[str, Any] = {"n_transitions": len(data), "horizons": list(range(1, horizon + 1))}
    for name, e in rmse.items():
        out[name] = {
            "error_h1": float(e[0]),
            f"error_h{mid + 1}": float(e[mid]),
            f"error_h{horizon}": float(e[-1]),
            "growth_h_last_over_h1": float(e[-1] / e[0]),
            "curve": e.tolist(),
        }
        tracker.log_metrics({f"{name}.error_h{horizon}": float(e[-1])}, step=0)
    out["one_step_holdout_mse"] = holdout
    out["uncertainty_error_correlation"] = rho
    if n_plan:
        starts = s0[:n_plan]
        out["planning"] = {
            "single": plan_and_execute(models["single"], starts, plan_horizon, 1, seed),
            "ensemble_ts": plan_and_execute(models["ensemble"], starts, plan_horizon, particles, seed),
            "true_dynamics": plan_and_execute(
                FunctionModel(pendulum_obs_dynamics, 3, 1), starts, plan_horizon, 1, seed
            ),
        }
    out["ensemble_mean_vs_gaussian_at_H"] = float(rmse["ensemble_mean"][-1] / rmse["gaussian"][-1])
    out["det_ensemble_vs_single_at_H"] = float(rmse["det_ensemble_mean"][-1] / rmse["single"][-1])

    from core_rl.common.plotting import plt

    h = np.arange(1, horizon + 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, e in rmse.items():
        ax1.semilogy(h, e, label=name)
    ax1.set_xlabel("open-loop horizon h")
    ax1.set_ylabel("RMSE of ŝ_h (obs units)")
    ax1.set_title(f"Pendulum-v1, {len(data)} random-action transitions")
    ax1.legend()
    ax2.scatter(spread[:, mid].numpy(), errors["ensemble_ts"][:, mid].sqrt().numpy(), s=10)
    ax2.set_xlabel(f"ensemble spread σ̂ at h = {mid + 1}")
    ax2.set_ylabel("actual error")
    ax2.set_title(f"Spearman ρ = {rho:.2f}")
    fig.tight_layout()
    tracker.log_figure(fig, "model_error.png")
    plt.close(fig)
    return out


__all__ = ["mean_rollout", "random_action_rollouts", "run_model_error", "ts_rollout"]
