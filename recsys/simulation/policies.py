r"""Reference slate policies over the env's observation/info (torch, batched over users).

* :func:`enumerate_slates` / :func:`best_myopic_slates`: the exact myopic optimum
  :math:`\arg\max_A \sum_{k} P(k \mid s, A)\, e(s, a_k)` by enumerating every size-K subset of the
  C candidates (with no positional bias the MNL is order-free, so subsets suffice).
  (:class:`recsys.policies.MyopicGreedyPolicy` serves that optimum, read off the info keys the envs
  provide: ``candidate_choice_logit``, ``no_click_logit``, ``candidate_engagement``.)
* :class:`LinearScoringPolicy`: top-K candidates by a linear score
  :math:`w_a \cdot (-\lVert x - f\rVert) + w_q \cdot q + w_\ell \cdot \ell` of affinity, quality and
  length — simple enough to run unchanged inside RecSim NG (the bridge's ``linear`` policy).
* :func:`train_linear_policy_cem`: fits those weights in the twin by the cross-entropy method on
  mean session engagement (every population member is a block of users of one vector env).
* :class:`RandomSlatePolicy`: uniform random distinct candidates.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from recsys.simulation.user_model import expected_slate_engagement


def enumerate_slates(num_candidates: int, slate_size: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """Every size-``K`` subset of ``range(C)`` in lexicographic order, ``[S, K]``."""
    combos = list(itertools.combinations(range(num_candidates), slate_size))
    return torch.tensor(combos, dtype=torch.int64, device=device).reshape(len(combos), slate_size)


def best_myopic_slates(
    candidate_logits: torch.Tensor,
    no_click_logit: torch.Tensor,
    candidate_engagement: torch.Tensor,
    slate_size: int,
    slates: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[N, K]`` slate maximising the expected immediate engagement under the choice model.

    ``E[e | A] = sum_{k in A} v_k e_k / (v_0 + sum_{k in A} v_k)`` with ``v = exp(logit)``. For
    ``K = 2`` every pair is scored at once as a ``[N, C, C]`` table; otherwise over ``slates``
    (default: :func:`enumerate_slates`). Slates come back in increasing candidate order.
    """
    n, c = candidate_logits.shape
    shift = torch.maximum(candidate_logits.max(dim=1).values, no_click_logit)
    weight = torch.exp(candidate_logits - shift.unsqueeze(1))
    weight_none = torch.exp(no_click_logit - shift)
    gain = weight * candidate_engagement
    if slate_size == 2 and slates is None:
        value = (gain.unsqueeze(2) + gain.unsqueeze(1)) / (
            weight_none.view(n, 1, 1) + weight.unsqueeze(2) + weight.unsqueeze(1)
        )
        value.diagonal(dim1=1, dim2=2).fill_(-torch.inf)
        best = value.view(n, c * c).argmax(dim=1)
        return torch.stack([best // c, best % c], dim=1).sort(dim=1).values
    slates = enumerate_slates(c, slate_size, candidate_logits.device) if slates is None else slates
    s = slates.shape[0]
    flat = slates.unsqueeze(0).expand(n, s, slate_size).reshape(n, s * slate_size)
    num = gain.gather(1, flat).view(n, s, slate_size).sum(-1)
    den = weight_none.unsqueeze(1) + weight.gather(1, flat).view(n, s, slate_size).sum(-1)
    return slates[(num / den).argmax(dim=1)]


@dataclass
class LinearScoringPolicy:
    """Top-``K`` candidates by ``w_affinity * (-||x - f||) + w_quality * q + w_length * len``.

    Works on the RecSim NG twin's dict observation (``observe_interest=True``): ``obs["user"]`` is
    the interest ``[N, T]``, ``obs["doc"]`` the ``[N, C, T+2]`` table (features, quality, length).
    """

    w_affinity: float = 1.0
    w_quality: float = 0.0
    w_length: float = 0.0
    slate_size: int = 2

    def scores(self, interest: torch.Tensor, doc: torch.Tensor) -> torch.Tensor:
        t = interest.shape[-1]
        affinity = -torch.linalg.vector_norm(interest.unsqueeze(-2) - doc[..., :t], dim=-1)
        return self.w_affinity * affinity + self.w_quality * doc[..., t] + self.w_length * doc[..., t + 1]

    def __call__(self, obs: Any, info: dict[str, Any] | None = None) -> np.ndarray:
        scores = self.scores(torch.from_numpy(np.array(obs["user"])), torch.from_numpy(np.array(obs["doc"])))
        return scores.topk(self.slate_size, dim=1).indices.cpu().numpy()

    @property
    def weights(self) -> list[float]:
        return [self.w_affinity, self.w_quality, self.w_length]


def random_slates(num_users: int, num_candidates: int, slate_size: int, generator: torch.Generator) -> torch.Tensor:
    """``[N, K]`` uniformly random sets of ``K`` distinct candidates, by Floyd's algorithm.

    O(N K) work (no ``[N, C]`` random keys): slot ``i`` draws ``t ~ U{0..C-K+i}`` and takes
    ``C-K+i`` instead when ``t`` is already in the slate — every ``K``-subset is equally likely.
    """
    device = generator.device
    chosen = torch.empty(slate_size, num_users, dtype=torch.int64, device=device)
    for i, top in enumerate(range(num_candidates - slate_size, num_candidates)):
        draw = torch.randint(0, top + 1, (num_users,), generator=generator, device=device)
        taken = (chosen[:i] == draw).any(dim=0) if i else torch.zeros(num_users, dtype=torch.bool, device=device)
        chosen[i] = torch.where(taken, torch.full_like(draw, top), draw)
    return chosen.t()


class RandomSlatePolicy:
    """Uniformly random distinct candidates (:func:`random_slates`)."""

    def __init__(self, num_candidates: int, slate_size: int, seed: int = 0):
        self.num_candidates, self.slate_size = num_candidates, slate_size
        self._gen = torch.Generator().manual_seed(seed)

    def __call__(self, obs: Any, info: dict[str, Any] | None = None) -> np.ndarray:
        n = (obs["user"] if isinstance(obs, dict) else obs).shape[0]
        return random_slates(n, self.num_candidates, self.slate_size, self._gen).numpy()


def rollout_engagement(env: Any, policy: Any, seed: int, episodes: int = 1) -> np.ndarray:
    """Total engagement of each of ``env.num_envs`` sessions (``[episodes * N]``), sessions run in lockstep.

    Meant for envs whose sessions all end together (the NG twin's fixed horizon).
    """
    totals = []
    obs, info = env.reset(seed=seed)
    for _ in range(episodes):
        total = np.zeros(env.num_envs)
        done = np.zeros(env.num_envs, dtype=bool)
        while not done.all():
            obs, reward, terminated, truncated, info = env.step(policy(obs, info))
            total += np.where(done, 0.0, reward)
            done |= terminated | truncated
        totals.append(total)
    return np.concatenate(totals)


def train_linear_policy_cem(
    env_cls: Any,
    env_kwargs: dict[str, Any],
    users_per_candidate: int = 100,
    population: int = 16,
    elite: int = 4,
    iterations: int = 6,
    seed: int = 0,
    init_mean: tuple[float, float] = (1.0, 0.0),
    init_std: float = 2.0,
) -> tuple[LinearScoringPolicy, list[float]]:
    """Cross-entropy-method search of ``(w_affinity, w_quality)`` on mean session engagement in the twin.

    One vector env of ``population * users_per_candidate`` users runs all candidates at once (user
    block ``i`` follows candidate ``i``). Returns the best policy and the elite mean per iteration.
    """
    rng = np.random.default_rng(seed)
    env = env_cls(num_envs=population * users_per_candidate, seed=seed, **env_kwargs)
    k = env.slate_size
    mean, std = np.asarray(init_mean, dtype=np.float64), np.full(2, init_std)
    history: list[float] = []
    best_w, best_score = mean.copy(), -np.inf
    for it in range(iterations):
        ws = rng.normal(mean, std, size=(population, 2))
        w_rows = torch.as_tensor(np.repeat(ws, users_per_candidate, axis=0), dtype=torch.float32)

        def policy(obs: Any, info: Any) -> np.ndarray:
            interest, doc = torch.from_numpy(np.array(obs["user"])), torch.from_numpy(np.array(obs["doc"]))
            t = interest.shape[-1]
            affinity = -torch.linalg.vector_norm(interest.unsqueeze(-2) - doc[..., :t], dim=-1)
            scores = w_rows[:, :1] * affinity + w_rows[:, 1:2] * doc[..., t]
            return scores.topk(k, dim=1).indices.numpy()

        totals = rollout_engagement(env, policy, seed=seed + 1 + it).reshape(population, users_per_candidate)
        score = totals.mean(axis=1)
        order = np.argsort(-score)[:elite]
        mean, std = ws[order].mean(axis=0), ws[order].std(axis=0) + 0.05
        history.append(float(score[order].mean()))
        if score[order[0]] > best_score:
            best_score, best_w = float(score[order[0]]), ws[order[0]].copy()
    return LinearScoringPolicy(w_affinity=float(best_w[0]), w_quality=float(best_w[1]), slate_size=k), history


__all__ = [
    "enumerate_slates",
    "best_myopic_slates",
    "LinearScoringPolicy",
    "RandomSlatePolicy",
    "random_slates",
    "rollout_engagement",
    "train_linear_policy_cem",
    "expected_slate_engagement",
]
