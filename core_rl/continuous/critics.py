r"""Pieces shared by every continuous-action Q-learner (DDPG, TD3, SAC, NAF, QT-Opt).

The notes (9/14) name three ways to do Q-learning when :math:`\max_a Q_\phi(s,a)` has no
enumeration: *sample* actions (QT-Opt), pick an *easily maximizable* Q-function (NAF), or *train a
maximizer* :math:`\mu_\theta(s)\approx\arg\max_a Q_\phi(s,a)` (DDPG, TD3, SAC). All of them fit

.. math:: y = \sum_{k<n}\gamma^k r_{t+k} + \gamma^n (1-d)\, \max_{a'} Q_{\phi'}(s_{t+n}, a')

and share what lives here:

* :class:`ActionScaler`: networks act in :math:`[-1,1]^{|A|}`; the env and the replay buffer see
  the env's Box bounds, :math:`a_{env} = c + h\,a` with centre c and half-width h.
* :class:`QEnsemble`: K critics :math:`Q_{\phi_k}(s,a)` in one module whose layers are batched
  matmuls, so twin critics cost one forward/backward and one optimizer step; ``min_q`` is the
  clipped double-Q :math:`\min_k Q_{\phi_k}` of TD3/SAC.
* :class:`DeterministicActor`: :math:`\mu_\theta(s) = \tanh(f_\theta(s))`.
* :class:`GaussianNoise` / :class:`OrnsteinUhlenbeckNoise`: exploration noise for deterministic policies.
* :class:`ContinuousQAgent` / :class:`NoisyContinuousQAgent`: the off-policy agent base with the
  action scaling, seeded uniform warm-up actions and the noisy behaviour policy
  :math:`a = \mathrm{clip}(\mu(s) + \epsilon)`.

``matmul_dtype="bfloat16"`` (default ``"float32"``) runs every gradient step with bf16 matmuls: each matmul
(forward and backward) takes its inputs rounded to bf16 and accumulates in float32, while parameters, Adam's
state, the networks' outputs (Q-values, action means, log σ), targets and losses stay float32. Two ways, picked
by :func:`bf16_matmul_context`:

* on a CPU whose oneDNN has native bf16 (AVX512-BF16 or AMX), oneDNN's float32 matmuls in bf16 precision
  (``torch.backends.mkldnn.matmul.fp32_precision = "bf16"`` for the update only): no cast ops, activations
  float32. Per SAC gradient step on HalfCheetah (batch 256, [256, 256]) 9.5 ms against autocast's 10.4 and
  float32's 12.4 (TD3 [400, 300]: 8.4, 8.6, 12.2; one thread, an Intel Xeon with AMX, measured 2026-12-06);
* elsewhere (GPUs, CPUs without bf16 instructions, a torch without that switch) ``torch.autocast(bfloat16)``:
  the hidden activations in bf16, each network returns float32 (``QEnsemble``'s scalar output layer is a
  float32 dot product). On a CPU without bf16 instructions this is ~20× *slower* than float32: there the
  mode is no speed lever.

Acting and evaluation stay float32. The same update to bf16's ≈ 3 significant digits: an opt-in speed mode,
not the default.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import cache
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field
from torch import nn

from core_rl.common.base import Agent
from core_rl.common.config import Widths
from core_rl.common.errors import ConfigError, SpaceError
from core_rl.common.networks import ACTIVATIONS, InitName, ObsEncoder, check_init, mlp
from core_rl.common.numpy_acting import NumpyMLP
from core_rl.common.off_policy import OffPolicyAgent, OffPolicyConfig


@cache
def onednn_bf16_matmuls_available() -> bool:
    """Whether this process can ask oneDNN for float32 matmuls in bf16 precision on the CPU, natively: a torch with
    ``torch.backends.mkldnn.matmul.fp32_precision``, a CPU with bf16 instructions, and oneDNN actually taking the
    switch, which :func:`_onednn_bf16_takes_effect` checks on a probe (on an AMD EPYC with AVX512-BF16 and no AMX,
    torch 2.13's oneDNN ignored it and ran float32: the bf16 mode would have been float32 without a word)."""
    try:
        torch.backends.mkldnn.matmul.fp32_precision  # noqa: B018 (a torch before this switch raises here)
        native = torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
    return native and _onednn_bf16_takes_effect()


def _onednn_bf16_takes_effect() -> bool:
    """A 256×256 matmul and ``linear`` (what the networks call) under the switch: bf16 inputs keep ~3 significant
    digits, so on unit-variance data the error against float64 is ~1e-2 or more; float32's is ~1e-4."""
    g = torch.Generator().manual_seed(0)  # its own generator: the global random stream is left alone
    x, w, b = torch.randn(256, 256, generator=g), torch.randn(256, 256, generator=g), torch.randn(256, generator=g)
    exact_mm = (x.double() @ w.double()).float()
    exact_linear = (x.double() @ w.double().T + b.double()).float()
    with onednn_bf16_matmuls():
        err_mm = (x @ w - exact_mm).abs().max().item()
        err_linear = (torch.nn.functional.linear(x, w, b) - exact_linear).abs().max().item()
    return min(err_mm, err_linear) > 1e-3


@contextmanager
def onednn_bf16_matmuls() -> Iterator[None]:
    """Inside the block, float32 matmuls on the CPU run in oneDNN with bf16 inputs and float32 accumulation and
    outputs. A process-wide switch (not per thread), restored on exit, also when the block raises."""
    matmul = torch.backends.mkldnn.matmul
    previous = matmul.fp32_precision
    matmul.fp32_precision = "bf16"
    try:
        yield
    finally:
        matmul.fp32_precision = previous


def bf16_matmul_context(device: torch.device) -> AbstractContextManager[Any]:
    """The bf16-matmul scope of ``matmul_dtype="bfloat16"`` on ``device``: oneDNN's bf16 precision on a CPU that has
    it natively (:func:`onednn_bf16_matmuls`), otherwise a bf16 autocast (no weight-cast cache: the critic's weights
    change between its step and the actor's loss within one update)."""
    if device.type == "cpu" and onednn_bf16_matmuls_available():
        return onednn_bf16_matmuls()
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)


