r"""Parts: the components an agent is composed of, called by the base classes at fixed points.

An algorithm of the notes is its base algorithm plus a few components — a critic of another signal
(the cost value function :math:`V^c_\psi`), a dual variable (the Lagrange multiplier λ of a CMDP), a
wrapper around the env (a cost monitor, a safety layer, a state augmentation). Rather than override
the base's hooks, and copy those overrides into every agent that needs the same component, an agent
*declares* its parts (``part_types``, each built as ``PartType(config)``, or
:meth:`~core_rl.common.base.Agent._make_parts`) and the bases call every part,
in the declared order, at the points of the notes' anatomy of an RL algorithm:

* construction: :meth:`Part.wrap_env` (once for the training env, once per evaluation env, before
  the spaces are read), then :meth:`Part.build` once the agent's own networks exist
  (:meth:`~core_rl.common.base.Agent._build`) — a part creates its networks there;
* one iteration of an on-policy agent (:class:`~core_rl.common.on_policy.OnPolicyAgent`), *generate
  samples*: :meth:`Part.rollout_begin` before the first env step, :meth:`Part.rollout_batch` on the
  finished :class:`~core_rl.common.buffers.RolloutBatch` (extra fields, e.g. the costs :math:`c_t`);
  *estimate the return*: :meth:`Part.estimate` after :math:`\hat A_t` and :math:`\hat R_t` (e.g. GAE on
  costs); *improve the policy*: :meth:`Part.before_update` (e.g. the dual step on λ and the
  Lagrangian's advantage the update then sees) and :meth:`Part.after_update` (e.g. the regression of
  :math:`V^c_\psi`), whose metrics join the update's;
* after every iteration of any agent: :meth:`Part.iteration_metrics`;
* checkpoints: :meth:`Part.modules` (kept under their own names beside the agent's modules) and
  :meth:`Part.state` / :meth:`Part.load_state` (plain bookkeeping, e.g. a cost monitor's totals).

Every method is a no-op here; a part overrides the ones it needs. An agent without parts (the
default, ``()``) pays for one loop over an empty tuple per call site, never per env step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from gymnasium.vector import VectorEnv
from torch import nn

if TYPE_CHECKING:
    from core_rl.common.base import Agent
    from core_rl.common.buffers import RolloutBatch
    from core_rl.common.on_policy import OnPolicyAgent

Metrics = dict[str, float]


class Part:
    """A component of an agent, called by the agent's base classes (every method a no-op here); built
    from the agent's (validated) config."""

    def __init__(self, config: Any):
        self.config = config

    def wrap_env(self, env: VectorEnv, training: bool) -> VectorEnv:
        """Wrap the vector env the agent trains on (``training``) or is evaluated on; before ``build``."""
        return env

    def build(self, agent: "Agent") -> None:
        """Create networks and optimizers, once the agent's spaces and own networks exist."""

    def rollout_begin(self, agent: "OnPolicyAgent") -> None:
        """Before the first env step of an on-policy rollout."""

    def rollout_batch(self, agent: "OnPolicyAgent", batch: "RolloutBatch") -> "RolloutBatch":
        """The finished rollout's batch, with this part's fields attached."""
        return batch

    def estimate(self, agent: "OnPolicyAgent", batch: "RolloutBatch") -> "RolloutBatch":
        """After the agent's advantage estimation: this part's estimates added to ``batch``."""
        return batch

    def before_update(self, agent: "OnPolicyAgent", batch: "RolloutBatch") -> Metrics:
        """Before the agent's update on ``batch`` (which it may change); metrics for the iteration."""
        return {}

    def after_update(self, agent: "OnPolicyAgent", batch: "RolloutBatch") -> Metrics:
        """After the agent's update on ``batch``; metrics for the iteration."""
        return {}

    def iteration_metrics(self, agent: "Agent", metrics: Metrics) -> Metrics:
        """An iteration's metrics, with this part's added."""
        return metrics

    def modules(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        """What a checkpoint keeps of this part, by name (names unique among the agent's modules)."""
        return {}

    def state(self) -> dict[str, Any]:
        """Plain values a checkpoint keeps besides :meth:`modules` (numbers, strings, lists, tensors; no NumPy
        arrays: checkpoints load with ``weights_only``): a resumed run continues this part's bookkeeping."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned (an empty dict for a checkpoint saved without it)."""
