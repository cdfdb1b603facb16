r"""Maximum-entropy inverse RL (notes 10/12: "increase the probabilities of states that the expert
reaches, decrease those the current policy reaches").

Model the expert as near-optimal behaviour under a learned reward :math:`r_\psi` (control as
inference, 10/10): :math:`p(\tau|\mathcal O,\psi) \propto p(\tau)\exp(r_\psi(\tau))`. Maximizing the
demonstrations' likelihood :math:`\mathcal L(\psi) = \frac1N\sum_i r_\psi(\tau_i) - \log Z(\psi)` gives

.. math::
    \nabla_\psi\mathcal L = \mathbb E_{\pi_E}\big[\nabla_\psi r_\psi\big] - \mathbb E_{p(\tau|\mathcal O,\psi)}\big[\nabla_\psi r_\psi\big]
      = \sum_{s,a}\big(\hat\rho_E(s,a) - \rho_\psi(s,a)\big)\,\nabla_\psi r_\psi(s,a),

where :math:`\rho_\psi` is the soft-optimal behaviour's visitation. **Exact tabular MaxEnt IRL**
(Ziebart) computes it with the two passes of :mod:`core_rl.inference.control_as_inference`:
the backward pass (soft value iteration under :math:`r_\psi`) gives :math:`\pi_\psi(a|s) = \exp(Q - V)`,
the forward pass propagates the state visitation :math:`\rho_\psi`. The reward is linear,
:math:`r_\psi = \psi^\top\phi(s,a)` (then the gradient is the feature-expectation gap
:math:`\mu_E - \mu_\psi`), or a neural network of the features (backprop through
:math:`-\sum_{s,a}(\hat\rho_E - \rho_\psi)\,r_\psi(s,a)`).

**Guided cost learning** (unknown dynamics) estimates :math:`\log Z` by importance sampling with
trajectories from the current policy :math:`\pi`:

.. math::
    \nabla_\psi\mathcal L \approx \frac1N\sum_i\nabla_\psi r_\psi(\tau_i)
      - \frac{1}{\sum_j w_j}\sum_j w_j\,\nabla_\psi r_\psi(\tau_j),\qquad
    w_j = \frac{p(\tau_j)\exp(r_\psi(\tau_j))}{p(\tau_j)\prod_t\pi(a_{j,t}|s_{j,t})}
        = \frac{\exp(r_\psi(\tau_j))}{\pi(\tau_j)}

(self-normalized: the dynamics cancel), alternated with a MaxEnt policy improvement step on
:math:`r_\psi` (here: entropy-regularized policy gradient on the same samples,
:math:`\mathbb E[\sum_t\nabla\log\pi(a_t|s_t)(\hat G_t - b_t)]` with :math:`\hat G_t` the reward-to-go of
:math:`r_\psi - \alpha\log\pi`). :func:`guided_cost_learning` only samples the MDP.

Example (the reward of a gridworld's cells from its expert; the learned reward's optimal policy
is as good as the expert's)::

    >>> from core_rl.tabular import policy_evaluation, value_iteration
    >>> from core_rl.tabular.gridworld import gridworld
    >>> world = gridworld("bridge", slip=0.2, gamma=0.95)  # goal right, holes in the corners
    >>> mdp = world.mdp
    >>> expert = value_iteration(mdp).policy
    >>> def start_value(policy):
    ...     return float(mdp.mu0 @ policy_evaluation(mdp, policy).V)
    >>> result = maxent_irl(mdp, world.cell_type_features(), expert, iterations=200)
    >>> learned = value_iteration(mdp.replace(r=result.reward)).policy
    >>> round(start_value(learned) / start_value(expert), 2)
    1.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from core_rl.common import optim
from core_rl.common.config import Widths, format_validation_error
from core_rl.common.errors import ConfigError
from core_rl.common.networks import mlp
from core_rl.common.seeding import configure_torch, set_seed
from core_rl.inference.control_as_inference import SoftVIResult, soft_value_iteration, soft_visitation
from core_rl.irl.features import (
    Expert,
    check_features,
    check_trajectories,
    expert_visitation,
    feature_expectations,
    initial_distribution,
)
from core_rl.tabular.mdp import TabularMDP, Trajectories


class MaxEntIRLConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reward: Literal["linear", "neural"] = Field("linear", description="r_ψ = ψᵀφ or an MLP of φ.")
    hidden_sizes: Widths = Field((32, 32), description="Hidden widths of the neural reward.")
    activation: str = Field("relu", pattern="^(tanh|relu|elu|gelu)$")
    iterations: int = Field(200, ge=1, description="Gradient steps (each: one backward and one forward pass).")
    lr: float = Field(0.05, gt=0.0, description="Adam learning rate on ψ.")
    l2: float = Field(0.0, ge=0.0, description="Weight decay on ψ.")
    temperature: float = Field(1.0, gt=0.0, description="α of p(O|s,a) = exp(r/α).")
    backup: Literal["expected", "optimistic"] = Field(
        "expected", description="Soft backup: E[V'] (max causal entropy) or log E exp V' (exact inference)."
    )
    seed: int = Field(0, ge=0)
    torch_threads: int = Field(1, ge=0, description="torch intra-op threads; 0 leaves torch's default.")


class GCLConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reward: Literal["linear", "neural"] = "linear"
    hidden_sizes: Widths = (32, 32)
    activation: str = Field("relu", pattern="^(tanh|relu|elu|gelu)$")
    iterations: int = Field(150, ge=1, description="Sample / reward step / policy step rounds.")
    n_samples: int = Field(256, ge=2, description="Policy trajectories per round.")
    reward_lr: float = Field(0.05, gt=0.0)
    reward_steps: int = Field(5, ge=1, description="Reward gradient steps per round.")
    policy_lr: float = Field(0.2, gt=0.0)
    policy_steps: int = Field(1, ge=1, description="Policy-gradient steps per round.")
    demo_background: bool = Field(
        True,
        description="Add the demonstrations to the background samples, with q the mixture of π and the "
        "expert's empirical policy (balance-heuristic importance sampling).",
    )
    entropy_coef: float = Field(1.0, ge=0.0, description="α of the MaxEnt policy objective (1: the model p ∝ exp r).")
    gamma: float = Field(1.0, gt=0.0, le=1.0, description="Discount of the policy step (1 matches exp(Σ_t r)).")
    seed: int = Field(0, ge=0)
    torch_threads: int = Field(1, ge=0, description="torch intra-op threads; 0 leaves torch's default.")


def _validate(cls: type[BaseModel], config: BaseModel | dict | None, overrides: dict, prefix: str):  # type: ignore[no-untyped-def]
    try:
        if isinstance(config, cls):
            return config.model_copy(update=overrides) if overrides else config
        return cls.model_validate({**(config or {}), **overrides})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, prefix=prefix)) from None


class FeatureReward(nn.Module):
    r""":math:`r_\psi(s,a)` from features φ (S, A, K): linear :math:`\psi^\top\phi` or an MLP."""

    def __init__(
        self,
        n_features: int,
        kind: Literal["linear", "neural"] = "linear",
        hidden_sizes: tuple[int, ...] = (32, 32),
        activation: str = "relu",
    ):
        super().__init__()
        if kind == "linear":
            self.net = nn.Linear(n_features, 1, bias=False)
            nn.init.zeros_(self.net.weight)
        else:
            self.net = mlp(n_features, 1, hidden_sizes, activation, out_gain=0.1)

    def forward(self, phi: torch.Tensor) -> torch.Tensor:
        return self.net(phi).squeeze(-1)


@dataclass
class MaxEntIRLResult:
    """``reward`` (S, A) the learned reward as an MDP reward (``mdp.replace(r=result.reward)`` works:
    zero on terminal states, the value of entering one folded into the transitions into it, see
    :meth:`~core_rl.tabular.TabularMDP.fold_terminal_reward`); ``raw_reward`` (S, A) r_ψ(s, a) itself
    on every state (equal to ``reward`` without terminal states); ``model`` the reward module;
    ``soft`` the soft-VI result under it (``soft.policy`` the MaxEnt policy); ``history``
    per-iteration feature gap and demonstration log-likelihood."""

    reward: np.ndarray
    raw_reward: np.ndarray
    model: FeatureReward
    soft: SoftVIResult
    expert_visitation: np.ndarray
    visitation: np.ndarray
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def weights(self) -> np.ndarray | None:
        """ψ of a linear reward."""
        net = self.model.net
        return net.weight.detach().numpy()[0].copy() if isinstance(net, nn.Linear) else None


def maxent_irl(
    mdp: TabularMDP,
    features: ArrayLike,
    expert: Expert,
    config: MaxEntIRLConfig | dict | None = None,
    *,
    mu0: ArrayLike | None = None,
    **overrides: object,
) -> MaxEntIRLResult:
    r"""Exact tabular MaxEnt IRL: gradient ascent on :math:`\mathcal L(\psi)` with
    :math:`\nabla\mathcal L = \sum_{s,a}(\hat\rho_E - \rho_\psi)\nabla r_\psi`.

    The horizon is ``mdp.horizon`` (finite: time-varying soft policy) or, without one, the discounted
    infinite horizon (γ = ``mdp.gamma`` < 1). ``expert``: demonstrations (their visitation is
    discounted with ``mdp.gamma``; use demonstrations as long as the horizon) or a policy.
    ``mu0`` defaults to the MDP's, else the demonstrations' start distribution.

    **Episodic MDPs** (``mdp.terminal``): an episode ends on entering a terminal state, which is
    absorbing with zero reward. The reward model still scores terminal states — r_ψ(s', ·) is paid
    once, on entry — so "reach the goal, avoid the holes" is expressible with state features; the
    visitations count each terminal state once, on entry (``episodic_occupancy``), and the soft
    backward pass runs on the folded reward :math:`r_\psi(s,a) + \gamma\sum_{s'\in\mathcal T}
    p(s'|s,a)\bar r_\psi(s')`, whose returns are exactly :math:`\sum\rho\,r_\psi`, so the gradient
    stays :math:`\sum(\hat\rho_E - \rho_\psi)\nabla r_\psi`.
    """
    cfg: MaxEntIRLConfig = _validate(MaxEntIRLConfig, config, dict(overrides), "maxent_irl")
    configure_torch(cfg.torch_threads)
    set_seed(cfg.seed)
    phi = check_features(mdp, features)
    demos = check_trajectories(mdp, expert) if isinstance(expert, Trajectories) else None
    start = initial_distribution(mdp, demos, mu0)
    rho_E = expert_visitation(mdp, expert, start)
    phi_t = torch.as_tensor(phi, dtype=torch.float32)
    model = FeatureReward(phi.shape[2], cfg.reward, cfg.hidden_sizes, cfg.activation)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.l2)
    rho_E_t = torch.as_tensor(rho_E, dtype=torch.float32)
    mu_E = feature_expectations(rho_E, phi)
    history: list[dict[str, float]] = []
    episodic = bool(np.asarray(mdp.terminal).any())

    V_warm: list[np.ndarray | None] = [None]

    live = ~np.asarray(mdp.terminal)

    def solve(raw: np.ndarray) -> tuple[SoftVIResult, np.ndarray]:
        soft = soft_value_iteration(
            mdp,
            reward=mdp.fold_terminal_reward(raw),
            temperature=cfg.temperature,
            backup=cfg.backup,
            tol=1e-8,
            V0=V_warm[0],
        )
        if not soft.finite:
            V_warm[0] = soft.V  # the next reward is close: warm-start its iteration
        return soft, soft_visitation(mdp, soft, start, episodic=episodic)

    for _ in range(cfg.iterations):
        reward_t = model(phi_t)
        reward = reward_t.detach().double().numpy()
        soft, rho = solve(reward)  # backward + forward pass
        # ascent on L: the surrogate's gradient is -(rho_E - rho_psi)·∇r_psi
        surrogate = -((rho_E_t - torch.as_tensor(rho, dtype=torch.float32)) * reward_t).sum()
        optim.step(optimizer, surrogate)
        log_pi = soft.log_policy if not soft.finite else None
        history.append(
            {
                "feature_gap": float(np.linalg.norm(mu_E - feature_expectations(rho, phi))),
                "visitation_gap": float(np.abs(rho_E - rho).sum()),
                "log_likelihood": float((rho_E * log_pi)[live].sum()) if log_pi is not None else float("nan"),
            }
        )
    with torch.no_grad():
        raw = model(phi_t).double().numpy()
    soft, rho = solve(raw)
    return MaxEntIRLResult(
        reward=mdp.fold_terminal_reward(raw),
        raw_reward=raw,
        model=model,
        soft=soft,
        expert_visitation=rho_E,
        visitation=rho,
        history=history,
    )


# ---- guided cost learning: the sample-based variant ---------------------------------------------


def gcl_reward_loss(
    reward_expert: torch.Tensor, reward_samples: torch.Tensor, log_q_samples: torch.Tensor
) -> torch.Tensor:
    r""":math:`-\big[\frac1N\sum_i r(\tau_i) - \log\frac1M\sum_j\exp(r(\tau_j) - \log q(\tau_j))\big]`:
    its gradient is minus the importance-sampled MaxEnt gradient with self-normalized weights
    :math:`w_j \propto \exp(r(\tau_j))/q(\tau_j)`. Inputs are per-trajectory sums."""
    log_w = reward_samples - log_q_samples
    log_Z = torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])
    return -(reward_expert.mean() - log_Z)


def importance_weights(reward_samples: torch.Tensor, log_q_samples: torch.Tensor) -> torch.Tensor:
    r"""Self-normalized :math:`w_j = \exp(r(\tau_j))/q(\tau_j) \,/\, \sum_k w_k`."""
    return torch.softmax(reward_samples - log_q_samples, 0)


@dataclass
class GCLResult:
    """``reward`` (S, A) the learned r_ψ, ``policy`` (S, A) the final sampling policy, ``history``."""

    reward: np.ndarray
    model: FeatureReward
    policy: np.ndarray
    history: list[dict[str, float]] = field(default_factory=list)


Sampler = Callable[[np.ndarray, int, int, np.random.Generator], Trajectories]


def guided_cost_learning(
    sample: Sampler,
    features: ArrayLike,
    demos: Trajectories,
    config: GCLConfig | dict | None = None,
    *,
    terminal: ArrayLike | None = None,
    **overrides: object,
) -> GCLResult:
    r"""Sample-based MaxEnt IRL for unknown dynamics (see the module docstring).

    ``sample(policy, n, steps, rng)`` returns ``n`` rollouts of ``steps`` steps of the (S, A) policy
    — e.g. ``lambda pi, n, T, rng: mdp.sample(pi, n, T, seed=rng)`` or a real environment; the
    dynamics are never read. ``features`` (S, K) or (S, A, K); ``demos`` the expert's rollouts (their
    length is the rollout length).

    The likelihood conditions on nothing but the start distribution: :math:`\log Z` is estimated
    over the sampler's start states, so the sampler must start where the demonstrations do, and a
    narrow start distribution keeps the weights well spread (with very different start states the
    weights concentrate on the best ones, since :math:`Z` varies with :math:`s_0`).

    **Episodic tasks**: ``terminal`` (S,) marks the states that end an episode (``mdp.terminal``).
    A rollout then counts its steps before its first terminal state, plus the mean reward
    :math:`\bar r_\psi(s') = \frac1{|\mathcal A|}\sum_{a}r_\psi(s',a)` of the terminal state once, on
    entry, and nothing after (its actions there are neither scored nor in :math:`\pi(\tau)`): the
    semantics of :func:`maxent_irl` and :meth:`~core_rl.tabular.TabularMDP.fold_terminal_reward`,
    so ``mdp.fold_terminal_reward(result.reward)`` is the learned reward as an MDP reward. Give the
    demonstrations' states as (n, T+1) so that an entry on the last step is seen.
    """
    cfg: GCLConfig = _validate(GCLConfig, config, dict(overrides), "gcl")
    configure_torch(cfg.torch_threads)
    set_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    phi = np.asarray(features, dtype=np.float64)
    if phi.ndim != 3:
        if phi.ndim != 2:
            raise ConfigError(f"features must have shape (S, K) or (S, A, K), got {phi.shape}")
        n_actions = int(np.asarray(demos.actions).max()) + 1
        raise ConfigError(
            f"guided_cost_learning needs (S, A, K) features (the action count is not "
            f"known from (S, K)); use np.repeat(features[:, None], {n_actions}, 1)"
        )
    S, A, K = phi.shape
    gamma = cfg.gamma
    T = int(np.asarray(demos.actions).shape[1])
    term = np.zeros(S, dtype=bool) if terminal is None else np.asarray(terminal)
    if term.dtype != np.bool_ or term.shape != (S,):
        raise ConfigError(f"terminal must be a bool array of shape ({S},), got {term.dtype} {term.shape}")
    phi_t = torch.as_tensor(phi, dtype=torch.float32)
    model = FeatureReward(K, cfg.reward, cfg.hidden_sizes, cfg.activation)
    r_opt = torch.optim.Adam(model.parameters(), lr=cfg.reward_lr)
    logits = torch.zeros(S, A, requires_grad=True)  # the tabular sampling policy
    p_opt = torch.optim.Adam([logits], lr=cfg.policy_lr)
    discount = gamma ** torch.arange(T, dtype=torch.float32)
    history: list[dict[str, float]] = []

    def episodes(states: np.ndarray, actions: np.ndarray) -> tuple[torch.Tensor, ...]:
        """(s (n, T), a (n, T), live (n, T): steps before the first terminal state, entry (n, T):
        the step whose transition enters it, entered (n, T): the terminal state entered)."""
        states = np.asarray(states)
        in_term = term[states]
        first = np.cumsum(in_term, axis=1)
        live = first[:, :T] == 0
        entry = (in_term & (first == 1))[:, 1:]  # entering at t+1: paid on step t
        if entry.shape[1] < T:  # states given as (n, T): an entry on the last step is not seen
            entry = np.pad(entry, ((0, 0), (0, T - entry.shape[1])))
        entry &= live
        entered = np.pad(states[:, 1 : T + 1], ((0, 0), (0, T + 1 - states.shape[1])))
        return (
            torch.as_tensor(states[:, :T], dtype=torch.long),
            torch.as_tensor(np.asarray(actions), dtype=torch.long),
            torch.as_tensor(live, dtype=torch.float32),
            torch.as_tensor(entry, dtype=torch.float32),
            torch.as_tensor(entered, dtype=torch.long),
        )

    def step_rewards(reward_sa: torch.Tensor, ep: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """r_ψ per step (n, T): r_ψ(s_t, a_t) on live steps, plus r̄_ψ(s') on the step entering s'."""
        s, a, live, entry, entered = ep
        return reward_sa[s, a] * live + reward_sa.mean(1)[entered] * entry

    def traj_reward(reward_sa: torch.Tensor, ep: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return step_rewards(reward_sa, ep).sum(1)  # r_ψ(τ) = Σ_t r_ψ(s_t, a_t)

    def traj_log_prob(log_pi: torch.Tensor, ep: tuple[torch.Tensor, ...]) -> torch.Tensor:
        s, a, live = ep[0], ep[1], ep[2]
        return torch.where(live > 0, log_pi[s, a], 0.0).sum(1)  # log π(τ) over the live steps (π_E may be 0)

    demo_ep = episodes(np.asarray(demos.states), np.asarray(demos.actions))
    d_states, d_actions, d_live = demo_ep[0], demo_ep[1], demo_ep[2]
    # the expert's empirical policy: the demonstrations' sampling density in the background mixture
    counts = torch.zeros(S * A).index_add_(0, (d_states * A + d_actions).reshape(-1), d_live.reshape(-1)).reshape(S, A)
    with np.errstate(divide="ignore"):
        log_pi_E = torch.log(counts / counts.sum(1, keepdim=True).clamp_min(1.0))
    N = d_actions.shape[0]

    for _ in range(cfg.iterations):
        with torch.no_grad():
            policy = torch.softmax(logits, -1).double().numpy()
        batch = sample(policy, cfg.n_samples, T, rng)
        ep = episodes(np.asarray(batch.states), np.asarray(batch.actions))
        s, a, live = ep[0], ep[1], ep[2]
        bg = tuple(torch.cat([x, y]) for x, y in zip(ep, demo_ep, strict=True)) if cfg.demo_background else ep
        with torch.no_grad():
            log_pi_now = torch.log_softmax(logits, -1)
            log_q = traj_log_prob(log_pi_now, bg)  # log π(τ): the dynamics cancel in w
            if cfg.demo_background:  # q = (M π + N π_E) / (M + N)
                M = s.shape[0]
                log_q = torch.logaddexp(log_q + math.log(M), traj_log_prob(log_pi_E, bg) + math.log(N)) - math.log(
                    M + N
                )
        # reward step: the importance-sampled MaxEnt gradient
        for _ in range(cfg.reward_steps):
            reward_sa = model(phi_t)
            loss = gcl_reward_loss(traj_reward(reward_sa, demo_ep), traj_reward(reward_sa, bg), log_q)
            optim.step(r_opt, loss)
        # policy step: maximize E[Σ γ^t (r_ψ − α log π)] by policy gradient on the same samples
        with torch.no_grad():
            reward_sa = model(phi_t)
            w = importance_weights(traj_reward(reward_sa, bg), log_q)
        for _ in range(cfg.policy_steps):
            log_pi_all = torch.log_softmax(logits, -1)
            log_pi = log_pi_all[s, a] * live  # (n, T): the steps after termination choose nothing
            with torch.no_grad():
                shaped = (step_rewards(reward_sa, ep) - cfg.entropy_coef * log_pi) * discount
                reward_to_go = shaped.flip(1).cumsum(1).flip(1) / discount  # Σ_{t'≥t} γ^{t'-t} r̃_{t'}
                advantage = reward_to_go - reward_to_go.mean(0, keepdim=True)
            pg_loss = -(log_pi * advantage * discount).sum(1).mean()
            optim.step(p_opt, pg_loss)
        history.append(
            {
                "reward_loss": float(loss.detach()),
                "ess": float(1.0 / (w**2).sum()),
                "sample_reward": float(traj_reward(reward_sa, ep).mean()),
            }
        )
    with torch.no_grad():
        reward = model(phi_t).double().numpy()
        policy = torch.softmax(logits, -1).double().numpy()
    return GCLResult(reward=reward, model=model, policy=policy, history=history)


__all__ = [
    "MaxEntIRLConfig",
    "GCLConfig",
    "FeatureReward",
    "MaxEntIRLResult",
    "GCLResult",
    "maxent_irl",
    "gcl_reward_loss",
    "importance_weights",
    "guided_cost_learning",
]
