"""Processes that start together on an empty data folder create MLflow's SQLite store once.

Without :class:`core_rl.common.store_lock.StoreLock` around the first use, MLflow's schema creation
and migrations run in every process at once and most of them fail (``table _alembic_tmp_metrics
already exists``, ``duplicate column name: step``, ``Online migration expected to match one row``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

OPENER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import mlflow
    from core_rl.common.runs import get_experiment_id, setup_tracking

    worker, barrier = sys.argv[1], Path(sys.argv[2])
    (barrier / worker).touch()
    while len(list(barrier.iterdir())) < 4:  # imports done everywhere: open the store at the same moment
        time.sleep(0.005)
    uri = setup_tracking(None)
    print(get_experiment_id("shared", uri))
""")


@pytest.mark.slow  # four processes importing torch + mlflow: ~1 min; CI runs it
def test_four_processes_create_the_tracking_store_and_an_experiment_once(tmp_path):
    import mlflow

    script, barrier, data = tmp_path / "opener.py", tmp_path / "barrier", tmp_path / "data"
    script.write_text(OPENER)
    barrier.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "DEEPRL_HOME": str(data)}
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(w), str(barrier)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for w in range(4)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err.decode()[-3000:]
    ids = {out.decode().strip().splitlines()[-1] for out, _ in outs}
    assert len(ids) == 1  # one experiment, every process got its id
    client = mlflow.tracking.MlflowClient(f"sqlite:///{data / 'mlflow.db'}")
    assert [e.name for e in client.search_experiments()].count("shared") == 1
    assert (data / "mlflow.db.lock").is_file()  # the lock lives in the data folder


def test_the_writable_check_survives_processes_probing_one_folder_together(tmp_path):
    """Each caller probes with a file of its own: with one shared probe name, one caller's unlink removed
    another's probe and the folder was reported "not writable" (the four-process test above failed so)."""
    import threading

    from core_rl.common.runs import check_writable_dir

    errors: list[Exception] = []

    def probe() -> None:
        for _ in range(300):
            try:
                check_writable_dir(tmp_path, "data folder")
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=probe) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert list(tmp_path.iterdir()) == []  # no probe left behind


def test_a_schema_creation_colliding_with_a_lockless_process_is_retried(tmp_path, monkeypatch):
    """A process outside the lock (the MLflow UI, a script's plain ``MlflowClient``) may create the schema
    while we do: MLflow then raises ``table ... already exists`` in the loser. CI hit this once when a
    test polled the store while the CLI opened it; the loser now retries and finds the tables made."""
    import mlflow
    import sqlalchemy

    from core_rl.common import runs

    calls: list[int] = []
    real = mlflow.tracking.MlflowClient.search_experiments

    def collide_twice(self, *args, **kwargs):
        calls.append(1)
        if len(calls) <= 2:
            raise sqlalchemy.exc.OperationalError(
                "CREATE TABLE sql_trace_metric_daily_rollups",
                {},
                Exception("table sql_trace_metric_daily_rollups already exists"),
            )
        return real(self, *args, **kwargs)

    def failing(message: str):
        def search_experiments(self, *args, **kwargs):
            calls.append(1)
            raise RuntimeError(message)

        return search_experiments

    monkeypatch.setattr(mlflow.tracking.MlflowClient, "search_experiments", collide_twice)
    monkeypatch.setattr(runs.time, "sleep", lambda s: None)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert runs.setup_tracking(uri) == uri
    assert len(calls) == 3

    # a store that stays broken is still one clear error, after the retries
    calls.clear()
    monkeypatch.setattr(runs, "SCHEMA_RACE_RETRIES", 1)
    monkeypatch.setattr(mlflow.tracking.MlflowClient, "search_experiments", failing("table x already exists"))
    with pytest.raises(runs.TrackingError, match="cannot be used: table x already exists"):
        runs.setup_tracking(uri)
    assert len(calls) == 2

    # any other failure is not retried
    calls.clear()
    monkeypatch.setattr(mlflow.tracking.MlflowClient, "search_experiments", failing("bad credentials"))
    with pytest.raises(runs.TrackingError, match="bad credentials"):
        runs.setup_tracking(uri)
    assert len(calls) == 1
