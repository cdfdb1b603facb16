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

``compile=True`` (InterestEvolution): the user step, its choice uniforms (a counter-based hash,
:func:`~recsys.simulation.user_model.counter_uniforms`, keyed from the env's generator at the first
step after construction or ``reset(seed=...)``: another random stream than the eager env's) and the
slate checks run as one inductor kernel, compiled once per config and batch size and called without
dynamo; it writes the next interest in both layouts (state and observation) and the reward as float64.

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

import warnings
from collections.abc import Callable
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
from recsys.simulation.lazy_info import LazyInfo
from recsys.simulation.user_model import (
    counter_uniforms,
    gather_slate,
    ng_choice_logits,
    ng_consumed_time,
    ng_initial_interest,
    ng_slate_table,
    ng_step_fused,
    ng_step_slate_table,
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


_COMPILED_STEPS: dict[tuple[Any, ...], Callable[..., Any]] = {}


def _inductor_compile(fn: Callable[..., Any], example_inputs: list[torch.Tensor]) -> Callable[..., Any]:
    """``fn`` compiled by inductor for the shapes, strides and dtypes of ``example_inputs``, without dynamo.

    ``fn`` is traced to an aten graph (``make_fx`` with inductor's decompositions) and compiled once
    (``compile_fx_inner``); the returned callable runs the generated wrapper directly: no guard
    evaluation or runtime wrappers per call (≈ 25 µs of the ≈ 85 µs a ``torch.compile``d call took at
    10,000 users). Later inputs must match the examples' shapes, strides and dtypes (the generated
    code asserts them)."""
    from torch._inductor.compile_fx import compile_fx_inner
    from torch._inductor.decomposition import select_decomp_table
    from torch.fx.experimental.proxy_tensor import make_fx

    graph = make_fx(fn, decomposition_table=select_decomp_table())(*example_inputs)
    compiled = compile_fx_inner(graph, list(example_inputs))
    call = getattr(compiled, "current_callable", None) or compiled
    return lambda *args: call(list(args))


def _compiled_step(config: InterestEvolutionConfig, example_inputs: list[torch.Tensor]) -> Callable[..., Any]:
    """:func:`ng_step_fused` for ``config`` compiled by :func:`_inductor_compile` for these input shapes,
    one per config and shapes (envs with equal configs and batch sizes share it)."""
    key = (config, *((tuple(t.shape), t.dtype, t.device.type) for t in example_inputs))
    if key not in _COMPILED_STEPS:
        if len(example_inputs) == 5:  # with update noise

            def fused(x_t: Any, slate: Any, table_t: Any, rng_key: Any, noise: Any) -> Any:
                return ng_step_fused(x_t, slate, table_t, rng_key, noise, config)

        else:

            def fused(x_t: Any, slate: Any, table_t: Any, rng_key: Any) -> Any:  # type: ignore[misc]
                return ng_step_fused(x_t, slate, table_t, rng_key, None, config)

        _COMPILED_STEPS[key] = _inductor_compile(fused, [t.clone() for t in example_inputs])
    return _COMPILED_STEPS[key]


def _np(t: torch.Tensor) -> np.ndarray:
    if t.is_cpu and not t.requires_grad:
        return t.numpy()
    return t.detach().cpu().numpy()


def _np_copy(t: torch.Tensor) -> Callable[[], np.ndarray]:
    """A thunk for :class:`LazyInfo`: a fresh numpy copy of ``t`` (``t`` is never written to afterwards)."""
    return lambda: np.array(_np(t), copy=True)


def _np_view(t: torch.Tensor) -> Callable[[], np.ndarray]:
    """A thunk: ``t`` as numpy (``t`` is a fresh tensor no one else holds)."""
    return lambda: _np(t)


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
        self._t = 0  # steps since the last reset
        self._start = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)  # each session's first step
        self._max_elapsed = 0
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

    def _choice_scores_fn(self) -> Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """:meth:`choice_scores` of the *current* state, as a function that may be called later
        (it holds the state's tensors, which the simulator replaces rather than writes to)."""
        raise NotImplementedError

    def choice_scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The choice model on the current candidates: ``(logits [N, C], no_click_logit [N], engagement [N, C])``."""
        return self._choice_scores_fn()()

    def _candidate_doc_id_fn(self) -> Callable[[], torch.Tensor]:
        """:meth:`_candidate_doc_id` of the current state, as a function that may be called later."""
        ids = self._candidate_doc_id()
        return lambda: ids

    def _transition(self, slate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, LazyInfo]:
        """Step every user on ``slate [N, K]``: ``(reward [N], terminated [N] or None for none, step info)``."""
        raise NotImplementedError

    def _max_steps(self) -> int | None:
        raise NotImplementedError

    # ---- gymnasium API ----------------------------------------------------------------------------
    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        with torch.no_grad():
            if seed is not None:
                first = seed[0] if isinstance(seed, (list, tuple)) else seed
                self._gen.manual_seed(int(first))
                self._setup()
            self._reset_users(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
            self._t = 0
            self._start.zero_()
            self._max_elapsed = 0
            return self._observe(), self._candidate_info(LazyInfo())

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """One step of every env. The info is a :class:`LazyInfo`: its per-candidate and derived
        entries are computed when first read (same keys and values as computing them here)."""
        with torch.no_grad():
            return self._step(actions)

    def _step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        slate = self._slate_of(actions)
        reward, terminated, info = self._transition(slate)
        for key, value in dict.items(info):  # a subclass may add tensors: numpy, as for every entry
            if isinstance(value, torch.Tensor):
                dict.__setitem__(info, key, _np(value))
        self._t += 1
        self._max_elapsed += 1  # an upper bound on every env's elapsed steps: no check before the limit
        limit = self._max_steps()
        truncated = None
        if limit and self._max_elapsed >= limit:
            truncated = self._elapsed >= limit
            if terminated is not None:
                truncated &= ~terminated
        done = truncated if terminated is None else (terminated if truncated is None else terminated | truncated)
        obs = self._observe()
        self._candidate_info(info)
        terminated_np = np.zeros(self.num_envs, dtype=bool) if terminated is None else _np(terminated)
        truncated_np = np.zeros(self.num_envs, dtype=bool) if truncated is None else _np(truncated)
        if done is not None and bool(done.any()):
            done_np = _np(done)
            final_obs = {k: v.copy() for k, v in obs.items()} if isinstance(obs, dict) else obs.copy()
            final_info = info.copy()  # entries still pending compute from the pre-reset state
            for key in list(final_info):
                if not final_info.is_pending(key):
                    final_info[key] = np.array(final_info[key], copy=True)
                final_info[f"_{key}"] = done_np.copy()
            self._reset_users(done)
            self._start.masked_fill_(done, self._t)
            self._max_elapsed = self._t - int(self._start.min())
            obs = self._observe()
            self._candidate_info(info)
            info.update(final_obs=final_obs, _final_obs=done_np, final_info=final_info, _final_info=done_np.copy())
        return obs, _np(reward).astype(np.float64, copy=False), terminated_np, truncated_np, info

    # ---- helpers ------------------------------------------------------------------------------------
    @property
    def _elapsed(self) -> torch.Tensor:
        """``[N]`` steps of each env's current session (a step counter and each session's first step
        replace a per-env counter that every step would increment)."""
        return self._t - self._start

    def _slate_of(self, actions: Any) -> torch.Tensor:
        """The ``[N, K]`` slates :meth:`_transition` gets from a step's actions (checked here, unless the
        simulator checks them in its transition)."""
        return self._prepare_slate(actions)

    def _prepare_slate(self, actions: Any) -> torch.Tensor:
        """``[N, K]`` int64 slates (a transposed view of a contiguous ``[K, N]`` block), checked."""
        a = np.asarray(actions)
        if a.size != self.num_envs * self.slate_size:
            raise EnvError(f"actions must have shape ({self.num_envs}, {self.slate_size}), got {a.shape}")
        slate_t = np.ascontiguousarray(a.reshape(self.num_envs, self.slate_size).T, dtype=np.int64)  # [K, N]
        if slate_t.view(np.uint64).max() >= self.num_candidates:  # negatives wrap to huge: one pass for both
            raise EnvError(
                f"slate indices must lie in [0, {self.num_candidates}), got min {int(slate_t.min())} "
                f"max {int(slate_t.max())}"
            )
        if self.slate_size == 2:
            repeated = bool(np.equal(slate_t[0], slate_t[1]).any())
        elif self.slate_size > 2:
            ordered = np.sort(slate_t, axis=0)
            repeated = bool((ordered[1:] == ordered[:-1]).any())
        else:
            repeated = False
        if repeated:
            raise EnvError("a slate may not show the same candidate twice")
        return torch.from_numpy(slate_t).to(self.device).t()

    def _observe(self) -> Any:
        doc = self._doc_features()
        if self.config.flat_observation:
            return _np(torch.cat([self._user_features(), doc.reshape(self.num_envs, -1)], dim=1).to(torch.float32))
        shared = getattr(self, "_shared_doc_np", None)
        if shared is not None and shared[0] is doc:
            return {"user": self._user_obs(), "doc": shared[1]}
        doc_np = _np(doc.to(torch.float32))
        if doc is getattr(self, "_shared_doc_obs", None):
            doc_np.flags.writeable = False  # one cached table shared by every step: read-only
            self._shared_doc_np = (doc, doc_np)
        return {"user": self._user_obs(), "doc": doc_np}

    def _user_obs(self) -> np.ndarray:
        """A fresh ``[N, U]`` float32 array of the user features."""
        return np.array(_np(self._user_features().to(torch.float32)), copy=True)

    def _candidate_info(self, info: LazyInfo) -> LazyInfo:
        """Put the entries about the current state into ``info`` (pending until read); returns it."""
        info.set_lazy("user_interest", _np_copy(self._interest()))
        if not self.config.choice_info:
            return info
        scores = self._choice_scores_fn()
        cache: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

        def score(i: int) -> torch.Tensor:
            if not cache:
                cache.append(scores())
            return cache[0][i]

        info.set_lazy("candidate_choice_logit", lambda: _np(score(0)))
        info.set_lazy("no_click_logit", lambda: _np(score(1)))
        consts = self.__dict__.setdefault("_constant_arrays", {})  # this corpus's (reset(seed) makes a new one)
        info.set_lazy("candidate_engagement", lambda: self._constant_or_copy("engagement", score(2), consts))
        ids = self._candidate_doc_id_fn()
        info.set_lazy("candidate_doc_id", lambda: self._constant_or_copy("doc_id", ids(), consts))
        return info

    @staticmethod
    def _constant_or_copy(key: str, value: torch.Tensor, cache: dict[str, np.ndarray]) -> np.ndarray:
        """A fresh array, or — for a per-env constant (stride 0 over envs) — one read-only array cached in ``cache``."""
        if value.dim() == 2 and value.stride(0) == 0:
            if key not in cache:
                cache[key] = _np(value.contiguous())
                cache[key].flags.writeable = False
            return cache[key]
        return _np(value.contiguous()).copy()

    def _step_info(
        self, slate: torch.Tensor, choice: torch.Tensor, engagement: torch.Tensor, probs: torch.Tensor
    ) -> LazyInfo:
        """``choice`` and ``slate_choice_prob`` as they are; the rest computed from them when read."""
        k = self.slate_size
        ids = self._candidate_doc_id_fn()

        def clicked_candidate() -> np.ndarray:
            pick = choice.clamp(max=k - 1).unsqueeze(1)
            return _np(torch.where(choice < k, slate.gather(1, pick).squeeze(1), -1))

        def clicked_doc_id() -> np.ndarray:
            pick = choice.clamp(max=k - 1).unsqueeze(1)
            return _np(torch.where(choice < k, gather_slate(ids(), slate).gather(1, pick).squeeze(1), -1))

        return LazyInfo(
            {"choice": _np(choice), "slate_choice_prob": _np(probs)},
            {
                "clicked": lambda: _np(choice < k),
                "clicked_candidate": clicked_candidate,
                "clicked_doc_id": clicked_doc_id,
                "engagement": lambda: _np(engagement.to(torch.float64, copy=True)),
                "slate_doc_id": lambda: _np(gather_slate(ids(), slate)),
            },
        )

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
        self._table_t = ng_slate_table(self.corpus.features, self.corpus.quality, self.corpus.length)  # [T+2, D]
        self._interest_t = torch.zeros(c.num_topics, self.num_envs, device=self.device)  # [T, N]
        self._cand: torch.Tensor | None = None  # [N, C] corpus indices, None = the whole corpus
        if c.num_candidates is not None:
            self._cand = torch.zeros(self.num_envs, c.num_candidates, dtype=torch.int64, device=self.device)
        self._shared_doc_obs: torch.Tensor | None = None
        self._noise0_t: torch.Tensor | None = None  # [T, N]: only with interest_noise="recsim_ng" and noise on
        if c.compile and not hasattr(self, "_fused_step"):  # once (a failed compile leaves None: eager)
            self._fused_step: Callable[..., Any] | None = None  # compiled on the first step
            self._compile_failed = False
            self._key_np = np.zeros(3, dtype=np.int64)  # counter_uniforms' key: k0, k1, counter base
            self._key_t = torch.from_numpy(self._key_np)  # the same memory
            self._slate_shared = False
            self._slate_unchecked = False
            self._user_obs_ready: tuple[torch.Tensor, np.ndarray] | None = None
        self._key_drawn = False  # compile=True: drawn from the generator at the next step
        self._draws = 0  # steps drawn under the current key
        self._constant_arrays: dict[str, np.ndarray] = {}

    def _max_steps(self) -> int | None:
        return self.config.horizon

    def _draw_candidates(self, mask: torch.Tensor) -> None:
        if self._cand is None:
            return
        keys = torch.rand(self.num_envs, self.config.num_docs, generator=self._gen, device=self.device)
        fresh = keys.topk(self.config.num_candidates, dim=1).indices
        self._cand = torch.where(mask.unsqueeze(1), fresh, self._cand)

    def _reuses_initial_draw(self) -> bool:
        c = self.config
        return bool(c.interest_update_noise_scale) and c.interest_noise == "recsim_ng"

    def _reset_users(self, mask: torch.Tensor) -> None:
        fresh = ng_initial_interest(self.num_envs, self.config, self._gen)
        self._interest_t = torch.where(mask.unsqueeze(0), fresh.t(), self._interest_t)
        if self._reuses_initial_draw():  # the standard-normal draw behind x_0, reused as the first update noise
            z0 = fresh.t() / self.config.initial_interest_scale
            self._noise0_t = z0 if self._noise0_t is None else torch.where(mask.unsqueeze(0), z0, self._noise0_t)
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

    def _choice_scores_fn(self) -> Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        interest_t, cand, corpus, engagement, n, cfg = (
            self._interest_t,
            self._cand,
            self.corpus,
            self._corpus_engagement,
            self.num_envs,
            self.config,
        )

        def scores() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            feats = corpus.features if cand is None else corpus.features[cand]
            logits, no_click = ng_choice_logits(interest_t.t(), feats, cfg)
            return logits, no_click, engagement.unsqueeze(0).expand(n, -1) if cand is None else engagement[cand]

        return scores

    def _candidate_doc_id_fn(self) -> Callable[[], torch.Tensor]:
        if self._cand is None:  # the same ids every step (until reset(seed) draws a new corpus)
            cached = self.__dict__.get("_all_doc_id_fn")
            if cached is None or cached[0] is not self.corpus:
                cached = (self.corpus, super()._candidate_doc_id_fn())
                self._all_doc_id_fn = cached
            return cached[1]
        doc_id, cand = self.corpus.doc_id, self._cand
        return lambda: doc_id[cand]

    def _transition(self, slate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, LazyInfo]:
        if self.config.compile:
            return self._fused_transition(slate)
        # corpus rows, users-last [K, N] (contiguous: _prepare_slate's slate is a transposed [K, N] block)
        docs_t = slate.t() if self._cand is None else self._cand.gather(1, slate).t()
        uniform = noise = None
        if self._reuses_initial_draw():  # the draws, in the order, of ng_step_slate_table
            uniform = torch.rand(self.num_envs, generator=self._gen, device=self.device)
            noise = torch.randn(self._interest_t.shape, generator=self._gen, device=self.device)
            noise = torch.where(self._elapsed == 0, self._noise0_t, noise)  # a session's first step: NG's reuse
        choice, consumed, nxt, probs = ng_step_slate_table(
            self._interest_t, docs_t, self._table_t, self.config, self._gen, uniform, noise
        )
        info = self._step_info(slate, choice, consumed, probs.t())
        self._interest_t = nxt
        if self._cand is not None:
            self._draw_candidates(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        return consumed.to(torch.float64), None, info  # sessions end by truncation only

    # ---- compile=True: the user step as one inductor kernel, choice uniforms drawn inside ----------------
    def _fast_slates(self) -> bool:
        """Whether the compiled kernel checks the slates (the whole corpus shown, no update noise: a bad
        slate then changes nothing, not even the generator's state)."""
        return (
            not self._compile_failed
            and self._cand is None
            and not self.config.interest_update_noise_scale
            and self.device.type == "cpu"
        )

    def _slate_of(self, actions: Any) -> torch.Tensor:
        if not (self.config.compile and self._fast_slates()):
            return super()._slate_of(actions)
        a = np.asarray(actions)
        if a.size != self.num_envs * self.slate_size:
            raise EnvError(f"actions must have shape ({self.num_envs}, {self.slate_size}), got {a.shape}")
        a = a.reshape(self.num_envs, self.slate_size)
        slate = np.ascontiguousarray(a, dtype=np.int64)
        self._slate_unchecked = True  # the kernel reports bad slates
        self._slate_shared = slate is a  # the caller's own array (copied after the step, for the info)
        return torch.from_numpy(slate)

    def _rng_key(self) -> torch.Tensor:
        """``[3]`` key of :func:`counter_uniforms` for this step: ``(k0, k1, t N)``, the keys drawn from the
        env's generator at the first step after construction or ``reset(seed=...)``."""
        if not self._key_drawn:
            self._key_np[:2] = torch.randint(0, 2**32, (2,), generator=self._gen, device=self.device).cpu().numpy()
            self._key_drawn, self._draws = True, 0
        self._key_np[2] = self._draws * self.num_envs
        return self._key_t if self.device.type == "cpu" else self._key_t.to(self.device)

    def _compile_fallback(self, exc: Exception) -> None:
        warnings.warn(
            f"config 'compile': compiling the user step failed ({type(exc).__name__}: {exc}); using the eager step",
            RuntimeWarning,
            stacklevel=4,
        )
        self._fused_step, self._compile_failed = None, True

    def _fused_transition(self, slate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, LazyInfo]:
        key = self._rng_key()
        noise = None
        if self.config.interest_update_noise_scale:
            noise = torch.randn(self._interest_t.shape, generator=self._gen, device=self.device)
            if self._reuses_initial_draw():  # a session's first step: NG's reuse of the initial draw
                noise = torch.where(self._elapsed == 0, self._noise0_t, noise)
        docs = slate if self._cand is None else self._cand.gather(1, slate)
        out = None
        if not self._compile_failed:
            args = [self._interest_t.contiguous(), docs.contiguous(), self._table_t, key]
            if noise is not None:
                args.append(noise.contiguous())
            try:
                if self._fused_step is None:
                    self._fused_step = _compiled_step(self.config, args)
                out = self._fused_step(*args)
            except Exception as exc:  # inductor unavailable (no C++ compiler, ...): the eager step from now on
                self._compile_fallback(exc)
        if out is None:  # eager: the same step and uniforms, the slates checked first
            if self._slate_unchecked:
                slate = self._prepare_slate(slate.numpy())
                docs = slate
            self._slate_unchecked = False
            uniform = counter_uniforms(self.num_envs, key)
            choice, consumed, nxt, probs = ng_step_slate_table(
                self._interest_t, docs.t().contiguous(), self._table_t, self.config, None, uniform, noise
            )
            reward, user_obs = consumed.to(torch.float64), None
        else:
            choice, reward, nxt, user_obs, probs, invalid = out
            if self._slate_unchecked:
                self._slate_unchecked = False
                if bool(invalid):
                    self._prepare_slate(slate.numpy())  # raises the EnvError that names the problem
                    raise EnvError("invalid slate")  # not reached: the kernel and the check agree
                if self._slate_shared:  # the caller's array may change after the step; the info reads it later
                    slate = slate.clone()
        self._draws += 1
        info = self._step_info(slate, choice, reward, probs.t())
        self._interest_t = nxt
        self._user_obs_ready = None if user_obs is None else (nxt, _np(user_obs))
        if self._cand is not None:
            self._draw_candidates(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        return reward, None, info

    def _user_obs(self) -> np.ndarray:
        ready = getattr(self, "_user_obs_ready", None)
        if ready is not None and ready[0] is self._interest_t and self.config.observe_interest:
            self._user_obs_ready = None  # handed out once: the next call makes a fresh copy
            return ready[1]
        return super()._user_obs()


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

    def _choice_scores_fn(self) -> Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        interest, features, length, budget, cfg = (
            self._interest_state,
            self._features,
            self._length,
            self.time_budget,
            self.config,
        )

        def scores() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            logits, no_click = recsim_choice_logits(interest, features, cfg)
            return logits, no_click, torch.minimum(length, budget.unsqueeze(1))

        return scores

    def _candidate_info(self, info: LazyInfo) -> LazyInfo:
        super()._candidate_info(info)
        info["time_budget"] = _np(self.time_budget).astype(np.float64)
        return info

    def _transition(self, slate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, LazyInfo]:
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
        quality, cluster = self._quality, self._cluster  # replaced, never written to, by the next draw
        info.set_lazy("response_quality", lambda: _np(gather_slate(quality, slate)))
        info.set_lazy("response_cluster_id", lambda: _np(gather_slate(cluster, slate)))
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
