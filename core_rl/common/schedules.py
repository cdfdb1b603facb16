r"""Linear schedules, and RL-Zoo's way of writing them (``lin_<initial>``).

A linear schedule decays a hyperparameter to 0 over the run, as Stable-Baselines3 calls its
schedules with the *progress remaining* :math:`p = 1 - t/T` (1 at the start, 0 at the end):

.. math:: x(p) = p\,x_0 .

RL-Zoo writes it ``lin_7.3e-4`` (:math:`x_0 = 7.3\cdot10^{-4}`). A config field ``F`` with a schedule
has a companion ``F``'s schedule field (``lr`` → ``lr_schedule``, ``clip_range`` → ``clip_schedule``);
:func:`split_schedules` turns a pasted ``lin_…`` value into the pair.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

ScheduleKind = Literal["constant", "linear"]
LINEAR_PREFIX = "lin_"


def parse_schedule(value: Any, field: str = "value") -> tuple[float, ScheduleKind] | None:
    """``(x0, "linear")`` for a ``"lin_<x0>"`` string, ``None`` for anything else; a malformed
    ``lin_`` string raises ``ValueError`` naming ``field``."""
    if not isinstance(value, str) or not value.startswith(LINEAR_PREFIX):
        return None
    try:
        return float(value[len(LINEAR_PREFIX) :]), "linear"
    except ValueError:
        raise ValueError(f"{field}: '{value}' is not a linear schedule 'lin_<number>'") from None


def scheduled(initial: float, kind: ScheduleKind, progress_remaining: float) -> float:
    """x(p) = p·x₀ for a linear schedule, x₀ for a constant one (``progress_remaining`` p ∈ [0, 1])."""
    if kind == "linear":
        return initial * min(max(progress_remaining, 0.0), 1.0)
    return initial


def split_schedules(data: Mapping[str, Any], schedule_fields: Mapping[str, str]) -> dict[str, Any]:
    """``data`` with every ``lin_<x0>`` value of a field in ``schedule_fields`` replaced by ``x0`` and
    its schedule field set to ``"linear"``; a ``lin_`` value of another field raises ``ValueError``."""
    out = dict(data)
    for field, value in data.items():
        parsed = parse_schedule(value, field)
        if parsed is None:
            continue
        if field not in schedule_fields:
            known = ", ".join(sorted(schedule_fields)) or "none"
            raise ValueError(f"field '{field}' takes no schedule ('{value}'); fields with schedules here: {known}")
        companion = schedule_fields[field]
        if out.get(companion, "linear") != "linear":
            raise ValueError(f"field '{field}' is '{value}' but {companion}='{out[companion]}'")
        out[field], out[companion] = parsed
    return out
