"""Every sampler on every task with the same budget, and the statistics that compare them.

``compare(tasks, samplers, budgets, seeds)`` runs one Optuna study per (task, sampler, budget,
seed) — in worker processes, each study in its own in-memory storage unless a storage URL is
given — and :func:`analyze` reduces the results, per budget, to

* **mean rank**: samplers ranked by best value on each (task, seed), ties averaged, then averaged;
* **normalized regret** ``(best − f*) / (f_ref − f*)`` (f* the task's optimum, or the best value
  any run reached; f_ref its median over uniform configurations, or the median of every trial
  value of the comparison), mean with a 95% bootstrap confidence interval over (task, seed);
* a **Wilcoxon signed-rank test** of each sampler's regrets against TPE's on the same (task, seed);
* **best-so-far curves** of the mean normalized regret against the trial number;
* **sampler overhead**: milliseconds per trial spent inside the sampler's own methods.

:func:`log_comparison` writes it all to MLflow: one parent run per comparison, one child run per
study (its best-so-far curve as a metric history), the summary and the plots as artifacts.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from autotune.suites import Task, get_suite
from core_rl.common.errors import ConfigError

SAMPLER_NAMES = (
    "rl",
    "rl-ppo",
    "meta",
    "meta-untrained",
    "meta-copula",
    "meta-noquad",
    "meta-restart",
    "meta-refine",
    "meta-cat",
    "meta-bounds",
    "meta-bounds-all",
    "meta-bounds-mean",
    "meta-global",
    "meta-branch",
    "meta-uniform",
    "meta-repeats",
    "meta-spread",
    "tpe",
    "random",
    "cmaes",
    "gp",
    "qmc",
    "ngopt",
    "smac",
    "smac-bb",
)
OURS = ("rl", "meta")  # name prefixes of our samplers (meta@WEIGHTS_FILE included); everything else is a peer
META_WEIGHTS = "meta@"  # meta@WEIGHTS_FILE: the default meta sampler with other policy weights


def make_sampler(name: str, seed: int, n_trials: int | None = None) -> BaseSampler:
    """A sampler by its ``deeprl tune`` name."""
    from autotune.controller import RLSampler
    from autotune.meta import MetaSampler

    if name == "rl":
        return RLSampler(seed=seed)
    if name == "rl-ppo":
        return RLSampler(seed=seed, update="ppo")
    if name == "meta":
        return MetaSampler(seed=seed, n_trials_hint=n_trials or 100)
    if name == "meta-refine":
        return MetaSampler(seed=seed, n_trials_hint=n_trials or 100, n_refine=128)
    if name == "meta-cat":
        return MetaSampler(seed=seed, n_trials_hint=n_trials or 100, categorical_sweep=3)
    if name == "meta-bounds":  # the incumbents' bounds among the candidates (MetaConfig.bound_sweep)
        return MetaSampler(seed=seed, n_trials_hint=n_trials or 100, bound_sweep=3)
    if name == "meta-bounds-mean":  # the same, every bound where the model's mean prefers it to the incumbent
        return MetaSampler(seed=seed, n_trials_hint=n_trials or 100, bound_sweep=3, bound_sweep_filter="mean")
    if name == "meta-bounds-all":  # the same, every bound offered (not only where the model's mean prefers it)
        return MetaSampler(seed=seed, n_trials_hint=n_trials or 100, bound_sweep=3, bound_sweep_filter="none")
    if name == "meta-global":  # candidates from the whole cube, no trust region (the earlier default)
        return MetaSampler(seed=seed, n_trials_hint=n_trials or 100, trust_region=False)
    if name == "meta-restart":  # a collapsed trust region restarts on the whole cube
        return MetaSampler(seed=seed, n_trials_hint=n_trials or 100, trust_region_restart="global")
    if name == "meta-uniform":  # uniform startup trials, no star design (the earlier default)
        return MetaSampler(seed=seed, n_trials_hint=n_trials or 100, initial_design="random")
    if name == "meta-branch":  # conditional spaces: the root, then each branch group given it
        return MetaSampler(seed=seed, n_trials_hint=n_trials or 100, joint_conditional=False)
    if name == "meta-copula":  # the earlier target: ranks through the Gaussian copula
        return MetaSampler(seed=seed, n_trials_hint=n_trials or 100, target="copula")
    if name == "meta-noquad":  # no candidates from the local quadratic model (the earlier default)
        return MetaSampler(seed=seed, n_trials_hint=n_trials or 100, quadratic_candidates=0)
    if name == "meta-repeats":  # repeats of finished configurations among the candidates (the earlier default)
        return MetaSampler(seed=seed, n_trials_hint=n_trials or 100, avoid_repeats=False)
    if name == "meta-spread":  # the trust region's centre drawn among trials tied at the best score
        return MetaSampler(seed=seed, n_trials_hint=n_trials or 100, spread_ties=True)
    if name == "meta-untrained":
        return MetaSampler(weights=None, seed=seed, n_trials_hint=n_trials or 100)
    if name.startswith(META_WEIGHTS):  # a pretraining screen
        return MetaSampler(weights=name.removeprefix(META_WEIGHTS), seed=seed, n_trials_hint=n_trials or 100)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    if name in ("ngopt", "smac", "smac-bb"):
        from autotune.peers import make_peer_sampler

        return make_peer_sampler(name, seed, n_trials)
    raise ConfigError(f"unknown sampler '{name}'; known: {', '.join(SAMPLER_NAMES)}")


class TimedSampler(BaseSampler):
    """Delegates to ``inner``, adds up the seconds spent in its methods and keeps what they raised (a trial
    that fails inside the sampler is the sampler's failure, not the objective's: the comparison says so)."""

    def __init__(self, inner: BaseSampler):
        self.inner = inner
        self.seconds = 0.0
        self.per_trial: dict[int, float] = {}
        self.per_trial_cpu: dict[int, float] = {}
        self.errors: dict[int, str] = {}  # trial number -> the first exception the sampler raised in it

    def _timed(self, fn: Any, study: Study, trial: FrozenTrial, *args: Any) -> Any:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return fn(study, trial, *args)
        except Exception as e:
            self.errors.setdefault(trial.number, f"{type(e).__name__}: {e}"[:300])
            raise
        finally:
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            self.seconds += dt
            self.per_trial[trial.number] = self.per_trial.get(trial.number, 0.0) + dt
            self.per_trial_cpu[trial.number] = self.per_trial_cpu.get(trial.number, 0.0) + dc

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._timed(self.inner.infer_relative_search_space, study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict:
        return self._timed(self.inner.sample_relative, study, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, name: str, dist: BaseDistribution) -> Any:
        return self._timed(self.inner.sample_independent, study, trial, name, dist)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._timed(self.inner.before_trial, study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self._timed(self.inner.after_trial, study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


@dataclass
class StudyResult:
    task: str
    sampler: str
    budget: int
    seed: int
    values: list[float]  # per trial, nan for failed
    seconds: float  # wall time of the study
    sampler_ms_per_trial: float
    direction: str
    params_best: dict[str, Any] = field(default_factory=dict)
    sampler_ms_last20: float = math.nan  # mean over the study's last 20 trials (the most history)
    sampler_cpu_ms_last20: float = math.nan  # the same in process CPU time (what other load cannot inflate)
    sampler_errors: int = 0  # trials that failed because the sampler raised (not the objective)
    sampler_error: str = ""  # the first of those exceptions

    def best_curve(self) -> np.ndarray:
        """Best-so-far loss (lower is better) after each trial."""
        sign = 1.0 if self.direction == "minimize" else -1.0
        loss = np.array([sign * v if math.isfinite(v) else np.inf for v in self.values])
        return np.minimum.accumulate(loss)


def run_study(task: Task, sampler_name: str, budget: int, seed: int, storage: str | None = None) -> StudyResult:
    """One study of ``budget`` trials; failing trials are recorded and the study goes on."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    sampler = TimedSampler(make_sampler(sampler_name, seed, budget))
    name = f"{task.name}|{sampler_name}|{budget}|{seed}"
    study = optuna.create_study(
        direction=task.direction,
        sampler=sampler,
        storage=storage,
        study_name=name if storage else None,
        load_if_exists=bool(storage),
    )
    t0 = time.perf_counter()
    study.optimize(task.objective, n_trials=budget, catch=(Exception,))
    seconds = time.perf_counter() - t0
    values = [
        float(t.value) if t.state == TrialState.COMPLETE and t.value is not None else math.nan for t in study.trials
    ]
    best = {}
    try:
        best = study.best_trial.params
    except ValueError:
        pass
    tail = [v for k, v in sampler.per_trial.items() if k >= budget - 20]
    tail_cpu = [v for k, v in sampler.per_trial_cpu.items() if k >= budget - 20]
    return StudyResult(
        task.name,
        sampler_name,
        budget,
        seed,
        values,
        seconds,
        1000 * sampler.seconds / max(budget, 1),
        task.direction,
        best,
        1000 * float(np.mean(tail)) if tail else math.nan,
        1000 * float(np.mean(tail_cpu)) if tail_cpu else math.nan,
        len(sampler.errors),
        next(iter(sampler.errors.values()), ""),
    )


