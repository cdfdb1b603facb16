"""The ``deeprl`` command line.

    deeprl train --algo ppo --env CartPole-v1 --steps 50000 --seed 0 [--preset auto|none|NAME] [--config FILE]
                 [--set k=v ...] [--json]
    deeprl eval  --run RUN_ID | --model MODEL_URI  --episodes 10
    deeprl algos                      (agents, and programs: solvers, IRL, imitation, planners)
    deeprl pipeline demo
    deeprl server --backend-store-uri postgresql://... --artifacts-destination DIR [--port 5000]

Every user error (unknown algorithm or env, bad config field, unwritable store, an action space the
algorithm cannot handle) prints one ``error:`` line naming the cause and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from core_rl.common.errors import ConfigError, DeepRLError, RunInterrupted

EXIT_USER_ERROR = 2


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _overrides(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got '{pair}'")
        key, value = pair.split("=", 1)
        out[key.strip()] = _parse_value(value)
    return out


def _add_tracking(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite under .deeprl/)",
    )


def quiet_libraries() -> None:
    """MLflow and alembic log set-up chatter at INFO; users see our output, not theirs."""
    import logging
    import warnings

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="mlflow")
    warnings.filterwarnings("ignore", category=UserWarning, message=".*(type hint|input example|signature).*")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deeprl", description="Deep RL suite: train, evaluate and track in MLflow.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one agent in one MLflow run")
    t.add_argument("--algo", required=True)
    t.add_argument("--env", help="gymnasium env id (required unless --resume)")
    t.add_argument(
        "--steps",
        type=int,
        default=None,
        help="env steps (default: the preset's budget, else 100000; with --resume: the run's total)",
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--preset",
        default="auto",
        help="hyperparameters to start from: auto (RL-Zoo's for this algo and env, if any), none (our "
        "defaults), a name such as rl-zoo/dqn/CartPole-v1, or a .yml file holding a pasted RL-Zoo entry; "
        "--config and --set apply on top",
    )
    t.add_argument("--config", help="JSON/YAML/TOML file of config fields (RL-Zoo's conventions accepted)")
    t.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config fields")
    t.add_argument("--experiment", default="deeprl")
    t.add_argument("--run-name", default=None)
    t.add_argument("--resume", metavar="RUN_ID", help="continue a run from its last checkpoint")
    t.add_argument("--no-model", action="store_true", help="skip logging the MLflow model")
    t.add_argument(
        "--save-replay-buffer",
        choices=["auto", "on", "off"],
        default="auto",
        help="keep an off-policy agent's replay buffer in the checkpoint for an exact resume "
        "(auto: when it takes under 1 GiB)",
    )
    t.add_argument("--json", action="store_true", help="print one JSON line with run_id and mean_return")
    _add_tracking(t)

    e = sub.add_parser("eval", help="reload a trained policy and evaluate it")
    g = e.add_mutually_exclusive_group(required=True)
    g.add_argument("--run", metavar="RUN_ID")
    g.add_argument("--model", metavar="MODEL_URI")
    e.add_argument("--episodes", type=int, default=10)
    e.add_argument("--env", default=None, help="evaluate on another env id (default: the training env)")
    e.add_argument("--seed", type=int, default=None)
    e.add_argument("--json", action="store_true")
    _add_tracking(e)

    a = sub.add_parser("algos", help="list every algorithm")
    a.add_argument("--json", action="store_true")

    x = sub.add_parser("experiment", help="run one of the notes' experiments as an MLflow run")
    x.add_argument("name", nargs="?", help="experiment name (omit with --list)")
    x.add_argument("--list", action="store_true", help="list the experiments")
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="experiment parameters")
    x.add_argument("--json", action="store_true")
    _add_tracking(x)

    p = sub.add_parser("pipeline", help="end-to-end pipelines")
    p.add_argument("name", choices=["demo"])
    p.add_argument("--steps", type=int, default=None)
    _add_tracking(p)
    v = sub.add_parser("server", help="a shared MLflow tracking server (PostgreSQL store, proxied artifacts)")
    v.add_argument("--backend-store-uri", required=True, help="database URL, e.g. postgresql://user@host:5432/mlflow")
    v.add_argument("--artifacts-destination", required=True, help="artifact store the server proxies (folder, s3://…)")
    v.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default 5000)")
    v.add_argument("--workers", type=int, default=2, help="server worker processes (default 2)")
    from recsys.cli import add_recsys_parser  # deeprl recsys simulate-logs | ingest | train | evaluate

    add_recsys_parser(sub)
    from autotune.cli import add_tune_parser  # deeprl tune compare | run

    add_tune_parser(sub)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from core_rl.common.config import load_config_file
    from core_rl.presets import resolve_preset
    from core_rl.registry import get_algo
    from pipelines.train import train

    config = load_config_file(args.config) if args.config else {}
    config.update(_overrides(args.set))
    if not args.resume and not args.env:
        raise ConfigError("--env is required (unless --resume RUN_ID)")
    if get_algo(args.algo).kind == "program":  # --steps sets the program's own budget, if given
        steps = args.steps
    elif args.steps is not None or args.resume:
        steps = args.steps
    else:  # the preset's budget (RL-Zoo's n_timesteps), else 100k
        chosen = resolve_preset(args.algo, args.env, args.preset)
        steps = chosen.n_timesteps if chosen is not None else 100_000
    result = train(
        args.algo,
        args.env,
        steps,
        seed=args.seed,
        config=config,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        progress=sys.stderr.isatty() and not args.json,
        resume=args.resume,
        log_model=not args.no_model,
        run_name=args.run_name,
        save_replay_buffer={"auto": None, "on": True, "off": False}[args.save_replay_buffer],
        preset=args.preset,
    )
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(result.describe())
        if result.model_uri:
            print(f"model: {result.model_uri}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pipelines.train import evaluate

    if args.episodes <= 0:
        raise ConfigError(f"--episodes must be positive, got {args.episodes}")
    result = evaluate(
        run_id=args.run,
        model_uri=args.model,
        episodes=args.episodes,
        tracking_uri=args.tracking_uri,
        env=args.env,
        seed=args.seed,
    )
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['algo']} on {result['env_id']}: {result['mean_return']:.2f} ± {result['std_return']:.2f} "
            f"over {args.episodes} episodes"
        )
    return 0


def cmd_algos(args: argparse.Namespace) -> int:
    from core_rl.registry import ALGORITHMS

    rows = [
        {"name": s.name, "kind": s.kind, "module": s.module, "topic": s.topic, "learns": s.learns}
        for s in ALGORITHMS.values()
    ]
    if args.json:
        print(json.dumps(rows))
    else:
        width = max(len(r["name"]) for r in rows)
        mwidth = max(len(r["module"]) for r in rows)
        for r in rows:
            learns = f"  [learns: {r['learns']}]" if r["learns"] else ""
            print(f"{r['name']:<{width}}  {r['kind']:<7}  {r['module']:<{mwidth}}  {r['topic']}{learns}")
        print("learns: a task and budget a test shows the agent learning; every bar and test: docs/algorithms.md")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from pipelines.experiments import EXPERIMENTS, run_experiment, summary_table

    if args.list or not args.name:
        width = max(len(name) for name in EXPERIMENTS)
        for spec in EXPERIMENTS.values():
            print(f"{spec.name:<{width}}  {spec.topic}")
        return 0
    run_id, result = run_experiment(
        args.name, seed=args.seed, overrides=_overrides(args.set), tracking_uri=args.tracking_uri, echo=False
    )
    if args.json:
        from pipelines.experiments import _jsonable

        print(json.dumps({"run_id": run_id, "result": _jsonable(result)}))
    else:
        print(summary_table(args.name, run_id, result))
        print(f"experiment {args.name}: run {run_id} (plot and result.json logged to MLflow)")
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from pipelines.demo import run_demo

    run_demo(tracking_uri=args.tracking_uri, steps=args.steps)
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    from pipelines.server import serve

    serve(args.backend_store_uri, args.artifacts_destination, args.port, args.workers)
    return 0  # not reached: the process became the server


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    quiet_libraries()
    from autotune.cli import cmd_tune
    from recsys.cli import cmd_recsys

    handlers = {
        "train": cmd_train,
        "eval": cmd_eval,
        "algos": cmd_algos,
        "pipeline": cmd_pipeline,
        "experiment": cmd_experiment,
        "recsys": cmd_recsys,
        "tune": cmd_tune,
        "server": cmd_server,
    }
    try:
        return handlers[args.command](args)
    except DeepRLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as exc:
        # a tracked run already said which run stopped and how to resume it; 128 + the signal's number
        if not isinstance(exc, RunInterrupted):
            print("interrupted (SIGINT)", file=sys.stderr)
        return exc.exit_code if isinstance(exc, RunInterrupted) else 130


if __name__ == "__main__":
    sys.exit(main())
