"""Checkpoints: torch state dicts plus plain metadata, loaded with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from core_rl.common.errors import CheckpointError

FORMAT_VERSION = 1


def save_checkpoint(
    path: str | Path, *, algo: str, config: dict[str, Any], state: dict[str, Any], meta: dict[str, Any]
) -> Path:
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


def check_finite(state: Any, where: str) -> None:
    """Raise :class:`CheckpointError` if any floating tensor in a (nested) state dict is NaN or infinite."""
    stack: list[tuple[str, Any]] = [("", state)]
    while stack:
        name, obj = stack.pop()
        if isinstance(obj, torch.Tensor):
            if obj.is_floating_point() and not bool(torch.isfinite(obj).all()):
                raise CheckpointError(f"{where}: '{name}' holds NaN or infinite values")
        elif isinstance(obj, dict):
            stack.extend((f"{name}.{k}" if name else str(k), v) for k, v in obj.items())
        elif isinstance(obj, (list, tuple)):
            stack.extend((f"{name}[{i}]", v) for i, v in enumerate(obj))


def object_state(obj: Any) -> dict[str, Any]:
    """The state of a plain object (a replay buffer, its sum tree) as tensors and plain values, for a
    ``weights_only`` checkpoint: tensors, numbers, strings and generators' states, nested objects
    recursively. Restored into an object of the same construction by :func:`restore_object_state`."""
    out: dict[str, Any] = {}
    for key, value in vars(obj).items():
        if isinstance(value, torch.Tensor):
            out[key] = value
        elif isinstance(value, torch.Generator):
            out[key] = {"__generator__": value.get_state()}
        elif isinstance(value, (bool, int, float, str)) or value is None:
            out[key] = value
        elif hasattr(value, "__dict__") and not callable(value) and not isinstance(value, (torch.device, type)):
            out[key] = {"__object__": object_state(value)}
    return out


def restore_object_state(obj: Any, state: dict[str, Any]) -> None:
    """Put :func:`object_state`'s values back into ``obj`` (shapes must match its construction)."""
    for key, value in state.items():
        current = getattr(obj, key, None)
        if isinstance(value, dict) and "__generator__" in value:
            current.set_state(value["__generator__"])
        elif isinstance(value, dict) and "__object__" in value:
            restore_object_state(current, value["__object__"])
        elif isinstance(value, torch.Tensor) and isinstance(current, torch.Tensor):
            if current.shape != value.shape:
                raise CheckpointError(
                    f"stored {type(obj).__name__}.{key} has shape {tuple(value.shape)}, this one {tuple(current.shape)}"
                )
            current.copy_(value)
        else:
            setattr(obj, key, value)
