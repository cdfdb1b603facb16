r"""Deep Q-networks: fitted Q iteration made online, with the fixes of the notes (9/12, 9/14).

Q-learning (9/12) forgets the policy: act greedily, :math:`\pi'(a_t|s_t) = 1` iff
:math:`a_t = \arg\max_{a_t} Q_\phi(s_t,a_t)`, and fit Q_φ to the Bellman backup

.. math::
    y_i \leftarrow r(s_i,a_i) + \gamma \max_{a'} Q_{\phi'}(s'_i, a'), \qquad
    \phi \leftarrow \arg\min_\phi \tfrac12 \sum_i \lVert Q_\phi(s_i,a_i) - y_i \rVert^2 .

It is off-policy, so any behaviour policy may collect the data: ε-greedy
(:math:`\pi(a|s) = 1-\epsilon+\epsilon/|\mathcal A|` for the greedy action, :math:`\epsilon/|\mathcal A|`
otherwise, ε decayed linearly) or Boltzmann (:math:`\pi(a|s) \propto \exp(Q_\phi(s,a)/T)`).

The 9/14 problems and their fixes, each a config switch here:

* correlated samples → a **replay buffer** of transitions sampled uniformly (or by priority,
  ``prioritized``: :math:`P(i) \propto (|\delta_i|+\epsilon)^\alpha`, importance weights
  :math:`w_i \propto (N P(i))^{-\beta}`, β annealed to 1);
* a moving target → a **target network** φ' updated less often: a periodic hard copy
  (``tau=1``, every ``target_update_interval`` gradient steps) or Polyak averaging
  φ' ← τφ + (1−τ)φ';
* overestimation (E[max] ≥ max E) → **double Q-learning** (``double_q``): the current network picks,
  the target network evaluates,

  .. math:: y = r + \gamma\, Q_{\phi'}\big(s', \arg\max_{a'} Q_\phi(s', a')\big);

* slow propagation → **N-step returns** (``n_step``, summed by the replay buffer):

  .. math:: y_{t} = \sum_{t'=t}^{t+N-1} \gamma^{t'-t} r_{t'} + \gamma^N \max_{a} Q_{\phi'}(s_{t+N}, a).

Also: a **dueling** head :math:`Q(s,a) = V(s) + A(s,a) - \frac{1}{|\mathcal A|}\sum_{a'}A(s,a')`, the
Huber loss on the TD error δ = Q_φ(s,a) − y, and gradient-norm clipping. ``double_dqn`` is this
class with ``double_q=True`` by default.

Example (CartPole-v1 on a small budget: 6,000 steps, 64 gradient steps every 256, 3-step targets;
the greedy policy already beats the random policy's ≈ 22 — `tests/test_q_learning.py` solves it
in 50,000)::

    >>> settings = {"lr": 2.3e-3, "batch_size": 64, "learning_starts": 1000, "train_freq": 256, "gradient_steps": 64}
    >>> settings |= {"target_update_interval": 64, "exploration_fraction": 0.3, "n_step": 3}
    >>> agent = DQN("CartPole-v1", {**settings, "seed": 0}).learn(6000)
    >>> agent.evaluate(n_episodes=5)["mean_return"] > 50
    True
"""

from __future__ import annotations

from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from core_rl.common.config import Widths
from core_rl.common.distributions import Categorical
from core_rl.common.fused_actor_critic import clip_flat_, flat_grad_views, mlp_backward, mlp_forward, mlp_layers
from core_rl.common.networks import ACTIVATIONS, InitName, ObsEncoder, mlp
from core_rl.common.off_policy import OffPolicyAgent, OffPolicyConfig, polyak_update
from core_rl.common.optim import FlatStep, make_optimizer
from core_rl.common.prioritized_replay import PrioritizedReplayBuffer
from core_rl.common.replay import ReplaySample


