"""Running normalization of observations and rewards (what SB3 calls VecNormalize), as modules
so that their statistics live in the agent's state dict and checkpoints."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class RunningMeanStd(nn.Module):
    """Parallel-algorithm running mean and variance (Chan et al.) over batches."""

    def __init__(self, shape: tuple[int, ...] = (), clip: float = 10.0, eps: float = 1e-8):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))
        self.clip, self.eps = clip, eps

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """NumPy views of the buffers ``(mean, var, count)``: they share memory, so writing them updates
        the statistics. Cached until a buffer is replaced (``.to()``, ``load_state_dict`` copies in place):
        this runs twice per env step, where a module attribute and a ``.numpy()`` each cost about 1 µs."""
        b = self._buffers
        cached = self.__dict__.get("_arrays")
        if cached is None or cached[0] is not b["mean"] or cached[1] is not b["var"] or cached[2] is not b["count"]:
            tensors = (b["mean"], b["var"], b["count"])
            cached = self.__dict__["_arrays"] = (*tensors, *(t.numpy() for t in tensors))  # type: ignore[union-attr]
        return cached[3], cached[4], cached[5]

    def update(self, x: np.ndarray | torch.Tensor) -> None:
        # numpy views share memory with the buffers: no tensor ops in the per-step hot path
        x = np.asarray(x, dtype=np.float64)
        mean, var, count = self.arrays()
        # raw ufunc reductions and Python-float weights: np.mean/np.var's wrappers and 0-d array
        # arithmetic cost more than the arithmetic for a handful of envs (~18 -> ~9 µs per call)
        n = x.shape[0]
        if n == 1:  # one env: b_mean = x, b_var = 0 (~7 array ops instead of ~17; also the scalar statistics)
            c = float(count)
            total = c + 1.0
            delta = x[0] - mean
            var *= c / total
            var += delta * delta * (c / (total * total))
            delta *= 1.0 / total
            mean += delta
            count[...] = total
            return
        b_mean = np.add.reduce(x, 0) / n
        dev = x - b_mean
        b_var = np.add.reduce(dev * dev, 0) / n
        delta = b_mean - mean
        c = float(count)
        total = c + n
        # Chan et al.: M2 = M2_a + M2_b + δ²·n_a·n_b/(n_a + n_b)
        var *= c / total
        var += (b_var + delta * delta * (c / total)) * (n / total)
        mean += delta * (n / total)
        count[...] = total

    def normalize(self, x: np.ndarray) -> np.ndarray:
        mean, var, _ = self.arrays()
        z = (x - mean) / np.sqrt(var + self.eps)
        return np.minimum(np.maximum(z, -self.clip, out=z), self.clip, out=z).astype(np.float32)


class RewardScaler(nn.Module):
    """Divides rewards by the running std of the discounted return R ← γR + r (per env)."""

    def __init__(self, n_envs: int, gamma: float, clip: float = 10.0):
        super().__init__()
        self.stats = RunningMeanStd(())
        self.gamma, self.clip = gamma, clip
        self.ret = np.zeros(n_envs)

    def __call__(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        ret, stats = self.ret, self.stats  # in place: assigning a module's attribute costs ~2 µs
        ret *= self.gamma
        ret += rewards
        stats.update(ret)
        if dones.any():
            ret[dones] = 0.0
        r = rewards / math.sqrt(float(stats.arrays()[1]) + stats.eps)
        return np.minimum(np.maximum(r, -self.clip, out=r), self.clip, out=r)
