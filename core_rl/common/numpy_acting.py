r"""Acting in NumPy: the rollout's per-step forward of a small MLP policy and value function.

A rollout step of an on-policy agent with a few envs is bound by per-op overhead, not arithmetic: for
RL-Zoo's HalfCheetah PPO (one env, two 256-256 ReLU MLPs) the torch path spent ~130 µs per step on
the policy and value forward, the ``DiagGaussian``, the sample and its log-probability and the
tensor conversions, of which the six matrix-vector products are ~20 µs. NumPy's operators on small
arrays cost a fraction of torch's dispatch, and the parameters are shared, not copied (a NumPy view
of each CPU tensor), so the same network acts at ~30 µs.

For an MLP :math:`h_l = f(h_{l-1}W_l^\top + b_l)`, :math:`y = h_{L-1}W_L^\top + b_L` (tanh or ReLU
:math:`f`), the step is

.. math::
    \text{Gaussian: } a = \mu + \sigma\odot\varepsilon,\ \varepsilon\sim\mathcal N(0, I),\qquad
    \log\pi(a|s) = -\tfrac12\|\varepsilon\|^2 - \textstyle\sum_j\log\sigma_j - \tfrac d2\log 2\pi;

.. math::
    \text{categorical: } a = \arg\max_k\,(\ell_k - \log(-\log u_k)),\ u_k\sim U(0, 1),\qquad
    \log\pi(a|s) = \ell_a - \log\textstyle\sum_k e^{\ell_k}

(Gumbel-max, as :class:`~core_rl.common.distributions.Categorical` samples), and :math:`V(s)` from the
value MLP. The noise comes from torch's generator, drawn in blocks of steps, so a seed still fixes the
rollout. Log-probabilities and values equal the torch path's to float rounding (another BLAS sums in
another order); ``tests/test_numpy_acting.py`` checks both against the torch distributions.

The off-policy continuous agents (SAC, TD3, DDPG; their ``numpy_acting``) take one exploration step per
gradient step with one or a few envs: :class:`NumpyMLP` is their actor's forward alone, and the agent adds
its own head (SAC's :math:`a = \tanh(\mu + \sigma\odot\varepsilon)`, TD3's
:math:`a = \mathrm{clip}(\tanh f_\theta(s) + \varepsilon, -1, 1)`) with the noise drawn from torch's generator
as its torch path draws it. There the step is bound less by dispatch than by the caches the gradient step
has just flushed: it saved ~0.1 ms of a ~10 ms bf16 SAC step on HalfCheetah (two agents in one process,
alternating blocks of 300 steps, 2026-12-07).

:meth:`NumpyActor.build` returns None where this does not apply, and the rollout acts in torch: other
heads (gSDE, slates, MultiDiscrete), image or other parameterised encoders, another dtype or device,
or a batch large enough that a matrix product is worth more than its dispatch (``n_envs · width²``
above :data:`MAX_WORK`, where BLAS may also start threads of its own).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from core_rl.common.distributions import StochasticPolicy, ValueFunction
from core_rl.common.fused_actor_critic import mlp_layers

LOG_2PI = math.log(2 * math.pi)
#: the largest ``n_envs · width²`` (multiply-adds of the widest layer per step) acted in NumPy
MAX_WORK = 1 << 18

Layers = list[tuple[np.ndarray, np.ndarray]]


def _numpy_layers(layers: list[nn.Linear]) -> Layers:
    """``(Wᵀ, b)`` per layer as NumPy views of the parameters (they follow every in-place update)."""
    return [(lin.weight.detach().numpy().T, lin.bias.detach().numpy()) for lin in layers]


def _mlp(layers: Layers, x: np.ndarray, tanh: bool) -> np.ndarray:
    h = x
    for w_t, b in layers[:-1]:
        h = h @ w_t
        h += b
        if tanh:
            np.tanh(h, out=h)
        else:
            np.maximum(h, 0.0, out=h)
    w_t, b = layers[-1]
    out = h @ w_t
    out += b
    return out


def features(obs: np.ndarray, one_hot: int = 0) -> np.ndarray:
    """:class:`~core_rl.common.networks.ObsEncoder`'s output without parameters: a Discrete observation one-hot
    (``one_hot``: its size), a Box one flattened, as float32."""
    n = obs.shape[0]
    if one_hot:
        x = np.zeros((n, one_hot), dtype=np.float32)
        x[np.arange(n), obs.reshape(n).astype(np.int64)] = 1.0
        return x
    return obs.reshape(n, -1).astype(np.float32, copy=False)


def _acts_in_numpy(nets: list[nn.Module], n_rows: int) -> tuple[list[nn.Linear], str] | None:
    """The first net's ``(linears, activation)`` if every net is a parameterless-encoder MLP policy this module
    can run for ``n_rows`` rows (float32 on the CPU, at most :data:`MAX_WORK` multiply-adds per row), else None."""
    first = None
    for net in nets:
        encoder, body = getattr(net, "encoder", None), getattr(net, "net", None)
        if encoder is None or body is None or getattr(encoder, "cnn", None) is not None:
            return None
        if any(True for _ in encoder.parameters()):
            return None
        layers = mlp_layers(body)
        if layers is None:
            return None
        if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in net.parameters()):
            return None
        if n_rows * max(max(lin.in_features, lin.out_features) for lin in layers[0]) ** 2 > MAX_WORK:
            return None
        first = first or layers
    return first


class NumpyMLP:
    r"""One MLP network's forward in NumPy, :math:`f(x) = h_{L-1}W_L^\top + b_L`, on views of its weights: the
    off-policy continuous agents' exploration step (SAC's :math:`\mu, \log\sigma`, DDPG/TD3's pre-tanh action)
    for their few envs. :meth:`build` returns None where it does not apply (the same rules as :class:`NumpyActor`);
    the views stay valid while :meth:`key_of` is unchanged."""

    def __init__(self, net: nn.Module, layers: tuple[list[nn.Linear], str]):
        self.one_hot = int(getattr(net.encoder, "n", 0))
        self.layers, self.tanh = _numpy_layers(layers[0]), layers[1] == "tanh"

    @staticmethod
    def key_of(net: nn.Module) -> tuple:
        """What the views depend on: the module and every parameter's storage (a flat optimizer step moves it)."""
        return (id(net), *(p.data_ptr() for p in net.parameters()))

    @classmethod
    def build(cls, net: nn.Module, n_rows: int) -> "NumpyMLP | None":
        """The NumPy forward of ``net`` (a module with a parameterless ``encoder`` and an MLP ``net``) for batches of
        ``n_rows`` observations, or None: images, parameterised encoders, other layers, dtypes or devices, or a
        batch where a matrix product is worth its dispatch."""
        layers = _acts_in_numpy([net], n_rows)
        return None if layers is None else cls(net, layers)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """The network's output ``[N, out]`` for raw observations ``[N, ...]`` (float32)."""
        return _mlp(self.layers, features(obs, self.one_hot), self.tanh)


