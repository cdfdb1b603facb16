"""Simulated users for slate recommendation: a torch twin of RecSim NG's interest evolution, and
the original RecSim interest-evolution environment, as gymnasium vector envs with slate actions.

Public API (stable; see ``docs/recsys_simulation.md``):

=====================================================  ==============================================
``InterestEvolutionVectorEnv(num_envs, config, seed,    the RecSim NG twin (``recsys/InterestEvolution-v0``)
corpus=None, **overrides)``
``RecSimInterestEvolutionVectorEnv(num_envs, config,    original RecSim / SlateQ setting
seed, **overrides)``                                    (``recsys/RecSimInterestEvolution-v0``)
``InterestEvolutionConfig`` /                           their pydantic configs
``RecSimInterestEvolutionConfig``
``Corpus``, ``sample_ng_corpus``                        the NG document table (to/from pandas)
``slate_choice_probabilities``,                         choice-model maths on logits (for learners)
``expected_slate_engagement``, ``ng_choice_logits``,
``recsim_choice_logits``, ``ng_step``,
``ng_step_slate_table``, ``ng_slate_table``
``LinearScoringPolicy``,                                reference policies
``RandomSlatePolicy``, ``best_myopic_slates``,
``train_linear_policy_cem``, ``rollout_engagement``
=====================================================  ==============================================

Importing ``recsys`` (or this package) registers the two ids with gymnasium, each with an
``entry_point`` (one session as a ``gymnasium.Env``) and a ``vector_entry_point`` (the batched env,
which ``gymnasium.make_vec(id, n, vectorization_mode="vector_entry_point")`` and
``core_rl.common.envs.make_vec_env`` use).
"""

from __future__ import annotations

import gymnasium as gym

from recsys.simulation.config import InterestEvolutionConfig, RecSimInterestEvolutionConfig
from recsys.simulation.corpus import Corpus, sample_ng_corpus, sample_recsim_documents, topic_quality_means
from recsys.simulation.env import (
    InterestEvolutionEnv,
    InterestEvolutionVectorEnv,
    RecSimInterestEvolutionEnv,
    RecSimInterestEvolutionVectorEnv,
    SlateVectorEnv,
)
from recsys.simulation.policies import (
    LinearScoringPolicy,
    RandomSlatePolicy,
    best_myopic_slates,
    enumerate_slates,
    random_slates,
    rollout_engagement,
    train_linear_policy_cem,
)
from recsys.simulation.user_model import (
    expected_slate_engagement,
    gather_slate,
    ng_choice_logits,
    ng_consumed_time,
    ng_next_interest,
    ng_slate_table,
    ng_squash,
    ng_step,
    ng_step_slate_table,
    ng_step_users_last,
    recsim_choice_logits,
    recsim_update,
    sample_choice,
    slate_choice_probabilities,
)

#: id -> (single env class, vector env class)
ENV_IDS: dict[str, tuple[type, type]] = {
    "recsys/InterestEvolution-v0": (InterestEvolutionEnv, InterestEvolutionVectorEnv),
    "recsys/RecSimInterestEvolution-v0": (RecSimInterestEvolutionEnv, RecSimInterestEvolutionVectorEnv),
}


def register_envs() -> None:
    """Register every id with gymnasium (idempotent)."""
    for env_id, (single, vector) in ENV_IDS.items():
        if env_id in gym.envs.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=f"{single.__module__}:{single.__name__}",
            vector_entry_point=f"{vector.__module__}:{vector.__name__}",
        )


register_envs()

__all__ = [
    "ENV_IDS",
    "register_envs",
    "InterestEvolutionConfig",
    "RecSimInterestEvolutionConfig",
    "Corpus",
    "sample_ng_corpus",
    "sample_recsim_documents",
    "topic_quality_means",
    "SlateVectorEnv",
    "InterestEvolutionVectorEnv",
    "RecSimInterestEvolutionVectorEnv",
    "InterestEvolutionEnv",
    "RecSimInterestEvolutionEnv",
    "LinearScoringPolicy",
    "RandomSlatePolicy",
    "best_myopic_slates",
    "enumerate_slates",
    "random_slates",
    "ng_step_users_last",
    "ng_step_slate_table",
    "ng_slate_table",
    "rollout_engagement",
    "train_linear_policy_cem",
    "expected_slate_engagement",
    "gather_slate",
    "ng_choice_logits",
    "ng_consumed_time",
    "ng_next_interest",
    "ng_squash",
    "ng_step",
    "recsim_choice_logits",
    "recsim_update",
    "sample_choice",
    "slate_choice_probabilities",
]
