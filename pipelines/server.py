"""``deeprl server``: a shared MLflow tracking server for a team (``make mlflow-server``).

    deeprl server --backend-store-uri postgresql://USER@HOST:5432/mlflow \\
                  --artifacts-destination /srv/mlflow-artifacts   [--port 5000] [--workers 2]

runs ``mlflow server`` with

* the **backend store** (experiments, runs, params, metrics, tags, the model registry) in a database —
  PostgreSQL for a team; many clients write at once and the database serializes them;
* **artifact proxying** (``--serve-artifacts``): clients upload and download artifacts and models
  through the server (``mlflow-artifacts:/…`` URIs), so they need no credentials or mounts for the
  artifact store (``--artifacts-destination``: a folder on the server, or ``s3://…``, ``gs://…``);
* a **loopback** listener (127.0.0.1): the server has no authentication, so it is never exposed
  directly; a team puts it behind a reverse proxy that authenticates (or an SSH tunnel).

Clients point at it with ``--tracking-uri http://HOST:PORT`` or ``MLFLOW_TRACKING_URI``; every
``deeprl`` command (train, eval, tune run, recsys …) then records there. The command checks its
inputs first — the backend store must be a database URL that answers, the artifact folder must be
writable, the port free — and a bad one gives one ``error:`` line, never the server's traceback.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from core_rl.common.errors import ConfigError, TrackingError
from core_rl.common.runs import check_writable_dir

LOOPBACK = "127.0.0.1"
DATABASE_SCHEMES = ("postgresql", "postgres", "mysql", "mssql", "sqlite")


def _scheme(uri: str) -> str:
    return urlparse(uri).scheme.split("+", 1)[0]


def _postgres_driver(uri: str) -> str:
    """``postgres://`` and ``postgresql://`` name no driver; SQLAlchemy 2.1 then picks psycopg 3. Pick
    whichever of psycopg 3 and psycopg2 is installed, so both the check and the server use it."""
    for bare in ("postgresql://", "postgres://"):
        if uri.startswith(bare):
            import importlib.util

            driver = "psycopg" if importlib.util.find_spec("psycopg") else "psycopg2"
            return f"postgresql+{driver}://" + uri[len(bare) :]
    return uri


def check_backend_store(uri: str) -> str:
    """``uri`` (with an installed PostgreSQL driver named) if it is a database URL that accepts a
    connection, else a :class:`ConfigError` / :class:`TrackingError` naming it."""
    scheme = _scheme(uri)
    if scheme not in DATABASE_SCHEMES:
        raise ConfigError(f"--backend-store-uri must be a database URL (postgresql://user@host:port/db), got '{uri}'")
    uri = _postgres_driver(uri)
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    try:
        engine = sqlalchemy.create_engine(uri, poolclass=NullPool)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # no driver, refused, unknown database, bad password, ...
        raise TrackingError(
            f"backend store '{uri}' cannot be reached: {str(exc).strip().splitlines()[0][:300]}"
        ) from None
    return uri


def check_artifacts_destination(dest: str) -> str:
    """A remote store (``s3://``, ``gs://``, …) as given; a local path made absolute, created and checked
    writable."""
    parsed = urlparse(dest)
    if parsed.scheme not in ("", "file"):
        return dest
    path = Path(parsed.path if parsed.scheme == "file" else dest).expanduser().resolve()
    check_writable_dir(path, "--artifacts-destination", error=ConfigError)
    return str(path)


def check_port(port: int) -> int:
    """``port`` if it is in 1..65535 and free on the loopback interface."""
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {port}")
    with socket.socket() as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            raise ConfigError(f"--port {port} is already in use on {LOOPBACK}") from None
    return port


def server_argv(backend_store_uri: str, artifacts_destination: str, port: int = 5000, workers: int = 2) -> list[str]:
    """The ``mlflow server`` command line (run with this interpreter): database backend store, artifacts
    proxied from ``artifacts_destination``, listening on 127.0.0.1:``port`` with ``workers`` processes."""
    if workers < 1:
        raise ConfigError(f"--workers must be positive, got {workers}")
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--serve-artifacts",
        "--artifacts-destination",
        artifacts_destination,
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def serve(backend_store_uri: str, artifacts_destination: str, port: int = 5000, workers: int = 2) -> None:
    """Check the inputs, print where clients point, and replace this process by ``mlflow server``."""
    argv = server_argv(
        check_backend_store(backend_store_uri),
        check_artifacts_destination(artifacts_destination),
        check_port(port),
        workers,
    )
    print(f"MLflow server on http://{LOOPBACK}:{port} — clients: --tracking-uri http://{LOOPBACK}:{port}", flush=True)
    os.execv(argv[0], argv)
