"""Action distributions: categorical, diagonal Gaussian, tanh-squashed Gaussian, generalized
state-dependent exploration (gSDE), independent categoricals (MultiDiscrete) and Plackett–Luce
slates (K distinct of n).

Light classes over raw tensors (no argument validation in the hot path) with the operations the
algorithms need: ``sample``, ``log_prob``, ``entropy``, ``mode`` and ``kl`` (for NPG, TRPO and PPO
diagnostics; closed form except the slate's, see :class:`SlateCategorical`). Continuous
log-probabilities are summed over action dimensions, MultiDiscrete ones over components.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Protocol

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from core_rl.common.errors import SpaceError
from core_rl.common.networks import ObsEncoder, mlp
from core_rl.common.spaces import Slate

LOG_2PI = math.log(2 * math.pi)
#: the logit of an excluded option (a chosen slate item, a padded category): exp(NEG) == 0 in float32
NEG = -1e9


class Distribution(Protocol):
    def sample(self) -> torch.Tensor: ...
    def log_prob(self, actions: torch.Tensor) -> torch.Tensor: ...
    def entropy(self) -> torch.Tensor: ...
    def mode(self) -> torch.Tensor: ...
    def kl(self, other: "Distribution") -> torch.Tensor: ...


class Categorical:
    """π(a|s) = softmax(logits)_a."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits - logits.logsumexp(-1, keepdim=True)

    @property
    def probs(self) -> torch.Tensor:
        return self.logits.exp()

    def sample(self) -> torch.Tensor:
        # Gumbel-max: argmax(logits + G) ~ Categorical(softmax(logits))
        u = torch.rand_like(self.logits).clamp_(1e-20, 1.0)
        return (self.logits - torch.log(-torch.log(u))).argmax(-1)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return self.logits.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        return -(self.probs * self.logits).sum(-1)

    def mode(self) -> torch.Tensor:
        return self.logits.argmax(-1)

    def kl(self, other: "Categorical") -> torch.Tensor:
        """D_KL(self ‖ other) = Σ_a p(a)(log p(a) − log q(a))."""
        return (self.probs * (self.logits - other.logits)).sum(-1)

    def detach(self) -> "Categorical":
        return Categorical(self.logits.detach())


class DiagGaussian:
    """π(a|s) = N(μ_θ(s), diag σ²)."""

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor):
        self.mean = mean
        self.log_std = log_std.expand_as(mean)

    def sample(self) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample()

    def rsample(self) -> torch.Tensor:
        return self.mean + self.log_std.exp() * torch.randn_like(self.mean)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        z = (actions - self.mean) * torch.exp(-self.log_std)
        return (-0.5 * z.pow(2) - self.log_std - 0.5 * LOG_2PI).sum(-1)

    def entropy(self) -> torch.Tensor:
        return (self.log_std + 0.5 * (1.0 + LOG_2PI)).sum(-1)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self, other: "DiagGaussian") -> torch.Tensor:
        var, ovar = (2 * self.log_std).exp(), (2 * other.log_std).exp()
        return (other.log_std - self.log_std + (var + (self.mean - other.mean).pow(2)) / (2 * ovar) - 0.5).sum(-1)

    def detach(self) -> "DiagGaussian":
        return DiagGaussian(self.mean.detach(), self.log_std.detach())


class TanhGaussian:
    """a = tanh(u), u ~ N(μ, σ²): log π(a|s) = log N(u) − Σ log(1 − tanh²u) (SAC's squashing)."""

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor):
        self.base = DiagGaussian(mean, log_std)

    def rsample_and_log_prob(self) -> tuple[torch.Tensor, torch.Tensor]:
        u = self.base.rsample()
        a = torch.tanh(u)
        # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), numerically stable
        correction = (2 * (math.log(2) - u - nn.functional.softplus(-2 * u))).sum(-1)
        return a, self.base.log_prob(u) - correction

    def sample(self) -> torch.Tensor:
        with torch.no_grad():
            return torch.tanh(self.base.rsample())

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        a = actions.clamp(-1 + 1e-6, 1 - 1e-6)
        u = torch.atanh(a)
        return self.base.log_prob(u) - torch.log1p(-a.pow(2)).sum(-1)

    def entropy(self) -> torch.Tensor:  # no closed form: a one-sample estimate
        _, logp = self.rsample_and_log_prob()
        return -logp

    def mode(self) -> torch.Tensor:
        return torch.tanh(self.base.mean)

    def kl(self, other: "TanhGaussian") -> torch.Tensor:  # tanh is a bijection: KL is unchanged
        return self.base.kl(other.base)


