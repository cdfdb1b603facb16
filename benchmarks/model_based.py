"""Sample efficiency of model-based RL: PETS-style CEM-MPC and MBPO against model-free SAC.

``python -m benchmarks.model_based [--quick] [--seeds N] [--envs ...] [--algos ...] [--steps-scale X]
[--no-mlflow] [--tracking-uri URI] [--results FILE ...]``

Each (algo, env, seed) trains once, in this process, single-threaded on the CPU:

* ``pets``: :class:`core_rl.model_based.mpc.PETS` — a bootstrap ensemble of Gaussian networks
  (learned dynamics *and* reward), CEM replanning at every step, particles following one member each;
* ``mbpo``: :class:`core_rl.model_based.mbpo.MBPO` — the same kind of ensemble generating short
  branched rollouts for SAC (95 % model data, 10 updates per env step);
* ``sac``: :class:`core_rl.continuous.sac.SAC`, the model-free reference, trained far longer.

The learning curve is the deterministic evaluation return (PETS: the MPC controller itself) on
the *same* fixed, seeded start states for every algorithm, measured before training and then every
``eval_every`` real env steps; evaluation steps are not counted as training steps and their time is
reported apart. The sample-efficiency criterion: SAC's final return R is its last evaluation; an
algorithm "reaches" it at the first checkpoint whose evaluation is ≥ R − max(5 % of (R − R_0), 0.5), R_0 being
the evaluation before any training. The speed-up is SAC's steps-to-reach divided by the algorithm's.
Training-episode returns are kept too (JSON, MLflow). Results go to the terminal,
``docs/benchmarks/model_based.md``, one PNG plot, a JSON file under ``.deeprl/benchmarks/`` and MLflow
(a parent run and one child run per training, sqlite store ``<repo>/.deeprl/mlflow.db`` unless
``--tracking-uri``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import (
    BenchmarkMLflow,
    add_run_arguments,
    benchmark_run,
    command_line,
    parse_run_arguments,
    row_metrics,
    run_main,
    seed_range,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DOC = REPO / "docs" / "benchmarks" / "model_based.md"
EXPERIMENT = "benchmark-model-based"
EVAL_SEED = 10_000  # the same evaluation start states for every algorithm and checkpoint
ALGOS = ("pets", "mbpo", "sac")
ENVS = ("Pendulum-v1", "MountainCarContinuous-v0")  # the default run
#: MuJoCo tasks, run on request (``--envs HalfCheetah-v5``): an hour of CPU per MBPO run, not a default
MUJOCO_ENVS = ("HalfCheetah-v5",)


@dataclass(frozen=True)
class Setting:
    algo: str
    env_id: str
    steps: int
    quick_steps: int
    config: dict[str, Any]
    eval_every: int = 1000
    eval_episodes: int = 5


def settings() -> dict[tuple[str, str], Setting]:
    """Budgets and hyperparameters per (algo, env)."""
    # networks and candidate counts sized for a shared CPU (the classes' defaults are larger)
    pets_common = dict(
        hidden_sizes=(64, 64),
        n_members=5,
        n_particles=5,
        n_candidates=150,
        n_iterations=4,
        n_elites=15,
        horizon=15,
        train_every=200,
        model_epochs=50,
    )
    mbpo_common = dict(
        hidden_sizes=(64, 64),
        model_hidden_sizes=(64, 64),
        gradient_steps=10,
        rollout_batch_size=256,
        rollout_every=25,
        model_train_freq=250,
    )
    mc_sac = dict(
        hidden_sizes=(64, 64),
        lr=3e-4,
        batch_size=512,
        buffer_size=50_000,
        learning_starts=1000,
        train_freq=32,
        gradient_steps=32,
        tau=0.01,
        gamma=0.9999,
        ent_coef=0.1,
    )
    out = [
        Setting(
            "sac",
            "Pendulum-v1",
            20_000,
            8_000,
            dict(hidden_sizes=(64, 64), lr=1e-3, learning_starts=1000),
            eval_every=1_000,
        ),
        Setting("pets", "Pendulum-v1", 3_000, 1_800, dict(pets_common, initial_random_steps=200), eval_every=600),
        Setting(
            "mbpo",
            "Pendulum-v1",
            4_000,
            2_000,
            dict(mbpo_common, learning_starts=250, rollout_schedule=(500, 2_000)),
            eval_every=500,
        ),
        Setting("sac", "MountainCarContinuous-v0", 30_000, 10_000, mc_sac, eval_every=2_000, eval_episodes=2),
        Setting(
            "pets",
            "MountainCarContinuous-v0",
            5_000,
            3_000,
            dict(pets_common, initial_random_steps=1_000, train_every=1_000, horizon=30),
            eval_every=1_000,
            eval_episodes=2,
        ),
        Setting(
            "mbpo",
            "MountainCarContinuous-v0",
            10_000,
            4_000,
            dict(mbpo_common, learning_starts=1_000, rollout_schedule=(1_000, 5_000), gamma=0.99),
            eval_every=1_000,
            eval_episodes=2,
        ),
    ]
    out += halfcheetah_settings()
    return {(s.algo, s.env_id): s for s in out}


def halfcheetah_settings() -> list[Setting]:
    """HalfCheetah-v5, where MBPO's and PETS's sample-efficiency claims are usually shown, at budgets one CPU
    core runs in about an hour per algorithm.

    - MBPO follows Janner et al.'s HalfCheetah setting where it fits: 5,000 random steps, an ensemble of 7
      Gaussian members of four 200-unit layers refitted every 250 steps, rollouts of length 1 branched from
      real states, 95 % model data in the learner's minibatches, and the model replay holding about 4,000 env
      steps' worth of rollouts (MBPO: 400 rollouts per env step kept for 1,000 steps; here 100 per step kept
      4× longer, the same 400,000 transitions). The paper's 20–40 SAC updates per env step are cut to 10.
    - PETS (Chua et al.) replans by CEM through 5 members at every step, as the paper does. The planner is cut
      to fit a CPU: 100 candidates × 3 iterations at a horizon of 15 (the paper: 500 × 5 at 30), 2 hidden
      layers, about 50 ms per env step. The ensemble is refitted after every episode (1,000 steps).
    - SAC is the model-free reference with SB3's HalfCheetah hyperparameters (RL-Zoo: lr 3e-4, batch 256,
      one update per env step, [256, 256]), except the same 5,000 random steps as MBPO (RL-Zoo: 10,000).
    """
    env_id = "HalfCheetah-v5"
    sac = dict(hidden_sizes=(256, 256), lr=3e-4, batch_size=256, buffer_size=1_000_000, learning_starts=5_000)
    mbpo = dict(
        sac,
        model_hidden_sizes=(200, 200, 200, 200),
        n_members=7,
        model_epochs=20,
        model_train_freq=250,
        rollout_every=250,
        rollout_batch_size=25_000,
        rollout_length_min=1,
        rollout_length_max=1,
        model_buffer_size=400_000,
        real_ratio=0.05,
        gradient_steps=10,
    )
    pets = dict(
        hidden_sizes=(200, 200),
        n_members=5,
        n_particles=5,
        n_candidates=100,
        n_iterations=3,
        n_elites=10,
        horizon=15,
        train_every=1_000,
        model_epochs=20,
        initial_random_steps=1_000,
    )
    return [
        Setting("sac", env_id, 100_000, 20_000, sac, eval_every=5_000, eval_episodes=2),
        Setting("mbpo", env_id, 25_000, 8_000, mbpo, eval_every=2_500, eval_episodes=2),
        Setting("pets", env_id, 10_000, 3_000, pets, eval_every=2_500, eval_episodes=2),
    ]


@dataclass
class RunResult:
    algo: str
    env_id: str
    seed: int
    steps: int
    wall_s: float
    cpu_s: float
    curve: list[tuple[int, float]]  # (env steps at episode end, training episode return)
    evals: list[tuple[int, float]]  # (env steps, mean evaluation return on the fixed start states)
    eval_return: float  # the last evaluation
    eval_std: float
    eval_s: float = 0.0  # time spent evaluating (excluded from wall_s and cpu_s)
    config: dict[str, Any] = field(default_factory=dict)


def _agent_class(algo: str) -> Any:
    from core_rl.registry import get_algo

    return get_algo(algo).cls


def run_one(s: Setting, steps: int, seed: int, log: Any = print) -> RunResult:
    from core_rl.common.tracking import NullTracker

    torch.set_num_threads(1)
    config = {**s.config, "seed": seed, "torch_threads": 1}
    agent = _agent_class(s.algo)(s.env_id, config, tracker=NullTracker())
    curve: list[tuple[int, float]] = []
    evals: list[tuple[int, float]] = []
    last: dict[str, float] = {}
    seen, next_eval, eval_time = [0], [s.eval_every], [0.0, 0.0]

    def evaluate() -> None:
        w, c = time.perf_counter(), time.process_time()
        ev = agent.evaluate(s.eval_episodes, seed=EVAL_SEED)
        evals.append((int(agent.num_timesteps), float(ev["mean_return"])))
        last.update(mean=float(ev["mean_return"]), std=float(ev["std_return"]))
        eval_time[0] += time.perf_counter() - w
        eval_time[1] += time.process_time() - c

    def on_iteration(a: Any, _m: dict[str, float]) -> None:
        if a.episodes_done > seen[0]:
            new = a.episodes_done - seen[0]
            for r in list(a.episode_returns)[-new:]:
                curve.append((int(a.num_timesteps), float(r)))
            seen[0] = a.episodes_done
        if a.num_timesteps >= next_eval[0]:
            evaluate()
            next_eval[0] += s.eval_every
            log(f"  {s.algo} {s.env_id} s{seed}: {a.num_timesteps}/{steps} steps, eval {evals[-1][1]:.1f}")

    evaluate()  # before any training: the initial policy / random actions
    w0, c0 = time.perf_counter(), time.process_time()
    agent.learn(steps, callback=on_iteration)
    if evals[-1][0] != agent.num_timesteps:
        evaluate()
    wall = time.perf_counter() - w0 - eval_time[0]
    cpu = time.process_time() - c0 - eval_time[1]
    agent.close()
    return RunResult(
        s.algo,
        s.env_id,
        seed,
        int(agent.num_timesteps),
        wall,
        cpu,
        curve,
        evals,
        last["mean"],
        last["std"],
        eval_time[0],
        config,
    )


# ---- analysis ------------------------------------------------------------------------------------
def smoothed(curve: Sequence[tuple[int, float]], window: int = 3) -> list[tuple[int, float]]:
    """Mean of the last ``window`` episodes at each episode end."""
    out = []
    for i in range(len(curve)):
        lo = max(0, i - window + 1)
        out.append((curve[i][0], float(np.mean([r for _, r in curve[lo : i + 1]]))))
    return out


def steps_to_reach(curve: Sequence[tuple[int, float]], threshold: float, window: int = 3) -> int | None:
    for step, value in smoothed(curve, window):
        if value >= threshold:
            return step
    return None


def eval_at(evals: Sequence[tuple[int, float]], steps: int) -> float:
    """The evaluation at the last checkpoint at or before ``steps`` real steps (NaN when there is none)."""
    before = [v for s, v in evals if s <= steps]
    return before[-1] if before else float("nan")


def _median(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(statistics.median(xs)) if xs else float("nan")


def summarize(results: Sequence[RunResult]) -> list[dict[str, Any]]:
    rows = []
    for env_id in dict.fromkeys(r.env_id for r in results):
        runs = [r for r in results if r.env_id == env_id]
        sac = [r for r in runs if r.algo == "sac"]
        initial = _median([r.evals[0][1] for r in runs if r.evals])
        target, sac_steps, sac_final = None, float("nan"), float("nan")
        if sac and all(r.evals for r in sac):
            sac_final = _median([r.evals[-1][1] for r in sac])
            target = sac_final - max(0.05 * (sac_final - initial), 0.5)
            sac_steps = _median([steps_to_reach(r.evals, target, window=1) for r in sac])
        for algo in dict.fromkeys(r.algo for r in runs):
            rs = [r for r in runs if r.algo == algo]
            reach = [steps_to_reach(r.evals, target, window=1) if target is not None else None for r in rs]
            reach_med = int(_median(reach)) if all(x is not None for x in reach) else None
            steps = int(_median([r.steps for r in rs]))
            rows.append(
                {
                    "env_id": env_id,
                    "algo": algo,
                    "seeds": len(rs),
                    "steps": steps,
                    "sac_at_steps": _median([eval_at(r.evals, steps) for r in sac]) if sac else float("nan"),
                    "eval_return": _median([r.eval_return for r in rs]),
                    "best_eval": _median([max(v for _, v in r.evals) for r in rs]),
                    "train_return": _median(
                        [float(np.mean([v for _, v in r.curve[-3:]])) if r.curve else float("nan") for r in rs]
                    ),
                    "initial_return": initial,
                    "sac_final": sac_final,
                    "target": target,
                    "steps_to_target": reach_med,
                    "speedup_vs_sac": (sac_steps / reach_med) if (reach_med and not math.isnan(sac_steps)) else None,
                    "wall_s": _median([r.wall_s for r in rs]),
                    "cpu_s": _median([r.cpu_s for r in rs]),
                }
            )
    return rows


def _f(x: Any, nd: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) >= 100):
        return f"{int(x):,}"
    return f"{x:.{nd}f}"


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        "| env | algo | real steps | final eval return | best eval | last-3 training episodes | "
        "SAC at these steps | steps to reach SAC's final | speed-up vs SAC | wall s | CPU s |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r['env_id']} | {r['algo']} | {_f(r['steps'])} | {_f(r['eval_return'])} | "
            f"{_f(r['best_eval'])} | {_f(r['train_return'])} | {_f(r.get('sac_at_steps'))} | "
            f"{'not reached' if r['steps_to_target'] is None else _f(r['steps_to_target'])} | "
            f"{_f(r['speedup_vs_sac'], 1) + '×' if r['speedup_vs_sac'] else '—'} | "
            f"{_f(r['wall_s'], 0)} | {_f(r['cpu_s'], 0)} |"
        )
    return "\n".join(lines)


def plot(results: Sequence[RunResult], rows: Sequence[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(r.env_id for r in results))
    fig, axes = plt.subplots(1, len(envs), figsize=(6.5 * len(envs), 4.2), squeeze=False)
    colors = {"pets": "tab:blue", "mbpo": "tab:green", "sac": "tab:red"}
    for ax, env_id in zip(axes[0], envs):
        for r in (r for r in results if r.env_id == env_id):
            xs, ys = zip(*r.evals) if r.evals else ((), ())
            ax.plot(
                [max(x, 100) for x in xs],
                ys,
                marker="o",
                ms=3,
                color=colors.get(r.algo),
                alpha=0.85,
                label=f"{r.algo} (seed {r.seed})",
            )
        target = next((row["target"] for row in rows if row["env_id"] == env_id and row["target"] is not None), None)
        if target is not None:
            ax.axhline(target, color="gray", ls="--", lw=1, label="SAC's final return (−5 % slack)")
        ax.set_xscale("log")
        ax.set_xlabel("real env steps (log; the evaluation before training is drawn at 100)")
        ax.set_ylabel("evaluation return (fixed start states)")
        ax.set_title(env_id)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def machine_note() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def verdicts(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One sentence per model-based run: does it reach SAC's final return, and how much sooner?"""
    out = []
    for r in rows:
        if r["algo"] == "sac" or r["target"] is None:
            continue
        sac = next((x for x in rows if x["env_id"] == r["env_id"] and x["algo"] == "sac"), None)
        sac_steps = sac["steps_to_target"] if sac else None
        weak = r["sac_final"] - r["initial_return"] <= 0.2 * max(abs(r["initial_return"]), abs(r["sac_final"]), 1.0)
        caveat = (
            (
                f" (SAC itself barely improved: final {r['sac_final']:.1f} vs {r['initial_return']:.1f} before "
                f"training, so reaching it says little)"
            )
            if weak
            else ""
        )
        if r["steps_to_target"] == 0:
            out.append(
                f"* {r['env_id']}, {r['algo']}: already at SAC's final return (target {r['target']:.1f}) "
                f"before any training{caveat}."
            )
        elif r["steps_to_target"] is None:
            out.append(
                f"* {r['env_id']}, {r['algo']}: does not reach SAC's final return "
                f"(target {r['target']:.1f}) within {r['steps']:,} real steps (best evaluation "
                f"{r['best_eval']:.1f}){caveat}."
            )
        else:
            ratio = r["speedup_vs_sac"] or float("nan")
            budget_ratio = sac["steps"] / r["steps_to_target"] if sac else float("nan")
            out.append(
                f"* {r['env_id']}, {r['algo']}: reaches SAC's final return (target {r['target']:.1f}) after "
                f"{r['steps_to_target']:,} real steps; SAC needed {sac_steps:,} "
                f"({ratio:.1f}× more; {budget_ratio:.1f}× with SAC's whole budget of {sac['steps']:,}){caveat}."
            )
    return out


