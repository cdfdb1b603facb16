"""The embedded tracking store and how to reach another one.

By default everything lives under one git-ignored data folder (``.deeprl/`` in the working
directory, or ``$DEEPRL_HOME``): MLflow's SQLite backend ``mlflow.db`` and its artifacts in
``artifacts/``, Optuna's ``optuna.db`` beside them. ``--tracking-uri`` or the standard
``MLFLOW_TRACKING_URI`` point at any other MLflow store (a tracking server, PostgreSQL, ...).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import urlparse

from core_rl.common.errors import TrackingError


def data_dir() -> Path:
    """The one folder that holds every embedded store (created on first use)."""
    return Path(os.environ.get("DEEPRL_HOME", Path.cwd() / ".deeprl")).resolve()


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{data_dir() / 'mlflow.db'}"


def _check_local_writable(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise TrackingError(f"{what} '{path}' is not writable: {exc.strerror or exc}") from None


def setup_tracking(tracking_uri: str | None = None) -> str:
    """Point MLflow at ``tracking_uri`` (or the default) and check it can be written."""
    import mlflow

    uri = tracking_uri or default_tracking_uri()
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        db = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
        if db is None:
            raise TrackingError(f"tracking URI '{uri}' must look like sqlite:///path/to/file.db")
        _check_local_writable(db.parent, "tracking store folder")
        try:
            sqlite3.connect(db).close()
        except sqlite3.Error as exc:
            raise TrackingError(f"tracking store '{db}' cannot be opened: {exc}") from None
    elif parsed.scheme in ("", "file"):
        _check_local_writable(Path(parsed.path or uri), "tracking folder")
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.tracking.MlflowClient().search_experiments(max_results=1)
    except Exception as exc:  # server down, bad credentials, unreadable DB, ...
        raise TrackingError(f"tracking store '{uri}' cannot be used: {str(exc).splitlines()[0][:300]}") from None
    return uri


def artifact_root(tracking_uri: str) -> str | None:
    """Where new experiments keep artifacts: beside an embedded SQLite store, else the server's default."""
    if tracking_uri.startswith("sqlite:///"):
        root = Path(tracking_uri[len("sqlite:///"):]).parent / "artifacts"
        root.mkdir(parents=True, exist_ok=True)
        return root.as_uri()
    return None


def get_experiment_id(name: str, tracking_uri: str) -> str:
    import mlflow

    client = mlflow.tracking.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = artifact_root(tracking_uri)
    return client.create_experiment(name, artifact_location=f"{root}/{name}" if root else None)
