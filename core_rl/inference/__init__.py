"""Control as inference (notes 10/10): optimality variables, backward/forward messages, soft value
iteration and the soft-optimal policy on tabular MDPs; soft Q-learning (MaxEnt RL) as an agent."""

from core_rl.inference.control_as_inference import (
    ForwardMessages,
    SoftVIResult,
    backward_messages,
    forward_messages,
    posterior_dynamics,
    soft_expectation,
    soft_max,
    soft_value_iteration,
    soft_visitation,
)

__all__ = [
    "ForwardMessages",
    "SoftVIResult",
    "backward_messages",
    "forward_messages",
    "posterior_dynamics",
    "soft_expectation",
    "soft_max",
    "soft_value_iteration",
    "soft_visitation",
]