def report_markdown(rows: Sequence[dict[str, Any]], meta: dict[str, Any], plot_name: str) -> str:
    cfg_lines = "\n".join(f"* `{k}`: {v}" for k, v in meta.get("configs", {}).items())
    verdict_lines = "\n".join(verdicts(rows)) or "* (no SAC run to compare with)"
    rendered = f" (this report: `{meta['rendered_by']}`)" if meta.get("rendered_by") else ""
    return f"""# Model-based vs model-free sample efficiency

Command{"s" if len(meta["commands"]) > 1 else ""}: {", ".join(f"`{c}`" for c in meta["commands"])}{rendered}

{markdown_table(rows)}

{verdict_lines}

![returns vs real env steps]({plot_name})

How to read it: every run is evaluated before training and then every `eval_every` real env steps of its
setting (`settings()` in `benchmarks/model_based.py`: every 500–2,000 on Pendulum and MountainCarContinuous; on
HalfCheetah every 5,000 for SAC and 2,500 for MBPO and PETS) on the same seeded start states (deterministic policy;
for PETS the MPC controller). "SAC at these steps" is SAC's evaluation at its last checkpoint at or before the row's real
steps: the return at equal samples. "Steps to reach SAC's final" is the first checkpoint whose evaluation is at least
SAC's final evaluation minus 5 % of its improvement over the untrained policy (at least 0.5); the speed-up is SAC's
steps-to-reach over the algorithm's. "Last-3 training episodes" is the mean return of the last three
training episodes (stochastic policies for SAC/MBPO, random start states). Wall and CPU seconds
exclude evaluation.

Seeds: {meta["seeds"]}. Machine: {meta["machine"]}. Wall times are on a CPU shared with other jobs
(single torch thread per run); CPU seconds are this process's own.

Configs (everything else at the defaults of the classes):

{cfg_lines}
"""


