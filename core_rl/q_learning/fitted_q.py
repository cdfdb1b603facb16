r"""Fitted Q iteration on a fixed dataset, and online Q-learning (notes 9/12).

**Fitted Q iteration.** Given a fixed dataset of transitions :math:`\{(s_i, a_i, s'_i, r_i)\}`
collected by *any* policy (the algorithm is off-policy), repeat K times:

.. math::
    y_i \leftarrow r(s_i,a_i) + \gamma \max_{a'} Q_\phi(s'_i, a'), \qquad
    \phi \leftarrow \arg\min_\phi \tfrac12 \sum_i \lVert Q_\phi(s_i,a_i) - y_i \rVert^2 .

The targets are frozen while φ is regressed onto them (no bootstrapping from a terminal s'). With a
**tabular** Q (one parameter per (s, a), i.e. a linear function of the one-hot state-action) the
argmin has a closed form — the mean of the targets of each visited pair — so each iteration is one
exact application of the empirical Bellman optimality operator and the iterates converge to the Q*
of the MDP the data describe. With an **MLP** Q_φ the argmin is approximated by
``regression_steps`` Adam steps, warm-started from the previous φ; the notes warn that this
combination (regression + max) need not converge in general.

**Online Q-learning** (the notes' online variant): take one action a_i (ε-greedy or Boltzmann),
observe (s_i, a_i, s'_i, r_i), and take one gradient step on that single transition,

.. math::
    y_i = r(s_i,a_i) + \gamma\max_{a'}Q_\phi(s'_i,a'), \qquad
    \phi \leftarrow \phi - \alpha\,\frac{dQ_\phi}{d\phi}(s_i,a_i)\,\big(Q_\phi(s_i,a_i) - y_i\big).

:class:`OnlineQLearning` is :class:`~core_rl.q_learning.dqn.DQN` with no replay (each update
uses only the latest transition of each env), no target network (φ' is re-copied after every
step), plain SGD and the squared loss; with a Discrete observation space and ``hidden_sizes=()``
Q_φ is an exact table and the step is the classic :math:`Q(s,a) \leftarrow Q(s,a) + \alpha(y - Q(s,a))`.

Example (deterministic FrozenLake, γ = 0.9: fitted Q iteration on the random policy's transitions
finds Q*; online Q-learning, 8 envs of ε = 1 behaviour, finds a greedy policy that reaches the
goal — off-policy, both of them)::

    >>> import gymnasium as gym, numpy as np
    >>> from core_rl.common.transitions import Transitions
    >>> from core_rl.tabular import TabularMDP, value_iteration
    >>> env = gym.make("FrozenLake-v1", is_slippery=False)
    >>> q_star = value_iteration(TabularMDP.from_gym("FrozenLake-v1", 0.9, is_slippery=False)).Q
    >>> fqi = FittedQIteration(env.observation_space, env.action_space, {"gamma": 0.9})
    >>> result = fqi.fit(Transitions.collect(env, 4000, seed=0))
    >>> result.converged, bool(np.abs(fqi.q_table - q_star).max() < 1e-6)
    (True, True)
    >>> settings = {"gamma": 0.9, "n_envs": 8, "lr": 4.0, "exploration_initial_eps": 1.0, "exploration_final_eps": 1.0}
    >>> agent = OnlineQLearning(env, {**settings, "seed": 0}).learn(4000)
    >>> agent.evaluate(n_episodes=1)["mean_return"]
    1.0
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core_rl.common import optim
from core_rl.common.config import Widths, format_validation_error
from core_rl.common.errors import ConfigError, SpaceError
from core_rl.common.replay import ReplayBuffer, ReplaySample
from core_rl.common.seeding import configure_torch, set_seed
from core_rl.common.tracking import NullTracker, Tracker
from core_rl.common.transitions import Transitions
from core_rl.q_learning.dqn import DQN, DQNConfig, QNetwork

# ---------------------------------------------------------------------------------------------
# fitted Q iteration


class FittedQConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    gamma: float = Field(0.99, gt=0.0, le=1.0)
    iterations: int = Field(100, ge=1, description="K: how many times the targets are recomputed.")
    function: Literal["tabular", "mlp"] = Field("tabular", description="tabular: exact least squares; mlp: Adam.")
    hidden_sizes: Widths = (64, 64)
    activation: str = Field("relu", pattern="^(tanh|relu|elu|gelu)$")
    lr: float = Field(1e-3, gt=0.0)
    regression_steps: int = Field(200, ge=1, description="Adam steps per iteration (mlp).")
    batch_size: int | None = Field(None, ge=1, description="Minibatch size of the regression (None: full batch).")
    tol: float = Field(0.0, ge=0.0, description="Stop once an iteration changes every target by ≤ tol.")
    seed: int = Field(0, ge=0)
    torch_threads: int = Field(1, ge=0, description="torch intra-op threads; 0 leaves torch's default.")


@dataclass
class FittedQResult:
    iterations: int
    converged: bool
    target_change: list[float] = field(default_factory=list)  # max_i |y_i^(k) − y_i^(k−1)|
    bellman_error: list[float] = field(default_factory=list)  # RMS of Q_φ(s_i,a_i) − y_i after the fit


class FittedQIteration:
    """Fitted Q iteration: ``FittedQIteration(obs_space, act_space, config).fit(transitions)``."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        config: FittedQConfig | Mapping[str, Any] | None = None,
        **overrides: Any,
    ):
        if isinstance(config, FittedQConfig) and not overrides:
            self.config = config
        else:
            data = config.model_dump() if isinstance(config, FittedQConfig) else dict(config or {})
            try:
                self.config = FittedQConfig.model_validate({**data, **overrides})
            except ValidationError as err:
                raise ConfigError(format_validation_error(err)) from None
        if not isinstance(action_space, gym.spaces.Discrete):
            raise SpaceError(f"fitted Q iteration needs a Discrete action space, got {action_space}")
        cfg = self.config
        if cfg.function == "tabular" and not isinstance(observation_space, gym.spaces.Discrete):
            raise SpaceError(f"function='tabular' needs a Discrete observation space, got {observation_space}")
        self.observation_space, self.action_space = observation_space, action_space
        self.n_actions = int(action_space.n)
        configure_torch(cfg.torch_threads)
        set_seed(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        hidden = () if cfg.function == "tabular" else cfg.hidden_sizes
        self.q_net = QNetwork(observation_space, self.n_actions, hidden, cfg.activation)

    @torch.no_grad()
    def q_values(self, obs: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Q_φ(s, ·) for a batch of observations."""
        return self.q_net(torch.as_tensor(np.asarray(obs)))

    @property
    def q_table(self) -> np.ndarray:
        """Q_φ(s, a) for every state (Discrete observation spaces only), shape (S, A)."""
        if not isinstance(self.observation_space, gym.spaces.Discrete):
            raise SpaceError("q_table needs a Discrete observation space")
        return self.q_values(torch.arange(int(self.observation_space.n))).numpy()

    @torch.no_grad()
    def targets(self, data: Transitions) -> torch.Tensor:
        """y_i = r_i + γ (1 − done_i) max_a' Q_φ(s'_i, a')."""
        next_q = self.q_net(data.next_obs).max(-1).values
        return data.rewards + self.config.gamma * (1.0 - data.dones) * next_q

    def _regress_tabular(self, data: Transitions, y: torch.Tensor) -> None:
        """The exact argmin of ½Σ(Q(s_i,a_i) − y_i)²: Q(s,a) ← mean{y_i : (s_i,a_i) = (s,a)}."""
        n_states = int(self.observation_space.n)
        pair = data.obs.long() * self.n_actions + data.actions
        sums = torch.zeros(n_states * self.n_actions, dtype=torch.float64).index_add_(0, pair, y.double())
        counts = torch.bincount(pair, minlength=n_states * self.n_actions).double()
        table = self.q_net.net.weight.data.T.reshape(-1).double()  # weight is (A, S): Q(s,a) = W[a, s]
        visited = counts > 0
        table[visited] = sums[visited] / counts[visited]
        self.q_net.net.weight.data.copy_(table.reshape(n_states, self.n_actions).T)

    def _regress_mlp(self, data: Transitions, y: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        cfg = self.config
        n = len(data)
        for _ in range(cfg.regression_steps):
            if cfg.batch_size is None or cfg.batch_size >= n:
                obs, actions, target = data.obs, data.actions, y
            else:
                idx = torch.randint(0, n, (cfg.batch_size,), generator=self.generator)
                obs, actions, target = data.obs[idx], data.actions[idx], y[idx]
            q = self.q_net(obs).gather(-1, actions.reshape(-1, 1)).squeeze(-1)
            optim.step(optimizer, 0.5 * (q - target).pow(2).mean())

    def fit(self, data: Transitions, tracker: Tracker | None = None) -> FittedQResult:
        """Run K iterations of target computation + regression on the fixed ``data``."""
        cfg = self.config
        tracker = tracker or NullTracker()
        if data.actions.dtype != torch.long or data.actions.dim() != 1:
            raise SpaceError(
                f"fitted Q iteration needs integer action indices [N], got {data.actions.dtype} "
                f"actions of shape {tuple(data.actions.shape)}"
            )
        if int(data.actions.max()) >= self.n_actions or int(data.actions.min()) < 0:
            raise ConfigError(f"transitions hold actions outside [0, {self.n_actions})")
        optimizer = torch.optim.Adam(self.q_net.parameters(), lr=cfg.lr) if cfg.function == "mlp" else None
        result = FittedQResult(iterations=0, converged=False)
        previous: torch.Tensor | None = None
        for k in range(cfg.iterations):
            y = self.targets(data)
            change = float("inf") if previous is None else float((y - previous).abs().max())
            if previous is not None and change <= cfg.tol:
                result.converged = True
                break
            if optimizer is None:
                self._regress_tabular(data, y)
            else:
                self._regress_mlp(data, y, optimizer)
            with torch.no_grad():
                q = self.q_net(data.obs).gather(-1, data.actions.reshape(-1, 1)).squeeze(-1)
                bellman = float((q - y).pow(2).mean().sqrt())
            result.iterations = k + 1
            result.target_change.append(change)
            result.bellman_error.append(bellman)
            tracker.log_metrics({"fqi_bellman_error": bellman, "fqi_target_change": change}, step=k + 1)
            previous = y
        return result

    def greedy_policy(self, obs: torch.Tensor | np.ndarray) -> np.ndarray:
        """π'(a|s) = 1 iff a = argmax_a Q_φ(s, a)."""
        return self.q_values(obs).argmax(-1).numpy()


# ---------------------------------------------------------------------------------------------
# online Q-learning


class LatestTransitionBuffer(ReplayBuffer):
    """Holds only the newest step of each env; ``sample`` returns exactly those ``n_envs`` transitions."""

    def sample(self, batch_size: int) -> ReplaySample:
        if len(self) == 0:
            raise RuntimeError("no transition stored yet")
        newest = (self.pos - 1) % self.size_per_env
        env = torch.arange(self.n_envs)
        return self.gather(torch.full((self.n_envs,), newest, dtype=torch.long), env)


class OnlineQConfig(DQNConfig):
    buffer_size: int = Field(1, ge=1, description="Always n_envs: only the latest transition is kept.")
    batch_size: int = Field(1, ge=1, description="Always n_envs: one transition per env per update.")
    learning_starts: int = Field(0, ge=0)
    train_freq: int = Field(1, ge=1)
    gradient_steps: int = Field(1, ge=1)
    tau: float = Field(1.0, gt=0.0, le=1.0)
    target_update_interval: int = Field(1, ge=1, description="1: no separate target network.")
    max_grad_norm: float | None = Field(None, gt=0.0)
    hidden_sizes: Widths = ()
    optimizer: Literal["adam", "sgd", "rmsprop"] = "sgd"
    lr: float = Field(0.1, gt=0.0, description="α of the update.")
    loss: Literal["huber", "mse"] = "mse"
    exploration_fraction: float = Field(0.0, ge=0.0, le=1.0)
    exploration_final_eps: float = Field(0.1, ge=0.0, le=1.0)

    @model_validator(mode="before")
    @classmethod
    def _one_step_per_env(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            try:
                n_envs = int(data.get("n_envs", 1))
            except (TypeError, ValueError):
                return data  # the field validator reports it
            data = dict(data)
            for name in ("buffer_size", "batch_size"):
                if data.get(name, n_envs) != n_envs:
                    raise ValueError(
                        f"online Q-learning updates on the latest transition of each env, "
                        f"so {name} must equal n_envs ({n_envs}), got {data[name]}"
                    )
                data[name] = n_envs
        return data

    @model_validator(mode="after")
    def _online(self) -> "OnlineQConfig":
        for name in ("n_step", "train_freq", "gradient_steps"):
            if getattr(self, name) != 1:
                raise ValueError(f"online Q-learning takes one step per update: {name} must be 1")
        if self.prioritized:
            raise ValueError("online Q-learning has no replay to prioritize (prioritized must be false)")
        return self


class OnlineQLearning(DQN):
    """Online Q-learning: one gradient step on each new transition (see the module docstring)."""

    name = "online_q"
    config: OnlineQConfig
    config_cls = OnlineQConfig

    def _build_networks(self) -> None:
        old = self.replay
        self.replay = LatestTransitionBuffer(
            self.n_envs,
            self.n_envs,
            tuple(old.obs.shape[2:]),
            tuple(old.actions.shape[2:]),
            old.obs.dtype,
            old.actions.dtype,
            n_step=1,
            gamma=self.config.gamma,
            seed=self.config.seed,
            device=self.device,
        )
        super()._build_networks()

    @property
    def q_table(self) -> np.ndarray:
        """Q_φ(s, a) for every state (Discrete observation spaces only), shape (S, A)."""
        if not isinstance(self.observation_space, gym.spaces.Discrete):
            raise SpaceError("q_table needs a Discrete observation space")
        with torch.no_grad():
            return self.q_net(torch.arange(int(self.observation_space.n), device=self.device)).cpu().numpy()


__all__ = [
    "FittedQConfig",
    "FittedQIteration",
    "FittedQResult",
    "OnlineQConfig",
    "OnlineQLearning",
    "LatestTransitionBuffer",
]
