"""What a sampler reads back from a study's stored trials.

Every sampler in this package is stateless across workers: all it knows is rebuilt from
``study.get_trials()`` (any storage: in-memory, SQLite, PostgreSQL), so any number of processes
or machines can share one study. This module turns the stored trials into the arrays the learners
use: finished trials in trial-number order with a "higher is better" score, and running trials.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from core_rl.common.errors import ConfigError

FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


def check_single_objective(study: optuna.Study, who: str) -> None:
    if len(study.directions) != 1:
        raise ConfigError(f"{who} optimizes one objective; the study has {len(study.directions)} directions")


def sign_of(study: optuna.Study) -> float:
    """+1 to maximize the stored value, −1 to minimize it: score = sign · value."""
    return 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0


def trial_score(trial: FrozenTrial, sign: float) -> float:
    """``sign · value`` for a complete trial with a finite value, nan otherwise."""
    if trial.state != TrialState.COMPLETE or trial.values is None:
        return math.nan
    v = trial.values[0]
    return sign * float(v) if v is not None and math.isfinite(v) else math.nan


@dataclass
class History:
    """A snapshot of a study: finished trials (by number), their scores, and the running ones."""

    finished: list[FrozenTrial] = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))  # nan for failed/pruned
    states: list[TrialState] = field(default_factory=list)
    running: list[FrozenTrial] = field(default_factory=list)

    @property
    def numbers(self) -> tuple[int, ...]:
        return tuple(t.number for t in self.finished)

    @property
    def n_complete(self) -> int:
        return int(np.isfinite(self.scores).sum())


def read_history(study: optuna.Study, exclude: int | None = None) -> History:
    """Finished and running trials of ``study`` (trial ``exclude``, the one being sampled, left out)."""
    trials = study._storage.get_all_trials(study._study_id, deepcopy=False)
    sign = sign_of(study)
    finished = sorted((t for t in trials if t.state in FINISHED), key=lambda t: t.number)
    running = [t for t in trials if t.state == TrialState.RUNNING and t.number != exclude]
    scores = np.array([trial_score(t, sign) for t in finished], dtype=np.float64)
    return History(finished, scores, [t.state for t in finished], running)


def quantile_utility(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """For each score, the fraction of ``reference`` scores it beats (ties count half), in [0, 1].

    Scale-free, so the learners see the same signal whatever the objective's units; nan (failed)
    scores get 0, the worst utility.
    """
    ref = reference[np.isfinite(reference)]
    out = np.zeros(len(scores))
    if ref.size == 0:
        return np.where(np.isfinite(scores), 0.5, 0.0)
    ok = np.isfinite(scores)
    s = scores[ok][:, None]
    out[ok] = ((s > ref[None, :]).sum(1) + 0.5 * (s == ref[None, :]).sum(1)) / ref.size
    return out


def params_of(trial: FrozenTrial) -> dict[str, Any]:
    return dict(trial.params)
