r"""Analytic gradients of an actor-critic loss through the policy and value MLPs: the PPO / A2C update
without an autograd graph.

On the suite's 64-wide MLPs a minibatch update is bound by per-op overhead, and autograd's backward
(an engine node per forward op, about twice the forward's kernels) is most of it: at 64 samples per
minibatch, Pendulum's PPO spent ~480 of its ~680 µs of forward + backward in the backward pass.
For the networks of :class:`~core_rl.common.distributions.StochasticPolicy` and
:class:`~core_rl.common.distributions.ValueFunction` with a flat encoder (no parameters), tanh or
ReLU hidden layers and a categorical or diagonal-Gaussian head, the chain rule is short enough to
write out. An MLP is

.. math:: h_0 = x,\qquad h_l = f(h_{l-1}W_l^\top + b_l)\ (l < L),\qquad y = h_{L-1}W_L^\top + b_L,

and from :math:`g_L = \partial\mathcal L/\partial y` (one row per sample)

.. math::
    \frac{\partial\mathcal L}{\partial W_l} = g_l^\top h_{l-1},\qquad
    \frac{\partial\mathcal L}{\partial b_l} = \textstyle\sum_i g_{l,i},\qquad
    g_{l-1} = (g_l W_l)\odot f'(h_{l-1}),

with :math:`f' = 1 - h^2` (tanh) or :math:`[h > 0]` (ReLU), both read off the layer's output; tanh itself
is computed as :math:`2\sigma(2x) - 1` (within 2·10⁻⁷ of ``torch.tanh``, ~3× faster on the CPU at 256×64). The heads
(logits ℓ with p = softmax ℓ; Gaussian mean μ, log σ = s, z = (a − μ)/σ):

.. math::
    \text{categorical: } \frac{\partial\log\pi(a|s)}{\partial\ell} = e_a - p,\quad
    \frac{\partial H}{\partial\ell} = -p\odot(\log p + H);\qquad
    \text{Gaussian: } \frac{\partial\log\pi}{\partial\mu} = \frac{z}{\sigma},\quad
    \frac{\partial\log\pi}{\partial s} = z^2 - 1,\quad \frac{\partial H}{\partial s} = 1.

A loss :math:`\mathcal L(\log\pi(a_i|s_i), \bar H, V(s_i))` hands in its partial derivatives
:math:`g^\pi_i = \partial\mathcal L/\partial\log\pi(a_i|s_i)`, :math:`c_H = \partial\mathcal L/\partial\bar H`
(:math:`\bar H` the batch-mean entropy) and :math:`g^V_i = \partial\mathcal L/\partial V(s_i)`
(:meth:`FusedActorCritic.backward`; PPO's and A2C's are in their modules). The gradients land in one flat
buffer that every parameter's ``.grad`` views, so the global-norm clip
:math:`g \leftarrow g\min(1, c/(\|g\|_2 + 10^{-6}))` is a handful of ops, and Adam's or RMSprop's step
runs on flat parameters and state (:class:`~core_rl.common.optim.FlatStep`; :meth:`FusedActorCritic.step`).
The result equals autograd's to float rounding (``tests/test_fused_actor_critic.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from core_rl.common.distributions import Distribution, StochasticPolicy, ValueFunction
from core_rl.common.optim import FlatStep, clip_flat_, flat_grad_views  # noqa: F401 (re-exported)

LOG_2PI = math.log(2 * math.pi)
_ACTIVATIONS: dict[type[nn.Module], str] = {nn.Tanh: "tanh", nn.ReLU: "relu"}


def mlp_layers(net: nn.Module) -> tuple[list[nn.Linear], str] | None:
    """``(linears, activation)`` of a ``Linear, act, Linear, …, Linear`` Sequential, else None."""
    if not isinstance(net, nn.Sequential):
        return None
    mods = list(net)
    linears, acts = mods[0::2], mods[1::2]
    if len(mods) % 2 != 1 or not all(type(m) is nn.Linear and m.bias is not None for m in linears):
        return None
    kinds = {_ACTIVATIONS.get(type(a)) for a in acts}
    if None in kinds or len(kinds) > 1:
        return None
    return linears, (kinds.pop() if kinds else "tanh")


def mlp_forward(
    layers: list[nn.Linear], x: torch.Tensor, tanh: bool, fast_tanh: bool = False
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The MLP's output and its layers' outputs ``[x, h_1, …]`` (tanh or ReLU hidden layers). Without
    ``fast_tanh`` the same bits as the modules (the same ``F.linear``); with it, a batch of at least
    4096 hidden values takes tanh x = 2σ(2x) − 1 (torch's CPU sigmoid kernel is ~3× faster than its tanh)."""
    hs = [x]
    h = x
    for lin in layers[:-1]:
        h = nn.functional.linear(h, lin.weight, lin.bias)  # addmm(b, h, Wᵀ) without a Python-level transpose
        if tanh and fast_tanh and h.numel() >= 4096:
            h = torch.sigmoid(h.mul_(2.0), out=h).mul_(2.0).sub_(1.0)
        elif tanh:  # a few rows: one kernel beats four
            h = h.tanh_()
        else:
            h = h.relu_()
        hs.append(h)
    last = layers[-1]
    return nn.functional.linear(h, last.weight, last.bias), hs


