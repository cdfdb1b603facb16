"""``deeprl recsys …``: the command line of :mod:`recsys.pipeline` (the ``deeprl`` CLI mounts it).

    deeprl recsys simulate-logs --env recsys/InterestEvolution-v0 --sessions 2000 --policy epsilon_popularity \\
                                --epsilon 0.3 --out logs.parquet [--env-set num_candidates=10 ...]
    deeprl recsys ingest   --logs raw.parquet|raw_dir/ [--out clean.parquet] [--strict] [--num-candidates C]
                           [--require-sorted]
    deeprl recsys fetch-obd [--root DIR]                       (the Open Bandit Dataset sample, via pip)
    deeprl recsys train    --logs logs.parquet --algo topk_reinforce [--set k=v ...] [--online] [--register NAME]
                           [--workers W]   (data-parallel: bc, topk_reinforce, slateq, cql)
    deeprl recsys train    --env recsys/RecSimInterestEvolution-v0 --algo slateq --steps 200000   (online SlateQ)
    deeprl recsys evaluate --model MODEL_URI | --run RUN_ID  [--logs logs.parquet] [--online | --env ID]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from core_rl.common.errors import ConfigError
from recsys.pipeline import EXPERIMENT, LOGGING_POLICIES, OFFLINE_ALGOS, evaluate, ingest, simulate_logs, train


# ---- the command line ---------------------------------------------------------------------------
def _kv(pairs: Sequence[str], flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"{flag} expects key=value, got '{pair}'")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def add_recsys_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``recsys`` (with simulate-logs / ingest / train / evaluate) to the ``deeprl`` parser."""
    p = subparsers.add_parser("recsys", help="slate recommenders: simulate logs, train, evaluate")
    sub = p.add_subparsers(dest="recsys_command", required=True)

    def backend_flags(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--backend",
            default="local",
            choices=["local", "ray"],
            help="ray: the per-row work runs on Ray Data (row groups as tasks; same results as local)",
        )
        q.add_argument("--ray-address", default=None, help="the Ray cluster (default $RAY_ADDRESS, else a local Ray)")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--experiment", default=EXPERIMENT)
        q.add_argument(
            "--tracking-uri",
            default=None,
            help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite under .deeprl/)",
        )
        q.add_argument("--json", action="store_true", help="print one JSON line")

    s = sub.add_parser("simulate-logs", help="write a log of a logging policy in a simulator")
    s.add_argument("--env", default="recsys/InterestEvolution-v0")
    s.add_argument("--env-set", nargs="*", default=[], metavar="KEY=VALUE", help="simulator config fields")
    s.add_argument("--sessions", type=int, default=1000)
    s.add_argument("--policy", default="epsilon_popularity", choices=LOGGING_POLICIES)
    s.add_argument("--epsilon", type=float, default=0.3)
    s.add_argument("--num-envs", type=int, default=256, help="users simulated in parallel")
    s.add_argument("--no-oracle", action="store_true", help="leave out the simulator's ground-truth columns")
    s.add_argument("--out", required=True)
    common(s)

    i = sub.add_parser("ingest", help="validate a log, quarantine bad rows, estimate missing propensities")
    i.add_argument(
        "--logs", required=True, help="a parquet file, a directory of parquet files or a quoted glob of them"
    )
    i.add_argument(
        "--out",
        default=None,
        help="clean log (default: <data folder>/recsys/ingested/NAME-HASH.parquet; never beside --logs)",
    )
    i.add_argument("--quarantine", default=None)
    i.add_argument("--strict", action="store_true", help="fail with every problem instead of quarantining")
    i.add_argument("--num-candidates", type=int, default=None)
    i.add_argument("--estimate", default="auto", choices=["auto", "always", "never"])
    i.add_argument(
        "--require-sorted",
        action="store_true",
        help="refuse rows out of (session_id, step) order instead of sorting them",
    )
    backend_flags(i)
    common(i)

    o = sub.add_parser("fetch-obd", help="download the Open Bandit Dataset sample (obp 0.5.7's sdist, with pip)")
    o.add_argument("--root", default=None, help="target folder (default: .deeprl/obd)")
    o.add_argument("--json", action="store_true", help="print one JSON line")

    t = sub.add_parser("train", help="train a slate policy from logs (or SlateQ online), log and register it")
    t.add_argument("--algo", required=True, help=", ".join(OFFLINE_ALGOS))
    t.add_argument("--logs", default=None)
    t.add_argument("--env", default=None, help="simulator id: online SlateQ without --logs, else online evaluation")
    t.add_argument("--env-set", nargs="*", default=[], metavar="KEY=VALUE")
    t.add_argument("--online", action="store_true", help="evaluate online in the simulator recorded in the logs")
    t.add_argument("--steps", type=int, default=None, help="env steps of online SlateQ")
    t.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="algorithm config fields (epochs=…)")
    t.add_argument("--eval-sessions", type=int, default=500)
    t.add_argument("--register", default=None, help="registered model name (default recsys-ALGO)")
    t.add_argument(
        "--workers",
        type=int,
        default=1,
        help="data-parallel worker processes (bc, topk_reinforce, slateq, cql from --logs; gloo on loopback): "
        "the one-worker loss curve at the same global batch_size",
    )
    common(t)

    e = sub.add_parser("evaluate", help="OPE on logs and/or online engagement of a trained policy")
    g = e.add_mutually_exclusive_group(required=True)
    g.add_argument("--model", default=None, metavar="MODEL_URI")
    g.add_argument("--run", default=None, metavar="RUN_ID")
    e.add_argument("--logs", default=None)
    e.add_argument("--env", default=None)
    e.add_argument("--env-set", nargs="*", default=[], metavar="KEY=VALUE")
    e.add_argument("--online", action="store_true", help="run in the simulator recorded in the logs")
    e.add_argument("--sessions", type=int, default=500)
    e.add_argument("--bootstrap", type=int, default=200)
    backend_flags(e)
    common(e)
    return p


