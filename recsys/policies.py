r"""Slate policies behind one interface: ``policy(obs batch, info) → SlateDecision`` (slates + propensities).

Every policy maps a batch of N users, each with C candidates, to ordered slates of K distinct
candidate indices, and reports what off-policy evaluation and learning need about its own
randomness (notes 9/5, importance sampling):

* ``slate_propensity`` :math:`\mu(A \mid x)`, the probability of the whole ordered slate, and
* ``position_propensity`` :math:`\mu(a_k \text{ at } k \mid x)`, the per-position marginals;
* :meth:`SlatePolicy.probability_of` gives :math:`\pi(A \mid x)` of any given slates and
  :meth:`SlatePolicy.slate_distribution` the whole distribution over the enumerated ordered slates
  (the pseudo-inverse estimator's :math:`\Gamma_\mu(x) = \mathbb E_\mu[\mathbb 1_A \mathbb 1_A^\top]`).

Policies: :class:`RandomPolicy` (uniform ordered slates, :math:`\mu = (C-K)!/C!`),
:class:`PopularityPolicy` (top-K by a popularity table over doc ids or topics, fitted by
counting engagement per impression), :class:`MyopicGreedyPolicy` (the slate maximising the
immediate expected engagement :math:`\sum_i P(i|s,A) e(s,i)` under the simulator's choice model read
from ``info``, or under a learned :class:`~recsys.choice_model.SlateRewardModel`),
:class:`EpsilonGreedyPolicy` (a deterministic base with probability 1−ε, else uniform:
:math:`\mu(A|x) = (1-\epsilon)\mathbb 1[A = A^*(x)] + \epsilon/S`), :class:`PlackettLucePolicy`
(K draws without replacement :math:`\propto e^{s_i/\tau}`, by the Gumbel top-K trick, with
:math:`\mu(A|x) = \prod_k e^{s_{a_k}/\tau} / \sum_{j \notin a_{<k}} e^{s_j/\tau}`) and
:class:`ScoredTopKPolicy` (its mode: top-K by score). Learned policies (SlateQ, top-K REINFORCE,
CQL) subclass :class:`SlatePolicy` in their modules; :func:`save_policy`/:func:`load_policy` store
any of them as one torch file (kind + JSON spec + state dict).

:func:`evaluate_online` runs a policy in a simulator for whole sessions (a fixed number per
user slot, so short sessions are not favoured) and returns session engagement and the
per-step engagement curve.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import torch
from torch import nn

from core_rl.common.errors import ConfigError
from recsys.choice_model import (
    ItemScorer,
    SlateRewardModel,
    enumerate_slates,
    num_ordered_slates,
    optimize_slates,
    ordered_slate_index,
)


# ---- observations ------------------------------------------------------------------------------
@dataclass
class ObsLayout:
    """Widths of the user part U, the candidate count C and the per-candidate feature width F."""

    user_dim: int
    num_candidates: int
    doc_dim: int

    @classmethod
    def from_env(cls, env: Any) -> "ObsLayout":
        space = getattr(env, "single_observation_space", None) or env.observation_space
        import gymnasium as gym

        if isinstance(space, gym.spaces.Dict):
            c, f = space["doc"].shape
            return cls(int(space["user"].shape[0]), int(c), int(f))
        base = getattr(env, "unwrapped", env)
        return cls(len(base.user_feature_names), int(base.num_candidates), len(base.doc_feature_names))

    def as_dict(self) -> dict[str, int]:
        return {"user_dim": self.user_dim, "num_candidates": self.num_candidates, "doc_dim": self.doc_dim}


@dataclass
class SlateObs:
    """A batch of users and their candidates as torch tensors."""

    user: torch.Tensor            # [N, U] float32
    docs: torch.Tensor            # [N, C, F] float32
    doc_ids: torch.Tensor | None = None  # [N, C] int64

    def __len__(self) -> int:
        return int(self.docs.shape[0])

    @property
    def num_candidates(self) -> int:
        return int(self.docs.shape[1])

    def to(self, device: torch.device | str) -> "SlateObs":
        return SlateObs(self.user.to(device), self.docs.to(device),
                        None if self.doc_ids is None else self.doc_ids.to(device))

    def index(self, rows: torch.Tensor) -> "SlateObs":
        return SlateObs(self.user[rows], self.docs[rows], None if self.doc_ids is None else self.doc_ids[rows])


def _f32(x: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)


def as_slate_obs(obs: Any, layout: ObsLayout | None = None, info: Mapping[str, Any] | None = None) -> SlateObs:
    """A :class:`SlateObs` from a SlateObs, a ``{"user", "doc"}`` dict, or a flat ``[N, U + C·F]`` array."""
    if isinstance(obs, SlateObs):
        return obs
    doc_ids = None
    if info is not None and "candidate_doc_id" in info:
        doc_ids = torch.as_tensor(np.asarray(info["candidate_doc_id"]), dtype=torch.int64)
    if isinstance(obs, Mapping):
        user, docs = _f32(obs["user"]), _f32(obs["doc"])
        if user.dim() == 1:
            user, docs = user.unsqueeze(0), docs.unsqueeze(0)
        return SlateObs(user, docs, doc_ids)
    if layout is None:
        raise ConfigError("a flat observation needs the layout (user_dim, num_candidates, doc_dim)")
    flat = _f32(obs)
    flat = flat.reshape(-1, layout.user_dim + layout.num_candidates * layout.doc_dim)
    user = flat[:, :layout.user_dim]
    docs = flat[:, layout.user_dim:].reshape(-1, layout.num_candidates, layout.doc_dim)
    return SlateObs(user, docs, doc_ids)


# ---- decisions ---------------------------------------------------------------------------------
@dataclass
class SlateDecision:
    """Ordered slates and the probabilities with which the policy chose them."""

    slates: torch.Tensor               # [N, K] int64 candidate indices
    slate_propensity: torch.Tensor     # [N] float64: μ(A | x)
    position_propensity: torch.Tensor  # [N, K] float64: μ(a_k at position k | x) (nan where unknown)

    def numpy(self) -> np.ndarray:
        return self.slates.detach().cpu().numpy().astype(np.int64)


def _ones(n: int, k: int | None = None) -> torch.Tensor:
    return torch.ones((n,) if k is None else (n, k), dtype=torch.float64)


def random_ordered_slates(n: int, num_candidates: int, slate_size: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform random ordered slates: the K largest of C iid uniform keys, in key order."""
    keys = torch.rand(n, num_candidates, generator=generator)
    return keys.topk(slate_size, dim=1).indices


