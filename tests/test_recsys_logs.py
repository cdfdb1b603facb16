"""Logged interactions: the schema round-trips, bad logs get one clear error per problem, bad rows are
quarantined and counted (nothing dropped silently), chunked reading never crosses a session segment,
and missing propensities are estimated."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from recsys.logs import LogReader, LogSchemaError, generate_logs, ingest_logs, read_logs_frame, read_meta
from recsys.policies import EpsilonGreedyPolicy, PlackettLucePolicy, PopularityPolicy, RandomPolicy
from recsys.simulation import InterestEvolutionVectorEnv, RecSimInterestEvolutionVectorEnv

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def recsim_log(tmp_path_factory):
    """Original-RecSim logs (variable session lengths) from ε-greedy popularity by topic."""
    path = tmp_path_factory.mktemp("logs") / "recsim.parquet"
    env = RecSimInterestEvolutionVectorEnv(32, seed=0)
    pop = PopularityPolicy(10, 2, torch.linspace(0, 1, 20), key="topic", num_topics=20)
    res = generate_logs(env, EpsilonGreedyPolicy(pop, 0.3, seed=1), path, sessions=48, seed=0, rows_per_group=700)
    return path, res


def test_generated_log_has_the_schema_and_whole_sessions(recsim_log):
    path, res = recsim_log
    meta = read_meta(path)
    assert (meta.user_dim, meta.num_candidates, meta.doc_dim, meta.slate_size) == (20, 10, 20, 2)
    assert meta.env_kind == "recsim" and meta.session_aligned and meta.has_oracle
    assert meta.logging_policy["kind"] == "epsilon_greedy"
    df = read_logs_frame(path)
    assert len(df) == res.rows and df["session_id"].nunique() == res.sessions == 48
    # every session is contiguous, starts at step 0, runs without gaps and ends terminated (budget spent)
    for _, g in df.groupby("session_id", sort=False):
        assert list(g["step"]) == list(range(len(g)))
        assert g["terminated"].iloc[-1] and not g["terminated"].iloc[:-1].any()
    starts = np.flatnonzero(np.r_[True, df["session_id"].to_numpy()[1:] != df["session_id"].to_numpy()[:-1]])
    assert len(starts) == 48  # contiguous
    # engagement only with a click; propensities are the ε-greedy ones
    assert ((df["engagement"] > 0) <= (df["click_position"] >= 0)).all()
    prop = df["slate_propensity"].to_numpy()
    s = 90
    assert np.allclose(np.unique(prop.round(12)), np.sort([0.3 / s, 0.7 + 0.3 / s]))
    # row groups hold whole sessions
    pf = pq.ParquetFile(str(path))
    assert pf.metadata.num_row_groups > 1
    for g in range(pf.metadata.num_row_groups):
        t = pf.read_row_group(g, columns=["session_id", "terminated"]).to_pandas()
        assert t.groupby("session_id")["terminated"].last().all()


def test_chunked_reader_keeps_segments_whole_and_matches_a_full_read(recsim_log):
    path, res = recsim_log
    full = read_logs_frame(path)
    longest = int(full.groupby("session_id").size().max())
    reader = LogReader(path, chunk_rows=300, oracle=True)
    chunks = list(reader.chunks())
    assert len(chunks) > 5
    for ch in chunks:
        assert len(ch) <= 300 + longest  # memory: one chunk plus at most one carried segment
        # a chunk never ends inside a session (the last row is a session's last row)
        last = ch.session[-1].item()
        assert full[full.session_id == last]["step"].max() == ch.step[-1].item()
    rows = torch.cat([c.row for c in chunks])
    assert torch.equal(rows, torch.arange(res.rows))
    both = torch.cat([c.engagement for c in chunks]).numpy()
    assert np.allclose(both, full["engagement"].to_numpy())
    # reward-to-go within a chunk equals the per-session discounted sum
    ch = chunks[0]
    rtg = ch.reward_to_go(0.9).numpy()
    g = full[full.session_id == ch.session[0].item()]
    r = g["engagement"].to_numpy()
    expected0 = sum(0.9**t * r[t] for t in range(len(r)))
    assert rtg[0] == pytest.approx(expected0, rel=1e-5)
    # shuffled row groups: the same rows, another order
    shuffled = torch.cat([c.row for c in reader.chunks(shuffle=True, seed=3)])
    assert sorted(shuffled.tolist()) == list(range(res.rows)) and not torch.equal(shuffled, rows)


def _corrupt(df: pd.DataFrame) -> pd.DataFrame:
    bad = df.drop(columns=[c for c in df.columns if c.startswith("oracle")]).copy()
    bad.loc[5, "engagement"] = -1.0
    bad.loc[7, "engagement"] = np.nan
    bad.at[9, "slate"] = np.array([3, 3])
    bad.at[11, "slate"] = np.array([3, 12])
    bad.at[12, "slate"] = np.array([0, 10])
    bad.loc[13, "click_position"] = 5
    bad.loc[14, "slate_propensity"] = 0.0
    bad.at[15, "user_features"] = np.zeros(3, dtype=np.float32)
    bad.loc[16, "engagement"], bad.loc[16, "click_position"] = 4.0, -1
    bad.loc[17, ["session_id", "step"]] = bad.loc[16, ["session_id", "step"]].to_numpy()
    return bad


def test_bad_rows_are_quarantined_with_one_problem_each_and_counted(recsim_log, tmp_path):
    path, res = recsim_log
    bad = _corrupt(read_logs_frame(path))
    report = ingest_logs(bad, tmp_path / "clean.parquet", chunk_rows=1000)
    assert report.rows_in == res.rows
    assert report.rows_quarantined == 10 and report.rows_clean == res.rows - 10  # nothing dropped silently
    msgs = [p.message() for p in report.problems]
    assert msgs == [
        "column 'engagement': 1 bad row, negative or not finite (first bad row: 5)",
        "column 'engagement': 1 bad row, null (first bad row: 7)",
        "column 'slate': 1 bad row, the same candidate twice (first bad row: 9)",
        "column 'slate': 2 bad rows, a candidate index outside [0, 10) (first bad row: 11)",
        "column 'click_position': 1 bad row, outside [-1, 2) (first bad row: 13)",
        "column 'slate_propensity': 1 bad row, not in (0, 1] (first bad row: 14)",
        "column 'user_features': 1 bad row, list length is not 20 (first bad row: 15)",
        "column 'engagement': 1 bad row, positive without a click (first bad row: 16)",
        "column 'step': 1 bad row, repeats an earlier (session_id, step) (first bad row: 17)",
    ]
    q = pd.read_parquet(report.quarantine)
    assert q["_source_row"].tolist() == [5, 7, 9, 11, 12, 13, 14, 15, 16, 17]
    assert q.loc[q._source_row == 9, "_problems"].item() == "slate: the same candidate twice"
    clean = read_logs_frame(tmp_path / "clean.parquet")
    assert len(clean) == res.rows - 10 and report.metrics()["rows_quarantined"] == 10
    # strict mode: one error that lists every problem, nothing written
    with pytest.raises(LogSchemaError) as err:
        ingest_logs(bad, tmp_path / "strict.parquet", strict=True)
    text = str(err.value)
    assert "10 bad row(s)" in text and all(m in text for m in msgs)
    assert not (tmp_path / "strict.parquet").exists()


def test_structural_problems_raise_one_error_listing_each(recsim_log, tmp_path):
    path, _ = recsim_log
    df = read_logs_frame(path)
    with pytest.raises(LogSchemaError) as err:
        ingest_logs(df.drop(columns=["slate", "engagement"]), tmp_path / "x.parquet")
    assert "2 problems" in str(err.value)
    assert "column 'slate': missing" in str(err.value) and "column 'engagement': missing" in str(err.value)
    wrong = df.copy()
    wrong["step"] = wrong["step"].astype(str)
    with pytest.raises(LogSchemaError, match="column 'step': type (large_)?string cannot hold int values"):
        ingest_logs(wrong, tmp_path / "x.parquet")
    flat = df.drop(columns=["candidate_doc_ids"]).copy()
    with pytest.raises(LogSchemaError, match="cannot tell the number of candidates"):
        ingest_logs(flat, tmp_path / "x.parquet")
    report = ingest_logs(flat, tmp_path / "ok.parquet", num_candidates=10)  # told C: fine
    assert report.rows_quarantined == 0
    nested = df.copy()
    nested["candidate_features"] = [np.asarray(v).reshape(10, 20).tolist() for v in nested["candidate_features"]]
    nested = nested.drop(columns=["candidate_doc_ids"])
    report = ingest_logs(nested, tmp_path / "nested.parquet")
    assert report.rows_clean == len(df)
    got = LogReader(tmp_path / "nested.parquet").read_all().docs
    want = LogReader(path).read_all().docs
    assert torch.equal(got, want)
    with pytest.raises(LogSchemaError, match="no rows"):
        ingest_logs(df.iloc[:0], tmp_path / "x.parquet")


def test_missing_propensities_are_estimated_by_a_logging_model(tmp_path):
    """Logs of a Plackett–Luce policy whose propensities are dropped get them back from a learned model."""
    env = InterestEvolutionVectorEnv(100, seed=0, num_candidates=6, horizon=20)
    true_w = torch.tensor([1.5, -1.0, 0.8, -0.6])

    def score(obs, info):  # a smooth function of the doc features the model can learn
        return obs.docs @ true_w

    logging = PlackettLucePolicy(6, 2, score, temperature=1.0, seed=0)
    generate_logs(env, logging, tmp_path / "pl.parquet", sessions=300, seed=1)
    df = read_logs_frame(tmp_path / "pl.parquet")
    report = ingest_logs(
        df.drop(columns=["slate_propensity", "position_propensity"]), tmp_path / "est.parquet", propensity_epochs=4
    )
    assert report.propensity_source == "estimated"
    assert read_meta(tmp_path / "est.parquet").propensity_source == "estimated"
    assert report.propensity_nll < report.uniform_nll - 0.3
    est = LogReader(tmp_path / "est.parquet").read_all().slate_propensity.numpy()
    true = df["slate_propensity"].to_numpy()
    assert np.corrcoef(np.log(est), np.log(true))[0, 1] > 0.95
    assert np.median(np.abs(np.log(est / true))) < 0.2
    # the estimated logging model is recorded and rebuilds as a policy
    assert read_meta(tmp_path / "est.parquet").logging_policy_object().kind == "plackett_luce"


def test_random_policy_logs_uniform_propensities(tmp_path):
    env = InterestEvolutionVectorEnv(16, seed=0, num_candidates=5, horizon=5)
    generate_logs(env, RandomPolicy(5, 2, seed=0), tmp_path / "r.parquet", sessions=16, seed=0)
    chunk = LogReader(tmp_path / "r.parquet").read_all()
    assert torch.allclose(chunk.slate_propensity, torch.full((80,), 1 / 20, dtype=torch.float64))
    assert torch.allclose(chunk.position_propensity, torch.full((80, 2), 1 / 5, dtype=torch.float64))
    assert chunk.has_next.sum() == 80 - 16


# ---- logs as users have them: unordered rows, partitioned exports, empty files ---------------------
@pytest.fixture(scope="module")
def ng_log(tmp_path_factory):
    """300 sessions x 50 steps of the NG twin (15 000 rows), as written (ordered) and shuffled."""
    folder = tmp_path_factory.mktemp("ng")
    env = InterestEvolutionVectorEnv(100, seed=0, num_candidates=10, horizon=50)
    generate_logs(env, RandomPolicy(10, 2, seed=0), folder / "log.parquet", sessions=300, seed=0)
    df = read_logs_frame(folder / "log.parquet")
    shuffled = df.sample(frac=1.0, random_state=0).reset_index(drop=True)
    shuffled.to_parquet(folder / "shuffled.parquet")
    return folder, df, shuffled


def _sessions_and_rtg(path, gamma=0.9):
    chunk = LogReader(path, chunk_rows=4096).read_all()
    return int(chunk.segment.max()) + 1, float(chunk.reward_to_go(gamma).mean())


def test_shuffled_log_is_sorted_on_ingestion_within_a_memory_bound(ng_log, tmp_path):
    folder, df, shuffled = ng_log
    ordered = ingest_logs(folder / "log.parquet", tmp_path / "ordered.parquet")
    assert ordered.sort is None  # already in order: not sorted again
    report = ingest_logs(folder / "shuffled.parquet", tmp_path / "sorted.parquet", chunk_rows=1000)
    assert report.rows_in == report.rows_clean == 15_000 and report.rows_quarantined == 0
    # the external sort: 15 sorted runs of 1000 rows, never more than one chunk of rows in memory
    assert report.sort.runs == 15 and report.sort.rows == 15_000
    assert 0 < report.sort.peak_rows <= 1000
    assert report.metrics()["sorted"] == 1.0
    sessions, rtg = _sessions_and_rtg(tmp_path / "sorted.parquet")
    want_sessions, want_rtg = _sessions_and_rtg(tmp_path / "ordered.parquet")
    assert sessions == want_sessions == 300
    assert rtg == pytest.approx(want_rtg, rel=1e-6)
    assert read_logs_frame(tmp_path / "sorted.parquet").equals(read_logs_frame(tmp_path / "ordered.parquet"))
    # refusing instead: one error naming the first out-of-order row of the file
    with pytest.raises(LogSchemaError) as err:
        ingest_logs(folder / "shuffled.parquet", tmp_path / "refused.parquet", order="require")
    text = str(err.value)
    assert "not ordered by (session_id, step)" in text and text.count("\n") == 0
    assert not (tmp_path / "refused.parquet").exists()


def test_rows_out_of_step_order_are_found_and_bad_rows_keep_their_source_row(ng_log, tmp_path):
    folder, df, _ = ng_log
    raw = df.head(200).copy()
    # swap two steps inside session 0 and break a row: the order check names row 3, the quarantine row 7
    raw.iloc[[2, 3]] = raw.iloc[[3, 2]].to_numpy()
    raw.loc[7, "click_position"] = 9
    raw.to_parquet(tmp_path / "raw.parquet")
    with pytest.raises(LogSchemaError, match=r"row 3 \(session_id 0, step 2\) comes after a later step"):
        ingest_logs(tmp_path / "raw.parquet", tmp_path / "x.parquet", order="require")
    report = ingest_logs(tmp_path / "raw.parquet", tmp_path / "fixed.parquet", chunk_rows=64)
    assert report.sort is not None and report.rows_quarantined == 1
    assert [p.message() for p in report.problems] == [
        "column 'click_position': 1 bad row, outside [-1, 2) (first bad row: 7)"
    ]
    assert pd.read_parquet(report.quarantine)["_source_row"].tolist() == [7]
    clean = read_logs_frame(tmp_path / "fixed.parquet")
    assert clean["step"].tolist()[:7] == list(range(7))
    # a session that comes back after another one began
    split = pd.concat([df.iloc[:10], df.iloc[50:60], df.iloc[10:50]], ignore_index=True)
    split.to_parquet(tmp_path / "split.parquet")
    with pytest.raises(LogSchemaError, match=r"row 20 \(session_id 0, step 10\) comes back to a session"):
        ingest_logs(tmp_path / "split.parquet", tmp_path / "x.parquet", order="require")


def test_external_sort_orders_by_session_step_and_source_row_in_bounded_batches(tmp_path):
    import pyarrow as pa

    from recsys.logs.order import SOURCE_ROW, SortStats, external_sort

    rng = np.random.default_rng(0)
    n = 3000
    s = rng.integers(0, 40, n)
    t = rng.integers(0, 30, n)  # many repeated keys: ties keep the source order
    nulls = rng.random(n) < 0.01
    table = pa.table({"session_id": pa.array(s, mask=nulls), "step": pa.array(t), "x": pa.array(np.arange(n))})
    stats = SortStats()
    out = pa.Table.from_batches(
        list(
            external_sort(
                lambda cols: iter(table.to_batches(max_chunksize=70)), tmp_path / "runs", chunk_rows=100, stats=stats
            )
        )
    )
    assert stats.runs == 30 and stats.peak_rows <= 100 and stats.merge_batch == 3
    want = np.lexsort((np.arange(n), t, np.where(nulls, np.iinfo(np.int64).max, s)))
    assert out.column(SOURCE_ROW).to_numpy().tolist() == want.tolist()
    assert out.column("x").to_numpy().tolist() == want.tolist()
    assert not list((tmp_path / "runs").iterdir())  # the sorted runs are removed


def test_a_partitioned_directory_ingests_to_the_same_log_as_the_file(ng_log, tmp_path):
    folder, df, shuffled = ng_log
    parts = tmp_path / "export"
    for i, piece in enumerate(np.array_split(np.arange(len(shuffled)), 3)):
        (parts / f"day={i}").mkdir(parents=True)
        shuffled.iloc[piece].to_parquet(parts / f"day={i}" / "part-0.parquet")
    a = ingest_logs(parts, tmp_path / "from_dir.parquet", chunk_rows=4000)
    b = ingest_logs(folder / "log.parquet", tmp_path / "from_file.parquet")
    assert a.rows_in == b.rows_in == 15_000 and a.rows_quarantined == 0
    assert read_logs_frame(tmp_path / "from_dir.parquet").equals(read_logs_frame(tmp_path / "from_file.parquet"))
    assert read_meta(tmp_path / "from_dir.parquet").layout == read_meta(tmp_path / "from_file.parquet").layout


def test_an_empty_log_gets_one_message(recsim_log, tmp_path):
    path, _ = recsim_log
    empty = pd.DataFrame({c: pd.Series([], dtype=object) for c in read_logs_frame(path).columns})
    empty.to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(LogSchemaError) as err:
        ingest_logs(tmp_path / "empty.parquet", tmp_path / "x.parquet")
    assert str(err.value) == f"log {tmp_path / 'empty.parquet'} has no rows: there is nothing to ingest"
    assert not (tmp_path / "x.parquet").exists()


def test_the_log_records_the_simulator_it_ran_on(ng_log):
    """The NG twin's frozen corpus is in the metadata: every rebuilt simulator, whatever its seed,
    shows the logged documents (doc id → features, quality, length)."""
    folder, df, _ = ng_log
    meta = read_meta(folder / "log.parquet")
    assert meta.env_kind == "ng" and len(meta.env_corpus["doc_id"]) == meta.env_config["num_docs"]
    ids = np.stack(df["candidate_doc_ids"].to_numpy())
    docs = np.stack(df["candidate_features"].to_numpy()).reshape(len(df), meta.num_candidates, meta.doc_dim)
    logged = np.zeros((int(ids.max()) + 1, meta.doc_dim), dtype=np.float32)
    logged[ids.reshape(-1)] = docs.reshape(-1, meta.doc_dim)
    for seed in (1, 12345):
        env = meta.make_env(4, seed=seed)
        env.reset(seed=seed)
        corpus = env.corpus
        table = torch.cat([corpus.features, corpus.quality[:, None], corpus.length[:, None]], 1).numpy()
        seen = np.unique(ids)
        assert np.array_equal(table[seen - 1], logged[seen])
