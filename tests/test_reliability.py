"""Every way a run can end leaves a correct, resumable record; no checkpoint or evaluation is silently wrong.

* SIGTERM / SIGINT: the run ends KILLED with its checkpoint, the resume command is printed, the exit
  status is 143 / 130, and ``--resume`` continues the metric history with no overlap or shifted grid.
* Bad input creates no run at all.
* Tampered checkpoints raise ``CheckpointError`` naming the cause; ``Agent.load`` works without the
  env (custom envs too) and leaves the caller's RNG alone; evaluation never steps the user's env.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from core_rl import PPO, Agent
from core_rl.common.errors import CheckpointError, ConfigError, EnvError, SpaceError
from core_rl.q_learning.dqn import DQN

REPO = Path(__file__).resolve().parents[1]


def _runs(uri: str) -> list:
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(search_all_experiments=True, output_format="list")


def _cli(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(DEEPRL_HOME=str(tmp_path / "store"), PYTHONPATH=str(REPO), MPLBACKEND="Agg")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _wait_for_metrics(uri: str, n: int, proc: subprocess.Popen, timeout: float = 240.0) -> str:
    """The run id once the (only) run has logged ``n`` points of ``episode_return``."""
    import mlflow

    db = Path(uri[len("sqlite:///") :])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if not db.exists():  # the CLI publishes the store whole; opening it earlier would create it here
            time.sleep(0.5)
            continue
        try:
            runs = _runs(uri)
            if runs:
                history = mlflow.tracking.MlflowClient().get_metric_history(runs[0].info.run_id, "episode_return")
                if len(history) >= n:
                    return runs[0].info.run_id
        except Exception:  # the store is still being created
            pass
        time.sleep(0.5)
    proc.kill()
    raise AssertionError("the training run logged no metrics in time")


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_ends_run_killed_with_checkpoint_and_resume_continues_metrics(tmp_path, signum, code):
    import mlflow

    env = _env(tmp_path)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    # 2,048 env steps per iteration; a budget it cannot finish before the signal
    train = [
        "train",
        "--algo",
        "ppo",
        "--env",
        "CartPole-v1",
        "--steps",
        "2000000",
        "--no-model",
        "--set",
        "n_envs=4",
        "n_steps=512",
        "n_epochs=1",
    ]
    proc = _cli(train, env)
    run_id = _wait_for_metrics(uri, 2, proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert run_id in err and f"--resume {run_id}" in err  # the exact resume command
    client = mlflow.tracking.MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["failure"] == signal.Signals(signum).name
    assert {a.path for a in client.list_artifacts(run_id)} >= {"checkpoint", "plots", "config.json"}
    before = [m.step for m in client.get_metric_history(run_id, "episode_return")]

    resumed = _cli(
        ["train", "--algo", "ppo", "--resume", run_id, "--steps", str(before[-1] + 3 * 2048), "--no-model", "--json"],
        env,
    )
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["steps"] == before[-1] + 3 * 2048
    steps = [m.step for m in client.get_metric_history(run_id, "episode_return")]
    assert steps == list(range(2048, before[-1] + 3 * 2048 + 1, 2048))  # continuous: no overlap, same grid
    assert client.get_run(run_id).info.status == "FINISHED"
    assert client.get_run(run_id).data.tags["resumed_from_step"] == str(before[-1])


def test_bad_inputs_create_no_run(tracking_uri, capsys):
    from pipelines.cli import main

    main(
        [
            "train",
            "--algo",
            "ppo",
            "--env",
            "CartPole-v1",
            "--steps",
            "64",
            "--no-model",
            "--set",
            "n_envs=1",
            "n_steps=64",
            "n_epochs=1",
            "--tracking-uri",
            tracking_uri,
        ]
    )
    assert len(_runs(tracking_uri)) == 1
    bad = [
        ["--algo", "dqn", "--env", "Pendulum-v1"],  # action space DQN cannot handle
        ["--algo", "ppo", "--env", "NoSuchEnv-v0"],  # unknown env id
        ["--algo", "no_such_algo", "--env", "CartPole-v1"],  # unknown algorithm
        ["--algo", "ppo", "--env", "CartPole-v1", "--set", "n_stepz=3"],  # unknown config field
        ["--algo", "ppo", "--env", "CartPole-v1", "--set", "lr=-1"],
    ]  # out of range
    for args in bad:
        assert main(["train", *args, "--steps", "100", "--tracking-uri", tracking_uri]) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error:")
    finished = _runs(tracking_uri)
    assert len(finished) == 1
    run_id = finished[0].info.run_id
    # a FINISHED run resumes only with an explicit larger total, and says so
    assert main(["train", "--algo", "ppo", "--resume", run_id, "--tracking-uri", tracking_uri]) == 2
    assert "FINISHED" in capsys.readouterr().err
    assert main(["train", "--algo", "ppo", "--resume", "0123456789abcdef", "--tracking-uri", tracking_uri]) == 2
    assert len(_runs(tracking_uri)) == 1 and len(_runs(tracking_uri)[0].data.params) > 0


def test_tune_run_ends_its_study_run(tmp_path, monkeypatch):
    from autotune.run import tune_run

    monkeypatch.setenv("DEEPRL_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    space = {"x": {"type": "float", "low": -2.0, "high": 2.0}}
    result = tune_run(lambda p: (p["x"] - 1) ** 2, space, sampler="random", trials=4, seed=0)
    runs = {r.info.run_id: r for r in _runs(f"sqlite:///{tmp_path / 'data' / 'mlflow.db'}")}
    assert runs[result.mlflow_run_id].info.status == "FINISHED"
    assert all(r.info.status != "RUNNING" for r in runs.values())

    def failing(p):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tune_run(failing, space, sampler="random", trials=2, seed=0, study_name="stopped")
    runs = _runs(f"sqlite:///{tmp_path / 'data' / 'mlflow.db'}")
    assert sorted(r.info.status for r in runs if r.data.tags.get("autotune.kind") == "study") == ["FINISHED", "KILLED"]


# ---- checkpoints ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ppo_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "ppo.pt"
    PPO("CartPole-v1", {"n_envs": 2, "n_steps": 64, "n_epochs": 1}).learn(128).save(path)
    return path


def _tamper(src: Path, dst: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    payload = torch.load(src, weights_only=True)
    edit(payload)
    torch.save(payload, dst)
    return dst


def test_tampered_checkpoints_raise_checkpoint_error_naming_the_cause(ppo_checkpoint, tmp_path):
    def drop_module(p):  # type: ignore[no-untyped-def]
        p["state"].pop(next(iter(p["state"])))

    def nan_weight(p):  # type: ignore[no-untyped-def]
        sd = p["state"][next(iter(p["state"]))]
        key = next(k for k, v in sd.items() if torch.is_tensor(v) and v.is_floating_point())
        sd[key][..., 0] = float("nan")

    def other_shape(p):  # type: ignore[no-untyped-def]
        p["config"]["hidden_sizes"] = [32, 32]

    def garbage(p):  # type: ignore[no-untyped-def]
        p["format"] = 99

    for edit, words in [
        (drop_module, "lacks module"),
        (nan_weight, "NaN"),
        (other_shape, "does not fit"),
        (garbage, "not a deeprl-suite checkpoint"),
    ]:
        bad = _tamper(ppo_checkpoint, tmp_path / f"{edit.__name__}.pt", edit)
        with pytest.raises(CheckpointError, match=words):
            Agent.load(bad)
    (tmp_path / "truncated.pt").write_bytes(ppo_checkpoint.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="cannot be read"):
        Agent.load(tmp_path / "truncated.pt")
    Agent.load(ppo_checkpoint)  # the untouched one still loads


def test_load_leaves_the_callers_rng_alone_and_resume_continues_its_stream(ppo_checkpoint):
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    Agent.load(ppo_checkpoint)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


class _Corridor(gym.Env):
    """A custom, unregistered env: walk right to the goal."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.pos = 0

    def reset(self, *, seed=None, options=None):  # type: ignore[no-untyped-def]
        super().reset(seed=seed)
        self.pos = 0
        return self._obs(), {}

    def _obs(self) -> np.ndarray:
        return np.array([self.pos / 5.0, 1.0], dtype=np.float32)

    def step(self, action):  # type: ignore[no-untyped-def]
        self.pos = max(0, self.pos + (1 if int(action) == 1 else -1))
        done = self.pos >= 5
        return self._obs(), float(done), done, False, {}