# ---- the interface -----------------------------------------------------------------------------
class SlatePolicy(ABC):
    """``policy(obs, info) → SlateDecision``. Subclasses provide :meth:`decide`."""

    kind: ClassVar[str] = "policy"
    deterministic: ClassVar[bool] = True
    #: the policy reads simulator ground truth from ``info`` (it cannot be served from features alone)
    needs_info: bool = False

    def __init__(self, num_candidates: int, slate_size: int):
        if slate_size < 1 or slate_size > num_candidates:
            raise ConfigError(f"slate_size must lie in [1, num_candidates={num_candidates}], got {slate_size}")
        self.num_candidates, self.slate_size = int(num_candidates), int(slate_size)
        self.layout: ObsLayout | None = None

    # -- what subclasses provide -------------------------------------------------------------------
    @abstractmethod
    def decide(self, obs: SlateObs, info: Mapping[str, Any] | None) -> SlateDecision:
        """Slates and propensities for a batch."""

    def spec(self) -> dict[str, Any]:
        """JSON-able description (with :meth:`state` it rebuilds the policy)."""
        return {"num_candidates": self.num_candidates, "slate_size": self.slate_size}

    def state(self) -> dict[str, Any]:
        """Tensors to save beside the spec (network weights, tables)."""
        return {}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], state: dict[str, Any]) -> "SlatePolicy":
        return cls(**spec)  # type: ignore[call-arg]

    # -- shared --------------------------------------------------------------------------------
    def __call__(self, obs: Any, info: Mapping[str, Any] | None = None) -> SlateDecision:
        o = as_slate_obs(obs, self.layout, info)
        if o.num_candidates != self.num_candidates:
            raise ConfigError(f"{self.kind} policy was built for {self.num_candidates} candidates, "
                              f"got {o.num_candidates}")
        if self.needs_info and info is None:
            raise ConfigError(f"{self.kind} policy reads the simulator's choice model from info; pass info")
        with torch.no_grad():
            return self.decide(o, info)

    def act(self, obs: Any, info: Mapping[str, Any] | None = None) -> np.ndarray:
        """Slates as the env's action array ``[N, K]``."""
        return self(obs, info).numpy()

    def probability_of(self, obs: Any, info: Mapping[str, Any] | None, slates: torch.Tensor) -> torch.Tensor:
        """π(A | x) of given ordered ``[N, K]`` slates. Deterministic policies: 1[A = π(x)]."""
        if not self.deterministic:
            raise NotImplementedError(f"{self.kind} must implement probability_of")
        chosen = self(obs, info).slates
        return (chosen == slates.to(chosen.device)).all(1).to(torch.float64)

    def slate_distribution(self, obs: Any, info: Mapping[str, Any] | None = None) -> torch.Tensor:
        """``[N, S]`` probability of every ordered slate of :func:`enumerate_slates` (``ordered=True``)."""
        if not self.deterministic:
            raise NotImplementedError(f"{self.kind} must implement slate_distribution")
        chosen = self(obs, info).slates
        s = num_ordered_slates(self.num_candidates, self.slate_size)
        out = torch.zeros(chosen.shape[0], s, dtype=torch.float64)
        return out.scatter_(1, ordered_slate_index(chosen, self.num_candidates).unsqueeze(1), 1.0)

    def describe(self) -> str:
        return self.kind


