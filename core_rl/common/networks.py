"""Networks shared by every algorithm: MLPs and observation encoders (flat, one-hot, and the
convolutional image encoders of the Atari literature: the Nature CNN and the small IMPALA CNN)."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU}

#: how :func:`mlp` initialises its linear layers (see there)
InitName = Literal["orthogonal", "torch_default"]


def check_init(init: str) -> None:
    """One clear error for an unknown :data:`InitName` (configs validate it; direct callers get this)."""
    if init not in ("orthogonal", "torch_default"):
        raise ValueError(f"init must be 'orthogonal' or 'torch_default', got {init!r}")


def mlp(
    in_dim: int,
    out_dim: int,
    hidden_sizes: Sequence[int] = (64, 64),
    activation: str = "tanh",
    out_gain: float = 1.0,
    output_activation: type[nn.Module] | None = None,
    init: InitName = "orthogonal",
) -> nn.Sequential:
    r"""A fully connected network. ``init="orthogonal"``: orthogonal weights (hidden gain √2, output gain
    ``out_gain``), zero biases. ``init="torch_default"``: ``nn.Linear``'s own init, as SB3's DQN QNetwork
    keeps it: :math:`W_{ij}, b_i \sim \mathcal U(-1/\sqrt{n_{in}}, 1/\sqrt{n_{in}})` (Kaiming-uniform
    with a = √5); ``out_gain`` is then unused."""
    check_init(init)
    orthogonal = init == "orthogonal"
    act = ACTIVATIONS[activation]
    layers: list[nn.Module] = []
    last = in_dim
    for h in hidden_sizes:
        linear = nn.Linear(last, h)
        if orthogonal:
            nn.init.orthogonal_(linear.weight, gain=float(np.sqrt(2)))
            nn.init.zeros_(linear.bias)
        layers += [linear, act()]
        last = h
    out = nn.Linear(last, out_dim)
    if orthogonal:
        nn.init.orthogonal_(out.weight, gain=out_gain)
        nn.init.zeros_(out.bias)
    layers.append(out)
    if output_activation is not None:
        layers.append(output_activation())
    return nn.Sequential(*layers)


EncoderKind = Literal["auto", "mlp", "nature_cnn", "impala_cnn"]
ENCODERS: tuple[str, ...] = ("auto", "mlp", "nature_cnn", "impala_cnn")
#: the smallest side the Nature CNN's 8×8/4, 4×4/2, 3×3/1 convolutions accept
NATURE_CNN_MIN_SIDE = 36


def image_layout(space: gym.Space) -> tuple[int, int, int, bool] | None:
    """``(C, H, W, channels_last)`` of an image-shaped Box, else None.

    An image is a 3-D ``uint8`` Box: ``(C, H, W)`` (frame-stacked Atari, ``4×84×84``) or ``(H, W, C)``
    (a camera, ``84×84×3``); it is channels-last when its last axis is the smallest (ties: first).
    A 2-D ``uint8`` Box ``(H, W)`` is a one-channel image only when an encoder is asked for by name
    (``encoder="nature_cnn"`` or ``"impala_cnn"``), never automatically: a small ``uint8`` grid may be a board, not a picture.
    """
    if not isinstance(space, gym.spaces.Box) or space.dtype != np.uint8 or len(space.shape) != 3:
        return None
    a, b, c = (int(x) for x in space.shape)
    if c < a:
        return c, a, b, True
    return a, b, c, False


def _layout_for(space: gym.Space, kind: str) -> tuple[int, int, int, bool]:
    """The image layout of ``space`` for a CNN encoder ``kind`` asked for by name (2-D: one channel)."""
    from core_rl.common.errors import ConfigError

    layout = image_layout(space)
    if layout is not None:
        return layout
    if isinstance(space, gym.spaces.Box) and len(space.shape) in (2, 3):
        if len(space.shape) == 2:
            return 1, int(space.shape[0]), int(space.shape[1]), False
        a, b, c = (int(x) for x in space.shape)
        return (c, a, b, True) if c < a else (a, b, c, False)
    raise ConfigError(
        f"config field 'encoder': {kind} needs an image observation (a Box of shape (C,H,W), (H,W,C) or "
        f"(H,W)), but the observation space is {space}"
    )


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int, padding: int = 0, orthogonal: bool = True) -> nn.Conv2d:
    """A convolution, orthogonally initialised with gain √2 (else PyTorch's default init)."""
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding)
    if orthogonal:
        nn.init.orthogonal_(conv.weight, gain=float(np.sqrt(2)))
        nn.init.zeros_(conv.bias)
    return conv


