r"""Top-K off-policy-corrected REINFORCE (Chen et al., 2019), learned from logs only (notes 9/5).

The policy is a softmax over the C candidates, :math:`\pi_\theta(a|s) \propto e^{f_\theta(s,a)}`; a
slate is its K most likely items (or K draws without replacement). The logged events
:math:`(s_t, a, R_t)` — every shown item a with the return credited to it,
:math:`R_t(a) = \mathbb 1[a \text{ clicked}]\, r_t + \gamma G_{t+1}` (or only the clicked item,
:math:`R_t = \sum_{t'\ge t}\gamma^{t'-t} r_{t'}`) — were drawn by the behaviour policy β, not π, so
the REINFORCE gradient of the notes is importance-weighted (first-order, per-step ratio):

.. math:: \nabla_\theta J \approx \sum_t \frac{\pi_\theta(a_t|s_t)}{\beta(a_t|s_t)}\, R_t\,
          \nabla_\theta \log \pi_\theta(a_t|s_t).

Serving K items changes the objective to the probability that a appears in the slate,
:math:`\alpha_\theta(a|s) = 1 - (1-\pi_\theta(a|s))^K`, whose gradient adds the top-K multiplier

.. math:: \nabla_\theta J \approx \sum_t \min\Big(\frac{\pi_\theta(a_t|s_t)}{\beta(a_t|s_t)}, c\Big)\,
          \lambda_K(s_t,a_t)\, (R_t - b)\, \nabla_\theta \log\pi_\theta(a_t|s_t), \qquad
          \lambda_K = K\,(1 - \pi_\theta(a_t|s_t))^{K-1},

with the weight capped at c (variance reduction) and a mean baseline b. β is unknown in general,
so it is learned: a second softmax head on the *same* per-item representation with its gradient
blocked from the trunk, :math:`\beta_{\theta'}(a|s) \propto e^{g_{\theta'}(\mathrm{sg}(h_\theta(s,a)))}`,
fitted by maximum likelihood of the shown items (``beta="logged"`` uses the logged per-position
propensities instead). The surrogate loss minimised is
:math:`-\frac1B\sum \mathrm{sg}(w\lambda_K)(R-b)\log\pi_\theta - \frac1B\sum\log\beta_{\theta'}`. The
reward-to-go is the core's :meth:`EpisodeBatch.reward_to_go` over each logged session segment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from core_rl.common.config import Widths, parse_config
from core_rl.common.distributions import plackett_luce_log_prob, plackett_luce_table_log_prob
from core_rl.common.errors import ConfigError
from core_rl.common.networks import ACTIVATIONS, mlp
from core_rl.common.seeding import configure_torch, set_seed
from core_rl.common.tracking import NullTracker, Tracker
from recsys.choice_model import enumerate_slates, pair_features
from recsys.data_parallel import DataParallel, all_sum, reduce_and_clip
from recsys.policies.types import ObsLayout, SlateDecision, SlateObs, SlatePolicy, as_slate_obs
from recsys.training import fit_offline


class TopKReinforceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    seed: int = Field(0, ge=0)
    hidden_sizes: Widths = Field((64, 64), description="Trunk widths of the per-item representation.")
    activation: str = Field("relu", pattern="^(tanh|relu|elu|gelu)$")
    lr: float = Field(3e-3, gt=0.0)
    gamma: float = Field(0.9, ge=0.0, le=1.0, description="Discount of the credited return.")
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(256, ge=1, description="Logged slates per gradient step.")
    topk: int | None = Field(None, ge=1, description="K of the top-K correction (None: the slate size).")
    topk_correction: bool = Field(True, description="Multiply by λ_K = K(1−π)^(K−1).")
    off_policy_correction: bool = Field(True, description="Weight by π/β (capped).")
    weight_cap: float = Field(10.0, gt=0.0, description="c in min(π/β, c).")
    beta: Literal["learned", "logged"] = Field(
        "learned", description="β: a learned head, or the logged position propensities."
    )
    events: Literal["shown", "clicked"] = Field("shown", description="Which logged items are REINFORCE events.")
    baseline: Literal["none", "mean"] = "mean"
    entropy_coef: float = Field(0.0, ge=0.0)
    max_grad_norm: float | None = Field(10.0, gt=0.0)
    torch_threads: int = Field(1, ge=0)


class TopKPolicyNetwork(nn.Module):
    """Per-item representation h(s, a) → π logits; a β head on sg(h)."""

    def __init__(self, user_dim: int, doc_dim: int, hidden_sizes: tuple[int, ...] = (64, 64), activation: str = "relu"):
        super().__init__()
        *trunk, width = hidden_sizes if hidden_sizes else (32,)
        self.hparams = {
            "user_dim": user_dim,
            "doc_dim": doc_dim,
            "hidden_sizes": list(hidden_sizes),
            "activation": activation,
        }
        self.trunk = mlp(
            user_dim + doc_dim,
            width,
            tuple(trunk),
            activation,
            out_gain=2**0.5,
            output_activation=ACTIVATIONS[activation],
        )
        self.pi_head = mlp(width, 1, (), activation, out_gain=0.01)
        self.beta_head = mlp(width, 1, (), activation, out_gain=0.01)

    def forward(self, user: torch.Tensor, docs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(π logits [N, C], β logits [N, C])``."""
        h = self.trunk(pair_features(user, docs))
        return self.pi_head(h).squeeze(-1), self.beta_head(h.detach()).squeeze(-1)

    def scores(self, user: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
        return self.pi_head(self.trunk(pair_features(user, docs))).squeeze(-1)


def topk_multiplier(pi: torch.Tensor, k: int) -> torch.Tensor:
    """λ_K(s, a) = ∂α/∂π = K (1 − π)^(K−1), with α = 1 − (1 − π)^K."""
    return k * (1.0 - pi).pow(k - 1)


def capped_ratio(pi: torch.Tensor, beta: torch.Tensor, cap: float) -> torch.Tensor:
    """min(π / β, c)."""
    return torch.clamp(pi / beta.clamp_min(1e-12), max=cap)


class TopKReinforcePolicy(SlatePolicy):
    """The K candidates with the largest π_θ(a|s) (``sample=True``: K draws without replacement)."""

    kind = "topk_reinforce"

    def __init__(
        self, num_candidates: int, slate_size: int, network: TopKPolicyNetwork, sample: bool = False, seed: int = 0
    ):
        super().__init__(num_candidates, slate_size)
        self.network, self.sample, self.seed = network, sample, seed
        self.generator = torch.Generator().manual_seed(seed)
        if sample:
            self.deterministic = False  # type: ignore[misc]

    def decide(self, obs: SlateObs, info: Mapping[str, Any] | None) -> SlateDecision:
        scores = self.network.scores(obs.user, obs.docs).double()
        n = len(obs)
        if self.sample:
            u = torch.rand(scores.shape, generator=self.generator, dtype=torch.float64).clamp_(1e-12, 1 - 1e-12)
            slates = (scores - torch.log(-torch.log(u))).topk(self.slate_size, dim=1).indices
            prob = plackett_luce_log_prob(scores, slates).exp()
            return SlateDecision(slates, prob, torch.full(slates.shape, torch.nan, dtype=torch.float64))
        slates = scores.topk(self.slate_size, dim=1).indices
        return SlateDecision(
            slates, torch.ones(n, dtype=torch.float64), torch.ones(n, self.slate_size, dtype=torch.float64)
        )

    def probability_of(self, obs: Any, info: Mapping[str, Any] | None, slates: torch.Tensor) -> torch.Tensor:
        if not self.sample:
            return super().probability_of(obs, info, slates)
        o = as_slate_obs(obs, self.layout, info)
        with torch.no_grad():
            return plackett_luce_log_prob(self.network.scores(o.user, o.docs).double(), slates).exp()

    def slate_distribution(self, obs: Any, info: Mapping[str, Any] | None = None) -> torch.Tensor:
        if not self.sample:
            return super().slate_distribution(obs, info)
        o = as_slate_obs(obs, self.layout, info)
        table = enumerate_slates(self.num_candidates, self.slate_size, ordered=True)
        with torch.no_grad():
            return plackett_luce_table_log_prob(self.network.scores(o.user, o.docs).double(), table).exp()

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "network": self.network.hparams, "sample": self.sample, "seed": self.seed}

    def state(self) -> dict[str, Any]:
        return {"network": self.network.state_dict()}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], state: dict[str, Any]) -> "TopKReinforcePolicy":
        h = spec["network"]
        net = TopKPolicyNetwork(h["user_dim"], h["doc_dim"], tuple(h["hidden_sizes"]), h["activation"])
        net.load_state_dict(state["network"])
        return cls(
            spec["num_candidates"], spec["slate_size"], net.eval(), spec.get("sample", False), spec.get("seed", 0)
        )


