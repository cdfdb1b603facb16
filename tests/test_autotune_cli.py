"""``deeprl tune run`` / ``deeprl tune compare``: stored studies, MLflow runs, the comparison report."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import optuna
import pytest

from autotune.cli import add_tune_parser, cmd_tune
from autotune.compare import StudyResult, analyze
from autotune.run import parse_space
from core_rl.common.errors import ConfigError

OBJECTIVE = """
import math
def objective(params):
    if params["width"] == 48:
        raise RuntimeError("out of memory")          # recorded as a failed trial
    if params["act"] == "tanh" and params["lr"] > 0.05:
        return float("nan")                           # recorded as a failed trial
    return (math.log10(params["lr"]) + 2) ** 2 + abs(params["width"] - 64) / 64 + (params["act"] != "relu")
"""

SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
    "width": {"type": "int", "low": 16, "high": 128, "step": 16},
    "act": {"type": "categorical", "choices": ["relu", "tanh"]},
}


def _tune(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="deeprl")
    add_tune_parser(parser.add_subparsers(dest="command", required=True))
    return cmd_tune(parser.parse_args(["tune", *argv]))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "userobj.py").write_text(OBJECTIVE)
    (tmp_path / "space.json").write_text(json.dumps(SPACE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DEEPRL_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def test_tune_run_stores_resumes_and_logs_every_trial_to_mlflow(workdir, capsys):
    import mlflow

    args = [
        "tune",
        "run",
        "--objective",
        "userobj:objective",
        "--space",
        "space.json",
        "--sampler",
        "rl",
        "--trials",
        "12",
        "--study",
        "mine",
        "--seed",
        "0",
        "--json",
    ]
    assert _tune(args[1:]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (workdir / "data" / "optuna.db").is_file()  # the default storage
    assert first["n_trials"] == 12
    assert first["done"] and first["budget"] == 12
    assert _tune(args[1:]) == 0  # the same budget again: the study is done, nothing more runs
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["n_trials"] == 12 and again["n_run_here"] == 0
    args[args.index("--trials") + 1] = "24"
    assert _tune(args[1:]) == 0  # a larger budget extends the study: 12 more trials
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["n_trials"] == 24 and second["n_run_here"] == 12
    assert second["mlflow_run_id"] == first["mlflow_run_id"]
    study = optuna.load_study(study_name="mine", storage=f"sqlite:///{workdir / 'data' / 'optuna.db'}")
    states = [t.state.name for t in study.trials]
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert [t.number for t in study.trials] == list(range(24))
    assert failed and all(
        t.params["width"] == 48 or (t.params["act"] == "tanh" and t.params["lr"] > 0.05) for t in failed
    )
    assert states.count("COMPLETE") == second["n_complete"] > 0
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'data' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["autotune"], output_format="list")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == first["mlflow_run_id"]]
    assert len(children) == 24
    assert {r.data.tags["optuna.state"] for r in children} == {"COMPLETE", "FAIL"}
    complete = [r for r in children if r.data.tags["optuna.state"] == "COMPLETE"]
    assert all("value" in r.data.metrics and set(r.data.params) == {"lr", "width", "act"} for r in complete)


def test_tune_compare_reports_ranks_regret_and_logs_to_mlflow(workdir, capsys):
    import mlflow

    pytest.importorskip("cocoex", reason="coco-experiment (BBOB) not installed: pip install -e '.[autotune]'")
    pytest.importorskip("scipy", reason="scipy not installed")

    code = _tune(
        [
            "compare",
            "--suite",
            "bbob-small",
            "--samplers",
            "rl,random,tpe",
            "--trials",
            "10",
            "--seeds",
            "2",
            "--out",
            "summary.json",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "mean rank" in out and "| tpe |" in out and "Wilcoxon" in out
    summary = json.loads((workdir / "summary.json").read_text())
    b = summary["budgets"]["10"]
    assert b["n_cells"] == 8  # 4 tasks × 2 seeds
    ranks = [e["mean_rank"] for e in b["samplers"].values()]
    assert sum(ranks) == pytest.approx(6.0)  # 1 + 2 + 3 per cell
    for e in b["samplers"].values():
        assert e["regret_ci95"][0] <= e["regret_mean"] <= e["regret_ci95"][1]
        assert len(e["curve"]) == 10 and np.all(np.diff(e["curve"]) <= 1e-12)
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'data' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["autotune"], output_format="list")
    parents = [r for r in runs if r.data.tags.get("autotune.kind") == "compare"]
    assert len(parents) == 1
    pid = parents[0].info.run_id
    assert len([r for r in runs if r.data.tags.get("mlflow.parentRunId") == pid]) == 24
    artifacts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(pid)}
    assert {"summary.json", "summary.md", "plots"} <= artifacts
    plots = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(pid, "plots")}
    assert {"plots/best_so_far.png", "plots/mean_rank.png"} <= plots


def test_analyze_against_known_answer():
    """Two samplers on two tasks: ranks, regrets and the paired test computed by hand."""

    def res(task, sampler, seed, values):
        return StudyResult(task, sampler, 3, seed, values, 1.0, 0.5, "minimize")

    results = []
    for seed in range(6):
        results += [
            res("a", "tpe", seed, [4.0, 3.0, 2.0]),
            res("a", "x", seed, [4.0, 1.0, 1.0 + 0.1 * seed]),
            res("b", "tpe", seed, [10.0, 10.0, 10.0]),
            res("b", "x", seed, [9.0, 5.0, 5.0]),
        ]
    summary = analyze(results)
    b = summary["budgets"]["3"]["samplers"]
    assert b["x"]["mean_rank"] == 1.0 and b["tpe"]["mean_rank"] == 2.0
    # task a: f* = 1.0 (best seen), f_ref = median of all values; regret of tpe = (2 - 1)/(f_ref - 1)
    vals_a = [v for r in results if r.task == "a" for v in r.values]
    ref_a = float(np.median(vals_a))
    assert summary["landmarks"]["a"] == [1.0, ref_a]
    reg_tpe_a = (2.0 - 1.0) / (ref_a - 1.0)
    ref_b = float(np.median([v for r in results if r.task == "b" for v in r.values]))
    reg_tpe_b = min(max((10.0 - 5.0) / (ref_b - 5.0), 0), math.inf)
    assert b["tpe"]["regret_mean"] == pytest.approx((reg_tpe_a + reg_tpe_b) / 2)
    assert b["x"]["wins_vs_tpe"] == 12 and b["x"]["losses_vs_tpe"] == 0
    assert b["x"]["wilcoxon_p_vs_tpe"] < 0.01


def test_bad_inputs_name_their_cause(workdir):
    with pytest.raises(ConfigError, match="space field 'lr.low'"):
        parse_space({"lr": {"type": "float", "low": "tiny", "high": 1.0}})
    with pytest.raises(ConfigError, match="log-scaled float needs low > 0"):
        parse_space({"lr": {"type": "float", "low": 0.0, "high": 1.0, "log": True}})
    with pytest.raises(ConfigError, match="unknown sampler 'bogus'"):
        _tune(["run", "--objective", "userobj:objective", "--space", "space.json", "--sampler", "bogus", "--no-mlflow"])
    with pytest.raises(ConfigError, match="has no function 'nope'"):
        _tune(["run", "--objective", "userobj:nope", "--space", "space.json", "--no-mlflow"])
    with pytest.raises(ConfigError, match="unknown suite 'nosuch'"):
        _tune(["compare", "--suite", "nosuch", "--no-mlflow"])


def test_deeprl_tune_is_wired_into_the_cli(workdir, capsys):
    from pipelines.cli import main

    assert main(["tune", "run", "--objective", "userobj:nope", "--space", "space.json", "--no-mlflow"]) == 2
    assert "has no function 'nope'" in capsys.readouterr().err
    assert (
        main(
            [
                "tune",
                "run",
                "--objective",
                "userobj:objective",
                "--space",
                "space.json",
                "--trials",
                "5",
                "--sampler",
                "meta",
                "--seed",
                "1",
                "--no-mlflow",
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n_trials"] == 5 and result["best_value"] is not None
