"""``deeprl tune run`` / ``deeprl tune compare``: stored studies, MLflow runs, the comparison report."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import optuna
import pytest

from autotune.cli import add_tune_parser, cmd_tune
from autotune.compare import StudyResult, analyze
from autotune.run import parse_space
from core_rl.common.errors import CheckpointError, ConfigError

OBJECTIVE = """
import math
from pathlib import Path
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


def test_analyze_tests_against_the_best_peer_with_rank_intervals():
    """``reference="best-peer"``: the Wilcoxon reference is the best sampler that is not ours (here
    gp, ahead of tpe), not ours even when ours ranks first; rank intervals bracket the mean."""

    def res(task, sampler, seed, best):
        return StudyResult(task, sampler, 2, seed, [10.0, best], 1.0, 0.5, "minimize")

    results = []
    for seed in range(8):
        for task in ("a", "b"):
            results += [
                res(task, "meta", seed, 1.0 + 0.01 * seed),
                res(task, "gp", seed, 2.0 if seed % 4 else 0.5),
                res(task, "tpe", seed, 3.0),
            ]
    summary = analyze(results, reference="best-peer")
    b = summary["budgets"]["2"]
    assert b["reference"] == "gp"
    s = b["samplers"]
    assert s["meta"]["mean_rank"] == pytest.approx(1.25) and s["gp"]["mean_rank"] == pytest.approx(1.75)
    assert s["meta"]["wins_vs_gp"] == 12 and s["meta"]["losses_vs_gp"] == 4
    assert s["tpe"]["wins_vs_gp"] == 0 and "wilcoxon_p_vs_gp" not in s["gp"]
    for e in s.values():
        lo, hi = e["rank_ci95"]
        assert lo <= e["mean_rank"] <= hi
    assert s["tpe"]["rank_ci95"] == [3.0, 3.0]


def test_mixed_suite_optimum_is_on_the_grid_and_known():
    """The integer variant's optimum (continuous coordinates at the argmin, integers at the rounded
    argmin) is the continuous optimum; the categorical variant's penalty is 0 at (a0, b2) only."""
    from autotune.suites import _bbob_argmin, bbob_mixed_task

    f_best, x_best, _ = _bbob_argmin(1, 5)

    class Fixed:
        def __init__(self, values):
            self.values = values

        def suggest_float(self, name, low, high, log=False):
            return self.values[name]

        def suggest_int(self, name, low, high, log=False):
            return self.values[name]

        def suggest_categorical(self, name, choices):
            return self.values[name]

    at = {f"x{i}": x_best[i] for i in range(2)} | {f"n{i}": round(x_best[i]) for i in range(2, 5)}
    task = bbob_mixed_task(1, 5, "int")
    assert task.objective(Fixed(at)) == pytest.approx(f_best, abs=1e-6)
    assert task.optimum() == pytest.approx(f_best)
    cat = bbob_mixed_task(1, 5, "cat")
    x = {f"x{i}": x_best[i] for i in range(5)}
    assert cat.objective(Fixed(x | {"cat_a": "a0", "cat_b": "b2"})) == pytest.approx(f_best, abs=1e-6)
    assert cat.objective(Fixed(x | {"cat_a": "a1", "cat_b": "b2"})) > f_best + 1.0
    with pytest.raises(ConfigError, match="kind must be 'int' or 'cat'"):
        bbob_mixed_task(1, 5, "float")


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
    with pytest.raises(CheckpointError, match="meta policy weights 'nope.pt' not found"):
        _tune(["compare", "--suite", "hpolib", "--samplers", "meta@nope.pt,tpe", "--no-mlflow"])


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


BAD_VALUES = """
import numpy as np
RETURNS = ["0.5", float("inf"), float("nan"), None, -float("inf"), np.float32(0.75), 0.25]
def objective(trial):  # no space: the objective gets the trial
    trial.suggest_float("x", 0.0, 1.0)
    return RETURNS[trial.number]
def boom(params):
    raise RuntimeError("out of memory\\n  (details on a second line)")
def other(params):
    return params["lr"]
"""


def test_non_numbers_and_non_finite_values_fail_their_trial_with_one_line(workdir, capsys):
    from autotune.run import tune_run
    from autotune.worker import ERROR_ATTR

    (workdir / "badobj.py").write_text(BAD_VALUES)
    result = tune_run("badobj:objective", None, sampler="random", trials=7, seed=0, log_mlflow=False)
    err = capsys.readouterr().err
    assert result.n_complete == 2 and result.n_failed == 5 and result.best_value == 0.25  # "0.5" is not 0.5
    expected = {
        0: "the objective returned '0.5' (a str), not a number",
        1: "the objective returned inf, not a finite number",
        2: "the objective returned nan, not a finite number",
        3: "the objective returned None (a NoneType), not a number",
        4: "the objective returned -inf, not a finite number",
    }
    study = optuna.load_study(study_name=result.study, storage=result.storage)
    for number, reason in expected.items():
        trial = study.trials[number]
        assert trial.state.name == "FAIL" and trial.user_attrs[ERROR_ATTR] == reason
        assert [line for line in err.splitlines() if line.startswith(f"trial {number} ")] == [
            f"trial {number} failed: {reason}"
        ]
    assert study.trials[5].state.name == "COMPLETE" and study.trials[5].value == 0.75  # a NumPy scalar is a number
    assert "Traceback" not in err


