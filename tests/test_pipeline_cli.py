"""The CLI and the MLflow pipeline: runs record what they should, crashes are FAILED and resume,
bad input gets one clear message and a non-zero exit."""

import json
import os
import stat

import mlflow
import pytest

from pipelines.cli import main
from pipelines.train import evaluate, train

FAST = ["--set", "n_steps=32", "batch_size=128", "n_epochs=4"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_records_a_complete_run_and_eval_reloads_it(capsys, tracking_uri, tmp_path):
    code, out, err = run_cli(
        capsys,
        "train",
        "--algo",
        "ppo",
        "--env",
        "CartPole-v1",
        "--steps",
        "3000",
        "--seed",
        "1",
        "--json",
        "--tracking-uri",
        tracking_uri,
        *FAST,
    )
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert {"run_id", "mean_return", "model_uri"} <= result.keys()
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.tracking.MlflowClient()
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["n_steps"] == "32" and run.data.params["seed"] == "1"
    assert run.data.params["algo"] == "ppo"
    for metric in ("episode_return", "policy_loss", "value_loss", "entropy", "approx_kl", "env_steps_per_s"):
        assert metric in run.data.metrics, metric
    assert len(client.get_metric_history(result["run_id"], "episode_return")) >= 5
    artifacts = {a.path for a in client.list_artifacts(result["run_id"])}
    assert {"config.json", "checkpoint", "plots"} <= artifacts
    assert [a.path for a in client.list_artifacts(result["run_id"], "plots")] == ["plots/learning_curve.png"]
    # the logged model is a pyfunc: observations in, actions out
    model = mlflow.pyfunc.load_model(result["model_uri"])
    import numpy as np

    actions = model.predict(np.zeros((3, 4), dtype=np.float32))
    assert actions.shape == (3,) and set(actions.tolist()) <= {0, 1}
    # eval by run and by model URI give the same deterministic result at the same seed
    code, out, err = run_cli(
        capsys,
        "eval",
        "--run",
        result["run_id"],
        "--episodes",
        "3",
        "--seed",
        "5",
        "--json",
        "--tracking-uri",
        tracking_uri,
    )
    assert code == 0, err
    by_run = json.loads(out)
    by_model = evaluate(model_uri=result["model_uri"], episodes=3, seed=5, tracking_uri=tracking_uri)
    assert by_run["returns"] == by_model["returns"]
    assert "eval_mean_return" in client.get_run(result["run_id"]).data.metrics


def test_crashed_run_is_failed_keeps_its_records_and_resumes(tracking_uri, monkeypatch):
    from core_rl.trust_region.ppo import PPO

    real_update = PPO.update
    calls = {"n": 0}

    def crashing_update(self, batch):
        calls["n"] += 1
        if calls["n"] == 12:
            raise RuntimeError("simulated crash")
        return real_update(self, batch)

    monkeypatch.setattr(PPO, "update", crashing_update)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(
            "ppo",
            "CartPole-v1",
            256 * 20,
            config={"n_steps": 32, "batch_size": 128, "n_epochs": 2},
            tracking_uri=tracking_uri,
            log_model=False,
            checkpoint_every=5,
        )
    client = mlflow.tracking.MlflowClient()
    run = client.search_runs(client.get_experiment_by_name("deeprl").experiment_id)[0]
    assert run.info.status == "FAILED"
    assert "simulated crash" in run.data.tags["failure"]
    assert run.data.metrics["episode_return"] > 0  # what was logged is kept
    assert client.get_metric_history(run.info.run_id, "policy_loss")[-1].step == 11 * 256

    monkeypatch.setattr(PPO, "update", real_update)
    result = train("ppo", "CartPole-v1", None, resume=run.info.run_id, tracking_uri=tracking_uri, log_model=False)
    assert result.run_id == run.info.run_id
    assert result.steps == 256 * 20
    resumed = client.get_run(run.info.run_id)
    assert resumed.info.status == "FINISHED"
    assert int(resumed.data.tags["resumed_from_step"]) == 11 * 256
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "policy_loss")]
    assert steps == sorted(steps) and steps[-1] == 256 * 20


