"""Logs larger than a machine, part two: the recommender's learners trained from logs with two
data-parallel workers (torch.distributed over gloo, loopback only) follow one worker's loss curve at the
same global batch — behaviour cloning, top-K REINFORCE, offline SlateQ and its CQL variant — also
through ``deeprl recsys train --workers 2``."""

import json

import pytest
import torch

from core_rl.common.errors import ConfigError
from recsys.data_parallel import DataParallel, run_data_parallel
from recsys.log_learners import LearnerJob
from recsys.logs import LogReader, generate_logs
from recsys.logs.propensity import PropensityModel
from recsys.policies import EpsilonGreedyPolicy, PopularityPolicy
from recsys.simulation import RecSimInterestEvolutionVectorEnv
from recsys.slateq import SlateTransitions
from tests.seeding import seed

torch.set_num_threads(1)
pytestmark = pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="torch was built without gloo")


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddp") / "log.parquet"
    env = RecSimInterestEvolutionVectorEnv(32, seed=seed(0))
    pop = PopularityPolicy(10, 2, torch.linspace(0, 1, 20), key="topic", num_topics=20)
    generate_logs(env, EpsilonGreedyPolicy(pop, 0.3, seed=seed(1)), path, sessions=24, seed=seed(0))
    return path


def _model(state, reader):
    m = PropensityModel(reader.meta.user_dim, reader.meta.doc_dim, (32,))
    m.load_state_dict(state)
    return m


