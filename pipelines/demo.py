"""``make run``: the main end-to-end pipeline on embedded defaults.

Trains PPO on CartPole-v1 in one MLflow run, evaluates the logged model, registers it in the
MLflow model registry, and prints how to open the MLflow UI on the store. Later apps add stages.
"""

from __future__ import annotations

import sys

import mlflow

from core_rl.common.runs import data_dir, setup_tracking
from pipelines.train import evaluate, train

DEMO_CONFIG = {
    "n_envs": 8,
    "n_steps": 32,
    "batch_size": 256,
    "n_epochs": 20,
    "gae_lambda": 0.8,
    "gamma": 0.98,
    "lr": 1e-3,
    "lr_schedule": "linear",
    "clip_schedule": "linear",
    "ent_coef": 0.0,
}


def run_demo(tracking_uri: str | None = None, steps: int | None = None) -> dict:
    uri = setup_tracking(tracking_uri)
    print(f"[1/4] training PPO on CartPole-v1 (tracking: {uri})")
    result = train(
        "ppo",
        "CartPole-v1",
        steps or 60_000,
        seed=0,
        config=DEMO_CONFIG,
        tracking_uri=uri,
        experiment="demo",
        progress=sys.stderr.isatty(),
        run_name="demo-ppo-cartpole",
    )
    print(f"      run {result.run_id}: mean training return {result.mean_return:.1f}")
    print("[2/4] evaluating the logged model")
    ev = evaluate(model_uri=result.model_uri, episodes=10, tracking_uri=uri)
    print(f"      {ev['mean_return']:.1f} ± {ev['std_return']:.1f} over 10 episodes")
    print("[3/4] registering the model")
    version = mlflow.register_model(result.model_uri, "cartpole-ppo")
    print(f"      registered cartpole-ppo version {version.version}")
    print("[4/4] recommender stage: logs → top-K REINFORCE → OPE + online evaluation → registry")
    from recsys.demo import run_recsys_demo

    recsys_result = run_recsys_demo(uri)
    store = data_dir()
    print(
        "\nOpen the MLflow UI on this store with:\n"
        f"  .venv/bin/mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000\n"
        f"(data folder: {store})"
    )
    return {"run_id": result.run_id, "eval": ev, "model_version": version.version, "recsys": recsys_result}
