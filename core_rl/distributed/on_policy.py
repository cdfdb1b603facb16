r"""Distributed on-policy learning (notes 10/31): W rollout workers, one learner (synchronous, A2C/PPO-style).

Sampling is the bottleneck of on-policy RL ("run the policy to generate samples"), and it is
embarrassingly parallel. Each iteration

1. the learner broadcasts :math:`\theta, \phi` (one object in Ray's store, read by every worker);
2. worker w runs :math:`\pi_\theta` in its k env copies for T steps and returns a RolloutBatch
   ``[T, k]`` (log π, V_φ, rewards with the truncation bootstrap — the base agent's own ``collect``);
3. the learner concatenates the W batches along the env axis into one ``[T, W·k]`` batch, estimates
   advantages and takes the base algorithm's update (PPO's clipped epochs, A2C's step) unchanged.

**Same numbers as the local run.** Worker w seeds its envs ``seed + w·k + j`` (as a local vector
env of W·k envs does), and the learner draws the action-sampling noise of every step from its
own torch generator exactly as the local ``collect`` would (``rand`` of ``[W·k, |A|]`` for the
Gumbel-max categorical, ``randn`` of ``[W·k, d]`` for the Gaussian) and hands worker w its columns.
Same seed ⇒ the same actions, batches, updates and returns as :class:`~core_rl.trust_region.ppo.PPO`
/ :class:`~core_rl.actor_critic.actor_critic.A2C` with ``n_envs = W·k`` (bitwise, as long as a
network's per-row outputs do not depend on the batch size, which holds for CPU matmuls of ≥ 2
rows). Whole-episode collection (``collect_mode='episodes'``) lets each worker decide when its
episodes are done, so it is not bitwise-equal; running observation/reward normalization would need
synchronized statistics and is refused.

``backend='ray'`` runs the workers as Ray actors (``ray.init()`` locally, or the cluster at
``ray_address`` / ``$RAY_ADDRESS``); ``backend='local'`` runs the same worker objects in this process
(no Ray needed; useful for tests and debugging); ``n_workers=0`` is the base algorithm.

Example (two in-process workers of 4 CartPole-v1 envs each reproduce PPO on 8 envs episode for
episode)::

    >>> from core_rl.trust_region.ppo import PPO
    >>> settings = {"n_envs": 8, "n_steps": 32, "seed": 0}
    >>> local = PPO("CartPole-v1", settings).learn(2048)
    >>> distributed = DistributedPPO("CartPole-v1", {**settings, "n_workers": 2, "backend": "local"}).learn(2048)
    >>> list(distributed.episode_returns) == list(local.episode_returns), distributed.episodes_done > 20
    (True, True)
    >>> distributed.close()
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field, model_validator

from core_rl.actor_critic.actor_critic import A2C, A2CConfig
from core_rl.common.base import Agent
from core_rl.common.buffers import RolloutBatch
from core_rl.common.errors import WorkerLost
from core_rl.distributed.workers import (
    RolloutWorker,
    WorkerGroup,
    check_shippable,
    class_target,
    env_module,
    merge_episodes,
)
from core_rl.trust_region.ppo import PPO, PPOConfig


class DistributedFields(BaseModel):
    """Fields of every distributed agent config."""

    n_workers: int = Field(2, ge=0, description="Rollout workers (0: collect in this process).")
    backend: Literal["ray", "local"] = Field("ray", description="Ray actors, or the same workers in-process.")
    ray_address: str | None = Field(None, description="Ray cluster address (default: $RAY_ADDRESS, else local).")
    worker_cpus: float = Field(1.0, gt=0.0, description="CPUs Ray reserves per worker.")
    worker_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources each worker needs, e.g. {'rollout_node': 1}: workers go only to "
        "nodes started with them (ray start --resources='{\"rollout_node\": 4}').",
    )

    @model_validator(mode="after")
    def _resources(self) -> "DistributedFields":
        for name, amount in self.worker_resources.items():
            if not name or amount <= 0:
                raise ValueError(f"worker_resources: '{name}' needs a positive amount, got {amount}")
            if name in ("CPU", "GPU", "memory"):
                raise ValueError(f"worker_resources: '{name}' is not a custom resource (use worker_cpus)")
        return self


class DistributedOnPolicyConfig(DistributedFields):
    exact_batches: bool = Field(
        True,
        description="Recompute log π, V and bootstraps on the learner with the local "
        "run's tensor shapes (bit-identical to the local run; T small forward passes).",
    )

    @model_validator(mode="after")
    def _split(self) -> "DistributedOnPolicyConfig":
        n_envs = getattr(self, "n_envs", 1)
        if self.n_workers > 0:
            if n_envs % self.n_workers:
                raise ValueError(f"n_envs={n_envs} must be a multiple of n_workers={self.n_workers}")
            if getattr(self, "normalize_obs", False) or getattr(self, "normalize_reward", False):
                raise ValueError(
                    "normalize_obs / normalize_reward are not supported with n_workers > 0 "
                    "(their running statistics would differ per worker)"
                )
        return self


class DistributedOnPolicyMixin:
    """Put before an on-policy algorithm: its ``collect`` gathers from W workers (module docstring)."""

    #: the single-process algorithm the workers run (the first base class after the mixin)
    base_algo: ClassVar[type]
    config: Any
    #: the workers' sampling draws i.i.d. Gaussian noise: no gSDE
    supports_sde: ClassVar[bool] = False
    #: the workers' noise-driven sampling covers Categorical and Gaussian heads only
    action_spaces: ClassVar[tuple[type, ...]] = Agent.action_spaces

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.base_algo = next(
            c for c in cls.__mro__[1:] if issubclass(c, Agent) and not issubclass(c, DistributedOnPolicyMixin)
        )

    @property
    def envs_per_worker(self) -> int:
        return self.n_envs // max(1, self.config.n_workers)  # type: ignore[attr-defined]

    def _base_config(self) -> dict[str, Any]:
        fields = self.base_algo.config_cls.model_fields
        return {k: v for k, v in self.config.model_dump().items() if k in fields}

    def _start_workers(self) -> WorkerGroup:
        group = getattr(self, "_workers", None)
        if group is not None:
            return group
        cfg = self.config
        source = self._env_source  # type: ignore[attr-defined]
        check_shippable(source)
        k = self.envs_per_worker
        args = [
            (class_target(self.base_algo), source, self._base_config(), w, k, env_module(source))
            for w in range(cfg.n_workers)
        ]
        self._workers = WorkerGroup(
            RolloutWorker, args, cfg.backend, cfg.ray_address, cfg.worker_cpus, cfg.worker_resources
        )
        return self._workers

    def _draw_noise(self) -> torch.Tensor | None:
        """The noise the local ``collect`` would draw, step by step, from the global generator."""
        if self.collect_mode != "steps":  # type: ignore[attr-defined]
            return None
        N, T = self.n_envs, self.config.n_steps  # type: ignore[attr-defined]
        policy = self.policy  # type: ignore[attr-defined]
        if policy.discrete:
            n_actions = int(self.action_space.n)  # type: ignore[attr-defined]
            return torch.stack([torch.rand(N, n_actions) for _ in range(T)])
        dim = int(torch.tensor(self.action_space.shape).prod())  # type: ignore[attr-defined]
        return torch.stack([torch.randn(N, dim) for _ in range(T)])

    def _weights(self) -> dict[str, dict[str, torch.Tensor]]:
        out = {"policy": {k: v.detach().cpu().clone() for k, v in self.policy.state_dict().items()}}  # type: ignore
        if self.value is not None:  # type: ignore[attr-defined]
            out["value"] = {k: v.detach().cpu().clone() for k, v in self.value.state_dict().items()}  # type: ignore
        return out

    def collect(self) -> RolloutBatch:
        if self.config.n_workers == 0:
            return super().collect()  # type: ignore[misc]
        group = self._start_workers()
        k = self.envs_per_worker
        rng = torch.get_rng_state()
        noise = self._draw_noise()
        weights = group.share(self._weights())
        try:
            parts = group.call(
                "collect",
                [(weights, None if noise is None else noise[:, w * k : (w + 1) * k]) for w in range(len(group))],
            )
        except WorkerLost:
            torch.set_rng_state(rng)  # the checkpoint keeps the stream of the last complete iteration
            raise
        batches = [p["batch"] for p in parts]
        cat = lambda name, dim: torch.cat([getattr(b, name) for b in batches], dim).to(self.device)  # type: ignore # noqa: E731
        batch = RolloutBatch(
            obs=cat("obs", 1),
            actions=cat("actions", 1),
            log_probs=cat("log_probs", 1),
            rewards=cat("rewards", 1),
            dones=cat("dones", 1),
            episode_starts=cat("episode_starts", 1),
            values=cat("values", 1),
            valid=cat("valid", 1),
            last_value=cat("last_value", 0),
        )
        if self.config.exact_batches and noise is not None:
            self._recompute(batch, [p["steps"] for p in parts], np.concatenate([p["last_obs"] for p in parts]), noise)
        for ret, length in merge_episodes([p["episodes"] for p in parts], k):
            self.episode_returns.append(ret)  # type: ignore[attr-defined]
            self.episode_lengths.append(length)  # type: ignore[attr-defined]
            self.episodes_done += 1  # type: ignore[attr-defined]
        self.num_timesteps += int(batch.rewards.shape[0] * batch.rewards.shape[1])  # type: ignore[attr-defined]
        return batch

    @torch.no_grad()
    def _recompute(
        self,
        batch: RolloutBatch,
        steps: list[list[tuple[Any, Any, list[Any]]]],
        last_obs: np.ndarray,
        noise: torch.Tensor,
    ) -> None:
        """Redo log π, V, the truncation bootstrap and V(s_T) with the learner's weights, one step of all
        W·k envs at a time: the same shapes and the same code (NumPy where the local rollout acts in NumPy,
        with the same noise), hence the same bits, as the local ``collect``."""
        gamma = self.config.gamma
        self._given_noise = noise
        try:
            actor = self._numpy_actor(batch.n_steps)  # type: ignore[attr-defined]
        finally:
            self._given_noise = None
        for t in range(batch.n_steps):
            obs_t = batch.obs[t]
            if actor is not None:
                _, log_probs, values = actor.act(obs_t.numpy())
                batch.log_probs[t], batch.values[t] = torch.from_numpy(log_probs), torch.from_numpy(values)
            else:
                batch.log_probs[t] = self.policy.distribution(obs_t).log_prob(batch.actions[t])  # type: ignore
                batch.values[t] = self._value_of(obs_t)  # type: ignore[attr-defined]
            rewards = np.concatenate([part[t][0] for part in steps]).astype(np.float32)
            bootstrap = np.concatenate([part[t][1] for part in steps])
            if bootstrap.any() and self.value is not None:  # type: ignore[attr-defined]
                final_obs = np.stack([o for part in steps for o in part[t][2]])
                rewards[bootstrap] += gamma * self._value_of(self._obs_tensor(final_obs)).cpu().numpy()  # type: ignore
            batch.rewards[t] = torch.as_tensor(rewards)
        batch.last_value = (self._value_of(self._obs_tensor(last_obs)) * torch.as_tensor(1.0)).float()  # type: ignore

    def close(self) -> None:
        group = getattr(self, "_workers", None)
        if group is not None:
            group.close()
            self._workers = None
        super().close()  # type: ignore[misc]


class DistributedPPOConfig(PPOConfig, DistributedOnPolicyConfig):
    pass


class DistributedPPO(DistributedOnPolicyMixin, PPO):
    """PPO whose rollouts come from W workers (Ray or in-process); same seed ⇒ same run as PPO."""

    name = "distributed_ppo"
    config: DistributedPPOConfig
    config_cls = DistributedPPOConfig


class DistributedA2CConfig(A2CConfig, DistributedOnPolicyConfig):
    pass


class DistributedA2C(DistributedOnPolicyMixin, A2C):
    """A2C whose rollouts come from W workers (Ray or in-process); same seed ⇒ same run as A2C."""

    name = "distributed_a2c"
    config: DistributedA2CConfig
    config_cls = DistributedA2CConfig


__all__ = [
    "DistributedFields",
    "DistributedOnPolicyMixin",
    "DistributedPPO",
    "DistributedPPOConfig",
    "DistributedA2C",
    "DistributedA2CConfig",
]
