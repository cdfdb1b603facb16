r"""The constrained MDP interface on gymnasium.

A CMDP adds costs to an MDP and asks for

.. math::
    \max_\pi J_r(\pi) = \mathbb E_\pi\Big[\sum_t r_t\Big]
    \quad\text{s.t.}\quad J_{c_k}(\pi) = \mathbb E_\pi\Big[\sum_t c_{k,t}\Big] \le d_k,\quad k = 1..K,

one limit :math:`d_k \ge 0` per constraint on the expected (undiscounted) episodic cost.

Costs travel the way Safety-Gymnasium's gymnasium variants report them: each step's
``info["cost"]`` (and any named components such as ``info["cost_hazard"]``). A constraint names an
info key and a limit, so any env that reports costs this way plugs in, and several constraints can
be imposed at once. On a vector env the infos are arrays over envs; an env that finished (and was
reset in the same step) has its step info under ``info["final_info"]``, which :func:`read_costs`
prefers for those envs, so gymnasium's ``SyncVectorEnv`` over single envs works as well as our
numpy-batched tasks.

:class:`CostMonitor` wraps a vector env, reads the ``[N, K]`` cost array of every step (vectorized,
no loop over envs), records it for the agent's rollout, and keeps the bookkeeping that every safe
agent logs: episodic cost, cumulative training cost, the cost rate over all training steps, the
steps with a violation, and the episodes over the limit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium.vector import VectorEnv, VectorWrapper
from pydantic import Field, field_validator, model_validator

from core_rl.common.config import AgentConfig
from core_rl.common.errors import CheckpointError, EnvError


class CostKeyError(EnvError):
    """The env does not report a cost the constraints name."""


class CMDPConfig(AgentConfig):
    """The constraints of a CMDP: info keys of the step costs and one episodic-cost limit each."""

    cost_keys: tuple[str, ...] = Field(
        ("cost",), min_length=1, description="info keys of the constrained step costs (one per constraint)."
    )
    cost_limit: float | tuple[float, ...] = Field(
        25.0, description="d_k, the limit on expected undiscounted episodic cost: one number, or one per cost key."
    )
    cost_gamma: float | None = Field(
        None, gt=0.0, le=1.0, description="Discount of the cost critic and cost advantages (None: gamma)."
    )

    @field_validator("cost_keys")
    @classmethod
    def _keys_unique(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(keys)) != len(keys):
            raise ValueError(f"cost_keys must be distinct, got {list(keys)}")
        if any(not k for k in keys):
            raise ValueError("cost_keys must be non-empty strings")
        return keys

    @field_validator("cost_limit")
    @classmethod
    def _limits_nonnegative(cls, limit: float | tuple[float, ...]) -> float | tuple[float, ...]:
        for i, d in enumerate((limit,) if isinstance(limit, (int, float)) else limit):
            if not np.isfinite(d) or d < 0:
                raise ValueError(
                    f"limit {i} is {d}: a cost limit is a budget on expected episodic cost and must "
                    f"be a finite number >= 0"
                )
        return limit

    @model_validator(mode="after")
    def _limits_match_keys(self) -> "CMDPConfig":
        limits = (self.cost_limit,) if isinstance(self.cost_limit, (int, float)) else tuple(self.cost_limit)
        if len(limits) == 1 and len(self.cost_keys) > 1:
            limits = limits * len(self.cost_keys)
        if len(limits) != len(self.cost_keys):
            raise ValueError(
                f"cost_limit has {len(limits)} values for {len(self.cost_keys)} cost_keys "
                f"{list(self.cost_keys)}; give one limit, or one per key"
            )
        return self

    @property
    def limits(self) -> np.ndarray:
        """d as a ``[K]`` float array."""
        limits = (self.cost_limit,) if isinstance(self.cost_limit, (int, float)) else tuple(self.cost_limit)
        return np.asarray(limits * (len(self.cost_keys) if len(limits) == 1 else 1), dtype=np.float64)

    @property
    def n_constraints(self) -> int:
        return len(self.cost_keys)

    @property
    def gamma_c(self) -> float:
        return self.gamma if self.cost_gamma is None else self.cost_gamma


class CostMarginConfig(CMDPConfig):
    r"""The constraints with a safety margin m (``cost_margin``) below each limit, which the agent aims at:
    CPO's constraint and the Lagrange multiplier's dual step see the target :math:`d_k - m` in place of
    :math:`d_k` (:attr:`targets`), e.g. dual ascent :math:`\lambda_k \leftarrow \max(0, \lambda_k +
    \alpha(\hat J_{c_k} - (d_k - m)))`. The limit itself (the monitor's violations, the reports) stays d."""

    cost_margin: float = Field(
        0.0,
        ge=0.0,
        description="m: the agent aims at the episodic cost d − m (m ≤ every limit d), a safety margin below "
        "the limit (the seed-to-seed spread of the cost around the target lands some seeds over d without one).",
    )

    @model_validator(mode="after")
    def _margin_within_limits(self) -> "CostMarginConfig":
        if self.cost_margin > float(self.limits.min()):
            raise ValueError(
                f"cost_margin {self.cost_margin} exceeds the cost limit {float(self.limits.min())}: "
                "the agent would aim at a negative episodic cost"
            )
        return self

    @property
    def targets(self) -> np.ndarray:
        """d − m as a ``[K]`` float array: the episodic costs the agent aims at."""
        return self.limits - self.cost_margin


def _available(info: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in info if not k.startswith("_") and k not in ("final_obs", "final_info"))


def read_costs(info: Mapping[str, Any], keys: Sequence[str], n_envs: int, done: np.ndarray | None = None) -> np.ndarray:
    """The step costs ``[N, K]`` of a vector env's step ``info``.

    For envs that finished this step (``done``), ``info["final_info"]`` (the finished episode's
    last step info, as gymnasium's SAME_STEP vector envs report it) takes precedence over the info
    of the reset. Raises :class:`CostKeyError` naming the key if an env does not report it.
    """
    out = np.zeros((n_envs, len(keys)))
    final = info.get("final_info") if done is not None and np.any(done) else None
    for k, key in enumerate(keys):
        have = np.zeros(n_envs, dtype=bool)
        if key in info:
            out[:, k] = np.asarray(info[key], dtype=np.float64).reshape(n_envs)
            have[:] = np.asarray(info.get(f"_{key}", True), dtype=bool)
        if isinstance(final, Mapping) and key in final:
            fmask = np.asarray(final.get(f"_{key}", done), dtype=bool) & done
            out[fmask, k] = np.asarray(final[key], dtype=np.float64).reshape(n_envs)[fmask]
            have |= fmask
        if not have.all():
            raise CostKeyError(
                f"the env's step info has no '{key}' entry (env indices {np.flatnonzero(~have)[:8].tolist()}); a "
                f"CMDP env must report each step's cost in info['{key}'] as Safety-Gymnasium's gymnasium envs do "
                f"(info keys present: {_available(info)}); fix the env or the config field 'cost_keys'"
            )
    if not np.all(np.isfinite(out)):
        raise CostKeyError(f"the env reported non-finite costs for {list(keys)}")
    return out


class CostMonitor(VectorWrapper):
    """Reads every step's costs and keeps the safety bookkeeping of a training run.

    ``begin_rollout()`` / ``end_rollout()`` bracket one rollout of the agent: in between, each
    ``step`` appends the ``[N, K]`` costs and the final observations of truncated episodes, which
    ``end_rollout`` returns as ``(costs [T, N, K], bootstrap)`` for the cost critic.
    """

    def __init__(
        self, env: VectorEnv, cost_keys: Sequence[str], cost_limits: Sequence[float] | np.ndarray, window: int = 100
    ):
        super().__init__(env)
        self.cost_keys = tuple(cost_keys)
        self.limits = np.asarray(cost_limits, dtype=np.float64).reshape(len(self.cost_keys))
        declared = getattr(env, "metadata", {}).get("cost_keys") or getattr(
            getattr(env, "unwrapped", env), "metadata", {}
        ).get("cost_keys")
        if declared is not None:
            missing = [k for k in self.cost_keys if k not in declared]
            if missing:
                raise CostKeyError(
                    f"cost key(s) {missing} are not reported by this env, which reports "
                    f"{list(declared)}; fix the config field 'cost_keys'"
                )
        N, K = self.num_envs, len(self.cost_keys)
        self.episode_costs: deque[np.ndarray] = deque(maxlen=window)
        self.episode_returns: deque[float] = deque(maxlen=window)
        self._ep_cost = np.zeros((N, K))
        self._ep_return = np.zeros(N)
        self.last_costs = np.zeros((N, K))  # the latest step's costs
        self.total_cost = np.zeros(K)
        self.total_steps = 0
        self.violation_steps = np.zeros(K, dtype=np.int64)
        self.episodes_over_limit = np.zeros(K, dtype=np.int64)
        self.episodes = 0
        self._recording = False
        self._rollout: list[np.ndarray] = []
        self._bootstrap: list[tuple[int, np.ndarray, np.ndarray]] = []
        self._new_episode_costs: list[np.ndarray] = []

    # ---- rollouts ------------------------------------------------------------------------------
    def begin_rollout(self) -> None:
        self._recording = True
        self._rollout, self._bootstrap, self._new_episode_costs = [], [], []

    def end_rollout(self) -> tuple[np.ndarray, list[tuple[int, np.ndarray, np.ndarray]], np.ndarray]:
        """``(costs [T, N, K], [(t, env indices, final obs)] of truncated steps, episode costs [E, K])``."""
        self._recording = False
        costs = np.stack(self._rollout, 0) if self._rollout else np.zeros((0, self.num_envs, len(self.cost_keys)))
        finished = np.stack(self._new_episode_costs) if self._new_episode_costs else np.zeros((0, len(self.cost_keys)))
        return costs, self._bootstrap, finished

    # ---- gymnasium -----------------------------------------------------------------------------
    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        self._ep_cost[:] = 0.0  # an episode cut short by a reset is not counted
        self._ep_return[:] = 0.0
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: Any):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        done = np.asarray(terminated) | np.asarray(truncated)
        costs = read_costs(info, self.cost_keys, self.num_envs, done)
        self.last_costs = costs
        self._ep_cost += costs
        self._ep_return += np.asarray(reward, dtype=np.float64)
        self.total_cost += costs.sum(0)
        self.total_steps += self.num_envs
        self.violation_steps += (costs > 0).sum(0)
        if self._recording:
            self._rollout.append(costs)
            boot = np.asarray(truncated) & ~np.asarray(terminated)
            if boot.any():
                idx = np.flatnonzero(boot)
                self._bootstrap.append((len(self._rollout) - 1, idx, np.stack([info["final_obs"][i] for i in idx])))
        if done.any():
            finished = self._ep_cost[done].copy()
            self.episode_costs.extend(finished)
            if self._recording:
                self._new_episode_costs.extend(finished)
            self.episodes_over_limit += (finished > self.limits + 1e-9).sum(0)
            self.episodes += int(done.sum())
            self.episode_returns.extend(self._ep_return[done].tolist())
            self._ep_cost[done] = 0.0
            self._ep_return[done] = 0.0
        info["costs"] = costs  # [N, K], for wrappers above (Saute, the shield)
        return obs, reward, terminated, truncated, info

    # ---- checkpoints ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The totals and the last finished episodes, as plain lists (a ``weights_only`` checkpoint
        holds no NumPy arrays); the episodes in progress are not kept (a resumed run resets its env)."""
        return {
            "episode_costs": [c.tolist() for c in self.episode_costs],
            "episode_returns": list(self.episode_returns),
            "total_cost": self.total_cost.tolist(),
            "total_steps": int(self.total_steps),
            "violation_steps": self.violation_steps.tolist(),
            "episodes_over_limit": self.episodes_over_limit.tolist(),
            "episodes": int(self.episodes),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state`; the number of constraints must match this monitor's."""
        K = len(self.cost_keys)
        if len(state["total_cost"]) != K:
            raise CheckpointError(
                f"the saved cost monitor has {len(state['total_cost'])} constraint(s), this one {K} ({list(self.cost_keys)})"
            )
        self.episode_costs.clear()
        self.episode_costs.extend(np.asarray(c, dtype=np.float64) for c in state["episode_costs"])
        self.episode_returns.clear()
        self.episode_returns.extend(float(r) for r in state["episode_returns"])
        self.total_cost = np.asarray(state["total_cost"], dtype=np.float64)
        self.total_steps = int(state["total_steps"])
        self.violation_steps = np.asarray(state["violation_steps"], dtype=np.int64)
        self.episodes_over_limit = np.asarray(state["episodes_over_limit"], dtype=np.int64)
        self.episodes = int(state["episodes"])

    # ---- metrics -------------------------------------------------------------------------------
    @property
    def mean_episode_return(self) -> float:
        """Mean episodic return of the env's own reward over the last finished episodes (nan if none)."""
        return float(np.mean(self.episode_returns)) if self.episode_returns else float("nan")

    @property
    def mean_episode_cost(self) -> np.ndarray:
        """Mean episodic cost per constraint over the last finished episodes (nan if none)."""
        if not self.episode_costs:
            return np.full(len(self.cost_keys), np.nan)
        return np.mean(np.stack(self.episode_costs), axis=0)

    def metrics(self) -> dict[str, float]:
        """episode_cost, cost_rate (cost per training step so far), cumulative_cost, violation_steps
        and episodes_over_limit: for the first constraint under the plain name, for every
        constraint under ``<name>/<cost key>`` when there are several."""
        per = {
            "episode_cost": self.mean_episode_cost,
            "cost_rate": self.total_cost / max(self.total_steps, 1),
            "cumulative_cost": self.total_cost,
            "violation_steps": self.violation_steps.astype(np.float64),
            "episodes_over_limit": self.episodes_over_limit.astype(np.float64),
        }
        out = {name: float(v[0]) for name, v in per.items()}
        if len(self.cost_keys) > 1:
            for name, v in per.items():
                out.update({f"{name}/{key}": float(x) for key, x in zip(self.cost_keys, v)})
        return out