class StateDependentNoise(nn.Module):
    r"""Generalized state-dependent exploration, gSDE (Raffin, Kober & Stulp, CoRL 2021).

    Instead of fresh i.i.d. noise at every step, the exploration noise is a function of the state,
    drawn through a random linear map that is held fixed between resamples:

    .. math::
        a = \mu_\theta(s) + \epsilon(s),\qquad \epsilon(s) = z(s)^\top W,\qquad
        W_{ij} \sim \mathcal N(0, \sigma_{ij}^2),\ \ \sigma_{ij} = e^{\log\sigma_{ij}},

    with :math:`z(s)\in\mathbb R^L` the policy's last hidden features (gradient stopped, as in
    SB3's default ``learn_features=False``) and the learned matrix :math:`\log\sigma\in\mathbb R^{L\times|A|}`.
    For fixed s the action is Gaussian,

    .. math::
        \pi(a|s) = \mathcal N\big(\mu_\theta(s),\ \mathrm{diag}\,\hat\sigma(s)^2\big),\qquad
        \hat\sigma_j(s)^2 = \sum_i z_i(s)^2\,\sigma_{ij}^2 \;(+\,10^{-6}),

    which gives the log-likelihood, entropy and KL. The same state maps to the same action until
    :meth:`reset` draws a new W: every ``sde_sample_freq`` steps, or once per rollout, with one W per
    env. W is held as :math:`W = \sigma\odot\xi` with a stored :math:`\xi\sim\mathcal N(0, 1)`, so a
    sample is reparametrized in both μ and log σ (SAC's actor loss differentiates through it).
    """

    def __init__(self, latent_dim: int, action_dim: int, log_std_init: float = 0.0):
        super().__init__()
        self.log_std = nn.Parameter(torch.full((latent_dim, action_dim), float(log_std_init)))
        self.xi: torch.Tensor | None = None

    def reset(self, n: int = 1) -> None:
        """Draw ``n`` new exploration matrices (one per env) from torch's seeded generator."""
        self.xi = torch.randn((n, *self.log_std.shape), device=self.log_std.device)

    def distribution(self, mean: torch.Tensor, latent: torch.Tensor, squash: bool = False) -> "GSDEGaussian":
        if self.xi is None:
            self.reset(1)
        return GSDEGaussian(mean, latent.detach(), self.log_std, self.xi, squash)


