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
import weakref
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


def flat_grad_views(params: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One zeroed flat buffer for the gradients of ``params`` and a view of it shaped like each."""
    flat = torch.zeros(sum(p.numel() for p in params), dtype=params[0].dtype, device=params[0].device)
    views, offset = [], 0
    for p in params:
        views.append(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()
    return flat, views


def clip_flat_(flat: torch.Tensor, max_grad_norm: float | None) -> torch.Tensor | None:
    """g ← g·min(1, c/(‖g‖₂ + 10⁻⁶)) on a flat gradient buffer; the norm before, or None without a clip."""
    if max_grad_norm is None:
        return None
    norm = torch.linalg.vector_norm(flat)
    flat.mul_((max_grad_norm / (norm + 1e-6)).clamp_(max=1.0))
    return norm


#: the parameters a FlatGradStep has re-pointed at its flat buffers (by id; an entry leaves with its parameter):
#: a second optimizer over one of them must not re-point it again
_FLAT_GRAD_PARAMS: weakref.WeakValueDictionary[int, torch.Tensor] = weakref.WeakValueDictionary()


class FlatGradStep:
    r""":func:`step` for an optimizer whose parameters' gradients are views of one flat buffer: one kernel
    zeroes them all (instead of freeing and reallocating each), autograd accumulates into the views in place,
    the clip is one norm of the buffer (:func:`clip_flat_`), and :class:`FlatStep` steps the flat parameters
    and state (torch's fused Adam kernel over all of them at once for an Adam built by :func:`make_adam`).
    Without a clip the result has the bits of :func:`step` (0 + g = g; the same fused kernel), ~0.3-0.5 ms
    less per SAC gradient step (measured).

    A parameter the loss does not reach keeps a zero gradient here, where :func:`step` would leave its
    ``.grad`` None and torch's optimizer would skip it. A post-accumulate hook counts the reached parameters:
    a step that misses one is taken the torch way (the missed ``.grad`` set to None, ``optimizer.step()`` on
    the same state tensors), and every later step too.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        params: list[torch.Tensor],
        flat: torch.Tensor,
        views: list[torch.Tensor],
        flat_step: FlatStep,
    ):
        self.optimizer, self.params, self.flat, self.views, self.flat_step = optimizer, params, flat, views, flat_step
        self.reached: set[int] = set()
        self.flat_ok = True
        for i, p in enumerate(params):
            p.register_post_accumulate_grad_hook(lambda _p, i=i: self.reached.add(i))

    @classmethod
    def build(cls, optimizer: torch.optim.Optimizer) -> "FlatGradStep | None":
        """For an Adam/RMSprop of one group of float32 dense parameters on one device, none of them already
        re-pointed by another flat step; otherwise None (use :func:`step`)."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if not params or any(
            p.dtype != torch.float32 or p.device != params[0].device or p.is_sparse or not p.requires_grad
            for p in params
        ):
            return None
        if any(_FLAT_GRAD_PARAMS.get(id(p)) is p for p in params) or len({id(p) for p in params}) != len(params):
            return None
        flat, views = flat_grad_views(params)  # each step points the parameters' .grad at the views
        flat_step = FlatStep.build(optimizer, params, flat)
        if flat_step is None:
            return None
        for p in params:
            _FLAT_GRAD_PARAMS[id(p)] = p
        return cls(optimizer, params, flat, views, flat_step)

    def step(self, loss: torch.Tensor, max_grad_norm: float | None = None) -> torch.Tensor | None:
        """Zero the gradients, back-propagate ``loss``, clip, step; the norm before the clip, or None."""
        if not self.flat_ok:
            return step(self.optimizer, loss, max_grad_norm)
        self.flat.zero_()
        for p, view in zip(self.params, self.views):
            if p.grad is not view:  # freed or replaced elsewhere (optimizer.zero_grad, a checkpoint load)
                p.grad = view
        self.reached.clear()
        loss.backward()
        if len(self.reached) != len(self.params) or any(p.grad is not v for p, v in zip(self.params, self.views)):
            # a parameter the loss did not reach: torch's optimizer skips it, so this step and every later
            # one go the torch way (on the same state tensors, which FlatStep keeps as views)
            self.flat_ok = False
            for i, p in enumerate(self.params):
                if i not in self.reached:
                    p.grad = None
            return step(self.optimizer, None, max_grad_norm, [p for p in self.params if p.grad is not None])
        norm = clip_flat_(self.flat, max_grad_norm)
        self.flat_step.step()
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