# ---- baselines -----------------------------------------------------------------------------------
class RandomPolicy(SlatePolicy):
    """Uniformly random ordered slates of distinct candidates."""

    kind = "random"
    deterministic = False

    def __init__(self, num_candidates: int, slate_size: int, seed: int = 0):
        super().__init__(num_candidates, slate_size)
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "seed": self.seed}

    def decide(self, obs: SlateObs, info: Mapping[str, Any] | None) -> SlateDecision:
        n = len(obs)
        slates = random_ordered_slates(n, self.num_candidates, self.slate_size, self.generator)
        p = 1.0 / num_ordered_slates(self.num_candidates, self.slate_size)
        return SlateDecision(slates, _ones(n) * p, _ones(n, self.slate_size) / self.num_candidates)

    def probability_of(self, obs: Any, info: Mapping[str, Any] | None, slates: torch.Tensor) -> torch.Tensor:
        return _ones(slates.shape[0]) / num_ordered_slates(self.num_candidates, self.slate_size)

    def slate_distribution(self, obs: Any, info: Mapping[str, Any] | None = None) -> torch.Tensor:
        n = len(as_slate_obs(obs, self.layout, info))
        s = num_ordered_slates(self.num_candidates, self.slate_size)
        return torch.full((n, s), 1.0 / s, dtype=torch.float64)


