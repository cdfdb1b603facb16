"""Tuning a user's own objective: ``deeprl tune run --objective module:function --space FILE``.

The study lives in an Optuna storage (default: ``sqlite:///<data dir>/optuna.db``; any RDB URL such
as PostgreSQL for many workers) and is named, unless ``--study`` says otherwise, after the objective
and the space (``module:function@<space stem>-<hash>``); it records the objective it tunes and
refuses another one. ``--trials`` is the study's *global* budget: start the same command in N
processes or machines and together they run that many trials (:mod:`autotune.worker` claims each
under a cross-process lock, keeps it alive with heartbeats, fails and queues again a trial whose
worker died). Processes that start together on an empty database and an empty data folder create
the schemas one at a time (:class:`~core_rl.common.store_lock.StoreLock`). Re-running the command
finishes an unfinished study; a larger ``--trials`` extends a finished one.

Each study has one MLflow run (its id kept in the study's user attributes, so every worker finds
the same one), FINISHED when the study reaches its budget, and every trial becomes a child run with
its parameters, value and state. An objective that raises, or returns anything but a finite number
(a string such as ``"0.5"``, ``None``, ``inf``, ``nan``), is a failed trial with one line on stderr;
a raised exception's traceback goes to the trial's MLflow run (``traceback.txt``). The study goes on.

The space file (JSON, YAML or TOML) maps each parameter to its distribution::

    {"lr":     {"type": "float", "low": 1e-5, "high": 1e-1, "log": true},
     "layers": {"type": "int", "low": 1, "high": 8},
     "width":  {"type": "int", "low": 16, "high": 256, "step": 16},
     "act":    {"type": "categorical", "choices": ["relu", "tanh"]}}

The objective is called as ``function(params)`` (or ``function(params, trial)`` when it takes two
arguments, e.g. to report intermediate values for pruning) and returns a float.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import math
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from autotune.worker import StaleTrials, TrialOutcome, budget_state, one_line, run_worker
from core_rl.common.config import load_config_file
from core_rl.common.errors import ConfigError
from core_rl.common.store_lock import StoreLock


class FloatParam(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "FloatParam":
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) < low ({self.low})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scaled float needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("step and log cannot be combined")
        return self

    def distribution(self) -> BaseDistribution:
        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)


class IntParam(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "IntParam":
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) < low ({self.low})")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("a log-scaled int needs low >= 1 and step 1")
        return self

    def distribution(self) -> BaseDistribution:
        return IntDistribution(self.low, self.high, log=self.log, step=self.step)


class CategoricalParam(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["categorical"]
    choices: list[None | bool | int | float | str] = Field(min_length=1)

    def distribution(self) -> BaseDistribution:
        return CategoricalDistribution(self.choices)


ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]
_SPACE = TypeAdapter(dict[str, ParamSpec])


def parse_space(data: dict[str, Any]) -> dict[str, BaseDistribution]:
    """A mapping of parameter specs -> Optuna distributions (ConfigError naming the bad field)."""
    if not data:
        raise ConfigError("the search space is empty")
    try:
        specs = _SPACE.validate_python(data)
    except ValidationError as err:
        parts = []
        for e in err.errors():
            loc = [str(p) for p in e["loc"] if p not in ("float", "int", "categorical")]  # drop the union tag
            msg = "unknown field" if e["type"] == "extra_forbidden" else e["msg"]
            parts.append(f"space field '{'.'.join(loc)}': {msg}")
        raise ConfigError("; ".join(parts)) from None
    return {name: spec.distribution() for name, spec in specs.items()}


def load_space(path: str | Path) -> dict[str, BaseDistribution]:
    return parse_space(load_config_file(path))


def load_objective(target: str) -> Callable[..., float]:
    """``module:function`` -> the function (the current directory is importable)."""
    if ":" not in target:
        raise ConfigError(f"--objective must look like module:function, got '{target}'")
    module_name, attr = target.split(":", 1)
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"objective module '{module_name}' cannot be imported: {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"objective '{target}': module '{module_name}' has no function '{attr}'")
    return fn


def default_storage() -> str:
    from core_rl.common.runs import data_dir

    d = data_dir()
    d.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{d / 'optuna.db'}"


def suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    """``trial.suggest_*`` for one distribution."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    assert isinstance(dist, FloatDistribution)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def make_objective(fn: Callable[..., Any], space: dict[str, BaseDistribution] | None) -> Callable[[optuna.Trial], Any]:
    """Wrap a user function: sample ``space`` and call ``fn(params[, trial])``; or pass the trial.

    The value is returned as the function gave it: :func:`autotune.worker.check_value` judges it.
    """
    if space is None:
        return fn
    n_args = len(
        [p for p in inspect.signature(fn).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    )

    def objective(trial: optuna.Trial) -> Any:
        params = {name: suggest(trial, name, dist) for name, dist in space.items()}
        return fn(params, trial) if n_args >= 2 else fn(params)

    return objective


def objective_id(objective: str | Callable[..., Any]) -> str:
    """``module:function`` for a target string or a function (what a study records it tunes)."""
    if isinstance(objective, str):
        return objective
    return f"{getattr(objective, '__module__', '?')}:{getattr(objective, '__qualname__', repr(objective))}"


def space_id(space: str | Path | dict[str, Any] | None, data: dict[str, Any] | None) -> str:
    """The space's file stem (or ``space``) and 8 hex digits of a hash of its content; ``trial``
    when the objective samples its own parameters."""
    if data is None:
        return "trial"
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]
    stem = Path(space).stem if isinstance(space, (str, Path)) else "space"
    return f"{stem}-{digest}"


