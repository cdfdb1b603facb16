"""Frame strips: what an agent on pixels sees, as one PNG the tracker keeps (MLflow: ``frames/``).

A strip lays the frames of one image observation side by side, oldest first, with a 2-pixel
separator: a frame-stacked observation ``[k, H, W]`` gives its k consecutive frames (for Atari, 4
frames 4 game frames apart: the agent playing), a colour image ``[H, W, 3]`` gives itself.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

from core_rl.common.networks import image_layout


def frame_strip(obs: np.ndarray, space: gym.Space, gap: int = 2) -> np.ndarray:
    """One image observation of ``space`` as a ``uint8`` strip: ``[H, k·W + (k−1)·gap]`` for ``k``
    single-channel frames (channels-first stacks, or any channel count other than 3), ``[H, W, 3]``
    for a colour image."""
    layout = image_layout(space)
    if layout is None:
        raise ValueError(f"a frame strip needs an image observation space, got {space}")
    channels, height, width, channels_last = layout
    obs = np.asarray(obs, dtype=np.uint8)
    if channels_last and channels == 3:
        return obs
    frames = np.moveaxis(obs, -1, 0) if channels_last else obs
    strip = np.full((height, channels * width + (channels - 1) * gap), 255, dtype=np.uint8)
    for i, frame in enumerate(frames):
        strip[:, i * (width + gap) : i * (width + gap) + width] = frame
    return strip


def save_frame_strip(path: str | Path, obs: np.ndarray, space: gym.Space) -> Path:
    """Write :func:`frame_strip` of ``obs`` to ``path`` as a PNG (grayscale, 0..255 unscaled)."""
    from matplotlib import image as mpl_image

    path = Path(path)
    strip = frame_strip(obs, space)
    if strip.ndim == 2:
        mpl_image.imsave(path, strip, cmap="gray", vmin=0, vmax=255, format="png")
    else:
        mpl_image.imsave(path, strip, format="png")
    return path


__all__ = ["frame_strip", "save_frame_strip"]