class PopularityPolicy(SlatePolicy):
    """Top-K candidates by popularity: engagement per impression of the candidate's key.

    ``key="doc_id"`` looks the table up by document id (a frozen corpus, e.g. the NG twin);
    ``key="topic"`` by the argmax of the first ``num_topics`` doc features (fresh documents every
    step, e.g. original RecSim). Unknown keys score the table's mean. Ties go to the lower index.
    """

    kind = "popularity"

    def __init__(self, num_candidates: int, slate_size: int, scores: torch.Tensor | list[float],
                 key: str = "topic", num_topics: int | None = None):
        super().__init__(num_candidates, slate_size)
        if key not in ("doc_id", "topic"):
            raise ConfigError(f"popularity key must be 'doc_id' or 'topic', got '{key}'")
        self.key = key
        self.scores = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
        self.num_topics = int(num_topics if num_topics is not None else self.scores.shape[0])

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "key": self.key, "num_topics": self.num_topics,
                "scores": self.scores.tolist()}

    @staticmethod
    def keys_of(obs: SlateObs, key: str, num_topics: int) -> torch.Tensor:
        if key == "doc_id":
            if obs.doc_ids is None:
                raise ConfigError("popularity by doc_id needs candidate doc ids (info['candidate_doc_id'] or the logs)")
            return obs.doc_ids.long()
        return obs.docs[..., :num_topics].argmax(-1)

    def candidate_scores(self, obs: SlateObs) -> torch.Tensor:
        keys = self.keys_of(obs, self.key, self.num_topics)
        known = (keys >= 0) & (keys < self.scores.shape[0])
        table = self.scores[keys.clamp(0, max(self.scores.shape[0] - 1, 0))]
        return torch.where(known, table, self.scores.mean())

    def decide(self, obs: SlateObs, info: Mapping[str, Any] | None) -> SlateDecision:
        score = self.candidate_scores(obs)
        order = torch.argsort(-score, dim=1, stable=True)
        slates = order[:, :self.slate_size]
        n = len(obs)
        return SlateDecision(slates, _ones(n), _ones(n, self.slate_size))

    @classmethod
    def fit(cls, keys: torch.Tensor, engagement: torch.Tensor, num_keys: int, num_candidates: int,
            slate_size: int, key: str = "topic", prior_strength: float = 1.0,
            num_topics: int | None = None) -> "PopularityPolicy":
        """Scores = (Σ engagement + prior·m̄)/(impressions + prior) per key from impressions
        (``keys [M]`` of every shown item, ``engagement [M]`` it earned, 0 if not clicked)."""
        keys = keys.long().reshape(-1)
        eng = engagement.double().reshape(-1)
        shown = torch.bincount(keys, minlength=num_keys).double()
        total = torch.zeros(num_keys, dtype=torch.float64).index_add_(0, keys, eng)
        prior = float(eng.mean()) if eng.numel() else 0.0
        scores = (total + prior_strength * prior) / (shown + prior_strength)
        return cls(num_candidates, slate_size, scores.float(), key=key, num_topics=num_topics)

    @classmethod
    def from_spec(cls, spec: dict[str, Any], state: dict[str, Any]) -> "PopularityPolicy":
        return cls(**spec)


