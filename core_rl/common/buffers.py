"""Storage shared by the algorithms: the on-policy rollout buffer (off-policy replay comes with
the Q-learning family, :mod:`core_rl.common.replay`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

import numpy as np
import torch


@dataclass
class RolloutBatch:
    """T steps of N envs, every tensor ``[T, N, ...]``.

    ``rewards`` already include γV(final_obs) on truncated steps, so that estimators treat a time
    limit as the end of the data, not of the task. ``valid`` masks steps that belong to the
    gradient estimate (all ones unless whole-episode collection kept stepping finished envs).

    Costs, for constrained MDPs (as OmniSafe's buffers carry them), are optional fields, None
    unless a safe agent's cost critic fills them (:mod:`safety.on_policy`): the step costs
    ``costs`` ``[T, N, K]`` (γ_c V^c(final_obs) folded in on truncated steps, like the rewards),
    ``cost_values`` V^c(s_t) ``[T, N, K]``, ``last_cost_value`` V^c(s_T) ``[N, K]``, the estimator's
    ``cost_advantages`` and ``cost_returns`` ``[T, N, K]``, and ``episode_costs`` ``[E, K]``, the
    episodic costs of the episodes that finished during the rollout. Unconstrained agents never
    touch them.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    episode_starts: torch.Tensor
    values: torch.Tensor
    valid: torch.Tensor
    last_value: torch.Tensor
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    costs: torch.Tensor | None = None
    cost_values: torch.Tensor | None = None
    last_cost_value: torch.Tensor | None = None
    cost_advantages: torch.Tensor | None = None
    cost_returns: torch.Tensor | None = None
    episode_costs: np.ndarray | None = None

    @property
    def n_steps(self) -> int:
        return int(self.rewards.shape[0])

    def masked(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, N, ...]`` → the valid steps, ``[B, ...]``, in the order of :meth:`flat`."""
        return x.reshape(-1, *x.shape[2:])[self.valid.reshape(-1).bool()]

    def flat(self) -> "FlatBatch":
        """Valid steps only, flattened to ``[B, ...]`` (views of the rollout's tensors where every step is valid)."""
        mask = self.valid.reshape(-1).bool()
        every = bool(mask.all())

        def f(x: torch.Tensor | None) -> torch.Tensor | None:
            if x is None:
                return None
            flat = x.reshape(-1, *x.shape[2:])
            return flat if every else flat[mask]

        return FlatBatch(
            obs=f(self.obs),
            actions=f(self.actions),
            log_probs=f(self.log_probs),
            advantages=f(self.advantages),
            returns=f(self.returns),
            values=f(self.values),
        )


@dataclass
class FlatBatch:
    obs: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    advantages: torch.Tensor | None
    returns: torch.Tensor | None
    values: torch.Tensor

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    def minibatches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator["FlatBatch"]:
        n = len(self)
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            yield FlatBatch(
                **{
                    f.name: (getattr(self, f.name)[idx] if getattr(self, f.name) is not None else None)
                    for f in fields(self)
                }
            )
