r"""SlateQ: slate Q-learning through the user choice model (Ie et al., 2019; notes 9/12–14, 11/7–14).

A slate's value decomposes through the conditional choice model into item-wise long-term values

.. math:: Q(s, A) = \sum_{i \in A} P(i \mid s, A)\, \bar Q(s, i),

and, since the user consumes (at most) one item, only the clicked item's :math:`\bar Q` is
updated, with the TD target

.. math:: \bar Q(s, i) \leftarrow r + \gamma \sum_{j \in A'} P(j \mid s', A')\, \bar Q_{\phi'}(s', j),

where :math:`A'` is the next slate actually served (SARSA, ``target="sarsa"``: evaluates the
behaviour policy) or the maximiser :math:`A' = \arg\max_{A'} Q_{\phi'}(s', A')` (Q-learning,
``target="q_learning"``; with ``double_q`` the online network picks, the target evaluates). The
maximisation over slates is exact — Dinkelbach's method on the linear-fractional program, i.e. the
LP (``"lp"``), or enumeration of every subset (``"enumerate"``) — or the paper's top-K / greedy
heuristics (:func:`recsys.choice_model.optimize_slates`). A no-click contributes no item value,
as in RecSim's implementation. The choice model :math:`P(i|s,A)` is the simulator's (read from the
observed interest, ``choice_model="simulator"``, what the paper assumes known) or a conditional-logit
network fitted to the clicks in the replay (``"learned"``).

:class:`SlateQ` is a core_rl off-policy agent (:class:`~core_rl.common.off_policy.OffPolicyAgent`:
its collect-and-train loop, replay buffer, checkpoints) with SlateQ's hooks — slate actions, a replay
that keeps each served slate beside the user's response (the clicked position), ε-greedy over
slates, the item-wise update of :class:`SlateQLearner` with a target network (periodic/Polyak
updates, Huber/MSE loss, gradient clipping, optional prioritized replay) — and steps the slate
simulators (``deeprl train --algo slateq --env recsys/InterestEvolution-v0``); :class:`OfflineSlateQ`
runs the same updates over logged transitions (:func:`recsys.training.fit_offline`, the loop shared
with top-K REINFORCE and behaviour cloning); :class:`SlateQPolicy` is the trained policy (the slate
maximising Q(s, A)), servable from features.

Example (the interest-evolution twin, 10 candidates and slates of 2, 16 users at a time: 4,000
steps of SlateQ already serve slates that earn clearly more engagement than random ones)::

    >>> from recsys.policies import RandomPolicy
    >>> from recsys.policies.evaluation import evaluate_online
    >>> from recsys.simulation import InterestEvolutionVectorEnv
    >>> twin = {"num_candidates": 10, "horizon": 50}
    >>> settings = {"learning_starts": 1000, "exploration_fraction": 0.2, "seed": 0}
    >>> agent = SlateQ(InterestEvolutionVectorEnv(16, seed=0, **twin), settings).learn(4000)
    >>> def engagement(policy):
    ...     return evaluate_online(InterestEvolutionVectorEnv(100, seed=77, **twin), policy, 200, seed=77).mean
    >>> engagement(agent.as_policy()) > engagement(RandomPolicy(10, 2, seed=0)) + 4
    True
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv, VectorWrapper
from pydantic import Field
from torch import nn

from core_rl.common.config import Widths, parse_config
from core_rl.common.errors import ConfigError
from core_rl.common.off_policy import OffPolicyAgent, OffPolicyConfig, polyak_update
from core_rl.common.optim import make_optimizer
from core_rl.common.prioritized_replay import PrioritizedReplayBuffer
from core_rl.common.replay import ReplayBuffer, ReplaySample
from core_rl.common.seeding import configure_torch, set_seed
from core_rl.common.tracking import NullTracker, Tracker
from recsys.choice_model import (
    ItemScorer,
    LearnedChoiceModel,
    SimulatorChoiceModel,
    SlateMethod,
    optimize_slates,
    slate_q,
)
from recsys.data_parallel import DataParallel, reduce_and_clip
from recsys.policies.types import ObsLayout, SlateDecision, SlateObs, SlatePolicy
from recsys.training import fit_offline, row_batches


# ---- configuration ------------------------------------------------------------------------------------
class SlateQConfig(OffPolicyConfig):
    n_envs: int = Field(16, ge=1, description="Users simulated in parallel.")
    lr: float = Field(1e-3, gt=0.0)
    batch_size: int = Field(128, ge=1)
    buffer_size: int = Field(100_000, ge=1)
    learning_starts: int = Field(2000, ge=0)
    train_freq: int = Field(1, ge=1)
    gradient_steps: int = Field(1, ge=0)
    target_update_interval: int = Field(200, ge=1)
    gamma: float = Field(0.9, gt=0.0, le=1.0)
    n_step: int = Field(1, ge=1, le=1, description="SlateQ's item-wise decomposition is of one-step targets.")
    tau: float = Field(1.0, gt=0.0, le=1.0, description="1.0: periodic hard copy φ' ← φ; < 1: Polyak averaging.")
    max_grad_norm: float | None = Field(10.0, gt=0.0)
    hidden_sizes: Widths = Field((64, 64), description="Widths of the item network Q̄(s, i).")
    activation: str = Field("relu", pattern="^(tanh|relu|elu|gelu)$")
    optimizer: Literal["adam", "sgd", "rmsprop"] = "adam"
    loss: Literal["huber", "mse"] = Field("mse", description="Loss on the clicked item's TD error.")
    huber_delta: float = Field(1.0, gt=0.0)
    double_q: bool = Field(False, description="The online network picks the target's slate, the target evaluates.")
    exploration_fraction: float = Field(
        0.3, ge=0.0, le=1.0, description="Fraction of training over which ε decays linearly."
    )
    exploration_initial_eps: float = Field(1.0, ge=0.0, le=1.0)
    exploration_final_eps: float = Field(0.05, ge=0.0, le=1.0)
    prioritized: bool = Field(False, description="Prioritized replay, P(i) ∝ (|δ_i| + ε)^α.")
    prioritized_alpha: float = Field(0.6, ge=0.0)
    prioritized_beta: float = Field(0.4, ge=0.0, le=1.0, description="Initial β, annealed linearly to 1.")
    prioritized_eps: float = Field(1e-6, gt=0.0)
    target: Literal["q_learning", "sarsa"] = Field(
        "q_learning", description="TD target: max over next slates (Q-learning) or the next served slate (SARSA)."
    )
    slate_optimizer: SlateMethod = Field("lp", description="How the greedy slate is chosen when acting.")
    target_optimizer: SlateMethod | None = Field(
        None, description="Maximiser inside the Q-learning target (None: slate_optimizer)."
    )
    choice_model: Literal["simulator", "learned"] = Field(
        "simulator", description="P(i|s,A): the simulator's model read from the observation, or learned from clicks."
    )
    choice_lr: float = Field(1e-3, gt=0.0, description="Learning rate of the learned choice model.")
    reward_scale: float = Field(1.0, gt=0.0, description="Engagement is multiplied by this before the TD target.")


# ---- networks and the shared learner ----------------------------------------------------------------
class ItemQNetwork(ItemScorer):
    """Q̄_φ(s, i) for every candidate at once: an MLP on ``[user, doc_i]``, ``[N, C]``."""


@dataclass
class SlateTransitions:
    """A batch of logged or replayed slate transitions."""

    user: torch.Tensor
    docs: torch.Tensor
    slate: torch.Tensor  # [B, K]
    choice: torch.Tensor  # [B]: clicked position, K = none
    reward: torch.Tensor  # [B]
    next_user: torch.Tensor
    next_docs: torch.Tensor
    done: torch.Tensor  # [B] float: 1 = terminal (no bootstrap)
    next_slate: torch.Tensor | None = None  # [B, K] for SARSA
    valid: torch.Tensor | None = None  # [B] bool: the transition has a usable next state
    weights: torch.Tensor | None = None  # prioritized-replay importance weights
    indices: torch.Tensor | None = None


def build_choice_model(
    kind: str, layout: ObsLayout, env_config: Any | None, hidden_sizes: tuple[int, ...]
) -> SimulatorChoiceModel | LearnedChoiceModel:
    if kind == "simulator":
        if env_config is None:
            raise ConfigError(
                "choice_model='simulator' needs the simulator's config (use 'learned' for logs without one)"
            )
        return SimulatorChoiceModel(env_config)
    return LearnedChoiceModel(layout.user_dim, layout.doc_dim, hidden_sizes)


class SlateQLearner:
    """Networks, optimizers and the SlateQ update, shared by the online agent and the offline trainer."""

    def __init__(
        self,
        layout: ObsLayout,
        slate_size: int,
        config: SlateQConfig,
        env_config: Any | None = None,
        device: torch.device | str = "cpu",
    ):
        self.layout, self.slate_size, self.config = layout, slate_size, config
        self.device = torch.device(device)
        self.q_net = ItemQNetwork(layout.user_dim, layout.doc_dim, config.hidden_sizes, config.activation).to(
            self.device
        )
        self.q_target = copy.deepcopy(self.q_net).requires_grad_(False)
        params = self.q_net.parameters()
        self.optimizer = make_optimizer(config.optimizer, params, config.lr)
        self.choice = build_choice_model(config.choice_model, layout, env_config, config.hidden_sizes)
        self.choice_optimizer = (
            torch.optim.Adam(self.choice.parameters(), lr=config.choice_lr)
            if isinstance(self.choice, nn.Module)
            else None
        )
        if isinstance(self.choice, nn.Module):
            self.choice.to(self.device)
        self.updates = 0

    def greedy(self, user: torch.Tensor, docs: torch.Tensor, method: str | None = None) -> torch.Tensor:
        """argmax_A Σ P(i|s,A) Q̄_φ(s,i): ``[N, K]``."""
        with torch.no_grad():
            logits, none = self.choice.logits(user, docs)
            return optimize_slates(
                logits, none, self.q_net(user, docs), self.slate_size, method or self.config.slate_optimizer
            )

    @torch.no_grad()
    def target_q(self, batch: SlateTransitions) -> torch.Tensor:
        """y = r + γ (1 − done) Σ_{j∈A'} P(j|s',A') Q̄_φ'(s', j)."""
        cfg = self.config
        logits, none = self.choice.logits(batch.next_user, batch.next_docs)
        next_q = self.q_target(batch.next_user, batch.next_docs)
        if cfg.target == "sarsa":
            if batch.next_slate is None:
                raise ConfigError("the SARSA target needs the next served slate")
            next_slate = batch.next_slate
        else:
            picker = self.q_net(batch.next_user, batch.next_docs) if cfg.double_q else next_q
            next_slate = optimize_slates(
                logits, none, picker, self.slate_size, cfg.target_optimizer or cfg.slate_optimizer
            )
        next_value = slate_q(logits, none, next_q, next_slate)
        return cfg.reward_scale * batch.reward + cfg.gamma * (1.0 - batch.done) * next_value

    def clicked(self, batch: SlateTransitions) -> torch.Tensor:
        """[B] bool: the rows whose clicked item's Q̄ is updated (a click, and a usable next state)."""
        clicked = batch.choice < self.slate_size
        return clicked if batch.valid is None else clicked & batch.valid

    def td_loss(
        self, batch: SlateTransitions, totals: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        r"""Loss on the clicked items' Q̄ (per-sample TD errors returned for prioritized replay):
        :math:`\frac1{N_c}\sum_{b\,\mathrm{clicked}} w_b\,\ell(\bar Q_\phi(s_b, i_b), y_b)`.

        ``totals`` = (N_c, B), the clicked rows and rows of the *global* minibatch when this batch is
        one data-parallel rank's shard (default: this batch's own): the loss and metrics are then this
        rank's contributions, sums over its rows divided by the global counts."""
        cfg = self.config
        k = self.slate_size
        clicked = self.clicked(batch)
        if totals is None:
            totals = torch.tensor([float(clicked.sum()), float(len(clicked))], dtype=torch.float64)
        n_clicked = float(totals[0])
        q_all = self.q_net(batch.user, batch.docs)
        item = batch.slate.gather(1, batch.choice.clamp(max=k - 1).unsqueeze(1)).squeeze(1)
        q = q_all.gather(1, item.unsqueeze(1)).squeeze(1)
        y = self.target_q(batch)
        td_error = torch.where(clicked, q.detach() - y, torch.zeros_like(y))
        if cfg.loss == "huber":
            per = nn.functional.huber_loss(q, y, reduction="none", delta=cfg.huber_delta)
        else:
            per = 0.5 * (q - y).pow(2)
        w = clicked.float() if batch.weights is None else clicked.float() * batch.weights
        loss = (per * w).sum() / max(n_clicked, 1.0)
        metrics = {
            "q_mean": float(q.detach()[clicked].double().sum()) / n_clicked if n_clicked > 0 else float("nan"),
            "td_error_abs": float(td_error.abs().double().sum()) / max(n_clicked, 1.0),
            "clicked_fraction": float(clicked.double().sum()) / max(float(totals[1]), 1.0),
        }
        return loss, td_error.detach(), metrics

    def choice_step(self, batch: SlateTransitions, data_parallel: DataParallel | None = None) -> float:
        """One step of the learned choice model on the mean NLL of the clicks (with ``data_parallel``:
        of the global minibatch, gradients all-reduced with weights n_r/B; returns this rank's share)."""
        if self.choice_optimizer is None:
            return float("nan")
        nll = self.choice.nll(batch.user, batch.docs, batch.slate, batch.choice)  # type: ignore[union-attr]
        self.choice_optimizer.zero_grad(set_to_none=True)
        nll.backward()
        share = 1.0
        if data_parallel is not None:
            share = data_parallel.weight
            data_parallel.all_reduce_gradients(self.choice.parameters(), weight=share)  # type: ignore[union-attr]
        self.choice_optimizer.step()
        return float(nll.detach()) * share

    def step(
        self, batch: SlateTransitions, extra_loss: Any = None, data_parallel: DataParallel | None = None
    ) -> tuple[dict[str, float], torch.Tensor]:
        """One gradient step (plus the choice model's); ``extra_loss(batch, learner)`` adds a penalty
        (a mean over the batch's rows).

        ``data_parallel``: ``batch`` is this rank's shard of a global minibatch; the TD loss is
        normalised by the global clicked count, the penalty and the choice model's NLL weighted by n_r/B,
        the gradients all-reduced and only then clipped, and the metrics are the global minibatch's.
        The target network follows the online one, equal on every rank."""
        cfg = self.config
        dp = data_parallel
        totals = None
        if dp is not None:
            clicked = self.clicked(batch)
            totals = dp.all_sum(torch.tensor([float(clicked.sum()), float(len(clicked))], dtype=torch.float64))
        loss, td_error, metrics = self.td_loss(batch, totals)
        share = 1.0 if dp is None else dp.weight
        if extra_loss is not None:
            penalty, extra = extra_loss(batch, self)
            loss = loss + share * penalty
            metrics.update({key: share * value for key, value in extra.items()})
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        reduce_and_clip(dp, self.q_net.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        metrics["loss"] = float(loss.detach())
        choice_nll = self.choice_step(batch, dp)
        if choice_nll == choice_nll:  # a learned choice model (on every rank or none)
            metrics["choice_nll"] = choice_nll
        self.updates += 1
        if self.updates % cfg.target_update_interval == 0:
            polyak_update(self.q_net, self.q_target, cfg.tau)
        if dp is not None:
            metrics = dp.reduce_metrics(metrics, summed=True)
        return metrics, td_error

    def networks(self) -> dict[str, nn.Module]:
        """The online and target Q̄ networks and a learned choice model: what a data-parallel rank starts
        equal and a parent process loads back."""
        nets: dict[str, nn.Module] = {"q_net": self.q_net, "q_target": self.q_target}
        if isinstance(self.choice, nn.Module):
            nets["choice"] = self.choice
        return nets

    def policy(self, method: str | None = None) -> "SlateQPolicy":
        return SlateQPolicy(
            self.layout,
            self.slate_size,
            copy.deepcopy(self.q_net).eval(),
            self.choice if isinstance(self.choice, SimulatorChoiceModel) else copy.deepcopy(self.choice).eval(),
            method or self.config.slate_optimizer,
            self.config.hidden_sizes,
            self.config.activation,
        )


# ---- the trained policy ---------------------------------------------------------------------------
class SlateQPolicy(SlatePolicy):
    """argmax_A Σ_{i∈A} P(i|s,A) Q̄(s,i) (exact with ``method="lp"``)."""

    kind = "slateq"

    def __init__(
        self,
        layout: ObsLayout,
        slate_size: int,
        q_net: ItemQNetwork,
        choice: SimulatorChoiceModel | LearnedChoiceModel,
        method: str = "lp",
        hidden_sizes: tuple[int, ...] = (64, 64),
        activation: str = "relu",
        label: str = "slateq",
    ):
        super().__init__(layout.num_candidates, slate_size)
        self.layout, self.q_net, self.choice, self.method = layout, q_net, choice, method
        self.hidden_sizes, self.activation, self.label = tuple(hidden_sizes), activation, label

    def decide(self, obs: SlateObs, info: Mapping[str, Any] | None) -> SlateDecision:
        logits, none = self.choice.logits(obs.user, obs.docs)
        slates = optimize_slates(logits, none, self.q_net(obs.user, obs.docs), self.slate_size, self.method)
        n = len(obs)
        return SlateDecision(
            slates, torch.ones(n, dtype=torch.float64), torch.ones(n, self.slate_size, dtype=torch.float64)
        )

    def spec(self) -> dict[str, Any]:
        choice = self.choice.spec() if isinstance(self.choice, SimulatorChoiceModel) else {"type": "learned"}
        return {
            "layout": self.layout.as_dict(),
            "slate_size": self.slate_size,
            "method": self.method,
            "hidden_sizes": list(self.hidden_sizes),
            "activation": self.activation,
            "choice": choice,
            "label": self.label,
        }

    def state(self) -> dict[str, Any]:
        out = {"q_net": self.q_net.state_dict()}
        if isinstance(self.choice, nn.Module):
            out["choice"] = self.choice.state_dict()
        return out

    @classmethod
    def from_spec(cls, spec: dict[str, Any], state: dict[str, Any]) -> "SlateQPolicy":
        layout = ObsLayout(**spec["layout"])
        hidden = tuple(spec["hidden_sizes"])
        q_net = ItemQNetwork(layout.user_dim, layout.doc_dim, hidden, spec["activation"])
        q_net.load_state_dict(state["q_net"])
        if spec["choice"]["type"] == "simulator":
            choice: Any = SimulatorChoiceModel.from_spec(spec["choice"])
        else:
            choice = LearnedChoiceModel(layout.user_dim, layout.doc_dim, hidden)
            choice.load_state_dict(state["choice"])
        return cls(
            layout,
            spec["slate_size"],
            q_net.eval(),
            choice,
            spec["method"],
            hidden,
            spec["activation"],
            spec.get("label", "slateq"),
        )

    def describe(self) -> str:
        return f"{self.label}({self.method})"


# ---- the online agent -----------------------------------------------------------------------------
class SlateResponses(VectorWrapper):
    """The slate env as SlateQ sees it: dict observations ``{"user", "doc"}`` as one flat Box ``[U + C·F]``
    (and the same for ``final_obs``), and the user's response to the last slate kept as
    :attr:`last_choice` (the clicked position per user, K = no click) for the replay."""

    def __init__(self, env: VectorEnv):
        super().__init__(env)
        space = env.single_observation_space
        self.flatten = isinstance(space, gym.spaces.Dict)
        if self.flatten:
            u, (c, f) = space["user"].shape[0], space["doc"].shape
            self.layout = ObsLayout(int(u), int(c), int(f))
            dim = self.layout.user_dim + c * f
            self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
            self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, env.num_envs)
        else:
            self.layout = ObsLayout.from_env(env)
        self.last_choice = np.full(env.num_envs, int(env.single_action_space.shape[0]), dtype=np.int64)

    def observations(self, observations: Any) -> Any:
        if not self.flatten:
            return observations
        user = np.asarray(observations["user"], dtype=np.float32)
        doc = np.asarray(observations["doc"], dtype=np.float32)
        return np.concatenate([user, doc.reshape(doc.shape[0], -1)], axis=1)

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        return self.observations(obs), info

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self.last_choice = np.asarray(info["choice"], dtype=np.int64).reshape(-1)
        if self.flatten and "final_obs" in info and isinstance(info["final_obs"], Mapping):
            info = dict(info)
            info["final_obs"] = self.observations(info["final_obs"])
        return self.observations(obs), reward, terminated, truncated, info


class _StoresResponses:
    """Replay mixin: each stored action row is the served slate ``[K]`` followed by the response the
    env reported for that step (``response()``, the clicked position), ``[K + 1]`` in all."""

    response: Callable[[], np.ndarray]

    def add(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        costs: np.ndarray | None = None,
    ) -> None:
        slates = np.asarray(actions).reshape(len(rewards), -1)
        stored = np.concatenate([slates, self.response().reshape(-1, 1)], axis=1)
        super().add(obs, stored, rewards, next_obs, terminated, truncated, costs)  # type: ignore[misc]


class SlateReplayBuffer(_StoresResponses, ReplayBuffer):
    """Uniform replay of (slate, response) transitions."""


class PrioritizedSlateReplayBuffer(_StoresResponses, PrioritizedReplayBuffer):
    """Prioritized replay of (slate, response) transitions."""


class SlateQ(OffPolicyAgent):
    """SlateQ over a slate vector env (``SlateQ("recsys/InterestEvolution-v0").learn(steps)``).

    The :class:`OffPolicyAgent` loop with SlateQ's hooks: :meth:`_wrap_env` (flat observations, the
    user's response kept), :meth:`_build_networks` (the :class:`SlateQLearner` and a replay of slates
    beside responses), :meth:`_random_actions` / :meth:`_explore` (uniform and ε-greedy slates) and
    :meth:`train_step` (the item-wise update on a replayed batch).
    """

    name = "slateq"
    config: SlateQConfig
    config_cls = SlateQConfig
    action_spaces = (gym.spaces.MultiDiscrete,)

    def __init__(
        self,
        env: Any,
        config: SlateQConfig | Mapping[str, Any] | None = None,
        tracker: Tracker | None = None,
        **overrides: Any,
    ):
        super().__init__(env, config, tracker or NullTracker(), **overrides)

    def _wrap_env(self, env: VectorEnv, training: bool) -> VectorEnv:
        return SlateResponses(env)

    def _build_networks(self) -> None:
        cfg = self.config
        self.layout = self.env.layout
        self.slate_size = int(self.action_space.shape[0])
        env_config = getattr(self.env.unwrapped, "config", None)
        self.learner = SlateQLearner(self.layout, self.slate_size, cfg, env_config, self.device)
        self.q_net, self.q_target, self.optimizer = self.learner.q_net, self.learner.q_target, self.learner.optimizer
        if self.learner.choice_optimizer is not None:
            self.choice_net = self.learner.choice
            self.choice_optimizer = self.learner.choice_optimizer
        # the replay keeps the slate and the clicked position side by side: actions [K + 1]
        base = self.replay
        replay = SlateReplayBuffer(
            base.size_per_env * base.n_envs,
            self.n_envs,
            tuple(base.obs.shape[2:]),
            (self.slate_size + 1,),
            action_dtype=torch.long,
            n_step=1,
            gamma=cfg.gamma,
            seed=cfg.seed,
            device=self.device,
        )
        if cfg.prioritized:
            replay = PrioritizedSlateReplayBuffer.like(
                replay, alpha=cfg.prioritized_alpha, beta=cfg.prioritized_beta, eps=cfg.prioritized_eps
            )
        replay.response = lambda: self.env.last_choice
        self.replay = replay

    # ---- schedules -------------------------------------------------------------------------------
    def learn(self, total_steps: int, **kwargs: Any) -> "SlateQ":  # type: ignore[override]
        """As :meth:`Agent.learn`; the ε and β schedules run over the steps of the first call."""
        self._target_steps = max(getattr(self, "_target_steps", 0) or 0, self.num_timesteps + int(total_steps))
        return super().learn(total_steps, **kwargs)  # type: ignore[return-value]

    def _progress(self) -> float:
        total = getattr(self, "_target_steps", None)
        return min(1.0, self.num_timesteps / total) if total else 1.0

    @property
    def epsilon(self) -> float:
        """ε decays linearly from ``exploration_initial_eps`` to ``exploration_final_eps``."""
        cfg = self.config
        frac = cfg.exploration_fraction
        ramp = 1.0 if frac == 0 else min(1.0, self._progress() / frac)
        return cfg.exploration_initial_eps + (cfg.exploration_final_eps - cfg.exploration_initial_eps) * ramp

    # ---- acting --------------------------------------------------------------------------------
    def _split(self, obs: torch.Tensor) -> SlateObs:
        u, c, f = self.layout.user_dim, self.layout.num_candidates, self.layout.doc_dim
        obs = obs.float().reshape(obs.shape[0], -1)
        return SlateObs(obs[:, :u], obs[:, u:].reshape(-1, c, f))

    def _random_slates(self, n: int) -> torch.Tensor:
        return torch.rand(n, self.layout.num_candidates).topk(self.slate_size, dim=1).indices

    def _random_actions(self) -> np.ndarray:
        return self._random_slates(self.n_envs).numpy()

    def greedy_slates(self, obs_t: torch.Tensor) -> torch.Tensor:
        o = self._split(obs_t)
        return self.learner.greedy(o.user, o.docs)

    def _explore(self, obs_t: torch.Tensor) -> torch.Tensor:
        greedy = self.greedy_slates(obs_t)
        explore = torch.rand(greedy.shape[0]) < self.epsilon
        return torch.where(explore.unsqueeze(1), self._random_slates(greedy.shape[0]), greedy)

    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return self.greedy_slates(obs) if deterministic else self._explore(obs)

    # ---- learning ----------------------------------------------------------------------------------
    def _iterate(self) -> dict[str, float]:
        if isinstance(self.replay, PrioritizedReplayBuffer):
            beta0 = self.config.prioritized_beta
            self.replay.beta = beta0 + (1.0 - beta0) * self._progress()
        metrics = super()._iterate()
        metrics["epsilon"] = self.epsilon
        return metrics

    def transitions(self, batch: ReplaySample) -> SlateTransitions:
        """A replayed batch as :class:`SlateTransitions`, with the next served slate (for SARSA) where known."""
        k = self.slate_size
        t, env = batch.indices // self.n_envs, batch.indices % self.n_envs
        size = self.replay.size_per_env
        has_next = (self.replay.episode_end[t, env] == 0) & (t != (self.replay.pos - 1) % size)
        next_slate = self.replay.actions[(t + 1) % size, env][:, :k].to(self.device)
        o, no = self._split(batch.obs), self._split(batch.next_obs)
        valid = None
        if self.config.target == "sarsa":
            valid = (has_next | (batch.dones > 0).cpu()).to(self.device)
        return SlateTransitions(
            o.user,
            o.docs,
            batch.actions[:, :k],
            batch.actions[:, k],
            batch.rewards,
            no.user,
            no.docs,
            batch.dones,
            next_slate,
            valid,
            batch.weights,
            batch.indices,
        )

    def train_step(self, batch: ReplaySample) -> dict[str, float]:
        metrics, td_error = self.learner.step(self.transitions(batch))
        if isinstance(self.replay, PrioritizedReplayBuffer) and batch.indices is not None:
            self.replay.update_priorities(batch.indices, td_error)
        return metrics

    def as_policy(self, method: str | None = None) -> SlateQPolicy:
        """The greedy slate policy, detached from the agent (servable)."""
        return self.learner.policy(method)


# ---- learning from logs -------------------------------------------------------------------------
def chunk_transitions(chunk: Any) -> SlateTransitions:
    """Transitions of a :class:`~recsys.logs.LogChunk`: row i → row i+1 of its segment, or terminal."""
    n = len(chunk)
    has_next = chunk.has_next
    nxt = torch.clamp(torch.arange(n) + 1, max=n - 1)
    done = chunk.terminated & ~has_next
    valid = has_next | done
    return SlateTransitions(
        chunk.user,
        chunk.docs,
        chunk.slate,
        chunk.click,
        chunk.engagement.float(),
        chunk.user[nxt],
        chunk.docs[nxt],
        done.float(),
        chunk.slate[nxt],
        valid,
    )


def index_transitions(t: SlateTransitions, rows: torch.Tensor) -> SlateTransitions:
    def pick(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x[rows]

    fields = [pick(getattr(t, f)) for f in SlateTransitions.__dataclass_fields__]
    return SlateTransitions(*fields)  # type: ignore[arg-type]


class OfflineSlateQ:
    """SlateQ updates over logged transitions (SARSA evaluates the logging policy; Q-learning improves)."""

    name = "slateq"

    def __init__(
        self,
        layout: ObsLayout,
        slate_size: int,
        config: SlateQConfig | Mapping[str, Any] | None = None,
        env_config: Any | None = None,
        tracker: Tracker | None = None,
        **overrides: Any,
    ):
        defaults = {"choice_model": "learned" if env_config is None else "simulator"}
        base = dict(defaults)
        if isinstance(config, Mapping):
            base.update(config)
        elif config is not None:
            base.update(config.model_dump())
        self.config = parse_config(self.config_cls, base, **overrides)
        configure_torch(self.config.torch_threads)
        set_seed(self.config.seed)
        self.learner = SlateQLearner(layout, slate_size, self.config, env_config, self.config.device)
        self.tracker = tracker or NullTracker()
        self.layout, self.slate_size = layout, slate_size
        self.history: list[dict[str, float]] = []

    config_cls: type[SlateQConfig] = SlateQConfig

    def extra_loss(self) -> Any:
        return None

    def fit(
        self,
        reader: Any,
        epochs: int = 5,
        log_every: int = 200,
        data_parallel: DataParallel | None = None,
    ) -> "OfflineSlateQ":
        """``epochs`` passes over the log (a :class:`~recsys.logs.LogReader` or a list of chunks), by
        :func:`~recsys.training.fit_offline`: metrics go to the tracker every ``log_every`` gradient
        steps and, averaged, at the end of every epoch. ``data_parallel``: this rank takes every W-th
        row of each global minibatch of ``batch_size`` rows (:meth:`SlateQLearner.step`); every rank
        starts from rank 0's networks."""
        extra = self.extra_loss()
        dp = data_parallel

        def batches(chunk: Any, generator: torch.Generator) -> Any:
            trans = chunk_transitions(chunk)
            for rows in row_batches(chunk, generator, self.config.batch_size):
                yield index_transitions(trans, rows)

        def step(batch: SlateTransitions) -> dict[str, float]:
            return self.learner.step(batch, extra, dp)[0]

        if dp is not None:
            dp.broadcast_parameters(*self.networks().values())
            batches = dp.shard(batches)
        fit_offline(reader, epochs, self.config.seed, batches, step, self.tracker, self.history, log_every)
        return self

    def networks(self) -> dict[str, nn.Module]:
        return self.learner.networks()

    def as_policy(self, method: str | None = None) -> SlateQPolicy:
        pol = self.learner.policy(method)
        pol.label = self.name
        return pol


__all__ = [
    "SlateQ",
    "SlateQConfig",
    "SlateQLearner",
    "SlateQPolicy",
    "ItemQNetwork",
    "SlateTransitions",
    "SlateResponses",
    "SlateReplayBuffer",
    "PrioritizedSlateReplayBuffer",
    "OfflineSlateQ",
    "chunk_transitions",
    "index_transitions",
    "build_choice_model",
]
