"""Slate learners: exact slate optimisation, the SlateQ target, SlateQ beating myopic greedy and random
online in the NG twin, top-K off-policy REINFORCE and conservative SlateQ trained only on logs
beating the logging policy online, and behaviour cloning recovering the logging policy."""

import math

import numpy as np
import pytest
import torch

from core_rl.common.base import Agent
from core_rl.registry import get_algo
from recsys.choice_model import enumerate_slates, optimize_slates, slate_q, slate_q_table
from recsys.logs import LogReader, generate_logs
from recsys.offline import BehaviorCloning, ConservativeSlateQ
from recsys.pipeline import popularity_from_rollout
from recsys.policies import (
    EpsilonGreedyPolicy,
    MyopicGreedyPolicy,
    RandomPolicy,
    SlateDecision,
    SlatePolicy,
    evaluate_online,
    load_policy,
    save_policy,
)
from recsys.simulation import InterestEvolutionVectorEnv
from recsys.slateq import SlateQ, SlateQConfig, SlateQLearner, SlateTransitions
from recsys.topk_reinforce import TopKReinforce, capped_ratio, topk_multiplier
from tests.seeding import seed as shifted

torch.set_num_threads(1)
TWIN = dict(num_candidates=10, horizon=50)


def online(policy, sessions=600, seed=77):
    return evaluate_online(InterestEvolutionVectorEnv(300, seed=seed, **TWIN), policy, sessions, seed=seed)


# ---- slate optimisation and the SlateQ target -----------------------------------------------------
@pytest.mark.parametrize("c,k", [(10, 2), (8, 3), (12, 4)])
def test_lp_slate_optimisation_is_exact_and_heuristics_are_not_better(c, k):
    g = torch.Generator().manual_seed(c * 10 + k)
    logits, none = torch.randn(500, c, generator=g), 2 * torch.randn(500, generator=g)
    q = 3 * torch.randn(500, c, generator=g) + 1
    best = slate_q_table(logits, none, q, enumerate_slates(c, k)).max(1).values
    for method in ("lp", "enumerate"):
        assert torch.allclose(slate_q(logits, none, q, optimize_slates(logits, none, q, k, method)), best, atol=1e-5)
    for method in ("topk", "greedy"):
        got = slate_q(logits, none, q, optimize_slates(logits, none, q, k, method))
        assert bool((got <= best + 1e-5).all())
    topk = slate_q(logits, none, q, optimize_slates(logits, none, q, k, "topk"))
    assert float((best - topk).mean()) > 0.01  # the heuristic does lose value: exactness matters


def test_slateq_targets_follow_the_choice_model():
    """y = r + γ Σ_j P(j|s',A') Q̄'(s',j) with A' the next slate (SARSA) or the maximiser (Q-learning)."""
    from recsys.policies import ObsLayout

    cfg = SlateQConfig(choice_model="learned", gamma=0.5, hidden_sizes=(8,))
    learner = SlateQLearner(ObsLayout(2, 4, 3), 2, cfg)
    b = 6
    g = torch.Generator().manual_seed(0)
    batch = SlateTransitions(
        torch.randn(b, 2, generator=g),
        torch.randn(b, 4, 3, generator=g),
        torch.tensor([[0, 1]] * b),
        torch.tensor([0, 1, 2, 0, 1, 2]),
        torch.arange(b).float(),
        torch.randn(b, 2, generator=g),
        torch.randn(b, 4, 3, generator=g),
        torch.tensor([0, 0, 0, 0, 0, 1.0]),
        torch.tensor([[2, 3]] * b),
    )
    with torch.no_grad():
        logits, none = learner.choice.logits(batch.next_user, batch.next_docs)
        q_next = learner.q_target(batch.next_user, batch.next_docs)
        p = torch.softmax(torch.cat([logits[:, [2, 3]], none.unsqueeze(1)], 1), 1)
        manual_sarsa = batch.reward + 0.5 * (1 - batch.done) * (p[:, :2] * q_next[:, [2, 3]]).sum(1)
        best = slate_q_table(logits, none, q_next, enumerate_slates(4, 2)).max(1).values
        manual_q = batch.reward + 0.5 * (1 - batch.done) * best
    learner.config.target = "sarsa"
    assert torch.allclose(learner.target_q(batch), manual_sarsa, atol=1e-6)
    learner.config.target = "q_learning"
    assert torch.allclose(learner.target_q(batch), manual_q, atol=1e-6)
    # only clicked items (choice < K) carry loss
    _, td, metrics = learner.td_loss(batch)
    assert bool((td[batch.choice == 2] == 0).all()) and metrics["clicked_fraction"] == pytest.approx(4 / 6)


