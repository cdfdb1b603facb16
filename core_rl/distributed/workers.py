"""Workers that hold env copies and a policy copy, in Ray actors or in the learner's process.

Each worker builds an ordinary single-process agent of the base algorithm (PPO, A2C, DQN) over
its share of the envs and uses that agent's own sampling code; only the transport is new.

Seeding: worker w of W, holding k envs, seeds its envs with ``seed + w·k + j`` (j = 0..k−1),
exactly the seeds a local vector env of W·k envs gives its envs (gymnasium seeds env i with
``seed + i``), so every env follows the same trajectory of states as in the local run.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv, VectorWrapper

from core_rl.common.base import Agent
from core_rl.common.distributions import Categorical, DiagGaussian
from core_rl.common.errors import ConfigError, WorkerLost
from core_rl.distributed.ray_utils import RNGState, init_ray

# how long a lost worker's node is watched for Ray to declare it dead (Ray's default health check
# declares a dead node after about 5 x 3 s); paid only when a run is already stopping
NODE_DEATH_WAIT_S = 20.0


def load_class(target: str) -> type[Agent]:
    """``"module:Class"`` → the class."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def class_target(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def env_module(env: Any) -> str | None:
    """The module that registers a gymnasium id (imported by remote workers before ``gym.make``)."""
    if isinstance(env, str):
        spec = gym.spec(env.split(":")[-1])
        entry = spec.entry_point
        return entry.split(":")[0] if isinstance(entry, str) else None
    return None


def check_shippable(env: Any) -> None:
    if not (isinstance(env, str) or callable(env)) or isinstance(env, (gym.Env, gym.vector.VectorEnv)):
        raise ConfigError(
            "distributed agents need the env as a registered id or a zero-argument factory "
            f"(workers build their own copies), got {type(env).__name__}"
        )


class _EpisodeRecorder:
    """Mixin for a worker's agent: records (step, env, return, length) of every finished episode."""

    records: list[tuple[int, int, float, int]]
    _step_counter: int

    def _track_episodes(self, rewards: np.ndarray, dones: np.ndarray, info: dict[str, Any] | None = None) -> None:
        if not hasattr(self, "records"):
            self.records, self._step_counter = [], 0
        for i in np.flatnonzero(dones):
            self.records.append(
                (
                    self._step_counter,
                    int(i),
                    float(self._ep_return[i] + rewards[i]),  # type: ignore
                    int(self._ep_length[i] + 1),
                )
            )  # type: ignore[attr-defined]
        self._step_counter += 1
        super()._track_episodes(rewards, dones, info)  # type: ignore[misc]

    def pop_records(self) -> list[tuple[int, int, float, int]]:
        out = getattr(self, "records", [])
        self.records = []
        return out


def _recording(cls: type[Agent]) -> type[Agent]:
    return type(f"{cls.__name__}Worker", (_EpisodeRecorder, cls), {"__module__": __name__})


class _GivenNoise:
    """Wraps a distribution: ``sample`` uses noise drawn by the learner, everything else delegates."""

    def __init__(self, dist: Categorical | DiagGaussian, noise: torch.Tensor):
        self.dist, self.noise = dist, noise

    def sample(self) -> torch.Tensor:
        d = self.dist
        if isinstance(d, Categorical):  # the same ops as Categorical.sample with u given
            u = self.noise.clamp(1e-20, 1.0)
            return (d.logits - torch.log(-torch.log(u))).argmax(-1)
        with torch.no_grad():  # DiagGaussian.sample with ε given
            return d.mean + d.log_std.exp() * self.noise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.dist, name)


class _NoisePolicy:
    """A stand-in for ``agent.policy`` during one ``collect``: step t samples with ``noise[t]``."""

    def __init__(self, policy: torch.nn.Module, noise: torch.Tensor):
        self.policy, self.noise, self.t = policy, noise, 0

    def distribution(self, obs: torch.Tensor) -> _GivenNoise:
        dist = self.policy.distribution(obs)
        eps = self.noise[self.t]
        self.t += 1
        return _GivenNoise(dist, eps)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.policy, name)


class _StepRecorder(VectorWrapper):
    """Keeps, for each step, the raw rewards, the truncation mask and the final observations of
    truncated episodes (what the learner needs to redo the truncation bootstrap itself)."""

    def __init__(self, env: VectorEnv):
        super().__init__(env)
        self.steps: list[tuple[np.ndarray, np.ndarray, list[np.ndarray]]] = []

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        bootstrap = np.asarray(truncated) & ~np.asarray(terminated)
        final = [np.asarray(info["final_obs"][i]) for i in np.flatnonzero(bootstrap)]
        self.steps.append((np.asarray(rewards).copy(), bootstrap, final))
        return obs, rewards, terminated, truncated, info

    def pop(self) -> list[tuple[np.ndarray, np.ndarray, list[np.ndarray]]]:
        out, self.steps = self.steps, []
        return out


