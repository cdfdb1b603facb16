r"""The baseline slate policies: random, popularity, myopic greedy, ε-greedy, Plackett–Luce and its mode.

See :mod:`recsys.policies` for the propensities each reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from core_rl.common.distributions import plackett_luce_log_prob, plackett_luce_table_log_prob
from core_rl.common.errors import ConfigError
from recsys.choice_model import ItemScorer, SlateRewardModel, enumerate_slates, num_ordered_slates, optimize_slates
from recsys.policies.registry import policy_from_spec
from recsys.policies.types import SlateDecision, SlateObs, SlatePolicy, as_slate_obs, random_ordered_slates


def _ones(n: int, k: int | None = None) -> torch.Tensor:
    return torch.ones((n,) if k is None else (n, k), dtype=torch.float64)


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

    def __init__(
        self,
        num_candidates: int,
        slate_size: int,
        scores: torch.Tensor | list[float],
        key: str = "topic",
        num_topics: int | None = None,
    ):
        super().__init__(num_candidates, slate_size)
        if key not in ("doc_id", "topic"):
            raise ConfigError(f"popularity key must be 'doc_id' or 'topic', got '{key}'")
        self.key = key
        self.scores = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
        self.num_topics = int(num_topics if num_topics is not None else self.scores.shape[0])

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "key": self.key, "num_topics": self.num_topics, "scores": self.scores.tolist()}

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
        slates = order[:, : self.slate_size]
        n = len(obs)
        return SlateDecision(slates, _ones(n), _ones(n, self.slate_size))

    @classmethod
    def fit(
        cls,
        keys: torch.Tensor,
        engagement: torch.Tensor,
        num_keys: int,
        num_candidates: int,
        slate_size: int,
        key: str = "topic",
        prior_strength: float = 1.0,
        num_topics: int | None = None,
    ) -> "PopularityPolicy":
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

    def __init__(
        self, num_candidates: int, slate_size: int, reward_model: SlateRewardModel | None = None, method: str = "lp"
    ):
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
            return (
                torch.tensor(np.asarray(info["candidate_choice_logit"]), dtype=torch.float32),
                torch.tensor(np.asarray(info["no_click_logit"]), dtype=torch.float32),
                torch.tensor(np.asarray(info["candidate_engagement"]), dtype=torch.float32),
            )
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


class ScoreFn(nn.Module):
    """Candidate scores s(x, i) from an :class:`ItemScorer` (the serialisable scorer)."""

    def __init__(self, user_dim: int, doc_dim: int, hidden_sizes: tuple[int, ...] = (64, 64), activation: str = "relu"):
        super().__init__()
        self.hparams = {
            "user_dim": user_dim,
            "doc_dim": doc_dim,
            "hidden_sizes": list(hidden_sizes),
            "activation": activation,
        }
        self.scorer = ItemScorer(user_dim, doc_dim, tuple(hidden_sizes), activation)

    def forward(self, user: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
        return self.scorer(user, docs)

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> "ScoreFn":
        """The scorer saved as ``hparams`` (:attr:`hparams`) and ``state`` (its state dict)."""
        fn = cls(hparams["user_dim"], hparams["doc_dim"], tuple(hparams["hidden_sizes"]), hparams["activation"])
        fn.load_state_dict(state)
        return fn


class PlackettLucePolicy(SlatePolicy):
    """K candidates drawn without replacement ∝ exp(s_i / τ) (Gumbel top-K), s from ``score_fn``.

    ``score_fn`` is a :class:`ScoreFn` (serialisable) or any callable ``(SlateObs, info) → [N, C]``.
    """

    kind = "plackett_luce"
    deterministic = False
    max_enumerated: ClassVar[int] = 50_000

    def __init__(self, num_candidates: int, slate_size: int, score_fn: Any, temperature: float = 1.0, seed: int = 0):
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
        return cls(
            spec["num_candidates"],
            spec["slate_size"],
            ScoreFn.from_hparams(spec["scorer"], state["scorer"]),
            spec["temperature"],
            spec.get("seed", 0),
        )

    def log_scores(self, obs: SlateObs, info: Mapping[str, Any] | None) -> torch.Tensor:
        s = self.score_fn(obs.user, obs.docs) if isinstance(self.score_fn, nn.Module) else self.score_fn(obs, info)
        return torch.as_tensor(s, dtype=torch.float32) / self.temperature

    def decide(self, obs: SlateObs, info: Mapping[str, Any] | None) -> SlateDecision:
        scores = self.log_scores(obs, info).double()
        u = torch.rand(scores.shape, generator=self.generator, dtype=torch.float64).clamp_(1e-12, 1 - 1e-12)
        gumbel = -torch.log(-torch.log(u))
        slates = (scores + gumbel).topk(self.slate_size, dim=1).indices
        prob = plackett_luce_log_prob(scores, slates).exp()
        return SlateDecision(
            slates,
            prob,
            self._position_marginals(scores).gather(1, self._pos_index(slates)).view(slates.shape)
            if self._can_enumerate()
            else torch.full(slates.shape, torch.nan, dtype=torch.float64),
        )

    def _can_enumerate(self) -> bool:
        return num_ordered_slates(self.num_candidates, self.slate_size) <= self.max_enumerated

    def _pos_index(self, slates: torch.Tensor) -> torch.Tensor:
        k = slates.shape[1]
        return (slates + torch.arange(k).unsqueeze(0) * self.num_candidates).reshape(slates.shape[0], k)

    def _position_marginals(self, scores: torch.Tensor) -> torch.Tensor:
        """``[N, K·C]`` μ(item at position) from the enumerated distribution."""
        table = enumerate_slates(self.num_candidates, self.slate_size, ordered=True)
        probs = plackett_luce_table_log_prob(scores, table).exp()  # [N, S]
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
        return cls(
            spec["num_candidates"],
            spec["slate_size"],
            ScoreFn.from_hparams(spec["scorer"], state["scorer"]),
            spec.get("label", "scored_topk"),
        )

    def decide(self, obs: SlateObs, info: Mapping[str, Any] | None) -> SlateDecision:
        scores = self.score_fn(obs.user, obs.docs)
        slates = scores.topk(self.slate_size, dim=1).indices
        n = len(obs)
        return SlateDecision(slates, _ones(n), _ones(n, self.slate_size))

    def describe(self) -> str:
        return self.label


__all__ = [
    "RandomPolicy",
    "PopularityPolicy",
    "MyopicGreedyPolicy",
    "EpsilonGreedyPolicy",
    "ScoreFn",
    "PlackettLucePolicy",
    "ScoredTopKPolicy",
]