def _linear(in_dim: int, out_dim: int) -> nn.Linear:
    linear = nn.Linear(in_dim, out_dim)
    nn.init.orthogonal_(linear.weight, gain=float(np.sqrt(2)))
    nn.init.zeros_(linear.bias)
    return linear


class NatureCNN(nn.Module):
    """The DQN paper's encoder (Mnih et al. 2015): conv 32·8×8/4 → conv 64·4×4/2 → conv 64·3×3/1 →
    linear ``features_dim`` (512), ReLU after each; ``[B, C, H, W]`` floats → ``[B, features_dim]``."""

    def __init__(self, channels: int, height: int, width: int, features_dim: int = 512):
        super().__init__()
        if min(height, width) < NATURE_CNN_MIN_SIDE:
            from core_rl.common.errors import ConfigError

            raise ConfigError(
                f"config field 'encoder': nature_cnn needs images of at least {NATURE_CNN_MIN_SIDE}×"
                f"{NATURE_CNN_MIN_SIDE} pixels, got {height}×{width} (use encoder='impala_cnn')"
            )
        self.convs = nn.Sequential(
            _conv(channels, 32, 8, 4), nn.ReLU(), _conv(32, 64, 4, 2), nn.ReLU(), _conv(64, 64, 3, 1), nn.ReLU()
        )
        with torch.no_grad():
            flat = int(self.convs(torch.zeros(1, channels, height, width)).numel())
        self.fc = nn.Sequential(_linear(flat, features_dim), nn.ReLU())
        self.dim = features_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(x).flatten(1))