class RolloutWorker:
    """k env copies + a policy copy of an on-policy algorithm; ``collect`` returns a RolloutBatch
    plus each step's raw rewards and truncation data (:class:`_StepRecorder`)."""

    def __init__(
        self,
        algo_target: str,
        env: Any,
        config: dict[str, Any],
        worker_index: int,
        envs_per_worker: int,
        module: str | None = None,
    ):
        if module:
            importlib.import_module(module)
        cls = _recording(load_class(algo_target))
        self.rng = RNGState(int(config.get("seed", 0)) + 7_919 * (worker_index + 1))
        with self.rng.active():
            self.agent = cls(env, {**config, "n_envs": envs_per_worker})
            self.recorder = _StepRecorder(self.agent.env)
            self.agent.env = self.recorder
            self.agent._obs, _ = self.agent.env.reset(seed=int(config.get("seed", 0)) + worker_index * envs_per_worker)

    def collect(self, weights: dict[str, dict[str, torch.Tensor]], noise: torch.Tensor | None) -> dict[str, Any]:
        agent = self.agent
        with self.rng.active():
            for name, state in weights.items():
                getattr(agent, name).load_state_dict(state)
            policy = agent.policy
            agent._given_noise = noise  # the NumPy actor samples with it (core_rl.common.numpy_acting) ...
            if noise is not None and agent._numpy_actor(1) is None:
                agent.policy = _NoisePolicy(policy, noise)  # ... or, where that does not apply, the torch path
            try:
                batch = agent.collect()
            finally:
                agent.policy, agent._given_noise = policy, None
        return {
            "batch": batch,
            "episodes": agent.pop_records(),
            "steps": self.recorder.pop(),
            "last_obs": np.asarray(agent._obs),
        }

    def close(self) -> None:
        self.agent.close()


class ReplayActor:
    """k env copies + a Q-network copy acting ε-greedily with a fixed ε; ``run`` returns raw transitions.

    The actor is an ordinary DQN agent that never trains (``gradient_steps=0``) and whose replay
    buffer holds exactly one round (``actor_steps`` steps of its k envs), so one ``_iterate`` of the
    agent is one round of acting, with the agent's own warm-up, ε-greedy and final-observation
    handling.
    """

    def __init__(
        self,
        algo_target: str,
        env: Any,
        config: dict[str, Any],
        worker_index: int,
        envs_per_worker: int,
        epsilon: float,
        actor_steps: int,
        learning_starts: int,
        module: str | None = None,
    ):
        if module:
            importlib.import_module(module)
        cls = _recording(load_class(algo_target))
        seed = int(config.get("seed", 0))
        self.rng = RNGState(seed + 7_919 * (worker_index + 1))
        actor_cfg = {
            **config,
            "n_envs": envs_per_worker,
            "exploration_initial_eps": epsilon,
            "exploration_final_eps": epsilon,
            "gradient_steps": 0,
            "train_freq": actor_steps,
            "buffer_size": actor_steps * envs_per_worker,
            "learning_starts": learning_starts,
            "prioritized": False,
            "n_step": 1,
        }
        with self.rng.active():
            self.agent = cls(env, actor_cfg)
            self.agent._obs, _ = self.agent.env.reset(seed=seed + worker_index * envs_per_worker)
        self.epsilon, self.actor_steps = float(epsilon), int(actor_steps)

    def run(self, weights: dict[str, torch.Tensor]) -> dict[str, Any]:
        agent = self.agent
        with self.rng.active():
            agent.q_net.load_state_dict(weights)
            agent._iterate()
        r = agent.replay
        S = self.actor_steps
        episode_end = r.episode_end[:S].bool()
        terminated = r.terminated[:S].bool()
        return {
            "obs": r.obs[:S].numpy(),
            "actions": r.actions[:S].numpy(),
            "rewards": r.rewards[:S].numpy(),
            "next_obs": r.next_obs[:S].numpy(),
            "terminated": terminated.numpy(),
            "truncated": (episode_end & ~terminated).numpy(),
            "episodes": agent.pop_records(),
        }

    def close(self) -> None:
        self.agent.close()


