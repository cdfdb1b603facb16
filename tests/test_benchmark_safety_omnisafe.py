"""The Safety-Gymnasium / OmniSafe benchmark's report bookkeeping, and its resumable long runs (on our own task)."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.safety_omnisafe import groups, load_pieces, piece_path, table
from tests.processes import gone, wait_for_pid


def _piece(side: str, algo: str, seed: int, steps: int, ret: float, cost: float) -> dict:
    return {
        "side": side,
        "algo": algo,
        "task": "SafetyPointGoal1-v0",
        "seed": seed,
        "steps": steps,
        "final_return": ret,
        "final_cost": cost,
        "cumulative_cost": 100.0 * cost,
        "steps_per_cpu_s": 500.0 if side == "ours" else 100.0,
        "curve": [],
    }


def test_pieces_of_two_budgets_render_as_two_tables_and_never_average_together(tmp_path: Path) -> None:
    runs = [  # (side, seed, requested budget, steps actually run, reward, cost)
        ("ours", 0, 200_000, 200_704, 1.0, 10.0),
        ("omnisafe", 0, 200_000, 200_000, 5.0, 60.0),
        ("ours", 0, 1_000_000, 1_001_472, 9.0, 20.0),
    ]
    for side, seed, budget, steps, ret, cost in runs:
        path = piece_path(tmp_path, side, "SafetyPointGoal1-v0", "TRPO-Lag", seed, budget)
        piece = _piece(side, "TRPO-Lag", seed, steps, ret, cost)
        if budget == 1_000_000:  # new pieces record their budget; old ones get it from the file name
            piece["budget"] = budget
        path.write_text(json.dumps(piece))
    pieces = load_pieces(tmp_path)
    assert sorted(p["budget"] for p in pieces) == [200_000, 200_000, 1_000_000]
    assert [(t, b, len(rs)) for t, b, rs in groups(pieces)] == [
        ("SafetyPointGoal1-v0", 1_000_000, 1),
        ("SafetyPointGoal1-v0", 200_000, 2),
    ]
    text = table(pieces)
    big, small = text.split("### ")[1:]
    assert big.startswith("SafetyPointGoal1-v0, 1,000,000 steps") and "9.00 ± 0.00" in big and "1.00" not in big
    assert small.startswith("SafetyPointGoal1-v0, 200,000 steps") and "1.00 ± 0.00" in small and "9.00" not in small
    assert "yes / **no** / yes" in small  # cost 10 ≤ 25, reward 1 < 5, cumulative 1,000 < 6,000


def test_omnisafes_pieces_are_judged_over_our_window_of_the_last_100_episodes(tmp_path: Path) -> None:
    """OmniSafe records one mean per 20-episode epoch; its reward / cost in the table is the mean of the last five
    epochs (100 episodes, our cost monitor's window), not of the last epoch alone."""
    ours = _piece("ours", "PPO-Lag", 0, 200_704, 1.0, 20.0)
    omni = _piece("omnisafe", "PPO-Lag", 0, 200_000, 9.0, 10.0)  # the last epoch's values, as the runner saves them
    omni["curve"] = [[20_000 * (e + 1), float(e), 100.0 - 10.0 * e, 0.0] for e in range(10)]  # epochs 0 … 9
    for piece in (ours, omni):
        path = piece_path(tmp_path, piece["side"], "SafetyPointGoal1-v0", "PPO-Lag", 0, 200_000)
        path.write_text(json.dumps(piece))
    by_side = {p["side"]: p for p in load_pieces(tmp_path)}
    # epochs 5–9: reward (5+6+7+8+9)/5 = 7, cost (50+40+30+20+10)/5 = 30
    assert by_side["omnisafe"]["final_return"] == pytest.approx(7.0)
    assert by_side["omnisafe"]["final_cost"] == pytest.approx(30.0)
    assert by_side["omnisafe"]["last_epoch_cost"] == 10.0 and by_side["omnisafe"]["final_episodes"] == 100
    assert by_side["ours"]["final_cost"] == 20.0  # ours is already the last 100 episodes
    row = next(line for line in table(list(by_side.values())).splitlines() if line.startswith("| PPO-Lag"))
    assert "| 7.00 ± 0.00 | 30.00 ± 0.00 |" in row


def test_a_stopped_long_run_resumes_from_its_checkpoint_and_keeps_its_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGINT during a resumable run: the finished iterations are saved and the run stops; the same call
    again continues from the checkpoint (not from zero) to the full budget, with the stopped part of the
    curve, the cumulative cost and the CPU time carried over. A checkpoint of other settings is refused."""
    from benchmarks.common import Resume
    from benchmarks.safety import TASKS, run_one
    from core_rl.common.errors import RunInterrupted
    from safety.trpo_lag import TRPOLag

    task = next(t for t in TASKS if t.label == "PointGoal")
    task = replace(task, common={**task.common, "n_envs": 2, "n_steps": 128, "hidden_sizes": [16]})
    resume = Resume(tmp_path / "piece.resume", every=512)
    save, signals = TRPOLag.save, []

    def save_then_interrupt(self: TRPOLag, path: Path, include_replay: bool = False) -> Path:
        out = save(self, path, include_replay)
        if not signals:  # Ctrl-C right after the first checkpoint, while the run goes on
            signals.append(self.num_timesteps)
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(TRPOLag, "save", save_then_interrupt)
    with pytest.raises(RunInterrupted):
        run_one(task, "TRPO-Lag", 0, 40 * 256, 1, resume=resume)
    saved = json.loads(resume.progress_path.read_text())
    stopped_at = max(s for s, _ in saved["metrics"]["cumulative_cost"])
    assert signals == [512] and stopped_at == 512 and saved["cpu_s"] > 0
    assert TRPOLag.load(resume.directory / "agent.pt").num_timesteps == 512

    result = run_one(task, "TRPO-Lag", 0, 40 * 256, 1, resume=resume)
    assert result.steps == 40 * 256
    before = dict(saved["metrics"]["cumulative_cost"])
    curve = {s: cum for s, _, _, cum in result.curve}
    assert all(curve[s] == v for s, v in before.items() if s in curve)  # the stopped part is kept as it was
    assert result.cumulative_cost >= before[stopped_at] > 0
    assert result.cpu_s > saved["cpu_s"]

    other = replace(task, common={**task.common, "hidden_sizes": [8]})
    with pytest.raises(SystemExit, match="hidden_sizes"):
        run_one(other, "TRPO-Lag", 0, 40 * 256, 1, resume=resume)


def test_at_the_published_budget_ours_is_judged_against_omnisafes_published_row(tmp_path: Path) -> None:
    for seed, (ret, cost) in enumerate([(20.0, 20.0), (18.0, 24.0)]):
        piece = {**_piece("ours", "TRPO-Lag", seed, 10_000_000, ret, cost), "budget": 10_000_000}
        piece_path(tmp_path, "ours", "SafetyPointGoal1-v0", "TRPO-Lag", seed, 10_000_000).write_text(json.dumps(piece))
    piece = {**_piece("ours", "CPO", 0, 10_000_000, 30.0, 26.0), "budget": 10_000_000}
    piece_path(tmp_path, "ours", "SafetyPointGoal1-v0", "CPO", 0, 10_000_000).write_text(json.dumps(piece))
    rows = {line.split(" |")[0]: line for line in table(load_pieces(tmp_path)).splitlines() if line.startswith("| ")}
    # TRPO-Lag: mean 19.0 / 22.0 against the published 18.51 / 22.98; CPO: 30 / 26 against 20.46 / 28.84
    assert "| yes / yes / – (against the published row) | 18.51 / 22.98 |" in rows["| TRPO-Lag (OmniSafe TRPOLag)"]
    assert "| **no** / yes / – (against the published row) | 20.46 / 28.84 |" in rows["| CPO (OmniSafe CPO)"]


def test_a_render_records_every_piece_in_mlflow(tmp_path: Path) -> None:
    """``--report-only`` with MLflow on: one child run per saved piece (pieces of long runs are measured with
    ``--no-mlflow`` in sittings), with its side, algorithm and seed, beside the rendered report."""
    import mlflow

    from benchmarks.safety_omnisafe import EXPERIMENT, main

    out = tmp_path / "pieces"
    out.mkdir()
    for side, seed in [("ours", 0), ("ours", 1), ("omnisafe", 0)]:
        piece = {**_piece(side, "TRPO-Lag", seed, 200_000, 1.0 + seed, 20.0), "budget": 200_000}
        piece["curve"] = [[100_000, 0.5, 30.0, 3_000.0], [200_000, 1.0 + seed, 20.0, 5_000.0]]
        piece_path(out, side, "SafetyPointGoal1-v0", "TRPO-Lag", seed, 200_000).write_text(json.dumps(piece))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = ["--tasks", "SG-PointGoal1", "--report-only", "--out-dir", str(out), "--tracking-uri", uri]
    assert main([*argv, "--doc", str(tmp_path / "report.md")]) == 0
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=[EXPERIMENT], output_format="list")
    children = sorted(
        (r.data.tags["side"], r.data.tags["seed"], r.data.metrics["final_return"])
        for r in runs
        if "side" in r.data.tags
    )
    assert children == [("omnisafe", "0", 1.0), ("ours", "0", 1.0), ("ours", "1", 2.0)]
    assert "SafetyPointGoal1-v0, 200,000 steps" in (tmp_path / "report.md").read_text()


def test_our_saute_takes_omnisafes_per_task_recipe_over_the_shared_settings() -> None:
    """On Safety-Gymnasium our Saute runs OmniSafe's per-task PPOSaute section (no observation normalization,
    20,000-step epochs, 80 passes to a KL of 0.02, γ_s 0.9999 over a 1,000-step discounted budget, r_unsafe −0.2),
    which must win over the benchmark's shared normalization; the other agents keep the shared settings."""
    from benchmarks.safety import TASKS, agent_config
    from benchmarks.safety_omnisafe import our_task
    from safety.saute import SauteConfig, saute_budget_scale

    task = next(t for t in TASKS if t.label == "SG-PointGoal1")
    cfg = SauteConfig.model_validate(agent_config(our_task(task, "Saute", 1), "Saute", 0))
    assert (cfg.normalize_obs, cfg.n_envs, cfg.n_steps, cfg.n_epochs, cfg.target_kl) == (False, 1, 20_000, 80, 0.02)
    assert (cfg.unsafe_reward, cfg.saute_gamma, cfg.budget_horizon, cfg.max_grad_norm) == (-0.2, 0.9999, 1000, 40.0)
    assert 25.0 * saute_budget_scale(cfg.saute_gamma, cfg.budget_horizon) == pytest.approx(23.79, abs=0.01)
    lag = agent_config(our_task(task, "PPO-Lag", 1, {"cost_margin": 5.0}), "PPO-Lag", 0)
    assert lag["normalize_obs"] is True and lag["n_steps"] == 2048 and lag["cost_margin"] == 5.0


