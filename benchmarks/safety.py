"""Safe RL benchmark in OmniSafe's table format: reward and cost (mean ± std over seeds) per agent and task.

``python -m benchmarks.safety [--quick] [--seeds N] [--tasks ...] [--algos ...] [--no-mlflow]``

Every (task, algorithm, seed) trains from scratch on our CMDP tasks (``safety/PointGoal-v0``,
``safety/CartPole-v0``, ``safety/HazardGrid-v0``, ``safety/Recommender-v0``), then its final policy plays fresh evaluation
episodes (deterministic, 20 by default) whose episodic return and cost fill the table, like
OmniSafe's. Beside them: the cumulative cost over all *training* steps (what safe exploration is
about), the training cost rate, and the verdicts of the issue's targets — final cost ≤ limit,
return ≥ 90% of unconstrained PPO's, cumulative training cost below PPO-Lag's. Cumulative
training cost curves are plotted per task. Results go to the terminal, ``docs/benchmarks/safety.md``
(+ one PNG per task), a JSON file under ``.deeprl/benchmarks/`` and MLflow (experiment
``benchmark-safety``: a parent run, one child per run with its training curves). ``--results FILE ...``
re-renders the report from saved JSON without training.

``--tasks SG-PointGoal1 SG-CarGoal1`` runs the real Safety-Gymnasium tasks
(``safety-gymnasium/SafetyPointGoal1-v0``, ``safety-gymnasium/SafetyCarGoal1-v0``; ``make safety-env``
first) at Safety-Gymnasium's own limit of 25 per 1000-step episode; they are not in the default set.

Cost limits: Safety-Gymnasium's 25 per 1000-step episode scaled to our 200-step episodes (5) for
PointGoal and CartPole; the gridworld's episodes end at the goal after ~10 steps, so its limit
(0.25 expected hazard entries per episode) is chosen to bind rather than scaled; the recommender's
(10 clickbait items shown per 30-step session) sits between the clickbait-free policies (≈ 0) and the
engagement-seeking ones (26–48), see :mod:`safety.envs.recommender`.

Per-task settings (``Task.overrides``, logged as run parameters) are the ones whose units are the
task's: the dual step size α of λ ← λ + α(Ĵ_c − d) is in λ per unit of cost, so the gridworld, whose
costs are ~20× smaller than the others', gets a 10× larger α (and 10× PID gains); its shield
predicts one step ahead (a gridworld has no inertia, so the next step's cost is the whole risk) with
an absolute threshold; Saute's ``unsafe_reward`` is per step, so it is scaled to PointGoal's
per-step progress reward. ``Task.feasible_bound`` is an upper bound on the expected return of any
policy within the limit, where one is known in closed form (the constrained optimum can't do
better, so "≥ 90% of PPO" is unreachable where the bound is below it).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import (
    BenchmarkMLflow,
    Resume,
    Stopwatch,
    add_run_arguments,
    benchmark_run,
    command_line,
    mode_note,
    parse_run_arguments,
    resumed_agent,
    run_main,
    run_stamp,
    seed_range,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DOC = REPO / "docs" / "benchmarks" / "safety.md"
EXPERIMENT = "benchmark-safety"


@dataclass(frozen=True)
class Task:
    env_id: str
    limit: float
    steps: int  # full budget
    quick_steps: int  # --quick budget
    label: str
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # algo label -> config overrides
    common: dict[str, Any] = field(default_factory=dict)  # settings of the task for every algorithm
    feasible_bound: float | None = None  # max expected return of any policy with cost <= limit, if known
    bound_note: str = ""


_LAMBDA_X10 = {
    "PPO-Lag": dict(lagrangian_lr=0.5),
    "TRPO-Lag": dict(lagrangian_lr=0.5),
    "PID-Lag": dict(pid_kp=1.0, pid_ki=0.1, pid_kd=0.1),
    "Shield": dict(lagrangian_lr=0.5, shield_horizon=1, shield_threshold=0.9),
}

TASKS = [
    Task("safety/PointGoal-v0", 5.0, 200_000, 81_920, "PointGoal", overrides={"Saute": dict(unsafe_reward=-0.03)}),
    Task(
        "safety/CartPole-v0",
        5.0,
        200_000,
        81_920,
        "CartPole",
        feasible_bound=202.5,
        bound_note="every step that earns the +0.5 lure (x > 1.2) is also out of the safe band (|x| > 1, cost 1), "
        "so E[lure steps] ≤ E[cost] ≤ 5 and any feasible policy earns at most 200 + 0.5·5 = 202.5",
    ),
    Task(
        "safety/HazardGrid-v0",
        0.25,
        100_000,
        40_960,
        "HazardGrid",
        overrides=_LAMBDA_X10,
        feasible_bound=1.0,
        bound_note="the only reward is 1 for reaching the goal",
    ),
    # 30-step sessions of the RecSim NG twin, clickbait exposure capped at 10 per session; short-horizon
    # discounting and 16 sessions × 60 steps per rollout (the settings of tests/test_safety_recommender.py)
    Task(
        "safety/Recommender-v0",
        10.0,
        307_200,
        122_880,
        "Recommender",
        common=dict(n_envs=16, n_steps=60, gamma=0.9),
        overrides={a: dict(batch_size=240, lr=1e-3) for a in ("PPO", "PPO-Lag", "PID-Lag", "Saute")},
    ),
    # the real benchmark (safety.safety_gymnasium: Safety-Gymnasium 1.0.0 in child processes, `make
    # safety-env`), at its own cost limit of 25 per 1000-step episode; only run when named by --tasks
    Task("safety-gymnasium/SafetyPointGoal1-v0", 25.0, 200_000, 40_000, "SG-PointGoal1"),
    Task("safety-gymnasium/SafetyCarGoal1-v0", 25.0, 200_000, 40_000, "SG-CarGoal1"),
]
#: what runs without --tasks: our own CMDP tasks (Safety-Gymnasium's need their venv and hours)
DEFAULT_TASKS = [t.label for t in TASKS if not t.env_id.startswith("safety-gymnasium/")]

#: label -> (registry name, config overrides, budget factor, spaces it needs)
ALGOS: dict[str, tuple[str, dict[str, Any], float, str]] = {
    "PPO": ("ppo_unconstrained", {}, 1.0, "any"),
    "PPO-Lag": ("ppo_lag", {}, 1.0, "any"),
    "TRPO-Lag": ("trpo_lag", {}, 1.0, "any"),
    "PID-Lag": ("pid_lag", {}, 1.0, "any"),
    "CPO": ("cpo", {}, 1.0, "any"),
    "Saute": ("saute_ppo", {}, 1.0, "box_obs"),
    "Shield": ("shield_ppo_lag", {}, 1.0, "discrete_or_box_action"),
    "SafeMPC": ("safe_mpc", {}, 0.1, "box"),
}


def applicable(algo: str, env_id: str) -> bool:
    import gymnasium as gym

    import safety  # noqa: F401  (registers the tasks)
    from core_rl.common.envs import make_env

    env = make_env(env_id)
    need = ALGOS[algo][3]
    box_obs = isinstance(env.observation_space, gym.spaces.Box)
    box_act = isinstance(env.action_space, gym.spaces.Box)
    env.close()
    simple_act = box_act or isinstance(env.action_space, gym.spaces.Discrete)
    return (
        need == "any"
        or (need == "box_obs" and box_obs)
        or (need == "box" and box_obs and box_act)
        or (need == "discrete_or_box_action" and simple_act)
    )


@dataclass
class RunResult:
    task: str
    algo: str
    seed: int
    steps: int
    limit: float
    eval_return: float
    eval_cost: float
    train_return: float
    train_cost: float
    cumulative_cost: float
    cost_rate: float
    violation_steps: float
    episodes_over_limit: float
    wall_s: float
    final_lambda: float | None = None
    cpu_s: float = float("nan")  # training CPU time: this process + the env's child processes (Safety-Gymnasium)
    curve: list[tuple[int, float, float, float]] = field(default_factory=list)  # step, return, cost, cum. cost


def agent_config(task: Task, algo: str, seed: int) -> dict[str, Any]:
    """The config of one run: the algorithm's benchmark settings, then the task's overrides."""
    return dict(seed=seed, cost_limit=task.limit, **{**ALGOS[algo][1], **task.common, **task.overrides.get(algo, {})})


def run_one(
    task: Task,
    algo: str,
    seed: int,
    steps: int,
    eval_episodes: int,
    resume: Resume | None = None,
) -> RunResult:
    """Train ``algo`` on ``task`` for ``steps`` (times the algorithm's factor), then evaluate it.

    With ``resume`` (:class:`benchmarks.common.Resume`), a run longer than one sitting survives being
    stopped: every ``resume.every`` env steps (at the end of an iteration) the agent's checkpoint
    (``agent.pt``: weights, optimizers, λ, the cost monitor's totals, counters, torch RNG) and
    ``progress.json`` (the metric history so far, the CPU and wall seconds spent) are written to its
    directory, and a later call with the same arguments continues from them instead of starting over. A resumed run makes its env again from the seed (the episode in
    progress when it stopped is lost, and the env's stream restarts), so it is not bit-identical to an
    uninterrupted one. A checkpoint whose config is not this run's is refused. A SIGINT or SIGTERM saves
    the finished iterations before it stops the run."""
    import safety  # noqa: F401  (registers the tasks)
    from core_rl.common.errors import RunInterrupted
    from core_rl.common.runs import interrupt_signals
    from core_rl.common.tracking import MemoryTracker
    from core_rl.registry import get_algo
    from safety.evaluation import evaluate_cmdp

    name, _, factor, _ = ALGOS[algo]
    cls = get_algo(name).cls
    tracker = MemoryTracker()
    config = agent_config(task, algo, seed)
    agent, saved = resumed_agent(cls, config, tracker, resume)
    spent_cpu = spent_wall = 0.0
    if saved is not None:
        for key, points in saved["metrics"].items():  # the history up to the checkpoint, not past it
            tracker.metrics[key] = [(int(s), float(v)) for s, v in points if int(s) <= agent.num_timesteps]
        spent_cpu, spent_wall = float(saved["cpu_s"]), float(saved["wall_s"])
    else:
        agent = cls(task.env_id, config, tracker=tracker)
    budget = max(1000, int(steps * factor))
    # the Safety-Gymnasium bridge's children: their whole life counts (making and warming the envs too)
    children = getattr(agent.env.unwrapped, "child_pids", [])
    watch = Stopwatch(spent_wall, spent_cpu)
    last_save = agent.num_timesteps

    def spent() -> tuple[float, float]:
        wall, cpu = watch.elapsed()
        return cpu + _children_cpu(children), wall

    def save_progress(agent: Any, metrics: Any, force: bool = False) -> None:
        nonlocal last_save
        if resume is None or agent.num_timesteps >= budget:
            return
        if not force and not resume.due(agent.num_timesteps, last_save):
            return
        last_save = agent.num_timesteps
        cpu_s, wall_s = spent()
        with watch.paused():  # writing the checkpoint is not training
            resume.save(
                {"steps": agent.num_timesteps, "cpu_s": cpu_s, "wall_s": wall_s, "metrics": dict(tracker.metrics)},
                lambda directory: agent.save(directory / "agent.pt"),
            )

    if budget > agent.num_timesteps:
        try:
            with interrupt_signals():  # the first SIGINT/SIGTERM stops the run after the current iteration
                agent.learn(budget - agent.num_timesteps, callback=save_progress)
        except RunInterrupted:  # Ctrl-C / SIGTERM between iterations: keep what was learned, then stop
            save_progress(agent, {}, force=True)
            agent.close()
            raise
    cpu, wall = spent()
    ev = evaluate_cmdp(agent, eval_episodes, seed=100_000 + 1_000 * seed)
    m = agent.last_metrics
    hist = {k: dict(tracker.metrics.get(k, [])) for k in ("episode_return", "episode_cost", "cumulative_cost")}
    curve = [
        (int(s), hist["episode_return"].get(s, float("nan")), hist["episode_cost"].get(s, float("nan")), v)
        for s, v in tracker.metrics.get("cumulative_cost", [])
    ]
    agent.close()
    return RunResult(
        task=task.label,
        algo=algo,
        seed=seed,
        steps=int(agent.num_timesteps),
        limit=task.limit,
        eval_return=ev["mean_return"],
        eval_cost=float(ev["mean_cost"][0]),
        train_return=float(m.get("episode_return", float("nan"))),
        train_cost=float(m.get("episode_cost", float("nan"))),
        cumulative_cost=float(m.get("cumulative_cost", float("nan"))),
        cost_rate=float(m.get("cost_rate", float("nan"))),
        violation_steps=float(m.get("violation_steps", float("nan"))),
        episodes_over_limit=float(m.get("episodes_over_limit", float("nan"))),
        wall_s=wall,
        cpu_s=cpu,
        final_lambda=float(m["lambda"]) if "lambda" in m else None,
        curve=curve[:: max(1, len(curve) // 300)],
    )


def _children_cpu(pids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by the live processes ``pids`` (Linux /proc)."""
    import os

    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


# ---- aggregation -----------------------------------------------------------------------------------
def _ms(xs: Sequence[float]) -> tuple[float, float]:
    v = [x for x in xs if x is not None and math.isfinite(x)]
    return (float(np.mean(v)), float(np.std(v))) if v else (float("nan"), float("nan"))


def summarize(results: Sequence[RunResult]) -> list[dict[str, Any]]:
    rows = []
    for task in TASKS:
        per_task = [r for r in results if r.task == task.label]
        if not per_task:
            continue
        ppo = _ms([r.eval_return for r in per_task if r.algo == "PPO"])[0]
        lag_cum = _ms([r.cumulative_cost for r in per_task if r.algo == "PPO-Lag"])[0]
        for algo in ALGOS:
            rs = [r for r in per_task if r.algo == algo]
            if not rs:
                continue
            row: dict[str, Any] = {
                "task": task.label,
                "algo": algo,
                "seeds": len(rs),
                "limit": task.limit,
                "steps": int(np.median([r.steps for r in rs])),
            }
            for key in ("eval_return", "eval_cost", "cumulative_cost", "cost_rate", "train_cost", "wall_s"):
                row[key], row[key + "_std"] = _ms([getattr(r, key) for r in rs])
            row["return_pct_ppo"] = (
                100 * row["eval_return"] / ppo if ppo and math.isfinite(ppo) and ppo > 0 else float("nan")
            )
            row["return_pct_bound"] = (
                100 * row["eval_return"] / task.feasible_bound if task.feasible_bound else float("nan")
            )
            row["cost_ok"] = bool(row["eval_cost"] <= task.limit)
            row["return_ok"] = bool(row["return_pct_ppo"] >= 90) if math.isfinite(row["return_pct_ppo"]) else None
            row["cum_below_lag"] = (
                bool(row["cumulative_cost"] < lag_cum)
                if algo not in ("PPO", "PPO-Lag") and math.isfinite(lag_cum)
                else None
            )
            rows.append(row)
    return rows


def _f(x: float, nd: int = 2) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:,.{nd}f}"


def _yn(x: bool | None) -> str:
    return "–" if x is None else ("yes" if x else "**no**")


def markdown_tables(rows: Sequence[dict[str, Any]]) -> str:
    out = []
    for task in TASKS:
        rs = [r for r in rows if r["task"] == task.label]
        if not rs:
            continue
        out.append(f"### {task.label} (`{task.env_id}`, cost limit {task.limit:g})\n")
        if task.feasible_bound is not None:
            ppo = next((r["eval_return"] for r in rs if r["algo"] == "PPO"), float("nan"))
            out.append(
                f"Feasible bound: {task.bound_note}; that is {_f(100 * task.feasible_bound / ppo, 0)}% of "
                f"unconstrained PPO's return here (the return column also gives % of the bound).\n"
                if math.isfinite(ppo) and ppo > 0
                else f"Feasible bound: {task.bound_note}.\n"
            )
        if task.overrides or task.common:
            fmt = lambda o: ", ".join(f"`{k}={v}`" for k, v in o.items())  # noqa: E731
            out.append(
                "Task settings: "
                + "; ".join(
                    ([f"all: {fmt(task.common)}"] if task.common else [])
                    + [f"{a}: {fmt(o)}" for a, o in task.overrides.items()]
                )
                + ".\n"
            )
        out.append(
            "| Algorithm | Reward | Cost | cost, last training episodes | cumulative training cost"
            " | training cost rate | steps | seeds | cost ≤ limit | return ≥ 90% PPO | cum. cost < PPO-Lag |"
        )
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rs:
            out.append(
                f"| {r['algo']} | {_f(r['eval_return'])} ± {_f(r['eval_return_std'])} | "
                f"{_f(r['eval_cost'])} ± {_f(r['eval_cost_std'])} | "
                f"{_f(r['train_cost'])} ± {_f(r['train_cost_std'])} | {_f(r['cumulative_cost'], 0)} ± "
                f"{_f(r['cumulative_cost_std'], 0)} | {_f(r['cost_rate'], 4)} | {r['steps']:,} | {r['seeds']} | "
                f"{_yn(r['cost_ok'])} | {_yn(r['return_ok'])} ({_f(r['return_pct_ppo'], 0)}%"
                + (f"; {_f(r['return_pct_bound'], 0)}% of bound" if math.isfinite(r["return_pct_bound"]) else "")
                + ") | "
                f"{_yn(r['cum_below_lag'])} |"
            )
        out.append("")
    return "\n".join(out)


def curve_plots(results: Sequence[RunResult], out_dir: Path, stem: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for task in TASKS:
        rs = [r for r in results if r.task == task.label and r.curve]
        if not rs:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
        for i, algo in enumerate(ALGOS):
            runs = [r for r in rs if r.algo == algo]
            if not runs:
                continue
            color = f"C{i}"
            for j, r in enumerate(runs):
                s = np.array([c[0] for c in r.curve])
                axes[0].plot(s, [c[3] for c in r.curve], color=color, alpha=0.8, label=algo if j == 0 else None)
                axes[1].plot(s, [c[2] for c in r.curve], color=color, alpha=0.8, label=algo if j == 0 else None)
        axes[0].set(
            title=f"{task.label}: cumulative training cost", xlabel="env steps", ylabel="Σ cost", yscale="symlog"
        )
        axes[1].axhline(task.limit, color="black", ls="--", lw=1, label="limit")
        axes[1].set(title=f"{task.label}: episodic cost (last 100 training episodes)", xlabel="env steps")
        axes[0].legend(fontsize=7)
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"{stem}-{task.label}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


class MLflowLog(BenchmarkMLflow):
    """A parent run for the benchmark and one child per (task, algo, seed) with its curves."""

    def child(self, res: RunResult) -> None:
        task = next(t for t in TASKS if t.label == res.task)
        summary = {
            k: v for k, v in asdict(res).items() if isinstance(v, (int, float)) and k != "seed" and v is not None
        }
        curves = {
            "train/episode_return": [(s, ret) for s, ret, _, _ in res.curve],
            "train/episode_cost": [(s, cost) for s, _, cost, _ in res.curve],
            "train/cumulative_cost": [(s, cum) for s, _, _, cum in res.curve],
        }
        self.log_child(
            f"{res.algo}-{res.task}-s{res.seed}",
            {"algo": res.algo, "task": res.task, "seed": str(res.seed)},
            {"algo": ALGOS[res.algo][0], "task": res.task, **agent_config(task, res.algo, res.seed)},
            summary,
            res.steps,
            curves,
            max_points=None,
        )

    def finish(self, rows: Sequence[dict[str, Any]], files: Sequence[Path]) -> None:
        metrics = {
            f"{r['task']}_{r['algo']}/{name}": r[key]
            for r in rows
            for name, key in (("reward", "eval_return"), ("cost", "eval_cost"), ("cumulative_cost", "cumulative_cost"))
        }
        self.close(metrics, files)


def machine_note() -> dict[str, Any]:
    import os
    import platform

    import gymnasium as gym

    cpu = "unknown"
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gymnasium": gym.__version__,
    }


def report_markdown(rows: Sequence[dict[str, Any]], meta: dict[str, Any], plots: Sequence[str]) -> str:
    m = meta["machine"]
    images = "\n".join(f"![{p}]({p})" for p in plots)
    rerendered = f" — this report merges saved results: `{meta['rerendered']}`" if meta.get("rerendered") else ""
    return f"""# Safe RL benchmark (OmniSafe table format)

Generated by `benchmarks/safety.py` on {meta["date"]} ({meta["mode"]}).

**Command:** `{meta["command"]}`{rerendered}

**Machine:** {m["cpu"]}, {m["cores"]} cores shared with other jobs (load average {m["loadavg"]}); Python
{m["python"]}, torch {m["torch"]} (CPU, 1 thread per run), gymnasium {m["gymnasium"]}.

*Reward* and *Cost*: mean ± std over seeds of the final policy's episodic return and cost on
{meta["eval_episodes"]} fresh evaluation episodes (deterministic actions; the shield's safety layer and
Saute's budget in the observation are part of the policy). *Cost, last training episodes*: the mean
episodic cost of the stochastic policy's last 100 training episodes (what a Lagrangian method drives
to the limit: a constrained optimum can be a stochastic policy, whose deterministic mode may cost
more or less). *Cumulative training cost*: every cost
incurred over all training steps (exploration included), the number safe exploration tries to keep
small; *training cost rate* = that / steps. Targets of the issue: final cost ≤ limit, return ≥ 90%
of unconstrained PPO's, cumulative training cost below PPO-Lag's. SafeMPC (model-based, one
planning call per step) runs on {ALGOS["SafeMPC"][2]:.0%} of the steps of the others (a CEM plan per
step is ~50× slower than a policy forward pass on the CPU; model-based RL is about sample efficiency) and only where actions and observations are Box.
Saute needs Box observations (not the gridworld); the shield's safety layer has no slate form (not
the recommender). Seeds {meta.get("seeds_from", 0)}..{meta.get("seeds_from", 0) + meta["seeds"] - 1}.

{markdown_tables(rows)}
{images}
"""


def _jsonable(results: Sequence[RunResult], meta: dict[str, Any]) -> dict[str, Any]:
    return {"meta": meta, "results": [asdict(r) for r in results]}


def load_results(paths: Sequence[Path]) -> tuple[list[RunResult], dict[str, Any]]:
    results, meta = [], {}
    for p in paths:
        data = json.loads(Path(p).read_text())
        meta = meta or data["meta"]
        for r in data["results"]:
            r["curve"] = [tuple(c) for c in r.get("curve", [])]
            results.append(RunResult(**r))
    return results, meta


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.safety", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="shorter budgets (~80k steps per run; SafeMPC 10%% of that)")
    p.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS, choices=[t.label for t in TASKS])
    p.add_argument("--algos", nargs="+", default=list(ALGOS), choices=list(ALGOS))
    add_run_arguments(p, DEFAULT_DOC)
    return parse_run_arguments(p, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    out_dir = (args.out_dir or REPO / ".deeprl" / "benchmarks").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = run_stamp()
    command = command_line("benchmarks.safety", argv)
    if args.results:
        results, meta = load_results(args.results)
        meta = {**meta, "rerendered": command}
    else:
        meta = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": command,
            "mode": mode_note(args),
            "seeds": args.seeds,
            "seeds_from": args.seeds_from,
            "eval_episodes": args.eval_episodes,
            "machine": machine_note(),
        }
        results = []

    # a parent run for a training invocation (none when re-rendering); FAILED/KILLED if the block ends early
    with benchmark_run(
        not args.no_mlflow and not args.results,
        args.tracking_uri,
        EXPERIMENT,
        f"safety-{stamp}",
        {"command": command, "mode": meta.get("mode"), "seeds": args.seeds},
        tags={"benchmark": "safety"},
        cls=MLflowLog,
    ) as mlog:
        if not args.results:
            tasks = [t for t in TASKS if t.label in args.tasks]
            plan = [(t, a, s) for s in seed_range(args) for t in tasks for a in args.algos if applicable(a, t.env_id)]
            for task, algo, seed in plan:  # the partial-results file below keeps what an interrupted run did
                steps = int((task.quick_steps if args.quick else task.steps) * args.steps_scale)
                res = run_one(task, algo, seed, steps, args.eval_episodes)
                results.append(res)
                print(
                    f"{task.label:<10} {algo:<8} seed {seed}: reward {res.eval_return:8.2f} cost {res.eval_cost:7.2f} "
                    f"(limit {task.limit:g}) | train cum. cost {res.cumulative_cost:9.0f} | {res.steps:,} steps "
                    f"in {res.wall_s:6.0f}s",
                    flush=True,
                )
                if mlog is not None:
                    mlog.child(res)
                (out_dir / f"safety-{stamp}-partial.json").write_text(json.dumps(_jsonable(results, meta)))
        rows = summarize(results)
        print()
        print(markdown_tables(rows))
        files: list[Path] = []
        if not args.results:
            json_path = out_dir / f"safety-{stamp}.json"
            json_path.write_text(json.dumps(_jsonable(results, meta), indent=1))
            (out_dir / f"safety-{stamp}-partial.json").unlink(missing_ok=True)
            files.append(json_path)
            print(f"results: {json_path}")
        plots = curve_plots(results, out_dir, f"safety-{stamp}")
        files += plots
        if not args.no_doc:
            args.doc.parent.mkdir(parents=True, exist_ok=True)
            doc_plots = []
            for p in plots:
                target = args.doc.parent / f"safety-{p.name.split('-')[-1]}"
                target.write_bytes(p.read_bytes())
                doc_plots.append(target.name)
            args.doc.write_text(report_markdown(rows, meta, doc_plots))
            files.append(args.doc)
            print(f"report: {args.doc}")
        if mlog is not None:
            mlog.finish(rows, files)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
