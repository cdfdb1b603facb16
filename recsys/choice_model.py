r"""The conditional choice model, slate values and exact/approximate slate optimisation (notes 11/7–14).

A user facing slate :math:`A = (a_1..a_K)` clicks item :math:`i \in A` or nothing (⊥) with

.. math:: P(i \mid s, A) = \frac{v(s, i)}{v_\bot(s) + \sum_{j\in A} v(s, j)}, \qquad v = e^{\ell},

and SlateQ's decomposition (Ie et al., 2019) writes a slate's value through item-wise values
:math:`\bar Q(s, i)`:

.. math:: Q(s, A) = \sum_{i\in A} P(i \mid s, A)\, \bar Q(s, i)
          = \frac{\sum_{i\in A} v_i \bar Q_i}{v_\bot + \sum_{i\in A} v_i}.

Maximising it over the :math:`\binom{C}{K}` subsets is a linear-fractional program; its LP
relaxation (Charnes–Cooper) has an integral optimum, so it is solved *exactly* here by
Dinkelbach's parametric method — :math:`\lambda_{t+1} = Q(s, A_t)`, :math:`A_{t+1} =
\operatorname{top-}K_i\; v_i(\bar Q_i - \lambda_t)` — which is vectorized over users and stops after
a few iterations (``method="lp"``); ``"enumerate"`` scores every subset of a precomputed index
tensor; ``"topk"`` takes the K largest :math:`v_i \bar Q_i` and ``"greedy"`` adds, K times, the item
that most increases the fraction (the paper's TS and GS heuristics).

Choice models map ``user [N, U]`` and candidate ``docs [N, C, F]`` to ``(logits [N, C],
no_click_logit [N])``: :class:`SimulatorChoiceModel` is the simulator's own model computed from the
observation (what the SlateQ paper assumes known), :class:`LearnedChoiceModel` a conditional-logit
network fitted to logged clicks by maximum likelihood, and :class:`SlateRewardModel` adds a learned
per-item engagement :math:`\hat e(s, i)`, giving :math:`\hat r(s, A) = \sum_i P(i|s,A)\hat e(s,i)`.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache
from typing import Any, Literal, Protocol

import torch
from torch import nn

from core_rl.common.errors import ConfigError
from core_rl.common.networks import mlp

SlateMethod = Literal["lp", "enumerate", "topk", "greedy"]
SLATE_METHODS: tuple[str, ...] = ("lp", "enumerate", "topk", "greedy")


# ---- enumeration -----------------------------------------------------------------------------------
@lru_cache(maxsize=32)
def _subsets(num_candidates: int, slate_size: int) -> torch.Tensor:
    combos = list(itertools.combinations(range(num_candidates), slate_size))
    return torch.tensor(combos, dtype=torch.int64).reshape(len(combos), slate_size)


@lru_cache(maxsize=32)
def _ordered(num_candidates: int, slate_size: int) -> torch.Tensor:
    perms = list(itertools.permutations(range(num_candidates), slate_size))
    return torch.tensor(perms, dtype=torch.int64).reshape(len(perms), slate_size)


def num_ordered_slates(num_candidates: int, slate_size: int) -> int:
    """C! / (C − K)!: how many ordered slates of K distinct candidates exist."""
    return math.perm(num_candidates, slate_size)


def enumerate_slates(
    num_candidates: int, slate_size: int, ordered: bool = False, max_slates: int = 2_000_000
) -> torch.Tensor:
    """Every slate as a ``[S, K]`` index tensor: subsets (lexicographic) or ordered tuples."""
    count = math.perm(num_candidates, slate_size) if ordered else math.comb(num_candidates, slate_size)
    if count > max_slates:
        raise ConfigError(
            f"{count} {'ordered ' if ordered else ''}slates of {slate_size} out of {num_candidates} "
            f"candidates are too many to enumerate (limit {max_slates}); use method='lp' or 'topk'"
        )
    return (_ordered if ordered else _subsets)(num_candidates, slate_size)


def ordered_slate_index(slates: torch.Tensor, num_candidates: int) -> torch.Tensor:
    """Row of each ``[N, K]`` ordered slate in :func:`enumerate_slates` (``ordered=True``), ``[N]``.

    Lexicographic rank of a K-permutation of C: Σ_k rank_k · (C−k−1)!/(C−K)! where rank_k counts the
    unused candidates smaller than a_k.
    """
    n, k = slates.shape
    smaller_used = (slates.unsqueeze(1) < slates.unsqueeze(2)).tril(-1).sum(-1)  # [N, K]: earlier & smaller
    rank = slates - smaller_used
    weights = torch.tensor(
        [math.perm(num_candidates - j - 1, k - j - 1) for j in range(k)], dtype=torch.int64, device=slates.device
    )
    return (rank * weights).sum(-1)


def slot_item_indicator(slates: torch.Tensor, num_candidates: int) -> torch.Tensor:
    """One-hot slot×item encoding 1_A of ``[..., K]`` slates: ``[..., K*C]`` (slot-major)."""
    k = slates.shape[-1]
    offsets = torch.arange(k, device=slates.device) * num_candidates
    out = torch.zeros(*slates.shape[:-1], k * num_candidates, dtype=torch.float32, device=slates.device)
    return out.scatter_(-1, slates + offsets, 1.0)


# ---- slate values --------------------------------------------------------------------------------
def _weights(logits: torch.Tensor, no_click_logit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """v = e^ℓ and v_⊥ scaled by a common per-user factor (the fractions are invariant to it)."""
    shift = torch.maximum(logits.max(dim=-1).values, no_click_logit)
    return torch.exp(logits - shift.unsqueeze(-1)), torch.exp(no_click_logit - shift)


def choice_probabilities(logits: torch.Tensor, no_click_logit: torch.Tensor, slates: torch.Tensor) -> torch.Tensor:
    """``[N, K+1]`` click probabilities of each slate position (no click last) for ``[N, K]`` slates."""
    picked = logits.gather(1, slates)
    return torch.softmax(torch.cat([picked, no_click_logit.unsqueeze(1)], dim=1), dim=1)


def slate_q(
    logits: torch.Tensor, no_click_logit: torch.Tensor, item_q: torch.Tensor, slates: torch.Tensor
) -> torch.Tensor:
    """:math:`Q(s, A) = \\sum_{i\\in A} P(i|s,A) \\bar Q(s,i)` for one ``[N, K]`` slate per user → ``[N]``."""
    v, v0 = _weights(logits, no_click_logit)
    vs, qs = v.gather(1, slates), item_q.gather(1, slates)
    return (vs * qs).sum(1) / (v0 + vs.sum(1))


def slate_q_table(
    logits: torch.Tensor, no_click_logit: torch.Tensor, item_q: torch.Tensor, slates: torch.Tensor
) -> torch.Tensor:
    """Q(s, A) for every user and every slate of a shared ``[S, K]`` table: ``[N, S]``."""
    v, v0 = _weights(logits, no_click_logit)
    gain = v * item_q
    s, k = slates.shape
    flat = slates.reshape(-1)
    num = gain[:, flat].view(-1, s, k).sum(-1)
    den = v0.unsqueeze(1) + v[:, flat].view(-1, s, k).sum(-1)
    return num / den


# ---- slate optimisation ---------------------------------------------------------------------------
def _topk_slates(score: torch.Tensor, k: int) -> torch.Tensor:
    return score.topk(k, dim=1).indices


def optimize_slates(
    logits: torch.Tensor,
    no_click_logit: torch.Tensor,
    item_q: torch.Tensor,
    slate_size: int,
    method: str = "lp",
    max_iter: int = 50,
) -> torch.Tensor:
    """``[N, K]`` slates maximising (exactly for ``lp``/``enumerate``) Σ_i P(i|s,A) Q̄(s,i).

    Slates come back ordered by decreasing v_i Q̄_i (position carries no value in the choice model).
    """
    n, c = logits.shape
    if slate_size > c:
        raise ConfigError(f"slate_size {slate_size} exceeds the {c} candidates")
    v, v0 = _weights(logits, no_click_logit)
    gain = v * item_q
    if method == "topk":
        return _topk_slates(gain, slate_size)
    if method == "greedy":
        num = torch.zeros(n, dtype=gain.dtype, device=gain.device)
        den = v0.clone()
        taken = torch.zeros(n, c, dtype=torch.bool, device=gain.device)
        picks = []
        for _ in range(slate_size):  # K rounds, each vectorized over users and candidates
            ratio = (num.unsqueeze(1) + gain) / (den.unsqueeze(1) + v)
            ratio = ratio.masked_fill(taken, -torch.inf)
            pick = ratio.argmax(1)
            picks.append(pick)
            taken[torch.arange(n, device=gain.device), pick] = True
            num = num + gain.gather(1, pick.unsqueeze(1)).squeeze(1)
            den = den + v.gather(1, pick.unsqueeze(1)).squeeze(1)
        return torch.stack(picks, 1)
    if method == "enumerate":
        table = enumerate_slates(c, slate_size).to(logits.device)
        best = torch.empty(n, dtype=torch.int64, device=logits.device)
        step = max(1, 2_000_000 // max(table.shape[0], 1))
        for start in range(0, n, step):  # chunks bound memory at ~2M slate scores
            sl = slice(start, start + step)
            best[sl] = slate_q_table(logits[sl], no_click_logit[sl], item_q[sl], table).argmax(1)
        slates = table[best]
        return slates.gather(1, gain.gather(1, slates).argsort(1, descending=True))
    if method == "lp":
        # Dinkelbach on max_A N(A)/D(A): A_{t+1} = top-K of v_i (Q̄_i − λ_t), λ_{t+1} = N(A_{t+1})/D(A_{t+1}).
        slates = _topk_slates(gain, slate_size)
        lam = (gain.gather(1, slates).sum(1)) / (v0 + v.gather(1, slates).sum(1))
        for _ in range(max_iter):
            cand = _topk_slates(v * (item_q - lam.unsqueeze(1)), slate_size)
            new = (gain.gather(1, cand).sum(1)) / (v0 + v.gather(1, cand).sum(1))
            improved = new > lam + 1e-7 * lam.abs().clamp_min(1.0)
            if not bool(improved.any()):
                break
            slates = torch.where(improved.unsqueeze(1), cand, slates)
            lam = torch.where(improved, new, lam)
        return slates.gather(1, gain.gather(1, slates).argsort(1, descending=True))
    raise ConfigError(f"unknown slate optimisation method '{method}'; known: {', '.join(SLATE_METHODS)}")


# ---- choice models ---------------------------------------------------------------------------------
class ChoiceModel(Protocol):
    def logits(self, user: torch.Tensor, docs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class SimulatorChoiceModel:
    """The simulator's choice model evaluated on the observation (needs the interest observed).

    NG twin: ℓ = offset − ‖x − f‖ (f = the first T doc features); RecSim: ℓ = log(x·f − min_normalizer)
    (proportional) or x·f (MNL), with their no-click logits.
    """

    def __init__(self, env_config: Any):
        from recsys.simulation import InterestEvolutionConfig, RecSimInterestEvolutionConfig

        if isinstance(env_config, InterestEvolutionConfig):
            if not env_config.observe_interest:
                raise ConfigError("choice_model='simulator' needs observe_interest=True in the NG twin's config")
            self.kind = "ng"
        elif isinstance(env_config, RecSimInterestEvolutionConfig):
            self.kind = "recsim"
        else:
            raise ConfigError(f"no simulator choice model for config {type(env_config).__name__}")
        self.config = env_config
        self.num_topics = env_config.num_topics

    def logits(self, user: torch.Tensor, docs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from recsys.simulation import ng_choice_logits, recsim_choice_logits

        t = self.num_topics
        x, f = user[:, :t], docs[..., :t]
        if self.kind == "ng":
            return ng_choice_logits(x, f, self.config)
        return recsim_choice_logits(x, f, self.config)

    def spec(self) -> dict[str, Any]:
        return {"type": "simulator", "env_kind": self.kind, "env_config": self.config.model_dump(mode="json")}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "SimulatorChoiceModel":
        from recsys.simulation import InterestEvolutionConfig, RecSimInterestEvolutionConfig

        cfg_cls = InterestEvolutionConfig if spec["env_kind"] == "ng" else RecSimInterestEvolutionConfig
        return cls(cfg_cls.model_validate(spec["env_config"]))


def pair_features(user: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
    """``[N, C, U + F]``: each candidate's features beside the user's."""
    return torch.cat([user.unsqueeze(1).expand(-1, docs.shape[1], -1), docs], dim=-1)


class ItemScorer(nn.Module):
    """A score per (user, candidate): an MLP on ``[user, doc]`` applied to every candidate at once."""

    def __init__(
        self,
        user_dim: int,
        doc_dim: int,
        hidden_sizes: tuple[int, ...] = (64, 64),
        activation: str = "relu",
        out_gain: float = 1.0,
    ):
        super().__init__()
        self.user_dim, self.doc_dim = user_dim, doc_dim
        self.net = mlp(user_dim + doc_dim, 1, hidden_sizes, activation, out_gain=out_gain)

    def forward(self, user: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
        return self.net(pair_features(user, docs)).squeeze(-1)


class LearnedChoiceModel(nn.Module):
    """Conditional-logit click model ℓ_ψ(s, i) = MLP([u, d_i]), ℓ_⊥(s) = MLP(u), fit by MLE."""

    def __init__(self, user_dim: int, doc_dim: int, hidden_sizes: tuple[int, ...] = (64, 64), activation: str = "relu"):
        super().__init__()
        self.item = ItemScorer(user_dim, doc_dim, hidden_sizes, activation)
        self.no_click = mlp(max(user_dim, 1), 1, (hidden_sizes[0],) if hidden_sizes else (), activation)

    def logits(self, user: torch.Tensor, docs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = user if user.shape[1] else torch.zeros(user.shape[0], 1, device=user.device)
        return self.item(user, docs), self.no_click(u).squeeze(-1)

    def nll(self, user: torch.Tensor, docs: torch.Tensor, slates: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
        """Mean −log P(choice | s, A); ``choice`` in 0..K with K = no click."""
        logits, none = self.logits(user, docs)
        all_logits = torch.cat([logits.gather(1, slates), none.unsqueeze(1)], dim=1)
        return nn.functional.cross_entropy(all_logits, choice)


class SlateRewardModel(nn.Module):
    """r̂(s, A) = Σ_i P̂(i|s,A) ê(s,i): a learned click model and engagement ê = softplus(MLP([u, d]))."""

    def __init__(self, user_dim: int, doc_dim: int, hidden_sizes: tuple[int, ...] = (64, 64), activation: str = "relu"):
        super().__init__()
        self.hparams = {
            "user_dim": user_dim,
            "doc_dim": doc_dim,
            "hidden_sizes": list(hidden_sizes),
            "activation": activation,
        }
        self.choice = LearnedChoiceModel(user_dim, doc_dim, hidden_sizes, activation)
        self.engagement_head = ItemScorer(user_dim, doc_dim, hidden_sizes, activation)

    def logits(self, user: torch.Tensor, docs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.choice.logits(user, docs)

    def engagement(self, user: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(self.engagement_head(user, docs))

    def loss(
        self,
        user: torch.Tensor,
        docs: torch.Tensor,
        slates: torch.Tensor,
        choice: torch.Tensor,
        engagement: torch.Tensor,
    ) -> torch.Tensor:
        """Click NLL + squared error of ê on the clicked items."""
        k = slates.shape[1]
        nll = self.choice.nll(user, docs, slates, choice)
        clicked = choice < k
        if not bool(clicked.any()):
            return nll
        rows = clicked.nonzero().squeeze(1)
        item = slates[rows, choice[rows]]
        pred = self.engagement(user[rows], docs[rows]).gather(1, item.unsqueeze(1)).squeeze(1)
        return nll + (pred - engagement[rows]).pow(2).mean()


__all__ = [
    "SLATE_METHODS",
    "SlateMethod",
    "enumerate_slates",
    "num_ordered_slates",
    "ordered_slate_index",
    "slot_item_indicator",
    "choice_probabilities",
    "slate_q",
    "slate_q_table",
    "optimize_slates",
    "ChoiceModel",
    "SimulatorChoiceModel",
    "ItemScorer",
    "LearnedChoiceModel",
    "SlateRewardModel",
    "pair_features",
]
