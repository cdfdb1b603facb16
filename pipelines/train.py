"""The training pipeline: one MLflow run per training, resumable, marked FAILED when it crashes.

A run records every config value as a param, per-iteration metrics (episode return, losses,
entropy, KL, env-steps/s), the resolved config, the checkpoint (refreshed while it trains, so a
crash keeps it), a learning-curve PNG, and the policy as a pyfunc MLflow model.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core_rl import get_algo
from core_rl.common.base import Agent
from core_rl.common.errors import CheckpointError, ConfigError
from core_rl.common.tracking import MLflowTracker
from pipelines.plots import learning_curve
from pipelines.tracking import get_experiment_id, setup_tracking

CHECKPOINT_ARTIFACT = "checkpoint"
CHECKPOINT_FILE = "agent.pt"


@dataclass
class TrainResult:
    run_id: str
    mean_return: float
    steps: int
    model_uri: str | None
    experiment_id: str

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "mean_return": None if math.isnan(self.mean_return) else self.mean_return,
                "steps": self.steps, "model_uri": self.model_uri, "experiment_id": self.experiment_id}


class _UploadingTracker(MLflowTracker):
    """Refreshes the run's checkpoint artifact every ``every`` iterations while training."""

    def __init__(self, run_id: str, agent_ref: list, ckpt: Path, every: int):
        super().__init__(run_id)
        self.agent_ref, self.ckpt, self.every, self.calls = agent_ref, ckpt, every, 0

    def log_metrics(self, metrics, step):  # type: ignore[no-untyped-def]
        super().log_metrics(metrics, step)
        self.calls += 1
        if self.agent_ref and self.calls % self.every == 0:
            self.agent_ref[0].save(self.ckpt)
            self.log_artifact(self.ckpt, CHECKPOINT_ARTIFACT)


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
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"{CHECKPOINT_ARTIFACT}/{CHECKPOINT_FILE}",
                                                    dst_path=str(dst))
    except Exception as exc:
        raise CheckpointError(f"run '{run_id}' has no checkpoint to load ({str(exc).splitlines()[0][:200]})") from None
    return Path(local)


def train(algo: str, env: str | None, steps: int | None, seed: int = 0, config: dict[str, Any] | None = None,
          tracking_uri: str | None = None, experiment: str = "deeprl", progress: bool = False,
          resume: str | None = None, log_model: bool = True, checkpoint_every: int = 5,
          run_name: str | None = None) -> TrainResult:
    """Train ``algo`` on ``env`` for ``steps`` env steps in one MLflow run.

    With ``resume=RUN_ID`` the run's last checkpoint is loaded and training continues in the same
    run up to ``steps`` in total (default: the total the run was started with).
    """
    import mlflow

    spec = get_algo(algo)
    if steps is None and not resume:
        raise ConfigError("steps is required for a new run")
    if steps is not None and steps <= 0:
        raise ConfigError(f"--steps must be positive, got {steps}")
    config = dict(config or {})
    config.setdefault("seed", seed)
    # validate the config before anything is recorded
    from core_rl.common.config import parse_config

    parse_config(spec.cls.config_cls, config)
    uri = setup_tracking(tracking_uri)
    client = mlflow.tracking.MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / CHECKPOINT_FILE
        if resume:
            try:
                run = client.get_run(resume)
            except Exception:
                raise CheckpointError(f"no run '{resume}' in the tracking store {uri}") from None
            experiment_id = run.info.experiment_id
            ckpt = download_checkpoint(resume, tmp)
            if run.data.tags.get("algo", algo) != algo:
                raise CheckpointError(f"run '{resume}' trained {run.data.tags['algo']}, not {algo}")
            target = steps if steps is not None else int(run.data.params.get("total_steps", 0))
            active = mlflow.start_run(run_id=resume)
        else:
            experiment_id = get_experiment_id(experiment, uri)
            target = int(steps)  # type: ignore[arg-type]
            active = mlflow.start_run(experiment_id=experiment_id, run_name=run_name or f"{algo}-{env}-s{seed}")
        run_id = active.info.run_id
        agent_ref: list[Agent] = []
        tracker = _UploadingTracker(run_id, agent_ref, Path(tmp) / CHECKPOINT_FILE, checkpoint_every)
        try:
            if resume:
                agent = spec.cls.load(ckpt, env=env if env else None, tracker=tracker)
                mlflow.set_tag("resumed_from_step", str(agent.num_timesteps))
                remaining = target - agent.num_timesteps
            else:
                mlflow.set_tags({"algo": algo, "env_id": env, "algo_module": spec.module})
                agent = spec.cls(env, config, tracker=tracker)
                mlflow.log_param("total_steps", target)
                remaining = target
                cfg_path = Path(tmp) / "config.json"
                cfg_path.write_text(json.dumps({"algo": algo, "env": env, **agent.config.model_dump(mode="json")},
                                               indent=2))
                client.log_artifact(run_id, str(cfg_path))
            agent_ref.append(agent)
            if remaining > 0:
                agent.learn(remaining, progress=progress)
            ckpt = Path(tmp) / CHECKPOINT_FILE
            agent.save(ckpt)
            client.log_artifact(run_id, str(ckpt), CHECKPOINT_ARTIFACT)
            mlflow.log_metric("mean_return", agent.mean_return if agent.episode_returns else float("nan"),
                              step=agent.num_timesteps)
            _log_curve(client, run_id, f"{algo} on {env}")
            model_uri = None
            if log_model:
                from pipelines.policy_model import log_policy_model

                example = np.stack([agent.observation_space.sample() for _ in range(2)])
                model_uri = log_policy_model(ckpt, example_obs=example)
                mlflow.set_tag("model_uri", model_uri)
            mlflow.end_run("FINISHED")
            return TrainResult(run_id, agent.mean_return, agent.num_timesteps, model_uri, experiment_id)
        except BaseException as exc:
            # keep what was recorded: the latest weights go up as the checkpoint, the run is FAILED
            if agent_ref:
                try:
                    agent_ref[0].save(ckpt)
                    client.log_artifact(run_id, str(ckpt), CHECKPOINT_ARTIFACT)
                except Exception:
                    pass
            mlflow.set_tag("failure", f"{type(exc).__name__}: {exc}"[:5000])
            mlflow.end_run("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise


def evaluate(run_id: str | None = None, model_uri: str | None = None, episodes: int = 10,
             tracking_uri: str | None = None, env: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """Reload a trained policy from a run's checkpoint or a model URI and evaluate it."""
    import mlflow

    if (run_id is None) == (model_uri is None):
        raise ConfigError("give exactly one of --run or --model")
    setup_tracking(tracking_uri)
    if run_id is not None:
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