class MyopicGreedyPolicy(SlatePolicy):
    """argmax_A Σ_i P(i|s,A) e(s,i): the immediate expected engagement, exactly (``method="lp"``).

    Without a model it reads the simulator's choice model and engagement from ``info``
    (``candidate_choice_logit``, ``no_click_logit``, ``candidate_engagement``); with a
    :class:`SlateRewardModel` it uses the learned ones and can be served from features.
    """

    kind = "myopic"

    def __init__(self, num_candidates: int, slate_size: int, reward_model: SlateRewardModel | None = None,
                 method: str = "lp"):
        super().__init__(num_candidates, slate_size)
        self.reward_model = reward_model
        self.method = method
        self.needs_info = reward_model is None

    def spec(self) -> dict[str, Any]:
        model = None if self.reward_model is None else self.reward_model.hparams
        return {**super().spec(), "method": self.method, "model": model}

    def state(self) -> dict[str, Any]:
        return {} if self.reward_model is None else {"reward_model": self.reward_model.state_dict()}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], state: dict[str, Any]) -> "MyopicGreedyPolicy":
        model = None
        if spec.get("model"):
            m = spec["model"]
            model = SlateRewardModel(m["user_dim"], m["doc_dim"], tuple(m["hidden_sizes"]), m["activation"])
            model.load_state_dict(state["reward_model"])
        return cls(spec["num_candidates"], spec["slate_size"], model, spec.get("method", "lp"))

    def scores(self, obs: SlateObs, info: Mapping[str, Any] | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.reward_model is None:
            assert info is not None
            return (torch.as_tensor(np.asarray(info["candidate_choice_logit"]), dtype=torch.float32),
                    torch.as_tensor(np.asarray(info["no_click_logit"]), dtype=torch.float32),
                    torch.as_tensor(np.asarray(info["candidate_engagement"]), dtype=torch.float32))
        logits, none = self.reward_model.logits(obs.user, obs.docs)
        return logits, none, self.reward_model.engagement(obs.user, obs.docs)

    def decide(self, obs: SlateObs, info: Mapping[str, Any] | None) -> SlateDecision:
        logits, none, engagement = self.scores(obs, info)
        slates = optimize_slates(logits, none, engagement, self.slate_size, self.method)
        n = len(obs)
        return SlateDecision(slates, _ones(n), _ones(n, self.slate_size))


class EpsilonGreedyPolicy(SlatePolicy):
    """With probability 1 − ε the base policy's slate, else a uniform random ordered slate."""

    kind = "epsilon_greedy"
    deterministic = False

    def __init__(self, base: SlatePolicy, epsilon: float, seed: int = 0):
        super().__init__(base.num_candidates, base.slate_size)
        if not base.deterministic:
            raise ConfigError(f"ε-greedy needs a deterministic base policy, got '{base.kind}'")
        if not 0.0 <= epsilon <= 1.0:
            raise ConfigError(f"epsilon must lie in [0, 1], got {epsilon}")
        self.base, self.epsilon, self.seed = base, float(epsilon), int(seed)
        self.needs_info = base.needs_info
        self.generator = torch.Generator().manual_seed(self.seed)

    def spec(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "seed": self.seed, "base": {"kind": self.base.kind, "spec": self.base.spec()}}

    def state(self) -> dict[str, Any]:
        return {"base": self.base.state()}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], state: dict[str, Any]) -> "EpsilonGreedyPolicy":
        base = policy_from_spec(spec["base"]["kind"], spec["base"]["spec"], state.get("base", {}))
        return cls(base, spec["epsilon"], spec.get("seed", 0))

    def decide(self, obs: SlateObs, info: Mapping[str, Any] | None) -> SlateDecision:
        n = len(obs)
        greedy = self.base.decide(obs, info).slates
        rand = random_ordered_slates(n, self.num_candidates, self.slate_size, self.generator)
        explore = torch.rand(n, generator=self.generator) < self.epsilon
        slates = torch.where(explore.unsqueeze(1), rand, greedy)
        return SlateDecision(slates, self._prob(greedy, slates), self._position_prob(greedy, slates))

    def _prob(self, greedy: torch.Tensor, slates: torch.Tensor) -> torch.Tensor:
        s = num_ordered_slates(self.num_candidates, self.slate_size)
        same = (greedy == slates).all(1).to(torch.float64)
        return (1.0 - self.epsilon) * same + self.epsilon / s

    def _position_prob(self, greedy: torch.Tensor, slates: torch.Tensor) -> torch.Tensor:
        return (1.0 - self.epsilon) * (greedy == slates).to(torch.float64) + self.epsilon / self.num_candidates

    def probability_of(self, obs: Any, info: Mapping[str, Any] | None, slates: torch.Tensor) -> torch.Tensor:
        o = as_slate_obs(obs, self.layout, info)
        with torch.no_grad():
            greedy = self.base.decide(o, info).slates
        return self._prob(greedy, slates)

    def slate_distribution(self, obs: Any, info: Mapping[str, Any] | None = None) -> torch.Tensor:
        base = self.base.slate_distribution(obs, info)
        return (1.0 - self.epsilon) * base + self.epsilon / base.shape[1]

    def describe(self) -> str:
        return f"epsilon_greedy({self.base.kind}, eps={self.epsilon})"


# ---- score-based policies ------------------------------------------------------------------------
def plackett_luce_log_prob(scores: torch.Tensor, slates: torch.Tensor) -> torch.Tensor:
    """log μ(A|x) = Σ_k [s_{a_k} − log Σ_{j ∉ a_<k} e^{s_j}] for ``[N, C]`` scores and ``[N, K]`` slates."""
    n, k = slates.shape
    picked = scores.gather(1, slates)                                   # [N, K]
    mask = torch.zeros_like(scores, dtype=torch.bool)
    out = torch.zeros(n, dtype=scores.dtype, device=scores.device)
    for pos in range(k):  # K positions, vectorized over users
        out = out + picked[:, pos] - torch.logsumexp(scores.masked_fill(mask, -torch.inf), dim=1)
        mask = mask.scatter(1, slates[:, pos:pos + 1], True)
    return out