def mlp_backward(
    layers: list[nn.Linear],
    hs: list[torch.Tensor],
    grads: list[tuple[torch.Tensor, torch.Tensor]],
    g: torch.Tensor,
    tanh: bool,
) -> None:
    """From g = ∂L/∂y, write ∂L/∂W_l and ∂L/∂b_l into ``grads`` (``(weight, bias)`` per layer), overwriting."""
    for layer in range(len(layers) - 1, -1, -1):
        h_in = hs[layer]
        grad_w, grad_b = grads[layer]
        torch.mm(g.t(), h_in, out=grad_w)
        torch.sum(g, 0, out=grad_b)
        if layer > 0:
            g = torch.mm(g, layers[layer].weight)  # ⊙ f'(h): (1 − h²) or [h > 0], one kernel each
            g = torch.ops.aten.tanh_backward(g, h_in) if tanh else torch.ops.aten.threshold_backward(g, h_in, 0.0)


@dataclass
class FusedForward:
    """What one forward pass keeps for its backward: per-sample ``log_prob`` [B], the batch-mean
    ``entropy`` (a 0-d tensor), ``value`` [B], and the layers' outputs and head quantities."""

    log_prob: torch.Tensor
    entropy: torch.Tensor
    value: torch.Tensor
    actions: torch.Tensor
    policy_h: list[torch.Tensor]
    value_h: list[torch.Tensor]
    #: categorical: normalized log-probabilities log p [B, n], probabilities p, per-sample entropy H [B];
    #: Gaussian: z = (a − μ)/σ [B, d] and 1/σ [d]
    head: tuple[torch.Tensor, ...]


