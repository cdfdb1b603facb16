"""``deeprl recsys``: simulate-logs → train → evaluate as MLflow runs with metrics and plots, the
policy served as a registered pyfunc model (user state + candidates → slate), and bad logs rejected
with one clear error each."""

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipelines.cli import main
from recsys.logs import read_logs_frame

ENV_SET = ["--env-set", "num_candidates=8", "horizon=20"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def artifacts(client, run_id, path=None):
    return sorted(a.path for a in client.list_artifacts(run_id, path))


def test_simulate_train_evaluate_serve(capsys, tracking_uri, tmp_path):
    logs = tmp_path / "logs.parquet"
    code, out, err = run_cli(
        capsys,
        "recsys",
        "simulate-logs",
        "--env",
        "recsys/InterestEvolution-v0",
        *ENV_SET,
        "--sessions",
        "200",
        "--num-envs",
        "100",
        "--policy",
        "epsilon_popularity",
        "--epsilon",
        "0.3",
        "--out",
        str(logs),
        "--json",
        "--tracking-uri",
        tracking_uri,
    )
    assert code == 0, err
    sim = json.loads(out.strip().splitlines()[-1])
    assert sim["rows"] == 4000 and sim["sessions"] == 200 and logs.is_file()
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.tracking.MlflowClient()
    run = client.get_run(sim["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["logging_policy"] == "epsilon_popularity"
    assert run.data.metrics["rows"] == 4000
    assert artifacts(client, sim["run_id"], "plots") == ["plots/logged_engagement.png"]

    code, out, err = run_cli(
        capsys,
        "recsys",
        "train",
        "--logs",
        str(logs),
        "--algo",
        "topk_reinforce",
        "--set",
        "epochs=2",
        "--online",
        "--eval-sessions",
        "200",
        "--json",
        "--tracking-uri",
        tracking_uri,
    )
    assert code == 0, err
    tr = json.loads(out.strip().splitlines()[-1])
    run = client.get_run(tr["run_id"])
    assert run.info.status == "FINISHED"
    for metric in ("policy_loss", "beta_nll", "online.session_engagement", "online.logging.session_engagement"):
        assert metric in run.data.metrics, metric
    assert artifacts(client, tr["run_id"], "plots") == ["plots/engagement_curve.png", "plots/training_curve.png"]
    assert tr["registered"]["name"] == "recsys-topk_reinforce" and tr["registered"]["version"] == "1"
    assert client.get_registered_model("recsys-topk_reinforce").name == "recsys-topk_reinforce"

    # the registered pyfunc model: user state + candidates in, slate out
    model = mlflow.pyfunc.load_model("models:/recsys-topk_reinforce/1")
    df = read_logs_frame(logs).head(4)
    pred = model.predict(df[["user_features", "candidate_features", "candidate_doc_ids"]])
    slates = np.stack(pred["slate"].to_numpy())
    assert slates.shape == (4, 2) and ((slates >= 0) & (slates < 8)).all() and (slates[:, 0] != slates[:, 1]).all()
    ids = np.stack(df["candidate_doc_ids"].to_numpy())
    assert (np.stack(pred["slate_doc_ids"].to_numpy()) == np.take_along_axis(ids, slates, 1)).all()
    # a malformed request names the column and the shape the model expects
    short = df[["user_features", "candidate_features"]].copy()
    short["candidate_features"] = [np.asarray(v)[:-3].tolist() for v in short["candidate_features"]]
    with pytest.raises(
        Exception,
        match=r"input column 'candidate_features': the model expects 32 numbers "
        r"\(C=8 candidates x F=4 features\) or \[8\]\[4\] lists per row, got 29",
    ):
        model.predict(short)
    with pytest.raises(Exception, match="input column 'user_features': the model expects 2 numbers per row, got 3"):
        model.predict(df[["user_features", "candidate_features"]].assign(user_features=[[0.0, 1.0, 2.0]] * 4))

    code, out, err = run_cli(
        capsys,
        "recsys",
        "evaluate",
        "--model",
        tr["model_uri"],
        "--logs",
        str(logs),
        "--online",
        "--sessions",
        "200",
        "--bootstrap",
        "100",
        "--json",
        "--tracking-uri",
        tracking_uri,
    )
    assert code == 0, err
    ev = json.loads(out.strip().splitlines()[-1])
    assert set(ev["ope"]) == {"ips", "snips", "dr", "pi", "pi_sn", "dm"}
    for e in ev["ope"].values():
        assert e["lower"] <= e["value"] <= e["upper"]
    assert ev["ground_truth"] > 0 and ev["online"]["session_engagement"] > 0
    run = client.get_run(ev["run_id"])
    for metric in ("ope.dr", "ope.ground_truth", "ope.ips_lower", "online.step_engagement"):
        assert metric in run.data.metrics, metric
    assert artifacts(client, ev["run_id"], "plots") == ["plots/engagement_curve.png", "plots/ope_estimates.png"]
    assert "ope.json" in artifacts(client, ev["run_id"])
    # train --online and evaluate --online run the same model in the logged simulator (its corpus
    # included) with the same seed: the same value
    assert ev["online"]["session_engagement"] == pytest.approx(tr["online"]["session_engagement"], rel=1e-9)
    assert ev["online"]["step_engagement"] == pytest.approx(tr["online"]["step_engagement"], rel=1e-9)


def test_bad_logs_get_clear_errors_and_bad_rows_are_quarantined(capsys, tracking_uri, tmp_path):
    logs = tmp_path / "logs.parquet"
    code, _, err = run_cli(
        capsys,
        "recsys",
        "simulate-logs",
        *ENV_SET,
        "--sessions",
        "40",
        "--num-envs",
        "40",
        "--out",
        str(logs),
        "--no-oracle",
        "--tracking-uri",
        tracking_uri,
    )
    assert code == 0, err
    df = read_logs_frame(logs)
    df.drop(columns=["slate"]).to_parquet(tmp_path / "noslate.parquet")
    code, out, err = run_cli(
        capsys,
        "recsys",
        "train",
        "--logs",
        str(tmp_path / "noslate.parquet"),
        "--algo",
        "bc",
        "--tracking-uri",
        tracking_uri,
    )
    assert code == 2 and "error:" in err and "column 'slate': missing" in err
    raw = df.copy()
    raw.loc[3, "click_position"] = 7
    raw.loc[10, "engagement"] = -2.0
    raw.to_parquet(tmp_path / "raw.parquet")
    code, out, err = run_cli(
        capsys,
        "recsys",
        "ingest",
        "--logs",
        str(tmp_path / "raw.parquet"),
        "--out",
        str(tmp_path / "clean.parquet"),
        "--json",
        "--tracking-uri",
        tracking_uri,
    )
    assert code == 0, err
    rep = json.loads(out.strip().splitlines()[-1])
    assert rep["rows_in"] == len(df) and rep["rows_quarantined"] == 2 and rep["rows_clean"] == len(df) - 2
    assert rep["problems"] == [
        "column 'click_position': 1 bad row, outside [-1, 2) (first bad row: 3)",
        "column 'engagement': 1 bad row, negative or not finite (first bad row: 10)",
    ]
    assert len(pd.read_parquet(rep["quarantine"])) == 2
    code, out, err = run_cli(
        capsys,
        "recsys",
        "ingest",
        "--logs",
        str(tmp_path / "raw.parquet"),
        "--out",
        str(tmp_path / "strict.parquet"),
        "--strict",
        "--tracking-uri",
        tracking_uri,
    )
    assert code == 2 and "2 bad row(s)" in err and "first bad row: 3" in err
    code, _, err = run_cli(
        capsys, "recsys", "train", "--logs", str(logs), "--algo", "nope", "--tracking-uri", tracking_uri
    )
    assert code == 2 and "unknown recsys algorithm 'nope'" in err
    code, _, err = run_cli(
        capsys,
        "recsys",
        "train",
        "--logs",
        str(logs),
        "--algo",
        "topk_reinforce",
        "--set",
        "wrong_field=1",
        "--tracking-uri",
        tracking_uri,
    )
    assert code == 2 and "wrong_field" in err


def test_online_runs_on_the_logged_corpus(tmp_path):
    """The simulator --online builds from a log shows the logged documents (NG twin: the frozen corpus)."""
    from recsys.logs import LogReader
    from recsys.pipeline import ONLINE_SEED_OFFSET, online_simulator, simulate_logs

    logs = tmp_path / "logs.parquet"
    simulate_logs(logs, env_config={"num_candidates": 8, "horizon": 5}, sessions=20, num_envs=20, track=False)
    df = read_logs_frame(logs)
    ids = np.stack(df["candidate_doc_ids"].to_numpy())
    docs = np.stack(df["candidate_features"].to_numpy()).reshape(len(df), 8, -1)
    quality = {int(i): float(q) for i, q in zip(ids.reshape(-1), docs[:, :, -2].reshape(-1))}  # doc id → quality
    reader = LogReader(logs)
    for seed in (0, 7):
        env, sim_id = online_simulator(reader, None, None, 4, seed + ONLINE_SEED_OFFSET)
        env.reset(seed=seed + ONLINE_SEED_OFFSET)  # evaluate_online resets with its seed
        assert sim_id == "recsys/InterestEvolution-v0"
        got = dict(zip(env.corpus.doc_id.tolist(), env.corpus.quality.tolist()))
        assert all(got[i] == pytest.approx(q, abs=0) for i, q in quality.items())


def test_ingest_writes_under_the_data_folder_never_beside_the_input(capsys, tracking_uri, tmp_path):
    logs = tmp_path / "logs.parquet"
    assert (
        run_cli(
            capsys,
            "recsys",
            "simulate-logs",
            *ENV_SET,
            "--sessions",
            "20",
            "--num-envs",
            "20",
            "--out",
            str(logs),
            "--no-oracle",
            "--tracking-uri",
            tracking_uri,
        )[0]
        == 0
    )
    user = tmp_path / "user"
    user.mkdir()
    raw = read_logs_frame(logs)
    raw.loc[3, "click_position"] = 7
    raw.sample(frac=1.0, random_state=1).to_parquet(user / "raw.parquet")  # unordered, one bad row
    code, out, err = run_cli(
        capsys, "recsys", "ingest", "--logs", str(user / "raw.parquet"), "--json", "--tracking-uri", tracking_uri
    )
    assert code == 0, err
    rep = json.loads(out.strip().splitlines()[-1])
    store = tmp_path / "store" / "recsys" / "ingested"  # DEEPRL_HOME is tmp_path / "store"
    assert Path(rep["output"]).parent == store and Path(rep["quarantine"]).parent == store
    assert rep["rows_quarantined"] == 1 and len(pd.read_parquet(rep["output"])) == len(raw) - 1
    # train ingests a raw log itself, also under the data folder
    code, out, err = run_cli(
        capsys,
        "recsys",
        "train",
        "--logs",
        str(user / "raw.parquet"),
        "--algo",
        "random",
        "--json",
        "--tracking-uri",
        tracking_uri,
    )
    assert code == 0, err
    assert sorted(p.name for p in user.iterdir()) == ["raw.parquet"]  # nothing beside the input
    # --require-sorted refuses the unordered log with one error naming the row
    code, _, err = run_cli(
        capsys,
        "recsys",
        "ingest",
        "--logs",
        str(user / "raw.parquet"),
        "--require-sorted",
        "--tracking-uri",
        tracking_uri,
    )
    assert code == 2 and "not ordered by (session_id, step): row " in err
    # an empty file: one message
    raw.iloc[:0].to_parquet(user / "empty.parquet")
    code, _, err = run_cli(
        capsys, "recsys", "ingest", "--logs", str(user / "empty.parquet"), "--tracking-uri", tracking_uri
    )
    assert code == 2 and err.strip() == f"error: log {user / 'empty.parquet'} has no rows: there is nothing to ingest"


@pytest.mark.parametrize("algo", ["myopic", "popularity"])
def test_baselines_train_from_logs_and_serve(capsys, tracking_uri, tmp_path, algo):
    logs = tmp_path / "logs.parquet"
    assert (
        run_cli(
            capsys,
            "recsys",
            "simulate-logs",
            *ENV_SET,
            "--sessions",
            "60",
            "--num-envs",
            "60",
            "--out",
            str(logs),
            "--tracking-uri",
            tracking_uri,
        )[0]
        == 0
    )
    extra = ["--set", "epochs=1"] if algo == "myopic" else []
    code, out, err = run_cli(
        capsys, "recsys", "train", "--logs", str(logs), "--algo", algo, *extra, "--json", "--tracking-uri", tracking_uri
    )
    assert code == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    model = mlflow.pyfunc.load_model(res["model_uri"])
    frame = read_logs_frame(logs).head(3)
    pred = model.predict(frame[["user_features", "candidate_features", "candidate_doc_ids"]])
    assert np.stack(pred["slate"].to_numpy()).shape == (3, 2)
    if algo == "popularity":  # popularity by document id cannot rank candidates without their ids
        with pytest.raises(Exception, match="needs candidate doc ids"):
            model.predict(frame[["user_features", "candidate_features"]])


def _recsys_run_count(tracking_uri):
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.tracking.MlflowClient()
    exp = client.get_experiment_by_name("recsys")
    return 0 if exp is None else len(client.search_runs([exp.experiment_id]))


def test_bad_input_creates_no_run(capsys, tracking_uri, tmp_path):
    logs = tmp_path / "logs.parquet"
    assert (
        run_cli(
            capsys,
            "recsys",
            "simulate-logs",
            *ENV_SET,
            "--sessions",
            "20",
            "--num-envs",
            "20",
            "--out",
            str(logs),
            "--no-oracle",
            "--tracking-uri",
            tracking_uri,
        )[0]
        == 0
    )
    before = _recsys_run_count(tracking_uri)
    assert before == 1
    bad_commands = [
        (["train", "--logs", str(logs), "--algo", "nope"], "unknown recsys algorithm 'nope'"),
        (["train", "--logs", str(tmp_path / "missing.parquet"), "--algo", "bc"], "does not exist"),
        (["train", "--logs", str(logs), "--algo", "bc", "--set", "wrong_field=1"], "wrong_field"),
        (["train", "--logs", str(logs), "--algo", "popularity", "--set", "wrong_field=1"], "wrong_field"),
        (["train", "--env", "recsys/Nope-v0", "--algo", "slateq"], "unknown recommender simulator"),
        (
            ["ingest", "--logs", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "o.parquet")],
            "does not exist",
        ),
        (["evaluate", "--run", "0123456789abcdef", "--logs", str(logs)], "no run '0123456789abcdef'"),
    ]
    for argv, message in bad_commands:
        code, _, err = run_cli(capsys, "recsys", *argv, "--tracking-uri", tracking_uri)
        assert code == 2 and message in err, (argv, err)
        assert _recsys_run_count(tracking_uri) == before, argv
