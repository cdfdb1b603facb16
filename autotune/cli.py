"""``deeprl tune``: compare samplers, or tune your own objective.

    deeprl tune compare --suite tabular --samplers rl,meta,tpe,random,cmaes,gp --trials 50,200 --seeds 10
    deeprl tune run --objective mymodule:objective --space space.json --sampler rl --trials 100 \\
                    [--storage postgresql://...] [--study NAME] [--heartbeat 10 --grace 20 --stale-retries 1] \\
                    [--pruner none|median|sha|hyperband]

``--trials`` is the study's budget, not the worker's: start the same command N times (with a shared
``--storage``) and the N workers run 100 trials together.

``pipelines/cli.py`` registers these with :func:`add_tune_parser` and dispatches to :func:`cmd_tune`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from core_rl.common.errors import ConfigError


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def add_tune_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``tune compare`` and ``tune run`` to the ``deeprl`` sub-command parsers."""
    from autotune.compare import SAMPLER_NAMES
    from autotune.suites import SUITES

    tune = subparsers.add_parser("tune", help="RL hyperparameter tuning inside Optuna")
    sub = tune.add_subparsers(dest="tune_command", required=True)

    c = sub.add_parser("compare", help="every sampler on every task of a suite, same budget; logged to MLflow")
    c.add_argument("--suite", required=True, help=f"one of {', '.join(SUITES)} (join with '+')")
    c.add_argument(
        "--samplers", default="rl,meta,tpe,random,cmaes,gp", help=f"comma list of {', '.join(SAMPLER_NAMES)}"
    )
    c.add_argument("--trials", type=_int_list, default=[50, 200], help="budgets, e.g. 50,200")
    c.add_argument("--seeds", type=int, default=10)
    c.add_argument("--jobs", type=int, default=1, help="worker processes")
    c.add_argument("--storage", default=None, help="Optuna storage for the studies (default: in memory)")
    c.add_argument("--experiment", default="autotune")
    c.add_argument("--no-mlflow", action="store_true", help="print the report only")
    c.add_argument("--out", default=None, help="also write summary JSON here")
    c.add_argument("--json", action="store_true", help="print the summary as JSON")
    c.add_argument("--tracking-uri", default=None)
    c.add_argument(
        "--reference", default="best-peer", help="the Wilcoxon tests' reference: a sampler, or best-peer (default)"
    )

    r = sub.add_parser("run", help="tune your own objective in a stored, resumable study")
    r.add_argument("--objective", required=True, help="module:function")
    r.add_argument("--space", default=None, help="JSON/YAML/TOML search space (else the objective takes a trial)")
    r.add_argument("--sampler", default="rl", help=f"one of {', '.join(SAMPLER_NAMES)}")
    r.add_argument(
        "--trials",
        type=int,
        default=50,
        help="the study's total budget, shared by every worker on it (raise it to extend a study)",
    )
    r.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite under the data folder)")
    r.add_argument(
        "--study",
        default=None,
        help="study name (default: named after the objective and the space; re-using it resumes the study)",
    )
    r.add_argument("--direction", default="minimize", choices=["minimize", "maximize"])
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")
    r.add_argument(
        "--heartbeat",
        type=int,
        default=10,
        help="seconds between a running trial's heartbeats (0: off; then a killed worker's trial stays RUNNING)",
    )
    r.add_argument(
        "--grace",
        type=int,
        default=None,
        help="seconds without a heartbeat before a trial is failed (default: twice --heartbeat)",
    )
    r.add_argument(
        "--stale-retries",
        type=int,
        default=1,
        help="times a trial whose worker died (or was interrupted) is queued again (0: never)",
    )
    r.add_argument(
        "--pruner",
        default="none",
        choices=["none", "median", "sha", "hyperband"],
        help="stop trials whose reported intermediate values fall behind (autotune.fidelity.PruningCallback)",
    )
    r.add_argument("--experiment", default="autotune")
    r.add_argument("--no-mlflow", action="store_true")
    r.add_argument("--json", action="store_true")
    r.add_argument("--tracking-uri", default=None)
    return tune


def cmd_tune(args: argparse.Namespace) -> int:
    if args.tune_command == "compare":
        return _compare(args)
    return _run(args)


def _compare(args: argparse.Namespace) -> int:
    from autotune.compare import analyze, compare, log_comparison, summary_table
    from autotune.suites import get_suite

    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    if args.seeds <= 0:
        raise ConfigError(f"--seeds must be positive, got {args.seeds}")
    tasks = get_suite(args.suite)
    total = len(tasks) * len(samplers) * len(args.trials) * args.seeds
    done = [0]

    def progress(r: Any) -> None:
        done[0] += 1
        if not args.json:
            print(
                f"[{done[0]}/{total}] {r.sampler:>14} {r.task:<32} budget {r.budget:<4} seed {r.seed:<3} "
                f"{r.seconds:6.1f}s",
                file=sys.stderr,
                flush=True,
            )

    results = compare(
        args.suite, samplers, args.trials, args.seeds, n_jobs=args.jobs, storage=args.storage, progress=progress
    )
    summary = analyze(results, tasks, reference=args.reference)
    run_id = None
    if not args.no_mlflow:
        run_id = log_comparison(
            results,
            summary,
            {
                "suite": args.suite,
                "samplers": ",".join(samplers),
                "trials": ",".join(map(str, args.trials)),
                "seeds": args.seeds,
            },
            tracking_uri=args.tracking_uri,
            experiment=args.experiment,
        )
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(summary, fh, indent=1)
    if args.json:
        print(json.dumps({"mlflow_run_id": run_id, **{k: v for k, v in summary.items() if k != "landmarks"}}))
    else:
        print(summary_table(summary))
        if run_id:
            print(f"\nMLflow run {run_id} (experiment '{args.experiment}'): per-study child runs, plots/ and summary")
    return 0


def _run(args: argparse.Namespace) -> int:
    from autotune.run import tune_run

    result = tune_run(
        args.objective,
        args.space,
        sampler=args.sampler,
        trials=args.trials,
        storage=args.storage,
        study_name=args.study,
        direction=args.direction,
        seed=args.seed,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        log_mlflow=not args.no_mlflow,
        timeout=args.timeout,
        heartbeat=args.heartbeat,
        grace=args.grace,
        stale_retries=args.stale_retries,
        pruner=args.pruner,
    )
    if args.json:
        print(json.dumps(result.as_dict(), default=str))
    else:
        print(
            f"study '{result.study}': {result.n_trials} trials ({result.n_complete} complete, {result.n_failed} failed)"
            f" of a budget of {result.budget}{'' if result.done else ' (not done)'}, {result.n_run_here} run here,"
            f" in {result.storage}"
        )
        print(f"best value {result.best_value} with {result.best_params}")
        if result.mlflow_run_id:
            print(f"MLflow run {result.mlflow_run_id}")
    return 0
