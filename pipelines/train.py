"""The training pipeline: one MLflow run per training, resumable, marked FAILED when it crashes.

A run records every config value as a param, per-iteration metrics (episode return, losses,
entropy, KL, env-steps/s), the resolved config, the checkpoint (refreshed while it trains, so a
crash keeps it), a learning-curve PNG, and the policy as a pyfunc MLflow model.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core_rl import get_algo
from core_rl.common.base import Agent
from core_rl.common.config import parse_config
from core_rl.common.errors import CheckpointError, ConfigError
from core_rl.common.plotting import learning_curve
from core_rl.common.runs import setup_tracking, tracked_run
from core_rl.common.tracking import MLflowTracker
from core_rl.presets import apply_preset, preset_param

CHECKPOINT_ARTIFACT = "checkpoint"
CHECKPOINT_FILE = "agent.pt"


@dataclass
class TrainResult:
    run_id: str
    mean_return: float
    steps: int
    model_uri: str | None
    experiment_id: str
    #: where ``mean_return`` comes from: "training" (the last finished training episodes),
    #: "evaluation" (no training episode finished within the steps, so the policy was evaluated) or
    #: "program" (a program's own score of its controller)
    mean_return_source: str = "training"

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "mean_return": None if math.isnan(self.mean_return) else self.mean_return,
            "mean_return_source": self.mean_return_source,
            "steps": self.steps,
            "model_uri": self.model_uri,
            "experiment_id": self.experiment_id,
        }

    def describe(self) -> str:
        """The one line ``deeprl train`` prints."""
        line = f"run {self.run_id}: mean return {self.mean_return:.2f} after {self.steps} steps"
        if self.mean_return_source == "evaluation":
            line += (
                f" (no training episode finished in {self.steps} steps: the return of "
                f"{FALLBACK_EVAL_EPISODES} evaluation episode(s) of the trained policy)"
            )
        return line


#: episodes evaluated when no training episode finished (a long-episode env and a short budget)
FALLBACK_EVAL_EPISODES = 2


def _final_return(agent: Agent) -> tuple[float, str]:
    """``(mean return, source)``: the last finished training episodes' mean, or, when no training
    episode finished within the budget (e.g. ``safe_mpc``'s 8 envs × 200-step episodes under 1600
    steps), the mean return of :data:`FALLBACK_EVAL_EPISODES` stochastic evaluation episodes, so a run
    never reports an undefined return."""
    if agent.episode_returns:
        return agent.mean_return, "training"
    result = agent.evaluate(FALLBACK_EVAL_EPISODES, deterministic=False)
    return float(result["mean_return"]), "evaluation"


class _CheckpointingTracker(MLflowTracker):
    """Writes the agent's checkpoint every ``every`` metric logs and uploads it as the run's artifact,
    so the checkpoint is never far behind the metric history (a SIGKILL loses at most that)."""

    def __init__(self, run_id: str, client: Any, save: Any, every: int):
        super().__init__(run_id, client)
        self.save, self.every, self.calls = save, every, 0

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        super().log_metrics(metrics, step)
        self.calls += 1
        if self.calls % self.every == 0:
            self.save()


def _log_curve(client: Any, run_id: str, title: str) -> None:
    history = client.get_metric_history(run_id, "episode_return")
    if not history:
        return
    history.sort(key=lambda m: m.step)
    fig = learning_curve([m.step for m in history], [m.value for m in history], title)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "learning_curve.png"
        fig.savefig(path, dpi=100)
        client.log_artifact(run_id, str(path), "plots")
    import matplotlib.pyplot as plt

    plt.close(fig)


def download_checkpoint(run_id: str, dst: str | Path) -> Path:
    import mlflow

    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=f"{CHECKPOINT_ARTIFACT}/{CHECKPOINT_FILE}", dst_path=str(dst)
        )
    except Exception as exc:
        raise CheckpointError(f"run '{run_id}' has no checkpoint to load ({str(exc).splitlines()[0][:200]})") from None
    return Path(local)


#: an off-policy run keeps its replay buffer with the checkpoint, for an exact resume, up to this size
REPLAY_CHECKPOINT_LIMIT = 1 << 30


def _resume_target(run: Any, agent: Agent, steps: int | None) -> int:
    """The total step count a resumed run trains to; a FINISHED run needs an explicit larger ``steps``."""
    done = agent.num_timesteps
    if run.info.status == "FINISHED":
        if steps is None or steps <= done:
            raise ConfigError(
                f"run '{run.info.run_id}' already FINISHED at {done} steps: pass --steps larger than "
                f"{done} to train it further (the total, not the extra steps)"
            )
        return steps
    target = steps if steps is not None else int(run.data.params.get("total_steps", 0))
    if target < done:
        raise ConfigError(f"--steps {target} is below the {done} steps run '{run.info.run_id}' already trained")
    return target


def train(
    algo: str,
    env: str | None,
    steps: int | None,
    seed: int = 0,
    config: dict[str, Any] | None = None,
    tracking_uri: str | None = None,
    experiment: str = "deeprl",
    progress: bool = False,
    resume: str | None = None,
    log_model: bool = True,
    checkpoint_every: int = 5,
    run_name: str | None = None,
    save_replay_buffer: bool | None = None,
    preset: str | None = "auto",
) -> TrainResult:
    """Train ``algo`` on ``env`` for ``steps`` env steps in one MLflow run.

    ``preset`` (:mod:`core_rl.presets`): ``"auto"`` starts from RL-Zoo's published hyperparameters
    for ``env`` when there are some (``config`` applies on top), ``"none"`` from our defaults, a name
    (``rl-zoo/<algo>/<key>``) from that preset; the run's params say which (``preset``). Without
    ``steps``, a new run trains for the preset's budget (RL-Zoo's ``n_timesteps``). A resumed run
    keeps its own env and config: another ``env`` or a ``config`` value that differs is refused.

    Every input is checked before a run is created (algorithm, config, env id, action space,
    the run to resume and its checkpoint): a bad input leaves the store as it was. With
    ``resume=RUN_ID`` the run's last checkpoint is loaded and training continues in the same run up
    to ``steps`` in total (default: the total the run was started with); metrics continue from the
    checkpoint's step. ``save_replay_buffer`` (default: when it takes under 1 GiB) keeps an
    off-policy agent's replay buffer in the checkpoint so that a resume continues exactly.
    SIGINT/SIGTERM end the run KILLED after a final checkpoint, with the resume command printed.
    """
    import mlflow

    spec = get_algo(algo)
    if spec.kind == "program":
        from pipelines.programs import run_program

        if resume:
            raise ConfigError(f"{algo} is a program (it runs once): --resume is for agents")
        return run_program(spec, env, steps, seed, config, tracking_uri, experiment, run_name)
    chosen = None
    asked = dict(config or {})  # the caller's own fields: a resumed run must not drop them silently
    if not resume:
        config, chosen = apply_preset(algo, env, config, preset)
        if steps is None and chosen is not None:
            steps = chosen.n_timesteps
    if steps is None and not resume:
        raise ConfigError("steps is required for a new run")
    if steps is not None and steps <= 0:
        raise ConfigError(f"--steps must be positive, got {steps}")
    config = dict(config or {})
    config.setdefault("seed", seed)
    uri = setup_tracking(tracking_uri)
    client = mlflow.tracking.MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / CHECKPOINT_FILE
        # ---- everything is validated (and the agent built) before a run exists ----
        if resume:
            try:
                prior = client.get_run(resume)
            except Exception:
                raise CheckpointError(f"no run '{resume}' in the tracking store {uri}") from None
            if prior.data.tags.get("algo", algo) != algo:
                raise CheckpointError(f"run '{resume}' trained {prior.data.tags['algo']}, not {algo}")
            trained_on = prior.data.tags.get("env_id")
            if env and trained_on and env != trained_on:
                raise CheckpointError(
                    f"run '{resume}' trained on {trained_on}, not {env}: a run resumes on its own env"
                )
            agent = spec.cls.load(download_checkpoint(resume, Path(tmp) / "resume"), env=env if env else None)
            kept = agent.config.model_dump()
            # the asked values as the config holds them (a list for a tuple, "1e-3" for 0.001); a bad one is its error
            merged = parse_config(type(agent.config), agent.config, **{k: v for k, v in asked.items() if k in kept})
            merged = merged.model_dump()
            changed = [k for k in asked if k not in kept or merged[k] != kept[k]]
            if changed:
                was = ", ".join(f"{k}={kept.get(k, '(no such field)')!r}" for k in changed)
                raise ConfigError(
                    f"a resumed run keeps the config it started with: {', '.join(map(str, changed))} would change "
                    f"({was} in run '{resume}'); start a new run to train with other settings"
                )
            target = _resume_target(prior, agent, steps)
            env = env or prior.data.tags.get("env_id") or agent.env_id
        else:
            agent = spec.cls(env, config)
            target = int(steps)  # type: ignore[arg-type]
        keep_replay = save_replay_buffer
        if keep_replay is None:
            nbytes = getattr(agent, "replay_nbytes", lambda: None)()
            keep_replay = nbytes is not None and nbytes <= REPLAY_CHECKPOINT_LIMIT

        def save_checkpoint() -> None:
            agent.save(ckpt, include_replay=bool(keep_replay))
            client.log_artifact(run.run_id, str(ckpt), CHECKPOINT_ARTIFACT)

        with tracked_run(
            experiment,
            run_name=run_name or f"{algo}-{env}-s{seed}",
            tracking_uri=uri,
            resume_run_id=resume,
            resume_hint=f"deeprl train --algo {algo} --resume {{run_id}}"
            + (f" --tracking-uri {tracking_uri}" if tracking_uri else ""),
        ) as run:
            agent.tracker = _CheckpointingTracker(run.run_id, client, save_checkpoint, checkpoint_every)
            run.on_stop(save_checkpoint)  # whatever ends the run, the latest weights are kept
            run.on_stop(lambda: _log_curve(client, run.run_id, f"{algo} on {env}"))
            if resume:
                run.set_tags({"resumed_from_step": agent.num_timesteps})
                if target != int(prior.data.params.get("total_steps", target)):
                    run.set_tags({"total_steps_resumed": target})
            else:
                run.set_tags({"algo": algo, "env_id": env, "algo_module": spec.module})
                run.log_params({"total_steps": target, "preset": preset_param(chosen)})
                if chosen is not None:
                    run.set_tags({"preset_source": chosen.source})
                run.log_dict(
                    {"algo": algo, "env": env, "preset": preset_param(chosen), **agent.config.model_dump(mode="json")},
                    "config.json",
                )
            remaining = target - agent.num_timesteps
            if remaining > 0:
                agent.learn(remaining, progress=progress)
            save_checkpoint()
            mean_return, source = _final_return(agent)
            run.log_metrics({"mean_return": mean_return}, step=agent.num_timesteps)
            run.set_tags({"mean_return_source": source})
            _log_curve(client, run.run_id, f"{algo} on {env}")
            model_uri = None
            if log_model:
                from pipelines.policy_model import log_policy_model

                model_path = Path(tmp) / "model" / CHECKPOINT_FILE
                agent.save(model_path)  # the served model: weights only, no replay buffer
                example = np.stack([agent.observation_space.sample() for _ in range(2)])
                model_uri = log_policy_model(model_path, example_obs=example)
                run.set_tags({"model_uri": model_uri})
        return TrainResult(run.run_id, mean_return, agent.num_timesteps, model_uri, run.experiment_id, source)


def evaluate(
    run_id: str | None = None,
    model_uri: str | None = None,
    episodes: int = 10,
    tracking_uri: str | None = None,
    env: str | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Reload a trained policy from a run's checkpoint or a model URI and evaluate it."""
    import mlflow

    if (run_id is None) == (model_uri is None):
        raise ConfigError("give exactly one of --run or --model")
    setup_tracking(tracking_uri)
    if run_id is not None:
        try:
            tags = mlflow.tracking.MlflowClient().get_run(run_id).data.tags
        except Exception:
            tags = {}
        if tags.get("kind") == "program":
            raise ConfigError(
                f"run '{run_id}' ran the program {tags.get('algo')}: it has no agent to evaluate; "
                "its result is in the run's metrics (mean_return) and artifacts"
            )
        with tempfile.TemporaryDirectory() as tmp:
            agent = Agent.load(download_checkpoint(run_id, tmp))
    else:
        from pipelines.policy_model import load_agent

        try:
            agent = load_agent(model_uri)
        except Exception as exc:
            raise CheckpointError(f"model '{model_uri}' cannot be loaded: {str(exc).splitlines()[0][:200]}") from None
    result = agent.evaluate(episodes, env=env, seed=seed)
    result.update({"algo": agent.name, "env_id": env or agent.env_id, "episodes": episodes})
    if run_id is not None:
        client = mlflow.tracking.MlflowClient()
        client.log_metric(run_id, "eval_mean_return", result["mean_return"])
        client.log_metric(run_id, "eval_std_return", result["std_return"])
    return result
