"""Where the meta sampler stands: every suite at 50 and 200 trials against every peer, in one table.

    python -m benchmarks.autotune_scoreboard              # tables to the terminal and benchmarks/results/autotune/scoreboard/
    python -m benchmarks.autotune_scoreboard --mlflow     # also one MLflow run (experiment "autotune")

Nothing is run: each row is analysed from the stored studies of the comparisons that measured it
(``benchmarks.autotune_compare``), listed in :data:`BOARD` as the pieces they ran in. ``DIR:s1+s2`` takes only
those samplers from DIR, as ``autotune_compare --merge`` does, so that an earlier run's peers stand beside the
current default's meta studies. A row is analysed by :func:`autotune.compare.analyze` over the (task, seed)
cells where every one of its samplers ran: mean rank (ties averaged) with a 95% bootstrap interval, and meta
against the best peer of the row (wins / losses on normalized regret, Wilcoxon signed-rank p).

The summary rows average over suites at each budget, every suite with the same weight (BBOB's three
dimensions together count as one suite; their rows below it are details). Ranks there are recomputed among
the samplers that every counted row has, since a sampler missing from one row would shift every rank of that
row; the samplers left out and the rows they miss are named under the table.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.compare import StudyResult, analyze
from benchmarks.autotune_compare import read_pieces
from benchmarks.common import run_main

RESULTS = Path("benchmarks/results/autotune")
OUT = RESULTS / "scoreboard"
OURS = "meta"
COLUMNS = ("meta", "rl", "tpe", "gp", "cmaes", "smac", "ngopt", "random")  # the peers and our two samplers
NAMES = {
    "meta": "meta",
    "rl": "rl (REINFORCE)",
    "tpe": "TPE",
    "gp": "GP",
    "cmaes": "CMA-ES",
    "smac": "SMAC3",
    "ngopt": "NGOpt",
    "random": "random",
}

P5 = "tpe+cmaes+random+ngopt+rl"  # the peers of a run whose meta studies an earlier default made
BBOB_200 = "tpe+cmaes+random"  # bbob24-d*-200: meta and NGOpt from other folders


@dataclass(frozen=True)
class Row:
    """One suite at one budget and the result folders (relative to :data:`RESULTS`) that hold its studies."""

    suite: str
    budget: int
    pieces: tuple[str, ...]
    detail: bool = False  # a part of a suite that has its own row (BBOB's dimensions): shown, not averaged


#: dimensions whose 200-trial SMAC3 studies are complete (``bbob24-dD-200-smac``, ~85–100 s of CPU a study, run
#: across sittings); a row takes SMAC3 only when every one of its dimensions has it, since a row is scored over
#: the cells every sampler ran
SMAC_200_DIMS: tuple[int, ...] = (2,)


def _bbob(budget: int, dims: tuple[int, ...]) -> tuple[str, ...]:
    """BBOB's pieces at ``budget`` for the dimensions ``dims`` (at 200 trials GP ran seeds 0–2 and 3–4 apart)."""
    smac_200 = all(d in SMAC_200_DIMS for d in dims)
    pieces: list[str] = []
    for d in dims:
        if budget == 50:
            pieces += [f"bbob24-d{d}:tpe+gp+cmaes+random+rl", f"bbob24-d{d}-ngopt2", f"bbob24-d{d}-smac"]
        else:
            ngopt = [f"bbob24-d{d}-200-ngopt"] if d == 2 else []
            pieces += [f"bbob24-d{d}-200:{BBOB_200}" + ("" if d == 2 else "+ngopt"), *ngopt]
            pieces += [f"bbob24-d{d}-200-s34:{BBOB_200}+ngopt", f"bbob24-d{d}-200-rl"]
            pieces += [f"bbob24-d{d}-200-gp", f"bbob24-d{d}-200-gp-s34"]
            pieces += [f"bbob24-d{d}-200-smac"] if smac_200 else []
        pieces.append(f"bbob24-d{d}-board:meta")
    return tuple(pieces)


