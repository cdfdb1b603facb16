"""Online evaluation of a slate policy in a simulator: whole sessions, a fixed quota per user slot."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.policies.types import SlateDecision


# ---- online evaluation ----------------------------------------------------------------------------
@dataclass
class OnlineResult:
    """What a policy earned in the simulator."""

    session_engagement: np.ndarray  # [sessions] total engagement of each session
    session_length: np.ndarray  # [sessions]
    step_curve: np.ndarray  # [T_max] mean engagement at step t (sessions still running)
    step_count: np.ndarray  # [T_max] sessions that reached step t
    clicks: int = 0
    steps: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return float(self.session_engagement.mean())

    @property
    def stderr(self) -> float:
        n = len(self.session_engagement)
        return float(self.session_engagement.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")

    @property
    def per_step(self) -> float:
        """Mean engagement per step over every step taken."""
        return float(self.session_engagement.sum() / max(self.session_length.sum(), 1))

    def metrics(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}session_engagement": self.mean,
            f"{prefix}session_engagement_se": self.stderr,
            f"{prefix}step_engagement": self.per_step,
            f"{prefix}session_length": float(self.session_length.mean()),
            f"{prefix}click_rate": self.clicks / max(self.steps, 1),
        }


def evaluate_online(
    env: Any, policy: Callable[..., Any], sessions: int, seed: int = 0, max_steps: int | None = None
) -> OnlineResult:
    """Run ``policy`` (a :class:`SlatePolicy` or ``(obs, info) → slates``) for ``sessions`` whole sessions.

    Each of the env's N user slots runs ⌈sessions/N⌉ or ⌊sessions/N⌋ sessions (fixed quotas, so short
    sessions are not over-represented); steps after a slot's quota are not counted.
    """
    n = env.num_envs
    quota = np.full(n, sessions // n) + (np.arange(n) < sessions % n)
    obs, info = env.reset(seed=seed)
    ep_ret, ep_len = np.zeros(n), np.zeros(n, dtype=np.int64)
    totals, lengths = [], []
    curve_sum = np.zeros(0)
    curve_cnt = np.zeros(0, dtype=np.int64)
    clicks = steps = 0
    t_guard = 0
    while quota.sum() > 0:
        decision = policy(obs, info)
        slates = decision.numpy() if isinstance(decision, SlateDecision) else np.asarray(decision)
        obs, reward, terminated, truncated, info = env.step(slates)
        active = quota > 0
        if int(ep_len.max()) + 1 > curve_sum.shape[0]:
            grow = max(64, curve_sum.shape[0])
            curve_sum = np.concatenate([curve_sum, np.zeros(grow)])
            curve_cnt = np.concatenate([curve_cnt, np.zeros(grow, dtype=np.int64)])
        np.add.at(curve_sum, ep_len[active], reward[active])
        np.add.at(curve_cnt, ep_len[active], 1)
        clicks += int(np.asarray(info["clicked"])[active].sum())
        steps += int(active.sum())
        ep_ret += reward
        ep_len += 1
        done = (terminated | truncated) & active
        if done.any():
            totals.append(ep_ret[done].copy())
            lengths.append(ep_len[done].copy())
            quota[done] -= 1
        ended = terminated | truncated
        ep_ret[ended], ep_len[ended] = 0.0, 0
        t_guard += 1
        if max_steps is not None and t_guard >= max_steps:
            break
    last = int(np.flatnonzero(curve_cnt).max()) + 1 if curve_cnt.any() else 0
    return OnlineResult(
        np.concatenate(totals) if totals else np.zeros(0),
        np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64),
        curve_sum[:last] / np.maximum(curve_cnt[:last], 1),
        curve_cnt[:last],
        clicks,
        steps,
    )


__all__ = ["OnlineResult", "evaluate_online"]
