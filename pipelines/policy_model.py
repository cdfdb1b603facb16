"""A trained agent as an MLflow pyfunc model: observations in, actions out.

``mlflow.pyfunc.load_model(uri).predict(obs)`` takes a batch of observations (numpy array or a
DataFrame with one column per observation dimension) and returns the deterministic actions.
``load_agent(uri)`` gives back the full core_rl agent (for evaluation or further training).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd


class PolicyModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from core_rl.common.base import Agent

        self.agent = Agent.load(context.artifacts["checkpoint"])

    # pd.DataFrame is a hint MLflow takes without inferring a schema from it (the logged input example
    # gives the signature); numpy arrays are accepted as well
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        obs = model_input.to_numpy() if hasattr(model_input, "to_numpy") else np.asarray(model_input)
        shape = self.agent.observation_space.shape
        obs = obs.reshape((-1, *shape)) if shape else obs.reshape(-1)
        deterministic = True if params is None else bool(params.get("deterministic", True))
        return self.agent.predict(obs.astype(self.agent.observation_space.dtype), deterministic=deterministic)


def log_policy_model(checkpoint: str | Path, name: str = "policy", example_obs: np.ndarray | None = None) -> str:
    """Log the checkpoint as a pyfunc model (models-from-code, no pickling) in the active run."""
    import mlflow

    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=str(Path(__file__).with_name("_policy_model_entry.py")),
        artifacts={"checkpoint": str(checkpoint)},
        input_example=example_obs,
        pip_requirements=["deeprl-suite", "torch", "gymnasium", "numpy"],
    )
    return info.model_uri


def load_agent(model_uri: str):  # type: ignore[no-untyped-def]
    """The core_rl agent inside a logged policy model."""
    model = mlflow.pyfunc.load_model(model_uri)
    return model.unwrap_python_model().agent