BOARD: tuple[Row, ...] = (
    Row("HPOBench", 50, (f"hpobench-50:{P5}", "hpobench-50-peers", "hpobench-norepeat:meta")),
    Row("HPOBench", 200, (f"hpobench-200:{P5}", "hpobench-200-gp", "hpobench-200-smac", "hpobench-norepeat:meta")),
    Row(
        "HPOLib + NAS-Bench-201",
        50,
        ("hpolib_nas-17b:tpe+gp+cmaes+random+ngopt", "hpolib_nas-smac", "hpolib_nas-rl", "hpolib_nas-norepeat:meta"),
    ),
    Row(
        "HPOLib + NAS-Bench-201",
        200,
        (f"hpolib_nas-200:{P5}", "hpolib_nas-200-gp", "hpolib_nas-200-smac", "hpolib_nas-norepeat:meta"),
    ),
    Row("BBOB, 24 functions, d = 2, 5, 10", 50, _bbob(50, (2, 5, 10))),
    Row("BBOB d = 2", 50, _bbob(50, (2,)), detail=True),
    Row("BBOB d = 5", 50, _bbob(50, (5,)), detail=True),
    Row("BBOB d = 10", 50, _bbob(50, (10,)), detail=True),
    Row("BBOB, 24 functions, d = 2, 5, 10", 200, _bbob(200, (2, 5, 10))),
    Row("BBOB d = 2", 200, _bbob(200, (2,)), detail=True),
    Row("BBOB d = 5", 200, _bbob(200, (5,)), detail=True),
    Row("BBOB d = 10", 200, _bbob(200, (10,)), detail=True),
    Row(
        "mixed integer / categorical",
        50,
        ("mixed:tpe+gp+cmaes+random+rl", "mixed-ngopt2", "mixed-smac", "mixed-smac-s234", "mixed-board:meta"),
    ),
    Row(
        "mixed integer / categorical",
        200,
        (
            "mixed-200:tpe+cmaes+random+ngopt",
            "mixed-200-gp",
            "mixed-200-gp-s34",
            "mixed-200-smac",
            "mixed-200-rl",
            "mixed-board:meta",
        ),
    ),
    Row(
        "conditional",
        50,
        ("conditional:tpe+random+rl", "conditional-peers50", "conditional-smac", "conditional-board:meta"),
    ),
    Row(
        "conditional",
        200,
        (
            "conditional:tpe+random+rl",
            "conditional-peers200",
            "conditional-gp200",
            "conditional-200-smac",
            "conditional-board:meta",
        ),
    ),
    Row("scikit-learn (4 models)", 50, ("sklearn-15-peers", "sklearn-smac", "sklearn-norepeat:meta")),
    Row(
        "scikit-learn (4 models)",
        200,
        ("sklearn-200:tpe+gp", "sklearn-200-peers", "sklearn-200-smac", "sklearn-200-meta:meta"),
    ),
    Row(  # seeds 5–14 ran for the row's first four samplers only: is meta's fourth place at five seeds noise?
        "scikit-learn, 15 seeds, meta / TPE / GP / CMA-ES",
        200,
        ("sklearn-200:tpe+gp", "sklearn-200-peers:cmaes", "sklearn-200-meta:meta", "sklearn-200-s5-14"),
        detail=True,
    ),
    Row("torch MLP on digits", 50, ("torch-10:tpe+gp+cmaes+random+ngopt+rl", "torch-smac", "torch-board:meta")),
    Row(
        "torch MLP on digits",
        200,
        ("torch-200:tpe+cmaes+random+ngopt+rl", "torch-200-peers", "torch-200-norepeat:meta"),
    ),
)


def load_row(row: Row, root: Path = RESULTS) -> tuple[list[StudyResult], list[Any]]:
    """The row's studies at its budget (every piece's other budgets dropped) and its tasks."""
    results, tasks, _ = read_pieces([str(root / p) for p in row.pieces])
    return [r for r in results if r.budget == row.budget], tasks


