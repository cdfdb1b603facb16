import os

import pytest

from tests.netns import IN_PRIVATE_NETWORK, run_here
from tests.seeding import SEED_SHIFT, seed

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def pytest_report_header(config):
    lines = [f"DEEPRL_TEST_SEED_SHIFT={SEED_SHIFT} (every learning test's seeds are base + {SEED_SHIFT})"]
    if not IN_PRIVATE_NETWORK and run_here():
        lines.append("no private network namespace here: the ray_local tests run in place (Ray binds every interface)")
    return lines


def pytest_collection_modifyitems(config, items):
    """``ray_local`` tests run inside the loopback-only namespace (tests/test_ray_netns.py), where one exists."""
    marked = [item for item in items if item.get_closest_marker("ray_local")]
    if marked and not run_here():
        skip = pytest.mark.skip(reason="runs inside a private network namespace (tests/test_ray_netns.py)")
        for item in marked:
            item.add_marker(skip)


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


class StopAfterCheckpoint(Exception):
    """Raised by :func:`stop_at_first_checkpoint` right after a benchmark run's first checkpoint."""


@pytest.fixture()
def stop_at_first_checkpoint(monkeypatch):
    """Make :meth:`benchmarks.common.Resume.save` raise :class:`StopAfterCheckpoint` once its checkpoint
    is written (a run stopped there); calling the returned function restores saving."""
    from benchmarks.common import Resume

    save = Resume.save

    def save_then_stop(self, progress, write_checkpoint):
        save(self, progress, write_checkpoint)
        raise StopAfterCheckpoint

    monkeypatch.setattr(Resume, "save", save_then_stop)
    return lambda: monkeypatch.setattr(Resume, "save", save)
