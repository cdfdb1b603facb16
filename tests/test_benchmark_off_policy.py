"""The off-policy benchmark's hyperparameter mapping and bookkeeping (no training here)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks.common import jsonable, load_results
from benchmarks.off_policy import OffPolicyRunResult, summarize_runs
from benchmarks.peers import CLASSIC_ENVS, HParams, field_mapping, ours_config, sb3_kwargs, zoo_configs
from core_rl.registry import get_algo


def test_every_sb3_field_is_mapped_and_our_config_accepts_it():
    for hp in zoo_configs():
        rows = field_mapping(hp)
        assert {r.sb3 for r in rows} >= set(hp.params)
        cfg = get_algo(hp.algo).cls.config_cls.model_validate(ours_config(hp, seed=3))  # extra=forbid
        p = hp.params
        assert (cfg.lr, cfg.batch_size, cfg.buffer_size, cfg.gamma) == (
            p["learning_rate"],
            p["batch_size"],
            p["buffer_size"],
            p["gamma"],
        )
        assert (cfg.learning_starts, cfg.train_freq, cfg.gradient_steps, cfg.tau) == (
            p["learning_starts"],
            p["train_freq"],
            p["gradient_steps"],
            p["tau"],
        )
        assert cfg.hidden_sizes == tuple(p["net_arch"]) and cfg.seed == 3


def test_zoo_values_reach_both_sides():
    by_algo = {hp.algo: hp for hp in zoo_configs() if hp.env_id in CLASSIC_ENVS}  # the MuJoCo ones come after
    dqn = ours_config(by_algo["dqn"], 0)
    assert dqn["lr"] == 2.3e-3 and dqn["exploration_final_eps"] == 0.04
    # SB3's DQN counts its target interval in env steps; ours counts the same (tests/test_presets.py)
    assert (dqn["target_update_interval"], dqn["target_update_unit"]) == (10, "env_steps")
    assert dqn["init"] == "torch_default"  # SB3's QNetwork keeps PyTorch's nn.Linear init
    td3 = sb3_kwargs(by_algo["td3"])
    assert td3["gamma"] == 0.98 and td3["learning_starts"] == 10_000 and td3["policy_kwargs"]["net_arch"] == [400, 300]
    assert np.allclose(td3["action_noise"]._sigma, 0.1)
    assert ours_config(by_algo["td3"], 0)["noise_std"] == 0.1
    assert ours_config(by_algo["td3"], 0)["init"] == ours_config(by_algo["sac"], 0)["init"] == "torch_default"
    ddpg, ddpg_ours = sb3_kwargs(by_algo["ddpg"]), ours_config(by_algo["ddpg"], 0)
    assert ddpg["gamma"] == 0.98 and ddpg["learning_starts"] == 10_000 and np.allclose(ddpg["action_noise"]._sigma, 0.1)
    assert (ddpg_ours["noise_std"], ddpg_ours["hidden_sizes"]) == (0.1, (400, 300))
    assert ddpg_ours.get("n_critics", 1) == 1 and ddpg_ours.get("policy_delay", 1) == 1  # SB3's DDPG: one critic
    sac = ours_config(by_algo["sac"], 0)
    assert sac["lr"] == 1e-3 and sac["learning_starts"] == 100 and sac["ent_coef"] == "auto"


def test_a_field_sb3_does_not_have_is_rejected():
    with pytest.raises(ValueError, match="learnin_rate.*no mapping"):
        HParams("dqn", "CartPole-v1", 1, 1, zoo={"learnin_rate": 1e-3}).params


def _res(algo: str, impl: str, seed: int, steps_per_s: float, ret: float, grad_s: float) -> OffPolicyRunResult:
    return OffPolicyRunResult(
        algo=algo,
        env_id="CartPole-v1",
        impl=impl,
        seed=seed,
        steps=1000,
        wall_s=1000 / steps_per_s,
        cpu_s=500 / steps_per_s,
        steps_per_s=steps_per_s,
        cpu_steps_per_s=2 * steps_per_s,
        eval_return=ret,
        eval_std=0.0,
        train_return_last100=ret,
        episodes=10,
        build_s=0.1,
        eval_s=0.1,
        curve=[(500, ret / 2), (1000, ret)],
        gradient_steps=500,
        grad_steps_per_s=grad_s,
        cpu_grad_steps_per_s=2 * grad_s,
    )


def test_summary_medians_ratios_and_verdicts():
    hp = HParams("dqn", "CartPole-v1", 1000, 1000)
    results = [
        _res("dqn", "ours", s, sps, ret, g)
        for s, (sps, ret, g) in enumerate([(300, 490, 100), (500, 480, 300), (400, 470, 200)])
    ]
    results += [
        _res("dqn", "sb3", s, sps, ret, g)
        for s, (sps, ret, g) in enumerate([(200, 500, 50), (100, 500, 100), (150, 500, 75)])
    ]
    (row,) = summarize_runs(results, [hp])
    assert row["seeds"] == 3
    assert row["speed_ratio"] == pytest.approx(400 / 150) and row["cpu_speed_ratio"] == pytest.approx(800 / 300)
    assert row["grad_speed_ratio"] == pytest.approx(200 / 75)
    assert row["return_delta"] == pytest.approx(-20) and row["return_ok"]  # within 5% of 500
    assert row["speed_ok"]
    worse = [r for r in results if r.impl == "sb3"] + [_res("dqn", "ours", 0, 250, 400, 50)]
    (row,) = summarize_runs(worse, [hp])
    assert not row["return_ok"] and not row["speed_ok"] and math.isclose(row["speed_ratio"], 250 / 150)


def test_results_round_trip(tmp_path):
    results = [_res("sac", "ours", 0, 30, -170, 29)]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(jsonable(results, {"command": "x"})))
    loaded, meta = load_results([path], OffPolicyRunResult)
    assert loaded == results and meta == {"command": "x"}


def test_sb3_builds_each_configuration_as_mapped():
    import torch
    from stable_baselines3 import DDPG, DQN, SAC, TD3

    for hp in zoo_configs():
        p = hp.params
        model = {"dqn": DQN, "sac": SAC, "td3": TD3, "ddpg": DDPG}[hp.algo](
            "MlpPolicy", hp.env_id, device="cpu", seed=0, **sb3_kwargs(hp)
        )
        assert (model.batch_size, model.gamma, model.learning_starts, model.tau) == (
            p["batch_size"],
            p["gamma"],
            p["learning_starts"],
            p["tau"],
        )
        assert (model.train_freq.frequency, model.gradient_steps, model.buffer_size) == (
            p["train_freq"],
            p["gradient_steps"],
            p["buffer_size"],
        )
        assert model.lr_schedule(1.0) == p["learning_rate"]
        widths = [m.out_features for m in model.policy.modules() if isinstance(m, torch.nn.Linear)]
        assert widths[:2] == list(p["net_arch"])
        if hp.algo == "dqn":
            assert (model.target_update_interval, model.exploration_final_eps) == (10, 0.04)


def test_seeds_from_runs_a_later_piece_of_seeds(tmp_path, monkeypatch):
    """``--seeds 2 --seeds-from 3`` trains seeds 3 and 4 (a later piece, merged by ``--results``)."""
    import benchmarks.off_policy as off_policy

    ran: list[tuple[str, int]] = []

    def fake_run_one(hp, impl, steps, seed, eval_episodes, progress, mode="fp32", resume=None):
        ran.append((impl, seed))
        return _res(hp.algo, impl, seed, 100.0, 10.0, 50.0)

    monkeypatch.setattr(off_policy, "run_one", fake_run_one)
    monkeypatch.setattr(off_policy, "warm_up", lambda *a, **k: None)
    argv = [
        "--algos",
        "dqn",
        "--seeds",
        "2",
        "--seeds-from",
        "3",
        "--no-mlflow",
        "--no-doc",
        "--out-dir",
        str(tmp_path),
    ]
    assert off_policy.main(argv) == 0
    assert sorted(ran) == [("ours", 3), ("ours", 4), ("sb3", 3), ("sb3", 4)]
    with pytest.raises(SystemExit):
        off_policy.parse_args(["--seeds-from", "-1"])


@pytest.mark.parametrize("impl", ["ours", "sb3"])
def test_a_stopped_off_policy_run_continues_with_its_replay_buffer(
    tmp_path, monkeypatch, stop_at_first_checkpoint, impl
):
    """SAC stopped right after its first checkpoint (200 of 400 steps) continues from it: the replay buffer
    comes back with the model (the first sitting's 200 transitions, not an empty buffer), the remaining 200
    steps are trained, and the gradient steps and episodes add up to an uninterrupted run's."""
    import benchmarks.off_policy as off_policy
    from benchmarks.common import Resume
    from tests.conftest import StopAfterCheckpoint

    saving = stop_at_first_checkpoint

    sac = next(h for h in zoo_configs() if h.algo == "sac" and h.env_id == "Pendulum-v1")
    hp = HParams("sac", "Pendulum-v1", 400, 400, zoo={**sac.zoo, "learning_starts": 100, "batch_size": 32})

    resume = Resume(tmp_path / "resume", every=200)
    with pytest.raises(StopAfterCheckpoint):
        off_policy.run_one(hp, impl, 400, 0, 1, resume=resume)
    assert json.loads(resume.progress_path.read_text())["steps"] == 200
    saving()

    buffered = []
    if impl == "ours":
        from core_rl.continuous.sac import SAC

        learn = SAC.learn
        monkeypatch.setattr(SAC, "learn", lambda a, n, **kw: buffered.append((n, len(a.replay))) or learn(a, n, **kw))
    else:
        from stable_baselines3 import SAC as SB3SAC

        learn = SB3SAC.learn
        monkeypatch.setattr(
            SB3SAC,
            "learn",
            lambda m, total_timesteps, **kw: (
                buffered.append((total_timesteps, m.replay_buffer.size())) or learn(m, total_timesteps, **kw)
            ),
        )
    res = off_policy.run_one(hp, impl, 400, 0, 1, resume=resume)
    assert buffered == [(200, 200)]
    monkeypatch.undo()
    whole = off_policy.run_one(hp, impl, 400, 0, 1)
    assert (res.steps, res.gradient_steps, res.episodes) == (whole.steps, whole.gradient_steps, whole.episodes)
    assert res.episodes == 2  # 200-step episodes


def test_two_benchmarks_started_in_the_same_second_name_their_files_apart() -> None:
    """Two benchmarks started together, one per core, took the same second-resolution stamp, so the second
    one's ``off_policy-<stamp>.json`` replaced the first one's results (a TD3 run lost that way on
    2026-12-06). The stamp now carries the process id as well."""
    import subprocess
    import sys

    code = "from benchmarks.common import run_stamp; print(run_stamp())"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    stamps = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert stamps[0] != stamps[1]
    assert all(s.split("-")[0][:8].isdigit() for s in stamps)  # the UTC start time leads: names still sort by it
