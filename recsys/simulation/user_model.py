r"""Batched user models: choice, response and interest dynamics, one tensor op per quantity.

Every function takes a batch of users on the first axis; there are no Python loops over users,
slates or documents.

**Choice (both simulators).** A user facing slate :math:`A=(a_1..a_K)` clicks position :math:`k`
or nothing with

.. math:: P(k \mid s, A) = \frac{v(s, a_k)}{v_\varnothing(s) + \sum_{j \in A} v(s, j)},
          \qquad v = e^{\ell}

— the conditional choice model SlateQ assumes. We expose everything as *logits*
:math:`\ell = \log v`: for an MNL they are the MNL logits, for RecSim's proportional model
:math:`\ell = \log(\text{score} - \text{min\_normalizer})`. :func:`slate_choice_probabilities`
turns candidate logits, a no-click logit and slates into the ``[N, K+1]`` probabilities
(the last column is no click).

**RecSim NG interest evolution** (``recsim_ng/applications/recsys_partially_observable_rl/user.py``,
``InterestEvolutionUser``): affinity ``-||x - f||`` (``TargetPointSimilarity``,
``'negative_euclidean'``), logits ``affinity + 2`` with no-click logit ``no_click_mass``
(``MultinomialLogitChoiceModel.choice``); consumed time ``sigmoid(-quality) * length`` of the
chosen doc (``next_response``); interest update ``x + step * q (f - x)`` for clickers only
(``ControlledLinearScaledGaussianStateModel`` inside ``NoOPOrContinueStateModel``, condition
``consumed_time < 0``), then — for every user, clicked or not, since the no-op branch passes the
already squashed state through — the squashing ``4M(sigmoid(x/M) - 1/2)`` (``next_state``).
The initial interest is ``N(0, I)`` and is not squashed (``initial_state``).

**Update noise** (``interest_update_noise_scale`` = :math:`\sigma > 0`): a clicker's linear update
is :math:`x + \eta\,q\,(f - x) + \sigma\,\varepsilon_t` (``ControlledLinearScaledGaussianStateModel``
samples ``MultivariateNormalLinearOperator(loc=update, scale=sigma I)``). Under RecSim NG's default
graph-compiled ``TFRuntime`` one step's standard normal is *the same draw* as the initial
interest's, :math:`x_0 = s\,\varepsilon_0`. Both are stateful ``RandomStandardNormal`` ops of
shape ``[N, T]`` whose op-level seed is their graph's random-op counter (``tf.random.set_seed``
given, op seed ``None``): the initial-interest draw is random op 0 of the ``tf.function`` graph,
the update noise random op 0 of the loop-body (``tf.cond`` branch) graph, so both get seeds
``(global seed, 0)`` and their first outputs are equal; the body's kernel then continues its
stream, so later steps are independent. ``tf.scan``'s while-loop may run iterations in parallel
and the noise op depends on no loop state, so which step makes that first call is up to
TensorFlow's scheduler: usually step 0 (the regression of NG's :math:`t = 0` noise on :math:`x_0`
then has coefficient exactly :math:`\sigma`, none at later steps), sometimes step 1 or 2 (measured
with 2,000 users and 3 steps: step 0 in 40 of 48 compiled runs, with one inter-op thread or two;
``recsys/_recsim_ng_seed_graph.py`` lists the seeds). Exactly one step reuses the draw in every
compiled run.
NG's eager runtime (``graph_compile=False``) seeds each op from a Python RNG: independent noise
at every step. ``config.interest_noise = "recsim_ng"`` (default) reuses the initial draw at the
first step of every session (NG compiled, its usual schedule); ``"independent"`` draws fresh
noise every step (NG eager). The step functions take the standard-normal ``noise`` explicitly
when given (else draw it after the choice uniforms).

**RecSim interest evolution** (``recsim/environments/interest_evolution.py``, ``IEvUserModel``):
score ``x . f`` (``IEvUserState.score_document``); proportional choice over
``[scores, no_click_mass] - min_normalizer`` or MNL over ``[scores, no_click_mass]``; watch time
``min(budget, length)``; on a click the interest moves by
``±alpha(x) * f * (f - x)`` with ``alpha(x) = y0 - (y0/x0)|x|``, ``+`` with probability
``((x + 1)/2) . f``, clipped to ``[-1, 1]``; the budget loses the watch time and gains
``user_update_alpha * watch * (uqf * EU + dqf * quality)`` (``EU`` = the doc's score alone),
or loses ``step_penalty`` without a click (``update_state``).
"""

