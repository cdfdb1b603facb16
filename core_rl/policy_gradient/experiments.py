r"""The notes' policy-gradient claims (9/5), measured on a small tabular MDP where the truth is exact.

**Variance reduction** (:func:`run_pg_variance`). REINFORCE estimates

.. math::
    \nabla_\theta J(\theta) = \mathbb E_{\tau\sim\pi_\theta(\tau)}\Big[\sum_{t=1}^T
        \nabla_\theta\log\pi_\theta(a_t|s_t)\,\big(\hat Q_t - b\big)\Big]

with :math:`\hat Q_t = r(\tau) = \sum_{t'=1}^T r_{t'}` (the whole return) or
:math:`\hat Q_t = \sum_{t'=t}^T r_{t'}` (the reward-to-go, by causality), and a baseline b (none,
the batch mean of the returns, or the variance-optimal
:math:`b = \mathbb E[(\nabla\log\pi_\theta(\tau))^2 r(\tau)]/\mathbb E[(\nabla\log\pi_\theta(\tau))^2]`).
None of these changes the expectation; the notes claim causality and baselines cut the variance.
On a finite MDP the gradient is exact:
:math:`J(\theta) = \sum_{t=1}^T\sum_s\mu_t(s)\sum_a\pi_\theta(a|s)r(s,a)` with
:math:`\mu_{t+1}(s') = \sum_{s,a}\mu_t(s)\pi_\theta(a|s)p(s'|s,a)`, differentiated by autograd.
For each estimator of the library's :class:`~core_rl.policy_gradient.REINFORCE`, K independent
batches give :math:`\hat g_1..\hat g_K`; we report the trace of their covariance
:math:`\operatorname{tr}\widehat{\mathrm{Cov}}[\hat g]`, the mean squared error
:math:`\frac1K\sum_k\|\hat g_k - \nabla J\|^2` and the bias z-score
:math:`\|\bar g - \nabla J\|^2 / (\operatorname{tr}\widehat{\mathrm{Cov}}/K)` (≈ 1 when unbiased).

**Importance weights** (:func:`run_importance_weight_variance`). Off-policy PG reweights
trajectories of a behaviour policy :math:`\bar\pi` by

.. math:: w_T(\tau) = \frac{\pi_{\theta'}(\tau)}{\bar\pi(\tau)} = \prod_{t=1}^T
    \frac{\pi_{\theta'}(a_t|s_t)}{\bar\pi(a_t|s_t)},\qquad \mathbb E_{\bar\pi}[w_T] = 1 .

Its second moment is exact by a forward pass that weights each step by the squared ratio:
:math:`m_1 = p(s_1)`, :math:`m_{t+1}(s') = \sum_{s,a} m_t(s)\,\frac{\pi_{\theta'}(a|s)^2}{\bar\pi(a|s)}\,
p(s'|s,a)`, :math:`\mathbb E[w_T^2] = \sum_s m_{T+1}(s)` and :math:`\mathrm{Var}[w_T] = \mathbb E[w_T^2]-1`;
the same pass with :math:`\pi_{\theta'}^4/\bar\pi^3` gives :math:`\mathbb E[w_T^4]`, hence the
sampling error of the Monte Carlo estimate. When :math:`\pi_{\theta'}` and :math:`\bar\pi` do not
depend on the state, :math:`\mathrm{Var}[w_T] = (1+\chi^2(\pi_{\theta'}\|\bar\pi))^T - 1`: exponential
in the horizon, which is why the notes move to per-step (causal) weights and the state-action marginal.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from core_rl.common.errors import ConfigError
from core_rl.common.tracking import NullTracker, Tracker
from core_rl.tabular.mdp import TabularMDP

ESTIMATORS: tuple[tuple[str, str], ...] = (
    ("return", "none"),
    ("reward_to_go", "none"),
    ("return", "mean"),
    ("reward_to_go", "mean"),
    ("return", "optimal"),
    ("reward_to_go", "optimal"),
)


def random_mdp(n_states: int, n_actions: int, horizon: int, mdp_seed: int) -> TabularMDP:
    """A random finite-horizon MDP: Dirichlet(½) transitions, U(0, 1) rewards, Dirichlet(1) p(s_1)."""
    if n_states < 1 or n_actions < 2 or horizon < 1:
        raise ConfigError(
            f"need n_states >= 1, n_actions >= 2 and horizon >= 1, got {n_states}, {n_actions}, {horizon}"
        )
    rng = np.random.default_rng(mdp_seed)
    P = rng.dirichlet(np.full(n_states, 0.5), size=(n_states, n_actions))
    r = rng.uniform(0.0, 1.0, size=(n_states, n_actions))
    return TabularMDP(P, r, gamma=1.0, horizon=horizon, mu0=rng.dirichlet(np.ones(n_states)))


class TabularEpisodeEnv(gym.Env):
    """A :class:`TabularMDP` with a horizon as a gymnasium env: episodes of exactly H steps."""

    def __init__(self, mdp: TabularMDP):
        if mdp.horizon is None or mdp.mu0 is None:
            raise ConfigError("TabularEpisodeEnv needs an MDP with a horizon and mu0")
        self.mdp = mdp
        self.observation_space = gym.spaces.Discrete(mdp.n_states)
        self.action_space = gym.spaces.Discrete(mdp.n_actions)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        self.s, self.t = int(self.np_random.choice(self.mdp.n_states, p=self.mdp.mu0)), 0
        return self.s, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict]:
        r = float(self.mdp.r[self.s, int(action)])
        self.s = int(self.np_random.choice(self.mdp.n_states, p=self.mdp.P[self.s, int(action)]))
        self.t += 1
        return self.s, r, self.t >= self.mdp.horizon, False, {}


def exact_return(mdp: TabularMDP, probs: torch.Tensor) -> torch.Tensor:
    """J(θ) = Σ_t Σ_s μ_t(s) Σ_a π(a|s) r(s,a) over the horizon, differentiable in ``probs`` (S, A)."""
    P = torch.as_tensor(np.array(mdp.P), dtype=probs.dtype)
    R = torch.as_tensor(np.array(mdp.r), dtype=probs.dtype)
    mu, J = torch.as_tensor(np.array(mdp.mu0), dtype=probs.dtype), torch.zeros((), dtype=probs.dtype)
    for _ in range(int(mdp.horizon or 0)):
        J = J + (mu[:, None] * probs * R).sum()
        mu = torch.einsum("s,sa,sax->x", mu, probs, P)
    return J


def exact_policy_gradient(policy: torch.nn.Module, mdp: TabularMDP) -> torch.Tensor:
    """∇_θ J(θ) of a policy over the MDP's discrete states, flattened in ``policy.parameters()`` order."""
    probs = policy.distribution(torch.arange(mdp.n_states)).probs.double()
    grads = torch.autograd.grad(exact_return(mdp, probs), list(policy.parameters()))
    return torch.cat([g.reshape(-1) for g in grads]).float()


