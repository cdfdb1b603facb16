"""Train one OmniSafe agent on one Safety-Gymnasium task and write what it did as JSON.

Runs *inside* OmniSafe's benchmark-only venv (``bash benchmarks/build_omnisafe_env.sh``), never in
the main one: it imports only the standard library and OmniSafe's stack. The driver,
:mod:`benchmarks.safety_gym`, calls it as a subprocess with the budget, seed, network sizes, cost
limit and number of envs our agent gets, so both sides are set from one place::

    .deeprl/omnisafe-venv/bin/python benchmarks/omnisafe_runner.py --algo PPOLag \\
        --task SafetyPointGoal1-v0 --steps 200000 --seed 0 --out result.json

What is measured, per epoch of ``steps_per_epoch`` env steps: the mean return and cost of the
epoch's training episodes (OmniSafe's ``Metrics/EpRet``/``EpCost`` with its averaging window set to
one epoch's episodes, so no episode is counted in two epochs), λ, and from them the cumulative
training cost Σ_epochs episodes × mean cost. CPU time is this process's and its children's user +
system time around ``learn()`` (the two cores are shared, so wall time would lie).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

EPISODE_STEPS = 1000  # every Safety-Gymnasium navigation/velocity task

# OmniSafe's algorithm names; the cost limit lives under a different key in each
COST_LIMIT_KEY = {
    "PPOLag": ("lagrange_cfgs", "cost_limit"),
    "TRPOLag": ("lagrange_cfgs", "cost_limit"),
    "CPPOPID": ("lagrange_cfgs", "cost_limit"),
    "CPO": ("algo_cfgs", "cost_limit"),
    "PPOSaute": ("algo_cfgs", "safety_budget"),
    "PPO": (None, None),
}


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def config(args: argparse.Namespace, log_dir: str) -> dict:
    episodes_per_epoch = max(1, args.steps_per_epoch // EPISODE_STEPS)
    cfg: dict = {
        "seed": args.seed,
        "train_cfgs": {
            "total_steps": args.steps,
            "vector_env_nums": args.n_envs,
            "torch_threads": args.torch_threads,
            "device": "cpu",
        },
        "algo_cfgs": {"steps_per_epoch": args.steps_per_epoch},
        "logger_cfgs": {
            "use_wandb": False,
            "use_tensorboard": False,
            "log_dir": log_dir,
            "window_lens": episodes_per_epoch,
            "save_model_freq": 10**9,
        },
        "model_cfgs": {"actor": {"hidden_sizes": args.hidden}, "critic": {"hidden_sizes": args.hidden}},
    }
    section, key = COST_LIMIT_KEY[args.algo]
    if section is not None:
        cfg.setdefault(section, {})[key] = args.cost_limit
    return cfg


def read_progress(log_dir: str) -> list[dict[str, float]]:
    paths = sorted(Path(log_dir).rglob("progress.csv"))
    if not paths:
        raise SystemExit(f"OmniSafe wrote no progress.csv under {log_dir}")
    with paths[-1].open() as fh:
        return [
            {k: float(v) if v not in ("", None) else math.nan for k, v in row.items()} for row in csv.DictReader(fh)
        ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algo", required=True, choices=sorted(COST_LIMIT_KEY))
    p.add_argument("--task", required=True, help="a Safety-Gymnasium task, e.g. SafetyPointGoal1-v0")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-envs", type=int, default=1)
    p.add_argument("--steps-per-epoch", type=int, default=20_000)
    p.add_argument("--cost-limit", type=float, default=25.0)
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--out", required=True, help="JSON file to write")
    args = p.parse_args(argv)
    if args.steps < args.steps_per_epoch:
        p.error(f"--steps ({args.steps}) must be at least --steps-per-epoch ({args.steps_per_epoch})")

    warnings.filterwarnings("ignore")
    import omnisafe  # noqa: PLC0415  (only inside OmniSafe's venv)

    with tempfile.TemporaryDirectory(prefix="omnisafe-") as log_dir:
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        agent = omnisafe.Agent(args.algo, args.task, custom_cfgs=config(args, log_dir))
        agent.learn()
        cpu, wall = cpu_seconds() - cpu0, time.perf_counter() - wall0
        rows = read_progress(log_dir)

    episodes_per_epoch = args.steps_per_epoch / EPISODE_STEPS
    curve, cumulative = [], 0.0
    for row in rows:
        cost = row.get("Metrics/EpCost", math.nan)
        cumulative += episodes_per_epoch * (cost if math.isfinite(cost) else 0.0)
        curve.append(
            [
                int(row["TotalEnvSteps"]),
                row.get("Metrics/EpRet", math.nan),
                cost,
                cumulative,
                row.get("Metrics/LagrangeMultiplier", math.nan),
            ]
        )
    steps = int(rows[-1]["TotalEnvSteps"])
    result = {
        "peer": "omnisafe",
        "version": omnisafe.__version__,
        "algo": args.algo,
        "task": args.task,
        "seed": args.seed,
        "steps": steps,
        "n_envs": args.n_envs,
        "steps_per_epoch": args.steps_per_epoch,
        "cost_limit": args.cost_limit,
        "hidden": args.hidden,
        "cpu_s": cpu,
        "wall_s": wall,
        "steps_per_cpu_s": steps / cpu,
        "final_return": curve[-1][1],
        "final_cost": curve[-1][2],
        "cumulative_cost": cumulative,
        "curve": curve,  # [env steps, epoch mean return, epoch mean cost, cumulative cost, λ]
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(
        f"{args.algo} {args.task} seed {args.seed}: return {result['final_return']:.2f} cost "
        f"{result['final_cost']:.2f} cumulative cost {cumulative:.0f} in {steps} steps, "
        f"{result['steps_per_cpu_s']:.0f} steps per CPU-second"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
