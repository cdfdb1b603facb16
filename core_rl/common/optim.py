r"""The optimizer pieces every algorithm shares: the optimizer choice, the gradient-norm clip and the step.

On the small networks of this suite an update is dominated by per-op overhead, not arithmetic:
``torch.optim.Adam(fused=True)`` updates all parameters in one kernel (~200 µs → ~55 µs per step for
a 2×256 MLP on the CPU, measured), and :func:`clip_grad_norm` is the global-norm clip

.. math:: g \leftarrow g \cdot \min\Big(1, \frac{c}{\|g\|_2 + 10^{-6}}\Big),\qquad \|g\|_2 = \big\|(\|g_i\|_2)_i\big\|_2,

on torch's foreach kernels with no host synchronisation (the norm stays a tensor; the scale is
clamped rather than branched on). :func:`step` is the one gradient step of the suite,

.. math:: \theta \leftarrow \mathrm{opt}\big(\theta, \operatorname{clip}_c(\nabla_\theta L)\big),

used by the on- and off-policy bases and every trainer that clips and steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal

import torch

from core_rl.common.errors import ConfigError

OptimizerName = Literal["adam", "rmsprop", "sgd"]


def make_adam(params: Iterable[torch.Tensor], lr: float, eps: float = 1e-8) -> torch.optim.Adam:
    """Adam with the fused kernel where torch has one for the parameters' device and dtype."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device/dtype
        return torch.optim.Adam(params, lr=lr, eps=eps, foreach=True)


def make_optimizer(
    name: OptimizerName,
    params: Iterable[torch.Tensor],
    lr: float,
    *,
    adam_eps: float = 1e-8,
    rms_alpha: float = 0.95,
    rms_eps: float = 1e-2,
) -> torch.optim.Optimizer:
    """The optimizer a config names: ``"adam"`` (fused, :func:`make_adam`), ``"rmsprop"`` (the DQN-paper
    smoothing α and ε by default) or plain ``"sgd"`` θ ← θ − α∇L."""
    if name == "adam":
        return make_adam(params, lr=lr, eps=adam_eps)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=rms_alpha, eps=rms_eps, foreach=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, foreach=True)
    raise ConfigError(f"optimizer must be one of 'adam', 'rmsprop', 'sgd', got {name!r}")