# ---- SlateQ online ------------------------------------------------------------------------------------
def test_slateq_beats_myopic_greedy_and_random_online_in_the_twin(tmp_path):
    env = InterestEvolutionVectorEnv(16, seed=shifted(0), **TWIN)
    agent = SlateQ(env, seed=shifted(0), learning_starts=1000, exploration_fraction=0.2)
    agent.learn(20_000)
    slateq = online(agent.as_policy())
    myopic = online(MyopicGreedyPolicy(10, 2))
    random = online(RandomPolicy(10, 2, seed=shifted(0)))
    print(
        f"SlateQ {slateq.mean:.2f}±{slateq.stderr:.2f}  myopic {myopic.mean:.2f}±{myopic.stderr:.2f}  "
        f"random {random.mean:.2f}±{random.stderr:.2f}"
    )
    assert slateq.mean > myopic.mean + 2.0 and slateq.mean > random.mean + 6.0
    # a core_rl agent: registered, saved, reloaded, same greedy slates
    assert get_algo("slateq").cls is SlateQ
    agent.save(tmp_path / "slateq.pt")
    again = Agent.load(tmp_path / "slateq.pt", env=InterestEvolutionVectorEnv(16, seed=shifted(0), **TWIN))
    obs = agent._obs[:5]
    assert np.array_equal(agent.predict(obs), again.predict(obs))
    # and its policy file round-trips
    save_policy(agent.as_policy(), tmp_path / "p.pt")
    pol = load_policy(tmp_path / "p.pt")
    o = {"user": obs[:, :2], "doc": obs[:, 2:].reshape(5, 10, 4)}
    assert np.array_equal(pol.act(o), agent.predict(obs))


# ---- learning from logs ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def popularity_logs(tmp_path_factory):
    """500 sessions of ε-greedy (ε = 0.3) popularity-by-doc-id logging in the twin."""
    env = InterestEvolutionVectorEnv(250, seed=shifted(0), **TWIN)
    pop = popularity_from_rollout(
        InterestEvolutionVectorEnv(256, seed=shifted(100), **TWIN), steps=40, seed=shifted(100)
    )
    logging = EpsilonGreedyPolicy(pop, 0.3, seed=shifted(1))
    path = tmp_path_factory.mktemp("pop") / "pop.parquet"
    generate_logs(env, logging, path, sessions=500, seed=shifted(2), include_oracle=False)
    return path, logging, online(logging)