# ---- MLflow --------------------------------------------------------------------------------------
class MLflowLog(BenchmarkMLflow):
    """A parent run for the benchmark and one child run per (algo, env, seed)."""

    def child(self, res: RunResult) -> None:
        self.log_child(
            f"{res.algo}-{res.env_id}-s{res.seed}",
            {"algo": res.algo, "env_id": res.env_id, "seed": str(res.seed)},
            {"algo": res.algo, "env_id": res.env_id, "seed": res.seed, "config": res.config},
            {
                "steps": res.steps,
                "wall_s": res.wall_s,
                "cpu_s": res.cpu_s,
                "final_eval_return": res.eval_return,
                "eval_std": res.eval_std,
                "eval_s": res.eval_s,
            },
            res.steps,
            {"episode_return": res.curve, "eval_return": res.evals},
            max_points=None,
        )

    def finish(self, rows: Sequence[dict[str, Any]], files: Sequence[Path]) -> None:
        metrics = row_metrics(rows, ("eval_return", "best_eval"))
        for r in rows:
            key = f"{r['algo']}_{r['env_id']}"
            if r["steps_to_target"]:
                metrics[f"{key}/steps_to_sac_final"] = r["steps_to_target"]
            if r["speedup_vs_sac"]:
                metrics[f"{key}/speedup_vs_sac"] = r["speedup_vs_sac"]
        self.close(metrics, files)


