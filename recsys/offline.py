r"""Learning slate policies from logs alone: conservative Q-learning and behaviour cloning.

**Conservative SlateQ** (CQL-style, Kumar et al., 2020, on the SlateQ decomposition; notes 9/12–14).
Offline, the max in the Q-learning target reaches slates the logs never tried, whose values are
pure extrapolation and tend to be over-estimated. CQL adds to the TD loss a penalty that pushes
down a soft maximum of Q over all slates and pushes up the logged slate:

.. math:: \mathcal L(\phi) = \mathcal L_{TD}(\phi) + \alpha\,\mathbb E_{s,A\sim\mathcal D}\Big[
          \log\sum_{A'} \exp Q_\phi(s, A') - Q_\phi(s, A)\Big],
          \qquad Q_\phi(s, A) = \sum_{i\in A} P(i|s,A)\,\bar Q_\phi(s, i),

with the sum over every subset of K candidates (an index tensor; sampled when there are too many)
and :math:`\mathcal L_{TD}` SlateQ's item-wise Q-learning loss (:class:`~recsys.slateq.OfflineSlateQ`).

**Behaviour cloning** fits the logging policy itself: a Plackett–Luce model
:math:`\mu_\psi(A|x) = \prod_k e^{s_\psi(x,a_k)}/\sum_{j\notin a_{<k}} e^{s_\psi(x,j)}` by maximum
likelihood of the logged ordered slates (the same model that estimates missing propensities), served
by its mode, the top-K scores.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from core_rl.common.config import Widths, parse_config
from core_rl.common.seeding import configure_torch, set_seed
from core_rl.common.tracking import NullTracker, Tracker
from recsys.choice_model import enumerate_slates, slate_q, slate_q_table
from recsys.logs import PropensityModel
from recsys.policies import ObsLayout, ScoredTopKPolicy
from recsys.slateq import OfflineSlateQ, SlateQConfig, SlateQLearner, SlateTransitions


class CQLConfig(SlateQConfig):
    cql_alpha: float = Field(1.0, ge=0.0, description="Weight α of the conservative penalty.")
    cql_max_slates: int = Field(2000, ge=1, description="Enumerate every slate up to this many; else sample this many.")
    cql_temperature: float = Field(1.0, gt=0.0, description="τ in τ·logsumexp(Q/τ).")


def conservative_penalty(
    batch: SlateTransitions,
    learner: SlateQLearner,
    alpha: float,
    max_slates: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """α · mean[τ logsumexp_{A'} Q(s, A')/τ − Q(s, A_logged)] (gradients through Q̄_φ only)."""
    c, k = batch.docs.shape[1], batch.slate.shape[1]
    with torch.no_grad():
        logits, none = learner.choice.logits(batch.user, batch.docs)
    item_q = learner.q_net(batch.user, batch.docs)
    if math.comb(c, k) <= max_slates:
        table = enumerate_slates(c, k)
        all_q = slate_q_table(logits, none, item_q, table)  # [B, S]
        log_count = 0.0
    else:  # a uniform sample of slates: logsumexp + log(S_total / S_sampled) estimates the full one
        keys = torch.rand(max_slates, c, generator=generator)
        table = keys.topk(k, dim=1).indices
        all_q = slate_q_table(logits, none, item_q, table)
        log_count = math.log(math.comb(c, k) / max_slates)
    soft_max = temperature * (torch.logsumexp(all_q / temperature, dim=1) + log_count)
    logged = slate_q(logits, none, item_q, batch.slate)
    gap = soft_max - logged
    return alpha * gap.mean(), {"cql_gap": float(gap.detach().mean())}


class ConservativeSlateQ(OfflineSlateQ):
    """SlateQ Q-learning from logs with the CQL penalty (``cql_alpha=0`` is plain offline SlateQ)."""

    name = "cql"
    config_cls = CQLConfig
    config: CQLConfig

    def extra_loss(self) -> Any:
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)

        def penalty(batch: SlateTransitions, learner: SlateQLearner) -> tuple[torch.Tensor, dict[str, float]]:
            return conservative_penalty(batch, learner, cfg.cql_alpha, cfg.cql_max_slates, cfg.cql_temperature, gen)

        return penalty if cfg.cql_alpha > 0 else None


class BCConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, ge=0)
    hidden_sizes: Widths = (64, 64)
    lr: float = Field(3e-3, gt=0.0)
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(512, ge=1)
    torch_threads: int = Field(1, ge=0)


class BehaviorCloning:
    """Maximum-likelihood Plackett–Luce model of the logging policy, served by its top-K mode."""

    name = "bc"

    def __init__(
        self,
        layout: ObsLayout,
        slate_size: int,
        config: BCConfig | Mapping[str, Any] | None = None,
        tracker: Tracker | None = None,
        **overrides: Any,
    ):
        self.config = parse_config(BCConfig, config, **overrides)
        configure_torch(self.config.torch_threads)
        set_seed(self.config.seed)
        self.layout, self.slate_size = layout, slate_size
        self.model = PropensityModel(layout.user_dim, layout.doc_dim, self.config.hidden_sizes, self.config.seed)
        self.tracker = tracker or NullTracker()
        self.history: list[dict[str, float]] = []
        self.nll: float | None = None

    def fit(
        self, reader: Any, epochs: int | None = None, data_parallel: Any | None = None, log_every: int = 0
    ) -> "BehaviorCloning":
        """Maximum likelihood of the logged slates (:meth:`PropensityModel.fit`); ``nll`` is the last
        epoch's mean negative log-likelihood per slate. ``data_parallel``: this process's
        :class:`recsys.data_parallel.DataParallel` rank (``batch_size`` stays the global batch);
        ``log_every`` > 0: every ``log_every``-th step's NLL goes to the tracker."""
        cfg = self.config
        self.model.fit(
            reader,
            epochs or cfg.epochs,
            cfg.batch_size,
            cfg.lr,
            cfg.seed,
            self.tracker,
            self.history,
            metric="bc_nll",
            data_parallel=data_parallel,
            log_every=log_every,
        )
        self.nll = self.history[-1]["bc_nll"] if self.history else None
        return self

    def networks(self) -> dict[str, torch.nn.Module]:
        """The modules a data-parallel rank starts equal and a parent process loads back."""
        return {"model": self.model}

    def as_policy(self) -> ScoredTopKPolicy:
        pol = ScoredTopKPolicy(
            self.layout.num_candidates, self.slate_size, copy.deepcopy(self.model.score).eval(), label="bc"
        )
        pol.layout = self.layout
        return pol


__all__ = ["CQLConfig", "ConservativeSlateQ", "conservative_penalty", "BCConfig", "BehaviorCloning"]