def test_topk_correction_terms():
    pi = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    assert torch.allclose(topk_multiplier(pi, 1), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(topk_multiplier(pi, 3), 3 * (1 - pi) ** 2)
    # λ_K is the derivative of α = 1 − (1 − π)^K
    eps = 1e-6
    alpha = lambda p: 1 - (1 - p) ** 4  # noqa: E731
    assert torch.allclose(topk_multiplier(pi, 4), (alpha(pi + eps) - alpha(pi - eps)) / (2 * eps), atol=1e-6)
    assert torch.allclose(
        capped_ratio(pi, torch.tensor([0.2, 0.01, 0.9], dtype=torch.float64), 10.0),
        torch.tensor([0.5, 10.0, 1.0], dtype=torch.float64),
    )


def test_topk_reinforce_trained_only_on_logs_beats_the_logging_policy_online(popularity_logs):
    path, logging, logged = popularity_logs
    reader = LogReader(path, chunk_rows=8192)
    learner = TopKReinforce(reader.layout, 2, epochs=3, seed=shifted(0)).fit(reader)
    assert learner.history and learner.history[-1]["beta_nll"] < math.log(10)  # β learned something
    res = online(learner.as_policy())
    print(f"top-K REINFORCE {res.mean:.2f}±{res.stderr:.2f} vs logging {logged.mean:.2f}±{logged.stderr:.2f}")
    assert res.mean > logged.mean + 3.0
    # without the off-policy and top-K corrections it is a different estimator (not a no-op switch)
    plain = TopKReinforce(
        reader.layout, 2, epochs=1, seed=shifted(0), off_policy_correction=False, topk_correction=False
    )
    corrected = TopKReinforce(reader.layout, 2, epochs=1, seed=shifted(0))
    chunk = next(iter(reader.chunks()))
    rows, item, ret, beta = corrected.events(chunk)
    l1, m1 = corrected.loss(chunk.user[rows[:256]], chunk.docs[rows[:256]], item[:256], ret[:256], None)
    l2, m2 = plain.loss(chunk.user[rows[:256]], chunk.docs[rows[:256]], item[:256], ret[:256], None)
    assert m2["lambda_mean"] == 1.0 and m1["lambda_mean"] > 1.0 and m1["policy_loss"] != m2["policy_loss"]


def test_conservative_slateq_trained_only_on_logs_beats_the_logging_policy_online(popularity_logs):
    path, logging, logged = popularity_logs
    reader = LogReader(path, chunk_rows=8192)
    cql = ConservativeSlateQ(reader.layout, 2, seed=shifted(0), cql_alpha=1.0).fit(reader, epochs=2)
    assert cql.history and cql.history[-1]["cql_gap"] > 0
    res = online(cql.as_policy())
    print(f"CQL SlateQ {res.mean:.2f}±{res.stderr:.2f} vs logging {logged.mean:.2f}")
    assert res.mean > logged.mean + 3.0


class AffinityTopK(SlatePolicy):
    """A deterministic logging policy of the features: top-K by −‖x − f‖ + quality."""

    kind = "affinity_topk_test"

    def decide(self, obs, info):
        score = -torch.linalg.vector_norm(obs.user.unsqueeze(1) - obs.docs[..., :2], dim=-1) + obs.docs[..., 2]
        n = len(obs)
        return SlateDecision(
            score.topk(self.slate_size, dim=1).indices,
            torch.ones(n, dtype=torch.float64),
            torch.ones(n, self.slate_size, dtype=torch.float64),
        )


def test_behaviour_cloning_recovers_the_logging_policy(tmp_path):
    env = InterestEvolutionVectorEnv(200, seed=shifted(0), num_candidates=10, horizon=20)
    base = AffinityTopK(10, 2)
    generate_logs(
        env, EpsilonGreedyPolicy(base, 0.3, seed=shifted(0)), tmp_path / "aff.parquet", sessions=400, seed=shifted(0)
    )
    reader = LogReader(tmp_path / "aff.parquet", chunk_rows=4096)
    bc = BehaviorCloning(reader.layout, 2, epochs=4, seed=shifted(0)).fit(reader)
    uniform = math.log(90)
    assert bc.nll < uniform - 1.0
    fresh = InterestEvolutionVectorEnv(500, seed=shifted(5), num_candidates=10, horizon=20)
    obs, info = fresh.reset(seed=5)
    clone, mode = bc.as_policy()(obs).slates, base(obs).slates
    agree = float((clone.sort(1).values == mode.sort(1).values).all(1).float().mean())
    print(f"BC NLL {bc.nll:.3f} (uniform {uniform:.3f}); agrees with the logging policy's mode on {agree:.1%}")
    assert agree > 0.8


class _Payload:
    """Any pickled object: loading it would run code chosen by whoever wrote the file."""

    def __reduce__(self):
        return (print, ("unpickled!",))


def test_policy_file_with_a_pickled_object_is_refused(tmp_path):
    from core_rl.common.errors import CheckpointError

    policy = RandomPolicy(10, 2, seed=3)
    path = save_policy(policy, tmp_path / "ok.pt", {"algo": "random"})
    again = load_policy(path)  # plain values and tensors: loads with weights_only=True
    assert isinstance(again, RandomPolicy) and again.spec() == policy.spec()
    good = torch.load(path, weights_only=True)
    torch.save({**good, "extra": {"algo": _Payload()}}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not loaded"):
        load_policy(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="JSON-able"):
        save_policy(policy, tmp_path / "bad.pt", {"algo": _Payload()})


def test_slateq_is_an_off_policy_agent_that_replays_slates_beside_responses():
    from core_rl.common.off_policy import OffPolicyAgent
    from core_rl.q_learning.dqn import DQN

    agent = SlateQ(
        InterestEvolutionVectorEnv(4, seed=0, **TWIN), seed=0, n_envs=4, learning_starts=10**6, buffer_size=400
    )
    assert isinstance(agent, OffPolicyAgent) and not isinstance(agent, DQN)
    agent.learn(80)  # 20 vector-env steps of uniform random slates, no learning yet
    stored = agent.replay.actions[:20]  # [T, N, K + 1]: slate, then the click
    slates, click = stored[..., :2], stored[..., 2]
    assert stored.dtype == torch.long and ((slates >= 0) & (slates < 10)).all()
    assert (slates[..., 0] != slates[..., 1]).all() and ((click >= 0) & (click <= 2)).all()
    clicked = click < 2
    assert clicked.any() and (~clicked).any()
    assert torch.equal(clicked, agent.replay.rewards[:20] > 0)  # engagement only where the user clicked
    with pytest.raises(Exception, match="n_step"):
        SlateQ(InterestEvolutionVectorEnv(4, seed=0, **TWIN), n_step=3)