def _run_item(item: tuple[str, str, int, int, str | None]) -> dict[str, Any]:
    suite, sampler, budget, seed, storage = item
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    tasks = {t.name: t for t in get_suite(suite.split("@")[0])}
    task = tasks[suite.split("@")[1]]
    try:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            return asdict(run_study(task, sampler, budget, seed, storage))
    except ImportError:
        return asdict(run_study(task, sampler, budget, seed, storage))


def compare(
    suite: str,
    samplers: Sequence[str],
    budgets: Sequence[int],
    seeds: int | Sequence[int],
    n_jobs: int = 1,
    storage: str | None = None,
    progress: Any = None,
    done: Sequence[StudyResult] = (),
) -> list[StudyResult]:
    """Run every (task, sampler, budget, seed) of ``suite``; ``progress(result)`` after each.

    ``done``: studies finished in an earlier sitting (e.g. read back from a results file); those of the
    same (task, sampler, budget, seed) are returned as they are instead of being run again, so a
    comparison longer than one sitting runs in parts.
    """
    for s in samplers:
        if s.startswith(META_WEIGHTS):
            from autotune.meta import load_policy

            load_policy(s.removeprefix(META_WEIGHTS))  # a missing or stale weights file: one error before any study
        elif s not in SAMPLER_NAMES:
            raise ConfigError(f"unknown sampler '{s}'; known: {', '.join(SAMPLER_NAMES)}, meta@WEIGHTS_FILE")
    if any(b <= 0 for b in budgets):
        raise ConfigError(f"--trials must be positive, got {list(budgets)}")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    tasks = get_suite(suite)
    wanted = {(t.name, s, b, seed) for b in budgets for t in tasks for seed in seed_list for s in samplers}
    earlier = {(r.task, r.sampler, r.budget, r.seed): r for r in done}  # a study saved twice counts once
    results: list[StudyResult] = [r for key, r in earlier.items() if key in wanted]
    finished = set(earlier) & wanted
    items = [
        (f"{suite}@{t.name}", s, b, seed, storage)
        for b in budgets
        for t in tasks
        for seed in seed_list
        for s in samplers
        if (t.name, s, b, seed) not in finished
    ]
    if n_jobs <= 1:
        for it in items:
            r = StudyResult(**_run_item(it))
            results.append(r)
            if progress:
                progress(r)
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(n_jobs, maxtasksperchild=20) as pool:
            for d in pool.imap_unordered(_run_item, items):
                r = StudyResult(**d)
                results.append(r)
                if progress:
                    progress(r)
    return results


