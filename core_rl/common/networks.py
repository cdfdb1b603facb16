"""Networks shared by every algorithm: MLPs, observation encoders, policy heads."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU}


def mlp(
    in_dim: int,
    out_dim: int,
    hidden_sizes: Sequence[int] = (64, 64),
    activation: str = "tanh",
    out_gain: float = 1.0,
    output_activation: type[nn.Module] | None = None,
) -> nn.Sequential:
    """A fully connected network with orthogonal init (hidden gain √2, output gain ``out_gain``)."""
    act = ACTIVATIONS[activation]
    layers: list[nn.Module] = []
    last = in_dim
    for h in hidden_sizes:
        linear = nn.Linear(last, h)
        nn.init.orthogonal_(linear.weight, gain=float(np.sqrt(2)))
        nn.init.zeros_(linear.bias)
        layers += [linear, act()]
        last = h
    out = nn.Linear(last, out_dim)
    nn.init.orthogonal_(out.weight, gain=out_gain)
    nn.init.zeros_(out.bias)
    layers.append(out)
    if output_activation is not None:
        layers.append(output_activation())
    return nn.Sequential(*layers)


class ObsEncoder(nn.Module):
    """Flattens Box observations and one-hot encodes Discrete ones, as float tensors."""

    def __init__(self, space: gym.Space):
        super().__init__()
        if isinstance(space, gym.spaces.Discrete):
            self.n = int(space.n)
            self.dim = self.n
        elif isinstance(space, gym.spaces.Box):
            self.n = 0
            self.dim = int(np.prod(space.shape))
        else:
            from core_rl.common.errors import SpaceError

            raise SpaceError(f"observation space {space} is not supported (Box or Discrete expected)")

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.n:
            return nn.functional.one_hot(obs.long().reshape(-1), self.n).float()
        return obs.reshape(obs.shape[0], -1).float()
