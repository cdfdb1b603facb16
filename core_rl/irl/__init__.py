"""Inverse RL (notes 10/12): learn the reward from demonstrations, then the policy from the reward.

Feature matching / max-margin IRL (:mod:`core_rl.irl.max_margin`), exact tabular MaxEnt IRL and
guided cost learning (:mod:`core_rl.irl.maxent_irl`), adversarial imitation — GAIL and AIRL — as
an agent (:mod:`core_rl.irl.gail`).
"""

from core_rl.irl.features import (
    check_features,
    empirical_policy,
    empirical_visitation,
    expert_visitation,
    feature_expectations,
)
from core_rl.irl.gail import GAIL, Discriminator, GAILConfig, RewardRelabel
from core_rl.irl.learned_reward import TabularRewardWrapper
from core_rl.irl.max_margin import MaxMarginConfig, MaxMarginResult, max_margin_irl
from core_rl.irl.maxent_irl import (
    FeatureReward,
    GCLConfig,
    GCLResult,
    MaxEntIRLConfig,
    MaxEntIRLResult,
    gcl_reward_loss,
    guided_cost_learning,
    importance_weights,
    maxent_irl,
)

__all__ = [
    "GAIL",
    "GAILConfig",
    "Discriminator",
    "RewardRelabel",
    "TabularRewardWrapper",
    "check_features",
    "empirical_policy",
    "empirical_visitation",
    "expert_visitation",
    "feature_expectations",
    "MaxMarginConfig",
    "MaxMarginResult",
    "max_margin_irl",
    "FeatureReward",
    "GCLConfig",
    "GCLResult",
    "MaxEntIRLConfig",
    "MaxEntIRLResult",
    "gcl_reward_loss",
    "guided_cost_learning",
    "importance_weights",
    "maxent_irl",
]
