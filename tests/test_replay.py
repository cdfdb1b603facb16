"""Replay buffer: N-step targets gathered along time equal a brute-force sum; wrap-around is safe."""

import numpy as np
import torch

from core_rl.common.replay import ReplayBuffer


def fill(buf, T, N, rng, p_term=0.15, p_trunc=0.05):
    log = []
    for t in range(T):
        obs = rng.normal(size=(N, 2)).astype(np.float32)
        nxt = rng.normal(size=(N, 2)).astype(np.float32)
        r = rng.normal(size=N).astype(np.float32)
        term = rng.random(N) < p_term
        trunc = (rng.random(N) < p_trunc) & ~term
        buf.add(obs, rng.integers(0, 3, N), r, nxt, term, trunc)
        log.append((obs, nxt, r, term, trunc))
    return log


def brute(log, t, e, n, gamma, newest):
    g, disc, k = 0.0, 1.0, t
    while True:
        obs, nxt, r, term, trunc = log[k]
        g += disc * r[e]
        disc *= gamma
        if term[e] or trunc[e] or k == newest or k - t + 1 == n:
            return g, disc, nxt[e], float(term[e])
        k += 1


def test_nstep_gather_matches_brute_force():
    rng = np.random.default_rng(0)
    buf = ReplayBuffer(1000, 3, (2,), (), action_dtype=torch.long, n_step=4, gamma=0.9)
    log = fill(buf, 50, 3, rng)
    t = torch.arange(50).repeat_interleave(3)
    e = torch.arange(3).repeat(50)
    s = buf.gather(t, e)
    for i in range(len(t)):
        g, disc, nxt, done = brute(log, int(t[i]), int(e[i]), 4, 0.9, newest=49)
        assert abs(s.rewards[i].item() - g) < 1e-5
        assert abs(s.discounts[i].item() - disc) < 1e-6
        assert np.allclose(s.next_obs[i].numpy(), nxt)
        assert s.dones[i].item() == done


def test_one_step_sample_is_the_stored_transition_and_wraps():
    rng = np.random.default_rng(1)
    buf = ReplayBuffer(20, 2, (2,), (), action_dtype=torch.long, n_step=1, gamma=0.99)
    log = fill(buf, 25, 2, rng)  # 10 slots per env: wrapped
    assert len(buf) == 20 and buf.full
    s = buf.sample(64)
    assert torch.allclose(s.discounts, torch.full((64,), 0.99))
    stored = {tuple(np.round(o[e], 5)) for o, *_ in log[-10:] for e in range(2)}
    assert all(tuple(np.round(x, 5)) in stored for x in s.obs.numpy())


def test_one_step_fast_path_equals_the_generic_window_walk():
    rng = np.random.default_rng(2)
    buf = ReplayBuffer(1000, 3, (2,), (), action_dtype=torch.long, n_step=1, gamma=0.9)
    log = fill(buf, 40, 3, rng)
    t, e = torch.arange(40).repeat_interleave(3), torch.arange(3).repeat(40)
    s = buf.gather(t, e)
    for i in range(len(t)):
        g, disc, nxt, done = brute(log, int(t[i]), int(e[i]), 1, 0.9, newest=39)
        assert abs(s.rewards[i].item() - g) < 1e-6 and abs(s.discounts[i].item() - disc) < 1e-7
        assert np.allclose(s.next_obs[i].numpy(), nxt) and s.dones[i].item() == done


def test_clip_grad_norm_matches_torch():
    from core_rl.common.optim import clip_grad_norm

    torch.manual_seed(0)
    for max_norm in (0.1, 100.0):  # clipped, and left alone
        a = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
        b = [torch.nn.Parameter(p.detach().clone()) for p in a]
        for p, q in zip(a, b):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        ours = clip_grad_norm(a, max_norm)
        ref = torch.nn.utils.clip_grad_norm_(b, max_norm)
        assert torch.allclose(ours, ref)
        assert all(torch.allclose(p.grad, q.grad, atol=1e-7) for p, q in zip(a, b))


def test_phase_samples_are_the_sequential_samples_and_prioritized_stays_sequential():
    """A training phase's minibatches, drawn and gathered at once, are exactly those of successive
    ``sample`` calls from the same generator state (not only their distribution), in chunks too; a
    prioritized buffer (whose draws depend on priorities updated between steps) is sampled call by call."""
    from core_rl.common.prioritized_replay import PrioritizedReplayBuffer

    for n_envs, n_step in ((1, 1), (3, 3)):
        buf = ReplayBuffer(1000, n_envs, (2,), (), action_dtype=torch.long, n_step=n_step, gamma=0.9, seed=5)
        fill(buf, 40, n_envs, np.random.default_rng(1))
        state = buf.generator.get_state()
        sequential = [buf.sample(16) for _ in range(7)]
        for chunk_bytes in (ReplayBuffer.PHASE_CHUNK_BYTES, 3 * 16 * 2 * 2 * 4):  # one gather; chunks of 3 steps
            buf.generator.set_state(state)
            buf.PHASE_CHUNK_BYTES = chunk_bytes
            phase = list(buf.phase_samples(16, 7))
            assert len(phase) == 7
            for a, b in zip(sequential, phase):
                assert b.phase is not None and b.rewards.shape == (16,)
                for name in ("obs", "actions", "rewards", "next_obs", "dones", "discounts", "indices"):
                    assert torch.equal(getattr(a, name), getattr(b, name)), (n_envs, n_step, name)
        buf.generator.set_state(state)
        (single,) = list(buf.phase_samples(16, 1))  # one gradient step per phase: the sample itself
        assert single.phase is None
        for name in ("obs", "actions", "rewards", "next_obs", "dones", "discounts", "indices"):
            assert torch.equal(getattr(sequential[0], name), getattr(single, name)), (n_envs, n_step, name)
    per = PrioritizedReplayBuffer(1000, 1, (2,), (), action_dtype=torch.long)
    fill(per, 40, 1, np.random.default_rng(2))
    batches = list(per.phase_samples(8, 3))
    assert len(batches) == 3 and all(b.phase is None and b.weights is not None for b in batches)
