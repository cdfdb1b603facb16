"""SlateQ on the original RecSim interest-evolution setting, beside the SlateQ paper's table.

Setting: ``recsys/RecSimInterestEvolution-v0`` defaults (20 topics, 10 fresh candidates per step,
slates of 2, a 200-minute time budget, the proportional choice model) — the setting of Ie et al.
(2019) and the RecSim paper. Average engagement = total watch time per session. We train SlateQ
online (item-wise Q-learning through the simulator's choice model; exact slate maximisation by the
LP/Dinkelbach method, and the paper's greedy and top-K heuristics; and the SARSA variant) and
evaluate every policy on the same fresh users, with fixed per-slot session quotas.

    .venv/bin/python -m benchmarks.recsys_slateq                     # 2 seeds, 4 SlateQ variants, 100k steps
    .venv/bin/python -m benchmarks.recsys_slateq --seeds 1 --variants q_lp --steps 40000   # a quick look

Writes ``docs/benchmarks/recsys_slateq.md`` and ``recsys_slateq.png`` (evaluation engagement vs
training steps). Reference numbers (the SlateQ paper's RecSim table, as quoted in the issue):
random ≈ 159, myopic ≈ 166, SlateQ ≈ 168–175.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import run_main

PAPER = {"random": "≈159", "myopic": "≈166", "SlateQ": "≈168–175"}
VARIANTS = {
    "q_lp": {"target": "q_learning", "slate_optimizer": "lp"},
    "q_greedy": {"target": "q_learning", "slate_optimizer": "greedy"},
    "q_topk": {"target": "q_learning", "slate_optimizer": "topk"},
    "sarsa_lp": {"target": "sarsa", "slate_optimizer": "lp"},
}


def evaluate(policy, sessions: int, seed: int):  # type: ignore[no-untyped-def]
    from recsys.policies import evaluate_online
    from recsys.simulation import RecSimInterestEvolutionVectorEnv

    return evaluate_online(RecSimInterestEvolutionVectorEnv(500, seed=seed), policy, sessions, seed=seed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100_000, help="env steps of SlateQ training per run")
    parser.add_argument("--evals", type=int, default=5, help="evaluation points along training")
    parser.add_argument("--sessions", type=int, default=2000, help="sessions per evaluation")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--gamma", type=float, default=0.9)
    parser.add_argument("--out", default="docs/benchmarks")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from recsys.policies import MyopicGreedyPolicy, RandomPolicy
    from recsys.simulation import RecSimInterestEvolutionVectorEnv
    from recsys.slateq import SlateQ

    eval_seed = 12_345
    rows: dict[str, list] = {}
    t0 = time.perf_counter()
    base = {"random": RandomPolicy(10, 2, seed=0), "myopic": MyopicGreedyPolicy(10, 2)}
    for name, pol in base.items():
        r = evaluate(pol, args.sessions * args.seeds, eval_seed)
        rows[name] = [r.session_engagement]
        print(f"{name:10s} {r.mean:7.2f} ± {r.stderr:.2f}  ({r.session_length.mean():.1f} steps/session)", flush=True)
    curves: dict[str, list[list[tuple[int, float]]]] = {}
    train_time: dict[str, list[float]] = {}
    for variant in args.variants:
        rows[variant], curves[variant], train_time[variant] = [], [], []
        for seed in range(args.seeds):
            env = RecSimInterestEvolutionVectorEnv(8, seed=seed)
            agent = SlateQ(
                env,
                seed=seed,
                n_envs=8,
                gamma=args.gamma,
                learning_starts=5000,
                exploration_fraction=0.2,
                **VARIANTS[variant],
            )
            curve = []
            spent = 0.0
            for i in range(args.evals):
                t = time.perf_counter()
                agent.learn(args.steps // args.evals)
                spent += time.perf_counter() - t
                last = i == args.evals - 1
                r = evaluate(agent.as_policy(), args.sessions if last else max(args.sessions // 4, 200), eval_seed)
                curve.append((agent.num_timesteps, r.mean))
                print(
                    f"{variant:10s} seed {seed} step {agent.num_timesteps:7d}: {r.mean:7.2f} ± {r.stderr:.2f}"
                    f"  ({spent:.0f} s training)",
                    flush=True,
                )
            rows[variant].append(r.session_engagement)
            curves[variant].append(curve)
            train_time[variant].append(spent)
    write_report(args, rows, curves, train_time, time.perf_counter() - t0)


def write_report(args, rows, curves, train_time, wall) -> None:  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# SlateQ on original RecSim interest evolution",
        "",
        "Setting: `recsys/RecSimInterestEvolution-v0` defaults — 20 topics, 10 fresh candidates per step, "
        "slates of 2, 200-minute budget, proportional choice model (the SlateQ paper's RecSim setting). "
        "Engagement = total watch time per session; every policy is evaluated on the same fresh users "
        f"(seed 12345), {args.sessions} sessions per SlateQ run. SlateQ: online, n_envs=8, γ={args.gamma}, "
        f"{args.steps} env steps, ε 1→0.05 over the first 20 %, simulator choice model, Adam 1e-3, "
        "batch 128, target copy every 200 updates. Seeds: "
        f"{args.seeds}. Command: `python -m benchmarks.recsys_slateq "
        f"--seeds {args.seeds} --steps {args.steps} --variants {' '.join(args.variants)}`.",
        "",
        "| policy | ours: mean engagement ± s.e. | per seed | SlateQ paper (RecSim) |",
        "|---|---|---|---|",
    ]
    for name, per_seed in rows.items():
        allv = np.concatenate(per_seed)
        paper = PAPER.get(name, PAPER["SlateQ"] if name in VARIANTS else "")
        seeds = ", ".join(f"{np.mean(v):.1f}" for v in per_seed) if name in VARIANTS else "—"
        label = {
            "q_lp": "SlateQ, Q-learning, exact (LP)",
            "q_greedy": "SlateQ, Q-learning, greedy",
            "q_topk": "SlateQ, Q-learning, top-K",
            "sarsa_lp": "SlateQ, SARSA, exact (LP)",
        }.get(name, name)
        se = allv.std(ddof=1) / np.sqrt(len(allv))
        lines.append(f"| {label} | {allv.mean():.1f} ± {se:.1f} | {seeds} | {paper} |")
    lines += [
        "",
        "Training time per run (s, wall, 2 shared CPU cores): "
        + ", ".join(f"{k} {np.mean(v):.0f}" for k, v in train_time.items()),
        f"Total wall time: {wall:.0f} s.",
        "",
        "![evaluation engagement during training](recsys_slateq.png)",
        "",
    ]
    (out / "recsys_slateq.md").write_text("\n".join(lines))
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name, runs in curves.items():
        steps = [s for s, _ in runs[0]]
        vals = np.mean([[v for _, v in run] for run in runs], axis=0)
        ax.plot(steps, vals, marker="o", label=name)
    for name in ("random", "myopic"):
        ax.axhline(
            np.concatenate(rows[name]).mean(), ls="--", lw=1, color="gray" if name == "random" else "black", label=name
        )
    ax.set_xlabel("env steps")
    ax.set_ylabel("engagement per session")
    ax.set_title("SlateQ on RecSim interest evolution")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "recsys_slateq.png", dpi=110)
    (out / "recsys_slateq.json").write_text(
        json.dumps({k: [float(np.mean(v)) for v in vs] for k, vs in rows.items()}, indent=2)
    )
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(run_main(main))