def score_row(results: list[StudyResult], tasks: list[Any], budget: int) -> dict[str, Any]:
    """Mean ranks over the cells every sampler ran, meta's place, and meta against the row's best peer."""
    summary = analyze(results, tasks, reference="best-peer")["budgets"][str(budget)]
    samplers = summary["samplers"]
    order = sorted(samplers, key=lambda s: samplers[s]["mean_rank"])
    ref = summary["reference"]
    ran: dict[tuple[str, int], set[str]] = {}
    for r in results:
        ran.setdefault((r.task, r.seed), set()).add(r.sampler)
    entry = {
        "n_cells": summary["n_cells"],
        "seeds": sorted({seed for (_task, seed), who in ran.items() if who == set(samplers)}),
        "mean_rank": {s: samplers[s]["mean_rank"] for s in order},
        "rank_ci95": {s: samplers[s]["rank_ci95"] for s in order},
        "regret_mean": {s: samplers[s]["regret_mean"] for s in order},
        "place": {s: _place(order, samplers, s) for s in order},
        "best_peer": ref,
    }
    if OURS in samplers and ref != OURS:
        m = samplers[OURS]
        entry["meta_vs_best_peer"] = {
            "wins": m.get(f"wins_vs_{ref}"),
            "losses": m.get(f"losses_vs_{ref}"),
            "p": m.get(f"wilcoxon_p_vs_{ref}"),
        }
    return entry


def _place(order: list[str], samplers: dict[str, Any], s: str) -> int:
    """1 + how many samplers have a strictly lower mean rank (a tie shares the place)."""
    return 1 + sum(1 for o in order if samplers[o]["mean_rank"] < samplers[s]["mean_rank"] - 1e-12)


def average_over_suites(rows: list[tuple[Row, list[StudyResult], list[Any], dict[str, Any]]]) -> dict[str, Any]:
    """Per budget, over the counted rows (not ``detail``): mean ranks recomputed among the samplers every row
    has, averaged with equal weight per suite; and how many rows each sampler leads (in the row's own ranking)."""
    out: dict[str, Any] = {}
    for budget in sorted({row.budget for row, *_ in rows}):
        counted = [(row, res, tasks, e) for row, res, tasks, e in rows if row.budget == budget and not row.detail]
        common = set.intersection(*(set(e["mean_rank"]) for *_, e in counted))
        missing = {
            s: [row.suite for row, *_r, e in counted if s not in e["mean_rank"]]
            for s in sorted(set().union(*(set(e["mean_rank"]) for *_, e in counted)) - common)
        }
        per_suite: dict[str, dict[str, float]] = {}
        for row, res, tasks, _e in counted:
            kept = [r for r in res if r.sampler in common]
            per_suite[row.suite] = score_row(kept, tasks, budget)["mean_rank"]
        mean = {s: sum(per_suite[k][s] for k in per_suite) / len(per_suite) for s in common}
        firsts = {s: sum(1 for *_r, e in counted if e["place"].get(s) == 1) for s in COLUMNS}
        out[str(budget)] = {
            "samplers": sorted(common, key=lambda s: mean[s]),
            "mean_rank": mean,
            "per_suite": per_suite,
            "missing": missing,
            "first_in_rows": firsts,
            "rows": len(counted),
        }
    return out


