"""Pruning core_rl training runs: the environment steps a pruner saves, and the best return it keeps.

    python -m benchmarks.autotune_pruning --samplers meta,tpe --pruners none,median,sha --trials 20 \\
        --steps 12000 --eval-every 3000 --seeds 2

Each (sampler, pruner, seed) is one study of ``--trials`` trials of core_rl's PPO on CartPole-v1
(:func:`autotune.fidelity.ppo_cartpole_objective`: lr, n_steps, n_epochs, clip range, entropy
coefficient, γ), every trial evaluated (5 deterministic episodes) each ``--eval-every`` steps and
reported to the study's pruner. Reported per (sampler, pruner), summed or averaged over seeds: env
steps spent by all trials (and as a fraction of the unpruned study's), trials pruned, the best
final evaluation return, and process CPU seconds. Writes ``summary.json`` and ``summary.md`` under
``--out`` (default ``benchmarks/results/autotune/pruning``). Minutes of CPU: not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import run_main


def run_one(sampler: str, pruner: str, seed: int, trials: int, steps: int, eval_every: int) -> dict[str, Any]:
    import optuna
    import torch

    from autotune.compare import make_sampler
    from autotune.fidelity import STEPS_ATTR, make_pruner, ppo_cartpole_objective

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(
        direction="maximize", sampler=make_sampler(sampler, seed, trials), pruner=make_pruner(pruner)
    )
    c0 = time.process_time()
    study.optimize(ppo_cartpole_objective(steps, eval_every), n_trials=trials, catch=(Exception,))
    cpu = time.process_time() - c0
    ts = study.get_trials(deepcopy=False)
    complete = [t for t in ts if t.state == optuna.trial.TrialState.COMPLETE]
    return {
        "sampler": sampler,
        "pruner": pruner,
        "seed": seed,
        "env_steps": int(sum(t.user_attrs.get(STEPS_ATTR, 0) for t in ts)),
        "n_pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in ts),
        "n_failed": sum(t.state == optuna.trial.TrialState.FAIL for t in ts),
        "best_return": max((float(t.value) for t in complete), default=float("nan")),
        "cpu_s": cpu,
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for sampler in sorted({r["sampler"] for r in rows}):
        base = [r for r in rows if r["sampler"] == sampler and r["pruner"] == "none"]
        base_steps = sum(r["env_steps"] for r in base) or float("nan")
        for pruner in sorted({r["pruner"] for r in rows if r["sampler"] == sampler}):
            rs = [r for r in rows if r["sampler"] == sampler and r["pruner"] == pruner]
            steps = sum(r["env_steps"] for r in rs)
            out[f"{sampler}/{pruner}"] = {
                "env_steps": steps,
                "steps_vs_none": steps / base_steps,
                "pruned": sum(r["n_pruned"] for r in rs),
                "best_return_mean": float(np.mean([r["best_return"] for r in rs])),
                "best_returns": [r["best_return"] for r in rs],
                "cpu_s": sum(r["cpu_s"] for r in rs),
            }
    return out


def table(summary: dict[str, Any], trials: int, seeds: int) -> str:
    lines = [
        f"| sampler / pruner | env steps ({seeds} studies × {trials} trials) | vs no pruning | trials pruned "
        "| best final return per seed (mean) | CPU s |",
        "|---|---|---|---|---|---|",
    ]
    for key, e in summary.items():
        lines.append(
            f"| {key} | {e['env_steps']:,} | {e['steps_vs_none']:.2f} | {e['pruned']} | "
            f"{', '.join(f'{v:.0f}' for v in e['best_returns'])} ({e['best_return_mean']:.0f}) | {e['cpu_s']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samplers", default="meta,tpe")
    p.add_argument("--pruners", default="none,median,sha")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--steps", type=int, default=12_000)
    p.add_argument("--eval-every", type=int, default=3_000)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/autotune/pruning")
    p.add_argument("--append", action="store_true", help="keep the other (sampler, pruner, seed) rows already in --out")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    if args.append and (out / "results.json").is_file():
        rows = json.loads((out / "results.json").read_text())
        rows = [r for r in rows if r["pruner"] not in args.pruners.split(",")]
        commands = (out / "commands.txt").read_text() if (out / "commands.txt").is_file() else ""
    else:
        commands = ""
    t0 = time.perf_counter()
    for sampler in args.samplers.split(","):
        for pruner in args.pruners.split(","):
            for seed in range(args.seeds):
                r = run_one(sampler, pruner, seed, args.trials, args.steps, args.eval_every)
                rows.append(r)
                print(
                    f"[{time.perf_counter() - t0:6.0f}s] {sampler:>6} {pruner:>9} s{seed} steps {r['env_steps']:>7} "
                    f"pruned {r['n_pruned']:>2} best {r['best_return']:.1f} cpu {r['cpu_s']:.0f}s",
                    flush=True,
                )
                (out / "results.json").write_text(json.dumps(rows, indent=1))
    summary = summarize(rows)
    md = table(summary, args.trials, args.seeds)
    command = "python -m benchmarks.autotune_pruning " + " ".join(argv if argv is not None else sys.argv[1:])
    commands += command + "\n"
    (out / "commands.txt").write_text(commands)
    (out / "summary.json").write_text(json.dumps({"commands": commands.splitlines(), "summary": summary}, indent=1))
    (out / "summary.md").write_text("".join(f"`{c}`\n\n" for c in commands.splitlines()) + md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
