"""Off-policy estimators: unbiased on a small slate problem with a known value (and visibly biased
when their assumptions are broken), bootstrap intervals that cover, and agreement with the
simulator's ground truth on logged data."""

import math

import pytest
import torch

from core_rl.common.distributions import plackett_luce_log_prob, plackett_luce_table_log_prob
from recsys.choice_model import enumerate_slates, ordered_slate_index
from recsys.logs import LogReader, generate_logs
from recsys.ope import (
    dm_terms,
    dr_terms,
    evaluate_on_logs,
    fit_reward_model,
    importance_weights,
    ips_terms,
    pi_terms,
    pseudo_inverse_weights,
    ratio_estimate,
    snips_terms,
)
from recsys.policies import (
    EpsilonGreedyPolicy,
    MyopicGreedyPolicy,
    PopularityPolicy,
    evaluate_online,
)
from recsys.simulation import InterestEvolutionVectorEnv

torch.set_num_threads(1)
C, K, X = 4, 2, 3  # candidates, slate size, context types
R, N = 400, 150  # replicated logs, rows per log


def small_problem(seed: int = 0):
    """Contexts x ∈ {0,1,2}; E[r | x, A] = Σ_k φ_x(k, a_k) (additive over slot-items); a Plackett–Luce
    logging policy with full support; a deterministic target slate per context."""
    g = torch.Generator().manual_seed(seed)
    phi = torch.rand(X, K, C, generator=g, dtype=torch.float64)  # φ_x(k, i)
    log_scores = torch.randn(X, C, generator=g, dtype=torch.float64)  # μ's scores per context
    target = torch.tensor([[3, 1], [0, 2], [2, 3]])  # π(x), ordered
    value = float(sum(phi[x, torch.arange(K), target[x]].sum() for x in range(X)) / X)
    # R logs of N rows at once
    x = torch.randint(X, (R * N,), generator=g)
    scores = log_scores[x]
    u = torch.rand(scores.shape, generator=g, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    slates = (scores - torch.log(-torch.log(u))).topk(K, dim=1).indices  # Plackett–Luce draws
    mu = plackett_luce_log_prob(scores, slates).exp()
    mean_r = phi[x.unsqueeze(1), torch.arange(K).unsqueeze(0), slates].sum(1)
    r = mean_r + 0.1 * torch.randn(R * N, generator=g, dtype=torch.float64)
    pi_slate = target[x]
    pi_prob = (slates == pi_slate).all(1).double()
    table = enumerate_slates(C, K, ordered=True)
    mu_dist = plackett_luce_table_log_prob(scores, table).exp()
    pi_dist = torch.zeros_like(mu_dist).scatter_(1, ordered_slate_index(pi_slate, C).unsqueeze(1), 1.0)
    rep = torch.arange(R).repeat_interleave(N)
    return dict(
        value=value,
        x=x,
        slates=slates,
        mu=mu,
        r=r,
        pi_prob=pi_prob,
        mu_dist=mu_dist,
        pi_dist=pi_dist,
        rep=rep,
        phi=phi,
        pi_slate=pi_slate,
        scores=scores,
    )


def per_log(num, den, rep):
    n = torch.zeros(R, dtype=torch.float64).index_add_(0, rep, num)
    d = torch.zeros(R, dtype=torch.float64).index_add_(0, rep, den)
    return n / d


def check_unbiased(estimates: torch.Tensor, value: float, z: float = 3.5) -> float:
    se = float(estimates.std() / math.sqrt(len(estimates)))
    bias = float(estimates.mean()) - value
    assert abs(bias) < z * se + 1e-12, f"bias {bias:.4f} vs se {se:.4f}"
    return se


def test_estimators_are_unbiased_on_a_small_slate_problem():
    p = small_problem()
    w = importance_weights(p["pi_prob"], p["mu"])
    v = p["value"]
    ips = per_log(*ips_terms(p["r"], w), p["rep"])
    se_ips = check_unbiased(ips, v)
    # DR with a deliberately wrong reward model (a constant) is still unbiased: μ is right
    q_wrong = torch.full_like(p["r"], 0.5)
    dr = per_log(*dr_terms(p["r"], w, q_wrong, q_wrong), p["rep"])
    check_unbiased(dr, v)
    # DR with the true reward model has much lower variance
    q_true = p["phi"][p["x"].unsqueeze(1), torch.arange(K), p["slates"]].sum(1)
    q_target = p["phi"][p["x"].unsqueeze(1), torch.arange(K), p["pi_slate"]].sum(1)
    dr_good = per_log(*dr_terms(p["r"], w, q_true, q_target), p["rep"])
    se_dr = check_unbiased(dr_good, v)
    assert se_dr < 0.5 * se_ips
    # pseudo-inverse: unbiased under the additive reward, with far smaller weights than IPS
    g = pseudo_inverse_weights(p["pi_dist"], p["mu_dist"], p["slates"], C, K)
    pi_est = per_log(*pi_terms(p["r"], g), p["rep"])
    se_pi = check_unbiased(pi_est, v)
    assert se_pi < se_ips
    # self-normalized IPS: consistent, its O(1/n) bias is well inside the noise at n = 150
    sn = per_log(*snips_terms(p["r"], w), p["rep"])
    assert abs(float(sn.mean()) - v) < 0.02
    # ... and the check can fail: IPS with another policy's propensities or DM with a wrong model is biased
    wrong_mu = plackett_luce_log_prob(-p["scores"], p["slates"]).exp()
    biased = per_log(*ips_terms(p["r"], importance_weights(p["pi_prob"], wrong_mu)), p["rep"])
    assert abs(float(biased.mean()) - v) > 5 * float(biased.std() / math.sqrt(R))
    dm = per_log(*dm_terms(q_wrong), p["rep"])
    assert abs(float(dm.mean()) - v) > 0.1


def test_pseudo_inverse_weights_reproduce_linear_rewards_exactly():
    """For any additive reward, E_μ[g·r] = value of π per context: check in expectation exactly."""
    p = small_problem(seed=1)
    table = enumerate_slates(C, K, ordered=True)
    for x in range(X):
        rows = (p["x"] == x).nonzero()[0]
        mu = p["mu_dist"][rows].expand(table.shape[0], -1)
        pi = p["pi_dist"][rows].expand(table.shape[0], -1)
        g = pseudo_inverse_weights(pi, mu, table, C, K)  # weight of every possible slate
        reward = p["phi"][x, torch.arange(K), table].sum(1)  # its expected reward
        expected = float((p["mu_dist"][rows[0]] * g * reward).sum())
        truth = float(p["phi"][x, torch.arange(K), p["pi_slate"][rows[0]]].sum())
        assert expected == pytest.approx(truth, abs=1e-9)


def test_session_bootstrap_intervals_cover_the_value():
    p = small_problem(seed=2)
    w = importance_weights(p["pi_prob"], p["mu"])
    covered = 0
    reps = 120
    for i in range(reps):
        rows = p["rep"] == i
        num, den = dr_terms(
            p["r"][rows],
            w[rows],
            torch.full((N,), 0.5, dtype=torch.float64),
            torch.full((N,), 0.5, dtype=torch.float64),
        )
        groups = torch.arange(N) // 5  # "sessions" of 5 rows
        est = ratio_estimate("dr", num, den, groups, n_bootstrap=300, seed=i)
        covered += est.lower <= p["value"] <= est.upper
        assert est.lower < est.value < est.upper
    assert 0.85 <= covered / reps <= 1.0


def test_ope_on_simulator_logs_matches_the_ground_truth(tmp_path):
    """Static interests (interest_step_size=0): the one-step value on the logged contexts is the
    online per-step engagement, and the estimators recover it."""
    cfg = dict(num_candidates=6, horizon=20, interest_step_size=0.0)
    env = InterestEvolutionVectorEnv(200, seed=0, **cfg)
    pop = PopularityPolicy.fit(
        torch.arange(100), torch.rand(100, generator=torch.Generator().manual_seed(0)), 101, 6, 2, key="doc_id"
    )
    logging = EpsilonGreedyPolicy(pop, 0.6, seed=1)
    generate_logs(env, logging, tmp_path / "ng.parquet", sessions=800, seed=0)
    reader = LogReader(tmp_path / "ng.parquet", chunk_rows=4096, oracle=True)
    rm = fit_reward_model(reader, 2, 4, epochs=2, seed=0)
    target = MyopicGreedyPolicy(6, 2)
    res = evaluate_on_logs(
        target, reader, reward_model=rm, logging_policy=reader.meta.logging_policy_object(), n_bootstrap=300, seed=0
    )
    gt = res.ground_truth
    assert res.rows == 16000 and gt > res.logging_value * 1.1  # the target is clearly better than μ
    for name in ("ips", "snips", "dr", "pi", "pi_sn"):
        e = res.estimates[name]
        assert abs(e.value - gt) / gt < 0.08, (name, e.value, gt)
        assert e.lower < e.value < e.upper
    width = {name: res.estimates[name].upper - res.estimates[name].lower for name in ("dr", "ips")}
    assert width["dr"] < width["ips"]
    online = evaluate_online(InterestEvolutionVectorEnv(400, seed=9, **cfg), target, 400, seed=9)
    assert abs(online.per_step - gt) / gt < 0.05
