"""The on-policy benchmark's report states the networks both sides trained (no training here)."""

from __future__ import annotations

from benchmarks.on_policy import hparams_markdown, mujoco_configs, sb3_kwargs, zoo_configs


def test_hyperparameter_table_names_the_networks_sb3_trained():
    configs = [*zoo_configs(), *mujoco_configs()]
    rows = hparams_markdown(configs, {hp.key: hp.quick_timesteps for hp in configs}).splitlines()[2:]
    assert len(rows) == len(configs)
    for hp, row in zip(configs, rows, strict=True):
        policy_kwargs = sb3_kwargs(hp)["policy_kwargs"]
        sizes = list(hp.hidden_sizes)
        assert policy_kwargs["net_arch"] == dict(pi=sizes, vf=sizes)
        sb3_column = row.split(" | ")[1]
        assert f"net_arch=pi={sizes}, vf={sizes}, {policy_kwargs['activation_fn'].__name__}" in sb3_column
    hopper = next(row for hp, row in zip(configs, rows, strict=True) if hp.env_id == "Hopper-v5")
    assert "pi=[256, 256], vf=[256, 256], ReLU" in hopper


def test_mujoco_configs_are_the_rl_zoo_presets_mapped():
    from benchmarks.on_policy import ours_config
    from core_rl.presets import find_preset

    for hp in mujoco_configs():
        preset = find_preset(hp.algo, hp.env_id).config  # the -v4 entry, mapped by the core
        ours = ours_config(hp, seed=0)
        assert {k: ours[k] for k in preset} == dict(preset), hp.key


def test_results_merged_from_pieces_name_every_cpu_and_the_highest_load(tmp_path):
    import json

    from benchmarks.common import load_results

    def piece(name: str, cpu: str, start: list[float], end: list[float], command: str) -> object:
        meta = {"command": command, "machine": {"cpu": cpu, "cores": 2, "loadavg_start": start, "loadavg": end}}
        path = tmp_path / name
        path.write_text(json.dumps({"meta": meta, "results": []}))
        return path

    a = piece("a.json", "Intel Xeon", [1.0, 1.0, 1.0], [2.5, 2.0, 1.0], "run a")
    b = piece("b.json", "AMD EPYC", [3.0, 2.0, 1.0], [1.0, 1.0, 1.0], "run b")
    c = piece("c.json", "Intel Xeon", [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], "run c")
    _, meta = load_results([a, b, c])
    machine = meta["machine"]
    assert machine["cpu"] == "Intel Xeon and AMD EPYC (the pieces ran on different CPUs)"
    assert machine["loadavg_start"] == [3.0, 2.0, 1.0] and machine["loadavg"] == [2.5, 2.0, 1.0]
    assert meta["command"] == "run a; run b; run c"
    _, one = load_results([a])  # one piece: its own note, unchanged
    assert one["machine"]["cpu"] == "Intel Xeon" and one["machine"]["loadavg"] == [2.5, 2.0, 1.0]
    _, same = load_results([a, c])  # one CPU: named once
    assert same["machine"]["cpu"] == "Intel Xeon"


def test_saved_configs_are_json_and_a_drift_from_todays_mapping_is_named():
    import json

    import torch

    from benchmarks.common import RunResult, config_drift, config_drift_markdown, recorded_config
    from benchmarks.on_policy import run_config

    record = recorded_config({"act": torch.nn.ReLU, "sizes": (64, 64), "sched": lambda p: p, "nest": {"a": (1,)}})
    assert record["act"] == "ReLU" and record["sizes"] == [64, 64] and record["nest"] == {"a": [1]}
    assert isinstance(record["sched"], str)
    json.dumps(record)

    hopper = next(hp for hp in mujoco_configs() if hp.env_id == "Hopper-v5")
    sb3 = recorded_config(run_config(hopper, "sb3", 0))
    json.dumps(sb3)
    assert sb3["policy_kwargs"]["net_arch"] == {"pi": [256, 256], "vf": [256, 256]}
    assert sb3["policy_kwargs"]["activation_fn"] == "ReLU"

    def result(impl: str, seed: int, config: dict) -> RunResult:
        nan = float("nan")
        return RunResult("ppo", "Hopper-v5", impl, seed, 1, nan, nan, nan, nan, nan, nan, nan, 0, nan, nan, [], config)

    ours_today = recorded_config(run_config(hopper, "ours", 0))
    old = dict(ours_today, lr=123.0, seed=5)  # another lr; another seed is no drift
    results = [result("ours", 5, old), result("ours", 6, {}), result("sb3", 0, sb3)]
    lines = config_drift(results, lambda r: run_config(hopper, r.impl, r.seed))
    assert lines == [f"- PPO Hopper-v5, ours: `lr` 123.0 (now {ours_today['lr']!r})"]
    assert "no longer show" in config_drift_markdown(lines) and config_drift_markdown([]) == ""


