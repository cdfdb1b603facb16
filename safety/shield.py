r"""A safety layer (Dalal et al. 2018, "Safe exploration in continuous action spaces") that shields a
learning agent from violations during training, not only at convergence.

A cost model learned from the agent's own transitions predicts, for each constraint k, whether the
step :math:`(s, a)` incurs a cost, with a logit that is linear in the action,

.. math::
    \ell_k(s, a) = h_k(s) + g_k(s)^T a,\qquad \hat p_k(s,a) = \sigma(\ell_k(s,a)) \approx P(c_{k} > 0 \mid s, a),

fitted by (class-weighted) logistic regression on every executed transition. Before each action
reaches the env, the layer solves

.. math::
    a^* = \arg\min_{a'} \tfrac12\|a' - a\|^2 \quad\text{s.t.}\quad \ell_k(s, a') \le \tau,\qquad
    \tau = \mathrm{logit}(p_{max}),

whose solution for one active constraint is closed form, :math:`a^* = a - \frac{(\ell_k(s,a) - \tau)^+}{\|g_k(s)\|^2}g_k(s)`
(applied per constraint in turn, then clipped to the action bounds). For a discrete action space the
layer replaces an action with :math:`\hat p > p_{max}` by the action of least predicted cost.

The policy learns as if the layer were part of the env (the rollout stores the policy's own
action; the env executes the projected one). The agent behind the layer is PPO-Lag, so whatever
cost slips through still drives λ: the agent is PPO-Lag's parts and one more, the :class:`ShieldPart`.
Logged: ``shield_interventions`` (fraction of steps changed), ``shield_loss`` and ``shield_positives``
(cost events the model has seen).

Example (safety/CartPole-v0, whose costs count the steps outside a safe band or over a speed cap:
after 2,048 steps the cost model has seen violations and the layer changes some of the actions)::

    >>> import safety  # registers the safety/ envs
    >>> settings = {"n_envs": 8, "n_steps": 64, "cost_limit": 0.0}
    >>> agent = ShieldedPPOLag("safety/CartPole-v0", {**settings, "seed": 0}).learn(2048)
    >>> agent.last_metrics["shield_positives"] > 0, agent.last_metrics["shield_interventions"] > 0
    (True, True)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv, VectorWrapper
from pydantic import Field
from torch import nn

from core_rl.common.base import Agent
from core_rl.common.config import Widths
from core_rl.common.networks import ObsEncoder, mlp
from core_rl.common.normalization import RunningMeanStd
from core_rl.common.parts import Metrics, Part
from safety.ppo_lag import PPOLag, PPOLagConfig


class LinearCostModel(nn.Module):
    r""":math:`\ell(s,a) = h(s) + g(s)^T a` per constraint (Box actions, a scaled to [-1, 1]), or one
    logit per discrete action. ``forward(obs, actions)`` → ``[B, K]`` logits."""

    def __init__(
        self,
        obs_space: gym.Space,
        action_space: gym.Space,
        n_constraints: int,
        hidden_sizes: tuple[int, ...] = (64, 64),
    ):
        super().__init__()
        self.encoder = ObsEncoder(obs_space)
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        self.K = n_constraints
        self.n_act = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))
        out = self.K * self.n_act if self.discrete else self.K * (1 + self.n_act)
        self.net = mlp(self.encoder.dim, out, hidden_sizes, "relu", out_gain=0.1)
        with torch.no_grad():  # prior: costs are rare, so an untrained model predicts "safe" and stays out of the way
            bias = (
                self.net[-1].bias.view(self.K, -1) if not self.discrete else self.net[-1].bias.view(self.K, self.n_act)
            )
            bias[:, : 1 if not self.discrete else self.n_act] = -4.0
        self.obs_rms = RunningMeanStd((self.encoder.dim,))

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.encoder(obs)
        mean, std = self.obs_rms.mean.float(), (self.obs_rms.var.float() + 1e-8).sqrt()
        return self.net(((x - mean) / std).clamp(-10, 10))

    def split(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Box actions: ``(h [B, K], g [B, K, A])``; discrete: ``(logits [B, K, A], None)``."""
        out = self.features(obs)
        if self.discrete:
            return out.reshape(-1, self.K, self.n_act), None
        out = out.reshape(-1, self.K, 1 + self.n_act)
        return out[..., 0], out[..., 1:]

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        h, g = self.split(obs)
        if g is None:  # discrete: one logit per action
            idx = actions.long().reshape(-1, 1, 1).expand(-1, self.K, 1)
            return h.gather(-1, idx).squeeze(-1)
        return h + (g * actions.reshape(-1, 1, self.n_act)).sum(-1)

    @torch.no_grad()
    def project(self, obs: torch.Tensor, actions: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The safest nearby actions and a ``[B]`` mask of where the layer changed the action."""
        h, g = self.split(obs)
        if g is None:  # discrete: substitute the action of least predicted cost
            a = actions.long().reshape(-1)
            risk = h.max(1).values  # [B, A]: worst constraint per action
            unsafe = risk.gather(1, a[:, None]).squeeze(1) > tau
            safest = risk.argmin(1)
            return torch.where(unsafe, safest, a), unsafe & (safest != a)
        a = actions.reshape(-1, self.n_act).clone()
        changed = torch.zeros(a.shape[0], dtype=torch.bool, device=a.device)
        # where even the safest action in the box [-1, 1]^A is predicted unsafe (h − ‖g‖₁ > τ: already in
        # trouble), the layer has nothing to offer and leaves the action to the policy
        feasible = h - g.abs().sum(-1) <= tau  # [B, K]
        for _ in range(2):  # constraints in turn (Dalal's closed form is exact for one active constraint)
            for k in range(self.K):
                excess = (h[:, k] + (g[:, k] * a).sum(-1) - tau).clamp_min(0.0) * feasible[:, k]
                step = excess / g[:, k].pow(2).sum(-1).clamp_min(1e-6)
                a = (a - step[:, None] * g[:, k]).clamp(-1.0, 1.0)
                changed |= excess > 0
        return a, changed


class ShieldWrapper(VectorWrapper):
    """Passes every action through a safety layer and records (s, a, c > 0) for its cost model.

    The layer is attached after the agent has built it (``wrapper.layer = ...``); until then actions
    pass unchanged."""

    def __init__(self, env: VectorEnv):
        super().__init__(env)
        self.layer: SafetyLayer | None = None
        self._obs: np.ndarray | None = None

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._obs = obs
        return obs, info

    def step(self, actions: Any):
        if self.layer is None or self._obs is None:
            return self.env.step(actions)
        safe_actions, changed = self.layer.shield_actions(self._obs, np.asarray(actions))
        obs, reward, terminated, truncated, info = self.env.step(safe_actions)
        self.layer.record(
            self._obs, safe_actions, info["costs"], np.asarray(terminated) | np.asarray(truncated), changed
        )
        self._obs = obs
        return obs, reward, terminated, truncated, info


class ShieldConfig(PPOLagConfig):
    shield_threshold: float = Field(
        0.5, gt=0.0, lt=1.0, description="p_max: the largest (class-balanced) predicted cost probability allowed."
    )
    shield_horizon: int = Field(6, ge=1, description="H: the model predicts a cost within the next H steps.")
    shield_lr: float = Field(1e-3, gt=0.0, description="Learning rate of the cost model.")
    shield_updates: int = Field(25, ge=0, description="Cost-model minibatch steps per fit.")
    shield_fit_every: int = Field(
        32,
        ge=1,
        description="Fit the cost model every this many vector steps (online, "
        "so the layer learns from a violation within the rollout).",
    )
    shield_batch_size: int = Field(256, ge=1)
    shield_buffer_size: int = Field(200_000, ge=1000, description="Transitions kept for the cost model.")
    shield_hidden_sizes: Widths = (64, 64)


class SafetyLayer(nn.Module):
    """The shield as a component: the cost model ``cost_model`` and its optimizer (in the state dict,
    via ``get_extra_state``), the store of labelled transitions it learns from, the projection of a
    batch of env actions (:meth:`shield_actions`), the online record (:meth:`record`) and fit
    (:meth:`fit`), and its per-iteration metrics (:meth:`metrics`)."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        config: ShieldConfig,
        n_envs: int,
        device: torch.device,
    ):
        super().__init__()
        cfg = config
        self.observation_space, self.action_space, self.device = observation_space, action_space, device
        self.horizon, self.updates, self.batch_size = cfg.shield_horizon, cfg.shield_updates, cfg.shield_batch_size
        self.fit_every = cfg.shield_fit_every
        self.cost_model = LinearCostModel(
            observation_space, action_space, cfg.n_constraints, cfg.shield_hidden_sizes
        ).to(device)
        self.optimizer = torch.optim.Adam(self.cost_model.net.parameters(), lr=cfg.shield_lr)
        T, N = max(cfg.shield_buffer_size // n_envs, cfg.shield_horizon + 1), n_envs
        self._buf_obs = torch.zeros((T, N, *(observation_space.shape or (1,))))
        self._buf_act = torch.zeros((T, N, 1 if self.cost_model.discrete else self.cost_model.n_act))
        self._buf_label = torch.zeros((T, N, cfg.n_constraints))
        self._buf_pos, self._buf_full = 0, False
        self._ep_steps = np.zeros(N, dtype=np.int64)
        self._interventions, self._steps, self._vector_steps = 0, 0, 0
        self._last_fit: dict[str, float] = {}
        self.tau = float(np.log(cfg.shield_threshold / (1 - cfg.shield_threshold)))

    def get_extra_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])

    # ---- the layer -----------------------------------------------------------------------------
    def _scale(self, actions: np.ndarray) -> np.ndarray:
        low, high = self.action_space.low, self.action_space.high
        return 2.0 * (actions - low) / (high - low) - 1.0

    def _unscale(self, scaled: np.ndarray) -> np.ndarray:
        low, high = self.action_space.low, self.action_space.high
        return low + (scaled + 1.0) * (high - low) / 2.0

    def shield_actions(self, obs: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The safety layer on a batch of env actions: ``(safe actions, changed mask)``."""
        obs_t = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.device)
        if self.cost_model.discrete:
            safe, changed = self.cost_model.project(obs_t, torch.as_tensor(actions, device=self.device), self.tau)
            return safe.cpu().numpy().astype(np.int64), changed.cpu().numpy()
        scaled = np.clip(self._scale(np.asarray(actions, dtype=np.float64)), -1.0, 1.0)
        safe, changed = self.cost_model.project(
            obs_t, torch.as_tensor(scaled, dtype=torch.float32, device=self.device), self.tau
        )
        out = self._unscale(safe.cpu().numpy().astype(np.float64)).astype(self.action_space.dtype)
        return out.reshape(np.asarray(actions).shape), changed.cpu().numpy()

    def record(
        self, obs: np.ndarray, actions: np.ndarray, costs: np.ndarray, dones: np.ndarray, changed: np.ndarray
    ) -> None:
        """Store one vector step; the label of (s_t, a_t) is 1 for constraint k if c_k > 0 at any of the
        steps t..t+H−1 of the same episode (set as those costs arrive). Fits every ``fit_every`` steps."""
        T, n, H = self._buf_obs.shape[0], len(costs), self.horizon
        p = self._buf_pos
        obs_t = torch.as_tensor(np.asarray(obs), dtype=torch.float32).reshape(n, *self._buf_obs.shape[2:])
        self._buf_obs[p] = obs_t
        self.cost_model.obs_rms.update(self.cost_model.encoder(obs_t))
        act = np.asarray(actions, dtype=np.float64)
        act = act.reshape(n, 1) if self.cost_model.discrete else self._scale(act).reshape(n, -1)
        self._buf_act[p] = torch.as_tensor(act, dtype=torch.float32)
        hit = torch.as_tensor(np.asarray(costs) > 0, dtype=torch.float32)
        self._buf_label[p] = hit
        for back in range(1, H):  # earlier steps of the same episode see this cost within their horizon
            same = torch.as_tensor(self._ep_steps >= back, dtype=torch.float32)[:, None]
            prev = (p - back) % T
            self._buf_label[prev] = torch.maximum(self._buf_label[prev], hit * same)
        self._ep_steps = np.where(np.asarray(dones), 0, self._ep_steps + 1)
        self._buf_full |= p + 1 >= T
        self._buf_pos = (p + 1) % T
        self._interventions += int(np.sum(changed))
        self._steps += n
        self._vector_steps += 1
        if self._vector_steps % self.fit_every == 0:
            self._last_fit = self.fit()

    # ---- learning the cost model ---------------------------------------------------------------
    @torch.enable_grad()
    def fit(self) -> dict[str, float]:
        """A few minibatch steps of class-balanced logistic regression on the stored transitions."""
        T, N = self._buf_obs.shape[:2]
        # the last H−1 steps' labels may still change: train on the steps before them
        size = (T if self._buf_full else self._buf_pos) - (self.horizon - 1)
        if size <= 0 or self.updates == 0:
            return {"shield_loss": float("nan"), "shield_positives": 0.0}
        start = self._buf_pos - (T if self._buf_full else self._buf_pos)  # oldest stored step (mod T)
        obs, act, label = (x.reshape(T * N, *x.shape[2:]) for x in (self._buf_obs, self._buf_act, self._buf_label))
        valid = ((torch.arange(size) + start) % T)[:, None] * N + torch.arange(N)[None]
        valid = valid.reshape(-1)
        positives = float(label[valid].sum())
        rate = label[valid].mean(0).clamp(1e-4, 1.0)
        pos_weight = ((1 - rate) / rate).clamp(max=50.0)
        total = 0.0
        for _ in range(self.updates):
            idx = valid[torch.randint(0, len(valid), (min(self.batch_size, len(valid)),))]
            a = act[idx].squeeze(-1) if self.cost_model.discrete else act[idx]
            loss = nn.functional.binary_cross_entropy_with_logits(
                self.cost_model(obs[idx], a), label[idx], pos_weight=pos_weight
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.item()
        return {"shield_loss": total / self.updates, "shield_positives": positives}

    # ---- metrics ---------------------------------------------------------------------------------
    def begin_iteration(self) -> None:
        self._interventions, self._steps = 0, 0

    def metrics(self) -> dict[str, float]:
        """``shield_interventions`` (fraction of this iteration's steps changed) and the last fit's metrics."""
        return {"shield_interventions": self._interventions / max(self._steps, 1), **self._last_fit}


class ShieldPart(Part):
    """The safety layer as a part: a :class:`ShieldWrapper` around the training env (evaluation envs
    stay bare: the agent's ``predict`` applies the layer), the :class:`SafetyLayer` :attr:`layer` built
    and attached to the wrapper once the spaces are known, its metrics each iteration (the
    intervention count then restarts), its state in checkpoints as ``shield``."""

    config: ShieldConfig
    layer: SafetyLayer

    def __init__(self, config: ShieldConfig):
        super().__init__(config)
        self._wrapper: ShieldWrapper | None = None

    def wrap_env(self, env: VectorEnv, training: bool) -> VectorEnv:
        if not training:
            return env
        self._wrapper = ShieldWrapper(env)
        return self._wrapper

    def build(self, agent: Agent) -> None:
        self.layer = SafetyLayer(agent.observation_space, agent.action_space, self.config, agent.n_envs, agent.device)
        if self._wrapper is not None:
            self._wrapper.layer = self.layer

    def iteration_metrics(self, agent: Agent, metrics: Metrics) -> Metrics:
        metrics.update(self.layer.metrics())
        self.layer.begin_iteration()
        return metrics

    def modules(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        return {"shield": self.layer}


class ShieldedPPOLag(PPOLag):
    """PPO-Lag behind a learned safety layer (Box actions: projection; discrete: substitution): PPO-Lag's
    parts and the :class:`ShieldPart`, whose :class:`ShieldWrapper` applies the layer to every training
    action; :meth:`predict` applies it to every evaluation action."""

    name = "shield_ppo_lag"
    config: ShieldConfig
    config_cls = ShieldConfig
    action_spaces = (gym.spaces.Discrete, gym.spaces.Box)  # the safety layer has no slate (MultiDiscrete) form
    part_types = (*PPOLag.part_types, ShieldPart)

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """The policy's action(s) passed through the safety layer."""
        actions = super().predict(obs, deterministic)
        single = np.asarray(obs).shape == self.observation_space.shape
        batch_obs = np.asarray(obs)[None] if single else np.asarray(obs)
        safe, _ = self.part(ShieldPart).layer.shield_actions(
            batch_obs, np.asarray(actions).reshape(len(batch_obs), *self.action_space.shape)
        )
        return safe[0] if single else safe
