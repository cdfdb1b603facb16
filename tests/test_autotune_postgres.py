"""Four worker processes share one study on a real PostgreSQL server (started here, on loopback).

Skipped, with the reason, when the PostgreSQL server binaries (Debian's ``postgresql`` package) or
the ``psycopg2`` driver are not installed.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    pg = _pg_bin()
    if pg is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    pytest.importorskip("psycopg2", reason="psycopg2 driver not installed (pip install psycopg2-binary)")
    as_root = os.geteuid() == 0
    prefix: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="autotune-pg-"))
    if as_root:  # the server refuses to run as root: run it as the package's postgres user
        try:
            import pwd

            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    root.chmod(0o755)
    data, log = root / "data", root / "server.log"
    port = _free_port()
    subprocess.run(
        prefix + [str(pg / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c max_connections=60 -c fsync=off"
    subprocess.run(
        prefix + [str(pg / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(log), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE autotune")
        conn.close()
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/autotune"
    finally:
        subprocess.run(prefix + [str(pg / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


WORKER = textwrap.dedent("""
    import sys, time, optuna
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    from autotune.run import tune_run

    def objective(params):
        time.sleep(0.02)  # trials overlap across the workers
        return (params["x"] - 0.3) ** 2 + (params["n"] - 3) ** 2 + (0.0 if params["c"] == "b" else 1.0)

    space = {"x": {"type": "float", "low": -2, "high": 2}, "n": {"type": "int", "low": 0, "high": 8},
             "c": {"type": "categorical", "choices": ["a", "b"]}}
    storage, sampler, per_worker, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    tune_run(objective, space, sampler=sampler, trials=per_worker, storage=storage, study_name="shared-" + sampler,
             seed=seed, log_mlflow=False)
""")


@pytest.mark.parametrize("sampler", ["rl", "meta"])
def test_four_workers_share_one_study_on_postgresql(postgres_url, sampler, tmp_path):
    import optuna
    from optuna.trial import TrialState

    from autotune import RLSampler

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    per_worker, workers = 8, 4
    optuna.create_study(study_name=f"shared-{sampler}", storage=postgres_url)  # created once, before the workers
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), postgres_url, sampler, str(per_worker), str(w)],
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
    n = per_worker * workers
    assert len(trials) == n  # none lost
    assert sorted(t.number for t in trials) == list(range(n))  # none duplicated
    assert len({t._trial_id for t in trials}) == n
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({(round(t.params["x"], 12), t.params["n"], t.params["c"]) for t in trials}) >= n - 2
    if sampler == "rl":  # any process rebuilds the controller from what the workers stored
        policy = RLSampler(seed=0).policy(study)
        assert len(policy.heads) == 3
