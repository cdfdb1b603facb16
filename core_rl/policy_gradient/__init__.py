"""The policy-gradient family (notes 9/5): REINFORCE with causality and baselines, and the
off-policy policy gradient with importance sampling."""

from core_rl.policy_gradient.offpolicy_pg import OffPolicyPG, OffPolicyPGConfig
from core_rl.policy_gradient.reinforce import REINFORCE, EpisodeBatch, REINFORCEConfig, log_prob_grads

__all__ = ["REINFORCE", "REINFORCEConfig", "OffPolicyPG", "OffPolicyPGConfig", "EpisodeBatch", "log_prob_grads"]