def run_pg_variance(
    tracker: Tracker | None = None,
    seed: int = 0,
    n_batches: int = 200,
    n_states: int = 4,
    n_actions: int = 3,
    horizon: int = 4,
    mdp_seed: int = 7,
    sharpen: float = 150.0,
) -> dict[str, Any]:
    """Variance and error of the six REINFORCE estimators (return / reward-to-go × no / mean /
    optimal baseline) against the exact gradient, on the same ``n_batches`` batches of episodes.

    ``sharpen`` scales the policy's output layer so that π_θ is far from uniform (at the nearly
    uniform initialization the gradient is small and every estimator looks alike).
    """
    from core_rl.policy_gradient.reinforce import REINFORCE

    if n_batches < 10:
        raise ConfigError(f"n_batches must be at least 10 to estimate a covariance, got {n_batches}")
    tracker = tracker or NullTracker()
    mdp = random_mdp(n_states, n_actions, horizon, mdp_seed)
    agent = REINFORCE(
        lambda: TabularEpisodeEnv(mdp),
        baseline="none",
        seed=seed,
        gamma=1.0,
        hidden_sizes=(16,),
        n_envs=8,
        n_steps=16,
        tracker=NullTracker(),
    )
    with torch.no_grad():
        agent.policy.net[-1].weight.mul_(sharpen)
    exact = exact_policy_gradient(agent.policy, mdp)
    batches = [agent.collect_episodes() for _ in range(n_batches)]
    out: dict[str, Any] = {"exact_gradient_norm": float(exact.norm()), "episodes_per_batch": len(batches[0])}
    for advantage, baseline in ESTIMATORS:
        agent.config.advantage, agent.config.baseline = advantage, baseline
        g = torch.stack([agent.policy_gradient(b) for b in batches]).double()
        trace = float(g.var(0).sum())
        err2 = float((g.mean(0) - exact).square().sum())
        out[f"{advantage}/{baseline}"] = {
            "trace_cov": trace,
            "mse": float((g - exact).square().sum(1).mean()),
            "relative_bias": err2**0.5 / float(exact.norm()),
            "bias_z": err2 / (trace / len(batches)),
        }
    agent.close()
    plain = out["return/none"]["trace_cov"]
    for key, _ in zip([f"{a}/{b}" for a, b in ESTIMATORS], ESTIMATORS):
        out[key]["variance_ratio"] = out[key]["trace_cov"] / plain
        tracker.log_metrics({f"{key}.trace_cov": out[key]["trace_cov"]}, step=0)

    from core_rl.common.plotting import plt

    keys = [f"{a}/{b}" for a, b in ESTIMATORS]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    x = np.arange(len(keys))
    ax.bar(x - 0.2, [out[k]["trace_cov"] for k in keys], 0.4, label="tr Cov[ĝ]")
    ax.bar(x + 0.2, [out[k]["mse"] for k in keys], 0.4, label="E‖ĝ − ∇J‖² (exact ∇J)")
    ax.set_yscale("log")
    ax.set_xticks(x, [k.replace("/", "\n") for k in keys])
    ax.set_ylabel("per batch")
    ax.set_title(f"REINFORCE estimators, {n_states}-state MDP, H={horizon}, {n_batches} batches")
    ax.legend()
    fig.tight_layout()
    tracker.log_figure(fig, "pg_variance.png")
    plt.close(fig)
    return out


