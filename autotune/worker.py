"""One worker of a shared study: claim a trial of the global budget, keep it alive, record its result.

Any number of processes run :func:`run_worker` on one stored study. The contract:

* **Global budget.** The study holds ``budget`` requested trials in all, whoever runs them. A
  trial counts when it is created, unless it is a retry (``system_attrs['failed_trial']`` set), which
  repeats a request already counted. A worker claims the next trial inside the study's
  :class:`~core_rl.common.store_lock.StoreLock`: it takes a queued (WAITING) trial if there is one,
  else creates a new trial while ``claimed < budget``; so the workers together create exactly
  ``budget`` requested trials, never one more.
* **Heartbeats.** While a trial runs, a thread writes its heartbeat every ``heartbeat_interval``
  seconds (the first one inside the lock, right after the claim). A trial whose heartbeat is older
  than the grace period (its worker was SIGKILLed, lost its machine, ...) is failed by the next
  worker that looks (:func:`optuna.storages.fail_stale_trials`, inside the lock: SQLite has no row
  locks, and two workers could fail the same trial twice), and the storage's stale-trial callback
  queues one retry of it.
* **The end.** A worker stops when the study is *done* — ``claimed >= budget`` and no trial is
  WAITING or RUNNING — or at its ``timeout``. A worker with nothing left to claim waits while
  other trials run (it may have to fail and retry one whose worker died), unless heartbeats are
  off, where it cannot tell a dead worker from a slow one and stops.
* **Results.** The objective's value must be a real number (``int``, ``float``, a NumPy or torch
  scalar) and finite: a string (even ``"0.5"``), ``None``, ``inf`` or ``nan`` fails the trial with
  one line naming the value. An exception fails the trial with one line (type and message); its
  traceback goes to ``on_trial`` (the MLflow trial run), not to the terminal. SIGINT/SIGTERM fail
  the running trial, queue its retry (when retries are on) and propagate.
"""

from __future__ import annotations

import copy
import math
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

ERROR_ATTR = "autotune.error"  # the trial's one-line failure reason (a user attribute)
STALE_REASON = "its worker stopped sending heartbeats"


class BadValue(ValueError):
    """The objective returned something that is not a finite real number."""


def check_value(value: Any) -> float:
    """``value`` as a float, or :class:`BadValue` naming it.

    Accepted: a real number — anything with ``__float__`` that is not a string, bytes or bool
    (``int``, ``float``, NumPy and one-element torch scalars) — whose float is finite.
    """
    if isinstance(value, (str, bytes, bool)) or not hasattr(type(value), "__float__"):
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise BadValue(f"the objective returned {shown} (a {type(value).__name__}), not a number")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise BadValue(f"the objective returned a {type(value).__name__} that is not one number: {exc}") from None
    if not math.isfinite(number):
        raise BadValue(f"the objective returned {number}, not a finite number")
    return number