# ---- CLI -----------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.model_based", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the short budgets (see settings())")
    p.add_argument("--envs", nargs="+", default=list(ENVS), choices=ENVS + MUJOCO_ENVS, metavar="ENV")
    p.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    add_run_arguments(p, DEFAULT_DOC, seeds=1, eval_episodes=False)
    return parse_run_arguments(p, argv)


def load_results(paths: Sequence[Path]) -> tuple[list[RunResult], dict[str, Any]]:
    """Runs and merged metadata (every command and config) of saved JSON result files."""
    results: list[RunResult] = []
    meta: dict[str, Any] = {"commands": [], "configs": {}, "seeds": 0, "machine": None}
    for path in paths:
        data = json.loads(Path(path).read_text())
        m = data.get("meta", {})
        meta["commands"].append(m.get("command", "?"))
        meta["configs"].update(m.get("configs", {}))
        meta["seeds"] = max(meta["seeds"], int(m.get("seeds", 1)))
        meta["machine"] = meta["machine"] or m.get("machine")
        results += [
            RunResult(**{**r, "curve": [tuple(c) for c in r["curve"]], "evals": [tuple(c) for c in r["evals"]]})
            for r in data["results"]
        ]
    return results, meta


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    table = settings()
    command = command_line("benchmarks.model_based", argv)
    if args.results:
        results, meta = load_results(args.results)
        meta["rendered_by"] = command
        run_name = f"model-based-report-{datetime.now():%Y%m%d-%H%M%S}"
        params: dict[str, Any] = {"results": ",".join(p.name for p in args.results)}
    else:
        results = []
        meta = {
            "command": command,
            "commands": [command],
            "seeds": args.seeds,
            "machine": machine_note(),
            "configs": {},
        }
        run_name = f"model-based-{datetime.now():%Y%m%d-%H%M%S}"
        params = {
            "quick": args.quick,
            "seeds": args.seeds,
            "envs": ",".join(args.envs),
            "algos": ",".join(args.algos),
            "steps_scale": args.steps_scale,
        }
    # the parent run: FINISHED when the block returns, FAILED on an error, KILLED on Ctrl-C / SIGTERM
    with benchmark_run(
        not args.no_mlflow,
        args.tracking_uri,
        EXPERIMENT,
        run_name,
        params,
        tags={"benchmark": "model_based"},
        cls=MLflowLog,
    ) as log:
        if not args.results:
            out_dir = args.out_dir or REPO / ".deeprl" / "benchmarks"
            out_dir.mkdir(parents=True, exist_ok=True)
            out = out_dir / f"model_based-{datetime.now():%Y%m%d-%H%M%S}.json"

            def save() -> None:  # after every run: a later run's crash loses nothing already measured
                out.write_text(
                    json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=1, default=str)
                )

            for env_id in args.envs:
                for algo in args.algos:
                    s = table[(algo, env_id)]
                    steps = max(1, int((s.quick_steps if args.quick else s.steps) * args.steps_scale))
                    meta["configs"][f"{algo} / {env_id}"] = f"{steps:,} steps; {s.config}"
                    for seed in seed_range(args):
                        print(f"[{algo} {env_id} seed {seed}] {steps} steps", flush=True)
                        res = run_one(s, steps, seed)
                        print(
                            f"  done in {res.wall_s:.0f}s wall / {res.cpu_s:.0f}s CPU (+{res.eval_s:.0f}s evaluating): "
                            f"evals {[(st, round(v, 1)) for st, v in res.evals]}",
                            flush=True,
                        )
                        results.append(res)
                        save()
                        if log is not None:
                            log.child(res)
            save()
            print(f"results: {out}")
        rows = summarize(results)
        print(markdown_table(rows))
        files: list[Path] = []
        if not args.no_doc:
            png = plot(results, rows, args.doc.with_suffix(".png"))
            args.doc.parent.mkdir(parents=True, exist_ok=True)
            args.doc.write_text(report_markdown(rows, meta, png.name))
            files = [args.doc, png]
            print(f"report: {args.doc}")
        if log is not None:
            log.finish(rows, files)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