from __future__ import annotations

import numpy as np
import torch

from recsys.simulation.config import InterestEvolutionConfig, RecSimInterestEvolutionConfig


# ---- shared choice machinery --------------------------------------------------------------------
def gather_slate(values: torch.Tensor, slate: torch.Tensor) -> torch.Tensor:
    """``values[n, slate[n, k], ...]``: ``[N, C, *rest]`` and ``[N, K]`` -> ``[N, K, *rest]``."""
    idx = slate
    for _ in range(values.dim() - 2):
        idx = idx.unsqueeze(-1)
    return torch.gather(values, 1, idx.expand(*slate.shape, *values.shape[2:]))


def slate_choice_probabilities(
    candidate_logits: torch.Tensor, no_click_logit: torch.Tensor, slate: torch.Tensor
) -> torch.Tensor:
    """``[N, K+1]`` probabilities of clicking each slate position, then of no click."""
    logits = torch.cat([gather_slate(candidate_logits, slate), no_click_logit.unsqueeze(-1)], dim=-1)
    return torch.softmax(logits, dim=-1)


def sample_choice(
    probabilities: torch.Tensor, generator: torch.Generator | None = None, uniform: torch.Tensor | None = None
) -> torch.Tensor:
    """One categorical draw per row of ``[N, K+1]`` probabilities (``K`` = no click), by inverse CDF
    of ``uniform [N]`` (drawn from ``generator`` when not given)."""
    if uniform is None:
        uniform = torch.rand(
            probabilities.shape[0], generator=generator, device=probabilities.device, dtype=probabilities.dtype
        )
    u = uniform.to(probabilities.dtype).unsqueeze(-1)
    cdf = probabilities.cumsum(dim=-1)
    return (cdf < u).sum(dim=-1).clamp_(max=probabilities.shape[-1] - 1)


def expected_slate_engagement(
    candidate_logits: torch.Tensor,
    no_click_logit: torch.Tensor,
    candidate_engagement: torch.Tensor,
    slate: torch.Tensor,
) -> torch.Tensor:
    """``E[engagement | slate] = sum_k P(k | A) e(a_k)``, ``[N]``."""
    probs = slate_choice_probabilities(candidate_logits, no_click_logit, slate)[:, :-1]
    return (probs * gather_slate(candidate_engagement, slate)).sum(dim=-1)


