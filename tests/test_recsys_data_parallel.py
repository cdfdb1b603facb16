"""Logs larger than a machine, part two: behaviour cloning from logs with two data-parallel workers
(torch.distributed over gloo, loopback only) follows one worker's loss curve at the same global batch."""

import pytest
import torch

from core_rl.common.errors import ConfigError
from recsys.data_parallel import BehaviorCloningJob, run_data_parallel
from recsys.logs import LogReader, generate_logs
from recsys.logs.propensity import PropensityModel
from recsys.policies import EpsilonGreedyPolicy, PopularityPolicy
from recsys.simulation import RecSimInterestEvolutionVectorEnv
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
    job = BehaviorCloningJob(str(log), dict(seed=seed(0), epochs=2, batch_size=63, hidden_sizes=(32,)), chunk_rows=200)
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
    a, b = ranks[0].value["state"], ranks[1].value["state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    reader = LogReader(log)
    chunk = reader.read_all()
    with torch.no_grad():
        m1, m2 = _model(one["state"], reader), _model(a, reader)
        s1, s2 = m1.score(chunk.user, chunk.docs), m2.score(chunk.user, chunk.docs)
        assert torch.allclose(s1 - s1.mean(1, keepdim=True), s2 - s2.mean(1, keepdim=True), atol=1e-4)
        nll1 = -m1.log_prob(chunk.user, chunk.docs, chunk.slate).mean()
        nll2 = -m2.log_prob(chunk.user, chunk.docs, chunk.slate).mean()
    assert float(nll1) == pytest.approx(float(nll2), rel=1e-5)


def test_a_worker_count_below_one_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match="workers must be at least 1"):
        run_data_parallel(BehaviorCloningJob("unused.parquet", {}), workers=0)