def clip_grad_norm(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale the gradients of ``params`` to global L2 norm at most ``max_norm``; returns the norm before.

    ``torch.nn.utils.clip_grad_norm_`` on the foreach kernels: with ``error_if_nonfinite=False`` it
    never reads the norm back to the host, so a step on an accelerator does not synchronise.
    """
    return torch.nn.utils.clip_grad_norm_(list(params), max_norm, foreach=True)


def step(
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor | None,
    max_grad_norm: float | None = None,
    params: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor | None:
    """One gradient step: clear the gradients, back-propagate ``loss``, clip, step; returns the norm before
    the clip (a tensor, read it once per update), or None without a clip.

    ``loss=None``: the gradients are already in ``.grad`` (e.g. a closed-form policy gradient assigned
    with ``assign_flat_grad``), so only the clip and the step remain. ``params`` are the clipped
    parameters, all of the optimizer's by default.
    """
    if loss is not None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
    norm = None
    if max_grad_norm is not None:
        if params is None:
            params = [p for g in optimizer.param_groups for p in g["params"]]
        norm = clip_grad_norm(params, max_grad_norm)
    optimizer.step()
    return norm


class FlatStep:
    r"""Adam's or RMSprop's step on one flat buffer: the parameters, their gradients and the optimizer's
    state become views of four flat tensors, and the update is a few kernels on all of them at once
    instead of ``torch.optim``'s per-step Python (~55 µs for Adam, ~115 µs for foreach RMSprop over the
    dozen tensors of two small MLPs; this is ~10 µs). An Adam built with ``fused=True`` takes torch's fused
    kernel itself on the flat buffers (``torch._fused_adam_``, the same bits as ``optimizer.step()``); otherwise
    the same arithmetic as torch's:

    .. math::
        \text{Adam: } m \leftarrow \beta_1 m + (1-\beta_1) g,\quad v \leftarrow \beta_2 v + (1-\beta_2) g^2,\quad
        \theta \leftarrow \theta - \frac{\alpha}{1-\beta_1^t}\,\frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon};\qquad
        \text{RMSprop: } s \leftarrow \alpha_s s + (1-\alpha_s) g^2,\quad \theta \leftarrow \theta - \alpha\frac{g}{\sqrt s + \epsilon}.

    The parameters stay the same ``Parameter`` objects (``p.data`` is re-pointed at a view) and the state
    stays in ``optimizer.state`` under torch's keys, so modules, ``state_dict``s and checkpoints are
    unchanged, and ``optimizer.step()`` still works on the same state. Built by :meth:`build` only for one
    param group of float32 tensors on one device, no weight decay, AMSGrad, momentum, centering or maximize.
    """

    _STATE = {torch.optim.Adam: ("exp_avg", "exp_avg_sq"), torch.optim.RMSprop: ("square_avg",)}

    def __init__(self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor], flat_grad: torch.Tensor):
        self.optimizer, self.params, self.grad = optimizer, params, flat_grad
        self.group = optimizer.param_groups[0]
        self.adam = isinstance(optimizer, torch.optim.Adam)
        #: Adam built with ``fused=True`` (:func:`make_adam`) steps by torch's fused kernel: one kernel over the
        #: flat buffers, the bits of ``optimizer.step()`` (~3.4× faster than the five kernels below at 67k
        #: parameters, measured)
        self.fused_kernel = self.adam and bool(self.group.get("fused"))
        self.names = self._STATE[type(optimizer)]
        self.param = torch.cat([p.detach().reshape(-1) for p in params])
        self.buffers = {name: torch.zeros_like(self.param) for name in self.names}
        self.steps = torch.zeros(len(params), dtype=torch.float32, device=self.param.device)
        self.param_views = self._views(self.param)
        for p, view in zip(params, self.param_views):
            p.data = view
        self.state_views = {name: self._views(buf) for name, buf in self.buffers.items()}
        self._adopt_state()

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        out, offset = [], 0
        for p in self.params:
            out.append(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        return out

    def _adopt_state(self) -> None:
        """Copy any existing state (a restored checkpoint, earlier ``optimizer.step()`` calls) into the flat
        buffers and put their views in its place."""
        state = self.optimizer.state
        for i, p in enumerate(self.params):
            s = state[p]
            for name in self.names:
                if name in s:
                    self.state_views[name][i].copy_(s[name])
                s[name] = self.state_views[name][i]
            self.steps[i] = float(s["step"]) if "step" in s else 0.0
            s["step"] = self.steps[i]

    def _owns_state(self) -> bool:
        state = self.optimizer.state
        return all(
            state[p].get(name) is views[i]
            for name, views in self.state_views.items()
            for i, p in enumerate(self.params)
        )

    @classmethod
    def build(
        cls, optimizer: torch.optim.Optimizer, params: list[torch.Tensor], flat_grad: torch.Tensor
    ) -> "FlatStep | None":
        """The flat step for ``optimizer`` over exactly ``params`` (whose ``.grad`` view ``flat_grad``), or None."""
        if type(optimizer) not in cls._STATE or len(optimizer.param_groups) != 1:
            return None
        g = optimizer.param_groups[0]
        if any(g.get(k) for k in ("weight_decay", "amsgrad", "maximize", "momentum", "centered", "capturable")):
            return None
        if any(g.get(k) for k in ("differentiable", "decoupled_weight_decay")) or isinstance(g["lr"], torch.Tensor):
            return None
        if len(g["params"]) != len(params) or any(a is not b for a, b in zip(g["params"], params)):
            return None
        return cls(optimizer, params, flat_grad)

    @torch.no_grad()
    def step(self) -> None:
        if not self._owns_state() or any(
            p.data.data_ptr() != v.data_ptr() for p, v in zip(self.params, self.param_views)
        ):
            self._reattach()
        g, group = self.grad, self.group
        self.steps.add_(1.0)
        if self.fused_kernel:  # torch's own fused Adam kernel (the optimizer's fused=True) on the flat buffers
            beta1, beta2 = group["betas"]
            m, v = self.buffers["exp_avg"], self.buffers["exp_avg_sq"]
            torch._fused_adam_(
                [self.param],
                [g],
                [m],
                [v],
                [],
                [self.steps[0]],
                amsgrad=False,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=0.0,
                eps=group["eps"],
                maximize=False,
                grad_scale=None,
                found_inf=None,
            )
        elif self.adam:
            beta1, beta2 = group["betas"]
            t = float(self.steps[0])
            m, v = self.buffers["exp_avg"], self.buffers["exp_avg_sq"]
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(group["eps"])
            self.param.addcdiv_(m, denom, value=-group["lr"] / (1 - beta1**t))
        else:
            alpha = group["alpha"]
            s = self.buffers["square_avg"]
            s.mul_(alpha).addcmul_(g, g, value=1 - alpha)
            self.param.addcdiv_(g, s.sqrt().add_(group["eps"]), value=-group["lr"])

    def _reattach(self) -> None:
        """The parameters or the state were replaced (``load_state_dict``, a module's ``.to``): flatten again."""
        for view, p in zip(self.param_views, self.params):
            view.copy_(p.detach())
            p.data = view
        self._adopt_state()


def l2_penalty(module: torch.nn.Module, coef: float) -> torch.Tensor | float:
    """c·Σ_φ ‖φ‖² over ``module``'s parameters (0.0, no graph, when c = 0)."""
    if coef == 0.0:
        return 0.0
    return coef * sum(p.pow(2).sum() for p in module.parameters())
