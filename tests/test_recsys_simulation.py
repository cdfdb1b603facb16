"""recsys.simulation: the torch twin of RecSim NG's interest evolution and the original RecSim env.

Fast tests check the twin against per-user reference code written from the RecSim / RecSim NG
sources. The cross-checks run the real RecSim NG (and the original RecSim) in the isolated venv
(``recsys/build_recsim_env.sh``) and compare statistically; they skip when that venv is missing.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from scipy import stats

import recsys  # noqa: F401  (registers the env ids)
from core_rl.common.envs import make_vec_env
from core_rl.common.errors import ConfigError, EnvError
from recsys.policies import MyopicGreedyPolicy
from recsys.recsim_ng_bridge import NGJob, RecSimJob, recsim_ng_available, run_recsim_ng
from recsys.simulation import (
    InterestEvolutionConfig,
    InterestEvolutionVectorEnv,
    LinearScoringPolicy,
    RandomSlatePolicy,
    RecSimInterestEvolutionConfig,
    RecSimInterestEvolutionVectorEnv,
    best_myopic_slates,
    enumerate_slates,
    expected_slate_engagement,
    ng_choice_logits,
    ng_next_interest,
    ng_squash,
    ng_step,
    ng_step_users_last,
    recsim_choice_logits,
    recsim_update,
    rollout_engagement,
    sample_choice,
    sample_ng_corpus,
    slate_choice_probabilities,
    train_linear_policy_cem,
)
from recsys.simulation import env as sim_env
from recsys.simulation.user_model import counter_uniforms, ng_slate_table, ng_step_fused, ng_step_slate_table
from tests.seeding import seed

Z = 3.29  # two-sided 99.9 % normal quantile for the CI-based checks
P_MIN = 1e-3  # significance level of the chi-square / KS checks


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _welch_z(a: np.ndarray, b: np.ndarray) -> float:
    return abs(a.mean() - b.mean()) / math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))


# ------------------------------------------------------------------------------------------------
# per-user reference implementations, written loop-by-loop from the RecSim / RecSim NG code
# ------------------------------------------------------------------------------------------------
def _ref_ng_user(x, feats, quality, length, choice, cfg):
    """InterestEvolutionUser.next_response / next_state for ONE user, in numpy."""
    k = len(quality)
    logits = [2.0 - np.linalg.norm(x - feats[j]) for j in range(k)] + [cfg.no_click_mass]
    probs = np.exp(logits) / np.sum(np.exp(logits))
    if choice < k:
        consumed = 1.0 / (1.0 + np.exp(quality[choice])) * length[choice]
        linear = x + cfg.interest_step_size * quality[choice] * (feats[choice] - x)
    else:
        consumed, linear = 0.0, x
    m = cfg.max_user_affinity
    return probs, consumed, 4 * m * (1 / (1 + np.exp(-linear / m)) - 0.5)


def _ref_recsim_user(x, budget, feats, quality, length, choice, flip, cfg):
    """IEvUserModel.simulate_response / update_state for ONE user (proportional model), in numpy."""
    k = len(quality)
    scores = np.array([x @ feats[j] for j in range(k)] + [cfg.no_click_mass]) - cfg.min_normalizer
    probs = scores / scores.sum()
    x = x.copy()
    if choice == k:
        return probs, 0.0, x, budget - cfg.step_penalty
    doc = feats[choice]
    watch = min(budget, length[choice])
    expected_utility = x @ doc - cfg.min_normalizer
    alpha = (-cfg.alpha_y_intercept / cfg.alpha_x_intercept) * np.abs(x) + cfg.alpha_y_intercept
    update = alpha * doc * (doc - x)
    if flip < ((x + 1.0) / 2) @ doc:
        x += update
    else:
        x -= update
    x = np.clip(x, -1.0, 1.0)
    received = cfg.user_quality_factor * expected_utility + cfg.document_quality_factor * quality[choice]
    budget = budget - watch + cfg.user_update_alpha * watch * received
    return probs, watch, x, budget


# ------------------------------------------------------------------------------------------------
# fast twin tests
# ------------------------------------------------------------------------------------------------
def test_choice_probabilities_sum_to_one_and_match_per_user_reference():
    g = torch.Generator().manual_seed(0)
    ng_cfg, rs_cfg = InterestEvolutionConfig(no_click_mass=0.5), RecSimInterestEvolutionConfig(num_topics=4)
    n, c, k = 64, 7, 3
    x = torch.randn(n, 2, generator=g)
    docs = torch.randn(n, c, 2, generator=g)
    slates = torch.rand(n, c, generator=g).argsort(dim=1)[:, :k]
    logits, none = ng_choice_logits(x, docs, ng_cfg)
    probs = slate_choice_probabilities(logits, none, slates)
    assert probs.shape == (n, k + 1)
    torch.testing.assert_close(probs.sum(-1), torch.ones(n))
    for i in range(n):
        feats = docs[i, slates[i]].numpy()
        ref, _, _ = _ref_ng_user(x[i].numpy(), feats, np.zeros(k), np.ones(k), k, ng_cfg)
        np.testing.assert_allclose(probs[i].numpy(), ref, rtol=1e-5, atol=1e-6)
    # RecSim's proportional model: P ∝ [x.f - min_normalizer ..., no_click_mass - min_normalizer]
    xr = torch.rand(n, 4, generator=g) * 2 - 1
    topics = torch.randint(0, 4, (n, c), generator=g)
    feats_r = torch.nn.functional.one_hot(topics, 4).float()
    rl, rn = recsim_choice_logits(xr, feats_r, rs_cfg)
    pr = slate_choice_probabilities(rl, rn, slates)
    torch.testing.assert_close(pr.sum(-1), torch.ones(n))
    for i in range(n):
        ref, _, _, _ = _ref_recsim_user(
            xr[i].numpy().astype(np.float64),
            200.0,
            feats_r[i, slates[i]].numpy(),
            np.zeros(k),
            np.full(k, 4.0),
            k,
            0.0,
            rs_cfg,
        )
        np.testing.assert_allclose(pr[i].numpy(), ref, rtol=1e-5, atol=1e-6)


def test_sampled_choices_follow_the_probabilities():
    g = torch.Generator().manual_seed(1)
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).expand(40_000, 4)
    choice = sample_choice(probs, g)
    counts = np.bincount(choice.numpy(), minlength=4)
    assert stats.chisquare(counts, 40_000 * probs[0].numpy()).pvalue > P_MIN
    # the inverse-CDF draw itself
    u = torch.tensor([0.0, 0.49, 0.51, 0.79, 0.81, 0.96, 0.9999])
    assert sample_choice(probs[:7], uniform=u).tolist() == [0, 0, 1, 1, 2, 3, 3]


def test_ng_interest_update_matches_reference_and_stays_in_bounds():
    cfg = InterestEvolutionConfig(num_topics=3)
    g = torch.Generator().manual_seed(2)
    n, k = 200, 2
    x = 5 * torch.randn(n, 3, generator=g)
    feats = torch.randn(n, k, 3, generator=g)
    quality = torch.randn(n, k, generator=g)
    length = torch.full((n, k), 2.0)
    choice, consumed, nxt, probs = ng_step(x, feats, quality, length, cfg, g)
    for i in range(n):
        ref_p, ref_c, ref_x = _ref_ng_user(
            x[i].double().numpy(),
            feats[i].double().numpy(),
            quality[i].double().numpy(),
            length[i].double().numpy(),
            int(choice[i]),
            cfg,
        )
        np.testing.assert_allclose(probs[i].numpy(), ref_p, rtol=1e-5, atol=1e-6)
        assert consumed[i].item() == pytest.approx(ref_c, rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(nxt[i].numpy(), ref_x, rtol=1e-5, atol=1e-5)
    # squashing keeps interests inside (-2M, 2M) however extreme the corpus
    wild = InterestEvolutionConfig(
        num_topics=3, topic_min_utility=-50.0, topic_max_utility=50.0, interest_step_size=1.0, horizon=300
    )
    env = InterestEvolutionVectorEnv(64, config=wild, seed=0)
    obs, info = env.reset(seed=0)
    policy = RandomSlatePolicy(env.num_candidates, 2, seed=0)
    worst = 0.0
    for _ in range(300):
        obs, _, _, _, info = env.step(policy(obs))
        worst = max(worst, float(np.abs(info["user_interest"]).max()))
    assert 10.0 < worst <= 2 * wild.max_user_affinity  # float32 sigmoid saturates exactly at 2M


def test_recsim_update_matches_per_user_reference_and_stays_in_bounds():
    cfg = RecSimInterestEvolutionConfig(num_topics=5)
    g = torch.Generator().manual_seed(3)
    n, k = 300, 2
    x = torch.rand(n, 5, generator=g, dtype=torch.float64) * 2 - 1
    budget = torch.rand(n, generator=g, dtype=torch.float64) * 10
    topics = torch.randint(0, 5, (n, k), generator=g)
    feats = torch.nn.functional.one_hot(topics, 5).double()
    quality = torch.randn(n, k, generator=g, dtype=torch.float64) * 3
    length = torch.full((n, k), 4.0, dtype=torch.float64)
    choice = torch.randint(0, k + 1, (n,), generator=g)
    flip = torch.rand(n, generator=g, dtype=torch.float64)
    clicked = choice < k
    pick = choice.clamp(max=k - 1)
    rows = torch.arange(n)
    watch = torch.where(clicked, torch.minimum(budget, length[rows, pick]), torch.zeros(n, dtype=torch.float64))
    nx, nb = recsim_update(x, budget, clicked, watch, feats[rows, pick], quality[rows, pick], cfg, flip=flip)
    for i in range(n):
        _, ref_w, ref_x, ref_b = _ref_recsim_user(
            x[i].numpy(),
            budget[i].item(),
            feats[i].numpy(),
            quality[i].numpy(),
            length[i].numpy(),
            int(choice[i]),
            flip[i].item(),
            cfg,
        )
        assert watch[i].item() == pytest.approx(ref_w)
        np.testing.assert_allclose(nx[i].numpy(), ref_x, atol=1e-12)
        assert nb[i].item() == pytest.approx(ref_b, abs=1e-12)
    assert bool((nx.abs() <= 1.0).all())


def _plain_ng_step_users_last(x_t, f_t, q_t, l_t, cfg, uniform):
    """The user step written plainly (out-of-place ops, torch's own sum and max): the numbers the
    in-place hot path must reproduce exactly."""
    k = f_t.shape[1]
    distance = (f_t - x_t.unsqueeze(1)).square().sum(0).sqrt()
    logits = torch.cat([cfg.choice_logit_offset - distance, torch.full((1, x_t.shape[1]), cfg.no_click_mass)])
    weight = torch.exp(logits - logits.max(dim=0).values)
    cdf = weight.cumsum(dim=0)
    choice = (cdf < uniform * cdf[-1]).sum(dim=0).clamp_(max=k)
    clicked, pick = choice < k, choice.clamp(max=k - 1).unsqueeze(0)
    q, length = q_t.gather(0, pick).squeeze(0), l_t.gather(0, pick).squeeze(0)
    chosen = f_t.gather(1, pick.unsqueeze(0).expand(f_t.shape[0], 1, -1)).squeeze(1)
    consumed = torch.where(clicked, torch.sigmoid(-q) * length, torch.zeros_like(q))
    linear = torch.where(clicked, x_t + cfg.interest_step_size * q * (chosen - x_t), x_t)
    return choice, consumed, ng_squash(linear, cfg.max_user_affinity), weight / cdf[-1]


@pytest.mark.parametrize("t_dim,k", [(2, 2), (3, 3), (1, 1)])
def test_fast_user_step_and_logits_reproduce_the_plain_expressions_exactly(t_dim, k):
    """ng_step_users_last / ng_step_slate_table / ng_choice_logits (in place, fused gathers) give the
    very numbers of the plain out-of-place expressions, for contiguous and users-first interest."""
    cfg = InterestEvolutionConfig(num_topics=t_dim, num_docs=30, slate_size=k)
    g = torch.Generator().manual_seed(t_dim)
    corpus = sample_ng_corpus(cfg, g)
    table_t = ng_slate_table(corpus.features, corpus.quality, corpus.length)
    n = 37  # not a multiple of the vector width: the tail elements are covered too
    for x_t in (torch.randn(t_dim, n, generator=g) * 2, (torch.randn(n, t_dim, generator=g) * 2).t()):
        docs_t = torch.stack([torch.randperm(30, generator=g)[:k] for _ in range(n)]).t().contiguous()
        u = torch.rand(n, generator=g)
        f_t, q_t, l_t = corpus.features.t()[:, docs_t], corpus.quality[docs_t], corpus.length[docs_t]
        want = _plain_ng_step_users_last(x_t, f_t, q_t, l_t, cfg, u)
        for got in (
            ng_step_users_last(x_t, f_t, q_t, l_t, cfg, uniform=u),
            ng_step_slate_table(x_t, docs_t, table_t, cfg, uniform=u),
        ):
            for a, b in zip(got, want):
                assert torch.equal(a, b)
        logits, _ = ng_choice_logits(x_t.t(), corpus.features, cfg)
        plain = cfg.choice_logit_offset - (corpus.features.t().unsqueeze(2) - x_t.unsqueeze(1)).square().sum(0).sqrt()
        assert torch.equal(logits, plain.t())


def _paired_env_steps(kwargs_a, kwargs_b, n=1000, steps=6, eager_b=False, **common):
    """Step two envs (same seed, same slates) side by side; yields their step results. ``eager_b``: ``b``
    (compile=True) runs its step eagerly (what it falls back to), fed the same counter uniforms."""
    a = InterestEvolutionVectorEnv(n, seed=1, **common, **kwargs_a)
    b = InterestEvolutionVectorEnv(n, seed=1, **common, **kwargs_b)
    if eager_b:
        b._compile_failed = True
    a.reset(seed=1)
    b.reset(seed=1)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        act = np.argsort(rng.random((n, a.num_candidates)), axis=-1)[:, : a.slate_size]
        yield a.step(act), b.step(act)


@pytest.mark.slow
@pytest.mark.parametrize(
    "common",
    [{}, {"interest_update_noise_scale": 0.3}, {"slate_size": 3, "num_topics": 3, "num_candidates": 20, "horizon": 4}],
)
def test_compiled_user_step_equals_the_eager_one_fed_the_same_uniforms(common):
    """compile=True (the step as one inductor kernel, choice uniforms drawn inside by counter_uniforms)
    against the eager step fed the same uniforms: the same choices and, within float rounding, the same
    rewards, probabilities, interests and observations (the squash 4M(sigmoid(x/M) - 1/2) loses ~1e-6)."""
    for ra, rb in _paired_env_steps({"compile": True}, {"compile": True}, eager_b=True, **common):
        np.testing.assert_array_equal(ra[4]["choice"], rb[4]["choice"])
        for key in ("clicked_candidate", "slate_doc_id", "clicked_doc_id"):
            np.testing.assert_array_equal(ra[4][key], rb[4][key])
        np.testing.assert_allclose(ra[1], rb[1], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(ra[4]["slate_choice_prob"], rb[4]["slate_choice_prob"], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(ra[4]["user_interest"], rb[4]["user_interest"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ra[0]["user"], rb[0]["user"], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(ra[2], rb[2])
        np.testing.assert_array_equal(ra[3], rb[3])


@pytest.mark.slow
def test_compiled_env_clicks_like_the_eager_env_and_checks_slates():
    """compile=True draws its choice uniforms from another stream than the eager env (same seed, same
    initial users): click rate and engagement agree within Z standard errors over 20,000 user-steps. A
    bad slate raises the eager env's EnvError and changes nothing (the next steps equal an env that never
    saw it); the info does not change when the caller later overwrites its action array."""
    n, steps = 1000, 20  # the batch size of the test above: its compiled step is reused
    clicks, engagement = {}, {}
    for compiled in (False, True):
        env = InterestEvolutionVectorEnv(n, seed=seed(7), compile=compiled)
        env.reset(seed=seed(7))
        rng = np.random.default_rng(seed(7))
        c = e = 0.0
        for _ in range(steps):
            _, reward, _, _, info = env.step(np.argsort(rng.random((n, 100)), axis=-1)[:, :2])
            c, e = c + info["clicked"].sum(), e + reward.sum()
        clicks[compiled], engagement[compiled] = c / (n * steps), e / (n * steps)
    p = clicks[False]
    assert abs(clicks[True] - p) < Z * math.sqrt(2 * p * (1 - p) / (n * steps))
    assert engagement[True] == pytest.approx(engagement[False], rel=0.03)

    envs = [InterestEvolutionVectorEnv(n, seed=3, compile=True) for _ in range(2)]
    for env in envs:
        env.reset(seed=3)
    good = np.tile(np.array([[3, 7]], dtype=np.int64), (n, 1))
    for bad, match in ((np.tile([[5, 5]], (n, 1)), "same candidate"), (np.tile([[0, 100]], (n, 1)), r"\[0, 100\)")):
        with pytest.raises(EnvError, match=match):
            envs[0].step(bad)
    for _ in range(3):
        act = good.copy()
        ra, rb = envs[0].step(act), envs[1].step(good)
        before = ra[4]["slate_doc_id"].copy()
        act[:] = 0  # the caller reuses its buffer: the info still shows the served slate
        np.testing.assert_array_equal(ra[4]["slate_doc_id"], before)
        np.testing.assert_array_equal(ra[4]["choice"], rb[4]["choice"])
        np.testing.assert_array_equal(ra[0]["user"], rb[0]["user"])


def test_counter_uniforms_are_uniform_and_independent():
    """counter_uniforms: 24-bit uniforms in [0, 1) (KS), uncorrelated between neighbouring users and
    between one user's consecutive steps, different under another key, and the same bits from the
    eager function and from the fused step's eager evaluation (whose choices then equal
    ng_step_slate_table fed those uniforms)."""
    n = 20000
    key = torch.tensor([seed(12345) % 2**32, 987654321, 0])
    u = counter_uniforms(n, key).double().numpy()
    nxt = counter_uniforms(n, key + torch.tensor([0, 0, n])).double().numpy()  # the same users' next step
    other = counter_uniforms(n, key + torch.tensor([1, 0, 0])).double().numpy()
    assert u.min() >= 0.0 and u.max() < 1.0 and np.all(u * 2**24 == np.floor(u * 2**24))
    for v in (u, nxt, other):
        assert stats.kstest(v, "uniform").pvalue > P_MIN
    for a, b in ((u[:-1], u[1:]), (u, nxt), (u, other)):
        assert abs(np.corrcoef(a, b)[0, 1]) < Z / math.sqrt(n)
    cfg = InterestEvolutionConfig(slate_size=3)
    g = torch.Generator().manual_seed(seed(5))
    corpus = sample_ng_corpus(cfg, g)
    table_t = ng_slate_table(corpus.features, corpus.quality, corpus.length)
    x_t = torch.randn(2, 333, generator=g)
    slate = torch.stack([torch.randperm(100, generator=g)[:3] for _ in range(333)])
    choice, reward, nxt_t, user, probs, invalid = ng_step_fused(x_t, slate, table_t, key, None, cfg)
    want = ng_step_slate_table(x_t, slate.t().contiguous(), table_t, cfg, uniform=counter_uniforms(333, key))
    assert torch.equal(choice, want[0]) and not bool(invalid) and 0 < int((choice < 3).sum()) < 333
    torch.testing.assert_close(reward, want[1].double())
    torch.testing.assert_close(user, nxt_t.t())
    for bad in ((0, 1, 100), (4, 9, 4), (-1, 2, 3)):
        slate[17] = torch.tensor(bad)
        assert bool(ng_step_fused(x_t, slate, table_t, key, None, cfg)[5])


def test_compile_falls_back_to_the_eager_step_with_one_warning(monkeypatch):
    """Where inductor cannot compile, compile=True warns once and runs the same step eagerly: the numbers
    of an env whose eager step is fed the same counter uniforms, exactly."""

    def broken(fn, example_inputs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(sim_env, "_inductor_compile", broken)
    monkeypatch.setattr(sim_env, "_COMPILED_STEPS", {})  # no step compiled by an earlier test
    with pytest.warns(RuntimeWarning, match="config 'compile'") as record:
        for ra, rb in _paired_env_steps({"compile": True}, {"compile": True}, n=50, eager_b=True):
            for key in ("choice", "user_interest", "slate_choice_prob"):
                np.testing.assert_array_equal(ra[4][key], rb[4][key])
            np.testing.assert_array_equal(ra[1], rb[1])
            np.testing.assert_array_equal(ra[0]["user"], rb[0]["user"])
    assert len([w for w in record if "config 'compile'" in str(w.message)]) == 1


def test_vectorized_env_steps_equal_per_user_reference():
    """Every user's transition in a batched NG-twin / RecSim env equals the scalar reference."""
    cfg = InterestEvolutionConfig(num_candidates=10, horizon=20)
    env = InterestEvolutionVectorEnv(16, config=cfg, seed=4)
    obs, info = env.reset(seed=4)
    policy = RandomSlatePolicy(10, 2, seed=4)
    corpus = env.corpus
    for _ in range(20):
        x = info["user_interest"].astype(np.float64)
        rows = env.candidate_corpus_index().numpy()
        slate = policy(obs)
        obs, reward, _, _, info2 = env.step(slate)
        for i in range(16):
            docs = rows[i, slate[i]]
            ref_p, ref_c, ref_x = _ref_ng_user(
                x[i],
                corpus.features[docs].double().numpy(),
                corpus.quality[docs].double().numpy(),
                corpus.length[docs].double().numpy(),
                int(info2["choice"][i]),
                cfg,
            )
            np.testing.assert_allclose(info2["slate_choice_prob"][i], ref_p, rtol=1e-5, atol=1e-6)
            assert reward[i] == pytest.approx(ref_c, rel=1e-5, abs=1e-6)
            final = info2["final_info"]["user_interest"][i] if "final_info" in info2 else info2["user_interest"][i]
            np.testing.assert_allclose(final, ref_x, rtol=1e-5, atol=1e-5)
        info = info2
    rs_cfg = RecSimInterestEvolutionConfig()
    env = RecSimInterestEvolutionVectorEnv(16, config=rs_cfg, seed=5)
    obs, info = env.reset(seed=5)
    moved = 0
    for _ in range(40):
        x, budget = info["user_interest"].astype(np.float64), info["time_budget"]
        feats, quality = obs["doc"].astype(np.float64), env.candidate_quality().numpy().astype(np.float64)
        slate = RandomSlatePolicy(10, 2, seed=0)(obs)
        obs, reward, terminated, _, info2 = env.step(slate)
        after = info2["final_info"] if terminated.any() else info2
        for i in range(16):
            ch = int(info2["choice"][i])
            f, q = feats[i, slate[i]], quality[i, slate[i]]
            outcomes = [_ref_recsim_user(x[i], budget[i], f, q, np.full(2, 4.0), ch, u, rs_cfg) for u in (0.0, 1.0)]
            np.testing.assert_allclose(info2["slate_choice_prob"][i], outcomes[0][0], rtol=1e-5)
            assert reward[i] == pytest.approx(outcomes[0][1], rel=1e-5)
            new_x = after["user_interest"][i] if terminated[i] else info2["user_interest"][i]
            new_b = after["time_budget"][i] if terminated[i] else info2["time_budget"][i]
            # toward or away from the clicked doc, exactly one of the two reference outcomes
            assert any(np.allclose(new_x, o[2], atol=1e-5) for o in outcomes)
            assert new_b == pytest.approx(outcomes[0][3], abs=1e-4)
            moved += int(ch < 2)
        info = info2
    assert moved > 100