def render(scored: list[tuple[Row, dict[str, Any]]], average: dict[str, Any]) -> str:
    """Markdown: one table per budget (a row per suite, a column per sampler), then the average over suites."""
    lines: list[str] = []
    for budget in sorted({row.budget for row, _ in scored}):
        lines.append(f"\n### {budget} trials\n")
        head = " | ".join(NAMES[s] for s in COLUMNS)
        lines.append(f"| suite (cells, seeds) | {head} | meta's place | best peer: meta's W/L (Wilcoxon p) |")
        lines.append("|---|" + "---|" * (len(COLUMNS) + 2))
        for row, e in scored:
            if row.budget != budget:
                continue
            cells = []
            for s in COLUMNS:
                rank = e["mean_rank"].get(s)
                cells.append("–" if rank is None else (f"**{rank:.2f}**" if e["place"][s] == 1 else f"{rank:.2f}"))
            n = len(e["mean_rank"])
            place = f"{e['place'][OURS]} of {n}" if OURS in e["place"] else "–"
            vs = e.get("meta_vs_best_peer")
            versus = (
                f"{NAMES.get(e['best_peer'], e['best_peer'])}: {vs['wins']}/{vs['losses']} ({_p(vs['p'])})"
                if vs
                else "–"
            )
            seeds = e["seeds"]
            label = f"{'  ↳ ' if row.detail else ''}{row.suite} ({e['n_cells']}, {len(seeds)})"
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {place} | {versus} |")
        avg = average[str(budget)]
        cells = []
        best = min(avg["mean_rank"].values())
        for s in COLUMNS:
            rank = avg["mean_rank"].get(s)
            cells.append("–" if rank is None else (f"**{rank:.2f}**" if rank <= best + 1e-12 else f"{rank:.2f}"))
        order = avg["samplers"]
        place = f"{order.index(OURS) + 1} of {len(order)}" if OURS in order else "–"
        lines.append(f"| **average over the {avg['rows']} suites** | " + " | ".join(cells) + f" | {place} | |")
        lines.append(
            "| suites where it is first | " + " | ".join(str(avg["first_in_rows"][s]) for s in COLUMNS) + " | | |"
        )
        if avg["missing"]:
            lines.append(
                "\nThe average ranks the samplers every counted suite has; left out: "
                + "; ".join(f"{NAMES.get(s, s)} (not run: {', '.join(rows)})" for s, rows in avg["missing"].items())
                + "."
            )
    return "\n".join(lines)


def _p(p: float | None) -> str:
    return "–" if p is None or not math.isfinite(p) else f"p = {p:.2g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--mlflow", action="store_true", help="log the tables and every row's mean ranks to MLflow")
    args = ap.parse_args(argv)
    rows = []
    for row in BOARD:
        results, tasks = load_row(row)
        if not results:
            raise SystemExit(f"{row.suite} at {row.budget} trials: no studies in {', '.join(row.pieces)}")
        entry = score_row(results, tasks, row.budget)
        rows.append((row, results, tasks, entry))
        print(
            f"{row.suite} at {row.budget}: {entry['n_cells']} cells, meta {entry['place'].get(OURS)} of "
            f"{len(entry['mean_rank'])}",
            flush=True,
        )
    average = average_over_suites(rows)
    scored = [(row, e) for row, _r, _t, e in rows]
    table = render(scored, average)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {
        "rows": [
            {"suite": row.suite, "budget": row.budget, "detail": row.detail, "pieces": list(row.pieces), **e}
            for row, e in scored
        ],
        "average": average,
    }
    (args.out / "scoreboard.json").write_text(json.dumps(record, indent=1))
    (args.out / "scoreboard.md").write_text(table.lstrip() + "\n")
    print(table)
    if args.mlflow:
        print(f"MLflow run {_log(record, table)}")
    print(f"\nwritten to {args.out}/")
    return 0


def _log(record: dict[str, Any], table: str) -> str:
    import time

    from mlflow.entities import Metric

    from core_rl.common.runs import tracked_run

    ts = int(time.time() * 1000)
    ranks = [
        (r["budget"], "".join(c if c.isalnum() else "_" for c in r["suite"]).strip("_").lower(), r["mean_rank"])
        for r in record["rows"]
    ]
    ranks += [(budget, "average", avg["mean_rank"]) for budget, avg in record["average"].items()]
    metrics = [Metric(f"mean_rank.{b}.{key}.{s}", v, ts, 0) for b, key, rank in ranks for s, v in rank.items()]
    with tracked_run("autotune", run_name="scoreboard", tags={"autotune.kind": "scoreboard"}) as run:
        for i in range(0, len(metrics), 900):  # MLflow takes at most 1,000 metrics per batch
            run.client.log_batch(run.run_id, metrics=metrics[i : i + 900])
        run.client.log_text(run.run_id, table, "scoreboard.md")
        run.client.log_dict(run.run_id, record, "scoreboard.json")
        return str(run.run_id)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