class DQNConfig(OffPolicyConfig):
    lr: float = Field(1e-4, gt=0.0)
    batch_size: int = Field(32, ge=1)
    train_freq: int = Field(4, ge=1, description="Vector-env steps between training phases.")
    tau: float = Field(1.0, gt=0.0, le=1.0, description="1.0: periodic hard copy φ' ← φ; < 1: Polyak averaging.")
    target_update_interval: int = Field(1000, ge=1, description="Gradient steps between target updates.")
    max_grad_norm: float | None = Field(10.0, gt=0.0)
    hidden_sizes: Widths = (64, 64)
    activation: str = Field("relu", pattern="^(tanh|relu|elu|gelu)$")
    init: InitName = Field(
        "orthogonal",
        description="Q_φ's weight init: 'orthogonal' (gain √2 hidden, 1 output, zero biases) or 'torch_default' "
        "(nn.Linear's own: W, b ~ U(±1/√fan_in), as SB3's DQN).",
    )
    optimizer: Literal["adam", "sgd", "rmsprop"] = "adam"
    loss: Literal["huber", "mse"] = Field("huber", description="Loss on the TD error δ = Q_φ(s,a) − y.")
    huber_delta: float = Field(1.0, gt=0.0)
    fused_update: bool = Field(
        True,
        description="The gradient step written out by the chain rule without autograd (FusedQ) where the Q "
        "network allows it (flat observations, tanh/ReLU MLP, not dueling); the same step to float rounding.",
    )
    double_q: bool = Field(False, description="y = r + γ Q_φ'(s', argmax_a Q_φ(s', a)).")
    dueling: bool = Field(False, description="Q = V + A − mean_a A.")
    exploration: Literal["epsilon", "boltzmann"] = "epsilon"
    exploration_fraction: float = Field(
        0.1, ge=0.0, le=1.0, description="Fraction of training over which ε (or T) decays linearly."
    )
    exploration_initial_eps: float = Field(1.0, ge=0.0, le=1.0)
    exploration_final_eps: float = Field(0.05, ge=0.0, le=1.0)
    temperature: float = Field(1.0, gt=0.0, description="Boltzmann temperature T: π(a|s) ∝ exp(Q(s,a)/T).")
    temperature_final: float | None = Field(None, gt=0.0, description="If set, T decays linearly to it.")
    prioritized: bool = Field(False, description="Prioritized replay, P(i) ∝ (|δ_i| + ε)^α.")
    prioritized_alpha: float = Field(0.6, ge=0.0)
    prioritized_beta: float = Field(0.4, ge=0.0, le=1.0, description="Initial β, annealed linearly to 1.")
    prioritized_eps: float = Field(1e-6, gt=0.0)

    @model_validator(mode="after")
    def _check(self) -> "DQNConfig":
        if self.dueling and not self.hidden_sizes:
            raise ValueError("dueling needs at least one hidden layer (hidden_sizes is empty)")
        return self


class QNetwork(nn.Module):
    """Q_φ(s, ·) for every discrete action at once.

    With a Discrete observation space and no hidden layers it is an exact table (a bias-free linear
    map of the one-hot state, initialised to zero); with ``dueling`` the last hidden layer feeds a
    value head V(s) and an advantage head A(s, a). ``init``: the MLPs' init (:func:`~core_rl.common.networks.mlp`).
    """

    def __init__(
        self,
        obs_space: gym.Space,
        n_actions: int,
        hidden_sizes: tuple[int, ...] = (64, 64),
        activation: str = "relu",
        dueling: bool = False,
        encoder: str = "auto",
        init: InitName = "orthogonal",
    ):
        super().__init__()
        self.encoder = ObsEncoder(obs_space, encoder)
        self.dueling = dueling
        self.n_actions = n_actions
        if dueling:
            *trunk_sizes, width = hidden_sizes
            self.trunk = mlp(
                self.encoder.dim,
                width,
                trunk_sizes,
                activation,
                out_gain=float(np.sqrt(2)),
                output_activation=ACTIVATIONS[activation],
                init=init,
            )
            self.value_head = mlp(width, 1, (), activation, init=init)
            self.advantage_head = mlp(width, n_actions, (), activation, init=init)
        elif not hidden_sizes and isinstance(obs_space, gym.spaces.Discrete):
            self.net = nn.Linear(self.encoder.dim, n_actions, bias=False)
            nn.init.zeros_(self.net.weight)
        else:
            self.net = mlp(self.encoder.dim, n_actions, hidden_sizes, activation, init=init)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.encoder(obs)
        if not self.dueling:
            return self.net(x)
        h = self.trunk(x)
        advantage = self.advantage_head(h)
        return self.value_head(h) + advantage - advantage.mean(-1, keepdim=True)