def test_time_budget_ends_sessions():
    env = RecSimInterestEvolutionVectorEnv(32, seed=6)
    obs, info = env.reset(seed=6)
    policy = RandomSlatePolicy(10, 2, seed=6)
    steps = np.zeros(32, dtype=int)
    lengths, final_budgets = [], []
    for _ in range(450):
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        steps += 1
        assert not truncated.any()
        if terminated.any():
            lengths += list(steps[terminated])
            final_budgets += list(info["final_info"]["time_budget"][terminated])
            np.testing.assert_allclose(info["time_budget"][terminated], 200.0)  # the new session's budget
            steps[terminated] = 0
    assert len(lengths) >= 32  # every session ended within 450 steps
    assert max(final_budgets) <= 0.0
    assert min(lengths) >= 200 / 4.0  # a step spends at most one 4-minute video...
    # ... and the budget bonus is bounded, so a session ends within budget / min net spend steps
    assert max(lengths) <= 200 / 0.5
    # truncation by max_episode_steps
    env = RecSimInterestEvolutionVectorEnv(4, seed=0, max_episode_steps=3)
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        obs, _, terminated, truncated, info = env.step(np.tile([0, 1], (4, 1)))
    assert truncated.all() and not terminated.any() and "final_obs" in info


def test_same_seed_same_numbers():
    def run(seed):
        env = InterestEvolutionVectorEnv(8, seed=seed, num_candidates=20)
        obs, info = env.reset(seed=seed)
        policy, rewards = MyopicGreedyPolicy(20, 2), []
        for _ in range(15):
            obs, r, _, _, info = env.step(policy(obs, info))
            rewards.append(r)
        return np.array(rewards), obs["doc"].copy()

    a, b, c = run(7), run(7), run(8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_registered_ids_spaces_and_errors():
    env = gym.make("recsys/InterestEvolution-v0", num_candidates=10)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    obs, reward, terminated, truncated, info = env.step(np.array([2, 7]))
    assert env.observation_space.contains(obs) and isinstance(reward, float)
    vec = make_vec_env("recsys/RecSimInterestEvolution-v0", n_envs=5, seed=0, env_kwargs={"flat_observation": True})
    assert isinstance(vec, RecSimInterestEvolutionVectorEnv) and vec.num_envs == 5
    obs, info = vec.reset(seed=0)
    assert obs.shape == (5, 20 + 10 * 20) and vec.observation_space.contains(obs)
    assert vec.single_action_space == gym.spaces.MultiDiscrete([10, 10])
    assert set(info) >= {"candidate_choice_logit", "no_click_logit", "candidate_engagement", "time_budget"}
    with pytest.raises(EnvError, match="same candidate"):
        vec.step(np.tile([3, 3], (5, 1)))
    with pytest.raises(EnvError, match=r"\[0, 10\)"):
        vec.step(np.tile([0, 10], (5, 1)))
    lean = InterestEvolutionVectorEnv(3, seed=0, choice_info=False)
    _, info = lean.reset(seed=0)
    assert "candidate_choice_logit" not in info and info["user_interest"].shape == (3, 2)
    logits, no_click, engagement = lean.choice_scores()
    assert logits.shape == (3, 100) and no_click.shape == (3,) and engagement.shape == (3, 100)
    with pytest.raises(ConfigError, match="slate_size"):
        InterestEvolutionVectorEnv(2, num_candidates=3, slate_size=4)
    with pytest.raises(ConfigError, match="unknown field"):
        RecSimInterestEvolutionVectorEnv(2, num_topic=3)


def test_myopic_policy_is_exact_and_beats_random():
    g = torch.Generator().manual_seed(9)
    logits, none, eng = torch.randn(50, 8, generator=g), torch.randn(50, generator=g), torch.rand(50, 8, generator=g)
    for k in (2, 3):
        best = best_myopic_slates(logits, none, eng, k)
        allv = torch.stack(
            [expected_slate_engagement(logits, none, eng, s.expand(50, k)) for s in enumerate_slates(8, k)], dim=1
        )
        torch.testing.assert_close(expected_slate_engagement(logits, none, eng, best), allv.max(dim=1).values)
    cfg = InterestEvolutionConfig(horizon=30, num_candidates=20)
    env = InterestEvolutionVectorEnv(400, config=cfg, seed=0)
    greedy = rollout_engagement(env, MyopicGreedyPolicy(20, 2), seed=1)
    rand = rollout_engagement(env, RandomSlatePolicy(20, 2, seed=1), seed=1)
    assert greedy.mean() > rand.mean() + 5.0


# ------------------------------------------------------------------------------------------------
# statistical cross-checks against the real RecSim NG / RecSim (isolated venv)
# ------------------------------------------------------------------------------------------------
_NG_OK, _NG_WHY = recsim_ng_available()
needs_ng = pytest.mark.skipif(not _NG_OK, reason=_NG_WHY or "RecSim NG venv missing")
N_FIXED, H_FIXED, N_EVAL, H_EVAL = 1000, 30, 1000, 50
N_NOISE, H_NOISE, SIGMA = 5000, 20, 0.5  # update-noise cross-check (issue 15)


@pytest.fixture(scope="module")
def ng():
    if not _NG_OK:
        pytest.skip(_NG_WHY)
    cfg = InterestEvolutionConfig(horizon=H_EVAL)
    corpus = sample_ng_corpus(cfg, torch.Generator().manual_seed(0))
    slates = np.argsort(np.random.default_rng(1).random((H_FIXED, N_FIXED, cfg.num_docs)), axis=-1)[..., :2]
    trained, history = train_linear_policy_cem(
        InterestEvolutionVectorEnv,
        {"config": cfg, "corpus": corpus},
        users_per_candidate=100,
        population=12,
        elite=3,
        iterations=4,
        seed=0,
    )
    big = InterestEvolutionConfig(num_docs=2000, num_topics=5)
    noisy = cfg.model_copy(update={"interest_update_noise_scale": SIGMA})
    noise_slates = np.argsort(np.random.default_rng(2).random((H_NOISE, N_NOISE, cfg.num_docs)), axis=-1)[..., :2]
    # update noise on: NG's default compiled runtime and its eager one (one inter-op thread, which
    # makes step 0 the usual step that reuses the initial draw; the check finds the step NG reused,
    # since tf.scan may still run loop iterations out of order: see user_model.py).
    noise_jobs = [
        NGJob(f"noise_{mode}", noisy, N_NOISE, H_NOISE, "fixed", corpus=corpus, slates=noise_slates, graph_compile=comp)
        for mode, comp in (("graph", True), ("eager", False))
    ]
    jobs = [
        NGJob("fixed", cfg, N_FIXED, H_FIXED, "fixed", corpus=corpus, slates=slates, graph_compile=False),
        NGJob(
            "linear",
            cfg,
            N_EVAL,
            H_EVAL,
            "linear",
            corpus=corpus,
            weights=tuple(trained.weights),
            record=False,
            graph_compile=False,
        ),
        NGJob("myopic", cfg, N_EVAL, H_EVAL, "myopic", corpus=corpus, record=False, graph_compile=False),
        NGJob("random", cfg, N_EVAL, H_EVAL, "random", corpus=corpus, record=False, graph_compile=False),
        NGJob("corpus", big, 2, 1, "random", record=False, graph_compile=False),
        RecSimJob("rs_random", episodes=100, policy="random"),
        RecSimJob("rs_greedy", episodes=100, policy="greedy"),
        *noise_jobs,
    ]
    results = run_recsim_ng(jobs, seed=0, threads=1)
    return {
        "noisy": noisy,
        "noise_slates": noise_slates,
        "cfg": cfg,
        "corpus": corpus,
        "slates": slates,
        "trained": trained,
        "history": history,
        "big": big,
        "results": results,
    }


def _ng_arrays(traj, t_dim):
    x = traj[[f"interest_{j}" for j in range(t_dim)]].to_numpy(np.float32)
    nx = traj[[f"next_interest_{j}" for j in range(t_dim)]].to_numpy(np.float32)
    slots = traj[["slot_0", "slot_1"]].to_numpy(np.int64)
    return (
        torch.tensor(x),
        torch.tensor(nx),
        torch.tensor(slots),
        torch.tensor(traj["choice"].to_numpy(np.int64)),
        torch.tensor(traj["consumed_time"].to_numpy(np.float32)),
    )


@needs_ng
def test_twin_transitions_reproduce_recsim_ng(ng):
    """Given RecSim NG's state, slate and sampled choice, the twin's response and next interest are NG's."""
    cfg, corpus = ng["cfg"], ng["corpus"]
    x, nx, slots, choice, consumed = _ng_arrays(ng["results"]["fixed"].trajectory, cfg.num_topics)
    assert torch.equal(slots.view(H_FIXED, N_FIXED, 2), torch.from_numpy(ng["slates"]))
    clicked = choice < 2
    pick = slots.gather(1, choice.clamp(max=1).unsqueeze(1)).squeeze(1)
    twin_next = ng_next_interest(x, clicked, corpus.features[pick], corpus.quality[pick], cfg)
    torch.testing.assert_close(twin_next, nx, atol=2e-5, rtol=1e-5)
    twin_time = torch.where(clicked, torch.sigmoid(-corpus.quality[pick]) * corpus.length[pick], torch.tensor(-1.0))
    torch.testing.assert_close(twin_time, consumed, atol=1e-5, rtol=1e-5)  # NG reports -1 for no click


@needs_ng
def test_recsim_ng_choices_follow_the_twin_choice_model(ng):
    """Chi-square goodness of fit of NG's 30 000 sampled choices to the twin's probabilities."""
    cfg, corpus = ng["cfg"], ng["corpus"]
    x, _, slots, choice, _ = _ng_arrays(ng["results"]["fixed"].trajectory, cfg.num_topics)
    logits, none = ng_choice_logits(x, corpus.features, cfg)
    probs = slate_choice_probabilities(logits, none, slots).double().numpy()
    bins = np.digitize(probs[:, 2], np.quantile(probs[:, 2], np.linspace(0, 1, 11)[1:-1]))
    observed = np.zeros((10, 3))
    expected = np.zeros((10, 3))
    np.add.at(observed, (bins, choice.numpy()), 1.0)
    np.add.at(expected, bins, probs)
    chi2 = ((observed - expected) ** 2 / expected).sum()
    p = stats.chi2.sf(chi2, df=10 * 2)
    assert p > P_MIN, f"chi2={chi2:.1f}"


@needs_ng
def test_twin_and_recsim_ng_agree_on_identical_slates(ng):
    """Same corpus and slates, independent users: choice frequencies, time spent, interest paths."""
    cfg, corpus, slates = ng["cfg"], ng["corpus"], torch.from_numpy(ng["slates"])
    traj = ng["results"]["fixed"].trajectory
    g = torch.Generator().manual_seed(11)
    x = torch.randn(N_FIXED, cfg.num_topics, generator=g)
    twin_choice, twin_time, twin_x = [], [], [x]
    for t in range(H_FIXED):
        s = slates[t]
        choice, consumed, x, _ = ng_step(x, corpus.features[s], corpus.quality[s], corpus.length[s], cfg, g)
        twin_choice.append(choice)
        twin_time.append(consumed)
        twin_x.append(x)
    twin_choice = torch.stack(twin_choice).numpy()
    ng_choice = traj["choice"].to_numpy().reshape(H_FIXED, N_FIXED)
    table = np.stack([np.bincount(twin_choice.ravel(), minlength=3), np.bincount(ng_choice.ravel(), minlength=3)])
    assert stats.chi2_contingency(table).pvalue > P_MIN
    for block in np.array_split(np.arange(H_FIXED), 3):  # early, middle, late
        sub = np.stack(
            [np.bincount(twin_choice[block].ravel(), minlength=3), np.bincount(ng_choice[block].ravel(), minlength=3)]
        )
        assert stats.chi2_contingency(sub).pvalue > P_MIN
    twin_user_time = torch.stack(twin_time).sum(0).numpy()
    ng_user_time = np.clip(traj["consumed_time"].to_numpy(), 0, None).reshape(H_FIXED, N_FIXED).sum(0)
    assert _welch_z(twin_user_time, ng_user_time) < Z
    ng_x = traj[[f"interest_{j}" for j in range(cfg.num_topics)]].to_numpy().reshape(H_FIXED, N_FIXED, -1)
    ng_last = traj[[f"next_interest_{j}" for j in range(cfg.num_topics)]].to_numpy().reshape(H_FIXED, N_FIXED, -1)[-1]
    for t, ng_t in ((H_FIXED // 2, ng_x[H_FIXED // 2]), (H_FIXED, ng_last)):
        for j in range(cfg.num_topics):
            assert stats.ks_2samp(twin_x[t][:, j].numpy(), ng_t[:, j]).pvalue > P_MIN
        assert _welch_z(twin_x[t].norm(dim=1).numpy(), np.linalg.norm(ng_t, axis=1)) < Z


@needs_ng
def test_corpus_sampler_matches_recsim_ng(ng):
    big = ng["big"]
    ng_corpus = ng["results"]["corpus"].corpus
    twin = sample_ng_corpus(big, torch.Generator().manual_seed(12))
    table = np.stack([np.bincount(twin.topic.numpy(), minlength=5), np.bincount(ng_corpus.topic.numpy(), minlength=5)])
    assert stats.chi2_contingency(table).pvalue > P_MIN
    assert stats.ks_2samp(twin.quality.numpy(), ng_corpus.quality.numpy()).pvalue > P_MIN
    for c in (twin, ng_corpus):
        resid = c.features - torch.nn.functional.one_hot(c.topic, 5).float()
        assert resid.std().item() == pytest.approx(0.7, abs=0.02)
    assert stats.ks_2samp(twin.features.flatten().numpy(), ng_corpus.features.flatten().numpy()).pvalue > P_MIN
    np.testing.assert_allclose(ng_corpus.length.numpy(), 2.0)


@needs_ng
def test_policy_trained_in_twin_gets_the_same_engagement_in_recsim_ng(ng):
    cfg, corpus, results = ng["cfg"], ng["corpus"], ng["results"]
    trained = ng["trained"]
    assert ng["history"][-1] > ng["history"][0]  # the CEM search improved the policy
    env = InterestEvolutionVectorEnv(2 * N_EVAL, config=cfg, corpus=corpus)
    for name, policy in (
        ("linear", trained),
        ("myopic", MyopicGreedyPolicy(cfg.num_docs, 2)),
        ("random", RandomSlatePolicy(cfg.num_docs, 2, seed=3)),
    ):
        twin = rollout_engagement(env, policy, seed=13)
        in_ng = results[name].user_engagement
        assert len(in_ng) == N_EVAL
        assert _welch_z(twin, in_ng) < Z, (name, twin.mean(), in_ng.mean())
    # non-trivial: the trained policy clearly beats random slates in both simulators
    assert results["linear"].user_engagement.mean() > results["random"].user_engagement.mean() + 10.0
    assert isinstance(trained, LinearScoringPolicy) and trained.w_quality < 0 < trained.w_affinity


@needs_ng
def test_recsim_env_matches_original_recsim(ng):
    """Random and greedy-by-score policies: mean session watch time and length, twin vs RecSim 0.2.4."""
    results = ng["results"]
    env = RecSimInterestEvolutionVectorEnv(600, seed=14)
    for name in ("rs_random", "rs_greedy"):
        obs, info = env.reset(seed=14)
        rand = RandomSlatePolicy(10, 2, seed=14)
        total, steps = np.zeros(600), np.zeros(600)
        done = np.zeros(600, dtype=bool)
        while not done.all():
            if name == "rs_greedy":
                logits = torch.from_numpy(info["candidate_choice_logit"])
                action = torch.sort(logits, dim=1, descending=True, stable=True).indices[:, :2].numpy()
            else:
                action = rand(obs)
            obs, reward, terminated, truncated, info = env.step(action)
            total += np.where(done, 0.0, reward)
            steps += ~done
            done |= terminated | truncated
        episodes = results[name].episodes
        assert _welch_z(total, episodes["engagement"].to_numpy()) < Z, (
            name,
            total.mean(),
            episodes["engagement"].mean(),
        )
        assert _welch_z(steps, episodes["steps"].to_numpy()) < Z
    greedy, rnd = results["rs_greedy"].episodes, results["rs_random"].episodes
    assert greedy["engagement"].mean() > rnd["engagement"].mean()


# ------------------------------------------------------------------------------------------------
# interest-update noise: NG's reuse of the initial draw (issue 15)
# ------------------------------------------------------------------------------------------------
def _inverse_squash(x: np.ndarray, m: float) -> np.ndarray:
    return m * np.log((x / (4 * m) + 0.5) / (0.5 - x / (4 * m)))


def _update_noise(x, nx, choice, slots, features, quality, cfg):
    """``(clicked [N], noise [N, T])``: what an interest step added beyond ``x + step q (f - x)``."""
    clicked = choice < slots.shape[1]
    pick = np.take_along_axis(slots, np.minimum(choice, slots.shape[1] - 1)[:, None], 1)[:, 0]
    f, q = features[pick].astype(np.float64), quality[pick].astype(np.float64)[:, None]
    x = x.astype(np.float64)
    linear = _inverse_squash(nx.astype(np.float64), cfg.max_user_affinity)
    return clicked, linear - (x + cfg.interest_step_size * q * (f - x))


def test_twin_first_update_noise_reuses_the_initial_draw_only_in_recsim_ng_mode():
    """interest_noise='recsim_ng': a session's first update noise is sigma * x_0 / s (also after an
    autoreset); every later step's is fresh N(0, sigma^2); 'independent': always fresh."""
    n, s, sigma = 4000, 1.5, 0.3
    residuals = {}
    for mode in ("recsim_ng", "independent"):
        cfg = InterestEvolutionConfig(
            interest_update_noise_scale=sigma, initial_interest_scale=s, interest_noise=mode, horizon=3
        )
        env = InterestEvolutionVectorEnv(n, config=cfg, seed=0)
        _, info = env.reset(seed=0)
        slate = np.tile([0, 1], (n, 1))
        feats, quality = env.corpus.features.numpy(), env.corpus.quality.numpy()
        res, stds = [], []
        for _ in range(4):  # the 4th step is the first of a new session (horizon 3, autoreset)
            x = info["user_interest"].copy()
            _, _, _, _, info = env.step(slate)
            after = info["final_info"]["user_interest"] if "final_info" in info else info["user_interest"]
            clicked, noise = _update_noise(x, after, info["choice"], slate, feats, quality, cfg)
            res.append(np.abs(noise[clicked] - sigma * x[clicked] / s).max())
            stds.append(noise[clicked].std())
        residuals[mode] = res
        assert all(abs(v - sigma) < 0.05 for v in stds[1:3]), stds  # fresh N(0, sigma^2) within the session
    assert residuals["recsim_ng"][0] < 1e-3 and residuals["recsim_ng"][3] < 1e-3  # first steps of both sessions
    assert min(residuals["recsim_ng"][1:3]) > 0.5 and min(residuals["independent"]) > 0.5
    # noise off: the switch changes nothing
    a = InterestEvolutionVectorEnv(50, seed=3, interest_noise="recsim_ng")
    b = InterestEvolutionVectorEnv(50, seed=3, interest_noise="independent")
    for e in (a, b):
        e.reset(seed=3)
    for _ in range(5):
        ra, rb = a.step(np.tile([4, 9], (50, 1))), b.step(np.tile([4, 9], (50, 1)))
        np.testing.assert_array_equal(ra[4]["user_interest"], rb[4]["user_interest"])
    with pytest.raises(ConfigError, match="interest_noise"):
        InterestEvolutionVectorEnv(2, interest_noise="shared")


def _ng_noise_arrays(ng_run, h, n):
    traj = ng_run.trajectory
    x = traj[["interest_0", "interest_1"]].to_numpy().reshape(h, n, 2)
    nx = traj[["next_interest_0", "next_interest_1"]].to_numpy().reshape(h, n, 2)
    return x, nx, traj["choice"].to_numpy().reshape(h, n), traj[["slot_0", "slot_1"]].to_numpy().reshape(h, n, 2)


def _ng_reuse_steps(ng_run, corpus, cfg):
    """Steps of an NG run whose update noise is sigma * x_0 (regression coefficient sigma, residual ~0);
    every other step's must look fresh (coefficient ~0, std sigma)."""
    x, nx, choice, slots = _ng_noise_arrays(ng_run, H_NOISE, N_NOISE)
    feats, quality = corpus.features.numpy(), corpus.quality.numpy()
    sigma, reused = cfg.interest_update_noise_scale, []
    for t in range(H_NOISE):
        clicked, noise = _update_noise(x[t], nx[t], choice[t], slots[t], feats, quality, cfg)
        noise, start = noise[clicked], x[0][clicked].astype(np.float64)
        coef = (noise * start).sum(0) / (start * start).sum(0)
        if np.abs(coef - sigma).max() < 1e-3:
            # float32 round trip through the squash: a few users far out on the sigmoid lose digits
            assert np.quantile(np.abs(noise - sigma * start), 0.99) < 1e-4, t
            reused.append(t)
        else:
            assert np.abs(coef).max() < 0.06 and abs(noise.std() - sigma) < 0.03, (t, coef)
    return reused


def _twin_noise_rollout(cfg, corpus, slates, seed, reuse_step):
    """The twin's user step over fixed slates with the initial draw reused as the update noise of
    step ``reuse_step`` (None: never); the same draws, in the same order, as the env. Returns
    ``(clicked [H, N], interest [H + 1, N, T])``."""
    gen = torch.Generator().manual_seed(seed)
    table_t = ng_slate_table(corpus.features, corpus.quality, corpus.length)
    x0 = torch.randn(slates.shape[1], cfg.num_topics, generator=gen) * cfg.initial_interest_scale
    x_t, clicked, interest = x0.t(), [], [x0.numpy()]
    for t in range(slates.shape[0]):
        uniform = torch.rand(slates.shape[1], generator=gen)
        noise = torch.randn(x_t.shape, generator=gen)
        if t == reuse_step:
            noise = x0.t() / cfg.initial_interest_scale
        docs_t = torch.from_numpy(np.ascontiguousarray(slates[t].T))
        choice, _, x_t, _ = ng_step_slate_table(x_t, docs_t, table_t, cfg, None, uniform, noise)
        clicked.append((choice < slates.shape[2]).numpy())
        interest.append(x_t.t().numpy())
    return np.array(clicked, dtype=float), np.array(interest)


def test_twin_env_noise_modes_are_the_rollout_with_reuse_at_step_0_or_never():
    """The env's 'recsim_ng' mode = the user step with the initial draw reused at step 0, exactly;
    'independent' = never reused (what the NG cross-check below rolls out)."""
    corpus = sample_ng_corpus(InterestEvolutionConfig(), torch.Generator().manual_seed(5))
    slates = np.argsort(np.random.default_rng(5).random((4, 300, 100)), axis=-1)[..., :2]
    for mode, reuse in (("recsim_ng", 0), ("independent", None)):
        cfg = InterestEvolutionConfig(interest_update_noise_scale=0.4, interest_noise=mode, horizon=10)
        env = InterestEvolutionVectorEnv(300, config=cfg, corpus=corpus, seed=0)
        _, info = env.reset(seed=9)
        clicked, x = _twin_noise_rollout(cfg, corpus, slates, 9, reuse)
        np.testing.assert_array_equal(info["user_interest"], x[0])
        for t in range(4):
            _, _, _, _, info = env.step(slates[t])
            np.testing.assert_array_equal(info["clicked"], clicked[t] > 0)
            np.testing.assert_array_equal(info["user_interest"], x[t + 1])


@needs_ng
def test_recsim_ng_reuses_the_initial_draw_once_compiled_never_eager(ng):
    """What the twin's default reproduces: NG compiled adds sigma * x_0 as the update noise of exactly one
    step (step 0 with one inter-op thread — usually, not always: loop iterations may still overlap),
    fresh noise at the others; NG eager adds fresh noise at every step."""
    assert len(_ng_reuse_steps(ng["results"]["noise_graph"], ng["corpus"], ng["noisy"])) == 1
    assert _ng_reuse_steps(ng["results"]["noise_eager"], ng["corpus"], ng["noisy"]) == []


@needs_ng
def test_twin_and_recsim_ng_agree_with_update_noise(ng):
    """Noise on, same corpus and slates, independent users each side: per-user clicks (all steps, the
    first five), the interest norm after the reused step and at the end agree between NG compiled
    and the twin reusing the draw at the step NG did (step 0 = the env's 'recsim_ng' mode; which
    step NG reuses is up to TensorFlow's scheduler), and between NG eager and the twin never reusing
    it (= the env's 'independent' mode, exactly: test above); never reusing is told apart from NG
    compiled (the check has power)."""
    corpus, slates, cfg = ng["corpus"], ng["noise_slates"], ng["noisy"]
    graph, eager = ng["results"]["noise_graph"], ng["results"]["noise_eager"]
    (reuse,) = _ng_reuse_steps(graph, corpus, cfg)
    twin_graph = _twin_noise_rollout(cfg, corpus, slates, seed(30), reuse)
    twin_eager = _twin_noise_rollout(cfg, corpus, slates, seed(31), None)
    for ng_run, (clicked, x), name in ((graph, twin_graph, "compiled"), (eager, twin_eager, "eager")):
        x_ng, nx_ng, choice, _ = _ng_noise_arrays(ng_run, H_NOISE, N_NOISE)
        ng_clicked = (choice < 2).astype(float)
        assert _welch_z(clicked.sum(0), ng_clicked.sum(0)) < Z, name
        assert _welch_z(clicked[:5].sum(0), ng_clicked[:5].sum(0)) < Z, name
        ng_x = {reuse + 1: nx_ng[reuse], H_NOISE: nx_ng[-1]}
        for t, ng_xt in ng_x.items():
            assert _welch_z(np.linalg.norm(x[t], axis=1), np.linalg.norm(ng_xt, axis=1)) < Z, (name, t)
    _, x_never = _twin_noise_rollout(cfg, corpus, slates, seed(32), None)
    norm_ng = np.linalg.norm(_ng_noise_arrays(graph, H_NOISE, N_NOISE)[1][reuse], axis=1)
    # power: the agreement bar Z above rejects the never-reusing model. How far it is told apart depends on
    # the step NG reused (TensorFlow's scheduler: step 0 alone, later under load): twin reusing at step k vs
    # never, this corpus and these slates, z = 18.9 at k = 0 falling to 6.8-7.9 for k = 13-19
    assert _welch_z(np.linalg.norm(x_never[reuse + 1], axis=1), norm_ng) > Z