def default_study_name(objective: str | Callable[..., Any], space: str | Path | dict[str, Any] | None) -> str:
    """``<module:function>@<space stem>-<hash>``: one study per objective and search space."""
    data = None if space is None else (space if isinstance(space, dict) else load_config_file(space))
    return f"{objective_id(objective)}@{space_id(space, data)}"


class MLflowTrialLogger:
    """Every finished trial becomes a child run of the study's MLflow run (its parent).

    The parent is created once per study (inside the study's lock, its id kept in the study's user
    attributes so every worker finds it). It is RUNNING while any worker works and ends FINISHED
    when the study reaches its budget; a worker that stops early while no other trial runs ends it
    KILLED (interrupted, or ``--timeout``) or FAILED (crashed), and the next worker reopens it.
    """

    KEY = "mlflow_run_id"

    def __init__(self, study: optuna.Study, tracking_uri: str | None, experiment: str, sampler: str):
        import mlflow

        from core_rl.common.runs import get_experiment_id, setup_tracking

        uri = setup_tracking(tracking_uri)
        self.client = mlflow.tracking.MlflowClient()
        self.experiment_id = get_experiment_id(experiment, uri)
        self._lock = threading.Lock()
        self.parent_run_id = self._parent(study, sampler)

    def _parent(self, study: optuna.Study, sampler: str) -> str:
        """The study's run (call inside the study's lock: the first worker creates it)."""
        existing = study.user_attrs.get(self.KEY)
        if existing:
            return str(existing)
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"study {study.study_name}",
            tags={"autotune.kind": "study", "optuna.study": study.study_name},
        )
        self.client.log_param(run.info.run_id, "sampler", sampler)
        self.client.log_param(run.info.run_id, "direction", study.direction.name.lower())
        study.set_user_attr(self.KEY, run.info.run_id)
        return run.info.run_id

    def reopen(self) -> None:
        """Mark the study's run RUNNING again (a worker is starting on an unfinished study)."""
        if self.client.get_run(self.parent_run_id).info.status != "RUNNING":
            self.client.update_run(self.parent_run_id, status="RUNNING")

    def end(self, status: str, reason: str | None = None) -> None:
        if self.client.get_run(self.parent_run_id).info.status == status:
            return  # another worker ended it already
        if reason:
            self.client.set_tag(self.parent_run_id, "failure", reason[:5000])
        self.client.set_terminated(self.parent_run_id, status)

    def __call__(self, study: optuna.Study, outcome: TrialOutcome) -> None:
        from mlflow.entities import Metric, Param

        trial = outcome.trial
        with self._lock:
            tags = {
                "mlflow.parentRunId": self.parent_run_id,
                "autotune.kind": "trial",
                "optuna.study": study.study_name,
                "optuna.trial": str(trial.number),
                "optuna.state": trial.state.name,
            }
            if "failed_trial" in trial.system_attrs:
                tags["optuna.retry_of"] = str(trial.system_attrs["failed_trial"])
            if outcome.error:
                tags["failure"] = outcome.error[:5000]
            run = self.client.create_run(self.experiment_id, run_name=f"trial {trial.number}", tags=tags)
            ts = int(time.time() * 1000)
            metrics = []
            if trial.state == TrialState.COMPLETE and trial.value is not None and math.isfinite(trial.value):
                metrics.append(Metric("value", float(trial.value), ts, 0))
            for step, v in trial.intermediate_values.items():
                if v is not None and math.isfinite(v):
                    metrics.append(Metric("intermediate_value", float(v), ts, int(step)))
            self.client.log_batch(
                run.info.run_id, metrics=metrics, params=[Param(k, str(v)[:6000]) for k, v in trial.params.items()]
            )
            if outcome.traceback:
                self.client.log_text(run.info.run_id, outcome.traceback, "traceback.txt")
            self.client.set_terminated(run.info.run_id, "FINISHED" if trial.state == TrialState.COMPLETE else "FAILED")
            try:
                best = study.best_value
                self.client.log_metric(self.parent_run_id, "best_value", float(best), step=trial.number)
            except ValueError:
                pass


