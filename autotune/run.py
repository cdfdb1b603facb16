"""Tuning a user's own objective: ``deeprl tune run --objective module:function --space FILE``.

The study lives in an Optuna storage (default: ``sqlite:///<data dir>/optuna.db``; any RDB URL such
as PostgreSQL for many workers), so re-running the command with the same ``--study`` resumes it
and any number of processes can run it at once. Each study has one MLflow run (its id kept in the
study's user attributes, so every worker finds the same one) and every trial becomes a child run
with its parameters, value and state. An objective that raises or returns NaN is recorded as a
failed trial and the study goes on.

The space file (JSON, YAML or TOML) maps each parameter to its distribution::

    {"lr":     {"type": "float", "low": 1e-5, "high": 1e-1, "log": true},
     "layers": {"type": "int", "low": 1, "high": 8},
     "width":  {"type": "int", "low": 16, "high": 256, "step": 16},
     "act":    {"type": "categorical", "choices": ["relu", "tanh"]}}

The objective is called as ``function(params)`` (or ``function(params, trial)`` when it takes two
arguments, e.g. to report intermediate values for pruning) and returns a float.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from core_rl.common.config import load_config_file
from core_rl.common.errors import ConfigError


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


def make_objective(
    fn: Callable[..., float], space: dict[str, BaseDistribution] | None
) -> Callable[[optuna.Trial], float]:
    """Wrap a user function: sample ``space`` and call ``fn(params[, trial])``; or pass the trial."""
    if space is None:
        return fn
    n_args = len(
        [p for p in inspect.signature(fn).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    )

    def objective(trial: optuna.Trial) -> float:
        params = {name: suggest(trial, name, dist) for name, dist in space.items()}
        value = fn(params, trial) if n_args >= 2 else fn(params)
        return float(value)

    return objective


class MLflowTrialLogger:
    """Optuna callback: every finished trial becomes a child run of the study's MLflow run."""

    def __init__(self, study: optuna.Study, tracking_uri: str | None, experiment: str, sampler: str):
        import mlflow

        from core_rl.common.runs import get_experiment_id, setup_tracking

        uri = setup_tracking(tracking_uri)
        self.client = mlflow.tracking.MlflowClient()
        self.experiment_id = get_experiment_id(experiment, uri)
        self._lock = threading.Lock()
        self.parent_run_id = self._parent(study, sampler)

    def _parent(self, study: optuna.Study, sampler: str) -> str:
        key = "mlflow_run_id"
        existing = study.user_attrs.get(key)
        if existing:
            return str(existing)
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"study {study.study_name}",
            tags={"autotune.kind": "study", "optuna.study": study.study_name},
        )
        study.set_user_attr(key, run.info.run_id)
        # another worker may have raced us: everyone adopts whatever the storage holds now
        stored = optuna.load_study(study_name=study.study_name, storage=study._storage).user_attrs.get(key)
        if stored and stored != run.info.run_id:
            self.client.delete_run(run.info.run_id)
            return str(stored)
        self.client.log_param(run.info.run_id, "sampler", sampler)
        self.client.log_param(run.info.run_id, "direction", study.direction.name.lower())
        return run.info.run_id

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        from mlflow.entities import Metric, Param

        with self._lock:
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"trial {trial.number}",
                tags={
                    "mlflow.parentRunId": self.parent_run_id,
                    "autotune.kind": "trial",
                    "optuna.study": study.study_name,
                    "optuna.trial": str(trial.number),
                    "optuna.state": trial.state.name,
                },
            )
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
    n_trials: int
    n_complete: int
    n_failed: int
    best_value: float | None
    best_params: dict[str, Any]
    mlflow_run_id: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def tune_run(
    objective: str | Callable[..., float],
    space: str | Path | dict[str, Any] | None,
    sampler: str = "rl",
    trials: int = 50,
    storage: str | None = None,
    study_name: str = "autotune",
    direction: str = "minimize",
    seed: int | None = None,
    tracking_uri: str | None = None,
    experiment: str = "autotune",
    log_mlflow: bool = True,
    timeout: float | None = None,
) -> RunResult:
    """Run (or resume) ``trials`` more trials of a user's objective in a stored study."""
    from autotune.compare import make_sampler

    if trials <= 0:
        raise ConfigError(f"--trials must be positive, got {trials}")
    if direction not in ("minimize", "maximize"):
        raise ConfigError(f"--direction must be minimize or maximize, got '{direction}'")
    fn = load_objective(objective) if isinstance(objective, str) else objective
    dists = None if space is None else (parse_space(space) if isinstance(space, dict) else load_space(space))
    storage = storage or default_storage()
    optuna_sampler = make_sampler(sampler, seed if seed is not None else _fresh_seed(), trials)
    try:
        study = optuna.create_study(
            study_name=study_name, storage=storage, sampler=optuna_sampler, direction=direction, load_if_exists=True
        )
    except Exception as exc:  # unreachable database, bad URL, driver missing
        raise ConfigError(f"storage '{storage}' cannot be used: {str(exc).splitlines()[0][:300]}") from None
    if study.direction.name.lower() != direction:
        raise ConfigError(f"study '{study_name}' already exists with direction {study.direction.name.lower()}")
    objective_fn = make_objective(fn, dists)
    logger = None
    if not log_mlflow:
        study.optimize(objective_fn, n_trials=trials, catch=(Exception,), timeout=timeout)
    else:
        from core_rl.common.runs import tracked_run

        logger = MLflowTrialLogger(study, tracking_uri, experiment, sampler)
        # the study's run is RUNNING while this worker optimizes, and ends FINISHED, FAILED or KILLED with it
        hint = (
            f"deeprl tune run --objective {objective if isinstance(objective, str) else '...'} "
            + (f"--space {space} " if isinstance(space, (str, Path)) else "")
            + f"--study {study_name} --storage {storage} --sampler {sampler} --trials N"
        )
        with tracked_run(experiment, tracking_uri=tracking_uri, resume_run_id=logger.parent_run_id, resume_hint=hint):
            study.optimize(objective_fn, n_trials=trials, catch=(Exception,), callbacks=[logger], timeout=timeout)
    all_trials = study.get_trials(deepcopy=False)
    try:
        best_value, best_params = float(study.best_value), dict(study.best_params)
    except ValueError:
        best_value, best_params = None, {}
    return RunResult(
        study_name,
        storage,
        len(all_trials),
        sum(t.state == TrialState.COMPLETE for t in all_trials),
        sum(t.state == TrialState.FAIL for t in all_trials),
        best_value,
        best_params,
        logger.parent_run_id if logger else None,
    )


def _fresh_seed() -> int:
    import os

    return int.from_bytes(os.urandom(4), "little")


def dumps(result: RunResult) -> str:
    return json.dumps(result.as_dict(), default=str)
