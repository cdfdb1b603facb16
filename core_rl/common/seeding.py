"""Seeding: the same seed gives the same numbers."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def set_seed(seed: int) -> np.random.Generator:
    """Seed python, numpy and torch; return a numpy Generator derived from ``seed``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def configure_torch(threads: int) -> None:
    """Small networks run fastest single-threaded; ``threads=0`` keeps torch's default."""
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@contextmanager
def preserve_rng() -> Iterator[None]:
    """Leave python's, numpy's and torch's global RNG states as they were before the block."""
    py, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