@dataclass
class RunResult:
    study: str
    storage: str
    budget: int
    done: bool  # the study reached its budget: nothing waiting or running
    n_trials: int
    n_complete: int
    n_failed: int
    n_run_here: int  # trials this worker evaluated
    best_value: float | None
    best_params: dict[str, Any]
    mlflow_run_id: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


OBJECTIVE_ATTR = "autotune.objective"
SPACE_ATTR = "autotune.space"


def open_storage(url: str, heartbeat: int, grace: int | None, stale: StaleTrials | None) -> optuna.storages.RDBStorage:
    """The Optuna RDB storage at ``url``, its schema created by one process at a time."""
    kwargs: dict[str, Any] = {}
    if heartbeat > 0:
        kwargs = {"heartbeat_interval": heartbeat, "grace_period": grace, "heartbeat_stale_trial_callback": stale}
    lock = StoreLock(url, "optuna-schema")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            with lock:
                return optuna.storages.RDBStorage(url, **kwargs)
    except Exception as exc:  # unreachable database, bad URL, driver missing
        raise ConfigError(f"storage '{url}' cannot be used: {one_line(str(exc))}") from None
    finally:
        lock.close()


def tune_run(
    objective: str | Callable[..., Any],
    space: str | Path | dict[str, Any] | None,
    sampler: str = "rl",
    trials: int = 50,
    storage: str | None = None,
    study_name: str | None = None,
    direction: str = "minimize",
    seed: int | None = None,
    tracking_uri: str | None = None,
    experiment: str = "autotune",
    log_mlflow: bool = True,
    timeout: float | None = None,
    heartbeat: int = 10,
    grace: int | None = None,
    stale_retries: int = 1,
    pruner: str = "none",
) -> RunResult:
    """Work on a stored study until it holds ``trials`` requested trials in all (its global budget,
    shared by every worker on it), or ``timeout`` seconds pass; return where the study stands.

    ``study_name`` defaults to :func:`default_study_name` (objective and space); a study records the
    objective it tunes and refuses another one. ``heartbeat`` (seconds, 0 = off) and ``grace``
    (default twice the heartbeat) decide when a RUNNING trial whose worker died is failed, and
    ``stale_retries`` how many times such a trial (or one interrupted by a signal) is queued again.
    ``pruner`` (``none``, ``median``, ``sha``, ``hyperband``: :func:`autotune.fidelity.make_pruner`)
    stops trials whose reported intermediate values (``trial.report``, e.g. by
    :class:`autotune.fidelity.PruningCallback`) fall behind; they end PRUNED.
    """
    from autotune.compare import make_sampler
    from autotune.fidelity import make_pruner
    from core_rl.common.runs import interrupt_signals

    if trials <= 0:
        raise ConfigError(f"--trials must be positive, got {trials}")
    if direction not in ("minimize", "maximize"):
        raise ConfigError(f"--direction must be minimize or maximize, got '{direction}'")
    if heartbeat < 0:
        raise ConfigError(f"--heartbeat must be >= 0 seconds (0 turns it off), got {heartbeat}")
    if grace is not None and (heartbeat == 0 or grace < heartbeat):
        raise ConfigError(f"--grace must be at least --heartbeat ({heartbeat} s), got {grace}")
    if stale_retries < 0:
        raise ConfigError(f"--stale-retries must be >= 0, got {stale_retries}")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"--timeout must be positive, got {timeout}")
    optuna_pruner = make_pruner(pruner)
    fn = load_objective(objective) if isinstance(objective, str) else objective
    space_data = None if space is None else (space if isinstance(space, dict) else load_config_file(space))
    dists = None if space_data is None else parse_space(space_data)
    obj_id, sp_id = objective_id(objective), space_id(space, space_data)
    study_name = study_name or f"{obj_id}@{sp_id}"  # = default_study_name(objective, space)
    storage = storage or default_storage()
    optuna_sampler = make_sampler(sampler, seed if seed is not None else _fresh_seed(), trials)
    stale = StaleTrials(stale_retries)
    rdb = open_storage(storage, heartbeat, grace, stale if heartbeat > 0 else None)
    study_lock = StoreLock(storage, f"optuna-study:{study_name}")
    logger: MLflowTrialLogger | None = None
    try:
        with study_lock:
            try:
                study = optuna.create_study(
                    study_name=study_name,
                    storage=rdb,
                    sampler=optuna_sampler,
                    pruner=optuna_pruner,
                    direction=direction,
                    load_if_exists=True,
                )
            except Exception as exc:
                raise ConfigError(f"storage '{storage}' cannot be used: {one_line(str(exc))}") from None
            if study.direction.name.lower() != direction:
                raise ConfigError(f"study '{study_name}' already exists with direction {study.direction.name.lower()}")
            recorded = study.user_attrs.get(OBJECTIVE_ATTR)
            if recorded is None:
                study.set_user_attr(OBJECTIVE_ATTR, obj_id)
                study.set_user_attr(SPACE_ATTR, sp_id)
            elif recorded != obj_id:
                raise ConfigError(
                    f"study '{study_name}' tunes objective '{recorded}', not '{obj_id}': "
                    "give another --study, or leave --study out (the default is named after the objective and space)"
                )
            study.set_user_attr("autotune.budget", trials)
            if log_mlflow:
                logger = MLflowTrialLogger(study, tracking_uri, experiment, sampler)
                stale.on_failed = logger
                if not budget_state(study, trials).done:
                    logger.reopen()
        hint = (
            f"deeprl tune run --objective {obj_id} "
            + (f"--space {space} " if isinstance(space, (str, Path)) else "")
            + f"--study '{study_name}' --storage {storage} --sampler {sampler} --trials {trials}"
            + (f" --pruner {pruner}" if pruner != "none" else "")
        )
        with interrupt_signals():
            try:
                result = run_worker(
                    study,
                    make_objective(fn, dists),
                    trials,
                    lock=study_lock,
                    timeout=timeout,
                    stale=stale,
                    on_trial=logger,
                )
            except BaseException as exc:
                _stop_parent(study, trials, logger, exc, hint)
                raise
        if logger is not None:
            if result.state.done:
                logger.end("FINISHED")
            elif budget_state(study, trials).running == 0:  # stopped early, and nobody else works on it
                logger.client.set_tag(logger.parent_run_id, "autotune.stopped", result.stopped)
                logger.end("KILLED")
                print(
                    f"study '{study_name}' stopped before its budget ({result.stopped}); resume with: {hint}",
                    file=sys.stderr,
                )
    finally:
        study_lock.close()
    all_trials = study.get_trials(deepcopy=False)
    try:
        best_value, best_params = float(study.best_value), dict(study.best_params)
    except ValueError:
        best_value, best_params = None, {}
    return RunResult(
        study_name,
        storage,
        trials,
        result.state.done,
        len(all_trials),
        sum(t.state == TrialState.COMPLETE for t in all_trials),
        sum(t.state == TrialState.FAIL for t in all_trials),
        result.n_run,
        best_value,
        best_params,
        logger.parent_run_id if logger else None,
    )


def _stop_parent(
    study: optuna.Study, budget: int, logger: MLflowTrialLogger | None, exc: BaseException, hint: str
) -> None:
    """A worker stops on a signal or a crash: end the study's run unless other workers still run trials."""
    from core_rl.common.runs import stop_reason

    if logger is None:
        return
    interrupted = isinstance(exc, KeyboardInterrupt)
    reason = stop_reason(exc)
    try:
        others = budget_state(study, budget).running
    except Exception:
        others = 0
    if others:
        print(
            f"worker stopped by {reason}; {others} trial(s) of study '{study.study_name}' still run elsewhere",
            file=sys.stderr,
        )
        return
    try:
        logger.end("KILLED" if interrupted else "FAILED", reason)
    except Exception:
        pass
    if interrupted:
        print(
            f"run {logger.parent_run_id} stopped by {reason} and marked KILLED with what it logged; resume with: {hint}",
            file=sys.stderr,
            flush=True,
        )


def _fresh_seed() -> int:
    import os

    return int.from_bytes(os.urandom(4), "little")


def dumps(result: RunResult) -> str:
    return json.dumps(result.as_dict(), default=str)