def test_cli_resume_continues_to_the_runs_total(capsys, tracking_uri, tmp_path):
    code, out, _ = run_cli(
        capsys,
        "train",
        "--algo",
        "a2c",
        "--env",
        "CartPole-v1",
        "--steps",
        "800",
        "--json",
        "--no-model",
        "--tracking-uri",
        tracking_uri,
    )
    run_id = json.loads(out)["run_id"]
    code, out, err = run_cli(
        capsys,
        "train",
        "--algo",
        "a2c",
        "--resume",
        run_id,
        "--steps",
        "1600",
        "--json",
        "--no-model",
        "--tracking-uri",
        tracking_uri,
    )
    assert code == 0, err
    assert json.loads(out)["steps"] >= 800


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--algo", "nope", "--env", "CartPole-v1"], "unknown algorithm 'nope'"),
        (["train", "--algo", "ppo", "--env", "NoSuchEnv-v0", "--steps", "10"], "unknown env id 'NoSuchEnv-v0'"),
        (["train", "--algo", "ppo", "--env", "CartPole-v1", "--set", "lr=abc"], "config field 'lr'"),
        (["train", "--algo", "ppo", "--env", "CartPole-v1", "--set", "lrr=0.1"], "config field 'lrr': unknown field"),
        (["train", "--algo", "ppo", "--env", "CartPole-v1", "--steps", "0"], "--steps must be positive"),
        (["train", "--algo", "ppo", "--env", "CartPole-v1", "--set", "n_steps=-3"], "config field 'n_steps'"),
        (["train", "--algo", "sac", "--env", "Pendulum-v1", "--set", "hidden_sizes=[64,0]"], "'hidden_sizes.1'"),
        (["train", "--algo", "ppo", "--env", "CartPole-v1", "--set", "device=banana"], "config field 'device'"),
        (
            ["train", "--algo", "ppo_lag", "--env", "SafetyPointGoal1-v0", "--steps", "10"],
            "tasks are 'safety-gymnasium/SafetyPointGoal1-v0'",
        ),
        (["eval", "--run", "0123456789abcdef", "--episodes", "2"], "has no checkpoint"),
    ],
)
def test_bad_input_gets_one_clear_message(capsys, tracking_uri, argv, message):
    code, out, err = run_cli(capsys, *argv, "--tracking-uri", tracking_uri)
    assert code == 2
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err


def test_action_space_mismatch_is_named(capsys, tracking_uri):
    code, _, err = run_cli(
        capsys, "train", "--algo", "ppo", "--env", "Blackjack-v1", "--steps", "10", "--tracking-uri", tracking_uri
    )
    assert code == 2 and "observation space" in err