class WorkerGroup:
    """W workers of one class, as Ray actors (``backend='ray'``) or plain objects (``'local'``)."""

    def __init__(
        self,
        cls: type,
        args: Sequence[tuple[Any, ...]],
        backend: str = "ray",
        address: str | None = None,
        num_cpus: float = 1.0,
        resources: dict[str, float] | None = None,
    ):
        self.backend = backend
        if backend == "ray":
            self.ray = init_ray(address)
            remote = self.ray.remote(num_cpus=num_cpus, resources=dict(resources or {}))(cls)
            self.handles: list[Any] = [remote.remote(*a) for a in args]
            self._nodes: list[str] | None = None  # each worker's node, learnt on the first call
        elif backend == "local":
            self.ray = None
            self.handles = [cls(*a) for a in args]
        else:
            raise ConfigError(f"backend must be 'ray' or 'local', got '{backend}'")

    def __len__(self) -> int:
        return len(self.handles)

    def share(self, obj: Any) -> Any:
        """An object every worker receives (one copy in Ray's object store)."""
        return self.ray.put(obj) if self.ray is not None else obj

    def call(self, method: str, args: Sequence[tuple[Any, ...]]) -> list[Any]:
        """``method(*args[w])`` on every worker w, in parallel under Ray; results in worker order."""
        if self.ray is not None:
            refs = [getattr(h, method).remote(*a) for h, a in zip(self.handles, args)]
            try:
                results = self.ray.get(refs)
            except self.ray.exceptions.RayActorError:
                raise self._lost(refs) from None
            if self._nodes is None:
                self._nodes = self.node_ids()
            return results
        return [getattr(h, method)(*a) for h, a in zip(self.handles, args)]

    def _lost(self, refs: list[Any]) -> WorkerLost:
        """The :class:`WorkerLost` naming every worker lost: its call failed because its actor died, or it ran on a
        node that died (a worker whose call finished just before its node went is lost all the same)."""
        dead, node_died = set(), False
        for w, ref in enumerate(refs):
            try:
                self.ray.get(ref)
            except self.ray.exceptions.RayActorError as exc:
                dead.add(w)
                node_died = node_died or "node has died" in str(exc)
            except Exception:
                pass
        if dead and self._nodes is not None:
            dead_nodes = self._dead_nodes({self._nodes[w] for w in dead})
            node_died = node_died or bool(dead_nodes)
            dead |= {w for w, node in enumerate(self._nodes) if node in dead_nodes}
        names = [str(w) for w in sorted(dead)]
        which = f"worker {names[0]}" if len(names) == 1 else f"workers {', '.join(names)}"
        return WorkerLost(f"the loss of {which} of {len(refs)} ({'node' if node_died else 'worker process'} died)")

    def _dead_nodes(self, nodes: set[str], wait_s: float = NODE_DEATH_WAIT_S) -> set[str]:
        """Those of ``nodes`` that Ray marks dead within ``wait_s`` (empty if none does).

        An actor's error often arrives before the cluster's health check has declared its node dead
        (the error then reads "worker process died"), so the node table is asked again for a while.
        """
        deadline = time.monotonic() + wait_s
        while True:
            alive = {n["NodeID"] for n in self.ray.nodes() if n.get("Alive")}
            if nodes - alive or time.monotonic() >= deadline:
                return nodes - alive
            time.sleep(0.25)

    def node_ids(self) -> list[str]:
        """The Ray node id each worker runs on (``'local'`` for in-process workers)."""
        if self.ray is None:
            return ["local"] * len(self.handles)
        ray = self.ray
        return ray.get([h.__ray_call__.remote(lambda _: ray.get_runtime_context().get_node_id()) for h in self.handles])

    def close(self) -> None:
        if self.ray is not None:
            for h in self.handles:
                self.ray.kill(h)
        else:
            for h in self.handles:
                h.close()
        self.handles = []


def merge_episodes(parts: Sequence[list[tuple[int, int, float, int]]], envs_per_worker: int) -> list[tuple[float, int]]:
    """Workers' finished episodes in the order one vector env would report them: by step, then env."""
    rows = [(t, w * envs_per_worker + i, ret, length) for w, part in enumerate(parts) for t, i, ret, length in part]
    rows.sort(key=lambda r: (r[0], r[1]))
    return [(ret, length) for _, _, ret, length in rows]


__all__ = [
    "RolloutWorker",
    "ReplayActor",
    "WorkerGroup",
    "merge_episodes",
    "load_class",
    "class_target",
    "env_module",
    "check_shippable",
]
