import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture()
def tracking_uri(tmp_path, monkeypatch):
    """A fresh embedded MLflow store per test, under the test's own temp folder."""
    monkeypatch.setenv("DEEPRL_HOME", str(tmp_path / "store"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
