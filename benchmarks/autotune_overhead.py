"""The meta sampler's own CPU per trial late in a long study, robust to a shared machine.

    OMP_NUM_THREADS=1 python -m benchmarks.autotune_overhead --tasks conditional:0,1,2,3 bbob24-d10:0 mixed:3

For each task one study of ``--trials`` trials with ``MetaSampler(seed, n_trials_hint=trials)`` is run
``--repeats`` times; the sampler's calls are timed by process CPU time per trial, each trial keeps its
minimum over the identical (deterministic) repeats, and the table reports the mean over the last
``--last`` trials. The minimum removes most of what other jobs on the machine's cores add; comparing
two versions still wants them measured side by side (run this module from one checkout with
``PYTHONPATH`` pointing at the other's). The objective's own time is not counted.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna

from autotune.meta import MetaSampler
from autotune.suites import get_suite
from core_rl.common.errors import ConfigError


class _Timed(optuna.samplers.BaseSampler):
    """Delegates to ``inner`` and adds the CPU seconds of its sampling calls to ``cpu[trial number]``."""

    def __init__(self, inner: MetaSampler, cpu: dict[int, float]):
        self.inner, self.cpu = inner, cpu

    def _timed(self, number: int, fn: Any, *args: Any) -> Any:
        start = time.process_time()
        out = fn(*args)
        self.cpu[number] = self.cpu.get(number, 0.0) + time.process_time() - start
        return out

    def infer_relative_search_space(self, study: optuna.Study, trial: Any) -> dict[str, Any]:
        return self._timed(trial.number, self.inner.infer_relative_search_space, study, trial)

    def sample_relative(self, study: optuna.Study, trial: Any, space: dict[str, Any]) -> dict[str, Any]:
        return self._timed(trial.number, self.inner.sample_relative, study, trial, space)

    def sample_independent(self, study: optuna.Study, trial: Any, name: str, dist: Any) -> Any:
        return self._timed(trial.number, self.inner.sample_independent, study, trial, name, dist)

    def before_trial(self, study: optuna.Study, trial: Any) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: Any, state: Any, values: Any) -> None:
        self.inner.after_trial(study, trial, state, values)


def late_cpu_ms(suite: str, index: int, trials: int, repeats: int, last: int, seed: int) -> tuple[str, float, float]:
    """(task name, mean CPU ms per trial over the last ``last`` trials (per-trial minimum over repeats), best value)."""
    tasks = get_suite(suite)
    if not 0 <= index < len(tasks):
        raise ConfigError(f"task index {index} out of range for suite '{suite}' ({len(tasks)} tasks)")
    task = tasks[index]
    runs, best = [], float("nan")
    for _ in range(repeats):
        cpu: dict[int, float] = {}
        study = optuna.create_study(
            sampler=_Timed(MetaSampler(seed=seed, n_trials_hint=trials), cpu), direction=task.direction
        )
        study.optimize(task.objective, n_trials=trials)
        runs.append([cpu.get(n, 0.0) for n in range(trials - last, trials)])
        best = study.best_value
    return task.name, 1000.0 * float(np.mean(np.min(runs, axis=0))), best


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", required=True, help="SUITE:i,j,... (task indices within the suite)")
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--last", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not 0 < args.last <= args.trials:
        raise ConfigError(f"--last must be in 1..--trials ({args.trials}), got {args.last}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"| task | CPU ms per trial, last {args.last} of {args.trials} (min of {args.repeats}) | best value |")
    print("|---|---|---|")
    for spec in args.tasks:
        suite, _, picks = spec.partition(":")
        for i in [int(k) for k in picks.split(",")] if picks else range(len(get_suite(suite))):
            name, ms, best = late_cpu_ms(suite, i, args.trials, args.repeats, args.last, args.seed)
            print(f"| {name} | {ms:.1f} | {best:.4g} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
