"""Machinery shared by the side-by-side benchmarks (ours vs Stable-Baselines3).

What every such benchmark needs and none of them should re-implement: the evaluation both
implementations are scored on, the per-run record, medians and ratios over seeds, a note on the
machine, the bar plot, the MLflow parent/child layout, cProfile of ``learn`` and the JSON results
files. ``benchmarks.on_policy`` and ``benchmarks.off_policy`` build on it.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import platform
import pstats
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import gymnasium as gym
import numpy as np
import torch

if TYPE_CHECKING:
    from core_rl.common.runs import TrackedRun

REPO = Path(__file__).resolve().parents[1]
TORCH_THREADS = 1
IMPLS = ("ours", "sb3")
RETURN_TOLERANCE = 0.05  # "equal" return: within 5% of |SB3's median| (seed noise), documented in the reports

ProgressFn = Callable[[int], None]


# ---- evaluation shared by both implementations -------------------------------------------------
def evaluate_actions(act: Callable[[np.ndarray], np.ndarray], env_id: str, n_episodes: int, seed: int) -> list[float]:
    """Return of one episode on each of ``n_episodes`` fresh envs (env i reset with ``seed + i``),
    acting with ``act`` on the batch of still-running envs: the same episodes for every policy."""
    envs = [gym.make(env_id) for _ in range(n_episodes)]
    first = [e.reset(seed=seed + i)[0] for i, e in enumerate(envs)]
    obs = np.stack(first)
    returns = np.zeros(n_episodes)
    active = np.ones(n_episodes, dtype=bool)
    while active.any():
        idx = np.flatnonzero(active)
        actions = np.asarray(act(obs[idx]))
        for j, i in enumerate(idx):  # evaluation only: one gym env per episode
            o, r, terminated, truncated, _ = envs[i].step(actions[j])
            obs[i] = o
            returns[i] += float(r)
            if terminated or truncated:
                active[i] = False
    for e in envs:
        e.close()
    return returns.tolist()


# ---- one training run --------------------------------------------------------------------------
@dataclass
class RunResult:
    algo: str
    env_id: str
    impl: str
    seed: int
    steps: int
    wall_s: float
    cpu_s: float
    steps_per_s: float
    cpu_steps_per_s: float
    eval_return: float
    eval_std: float
    train_return_last100: float
    episodes: int
    build_s: float
    eval_s: float
    curve: list[tuple[int, float]] = field(default_factory=list)
    # the settings this side trained with, as saved with the result (ours: its config; the peer: its
    # hyperparameters), so a report rendered later shows what ran, not today's mapping; empty in results
    # saved before 2026-12-07
    config: dict[str, Any] = field(default_factory=dict)


R = TypeVar("R", bound=RunResult)


def recorded_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` as JSON values: numbers, strings, booleans and None kept, sequences and mappings followed,
    anything else (a class, a function, an action-noise object) by its name or ``str``."""

    def value(v: Any) -> Any:
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, Mapping):
            return {str(k): value(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [value(x) for x in v]
        name = getattr(v, "__qualname__", None)  # a class's or a named function's (instances have none)
        return name if name is not None and "<lambda>" not in name else str(v)

    return {str(k): value(v) for k, v in config.items()}


def timed_result(
    cls: type[R],
    *,
    steps: int,
    wall_s: float,
    cpu_s: float,
    eval_returns: Sequence[float],
    curve: Sequence[tuple[int, float]],
    **fields_: Any,
) -> R:
    """A ``cls`` run record from one timed ``learn``: steps per wall and CPU second, the evaluation's mean
    and std (NaN without episodes), the training curve thinned to about 300 points."""
    nan = float("nan")
    return cls(
        steps=int(steps),
        wall_s=wall_s,
        cpu_s=cpu_s,
        steps_per_s=steps / wall_s,
        cpu_steps_per_s=steps / max(cpu_s, 1e-9),
        eval_return=float(np.mean(eval_returns)) if len(eval_returns) else nan,
        eval_std=float(np.std(eval_returns)) if len(eval_returns) else nan,
        curve=list(curve[:: max(1, len(curve) // 300)]),
        **fields_,
    )


def throttled(progress: ProgressFn, every: int) -> ProgressFn:
    """``progress`` called with the steps accumulated since its last call, at most once per ``every``
    steps, so that a per-env-step callback costs a counter update, not a progress-bar refresh."""
    pending = [0]

    def update(n: int) -> None:
        pending[0] += n
        if pending[0] >= every:
            progress(pending[0])
            pending[0] = 0

    return update


# ---- aggregation -------------------------------------------------------------------------------
def median(xs: Iterable[float]) -> float:
    vals = [x for x in xs if x is not None and math.isfinite(x)]
    return statistics.median(vals) if vals else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b and math.isfinite(a) and math.isfinite(b) else float("nan")


def fmt(x: float, nd: int = 1) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:,.{nd}f}"


SUMMARY_METRICS = ("eval_return", "train_return_last100", "wall_s", "cpu_s", "steps_per_s", "cpu_steps_per_s")


def summarize(
    results: Sequence[RunResult], keys: Sequence[tuple[str, str]], metrics: Sequence[str] = SUMMARY_METRICS
) -> list[dict[str, Any]]:
    """One row per (algo, env_id) in ``keys`` order: medians over seeds of ``metrics`` per implementation
    (``<metric>_<impl>``), speed ratios ours/SB3 by wall and CPU time, the return difference and the
    verdicts ``return_ok`` (ours ≥ SB3 − 5%·|SB3|) and ``speed_ok`` (≥ 2× SB3's env-steps per CPU-second)."""
    rows = []
    for algo, env_id in keys:
        per = {impl: [r for r in results if r.algo == algo and r.env_id == env_id and r.impl == impl] for impl in IMPLS}
        if not per["ours"] and not per["sb3"]:
            continue
        row: dict[str, Any] = {
            "algo": algo,
            "env_id": env_id,
            "seeds": min(len(per["ours"]), len(per["sb3"])) or max(len(v) for v in per.values()),
            "steps": int(median(r.steps for rs in per.values() for r in rs)),
        }
        for impl, rs in per.items():
            for m in metrics:
                row[f"{m}_{impl}"] = median(getattr(r, m) for r in rs)
        row["speed_ratio"] = ratio(row["steps_per_s_ours"], row["steps_per_s_sb3"])
        row["cpu_speed_ratio"] = ratio(row["cpu_steps_per_s_ours"], row["cpu_steps_per_s_sb3"])
        row["wall_ratio"] = ratio(row["wall_s_ours"], row["wall_s_sb3"])
        row["return_delta"] = row["eval_return_ours"] - row["eval_return_sb3"]
        # ours/SB3 on returns is only meaningful with positive returns; Δ and a tolerance work for both signs
        row["return_ratio"] = (
            ratio(row["eval_return_ours"], row["eval_return_sb3"]) if row["eval_return_sb3"] > 0 else float("nan")
        )
        tol = RETURN_TOLERANCE * abs(row["eval_return_sb3"]) if math.isfinite(row["eval_return_sb3"]) else 0.0
        row["return_ok"] = bool(row["return_delta"] >= -tol)
        row["speed_ok"] = bool(row["cpu_speed_ratio"] >= 2.0)  # the target is env-steps per CPU-second (issue 16)
        row.update(return_ranks(per["ours"], per["sb3"]))
        rows.append(row)
    return rows


def return_ranks(ours: Sequence[RunResult], sb3: Sequence[RunResult]) -> dict[str, Any]:
    r"""The two sides' eval returns as two independent samples (one per run; a seed does not pair runs of two
    libraries, whose random streams differ).

    Returns ``eval_return_mean_<impl>``, ``runs_<impl>``, ``p_ours_higher`` — the probability that a run of ours
    beats a run of SB3, :math:`U/(n_1 n_2)` with ties counted half (0.5: no tendency either way) — and
    ``rank_p``, the two-sided Mann–Whitney U p (exact for small samples without ties; NaN with an empty side).
    The median rule of ``return_ok`` reads one number per side; with a few runs of a noisy task it can say
    "worse" where the runs show no difference, so the reports print both."""
    from scipy.stats import mannwhitneyu

    a = np.array([r.eval_return for r in ours], dtype=float)
    b = np.array([r.eval_return for r in sb3], dtype=float)
    out: dict[str, Any] = {
        "eval_return_mean_ours": float(a.mean()) if a.size else float("nan"),
        "eval_return_mean_sb3": float(b.mean()) if b.size else float("nan"),
        "runs_ours": int(a.size),
        "runs_sb3": int(b.size),
        "p_ours_higher": float("nan"),
        "rank_p": float("nan"),
    }
    if a.size and b.size and np.isfinite(a).all() and np.isfinite(b).all():
        test = mannwhitneyu(a, b)  # its U counts the (ours, SB3) pairs where ours is higher, ties half
        out["p_ours_higher"] = float(test.statistic / (a.size * b.size))
        out["rank_p"] = float(test.pvalue)
    return out


def fmt_p(p: float) -> str:
    """A p-value for a table: two decimals, one significant digit under 0.01 (``0.002``), ``–`` if undefined."""
    return "–" if p is None or not math.isfinite(p) else (f"{p:.2f}" if p >= 0.01 else f"{p:.1g}")


def ranks_markdown(row: Mapping[str, Any]) -> str:
    """A table cell: ``0.45, p = 0.73`` (P(a run of ours beats one of SB3's), Mann–Whitney p); ``–`` without both."""
    if not math.isfinite(row.get("p_ours_higher", float("nan"))):
        return "–"
    return f"{row['p_ours_higher']:.2f}, p = {fmt_p(row['rank_p'])}"


def ranks_sentence(row: Mapping[str, Any]) -> str:
    """The verdict line's clause on the runs as two samples (empty unless each side has 2 runs or more)."""
    if min(row.get("runs_ours", 0), row.get("runs_sb3", 0)) < 2:
        return ""
    p = row["rank_p"]
    reading = "a significant difference" if math.isfinite(p) and p < 0.05 else "no significant difference"
    return (
        f"; over {row['runs_ours']} and {row['runs_sb3']} runs: means {fmt(row['eval_return_mean_ours'])} vs "
        f"{fmt(row['eval_return_mean_sb3'])}, P(ours higher) {row['p_ours_higher']:.2f}, Mann–Whitney p = "
        f"{fmt_p(p)} ({reading})"
    )


def summarize_by_mode(
    results: Sequence[RunResult], keys: Sequence[tuple[str, str]], modes: Sequence[str], metrics: Sequence[str]
) -> list[dict[str, Any]]:
    """:func:`summarize` with one row per (algo, env_id, our ``mode``) present (``modes`` gives their order;
    a result without a mode is ``fp32``), each against all SB3 runs of its (algo, env_id); rows get ``mode``."""
    rows = []
    for algo, env_id in keys:
        ours = [r for r in results if (r.algo, r.env_id, r.impl) == (algo, env_id, "ours")]
        sb3 = [r for r in results if (r.algo, r.env_id, r.impl) == (algo, env_id, "sb3")]
        for mode in sorted({getattr(r, "mode", "fp32") for r in ours}, key=list(modes).index) or ["fp32"]:
            mine = [r for r in ours if getattr(r, "mode", "fp32") == mode]
            rows += [{**row, "mode": mode} for row in summarize(mine + sb3, [(algo, env_id)], metrics)]
    return rows


# ---- machine, plot -----------------------------------------------------------------------------
def run_stamp() -> str:
    """The stamp naming one benchmark process's files (``{name}-{stamp}.json``, ``-partial.json``, tables,
    plots) and its MLflow parent run: the UTC start time and this process's id. Two benchmarks started in the
    same second (one per core) would otherwise share every file, the second one's results replacing the first's."""
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{os.getpid()}"


def machine_note() -> dict[str, Any]:
    cpu, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    import stable_baselines3

    from core_rl.continuous.critics import onednn_bf16_matmuls_available

    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {
        "cpu": cpu,
        # the bf16 speed modes (matmul_dtype, encoder_dtype) pay off only with these instructions
        "cpu_bf16": bool(flags & {"avx512_bf16", "amx_bf16"}),
        # how matmul_dtype="bfloat16" computes here (core_rl.continuous.critics.bf16_matmul_context, on the CPU)
        "bf16_matmuls": "onednn" if onednn_bf16_matmuls_available() else "autocast",
        "cores": os.cpu_count(),
        "loadavg": [round(x, 2) for x in load],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sb3": stable_baselines3.__version__,
        "gymnasium": gym.__version__,
        "torch_threads": TORCH_THREADS,
        "platform": platform.platform(),
    }


def peak_load(machine: Mapping[str, Any]) -> float:
    return max([*machine.get("loadavg_start", []), *machine.get("loadavg", [])] or [0.0])


def bar_plot(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """env-steps/s and eval return, ours beside SB3, one group per row (speed ratio annotated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r.get("label") or f"{r['algo'].upper()}\n{r['env_id']}" for r in rows]
    x = np.arange(len(rows))
    w = 0.38
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 2.6 * len(rows)), 4.2))
    for ax, metric, title in (
        (axes[0], "steps_per_s", "env-steps/s (median over seeds)"),
        (axes[1], "eval_return", "eval return, 20 deterministic episodes"),
    ):
        ours = [r[f"{metric}_ours"] for r in rows]
        sb3 = [r[f"{metric}_sb3"] for r in rows]
        ax.bar(x - w / 2, ours, w, label="ours", color="#1f77b4")
        ax.bar(x + w / 2, sb3, w, label="SB3", color="#ff7f0e")
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.legend(fontsize=8)
    for i, r in enumerate(rows):
        top = max(r["steps_per_s_ours"], r["steps_per_s_sb3"])
        if math.isfinite(top):
            axes[0].annotate(f"{r['speed_ratio']:.2f}×", (x[i], top), ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---- MLflow ------------------------------------------------------------------------------------
def benchmark_tracking_uri(tracking_uri: str | None = None) -> str:
    """``tracking_uri``, else :func:`core_rl.common.runs.default_tracking_uri` with ``$DEEPRL_HOME``
    defaulting to ``<repo>/.deeprl`` (so a benchmark started from any folder records beside the repo):
    ``$MLFLOW_TRACKING_URI``, else ``$DEEPRL_HOME/mlflow.db``, else ``<repo>/.deeprl/mlflow.db``."""
    from core_rl.common.runs import default_tracking_uri

    return tracking_uri or default_tracking_uri(REPO / ".deeprl")


class BenchmarkMLflow:
    """The parent run of one benchmark invocation (opened by :func:`benchmark_run`, which owns its status)
    and one finished child run per training run, written at once."""

    def __init__(self, run: TrackedRun, experiment: str):
        self.run = run
        self.uri: str = run.tracking_uri
        self.client = run.client
        self.experiment = experiment
        self.experiment_id: str = run.experiment_id
        self.parent: str = run.run_id

    def log_child(
        self,
        run_name: str,
        tags: Mapping[str, str],
        params: Mapping[str, Any],
        summary: Mapping[str, float],
        step: int,
        curves: Mapping[str, Sequence[tuple[int, float]]],
        max_points: int | None = 300,
    ) -> str:
        """One finished child run: params, summary metrics (at ``step``) and named curves of (step, value),
        each thinned to about ``max_points`` points (None: all), non-finite values left out."""
        from mlflow.entities import Metric

        from core_rl.common.tracking import MLflowTracker

        run = self.client.create_run(
            self.experiment_id, run_name=run_name, tags={"mlflow.parentRunId": self.parent, **tags}
        )
        rid = run.info.run_id
        tracker = MLflowTracker(rid, self.client)
        tracker.log_params(params)
        tracker.log_metrics(summary, step=step)
        ts = int(time.time() * 1000)
        items = []
        for key, curve in curves.items():
            curve = list(curve)
            if max_points is not None:
                curve = curve[:: max(1, len(curve) // max_points)]
            items += [Metric(key, float(v), ts, int(s)) for s, v in curve if math.isfinite(float(v))]
        for i in range(0, len(items), 900):
            self.client.log_batch(rid, metrics=items[i : i + 900])
        self.client.set_terminated(rid)  # a complete record: the child is written in one go
        return rid

    def close(self, metrics: Mapping[str, float], files: Sequence[Path]) -> None:
        """Summary metrics and artifacts on the parent run (which ends FINISHED when the benchmark's
        :func:`benchmark_run` block returns)."""
        self.run.log_metrics(metrics, step=0)
        for f in files:
            if f.exists():
                self.run.log_artifact(f)
        print(f"MLflow: {self.uri} experiment '{self.experiment}', parent run {self.parent}")


B = TypeVar("B", bound=BenchmarkMLflow)


@contextmanager
def benchmark_run(
    enabled: bool,
    tracking_uri: str | None,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    cls: type[B] = BenchmarkMLflow,  # type: ignore[assignment]
) -> Iterator[B | None]:
    """The parent run of one benchmark invocation, as a ``cls`` on a :func:`core_rl.common.runs.tracked_run`
    (``None``, and no run, when not ``enabled``: ``--no-mlflow``).

    The block's end decides the parent's status: it returns → FINISHED; it raises → FAILED (with a
    ``failure`` tag); Ctrl-C or SIGTERM → KILLED with every child and metric logged so far."""
    if not enabled:
        yield None
        return
    from core_rl.common.runs import tracked_run

    with tracked_run(
        experiment, run_name=run_name, tracking_uri=benchmark_tracking_uri(tracking_uri), tags=tags, params=params
    ) as run:
        yield cls(run, experiment)


def row_metrics(
    rows: Sequence[dict[str, Any]], names: Sequence[str], key: Sequence[str] = ("algo", "env_id")
) -> dict[str, float]:
    """The parent run's summary: ``"<algo>_<env>/<name>"`` → the row's value, for every row and name."""
    return {f"{'_'.join(str(r[k]) for k in key)}/{m}": r[m] for r in rows for m in names}


# ---- runs longer than a sitting ------------------------------------------------------------------
class Stopwatch:
    """Wall and process CPU seconds of one run across its sittings: the earlier sittings' (``wall_before``,
    ``cpu_before``, from their progress) plus this one's since the stopwatch was made, less the time spent
    :meth:`paused` (writing checkpoints, which is not training)."""

    def __init__(self, wall_before: float = 0.0, cpu_before: float = 0.0):
        self.wall_before, self.cpu_before = float(wall_before), float(cpu_before)
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

    def elapsed(self) -> tuple[float, float]:
        """``(wall s, CPU s)`` so far."""
        return (
            self.wall_before + time.perf_counter() - self.wall0,
            self.cpu_before + time.process_time() - self.cpu0,
        )

    @contextmanager
    def paused(self) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall0 += time.perf_counter() - wall
            self.cpu0 += time.process_time() - cpu


@dataclass
class Resume:
    """Where one long run checkpoints itself, so that a stopped run continues instead of starting over.

    Every ``every`` env steps (after a rollout or iteration) the run's own checkpoint (our agent's
    ``agent.pt`` with its replay buffer, or SB3's ``model.zip`` and ``replay.pkl``) and ``progress.json``
    (``steps``, the CPU and wall seconds spent, the curve, and what the side needs to carry on: episode
    counts, the last games' scores) are written to ``directory``; the next run with the same arguments
    loads them and trains the steps that remain, adding its time to the time spent. The env is made
    again (the episodes in progress are lost), so a resumed run is not bit-identical to one that never
    stopped. The caller removes the directory (:meth:`clear`) once the run's result is saved."""

    directory: Path
    every: int = 100_000

    @property
    def progress_path(self) -> Path:
        return self.directory / "progress.json"

    def saved(self, checkpoint: str) -> dict[str, Any] | None:
        """The progress of an earlier sitting whose ``checkpoint`` file is there too, else None."""
        if not (self.progress_path.exists() and (self.directory / checkpoint).exists()):
            return None
        return json.loads(self.progress_path.read_text())

    def due(self, steps: int, last: int) -> bool:
        return steps - last >= self.every

    def save(self, progress: dict[str, Any], write_checkpoint: Callable[[Path], None]) -> None:
        """``progress.json`` and the checkpoint (written by ``write_checkpoint(directory)``), the progress
        renamed into place only after the checkpoint it describes is complete."""
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.progress_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(progress))
        write_checkpoint(self.directory)
        tmp.replace(self.progress_path)

    def clear(self) -> None:
        import shutil

        if self.directory.is_dir():
            shutil.rmtree(self.directory)


def add_mode_and_checkpoint_arguments(p: argparse.ArgumentParser, modes: Sequence[str], mode_help: str) -> None:
    """``--ours-modes`` (our side's modes, one run and one row each) and ``--checkpoint-every`` (:class:`Resume`)."""
    p.add_argument(
        "--ours-modes",
        nargs="+",
        default=["fp32"],
        choices=list(modes),
        help=f"our side's modes, one run and one row each ({mode_help})",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=100_000,
        help="env steps between a run's checkpoints under OUT_DIR/resume/ (0: none); the same command after a "
        "stop continues each unfinished run from its checkpoint, and each finished run's result is saved at "
        "once (default %(default)s)",
    )


def resume_for(out_dir: Path, every: int, *parts: Any) -> Resume | None:
    """The :class:`Resume` of one run under ``out_dir/resume/`` (named by ``parts``), or None when ``every`` is 0."""
    if every <= 0:
        return None
    name = "-".join(str(p).replace("/", "_") for p in parts)
    return Resume(out_dir / "resume" / name, every)


# ---- our side -----------------------------------------------------------------------------------
def resumed_agent(
    cls: type[Any], config: Mapping[str, Any], tracker: Any, resume: Resume | None
) -> tuple[Any, dict[str, Any] | None]:
    """Our agent as an earlier sitting of this run checkpointed it (``agent.pt``) and that sitting's
    progress, or ``(None, None)`` when there is none (the caller builds the agent). A checkpoint saved with
    another config than ``config`` is refused, naming the fields that differ."""
    saved = resume.saved("agent.pt") if resume is not None else None
    if resume is None or saved is None:
        return None, None
    agent = cls.load(resume.directory / "agent.pt", tracker=tracker)
    wanted = agent.config_cls(**config).model_dump(mode="json")
    have = agent.config.model_dump(mode="json")
    if have != wanted:
        agent.close()
        changed = ", ".join(sorted(k for k in wanted if have.get(k) != wanted[k]))
        raise SystemExit(
            f"{resume.directory} holds a run saved with other settings ({changed}): remove it to start over"
        )
    print(f"  resuming from {resume.directory} at {agent.num_timesteps:,} steps", flush=True)
    return agent, saved


def ours_learn(
    cls: type[Any],
    env_id: str,
    config: Mapping[str, Any],
    steps: int,
    progress: ProgressFn,
    resume: Resume | None = None,
) -> tuple[Any, float, float, float, list[tuple[int, float]]]:
    """Build ``cls(env_id, config)`` and ``learn(steps)``, both timed, ``progress`` getting the new env
    steps after every iteration. Returns (agent, build s, wall s, CPU s, the training-episode-return curve).
    With ``resume``, the agent checkpoints itself (with its replay buffer; the saving's time is not counted)
    and a checkpoint of an earlier sitting is continued: the times returned then include the earlier
    sittings', build time excepted."""
    from core_rl.common.tracking import MemoryTracker

    tracker = MemoryTracker()
    t_build = time.perf_counter()
    agent, saved = resumed_agent(cls, config, tracker, resume)
    spent_wall = spent_cpu = 0.0
    if saved is not None:
        tracker.metrics["episode_return"] = [(int(s), float(v)) for s, v in saved["curve"] if s <= agent.num_timesteps]
        spent_wall, spent_cpu = float(saved["wall_s"]), float(saved["cpu_s"])
    else:
        agent = cls(env_id, dict(config), tracker=tracker)
    build_s = time.perf_counter() - t_build
    last = [agent.num_timesteps, agent.num_timesteps]  # the last progress report, the last checkpoint
    watch = Stopwatch(spent_wall, spent_cpu)

    def curve() -> list[tuple[int, float]]:
        return [(s, v) for s, v in tracker.metrics.get("episode_return", []) if math.isfinite(v)]

    def on_iteration(a: Any, _metrics: dict[str, float]) -> None:
        progress(a.num_timesteps - last[0])
        last[0] = a.num_timesteps
        if resume is not None and resume.due(a.num_timesteps, last[1]) and a.num_timesteps < steps:
            last[1] = a.num_timesteps
            wall_s, cpu_s = watch.elapsed()
            with watch.paused():
                resume.save(
                    {"steps": a.num_timesteps, "wall_s": wall_s, "cpu_s": cpu_s, "curve": curve()},
                    lambda d: a.save(d / "agent.pt", include_replay=True),
                )

    if steps > agent.num_timesteps:
        agent.learn(steps - agent.num_timesteps, callback=on_iteration)
    wall, cpu = watch.elapsed()
    return agent, build_s, wall, cpu, curve()


# ---- the SB3 side -------------------------------------------------------------------------------
def sb3_resumed(cls: type[Any], env: Any, resume: Resume | None) -> tuple[Any, dict[str, Any] | None]:
    """The SB3 model an earlier sitting of this run saved (``model.zip``, its replay buffer and its
    last episodes' infos restored onto ``env``) and that sitting's progress; ``(None, None)`` when there
    is none (the caller builds the model)."""
    saved = resume.saved("model.zip") if resume is not None else None
    if resume is None or saved is None:
        return None, None
    model = cls.load(resume.directory / "model.zip", env=env, device="cpu")
    if (resume.directory / "replay.pkl").exists():
        model.load_replay_buffer(resume.directory / "replay.pkl")
    # the last games' infos (SB3 saves none): learn() keeps a buffer it finds when it does not reset the step count
    model.ep_info_buffer = deque(saved.get("ep_infos", []), maxlen=model._stats_window_size)
    print(f"  resuming from {resume.directory} at {model.num_timesteps:,} steps", flush=True)
    return model, saved


def sb3_learn(
    model: Any,
    steps: int,
    progress: ProgressFn,
    every: int = 0,
    resume: Resume | None = None,
    saved: dict[str, Any] | None = None,
    extra: Callable[[], dict[str, Any]] | None = None,
) -> tuple[list[tuple[int, float]], float, float, float]:
    """``model.learn(steps)`` of an SB3 model, timed: after each rollout at least ``every`` env steps on
    from the last report, ``progress`` gets the new steps and the curve a point (the mean return of SB3's
    last-100-episode buffer). Returns (curve, wall s, CPU s, the final last-100 mean, NaN without episodes).
    With ``resume``, the model (and an off-policy model's replay buffer) is saved every ``resume.every``
    steps with the progress and ``extra()`` (the saving's time is not counted); ``saved`` (from :func:`sb3_resumed`) continues an earlier
    sitting: its curve and times are carried on, and the steps that remain are trained."""
    from stable_baselines3.common.callbacks import BaseCallback

    curve: list[tuple[int, float]] = [tuple(c) for c in (saved or {}).get("curve", [])]  # type: ignore[misc]
    spent_wall, spent_cpu = float((saved or {}).get("wall_s", 0.0)), float((saved or {}).get("cpu_s", 0.0))

    def mean_return() -> float:
        buffer = model.ep_info_buffer
        return float(np.mean([e["r"] for e in buffer])) if buffer else float("nan")

    class Progress(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.last = self.saved_at = int(model.num_timesteps)

        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:  # after every rollout (off-policy: train_freq steps): keep it cheap
            if self.num_timesteps - self.last >= every:
                progress(self.num_timesteps - self.last)
                self.last = self.num_timesteps
                if model.ep_info_buffer:
                    curve.append((self.num_timesteps, mean_return()))

        def _on_rollout_start(self) -> None:  # the previous rollout's update is done: a checkpoint loses nothing
            if resume is not None and resume.due(self.num_timesteps, self.saved_at) and self.num_timesteps < steps:
                self.saved_at = self.num_timesteps
                wall_s, cpu_s = watch.elapsed()
                with watch.paused():
                    resume.save(
                        {
                            "steps": self.num_timesteps,
                            "wall_s": wall_s,
                            "cpu_s": cpu_s,
                            "curve": curve,
                            "ep_infos": [{k: float(v) for k, v in e.items()} for e in model.ep_info_buffer],
                            **(extra() if extra is not None else {}),
                        },
                        _sb3_checkpoint(model),
                    )

    watch = Stopwatch(spent_wall, spent_cpu)
    if steps > model.num_timesteps:
        model.learn(total_timesteps=steps - model.num_timesteps, callback=Progress(), reset_num_timesteps=not saved)
    wall, cpu = watch.elapsed()
    return curve, wall, cpu, mean_return()


def _sb3_checkpoint(model: Any) -> Callable[[Path], None]:
    def write(directory: Path) -> None:
        model.save(directory / "model.zip.tmp.zip")
        if hasattr(model, "replay_buffer") and model.replay_buffer is not None:
            model.save_replay_buffer(directory / "replay.pkl.tmp.pkl")
            (directory / "replay.pkl.tmp.pkl").replace(directory / "replay.pkl")
        (directory / "model.zip.tmp.zip").replace(directory / "model.zip")

    return write


# ---- the command line --------------------------------------------------------------------------
def add_seed_arguments(p: argparse.ArgumentParser, seeds: int = 3) -> None:
    """``--seeds N`` and ``--seeds-from F``: seeds F..F+N-1 (:func:`seed_range`), so more seeds run later as pieces."""
    p.add_argument("--seeds", type=int, default=seeds, help=f"how many seeds per configuration (default {seeds})")
    p.add_argument(
        "--seeds-from",
        type=int,
        default=0,
        help="the first seed: runs seeds F..F+N-1, so more seeds run later as pieces merged by --results",
    )


def check_seed_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject a non-positive ``--seeds`` or a negative ``--seeds-from`` (one line, naming the option)."""
    if args.seeds < 1:
        p.error("--seeds must be at least 1")
    if args.seeds_from < 0:
        p.error("--seeds-from must be ≥ 0")


def seed_range(args: argparse.Namespace) -> range:
    """The seeds of this run: ``--seeds-from`` F to F + ``--seeds`` − 1."""
    return range(args.seeds_from, args.seeds_from + args.seeds)


def add_run_arguments(
    p: argparse.ArgumentParser, default_doc: Path, seeds: int = 3, eval_episodes: bool = True
) -> None:
    """The options every benchmark shares: seeds, budget scale, evaluation, MLflow, outputs, re-rendering."""
    add_seed_arguments(p, seeds)
    p.add_argument("--steps-scale", type=float, default=1.0, help="multiply every budget (after --quick)")
    if eval_episodes:
        p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///<repo>/.deeprl/mlflow.db)",
    )
    p.add_argument("--doc", type=Path, default=default_doc, help="markdown report to write (default %(default)s)")
    p.add_argument("--no-doc", action="store_true", help="do not write the markdown report")
    p.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="where the JSON results (and tables, plots) go (default <repo>/.deeprl/benchmarks)",
    )
    p.add_argument(
        "--results",
        type=Path,
        nargs="+",
        default=None,
        help="re-render the report from saved JSON result files (no training)",
    )


def parse_run_arguments(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, and reject a non-positive ``--seeds``, ``--steps-scale`` or ``--eval-episodes``, a negative ``--seeds-from``."""
    args = p.parse_args(argv)
    check_seed_arguments(p, args)
    if args.steps_scale <= 0:
        p.error("--steps-scale must be positive")
    if getattr(args, "eval_episodes", 1) < 1:
        p.error("--eval-episodes must be at least 1")
    return args


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """``python -m <module> <args>`` as this run was invoked (for the report and MLflow)."""
    words = sys.argv[1:] if argv is None else list(argv)
    return f"python -m {module}" + (" " + " ".join(words) if words else "")


def mode_note(args: argparse.Namespace) -> str:
    """ "quick" or "full", and the budget scale when it is not 1."""
    return ("quick" if args.quick else "full") + (f", steps×{args.steps_scale:g}" if args.steps_scale != 1 else "")


# ---- the files of a run ------------------------------------------------------------------------
def write_outputs(
    name: str,
    stamp: str,
    out_dir: Path,
    rows: Sequence[dict[str, Any]],
    table_markdown: str,
    results_json: Mapping[str, Any] | None,
    doc: Path | None,
    report: Callable[[str], str],
    json_suffix: str = "",
) -> list[Path]:
    """Write a side-by-side benchmark's files: the results JSON (unless None), the markdown table, the
    bar plot of :func:`bar_plot`, and (unless ``doc`` is None) the report with the plot copied beside it.
    ``report`` gets the file name of that copy (the doc's own stem: ``docs/benchmarks/X.md`` shows ``X.png``,
    never another report's plot)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    if results_json is not None:
        json_path = out_dir / f"{name}-{stamp}{json_suffix}.json"
        json_path.write_text(json.dumps(results_json, indent=1))
        files.append(json_path)
        print(f"\nresults: {json_path}")
    table_path = out_dir / f"{name}-{stamp}-table.md"
    table_path.write_text(table_markdown + "\n")
    plot_path = bar_plot(rows, out_dir / f"{name}-{stamp}.png")
    files += [table_path, plot_path]
    if doc is not None:
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc_plot = doc.with_suffix(".png")
        doc.write_text(report(doc_plot.name))
        doc_plot.write_bytes(plot_path.read_bytes())
        files.append(doc)
        print(f"report: {doc}")
    return files


# ---- profiling ---------------------------------------------------------------------------------
def profile_learn(
    label: str,
    train: Callable[[], tuple[int, float]],
    path: Path,
    top: int = 30,
    sorts: Sequence[str] = ("tottime", "cumulative"),
) -> pstats.Stats:
    """cProfile ``train()`` (which returns (env steps, wall s)), dump the stats to ``path`` and print the
    top ``top`` functions by each of ``sorts``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    prof = cProfile.Profile()
    prof.enable()
    done, wall = train()
    prof.disable()
    prof.dump_stats(path)
    for sort in sorts:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(sort).print_stats(top)
        print(f"\n===== {label}: {done} steps in {wall:.1f}s under cProfile, by {sort} ({path}) =====")
        print(buf.getvalue().split("\n", 6)[-1] if sort == "tottime" else buf.getvalue())
    return pstats.Stats(prof)


# ---- JSON results ------------------------------------------------------------------------------
def jsonable(results: Sequence[RunResult], meta: Mapping[str, Any]) -> dict[str, Any]:
    return {"meta": dict(meta), "results": [asdict(r) for r in results]}


def close_interrupted(
    name: str, stamp: str, out_dir: Path, results: Sequence[RunResult], meta: dict[str, Any], status: str
) -> None:
    """End of a benchmark's run loop: record the load, and on an interrupted (or failed) run keep the
    partial results on disk. The MLflow parent run's status is :func:`benchmark_run`'s business."""
    meta["machine"]["loadavg"] = machine_note()["loadavg"]
    if status != "FINISHED" and results:
        out_dir.mkdir(parents=True, exist_ok=True)
        partial = out_dir / f"{name}-{stamp}-partial.json"
        partial.write_text(json.dumps(jsonable(results, meta), indent=1))
        print(f"interrupted: partial results in {partial}", file=sys.stderr)


def config_drift(results: Sequence[RunResult], today: Callable[[RunResult], Mapping[str, Any]]) -> list[str]:
    """Where the saved results ran other settings than the report's tables show: one line per
    (algo, env, side, mode) whose saved ``config`` differs from ``today(result)`` (the mapping as it is
    now), naming each field with its saved and today's value (the seed aside). Results saved before configs
    were are skipped: what they ran is not known."""
    drift: dict[str, str] = {}
    for r in results:
        if not r.config:
            continue
        now = recorded_config(today(r))
        fields_ = sorted(k for k in {*r.config, *now} if k != "seed" and r.config.get(k) != now.get(k))
        if fields_:
            mode = getattr(r, "mode", "fp32")
            side = f"{r.impl} ({mode})" if r.impl == "ours" and mode != "fp32" else r.impl
            drift[f"{r.algo.upper()} {r.env_id}, {side}"] = ", ".join(
                f"`{k}` {r.config.get(k)!r} (now {now.get(k)!r})" for k in fields_
            )
    return [f"- {key}: {fields_}" for key, fields_ in drift.items()]


def config_drift_markdown(lines: Sequence[str]) -> str:
    """The report's paragraph for :func:`config_drift` (empty when nothing drifted)."""
    if not lines:
        return ""
    return (
        "\n**Settings these results ran that the tables below no longer show** (each run's saved config against "
        "today's mapping):\n\n" + "\n".join(lines) + "\n"
    )


def merged_machine(metas: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One ``machine`` note for results merged from pieces: the first piece's, with the highest load average
    any piece saw (start and end) and, where the pieces ran on different CPUs, every CPU named (CPU times
    compare only within one)."""
    machines = [m.get("machine") or {} for m in metas]
    machine = dict(machines[0]) if machines else {}
    for key in ("loadavg_start", "loadavg"):
        seen = [m[key] for m in machines if m.get(key)]
        if seen:
            machine[key] = max(seen, key=lambda x: max(x))
    cpus = list(dict.fromkeys(m["cpu"] for m in machines if m.get("cpu")))
    if len(cpus) > 1:
        machine["cpu"] = " and ".join(cpus) + " (the pieces ran on different CPUs)"
    return machine


def load_results(paths: Sequence[Path], cls: type[R] = RunResult) -> tuple[list[R], dict[str, Any]]:  # type: ignore[assignment]
    """Merge saved result files (``meta`` from the first, with every piece's distinct command joined by
    ``; `` and the machine note of :func:`merged_machine`); fields ``cls`` lacks are dropped, missing ones
    default."""
    names = {f.name for f in fields(cls)}
    results: list[R] = []
    meta: dict[str, Any] = {}
    metas: list[dict[str, Any]] = []
    commands: list[str] = []
    for p in paths:
        data = json.loads(Path(p).read_text())
        metas.append(data["meta"])
        meta = meta or dict(data["meta"])
        if data["meta"].get("command") and data["meta"]["command"] not in commands:
            commands.append(data["meta"]["command"])
            meta["command"] = "; ".join(commands)
        for r in data["results"]:
            r["curve"] = [tuple(x) for x in r.get("curve", [])]
            results.append(cls(**{k: v for k, v in r.items() if k in names}))
    if len(metas) > 1:
        meta["machine"] = merged_machine(metas)
    return results, meta


def run_main(main: Callable[[], int | None]) -> int:
    """A benchmark's process exit status: ``main()``'s (0 for ``None``), or the shell's 128 + signal
    number (130 for Ctrl-C, 143 for SIGTERM) when a signal stopped it — its MLflow run already ended
    KILLED by :func:`core_rl.common.runs.tracked_run`, its ``finally`` blocks ran, and a peer it was
    running through :func:`core_rl.common.runs.run_child` was killed with it."""
    from core_rl.common.errors import RunInterrupted
    from core_rl.common.runs import interrupt_signals

    try:
        with interrupt_signals():
            return int(main() or 0)
    except RunInterrupted as stop:
        print(f"benchmark stopped by {stop.signal_name}", file=sys.stderr)
        return stop.exit_code
