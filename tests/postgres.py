"""A private PostgreSQL cluster for tests: :func:`private_postgres` (``initdb`` + ``pg_ctl`` on loopback).

The cluster lives in a fresh temp folder, listens on 127.0.0.1 at a free port (its socket in that
folder, never the system's), trusts local connections, and is stopped and deleted on exit. Running as
root, the server runs as the ``postgres`` user (PostgreSQL refuses root). Tests that need it call
:func:`require_postgres` first: it skips, with the reason, when the server binaries (Debian's
``postgresql`` package) or the ``psycopg2`` driver are missing.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest


def pg_bin() -> Path | None:
    """The folder of ``initdb``/``pg_ctl`` (on ``$PATH``, else the newest /usr/lib/postgresql/*/bin)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_postgres() -> Path:
    """The server binaries' folder; skips the test (with the reason) when the server or driver is missing."""
    pg = pg_bin()
    if pg is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    pytest.importorskip("psycopg2", reason="psycopg2 driver not installed (pip install psycopg2-binary)")
    return pg


def create_database(base_url: str, name: str) -> str:
    """``CREATE DATABASE name`` on the cluster at ``base_url`` (``postgresql+psycopg2://user@host:port``);
    returns the database's URL."""
    import psycopg2

    dsn = base_url.replace("postgresql+psycopg2://", "postgresql://")
    conn = psycopg2.connect(dsn + "/postgres")
    conn.autocommit = True
    conn.cursor().execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return f"{base_url}/{name}"


@contextmanager
def private_postgres(databases: Sequence[str] = (), max_connections: int = 60) -> Iterator[str]:
    """Start a throw-away cluster; yields its base URL ``postgresql+psycopg2://postgres@127.0.0.1:PORT``
    (append ``/DB``), with ``databases`` already created. Stopped and deleted on exit."""
    pg = require_postgres()
    prefix: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="deeprl-pg-"))
    if os.geteuid() == 0:  # the server refuses to run as root: run it as the package's postgres user
        try:
            import pwd

            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    root.chmod(0o755)
    data, log = root / "data", root / "server.log"
    port = free_port()
    started = False
    try:
        subprocess.run(
            prefix + [str(pg / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c max_connections={max_connections} -c fsync=off"
        subprocess.run(
            prefix + [str(pg / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(log), "-w", "start"],
            check=True,
            capture_output=True,
        )
        started = True
        base = f"postgresql+psycopg2://postgres@127.0.0.1:{port}"
        for name in databases:
            create_database(base, name)
        yield base
    finally:
        if started:
            subprocess.run(
                prefix + [str(pg / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True
            )
        shutil.rmtree(root, ignore_errors=True)
