"""Position-based bandit estimators (recsys.ope.bandit_estimates): hand-computed answers on tiny inputs,
the limits of switch-DR and DRos, position indexing, unbiasedness, and input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core_rl.common.errors import ConfigError
from recsys.ope import BANDIT_ESTIMATORS, bandit_estimates

# two rounds, two items, one position: w = [0.8/0.4, 0.2/0.5] = [2.0, 0.4]
REWARD = [1.0, 0.0]
ACTION = [0, 1]
POSITION = [0, 0]
PSCORE = [0.4, 0.5]
DIST = np.array([[0.8], [0.2]])  # π(a | k), context-free [C, K]
Q_HAT = np.array([[0.5, 0.1], [0.3, 0.6]])  # q̂(x_i, a): q̂^π = [0.42, 0.36], δ = [0.5, −0.6]


def _values(**kw):
    est = bandit_estimates(REWARD, ACTION, POSITION, PSCORE, DIST, Q_HAT, n_bootstrap=0, **kw)
    return {k: v.value for k, v in est.items()}


def test_known_answers():
    v = _values(lambdas={"switch_dr": 1.0, "dros": 1.0})
    assert v["ips"] == pytest.approx((2.0 * 1 + 0.4 * 0) / 2)  # 1.0
    assert v["snips"] == pytest.approx(2.0 / 2.4)
    assert v["dm"] == pytest.approx((0.42 + 0.36) / 2)  # 0.39
    assert v["dr"] == pytest.approx(((0.42 + 2.0 * 0.5) + (0.36 + 0.4 * -0.6)) / 2)  # 0.77
    assert v["sndr"] == pytest.approx(0.39 + (2.0 * 0.5 + 0.4 * -0.6) / 2.4)  # 0.70667
    assert v["switch_dr"] == pytest.approx((0.42 + (0.36 + 0.4 * -0.6)) / 2)  # w₁ = 2 > λ: DM there
    shrunk = [1.0 * 2.0 / (4.0 + 1.0), 1.0 * 0.4 / (0.16 + 1.0)]
    assert v["dros"] == pytest.approx(((0.42 + shrunk[0] * 0.5) + (0.36 + shrunk[1] * -0.6)) / 2)


def test_switch_and_shrinkage_limits():
    inf = _values()
    assert inf["switch_dr"] == pytest.approx(inf["dr"]) and inf["dros"] == pytest.approx(inf["dr"])
    zero = _values(lambdas={"switch_dr": 0.0, "dros": 0.0})
    assert zero["switch_dr"] == pytest.approx(inf["dm"]) and zero["dros"] == pytest.approx(inf["dm"])


def test_position_indexing_and_per_round_distributions():
    """[n, C, K] action distribution and rewards: each round reads its own position's column."""
    dist = np.zeros((2, 2, 2))
    dist[0, :, 1] = [0.25, 0.75]  # round 0 at position 1
    dist[0, :, 0] = [1.0, 0.0]  # (unused column)
    dist[1, :, 0] = [0.5, 0.5]  # round 1 at position 0
    dist[1, :, 1] = [0.0, 1.0]
    q = np.zeros((2, 2, 2))
    q[0, :, 1] = [0.2, 0.4]
    q[1, :, 0] = [0.6, 0.8]
    est = bandit_estimates([1.0, 1.0], [1, 0], [1, 0], [0.5, 0.25], dist, q, n_bootstrap=0)
    w = np.array([0.75 / 0.5, 0.5 / 0.25])
    q_pi = np.array([0.25 * 0.2 + 0.75 * 0.4, 0.5 * 0.6 + 0.5 * 0.8])
    delta = np.array([1 - 0.4, 1 - 0.6])
    assert est["ips"].value == pytest.approx(w.mean())
    assert est["dm"].value == pytest.approx(q_pi.mean())
    assert est["dr"].value == pytest.approx((q_pi + w * delta).mean())
    assert est["sndr"].value == pytest.approx(q_pi.mean() + (w * delta).sum() / w.sum())


def test_unbiased_on_a_simulated_bandit_with_intervals():
    """Uniform logging over 5 items, 2 positions, a known click model: IPS / DR / SNDR / DM(true q̂)
    average to the target's true value over replicated logs, and the bootstrap interval covers it."""
    gen = torch.Generator().manual_seed(0)
    c, k, n, reps = 5, 2, 4000, 40
    p_click = torch.tensor([[0.1, 0.05], [0.3, 0.2], [0.05, 0.02], [0.2, 0.1], [0.15, 0.1]], dtype=torch.float64)
    target = torch.softmax(
        torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.0, 0.0], [1.0, 2.0], [0.5, 0.5]], dtype=torch.float64), 0
    )  # π(a | k), [C, K]
    truth = float(((target * p_click).sum(0)).mean())  # positions equally likely
    q_wrong = torch.full((n, c, k), 0.1, dtype=torch.float64)
    sums = {e: 0.0 for e in BANDIT_ESTIMATORS}
    covered = 0
    for rep in range(reps):
        a = torch.randint(c, (n,), generator=gen)
        pos = torch.randint(k, (n,), generator=gen)
        r = (torch.rand(n, generator=gen, dtype=torch.float64) < p_click[a, pos]).double()
        est = bandit_estimates(
            r,
            a,
            pos,
            torch.full((n,), 1 / c),
            target,
            q_wrong,
            lambdas={"switch_dr": 1e9, "dros": 1e9},
            n_bootstrap=200 if rep < 10 else 0,
            seed=rep,
        )
        for e in BANDIT_ESTIMATORS:
            sums[e] += est[e].value / reps
        if rep < 10:
            covered += est["dr"].lower <= truth <= est["dr"].upper
    for e in ("ips", "snips", "dr", "sndr", "switch_dr", "dros"):
        assert sums[e] == pytest.approx(truth, rel=0.03), e
    assert abs(sums["dm"] - truth) > 0.02  # DM with a wrong model is biased
    assert covered >= 8


def test_input_errors():
    with pytest.raises(ConfigError, match="pscore: logging propensities must be positive"):
        bandit_estimates(REWARD, ACTION, POSITION, [0.0, 0.5], DIST, Q_HAT)
    with pytest.raises(ConfigError, match="estimator 'dr' needs reward-model predictions"):
        bandit_estimates(REWARD, ACTION, POSITION, PSCORE, DIST, None, estimators=["ips", "dr"])
    with pytest.raises(ConfigError, match="unknown estimator"):
        bandit_estimates(REWARD, ACTION, POSITION, PSCORE, DIST, Q_HAT, estimators=["magic"])
    with pytest.raises(ConfigError, match="one entry per round"):
        bandit_estimates(REWARD, [0], POSITION, PSCORE, DIST, Q_HAT)