# ---- importance weights ---------------------------------------------------------------------------
def importance_weight_moments(
    mdp: TabularMDP, target: np.ndarray, behaviour: np.ndarray, horizon: int, power: int = 2
) -> np.ndarray:
    """E_π̄[w_T^power] for T = 1..horizon by the forward pass of the module docstring."""
    step = target**power / behaviour ** (power - 1)  # π'(a|s)^k / π̄(a|s)^(k-1)
    m, moments = np.asarray(mdp.mu0, dtype=float), []
    for _ in range(horizon):
        m = np.einsum("s,sa,sax->x", m, step, mdp.P)
        moments.append(m.sum())
    return np.array(moments)


def run_importance_weight_variance(
    tracker: Tracker | None = None,
    seed: int = 0,
    horizon: int = 20,
    n_trajectories: int = 20_000,
    n_states: int = 5,
    n_actions: int = 3,
    shift: float = 0.5,
    mdp_seed: int = 3,
) -> dict[str, Any]:
    """Monte Carlo variance of w_T = Π_t π'(a_t|s_t)/π̄(a_t|s_t) for T = 1..``horizon`` against the
    exact value (module docstring), from ``n_trajectories`` rollouts of π̄.

    π̄(·|s) = softmax(z_s) and π'(·|s) = softmax(z_s + ``shift``·ε_s) with z, ε ~ N(0, 1): ``shift``
    sets how far the target is from the behaviour policy. ``z_score`` compares the sampled
    E[w_T²] with the exact one in units of its standard error √((E[w⁴] − E[w²]²)/N).
    """
    if horizon < 2 or n_trajectories < 100:
        raise ConfigError(f"need horizon >= 2 and n_trajectories >= 100, got {horizon}, {n_trajectories}")
    tracker = tracker or NullTracker()
    mdp = random_mdp(n_states, n_actions, horizon, mdp_seed)
    rng = np.random.default_rng(mdp_seed + 1)
    z = rng.normal(size=(n_states, n_actions))
    eps = rng.normal(size=(n_states, n_actions))
    behaviour = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    target = np.exp(z + shift * eps) / np.exp(z + shift * eps).sum(1, keepdims=True)

    traj = mdp.sample(behaviour, n_trajectories, horizon, seed=seed)
    s, a = traj.states[:, :-1], traj.actions
    log_ratio = np.log(target[s, a]) - np.log(behaviour[s, a])
    w = np.exp(np.cumsum(log_ratio, axis=1))  # w_T for every prefix, (N, horizon)

    m2 = importance_weight_moments(mdp, target, behaviour, horizon, 2)
    m4 = importance_weight_moments(mdp, target, behaviour, horizon, 4)
    sample_m2 = (w**2).mean(0)
    se = np.sqrt((m4 - m2**2) / n_trajectories)
    T = np.arange(1, horizon + 1)
    rate = np.polyfit(T, np.log(m2), 1)[0]  # Var ≈ e^{rate·T} − 1 for large T
    out: dict[str, Any] = {
        "horizons": T.tolist(),
        "exact_variance": (m2 - 1.0).tolist(),
        "sampled_variance": w.var(0).tolist(),
        "sampled_mean_weight": w.mean(0).tolist(),
        "z_score": ((sample_m2 - m2) / se).tolist(),
        "exact_growth_rate_per_step": float(rate),
        "effective_sample_size_fraction": (1.0 / m2).tolist(),
        "variance_at_T1": float(m2[0] - 1.0),
        f"variance_at_T{horizon}": float(m2[-1] - 1.0),
    }
    for t in (0, horizon // 2 - 1, horizon - 1):
        tracker.log_metrics(
            {"exact_variance": float(m2[t] - 1.0), "sampled_variance": float(w[:, t].var())}, step=t + 1
        )

    from core_rl.common.plotting import plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.semilogy(T, m2 - 1.0, "k-", lw=2, label="exact Var[w_T]")
    ax.semilogy(T, w.var(0), "o", color="tab:orange", label=f"sampled, N={n_trajectories}")
    ax.fill_between(T, np.maximum(m2 - 1 - 2 * se, 1e-6), m2 - 1 + 2 * se, color="grey", alpha=0.25, label="±2 s.e.")
    ax.set_xlabel("horizon T")
    ax.set_ylabel("Var of Π_t π'(a_t|s_t)/π̄(a_t|s_t)")
    ax.set_title("importance weights of whole trajectories")
    ax.legend()
    fig.tight_layout()
    tracker.log_figure(fig, "importance_weight_variance.png")
    plt.close(fig)
    return out


__all__ = [
    "ESTIMATORS",
    "TabularEpisodeEnv",
    "exact_policy_gradient",
    "exact_return",
    "importance_weight_moments",
    "random_mdp",
    "run_importance_weight_variance",
    "run_pg_variance",
]
