"""OPE error per estimator and log size, against the simulator's ground truth.

Logs: the RecSim NG twin (10 candidates per step, slates of 2, 50-step sessions, interests evolving)
under ε-greedy popularity (ε = 0.3, logged propensities). Targets: the myopic-greedy policy (exact,
reading the simulator's choice model — logs carry it) and a top-K off-policy REINFORCE policy learned
from a separate log. Ground truth: each target's exact expected engagement on the logged contexts,
:math:`\\frac1n\\sum_i \\mathbb E[r\\mid x_i,\\pi]` (from the logged oracle columns) — what the
per-slate estimators estimate — and, for reference, the online engagement per step when the target
runs the whole session. For every log size, ``--reps`` independent logs; reported: mean absolute
relative error ± sd, and how often the 95 % session-bootstrap interval covered the ground truth.

    .venv/bin/python -m benchmarks.recsys_ope                       # sizes 2k 10k 50k rows, 5 logs each
    .venv/bin/python -m benchmarks.recsys_ope --sizes 2000 10000 --reps 3

Writes ``docs/benchmarks/recsys_ope.md`` and ``recsys_ope.png``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import run_main

TWIN = {"num_candidates": 10, "horizon": 50}
ESTIMATORS = ("ips", "snips", "dr", "pi", "pi_sn", "dm")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[2000, 10_000, 50_000], help="logged rows")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--epsilon", type=float, default=0.3)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--out", default="docs/benchmarks")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from recsys.logs import LogReader, generate_logs
    from recsys.ope import evaluate_on_logs, fit_reward_model
    from recsys.pipeline import popularity_from_rollout
    from recsys.policies import EpsilonGreedyPolicy, MyopicGreedyPolicy, evaluate_online
    from recsys.simulation import InterestEvolutionVectorEnv
    from recsys.topk_reinforce import TopKReinforce

    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="recsys-ope-bench-"))
    pop = popularity_from_rollout(InterestEvolutionVectorEnv(256, seed=100, **TWIN), steps=40, seed=100)
    logging = EpsilonGreedyPolicy(pop, args.epsilon, seed=1)
    # a learned target: top-K REINFORCE on a separate log of 1000 sessions
    generate_logs(InterestEvolutionVectorEnv(250, seed=999, **TWIN), logging, tmp / "train.parquet", 1000, seed=999)
    topk = (
        TopKReinforce(LogReader(tmp / "train.parquet").layout, 2, epochs=3)
        .fit(LogReader(tmp / "train.parquet", chunk_rows=16_384))
        .as_policy()
    )
    targets = {"myopic (oracle)": MyopicGreedyPolicy(10, 2), "top-K REINFORCE": topk}
    online = {
        name: evaluate_online(InterestEvolutionVectorEnv(500, seed=4242, **TWIN), pol, 2000, seed=4242)
        for name, pol in targets.items()
    }
    online["logging"] = evaluate_online(InterestEvolutionVectorEnv(500, seed=4242, **TWIN), logging, 2000, seed=4242)
    results: dict[str, dict[int, dict[str, list]]] = {
        t: {n: {e: [] for e in ESTIMATORS} for n in args.sizes} for t in targets
    }
    truth: dict[str, dict[int, list[float]]] = {t: {n: [] for n in args.sizes} for t in targets}
    for size in args.sizes:
        sessions = max(size // TWIN["horizon"], 1)
        for rep in range(args.reps):
            path = tmp / f"log_{size}_{rep}.parquet"
            generate_logs(
                InterestEvolutionVectorEnv(min(sessions, 500), seed=rep, **TWIN), logging, path, sessions, seed=rep
            )
            reader = LogReader(path, chunk_rows=16_384, oracle=True)
            rm = fit_reward_model(reader, 2, 4, epochs=3, seed=rep)
            lp = reader.meta.logging_policy_object()
            for name, pol in targets.items():
                res = evaluate_on_logs(
                    pol, reader, reward_model=rm, logging_policy=lp, n_bootstrap=args.bootstrap, seed=rep
                )
                truth[name][size].append(res.ground_truth)
                for e in ESTIMATORS:
                    est = res.estimates[e]
                    results[name][size][e].append((est.value, est.lower, est.upper, res.ground_truth))
            print(f"size {size} rep {rep} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    write_report(args, results, truth, online, time.perf_counter() - t0)


def write_report(args, results, truth, online, wall) -> None:  # type: ignore[no-untyped-def]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Off-policy evaluation: error per estimator and log size",
        "",
        f"RecSim NG twin ({TWIN['num_candidates']} candidates per step, slates of 2, {TWIN['horizon']}-step "
        f"sessions, evolving interests); logging policy ε-greedy popularity (ε = {args.epsilon}), logged "
        f"propensities; {args.reps} independent logs per size; DR/DM use a click + engagement model fitted on "
        "the same log; PI uses the logging policy's exact slate distribution (from the log's metadata). "
        "Ground truth = the target's exact one-step expected engagement on the logged contexts (oracle "
        f"columns). Cells: mean |relative error| ± sd over logs; coverage of the 95 % session-bootstrap "
        f"interval ({args.bootstrap} resamples). Command: `python -m benchmarks.recsys_ope --sizes "
        f"{' '.join(map(str, args.sizes))} --reps {args.reps}`.",
        "",
    ]
    summary = {}
    for name, by_size in results.items():
        gt = np.mean([v for s in by_size for v in truth[name][s]])
        lines += [
            f"## target: {name}",
            "",
            f"One-step ground truth ≈ {gt:.3f} engagement per slate (logging policy online "
            f"{online['logging'].per_step:.3f}); the target's own online engagement per step over whole "
            f"sessions: {online[name].per_step:.3f} ({online[name].mean:.1f} per session, logging "
            f"{online['logging'].mean:.1f}).",
            "",
            "| rows | " + " | ".join(ESTIMATORS) + " |",
            "|---|" + "---|" * len(ESTIMATORS),
        ]
        for size, per_est in by_size.items():
            cells = []
            for e in ESTIMATORS:
                arr = np.array(per_est[e])
                rel = np.abs(arr[:, 0] - arr[:, 3]) / np.abs(arr[:, 3])
                cover = np.mean((arr[:, 1] <= arr[:, 3]) & (arr[:, 3] <= arr[:, 2]))
                cells.append(f"{rel.mean():.3f} ± {rel.std():.3f} (cov {cover:.0%})")
                summary.setdefault(name, {}).setdefault(e, []).append(float(rel.mean()))
            lines.append(f"| {size} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"Total wall time {wall:.0f} s (2 shared CPU cores).", "", "![OPE error vs log size](recsys_ope.png)", ""]
    (out / "recsys_ope.md").write_text("\n".join(lines))
    (out / "recsys_ope.json").write_text(json.dumps({"sizes": args.sizes, "mean_rel_error": summary}, indent=2))
    plot(summary, args.sizes, out / "recsys_ope.png")
    print("\n".join(lines))


def plot(summary: dict, sizes: list[int], path: Path) -> None:
    """Mean |relative error| against log size, one panel per target (also redraws from the JSON)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summary), figsize=(5.5 * len(summary), 3.6), squeeze=False)
    for ax, (name, per_est) in zip(axes[0], summary.items()):
        for e, errs in per_est.items():
            ax.plot(sizes, errs, marker="o", label=e)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([f"{s:,}" for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("logged rows")
        ax.set_ylabel("mean |relative error|")
        ax.set_title(f"target: {name}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