class ActionScaler:
    """Affine map between the normalized box [-1, 1]^|A| and the env's Box [low, high]."""

    def __init__(self, space: gym.spaces.Box, device: torch.device | str = "cpu"):
        low, high = np.asarray(space.low, dtype=np.float64), np.asarray(space.high, dtype=np.float64)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise SpaceError(f"continuous Q-learning needs a bounded Box action space, got {space}")
        self.shape = tuple(space.shape)
        self.dim = int(np.prod(space.shape))
        self.center = torch.as_tensor((high + low) / 2, dtype=torch.float32, device=device).reshape(-1)
        self.half = torch.as_tensor((high - low) / 2, dtype=torch.float32, device=device).reshape(-1)
        self.center_np, self.half_np = self.center.cpu().numpy(), self.half.cpu().numpy()

    def unnormalize(self, action: torch.Tensor) -> torch.Tensor:
        """[-1, 1] → [low, high]."""
        return torch.addcmul(self.center, self.half, action)

    def normalize(self, env_action: torch.Tensor) -> torch.Tensor:
        """[low, high] → [-1, 1]."""
        return (env_action.reshape(env_action.shape[0], -1) - self.center) / self.half


class QEnsemble(nn.Module):
    r"""K critics :math:`Q_{\phi_k}(s, a)`, k = 1..K, as one MLP whose weights carry a leading K axis.

    Every hidden layer is one ``baddbmm`` over the K members (the scalar output layer a batched dot
    product), so the twin critics of TD3/SAC take one forward, one backward and one optimizer step.
    ``forward`` returns ``[K, B]``. ``init`` as :func:`core_rl.common.networks.mlp`'s, per member.
    """

    def __init__(
        self,
        obs_space: gym.Space,
        action_dim: int,
        n_critics: int = 2,
        hidden_sizes: tuple[int, ...] = (256, 256),
        activation: str = "relu",
        encoder: str = "auto",
        init: InitName = "orthogonal",
    ):
        super().__init__()
        check_init(init)
        self.encoder = ObsEncoder(obs_space, encoder)
        self.n_critics = int(n_critics)
        self.act = ACTIVATIONS[activation]()
        dims = [self.encoder.dim + action_dim, *hidden_sizes, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            gain = 1.0 if i == len(dims) - 2 else math.sqrt(2)
            w = torch.empty(self.n_critics, d_in, d_out)
            b = torch.zeros(self.n_critics, 1, d_out)
            for k in range(self.n_critics):  # the same init as networks.mlp, per member
                if init == "orthogonal":
                    w_k = torch.empty(d_out, d_in)
                    nn.init.orthogonal_(w_k, gain=gain)
                    w[k] = w_k.T
                else:  # nn.Linear's own: W, b ~ U(±1/√fan_in)
                    linear = nn.Linear(d_in, d_out)
                    w[k], b[k, 0] = linear.weight.detach().T, linear.bias.detach()
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))

    def _inputs(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.encoder(obs), actions.reshape(actions.shape[0], -1)], dim=-1)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, detach_params: bool = False) -> torch.Tensor:
        """Q_k(s, a) for every member: ``[K, B]``. ``detach_params`` lets gradients reach only the
        action (the actor's loss), not the critic's weights."""
        x = self._inputs(obs, actions)
        h = x.unsqueeze(0).expand(self.n_critics, *x.shape)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if detach_params:
                w, b = w.detach(), b.detach()
            if i < last:
                h = self.act(torch.baddbmm(b, h, w))
            else:  # d_out = 1: a batched dot product is ~2x cheaper than a matrix-vector baddbmm
                h = (h * w.transpose(1, 2)).sum(-1) + b.squeeze(-1)
        return h

    def member(self, k: int, obs: torch.Tensor, actions: torch.Tensor, detach_params: bool = False) -> torch.Tensor:
        """Q_{φ_k}(s, a) of one member only: ``[B]`` (TD3's actor uses Q_1)."""
        h = self._inputs(obs, actions)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            w, b = w[k], b[k]
            if detach_params:
                w, b = w.detach(), b.detach()
            h = torch.addmm(b, h, w)
            if i < last:
                h = self.act(h)
        return h.squeeze(-1).float()  # float32 also under a bf16 autocast

    def min_q(self, obs: torch.Tensor, actions: torch.Tensor, detach_params: bool = False) -> torch.Tensor:
        r"""Clipped double Q: :math:`\min_k Q_{\phi_k}(s, a)`, ``[B]``."""
        q = self(obs, actions, detach_params)
        return q[0] if self.n_critics == 1 else q.amin(0)


