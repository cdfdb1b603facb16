"""Slate actions for the on-policy agents: the :class:`Slate` space, the Plackett–Luce
:class:`SlateCategorical` and :class:`MultiCategorical` against exact enumeration and
``torch.distributions``, the policy's dispatch, and PPO/TRPO learning a contextual slate bandit."""

from __future__ import annotations

import itertools
import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv
from gymnasium.vector.utils import batch_space, iterate

from core_rl.common.distributions import Categorical, DiagGaussian, MultiCategorical, SlateCategorical, StochasticPolicy
from core_rl.common.errors import SpaceError
from core_rl.common.networks import mlp
from core_rl.common.spaces import Slate
from core_rl.trust_region.common import fisher_vector_product, mean_kl
from core_rl.trust_region.ppo import PPO
from core_rl.trust_region.trpo import TRPO
from tests.seeding import seed as shifted


def all_slates(n: int, k: int) -> torch.Tensor:
    return torch.tensor(list(itertools.permutations(range(n), k)), dtype=torch.int64)


def enumerated_log_probs(dist: SlateCategorical, n: int, k: int) -> torch.Tensor:
    """``[B, S]`` log π(A) of every ordered slate A (batch of B states)."""
    slates = all_slates(n, k)
    batch = dist.logits.shape[0]
    return dist.log_prob(slates.unsqueeze(0).expand(batch, -1, -1).transpose(0, 1)).transpose(0, 1)


def plackett_luce_by_hand(logits: list[float], slate: list[int]) -> float:
    """log Π_j w_{a_j} / Σ_{c not yet chosen} w_c, with Python floats."""
    w = [math.exp(x) for x in logits]
    out, left = 0.0, set(range(len(logits)))
    for a in slate:
        out += math.log(w[a] / sum(w[c] for c in left))
        left.remove(a)
    return out


# ---- the space ----------------------------------------------------------------------------------
def test_slate_space_contains_samples_and_batches() -> None:
    space = Slate(6, 3, seed=shifted(0))
    assert isinstance(space, gym.spaces.MultiDiscrete) and space.shape == (3,)
    assert space.contains(np.array([5, 0, 2])) and space.contains([1, 2, 3])
    assert not space.contains(np.array([1, 1, 2]))  # repeated candidate
    assert not space.contains(np.array([0, 1, 6]))  # out of range
    assert not space.contains(np.array([0, 1]))  # wrong size
    draws = np.stack([space.sample() for _ in range(3000)])
    assert all(space.contains(d) for d in draws[:200])
    assert np.all(np.sort(draws, 1)[:, 1:] != np.sort(draws, 1)[:, :-1])
    again = Slate(6, 3, seed=shifted(0))
    np.testing.assert_array_equal(draws[:50], np.stack([again.sample() for _ in range(50)]))
    # uniform over the 120 ordered slates: every first item 1/6, every position's marginal 1/6
    for j in range(3):
        np.testing.assert_allclose(np.bincount(draws[:, j], minlength=6) / len(draws), 1 / 6, atol=0.03)
    with pytest.raises(SpaceError, match="k=7"):
        Slate(6, 7)

    batched = batch_space(space, 4)  # a vector env's action space: one slate per env, still distinct
    assert isinstance(batched, Slate) and batched.shape == (4, 3) and batched.batch_shape == (4,)
    many = batched.sample()
    assert batched.contains(many) and not batched.contains(np.array([[0, 0, 1]] * 4))
    assert [space.contains(a) for a in iterate(batched, many)] == [True] * 4
    assert isinstance(batched[0], Slate) and batched[0].shape == (3,)


def test_gymnasium_vector_envs_step_slate_envs() -> None:
    """SyncVectorEnv over single slate envs builds a batched Slate action space whose samples the
    envs accept (gymnasium's MultiDiscrete rule would give an integer Box with repeats)."""
    import safety  # noqa: F401  (registers safety/Recommender-v0)
    from safety.cmdp import read_costs

    vec = SyncVectorEnv(
        [lambda: gym.make("safety/Recommender-v0") for _ in range(3)], autoreset_mode=AutoresetMode.SAME_STEP
    )
    assert isinstance(vec.action_space, Slate) and vec.action_space.shape == (3, 2)
    vec.reset(seed=0)
    vec.action_space.seed(0)
    ends = 0
    for _ in range(40):  # past an episode end (30 steps): the step's cost is then in final_info
        _, reward, terminated, truncated, info = vec.step(vec.action_space.sample())
        costs = read_costs(info, ["cost"], 3, terminated | truncated)
        assert reward.shape == (3,) and costs.shape == (3, 1) and set(np.unique(costs)) <= {0.0, 1.0, 2.0}
        ends += int((terminated | truncated).sum())
    assert ends == 3
    vec.close()


