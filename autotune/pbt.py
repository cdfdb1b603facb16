"""Population-based training (Jaderberg et al. 2017) of core_rl agents' hyperparameters.

A population of agents trains in rounds of ``interval_steps`` env steps each, within one training
budget. After every round the members are ranked by fitness (mean return of their last training
episodes, or of ``eval_episodes`` evaluation episodes):

* **exploit** — each member of the bottom ``quantile`` is replaced by a copy of a random member of
  the top ``quantile``: its checkpoint (networks, optimizer state, step counters) through
  ``Agent.save``/``Agent.load``;
* **explore** — the copy's hyperparameters are perturbed (each numeric one multiplied by 0.8 or
  1.25 in its own scale, log or linear, and clipped to its range; ints rounded onto their step) or,
  with probability ``resample_prob``, drawn afresh from the space; categoricals are redrawn.

The search space uses Optuna distributions (the same as every sampler of this package), so the
hyperparameters PBT may change are exactly the config fields named there. Each round's events and
the population's fitness go to the tracker.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from pydantic import BaseModel, ConfigDict, Field

from autotune.space import SpaceCodec
from core_rl import get_algo
from core_rl.common.base import Agent
from core_rl.common.config import parse_config
from core_rl.common.envs import EnvLike
from core_rl.common.errors import ConfigError
from core_rl.common.tracking import NullTracker, Tracker


class PBTConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    population: int = Field(4, ge=2, description="Members trained side by side.")
    interval_steps: int = Field(4096, ge=1, description="Env steps per member between exploit/explore rounds.")
    total_steps: int = Field(40_960, ge=1, description="Env steps per member in all.")
    quantile: float = Field(0.25, gt=0.0, le=0.5, description="Bottom fraction replaced by copies of the top.")
    perturb: tuple[float, float] = (0.8, 1.25)
    resample_prob: float = Field(0.25, ge=0.0, le=1.0)
    eval_episodes: int = Field(0, ge=0, description="0: fitness from training episodes; >0: evaluation episodes.")
    seed: int = Field(0, ge=0)


@dataclass
class Member:
    index: int
    agent: Agent
    hyperparams: dict[str, Any]
    fitness: float = float("nan")
    lineage: list[str] = field(default_factory=list)


@dataclass
class PBTResult:
    best_index: int
    best_fitness: float
    best_hyperparams: dict[str, Any]
    fitness: list[float]
    hyperparams: list[dict[str, Any]]
    events: list[dict[str, Any]]
    rounds: int
    members: list[Member]


class PopulationBasedTraining:
    """``PopulationBasedTraining("ppo", "CartPole-v1", space, base_config, PBTConfig(...)).run()``."""

    def __init__(
        self,
        algo: str,
        env: EnvLike,
        space: Mapping[str, BaseDistribution],
        base_config: Mapping[str, Any] | None = None,
        config: PBTConfig | Mapping[str, Any] | None = None,
        tracker: Tracker | None = None,
    ):
        self.config = parse_config(PBTConfig, config)
        self.spec = get_algo(algo)
        self.env = env
        self.space = dict(space)
        if not self.space:
            raise ConfigError("PBT needs at least one hyperparameter in its space")
        known = set(self.spec.cls.config_cls.model_fields)
        unknown = sorted(set(self.space) - known)
        if unknown:
            raise ConfigError(f"PBT space: {algo} has no config field(s) {', '.join(unknown)}")
        self.base_config = dict(base_config or {})
        self.codec = SpaceCodec(self.space)
        self.rng = np.random.default_rng(self.config.seed)
        self.tracker = tracker or NullTracker()
        self.events: list[dict[str, Any]] = []

    # ---- hyperparameters ---------------------------------------------------------------------------
    def sample(self) -> dict[str, Any]:
        return self.codec.decode(self.codec.uniform(1, self.rng))[0]

    def explore(self, hyperparams: Mapping[str, Any]) -> dict[str, Any]:
        if self.rng.random() < self.config.resample_prob:
            return self.sample()
        out = dict(hyperparams)
        for name, dist in self.space.items():
            if isinstance(dist, CategoricalDistribution):
                if self.rng.random() < 0.5:
                    out[name] = dist.choices[int(self.rng.integers(len(dist.choices)))]
                continue
            factor = float(self.rng.choice(self.config.perturb))
            value = float(out[name])
            if dist.log:  # type: ignore[union-attr]
                new = value * factor
            else:
                span = dist.high - dist.low  # type: ignore[union-attr]
                new = value + (factor - 1.0) * (value - dist.low if value > dist.low else span * 0.1)  # type: ignore[union-attr]
            new = min(max(new, dist.low), dist.high)  # type: ignore[union-attr]
            if isinstance(dist, IntDistribution):
                new = dist.low + round((new - dist.low) / dist.step) * dist.step
                if new == value:  # an int that a 20% step cannot move goes one step
                    new = min(max(value + dist.step * (1 if factor > 1 else -1), dist.low), dist.high)
                out[name] = int(new)
            elif isinstance(dist, FloatDistribution) and dist.step is not None:
                out[name] = float(dist.low + round((new - dist.low) / dist.step) * dist.step)
            else:
                out[name] = float(new)
        return out

    # ---- the loop ------------------------------------------------------------------------------------
    def _fitness(self, member: Member) -> float:
        if self.config.eval_episodes > 0:
            return float(member.agent.evaluate(self.config.eval_episodes, seed=self.config.seed + 777)["mean_return"])
        return float(member.agent.mean_return)

    def run(self) -> PBTResult:
        cfg = self.config
        cls = self.spec.cls
        members = []
        for i in range(cfg.population):
            hp = self.sample()
            agent = cls(self.env, {**self.base_config, **hp, "seed": cfg.seed + i})
            members.append(Member(i, agent, hp, lineage=[f"init{i}"]))
        self.tracker.log_params({"pbt": cfg.model_dump(), "algo": self.spec.name})
        rounds = max(1, -(-cfg.total_steps // cfg.interval_steps))
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(rounds):
                for m in members:
                    steps = min(cfg.interval_steps, cfg.total_steps - r * cfg.interval_steps)
                    m.agent.learn(steps)
                    m.fitness = self._fitness(m)
                fit = np.array([m.fitness if np.isfinite(m.fitness) else -np.inf for m in members])
                self.tracker.log_metrics(
                    {
                        "pbt/best_fitness": float(fit.max()),
                        "pbt/mean_fitness": float(np.mean(fit[np.isfinite(fit)]))
                        if np.isfinite(fit).any()
                        else float("nan"),
                    },
                    step=(r + 1) * cfg.interval_steps,
                )
                if r == rounds - 1:
                    break
                order = np.argsort(-fit, kind="stable")
                n_cut = max(1, int(round(cfg.quantile * cfg.population)))
                top, bottom = order[:n_cut], order[-n_cut:]
                for b in bottom:
                    src = members[int(self.rng.choice(top))]
                    dst = members[int(b)]
                    path = Path(tmp) / f"member{src.index}.pt"
                    src.agent.save(path)
                    new_hp = self.explore(src.hyperparams)
                    dst.agent.close()
                    dst.agent = cls.load(path, env=self.env, tracker=None, **new_hp)
                    event = {
                        "round": r + 1,
                        "replaced": dst.index,
                        "source": src.index,
                        "fitness_replaced": float(fit[b]),
                        "fitness_source": float(src.fitness),
                        "old": dst.hyperparams,
                        "new": new_hp,
                    }
                    dst.hyperparams = new_hp
                    dst.lineage = src.lineage + [f"r{r + 1}:{dst.index}<-{src.index}"]
                    self.events.append(event)
        best = max(members, key=lambda m: m.fitness if np.isfinite(m.fitness) else -np.inf)
        return PBTResult(
            best.index,
            best.fitness,
            best.hyperparams,
            [m.fitness for m in members],
            [m.hyperparams for m in members],
            self.events,
            rounds,
            members,
        )
