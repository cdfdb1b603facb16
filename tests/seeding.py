"""One knob that shifts every test seed: ``DEEPRL_TEST_SEED_SHIFT`` (an integer, default 0).

A learning test must pass for any seed, not only on the one floating-point trajectory that seed 0
happens to take on the author's CPU. Every learning test takes its seeds through :func:`seed`, so
``DEEPRL_TEST_SEED_SHIFT=1 pytest ...`` replays the whole suite on other trajectories (issue 12).
"""

from __future__ import annotations

import os


def _read_shift() -> int:
    raw = os.environ.get("DEEPRL_TEST_SEED_SHIFT", "0").strip() or "0"
    try:
        shift = int(raw)
    except ValueError:
        raise ValueError(f"DEEPRL_TEST_SEED_SHIFT must be an integer, got {raw!r}") from None
    if shift < 0:  # the agents' configs take seeds ≥ 0
        raise ValueError(f"DEEPRL_TEST_SEED_SHIFT must be ≥ 0, got {shift}")
    return shift


SEED_SHIFT: int = _read_shift()


def seed(base: int) -> int:
    """The test's seed ``base`` moved by ``DEEPRL_TEST_SEED_SHIFT`` (``base + shift``)."""
    return int(base) + SEED_SHIFT