def test_two_workers_follow_one_workers_loss_curve_at_the_same_global_batch(log):
    # an odd global batch: the shards hold 32 and 31 rows, so the gradient weights n_r/B matter
    job = LearnerJob("bc", str(log), dict(seed=seed(0), epochs=2, batch_size=63, hidden_sizes=(32,)), chunk_rows=200)
    one = job(None)
    ranks = run_data_parallel(job, workers=2, timeout_s=300)
    curve = torch.tensor(one["curve"])
    assert len(curve) > 20 and curve[-5:].mean() < curve[:5].mean() - 0.1  # it learns
    for r in ranks:
        got = torch.tensor(r.value["curve"])
        assert got.shape == curve.shape
        assert torch.allclose(got, curve, rtol=1e-5, atol=1e-6)
        assert r.comm_seconds > 0 and r.cpu_seconds > 0
    # both ranks hold the same parameters, and the model is the single worker's: the same likelihood of
    # every logged slate (Plackett–Luce ignores a shift of all scores, so only centred scores are compared)
    a, b = ranks[0].value["state"]["model"], ranks[1].value["state"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    reader = LogReader(log)
    chunk = reader.read_all()
    with torch.no_grad():
        m1, m2 = _model(one["state"]["model"], reader), _model(a, reader)
        s1, s2 = m1.score(chunk.user, chunk.docs), m2.score(chunk.user, chunk.docs)
        assert torch.allclose(s1 - s1.mean(1, keepdim=True), s2 - s2.mean(1, keepdim=True), atol=1e-4)
        nll1 = -m1.log_prob(chunk.user, chunk.docs, chunk.slate).mean()
        nll2 = -m2.log_prob(chunk.user, chunk.docs, chunk.slate).mean()
    assert float(nll1) == pytest.approx(float(nll2), rel=1e-5)


# Top-K REINFORCE: a small clip (0.05, against the default 10) keeps the equality test tight. The
# gradient summed over two shards differs from one worker's in the last float bits; on components whose
# gradient is zero up to rounding (the softmax heads' biases: π and β ignore a shift of all logits) Adam
# divides that noise by its own tiny second moment and takes full-size steps, and at the default clip
# the curves drift apart by ~3e-3 over 99 steps (measured). Clipped to 0.05 every gradient is small
# against Adam's ε = 1e-8, which damps the noise: the curves agree to ~2e-6. Clipping happens after the
# all-reduce either way (a clip before it would change the curve far more than this).
LEARNERS = {
    "topk_reinforce": dict(batch_size=31, max_grad_norm=0.05),
    "slateq": dict(batch_size=63, target_update_interval=10),
    "cql": dict(batch_size=63, target_update_interval=10, cql_alpha=0.5),
}


@pytest.mark.parametrize("learner", sorted(LEARNERS))
def test_two_workers_reproduce_one_workers_curve_for_each_learner(log, learner):
    cfg = dict(seed=seed(0), epochs=1, hidden_sizes=(32,), **LEARNERS[learner])
    job = LearnerJob(learner, str(log), cfg, chunk_rows=200)
    one = job(None)
    ranks = run_data_parallel(job, workers=2, timeout_s=300)
    curve = torch.tensor(one["curve"])
    assert len(curve) > 10
    steps = [(m, s) for m, s in one["records"] if "epoch" not in m]
    for r in ranks:
        got = torch.tensor(r.value["curve"])
        assert got.shape == curve.shape
        assert torch.allclose(got, curve, rtol=1e-4, atol=1e-5), (got - curve).abs().max()
        # every metric of every step, not only the curve's (baseline, weights, clicked share, choice NLL, …)
        for (m1, _), (m2, _) in zip(steps, [(m, s) for m, s in r.value["records"] if "epoch" not in m], strict=True):
            assert m1.keys() == m2.keys()
            for key in m1:
                assert m2[key] == pytest.approx(m1[key], rel=1e-3, abs=1e-4, nan_ok=True), key
    # the ranks end with identical networks (target networks and the learned choice model included)
    a, b = ranks[0].value["state"], ranks[1].value["state"]
    assert a.keys() == b.keys() == one["state"].keys()
    for net in a:
        assert all(torch.equal(a[net][k], b[net][k]) for k in a[net]), net
        # and the single worker's, but for the softmax heads' biases (a shift of all logits: no gradient)
        same = [k for k in a[net] if not (learner == "topk_reinforce" and k.endswith("head.0.bias"))]
        assert all(torch.allclose(a[net][k], one["state"][net][k], atol=1e-4) for k in same), net


def test_shards_split_tensors_tuples_and_dataclasses_with_none_fields():
    dp = DataParallel(rank=1, world=2)
    t = torch.arange(5)
    batch = SlateTransitions(t, t, t, t, t.float(), t, t, t.float(), None, t > 2)
    part = dp.shard_batch(batch)
    assert torch.equal(part.user, torch.tensor([1, 3])) and part.next_slate is None
    assert torch.equal(part.valid, torch.tensor([False, True]))
    assert (dp.rows, dp.total, dp.weight) == (2, 5, 0.4)
    user, none, scalar = dp.shard_batch((t, None, torch.tensor(7.0)))
    assert torch.equal(user, torch.tensor([1, 3])) and none is None and float(scalar) == 7.0


def _run_cli(capsys, *argv):
    from pipelines.cli import main

    code = main(["recsys", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _runs(tracking_uri):
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("recsys")
    return client, [] if exp is None else client.search_runs([exp.experiment_id])


@pytest.mark.slow  # ~20 s: two spawned ranks (imports) and an MLflow store with a registered model
def test_cli_trains_with_two_workers_the_one_worker_model(capsys, tracking_uri, log):
    # `deeprl recsys train --workers 2`: a FINISHED run with rank 0's step and epoch metrics, the one-worker
    # epoch means, the model registered, and the policy the single worker's
    cfg = dict(epochs=1, hidden_sizes=[32], batch_size=31, max_grad_norm=0.05)
    sets = ["--set", *(f"{k}={json.dumps(v)}" for k, v in cfg.items())]
    argv = ["train", "--logs", str(log), "--algo", "topk_reinforce", *sets, "--workers", "2", "--seed", str(seed(0))]
    code, out, err = _run_cli(capsys, *argv, "--json", "--tracking-uri", tracking_uri)
    assert code == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["workers"] == 2 and res["registered"]["version"] == "1"
    client, runs = _runs(tracking_uri)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and runs[0].data.params["workers"] == "2"
    one = LearnerJob("topk_reinforce", str(log), dict(cfg, seed=seed(0)), log_every=50)(None)
    epoch = one["history"][-1]
    for key in ("policy_loss", "beta_nll", "weight_mean", "entropy"):
        assert runs[0].data.metrics[key] == pytest.approx(epoch[key], rel=1e-3, abs=1e-4), key
    history = client.get_metric_history(res["run_id"], "beta_nll")
    assert [m.step for m in history] == [s for _, s in one["records"]]
    assert [m.value for m in history] == pytest.approx([m["beta_nll"] for m, _ in one["records"]], rel=1e-4)


def test_bad_worker_counts_are_refused_naming_the_field_and_create_no_run(capsys, tracking_uri, log):
    with pytest.raises(ConfigError, match="workers must be at least 1"):
        run_data_parallel(LearnerJob("bc", "unused.parquet", {}), workers=0)
    bad = [
        (["--logs", str(log), "--algo", "bc", "--workers", "0"], "workers must be an integer of at least 1, got 0"),
        (["--logs", str(log), "--algo", "bc", "--workers", "-2"], "workers must be an integer of at least 1"),
        (["--logs", str(log), "--algo", "myopic", "--workers", "2"], "workers=2: data-parallel training is for"),
        (["--logs", str(log), "--algo", "popularity", "--workers", "3"], "'popularity' trains in one process"),
        (["--env", "recsys/InterestEvolution-v0", "--algo", "slateq", "--workers", "2"], "online SlateQ"),
    ]
    for argv, message in bad:
        code, _, err = _run_cli(capsys, "train", *argv, "--tracking-uri", tracking_uri)
        assert code == 2 and message in err, (argv, err)
        assert err.count("error:") == 1
    assert _runs(tracking_uri)[1] == []
