"""Checkpoints: torch state dicts plus plain metadata, loaded with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from core_rl.common.errors import CheckpointError

FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, *, algo: str, config: dict[str, Any], state: dict[str, Any],
                    meta: dict[str, Any]) -> Path:
    """Write atomically (temp file then rename) so a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT_VERSION, "algo": algo, "config": config, "state": state, "meta": meta}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path, algo: str | None = None) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint '{path}' cannot be read: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"'{path}' is not a deeprl-suite checkpoint")
    if algo is not None and payload["algo"] != algo:
        raise CheckpointError(f"checkpoint '{path}' holds a {payload['algo']} agent, not {algo}")
    return payload