class GSDEGaussian:
    r"""The action distribution of :class:`StateDependentNoise` for a batch of states: Gaussian with
    :math:`\hat\sigma(s)^2 = (z^2)(\sigma^2)` for ``log_prob``/``entropy``/``kl``, and samples
    :math:`\mu + z^\top W` with the held W (per env when the batch has one row per matrix, else the
    first). ``squash``: :math:`a = \tanh(u)` with SAC's correction
    :math:`\log\pi(a) = \log\mathcal N(u) - \sum\log(1-\tanh^2 u)`."""

    eps = 1e-6

    def __init__(
        self, mean: torch.Tensor, latent: torch.Tensor, log_std: torch.Tensor, xi: torch.Tensor, squash: bool = False
    ):
        self.mean, self.latent, self.log_std_matrix, self.xi, self.squash = mean, latent, log_std, xi, squash
        variance = latent.pow(2) @ (2 * log_std).exp()
        self.std = (variance + self.eps).sqrt()
        self.base = DiagGaussian(mean, self.std.log())

    def noise(self) -> torch.Tensor:
        """ε(s) = z(s)ᵀ W, W = σ ⊙ ξ (one W per row when there are as many as rows)."""
        weights = self.log_std_matrix.exp() * self.xi  # [n, L, A]
        if weights.shape[0] == self.latent.shape[0] and weights.shape[0] > 1:
            return torch.einsum("bl,bla->ba", self.latent, weights)
        return self.latent @ weights[0]

    def rsample_and_log_prob(self) -> tuple[torch.Tensor, torch.Tensor]:
        u = self.mean + self.noise()
        log_prob = self.base.log_prob(u)
        if not self.squash:
            return u, log_prob
        correction = (2 * (math.log(2) - u - nn.functional.softplus(-2 * u))).sum(-1)
        return torch.tanh(u), log_prob - correction

    def rsample(self) -> torch.Tensor:
        u = self.mean + self.noise()
        return torch.tanh(u) if self.squash else u

    def sample(self) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample()

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        if not self.squash:
            return self.base.log_prob(actions)
        a = actions.clamp(-1 + 1e-6, 1 - 1e-6)
        return self.base.log_prob(torch.atanh(a)) - torch.log1p(-a.pow(2)).sum(-1)

    def entropy(self) -> torch.Tensor:
        if not self.squash:
            return self.base.entropy()
        return -self.rsample_and_log_prob()[1]  # no closed form: a one-sample estimate

    def mode(self) -> torch.Tensor:
        return torch.tanh(self.mean) if self.squash else self.mean

    def kl(self, other: "GSDEGaussian") -> torch.Tensor:  # tanh is a bijection: KL is unchanged
        return self.base.kl(other.base)

    def detach(self) -> "GSDEGaussian":
        return GSDEGaussian(self.mean.detach(), self.latent, self.log_std_matrix.detach(), self.xi, self.squash)


@lru_cache(maxsize=32)
def _multi_categorical_layout(nvec: tuple[int, ...], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index [D, m], valid [D, m])``: where component d's option i sits in the flat logits."""
    width = max(nvec)
    offsets = np.cumsum((0,) + nvec[:-1])
    option = np.arange(width)
    valid = option[None, :] < np.asarray(nvec)[:, None]
    index = np.where(valid, offsets[:, None] + option[None, :], 0)
    return torch.as_tensor(index, device=device), torch.as_tensor(valid, device=device)


class MultiCategorical:
    r"""Independent categoricals over the components of a MultiDiscrete action ``a = (a_1..a_D)``,
    component d with :math:`n_d` options (different :math:`n_d` allowed):

    .. math::
        \pi(a|s) = \prod_d \mathrm{softmax}(\ell_d)_{a_d},\qquad \log\pi(a|s) = \sum_d \log\mathrm{softmax}(\ell_d)_{a_d},
        \qquad H = \sum_d H_d,\qquad D_{KL}(p\|q) = \sum_d D_{KL}(p_d\|q_d).

    The network's output is flat, ``[..., Σ_d n_d]``, components in order; it is held padded as
    ``logits [..., D, max n_d]`` (normalized log-probabilities, ``NEG`` past a component's end).
    ``start`` (gymnasium's per-component offset) is added to samples and modes and removed from the
    actions given to ``log_prob``.
    """

    def __init__(self, logits: torch.Tensor, nvec: Sequence[int], start: Sequence[int] | None = None):
        self.nvec = tuple(int(n) for n in nvec)
        index, self.valid = _multi_categorical_layout(self.nvec, str(logits.device))
        if len(set(self.nvec)) == 1:  # equal sizes: a reshape
            padded = logits.reshape(*logits.shape[:-1], len(self.nvec), self.nvec[0])
        else:
            padded = logits[..., index].masked_fill(~self.valid, NEG)
        self.logits = padded - padded.logsumexp(-1, keepdim=True)
        self.start = (
            None
            if start is None or not any(start)
            else torch.as_tensor(tuple(int(x) for x in start), device=logits.device)
        )

    @classmethod
    def _normalized(
        cls, logits: torch.Tensor, nvec: tuple[int, ...], valid: torch.Tensor, start: torch.Tensor | None
    ) -> "MultiCategorical":
        out = cls.__new__(cls)
        out.nvec, out.valid, out.logits, out.start = nvec, valid, logits, start
        return out

    @property
    def probs(self) -> torch.Tensor:
        return self.logits.exp()

    def _shift(self, a: torch.Tensor) -> torch.Tensor:
        return a if self.start is None else a + self.start

    def sample(self) -> torch.Tensor:
        u = torch.rand_like(self.logits).clamp_(1e-20, 1.0)  # Gumbel-max per component
        return self._shift((self.logits - torch.log(-torch.log(u))).argmax(-1))

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        a = actions.long() if self.start is None else actions.long() - self.start
        return self.logits.gather(-1, a.unsqueeze(-1)).squeeze(-1).sum(-1)

    def entropy(self) -> torch.Tensor:
        return -torch.where(self.valid, self.probs * self.logits, 0.0).sum((-2, -1))

    def mode(self) -> torch.Tensor:
        return self._shift(self.logits.argmax(-1))

    def kl(self, other: "MultiCategorical") -> torch.Tensor:
        """Σ_d Σ_i p_d(i)(log p_d(i) − log q_d(i))."""
        return torch.where(self.valid, self.probs * (self.logits - other.logits), 0.0).sum((-2, -1))

    def detach(self) -> "MultiCategorical":
        return MultiCategorical._normalized(self.logits.detach(), self.nvec, self.valid, self.start)


