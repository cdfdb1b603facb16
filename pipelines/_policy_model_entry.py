"""Models-from-code entry point: MLflow runs this file to build the pyfunc policy model."""

import mlflow

from pipelines.policy_model import PolicyModel

mlflow.models.set_model(PolicyModel())