class DeterministicActor(nn.Module):
    r""":math:`\mu_\theta(s) = \tanh(f_\theta(s)) \in [-1, 1]^{|A|}`: the trained maximizer of DDPG/TD3."""

    def __init__(
        self,
        obs_space: gym.Space,
        action_dim: int,
        hidden_sizes: tuple[int, ...] = (256, 256),
        activation: str = "relu",
        out_gain: float = 0.01,
        encoder: str = "auto",
        init: InitName = "orthogonal",
    ):
        super().__init__()
        self.encoder = ObsEncoder(obs_space, encoder)
        self.net = mlp(self.encoder.dim, action_dim, hidden_sizes, activation, out_gain=out_gain, init=init)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(self.encoder(obs)).float())  # float32 also under a bf16 autocast


class GaussianNoise:
    """ε ~ N(0, σ²) i.i.d. per step."""

    def __init__(self, n_envs: int, action_dim: int, std: float, device: torch.device | str = "cpu"):
        self.shape, self.std, self.device = (n_envs, action_dim), std, device

    def __call__(self) -> torch.Tensor:
        return self.std * torch.randn(self.shape, device=self.device)

    def reset(self, mask: np.ndarray | None = None) -> None:
        pass


class OrnsteinUhlenbeckNoise:
    """Temporally correlated noise (DDPG paper): x ← x + θ(0 − x)dt + σ√dt ε, reset per episode."""

    def __init__(
        self,
        n_envs: int,
        action_dim: int,
        std: float,
        theta: float = 0.15,
        dt: float = 1e-2,
        device: torch.device | str = "cpu",
    ):
        self.std, self.theta, self.dt = std, theta, dt
        self.state = torch.zeros((n_envs, action_dim), device=device)

    def __call__(self) -> torch.Tensor:
        self.state += -self.theta * self.state * self.dt + self.std * math.sqrt(self.dt) * torch.randn_like(self.state)
        return self.state.clone()

    def reset(self, mask: np.ndarray | None = None) -> None:
        if mask is None:
            self.state.zero_()
        else:
            self.state[torch.as_tensor(mask, device=self.state.device)] = 0.0


