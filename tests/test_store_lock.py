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


RACER = textwrap.dedent("""
    import sys, time
    from pathlib import Path

    who, uri, barrier, delay = sys.argv[1], sys.argv[2], Path(sys.argv[3]), float(sys.argv[4])
    import mlflow
    from core_rl.common.runs import setup_tracking

    (barrier / who).touch()
    while len(list(barrier.iterdir())) < 2:  # both imports done: open the store together
        time.sleep(0.005)
    time.sleep(delay)
    if who == "plain":
        mlflow.tracking.MlflowClient(uri).search_experiments(max_results=1)  # no lock, no retry
    else:
        setup_tracking(uri)
""")


@pytest.mark.slow  # two processes importing mlflow, three rounds: ~30 s; CI runs it
def test_a_plain_mlflow_process_opening_the_new_store_beside_ours_breaks_neither(tmp_path):
    """The CLI and an unlocked MLflow process (an ``mlflow ui``, a test polling the store) open a store
    that does not exist yet at the same moment. Running MLflow's migrations twice at once broke both
    processes in about half of such rounds, and left debris (``_alembic_tmp_tags``) that no retry could
    get past: CI failed so. Ours now builds the schema privately and publishes it whole, and waits
    while the other finishes its own."""
    import mlflow

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    (tmp_path / "racer.py").write_text(RACER)
    for rnd, (plain_delay, our_delay) in enumerate([(0.0, 0.0), (0.0, 0.15), (0.3, 0.0)]):
        barrier, db = tmp_path / f"barrier{rnd}", tmp_path / f"store{rnd}" / "mlflow.db"
        barrier.mkdir()
        db.parent.mkdir()
        uri = f"sqlite:///{db}"
        procs = [
            subprocess.Popen(
                [sys.executable, str(tmp_path / "racer.py"), who, uri, str(barrier), str(delay)],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for who, delay in (("plain", plain_delay), ("ours", our_delay))
        ]
        outs = [p.communicate(timeout=180) for p in procs]
        for p, (_, err) in zip(procs, outs):
            assert p.returncode == 0, (rnd, err.decode()[-3000:])
        assert mlflow.tracking.MlflowClient(uri).search_experiments()  # the store opens afterwards too
        assert not list(db.parent.glob(".mlflow.db.creating-*"))


def test_a_new_store_appears_whole_and_a_store_made_meanwhile_wins(tmp_path, monkeypatch):
    """``setup_tracking`` on a missing SQLite file publishes it only at MLflow's newest revision, and
    leaves nothing behind; if someone creates the file while ours is built, theirs is kept."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    from core_rl.common import runs

    newest = _get_latest_schema_revision()
    seen: list[tuple[str | None, int, float]] = []
    real_link = os.link

    def link(src, dst):
        seen.append(runs._schema_version(Path(src)))
        return real_link(src, dst)

    monkeypatch.setattr(runs.os, "link", link)
    db = tmp_path / "a" / "mlflow.db"
    runs.setup_tracking(f"sqlite:///{db}")
    assert [s[0] for s in seen] == [newest]
    assert runs._schema_version(db)[0] == newest
    assert sorted(p.name for p in db.parent.iterdir()) == ["artifacts", "mlflow.db", "mlflow.db.lock"]

    # another process creates the file first: its store stays, ours is dropped
    other = tmp_path / "b" / "mlflow.db"
    runs.setup_tracking(f"sqlite:///{tmp_path / 'made-elsewhere.db'}")

    def link_after_someone_else(src, dst):
        real_link(tmp_path / "made-elsewhere.db", dst)
        return real_link(src, dst)

    monkeypatch.setattr(runs.os, "link", link_after_someone_else)
    runs.setup_tracking(f"sqlite:///{other}")
    assert os.path.samefile(other, tmp_path / "made-elsewhere.db")
    assert not list(other.parent.glob(".mlflow.db.creating-*"))


def test_opening_waits_while_another_process_migrates_the_store(tmp_path):
    """A store whose revision keeps moving is waited for until it reaches the newest one; a store that
    sits still at an old revision is handed over after the quiet interval (MLflow then names the
    problem), and one at the newest revision at once."""
    import sqlite3
    import threading
    import time

    from mlflow.store.db.utils import _get_latest_schema_revision

    from core_rl.common import runs

    newest = _get_latest_schema_revision()
    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.execute("INSERT INTO alembic_version VALUES ('r0')")

    def migrate() -> None:  # a revision every 0.2 s for 2 s, then the newest
        for k in range(1, 11):
            time.sleep(0.2)
            with sqlite3.connect(db) as conn:
                conn.execute("UPDATE alembic_version SET version_num = ?", (f"r{k}",))
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE alembic_version SET version_num = ?", (newest,))

    worker = threading.Thread(target=migrate)
    start = time.monotonic()
    worker.start()
    runs._wait_while_migrating(db, quiet_s=3.0)
    waited = time.monotonic() - start
    worker.join()
    assert runs._schema_version(db)[0] == newest
    assert 2.0 <= waited < 10.0  # through the whole migration, and no quiet wait after it

    start = time.monotonic()
    runs._wait_while_migrating(db, quiet_s=3.0)
    assert time.monotonic() - start < 0.5  # newest: at once

    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'old'")
    start = time.monotonic()
    runs._wait_while_migrating(db, quiet_s=3.0)
    assert 3.0 <= time.monotonic() - start < 8.0  # still: handed over after the quiet interval


def test_a_tracking_server_that_is_down_is_one_error_at_once():
    """`--tracking-uri http://127.0.0.1:PORT` with nothing listening: until 2026-12-08 MLflow retried with back-off for
    about four minutes before the error; now one connection attempt decides, and the error names the address."""
    import socket
    import time

    from core_rl.common import runs

    with socket.socket() as s:  # a port that nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(runs.TrackingError, match=f"cannot be reached .*127.0.0.1:{port}"):
        runs.setup_tracking(f"http://127.0.0.1:{port}")
    assert time.monotonic() - start < runs.SERVER_CONNECT_TIMEOUT_S + 5