# ---- RecSim NG interest evolution ---------------------------------------------------------------
def ng_choice_logits(
    interest: torch.Tensor, doc_features: torch.Tensor, config: InterestEvolutionConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNL logits ``-||x - f|| + 2`` of ``[N, C, T]`` docs for ``[N, T]`` users, and the no-click logit ``[N]``.

    ``doc_features`` may also be ``[C, T]`` (one candidate table shared by all users). Computed
    users-last: for up to 4 topics one ``[C, N]`` slab per topic, squared and summed in place (the
    sequential sum torch's ``sum(0)`` does: the same numbers, without a ``[T, C, N]`` temporary);
    the logits are the transposed view of that ``[C, N]`` block.
    """
    x_t = interest.t()  # [T, N]
    f_t = doc_features.t() if doc_features.dim() == 2 else doc_features.permute(2, 1, 0)  # [T, C] or [T, C, N]
    if doc_features.dim() == 2:
        f_t = f_t.unsqueeze(2)  # [T, C, 1]
    t_dim = x_t.shape[0]
    if 0 < t_dim <= 4:
        x_t = x_t.contiguous()  # each slab op then streams over contiguous rows
        acc = torch.sub(f_t[0], x_t[0]).square_()  # [C, N]
        for j in range(1, t_dim):
            acc.add_(torch.sub(f_t[j], x_t[j]).square_())
    else:
        acc = (f_t - x_t.unsqueeze(1)).square_().sum(0)
    logits = acc.sqrt_().neg_().add_(config.choice_logit_offset).t()  # offset - distance, exactly
    no_click = torch.full(interest.shape[:1], float(config.no_click_mass), device=interest.device, dtype=interest.dtype)
    return logits, no_click


def ng_consumed_time(quality: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Time a user spends on a clicked doc: ``sigmoid(-quality) * length``."""
    return torch.sigmoid(-quality) * length


def ng_squash(x: torch.Tensor, max_user_affinity: float) -> torch.Tensor:
    """``4M(sigmoid(x/M) - 1/2)``: about linear near 0, saturating at ``±2M``."""
    m = max_user_affinity
    return 4.0 * m * (torch.sigmoid(x / m) - 0.5)


def ng_initial_interest(num_users: int, config: InterestEvolutionConfig, generator: torch.Generator) -> torch.Tensor:
    return config.initial_interest_scale * torch.randn(
        num_users, config.num_topics, generator=generator, device=generator.device
    )


def ng_next_interest(
    interest: torch.Tensor,
    clicked: torch.Tensor,
    chosen_features: torch.Tensor,
    chosen_quality: torch.Tensor,
    config: InterestEvolutionConfig,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """NG's ``InterestEvolutionUser.next_state``: controlled update for clickers, then squash for all.

    ``interest [N, T]``, ``clicked [N]`` bool, ``chosen_features [N, T]`` and ``chosen_quality [N]``
    (ignored where not clicked). With ``interest_update_noise_scale > 0`` the update gets
    ``scale * noise``, ``noise [N, T]`` standard normal (drawn from ``generator`` when not given).
    """
    direction = chosen_quality.unsqueeze(-1) * (chosen_features - interest)
    updated = interest + config.interest_step_size * direction
    if config.interest_update_noise_scale is not None and config.interest_update_noise_scale > 0:
        if noise is None:
            noise = torch.randn(interest.shape, generator=generator, device=interest.device, dtype=interest.dtype)
        updated = updated + config.interest_update_noise_scale * noise
    linear = torch.where(clicked.unsqueeze(-1), updated, interest)
    return ng_squash(linear, config.max_user_affinity)


def _sum_rows(x: torch.Tensor) -> torch.Tensor:
    """``x.sum(0)`` of a ``[R, ...]`` tensor: for ``R <= 4`` the same sequential row sum torch does
    (identical numbers), as ``R - 1`` in-place adds instead of a reduction kernel."""
    if not 0 < x.shape[0] <= 4:
        return x.sum(0)
    acc = x[0].clone() if x.shape[0] == 1 else x[0] + x[1]
    for j in range(2, x.shape[0]):
        acc.add_(x[j])
    return acc


def ng_step_users_last(
    interest_t: torch.Tensor,
    features_t: torch.Tensor,
    quality_t: torch.Tensor,
    length_t: torch.Tensor,
    config: InterestEvolutionConfig,
    generator: torch.Generator | None = None,
    uniform: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r""":func:`ng_step` in the users-last layout the hot loops use (every op runs along the user axis).

    ``interest_t [T, N]``, ``features_t [T, K, N]``, ``quality_t`` and ``length_t [K, N]``;
    ``noise [T, N]``: the standard-normal update noise (drawn after ``uniform`` when not given). Returns
    ``(choice [N], consumed_time [N], next_interest_t [T, N], choice probabilities [K+1, N])``.

    With ``\ell_k = 2 - \lVert x - f_k \rVert`` and ``\ell_K`` = no-click logit: weights
    ``w = e^{\ell - \max \ell}``, choice = the number of CDF entries ``\sum_{j \le k} w_j`` below
    ``u \sum_j w_j`` (inverse CDF of ``uniform``), then the update and squash of :func:`ng_next_interest`.
    Every intermediate is written in place into tensors this call owns (no op on an input is in place).
    """
    rows = torch.cat([features_t, quality_t.unsqueeze(0), length_t.unsqueeze(0)])
    return _ng_step_rows(interest_t, rows, config, generator, uniform, noise)


def _numpy_ok(*tensors: torch.Tensor) -> bool:
    if torch.compiler.is_compiling():  # traced by torch.compile: torch ops only
        return False
    return all(t.device.type == "cpu" and not t.requires_grad for t in tensors)


def _copy_into(dst: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """``dst.copy_(src)``; on CPU through numpy, whose strided copies (a ``[T, N]`` block to or from its
    transposed layout) run several times faster than torch's for a short inner dimension."""
    if _numpy_ok(dst, src) and dst.dtype == src.dtype:
        np.copyto(dst.numpy(), src.numpy())
        return dst
    return dst.copy_(src)


def _ng_step_rows(
    interest_t: torch.Tensor,
    rows: torch.Tensor,
    config: InterestEvolutionConfig,
    generator: torch.Generator | None,
    uniform: torch.Tensor | None,
    noise: torch.Tensor | None = None,
    table_t: torch.Tensor | None = None,
    slate_t: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`ng_step_users_last` on ``rows [T + 2, K, N]``: the slate docs' features, quality, length
    (with ``table_t`` and ``slate_t``: the rows of that corpus table, whose chosen doc's row is then
    read from the table)."""
    t_dim, (k, n) = rows.shape[0] - 2, rows.shape[1:]
    features_t = rows[:t_dim]
    dtype, device = interest_t.dtype, interest_t.device
    # topic rows: ops mixing [N] and [T, N] then run along contiguous rows
    x_t = interest_t
    if not x_t.is_contiguous():
        x_t = _copy_into(torch.empty(x_t.shape, device=device, dtype=dtype), x_t)
    logits = torch.empty(k + 1, n, device=device, dtype=dtype)
    logits[k].fill_(float(config.no_click_mass))
    distance = _sum_rows(torch.sub(features_t, x_t.unsqueeze(1)).square_()).sqrt_()  # [K, N]
    torch.neg(distance, out=logits[:k]).add_(config.choice_logit_offset)  # offset - distance, exactly
    weight = logits.sub_(logits.amax(0)).exp_()  # [K+1, N]
    cdf = weight.cumsum(dim=0)  # accumulates in double like torch's cumsum always did
    total = cdf[k]
    if uniform is None:
        uniform = torch.rand(n, generator=generator, device=device, dtype=dtype)
    choice = (cdf[:k] < uniform * total).sum(dim=0)  # <= K: u * total <= total = cdf[K]
    missed = choice == k  # no click
    pick = choice.clamp(max=k - 1).unsqueeze(0)  # [1, N]
    if table_t is not None and slate_t is not None:  # [T+2, N], our own copy
        picked = table_t.index_select(1, slate_t.gather(0, pick).view(-1))
    else:
        picked = rows.gather(1, pick.unsqueeze(0).expand(t_dim + 2, 1, n)).squeeze(1)
    chosen, quality, length = picked[:t_dim], picked[t_dim], picked[t_dim + 1]
    consumed = ng_consumed_time(quality, length).masked_fill_(missed, 0.0)
    # x + step q (f - x) for clickers; x + 0 = x (exactly, f - x being finite) for the others
    step = (config.interest_step_size * quality).masked_fill_(missed, 0.0)
    updated = chosen.sub_(x_t).mul_(step).add_(x_t)
    if config.interest_update_noise_scale is not None and config.interest_update_noise_scale > 0:
        if noise is None:
            noise = torch.randn(interest_t.shape, generator=generator, device=device, dtype=dtype)
        updated.add_((config.interest_update_noise_scale * noise).masked_fill_(missed, 0.0))
    # the next interest is laid out like ``interest_t`` (torch's sigmoid rounds the last elements of a
    # block differently from the rest, so the memory order is part of the numbers)
    nxt = _copy_into(torch.empty_like(interest_t), updated)
    m = config.max_user_affinity
    nxt.div_(m).sigmoid_().sub_(0.5).mul_(4.0 * m)  # ng_squash, in place
    return choice, consumed, nxt, weight.div_(total)


def ng_step_slate_table(
    interest_t: torch.Tensor,
    slate_t: torch.Tensor,
    table_t: torch.Tensor,
    config: InterestEvolutionConfig,
    generator: torch.Generator | None = None,
    uniform: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`ng_step_users_last` on slates of corpus rows: ``slate_t [K, N]`` rows of the corpus table
    ``table_t [T + 2, D]`` (features, then quality, then length; see :func:`ng_slate_table`), gathered
    in one ``index_select``. Same outputs, same numbers."""
    rows = table_t.index_select(1, slate_t.reshape(-1)).view(table_t.shape[0], *slate_t.shape)
    return _ng_step_rows(interest_t, rows, config, generator, uniform, noise, table_t, slate_t)


_MASK32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (``lowbias32`` with multipliers below 2**31, so every product of a
    32-bit value fits an int64 exactly): xor-shift, multiply, xor-shift, multiply, xor-shift."""
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & _MASK32
    return x ^ (x >> 15)


def counter_uniforms(n: int, key: torch.Tensor) -> torch.Tensor:
    r"""``[n]`` float32 uniforms in ``[0, 1)`` from a counter-based generator (what ``compile=True`` draws
    the choice uniforms with, inside the compiled step).

    ``key [3]`` int64: two 32-bit keys ``k_0, k_1`` and a counter base ``c``. Draw ``i`` hashes its
    global index ``g = c + i`` (the env passes ``c = t N`` at its ``t``-th step, so every (step, user)
    draw has its own index): ``h = H(H(g_{lo} \oplus k_0) \oplus g_{hi} \oplus k_1)`` with ``H`` the
    32-bit hash :func:`_mix32` and ``g_{lo}, g_{hi}`` the low and high 32 bits of ``g``; ``u = \lfloor
    h / 2^8 \rfloor 2^{-24}`` (24 random bits, as ``torch.rand`` gives a float32). Integer ops only, so
    eager torch and an inductor kernel compute the same bits.
    """
    g = torch.arange(n, dtype=torch.int64, device=key.device) + key[2]
    h = _mix32(_mix32((g & _MASK32) ^ key[0]) ^ (g >> 32) ^ key[1])
    return (h >> 8).to(torch.float32) * (2.0**-24)


def ng_step_fused(
    interest_t: torch.Tensor,
    slate: torch.Tensor,
    table_t: torch.Tensor,
    key: torch.Tensor,
    noise: torch.Tensor | None,
    config: InterestEvolutionConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`ng_step_slate_table` written for one inductor kernel, the choice uniforms drawn inside.

    ``interest_t [T, N]``, ``slate [N, K]`` int64 rows of the corpus table ``table_t [T + 2, D]``
    (unchecked: out-of-range indices are clamped for the reads and reported), ``key [3]`` of
    :func:`counter_uniforms`, ``noise [T, N]`` the standard-normal update noise (with
    ``interest_update_noise_scale > 0``). Out-of-place ops, loops over the slate unrolled, per-slot
    ``[N]`` tensors: the whole step is one pass over users. Returns ``(choice [N], reward [N] float64,
    next_interest_t [T, N], next_interest [N, T] (a second layout, for the observation), choice
    probabilities [K+1, N], invalid)`` — ``invalid`` (0-d bool): some slate index lies outside ``[0, D)``
    or repeats within its slate. Equals ``ng_step_slate_table(..., uniform=counter_uniforms(N, key))``
    within float rounding, with the same choices (the CDF accumulates in double, as torch's ``cumsum``)."""
    t_dim, (n, k), d = table_t.shape[0] - 2, slate.shape, table_t.shape[1]
    raw = [slate[:, j] for j in range(k)]
    bad = (raw[0] < 0) | (raw[0] >= d)
    for j in range(1, k):
        bad = bad | (raw[j] < 0) | (raw[j] >= d)
        for i in range(j):
            bad = bad | (raw[i] == raw[j])
    idx = [s.clamp(0, d - 1) for s in raw]
    rows = [[table_t[r][idx[j]] for r in range(t_dim + 2)] for j in range(k)]  # rows[j][r]: [N]
    x = [interest_t[r] for r in range(t_dim)]
    logits = []
    for j in range(k):
        sq = (rows[j][0] - x[0]).square()
        for r in range(1, t_dim):
            sq = sq + (rows[j][r] - x[r]).square()
        logits.append(config.choice_logit_offset - sq.sqrt())
    logits.append(torch.full_like(x[0], float(config.no_click_mass)))
    top = logits[0]
    for lg in logits[1:]:
        top = torch.maximum(top, lg)
    weight = [(lg - top).exp() for lg in logits]
    acc = weight[0].double()
    cdf = [weight[0]]
    for j in range(1, k + 1):
        acc = acc + weight[j]
        cdf.append(acc.float())
    total = cdf[k]
    threshold = counter_uniforms(n, key) * total
    choice = (cdf[0] < threshold).long()
    for j in range(1, k):
        choice = choice + (cdf[j] < threshold).long()
    missed = choice == k
    picked = list(rows[0])  # the chosen doc's rows (the last slot's for no click)
    for j in range(1, k):
        picked = [torch.where(choice >= j, rows[j][r], picked[r]) for r in range(t_dim + 2)]
    quality, length = picked[t_dim], picked[t_dim + 1]
    consumed = torch.where(missed, 0.0, torch.sigmoid(-quality) * length)
    step = torch.where(missed, 0.0, config.interest_step_size * quality)
    m = config.max_user_affinity
    nxt = []
    for r in range(t_dim):
        updated = (picked[r] - x[r]) * step + x[r]
        if noise is not None:
            updated = updated + torch.where(missed, 0.0, config.interest_update_noise_scale * noise[r])
        nxt.append(4.0 * m * (torch.sigmoid(updated / m) - 0.5))
    probs = torch.stack([w / total for w in weight])
    return choice, consumed.double(), torch.stack(nxt), torch.stack(nxt, 1), probs, bad.any()


def ng_slate_table(features: torch.Tensor, quality: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """``[T + 2, D]`` corpus table of :func:`ng_step_slate_table` from ``features [D, T]``, ``quality``,
    ``length [D]``."""
    return torch.cat([features.t(), quality.unsqueeze(0), length.unsqueeze(0)]).contiguous()


def ng_step(
    interest: torch.Tensor,
    slate_features: torch.Tensor,
    slate_quality: torch.Tensor,
    slate_length: torch.Tensor,
    config: InterestEvolutionConfig,
    generator: torch.Generator | None = None,
    uniform: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One NG user step on given slates (``InterestEvolutionUser.next_response`` then ``next_state``).

    ``interest [N, T]``, ``slate_features [N, K, T]``, ``slate_quality`` and ``slate_length [N, K]``.
    Returns ``(choice [N] (K = no click), consumed_time [N] (0 without a click), next_interest [N, T],
    choice probabilities [N, K+1])``. The choice is the inverse-CDF draw of ``uniform [N]``; ``noise
    [N, T]`` the standard-normal update noise (with ``interest_update_noise_scale > 0``; drawn when
    not given).
    """
    choice, consumed, nxt, probs = ng_step_users_last(
        interest.t(),
        slate_features.permute(2, 1, 0),
        slate_quality.t(),
        slate_length.t(),
        config,
        generator,
        uniform,
        None if noise is None else noise.t(),
    )
    return choice, consumed, nxt.t(), probs.t()


# ---- original RecSim interest evolution -------------------------------------------------------
def recsim_scores(interest: torch.Tensor, doc_features: torch.Tensor) -> torch.Tensor:
    """``x . f`` for ``[N, T]`` users and ``[N, C, T]`` docs -> ``[N, C]``."""
    return torch.einsum("nt,nct->nc", interest, doc_features)


def recsim_choice_logits(
    interest: torch.Tensor, doc_features: torch.Tensor, config: RecSimInterestEvolutionConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choice logits ``[N, C]`` and no-click logit ``[N]`` of RecSim's choice model.

    proportional: ``log(max(score - min_normalizer, 0))`` (RecSim asserts non-negative scores; with
    interests in [-1, 1] and one-hot features they always are); mnl: the scores themselves.
    """
    scores = recsim_scores(interest, doc_features)
    n = interest.shape[0]
    if config.choice_model == "proportional":
        logits = torch.log((scores - config.min_normalizer).clamp_min(0.0))
        no_click = torch.full(
            (n,),
            float(torch.log(torch.tensor(config.no_click_mass - config.min_normalizer))),
            device=interest.device,
            dtype=interest.dtype,
        )
    else:
        logits = scores
        no_click = torch.full((n,), float(config.no_click_mass), device=interest.device, dtype=interest.dtype)
    return logits, no_click


def recsim_expected_utility(
    interest: torch.Tensor, features: torch.Tensor, config: RecSimInterestEvolutionConfig
) -> torch.Tensor:
    """``choice_model.scores[0]`` after scoring the one clicked doc alone (``[N]``)."""
    score = (interest * features).sum(-1)
    if config.choice_model == "proportional":
        return score - config.min_normalizer
    return torch.sigmoid(score - config.no_click_mass)  # softmax([score, no_click])[0]


def recsim_update(
    interest: torch.Tensor,
    budget: torch.Tensor,
    clicked: torch.Tensor,
    watch_time: torch.Tensor,
    chosen_features: torch.Tensor,
    chosen_quality: torch.Tensor,
    config: RecSimInterestEvolutionConfig,
    generator: torch.Generator | None = None,
    flip: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``IEvUserModel.update_state`` batched: ``(next_interest [N, T], next_budget [N])``.

    ``flip [N]`` are the uniforms deciding toward/away (drawn from ``generator`` when not given).
    """
    x0, y0 = config.alpha_x_intercept, config.alpha_y_intercept
    alpha = (-y0 / x0) * interest.abs() + y0
    update = alpha * chosen_features * (chosen_features - interest)
    positive_prob = ((interest + 1.0) / 2.0 * chosen_features).sum(-1)
    if flip is None:
        flip = torch.rand(interest.shape[0], generator=generator, device=interest.device, dtype=interest.dtype)
    sign = torch.where(flip < positive_prob, 1.0, -1.0).unsqueeze(-1)
    moved = (interest + sign * update).clamp(-1.0, 1.0)
    next_interest = torch.where(clicked.unsqueeze(-1), moved, interest)
    expected_utility = recsim_expected_utility(interest, chosen_features, config)
    received = config.user_quality_factor * expected_utility + config.document_quality_factor * chosen_quality
    clicked_budget = budget - watch_time + config.user_update_alpha * watch_time * received
    next_budget = torch.where(clicked, clicked_budget, budget - config.step_penalty)
    return next_interest, next_budget
