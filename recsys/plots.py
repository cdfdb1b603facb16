"""Plots of the recommender pipeline: engagement per session step, training curves, and the logged
engagement curve streamed from a log file."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def log_figure(run: Any, fig: Any, name: str) -> None:
    """Log ``fig`` under the run's ``plots/`` (:meth:`TrackedRun.log_figure`) and close it."""
    import matplotlib.pyplot as plt

    run.log_figure(fig, name)
    plt.close(fig)


def engagement_curve_plot(curves: Mapping[str, np.ndarray], title: str):  # type: ignore[no-untyped-def]
    """Mean engagement at each session step, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for name, curve in curves.items():
        if len(curve):
            ax.plot(np.arange(len(curve)), curve, lw=1.3, label=f"{name} (mean {np.mean(curve):.2f})")
    ax.set_xlabel("session step")
    ax.set_ylabel("mean engagement")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def training_curve_plot(
    history: Sequence[Mapping[str, float]],
    keys: Sequence[str],  # type: ignore[no-untyped-def]
    title: str,
):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in keys if any(k in h for h in history)]
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(3.2 * max(len(keys), 1), 3.0), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(h["step"], h[key]) for h in history if key in h and math.isfinite(h[key])]
        if pts:
            ax.plot(*zip(*pts), lw=1.2)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("gradient step", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def log_curve(path: Path, chunk_rows: int = 262_144) -> np.ndarray:
    """Mean logged engagement at each session step, streamed from a log."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(str(path), pre_buffer=False)
    sums, counts = np.zeros(0), np.zeros(0)
    for batch in pf.iter_batches(batch_size=chunk_rows, columns=["step", "engagement"]):
        step = batch.column("step").to_numpy().astype(np.int64)
        eng = batch.column("engagement").to_numpy().astype(np.float64)
        m = int(step.max()) + 1 if len(step) else 0
        if m > len(sums):
            sums = np.concatenate([sums, np.zeros(m - len(sums))])
            counts = np.concatenate([counts, np.zeros(m - len(counts))])
        sums += np.bincount(step, eng, minlength=len(sums))
        counts += np.bincount(step, minlength=len(counts))
    return sums / np.maximum(counts, 1)


__all__ = ["log_figure", "engagement_curve_plot", "training_curve_plot", "log_curve"]
