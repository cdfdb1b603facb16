"""Programs (solvers, IRL, imitation from a fixed expert, planners) in one MLflow run each.

``deeprl train --algo value_iteration --env FrozenLake-v1`` lands here: the same run lifecycle as an
agent's training (:func:`core_rl.common.runs.tracked_run`), with every input checked before the run
exists. A run records the config as params and ``config.json``, the program's metrics (per
iteration where it iterates), ``mean_return`` of its controller, and the files it wrote (a reward
table, a policy, values) as artifacts.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from core_rl.common.errors import ConfigError, DeepRLError
from core_rl.common.runs import setup_tracking, tracked_run
from core_rl.registry import AlgoSpec

#: config fields that may name a trained agent as ``run:RUN_ID`` or ``models:/NAME/VERSION`` (an imitation
#: expert; the dynamics model a planner plans in)
CHECKPOINT_FIELDS = ("expert", "dynamics")


def run_program(
    spec: AlgoSpec,
    env: str | None,
    steps: int | None,
    seed: int,
    config: dict[str, Any] | None,
    tracking_uri: str | None,
    experiment: str,
    run_name: str | None,
) -> Any:
    """Build ``spec``'s program (validating everything), then run it inside one MLflow run."""
    from pipelines.train import TrainResult

    if not env:
        raise ConfigError("--env is required")
    if steps is not None and steps <= 0:
        raise ConfigError(f"--steps must be positive, got {steps}")
    cls = spec.cls
    if steps is not None and cls.budget_field is None:
        raise ConfigError(f"{spec.name} has no step budget: drop --steps")
    config = cls.with_budget(dict(config or {}), steps)
    config.setdefault("seed", seed)
    uri = setup_tracking(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        named = {key: config[key] for key in CHECKPOINT_FIELDS if isinstance(config.get(key), str)}
        for key, value in named.items():
            try:
                config[key] = resolve_expert(value, Path(tmp) / key)
            except DeepRLError as err:
                raise type(err)(f"config field '{key}': {err}") from None
        program = cls(env, config)  # raises on any bad input, before a run exists
        settings = {**program.config.model_dump(mode="json"), **program.params()}
        settings.update(named)  # as the user named them
        with tracked_run(
            experiment,
            run_name=run_name or f"{spec.name}-{env}-s{seed}",
            tracking_uri=uri,
            tags={"algo": spec.name, "env_id": env, "algo_module": spec.module, "kind": spec.kind},
            params={"algo": spec.name, **settings},
        ) as run:
            run.log_dict({"algo": spec.name, "env": env, **settings}, "config.json")
            out = Path(tmp) / "out"
            result = program.run(run.tracker, out)
            for name in result.artifacts:
                run.log_artifact(out / name)
            run.log_metrics({"mean_return": result.mean_return}, step=result.steps)
    return TrainResult(run.run_id, result.mean_return, result.steps, None, run.experiment_id, "program")


def resolve_expert(expert: str, dst: Path) -> str:
    """An agent named on the command line (an expert, a planner's dynamics) as a local spec for the
    core: ``run:RUN_ID`` becomes
    that run's checkpoint file, ``models:/NAME/VERSION`` (or any model URI) the model's agent saved
    as a checkpoint; ``scripted`` and file paths pass through."""
    from core_rl.common.errors import CheckpointError

    if expert.startswith("run:"):
        from pipelines.train import download_checkpoint

        return str(download_checkpoint(expert[len("run:") :], dst))
    if expert.startswith(("models:/", "runs:/")):
        from pipelines.policy_model import load_agent

        try:
            agent = load_agent(expert)
        except Exception as exc:
            raise CheckpointError(f"model '{expert}' cannot be loaded: {str(exc).splitlines()[0][:200]}") from None
        dst.mkdir(parents=True, exist_ok=True)
        return str(agent.save(dst / "agent.pt"))
    return expert
