r"""A slate recommender with a cap on clickbait exposure (issue 8's recommender constraint task).

``safety/Recommender-v0`` is :class:`~recsys.simulation.InterestEvolutionVectorEnv` — the torch twin
of RecSim NG's interest-evolution simulation — with a cost. Each of the N envs is one user session of
``max_episode_steps = 30`` steps; every step the policy sees the user's interest
:math:`x\in\mathbb R^2` and C = 10 candidates drawn uniformly from a frozen 100-document corpus,
each with its topic features :math:`f_i\in\mathbb R^2`, its quality :math:`q_i` and its length
:math:`\ell_i = 2` (one flat observation of :math:`2 + 4C = 42` numbers), and shows a slate
:math:`A=(a_1, a_2)` of K = 2 distinct candidates (action space :class:`~core_rl.common.spaces.Slate`).

**The CMDP.** The user clicks slate item k, or nothing, by NG's multinomial logit
:math:`P(k\mid x, A) = e^{v_{a_k}}/(e^{0} + \sum_{j\in A}e^{v_j})`, :math:`v_i = 2 - \lVert x - f_i\rVert`,
and the reward is the time spent on the clicked document,

.. math:: r_t = \mathbb 1[\text{click on } a]\ \sigma(-q_a)\,\ell_a ,

so a **low-quality document is more engaging** (quality −1 holds the user 1.46 min, quality 0 holds
1.0 min): the corpus' "trashy" topic (70% of NG's topics are trashy: with 2 topics, topic 0 has
mean quality −1, topic 1 mean 0, std 0.1) is clickbait. Clicking it also moves the interest away
from it, :math:`x \leftarrow x + 0.1\,q_a(f_a - x)` (NG's update, then its squashing), so clickbait
wears the user's click rate down over a session. The cost is the exposure to clickbait,

.. math:: c_t = \sum_{j=1}^{K}\mathbb 1[q_{a_j} < q_{min}],\qquad q_{min} = -0.5,

reported as ``info["cost_clickbait"]`` and as the total ``info["cost"]`` (the only component), and the
constraint is :math:`\mathbb E[\sum_t c_t] \le d`. The suggested limit is :data:`COST_LIMIT` = 10
clickbait items per 30-step session (one in six shown).

**Why the constraint binds** (measured: 256 sessions at once, 8 in a row, = 2048 sessions each, seed 0):

==============================================  ==============  ======================
policy                                          return (min)    clickbait cost / episode
==============================================  ==============  ======================
uniform random slates                           23.0            26.2
random slates without clickbait                 21.4            0.08
greedy engagement (argmax_A E[r | x, A])        28.4            48.0
top-2 by  v_i + β·clickbait_i,  β = 0.4         29.4            33.9
  — β = 0 (top-2 click probability)             28.9            25.6
  — β = −0.5                                    27.7            15.1
  — β = −1                                      26.2            7.3
quality filter, then greedy (no clickbait)      24.1            0.08
==============================================  ==============  ======================

Every engagement-seeking policy sits far above d = 10 (the greedy one shows clickbait in 48 of 60
slots; the best of the β family, 29.4, at 34), while the best clickbait-free policy keeps 82% of
that return: the feasible set is large (quality is observed, filtering is easy) but costs
engagement, so a reward maximizer violates the limit and a constrained one gives up some — not
all — of it. d = 10 sits between the filter and the unconstrained optimum, so the best feasible
policy mixes (about 26.7 on the β frontier): clickbait where it buys the most engagement. Learned
(``tests/test_safety_recommender.py``, 120k steps, 16 envs, γ = 0.9, seed 0, one core): PPO-Lag
ends at cost 9.9 / return 22.8 over its last 100 training episodes, unconstrained PPO at cost
30.5 / return 24.5 (it learns to *seek* clickbait: above random slates' 26). Both returns are well
below the frontier: the quality feature is learned at once, the click model (the distance between
x and each :math:`f_i`, through a flat MLP over all candidates) slowly.

**Why the twin and not the original RecSim** (``RecSimInterestEvolutionVectorEnv``). There
engagement is ``min(budget, length)`` whatever the quality and quality only refills the time
budget, so low quality is not attractive, it is merely common (70% of the topics): with 30-step
sessions the greedy policy's exposure (41.7 items, return 75.4) equals the random policy's (42.1)
and a quality filter costs 17% of the return, and with a tight budget the filter even *raises* the
return (62.0 vs 49.7 at a 60-minute budget) — the constraint would not bind. The twin's
:math:`\sigma(-q)` engagement is RecSim NG's own clickbait model: exactly the tension a
cap on exposure is about.

**Vectorization.** All N sessions step at once in torch (no Python loop over users), in
``SAME_STEP`` autoreset mode: a finished session's last observation is in ``info["final_obs"]`` and
its step info — cost included — in ``info["final_info"]`` (what :func:`safety.cmdp.read_costs`
reads). Seeded through ``reset(seed=...)`` (which also redraws the corpus), so
``make_vec_env("safety/Recommender-v0", n, seed)`` is reproducible. Throughput on one core (the
simulator alone, fixed slates): 37k env steps/s with 8 envs, 210k with 64, 440k with 256; PPO
trains at 7–8k steps/s with 16 envs (the policy's forward passes and updates dominate).
:class:`ClickbaitRecommenderEnv` is one session as a plain ``gymnasium.Env`` (what ``gymnasium.make``
builds, time limit by gymnasium's ``TimeLimit``), drawing the same random numbers as the batched env
with one session, so both give the same trajectories.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from pydantic import BaseModel

from core_rl.common.config import parse_config
from core_rl.common.errors import ConfigError
from recsys.simulation.config import InterestEvolutionConfig
from recsys.simulation.env import InterestEvolutionVectorEnv, SlateVectorEnv
from recsys.simulation.policies import best_myopic_slates

#: session length (steps) of the registered task
EPISODE_STEPS = 30
#: the suggested limit d on expected clickbait exposure per session
COST_LIMIT = 10.0
#: the task's simulator settings (any InterestEvolutionConfig field can be overridden)
TASK_DEFAULTS: dict[str, Any] = {"num_candidates": 10, "flat_observation": True, "choice_info": False}


class ClickbaitRecommenderVectorEnv(InterestEvolutionVectorEnv):
    """N user sessions of the clickbait-capped recommender CMDP, stepped together (see the module).

    ``clickbait_threshold`` is :math:`q_{min}`; ``max_episode_steps`` the session length (None:
    sessions never end); other keyword arguments override :data:`TASK_DEFAULTS` and the
    :class:`~recsys.simulation.InterestEvolutionConfig` defaults (``horizon`` excepted: use
    ``max_episode_steps``).
    """

    metadata: ClassVar[dict[str, Any]] = {**SlateVectorEnv.metadata, "cost_keys": ("cost", "cost_clickbait")}
    cost_keys: ClassVar[tuple[str, ...]] = ("cost", "cost_clickbait")

    def __init__(
        self,
        num_envs: int = 1,
        config: InterestEvolutionConfig | Mapping[str, Any] | None = None,
        seed: int | None = None,
        max_episode_steps: int | None = EPISODE_STEPS,
        clickbait_threshold: float = -0.5,
        **overrides: Any,
    ):
        if "horizon" in overrides or (isinstance(config, Mapping) and "horizon" in config):
            raise ConfigError("set the session length with 'max_episode_steps', not 'horizon'")
        if max_episode_steps is not None and int(max_episode_steps) < 1:
            raise ConfigError(f"max_episode_steps must be a positive integer or None, got {max_episode_steps}")
        if not np.isfinite(clickbait_threshold):
            raise ConfigError(f"clickbait_threshold must be a finite quality, got {clickbait_threshold}")
        base = config.model_dump() if isinstance(config, BaseModel) else dict(config or {})
        cfg = parse_config(InterestEvolutionConfig, {**TASK_DEFAULTS, **base}, **overrides)
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self.clickbait_threshold = float(clickbait_threshold)
        super().__init__(num_envs, cfg, seed)

    def _max_steps(self) -> int | None:
        return self.max_episode_steps

    def candidate_quality(self) -> torch.Tensor:
        """``[N, C]`` quality of the current candidates."""
        return self.corpus.quality[self.candidate_corpus_index()]

    def clickbait(self) -> torch.Tensor:
        """``[N, C]`` bool: which current candidates count as clickbait (quality below the threshold)."""
        return self.candidate_quality() < self.clickbait_threshold

    def _transition(self, slate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
        exposure = self.clickbait().gather(1, slate).sum(1).to(torch.float64)  # before the candidates move on
        reward, terminated, info = super()._transition(slate)
        info["cost_clickbait"] = exposure
        info["cost"] = exposure.clone()
        return reward, terminated, info


class ClickbaitRecommenderEnv(gym.Env):
    """One session of the task as a ``gymnasium.Env`` (the registered single-env entry point).

    Steps the one-session batched core without its autoreset; ``reset()`` starts the next user from
    the same random stream, so this env under ``SyncVectorEnv`` and the batched env with one
    session produce the same trajectories."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, **kwargs: Any):
        kwargs.pop("max_episode_steps", None)  # the time limit is gymnasium's TimeLimit here
        self.core = ClickbaitRecommenderVectorEnv(num_envs=1, max_episode_steps=None, **kwargs)
        self.observation_space = self.core.single_observation_space
        self.action_space = self.core.single_action_space
        self.metadata = {**type(self).metadata, "cost_keys": self.core.cost_keys}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        obs, _ = self.core.reset(seed=seed)
        return obs[0], {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        core = self.core
        with torch.no_grad():
            reward, terminated, step_info = core._transition(core._prepare_slate(np.asarray(action)[None]))
            obs = core._observe()[0]
        # entries are numpy arrays or tensors (subclasses add tensors); terminated None = no session ended
        info = {k: (np.asarray(v).item() if np.ndim(v) == 1 else np.array(v[0])) for k, v in step_info.items()}
        return obs, float(reward[0]), terminated is not None and bool(terminated[0]), False, info


# ---- reference policies (batched over the sessions of a ClickbaitRecommenderVectorEnv) ----------
def greedy_engagement_slates(env: ClickbaitRecommenderVectorEnv) -> np.ndarray:
    """``[N, K]``: the slate maximizing the expected immediate engagement :math:`\\sum_k P(k|x,A)\\,\\sigma(-q_{a_k})\\ell`."""
    logits, no_click, engagement = env.choice_scores()
    return best_myopic_slates(logits, no_click, engagement, env.slate_size).cpu().numpy()


def quality_filtered_slates(env: ClickbaitRecommenderVectorEnv) -> np.ndarray:
    """``[N, K]``: the greedy-engagement slate among the candidates that are not clickbait (clickbait
    only where fewer than K others exist)."""
    logits, no_click, engagement = env.choice_scores()
    bad = env.clickbait()
    return (
        best_myopic_slates(logits.masked_fill(bad, -30.0), no_click, engagement.masked_fill(bad, 0.0), env.slate_size)
        .cpu()
        .numpy()
    )


__all__ = [
    "ClickbaitRecommenderVectorEnv",
    "ClickbaitRecommenderEnv",
    "EPISODE_STEPS",
    "COST_LIMIT",
    "TASK_DEFAULTS",
    "greedy_engagement_slates",
    "quality_filtered_slates",
]