def _ordered_prefix_count(n: int, k: int) -> int:
    """Σ_{j<k} n!/(n−j)!: the ordered prefixes a_<j of every position j of a size-k slate."""
    total, level = 0, 1
    for j in range(k):
        total += level
        level *= n - j
    return total


@lru_cache(maxsize=32)
def _prefix_tree(n: int, k: int, device: str) -> list[tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]]:
    """Every ordered prefix of length j = 0..k−1 as ``(parent [P_j], item [P_j], taken [P_j, n])``:
    prefix p of level j is prefix ``parent[p]`` of level j−1 followed by ``item[p]``; ``taken``
    marks its items (level 0: the empty prefix, no parent)."""
    levels: list[tuple[np.ndarray | None, np.ndarray | None, np.ndarray]] = [(None, None, np.zeros((1, n), bool))]
    for _ in range(1, k):
        prev = levels[-1][2]
        parent, item = np.nonzero(~prev)
        taken = prev[parent].copy()
        taken[np.arange(len(parent)), item] = True
        levels.append((parent, item, taken))
    return [
        (
            None if p is None else torch.as_tensor(p, device=device),
            None if i is None else torch.as_tensor(i, device=device),
            torch.as_tensor(t, device=device),
        )
        for p, i, t in levels
    ]


class SlateCategorical:
    r"""Plackett–Luce over ordered slates of k distinct candidates out of n, from per-candidate logits.

    Candidate i has weight :math:`w_i = e^{\ell_i}`; the slate :math:`A=(a_1..a_k)` is drawn one
    position at a time, each from the softmax over the candidates not yet chosen:

    .. math::
        \pi(A|s) = \prod_{j=1}^{k} \pi_j(a_j \mid a_{<j}),\qquad
        \pi_j(i \mid a_{<j}) = \frac{e^{\ell_i}}{\sum_{c\notin a_{<j}} e^{\ell_c}}\ (i\notin a_{<j}),\qquad
        \log\pi(A|s) = \sum_{j=1}^{k}\Big(\ell_{a_j} - \log\!\!\sum_{c\notin a_{<j}}\! e^{\ell_c}\Big).

    * ``sample``: Gumbel top-k — with :math:`g_i` i.i.d. Gumbel(0, 1), the indices of the k largest
      :math:`\ell_i + g_i`, in decreasing order, are an exact PL sample (k=1 is Gumbel-max).
    * ``mode``: the top-k of ℓ in decreasing order, the most probable ordered slate (it maximizes
      every numerator and minimizes every denominator at once).
    * ``entropy`` and ``kl`` by the chain rule over positions,

      .. math::
          H(\pi) = \mathbb E_{A\sim\pi}\Big[\sum_j H\big(\pi_j(\cdot\mid a_{<j})\big)\Big],\qquad
          D_{KL}(p\|q) = \mathbb E_{A\sim p}\Big[\sum_j D_{KL}\big(p_j(\cdot\mid a_{<j})\,\|\,q_j(\cdot\mid a_{<j})\big)\Big],

      **exactly**, by enumerating every ordered prefix :math:`a_{<j}` (weight :math:`p(a_{<j})`),
      when that is small — :math:`n\sum_{j<k} n!/(n-j)! \le` ``max_enumeration`` (default 16384:
      n=10,k≤4; n=20,k≤3; n=100,k≤2) — else **estimated** along one prefix :math:`A\sim p` per state
      (drawn by Gumbel top-k, no gradient through the draw). ``self.exact`` says which. The
      estimate is unbiased for the value; its Hessian in θ at q = p is an unbiased estimate of
      PL's Fisher matrix (every term's value and gradient vanish at p = q), which is what the
      Fisher-vector products of NPG/TRPO/CPO need. The exact form is differentiable in both
      arguments everywhere (``new.kl(old)`` with ``old`` detached, as the trust-region code calls it).
    """

    max_enumeration: int = 16384

    def __init__(self, logits: torch.Tensor, k: int, max_enumeration: int | None = None):
        self.logits = logits - logits.logsumexp(-1, keepdim=True)  # shift-invariant: the first pick's log-probs
        self.k = int(k)
        self.n = int(logits.shape[-1])
        if max_enumeration is not None:
            self.max_enumeration = int(max_enumeration)
        self.exact = self.n * _ordered_prefix_count(self.n, self.k) <= self.max_enumeration

    @property
    def probs(self) -> torch.Tensor:
        """The first position's probabilities softmax(ℓ)."""
        return self.logits.exp()

    def sample(self) -> torch.Tensor:
        u = torch.rand_like(self.logits).clamp_(1e-20, 1.0)
        return (self.logits - torch.log(-torch.log(u))).topk(self.k, dim=-1).indices

    def mode(self) -> torch.Tensor:
        return self.logits.topk(self.k, dim=-1).indices

    def _taken_before(self, slates: torch.Tensor) -> torch.Tensor:
        """``[..., k, n]``: candidate c was chosen before position j (``a_<j``)."""
        chosen = (slates.long().unsqueeze(-1) == torch.arange(self.n, device=slates.device)).long()
        return (chosen.cumsum(-2) - chosen).bool()

    def _conditional(self, logits: torch.Tensor, taken: torch.Tensor) -> torch.Tensor:
        """log π_j(· | prefix) over the candidates not yet ``taken``: ``[..., P, n]`` (NEG-ish where taken)."""
        return logits.unsqueeze(-2).masked_fill(taken, NEG).log_softmax(-1)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        """Σ_j (ℓ_{a_j} − logsumexp_{c∉a_<j} ℓ_c) of slates ``[..., k]`` (leading axes broadcast)."""
        batch = torch.broadcast_shapes(actions.shape[:-1], self.logits.shape[:-1])
        a, logits = actions.long().expand(*batch, self.k), self.logits.expand(*batch, self.n)
        lse = logits.unsqueeze(-2).masked_fill(self._taken_before(a), NEG).logsumexp(-1)
        return (logits.gather(-1, a) - lse).sum(-1)

    def _chain_rule(self, other: "SlateCategorical | None") -> torch.Tensor:
        """Σ_j E_{a_<j ~ p}[f_j], f_j = KL(p_j ‖ q_j) (``other`` given) or H(p_j) (None)."""

        def term(taken: torch.Tensor) -> torch.Tensor:
            lp = self._conditional(self.logits, taken)
            inner = lp - self._conditional(other.logits, taken) if other is not None else -lp
            return torch.where(taken, 0.0, lp.exp() * inner).sum(-1)

        if not self.exact:  # one prefix A ~ p per state
            with torch.no_grad():
                prefix = self.sample()
            return term(self._taken_before(prefix)).sum(-1)
        total = torch.zeros(self.logits.shape[:-1], dtype=self.logits.dtype, device=self.logits.device)
        log_prefix = torch.zeros((*self.logits.shape[:-1], 1), dtype=self.logits.dtype, device=self.logits.device)
        prev = None
        for parent, item, taken in _prefix_tree(self.n, self.k, str(self.logits.device)):
            if parent is not None:  # log p(a_<j) = log p(a_<j−1) + log p_{j−1}(a_{j−1} | a_<j−1)
                log_prefix = log_prefix[..., parent] + prev[..., parent, item]
            lp = self._conditional(self.logits, taken)
            inner = lp - self._conditional(other.logits, taken) if other is not None else -lp
            total = total + (log_prefix.exp() * torch.where(taken, 0.0, lp.exp() * inner).sum(-1)).sum(-1)
            prev = lp
        return total

    def entropy(self) -> torch.Tensor:
        """H(π) by the chain rule: exact when ``self.exact``, else a one-prefix estimate (see the class)."""
        return self._chain_rule(None)

    def kl(self, other: "SlateCategorical") -> torch.Tensor:
        """D_KL(self ‖ other) by the chain rule: exact when ``self.exact``, else a one-prefix estimate."""
        return self._chain_rule(other)

    def detach(self) -> "SlateCategorical":
        return SlateCategorical(self.logits.detach(), self.k, self.max_enumeration)


