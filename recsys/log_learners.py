"""The recommender's learners that fit logs and can train data-parallel, by name: how each is built
from a log and a config, what it tracks, and which columns it reads.

Every learner here has the same surface — ``fit(reader, epochs=, data_parallel=, log_every=)``,
``networks()`` (name → module: everything a rank must start equal and a parent process loads back),
``history`` and ``as_policy()`` — so :class:`LearnerJob` and ``deeprl recsys
train --workers W`` treat them alike:

* ``bc`` — behaviour cloning (:class:`recsys.offline.BehaviorCloning`): mean NLL per row, gradients
  all-reduced with weights n_r/B.
* ``topk_reinforce`` — :class:`recsys.topk_reinforce.TopKReinforce`: the mean baseline over the global
  batch, sums normalised by the global event count, gradients clipped after the all-reduce.
* ``slateq`` / ``cql`` — :class:`recsys.slateq.OfflineSlateQ` / :class:`recsys.offline.ConservativeSlateQ`:
  the TD loss normalised by the global clicked count, the CQL penalty and the learned choice model's
  NLL by the global row count, clipping after the all-reduce, target networks equal on every rank.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core_rl.common.errors import ConfigError
from core_rl.common.tracking import Tracker
from recsys.data_parallel import DataParallel, RecordingTracker

BC_COLUMNS = ("session_id", "step", "user_features", "candidate_features", "slate", "click_position", "engagement")


@dataclass(frozen=True)
class LogLearner:
    """What the pipeline and the data-parallel job need to know of one learner."""

    name: str
    curve_keys: tuple[str, ...]  # metrics plotted; the first is the per-step curve the DDP tests follow
    default_epochs: int
    log_every: int  # the pipeline's default metric interval (gradient steps; 0: epoch means only)
    columns: tuple[str, ...] | None = None  # None: the reader's training columns


LOG_LEARNERS: dict[str, LogLearner] = {
    "bc": LogLearner("bc", ("bc_nll",), 3, 0, BC_COLUMNS),
    "topk_reinforce": LogLearner("topk_reinforce", ("policy_loss", "beta_nll", "weight_mean", "entropy"), 5, 50),
    "slateq": LogLearner("slateq", ("loss", "q_mean", "cql_gap", "choice_nll"), 5, 200),
    "cql": LogLearner("cql", ("loss", "q_mean", "cql_gap", "choice_nll"), 5, 200),
}
#: learners that ``deeprl recsys train --workers W`` (W > 1) trains data-parallel
DATA_PARALLEL_LEARNERS = tuple(LOG_LEARNERS)


def check_workers(algo: str, workers: int) -> None:
    """One :class:`ConfigError` naming ``workers`` unless ``algo`` can train with ``workers`` processes."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an integer of at least 1, got {workers!r}")
    if workers > 1 and algo not in LOG_LEARNERS:
        raise ConfigError(
            f"workers={workers}: data-parallel training is for {', '.join(DATA_PARALLEL_LEARNERS)} from logs; "
            f"'{algo}' trains in one process (workers=1)"
        )


def build_log_learner(
    algo: str, reader: Any, config: Mapping[str, Any] | None = None, tracker: Tracker | None = None, seed: int = 0
) -> tuple[Any, int]:
    """``(learner, epochs)`` for ``algo`` on the log behind ``reader`` (``config`` may carry ``epochs``;
    its ``seed`` defaults to ``seed``; a slateq/cql config with ``choice_model="simulator"`` takes the
    simulator recorded in the log)."""
    if algo not in LOG_LEARNERS:
        raise ConfigError(f"unknown log learner '{algo}'; known: {', '.join(LOG_LEARNERS)}")
    cfg = dict(config or {})
    cfg.setdefault("seed", seed)
    epochs = int(cfg.pop("epochs", LOG_LEARNERS[algo].default_epochs))
    layout, k = reader.layout, reader.meta.slate_size
    if algo in ("slateq", "cql"):
        from recsys.offline import ConservativeSlateQ
        from recsys.slateq import OfflineSlateQ

        env_config = reader.meta.make_env(1).config if cfg.get("choice_model") == "simulator" else None
        cls = ConservativeSlateQ if algo == "cql" else OfflineSlateQ
        return cls(layout, k, cfg, env_config=env_config, tracker=tracker), epochs
    if algo == "topk_reinforce":
        from recsys.topk_reinforce import TopKReinforce

        return TopKReinforce(layout, k, {**cfg, "epochs": epochs}, tracker=tracker), epochs
    from recsys.offline import BehaviorCloning

    return BehaviorCloning(layout, k, {**cfg, "epochs": epochs}, tracker=tracker), epochs


# ---- the recommender's learners as a data-parallel job ----------------------------------------------------
@dataclass
class LearnerJob:
    """One rank's part of fitting a learner from logs (:mod:`recsys.log_learners`: ``bc``,
    ``topk_reinforce``, ``slateq``, ``cql``) on an ingested log; ``group=None`` runs it as one plain worker.

    ``config`` is the learner's config (``epochs`` included, as in ``deeprl recsys train --set``);
    ``batch_size`` stays the *global* batch. Returns the per-step values of the learner's first curve
    metric (``curve``, every ``log_every``-th step) with the clocks at each (``clocks``: (CPU s, wall s)),
    every metric the tracker got (``records``: (metrics, step)), the epoch history, the final state of
    every network (``state``: name → state dict), the rows trained on (epochs × log rows) and the fit's
    own CPU and wall seconds (``fit_cpu_s``, ``fit_wall_s``: without the process start and imports)."""

    learner: str
    log: str
    config: dict[str, Any]
    chunk_rows: int = 65_536
    log_every: int = 1
    seed: int = 0

    def __call__(self, group: DataParallel | None = None) -> dict[str, Any]:
        from recsys.logs import LogReader

        spec = LOG_LEARNERS[self.learner]
        reader = LogReader(self.log, chunk_rows=self.chunk_rows, columns=spec.columns)
        tracker = RecordingTracker(spec.curve_keys[0])
        learner, epochs = build_log_learner(self.learner, reader, self.config, tracker, self.seed)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        learner.fit(reader, epochs=epochs, data_parallel=group, log_every=self.log_every)
        return {
            "fit_cpu_s": time.process_time() - cpu0,
            "fit_wall_s": time.perf_counter() - wall0,
            "curve": tracker.values,
            "clocks": tracker.clocks,
            "records": tracker.records,
            "history": learner.history,
            "state": {
                name: {k: v.detach().clone() for k, v in net.state_dict().items()}
                for name, net in learner.networks().items()
            },
            "rows": reader.num_rows * epochs,
        }


__all__ = [
    "LogLearner",
    "LearnerJob",
    "LOG_LEARNERS",
    "DATA_PARALLEL_LEARNERS",
    "BC_COLUMNS",
    "build_log_learner",
    "check_workers",
]