# ---- statistics -----------------------------------------------------------------------------------
def _landmarks(results: list[StudyResult], tasks: dict[str, Task]) -> dict[str, tuple[float, float]]:
    """(f*, f_ref) per task as losses (lower is better)."""
    out = {}
    by_task: dict[str, list[StudyResult]] = {}
    for r in results:
        by_task.setdefault(r.task, []).append(r)
    for name, rs in by_task.items():
        task = tasks.get(name)
        sign = 1.0 if rs[0].direction == "minimize" else -1.0
        losses = np.array([sign * v for r in rs for v in r.values if math.isfinite(v)])
        best_seen = float(losses.min()) if losses.size else math.nan
        f_star = best_seen
        if task is not None and task.optimum is not None:
            f_star = min(f_star, sign * task.optimum())
        f_ref = (
            sign * task.reference()
            if task is not None and task.reference is not None
            else float(np.median(losses))
            if losses.size
            else math.nan
        )
        if not f_ref > f_star:
            f_ref = float(losses.max()) if losses.size and losses.max() > f_star else f_star + 1.0
        out[name] = (f_star, f_ref)
    return out


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _bootstrap_ci(x: np.ndarray, rng: np.random.Generator, n: int = 2000) -> tuple[float, float]:
    if x.size < 2:
        return (float(x.mean()) if x.size else math.nan,) * 2  # type: ignore[return-value]
    means = x[rng.integers(0, x.size, (n, x.size))].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def _group(task: str) -> str:
    """A task's suite, with its dimension when the name carries one: ``bbob/f01_d5`` -> ``bbob d5``."""
    m = re.search(r"_d(\d+)(?:_|$)", task)
    return task.split("/")[0] + (f" d{m.group(1)}" if m else "")


