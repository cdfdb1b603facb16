"""One MLflow run lifecycle for every part of the suite: :func:`tracked_run`.

Training (``deeprl train``), the recommender's pipelines, the tuner's studies, the experiments and
the benchmarks all record into MLflow the same way::

    with tracked_run("deeprl", run_name="ppo-CartPole-v1-s0", params=cfg,
                     resume_hint="deeprl train --algo ppo --resume {run_id}") as run:
        agent.tracker = run.tracker
        run.on_stop(lambda: upload_checkpoint(run))   # keep the weights whatever ends the run
        agent.learn(steps)

The context manager owns the run's status, so that no way of ending leaves a run RUNNING:

* the block returns → ``FINISHED``;
* the block raises → the ``on_stop`` callbacks run, a ``failure`` tag records the exception, the run
  ends ``FAILED`` and the exception propagates;
* Ctrl-C (SIGINT) or SIGTERM → the callbacks run, the run ends ``KILLED`` with everything it logged,
  and one line on stderr gives the run id and the exact command that resumes it; the
  :class:`~core_rl.common.errors.RunInterrupted` then propagates (the CLI exits 130 or 143).

While a run is open in the main thread, SIGINT and SIGTERM are caught. Loops that can stop cleanly
between iterations (``Agent.learn``) enter :func:`graceful_stop`: the first signal then only asks
them to stop at the end of the current iteration, so the final checkpoint and the metric history
agree; a second signal interrupts at once. Elsewhere the first signal interrupts at once.

The store itself: by default one git-ignored data folder (``.deeprl/`` in the working directory, or
``$DEEPRL_HOME``) holds MLflow's SQLite backend ``mlflow.db``, its artifacts in ``artifacts/`` and
Optuna's ``optuna.db``; ``tracking_uri`` or ``$MLFLOW_TRACKING_URI`` point anywhere else.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from core_rl.common.errors import RunInterrupted, TrackingError
from core_rl.common.store_lock import StoreLock
from core_rl.common.tracking import MLflowTracker

# ---- the store ---------------------------------------------------------------------------------


def data_dir(default: Path | None = None) -> Path:
    """The one folder that holds every embedded store (created on first use): ``$DEEPRL_HOME``, else
    ``default``, else ``.deeprl/`` in the working directory."""
    return Path(os.environ.get("DEEPRL_HOME") or default or Path.cwd() / ".deeprl").resolve()


def default_tracking_uri(default_dir: Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI``, else the SQLite store in :func:`data_dir` (``default_dir`` standing in
    for the working directory's ``.deeprl/``)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{data_dir(default_dir) / 'mlflow.db'}"


def check_writable_dir(path: Path, what: str, error: type[Exception] = TrackingError) -> None:
    """Create ``path`` if needed and prove it writable, or raise ``error`` naming ``what``."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        # a probe of this process's own: processes starting together on one folder must not remove each other's
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise error(f"{what} '{path}' is not writable: {exc.strerror or exc}") from None


def stop_reason(exc: BaseException) -> str:
    """What ended a run, in one line: the signal's name (SIGINT, SIGTERM) or ``Type: message``."""
    if isinstance(exc, RunInterrupted):
        return exc.signal_name
    if isinstance(exc, KeyboardInterrupt):
        return "SIGINT"
    return f"{type(exc).__name__}: {exc}"


def setup_tracking(tracking_uri: str | None = None) -> str:
    """Point MLflow at ``tracking_uri`` (or the default) and check that it can be written."""
    import mlflow

    uri = tracking_uri or default_tracking_uri()
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        db = Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None
        if db is None:
            raise TrackingError(f"tracking URI '{uri}' must look like sqlite:///path/to/file.db")
        check_writable_dir(db.parent, "tracking store folder")
        if not db.exists():
            _create_sqlite_store(db)
        _wait_while_migrating(db)  # at once for ours; else whoever made it first may still be at work
        try:
            sqlite3.connect(db).close()
        except sqlite3.Error as exc:
            raise TrackingError(f"tracking store '{db}' cannot be opened: {exc}") from None
    elif parsed.scheme in ("", "file"):
        check_writable_dir(Path(parsed.path or uri), "tracking folder")
    elif parsed.scheme in ("http", "https"):
        _check_reachable(uri, parsed)
    mlflow.set_tracking_uri(uri)
    for attempt in range(SCHEMA_RACE_RETRIES + 1):
        try:
            # the first use creates (or migrates) the schema: one process at a time, see store_lock
            with StoreLock(uri, "mlflow-schema"):
                mlflow.tracking.MlflowClient().search_experiments(max_results=1)
            return uri
        except Exception as exc:  # server down, bad credentials, unreadable DB, ...
            if attempt < SCHEMA_RACE_RETRIES and _is_schema_race(exc):
                # a process outside our lock (an MLflow UI, a plain MlflowClient) is creating the same
                # schema: once it is done the tables exist and the next try only verifies them
                time.sleep(0.5 * (attempt + 1))
                continue
            raise TrackingError(f"tracking store '{uri}' cannot be used: {str(exc).splitlines()[0][:300]}") from None
    raise AssertionError("unreachable")  # pragma: no cover


