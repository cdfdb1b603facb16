"""Models-from-code entry point: MLflow runs this file to build the recommender pyfunc model."""

import mlflow

from recsys.serving import RecommenderModel

mlflow.models.set_model(RecommenderModel())