def _best_peer(ranks: dict[str, list[float]]) -> str:
    """The sampler that is not ours with the lowest mean rank (ours too when there is no peer)."""
    peers = [s for s in ranks if not s.startswith(OURS) and ranks[s]] or [s for s in ranks if ranks[s]]
    return min(peers, key=lambda s: (float(np.mean(ranks[s])), s))


def analyze(results: list[StudyResult], tasks: list[Task] | None = None, reference: str = "tpe") -> dict[str, Any]:
    """Per budget: mean rank and normalized regret (95% bootstrap CIs over (task, seed) cells),
    Wilcoxon vs ``reference`` (a sampler, or ``"best-peer"``: per budget the sampler that is not
    ours — see ``OURS`` — with the lowest mean rank), curves, overhead."""
    from scipy.stats import rankdata, wilcoxon

    task_map = {t.name: t for t in (tasks or [])}
    marks = _landmarks(results, task_map)
    rng = np.random.default_rng(0)
    summary: dict[str, Any] = {"budgets": {}, "landmarks": {k: list(v) for k, v in marks.items()}}
    for budget in sorted({r.budget for r in results}):
        rs = [r for r in results if r.budget == budget]
        samplers = sorted({r.sampler for r in rs})
        cells: dict[tuple[str, int], dict[str, StudyResult]] = {}
        for r in rs:
            cells.setdefault((r.task, r.seed), {})[r.sampler] = r
        full = {k: v for k, v in cells.items() if set(v) == set(samplers)}
        regret: dict[str, list[float]] = {s: [] for s in samplers}
        ranks: dict[str, list[float]] = {s: [] for s in samplers}
        curves: dict[str, list[np.ndarray]] = {s: [] for s in samplers}
        for (task, _seed), by_s in sorted(full.items()):
            f_star, f_ref = marks[task]
            finals = []
            for s in samplers:
                curve = by_s[s].best_curve()
                norm = np.clip((curve - f_star) / (f_ref - f_star), 0.0, None)
                norm = np.where(np.isfinite(norm), norm, 1.0)
                curves[s].append(np.pad(norm, (0, max(0, budget - norm.size)), mode="edge")[:budget])
                regret[s].append(float(norm[-1]) if norm.size else 1.0)
                finals.append(float(curve[-1]) if curve.size else np.inf)
            for s, rk in zip(samplers, rankdata(finals)):
                ranks[s].append(float(rk))
        ref = reference
        if reference == "best-peer" and full:
            ref = _best_peer(ranks)
        per_sampler = {}
        for s in samplers:
            reg = np.array(regret[s])
            lo, hi = _bootstrap_ci(reg, rng)
            rlo, rhi = _bootstrap_ci(np.array(ranks[s]), rng)
            entry: dict[str, Any] = {
                "mean_rank": float(np.mean(ranks[s])) if ranks[s] else math.nan,
                "rank_ci95": [rlo, rhi],
                "regret_mean": float(reg.mean()) if reg.size else math.nan,
                "regret_median": float(np.median(reg)) if reg.size else math.nan,
                "regret_ci95": [lo, hi],
                "sampler_ms_per_trial": float(np.mean([r.sampler_ms_per_trial for r in rs if r.sampler == s])),
                "sampler_ms_last20": _nanmean([r.sampler_ms_last20 for r in rs if r.sampler == s]),
                "sampler_cpu_ms_last20": _nanmean([r.sampler_cpu_ms_last20 for r in rs if r.sampler == s]),
                "n": int(reg.size),
                "curve": np.mean(curves[s], 0).tolist() if curves[s] else [],
                "sampler_error_studies": sum(1 for r in rs if r.sampler == s and r.sampler_errors),
                "sampler_error_trials": sum(r.sampler_errors for r in rs if r.sampler == s),
                "sampler_error": next((r.sampler_error for r in rs if r.sampler == s and r.sampler_errors), ""),
            }
            if ref in samplers and s != ref and reg.size:
                base = np.array(regret[ref])
                diff = reg - base
                if np.any(diff != 0):
                    stat = wilcoxon(reg, base, zero_method="zsplit")
                    entry[f"wilcoxon_p_vs_{ref}"] = float(stat.pvalue)
                else:
                    entry[f"wilcoxon_p_vs_{ref}"] = 1.0
                entry[f"wins_vs_{ref}"] = int((diff < 0).sum())
                entry[f"losses_vs_{ref}"] = int((diff > 0).sum())
            per_sampler[s] = entry
        suites = sorted({_group(t) for t, _ in full}, key=lambda g: (g.split(" d")[0], len(g), g))
        by_suite = {}
        for prefix in suites:
            idx = [i for i, k in enumerate(sorted(full)) if _group(k[0]) == prefix]
            by_suite[prefix] = {
                s: {
                    "mean_rank": float(np.mean([ranks[s][i] for i in idx])),
                    "regret_mean": float(np.mean([regret[s][i] for i in idx])),
                }
                for s in samplers
            }
        summary["budgets"][str(budget)] = {
            "samplers": per_sampler,
            "by_suite": by_suite,
            "n_cells": len(full),
            "reference": ref,
        }
    return summary


