"""autotune's samplers against Optuna's own: mean rank and normalized regret at 50 and 200 trials.

    python -m benchmarks.autotune_compare                       # tabular + BBOB, 3 seeds, 2 processes
    python -m benchmarks.autotune_compare --suite sklearn --trials 30 --seeds 2
    python -m benchmarks.autotune_compare --mlflow              # also log the comparison to MLflow
    python -m benchmarks.autotune_compare --merge DIR1,DIR2 --out DIR   # one table from runs made in pieces
    python -m benchmarks.autotune_compare --suite mixed --samplers gp --seeds 2 --seeds-from 3   # seeds 3 and 4

The same code path as ``deeprl tune compare`` (:mod:`autotune.compare`). It writes, under
``--out`` (default ``benchmarks/results/autotune/<suite>``): ``summary.json``, ``summary.md`` (the
tables quoted in docs/autotune.md), ``results.json`` (every study's per-trial values) and the
figures ``best_so_far.png`` and ``mean_rank.png``. Minutes to hours depending on the suite: not
part of the tests. Every finished study is appended to ``--out``/``studies.jsonl`` at once; the same
command run again (after a stop, Ctrl-C or a lost session) takes the studies found there and runs only
the rest, so a comparison longer than one sitting runs in parts.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from autotune.compare import StudyResult, analyze, compare, curve_figure, log_comparison, rank_figure, summary_table
from autotune.suites import Task, get_suite
from benchmarks.common import run_main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suite", default="tabular+bbob")
    p.add_argument("--samplers", default=p_default_samplers(), help="(with --merge: keep only these)")
    p.add_argument("--trials", default="50,200")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seeds-from", type=int, default=0, help="first seed (seeds K .. K + --seeds - 1)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default=None)
    p.add_argument("--mlflow", action="store_true")
    p.add_argument("--reference", default="best-peer", help="Wilcoxon reference: a sampler or best-peer")
    p.add_argument(
        "--merge",
        default=None,
        help="comma list of result folders (each with results.json and summary.json) to analyze together; "
        "DIR:s1+s2 takes only those samplers from DIR",
    )
    args = p.parse_args(argv)
    if args.merge:
        return _merge(args)
    samplers = args.samplers.split(",")
    budgets = [int(b) for b in args.trials.split(",")]
    out = Path(args.out or f"benchmarks/results/autotune/{args.suite.replace('+', '_')}")
    if args.seeds < 1 or args.seeds_from < 0:
        p.error(f"--seeds must be >= 1 and --seeds-from >= 0, got {args.seeds} and {args.seeds_from}")
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.seeds_from, args.seeds_from + args.seeds))
    tasks = get_suite(args.suite)
    total = len(tasks) * len(samplers) * len(budgets) * len(seeds)
    journal = out / STUDIES
    earlier = read_studies(journal)
    if journal.exists():  # rewritten whole: a line a kill cut short must not swallow the next study's line
        journal.write_text("".join(json.dumps(asdict(r), default=str) + "\n" for r in earlier))
    wanted = {(t.name, s, b, seed) for t in tasks for s in samplers for b in budgets for seed in seeds}
    done = [len({(r.task, r.sampler, r.budget, r.seed) for r in earlier} & wanted)]
    if earlier:
        print(f"{len(earlier)} studies already in {journal}: {done[0]} of this comparison's {total} are not run again")
    t0 = time.perf_counter()

    def progress(r):  # type: ignore[no-untyped-def]
        with journal.open("a") as f:
            f.write(json.dumps(asdict(r), default=str) + "\n")
        done[0] += 1
        print(
            f"[{done[0]}/{total} {time.perf_counter() - t0:6.0f}s] {r.sampler:>8} {r.task:<34} b{r.budget:<4} "
            f"s{r.seed} {r.seconds:6.1f}s sampler {r.sampler_ms_per_trial:6.1f} ms/trial"
            + (f" | SAMPLER RAISED in {r.sampler_errors} trials: {r.sampler_error}" if r.sampler_errors else ""),
            flush=True,
        )

    results = compare(args.suite, samplers, budgets, seeds, n_jobs=args.jobs, progress=progress, done=earlier)
    summary = analyze(results, tasks, reference=args.reference)
    summary["setup"] = {
        "suite": args.suite,
        "samplers": samplers,
        "budgets": budgets,
        "seeds": seeds,
        "tasks": [t.name for t in tasks],
        "wall_s": time.perf_counter() - t0,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "results.json").write_text(json.dumps([asdict(r) for r in results], default=str))
    table = _write(out, summary)
    if args.mlflow:
        run_id = log_comparison(
            results,
            summary,
            {"suite": args.suite, "samplers": args.samplers, "trials": args.trials, "seeds": str(seeds)},
        )
        print(f"MLflow run {run_id}")
    print(table)
    print(f"\nwritten to {out}/ in {time.perf_counter() - t0:.0f}s")
    return 0


STUDIES = "studies.jsonl"


def read_studies(path: Path) -> list[StudyResult]:
    """The studies a comparison journaled so far; a line cut short by a kill is dropped with one note."""
    if not path.exists():
        return []
    studies = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            studies.append(StudyResult(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as err:
            print(f"{path}:{n}: unreadable study dropped (run again) — {err}", flush=True)
    return studies


def _write(out: Path, summary: dict) -> str:
    table = summary_table(summary)
    (out / "summary.md").write_text(table + "\n")
    from core_rl.common.plotting import plt

    for name, fig in (("best_so_far.png", curve_figure(summary)), ("mean_rank.png", rank_figure(summary))):
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
    return table


def read_pieces(entries: list[str]) -> tuple[list[StudyResult], list[Task], list[dict]]:
    """The studies, tasks and setups of several result folders; an entry ``DIR:s1+s2`` keeps only those
    samplers of DIR (the pieces one comparison ran in, or the peers of an earlier run beside a new meta)."""
    results: list[StudyResult] = []
    tasks: list[Task] = []
    setups = []
    for entry in entries:
        folder_name, _, only = entry.partition(":")
        folder = Path(folder_name)
        if not (folder / "results.json").is_file():
            raise SystemExit(f"{folder}: no results.json (a comparison folder written by this script?)")
        keep_here = set(only.split("+")) if only else None
        results += [
            StudyResult(**d)
            for d in json.loads((folder / "results.json").read_text())
            if keep_here is None or d["sampler"] in keep_here
        ]
        setup = json.loads((folder / "summary.json").read_text()).get("setup", {})
        setups.append({"folder": str(folder), **setup})
        tasks += get_suite(setup["suite"])
    return results, tasks, setups


def _merge(args: argparse.Namespace) -> int:
    """Analyze the studies of several result folders as one comparison (pieces run separately)."""
    results, tasks, setups = read_pieces(args.merge.split(","))
    samplers = sorted({r.sampler for r in results})
    if args.samplers != p_default_samplers():
        keep = set(args.samplers.split(","))
        results = [r for r in results if r.sampler in keep]
        samplers = sorted(keep & set(samplers))
    summary = analyze(results, tasks, reference=args.reference)
    summary["setup"] = {"merged": setups, "samplers": samplers}
    if not args.out:
        raise SystemExit("--merge needs --out")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    table = _write(out, summary)
    print(table)
    print(f"\n{len(results)} studies from {len(setups)} folders written to {out}/")
    return 0


def p_default_samplers() -> str:
    return "rl,meta,tpe,random,cmaes,gp"


if __name__ == "__main__":
    raise SystemExit(run_main(main))