# ---- Plackett–Luce -----------------------------------------------------------------------------
def test_slate_log_prob_is_plackett_luce_and_sums_to_one() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 5, dtype=torch.float64) * 1.5
    dist = SlateCategorical(logits, 2)
    log_p = enumerated_log_probs(dist, 5, 2)  # [4, 20]
    torch.testing.assert_close(log_p.exp().sum(1), torch.ones(4, dtype=torch.float64))
    slates = [[3, 1], [1, 3], [0, 4], [4, 0]]
    ours = dist.log_prob(torch.tensor(slates))
    for b, slate in enumerate(slates):
        assert float(ours[b]) == pytest.approx(plackett_luce_by_hand(logits[b].tolist(), slate), abs=1e-10)
    # k = 3 normalizes too, and k = 1 is the categorical
    three = SlateCategorical(logits, 3)
    torch.testing.assert_close(enumerated_log_probs(three, 5, 3).exp().sum(1), torch.ones(4, dtype=torch.float64))
    one = SlateCategorical(logits, 1)
    a = torch.tensor([[2], [0], [4], [1]])
    torch.testing.assert_close(one.log_prob(a), Categorical(logits).log_prob(a[:, 0]))
    # the mode is the most probable ordered slate
    best = all_slates(5, 2)[log_p.argmax(1)]
    torch.testing.assert_close(dist.mode(), best)


def test_gumbel_top_k_samples_follow_plackett_luce() -> None:
    """200k seeded draws for one state: Pearson's χ² over the 20 ordered slates stays below the
    0.999 quantile of χ²(19) (43.8); a wrong sampler (e.g. independent draws of each position)
    is far above it."""
    torch.manual_seed(1)
    logits = torch.tensor([[1.2, 0.3, -0.5, 0.0, 0.8]])
    dist = SlateCategorical(logits.expand(200_000, 5), 2)
    draws = dist.sample()
    assert draws.shape == (200_000, 2) and draws.dtype == torch.int64
    assert bool((draws[:, 0] != draws[:, 1]).all())
    slates = all_slates(5, 2)
    index = draws[:, 0] * 5 + draws[:, 1]
    counts = torch.bincount(index, minlength=25)[slates[:, 0] * 5 + slates[:, 1]].double()
    expected = enumerated_log_probs(SlateCategorical(logits.double(), 2), 5, 2)[0].exp() * len(draws)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 43.8, chi2
    # the second position is conditional on the first: independent softmax draws are rejected
    p = torch.softmax(logits[0].double(), 0)
    wrong = p[slates[:, 0]] * p[slates[:, 1]] / (1 - (p**2).sum()) * len(draws)
    assert float(((counts - wrong) ** 2 / wrong).sum()) > 200


@pytest.mark.parametrize("k", [1, 2, 3])
def test_slate_kl_and_entropy_equal_brute_force(k: int) -> None:
    torch.manual_seed(2)
    n = 5
    p_logits = torch.randn(3, n, dtype=torch.float64, requires_grad=True)
    q_logits = torch.randn(3, n, dtype=torch.float64)
    p, q = SlateCategorical(p_logits, k), SlateCategorical(q_logits, k)
    assert p.exact
    log_p, log_q = enumerated_log_probs(p, n, k), enumerated_log_probs(q, n, k)
    kl_brute = (log_p.exp() * (log_p - log_q)).sum(1)
    torch.testing.assert_close(p.kl(q), kl_brute)
    torch.testing.assert_close(p.entropy(), -(log_p.exp() * log_p).sum(1))
    torch.testing.assert_close(p.kl(p.detach()), torch.zeros(3, dtype=torch.float64))
    # differentiable in self, with the brute force's gradient
    g_ours = torch.autograd.grad(p.kl(q).sum(), p_logits, retain_graph=True)[0]
    g_brute = torch.autograd.grad(kl_brute.sum(), p_logits)[0]
    torch.testing.assert_close(g_ours, g_brute)
    if k == 1:
        torch.testing.assert_close(p.kl(q), Categorical(p_logits).kl(Categorical(q_logits)))