class ContinuousQConfig(OffPolicyConfig):
    """Defaults shared by the continuous Q-learners (RL-Zoo-like settings)."""

    hidden_sizes: Widths = Field((256, 256), description="Hidden widths of actor and critic MLPs.")
    activation: str = Field("relu", pattern="^(tanh|relu|elu|gelu)$")
    lr: float = Field(1e-3, gt=0.0, description="Adam step size of every network.")
    learning_starts: int = Field(1000, ge=0, description="Env steps of uniform random actions before learning.")
    init: InitName = Field(
        "orthogonal",
        description="Initial weights of actor and critics: 'orthogonal' (hidden gain √2, small output gain, zero "
        "biases) or 'torch_default' (nn.Linear's own U(±1/√fan_in), as SB3's SAC/TD3/DDPG keep it).",
    )
    matmul_dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="'bfloat16': gradient steps with bf16 matmuls (inputs rounded to bf16, float32 accumulation) "
        "and float32 parameters, optimizer state, outputs and losses: oneDNN's bf16 precision on CPUs with "
        "AVX512-BF16/AMX, a bf16 autocast elsewhere (a speed mode for those CPUs and for GPUs).",
    )
    numpy_acting: bool = Field(
        True,
        description="Exploration steps of a few envs with flat observations and a tanh/ReLU MLP actor act in NumPy "
        "on views of the weights (SAC, DDPG, TD3; core_rl.common.numpy_acting): the same noise draws and "
        "distribution to float rounding, without torch's per-op overhead. False: torch always.",
    )


class NoisyConfig(ContinuousQConfig):
    exploration_noise: Literal["gaussian", "ou"] = Field("gaussian", description="Noise added to the greedy action.")
    noise_std: float = Field(0.1, ge=0.0, description="σ of the exploration noise, in units of the half-width.")
    ou_theta: float = Field(0.15, gt=0.0, description="Mean reversion θ of the OU noise.")
    ou_dt: float = Field(1e-2, gt=0.0, description="Time step dt of the OU noise.")


