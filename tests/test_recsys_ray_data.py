"""Logs larger than a machine, part one: ingestion and OPE of a partitioned log on Ray Data give the
local path's clean log, quarantine, counts and estimates (``backend="ray"``; a real local Ray session,
so these run in the loopback-only namespace of tests/test_ray_netns.py)."""

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.logs import LogReader, generate_logs, ingest_logs, read_logs_frame, read_meta
from recsys.ope import evaluate_on_logs, fit_reward_model
from recsys.ope_partitioned import evaluate_log_files
from recsys.policies import EpsilonGreedyPolicy, PopularityPolicy
from recsys.simulation import RecSimInterestEvolutionVectorEnv
from tests.seeding import seed

pytest.importorskip("ray.data", reason="ray[data] is not installed (pip install 'deeprl-suite[distributed]')")
pytestmark = pytest.mark.ray_local
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ray_session():
    from core_rl.distributed.ray_utils import init_ray

    ray_mod = init_ray(num_cpus=2)
    yield ray_mod
    ray_mod.shutdown()


def _popularity(epsilon: float, s: int) -> EpsilonGreedyPolicy:
    pop = PopularityPolicy(10, 2, torch.linspace(0, 1, 20), key="topic", num_topics=20)
    return EpsilonGreedyPolicy(pop, epsilon, seed=s)


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray-logs")
    env = RecSimInterestEvolutionVectorEnv(32, seed=seed(0))
    res = generate_logs(env, _popularity(0.3, seed(1)), folder / "log.parquet", sessions=40, seed=seed(0))
    return folder, read_logs_frame(folder / "log.parquet"), res


def _corrupt(df: pd.DataFrame, boundary: int) -> pd.DataFrame:
    """Bad rows of several kinds, one a duplicate key that sits right after a file boundary."""
    bad = df.copy()
    bad.loc[5, "engagement"] = -1.0
    bad.loc[7, "engagement"] = np.nan
    bad.at[9, "slate"] = np.array([3, 3])
    bad.at[boundary + 3, "slate"] = np.array([0, 10])
    bad.loc[boundary + 4, "click_position"] = 5
    bad.at[boundary + 6, "user_features"] = np.zeros(3, dtype=np.float32)
    bad.loc[boundary, ["session_id", "step"]] = bad.loc[boundary - 1, ["session_id", "step"]].to_numpy()
    return bad


