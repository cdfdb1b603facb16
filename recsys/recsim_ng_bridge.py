"""Run the real RecSim NG (TensorFlow) — and the original RecSim — from the main environment, as a subprocess.

RecSim NG needs pins (TensorFlow 2.15, numpy 1.26, gym 0.23, ...) that clash with this suite's
environment, so it lives in its own virtual environment built by ``recsys/build_recsim_env.sh``
(default ``.deeprl/recsim-venv`` at the repository root; ``$RECSIM_VENV`` overrides). This module
never imports TensorFlow: :func:`run_recsim_ng` writes the jobs' inputs as parquet/JSON into a
temporary folder, runs ``recsys/_recsim_ng_driver.py`` with that venv's python, and reads the
parquet/JSON results back.

A job simulates ``num_users`` RecSim NG interest-evolution users (the real
``InterestEvolutionUser``, corpus and metrics of ``recsim_ng.applications.recsys_partially_observable_rl``
in ``recsim_ng.stories.recommendation_simulation.recs_story``) for ``horizon`` steps under one of
the policies ``fixed`` (given slates of corpus rows, ``[H, N, K]``), ``random``, ``linear``
(:class:`recsys.simulation.policies.LinearScoringPolicy` weights) or ``myopic`` (exact myopic
greedy under NG's choice model), on a given :class:`~recsys.simulation.corpus.Corpus` or one NG
samples itself (returned either way). A :class:`RecSimJob` runs episodes of the original RecSim
interest-evolution environment (``recsim==0.2.4``, installed in the same venv) instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from core_rl.common.errors import ConfigError, EnvError
from core_rl.common.runs import run_child
from recsys.simulation.config import InterestEvolutionConfig
from recsys.simulation.corpus import Corpus

REPO_ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).resolve().parent / "_recsim_ng_driver.py"
BUILD_SCRIPT = Path(__file__).resolve().parent / "build_recsim_env.sh"
Policy = Literal["fixed", "random", "linear", "myopic"]


class RecSimNGError(EnvError):
    """The RecSim NG subprocess is missing or failed."""


def recsim_venv() -> Path:
    """Where the isolated RecSim NG environment is (``$RECSIM_VENV`` or ``<repo>/.deeprl/recsim-venv``)."""
    return Path(os.environ.get("RECSIM_VENV", REPO_ROOT / ".deeprl" / "recsim-venv"))


def recsim_python() -> Path:
    return recsim_venv() / "bin" / "python"


def recsim_ng_available() -> tuple[bool, str]:
    """``(True, "")`` when the isolated venv is built, else ``(False, why)``."""
    venv = recsim_venv()
    if not recsim_python().exists():
        return False, f"RecSim NG venv not built at {venv} (run `bash {BUILD_SCRIPT.relative_to(REPO_ROOT)}`)"
    if not any(venv.glob(".recsim-installed-*")):
        return False, f"RecSim NG venv at {venv} is incomplete (re-run `bash {BUILD_SCRIPT.relative_to(REPO_ROOT)}`)"
    return True, ""


@dataclass
class NGJob:
    """One RecSim NG simulation run."""

    name: str
    config: InterestEvolutionConfig
    num_users: int
    horizon: int
    policy: Policy = "random"
    corpus: Corpus | None = None
    slates: np.ndarray | None = None  # fixed policy: [H, N, K] corpus rows
    weights: tuple[float, float, float] | None = None  # linear policy: (w_affinity, w_quality, w_length)
    record: bool = True
    graph_compile: bool = True
    benchmark_repeats: int = 0


@dataclass
class RecSimJob:
    """Episodes of the original RecSim interest-evolution env (``create_environment``), one user at a time.

    ``greedy``: the ``slate_size`` candidates with the highest choice score ``interest . features``.
    """

    name: str
    episodes: int
    policy: Literal["random", "greedy"] = "random"
    num_candidates: int = 10
    slate_size: int = 2
    resample_documents: bool = True


@dataclass
class NGResult:
    """What one job produced. NG jobs: ``corpus``, ``trajectory`` (if recorded), ``user_engagement``
    (total per user). RecSim jobs: ``episodes`` (episode, steps, engagement, clicks)."""

    name: str
    summary: dict[str, Any]
    corpus: Corpus | None = None
    trajectory: pd.DataFrame | None = None
    user_engagement: np.ndarray = field(default_factory=lambda: np.zeros(0))
    episodes: pd.DataFrame | None = None


def _check_job(job: NGJob) -> None:
    c = job.config
    if not job.name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"job name '{job.name}' must be alphanumeric (it names files)")
    if c.num_candidates is not None:
        raise ConfigError("RecSim NG's recommender sees the whole corpus: num_candidates must be None")
    if c.initial_interest_scale != 1.0 or c.choice_logit_offset != 2.0:
        raise ConfigError("RecSim NG fixes initial_interest_scale=1 and choice_logit_offset=2")
    if job.num_users < 1 or job.horizon < 1:
        raise ConfigError("num_users and horizon must be positive")
    if job.policy == "fixed":
        want = (job.horizon, job.num_users, c.slate_size)
        if job.slates is None or tuple(job.slates.shape) != want:
            raise ConfigError(
                f"policy 'fixed' needs slates of shape {want}, got {None if job.slates is None else job.slates.shape}"
            )
        if job.slates.min() < 0 or job.slates.max() >= c.num_docs:
            raise ConfigError(f"slates must hold corpus rows in [0, {c.num_docs})")
    if job.policy == "linear" and (job.weights is None or len(job.weights) != 3):
        raise ConfigError("policy 'linear' needs weights=(w_affinity, w_quality, w_length)")
    if job.policy not in ("fixed", "random", "linear", "myopic"):
        raise ConfigError(f"unknown policy '{job.policy}'")
    if job.corpus is not None and (job.corpus.num_docs != c.num_docs or job.corpus.num_topics != c.num_topics):
        raise ConfigError("corpus shape does not match num_docs/num_topics")


def run_recsim_ng(
    jobs: list[NGJob | RecSimJob],
    seed: int = 0,
    timeout: float = 900.0,
    threads: int = 0,
    workdir: str | Path | None = None,
) -> dict[str, NGResult]:
    """Run ``jobs`` in one RecSim NG subprocess (TensorFlow starts once); results by job name."""
    ok, why = recsim_ng_available()
    if not ok:
        raise RecSimNGError(why)
    for job in jobs:
        if isinstance(job, RecSimJob):
            if job.policy not in ("random", "greedy") or job.episodes < 1 or job.slate_size > job.num_candidates:
                raise ConfigError(
                    f"RecSim job '{job.name}': policy random|greedy, episodes >= 1, slate_size <= num_candidates"
                )
        else:
            _check_job(job)
    with tempfile.TemporaryDirectory(prefix="recsim-ng-", dir=workdir) as tmp:
        tmp_path = Path(tmp)
        out = tmp_path / "out"
        spec_jobs = []
        for job in jobs:
            if isinstance(job, RecSimJob):
                spec_jobs.append(
                    {
                        "kind": "recsim",
                        "name": job.name,
                        "episodes": job.episodes,
                        "policy": job.policy,
                        "num_candidates": job.num_candidates,
                        "slate_size": job.slate_size,
                        "resample_documents": job.resample_documents,
                    }
                )
                continue
            c = job.config
            entry: dict[str, Any] = {
                "name": job.name,
                "num_users": job.num_users,
                "horizon": job.horizon,
                "policy": job.policy,
                "config": {
                    k: getattr(c, k)
                    for k in (
                        "num_topics",
                        "num_docs",
                        "slate_size",
                        "no_click_mass",
                        "interest_step_size",
                        "interest_update_noise_scale",
                        "max_user_affinity",
                        "topic_min_utility",
                        "topic_max_utility",
                        "video_length",
                    )
                },
                "corpus": None,
                "slates": None,
                "record": job.record,
                "graph_compile": job.graph_compile,
                "benchmark_repeats": job.benchmark_repeats,
                "weights": list(job.weights) if job.weights is not None else None,
            }
            if job.corpus is not None:
                path = tmp_path / f"{job.name}_in_corpus.parquet"
                job.corpus.to_frame().to_parquet(path)
                entry["corpus"] = str(path)
            if job.slates is not None and job.policy == "fixed":
                h, n, k = job.slates.shape
                t_idx, u_idx = np.meshgrid(np.arange(h), np.arange(n), indexing="ij")
                frame = pd.DataFrame({"t": t_idx.ravel(), "user": u_idx.ravel()})
                for j in range(k):
                    frame[f"slot_{j}"] = job.slates[..., j].ravel().astype(np.int32)
                path = tmp_path / f"{job.name}_in_slates.parquet"
                frame.to_parquet(path)
                entry["slates"] = str(path)
            spec_jobs.append(entry)
        spec_path = tmp_path / "spec.json"
        spec_path.write_text(json.dumps({"seed": seed, "threads": threads, "jobs": spec_jobs}))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore", CUDA_VISIBLE_DEVICES="")
        try:
            proc = run_child(
                [str(recsim_python()), str(DRIVER), str(spec_path), str(out)],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                cwd=tmp,
            )
        except subprocess.TimeoutExpired:
            raise RecSimNGError(f"RecSim NG run timed out after {timeout:.0f}s") from None
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise RecSimNGError(f"RecSim NG driver failed (exit {proc.returncode}):\n{tail}")
        results: dict[str, NGResult] = {}
        for job in jobs:
            summary = json.loads((out / f"{job.name}_summary.json").read_text())
            if isinstance(job, RecSimJob):
                results[job.name] = NGResult(
                    name=job.name, summary=summary, episodes=pd.read_parquet(out / f"{job.name}_episodes.parquet")
                )
                continue
            corpus = Corpus.from_frame(pd.read_parquet(out / f"{job.name}_corpus.parquet"))
            traj_path = out / f"{job.name}_trajectory.parquet"
            trajectory = pd.read_parquet(traj_path) if traj_path.exists() else None
            results[job.name] = NGResult(
                name=job.name,
                summary=summary,
                corpus=corpus,
                trajectory=trajectory,
                user_engagement=np.asarray(summary.get("user_engagement", []), dtype=np.float64),
            )
        return results


__all__ = [
    "NGJob",
    "RecSimJob",
    "NGResult",
    "RecSimNGError",
    "recsim_ng_available",
    "recsim_venv",
    "recsim_python",
    "run_recsim_ng",
]