class TopKReinforce:
    """Trains :class:`TopKPolicyNetwork` on logged sessions (``TopKReinforce(layout, K).fit(reader)``)."""

    name = "topk_reinforce"

    def __init__(
        self,
        layout: ObsLayout,
        slate_size: int,
        config: TopKReinforceConfig | Mapping[str, Any] | None = None,
        tracker: Tracker | None = None,
        **overrides: Any,
    ):
        self.config = parse_config(TopKReinforceConfig, config, **overrides)
        cfg = self.config
        configure_torch(cfg.torch_threads)
        set_seed(cfg.seed)
        self.layout, self.slate_size = layout, slate_size
        self.k = cfg.topk or slate_size
        self.network = TopKPolicyNetwork(layout.user_dim, layout.doc_dim, cfg.hidden_sizes, cfg.activation)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=cfg.lr)
        self.tracker = tracker or NullTracker()
        self.history: list[dict[str, float]] = []

    def events(self, chunk: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(row [E], item [E], R [E], logged β [E] or None)`` of a chunk's REINFORCE events."""
        cfg = self.config
        k = chunk.slate_size
        rtg = chunk.reward_to_go(cfg.gamma).double()
        future = rtg - chunk.engagement.double()  # γ G_{t+1}
        rows = torch.arange(len(chunk))
        if cfg.events == "clicked":
            clicked = chunk.clicked
            r_idx = rows[clicked]
            pos = chunk.click[clicked]
            ret = rtg[clicked]
        else:
            r_idx = rows.repeat_interleave(k)
            pos = torch.arange(k).repeat(len(chunk))
            hit = (chunk.click[r_idx] == pos).double()
            ret = hit * chunk.engagement.double()[r_idx] + future[r_idx]
        item = chunk.slate[r_idx, pos]
        beta = None
        if cfg.beta == "logged":
            if chunk.position_propensity is None or bool(torch.isnan(chunk.position_propensity).any()):
                raise ConfigError("beta='logged' needs per-position propensities in the logs; use beta='learned'")
            beta = chunk.position_propensity[r_idx, pos]
        return r_idx, item, ret, beta

    def loss(
        self,
        user: torch.Tensor,
        docs: torch.Tensor,
        item: torch.Tensor,
        ret: torch.Tensor,
        logged_beta: torch.Tensor | None,
        data_parallel: DataParallel | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        r"""The surrogate loss of a minibatch of events and its metrics.

        With ``data_parallel`` these are the events of one rank's shard: the baseline
        :math:`b = \sum R / E` and every mean are taken over the *global* minibatch (its E events and
        their Σ R are all-summed first), so the loss and metrics are this rank's contributions — sums over
        its events divided by E — whose sum over the ranks is the single worker's."""
        cfg = self.config
        pi_logits, beta_logits = self.network(user, docs)
        log_pi_all = torch.log_softmax(pi_logits, dim=1)
        log_pi = log_pi_all.gather(1, item.unsqueeze(1)).squeeze(1)
        log_beta_all = torch.log_softmax(beta_logits, dim=1)
        log_beta = log_beta_all.gather(1, item.unsqueeze(1)).squeeze(1)
        ret_sum, events = all_sum(
            data_parallel, torch.stack([ret.double().sum(), torch.tensor(float(len(ret)), dtype=torch.float64)])
        )
        n = events.clamp_min(1.0)
        with torch.no_grad():
            pi = log_pi.exp().double()
            beta = logged_beta.double() if logged_beta is not None else log_beta.exp().double()
            w = capped_ratio(pi, beta, cfg.weight_cap) if cfg.off_policy_correction else torch.ones_like(pi)
            lam = topk_multiplier(pi, self.k) if cfg.topk_correction else torch.ones_like(pi)
            b = ret_sum / n if cfg.baseline == "mean" else torch.zeros((), dtype=torch.float64)
            coef = (w * lam * (ret - b)).float()
        nf = n.float()
        policy_loss = -(coef * log_pi).sum() / nf
        beta_loss = -log_beta.sum() / nf if logged_beta is None else torch.zeros(())
        loss = policy_loss + beta_loss
        ent = -(log_pi_all.exp() * log_pi_all).sum(1).sum() / nf
        if cfg.entropy_coef > 0:
            loss = loss - cfg.entropy_coef * ent
        return loss, {
            "policy_loss": float(policy_loss.detach()),
            "beta_nll": float(beta_loss.detach()),
            "weight_mean": float(w.sum() / n),
            "weight_capped": float((w >= cfg.weight_cap).double().sum() / n),
            "lambda_mean": float(lam.sum() / n),
            "entropy": float(ent.detach()),
        }

    def networks(self) -> dict[str, nn.Module]:
        """The modules a data-parallel rank starts equal and a parent process loads back."""
        return {"network": self.network}

    def fit(
        self,
        reader: Any,
        epochs: int | None = None,
        log_every: int = 50,
        data_parallel: DataParallel | None = None,
    ) -> "TopKReinforce":
        """Passes over the log (a :class:`~recsys.logs.LogReader` or a list of chunks), by
        :func:`~recsys.training.fit_offline`: metrics go to the tracker every ``log_every`` gradient
        steps and, averaged, at the end of every epoch.

        ``data_parallel`` (a :class:`recsys.data_parallel.DataParallel`, inside a process group): this
        rank takes every W-th event of each global minibatch (``batch_size`` stays the global batch), the
        baseline and the normalisers are global (:meth:`loss`), the gradients are all-reduced and only
        then clipped, and the metrics are the global minibatch's — the single worker's loss curve."""
        cfg = self.config
        dp = data_parallel

        def batches(chunk: Any, generator: torch.Generator) -> Any:
            r_idx, item, ret, beta = self.events(chunk)
            perm = torch.randperm(len(chunk), generator=generator)
            per_row = max(1, len(r_idx) // max(len(chunk), 1))
            # events of one row stay together: permute rows, then take their events
            order = torch.argsort(torch.argsort(perm)[r_idx], stable=True)
            r_idx, item, ret = r_idx[order], item[order], ret[order]
            beta = None if beta is None else beta[order]
            step_events = cfg.batch_size * per_row
            for start in range(0, len(r_idx), step_events):
                sl = slice(start, start + step_events)
                rows = r_idx[sl]
                yield chunk.user[rows], chunk.docs[rows], item[sl], ret[sl], None if beta is None else beta[sl]

        def step(batch: tuple[torch.Tensor, ...]) -> dict[str, float]:
            loss, metrics = self.loss(*batch, data_parallel=dp)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            reduce_and_clip(dp, self.network.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            return metrics if dp is None else dp.reduce_metrics(metrics, summed=True)

        if dp is not None:
            dp.broadcast_parameters(self.network)
            batches = dp.shard(batches)
        fit_offline(reader, epochs or cfg.epochs, cfg.seed, batches, step, self.tracker, self.history, log_every)
        return self

    def as_policy(self, sample: bool = False) -> TopKReinforcePolicy:
        import copy

        pol = TopKReinforcePolicy(
            self.layout.num_candidates, self.slate_size, copy.deepcopy(self.network).eval(), sample, self.config.seed
        )
        pol.layout = self.layout
        return pol


__all__ = [
    "TopKReinforce",
    "TopKReinforceConfig",
    "TopKReinforcePolicy",
    "TopKPolicyNetwork",
    "topk_multiplier",
    "capped_ratio",
]