def test_slate_kl_hessian_is_the_fisher_matrix() -> None:
    """What NPG/TRPO/CPO use: ∇²_θ KL(π_θ ‖ π_θ₀) at θ = θ₀ is F = E_A[∇log π(A) ∇log π(A)ᵀ]; here
    θ are one state's logits (n = 5, k = 2), F by enumerating the 20 slates, and the
    Fisher-vector product of the trust-region code on the same KL."""
    torch.manual_seed(3)
    theta0 = torch.randn(5, dtype=torch.float64)
    slates = all_slates(5, 2)

    def kl_at(theta: torch.Tensor) -> torch.Tensor:
        return SlateCategorical(theta[None], 2).kl(SlateCategorical(theta0[None], 2))[0]

    hessian = torch.autograd.functional.hessian(kl_at, theta0)
    theta = theta0.clone().requires_grad_(True)
    log_p = SlateCategorical(theta.expand(len(slates), 5), 2).log_prob(slates)
    scores = torch.stack([torch.autograd.grad(lp, theta, retain_graph=True)[0] for lp in log_p])
    fisher = (log_p.detach().exp()[:, None, None] * scores[:, :, None] * scores[:, None, :]).sum(0)
    torch.testing.assert_close(hessian, fisher)
    new = SlateCategorical(theta[None], 2)
    fvp = fisher_vector_product(mean_kl(new, new.detach()), [theta])
    v = torch.randn(5, dtype=torch.float64)
    torch.testing.assert_close(fvp(v), fisher @ v)