def test_load_without_env_works_for_custom_envs(tmp_path):
    agent = PPO(gym.wrappers.TimeLimit(_Corridor(), 20), {"n_envs": 2, "n_steps": 32, "n_epochs": 1})
    agent.learn(64)
    obs = np.array([[0.2, 1.0], [0.6, 1.0]], dtype=np.float32)
    expected = agent.predict(obs)
    agent.save(tmp_path / "c.pt")
    loaded = Agent.load(tmp_path / "c.pt")  # no env= : the stored spaces stand in
    assert loaded.observation_space == agent.observation_space and loaded.action_space == agent.action_space
    np.testing.assert_array_equal(loaded.predict(obs), expected)
    with pytest.raises(EnvError, match="loaded without its env"):
        loaded.evaluate(2)
    given = loaded.evaluate(2, env=lambda: gym.wrappers.TimeLimit(_Corridor(), 20))  # given an env, it runs
    assert 5 <= given["mean_length"] <= 20


def test_evaluate_never_touches_the_users_env_instance():
    user_env = gym.make("CartPole-v1")
    agent = PPO(user_env, {"n_envs": 1, "n_steps": 32, "n_epochs": 1})
    agent.learn(32)
    state = np.array(user_env.unwrapped.state, copy=True)
    agent.evaluate(3)
    np.testing.assert_array_equal(user_env.unwrapped.state, state)  # not stepped
    agent.learn(32)  # and not closed: training goes on
    assert agent.num_timesteps == 64