def plackett_luce_table_log_prob(scores: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """log μ of every ordered slate of a shared ``[S, K]`` table: ``[N, S]``."""
    s, k = table.shape
    picked = scores[:, table.reshape(-1)].view(-1, s, k)                # [N, S, K]
    total = torch.logsumexp(scores, dim=1, keepdim=True)                # [N, 1]
    expo = torch.exp(picked - total.unsqueeze(-1))                      # e^{s}/Σe^{s}
    used = torch.cumsum(expo, dim=2) - expo                             # mass of earlier picks
    return (picked - total.unsqueeze(-1) - torch.log1p(-used.clamp(max=1 - 1e-12))).sum(-1)


class ScoreFn(nn.Module):
    """Candidate scores s(x, i) from an :class:`ItemScorer` (the serialisable scorer)."""

    def __init__(self, user_dim: int, doc_dim: int, hidden_sizes: tuple[int, ...] = (64, 64),
                 activation: str = "relu"):
        super().__init__()
        self.hparams = {"user_dim": user_dim, "doc_dim": doc_dim, "hidden_sizes": list(hidden_sizes),
                        "activation": activation}
        self.scorer = ItemScorer(user_dim, doc_dim, tuple(hidden_sizes), activation)

    def forward(self, user: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
        return self.scorer(user, docs)


class PlackettLucePolicy(SlatePolicy):
    """K candidates drawn without replacement ∝ exp(s_i / τ) (Gumbel top-K), s from ``score_fn``.

    ``score_fn`` is a :class:`ScoreFn` (serialisable) or any callable ``(SlateObs, info) → [N, C]``.
    """

    kind = "plackett_luce"
    deterministic = False
    max_enumerated: ClassVar[int] = 50_000

    def __init__(self, num_candidates: int, slate_size: int, score_fn: Any, temperature: float = 1.0,
                 seed: int = 0):
        super().__init__(num_candidates, slate_size)
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        self.score_fn, self.temperature, self.seed = score_fn, float(temperature), int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def spec(self) -> dict[str, Any]:
        if not isinstance(self.score_fn, ScoreFn):
            raise ConfigError("only a PlackettLucePolicy with a ScoreFn scorer can be saved")
        return {**super().spec(), "temperature": self.temperature, "seed": self.seed, "scorer": self.score_fn.hparams}

    def state(self) -> dict[str, Any]:
        if not isinstance(self.score_fn, ScoreFn):
            raise ConfigError("only a PlackettLucePolicy with a ScoreFn scorer can be saved")
        return {"scorer": self.score_fn.state_dict()}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], state: dict[str, Any]) -> "PlackettLucePolicy":
        h = spec["scorer"]
        fn = ScoreFn(h["user_dim"], h["doc_dim"], tuple(h["hidden_sizes"]), h["activation"])
        fn.load_state_dict(state["scorer"])
        return cls(spec["num_candidates"], spec["slate_size"], fn, spec["temperature"], spec.get("seed", 0))

    def log_scores(self, obs: SlateObs, info: Mapping[str, Any] | None) -> torch.Tensor:
        s = self.score_fn(obs.user, obs.docs) if isinstance(self.score_fn, nn.Module) else self.score_fn(obs, info)
        return torch.as_tensor(s, dtype=torch.float32) / self.temperature

    def decide(self, obs: SlateObs, info: Mapping[str, Any] | None) -> SlateDecision:
        scores = self.log_scores(obs, info).double()
        u = torch.rand(scores.shape, generator=self.generator, dtype=torch.float64).clamp_(1e-12, 1 - 1e-12)
        gumbel = -torch.log(-torch.log(u))
        slates = (scores + gumbel).topk(self.slate_size, dim=1).indices
        prob = plackett_luce_log_prob(scores, slates).exp()
        return SlateDecision(slates, prob, self._position_marginals(scores).gather(1, self._pos_index(slates)).view(
            slates.shape) if self._can_enumerate() else torch.full(slates.shape, torch.nan, dtype=torch.float64))

    def _can_enumerate(self) -> bool:
        return num_ordered_slates(self.num_candidates, self.slate_size) <= self.max_enumerated

    def _pos_index(self, slates: torch.Tensor) -> torch.Tensor:
        k = slates.shape[1]
        return (slates + torch.arange(k).unsqueeze(0) * self.num_candidates).reshape(slates.shape[0], k)

    def _position_marginals(self, scores: torch.Tensor) -> torch.Tensor:
        """``[N, K·C]`` μ(item at position) from the enumerated distribution."""
        table = enumerate_slates(self.num_candidates, self.slate_size, ordered=True)
        probs = plackett_luce_table_log_prob(scores, table).exp()                 # [N, S]
        k, c = self.slate_size, self.num_candidates
        onehot = torch.zeros(table.shape[0], k * c, dtype=probs.dtype)
        onehot.scatter_(1, table + torch.arange(k).unsqueeze(0) * c, 1.0)
        return probs @ onehot

    def probability_of(self, obs: Any, info: Mapping[str, Any] | None, slates: torch.Tensor) -> torch.Tensor:
        o = as_slate_obs(obs, self.layout, info)
        with torch.no_grad():
            return plackett_luce_log_prob(self.log_scores(o, info).double(), slates).exp()

    def slate_distribution(self, obs: Any, info: Mapping[str, Any] | None = None) -> torch.Tensor:
        o = as_slate_obs(obs, self.layout, info)
        table = enumerate_slates(self.num_candidates, self.slate_size, ordered=True)
        with torch.no_grad():
            return plackett_luce_table_log_prob(self.log_scores(o, info).double(), table).exp()


