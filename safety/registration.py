"""The safety app as a deeprl-suite plugin: its agents and its env-id namespace.

Named by the ``deeprl_suite.plugins`` entry point in ``pyproject.toml``; :mod:`core_rl.registry`
reads it on first use, so ``deeprl train --algo ppo_lag --env safety/PointGoal-v0`` works while the
core names no safety class. Importing this module imports no agent (targets resolve lazily).
"""

from core_rl.registry import AlgoSpec

ALGORITHMS: list[AlgoSpec] = [
    AlgoSpec(
        "ppo_unconstrained",
        "safety.unconstrained:UnconstrainedPPO",
        "11/7-14 safety: PPO ignoring costs but logging them (baseline)",
        learns="safety/PointGoal-v0 return >15 in 41k steps (cost over the limit)",
    ),
    AlgoSpec(
        "ppo_lag",
        "safety.ppo_lag:PPOLag",
        "11/7-14 safety: PPO-Lagrangian (dual ascent on λ, 9/19)",
        learns="safety/PointGoal-v0 return >15 at cost <=5 in 82k steps",
    ),
    AlgoSpec(
        "pid_lag",
        "safety.ppo_lag:PIDLag",
        "11/7-14 safety: PPO with the PID Lagrangian",
        learns="safety/PointGoal-v0 return >15 at cost <=5 in 102k steps",
    ),
    AlgoSpec(
        "trpo_lag",
        "safety.trpo_lag:TRPOLag",
        "11/7-14 safety: TRPO-Lagrangian",
        learns="safety/PointGoal-v0 return >15 at cost <=5 in 82k steps",
    ),
    AlgoSpec(
        "cpo",
        "safety.cpo:CPO",
        "11/7-14 safety: constrained policy optimization (TRPO + linearized cost constraint)",
        learns="safety/PointGoal-v0 return >15 at cost <=5 in 72k steps",
    ),
    AlgoSpec(
        "saute_ppo",
        "safety.saute:Saute",
        "11/7-14 safety: Saute state augmentation with the remaining budget (PPO)",
        learns="safety/PointGoal-v0 return >15 at cost <=5 in 143k steps",
    ),
    AlgoSpec(
        "shield_ppo_lag",
        "safety.shield:ShieldedPPOLag",
        "11/7-14 safety: PPO-Lag behind a learned safety layer",
        learns="safety/PointGoal-v0 return >5, 5x fewer violations, in 31k steps",
    ),
    AlgoSpec("sac_lag", "safety.sac_lag:SACLag", "11/7-14 safety: SAC-Lagrangian (pessimistic cost critic)"),
    AlgoSpec(
        "safe_mpc",
        "safety.model_based:SafeMPC",
        "11/7-14 safety: PETS planning with an ensemble's pessimistic cost",
        learns="safety/PointGoal-v0 far fewer violations than unconstrained in 2.4k steps",
    ),
]

#: ``safety/...``: our CMDP tasks; ``safety-gymnasium/<Task>``: Safety-Gymnasium's, in child processes
ENV_NAMESPACES: dict[str, str] = {"safety": "safety", "safety-gymnasium": "safety.safety_gymnasium"}
