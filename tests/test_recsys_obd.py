"""Per-position logs → slates (always run, on small synthetic logs) and the Open Bandit Dataset (skipped
with one line when it has not been fetched: `python -m recsys.obd fetch`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from core_rl.common.errors import ConfigError
from recsys import obd
from recsys.logs import LogReader, LogSchemaError, ingest_logs, read_meta
from recsys.logs.positions import is_per_position, to_slates

OBD_ROOT = obd.obd_dir()  # resolved at import, before any test moves DEEPRL_HOME
need_obd = pytest.mark.skipif(
    not obd.available(OBD_ROOT), reason=f"Open Bandit Dataset not under {OBD_ROOT}: run `python -m recsys.obd fetch`"
)


def _items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [10, 11, 12, 13],
            "item_feature_0": [0.5, -1.0, 2.0, 0.0],
            "item_feature_1": ["h1", "h2", "h1", "h3"],
        }
    )


def _per_position(n: int = 6, impressions: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "position": np.tile([1, 2, 3], n // 3) if impressions else rng.integers(1, 4, n),
            "item_id": np.array([10, 11, 12, 13, 10, 12])[:n] if impressions else rng.integers(10, 14, n),
            "click": [0, 1, 0, 0, 1, 1][:n],
            "propensity_score": [0.25, 0.5, 0.2, 0.25, 0.4, 0.1][:n],
            "user_feature_0": ["a", "b", "a", "c", "b", "a"][:n],
            "user_feature_1": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0][:n],
            "user-item_affinity_10": np.arange(n, dtype=float),
            "user-item_affinity_12": -np.arange(n, dtype=float),
        }
    )
    if impressions:
        frame["impression_id"] = np.repeat(np.arange(n // 3), 3)[::-1]  # unsorted on purpose
    return frame


def test_per_position_rows_become_one_position_slates():
    frame = _per_position()
    assert is_per_position(frame.columns)
    out, meta = to_slates(frame, _items())
    assert meta["source_format"] == "per_position_items" and meta["source_positions"] == 3
    assert len(out) == 6 and (out["step"] == 0).all() and out["session_id"].is_unique
    # item ids 10..13 → candidate indices 0..3; the slate is the shown item
    assert [s.tolist() for s in out["slate"]] == [[i - 10] for i in frame["item_id"]]
    assert out["click_position"].tolist() == [-1 if c == 0 else 0 for c in frame["click"]]
    assert out["engagement"].tolist() == frame["click"].astype(float).tolist()
    assert out["slate_propensity"].tolist() == frame["propensity_score"].tolist()
    # user features: one-hot of the hashed column (a, b, c), the numeric one, then the position one-hot
    assert meta["user_feature_names"] == [
        "user_feature_0=a",
        "user_feature_0=b",
        "user_feature_0=c",
        "user_feature_1",
        "position=0",
        "position=1",
        "position=2",
    ]
    u = np.stack(out["user_features"])
    assert u[1].tolist() == [0, 1, 0, 2.0] + np.eye(3)[frame["position"][1] - 1].tolist()
    # candidate features: item_feature_0, one-hot item_feature_1 (h1, h2, h3), the user's affinity to the item
    assert meta["doc_feature_names"] == [
        "item_feature_0",
        "item_feature_1=h1",
        "item_feature_1=h2",
        "item_feature_1=h3",
        "user_item_affinity",
    ]
    cand = np.stack(out["candidate_features"]).reshape(6, 4, 5)
    assert cand[3, 1].tolist() == [-1.0, 0, 1, 0, 0.0]  # item 11: no affinity column → 0
    assert cand[3, 2].tolist() == [2.0, 1, 0, 0, -3.0]  # item 12, row 3: affinity −3
    assert cand[5, 0, 4] == 5.0


def test_impressions_become_full_slates_with_product_propensity():
    frame = _per_position(impressions=True)
    out, meta = to_slates(frame, _items())
    assert meta["source_format"] == "per_position_slates"
    assert len(out) == 2
    by_imp = {int(i): g.sort_values("position") for i, g in frame.groupby("impression_id")}
    for row, (imp, g) in zip(out.itertuples(), sorted(by_imp.items())):
        assert row.slate.tolist() == (g["item_id"] - 10).tolist()
        assert row.slate_propensity == pytest.approx(float(np.prod(g["propensity_score"])))
        assert row.position_propensity.tolist() == g["propensity_score"].tolist()
        clicked = np.flatnonzero(g["click"].to_numpy())
        assert row.click_position == (int(clicked[0]) if len(clicked) else -1)
    # impressions missing a position are refused with one message
    bad = frame.iloc[:-1]
    with pytest.raises(LogSchemaError, match="do not show every position"):
        to_slates(bad, _items())


def test_per_position_csv_ingests_with_the_same_command(tmp_path):
    """A CSV of per-position rows with an item table beside it goes through `ingest_logs` like any log,
    and both the per-position and the per-slate forms read back as LogChunks."""
    src = tmp_path / "raw"
    src.mkdir()
    _per_position().to_csv(src / "log.csv")
    _items().to_csv(src / "item_context.csv")
    rep = ingest_logs(src / "log.csv", tmp_path / "clean.parquet")
    assert rep.rows_in == rep.rows_clean == 6
    meta = read_meta(tmp_path / "clean.parquet")
    assert (meta.num_candidates, meta.doc_dim, meta.user_dim, meta.slate_size) == (4, 5, 7, 1)
    assert meta.propensity_source == "logged" and meta.source_format == "per_position_items"
    chunks = list(LogReader(tmp_path / "clean.parquet", chunk_rows=100))
    assert sum(len(ch) for ch in chunks) == 6
    assert chunks[0].slate.shape[1:] == (1,) and chunks[0].docs.shape[1:] == (4, 5)
    # the per-slate form ingests too (K = 3) from a DataFrame with its item table in attrs
    frame = _per_position(impressions=True)
    frame.attrs["items"] = _items()
    rep = ingest_logs(frame, tmp_path / "slates.parquet")
    meta = read_meta(tmp_path / "slates.parquet")
    assert rep.rows_clean == 2 and meta.slate_size == 3 and meta.source_format == "per_position_slates"
    # per-position rows whose item is missing from the item table: one clear error
    frame = _per_position()
    frame.loc[2, "item_id"] = 99
    frame.attrs["items"] = _items()
    with pytest.raises(LogSchemaError, match="column 'item_id': 1 rows show an item missing"):
        ingest_logs(frame, tmp_path / "x.parquet")
    # a click that is not 0 or 1 (a count, a -1 "unknown", a blank) is refused, not read as clicked / not clicked
    for value, shown in [(2, "2.0"), (-1, "-1.0"), (np.nan, "nan")]:
        frame = _per_position()
        frame["click"] = frame["click"].astype(float)
        frame.loc[3, "click"] = value
        frame.attrs["items"] = _items()
        with pytest.raises(
            LogSchemaError, match=f"column 'click': 1 rows are not 0 or 1 \\(first bad row: 3, value {shown}"
        ):
            ingest_logs(frame, tmp_path / "x.parquet")


def test_a_csv_log_trains_like_an_ingested_one_and_a_bad_csv_is_one_error(tmp_path, tracking_uri):
    """`recsys train --logs log.csv` ingests a per-position CSV first, as `recsys ingest` does (until 2026-12-08 it
    refused it as "not a parquet log"); an empty, binary or slate-layout CSV is one error naming the file."""
    from recsys.pipeline import train

    src = tmp_path / "raw"
    src.mkdir()
    _per_position().to_csv(src / "log.csv")
    _items().to_csv(src / "item_context.csv")
    res = train("popularity", logs=src / "log.csv", tracking_uri=tracking_uri)
    assert res["run_id"]
    (src / "empty.csv").write_text("")
    (src / "binary.csv").write_bytes(b"\xff\xfe\x00\x01")
    pd.DataFrame({"slate": ["[0, 1]"], "click_position": [0]}).to_csv(src / "slates.csv")
    for name, message in [
        ("empty.csv", "'.*empty.csv' is not a readable CSV log"),
        ("binary.csv", "'.*binary.csv' is not a readable CSV log"),
        ("slates.csv", r"'.*slates.csv' is a CSV without the per-position columns \['position', 'item_id', 'click'\]"),
    ]:
        with pytest.raises(LogSchemaError, match=message):
            ingest_logs(src / name, tmp_path / "x.parquet")
        with pytest.raises(LogSchemaError, match=message):
            train("popularity", logs=src / name, tracking_uri=tracking_uri)


def test_bts_action_dist_known_answer():
    """Three items with near-certain, ordered θ: BTS shows them at positions 0, 1, 2 every time."""
    alpha = np.array([1e6, 1.0, 9e5, 8e5, 1.0])
    beta = np.array([1.0, 1e6, 1e5, 2e5, 1e6])
    d = obd.bts_action_dist(alpha, beta, len_list=3, n_sim=2000)
    want = np.zeros((5, 3))
    want[0, 0] = want[2, 1] = want[3, 2] = 1.0
    np.testing.assert_allclose(d, want)
    # equal priors: every item equally likely at every position
    d = obd.bts_action_dist(np.full(4, 2.0), np.full(4, 2.0), len_list=2, n_sim=40_000, seed=1)
    np.testing.assert_allclose(d.sum(0), 1.0)
    np.testing.assert_allclose(d, 0.25, atol=0.01)


def test_fetch_without_the_registry_is_one_clear_error(tmp_path):
    fake = tmp_path / "python"  # a "python" whose pip finds nothing
    fake.write_text("#!/bin/sh\necho 'ERROR: No matching distribution found for obp==0.5.7' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(ConfigError, match="could not download obp==0.5.7 with pip: ERROR: No matching"):
        obd.fetch(tmp_path / "obd", python=str(fake))
    assert not obd.available(tmp_path / "obd")


@need_obd
def test_obd_loads_and_ingests(tmp_path):
    log = obd.load("random", root=OBD_ROOT)
    assert (len(log.reward), log.n_actions, log.len_list) == (10_000, 80, 3)
    np.testing.assert_allclose(log.pscore, 1 / 80)
    assert log.context.shape == (10_000, 20)  # OBP: get_dummies(drop_first=True) of 4 hashed features
    assert 0 < obd.load("bts", root=OBD_ROOT).on_policy_value < 0.02
    rep = ingest_logs(obd.log_path("random", root=OBD_ROOT), tmp_path / "random.parquet")
    assert rep.rows_in == rep.rows_clean == 10_000
    meta = read_meta(tmp_path / "random.parquet")
    assert (meta.num_candidates, meta.slate_size) == (80, 1)
    assert meta.doc_dim == 1 + 40 + 1  # item_feature_0, one-hot hashed item features, affinity
    table = pq.read_table(tmp_path / "random.parquet", columns=["slate", "engagement", "slate_propensity"])
    assert table.column("engagement").to_numpy().sum() == log.reward.sum()
    np.testing.assert_array_equal(np.stack(table.column("slate").to_numpy(zero_copy_only=False))[:, 0], log.action)
    a, b = obd.bts_prior("all", root=OBD_ROOT)
    d = obd.bts_action_dist(a, b, n_sim=20_000)
    assert d.shape == (80, 3)
    np.testing.assert_allclose(d.sum(0), 1.0)


OBP_PY = obd.obp_python()  # resolved at import, like OBD_ROOT
need_obp = pytest.mark.skipif(
    not obd.obp_available(OBP_PY.parent.parent),
    reason=f"no Open Bandit Pipeline venv at {OBP_PY.parent.parent}: run `bash recsys/build_obp_env.sh`",
)


def _ours(inp, lambdas):
    from recsys.ope import bandit_estimates

    est = bandit_estimates(
        inp["reward"],
        inp["action"],
        inp["position"],
        inp["pscore"],
        inp["action_dist"],
        inp["q_hat"],
        lambdas=lambdas,
        n_bootstrap=0,
    )
    return {k: e.value for k, e in est.items()}


@need_obp
def test_estimators_equal_obp_on_the_same_inputs():
    """OBP 0.5.7's IPW, SNIPW, DM, DR, SNDR, Switch-DR and DRos (run in their venv on the saved inputs)
    equal ours to 1e-6, with switch/shrinkage hyperparameters that bite and with λ = ∞."""
    inp = obd.synthetic_rounds(3000, 7, 3, seed=3)
    for lambdas in ({"switch_dr": 2.0, "dros": 1.5}, {"switch_dr": float("inf"), "dros": float("inf")}):
        ours = _ours(inp, lambdas)
        theirs = obd.run_obp(inputs=inp, lambdas=lambdas, venv=OBP_PY.parent.parent)["values"]
        assert set(theirs) == set(ours) == set(obd.OBP_NAMES)
        for name in ours:
            assert ours[name] == pytest.approx(theirs[name], abs=1e-6), name
    assert ours["switch_dr"] == pytest.approx(ours["dr"])


@need_obd
@need_obp
def test_estimators_equal_obp_on_the_obd_protocol_inputs():
    inp = obd.protocol_inputs(n_sim=20_000, root=OBD_ROOT)
    ours = _ours(inp, obd.DEFAULT_LAMBDAS)
    theirs = obd.run_obp(inputs=inp, venv=OBP_PY.parent.parent)["values"]
    for name in ours:
        assert ours[name] == pytest.approx(theirs[name], abs=1e-6), name


@need_obd
def test_policy_learned_from_random_logs_is_registered_and_evaluated(tmp_path, tracking_uri):
    import mlflow

    res = obd.learn_from_random(
        "bc",
        config={"epochs": 1},
        workdir=tmp_path / "work",
        tracking_uri=tracking_uri,
        n_bootstrap=50,
        n_sim=5_000,
        root=OBD_ROOT,
    )
    assert res["registered"]["name"] == "recsys-obd-bc" and (res["train_rounds"], res["test_rounds"]) == (7000, 3000)
    dr = res["learned"]["dr"]
    assert dr["lower"] <= dr["value"] <= dr["upper"] and np.isfinite(dr["value"])
    assert res["bts_click_rate"] == pytest.approx(0.0042)
    client = mlflow.MlflowClient(tracking_uri)
    run = client.get_run(res["run_id"])
    assert run.data.metrics["learned_dr"] == pytest.approx(dr["value"])
    assert "plots/obd_policies.png" in [a.path for a in client.list_artifacts(res["run_id"], "plots")]
    assert client.get_registered_model("recsys-obd-bc").name == "recsys-obd-bc"


@need_obd
def test_cli_fetch_is_idempotent(capsys):
    from recsys.cli import main

    assert main(["fetch-obd", "--root", str(OBD_ROOT)]) == 0  # already there: no download
    assert str(OBD_ROOT) in capsys.readouterr().out
