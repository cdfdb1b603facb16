"""Policy kinds and policy files.

:data:`POLICY_KINDS` is a lazy name table (``kind → "module:Class"``), as :mod:`core_rl.registry`
is: a kind's module is imported only when a policy of that kind is rebuilt, so this module imports
none of the learners (no import cycle through the registry).

A policy file is one torch file holding only plain values and tensors — ``{"format", "kind",
"spec", "state", "layout", "extra"}`` with a JSON-able spec and extra and a state of tensors — so
that it loads with ``torch.load(..., weights_only=True)``: nothing in it is unpickled.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from core_rl.common.errors import CheckpointError, ConfigError
from recsys.policies.types import ObsLayout, SlatePolicy

FORMAT = "deeprl.recsys.policy/1"

#: kind → ``"module:Class"`` of its :class:`SlatePolicy`; imported on first use
POLICY_KINDS: dict[str, str] = {
    "random": "recsys.policies.baselines:RandomPolicy",
    "popularity": "recsys.policies.baselines:PopularityPolicy",
    "myopic": "recsys.policies.baselines:MyopicGreedyPolicy",
    "epsilon_greedy": "recsys.policies.baselines:EpsilonGreedyPolicy",
    "plackett_luce": "recsys.policies.baselines:PlackettLucePolicy",
    "scored_topk": "recsys.policies.baselines:ScoredTopKPolicy",
    "slateq": "recsys.slateq:SlateQPolicy",
    "topk_reinforce": "recsys.topk_reinforce:TopKReinforcePolicy",
}


def register_policy(kind: str, target: str) -> None:
    """Add a policy kind: ``target`` is ``"module:Class"`` of a :class:`SlatePolicy` subclass."""
    if ":" not in target:
        raise ConfigError(f"policy target must be 'module:Class', got '{target}'")
    POLICY_KINDS[kind] = target


def policy_class(kind: str) -> type[SlatePolicy]:
    """The class of a policy kind (its module imported now)."""
    if kind not in POLICY_KINDS:
        raise ConfigError(f"unknown policy kind '{kind}'; known: {', '.join(sorted(POLICY_KINDS))}")
    module, name = POLICY_KINDS[kind].split(":")
    cls = getattr(importlib.import_module(module), name)
    if getattr(cls, "kind", None) != kind:
        raise ConfigError(
            f"policy kind '{kind}' points at {POLICY_KINDS[kind]}, whose kind is '{getattr(cls, 'kind', None)}'"
        )
    return cls


def policy_from_spec(kind: str, spec: dict[str, Any], state: dict[str, Any] | None = None) -> SlatePolicy:
    return policy_class(kind).from_spec(spec, state or {})


def _plain(value: Any, what: str) -> Any:
    """``value`` through a JSON round trip (tuples become lists); a CheckpointError if it is not JSON-able."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"policy {what} must be JSON-able (plain values): {exc}") from None


def _tensors(state: Mapping[str, Any], what: str = "state") -> dict[str, Any]:
    """A copy of ``state`` that holds only tensors (nested in dicts); a CheckpointError otherwise."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            out[str(key)] = value.detach().cpu()
        elif isinstance(value, Mapping):
            out[str(key)] = _tensors(value, f"{what}.{key}")
        else:
            raise CheckpointError(
                f"policy {what}.{key} must be a tensor or a dict of tensors, got {type(value).__name__}"
            )
    return out


def save_policy(policy: SlatePolicy, path: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
    """One torch file of plain values and tensors: ``{"format", "kind", "spec", "state", "layout", "extra"}``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": FORMAT,
            "kind": policy.kind,
            "spec": _plain(policy.spec(), "spec"),
            "state": _tensors(policy.state()),
            "layout": None if policy.layout is None else policy.layout.as_dict(),
            "extra": _plain(dict(extra or {}), "extra"),
        },
        path,
    )
    return path


def load_policy(path: str | Path) -> SlatePolicy:
    """The policy saved by :func:`save_policy`; a file holding any pickled object is refused."""
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except OSError as exc:
        raise CheckpointError(f"policy file '{path}' cannot be read: {exc}") from None
    except Exception as exc:  # torch raises UnpicklingError (or RuntimeError) for anything not plain
        raise CheckpointError(
            f"policy file '{path}' holds more than plain values and tensors and is not "
            f"loaded: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not a recsys policy file")
    policy = policy_from_spec(payload["kind"], payload["spec"], payload["state"])
    if payload.get("layout"):
        policy.layout = ObsLayout(**payload["layout"])
    return policy


__all__ = ["POLICY_KINDS", "register_policy", "policy_class", "policy_from_spec", "save_policy", "load_policy"]