def test_an_objective_that_raises_logs_one_line_per_trial_and_its_traceback_to_mlflow(workdir, capsys):
    import mlflow

    from autotune.run import tune_run

    (workdir / "badobj.py").write_text(BAD_VALUES)
    result = tune_run("badobj:boom", SPACE, sampler="random", trials=3, seed=0)
    err = capsys.readouterr().err
    assert result.n_failed == 3 and result.best_value is None
    failed = [line for line in err.splitlines() if " failed" in line]
    assert failed == [f"trial {i} failed: RuntimeError: out of memory" for i in range(3)]
    assert "Traceback" not in err and "second line" not in err
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'data' / 'mlflow.db'}")
    client = mlflow.tracking.MlflowClient()
    runs = mlflow.search_runs(experiment_names=["autotune"], output_format="list")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result.mlflow_run_id]
    assert len(children) == 3
    for run in children:
        assert run.info.status == "FAILED" and run.data.tags["failure"] == "RuntimeError: out of memory"
        path = client.download_artifacts(run.info.run_id, "traceback.txt", str(workdir))
        text = Path(path).read_text()
        assert text.startswith("Traceback") and "in boom" in text and "second line" in text
    (parent,) = [r for r in runs if r.info.run_id == result.mlflow_run_id]
    assert parent.info.status == "FINISHED"  # the budget is spent, even if every trial failed


