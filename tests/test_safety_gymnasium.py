"""Safety-Gymnasium through its child processes: exact against in-process stepping, trainable from the
CLI, no orphans, one clear error. Needs ``make safety-env`` (the tests skip with the reason otherwise),
except the error-message tests, which run anywhere."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from core_rl.common.envs import make_vec_env
from core_rl.common.errors import EnvError
from safety.safety_gymnasium import (
    SERVER,
    TASKS,
    SafetyGymnasiumError,
    SafetyGymnasiumVectorEnv,
    safety_gymnasium_available,
    safety_python,
)
from tests.seeding import seed

REPO = Path(__file__).resolve().parents[1]
AVAILABLE, WHY = safety_gymnasium_available()
needs_venv = pytest.mark.skipif(not AVAILABLE, reason=WHY)

# Runs inside the Safety-Gymnasium venv: per base seed, one env stepped in-process with the given
# actions, warmed up by a reset with another seed than the server's, then episode k reset with the
# server's episode_seed(base, k); saves every step's numbers.
REFERENCE = textwrap.dedent(
    """
    import importlib.util, sys, warnings
    import numpy as np
    warnings.filterwarnings("ignore")
    import safety_gymnasium
    spec = importlib.util.spec_from_file_location("server", sys.argv[1])
    server = importlib.util.module_from_spec(spec); spec.loader.exec_module(server)
    task, horizon, seeds, actions, out = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
    seeds, actions = np.load(seeds), np.load(actions)
    rec = {k: [] for k in ("obs0", "obs", "reward", "cost", "terminated", "truncated", "final")}
    for i, base in enumerate(seeds):
        k = 0
        env = safety_gymnasium.make(task, max_episode_steps=horizon)
        env.reset(seed=server.WARM_SEED + 99)
        rec["obs0"].append(env.reset(seed=server.episode_seed(int(base), k))[0])
        obs, rew, cost, te_, tr_, fin = [], [], [], [], [], []
        for a in actions[:, i]:
            o, r, c, te, tr, _ = env.step(a)
            if te or tr:
                fin.append(o)
                k += 1
                o = env.reset(seed=server.episode_seed(int(base), k))[0]
            obs.append(o); rew.append(r); cost.append(c); te_.append(te); tr_.append(tr)
        for key, v in zip(("obs", "reward", "cost", "terminated", "truncated", "final"), (obs, rew, cost, te_, tr_, fin)):
            rec[key].append(np.asarray(v, dtype=np.float64))
    np.savez(out, **{k: np.stack(v) for k, v in rec.items()})
    """
)


# Runs inside the Safety-Gymnasium venv: per task, one env with the server's fast resets and one with
# the library's full rebuild, warmed up alike, reset with the same seeds and stepped with the same
# actions; every observation, reward, cost and flag must be equal bit for bit, and after every reset
# the two MjModels field for field (textures included). Counts how often the reference redrew a
# whole layout (RandomGenerator.sample_layout called again after a conflicted draw).
FAST_VS_FULL = textwrap.dedent(
    """
    import importlib.util, json, sys, warnings
    import numpy as np
    warnings.filterwarnings("ignore")
    import safety_gymnasium
    spec = importlib.util.spec_from_file_location("server", sys.argv[1])
    server = importlib.util.module_from_spec(spec); spec.loader.exec_module(server)
    tasks, episodes, steps = json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
    seeds = [server.episode_seed(b, k) for b, k in episodes]
    report = {}
    for task in tasks:
        full, fast = safety_gymnasium.make(task), safety_gymnasium.make(task)
        on = server.enable_fast_reset(fast)
        layouts = [0]
        if on:
            gen = full.unwrapped.task.random_generator
            sample = gen.sample_layout
            def counting(sample=sample):
                layouts[0] += 1
                return sample()
            gen.sample_layout = counting
        for env in (full, fast):
            env.reset(seed=server.WARM_SEED + 99)
        fast0, full0 = server.FastResetStats.fast, server.FastResetStats.full
        rng = np.random.default_rng(0)
        redrawn = []
        for s in seeds:
            layouts[0] = 0
            o_full, o_fast = full.reset(seed=s)[0], fast.reset(seed=s)[0]
            assert np.array_equal(o_full, o_fast), (task, s, "first observation")
            if on:
                redrawn.append(layouts[0] - 1)
                want = server.model_fingerprint(full.unwrapped.task.model)
                got = server.model_fingerprint(fast.unwrapped.task.model)
                assert want == got, (task, s, sorted(k for k in want if want[k] != got.get(k))[:8])
            for t in range(steps):
                a = rng.uniform(-1.3, 1.3, full.action_space.shape)  # some outside the box
                r_full, r_fast = full.step(a), fast.step(a)
                assert np.array_equal(r_full[0], r_fast[0]) and r_full[1:5] == r_fast[1:5], (task, s, t)
                if r_full[3] or r_full[4]:
                    break
        report[task] = {
            "fast_reset": on,
            "fast": server.FastResetStats.fast - fast0,
            "full": server.FastResetStats.full - full0,
            "redrawn": redrawn,
        }
    print(json.dumps(report))
    """
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait() is missing


# ---- errors that need no venv --------------------------------------------------------------------
def test_unknown_task_names_the_env_id():
    with pytest.raises(EnvError, match="safety-gymnasium/SafetyPointGoal9-v0"):
        make_vec_env("safety-gymnasium/SafetyPointGoal9-v0", 2)
    with pytest.raises(EnvError, match="unknown Safety-Gymnasium env id 'SafetyPointGol1-v0'"):
        SafetyGymnasiumVectorEnv("SafetyPointGol1-v0")


def test_missing_venv_says_make_safety_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFETY_VENV", str(tmp_path / "nowhere"))
    with pytest.raises(EnvError, match=r"make safety-env") as err:
        make_vec_env("safety-gymnasium/SafetyPointGoal1-v0", 2, seed=0)
    assert "\n" not in str(err.value)


def test_a_child_that_crashes_gives_one_line_with_its_stderr(tmp_path, monkeypatch):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".safety-installed-test").touch()
    python = venv / "bin" / "python"
    python.write_text(
        "#!/bin/sh\necho 'Traceback (most recent call last):' >&2\necho 'RuntimeError: boom 42' >&2\nexit 3\n"
    )
    python.chmod(0o755)
    monkeypatch.setenv("SAFETY_VENV", str(venv))
    with pytest.raises(SafetyGymnasiumError) as err:
        SafetyGymnasiumVectorEnv("SafetyPointGoal1-v0", num_envs=2, n_workers=2)
    msg = str(err.value)
    assert "\n" not in msg and "died while starting" in msg and "exit code 3" in msg and "RuntimeError: boom 42" in msg


# ---- the real thing ------------------------------------------------------------------------------
@needs_venv
def test_task_list_is_the_venvs_state_based_registry():
    code = (
        "import warnings; warnings.filterwarnings('ignore'); import safety_gymnasium, gymnasium, json; "
        "print(json.dumps(sorted(k for k in gymnasium.envs.registry if k.startswith('Safety'))))"
    )
    out = subprocess.run([str(safety_python()), "-I", "-c", code], capture_output=True, text=True, check=True)
    ids = json.loads(out.stdout.strip().splitlines()[-1])
    state_based = [i for i in ids if not any(s in i for s in ("Vision", "Debug", "Gymnasium"))]
    assert sorted(TASKS) == state_based


@needs_venv
def test_bridge_steps_equal_in_process_stepping_bit_for_bit(tmp_path):
    task, horizon, n, T = "SafetyPointGoal1-v0", 15, 2, 25  # an autoreset per env, to the prepared spare
    seeds = np.array([7, 1234], dtype=np.int64)
    actions = np.random.default_rng(0).uniform(-1.3, 1.3, size=(T, n, 2))  # some outside the box
    np.save(tmp_path / "seeds.npy", seeds)
    np.save(tmp_path / "actions.npy", actions)
    ref = subprocess.Popen(
        [str(safety_python()), "-I", "-c", REFERENCE, str(SERVER), task, str(horizon)]
        + [str(tmp_path / "seeds.npy"), str(tmp_path / "actions.npy"), str(tmp_path / "ref.npz")],
        stderr=subprocess.PIPE,
    )
    env = SafetyGymnasiumVectorEnv(task, num_envs=n, n_workers=2, max_episode_steps=horizon)
    pids = env.child_pids
    assert env.n_workers == 2 and env.metadata["autoreset_mode"].value == "SameStep"
    assert env.fast_reset  # the default: the reference resets by the full rebuild, the children do not
    obs0, _ = env.reset(seed=seeds.tolist())
    rec = {k: [] for k in ("obs", "reward", "cost", "terminated", "truncated")}
    finals: list[list[np.ndarray]] = [[] for _ in range(n)]
    for t in range(T):
        obs, reward, terminated, truncated, info = env.step(actions[t])
        for key, v in zip(rec, (obs, reward, info["cost"], terminated, truncated)):
            rec[key].append(np.asarray(v, dtype=np.float64))
        done = terminated | truncated
        if done.any():
            assert np.array_equal(info["_final_obs"], done) and np.array_equal(info["final_info"]["_cost"], done)
            assert np.array_equal(info["final_info"]["cost"][done], info["cost"][done])
            for i in np.flatnonzero(done):
                finals[i].append(info["final_obs"][i])
    env.close()
    assert ref.wait(timeout=120) == 0, ref.stderr.read().decode()[-2000:]
    assert not any(_alive(p) for p in pids)
    expect = np.load(tmp_path / "ref.npz")
    assert np.array_equal(obs0, expect["obs0"])
    for key, v in rec.items():
        assert np.array_equal(np.stack(v, 1), expect[key]), key  # [n, T]: bit for bit
    assert np.array_equal(np.stack([np.stack(f) for f in finals]), expect["final"])
    assert expect["truncated"].sum() == n
    assert not np.array_equal(obs0[0], obs0[1])  # per-env seeds: different layouts


@needs_venv
@pytest.mark.slow
def test_fast_resets_equal_the_full_rebuild_bit_for_bit():
    nav = ["SafetyPointGoal1-v0", "SafetyCarGoal1-v0", "SafetyPointButton1-v0"]
    tasks = nav + ["SafetyHalfCheetahVelocity-v1"]
    # (base seed, episode): episode 0 of base 7 is a PointButton1 layout drawn 72 times before one
    # fitted (any seed redraws most Button layouts; this one makes the case certain)
    episodes = [(7, 0), (seed(3), 1), (seed(3), 2)]
    out = subprocess.run(
        [str(safety_python()), "-I", "-c", FAST_VS_FULL, str(SERVER), json.dumps(tasks), json.dumps(episodes), "120"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    for task in nav:  # every episode's reset took the light compile, none fell back
        assert report[task]["fast_reset"] and report[task] == {**report[task], "fast": 3, "full": 0}, report[task]
    assert report["SafetyPointButton1-v0"]["redrawn"][0] > 0  # a layout that needed resampling
    assert report["SafetyHalfCheetahVelocity-v1"]["fast_reset"] is False  # no compile to replace


@needs_venv
def test_ppo_lag_through_the_cli_records_return_cost_and_lambda(tmp_path):
    env = {**os.environ, "DEEPRL_HOME": str(tmp_path / "store"), "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "pipelines", "train", "--algo", "ppo_lag"]
    cmd += ["--env", "safety-gymnasium/SafetyPointGoal1-v0", "--steps", "1000", "--no-model", "--json"]
    cmd += ["--set", "n_envs=1", "n_steps=1000", "batch_size=500", "n_epochs=1", "cost_limit=25"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    run_id = json.loads(out.stdout.strip().splitlines()[-1])["run_id"]
    db = sqlite3.connect(tmp_path / "store" / "mlflow.db")
    rows = db.execute("select key, value from metrics where run_uuid = ?", (run_id,)).fetchall()
    metrics = dict(rows)
    for key in ("episode_return", "episode_cost", "lambda", "cumulative_cost"):
        assert key in metrics and np.isfinite(metrics[key]), key
    assert metrics["episodes"] == 1 and metrics["episode_length"] == 1000  # Safety-Gymnasium's 1000-step episodes
    assert metrics["episode_return"] != 0.0  # the real task's goal-distance reward reached the learner


@needs_venv
@pytest.mark.parametrize("how", ["SIGKILL to the learner", "Ctrl-C (SIGINT to the process group)"])
def test_killing_the_learner_leaves_no_child(how):
    code = (
        # Ctrl-C as in a terminal, even where pytest itself runs with SIGINT ignored (a `nohup … &` job)
        "import signal, sys, time; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from safety.safety_gymnasium import SafetyGymnasiumVectorEnv as V; "
        "env = V('SafetyPointGoal1-v0', num_envs=2, n_workers=2); print(*env.child_pids, flush=True); time.sleep(60)"
    )
    learner = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        start_new_session=True,  # its own process group, as a shell job has
    )
    pids = [int(p) for p in learner.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    if how.startswith("SIGKILL"):
        learner.send_signal(signal.SIGKILL)
    else:
        os.killpg(learner.pid, signal.SIGINT)  # the children get it too, and leave it to the learner
    learner.wait(timeout=60)  # generous: on a loaded 2-core machine the exit (closing the envs) can take a while
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)


@needs_venv
def test_a_child_killed_mid_run_gives_one_clear_error():
    env = SafetyGymnasiumVectorEnv("SafetyPointGoal1-v0", num_envs=2, n_workers=2, spare_envs=False, fast_reset=False)
    assert env.fast_reset is False  # the switch reaches the children
    dead = env._bridge.children[0].proc
    try:
        dead.send_signal(signal.SIGKILL)
        dead.wait(timeout=10)
        with pytest.raises(SafetyGymnasiumError) as err:
            env.step(np.zeros((2, 2)))  # starts the episodes first: the reset meets the dead child
        msg = str(err.value)
        assert "\n" not in msg and f"pid {dead.pid}" in msg and "died while resetting" in msg and "exit code -9" in msg
    finally:
        env.close()
    assert not any(_alive(p) for p in env.child_pids)
