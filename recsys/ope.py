r"""Off-policy evaluation of slate policies from logs (notes 9/5: importance sampling).

Logged rows :math:`(x_i, A_i, r_i)` were served by the logging policy μ; the value of a target
policy π is :math:`V(\pi) = \mathbb E_{x}\,\mathbb E_{A\sim\pi(\cdot|x)}[r(x, A)]` (expected
engagement per served slate, over the logged contexts). With :math:`w_i = \pi(A_i|x_i)/\mu(A_i|x_i)`:

* IPS: :math:`\hat V = \frac1n\sum_i w_i r_i` — unbiased when μ > 0 wherever π > 0;
* self-normalized IPS: :math:`\hat V = \sum_i w_i r_i / \sum_i w_i` — biased O(1/n), lower variance;
* doubly robust, with a reward model :math:`\hat r(x, A)`:
  :math:`\hat V = \frac1n\sum_i \big[\hat r(x_i, \pi) + w_i (r_i - \hat r(x_i, A_i))\big]`,
  :math:`\hat r(x,\pi) = \sum_A \pi(A|x)\hat r(x, A)` — unbiased if either μ or r̂ is right;
* pseudo-inverse (Swaminathan et al., 2017): if the reward is additive over slot-items,
  :math:`\mathbb E[r|x,A] = \mathbb 1_A^\top\phi_x`, then with :math:`\Gamma_\mu(x) =
  \mathbb E_\mu[\mathbb 1_A\mathbb 1_A^\top]` and :math:`q_\pi(x) = \mathbb E_\pi[\mathbb 1_A]`,
  :math:`\hat V = \frac1n\sum_i r_i\, q_\pi(x_i)^\top\Gamma_\mu(x_i)^\dagger\mathbb 1_{A_i}` is unbiased
  with weights far smaller than the slate-level w (a self-normalized variant divides by the
  weights' sum). The conditional-logit choice model is not additive, so PI carries a bias there.

**Position-based bandit feedback** (one row per shown item: position :math:`k_i`, item :math:`a_i`,
click :math:`r_i`, propensity :math:`\mu_i = \mu(a_i \text{ at } k_i \mid x_i)`; the Open Bandit
Dataset's protocol, :func:`bandit_estimates`), with :math:`w_i = \pi(a_i|x_i,k_i)/\mu_i`, a reward
model :math:`\hat q(x,a,k)`, :math:`\hat q_i^\pi = \sum_a \pi(a|x_i,k_i)\hat q(x_i,a,k_i)` and
:math:`\delta_i = r_i - \hat q(x_i,a_i,k_i)`:

* DM: :math:`\hat V = \frac1n\sum_i \hat q_i^\pi`; DR: :math:`\frac1n\sum_i [\hat q_i^\pi + w_i\delta_i]`;
* self-normalized DR (SNDR): :math:`\frac1n\sum_i \hat q_i^\pi + \sum_i w_i\delta_i / \sum_i w_i`;
* switch-DR (Wang et al. 2017): :math:`\frac1n\sum_i [\hat q_i^\pi + \mathbb 1[w_i \le \lambda]\, w_i\delta_i]`
  (DM where the weight is too large);
* DR with optimistic shrinkage (DRos, Su et al. 2020):
  :math:`\frac1n\sum_i [\hat q_i^\pi + \tfrac{\lambda w_i}{w_i^2 + \lambda}\delta_i]`
  (λ → ∞ is DR, λ = 0 is DM).

Every estimator is a ratio of per-row sums :math:`\sum_i a_i / \sum_i b_i`; confidence intervals are
percentile bootstrap intervals that resample *sessions* (rows of one session are dependent).
:func:`evaluate_on_logs` streams a log, computes every estimator for a policy, and — for logs that
carry the simulator's ground truth — the policy's exact one-step value on the logged contexts,
:math:`\frac1n\sum_i \mathbb E[r \mid x_i, \pi]`, which is what these estimators estimate.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from core_rl.common.errors import ConfigError
from core_rl.common.tracking import NullTracker
from recsys.choice_model import SlateRewardModel, enumerate_slates, slate_q, slate_q_table, slot_item_indicator
from recsys.policies import SlatePolicy
from recsys.training import fit_offline, row_batches

ESTIMATORS: tuple[str, ...] = ("ips", "snips", "dr", "pi", "pi_sn", "dm")


@dataclass
class Estimate:
    """A point estimate with a (1 − α) bootstrap interval."""

    name: str
    value: float
    lower: float
    upper: float
    n: int
    extra: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "lower": self.lower,
            "upper": self.upper,
            "n": self.n,
            **self.extra,
        }


# ---- the per-row terms ------------------------------------------------------------------------
def importance_weights(target_prob: torch.Tensor, logging_prob: torch.Tensor) -> torch.Tensor:
    """w = π(A|x) / μ(A|x)."""
    if bool((logging_prob <= 0).any()):
        raise ConfigError("logging propensities must be positive for importance sampling")
    return target_prob.double() / logging_prob.double()


def ips_terms(rewards: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return w * rewards.double(), torch.ones_like(w)


def snips_terms(rewards: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return w * rewards.double(), w


def dr_terms(
    rewards: torch.Tensor, w: torch.Tensor, q_logged: torch.Tensor, q_target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    return q_target.double() + w * (rewards.double() - q_logged.double()), torch.ones_like(w)


def dm_terms(q_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return q_target.double(), torch.ones_like(q_target, dtype=torch.float64)


def pseudo_inverse_weights(
    target_dist: torch.Tensor,
    logging_dist: torch.Tensor,
    logged: torch.Tensor,
    num_candidates: int,
    slate_size: int,
    chunk: int = 256,
) -> torch.Tensor:
    """g_i = q_π(x_i)ᵀ Γ_μ(x_i)† 1_{A_i} from ``[n, S]`` distributions over the enumerated ordered
    slates (:func:`~recsys.choice_model.enumerate_slates` with ``ordered=True``) and ``[n, K]`` logged slates."""
    table = enumerate_slates(num_candidates, slate_size, ordered=True)
    m = slot_item_indicator(table, num_candidates).double()  # [S, KC]
    ind = slot_item_indicator(logged, num_candidates).double()  # [n, KC]
    out = torch.empty(logged.shape[0], dtype=torch.float64)
    for start in range(0, logged.shape[0], chunk):
        sl = slice(start, start + chunk)
        mu = logging_dist[sl].double()
        q = target_dist[sl].double() @ m  # [b, KC]
        gamma = torch.einsum("bs,sa,sc->bac", mu, m, m)  # E_μ[1_A 1_Aᵀ]
        x = torch.linalg.pinv(gamma, hermitian=True, rtol=1e-10) @ ind[sl].unsqueeze(-1)
        out[sl] = (q.unsqueeze(1) @ x).reshape(-1)
    return out


def pi_terms(
    rewards: torch.Tensor, g: torch.Tensor, self_normalized: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    return g * rewards.double(), (g if self_normalized else torch.ones_like(g))


# ---- bootstrap ---------------------------------------------------------------------------------------
def ratio_estimate(
    name: str,
    num: torch.Tensor,
    den: torch.Tensor,
    groups: torch.Tensor | None = None,
    n_bootstrap: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    ess: float | None = None,
) -> Estimate:
    """Σ num / Σ den with a percentile interval from resampling ``groups`` (rows if None).

    ``num``/``den`` may be per row or already summed per group (then ``groups`` names each sum's group).
    """
    num, den = num.double(), den.double()
    value = float(num.sum() / den.sum())
    if groups is None:
        gnum, gden = num, den
    else:
        _, inv = torch.unique(groups, return_inverse=True)
        g = int(inv.max()) + 1
        gnum = torch.zeros(g, dtype=torch.float64).index_add_(0, inv, num)
        gden = torch.zeros(g, dtype=torch.float64).index_add_(0, inv, den)
    lower = upper = float("nan")
    if n_bootstrap > 0 and gnum.numel() > 1:
        gen = torch.Generator().manual_seed(seed)
        g = gnum.numel()
        per = max(1, 4_000_000 // g)
        stats = []
        for start in range(0, n_bootstrap, per):
            b = min(per, n_bootstrap - start)
            idx = torch.randint(g, (b, g), generator=gen)
            stats.append(gnum[idx].sum(1) / gden[idx].sum(1))
        s = torch.cat(stats)
        s = s[torch.isfinite(s)]
        if s.numel():
            lower = float(torch.quantile(s, alpha / 2))
            upper = float(torch.quantile(s, 1 - alpha / 2))
    extra = {} if ess is None else {"ess": float(ess)}
    return Estimate(name, value, lower, upper, int(num.numel()), extra)


# ---- a reward model for DR / DM -----------------------------------------------------------------
def fit_reward_model(
    chunks: Iterable[Any] | Any,
    user_dim: int,
    doc_dim: int,
    epochs: int = 3,
    batch_size: int = 512,
    lr: float = 3e-3,
    hidden_sizes: tuple[int, ...] = (64, 64),
    seed: int = 0,
) -> SlateRewardModel:
    """r̂(x, A) = Σ P̂(i|x,A) ê(x,i): click NLL + engagement MSE on clicked items, streamed over chunks.

    ``chunks`` is a :class:`~recsys.logs.LogReader` (re-read every epoch) or a list of chunks.
    """
    torch.manual_seed(seed)
    model = SlateRewardModel(user_dim, doc_dim, hidden_sizes)
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def batches(chunk: Any, generator: torch.Generator) -> Any:
        for rows in row_batches(chunk, generator, batch_size):
            yield chunk.user[rows], chunk.docs[rows], chunk.slate[rows], chunk.click[rows], chunk.engagement[rows]

    def step(batch: tuple[torch.Tensor, ...]) -> dict[str, float]:
        loss = model.loss(*batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {}

    fit_offline(chunks, epochs, seed, batches, step, NullTracker(), [])
    model.eval()
    return model


def expected_value(
    policy: SlatePolicy,
    obs: Any,
    info: Any,
    logits: torch.Tensor,
    no_click: torch.Tensor,
    engagement: torch.Tensor,
    chosen: torch.Tensor | None,
) -> torch.Tensor:
    """E_{A~π(·|x)} Σ_i P(i|x,A) e(x,i) under a choice model ``(logits, no_click)`` and engagement, ``[n]``.

    Deterministic π: the value of its slate ``chosen``; stochastic π: the sum over every ordered slate.
    """
    if policy.deterministic:
        assert chosen is not None
        return slate_q(logits, no_click, engagement, chosen).double()
    dist = policy.slate_distribution(obs, info)  # [n, S]
    table = enumerate_slates(
        logits.shape[1], chosen.shape[1] if chosen is not None else policy.slate_size, ordered=True
    )
    return (dist * slate_q_table(logits, no_click, engagement, table).double()).sum(1)


# ---- streaming evaluation of a policy ------------------------------------------------------------------
@dataclass
class OPEResult:
    estimates: dict[str, Estimate]
    ground_truth: float | None  # exact one-step value on the logged contexts (oracle logs)
    logging_value: float  # mean logged engagement per row (μ's own value)
    rows: int
    notes: list[str] = field(default_factory=list)

    def metrics(self, prefix: str = "ope.") -> dict[str, float]:
        out: dict[str, float] = {f"{prefix}logging_value": self.logging_value}
        for name, e in self.estimates.items():
            out[f"{prefix}{name}"] = e.value
            out[f"{prefix}{name}_lower"] = e.lower
            out[f"{prefix}{name}_upper"] = e.upper
            if self.ground_truth is not None:
                out[f"{prefix}{name}_rel_error"] = abs(e.value - self.ground_truth) / max(abs(self.ground_truth), 1e-12)
        if self.ground_truth is not None:
            out[f"{prefix}ground_truth"] = self.ground_truth
        return out


@dataclass
class ChunkTerms:
    """What one chunk of logged rows adds to every estimator: per-session sums of each estimator's
    numerator and denominator (sessions in the chunk's order), Σw and Σw² of its weights, and the
    ground-truth and logged-engagement sums. Chunks combine by concatenation and addition
    (:func:`combine_terms`), so any split of a log — the local reader's chunks, row groups on Ray Data
    (:mod:`recsys.ope_partitioned`) — gives the same estimates up to float rounding."""

    sessions: torch.Tensor  # [g] session ids
    sums: dict[str, tuple[torch.Tensor, torch.Tensor]]  # name → (Σ num, Σ den) per session, [g] each
    weight_moments: dict[str, tuple[float, float]]
    truth_sum: float | None  # None: the chunk has no oracle columns
    logged_sum: float
    rows: int


def usable_estimators(
    estimators: Sequence[str], reward_model: SlateRewardModel | None, logging_policy: SlatePolicy | None
) -> tuple[list[str], list[str]]:
    """The estimators that can run with what is given, and notes on those skipped (unknown → ConfigError)."""
    unknown = set(estimators) - set(ESTIMATORS)
    if unknown:
        raise ConfigError(f"unknown estimator(s) {sorted(unknown)}; known: {', '.join(ESTIMATORS)}")
    want = [
        e
        for e in estimators
        if not ((e in ("dr", "dm") and reward_model is None) or (e in ("pi", "pi_sn") and logging_policy is None))
    ]
    notes = []
    if reward_model is None and {"dr", "dm"} & set(estimators):
        notes.append("dr/dm skipped: no reward model")
    if logging_policy is None and {"pi", "pi_sn"} & set(estimators):
        notes.append("pi skipped: the logging policy's slate distribution is unknown")
    return want, notes


def chunk_terms(
    policy: SlatePolicy,
    chunk: Any,
    want: Sequence[str],
    reward_model: SlateRewardModel | None = None,
    logging_policy: SlatePolicy | None = None,
) -> ChunkTerms:
    """The per-row terms of every estimator in ``want`` on one :class:`~recsys.logs.LogChunk`, summed per session."""
    if chunk.slate_propensity is None:
        raise ConfigError("the logs have no slate_propensity: ingest them (propensities get estimated)")
    obs, info = chunk.obs(), chunk.info()
    if policy.needs_info and not (info and "candidate_choice_logit" in info):
        raise ConfigError(f"policy '{policy.kind}' needs the simulator's info, which these logs lack")
    c, k = chunk.docs.shape[1], chunk.slate_size
    session_ids, inv = torch.unique_consecutive(chunk.session, return_inverse=True)
    g_count = session_ids.shape[0]
    sums: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    moments: dict[str, tuple[float, float]] = {}

    def add(name: str, terms: tuple[torch.Tensor, torch.Tensor], weight: torch.Tensor) -> None:
        num, den = terms
        sums[name] = (
            torch.zeros(g_count, dtype=torch.float64).index_add_(0, inv, num.double()),
            torch.zeros(g_count, dtype=torch.float64).index_add_(0, inv, den.double()),
        )
        moments[name] = (float(weight.sum()), float(weight.pow(2).sum()))

    truth: float | None = None
    with torch.no_grad():
        chosen = policy(obs, info).slates if policy.deterministic else None
        target_prob = policy.probability_of(obs, info, chunk.slate)
        w = importance_weights(target_prob, chunk.slate_propensity)
        r = chunk.engagement.double()
        if "ips" in want:
            add("ips", ips_terms(r, w), w)
        if "snips" in want:
            add("snips", snips_terms(r, w), w)
        if reward_model is not None and ({"dr", "dm"} & set(want)):
            logits, none = reward_model.logits(chunk.user, chunk.docs)
            eng = reward_model.engagement(chunk.user, chunk.docs)
            q_logged = slate_q(logits, none, eng, chunk.slate).double()
            q_target = expected_value(policy, obs, info, logits, none, eng, chosen)
            if "dr" in want:
                add("dr", dr_terms(r, w, q_logged, q_target), w)
            if "dm" in want:
                add("dm", dm_terms(q_target), torch.ones_like(w))
        if logging_policy is not None and ({"pi", "pi_sn"} & set(want)):
            mu_dist = logging_policy.slate_distribution(obs, info)
            pi_dist = policy.slate_distribution(obs, info)
            g = pseudo_inverse_weights(pi_dist, mu_dist, chunk.slate, c, k)
            if "pi" in want:
                add("pi", pi_terms(r, g), g)
            if "pi_sn" in want:
                add("pi_sn", pi_terms(r, g, self_normalized=True), g)
        if chunk.oracle_logit is not None:
            truth = float(
                expected_value(
                    policy, obs, info, chunk.oracle_logit, chunk.oracle_no_click, chunk.oracle_engagement, chosen
                ).sum()
            )
    return ChunkTerms(session_ids, sums, moments, truth, float(chunk.engagement.double().sum()), len(chunk))


def combine_terms(
    parts: Iterable[ChunkTerms],
    want: Sequence[str],
    n_bootstrap: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    notes: Sequence[str] = (),
) -> OPEResult:
    """Every estimator from the chunks' terms: Σ num / Σ den with a session-bootstrap interval
    (:func:`ratio_estimate`; a session split over chunks is one group), the ESS (Σw)²/Σw², the ground
    truth when every chunk had it."""
    sums: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {e: [] for e in want}
    s1 = dict.fromkeys(want, 0.0)
    s2 = dict.fromkeys(want, 0.0)
    groups: list[torch.Tensor] = []
    truth_sum, logged_sum, rows, have_truth = 0.0, 0.0, 0, True
    for part in parts:
        for name in want:
            sums[name].append(part.sums[name])
            s1[name] += part.weight_moments[name][0]
            s2[name] += part.weight_moments[name][1]
        groups.append(part.sessions)
        have_truth = have_truth and part.truth_sum is not None
        truth_sum += part.truth_sum or 0.0
        logged_sum += part.logged_sum
        rows += part.rows
    if rows == 0:
        raise ConfigError("no logged rows to evaluate on")
    grp = torch.cat(groups)
    estimates = {}
    for i, name in enumerate(want):
        num = torch.cat([a for a, _ in sums[name]])
        den = torch.cat([b for _, b in sums[name]])
        ess = s1[name] * s1[name] / s2[name] if name not in ("dm",) and s2[name] > 0 else None
        est = ratio_estimate(name, num, den, grp, n_bootstrap, alpha, seed + i, ess=ess)
        est.n = rows
        estimates[name] = est
    gt = truth_sum / rows if have_truth else None
    return OPEResult(estimates, gt, logged_sum / rows, rows, list(notes))


def evaluate_on_logs(
    policy: SlatePolicy,
    chunks: Iterable[Any],
    reward_model: SlateRewardModel | None = None,
    logging_policy: SlatePolicy | None = None,
    estimators: Sequence[str] = ESTIMATORS,
    n_bootstrap: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    max_rows: int | None = None,
) -> OPEResult:
    """Every requested estimator of ``policy``'s value on the logged rows, with session-bootstrap CIs.

    ``chunks``: :class:`~recsys.logs.LogChunk` s with ``slate_propensity``. DR/DM need
    ``reward_model``; PI needs the logging policy's slate distribution (``logging_policy``, e.g. the
    one recorded in the log's metadata or a fitted :class:`~recsys.logs.PropensityModel` policy).
    Memory stays O(sessions): per-session sums of each estimator's numerator and denominator
    (:func:`chunk_terms` per chunk, :func:`combine_terms` at the end).
    """
    want, notes = usable_estimators(estimators, reward_model, logging_policy)

    def parts() -> Iterator[ChunkTerms]:
        rows = 0
        for chunk in chunks:
            if max_rows is not None and rows >= max_rows:
                break
            rows += len(chunk)
            yield chunk_terms(policy, chunk, want, reward_model, logging_policy)

    return combine_terms(parts(), want, n_bootstrap, alpha, seed, notes)


# ---- position-based bandit feedback (one row per shown item) --------------------------------------
BANDIT_ESTIMATORS: tuple[str, ...] = ("ips", "snips", "dm", "dr", "sndr", "switch_dr", "dros")


@dataclass
class BanditTerms:
    r"""Per-round sums of an estimator :math:`\hat V = \sum_i a_i/\sum_i b_i + \sum_i c_i/\sum_i d_i`."""

    a: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor | None = None
    d: torch.Tensor | None = None

    def value(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """The estimate (``idx``: ``[B, n]`` bootstrap row indices → ``[B]`` estimates)."""

        def total(x: torch.Tensor) -> torch.Tensor:
            return x.sum(-1) if idx is None else x[idx].sum(-1)

        out = total(self.a) / total(self.b)
        if self.c is not None and self.d is not None:
            out = out + total(self.c) / total(self.d)
        return out


def _as_tensor(x: Any, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(dtype)
    arr = np.asarray(x)
    return torch.as_tensor(arr if arr.flags.writeable else arr.copy(), dtype=dtype)


def bandit_inputs(
    reward: Any, action: Any, position: Any, pscore: Any, action_dist: Any, q_hat: Any | None = None
) -> dict[str, torch.Tensor]:
    """The shared per-round quantities: w, r, and (with ``q_hat``) q̂^π and δ.

    ``action_dist``: π(a | x_i, k) as ``[n, C, K]``, or ``[C, K]`` for a context-free policy; ``q_hat``:
    q̂(x_i, a, k) as ``[n, C, K]`` (or ``[n, C]`` when it does not depend on the position).
    """
    r = _as_tensor(reward)
    a = _as_tensor(action, torch.long)
    k = _as_tensor(position, torch.long)
    mu = _as_tensor(pscore)
    pi = _as_tensor(action_dist)
    n = r.shape[0]
    if not (a.shape[0] == k.shape[0] == mu.shape[0] == n):
        raise ConfigError(f"reward, action, position and pscore must have one entry per round ({n})")
    if bool((mu <= 0).any()):
        raise ConfigError("pscore: logging propensities must be positive for importance sampling")
    rows = torch.arange(n)
    if pi.dim() == 2:  # context-free [C, K]
        pi_pos = pi.t()[k]  # [n, C]
    elif pi.dim() == 3:
        pi_pos = pi[rows, :, k]
    else:
        raise ConfigError(f"action_dist must be [n, C, K] or [C, K], got shape {tuple(pi.shape)}")
    out = {"r": r, "w": pi_pos[rows, a] / mu}
    if q_hat is not None:
        q = _as_tensor(q_hat)
        q_pos = q[rows, :, k] if q.dim() == 3 else q
        out["q_pi"] = (pi_pos * q_pos).sum(1) / pi_pos.sum(1)
        out["delta"] = r - q_pos[rows, a]
    return out


def bandit_terms(name: str, inputs: dict[str, torch.Tensor], lambda_: float = float("inf")) -> BanditTerms:
    """The per-round terms of one estimator (:data:`BANDIT_ESTIMATORS`; ``lambda_`` is switch-DR's
    threshold and DRos's shrinkage)."""
    w, r = inputs["w"], inputs["r"]
    one = torch.ones_like(w)
    if name == "ips":
        return BanditTerms(w * r, one)
    if name == "snips":
        return BanditTerms(w * r, w)
    if "q_pi" not in inputs:
        raise ConfigError(f"estimator '{name}' needs reward-model predictions (q_hat)")
    q_pi, delta = inputs["q_pi"], inputs["delta"]
    if name == "dm":
        return BanditTerms(q_pi, one)
    if name == "dr":
        return BanditTerms(q_pi + w * delta, one)
    if name == "sndr":
        return BanditTerms(q_pi, one, w * delta, w)
    if name == "switch_dr":
        if not lambda_ >= 0:
            raise ConfigError(f"switch_dr: lambda_ must be >= 0, got {lambda_}")
        return BanditTerms(q_pi + (w <= lambda_).to(w.dtype) * w * delta, one)
    if name == "dros":
        if not lambda_ >= 0:
            raise ConfigError(f"dros: lambda_ must be >= 0, got {lambda_}")
        shrunk = w if lambda_ == float("inf") else lambda_ * w / (w * w + lambda_)
        return BanditTerms(q_pi + shrunk * delta, one)
    raise ConfigError(f"unknown estimator '{name}'; known: {', '.join(BANDIT_ESTIMATORS)}")


def bandit_estimates(
    reward: Any,
    action: Any,
    position: Any,
    pscore: Any,
    action_dist: Any,
    q_hat: Any | None = None,
    estimators: Sequence[str] = BANDIT_ESTIMATORS,
    lambdas: dict[str, float] | None = None,
    n_bootstrap: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Every requested estimator of π's value from position-based bandit feedback, each with a (1 − α)
    percentile bootstrap interval over rounds (``n_bootstrap=0``: point estimates only).

    ``lambdas``: ``{"switch_dr": λ, "dros": λ}`` (default ∞: switch-DR and DRos equal DR).
    """
    unknown = set(estimators) - set(BANDIT_ESTIMATORS)
    if unknown:
        raise ConfigError(f"unknown estimator(s) {sorted(unknown)}; known: {', '.join(BANDIT_ESTIMATORS)}")
    inputs = bandit_inputs(reward, action, position, pscore, action_dist, q_hat)
    lambdas = dict(lambdas or {})
    n = inputs["r"].shape[0]
    terms = {e: bandit_terms(e, inputs, lambdas.get(e, float("inf"))) for e in estimators}
    idx = None
    if n_bootstrap > 0 and n > 1:
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randint(n, (n_bootstrap, n), generator=gen)
    w = inputs["w"]
    ess = float(w.sum() ** 2 / (w * w).sum()) if float((w * w).sum()) > 0 else 0.0
    out = {}
    for name, t in terms.items():
        lower = upper = float("nan")
        if idx is not None:
            s = t.value(idx)
            s = s[torch.isfinite(s)]
            if s.numel():
                lower, upper = float(torch.quantile(s, alpha / 2)), float(torch.quantile(s, 1 - alpha / 2))
        out[name] = Estimate(name, float(t.value()), lower, upper, n, {} if name == "dm" else {"ess": ess})
    return out


def ope_plot(result: OPEResult, title: str, online_step_value: float | None = None):  # type: ignore[no-untyped-def]
    """Bar chart: each estimate with its interval, the ground truth as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result.estimates)
    vals = np.array([result.estimates[n].value for n in names])
    lo = np.array([result.estimates[n].lower for n in names])
    hi = np.array([result.estimates[n].upper for n in names])
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    err = np.vstack([np.where(np.isnan(lo), 0, vals - lo), np.where(np.isnan(hi), 0, hi - vals)])
    ax.bar(names, vals, yerr=err, capsize=4, color="#6a8fc9")
    if result.ground_truth is not None:
        ax.axhline(result.ground_truth, color="black", lw=1.5, label="ground truth (one step, logged contexts)")
    if online_step_value is not None:
        ax.axhline(online_step_value, color="tab:red", ls="--", lw=1.2, label="online engagement per step")
    ax.axhline(result.logging_value, color="gray", ls=":", lw=1.2, label="logging policy (logged)")
    ax.set_ylabel("engagement per slate")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


__all__ = [
    "ESTIMATORS",
    "Estimate",
    "importance_weights",
    "ips_terms",
    "snips_terms",
    "dr_terms",
    "dm_terms",
    "pseudo_inverse_weights",
    "pi_terms",
    "ratio_estimate",
    "fit_reward_model",
    "expected_value",
    "OPEResult",
    "ChunkTerms",
    "usable_estimators",
    "chunk_terms",
    "combine_terms",
    "evaluate_on_logs",
    "BANDIT_ESTIMATORS",
    "BanditTerms",
    "bandit_inputs",
    "bandit_terms",
    "bandit_estimates",
    "ope_plot",
]