class NumpyActor:
    """Acting for rollouts: :meth:`act` maps preprocessed observations ``[N, ...]`` to ``(actions,
    log_probs, values)`` as NumPy arrays. :meth:`build` it once per set of weights (it reads them through
    views, valid while :meth:`key_of` is unchanged) and :meth:`start` it before every rollout (log σ, noise)."""

    def __init__(
        self,
        policy: StochasticPolicy,
        value: ValueFunction | None,
        policy_layers: tuple[list[nn.Linear], str],
        value_layers: tuple[list[nn.Linear], str] | None,
        n_envs: int,
    ):
        self.policy = policy
        self.gaussian = policy.kind == "gaussian"
        self.one_hot = policy.encoder.n  # a Discrete observation's size, else 0
        self.policy_layers, self.policy_tanh = _numpy_layers(policy_layers[0]), policy_layers[1] == "tanh"
        self.value_layers = _numpy_layers(value_layers[0]) if value_layers is not None else None
        self.value_tanh = value_layers is not None and value_layers[1] == "tanh"
        self.n_envs, self.out = n_envs, policy_layers[0][-1].out_features
        self._zeros = np.zeros(n_envs, dtype=np.float32)
        self.start()

    @staticmethod
    def key_of(policy: nn.Module, value: nn.Module | None, n_envs: int) -> tuple:
        """What the actor's views depend on: the modules, the env count and every parameter's storage (an
        optimizer that re-points ``p.data`` at a flat buffer, :class:`~core_rl.common.optim.FlatStep`, moves it)."""
        return (n_envs, *NumpyMLP.key_of(policy), *(NumpyMLP.key_of(value) if value is not None else (None,)))

    def start(self, block: int = 256, noise: torch.Tensor | None = None) -> "NumpyActor":
        """Begin a rollout: read log σ (it changes with every update) and reset the noise, drawn in blocks
        of ``block`` steps, or ``noise`` given for every step, ``[T, n_envs, d]`` (a distributed worker's share
        of the learner's draws)."""
        self.noise_shape = (block if noise is None else len(noise), self.n_envs, self.out)
        self._noise: np.ndarray | None = None if noise is None else noise.numpy()
        self._next = self.noise_shape[0] if noise is None else 0
        self._given = noise is not None
        if self.gaussian:
            log_std = self.policy.log_std.detach().numpy()
            self.std = np.exp(log_std)
            self.log_prob_offset = np.float32(-(float(log_std.sum()) + 0.5 * LOG_2PI * self.out))
        return self

    @classmethod
    def build(cls, policy: nn.Module, value: nn.Module | None, n_envs: int) -> "NumpyActor | None":
        """The NumPy actor for these networks, or None where it does not apply (see the module docstring);
        :meth:`start` it before every rollout."""
        if not isinstance(policy, StochasticPolicy) or policy.sde is not None:
            return None
        if policy.kind not in ("categorical", "gaussian"):
            return None
        if value is not None and not isinstance(value, ValueFunction):
            return None
        p_layers = _acts_in_numpy([policy] if value is None else [policy, value], n_envs)
        if p_layers is None:
            return None
        v_layers = mlp_layers(value.net) if value is not None else None
        return cls(policy, value, p_layers, v_layers, n_envs)

    def _draw(self) -> np.ndarray:
        """This step's noise ε (Gaussian) or u (categorical): from torch's generator, a block of steps at a
        time but one ``[n_envs, d]`` draw per step, so the stream is the one the torch path draws
        (``randn_like`` of the mean, ``rand_like`` of the logits, every step) and the distributed learner's."""
        if self._next == self.noise_shape[0]:
            if self._given:
                raise IndexError(f"the given noise covers {self._next} steps; the rollout asked for more")
            draw, (block, n, d) = (torch.randn if self.gaussian else torch.rand), self.noise_shape
            self._noise, self._next = torch.stack([draw(n, d) for _ in range(block)]).numpy(), 0
        noise = self._noise[self._next]  # type: ignore[index]
        self._next += 1
        return noise

    def features(self, obs: np.ndarray) -> np.ndarray:
        """The encoder's output: a Discrete observation one-hot, a Box one flattened, as float32."""
        return features(obs, self.one_hot)

    def act(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(a, log π(a|s), V(s))`` for a batch of preprocessed observations, a ~ π(·|s)."""
        x = self.features(obs)
        out = _mlp(self.policy_layers, x, self.policy_tanh)
        noise = self._draw()
        if self.gaussian:
            actions = out + self.std * noise
            log_probs = np.einsum("ij,ij->i", noise, noise)
            log_probs *= -0.5
            log_probs += self.log_prob_offset
        else:
            gumbel = -np.log(-np.log(np.clip(noise, 1e-20, 1.0)))
            actions = np.argmax(out + gumbel, axis=-1)
            top = out.max(-1, keepdims=True)
            log_norm = np.log(np.exp(out - top).sum(-1)) + top[:, 0]
            log_probs = (np.take_along_axis(out, actions[:, None], -1)[:, 0] - log_norm).astype(np.float32)
        if self.value_layers is None:
            values = self._zeros.copy()
        else:
            values = _mlp(self.value_layers, x, self.value_tanh)[:, 0]
        return actions, log_probs, values