def test_config_file_errors(capsys, tracking_uri, tmp_path):
    bad = tmp_path / "cfg.json"
    bad.write_text('{"n_steps": "many"}')
    code, _, err = run_cli(
        capsys, "train", "--algo", "ppo", "--env", "CartPole-v1", "--config", str(bad), "--tracking-uri", tracking_uri
    )
    assert code == 2 and "'n_steps'" in err
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    code, _, err = run_cli(
        capsys,
        "train",
        "--algo",
        "ppo",
        "--env",
        "CartPole-v1",
        "--config",
        str(broken),
        "--tracking-uri",
        tracking_uri,
    )
    assert code == 2 and "cannot be parsed" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_store_nonroot(capsys, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    code, _, err = run_cli(
        capsys, "train", "--algo", "ppo", "--env", "CartPole-v1", "--tracking-uri", f"sqlite:///{ro}/sub/mlflow.db"
    )
    assert code == 2 and "not writable" in err


def test_unwritable_store(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")  # a file where the store's folder should be: unwritable even for root
    code, _, err = run_cli(
        capsys, "train", "--algo", "ppo", "--env", "CartPole-v1", "--tracking-uri", f"sqlite:///{blocker}/mlflow.db"
    )
    assert code == 2 and "not writable" in err and "Traceback" not in err


def test_algos_lists_every_registered_algorithm(capsys):
    from core_rl.registry import ALGORITHMS

    code, out, _ = run_cli(capsys, "algos", "--json")
    rows = json.loads(out)
    assert code == 0 and {r["name"] for r in rows} == set(ALGORITHMS)
    for row in rows:  # every listed module really holds its class
        assert ALGORITHMS[row["name"]].cls.name == row["name"]


def test_experiment_command_logs_plot_and_result(capsys, tracking_uri):
    code, out, err = run_cli(
        capsys,
        "experiment",
        "compounding_error",
        "--seed",
        "0",
        "--json",
        "--set",
        "horizons=[5,10]",
        "label_budget=200",
        "n_eval_episodes=50",
        "dagger_iterations=2",
        "--tracking-uri",
        tracking_uri,
    )
    assert code == 0, err
    payload = json.loads(out.strip().splitlines()[-1])
    client = mlflow.tracking.MlflowClient()
    arts = {a.path for a in client.list_artifacts(payload["run_id"])}
    assert "result.json" in arts
    plots = [a.path for a in client.list_artifacts(payload["run_id"], "plots")]
    assert plots and all(p.endswith(".png") for p in plots)
    code, _, err = run_cli(
        capsys, "experiment", "compounding_error", "--set", "nonsense=1", "--tracking-uri", tracking_uri
    )
    assert code == 2 and "no parameter 'nonsense'" in err


def test_a_run_where_no_training_episode_finished_reports_an_evaluated_return(capsys, tracking_uri):
    """Pendulum's episodes last 200 steps: 2 envs × 64 steps finish none. The run reports the return of
    evaluation episodes of the trained policy (a finite number, its source named), never null (issue 18)."""
    argv = ["train", "--algo", "ppo", "--env", "Pendulum-v1", "--steps", "64", "--no-model"]
    argv += ["--tracking-uri", tracking_uri, "--set", "n_envs=2", "n_steps=32", "batch_size=32", "n_epochs=1"]
    code, out, err = run_cli(capsys, *argv, "--json")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["mean_return_source"] == "evaluation"
    assert isinstance(result["mean_return"], float) and -200 * 17 <= result["mean_return"] <= 0  # r ∈ [-16.3, 0]
    mlflow.set_tracking_uri(tracking_uri)
    run = mlflow.tracking.MlflowClient().get_run(result["run_id"])
    assert run.data.metrics["mean_return"] == result["mean_return"]
    assert run.data.tags["mean_return_source"] == "evaluation"
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "no training episode finished in 64 steps" in out and "nan" not in out
    # with finished training episodes the return is theirs, as before
    code, out, err = run_cli(
        capsys,
        "train",
        "--algo",
        "ppo",
        "--env",
        "CartPole-v1",
        "--steps",
        "512",
        "--json",
        "--no-model",
        "--tracking-uri",
        tracking_uri,
        *FAST,
    )
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["mean_return_source"] == "training"


def test_algos_say_where_each_agent_is_known_to_learn(capsys):
    """The `learns` column names a task and a budget; the RL² entry is the budget its default-config test uses."""
    from core_rl.meta.rl2 import KNOWN_TO_LEARN

    code, out, _ = run_cli(capsys, "algos", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0
    for name in (
        "ppo",
        "dqn",
        "sac",
        "rl2",
        "ppo_lag",
        "slateq",
        "bonus_ppo",
        "bonus_a2c",
        "pid_lag",
        "trpo_lag",
        "saute_ppo",
    ):
        assert " in " in rows[name]["learns"] and "k steps" in rows[name]["learns"], rows[name]
    assert f"{KNOWN_TO_LEARN['rl2']['steps'] // 1000}k steps" in rows["rl2"]["learns"]
    assert KNOWN_TO_LEARN["rl2"]["env"] in rows["rl2"]["learns"]
    assert all(r["learns"] == "" for r in rows.values() if r["kind"] == "program")
    code, out, _ = run_cli(capsys, "algos")
    assert "[learns: CartPole-v1" in out and "docs/algorithms.md" in out


def test_a_resume_refuses_another_env_and_changed_settings(capsys, tracking_uri):
    """`--resume RUN --set lr=0.5` trained on with the run's own lr and said nothing (until 2026-12-08), and
    `--resume RUN --env Acrobot-v1` failed deep in load_state_dict; both are now one line, the run untouched."""
    common = ["--json", "--no-model", "--tracking-uri", tracking_uri]
    code, out, _ = run_cli(capsys, "train", "--algo", "a2c", "--env", "CartPole-v1", "--steps", "400", *common)
    run_id = json.loads(out)["run_id"]
    resume = ["train", "--algo", "a2c", "--resume", run_id, "--steps", "800", *common]
    code, _, err = run_cli(capsys, *resume, "--env", "Acrobot-v1")
    assert code == 2 and "trained on CartPole-v1, not Acrobot-v1" in err
    code, _, err = run_cli(capsys, *resume, "--set", "lr=0.5")
    assert code == 2 and "a resumed run keeps the config it started with: lr would change (lr=0.0007" in err
    code, out, err = run_cli(capsys, *resume, "--set", "lr=7e-4")  # the run's own value: allowed
    assert code == 0, err
    assert json.loads(out)["steps"] >= 800
