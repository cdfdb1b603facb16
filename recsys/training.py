r"""The offline training loop shared by the learners that fit logs (offline SlateQ and CQL, top-K
REINFORCE, behaviour cloning).

One epoch is one pass over the log in a shuffled order of row groups
(:meth:`~recsys.logs.LogReader.chunks` with ``shuffle=True``, reseeded per epoch) — or over a list
of chunks as given — and, inside each chunk, minibatches in a seeded random order, so that the
stochastic gradient of the learner's objective :math:`\nabla_\theta \frac1B\sum_{b} \ell_\theta(x_b)`
is an unbiased estimate of the log's mean. The learner supplies how a chunk becomes minibatches
and one gradient step; the loop owns the passes, the generator, and the metrics: every
``log_every`` steps the last step's, and at the end of every epoch their mean (NaNs skipped), which
also goes to ``history``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from core_rl.common.tracking import Tracker

#: ``(chunk, generator) → minibatches`` of one chunk
Batches = Callable[[Any, torch.Generator], Iterable[Any]]
#: one gradient step on a minibatch → its metrics
Step = Callable[[Any], dict[str, float]]


def log_chunks(reader: Any, seed: int, epoch: int) -> Iterator[Any]:
    """The chunks of one epoch: a reader's, in a shuffled order seeded by ``seed + epoch``, or a list's as given."""
    if hasattr(reader, "chunks"):
        return iter(reader.chunks(shuffle=True, seed=seed + epoch))
    return iter(reader)


def row_batches(chunk: Any, generator: torch.Generator, batch_size: int) -> Iterator[torch.Tensor]:
    """Row indices of ``chunk`` in a random order, ``batch_size`` at a time."""
    perm = torch.randperm(len(chunk), generator=generator)
    for start in range(0, len(chunk), batch_size):
        yield perm[start : start + batch_size]


def fit_offline(
    reader: Any,
    epochs: int,
    seed: int,
    batches: Batches,
    step: Step,
    tracker: Tracker,
    history: list[dict[str, float]],
    log_every: int = 0,
) -> int:
    """``epochs`` passes of ``step`` over the minibatches of the log; returns the number of gradient steps.

    ``log_every`` > 0 sends every ``log_every``-th step's metrics to the tracker; each epoch's mean
    metrics (with ``epoch``) go to the tracker and to ``history`` (with ``step`` and ``epoch``).
    """
    generator = torch.Generator().manual_seed(seed)
    steps = 0
    for epoch in range(epochs):
        totals: dict[str, float] = {}
        count = 0
        for chunk in log_chunks(reader, seed, epoch):
            for batch in batches(chunk, generator):
                metrics = step(batch)
                steps += 1
                count += 1
                for key, value in metrics.items():
                    if value == value:  # not nan
                        totals[key] = totals.get(key, 0.0) + value
                if log_every and steps % log_every == 0:
                    tracker.log_metrics(metrics, steps)
        if count:
            mean = {key: value / count for key, value in totals.items()}
            tracker.log_metrics({**mean, "epoch": float(epoch)}, steps)
            history.append({"step": float(steps), "epoch": float(epoch), **mean})
    return steps


__all__ = ["fit_offline", "log_chunks", "row_batches"]