class _ResidualBlock(nn.Module):
    """x + conv(relu(conv(relu(x)))), 3×3 convolutions keeping the channels."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv0 = _conv(channels, channels, 3, 1, 1, orthogonal=False)
        self.conv1 = _conv(channels, channels, 3, 1, 1, orthogonal=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class ImpalaCNN(nn.Module):
    """The IMPALA paper's residual encoder (Espeholt et al. 2018), small: for each of ``channels``
    (16, 32, 32) a stage conv 3×3 → max-pool 3×3/2 → two residual blocks; then ReLU → linear
    ``features_dim`` (256) → ReLU. Each stage halves the side (rounding up), so any image ≥ 1 px fits.
    PyTorch's default init, as the IMPALA CNNs of CleanRL and Procgen use: an orthogonal √2 init
    grows the activations through the six residual blocks (feature scale ≈ 25× the Nature CNN's)."""

    def __init__(
        self,
        channels: int,
        height: int,
        width: int,
        stage_channels: Sequence[int] = (16, 32, 32),
        features_dim: int = 256,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        last = channels
        for ch in stage_channels:
            layers += [
                _conv(last, ch, 3, 1, 1, orthogonal=False),
                nn.MaxPool2d(3, 2, padding=1),
                _ResidualBlock(ch),
                _ResidualBlock(ch),
            ]
            last = ch
        self.stages = nn.Sequential(*layers, nn.ReLU())
        with torch.no_grad():
            flat = int(self.stages(torch.zeros(1, channels, height, width)).numel())
        self.fc = nn.Sequential(nn.Linear(flat, features_dim), nn.ReLU())
        self.dim = features_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stages(x).flatten(1))


def resolve_encoder(space: gym.Space, kind: str = "auto") -> str:
    """The encoder ``kind`` stands for on ``space``: ``auto`` is ``nature_cnn`` for images at least
    36 px a side, ``impala_cnn`` for smaller images (:func:`image_layout`) and ``mlp`` otherwise."""
    if kind not in ENCODERS:
        from core_rl.common.errors import ConfigError

        raise ConfigError(f"config field 'encoder': unknown encoder {kind!r} (one of {', '.join(ENCODERS)})")
    if kind != "auto":
        return kind
    layout = image_layout(space)
    if layout is None:
        return "mlp"
    return "nature_cnn" if min(layout[1], layout[2]) >= NATURE_CNN_MIN_SIDE else "impala_cnn"


#: the smallest batch a bf16 ``compute_dtype`` encodes in bf16 when a gradient is wanted (the CNN under autocast,
#: which casts the float32 weights at every forward): below it casting the weights costs more than the
#: convolutions save (Nature CNN, one thread, AVX512-BF16: batch 1 0.82 ms in bf16 against 0.61 in float32;
#: batch 8 1.79 against 2.43; batch 32 4.74 against 8.31)
BF16_MIN_BATCH = 8

#: the same inside :func:`weights_fixed` without a gradient (a rollout's acting steps), where the weights come
#: from a bf16 copy cast once for the whole scope: batch 1 0.48 ms against 0.51 in float32 (a tie: stays
#: float32), batch 2 0.56 against 0.88, batch 8 1.12–1.29 against 1.76–1.84 under autocast and 2.52 in float32
BF16_NO_GRAD_MIN_BATCH = 2


#: an encoder's :func:`weights_fixed` bookkeeping, kept in its ``__dict__`` outside the module registry (not state):
#: the scopes open on it, the cast copy ``(key, module)``, and whether that copy holds the current scope's weights
_OPEN, _CACHE, _FRESH = "_fixed", "_cast_cache", "_cast_fresh"


@contextmanager
def weights_fixed(*modules: nn.Module) -> Iterator[None]:
    """A scope in which the caller promises that no weight of ``modules`` changes (an on-policy rollout, an
    evaluation): their bf16 encoders (``compute_dtype``) cast the CNN's weights once, at the scope's first
    forward without a gradient, where autocast would cast them at every forward. The copy is marked stale on
    exit (and written again at the next scope's first forward), so nothing outside the scope reads it."""
    encoders = [
        m
        for module in modules
        for m in module.modules()
        if isinstance(m, ObsEncoder) and m.cnn is not None and m.compute_dtype is not torch.float32
    ]
    encoders = list({id(m): m for m in encoders}.values())  # a shared encoder once
    for encoder in encoders:
        encoder.__dict__[_OPEN] = encoder.__dict__.get(_OPEN, 0) + 1
    try:
        yield
    finally:
        for encoder in encoders:
            encoder.__dict__[_OPEN] -= 1
            if not encoder.__dict__[_OPEN]:
                encoder.__dict__[_FRESH] = False


class ObsEncoder(nn.Module):
    """Observations as float feature vectors ``[B, dim]``: a Discrete one one-hot, a Box flattened
    (``mlp``), or an image through a convolutional encoder (``nature_cnn``, ``impala_cnn``; ``auto``
    picks one for image-shaped ``uint8`` Boxes, see :func:`resolve_encoder`).

    Images stay ``uint8`` until here — in the env, the replay buffer and the rollout — and are scaled
    by 1/255 inside the network (only when the space is ``uint8``); channels-last images are permuted
    to ``[B, C, H, W]`` and 2-D ones get a channel axis.
    """

    def __init__(self, space: gym.Space, kind: str = "auto"):
        super().__init__()
        self.kind = resolve_encoder(space, kind)
        self.n = 0
        self.cnn: nn.Module | None = None
        #: the CNN's compute dtype (not state: the agent sets it from ``encoder_dtype``); float32 features out
        self.compute_dtype = torch.float32
        if isinstance(space, gym.spaces.Discrete):
            if self.kind != "mlp":
                from core_rl.common.errors import ConfigError

                raise ConfigError(f"config field 'encoder': {self.kind} needs an image observation, got {space}")
            self.n = int(space.n)
            self.dim = self.n
        elif isinstance(space, gym.spaces.Box):
            self.dim = int(np.prod(space.shape))
            if self.kind != "mlp":
                c, h, w, self.channels_last = _layout_for(space, self.kind)
                self.image_shape = (c, h, w)
                self.scale = 1.0 / 255.0 if space.dtype == np.uint8 else 1.0
                self.cnn = NatureCNN(c, h, w) if self.kind == "nature_cnn" else ImpalaCNN(c, h, w)
                self.cnn.to(memory_format=torch.channels_last)  # conv weights NHWC, as the input in forward
                self.dim = int(self.cnn.dim)
        else:
            from core_rl.common.errors import SpaceError

            raise SpaceError(f"observation space {space} is not supported (Box or Discrete expected)")

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.n:
            return nn.functional.one_hot(obs.long().reshape(-1), self.n).float()
        if self.cnn is None:
            return obs.reshape(obs.shape[0], -1).float()
        x = obs.movedim(-1, -3) if self.channels_last else obs
        # NHWC in memory (torch.channels_last; the layout the CPU's oneDNN convolutions are fastest in, ~1.25×
        # on a Nature-CNN update), laid out while still uint8; the float conversion and scaling keep it
        x = x.reshape(-1, *self.image_shape).contiguous(memory_format=torch.channels_last)
        if self.compute_dtype is not torch.float32:
            cast = (
                self.__dict__.get(_OPEN, 0) > 0 and not torch.is_grad_enabled() and x.shape[0] >= BF16_NO_GRAD_MIN_BATCH
            )
            if cast or x.shape[0] >= BF16_MIN_BATCH:
                # encoder_dtype: the pixels straight to bf16 (uint8 values are exact in it) and scaled there, half
                # the memory traffic of a float32 copy; float32 features out
                x = x.to(self.compute_dtype, copy=True)  # a copy of its own: scaled in place
                if self.scale != 1.0:
                    x.mul_(self.scale)
                if cast:  # no gradient: the bf16 copy of the weights, the same numbers autocast computes
                    return self._cast_cnn()(x).float()
                with torch.autocast(x.device.type, dtype=self.compute_dtype):  # the gradient reaches the weights
                    return self.cnn(x).float()
        x = x.float()
        if self.scale != 1.0:
            x = x * self.scale
        return self.cnn(x)

    def __getstate__(self) -> dict[str, object]:
        """A copy (deep copy, pickle) carries none of a :func:`weights_fixed` scope's state: one made inside a scope
        would otherwise stay "fixed" for good, and serve its cast weights after they changed."""
        state = super().__getstate__()
        for key in (_OPEN, _CACHE, _FRESH):
            state.pop(key, None)
        return state

    def _cast_cnn(self) -> nn.Module:
        """The CNN with its weights in ``compute_dtype``, written at the first forward of a :func:`weights_fixed`
        scope (made once per device and dtype, then refreshed in place). Kept outside the module's registry: not a
        parameter, not in the state dict."""
        key = (next(self.cnn.parameters()).device, self.compute_dtype)
        cached = self.__dict__.get(_CACHE)  # (key, module)
        if cached is not None and cached[0] == key and self.__dict__.get(_FRESH, False):
            return cached[1]
        with torch.inference_mode(False), torch.no_grad():  # normal tensors even when called under inference_mode
            if cached is None or cached[0] != key:
                module = copy.deepcopy(self.cnn).requires_grad_(False)
                for param in module.parameters():
                    param.grad = None
                cached = (key, module.to(self.compute_dtype))
            else:
                for copied, weight in zip(cached[1].state_dict().values(), self.cnn.state_dict().values()):
                    copied.copy_(weight)
        self.__dict__[_CACHE], self.__dict__[_FRESH] = cached, True
        return cached[1]
