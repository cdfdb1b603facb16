"""Matplotlib on the headless Agg backend, and the learning-curve plot every training run logs to MLflow."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def learning_curve(steps: Sequence[float], returns: Sequence[float], title: str):  # type: ignore[no-untyped-def]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, returns, lw=1.5)
    ax.set_xlabel("env steps")
    ax.set_ylabel("mean episode return (last 100)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
