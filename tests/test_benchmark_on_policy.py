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
