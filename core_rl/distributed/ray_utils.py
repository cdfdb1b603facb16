"""Ray, imported lazily: local runs never need it.

``init_ray(address)`` connects to a cluster when an address is given (argument, or the
``RAY_ADDRESS`` environment variable, Ray's own convention) and otherwise starts a private local
Ray instance. Without the ``ray`` package every entry point raises :class:`RayMissingError`, which
names the extra to install.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from core_rl.common.errors import DeepRLError


class RayMissingError(DeepRLError, ImportError):
    """Ray is needed (``backend='ray'``) but not installed."""


def require_ray() -> Any:
    """The ``ray`` module, or a :class:`RayMissingError` that says how to install it."""
    try:
        import ray
    except ImportError:
        raise RayMissingError(
            "backend='ray' needs the Ray package: pip install 'deeprl-suite[distributed]' "
            "(or run with backend='local', which needs nothing)"
        ) from None
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None) -> Any:
    """Start (or join) Ray once per process: ``address`` or $RAY_ADDRESS → that cluster; else local."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    else:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            ignore_reinit_error=True,
            log_to_driver=False,
            configure_logging=False,
        )
    return ray


class RNGState:
    """A private copy of the torch / numpy / random global RNG states, swapped in by :meth:`active`.

    In-process workers (``backend='local'``) share the learner's process; each keeps its own
    streams this way, so it draws exactly the numbers it would draw in its own Ray process.
    """

    def __init__(self, seed: int):
        with self.fresh():
            torch.manual_seed(seed)
            np.random.seed(seed % (2**32))
            random.seed(seed)
            self.state = self._capture()

    @staticmethod
    def _capture() -> tuple[Any, Any, Any]:
        return torch.get_rng_state(), np.random.get_state(), random.getstate()

    @staticmethod
    def _restore(state: tuple[Any, Any, Any]) -> None:
        torch.set_rng_state(state[0])
        np.random.set_state(state[1])
        random.setstate(state[2])

    @classmethod
    @contextmanager
    def fresh(cls) -> Iterator[None]:
        """Run a block without leaving any trace in the caller's global RNG states."""
        saved = cls._capture()
        try:
            yield
        finally:
            cls._restore(saved)

    @contextmanager
    def active(self) -> Iterator[None]:
        saved = self._capture()
        self._restore(self.state)
        try:
            yield
        finally:
            self.state = self._capture()
            self._restore(saved)


__all__ = ["RayMissingError", "require_ray", "init_ray", "RNGState"]
