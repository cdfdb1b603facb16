"""Four worker processes share one study on a real PostgreSQL server (started here, on loopback).

Skipped, with the reason, when the PostgreSQL server binaries (Debian's ``postgresql`` package) or
the ``psycopg2`` driver are not installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.postgres import create_database, private_postgres

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def postgres_url():
    with private_postgres(["autotune"]) as base:
        yield f"{base}/autotune"


WORKER = textwrap.dedent("""
    import sys, time, optuna
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    from autotune.run import tune_run

    def objective(params):
        time.sleep(0.02)  # trials overlap across the workers
        return (params["x"] - 0.3) ** 2 + (params["n"] - 3) ** 2 + (0.0 if params["c"] == "b" else 1.0)

    space = {"x": {"type": "float", "low": -2, "high": 2}, "n": {"type": "int", "low": 0, "high": 8},
             "c": {"type": "categorical", "choices": ["a", "b"]}}
    storage, sampler, budget, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    tune_run(objective, space, sampler=sampler, trials=budget, storage=storage, study_name="shared-" + sampler,
             seed=seed, log_mlflow=False)
""")


@pytest.mark.parametrize("sampler", ["rl", "meta"])
def test_four_workers_share_one_study_on_postgresql(postgres_url, sampler, tmp_path):
    import optuna
    from optuna.trial import TrialState

    from autotune import RLSampler

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    n, workers = 32, 4  # one global budget: the workers run 32 trials together
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), postgres_url, sampler, str(n), str(w)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for w in range(workers)
    ]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out.decode()[-3000:]
    study = optuna.load_study(study_name=f"shared-{sampler}", storage=postgres_url)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == n  # none lost, none beyond the budget
    assert sorted(t.number for t in trials) == list(range(n))  # none duplicated
    assert len({t._trial_id for t in trials}) == n
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({(round(t.params["x"], 12), t.params["n"], t.params["c"]) for t in trials}) >= n - 2
    if sampler == "rl":  # any process rebuilds the controller from what the workers stored
        policy = RLSampler(seed=0).policy(study)
        assert len(policy.heads) == 3


@pytest.mark.slow  # four processes importing torch + mlflow: ~1 min; CI runs it
def test_four_workers_start_together_on_an_empty_postgresql_database_one_killed(postgres_url, tmp_path):
    """Empty database, empty data folder (MLflow's SQLite store), 4 workers released at once; one is
    SIGKILLed in its second trial. Every requested trial still ends COMPLETE exactly once."""
    check_four_workers_one_killed(create_database(postgres_url.rsplit("/", 1)[0], "fresh4"), tmp_path)


@pytest.mark.slow  # four processes importing torch + mlflow: ~1 min; CI runs it
def test_four_workers_start_together_on_an_empty_data_folder_one_killed(tmp_path):
    """The same with the default stores: Optuna's and MLflow's SQLite files in one new data folder."""
    check_four_workers_one_killed(None, tmp_path)


KILLABLE = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path

    import optuna
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    from autotune.run import tune_run

    storage, budget, worker, barrier = sys.argv[1] or None, int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    calls = 0

    def objective(params):
        global calls
        calls += 1
        if worker == 0 and calls == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # dies mid-trial: no tell, no MLflow record, no cleanup
        return (params["x"] - 0.3) ** 2 + (params["y"] + 1.0) ** 2

    space = {"x": {"type": "float", "low": -2, "high": 2}, "y": {"type": "float", "low": -2, "high": 2}}
    (barrier / str(worker)).touch()
    while len(list(barrier.iterdir())) < 4:  # imports done everywhere: start at the same moment
        time.sleep(0.005)
    tune_run(objective, space, sampler="tpe", trials=budget, storage=storage, seed=worker, heartbeat=1, grace=3)
""")


def check_four_workers_one_killed(storage: str | None, tmp_path: Path) -> None:
    import mlflow
    import optuna
    from optuna.trial import TrialState

    from autotune.worker import ERROR_ATTR, STALE_REASON

    script, barrier, data = tmp_path / "killable.py", tmp_path / "barrier", tmp_path / "data"
    script.write_text(KILLABLE)
    barrier.mkdir()
    budget, workers = 24, 4
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "DEEPRL_HOME": str(data)}
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), storage or "", str(budget), str(w), str(barrier)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for w in range(workers)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    assert procs[0].returncode == -9, outs[0][1].decode()[-3000:]  # killed
    for p, (_, err) in zip(procs[1:], outs[1:]):
        assert p.returncode == 0, err.decode()[-3000:]
        assert b"Traceback" not in err, err.decode()[-3000:]
    url = storage or f"sqlite:///{data / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(url)
    study = optuna.load_study(study_name=summary.study_name, storage=url)
    assert study.study_name.startswith("__main__:objective@space-")  # the default name
    trials = study.get_trials(deepcopy=False)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    originals = [t for t in trials if "failed_trial" not in t.system_attrs]
    retries = {t.system_attrs["failed_trial"]: t for t in trials if "failed_trial" in t.system_attrs}
    assert len(originals) == budget  # the global budget: not one requested trial more or less
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and ERROR_ATTR not in failed[0].user_attrs  # not the objective's failure
    for t in originals:  # every requested trial finished exactly once: itself, or its one retry
        if t.state == TrialState.COMPLETE:
            assert t.number not in retries
        else:
            retry = retries[t.number]
            assert retry.state == TrialState.COMPLETE and retry.params == t.params
    assert len(retries) == 1 and sum(t.state == TrialState.COMPLETE for t in trials) == budget
    stderr = b"".join(err for _, err in outs).decode()
    assert stderr.count(f"trial {failed[0].number} failed: its worker stopped sending heartbeats") == 1
    mlflow.set_tracking_uri(f"sqlite:///{data / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["autotune"], output_format="list")
    (parent,) = [r for r in runs if r.data.tags.get("autotune.kind") == "study"]
    assert parent.info.run_id == study.user_attrs["mlflow_run_id"] and parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(int(r.data.tags["optuna.trial"]) for r in children) == [t.number for t in trials]
    assert all(r.info.status != "RUNNING" for r in runs)
    (stale,) = [r for r in children if r.data.tags["optuna.state"] == "FAIL"]
    assert stale.data.tags["failure"] == STALE_REASON and stale.info.status == "FAILED"
