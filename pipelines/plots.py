"""Kept for old imports: plots live in :mod:`core_rl.common.plotting`."""

from core_rl.common.plotting import learning_curve, plt

__all__ = ["learning_curve", "plt"]