def test_a_shared_setting_changed_for_one_agent_is_listed_under_the_table() -> None:
    from benchmarks.safety_omnisafe import ours_settings

    saute = {**_piece("ours", "Saute", 0, 200_000, 1.0, 30.0), "config": {"normalize_obs": "False", "n_epochs": 80}}
    lag = {
        **_piece("ours", "PPO-Lag", 0, 200_000, 1.0, 20.0),
        "config": {"normalize_obs": True, "hidden_sizes": [64, 64], "activation": "tanh", "gamma": 0.99},
    }  # every shared field at its shared value, a string among them: nothing to list
    assert ours_settings([saute, lag]) == [
        "PPO-Lag (1 seed): defaults",
        "Saute (1 seed): `n_epochs=80`, `normalize_obs=False`",
    ]


def test_a_stopped_benchmark_stops_the_omnisafe_runner_too(tmp_path: Path) -> None:
    """SIGTERM to the benchmark while OmniSafe trains: the runner process goes with it (it used to keep
    training, orphaned, for the rest of its 30 minutes), the exit status is 143 and no piece is saved.
    A stand-in runner (sleeps, writes its pid) replaces OmniSafe's, so the test needs no OmniSafe venv."""
    import subprocess
    import sys
    import textwrap

    repo = Path(__file__).resolve().parents[1]
    pid_file = tmp_path / "runner.pid"
    (tmp_path / "runner.py").write_text(
        f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(300)\n"
    )
    driver = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import benchmarks.safety_omnisafe as B
        from benchmarks.common import run_main
        B.OMNISAFE_PYTHON, B.RUNNER = Path(sys.executable), Path({str(tmp_path / "runner.py")!r})
        log = Path({str(tmp_path / "piece.log")!r})
        sys.exit(run_main(lambda: B.omnisafe("SafetyPointGoal1-v0", "PPO-Lag", 0, 1000, 1, 25.0, log)))
    """)
    env = {**os.environ, "PYTHONPATH": str(repo)}
    proc = subprocess.Popen([sys.executable, "-c", driver], cwd=repo, env=env, stdout=subprocess.PIPE, text=True)
    runner = wait_for_pid(pid_file, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert gone(runner), "the OmniSafe runner outlived the stopped benchmark"  # killed and reaped by subprocess.run
    assert proc.returncode == 143
    assert "SIGTERM" in out and "not saved" in out
    assert not (tmp_path / "piece.json").exists()