class ContinuousQAgent(OffPolicyAgent):
    """Off-policy agent on a bounded Box action space; networks act in [-1, 1], the env in [low, high].

    The replay buffer stores env-scale actions; ``train_step`` maps them back with
    ``self.scaler.normalize``. Subclasses implement ``_normalized_action(obs, deterministic)``.
    """

    config: ContinuousQConfig
    config_cls = ContinuousQConfig
    action_spaces = (gym.spaces.Box,)

    #: whether this very class returns float32 outputs under a bf16 autocast (set per class, not inherited)
    bf16_updates: ClassVar[bool] = False

    def _build(self) -> None:
        if self.config.matmul_dtype != "float32" and not type(self).__dict__.get("bf16_updates", False):
            raise ConfigError(f"config field 'matmul_dtype': {self.name} supports only 'float32'")
        self.scaler = ActionScaler(self.action_space, self.device)
        self.action_dim = self.scaler.dim
        super()._build()

    def _make_critic(self, n_critics: int) -> QEnsemble:
        """K = ``n_critics`` critics with the config's ``hidden_sizes``, ``activation``, ``encoder``, ``init``."""
        cfg = self.config
        return QEnsemble(
            self.observation_space,
            self.action_dim,
            n_critics,
            cfg.hidden_sizes,
            cfg.activation,
            cfg.encoder,
            init=cfg.init,
        ).to(self.device)

    def _normalized_action(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _update_context(self) -> AbstractContextManager[Any]:
        """``matmul_dtype="bfloat16"``: the gradient step's matmuls in bf16 (:func:`bf16_matmul_context`)."""
        if self.config.matmul_dtype == "float32":
            return nullcontext()
        return bf16_matmul_context(self.device)

    def _numpy_behaviour(self, out: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        """The behaviour action in [-1, 1] from the NumPy actor's output (:meth:`_numpy_actor`), drawing the noise
        the torch path draws, from torch's generator."""
        raise NotImplementedError

    def _numpy_behaviour_mirrors_explore(self) -> bool:
        """Whether :meth:`_numpy_behaviour` computes what this agent's own :meth:`_explore` does (False unless a
        class that defines both says so: a subclass that overrides the acting falls back to torch)."""
        return False

    def _numpy_actor(self) -> NumpyMLP | None:
        """The NumPy forward of ``self.actor`` (``numpy_acting``), or None: act in torch. Only where
        :meth:`_numpy_behaviour` mirrors this agent's acting and the actor allows it; rebuilt when the weights'
        storage moves (:meth:`NumpyMLP.key_of`)."""
        if not self.config.numpy_acting or type(self)._obs_tensor is not Agent._obs_tensor:
            return None
        if not self._numpy_behaviour_mirrors_explore():
            return None
        key = NumpyMLP.key_of(self.actor)
        cached = self.__dict__.get("_numpy_actor_cache")  # (key, NumpyMLP or None)
        if cached is None or cached[0] != key:
            cached = self._numpy_actor_cache = (key, NumpyMLP.build(self.actor, self.n_envs))
        return cached[1]

    def _explore_numpy(self, obs: np.ndarray) -> np.ndarray | None:
        actor = self._numpy_actor()
        if actor is None:
            return None
        action = self._numpy_behaviour(actor(self._preprocess_obs(np.asarray(obs))))
        return (self.scaler.center_np + self.scaler.half_np * action).reshape(-1, *self.scaler.shape)

    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return self.scaler.unnormalize(self._normalized_action(obs, deterministic)).reshape(-1, *self.scaler.shape)

    def _explore(self, obs_t: torch.Tensor) -> torch.Tensor:
        return self._act(obs_t, deterministic=False)

    def _random_actions(self) -> np.ndarray:
        """Uniform warm-up actions from torch's seeded generator (same seed → same actions)."""
        u = torch.rand((self.n_envs, self.action_dim), device=self.device) * 2 - 1
        return self.scaler.unnormalize(u).reshape(self.n_envs, *self.scaler.shape).cpu().numpy()


class NoisyContinuousQAgent(ContinuousQAgent):
    """A deterministic greedy policy made into a behaviour policy by additive Gaussian or OU noise."""

    config: NoisyConfig
    config_cls = NoisyConfig

    def _build(self) -> None:
        super()._build()
        cfg = self.config
        if cfg.exploration_noise == "ou":
            self.noise: GaussianNoise | OrnsteinUhlenbeckNoise = OrnsteinUhlenbeckNoise(
                self.n_envs, self.action_dim, cfg.noise_std, cfg.ou_theta, cfg.ou_dt, self.device
            )
        else:
            self.noise = GaussianNoise(self.n_envs, self.action_dim, cfg.noise_std, self.device)

    def _greedy(self, obs: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """argmax_a Q(s, a) (or its trained approximation), in [-1, 1]."""
        raise NotImplementedError

    def _normalized_action(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        action = self._greedy(obs)
        if deterministic:
            return action
        return (action + self.config.noise_std * torch.randn_like(action)).clamp_(-1.0, 1.0)

    def _explore(self, obs_t: torch.Tensor) -> torch.Tensor:
        action = (self._greedy(obs_t) + self.noise()).clamp_(-1.0, 1.0)
        return self.scaler.unnormalize(action).reshape(-1, *self.scaler.shape)

    def _track_episodes(self, rewards: np.ndarray, dones: np.ndarray, info: dict[str, Any] | None = None) -> None:
        super()._track_episodes(rewards, dones, info)
        if dones.any():
            self.noise.reset(dones)
