"""The notes' experiments as MLflow runs: ``deeprl experiment NAME``.

Each experiment is a function ``fn(tracker, seed=..., **kwargs) -> dict`` in the core that logs its
plot through the tracker; this module runs it inside one MLflow run, records the keyword arguments
as params and the returned numbers as ``result.json``, and prints the numbers as a table.
``EXPERIMENTS`` lists every claim with the lecture (the notes' date heading) it comes from;
docs/experiments.md holds the measured results.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core_rl.common.errors import ConfigError
from core_rl.common.runs import tracked_run


@dataclass(frozen=True)
class ExperimentSpec:
    """One claim of the notes: ``lecture`` (the notes' date heading), the ``claim`` and the function."""

    name: str
    target: str
    lecture: str
    claim: str

    @property
    def topic(self) -> str:
        return f"{self.lecture}: {self.claim}"

    def load(self) -> Callable[..., dict[str, Any]]:
        module, attr = self.target.split(":")
        return getattr(importlib.import_module(module), attr)


EXPERIMENTS: dict[str, ExperimentSpec] = {
    e.name: e
    for e in [
        ExperimentSpec(
            "pg_variance",
            "core_rl.policy_gradient.experiments:run_pg_variance",
            "9/5 policy gradient",
            "reward-to-go and baselines cut the variance of REINFORCE (vs the exact gradient)",
        ),
        ExperimentSpec(
            "importance_weights",
            "core_rl.policy_gradient.experiments:run_importance_weight_variance",
            "9/5 policy gradient",
            "the variance of the product of importance weights grows exponentially with the horizon",
        ),
        ExperimentSpec(
            "compounding_error",
            "core_rl.imitation.experiments:run_compounding_error",
            "9/5 imitation learning",
            "behavioural cloning's cost grows as O(εT²), DAgger's as O(εT)",
        ),
        ExperimentSpec(
            "nstep",
            "core_rl.q_learning.experiments:run_nstep_sweep",
            "9/14 Q-learning",
            "N-step returns speed up learning",
        ),
        ExperimentSpec(
            "overestimation",
            "core_rl.q_learning.experiments:run_overestimation",
            "9/14 Q-learning",
            "double Q-learning cuts the overestimation of DQN's predicted Q",
        ),
        ExperimentSpec(
            "natural_gradient",
            "core_rl.trust_region.experiments:run_natural_gradient_invariance",
            "9/19 natural policy gradient",
            "the natural gradient is invariant to reparametrization, the vanilla one is not",
        ),
        ExperimentSpec(
            "model_error",
            "core_rl.model_based.experiments:run_model_error",
            "9/26-28 model-based RL",
            "model error compounds with the planning horizon; an ensemble (PETS) reduces it",
        ),
        ExperimentSpec(
            "soft_optimality",
            "core_rl.inference.experiments:run_soft_optimality",
            "10/10 control as inference",
            "the backward messages are soft value iteration",
        ),
        ExperimentSpec(
            "chain_exploration",
            "core_rl.exploration.experiments:run_chain_exploration",
            "10/17-19 exploration",
            "optimism and Thompson sampling solve a chain that ε-greedy does not",
        ),
        ExperimentSpec(
            "rl2_bandits",
            "core_rl.meta.experiments:run_rl2_bandits",
            "10/24-26 meta-RL",
            "an RNN policy (RL²) learns to explore and exploit new bandit tasks",
        ),
        ExperimentSpec(
            "domain_randomization",
            "core_rl.meta.experiments:run_domain_randomization",
            "10/24-26 transfer learning",
            "training on randomized physics transfers to held-out physics",
        ),
        ExperimentSpec(
            "diayn",
            "core_rl.meta.experiments:run_diayn",
            "11/2 unsupervised RL",
            "DIAYN learns distinguishable skills without a reward",
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


def _cell(x: Any) -> str:
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, list):
        if x and all(isinstance(v, dict) for v in x):
            return f"[{len(x)} records: {', '.join(map(str, x[0]))}]"
        if len(x) > 8:
            numbers = [v for v in x if isinstance(v, (int, float)) and not isinstance(v, bool)]
            mean = f", mean {_cell(sum(numbers) / len(numbers))}" if len(numbers) == len(x) else ""
            return f"[{', '.join(_cell(v) for v in x[:3])}, ... ({len(x)} values{mean}) ..., {_cell(x[-1])}]"
        return f"[{', '.join(_cell(v) for v in x)}]"
    return str(x)


def summary_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The result as (dotted key, value) rows: nested dicts flattened, numbers to 4 significant digits,
    long lists shortened (with their mean), lists of records counted."""
    rows: list[tuple[str, str]] = []

    def walk(prefix: str, x: Any) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            rows.append((prefix, _cell(x)))

    walk("", _jsonable(result))
    return rows


def summary_table(name: str, run_id: str, result: dict[str, Any]) -> str:
    """A plain aligned table of the experiment's numbers, headed by its claim and run id."""
    spec = EXPERIMENTS[name]
    rows = summary_rows(result)
    width = max([len("quantity"), *(len(k) for k, _ in rows)])
    lines = [
        f"experiment {name} ({spec.lecture}): {spec.claim}",
        f"MLflow run {run_id}",
        f"{'quantity':<{width}}  value",
        f"{'-' * width}  {'-' * 5}",
        *(f"{k:<{width}}  {v}" for k, v in rows),
    ]
    return "\n".join(lines)


def run_experiment(
    name: str,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    tracking_uri: str | None = None,
    echo: bool = True,
) -> tuple[str, dict[str, Any]]:
    """Run experiment ``name`` in a new MLflow run; returns (run_id, result).

    With ``echo`` the :func:`summary_table` is printed to stderr (stdout stays the CLI's run id or
    ``--json`` line, so that it can still be parsed).
    """
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
    if echo:
        print(summary_table(name, run.run_id, result), file=sys.stderr, flush=True)
    return run.run_id, result
