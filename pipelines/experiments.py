"""The notes' experiments as MLflow runs: ``deeprl experiment NAME``.

Each experiment is a function ``fn(tracker, seed=..., **kwargs) -> dict`` in the core that logs its
plot through the tracker; this module runs it inside one MLflow run, records the keyword arguments
as params and the returned numbers as ``result.json``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core_rl.common.errors import ConfigError
from core_rl.common.runs import tracked_run


@dataclass(frozen=True)
class ExperimentSpec:
    name: str
    target: str
    topic: str

    def load(self) -> Callable[..., dict[str, Any]]:
        module, attr = self.target.split(":")
        return getattr(importlib.import_module(module), attr)


EXPERIMENTS: dict[str, ExperimentSpec] = {
    e.name: e
    for e in [
        ExperimentSpec(
            "overestimation",
            "core_rl.q_learning.experiments:run_overestimation",
            "9/14 predicted vs actual Q of DQN and double DQN",
        ),
        ExperimentSpec(
            "nstep",
            "core_rl.q_learning.experiments:run_nstep_sweep",
            "9/14 speed of learning vs N of the N-step return",
        ),
        ExperimentSpec(
            "compounding_error",
            "core_rl.imitation.experiments:run_compounding_error",
            "9/5 behavioural cloning's O(εT²) vs DAgger's O(εT) cost over horizons",
        ),
    ]
}


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, (int, float, str, bool)) or x is None:
        return x
    return str(x)


def run_experiment(
    name: str, seed: int = 0, overrides: dict[str, Any] | None = None, tracking_uri: str | None = None
) -> tuple[str, dict[str, Any]]:
    """Run experiment ``name`` in a new MLflow run; returns (run_id, result)."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment '{name}'; known: {', '.join(sorted(EXPERIMENTS))}")
    fn = EXPERIMENTS[name].load()
    overrides = dict(overrides or {})
    accepted = set(inspect.signature(fn).parameters) - {"tracker"}
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise ConfigError(
            f"experiment '{name}' has no parameter {', '.join(map(repr, unknown))}; "
            f"it takes {', '.join(sorted(accepted))}"
        )
    with tracked_run(
        "experiments",
        run_name=f"{name}-s{seed}",
        tracking_uri=tracking_uri,
        tags={"experiment": name, "topic": EXPERIMENTS[name].topic},
        params={"experiment": name, "seed": seed, **overrides},
    ) as run:
        result = fn(tracker=run.tracker, seed=seed, **overrides)
        run.log_dict(_jsonable(result), "result.json")
    return run.run_id, result