class ScoredTopKPolicy(SlatePolicy):
    """The K highest-scoring candidates, in score order (the mode of the Plackett–Luce policy)."""

    kind = "scored_topk"

    def __init__(self, num_candidates: int, slate_size: int, score_fn: ScoreFn, label: str = "scored_topk"):
        super().__init__(num_candidates, slate_size)
        self.score_fn, self.label = score_fn, label

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "scorer": self.score_fn.hparams, "label": self.label}

    def state(self) -> dict[str, Any]:
        return {"scorer": self.score_fn.state_dict()}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], state: dict[str, Any]) -> "ScoredTopKPolicy":
        h = spec["scorer"]
        fn = ScoreFn(h["user_dim"], h["doc_dim"], tuple(h["hidden_sizes"]), h["activation"])
        fn.load_state_dict(state["scorer"])
        return cls(spec["num_candidates"], spec["slate_size"], fn, spec.get("label", "scored_topk"))

    def decide(self, obs: SlateObs, info: Mapping[str, Any] | None) -> SlateDecision:
        scores = self.score_fn(obs.user, obs.docs)
        slates = scores.topk(self.slate_size, dim=1).indices
        n = len(obs)
        return SlateDecision(slates, _ones(n), _ones(n, self.slate_size))

    def describe(self) -> str:
        return self.label


# ---- registry and files ------------------------------------------------------------------------
POLICY_KINDS: dict[str, type[SlatePolicy]] = {}


def register_policy(cls: type[SlatePolicy]) -> type[SlatePolicy]:
    POLICY_KINDS[cls.kind] = cls
    return cls


for _cls in (RandomPolicy, PopularityPolicy, MyopicGreedyPolicy, EpsilonGreedyPolicy, PlackettLucePolicy,
             ScoredTopKPolicy):
    register_policy(_cls)


def _import_learners() -> None:
    import recsys.offline  # noqa: F401
    import recsys.slateq  # noqa: F401
    import recsys.topk_reinforce  # noqa: F401


def policy_from_spec(kind: str, spec: dict[str, Any], state: dict[str, Any] | None = None) -> SlatePolicy:
    if kind not in POLICY_KINDS:
        _import_learners()
    if kind not in POLICY_KINDS:
        raise ConfigError(f"unknown policy kind '{kind}'; known: {', '.join(sorted(POLICY_KINDS))}")
    return POLICY_KINDS[kind].from_spec(spec, state or {})