def _print(result: Any, as_json: bool, lines: Sequence[str]) -> None:
    if as_json:
        print(json.dumps(result, default=str))
    else:
        for line in lines:
            print(line)


def cmd_recsys(args: argparse.Namespace) -> int:
    """Run one ``deeprl recsys`` command; user errors raise :class:`DeepRLError` (the CLI prints them)."""
    cmd = args.recsys_command
    if cmd == "simulate-logs":
        if args.sessions < 1:
            raise ConfigError(f"--sessions must be positive, got {args.sessions}")
        res = simulate_logs(
            args.out,
            args.env,
            args.sessions,
            args.policy,
            args.epsilon,
            args.seed,
            args.num_envs,
            _kv(args.env_set, "--env-set"),
            not args.no_oracle,
            args.tracking_uri,
            args.experiment,
        )
        _print(
            res,
            args.json,
            [
                f"wrote {res['rows']} rows ({res['sessions']} sessions) to {res['path']}",
                f"logging policy {res['logging_policy']}: {res['mean_session_engagement']:.2f} "
                f"engagement per session, {res['mean_step_engagement']:.3f} per step",
                f"run {res['run_id']}",
            ],
        )
        return 0
    if cmd == "ingest":
        rep = ingest(
            args.logs,
            args.out,
            args.quarantine,
            args.strict,
            args.num_candidates,
            args.estimate,
            args.tracking_uri,
            args.experiment,
            seed=args.seed,
            require_sorted=args.require_sorted,
            backend=args.backend,
            ray_address=args.ray_address,
        )
        _print(
            {
                "rows_in": rep.rows_in,
                "rows_clean": rep.rows_clean,
                "rows_quarantined": rep.rows_quarantined,
                "problems": [p.message() for p in rep.problems],
                "output": str(rep.output),
                "quarantine": str(rep.quarantine) if rep.rows_quarantined else None,
                "propensity_source": rep.propensity_source,
            },
            args.json,
            rep.lines(),
        )
        return 0
    if cmd == "fetch-obd":
        from recsys.obd import fetch

        path = fetch(args.root)
        _print({"path": str(path)}, args.json, [f"Open Bandit Dataset in {path}"])
        return 0
    if cmd == "train":
        res = train(
            args.algo,
            args.logs,
            args.env,
            _kv(args.set, "--set"),
            args.seed,
            args.steps,
            _kv(args.env_set, "--env-set"),
            args.online,
            args.eval_sessions,
            args.register,
            tracking_uri=args.tracking_uri,
            experiment=args.experiment,
            workers=args.workers,
        )
        workers = f" with {res['workers']} data-parallel workers" if res.get("workers", 1) > 1 else ""
        lines = [*res.get("notes", []), f"run {res['run_id']}: trained {res['policy']}{workers}"]
        if "online" in res:
            o = res["online"]
            lines.append(
                f"online: {o['session_engagement']:.2f} ± {o['session_engagement_se']:.2f} engagement per "
                "session"
                + (
                    f" (logging policy {o['logging.session_engagement']:.2f})"
                    if "logging.session_engagement" in o
                    else ""
                )
            )
        if res.get("model_uri"):
            lines.append(
                f"model: {res['model_uri']} (registered {res['registered']['name']} "
                f"version {res['registered']['version']})"
            )
        _print(res, args.json, lines)
        return 0
    if cmd == "evaluate":
        res = evaluate(
            args.model,
            args.run,
            args.logs,
            args.env,
            _kv(args.env_set, "--env-set"),
            args.online,
            args.sessions,
            args.bootstrap,
            args.seed,
            tracking_uri=args.tracking_uri,
            experiment=args.experiment,
            backend=args.backend,
            ray_address=args.ray_address,
        )
        lines = [f"run {res['run_id']}: {res['policy']}"]
        for name, e in res.get("ope", {}).items():
            lines.append(f"  {name:6s} {e['value']:.4f}  [{e['lower']:.4f}, {e['upper']:.4f}]")
        if res.get("ground_truth") is not None:
            lines.append(f"  ground truth (one step on the logged contexts) {res['ground_truth']:.4f}")
        if "online" in res:
            o = res["online"]
            lines.append(
                f"  online: {o['session_engagement']:.2f} ± {o['session_engagement_se']:.2f} per session, "
                f"{o['step_engagement']:.4f} per step"
            )
        _print(res, args.json, lines)
        return 0
    raise ConfigError(f"unknown recsys command '{cmd}'")


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (``python -m recsys.cli …``), the same as ``deeprl recsys …``."""
    from core_rl.common.errors import DeepRLError

    parser = argparse.ArgumentParser(prog="deeprl")
    add_recsys_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["recsys", *(argv if argv is not None else sys.argv[1:])])
    try:
        return cmd_recsys(args)
    except DeepRLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


__all__ = ["add_recsys_parser", "cmd_recsys", "main"]


if __name__ == "__main__":
    sys.exit(main())
