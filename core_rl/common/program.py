r"""Algorithms that are not learning agents, runnable by name like agents.

Dynamic programming, inverse RL, imitation from a fixed expert, fitted Q iteration on a data set and
planners used as controllers do not fit ``Agent.learn(steps)``: they solve, fit or plan and then
report. A :class:`Program` gives them one contract, so the registry lists them beside the agents
and ``deeprl train --algo NAME`` runs them in an MLflow run like any agent:

* ``Program(env, config)`` validates **everything** — config fields, env id, spaces, the expert —
  and raises one :class:`~core_rl.common.errors.DeepRLError` naming the cause; nothing runs yet
  (so a bad input creates no MLflow run);
* ``program.run(tracker, out_dir)`` does the work, logs metrics through ``tracker`` (per iteration
  where the algorithm iterates), writes its artifacts (a reward table, a policy, values) as files
  under ``out_dir`` and returns a :class:`ProgramResult` whose ``mean_return`` is the return of the
  resulting controller on the env (the number ``deeprl train`` prints).

``budget_field`` names the config field that ``--steps`` sets (iterations, gradient steps or env
steps, whichever the algorithm spends); ``None`` means the algorithm has no budget to set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from core_rl.common.config import parse_config
from core_rl.common.tracking import Tracker


@dataclass
class ProgramResult:
    """What a run produced: ``mean_return`` of its controller on the env, the final ``metrics``
    (also logged), ``steps`` spent (iterations / gradient steps / env steps) and the ``artifacts``
    written (paths relative to ``out_dir``)."""

    mean_return: float
    steps: int
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.mean_return = float(self.mean_return)
        if not math.isfinite(self.mean_return):
            raise ValueError(f"a program must report a finite mean_return, got {self.mean_return}")


class Program:
    """Base class: subclasses set ``name``, ``config_cls`` and ``budget_field`` and implement
    :meth:`setup` (validation, called by the constructor) and :meth:`run`."""

    name: ClassVar[str]
    config_cls: ClassVar[type[BaseModel]]
    budget_field: ClassVar[str | None] = None
    kind: ClassVar[str] = "program"

    def __init__(self, env: str, config: BaseModel | Mapping[str, Any] | None = None, **overrides: Any):
        self.env_id = env
        self.config = parse_config(self.config_cls, config, **overrides)  # type: ignore[type-var]
        self.setup()

    def setup(self) -> None:
        """Check the env and the config together; raise a DeepRLError naming the cause."""

    def run(self, tracker: Tracker, out_dir: Path) -> ProgramResult:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """Params recorded beside the config: what the program resolved from it (e.g. the model a
        planner plans in)."""
        return {}

    @classmethod
    def with_budget(cls, config: Mapping[str, Any], steps: int | None) -> dict[str, Any]:
        """``config`` with ``--steps`` put in the budget field (unless the config sets it itself)."""
        out = dict(config)
        if steps is not None and cls.budget_field is not None:
            out.setdefault(cls.budget_field, int(steps))
        return out


__all__ = ["Program", "ProgramResult"]