def test_a_report_shows_its_own_plot_not_another_reports(tmp_path):
    """``--doc X.md`` puts the run's bar plot beside it as ``X.png`` and links that file (until 2026-12-08 every
    report linked ``on_policy.png`` / ``off_policy.png``: the plot of whichever run last wrote the default doc)."""
    import re

    from benchmarks import off_policy, on_policy
    from benchmarks.common import REPO

    saved = {
        on_policy: REPO / "benchmarks/results/on_policy/on_policy-20261208T022027Z-23800.json",
        off_policy: REPO / "benchmarks/results/off_policy/off_policy-20261208T005206Z-24306.json",
    }
    for module, results in saved.items():
        doc = tmp_path / "docs" / f"walker_{module.__name__.rsplit('.', 1)[-1]}.md"
        argv = ["--results", str(results), "--doc", str(doc), "--no-mlflow", "--out-dir", str(tmp_path / "out")]
        assert module.main(argv) == 0
        links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", doc.read_text())
        assert links == [doc.with_suffix(".png").name], links
        assert (doc.parent / links[0]).stat().st_size > 0


def test_return_rank_statistics_against_known_answers():
    """The runs of each side are two independent samples: P(ours higher) = U/(n₁n₂) with ties half, and the exact
    two-sided Mann–Whitney p: six runs each, every one of ours above every SB3 run, give U = 36 and
    p = 2 / C(12, 6) = 2/924, whatever the sizes of the gaps."""
    import math

    from benchmarks.common import RunResult, ranks_markdown, ranks_sentence, return_ranks

    def run(impl: str, seed: int, ret: float) -> RunResult:
        return RunResult("ppo", "Hopper-v5", impl, seed, 1000, 1.0, 1.0, 1.0, 1.0, ret, 0.0, ret, 1, 0.0, 0.0)

    sb3 = [run("sb3", s, 100.0 * s) for s in range(6)]
    ours = [run("ours", s, 1e3 + s) for s in range(6)]
    out = return_ranks(ours, sb3)
    assert out["runs_ours"] == out["runs_sb3"] == 6 and out["p_ours_higher"] == 1.0
    assert math.isclose(out["rank_p"], 2 / math.comb(12, 6))
    assert math.isclose(out["eval_return_mean_ours"], 1e3 + 2.5) and math.isclose(out["eval_return_mean_sb3"], 250.0)
    assert ranks_markdown(out) == "1.00, p = 0.002"
    assert "(a significant difference)" in ranks_sentence(out)

    same = return_ranks([run("ours", s, 100.0 * s) for s in range(3)], sb3[:3])  # the same values: every pair ties
    assert same["p_ours_higher"] == 0.5 and same["rank_p"] == 1.0
    assert "(no significant difference)" in ranks_sentence(same)
    mixed = return_ranks(ours[:1], sb3)  # one run of ours against six: 6 of 6 pairs, too few runs for a sentence
    assert mixed["p_ours_higher"] == 1.0 and ranks_sentence(mixed) == ""
    none = return_ranks(ours, [])
    assert math.isnan(none["p_ours_higher"]) and math.isnan(none["rank_p"]) and ranks_markdown(none) == "–"
