r"""Slate-recommendation vector envs over batched simulated users (gymnasium ``VectorEnv``).

Each of the ``num_envs`` sub-envs is one user session. Every step the policy sees the user's
observable features and a table of candidate documents, and answers with a slate: ``slate_size``
distinct candidate indices (a :class:`~core_rl.common.spaces.Slate`, ``MultiDiscrete([C] * K)`` without repeats, per env). The user clicks at most one slate
item (or nothing) by the choice model of :mod:`recsys.simulation.user_model`; the reward is the
engagement (time spent) on the clicked item, 0 without a click. All users are stepped at once with
torch; observations and infos come back as numpy arrays. Autoreset is ``SAME_STEP`` (what
``core_rl.common.envs.make_vec_env`` requires): a finished session's last observation is in
``info["final_obs"]`` (and its step info in ``info["final_info"]``), and the returned observation is
already the new session's first.

Observation (``flat_observation=False``): ``{"user": [N, U], "doc": [N, C, F]}`` with column
names ``env.user_feature_names`` / ``env.doc_feature_names``; with ``flat_observation=True`` one
``[N, U + C*F]`` Box, the user part then the row-major candidate table.

Info, every step (``[N]`` unless said): ``choice`` (clicked slate position, ``K`` = none),
``clicked`` (bool), ``clicked_candidate`` (candidate index or -1), ``clicked_doc_id`` (-1 if none),
``engagement`` (= reward), ``slate_doc_id [N, K]``, ``slate_choice_prob [N, K+1]`` (the choice
model's probabilities for the served slate, no click last). Every step and at reset, for the
*returned* observation: ``candidate_choice_logit [N, C]`` and ``no_click_logit`` (the choice model:
``P(k | A) = softmax([logit[A], no_click_logit])``), ``candidate_engagement [N, C]`` (engagement if
that candidate is clicked now), ``candidate_doc_id [N, C]``, ``user_interest [N, T]`` (the true,
possibly unobserved, interest).
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from core_rl.common.config import parse_config
from core_rl.common.errors import ConfigError, EnvError
from core_rl.common.spaces import Slate
from recsys.simulation.config import InterestEvolutionConfig, RecSimInterestEvolutionConfig
from recsys.simulation.corpus import Corpus, sample_ng_corpus, sample_recsim_documents
from recsys.simulation.user_model import (
    gather_slate,
    ng_choice_logits,
    ng_consumed_time,
    ng_initial_interest,
    ng_step_users_last,
    recsim_choice_logits,
    recsim_update,
    sample_choice,
)

_CANDIDATE_KEYS = (
    "candidate_choice_logit",
    "no_click_logit",
    "candidate_engagement",
    "candidate_doc_id",
    "user_interest",
)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


class SlateVectorEnv(VectorEnv):
    """Shared machinery; a simulator subclass provides the user/candidate state and one transition."""

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}
    config_cls: ClassVar[type] = InterestEvolutionConfig

    def __init__(self, num_envs: int = 1, config: Any = None, seed: int | None = None, **overrides: Any):
        if int(num_envs) < 1:
            raise ConfigError(f"num_envs must be at least 1, got {num_envs}")
        self.config = parse_config(self.config_cls, config, **overrides)
        self.num_envs = int(num_envs)
        try:
            self.device = torch.device(self.config.device)
            self._gen = torch.Generator(device=self.device)
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f"config field 'device': cannot use '{self.config.device}': {exc}") from None
        self._gen.manual_seed(int(seed) if seed is not None else int(np.random.SeedSequence().entropy % 2**63))
        self.slate_size = self.config.slate_size
        self.num_candidates = self.config.candidates_shown
        u, f = len(self.user_feature_names), len(self.doc_feature_names)
        if self.config.flat_observation:
            self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (u + self.num_candidates * f,), np.float32)
        else:
            self.single_observation_space = gym.spaces.Dict(
                {
                    "user": gym.spaces.Box(-np.inf, np.inf, (u,), np.float32),
                    "doc": gym.spaces.Box(-np.inf, np.inf, (self.num_candidates, f), np.float32),
                }
            )
        self.single_action_space = Slate(self.num_candidates, self.slate_size)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._elapsed = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)
        self._setup()
        self._reset_users(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))

    # ---- what a simulator provides --------------------------------------------------------------
    user_feature_names: list[str]
    doc_feature_names: list[str]

    def _setup(self) -> None:
        """Draw whatever lives across sessions (e.g. the corpus) from ``self._gen``."""

    def _reset_users(self, mask: torch.Tensor) -> None:
        raise NotImplementedError

    def _user_features(self) -> torch.Tensor:
        raise NotImplementedError

    def _doc_features(self) -> torch.Tensor:
        raise NotImplementedError

    def _candidate_doc_id(self) -> torch.Tensor:
        raise NotImplementedError

    def _interest(self) -> torch.Tensor:
        raise NotImplementedError

    def choice_scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The choice model on the current candidates: ``(logits [N, C], no_click_logit [N], engagement [N, C])``."""
        raise NotImplementedError

    def _transition(self, slate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Step every user on ``slate [N, K]``: ``(reward [N], terminated [N], step info)``."""
        raise NotImplementedError

    def _max_steps(self) -> int | None:
        raise NotImplementedError

    # ---- gymnasium API ----------------------------------------------------------------------------
    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            first = seed[0] if isinstance(seed, (list, tuple)) else seed
            self._gen.manual_seed(int(first))
            self._setup()
        self._reset_users(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        self._elapsed.zero_()
        return self._observe(), self._candidate_info()

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        slate = self._prepare_slate(actions)
        reward, terminated, step_info = self._transition(slate)
        self._elapsed += 1
        limit = self._max_steps()
        truncated = ~terminated & (self._elapsed >= limit) if limit else torch.zeros_like(terminated)
        done = terminated | truncated
        info: dict[str, Any] = {k: _np(v) for k, v in step_info.items()}
        obs = self._observe()
        info.update(self._candidate_info())
        if bool(done.any()):
            done_np = _np(done)
            final_obs = {k: v.copy() for k, v in obs.items()} if isinstance(obs, dict) else obs.copy()
            final_info = {k: np.array(v, copy=True) for k, v in info.items()}
            final_info.update({f"_{k}": done_np.copy() for k in list(final_info)})
            self._reset_users(done)
            self._elapsed[done] = 0
            obs = self._observe()
            info.update(self._candidate_info())
            info.update(final_obs=final_obs, _final_obs=done_np, final_info=final_info, _final_info=done_np.copy())
        return obs, _np(reward).astype(np.float64), _np(terminated), _np(truncated), info

    # ---- helpers ------------------------------------------------------------------------------------
    def _prepare_slate(self, actions: Any) -> torch.Tensor:
        a = torch.as_tensor(np.asarray(actions), dtype=torch.int64, device=self.device)
        if a.numel() != self.num_envs * self.slate_size:
            raise EnvError(f"actions must have shape ({self.num_envs}, {self.slate_size}), got {tuple(a.shape)}")
        slate = a.reshape(self.num_envs, self.slate_size)
        if bool(((slate < 0) | (slate >= self.num_candidates)).any()):
            raise EnvError(
                f"slate indices must lie in [0, {self.num_candidates}), got min {int(slate.min())} "
                f"max {int(slate.max())}"
            )
        if self.slate_size > 1:
            ordered = slate.sort(dim=1).values
            if bool((ordered[:, 1:] == ordered[:, :-1]).any()):
                raise EnvError("a slate may not show the same candidate twice")
        return slate

    def _observe(self) -> Any:
        user = self._user_features()
        doc = self._doc_features()
        if self.config.flat_observation:
            return _np(torch.cat([user, doc.reshape(self.num_envs, -1)], dim=1).to(torch.float32))
        doc_np = _np(doc.to(torch.float32))
        if doc is getattr(self, "_shared_doc_obs", None):
            doc_np.flags.writeable = False  # one cached table shared by every step: read-only
        return {"user": _np(user.to(torch.float32)).copy(), "doc": doc_np}

    def _candidate_info(self) -> dict[str, np.ndarray]:
        info = {"user_interest": _np(self._interest()).copy()}
        if not self.config.choice_info:
            return info
        logits, no_click, engagement = self.choice_scores()
        info.update(
            candidate_choice_logit=_np(logits),
            no_click_logit=_np(no_click),
            candidate_engagement=self._constant_or_copy("engagement", engagement),
            candidate_doc_id=self._constant_or_copy("doc_id", self._candidate_doc_id()),
        )
        return info

    def _constant_or_copy(self, key: str, value: torch.Tensor) -> np.ndarray:
        """A fresh array, or — for a per-env constant (stride 0 over envs) — one cached read-only array."""
        if value.dim() == 2 and value.stride(0) == 0:
            cache = self.__dict__.setdefault("_constant_arrays", {})
            if key not in cache:
                cache[key] = _np(value.contiguous())
                cache[key].flags.writeable = False
            return cache[key]
        return _np(value.contiguous()).copy()

    def _step_info(
        self, slate: torch.Tensor, choice: torch.Tensor, engagement: torch.Tensor, probs: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        k = self.slate_size
        clicked = choice < k
        pick = choice.clamp(max=k - 1).unsqueeze(1)
        cand = torch.where(clicked, slate.gather(1, pick).squeeze(1), torch.full_like(choice, -1))
        slate_ids = gather_slate(self._candidate_doc_id(), slate)
        doc_id = torch.where(clicked, slate_ids.gather(1, pick).squeeze(1), torch.full_like(choice, -1))
        return {
            "choice": choice,
            "clicked": clicked,
            "clicked_candidate": cand,
            "clicked_doc_id": doc_id,
            "engagement": engagement.to(torch.float64),
            "slate_doc_id": slate_ids,
            "slate_choice_prob": probs,
        }

    def close_extras(self, **kwargs: Any) -> None:  # nothing to release
        return None


class InterestEvolutionVectorEnv(SlateVectorEnv):
    """The torch twin of RecSim NG's interest-evolution simulation (see :mod:`recsys.simulation.user_model`).

    A frozen corpus of ``num_docs`` documents is drawn at construction and again on
    ``reset(seed=...)`` (or pass ``corpus=`` to fix it, e.g. one exported from RecSim NG).
    User features: the interest vector (if ``observe_interest``). Doc features:
    ``feature_0..feature_{T-1}, quality, length``. Sessions last ``horizon`` steps (truncation).
    """

    config_cls = InterestEvolutionConfig

    def __init__(
        self,
        num_envs: int = 1,
        config: Any = None,
        seed: int | None = None,
        corpus: Corpus | None = None,
        **overrides: Any,
    ):
        self._fixed_corpus = corpus
        cfg = parse_config(InterestEvolutionConfig, config, **overrides)
        if corpus is not None and (corpus.num_docs != cfg.num_docs or corpus.num_topics != cfg.num_topics):
            raise ConfigError(
                f"corpus has {corpus.num_docs} docs x {corpus.num_topics} topics but the config says "
                f"num_docs={cfg.num_docs}, num_topics={cfg.num_topics}"
            )
        t = cfg.num_topics
        self.user_feature_names = [f"interest_{j}" for j in range(t)] if cfg.observe_interest else []
        self.doc_feature_names = [f"feature_{j}" for j in range(t)] + ["quality", "length"]
        super().__init__(num_envs, cfg, seed)

    def _setup(self) -> None:
        c = self.config
        self.corpus = (
            self._fixed_corpus.to(self.device) if self._fixed_corpus is not None else sample_ng_corpus(c, self._gen)
        )
        self._corpus_docs = torch.cat(
            [self.corpus.features, self.corpus.quality.unsqueeze(1), self.corpus.length.unsqueeze(1)], dim=1
        )  # [D, F]
        self._corpus_engagement = ng_consumed_time(self.corpus.quality, self.corpus.length)
        self._features_t = self.corpus.features.t().contiguous()  # [T, D]: users-last hot path
        self._interest_t = torch.zeros(c.num_topics, self.num_envs, device=self.device)  # [T, N]
        self._cand: torch.Tensor | None = None  # [N, C] corpus indices, None = the whole corpus
        if c.num_candidates is not None:
            self._cand = torch.zeros(self.num_envs, c.num_candidates, dtype=torch.int64, device=self.device)
        self._shared_doc_obs: torch.Tensor | None = None
        self._constant_arrays: dict[str, np.ndarray] = {}

    def _max_steps(self) -> int | None:
        return self.config.horizon

    def _draw_candidates(self, mask: torch.Tensor) -> None:
        if self._cand is None:
            return
        keys = torch.rand(self.num_envs, self.config.num_docs, generator=self._gen, device=self.device)
        fresh = keys.topk(self.config.num_candidates, dim=1).indices
        self._cand = torch.where(mask.unsqueeze(1), fresh, self._cand)

    def _reset_users(self, mask: torch.Tensor) -> None:
        fresh = ng_initial_interest(self.num_envs, self.config, self._gen)
        self._interest_t = torch.where(mask.unsqueeze(0), fresh.t(), self._interest_t)
        self._draw_candidates(mask)

    def _interest(self) -> torch.Tensor:
        return self._interest_t.t()

    def _user_features(self) -> torch.Tensor:
        if self.config.observe_interest:
            return self._interest_t.t()
        return self._interest_t.t()[:, :0]

    def _doc_features(self) -> torch.Tensor:
        if self._cand is None:
            if self._shared_doc_obs is None:
                self._shared_doc_obs = self._corpus_docs.unsqueeze(0).expand(self.num_envs, -1, -1).contiguous()
            return self._shared_doc_obs
        return self._corpus_docs[self._cand]

    def _candidate_doc_id(self) -> torch.Tensor:
        if self._cand is None:
            return self.corpus.doc_id.unsqueeze(0).expand(self.num_envs, -1)
        return self.corpus.doc_id[self._cand]

    def candidate_corpus_index(self) -> torch.Tensor:
        """``[N, C]`` corpus row of every current candidate."""
        if self._cand is None:
            return torch.arange(self.config.num_docs, device=self.device).unsqueeze(0).expand(self.num_envs, -1)
        return self._cand

    def choice_scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.corpus.features if self._cand is None else self.corpus.features[self._cand]
        logits, no_click = ng_choice_logits(self._interest_t.t(), feats, self.config)
        engagement = (
            self._corpus_engagement.unsqueeze(0).expand(self.num_envs, -1)
            if self._cand is None
            else self._corpus_engagement[self._cand]
        )
        return logits, no_click, engagement

    def _transition(self, slate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        docs = slate if self._cand is None else self._cand.gather(1, slate)  # corpus rows [N, K]
        docs_t = docs.t()  # [K, N]
        choice, consumed, nxt, probs = ng_step_users_last(
            self._interest_t,
            self._features_t[:, docs_t],
            self.corpus.quality[docs_t],
            self.corpus.length[docs_t],
            self.config,
            self._gen,
        )
        info = self._step_info(slate, choice, consumed, probs.t())
        self._interest_t = nxt
        self._draw_candidates(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return consumed.to(torch.float64), terminated, info


class RecSimInterestEvolutionVectorEnv(SlateVectorEnv):
    """The original RecSim interest-evolution environment, batched (the SlateQ paper's setting).

    User features: the interest vector (and ``time_budget`` if ``observe_time_budget``). Doc
    features: the topic one-hot ``feature_*`` (and ``quality`` if ``observe_doc_quality``).
    Sessions end when the time budget is spent. Extra info: ``time_budget [N]`` (for the returned
    observation) and, per step, ``response_quality`` / ``response_cluster_id`` ``[N, K]`` (RecSim's
    responses report both for every slate item).
    """

    config_cls = RecSimInterestEvolutionConfig

    def __init__(self, num_envs: int = 1, config: Any = None, seed: int | None = None, **overrides: Any):
        cfg = parse_config(RecSimInterestEvolutionConfig, config, **overrides)
        t = cfg.num_topics
        self.user_feature_names = [f"interest_{j}" for j in range(t)] + (
            ["time_budget"] if cfg.observe_time_budget else []
        )
        self.doc_feature_names = [f"feature_{j}" for j in range(t)] + (["quality"] if cfg.observe_doc_quality else [])
        super().__init__(num_envs, cfg, seed)

    def _setup(self) -> None:
        n, c, t = self.num_envs, self.config.num_candidates, self.config.num_topics
        self._interest_state = torch.zeros(n, t, device=self.device)
        self.time_budget = torch.zeros(n, device=self.device)
        self._cluster = torch.zeros(n, c, dtype=torch.int64, device=self.device)
        self._features = torch.zeros(n, c, t, device=self.device)
        self._quality = torch.zeros(n, c, device=self.device)
        self._length = torch.zeros(n, c, device=self.device)
        self._doc_id = torch.zeros(n, c, dtype=torch.int64, device=self.device)
        self._doc_count = torch.zeros(n, dtype=torch.int64, device=self.device)

    def _max_steps(self) -> int | None:
        return self.config.max_episode_steps

    def _draw_candidates(self, mask: torch.Tensor) -> None:
        c = self.config.num_candidates
        cluster, features, quality, length = sample_recsim_documents(self.config, (self.num_envs, c), self._gen)
        m1, m2 = mask.unsqueeze(1), mask.view(-1, 1, 1)
        self._cluster = torch.where(m1, cluster, self._cluster)
        self._features = torch.where(m2, features, self._features)
        self._quality = torch.where(m1, quality, self._quality)
        self._length = torch.where(m1, length, self._length)
        ids = self._doc_count.unsqueeze(1) + torch.arange(c, device=self.device)
        self._doc_id = torch.where(m1, ids, self._doc_id)
        self._doc_count = self._doc_count + mask.to(torch.int64) * c

    def _reset_users(self, mask: torch.Tensor) -> None:
        t = self.config.num_topics
        fresh = torch.rand(self.num_envs, t, generator=self._gen, device=self.device) * 2.0 - 1.0
        self._interest_state = torch.where(mask.unsqueeze(1), fresh, self._interest_state)
        self.time_budget = torch.where(
            mask, torch.full_like(self.time_budget, self.config.time_budget), self.time_budget
        )
        self._draw_candidates(mask)

    def _interest(self) -> torch.Tensor:
        return self._interest_state

    def _user_features(self) -> torch.Tensor:
        if self.config.observe_time_budget:
            return torch.cat([self._interest_state, self.time_budget.unsqueeze(1)], dim=1)
        return self._interest_state

    def _doc_features(self) -> torch.Tensor:
        if self.config.observe_doc_quality:
            return torch.cat([self._features, self._quality.unsqueeze(-1)], dim=-1)
        return self._features

    def _candidate_doc_id(self) -> torch.Tensor:
        return self._doc_id

    def candidate_quality(self) -> torch.Tensor:
        """``[N, C]`` quality of the current candidates (hidden from the default observation)."""
        return self._quality

    def choice_scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, no_click = recsim_choice_logits(self._interest_state, self._features, self.config)
        engagement = torch.minimum(self._length, self.time_budget.unsqueeze(1))
        return logits, no_click, engagement

    def _candidate_info(self) -> dict[str, np.ndarray]:
        info = super()._candidate_info()
        info["time_budget"] = _np(self.time_budget).astype(np.float64)
        return info

    def _transition(self, slate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        k, n = self.slate_size, self.num_envs
        logits, no_click = recsim_choice_logits(self._interest_state, gather_slate(self._features, slate), self.config)
        probs = torch.softmax(torch.cat([logits, no_click.unsqueeze(1)], dim=1), dim=1)
        choice = sample_choice(probs, self._gen)
        clicked = choice < k
        pick = choice.clamp(max=k - 1).unsqueeze(1)
        rows = torch.arange(n, device=self.device)
        docs = slate.gather(1, pick).squeeze(1)
        chosen_features = self._features[rows, docs]
        chosen_quality = self._quality[rows, docs]
        watch = torch.where(
            clicked, torch.minimum(self.time_budget, self._length[rows, docs]), torch.zeros_like(self.time_budget)
        )
        info = self._step_info(slate, choice, watch, probs)
        info["response_quality"] = gather_slate(self._quality, slate)
        info["response_cluster_id"] = gather_slate(self._cluster, slate)
        self._interest_state, self.time_budget = recsim_update(
            self._interest_state,
            self.time_budget,
            clicked,
            watch,
            chosen_features,
            chosen_quality,
            self.config,
            self._gen,
        )
        terminated = self.time_budget <= 0
        if self.config.resample_documents:
            self._draw_candidates(torch.ones(n, dtype=torch.bool, device=self.device))
        return watch.to(torch.float64), terminated, info


class SingleSlateEnv(gym.Env):
    """One session of a slate vector env as a plain ``gymnasium.Env`` (what ``gymnasium.make`` builds).

    At the end of a session it returns the session's true last observation; the next ``step``
    (without ``reset``) continues with a fresh user.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    vector_cls: ClassVar[type[SlateVectorEnv]] = InterestEvolutionVectorEnv

    def __init__(self, **kwargs: Any):
        self.core = self.vector_cls(num_envs=1, **kwargs)
        self.observation_space = self.core.single_observation_space
        self.action_space = self.core.single_action_space

    @staticmethod
    def _one(tree: Any) -> Any:
        if isinstance(tree, dict):
            return {k: SingleSlateEnv._one(v) for k, v in tree.items()}
        return np.array(tree[0], copy=True)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        obs, info = self.core.reset(seed=seed)
        return self._one(obs), self._one(info)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.core.step(np.asarray(action)[None])
        if "final_obs" in info:
            obs = info["final_obs"]
            info = {k: v for k, v in info["final_info"].items() if not k.startswith("_")}
        info = {k: v for k, v in info.items() if not k.startswith("_") and k not in ("final_obs", "final_info")}
        return self._one(obs), float(reward[0]), bool(terminated[0]), bool(truncated[0]), self._one(info)


class InterestEvolutionEnv(SingleSlateEnv):
    vector_cls = InterestEvolutionVectorEnv


class RecSimInterestEvolutionEnv(SingleSlateEnv):
    vector_cls = RecSimInterestEvolutionVectorEnv