class DQN(OffPolicyAgent):
    """DQN over a vector env (``DQN(env, config).learn(steps)``); see the module docstring."""

    name = "dqn"
    config: DQNConfig
    config_cls = DQNConfig
    action_spaces = (gym.spaces.Discrete,)

    def _make_q_network(self) -> nn.Module:
        cfg = self.config
        return QNetwork(
            self.observation_space,
            int(self.action_space.n),
            cfg.hidden_sizes,
            cfg.activation,
            cfg.dueling,
            cfg.encoder,
            cfg.init,
        )

    def _build_networks(self) -> None:
        cfg = self.config
        self.q_net = self._make_q_network()
        self.q_target = self._make_q_network()
        self.q_target.load_state_dict(self.q_net.state_dict())
        self.q_target.requires_grad_(False)
        self.q_net.to(self.device)
        self.q_target.to(self.device)
        self.optimizer = make_optimizer(cfg.optimizer, [p for p in self.q_net.parameters() if p.requires_grad], cfg.lr)
        self._phase_targets: tuple[ReplaySample, tuple[tuple[int, int], ...], int, int, torch.Tensor] | None = None
        if cfg.prioritized:
            self.replay = PrioritizedReplayBuffer.like(
                self.replay, alpha=cfg.prioritized_alpha, beta=cfg.prioritized_beta, eps=cfg.prioritized_eps
            )

    # ---- schedules (the run's progress: OffPolicyAgent.learn / _progress) ---------------------
    def _decayed(self, start: float, end: float) -> float:
        frac = self.config.exploration_fraction
        ramp = 1.0 if frac == 0 else min(1.0, self._progress() / frac)
        return start + (end - start) * ramp

    @property
    def epsilon(self) -> float:
        return self._decayed(self.config.exploration_initial_eps, self.config.exploration_final_eps)

    @property
    def temperature(self) -> float:
        cfg = self.config
        return (
            cfg.temperature if cfg.temperature_final is None else self._decayed(cfg.temperature, cfg.temperature_final)
        )

    # ---- acting ------------------------------------------------------------------------------
    def _random_actions(self) -> np.ndarray:
        # torch's global generator (seeded by the agent), so that warm-up is reproducible
        return torch.randint(int(self.action_space.n), (self.n_envs,)).numpy()

    def explore(self, q_values: torch.Tensor) -> torch.Tensor:
        """Behaviour-policy actions for a batch of Q-value rows (ε-greedy or Boltzmann)."""
        if self.config.exploration == "boltzmann":
            return Categorical(q_values / self.temperature).sample()
        greedy = q_values.argmax(-1)
        random = torch.randint(q_values.shape[-1], greedy.shape, device=q_values.device)
        explore = torch.rand(greedy.shape, device=q_values.device) < self.epsilon
        return torch.where(explore, random, greedy)

    def _explore(self, obs_t: torch.Tensor) -> torch.Tensor:
        """ε-greedy by the coin first: the envs whose coin says "explore" take a uniform action without
        Q_φ being computed (all of them: no forward pass at all), the others argmax Q_φ; the same random
        draws as :meth:`explore`, so the same actions. Boltzmann exploration (and subclasses' ``explore``) take the Q values."""
        if self.config.exploration != "epsilon" or type(self).explore is not DQN.explore:
            return self.explore(self._q_values(obs_t))
        n = obs_t.shape[0]
        # the draws of explore(), in its order, from torch's global generator (seeded and checkpointed)
        random = torch.randint(int(self.action_space.n), (n,))
        coin = torch.rand(n).numpy() < self.epsilon
        if coin.all():
            return random
        greedy = self._greedy_one(obs_t) if n == 1 else None
        if greedy is None:
            greedy = self._q_values(obs_t).argmax(-1)
        if coin.any():
            greedy = torch.where(torch.from_numpy(coin).to(greedy.device), random.to(greedy.device), greedy)
        return greedy

    def _greedy_one(self, obs_t: torch.Tensor) -> torch.Tensor | None:
        """argmax_a Q_φ(s, a) for one flat observation on the CPU, by NumPy on the parameters' own memory (a
        one-row forward pass is ~7 µs of BLAS matrix-vector products against ~60 µs of torch op dispatch for
        a 256-256 MLP, measured), or None where the network is not a plain ReLU/tanh MLP of float32 on the CPU."""
        if obs_t.device.type != "cpu" or type(self)._q_values is not DQN._q_values:
            return None
        cached = getattr(self, "_numpy_mlp", None)  # (Q_φ, its parameters, their storage, the NumPy views)
        if cached is None or cached[0] is not self.q_net or any(p.data_ptr() != k for p, k in zip(*cached[1:3])):
            params = list(self.q_net.parameters())
            cached = self._numpy_mlp = (self.q_net, params, [p.data_ptr() for p in params], _numpy_layers(self.q_net))
        if cached[3] is None:
            return None
        weights, tanh = cached[3]
        h = obs_t.numpy().reshape(1, -1).astype(np.float32, copy=False)
        for i, (w_t, b) in enumerate(weights):
            h = h @ w_t + b
            if i < len(weights) - 1:
                h = np.tanh(h, out=h) if tanh else np.maximum(h, 0.0, out=h)
        return torch.from_numpy(h.argmax(-1))

    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        q_values = self._q_values(obs)
        return q_values.argmax(-1) if deterministic else self.explore(q_values)

    # ---- learning ----------------------------------------------------------------------------
    def _iterate(self) -> dict[str, float]:
        if isinstance(self.replay, PrioritizedReplayBuffer):
            beta0 = self.config.prioritized_beta
            self.replay.beta = beta0 + (1.0 - beta0) * self._progress()
        metrics = super()._iterate()
        if self.config.exploration == "boltzmann":
            metrics["temperature"] = self.temperature
        else:
            metrics["epsilon"] = self.epsilon
        return metrics

    def _update_targets(self) -> None:
        polyak_update(self.q_net, self.q_target, self.config.tau)

    @torch.no_grad()
    def target_q(self, batch: ReplaySample) -> torch.Tensor:
        """y = Σγ^k r + γ^n (1 − done) Q_φ'(s', a*), a* = argmax of Q_φ' (or of Q_φ with double_q).

        The Q networks may carry extra axes before the actions (the heads of bootstrapped DQN): y then
        has them too, ``[B, ...]``.
        """
        next_q_target = self._q_values(batch.next_obs, target=True)
        if self.config.double_q:
            next_action = self._q_values(batch.next_obs).argmax(-1, keepdim=True)
            next_q = next_q_target.gather(-1, next_action).squeeze(-1)
        else:
            next_q = next_q_target.max(-1).values
        per_row = (-1,) + (1,) * (next_q.dim() - 1)
        return batch.rewards.reshape(per_row) + (batch.discounts * (1.0 - batch.dones)).reshape(per_row) * next_q

    def td_loss(self, q: torch.Tensor, target_q: torch.Tensor) -> torch.Tensor:
        """The per-sample loss on δ = Q_φ(s,a) − y: Huber with ``huber_delta``, or ½δ²."""
        if self.config.loss == "huber":
            return nn.functional.huber_loss(q, target_q, reduction="none", delta=self.config.huber_delta)
        return 0.5 * (q - target_q).pow(2)

    def _fused_q(self) -> "FusedQ | None":
        """The autograd-free gradient step (:class:`FusedQ`), or None where ``fused_update`` is off or the
        network, optimizer or loss (``td_loss`` overridden) do not fit it."""
        if not self.config.fused_update or type(self).td_loss is not DQN.td_loss:
            return None
        cached = getattr(self, "_fused_cache", None)
        key = (self.q_net, self.q_target, self.optimizer)
        if cached is None or any(a is not b for a, b in zip(cached[0], key)):
            cached = self._fused_cache = (key, FusedQ.build(*key))
        return cached[1]

    def _q_values(self, obs: torch.Tensor, target: bool = False) -> torch.Tensor:
        """Q_φ(s, ·), or Q_φ'(s, ·) with ``target``: through :class:`FusedQ` where it applies (no grad)."""
        fused = self._fused_q()
        if fused is not None and not torch.is_grad_enabled():
            return fused.q_values(obs, target)
        return (self.q_target if target else self.q_net)(obs)

    def _batched_targets_apply(self) -> bool:
        """Whether y depends on nothing but the sample and φ' (no online network: not ``double_q``; DQN's own
        ``target_q`` on a plain :class:`QNetwork`), so that one forward pass may give many minibatches' y."""
        return (
            not self.config.double_q
            and type(self).target_q is DQN.target_q
            and type(self)._q_values is DQN._q_values
            and type(self.q_target) is QNetwork
        )

    def _target_versions(self) -> tuple[tuple[int, int], ...]:
        return tuple((p.data_ptr(), p._version) for p in self.q_target.parameters())

    def _minibatch_targets(self, batch: ReplaySample) -> torch.Tensor:
        r"""y of :meth:`target_q` for ``batch``. A minibatch cut from a training phase's sample
        (:meth:`ReplayBuffer.phase_samples`) gets its rows of y computed for every minibatch up to the next
        target update at once: φ' is the same for all of them, so y is the same numbers (one forward pass
        instead of one per gradient step), and each distinct transition is evaluated once (the phase's
        draws repeat transitions: 128·64 draws from a buffer of N hold ≈ N(1 − e^{−8192/N}) distinct ones)."""
        if batch.phase is None or not self._batched_targets_apply():
            return self.target_q(batch)
        phase, start = batch.phase
        n = int(batch.rewards.shape[0])
        versions = self._target_versions()
        cached = self._phase_targets
        if (
            cached is None
            or cached[0] is not phase
            or cached[1] != versions
            or not (cached[2] <= start and start + n <= cached[3])
        ):
            cfg = self.config
            steps = (int(phase.rewards.shape[0]) - start) // n
            if cfg.target_update_unit == "gradient_steps":  # φ' changes after the step with (g + 1) % I == 0
                interval = cfg.target_update_interval
                steps = min(steps, interval - self.gradient_updates % interval)
            stop = start + max(steps, 1) * n
            y = self._distinct_target_q(phase.rows(start, stop)) if stop - start > n else self.target_q(batch)
            cached = self._phase_targets = (phase, versions, start, stop, y)
        return cached[4][start - cached[2] : start - cached[2] + n]

    def _distinct_target_q(self, rows: ReplaySample) -> torch.Tensor:
        """:meth:`target_q` of ``rows`` (of one unchanged buffer), evaluated once per distinct transition."""
        if rows.indices is None:
            return self.target_q(rows)
        distinct, inverse = torch.unique(rows.indices, return_inverse=True)
        if distinct.numel() == rows.indices.numel():
            return self.target_q(rows)
        first = torch.full_like(distinct, rows.indices.numel()).scatter_reduce_(
            0, inverse, torch.arange(rows.indices.numel()), reduce="amin"
        )
        first = first.to(rows.rewards.device)
        picked = ReplaySample(  # what target_q reads: s', r, done, γ^n
            obs=rows.obs[:0],
            actions=rows.actions[:0],
            rewards=rows.rewards[first],
            next_obs=rows.next_obs[first],
            dones=rows.dones[first],
            discounts=rows.discounts[first],
        )
        return self.target_q(picked)[inverse.to(rows.rewards.device)]

    def train_step(self, batch: ReplaySample) -> dict[str, float]:
        target_q = self._minibatch_targets(batch)
        fused = self._fused_q()
        if fused is not None:
            loss, q, td_error = fused.step(self.config, batch, target_q, need_loss=self.log_metrics)
        else:
            q = self.q_net(batch.obs).gather(-1, batch.actions.long().reshape(-1, 1)).squeeze(-1)
            td_error = q - target_q
            per_sample = self.td_loss(q, target_q)
            loss = (per_sample * batch.weights).mean() if batch.weights is not None else per_sample.mean()
            self._step_optimizer(self.optimizer, loss)
        if isinstance(self.replay, PrioritizedReplayBuffer) and batch.indices is not None:
            self.replay.update_priorities(batch.indices, td_error)
        if self._target_update_due():
            self._update_targets()
        if not self.log_metrics or loss is None:
            return {}
        return {"loss": loss.item(), "q_mean": q.mean().item(), "td_error_abs": td_error.abs().mean().item()}


