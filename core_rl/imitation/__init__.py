"""Imitation learning (notes 9/5–9/7, 10/5): demonstration tables, behavior cloning with heads for
the notes' failure modes (non-Markovian and multimodal experts), DAgger, and the compounding-error
experiment (BC's O(εT²) against DAgger's O(εT))."""

from core_rl.imitation.behavior_cloning import BCConfig, BehaviorCloning, PolicyActor
from core_rl.imitation.dagger import DAgger, DAggerConfig
from core_rl.imitation.demonstrations import (
    DataError,
    Demonstrations,
    collect_demonstrations,
    evaluate_actor,
    load_demonstrations,
    rollout,
)
from core_rl.imitation.experts import CARTPOLE_EXPERT_WEIGHTS, SCRIPTED_EXPERTS, cartpole_expert, load_expert
from core_rl.imitation.policies import (
    AutoregressiveDiscretePolicy,
    ImitationPolicy,
    LatentVariablePolicy,
    MixtureGaussianPolicy,
    MLPPolicy,
    RecurrentPolicy,
    make_policy,
)

__all__ = [
    "BCConfig",
    "BehaviorCloning",
    "PolicyActor",
    "DAgger",
    "DAggerConfig",
    "DataError",
    "Demonstrations",
    "collect_demonstrations",
    "evaluate_actor",
    "load_demonstrations",
    "rollout",
    "ImitationPolicy",
    "MLPPolicy",
    "RecurrentPolicy",
    "MixtureGaussianPolicy",
    "LatentVariablePolicy",
    "AutoregressiveDiscretePolicy",
    "make_policy",
    "CARTPOLE_EXPERT_WEIGHTS",
    "SCRIPTED_EXPERTS",
    "cartpole_expert",
    "load_expert",
]
