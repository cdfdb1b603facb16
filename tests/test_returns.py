"""Return and advantage estimators against brute-force answers."""

import torch

from core_rl.common import returns as R


def brute_rtg(rewards, dones, gamma, last_value):
    T, N = rewards.shape
    out = torch.zeros(T, N)
    for n in range(N):
        for t in range(T):
            g, disc = 0.0, 1.0
            for k in range(t, T):
                g += disc * rewards[k, n]
                if dones[k, n]:
                    break
                disc *= gamma
            else:
                g += disc * last_value[n]
            out[t, n] = g
    return out


def brute_nstep(rewards, values, dones, gamma, n, last_value):
    T, N = rewards.shape
    nxt = torch.cat([values[1:], last_value[None]], 0)
    out = torch.zeros(T, N)
    for e in range(N):
        for t in range(T):
            y, disc = 0.0, 1.0
            for k in range(t, min(t + n, T)):
                y += disc * rewards[k, e]
                disc *= gamma
                if dones[k, e]:
                    break
                if k == t + n - 1 or k == T - 1:
                    y += disc * nxt[k, e]
            out[t, e] = y
    return out


def make_data(T=12, N=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(T, N, generator=g)
    values = torch.randn(T, N, generator=g)
    dones = (torch.rand(T, N, generator=g) < 0.25).float()
    last = torch.randn(N, generator=g)
    return rewards, values, dones, last


def test_reward_to_go_matches_brute_force():
    r, _, d, last = make_data()
    assert torch.allclose(R.reward_to_go(r, d, 0.9, last), brute_rtg(r, d, 0.9, last), atol=1e-5)


def test_gae_lambda_one_is_monte_carlo_advantage():
    r, v, d, last = make_data()
    adv = R.gae(r, v, d, last, gamma=0.95, lam=1.0)
    assert torch.allclose(adv, brute_rtg(r, d, 0.95, last) - v, atol=1e-5)


def test_gae_lambda_zero_is_td_error():
    r, v, d, last = make_data()
    nxt = torch.cat([v[1:], last[None]], 0)
    td_error = r + 0.95 * (1 - d) * nxt - v
    assert torch.allclose(R.gae(r, v, d, last, gamma=0.95, lam=0.0), td_error, atol=1e-6)


def test_nstep_returns_match_brute_force_for_several_n():
    r, v, d, last = make_data(T=15, N=4, seed=3)
    for n in (1, 2, 5, 20):
        got = R.nstep_returns(r, v, d, 0.9, n, last)
        assert torch.allclose(got, brute_nstep(r, v, d, 0.9, n, last), atol=1e-5), n


def test_nstep_with_long_n_equals_reward_to_go():
    r, v, d, last = make_data(T=10, N=2, seed=5)
    assert torch.allclose(R.nstep_returns(r, v, d, 0.9, 100, last), brute_rtg(r, d, 0.9, last), atol=1e-5)


def test_discounted_return_is_whole_trajectory_return_at_every_step():
    rewards = torch.tensor([[1.0], [2.0], [3.0], [10.0], [20.0]])
    dones = torch.tensor([[0.0], [0.0], [1.0], [0.0], [1.0]])
    starts = torch.tensor([[1.0], [0.0], [0.0], [1.0], [0.0]])
    out = R.discounted_return(rewards, dones, 0.5, starts)
    first = 1 + 0.5 * 2 + 0.25 * 3
    second = 10 + 0.5 * 20
    assert torch.allclose(out.squeeze(), torch.tensor([first, first, first, second, second]))