def _numpy_layers(q_net: nn.Module) -> tuple[list[tuple[np.ndarray, np.ndarray]], bool] | None:
    """``([(W_lᵀ, b_l)], tanh)`` as NumPy views of a plain :class:`QNetwork` MLP's float32 CPU parameters
    (flat observations), or None."""
    if type(q_net) is not QNetwork or q_net.dueling or q_net.encoder.n or q_net.encoder.cnn is not None:
        return None
    found = mlp_layers(q_net.net)
    if found is None or any(True for _ in q_net.encoder.parameters()):
        return None
    params = [p for lin in found[0] for p in (lin.weight, lin.bias)]
    if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in params):
        return None
    return [(lin.weight.detach().numpy().T, lin.bias.detach().numpy()) for lin in found[0]], found[1] == "tanh"


class FusedQ:
    r"""DQN's gradient step without an autograd graph (as :mod:`core_rl.common.fused_actor_critic` does for
    PPO/A2C): with δ_i = Q_φ(s_i, a_i) − y_i and importance weights w_i (1 without prioritized replay),

    .. math:: \frac{\partial L}{\partial Q_\phi(s_i, a_i)} = \frac{w_i}{B}\,\psi(\delta_i),\qquad
        \psi(\delta) = \operatorname{clip}(\delta, -\kappa, \kappa)\ \text{(Huber)}\ \text{or}\ \delta\ (\tfrac12\delta^2),

    zero for the actions not taken, back through the MLP by the chain rule into one flat gradient buffer,
    clipped to ``max_grad_norm`` and stepped by :class:`~core_rl.common.optim.FlatStep` (or the optimizer)."""

    def __init__(
        self,
        q_net: "QNetwork",
        q_target: "QNetwork",
        optimizer: torch.optim.Optimizer,
        layers: list[nn.Linear],
        target_layers: list[nn.Linear],
        tanh: bool,
    ):
        self.q_net, self.q_target, self.optimizer, self.tanh = q_net, q_target, optimizer, tanh
        self.layers, self.target_layers = layers, target_layers
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.flat, views = flat_grad_views(self.params)
        index = {id(p): v for p, v in zip(self.params, views)}
        self.grads = [(index[id(lin.weight)], index[id(lin.bias)]) for lin in layers]
        self.views = views
        self.flat_step = FlatStep.build(optimizer, self.params, self.flat)

    @classmethod
    def build(cls, q_net: nn.Module, q_target: nn.Module, optimizer: torch.optim.Optimizer) -> "FusedQ | None":
        """For plain (not dueling) :class:`QNetwork` MLPs with a parameter-free encoder, else None."""
        for net in (q_net, q_target):
            if type(net) is not QNetwork or net.dueling or any(True for _ in net.encoder.parameters()):
                return None
        found, target = mlp_layers(q_net.net), mlp_layers(q_target.net)
        if target is None or found is None or target[1] != found[1]:
            return None
        params = [p for group in optimizer.param_groups for p in group["params"]]
        own = list(q_net.parameters())
        if found is None or len(params) != len(own) or {id(p) for p in params} != {id(p) for p in own}:
            return None
        if any(p.dtype != torch.float32 or p.device != params[0].device for p in params):
            return None
        return cls(q_net, q_target, optimizer, found[0], target[0], found[1] == "tanh")

    @torch.no_grad()
    def q_values(self, obs: torch.Tensor, target: bool = False) -> torch.Tensor:
        """Q_φ(s, ·) (or Q_φ'), the modules' bits without their call overhead (acting, targets)."""
        net, layers = (self.q_target, self.target_layers) if target else (self.q_net, self.layers)
        return mlp_forward(layers, net.encoder(obs), self.tanh)[0]

    @torch.no_grad()
    def step(
        self, cfg: DQNConfig, batch: ReplaySample, target_q: torch.Tensor, need_loss: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """One gradient step; ``(loss, Q_φ(s, a), δ)``, the loss None without ``need_loss`` (not computed)."""
        out, hs = mlp_forward(self.layers, self.q_net.encoder(batch.obs), self.tanh)
        actions = batch.actions.long().reshape(-1, 1)
        q = out.gather(-1, actions).squeeze(-1)
        td_error = q - target_q
        n = q.shape[0]
        loss = None
        if cfg.loss == "huber":
            kappa = cfg.huber_delta
            g_q = td_error.clamp(-kappa, kappa)
            if need_loss:
                abs_error = td_error.abs()
                per_sample = torch.where(abs_error < kappa, 0.5 * td_error.square(), kappa * (abs_error - 0.5 * kappa))
        else:
            g_q = td_error.clone()
            if need_loss:
                per_sample = 0.5 * td_error.square()
        if batch.weights is not None:
            g_q.mul_(batch.weights)
            if need_loss:
                loss = (per_sample * batch.weights).mean()
        elif need_loss:
            loss = per_sample.mean()
        g_out = torch.zeros_like(out).scatter_(-1, actions, g_q.div_(n).unsqueeze(-1))
        mlp_backward(self.layers, hs, self.grads, g_out, self.tanh)
        for p, grad in zip(self.params, self.views):
            if p.grad is not grad:
                p.grad = grad
        clip_flat_(self.flat, cfg.max_grad_norm)
        if self.flat_step is not None:
            self.flat_step.step()
        else:
            self.optimizer.step()
        return loss, q, td_error


class DoubleDQNConfig(DQNConfig):
    double_q: bool = True


class DoubleDQN(DQN):
    """Double DQN: :class:`DQN` whose ``double_q`` defaults to True."""

    name = "double_dqn"
    config: DoubleDQNConfig
    config_cls = DoubleDQNConfig


__all__ = ["DQN", "DQNConfig", "DoubleDQN", "DoubleDQNConfig", "QNetwork"]
