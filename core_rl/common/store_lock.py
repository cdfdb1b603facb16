"""One lock per database, across processes: :class:`StoreLock`.

Processes that start together on an empty store race to create its schema (MLflow's SQLite file,
Optuna's tables in PostgreSQL): ``CREATE TABLE`` and the migrations are not safe to run twice at
once, and all but one process fail (``UniqueViolation ... pg_type_typname_nsp_index``,
``table _alembic_tmp_metrics already exists``). Whatever must happen once (create the schema,
create an experiment, claim the next trial of a shared budget) runs inside the store's lock:

* ``sqlite:///path/file.db`` — an exclusive ``flock`` on ``path/file.db.lock`` (beside the database,
  so it lives in the same data folder);
* ``postgresql://…`` — a session-level advisory lock, ``pg_advisory_lock(k)``, with ``k`` a 63-bit
  hash of the lock's name, held on its own connection;
* anything else (an in-memory SQLite, a tracking server over HTTP, a file store) — no lock: the
  server, or the single process, serializes.

A process that dies holding the lock releases it: the kernel drops its ``flock``, the server ends
its session and with it the advisory lock. ``with lock:`` nests in one thread (a re-entrant count).
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from types import TracebackType
from typing import Any


def _sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def _lock_key(name: str) -> int:
    """A signed 63-bit integer for ``pg_advisory_lock`` from ``name``."""
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big") >> 1


class StoreLock:
    """An exclusive, re-entrant, cross-process lock named ``name`` in the store at ``url``."""

    def __init__(self, url: str, name: str = "schema"):
        self.url = url
        self.name = name
        self._path = _sqlite_path(url)
        self._postgres = url.startswith(("postgresql", "postgres:"))
        self._depth = 0
        self._thread_lock = threading.RLock()
        self._fh: Any = None
        self._conn: Any = None
        self._engine: Any = None

    @property
    def kind(self) -> str:
        """``flock``, ``advisory`` or ``none``."""
        return "flock" if self._path is not None else "advisory" if self._postgres else "none"

    def acquire(self) -> None:
        self._thread_lock.acquire()
        self._depth += 1
        if self._depth > 1:
            return
        try:
            if self._path is not None:
                self._acquire_file()
            elif self._postgres:
                self._acquire_advisory()
        except BaseException:
            self._depth -= 1
            self._thread_lock.release()
            raise

    def release(self) -> None:
        self._depth -= 1
        try:
            if self._depth == 0:
                if self._fh is not None:
                    import fcntl

                    fcntl.flock(self._fh, fcntl.LOCK_UN)
                    self._fh.close()
                    self._fh = None
                if self._conn is not None:
                    from sqlalchemy import text

                    try:
                        self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _lock_key(self.name)})
                        self._conn.commit()
                    except Exception:  # a dropped connection has released the lock already
                        self._drop_connection()
        finally:
            self._thread_lock.release()

    def close(self) -> None:
        """Drop the lock's database connection (it is kept between acquisitions)."""
        self._drop_connection()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def _acquire_file(self) -> None:
        import fcntl

        assert self._path is not None
        lock_path = self._path.with_name(self._path.name + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(lock_path, "a+")  # noqa: SIM115 - held open while locked
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
        except BaseException:
            fh.close()
            raise
        self._fh = fh

    def _acquire_advisory(self) -> None:
        import sqlalchemy
        from sqlalchemy import text
        from sqlalchemy.pool import NullPool

        if self._engine is None:
            self._engine = sqlalchemy.create_engine(self.url, poolclass=NullPool)
        for attempt in (0, 1):  # a connection dropped since the last use is reopened once
            if self._conn is None:
                self._conn = self._engine.connect()
            try:
                self._conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _lock_key(self.name)})
                self._conn.commit()
                return
            except sqlalchemy.exc.DBAPIError:
                self._drop_connection()
                if attempt:
                    raise

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None