#: seconds a tracking server gets to accept a connection before the run is refused
SERVER_CONNECT_TIMEOUT_S = 5.0


def _check_reachable(uri: str, parsed: Any) -> None:
    """One TCP connection to a tracking server, at most :data:`SERVER_CONNECT_TIMEOUT_S` seconds: a server that is down
    is one clear error at once, not MLflow's seven retries with back-off (about four minutes without a word)."""
    import socket

    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname or "localhost", port), timeout=SERVER_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise TrackingError(
            f"tracking server '{uri}' cannot be reached ({reason}, {parsed.hostname}:{port}); start it "
            "(deeprl server) or check the URI"
        ) from None


def _create_sqlite_store(db: Path) -> None:
    """Create MLflow's schema in a private file, then publish it at ``db`` in one atomic step.

    Nothing else ever sees a half-migrated store: MLflow's migrations (some forty, several that copy a
    table through ``_alembic_tmp_<table>``) are not safe to run twice at once, and a plain MLflow
    process (an ``mlflow ui``, a notebook's ``MlflowClient``) that opens the same new file while they
    run collides with them; when both give up half-way the store keeps the debris and no retry can
    open it. ``os.link`` fails if ``db`` appeared meanwhile (someone else created it first): then this
    copy is dropped and the caller opens theirs, retrying while they finish (:func:`_is_schema_race`).
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    with StoreLock(f"sqlite:///{db}", "mlflow-schema"):
        if db.exists():
            return
        private = db.with_name(f".{db.name}.creating-{os.getpid()}")
        private.unlink(missing_ok=True)  # debris of a process with our pid that died here
        try:
            store = SqlAlchemyStore(f"sqlite:///{private}", artifact_root(f"sqlite:///{db}"))
            store.engine.dispose()
            try:
                os.link(private, db)
            except FileExistsError:
                pass
        except Exception as exc:
            raise TrackingError(f"tracking store '{db}' cannot be created: {str(exc).splitlines()[0][:300]}") from None
        finally:
            private.unlink(missing_ok=True)


def _schema_version(db: Path) -> tuple[str | None, int, float]:
    """``(alembic revision or None, size, mtime)`` of the SQLite store ``db``, read without writing."""
    stat = db.stat()
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            conn.close()
        revision = row[0] if row else None
    except sqlite3.Error:  # no tables yet, or a migration holds the lock
        revision = None
    return revision, stat.st_size, stat.st_mtime


def _wait_while_migrating(db: Path, quiet_s: float = 1.5, limit_s: float = 120.0) -> None:
    """Return once ``db`` is at MLflow's newest schema, or has stopped changing for ``quiet_s``.

    A store that another, unlocked process (an ``mlflow ui``, a plain ``MlflowClient``) is creating or
    migrating changes every few milliseconds; running the migrations beside it breaks both. A store
    at the newest revision returns at once; one that stays still is left to MLflow (an empty file it
    initializes, an old store it refuses with the clear "out-of-date schema" error).
    """
    try:
        from mlflow.store.db.utils import _get_latest_schema_revision

        newest: str | None = _get_latest_schema_revision()
    except Exception:  # a private helper: without it, only the quiet test decides
        newest = None
    try:
        state = _schema_version(db)
        if newest is not None and state[0] == newest:
            return
        quiet_since = start = time.monotonic()
        while time.monotonic() - quiet_since < quiet_s and time.monotonic() - start < limit_s:
            time.sleep(0.1)
            now = _schema_version(db)
            if newest is not None and now[0] == newest:
                return
            if now != state:
                state, quiet_since = now, time.monotonic()
    except OSError:  # removed or unreadable meanwhile: opening it next names the problem
        return


SCHEMA_RACE_RETRIES = 6
"""How often :func:`setup_tracking` retries a schema creation that collided with another process's."""