def test_replay_buffer_travels_with_the_checkpoint(tmp_path):
    agent = DQN("CartPole-v1", {"learning_starts": 64, "buffer_size": 2000, "batch_size": 32})
    agent.learn(300)
    agent.save(tmp_path / "with.pt", include_replay=True)
    agent.save(tmp_path / "without.pt")
    assert (tmp_path / "with.pt").stat().st_size > (tmp_path / "without.pt").stat().st_size + agent.replay_nbytes() // 2
    loaded = Agent.load(tmp_path / "with.pt")
    assert len(loaded.replay) == len(agent.replay) == 300
    for key in ("obs", "actions", "rewards", "next_obs", "terminated"):
        assert torch.equal(getattr(loaded.replay, key), getattr(agent.replay, key))
    assert (loaded.gradient_updates, loaded.num_timesteps, loaded.episodes_done) == (
        agent.gradient_updates,
        agent.num_timesteps,
        agent.episodes_done,
    )
    # the buffer's sampling stream continues too
    assert torch.equal(loaded.replay.sample_indices(8)[0], agent.replay.sample_indices(8)[0])
    assert len(Agent.load(tmp_path / "without.pt").replay) == 0


def test_errors_are_the_suites_own():
    with pytest.raises(SpaceError):
        DQN("Pendulum-v1")
    with pytest.raises(ConfigError, match="n_stepz"):
        PPO("CartPole-v1", {"n_stepz": 3})


def test_benchmark_exit_status_follows_the_signal():
    """A benchmark stopped by SIGTERM exits 143 and by Ctrl-C 130 (its run already ended KILLED)."""
    import signal

    from benchmarks.common import run_main
    from core_rl.common.errors import RunInterrupted

    def stopped_by(signum):
        def main():
            raise RunInterrupted(signum)

        return main

    assert run_main(stopped_by(signal.SIGTERM)) == 143
    assert run_main(stopped_by(signal.SIGINT)) == 130
    assert run_main(lambda: None) == 0 and run_main(lambda: 2) == 2