def one_line(text: str, limit: int = 300) -> str:
    line = (text.strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


@dataclass
class TrialOutcome:
    """A finished trial, the one-line reason it failed (if it did) and the exception's traceback."""

    trial: FrozenTrial
    error: str | None = None
    traceback: str | None = None


@dataclass
class BudgetState:
    """What the study holds against its budget."""

    claimed: int  # requested trials created so far (retries excluded)
    waiting: int
    running: int
    budget: int

    @property
    def done(self) -> bool:
        return self.claimed >= self.budget and self.waiting == 0 and self.running == 0


def is_retry(trial: FrozenTrial) -> bool:
    return "failed_trial" in trial.system_attrs


def budget_state(study: optuna.Study, budget: int) -> BudgetState:
    trials = study.get_trials(deepcopy=False)
    return BudgetState(
        claimed=sum(not is_retry(t) for t in trials),
        waiting=sum(t.state == TrialState.WAITING for t in trials),
        running=sum(t.state == TrialState.RUNNING for t in trials),
        budget=budget,
    )


def heartbeat_interval(storage: BaseStorage) -> int | None:
    get = getattr(storage, "get_heartbeat_interval", None)
    return get() if get is not None else None


class Heartbeat:
    """A thread that records ``trial_id``'s heartbeat every ``interval`` seconds while open."""

    def __init__(self, storage: BaseStorage, trial_id: int):
        self.storage = storage
        self.trial_id = trial_id
        self.interval = heartbeat_interval(storage)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)  # type: ignore[attr-defined]
            except Exception as exc:  # a lost connection: the trial may go stale, the work goes on
                print(f"warning: heartbeat of trial id {self.trial_id}: {one_line(str(exc))}", file=sys.stderr)

    def __enter__(self) -> Heartbeat:
        if self.interval:
            self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{self.trial_id}", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class StaleTrials:
    """The storage's stale-trial callback: one line, a retry (up to ``max_retry`` per request), and
    ``on_failed`` (the MLflow logger) for the failed trial."""

    def __init__(self, max_retry: int, log: Callable[[str], None] | None = None):
        self.max_retry = max_retry
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.on_failed: Callable[[optuna.Study, TrialOutcome], None] | None = None

    def retry(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        """Queue a copy of ``trial`` (same parameters) unless it used up its retries."""
        if self.max_retry <= 0 or len(trial.system_attrs.get("retry_history", [])) >= self.max_retry:
            return False
        clean = copy.copy(trial)  # the retry starts without the failure's reason
        clean.user_attrs = {k: v for k, v in trial.user_attrs.items() if k != ERROR_ATTR}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            RetryHeartbeatStaleTrialCallback(max_retry=self.max_retry)(study, clean)
        return True

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        reason = STALE_REASON  # (a finished trial takes no more attributes: the reason goes to MLflow)
        retried = self.retry(study, trial)
        self.log(f"trial {trial.number} failed: {reason}" + ("; queued again" if retried else ""))
        if self.on_failed is not None:
            try:
                self.on_failed(study, TrialOutcome(study._storage.get_trial(trial._trial_id), reason))
            except Exception as exc:  # the study's record is right; only its MLflow copy is missing
                self.log(f"warning: trial {trial.number} not recorded in MLflow: {one_line(str(exc))}")


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the study's trials whose heartbeat is stale (their retry is the storage's callback)."""
    if heartbeat_interval(study._storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


def claim(
    study: optuna.Study, budget: int, lock: AbstractContextManager[Any]
) -> tuple[optuna.Trial | None, BudgetState]:
    """Inside ``lock``: the next WAITING trial, else a new one while the budget allows, else None."""
    with lock:
        state = budget_state(study, budget)
        if not state.waiting and state.claimed >= budget:
            return None, state
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
            trial = study.ask()
        if heartbeat_interval(study._storage):  # stale-able from the start: a heartbeat-less trial never is
            study._storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]
        return trial, state


def _tell(
    study: optuna.Study, trial: optuna.Trial, value: float | None = None, state: TrialState | None = None
) -> FrozenTrial:
    """``study.tell``; a trial another worker failed meanwhile (its heartbeat came too late) keeps
    that state, with one line saying the result is dropped."""
    try:
        return study.tell(trial, value, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        frozen = study._storage.get_trial(trial._trial_id)
        print(
            f"warning: trial {trial.number} was marked {frozen.state.name} while it ran (no heartbeat within the "
            "grace period: raise --grace); its result is dropped",
            file=sys.stderr,
            flush=True,
        )
        frozen.system_attrs = {**frozen.system_attrs, "autotune.dropped": True}
        return frozen


def _note(trial: optuna.Trial, line: str) -> None:
    """Record the one-line failure reason on the trial (unless another worker has finished it)."""
    try:
        trial.set_user_attr(ERROR_ATTR, line)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass


def run_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    objective: Callable[[optuna.Trial], Any],
    stale: StaleTrials | None,
    on_interrupt: Callable[[optuna.Study, TrialOutcome], None] | None = None,
) -> TrialOutcome:
    """Evaluate one claimed trial and tell the study how it ended (``on_interrupt`` records a trial
    that SIGINT/SIGTERM stopped before the interrupt propagates)."""
    with Heartbeat(study._storage, trial._trial_id):
        try:
            raw = objective(trial)
        except optuna.TrialPruned:
            return TrialOutcome(_tell(study, trial, state=TrialState.PRUNED))
        except Exception as exc:
            line = f"{type(exc).__name__}: {one_line(str(exc))}".rstrip(": ")
            _note(trial, line)
            return TrialOutcome(_tell(study, trial, state=TrialState.FAIL), line, traceback.format_exc())
        except KeyboardInterrupt as exc:  # SIGINT/SIGTERM: close the trial, queue it again, stop
            line = f"interrupted ({str(exc) or 'SIGINT'})"
            _note(trial, line)
            frozen = _tell(study, trial, state=TrialState.FAIL)
            if not frozen.system_attrs.get("autotune.dropped"):
                if stale is not None:
                    stale.retry(study, frozen)
                if on_interrupt is not None:
                    try:
                        on_interrupt(study, TrialOutcome(frozen, line))
                    except Exception:  # the interrupt matters more than its record
                        pass
            raise
    try:
        value = check_value(raw)
    except BadValue as exc:
        _note(trial, str(exc))
        return TrialOutcome(_tell(study, trial, state=TrialState.FAIL), str(exc))
    return TrialOutcome(_tell(study, trial, value))


@dataclass
class WorkerResult:
    n_run: int  # trials this worker evaluated
    stopped: str  # "done", "timeout" or "idle" (nothing to claim, others still running, no heartbeats)
    state: BudgetState


def run_worker(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    budget: int,
    *,
    lock: AbstractContextManager[Any] | None = None,
    timeout: float | None = None,
    stale: StaleTrials | None = None,
    on_trial: Callable[[optuna.Study, TrialOutcome], None] | None = None,
    log: Callable[[str], None] | None = None,
    poll: float = 0.5,
) -> WorkerResult:
    """Run trials of ``study`` until its global ``budget`` is done (or ``timeout`` seconds pass)."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    lock = lock if lock is not None else nullcontext()
    start, n_run = time.monotonic(), 0
    beats = bool(heartbeat_interval(study._storage))
    while True:
        if timeout is not None and time.monotonic() - start >= timeout:
            return WorkerResult(n_run, "timeout", budget_state(study, budget))
        with lock:  # one worker at a time, or two could fail (and retry) the same trial (SQLite)
            fail_stale_trials(study)
        trial, state = claim(study, budget, lock)
        if trial is None:
            if state.done:
                return WorkerResult(n_run, "done", state)
            if not beats:
                return WorkerResult(n_run, "idle", state)
            time.sleep(poll)  # others' trials run; one may go stale and come back as WAITING
            continue
        outcome = run_trial(study, trial, objective, stale, on_trial)
        n_run += 1
        t = outcome.trial
        if t.system_attrs.get("autotune.dropped"):  # failed as stale by another worker, and recorded there
            continue
        if outcome.error is not None:
            log(f"trial {t.number} failed: {outcome.error}")
        elif t.state == TrialState.COMPLETE:
            log(
                f"trial {t.number}: {t.value:.6g}"
                + (f" (retry of trial {t.system_attrs['failed_trial']})" if is_retry(t) else "")
            )
        if on_trial is not None:
            on_trial(study, outcome)
