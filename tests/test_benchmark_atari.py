"""The Atari benchmark: RL-Zoo's atari entries reach both sides as Zoo sets them, and a tiny run end to end."""

from __future__ import annotations

import importlib.util
import json

import pytest

from benchmarks import atari


def test_both_sides_get_rl_zoos_atari_entry():
    ppo, a2c, dqn = (atari.configs([algo], ["ALE/Pong-v5"], learning_starts=5_000)[0] for algo in ("ppo", "a2c", "dqn"))
    kw = atari.sb3_kwargs(ppo)
    assert (kw["n_steps"], kw["batch_size"], kw["n_epochs"], kw["ent_coef"], kw["vf_coef"]) == (128, 256, 4, 0.01, 0.5)
    assert kw["learning_rate"](1.0) == pytest.approx(2.5e-4) and kw["learning_rate"](0.5) == pytest.approx(1.25e-4)
    assert kw["clip_range"](0.5) == pytest.approx(0.05)
    assert "policy_kwargs" not in kw  # CnnPolicy's own: NatureCNN features shared, no hidden layer after them
    ours = atari.ours_config(ppo, seed=3)
    assert ours["hidden_sizes"] == () and ours.get("share_encoder") in (None, True) and ours["seed"] == 3
    assert (ours["lr"], ours["lr_schedule"], ours["clip_range"], ours["clip_schedule"]) == (
        2.5e-4,
        "linear",
        0.1,
        "linear",
    )

    from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

    kw = atari.sb3_kwargs(a2c)
    assert kw["policy_kwargs"] == dict(optimizer_class=RMSpropTFLike, optimizer_kwargs=dict(eps=1e-5))
    assert a2c.params["n_envs"] == 16 and atari.ours_config(a2c, 0)["n_envs"] == 16

    # the DQN warm-up override reaches both sides; RL-Zoo's own value stays in the preset
    assert atari.sb3_kwargs(dqn)["learning_starts"] == 5_000 == atari.ours_config(dqn, 0)["learning_starts"]
    assert dqn.preset.params["learning_starts"] == 100_000
    assert atari.sb3_kwargs(dqn)["buffer_size"] == 100_000 and atari.sb3_kwargs(dqn)["target_update_interval"] == 1000
    with pytest.raises(SystemExit):
        atari.parse_args(["--algos", "ppo"])  # no --steps


@pytest.mark.skipif(
    not (importlib.util.find_spec("ale_py") and importlib.util.find_spec("cv2")),
    reason="needs the atari extra and OpenCV (SB3's Atari wrappers): pip install 'deeprl-suite[atari,bench]'",
)
def test_a_tiny_side_by_side_run_writes_results_and_the_report(tmp_path):
    doc = tmp_path / "atari.md"
    argv = ["--algos", "ppo", "--steps", "1024", "--no-mlflow", "--doc", str(doc), "--out-dir", str(tmp_path)]
    assert atari.main(argv) == 0
    (results_file,) = tmp_path.glob("atari-*.json")
    runs = json.loads(results_file.read_text())["results"]
    assert sorted(r["impl"] for r in runs) == ["ours", "sb3"]
    assert all(
        r["steps"] >= 1024 and r["cpu_s"] > 0 and r["grad_steps"] == 16 for r in runs
    )  # 4 epochs × 4 minibatches
    report = doc.read_text()
    assert "| PPO | ALE/Pong-v5 | fp32 | 1,024 | 1 |" in report and "python -m benchmarks.atari --algos ppo" in report
    # re-rendered from the saved pieces
    assert atari.main(["--results", str(results_file), "--no-mlflow", "--doc", str(doc)]) == 0
    assert "| PPO | ALE/Pong-v5 | fp32 | 1,024 | 1 |" in doc.read_text()


@pytest.mark.skipif(
    not (importlib.util.find_spec("ale_py") and importlib.util.find_spec("cv2")),
    reason="needs the atari extra and OpenCV (SB3's Atari wrappers): pip install 'deeprl-suite[atari,bench]'",
)
@pytest.mark.parametrize("impl", ["ours", "sb3"])
def test_a_stopped_run_continues_from_its_checkpoint(tmp_path, monkeypatch, stop_at_first_checkpoint, impl):
    """A run stopped right after its first checkpoint (1,024 of 2,048 steps) continues from it: the same
    call trains the 1,024 steps that remain (not 2,048 again) and carries the first sitting's CPU time."""
    from benchmarks.common import Resume
    from tests.conftest import StopAfterCheckpoint

    saving = stop_at_first_checkpoint

    cfg = atari.configs(["ppo"], ["ALE/Pong-v5"])[0]
    resume = Resume(tmp_path / "resume", every=1024)
    with pytest.raises(StopAfterCheckpoint):
        atari.run_one(cfg, impl, 2048, 0, 0, resume)
    first = json.loads(resume.progress_path.read_text())
    assert first["steps"] == 1024 and first["cpu_s"] > 0
    saving()

    trained = []
    if impl == "ours":
        from core_rl.common.on_policy import OnPolicyAgent

        learn = OnPolicyAgent.learn
        monkeypatch.setattr(OnPolicyAgent, "learn", lambda a, n, **kw: trained.append(n) or learn(a, n, **kw))
    else:
        from stable_baselines3 import PPO

        learn = PPO.learn
        monkeypatch.setattr(
            PPO,
            "learn",
            lambda m, total_timesteps, **kw: trained.append(total_timesteps) or learn(m, total_timesteps, **kw),
        )
    r = atari.run_one(cfg, impl, 2048, 0, 0, resume)
    assert trained == [1024] and r.steps == 2048 and r.grad_steps == 32
    assert r.cpu_s > first["cpu_s"]
    resume.clear()
    assert not resume.directory.exists()


def test_each_of_our_modes_is_a_row_against_the_same_sb3_runs():
    """``--ours-modes fp32 bf16``: one row per mode of ours, both against SB3's (float32) runs; the bf16 mode
    is our config with ``encoder_dtype="bfloat16"``; results saved before modes read as fp32."""
    from benchmarks.common import SUMMARY_METRICS, summarize_by_mode, timed_result

    def run(impl: str, mode: str, cpu_s: float, score: float) -> atari.AtariRunResult:
        r = timed_result(
            atari.AtariRunResult,
            algo="ppo",
            env_id="ALE/Pong-v5",
            impl=impl,
            seed=0,
            steps=1000,
            wall_s=cpu_s,
            cpu_s=cpu_s,
            eval_returns=[],
            train_return_last100=score,
            episodes=1,
            build_s=0.0,
            eval_s=0.0,
            curve=[],
        )
        r.mode = mode
        return r

    runs = [run("ours", "fp32", 5.0, -20.0), run("ours", "bf16", 2.5, -19.0), run("sb3", "fp32", 5.0, -21.0)]
    rows = summarize_by_mode(runs, [("ppo", "ALE/Pong-v5")], list(atari.OUR_MODES), SUMMARY_METRICS)
    assert [(r["mode"], round(r["cpu_speed_ratio"], 2)) for r in rows] == [("fp32", 1.0), ("bf16", 2.0)]
    table = atari.markdown_table(rows)
    assert "| PPO | ALE/Pong-v5 | bf16 | 1,000 | 1 | -19.0 | -21.0 |" in table
    assert atari.OUR_MODES["bf16"] == {"encoder_dtype": "bfloat16"}
    assert atari.parse_args(["--steps", "10", "--ours-modes", "fp32", "bf16"]).ours_modes == ["fp32", "bf16"]