def save_policy(policy: SlatePolicy, path: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
    """One torch file: ``{"kind", "spec", "state", "layout", "extra"}``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "deeprl.recsys.policy/1", "kind": policy.kind, "spec": policy.spec(),
                "state": policy.state(), "layout": None if policy.layout is None else policy.layout.as_dict(),
                "extra": dict(extra or {})}, path)
    return path


def load_policy(path: str | Path) -> SlatePolicy:
    from core_rl.common.errors import CheckpointError

    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=False)
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(f"policy file '{path}' cannot be read: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != "deeprl.recsys.policy/1":
        raise CheckpointError(f"'{path}' is not a recsys policy file")
    policy = policy_from_spec(payload["kind"], payload["spec"], payload["state"])
    if payload.get("layout"):
        policy.layout = ObsLayout(**payload["layout"])
    return policy


# ---- online evaluation ----------------------------------------------------------------------------
@dataclass
class OnlineResult:
    """What a policy earned in the simulator."""

    session_engagement: np.ndarray          # [sessions] total engagement of each session
    session_length: np.ndarray              # [sessions]
    step_curve: np.ndarray                  # [T_max] mean engagement at step t (sessions still running)
    step_count: np.ndarray                  # [T_max] sessions that reached step t
    clicks: int = 0
    steps: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return float(self.session_engagement.mean())

    @property
    def stderr(self) -> float:
        n = len(self.session_engagement)
        return float(self.session_engagement.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")

    @property
    def per_step(self) -> float:
        """Mean engagement per step over every step taken."""
        return float(self.session_engagement.sum() / max(self.session_length.sum(), 1))

    def metrics(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}session_engagement": self.mean, f"{prefix}session_engagement_se": self.stderr,
                f"{prefix}step_engagement": self.per_step, f"{prefix}session_length": float(self.session_length.mean()),
                f"{prefix}click_rate": self.clicks / max(self.steps, 1)}


def evaluate_online(env: Any, policy: Callable[..., Any], sessions: int, seed: int = 0,
                    max_steps: int | None = None) -> OnlineResult:
    """Run ``policy`` (a :class:`SlatePolicy` or ``(obs, info) → slates``) for ``sessions`` whole sessions.

    Each of the env's N user slots runs ⌈sessions/N⌉ or ⌊sessions/N⌋ sessions (fixed quotas, so short
    sessions are not over-represented); steps after a slot's quota are not counted.
    """
    n = env.num_envs
    quota = np.full(n, sessions // n) + (np.arange(n) < sessions % n)
    obs, info = env.reset(seed=seed)
    ep_ret, ep_len = np.zeros(n), np.zeros(n, dtype=np.int64)
    totals, lengths = [], []
    curve_sum = np.zeros(0)
    curve_cnt = np.zeros(0, dtype=np.int64)
    clicks = steps = 0
    t_guard = 0
    while quota.sum() > 0:
        decision = policy(obs, info)
        slates = decision.numpy() if isinstance(decision, SlateDecision) else np.asarray(decision)
        obs, reward, terminated, truncated, info = env.step(slates)
        active = quota > 0
        if int(ep_len.max()) + 1 > curve_sum.shape[0]:
            grow = max(64, curve_sum.shape[0])
            curve_sum = np.concatenate([curve_sum, np.zeros(grow)])
            curve_cnt = np.concatenate([curve_cnt, np.zeros(grow, dtype=np.int64)])
        np.add.at(curve_sum, ep_len[active], reward[active])
        np.add.at(curve_cnt, ep_len[active], 1)
        clicks += int(np.asarray(info["clicked"])[active].sum())
        steps += int(active.sum())
        ep_ret += reward
        ep_len += 1
        done = (terminated | truncated) & active
        if done.any():
            totals.append(ep_ret[done].copy())
            lengths.append(ep_len[done].copy())
            quota[done] -= 1
        ended = terminated | truncated
        ep_ret[ended], ep_len[ended] = 0.0, 0
        t_guard += 1
        if max_steps is not None and t_guard >= max_steps:
            break
    last = int(np.flatnonzero(curve_cnt).max()) + 1 if curve_cnt.any() else 0
    return OnlineResult(np.concatenate(totals) if totals else np.zeros(0),
                        np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64),
                        curve_sum[:last] / np.maximum(curve_cnt[:last], 1), curve_cnt[:last], clicks, steps)


__all__ = [
    "ObsLayout", "SlateObs", "as_slate_obs", "SlateDecision", "SlatePolicy", "RandomPolicy", "PopularityPolicy",
    "MyopicGreedyPolicy", "EpsilonGreedyPolicy", "PlackettLucePolicy", "ScoredTopKPolicy", "ScoreFn",
    "plackett_luce_log_prob", "plackett_luce_table_log_prob", "random_ordered_slates", "POLICY_KINDS",
    "register_policy", "policy_from_spec", "save_policy", "load_policy", "OnlineResult", "evaluate_online",
]