def summary_table(summary: dict[str, Any], reference: str = "tpe") -> str:
    """The summary as a Markdown table per budget (Wilcoxon against each budget's reference)."""
    lines = []
    for budget, b in summary["budgets"].items():
        ref = b.get("reference", reference)
        lines.append(f"\n### {budget} trials ({b['n_cells']} task×seed cells)\n")
        lines.append(
            f"| sampler | mean rank (95% CI) | norm. regret (95% CI) | median | Wilcoxon p vs {ref} | W/L vs {ref} "
            "| sampler ms/trial: wall mean, wall last 20, CPU last 20 |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for s, e in sorted(b["samplers"].items(), key=lambda kv: kv[1]["mean_rank"]):
            p = e.get(f"wilcoxon_p_vs_{ref}")
            wl = f"{e.get(f'wins_vs_{ref}', '')}/{e.get(f'losses_vs_{ref}', '')}" if p is not None else "—"
            rci = e.get("rank_ci95", [math.nan, math.nan])
            lines.append(
                f"| {s} | {e['mean_rank']:.2f} [{rci[0]:.2f}, {rci[1]:.2f}] | {e['regret_mean']:.3f} "
                f"[{e['regret_ci95'][0]:.3f}, {e['regret_ci95'][1]:.3f}] | {e['regret_median']:.3f} | "
                f"{'—' if p is None else f'{p:.3g}'} | {wl} | {e['sampler_ms_per_trial']:.1f}, "
                f"{e.get('sampler_ms_last20', math.nan):.1f}, {e.get('sampler_cpu_ms_last20', math.nan):.1f} |"
            )
        for s, e in sorted(b["samplers"].items()):
            if e.get("sampler_error_trials"):
                lines.append(
                    f"\n**{s} raised in {e['sampler_error_studies']} of its studies** ({e['sampler_error_trials']} trials "
                    f"failed inside the sampler, not the objective; they count as failed trials above), first: "
                    f"`{e['sampler_error']}`"
                )
        if len(b["by_suite"]) > 1:
            lines.append(
                "\nmean rank by suite: "
                + "; ".join(
                    f"{suite}: "
                    + ", ".join(
                        f"{s} {v['mean_rank']:.2f}" for s, v in sorted(d.items(), key=lambda kv: kv[1]["mean_rank"])
                    )
                    for suite, d in b["by_suite"].items()
                )
            )
    return "\n".join(lines)


def curve_figure(summary: dict[str, Any]) -> Any:
    """Best-so-far mean normalized regret against trials, one panel per budget."""
    from core_rl.common.plotting import plt

    budgets = list(summary["budgets"])
    fig, axes = plt.subplots(1, len(budgets), figsize=(5.5 * len(budgets), 3.8), squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        for s, e in sorted(summary["budgets"][budget]["samplers"].items()):
            if e["curve"]:
                ax.plot(np.arange(1, len(e["curve"]) + 1), e["curve"], label=s, lw=1.6)
        ax.set_yscale("log")
        ax.set_xlabel("trial")
        ax.set_ylabel("mean normalized regret (best so far)")
        ax.set_title(f"budget {budget}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def rank_figure(summary: dict[str, Any]) -> Any:
    from core_rl.common.plotting import plt

    budgets = list(summary["budgets"])
    # merged summaries may hold a sampler at one budget only: plot the union, no bar where it did not run
    samplers = sorted({s for budget in budgets for s in summary["budgets"][budget]["samplers"]})
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    width = 0.8 / max(len(budgets), 1)
    for i, budget in enumerate(budgets):
        per_sampler = summary["budgets"][budget]["samplers"]
        ranks = [per_sampler[s]["mean_rank"] if s in per_sampler else np.nan for s in samplers]
        ax.bar(np.arange(len(samplers)) + i * width, ranks, width, label=f"{budget} trials")
    ax.set_xticks(np.arange(len(samplers)) + width * (len(budgets) - 1) / 2, samplers, rotation=20)
    ax.set_ylabel("mean rank (lower is better)")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def log_comparison(
    results: list[StudyResult],
    summary: dict[str, Any],
    params: dict[str, Any],
    tracking_uri: str | None = None,
    experiment: str = "autotune",
) -> str:
    """One MLflow parent run for the comparison, a child run per study; returns the parent run id."""
    import tempfile
    from pathlib import Path

    from mlflow.entities import Metric, Param, RunTag

    from core_rl.common.plotting import plt
    from core_rl.common.runs import tracked_run

    with tracked_run(
        experiment,
        run_name=f"compare {params.get('suite', '')}",
        tracking_uri=tracking_uri,
        tags={"autotune.kind": "compare"},
        params=params,
    ) as run:
        client, exp, pid = run.client, run.experiment_id, run.run_id
        ts = int(time.time() * 1000)
        for r in results:  # each study is a finished record: a child run written at once
            child = client.create_run(
                exp,
                run_name=f"{r.sampler} {r.task} b{r.budget} s{r.seed}",
                tags={"mlflow.parentRunId": pid, "autotune.kind": "study"},
            )
            cid = child.info.run_id
            curve = r.best_curve()
            metrics = [Metric("best_so_far", float(v), ts, i) for i, v in enumerate(curve) if math.isfinite(v)]
            metrics += [
                Metric("sampler_ms_per_trial", r.sampler_ms_per_trial, ts, 0),
                Metric("wall_s", r.seconds, ts, 0),
            ]
            for i in range(0, len(metrics), 900):
                client.log_batch(cid, metrics=metrics[i : i + 900])
            client.log_batch(
                cid,
                params=[
                    Param("sampler", r.sampler),
                    Param("task", r.task),
                    Param("budget", str(r.budget)),
                    Param("seed", str(r.seed)),
                ],
                tags=[RunTag("best_params", json.dumps(r.params_best, default=str)[:5000])],
            )
            client.set_terminated(cid)
        summary_metrics = []
        for budget, b in summary["budgets"].items():
            for s, e in b["samplers"].items():
                for key in ("mean_rank", "regret_mean", "sampler_ms_per_trial"):
                    summary_metrics.append(Metric(f"{key}.{s}.{budget}", float(e[key]), ts, 0))
        client.log_batch(pid, metrics=[m for m in summary_metrics if math.isfinite(m.value)])
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "summary.json").write_text(json.dumps(summary, indent=1))
            (Path(tmp) / "summary.md").write_text(summary_table(summary))
            (Path(tmp) / "results.json").write_text(json.dumps([asdict(r) for r in results], default=str))
            for f in ("summary.json", "summary.md", "results.json"):
                run.log_artifact(Path(tmp) / f)
            for name, fig in (("best_so_far.png", curve_figure(summary)), ("mean_rank.png", rank_figure(summary))):
                fig.savefig(Path(tmp) / name, dpi=110, bbox_inches="tight")
                plt.close(fig)
                run.log_artifact(Path(tmp) / name, "plots")
    return pid
