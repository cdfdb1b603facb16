"""A shared MLflow server (``deeprl server``: PostgreSQL backend store, proxied artifacts, loopback),
started here and written to by many clients at once: a ``deeprl train`` run, four ``deeprl tune run``
workers on one study and a recommender pipeline (simulate-logs → train → register), concurrently.
Every run, metric and model must arrive exactly once.

Skipped, with the reason, when the PostgreSQL server binaries or the psycopg2 driver are missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from pipelines.cli import main
from tests.postgres import free_port, private_postgres

ROOT = Path(__file__).resolve().parents[1]
TRIALS, WORKERS = 16, 4

OBJECTIVE = """
def objective(params):
    return (params["x"] - 0.3) ** 2 + (params["y"] + 1.0) ** 2
"""
SPACE = {"x": {"type": "float", "low": -2, "high": 2}, "y": {"type": "float", "low": -2, "high": 2}}


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the server did not answer /health in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``deeprl server`` on a private PostgreSQL cluster; yields (tracking URL, artifacts folder, optuna URL)."""
    with private_postgres(["mlflow", "optuna"]) as pg:
        tmp = tmp_path_factory.mktemp("mlflow-server")
        artifacts, log = tmp / "artifacts", tmp / "server.log"
        port = free_port()
        cmd = [sys.executable, "-m", "pipelines", "server", "--backend-store-uri", f"{pg}/mlflow"]
        cmd += ["--artifacts-destination", str(artifacts), "--port", str(port), "--workers", "2"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(log, "wb") as out:
            # its own session: the server's worker processes stop with it (and nothing else does)
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(url, proc, log)
            yield url, artifacts, f"{pg}/optuna"
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_bad_server_inputs_give_one_line(capsys, tmp_path):
    assert main(["server", "--backend-store-uri", "file:///tmp/x", "--artifacts-destination", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: --backend-store-uri must be a database URL (postgresql://user@host:port/db), got 'file:///tmp/x'"
    ]
    port = free_port()
    code = main(
        [
            "server",
            "--backend-store-uri",
            f"postgresql://u@127.0.0.1:{port}/db",
            "--artifacts-destination",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: backend store 'postgresql+psycopg") and "cannot be reached" in err[0]


def _spawn(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines", *argv], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _json_out(proc: subprocess.Popen, what: str) -> dict:
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, f"{what}: {err.decode()[-3000:]}"
    return json.loads(out.decode().strip().splitlines()[-1])


def _assert_histories_once(client, run) -> None:
    """Every metric of ``run``: one value per step (a retried or doubled write shows as a repeated step)."""
    for key in run.data.metrics:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        dup = [s for s, n in Counter(steps).items() if n > 1]
        assert not dup, f"run {run.info.run_name}: metric {key} logged twice at steps {dup[:5]}"


@pytest.mark.slow  # seven client processes importing torch + mlflow at once on a shared 2-core machine: ~2.5 min
def test_train_tune_workers_and_recsys_pipeline_write_to_one_server_concurrently(server, tmp_path):
    import mlflow
    import numpy as np

    from recsys.logs import read_logs_frame

    url, artifacts, optuna_url = server
    (tmp_path / "quad.py").write_text(OBJECTIVE)
    (tmp_path / "space.json").write_text(json.dumps(SPACE))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": url}
    env["DEEPRL_HOME"] = str(tmp_path / "local")  # nothing may land here: everything goes to the server
    logs = tmp_path / "logs.parquet"

    train = _spawn(
        ["train", "--algo", "ppo", "--env", "CartPole-v1", "--steps", "1024", "--seed", "0", "--json"]
        + ["--set", "n_envs=4", "n_steps=64", "--experiment", "shared-train"],
        tmp_path,
        env,
    )
    tune = ["tune", "run", "--objective", "quad:objective", "--space", "space.json", "--sampler", "tpe"]
    tune += ["--trials", str(TRIALS), "--storage", optuna_url, "--study", "shared", "--json", "--heartbeat", "2"]
    workers = [_spawn([*tune, "--seed", str(w)], tmp_path, env) for w in range(WORKERS)]
    recsys = subprocess.Popen(
        [
            "bash",
            "-c",
            f"{sys.executable} -m pipelines recsys simulate-logs --sessions 100 --num-envs 50 "
            f"--env-set num_candidates=8 horizon=10 --out {logs} --json && "
            f"{sys.executable} -m pipelines recsys train --logs {logs} --algo topk_reinforce --set epochs=1 "
            "--eval-sessions 20 --register shared-recsys --json",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    trained = _json_out(train, "deeprl train")
    tuned = [_json_out(w, f"tune worker {i}") for i, w in enumerate(workers)]
    out, err = recsys.communicate(timeout=400)
    assert recsys.returncode == 0, err.decode()[-3000:]
    sim, rec = (json.loads(line) for line in out.decode().strip().splitlines() if line.startswith("{"))
    assert not (tmp_path / "local" / "mlflow.db").exists()

    mlflow.set_tracking_uri(url)
    client = mlflow.tracking.MlflowClient()
    every = {e.name: client.search_runs([e.experiment_id], max_results=1000) for e in client.search_experiments()}

    # deeprl train: one run, finished, its model served back through the proxy
    (run,) = every["shared-train"]
    assert run.info.run_id == trained["run_id"] and run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied, not a path on this machine
    assert run.data.metrics and "mean_return" in json.dumps(trained)
    policy = mlflow.pyfunc.load_model(trained["model_uri"])
    assert np.asarray(policy.predict(np.zeros((3, 4), dtype=np.float32))).shape[0] == 3
    assert any(artifacts.rglob("MLmodel"))  # the bytes live in the server's artifact store

    # tune run: four workers, one study, one parent run, each of the 16 trials once
    assert {t["mlflow_run_id"] for t in tuned} == {tuned[0]["mlflow_run_id"]}
    assert sum(t["n_run_here"] for t in tuned) == TRIALS
    runs = every["autotune"]
    (parent,) = [r for r in runs if r.data.tags.get("autotune.kind") == "study"]
    assert parent.info.run_id == tuned[0]["mlflow_run_id"] and parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 1 + TRIALS == len(children) + 1
    assert sorted(int(r.data.tags["optuna.trial"]) for r in children) == list(range(TRIALS))
    assert all(r.info.status == "FINISHED" and set(r.data.params) == {"x", "y"} for r in children)
    best = client.get_metric_history(parent.info.run_id, "best_value")
    assert sorted(m.step for m in best) == list(range(TRIALS))
    values = {int(r.data.tags["optuna.trial"]): r.data.metrics["value"] for r in children}
    assert min(m.value for m in best) == pytest.approx(min(values.values()))

    # the recommender: its two runs, one registered version, the model loads through the proxy
    recsys_runs = every["recsys"]
    assert sorted(r.info.run_id for r in recsys_runs) == sorted([sim["run_id"], rec["run_id"]])
    assert all(r.info.status == "FINISHED" for r in recsys_runs)
    versions = client.search_model_versions("name='shared-recsys'")
    assert [v.version for v in versions] == ["1"] and versions[0].run_id == rec["run_id"]
    model = mlflow.pyfunc.load_model("models:/shared-recsys/1")
    df = read_logs_frame(logs).head(3)
    pred = model.predict(df[["user_features", "candidate_features", "candidate_doc_ids"]])
    assert len(pred) == 3

    # nothing else arrived, nothing is left RUNNING, no metric step was written twice
    assert {k for k, v in every.items() if v} == {"shared-train", "autotune", "recsys"}
    for runs in every.values():
        for r in runs:
            assert r.info.status == "FINISHED", r.info.run_name
            _assert_histories_once(client, r)


def test_clients_creating_one_experiment_at_once_share_it(tracking_uri, monkeypatch):
    """A server takes no client lock: another client may create the experiment between this client's
    look-up and its create. The create's RESOURCE_ALREADY_EXISTS then means "use theirs"."""
    import mlflow

    from core_rl.common.runs import get_experiment_id, setup_tracking

    setup_tracking(tracking_uri)
    real = mlflow.tracking.MlflowClient.get_experiment_by_name
    calls = []

    def racing(self, name):
        calls.append(name)
        if len(calls) == 2:  # just before our create, the other client creates it
            calls.append(mlflow.tracking.MlflowClient().create_experiment(name))
        return None if len(calls) <= 3 else real(self, name)

    monkeypatch.setattr(mlflow.tracking.MlflowClient, "get_experiment_by_name", racing)
    assert get_experiment_id("shared", tracking_uri) == calls[2]