def _write_partitioned(df: pd.DataFrame, root, cuts, row_group_size: int) -> None:
    """``df`` as hive partitions day=0, day=1, … cut at ``cuts``, small row groups (many fragments)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    edges = [0, *cuts, len(df)]
    for i in range(len(edges) - 1):
        (root / f"day={i}").mkdir(parents=True)
        table = pa.Table.from_pandas(df.iloc[edges[i] : edges[i + 1]], preserve_index=False)
        pq.write_table(table, root / f"day={i}" / "part-0.parquet", row_group_size=row_group_size)


def _same_ingestion(local, remote, tmp_path) -> None:
    assert (remote.rows_in, remote.rows_clean, remote.rows_quarantined) == (
        local.rows_in,
        local.rows_clean,
        local.rows_quarantined,
    )
    assert [p.message() for p in remote.problems] == [p.message() for p in local.problems]
    assert read_logs_frame(tmp_path / "ray.parquet").equals(read_logs_frame(tmp_path / "local.parquet"))
    assert pd.read_parquet(remote.quarantine).equals(pd.read_parquet(local.quarantine))
    assert read_meta(tmp_path / "ray.parquet") == read_meta(tmp_path / "local.parquet")


def test_ray_ingestion_of_a_partitioned_log_matches_the_local_path(ray_session, log, tmp_path):
    _, df, res = log
    boundary = len(df) // 3
    bad = _corrupt(df, boundary)
    _write_partitioned(bad, tmp_path / "export", [boundary, 2 * len(df) // 3], row_group_size=97)
    local = ingest_logs(tmp_path / "export", tmp_path / "local.parquet", chunk_rows=128)
    remote = ingest_logs(tmp_path / "export", tmp_path / "ray.parquet", chunk_rows=128, backend="ray")
    # the bad rows, including the duplicate key just after the first file boundary, are found either way
    assert local.rows_in == res.rows and local.rows_quarantined == 7 and local.sort is None
    dup = f"column 'step': 1 bad row, repeats an earlier (session_id, step) (first bad row: {boundary})"
    assert dup in [p.message() for p in remote.problems]
    assert pd.read_parquet(remote.quarantine)["_source_row"].tolist() == sorted(
        [5, 7, 9, boundary, boundary + 3, boundary + 4, boundary + 6]
    )
    _same_ingestion(local, remote, tmp_path)


def test_ray_ingestion_of_an_unordered_glob_sorts_and_matches_the_local_path(ray_session, log, tmp_path):
    _, df, res = log
    bad = _corrupt(df, len(df) // 2).sample(frac=1.0, random_state=seed(0)).reset_index(drop=True)
    _write_partitioned(bad, tmp_path / "export", [len(df) // 2], row_group_size=150)
    pattern = str(tmp_path / "export" / "day=*" / "*.parquet")
    local = ingest_logs(pattern, tmp_path / "local.parquet", chunk_rows=200)
    remote = ingest_logs(pattern, tmp_path / "ray.parquet", chunk_rows=200, backend="ray", work_dir=tmp_path / "spool")
    assert local.sort is not None and remote.sort is not None and local.rows_quarantined == 7
    assert local.rows_in == res.rows and not list((tmp_path / "spool").iterdir())  # the spooled parts are gone
    _same_ingestion(local, remote, tmp_path)


def test_ray_ope_of_a_partitioned_log_matches_the_local_estimates(ray_session, log, tmp_path):
    folder, df, _ = log
    ingest_logs(folder / "log.parquet", tmp_path / "clean.parquet", chunk_rows=300)
    meta = read_meta(tmp_path / "clean.parquet")
    reader = LogReader(tmp_path / "clean.parquet", chunk_rows=256, oracle=True)
    reward_model = fit_reward_model(reader, meta.user_dim, meta.doc_dim, epochs=1, seed=seed(0))
    target = _popularity(0.6, seed(2))
    kwargs = dict(reward_model=reward_model, logging_policy=meta.logging_policy_object(), n_bootstrap=50)
    local = evaluate_on_logs(target, reader.chunks(), seed=seed(3), **kwargs)
    # the same clean log cut into a directory of parts with small row groups: many Ray Data tasks
    clean = pd.read_parquet(tmp_path / "clean.parquet")
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "parts").mkdir()
    table = pa.Table.from_pandas(clean, preserve_index=False).replace_schema_metadata(
        pq.read_schema(tmp_path / "clean.parquet").metadata
    )
    half = len(clean) // 2 + 5  # mid-session: a session split over two files is one bootstrap group
    pq.write_table(table.slice(0, half), tmp_path / "parts" / "a.parquet", row_group_size=111)
    pq.write_table(table.slice(half), tmp_path / "parts" / "b.parquet", row_group_size=111)
    for source in (tmp_path / "clean.parquet", tmp_path / "parts"):
        remote = evaluate_log_files(target, str(source), seed=seed(3), backend="ray", chunk_rows=64, **kwargs)
        assert remote.rows == local.rows == len(df)
        assert set(remote.estimates) == set(local.estimates) == {"ips", "snips", "dr", "pi", "pi_sn", "dm"}
        for name, est in local.estimates.items():
            got = remote.estimates[name]
            assert got.value == pytest.approx(est.value, rel=1e-9), name
            assert (got.lower, got.upper) == pytest.approx((est.lower, est.upper), rel=1e-9), name
            assert got.extra == pytest.approx(est.extra, rel=1e-9), name  # the ESS (not for DM)
        assert remote.ground_truth == pytest.approx(local.ground_truth, rel=1e-9)
        assert remote.logging_value == pytest.approx(local.logging_value, rel=1e-12)
    # the estimates are not trivially equal: IPS of another policy differs from the logged value
    assert abs(local.estimates["ips"].value - local.logging_value) > 1e-3


def test_the_cli_ingests_a_partitioned_log_on_ray_with_the_local_report(
    ray_session, log, tmp_path, tracking_uri, capsys
):
    import json

    from pipelines.cli import main

    _, df, res = log
    boundary = len(df) // 2
    _write_partitioned(_corrupt(df, boundary), tmp_path / "export", [boundary], row_group_size=200)
    reports = {}
    sources = {"local": str(tmp_path / "export"), "ray": str(tmp_path / "export" / "day=*" / "*.parquet")}
    for backend in ("local", "ray"):  # the directory locally, a glob of its files on Ray
        argv = ["recsys", "ingest", "--logs", sources[backend], "--out", str(tmp_path / f"{backend}.parquet")]
        code = main([*argv, "--backend", backend, "--json", "--tracking-uri", tracking_uri])
        out = capsys.readouterr().out
        assert code == 0, out
        reports[backend] = json.loads(out.strip().splitlines()[-1])
    assert {k: v for k, v in reports["ray"].items() if k not in ("output", "quarantine")} == {
        k: v for k, v in reports["local"].items() if k not in ("output", "quarantine")
    }
    assert reports["ray"]["rows_in"] == res.rows and reports["ray"]["rows_quarantined"] == 7


def test_the_cli_evaluates_a_trained_policy_on_ray_with_the_local_estimates(
    ray_session, log, tmp_path, tracking_uri, capsys
):
    import json

    from pipelines.cli import main
    from recsys.pipeline import train

    folder, _, _ = log
    trained = train("bc", str(folder / "log.parquet"), config={"epochs": 1}, tracking_uri=tracking_uri)
    results = {}
    for backend in ("local", "ray"):
        argv = ["recsys", "evaluate", "--run", trained["run_id"], "--logs", str(folder / "log.parquet")]
        code = main([*argv, "--bootstrap", "20", "--backend", backend, "--json", "--tracking-uri", tracking_uri])
        out = capsys.readouterr().out
        assert code == 0, out
        results[backend] = json.loads(out.strip().splitlines()[-1])
    local, remote = results["local"]["ope"], results["ray"]["ope"]
    assert set(local) == set(remote) and "ips" in local
    for name, est in local.items():
        assert remote[name]["value"] == pytest.approx(est["value"], rel=1e-9), name
        assert remote[name]["n"] == est["n"]
