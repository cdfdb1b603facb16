"""Tabular foundations of the notes: Markov chains and MDPs (9/5) and dynamic programming (9/12).

Self-contained exact tools (not agents): :class:`MarkovChain` (``T[i, j] = p(s'=i | s=j)``),
:class:`TabularMDP` (notes' ``T[i, j, k] = p(s'=i | s=j, a=k)``, stored as ``P[s, a, s']``) and the
solvers policy evaluation, value iteration, Q iteration, policy iteration and backward induction;
:func:`gridworld` builds episodic MDPs (terminal goal and hole cells) from text layouts.
"""

from core_rl.tabular.dynamic_programming import (
    DPResult,
    FiniteHorizonResult,
    SolverSettings,
    backward_induction,
    bellman_operator,
    policy_evaluation,
    policy_iteration,
    proper_policy,
    q_iteration,
    value_iteration,
)
from core_rl.tabular.gridworld import LAYOUTS, Gridworld, GridworldConfig, gridworld
from core_rl.tabular.markov_chain import MarkovChain, PowerIterationResult
from core_rl.tabular.mdp import TabularMDP, Trajectories

__all__ = [
    "MarkovChain",
    "PowerIterationResult",
    "TabularMDP",
    "Trajectories",
    "DPResult",
    "FiniteHorizonResult",
    "SolverSettings",
    "bellman_operator",
    "policy_evaluation",
    "value_iteration",
    "q_iteration",
    "policy_iteration",
    "proper_policy",
    "backward_induction",
    "LAYOUTS",
    "Gridworld",
    "GridworldConfig",
    "gridworld",
]