def _is_schema_race(exc: BaseException) -> bool:
    """Whether ``exc`` is what a concurrent creation or migration of MLflow's SQL schema raises."""
    text = str(exc).lower()
    return any(
        s in text
        for s in (
            "already exists",  # CREATE TABLE, or alembic's batch copy _alembic_tmp_<table>, ran twice
            "database is locked",
            "duplicate column",  # ALTER TABLE ADD COLUMN ran twice
            "expected to match one row",  # alembic: the other process moved alembic_version on first
            "out-of-date database schema",  # the other process is half-way through the migrations
        )
    )


def artifact_root(tracking_uri: str) -> str | None:
    """Where new experiments keep artifacts: beside an embedded SQLite store, else the server's default."""
    if tracking_uri.startswith("sqlite:///"):
        root = Path(tracking_uri[len("sqlite:///") :]).parent / "artifacts"
        root.mkdir(parents=True, exist_ok=True)
        return root.as_uri()
    return None


def get_experiment_id(name: str, tracking_uri: str) -> str:
    """The id of experiment ``name``, created (with artifacts beside an embedded store) if new."""
    import mlflow

    client = mlflow.tracking.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    with StoreLock(tracking_uri, "mlflow-experiment"):  # processes starting together create it once
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        root = artifact_root(tracking_uri)
        try:
            return client.create_experiment(name, artifact_location=f"{root}/{name}" if root else None)
        except mlflow.exceptions.MlflowException as exc:
            # a tracking server takes no client lock: another client created it between the two calls
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return client.get_experiment_by_name(name).experiment_id


# ---- signals -----------------------------------------------------------------------------------


@dataclass
class _SignalState:
    installed: int = 0  # nesting depth of tracked_run in the main thread
    graceful: int = 0  # nesting depth of graceful_stop
    requested: int | None = None  # the signal a graceful loop has been asked to stop for
    previous: dict[int, Any] = field(default_factory=dict)


_SIGNALS = _SignalState()