def test_the_default_study_is_named_after_objective_and_space_and_keeps_to_one_objective(workdir, capsys):
    from autotune.run import default_study_name
    from pipelines.cli import main

    (workdir / "badobj.py").write_text(BAD_VALUES)
    run = ["tune", "run", "--space", "space.json", "--sampler", "random", "--trials", "3", "--no-mlflow", "--json"]
    assert main([*run, "--objective", "userobj:objective"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main([*run, "--objective", "badobj:other"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["study"] == default_study_name("userobj:objective", "space.json")
    assert first["study"].startswith("userobj:objective@space-") and second["study"].startswith("badobj:other@space-")
    assert first["n_trials"] == second["n_trials"] == 3  # two studies: neither sees the other's trials
    assert set(second["best_params"]) == {"lr", "width", "act"}
    assert second["best_value"] == min(
        t.value for t in optuna.load_study(study_name=second["study"], storage=second["storage"]).trials
    )
    (workdir / "space2.json").write_text(json.dumps({**SPACE, "width": {"type": "int", "low": 16, "high": 64}}))
    assert default_study_name("userobj:objective", "space2.json") != first["study"]  # another space, another study
    # joining the first study with another objective is refused, with one line naming both
    assert main([*run, "--objective", "badobj:other", "--study", first["study"]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"error: study '{first['study']}' tunes objective 'userobj:objective', not 'badobj:other': give another "
        "--study, or leave --study out (the default is named after the objective and space)"
    )
    study = optuna.load_study(study_name=first["study"], storage=first["storage"])
    assert len(study.trials) == 3


def test_an_interrupted_worker_queues_its_trial_and_the_next_worker_finishes_the_study(workdir, capsys):
    import mlflow

    from autotune.run import tune_run
    from autotune.worker import ERROR_ATTR

    calls = []

    def objective(params):
        calls.append(params["x"])
        if len(calls) == 2:
            raise KeyboardInterrupt  # what Ctrl-C (or SIGTERM, via tracked signals) does mid-trial
        return params["x"] ** 2

    space = {"x": {"type": "float", "low": -1.0, "high": 1.0}}
    with pytest.raises(KeyboardInterrupt):
        tune_run(objective, space, sampler="random", trials=4, seed=0, study_name="stopped")
    assert "marked KILLED" in capsys.readouterr().err
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'data' / 'mlflow.db'}")
    study = optuna.load_study(study_name="stopped", storage=f"sqlite:///{workdir / 'data' / 'optuna.db'}")
    parent_id = study.user_attrs["mlflow_run_id"]
    assert mlflow.get_run(parent_id).info.status == "KILLED"
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "WAITING"]
    assert study.trials[1].user_attrs[ERROR_ATTR] == "interrupted (SIGINT)"
    assert study.trials[2].params == study.trials[1].params  # queued again with its parameters
    result = tune_run(objective, space, sampler="random", trials=4, seed=1, study_name="stopped")
    assert result.done and result.n_run_here == 3 and result.mlflow_run_id == parent_id
    study = optuna.load_study(study_name="stopped", storage=result.storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    assert calls[2] == calls[1]  # the retry ran the interrupted parameters
    assert mlflow.get_run(parent_id).info.status == "FINISHED"
    children = mlflow.search_runs(
        experiment_names=["autotune"], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'", output_format="list"
    )
    assert sorted(int(r.data.tags["optuna.trial"]) for r in children) == [0, 1, 2, 3, 4]


def test_rank_figure_plots_a_sampler_missing_at_one_budget():
    """A merged comparison may run a sampler at one budget only: the figure plots the union of samplers."""
    from autotune.compare import rank_figure

    summary = {
        "budgets": {
            "50": {"samplers": {"tpe": {"mean_rank": 1.5}, "meta": {"mean_rank": 1.5}}},
            "200": {"samplers": {"meta": {"mean_rank": 1.0}}},
        }
    }
    fig = rank_figure(summary)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["meta", "tpe"]
    heights = [p.get_height() for p in ax.patches]
    assert heights[:2] == [1.5, 1.5] and heights[2] == 1.0 and math.isnan(heights[3])


def test_a_sampler_that_raises_is_named_in_the_comparison(monkeypatch):
    """Trials that fail because the sampler raised (a peer library's bug, say) are counted apart from the
    objective's failures and named under the table, with the first exception, instead of passing silently
    as a sampler that only found bad values."""
    import autotune.compare as compare
    from autotune.suites import get_suite

    class Breaks(optuna.samplers.RandomSampler):
        def sample_independent(self, study, trial, param_name, param_distribution):  # type: ignore[no-untyped-def]
            if trial.number >= 3:
                raise TypeError("only 0-dimensional arrays can be converted to Python scalars")
            return super().sample_independent(study, trial, param_name, param_distribution)

    task = get_suite("bbob24-d2")[0]
    good = compare.run_study(task, "random", 6, 0)
    monkeypatch.setattr(compare, "make_sampler", lambda name, seed, n_trials=None: Breaks(seed=seed))
    bad = compare.run_study(task, "tpe", 6, 0)
    assert (good.sampler_errors, bad.sampler_errors) == (0, 3)
    assert bad.sampler_error == "TypeError: only 0-dimensional arrays can be converted to Python scalars"
    assert all(math.isnan(v) for v in bad.values[3:]) and all(math.isfinite(v) for v in bad.values[:3])
    table = compare.summary_table(analyze([good, bad], [task]))
    assert "**tpe raised in 1 of its studies** (3 trials failed inside the sampler" in table
    assert "random raised" not in table


def test_benchmark_comparison_continues_from_its_journal_and_runs_only_the_missing_studies(tmp_path, monkeypatch):
    """A comparison stopped part-way runs again from ``studies.jsonl``: journaled studies are taken as they
    are (a cut-short last line is dropped), only the rest run, and ``--seeds-from`` picks the seeds."""
    pytest.importorskip("cocoex", reason="coco-experiment (BBOB) not installed: pip install -e '.[autotune]'")
    import autotune.compare as compare_mod
    from benchmarks import autotune_compare

    ran: list[tuple[str, str, int, int]] = []
    real_run_study = compare_mod.run_study

    def counting_run_study(task, sampler, budget, seed, storage=None):  # type: ignore[no-untyped-def]
        ran.append((task.name, sampler, budget, seed))
        return real_run_study(task, sampler, budget, seed, storage)

    monkeypatch.setattr(compare_mod, "run_study", counting_run_study)
    out = tmp_path / "cmp"
    argv = ["--suite", "bbob-small", "--samplers", "random,tpe", "--trials", "6", "--jobs", "1", "--out", str(out)]
    assert autotune_compare.main([*argv, "--seeds", "1", "--seeds-from", "3"]) == 0
    first = list(ran)
    assert len(first) == 8 and {seed for *_, seed in first} == {3}  # 4 tasks × 2 samplers, seed 3 only
    journal = out / "studies.jsonl"
    lines = journal.read_text().splitlines()
    assert len(lines) == 8
    # a session stopped part-way: five studies journaled, the sixth cut off mid-line
    marked = json.loads(lines[0])
    marked["values"] = [123.0] * 6  # a value no real study of these tasks gives: proves it was not rerun
    journal.write_text("\n".join([json.dumps(marked), *lines[1:5], lines[5][:40]]) + "\n")
    ran.clear()
    assert autotune_compare.main([*argv, "--seeds", "2", "--seeds-from", "3"]) == 0
    assert len(ran) == 8 + 3  # seed 4's eight, and seed 3's three not journaled whole
    assert {(t, s, b, seed) for t, s, b, seed in ran if seed == 3} == {tuple(k) for k in first[5:]}
    assert len(journal.read_text().splitlines()) == 5 + 11  # the cut line went; every study now on a line of its own
    results = json.loads((out / "results.json").read_text())
    assert len(results) == 16 and {r["seed"] for r in results} == {3, 4}
    kept = [r for r in results if (r["task"], r["sampler"], r["seed"]) == (marked["task"], marked["sampler"], 3)]
    assert [r["values"] for r in kept] == [[123.0] * 6]