class FusedActorCritic:
    """Forward and analytic backward of a policy and a value MLP, the gradients in one flat buffer.

    Build it with :meth:`build` (None when the networks or the optimizer do not fit, see the module
    docstring); :meth:`forward`, then :meth:`backward` with the loss's partial derivatives, then
    :meth:`step` (clip and optimizer step). Everything runs without autograd."""

    def __init__(
        self,
        policy: StochasticPolicy,
        value: ValueFunction,
        optimizer: torch.optim.Optimizer,
        policy_layers: list[nn.Linear],
        value_layers: list[nn.Linear],
        activation: str,
    ):
        self.policy, self.value, self.optimizer = policy, value, optimizer
        self.policy_layers, self.value_layers = policy_layers, value_layers
        self.tanh = activation == "tanh"
        self.gaussian = policy.kind == "gaussian"
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.flat, self.grads = flat_grad_views(self.params)
        index = {id(p): i for i, p in enumerate(self.params)}
        grad_of = lambda p: self.grads[index[id(p)]]  # noqa: E731
        self.policy_grads = [(grad_of(lin.weight), grad_of(lin.bias)) for lin in policy_layers]
        self.value_grads = [(grad_of(lin.weight), grad_of(lin.bias)) for lin in value_layers]
        self.log_std_grad = grad_of(policy.log_std).view(1, -1) if self.gaussian else None
        self.flat_step = FlatStep.build(optimizer, self.params, self.flat)

    @classmethod
    def build(
        cls, policy: nn.Module, value: nn.Module | None, optimizer: torch.optim.Optimizer
    ) -> "FusedActorCritic | None":
        """The fused update for these networks and optimizer, or None where it does not apply: a policy
        other than a :class:`StochasticPolicy` with a categorical or (non-gSDE) Gaussian head, an image
        or other parameterised encoder, activations other than tanh/ReLU, float64 or mixed dtypes, or an
        optimizer whose parameters are not exactly the two networks'."""
        if not isinstance(policy, StochasticPolicy) or not isinstance(value, ValueFunction):
            return None
        if policy.sde is not None or policy.kind not in ("categorical", "gaussian"):
            return None
        if any(True for _ in policy.encoder.parameters()) or any(True for _ in value.encoder.parameters()):
            return None
        p_layers, v_layers = mlp_layers(policy.net), mlp_layers(value.net)
        if p_layers is None or v_layers is None or p_layers[1] != v_layers[1]:
            return None
        params = [p for group in optimizer.param_groups for p in group["params"]]
        own = list(policy.parameters()) + list(value.parameters())
        if len(params) != len(own) or {id(p) for p in params} != {id(p) for p in own}:
            return None
        if any(p.dtype != torch.float32 or p.device != params[0].device for p in params):
            return None
        return cls(policy, value, optimizer, p_layers[0], v_layers[0], p_layers[1])

    def matches(self, policy: nn.Module, value: nn.Module | None, optimizer: torch.optim.Optimizer) -> bool:
        """Whether this was built for these very modules and optimizer."""
        return self.policy is policy and self.value is value and self.optimizer is optimizer

    # ---- forward -----------------------------------------------------------------------------
    def _mlp(
        self, layers: list[nn.Linear], x: torch.Tensor, fast_tanh: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return mlp_forward(layers, x, self.tanh, fast_tanh)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> tuple[Distribution, torch.Tensor]:
        """π(·|s) and V(s) for acting: the two MLPs without the module-call overhead of ``nn.Module``."""
        out, _ = self._mlp(self.policy_layers, self.policy.encoder(obs))
        value, _ = self._mlp(self.value_layers, self.value.encoder(obs))
        return self.policy.head(out), value.squeeze(-1)

    @torch.no_grad()
    def values(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s) (bootstrap values), without the module-call overhead."""
        return self._mlp(self.value_layers, self.value.encoder(obs))[0].squeeze(-1)

    @torch.no_grad()
    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> FusedForward:
        """log π(a|s), the mean entropy and V(s) of a minibatch, keeping what :meth:`backward` needs."""
        out, policy_h = self._mlp(self.policy_layers, self.policy.encoder(obs), fast_tanh=True)
        value, value_h = self._mlp(self.value_layers, self.value.encoder(obs), fast_tanh=True)
        if self.gaussian:
            log_std = self.policy.log_std
            inv_std = torch.exp(-log_std)
            z = (actions - out).mul_(inv_std)
            log_prob = z.square().sum(-1).mul_(-0.5).sub_(log_std.sum() + 0.5 * LOG_2PI * log_std.numel())
            entropy = log_std.sum() + 0.5 * (1.0 + LOG_2PI) * log_std.numel()
            head: tuple[torch.Tensor, ...] = (z, inv_std)
        else:
            log_p = torch.log_softmax(out, -1)
            actions = actions.long().unsqueeze(-1)
            log_prob = log_p.gather(-1, actions).squeeze(-1)
            p = log_p.exp()
            h = (p * log_p).sum(-1).neg_()
            entropy = h.mean()
            head = (log_p, p, h)
        return FusedForward(log_prob, entropy, value.squeeze(-1), actions, policy_h, value_h, head)

    # ---- backward ----------------------------------------------------------------------------
    def _mlp_backward(
        self,
        layers: list[nn.Linear],
        hs: list[torch.Tensor],
        grads: list[tuple[torch.Tensor, torch.Tensor]],
        g: torch.Tensor,
    ) -> None:
        mlp_backward(layers, hs, grads, g, self.tanh)

    @torch.no_grad()
    def backward(self, fwd: FusedForward, g_log_prob: torch.Tensor, c_entropy: float, g_value: torch.Tensor) -> None:
        """Write ∂L/∂θ and ∂L/∂φ into the parameters' gradients (overwriting them), from
        ``g_log_prob`` = ∂L/∂log π(a_i|s_i) [B], ``c_entropy`` = ∂L/∂H̄ and ``g_value`` = ∂L/∂V(s_i) [B]."""
        if self.gaussian:
            z, inv_std = fwd.head
            g_out = (g_log_prob.unsqueeze(-1) * z).mul_(inv_std)  # ∂L/∂μ = g^π z/σ
            # ∂L/∂s = Σ_i g^π_i (z_i² − 1) + c_H
            torch.mm(g_log_prob.unsqueeze(0), z.square().sub_(1.0), out=self.log_std_grad)
            if c_entropy:
                self.log_std_grad.add_(c_entropy)
        else:
            log_p, p, h = fwd.head
            n = g_log_prob.shape[0]
            if c_entropy:  # ∂L/∂ℓ = g^π (e_a − p) − (c_H/B) p (log p + H)
                g_out = (log_p + h.unsqueeze(-1)).mul_(c_entropy / n).add_(g_log_prob.unsqueeze(-1)).mul_(p).neg_()
            else:
                g_out = p * g_log_prob.unsqueeze(-1).neg()
            g_out.scatter_add_(-1, fwd.actions, g_log_prob.unsqueeze(-1))
        self._mlp_backward(self.policy_layers, fwd.policy_h, self.policy_grads, g_out)
        self._mlp_backward(self.value_layers, fwd.value_h, self.value_grads, g_value.unsqueeze(-1))

    @torch.no_grad()
    def step(self, max_grad_norm: float | None) -> torch.Tensor | None:
        """Clip the gradients to global norm ``max_grad_norm`` (if given) and step the optimizer; the
        norm before the clip (a tensor), or None without a clip."""
        for p, grad in zip(self.params, self.grads):
            if p.grad is not grad:  # e.g. an autograd step with zero_grad(set_to_none=True) in between
                p.grad = grad
        norm = clip_flat_(self.flat, max_grad_norm)
        if self.flat_step is not None:
            self.flat_step.step()
        else:
            self.optimizer.step()
        return norm