def _on_signal(signum: int, frame: Any) -> None:
    if _SIGNALS.graceful > 0 and _SIGNALS.requested is None:
        _SIGNALS.requested = signum  # stop at the end of the current iteration
        print(
            f"\n{signal.Signals(signum).name} received: stopping after the current iteration "
            "(send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )
        return
    raise RunInterrupted(signum)


def _install_handlers() -> bool:
    if threading.current_thread() is not threading.main_thread():
        return False
    if _SIGNALS.installed == 0:
        _SIGNALS.requested = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            _SIGNALS.previous[sig] = signal.signal(sig, _on_signal)
    _SIGNALS.installed += 1
    return True


def _restore_handlers() -> None:
    _SIGNALS.installed -= 1
    if _SIGNALS.installed == 0:
        for sig, handler in _SIGNALS.previous.items():
            signal.signal(sig, handler)
        _SIGNALS.previous.clear()
        _SIGNALS.requested = None


@contextmanager
def interrupt_signals() -> Iterator[None]:
    """Inside this block (in the main thread), SIGINT and SIGTERM raise :class:`RunInterrupted`, so a
    loop that owns its records (a tuning worker and its trial) can close them before exiting."""
    handlers = _install_handlers()
    try:
        yield
    finally:
        if handlers:
            _restore_handlers()


@contextmanager
def graceful_stop() -> Iterator[None]:
    """Inside this block, the first SIGINT/SIGTERM only sets a flag (see :func:`check_stop`)."""
    _SIGNALS.graceful += 1
    try:
        yield
    finally:
        _SIGNALS.graceful -= 1


def check_stop() -> None:
    """Raise :class:`RunInterrupted` if a signal asked the running loop to stop (called between iterations)."""
    if _SIGNALS.requested is not None:
        signum, _SIGNALS.requested = _SIGNALS.requested, None
        raise RunInterrupted(signum)


def run_child(cmd: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, **kwargs)`` that never leaves its child behind.

    A SIGTERM sent to this process alone (a scheduler, ``kill``) would end it and leave the child (a peer
    library in its own venv, a simulator) running as an orphan. Here SIGINT and SIGTERM raise inside
    ``subprocess.run``, which kills the child; then the signal takes its usual course: inside an enclosing
    :func:`interrupt_signals` block (``run_main``, a tracked run) :class:`RunInterrupted` reaches that
    block's owner, otherwise the signal is delivered again under the handler this process had before,
    so it ends with the status it always did (143 for SIGTERM, ``KeyboardInterrupt`` for Ctrl-C). Inside a
    :func:`graceful_stop` loop the first signal only asks that loop to stop, and the child finishes.
    """
    owned_outside = _SIGNALS.installed > 0 or threading.current_thread() is not threading.main_thread()
    ignored = (
        [] if owned_outside else [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) == signal.SIG_IGN]
    )
    try:
        with interrupt_signals():
            for sig in ignored:  # e.g. SIGINT in a job a shell started with `&`: it stays ignored
                signal.signal(sig, signal.SIG_IGN)
            return subprocess.run(cmd, **kwargs)  # any exception inside kills the child before propagating
    except RunInterrupted as exc:
        if not owned_outside:
            os.kill(os.getpid(), exc.signum)  # our handlers are gone: the previous one decides
        raise


# ---- the run -----------------------------------------------------------------------------------


@dataclass
class TrackedRun:
    """The open run: its ids, an MLflow client, and a :class:`MLflowTracker` for agents."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    client: Any
    tracker: MLflowTracker
    _on_stop: list[Callable[[], None]] = field(default_factory=list)

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` (errors are reported, not raised) before the run ends FAILED or KILLED."""
        self._on_stop.append(callback)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.tracker.log_params(params)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v)[:5000])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        self.tracker.log_metrics(metrics, step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, obj: Any, name: str, artifact_path: str | None = None) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / name
            p.write_text(json.dumps(obj, indent=2, default=str))
            self.log_artifact(p, artifact_path)

    def log_figure(self, figure: Any, name: str) -> None:
        self.tracker.log_figure(figure, name)


def _format_hint(hint: str | None, run_id: str) -> str:
    return hint.format(run_id=run_id) if hint else ""


@contextmanager
def tracked_run(
    experiment: str = "deeprl",
    *,
    run_name: str | None = None,
    tracking_uri: str | None = None,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    resume_run_id: str | None = None,
    resume_hint: str | None = None,
    nested: bool = False,
) -> Iterator[TrackedRun]:
    """Open (or, with ``resume_run_id``, reopen) one MLflow run and own its final status.

    ``resume_hint`` is the command that continues the run, with ``{run_id}`` filled in; it is
    printed when a signal stops the run. Validate every input *before* entering: a run is created
    on entry, and a bad input should create none.
    """
    import mlflow

    uri = setup_tracking(tracking_uri)
    client = mlflow.tracking.MlflowClient()
    if resume_run_id is not None:
        try:
            experiment_id = client.get_run(resume_run_id).info.experiment_id
        except Exception:
            raise TrackingError(f"no run '{resume_run_id}' in the tracking store {uri}") from None
        active = mlflow.start_run(run_id=resume_run_id, nested=nested)
    else:
        experiment_id = get_experiment_id(experiment, uri)
        active = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, nested=nested)
    run_id = active.info.run_id
    run = TrackedRun(run_id, experiment_id, uri, client, MLflowTracker(run_id, client))
    handlers = _install_handlers()
    try:
        if tags:
            run.set_tags(tags)
        if params:
            run.log_params(params)
        yield run
    except BaseException as exc:
        for callback in run._on_stop:
            try:
                callback()
            except Exception as cb_exc:  # keep ending the run: the record matters more
                print(f"warning: while stopping run {run_id}: {type(cb_exc).__name__}: {cb_exc}", file=sys.stderr)
        interrupted = isinstance(exc, KeyboardInterrupt)
        reason = stop_reason(exc)
        try:
            client.set_tag(run_id, "failure", reason[:5000])
        except Exception:
            pass
        mlflow.end_run("KILLED" if interrupted else "FAILED")
        if interrupted:
            hint = _format_hint(resume_hint, run_id)
            print(
                f"run {run_id} stopped by {reason} and marked KILLED with what it logged"
                + (f"; resume with: {hint}" if hint else ""),
                file=sys.stderr,
                flush=True,
            )
        raise
    else:
        mlflow.end_run("FINISHED")
    finally:
        if handlers:
            _restore_handlers()