def test_large_slates_use_the_unbiased_one_prefix_estimate() -> None:
    """Past ``max_enumeration`` KL and entropy are the chain rule along one A ~ p per state: their
    mean over many draws is the exact value."""
    torch.manual_seed(4)
    p_logits, q_logits = torch.randn(2, 5, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    exact_p = SlateCategorical(p_logits, 3)
    estimate_p = SlateCategorical(p_logits.repeat(20_000, 1), 3, max_enumeration=0)
    estimate_q = SlateCategorical(q_logits.repeat(20_000, 1), 3, max_enumeration=0)
    assert exact_p.exact and not estimate_p.exact
    kl_mean = estimate_p.kl(estimate_q).reshape(20_000, 2).mean(0)
    h_mean = estimate_p.entropy().reshape(20_000, 2).mean(0)
    torch.testing.assert_close(kl_mean, exact_p.kl(SlateCategorical(q_logits, 3)), atol=0.02, rtol=0.02)
    torch.testing.assert_close(h_mean, exact_p.entropy(), atol=0.02, rtol=0.01)
    assert float(estimate_p.kl(estimate_p.detach()).abs().max()) < 1e-9
    assert not SlateCategorical(torch.zeros(1, 100), 3).exact and SlateCategorical(torch.zeros(1, 100), 2).exact


# ---- independent categoricals --------------------------------------------------------------------
def test_multi_categorical_matches_torch_distributions() -> None:
    torch.manual_seed(5)
    nvec, start = (3, 5, 2), (1, 0, -2)
    logits = torch.randn(7, sum(nvec), dtype=torch.float64)
    other = torch.randn(7, sum(nvec), dtype=torch.float64)
    parts, other_parts = logits.split(nvec, -1), other.split(nvec, -1)
    ref = [torch.distributions.Categorical(logits=x) for x in parts]
    ref_other = [torch.distributions.Categorical(logits=x) for x in other_parts]
    dist = MultiCategorical(logits, nvec, start)
    actions = torch.stack([torch.randint(0, n, (7,)) + s for n, s in zip(nvec, start)], 1)
    expected = sum(r.log_prob(actions[:, d] - start[d]) for d, r in enumerate(ref))
    torch.testing.assert_close(dist.log_prob(actions), expected)
    torch.testing.assert_close(dist.entropy(), sum(r.entropy() for r in ref))
    torch.testing.assert_close(
        dist.kl(MultiCategorical(other, nvec, start)),
        sum(torch.distributions.kl_divergence(a, b) for a, b in zip(ref, ref_other)),
    )
    torch.testing.assert_close(dist.mode(), torch.stack([x.argmax(-1) + s for x, s in zip(parts, start)], 1))
    space = gym.spaces.MultiDiscrete(nvec, start=start)
    big = MultiCategorical(logits[:1].expand(60_000, -1), nvec, start)
    draws = big.sample()
    assert all(space.contains(a) for a in draws[:100].numpy())
    freq = torch.bincount(draws[:, 1], minlength=5).double() / len(draws)
    torch.testing.assert_close(freq, torch.softmax(parts[1][0], 0), atol=0.01, rtol=0.0)
    # equal sizes take the reshape path: the same numbers as the general one
    same = MultiCategorical(logits[:, :6], (3, 3))
    torch.testing.assert_close(
        same.entropy(),
        sum(torch.distributions.Categorical(logits=x).entropy() for x in logits[:, :6].split((3, 3), -1)),
    )


# ---- the policy ------------------------------------------------------------------------------------
def test_policy_dispatch_and_unchanged_discrete_and_box_heads() -> None:
    obs_space = gym.spaces.Box(-1, 1, (4,), np.float32)
    obs = torch.randn(3, 4)
    slate = StochasticPolicy(obs_space, Slate(7, 3), (8,))
    assert slate.kind == "slate" and slate.net[-1].out_features == 7
    d = slate.distribution(obs)
    assert isinstance(d, SlateCategorical) and d.sample().shape == (3, 3) and d.log_prob(d.mode()).shape == (3,)
    multi = StochasticPolicy(obs_space, gym.spaces.MultiDiscrete([2, 4]), (8,))
    assert multi.kind == "multi_categorical" and multi.net[-1].out_features == 6
    assert isinstance(multi.distribution(obs), MultiCategorical) and multi.distribution(obs).sample().shape == (3, 2)
    with pytest.raises(SpaceError, match="1-D MultiDiscrete"):
        StochasticPolicy(obs_space, gym.spaces.MultiDiscrete([[2, 2], [2, 2]]))
    with pytest.raises(SpaceError, match="batched"):
        StochasticPolicy(obs_space, Slate(5, 2, batch_shape=(3,)))
    # Discrete and Box: the same parameters from the same seed as the plain MLP, the same heads
    for space, out in [(gym.spaces.Discrete(3), 3), (gym.spaces.Box(-1, 1, (2,)), 2)]:
        torch.manual_seed(0)
        policy = StochasticPolicy(obs_space, space, (8,))
        torch.manual_seed(0)
        net = mlp(4, out, (8,), "tanh", out_gain=0.01)
        for a, b in zip(policy.net.parameters(), net.parameters()):
            torch.testing.assert_close(a, b)
        dist = policy.distribution(obs)
        assert isinstance(dist, Categorical if out == 3 else DiagGaussian) and policy.discrete == (out == 3)


# ---- learning -----------------------------------------------------------------------------------
class SlateBandit(VectorEnv):
    """One-step contextual slate bandit: candidate values v ~ U(0,1)^n are the observation, the
    reward of slate (a_1, a_2) is v[a_1] + ½ v[a_2] (order matters). Optimum: the best candidate
    first, the second best second, E = 6/7 + ½·5/7 ≈ 1.214 for n = 6; random slates: 0.75."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 16, n: int = 6):
        self.num_envs, self.n = num_envs, n
        self.weights = np.array([1.0, 0.5])
        self.single_observation_space = gym.spaces.Box(0.0, 1.0, (n,), np.float32)
        self.single_action_space = Slate(n, 2)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._rng = np.random.default_rng(0)
        self._v = self._draw()

    def _draw(self) -> np.ndarray:
        return self._rng.random((self.num_envs, self.n)).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._v = self._draw()
        return self._v.copy(), {}

    def step(self, actions: Any):
        a = np.asarray(actions)
        assert a.shape == (self.num_envs, 2) and a.dtype == np.int64 and self.action_space.contains(a)
        reward = (np.take_along_axis(self._v, a, 1) * self.weights).sum(1).astype(np.float64)
        done = np.ones(self.num_envs, dtype=bool)
        final, self._v = self._v, self._draw()
        info = {"final_obs": final, "_final_obs": done, "final_info": {}, "_final_info": done}
        return self._v.copy(), reward, done, np.zeros_like(done), info


@pytest.mark.parametrize(
    "cls,config",
    [
        (PPO, dict(n_steps=32, batch_size=128, n_epochs=10, lr=3e-3)),
        (TRPO, dict(n_steps=32, max_kl=0.05)),
    ],
)
def test_on_policy_agents_learn_a_slate_bandit(cls: type, config: dict[str, Any]) -> None:
    torch.set_num_threads(1)
    agent = cls(SlateBandit(16), seed=shifted(0), gamma=0.5, n_envs=16, hidden_sizes=(64,), **config)
    batch = agent.collect()  # the rollout keeps [T, N, k] integer slates
    assert batch.actions.shape == (32, 16, 2) and batch.actions.dtype == torch.int64
    assert batch.flat().actions.shape == (512, 2)
    agent.learn(20_480)
    result = agent.evaluate(400, env=SlateBandit(8), n_envs=8)
    assert result["mean_return"] > 1.15, result["mean_return"]  # random 0.75, optimum ≈ 1.214
    one = agent.predict(np.array([0.1, 0.7, 0.2, 0.95, 0.0, 0.3], dtype=np.float32))
    assert one.shape == (2,) and one.dtype == np.int64 and one.tolist() == [3, 1]
    many = agent.predict(np.random.default_rng(0).random((5, 6)).astype(np.float32))
    assert many.shape == (5, 2) and many.dtype == np.int64
