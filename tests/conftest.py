import os

import pytest

from tests.seeding import SEED_SHIFT, seed

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def pytest_report_header(config):
    return f"DEEPRL_TEST_SEED_SHIFT={SEED_SHIFT} (every learning test's seeds are base + {SEED_SHIFT})"


@pytest.fixture()
def seed_shift() -> int:
    """The integer in ``DEEPRL_TEST_SEED_SHIFT`` (default 0) that every test seed is moved by."""
    return SEED_SHIFT


@pytest.fixture()
def seeded():
    """``seeded(base)`` → ``base + DEEPRL_TEST_SEED_SHIFT``; the same as ``tests.seeding.seed``."""
    return seed


@pytest.fixture()
def tracking_uri(tmp_path, monkeypatch):
    """A fresh embedded MLflow store per test, under the test's own temp folder."""
    monkeypatch.setenv("DEEPRL_HOME", str(tmp_path / "store"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