def plackett_luce_log_prob(logits: torch.Tensor, slates: torch.Tensor) -> torch.Tensor:
    r"""log π(A|s) = Σ_j (ℓ_{a_j} − log Σ_{c∉a_<j} e^{ℓ_c}) of ``[..., k]`` ordered slates under ``[..., n]``
    logits (:meth:`SlateCategorical.log_prob`): the probability of a logged ordered slate."""
    return SlateCategorical(logits, int(slates.shape[-1])).log_prob(slates)


def plackett_luce_table_log_prob(logits: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    r"""log π of every ordered slate of one shared ``[S, k]`` table under ``[N, n]`` logits: ``[N, S]``.

    With :math:`p_i = e^{\ell_i}/\sum_c e^{\ell_c}`, the chosen-before mass of position j is
    :math:`u_j = \sum_{j'<j} p_{a_{j'}}`, so :math:`\log\pi(A) = \sum_j \log p_{a_j} - \log(1 - u_j)`
    — a cumulative sum along the slate instead of a masked logsumexp per position and slate.
    """
    s, k = table.shape
    picked = logits[:, table.reshape(-1)].view(-1, s, k)  # [N, S, k]
    total = torch.logsumexp(logits, dim=1, keepdim=True)  # [N, 1]
    expo = torch.exp(picked - total.unsqueeze(-1))  # p_{a_j}
    used = torch.cumsum(expo, dim=2) - expo  # u_j: mass of earlier picks
    return (picked - total.unsqueeze(-1) - torch.log1p(-used.clamp(max=1 - 1e-12))).sum(-1)


class StochasticPolicy(nn.Module):
    """π_θ(a|s) for Discrete (categorical), Box (diagonal Gaussian, state-independent log σ; or,
    with ``use_sde``, gSDE's state-dependent noise, :class:`StateDependentNoise`),
    :class:`~core_rl.common.spaces.Slate` (Plackett–Luce over n candidate logits) or any other
    1-D MultiDiscrete (independent categoricals, Σ n_d logits). ``discrete`` is true for a
    Discrete space only; ``kind`` names the head; ``sde`` is the gSDE module or None."""

    def __init__(
        self,
        obs_space: gym.Space,
        action_space: gym.Space,
        hidden_sizes=(64, 64),
        activation: str = "tanh",
        log_std_init: float = 0.0,
        use_sde: bool = False,
        encoder: str = "auto",
    ):
        super().__init__()
        self.encoder = ObsEncoder(obs_space, encoder)
        self.sde: StateDependentNoise | None = None
        if use_sde and not isinstance(action_space, gym.spaces.Box):
            raise SpaceError(f"gSDE (use_sde) needs a Box action space, got {action_space}")
        if isinstance(action_space, gym.spaces.Discrete):
            self.discrete, self.kind = True, "categorical"
            out = int(action_space.n)
        elif isinstance(action_space, gym.spaces.Box):
            self.discrete, self.kind = False, "gaussian"
            out = int(np.prod(action_space.shape))
            self.log_std = nn.Parameter(torch.full((out,), float(log_std_init)))
        elif isinstance(action_space, Slate):
            if action_space.batch_shape:
                raise SpaceError(f"a policy acts with one slate per observation, got the batched {action_space}")
            self.discrete, self.kind = False, "slate"
            self.slate_size = action_space.k
            out = action_space.n
        elif isinstance(action_space, gym.spaces.MultiDiscrete):
            if action_space.nvec.ndim != 1:
                raise SpaceError(
                    f"policies support 1-D MultiDiscrete action spaces, got nvec of shape {action_space.nvec.shape}"
                )
            self.discrete, self.kind = False, "multi_categorical"
            self.nvec = tuple(int(n) for n in action_space.nvec)
            self.start = tuple(int(x) for x in action_space.start)
            out = sum(self.nvec)
        else:
            raise SpaceError(
                f"policies support Discrete, Box or MultiDiscrete (incl. Slate) action spaces, got {action_space}"
            )
        self.net = mlp(self.encoder.dim, out, hidden_sizes, activation, out_gain=0.01)
        if use_sde:  # the state-dependent noise replaces the state-independent log σ
            del self.log_std
            latent_dim = hidden_sizes[-1] if hidden_sizes else self.encoder.dim
            self.sde = StateDependentNoise(latent_dim, out, log_std_init)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self.encoder(obs))

    def distribution(
        self, obs: torch.Tensor
    ) -> Categorical | DiagGaussian | GSDEGaussian | SlateCategorical | MultiCategorical:
        return self.distribution_of_features(self.encoder(obs))

    def distribution_of_features(
        self, features: torch.Tensor
    ) -> Categorical | DiagGaussian | GSDEGaussian | SlateCategorical | MultiCategorical:
        """π_θ(·|s) from the encoder's output φ(s) (an encoder shared with the value function runs once)."""
        if self.sde is not None:  # gSDE's noise reads the last hidden features z(s)
            latent = self.net[:-1](features)
            return self.sde.distribution(self.net[-1](latent), latent)
        return self.head(self.net(features))

    def head(
        self, out: torch.Tensor, log_std: torch.Tensor | None = None
    ) -> Categorical | DiagGaussian | SlateCategorical | MultiCategorical:
        """The distribution of the network's output ``out`` (``log_std``: the Gaussian's, default the
        parameter; for functional calls that substitute parameters)."""
        if self.discrete:
            return Categorical(out)
        if self.kind == "gaussian":
            return DiagGaussian(out, self.log_std if log_std is None else log_std)
        if self.kind == "slate":
            return SlateCategorical(out, self.slate_size)
        return MultiCategorical(out, self.nvec, self.start)


class ValueFunction(nn.Module):
    """V_φ(s), a scalar per observation."""

    def __init__(self, obs_space: gym.Space, hidden_sizes=(64, 64), activation: str = "tanh", encoder: str = "auto"):
        super().__init__()
        self.encoder = ObsEncoder(obs_space, encoder)
        self.net = mlp(self.encoder.dim, 1, hidden_sizes, activation, out_gain=1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.of_features(self.encoder(obs))

    def of_features(self, features: torch.Tensor) -> torch.Tensor:
        """V_φ(s) from the encoder's output (an encoder shared with the policy runs once)."""
        return self.net(features).squeeze(-1)
