"""The two database backends behind the call store: SQLite (default) and PostgreSQL.

Everything above this module writes portable SQL with ``?`` placeholders and runs it through
:class:`Db`; the one difference in parameter style (psycopg's ``%s``) is handled in
:meth:`Db.execute`. Connections are blocking: callers run them in worker threads. One
connection per store, used under a lock (SQLite connections and psycopg connections are not
to be shared by threads at once).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .paths import data_dir

DB_FILE_MODE = 0o640
BUSY_TIMEOUT_MS = 5000
"""How long a SQLite writer waits for another process's transaction (several media workers
write one file) before the write fails as ``database is locked``."""
PASSWORD_ENV = "AGI_VOICE_STORE_PASSWORD"


class StoreError(Exception):
    """The call store cannot be opened, migrated, read or written (the message says which
    store, with any password masked, and why)."""


def default_url() -> str:
    return f"sqlite:///{data_dir() / 'calls.db'}"


def mask_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: the only form that is logged."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = urllib.parse.quote(parts.username or "", safe="")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def backend_of(url: str) -> str:
    """``sqlite`` or ``postgresql`` for a store URL; raises :class:`StoreError` otherwise."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgresql", "postgres"):
        return "postgresql"
    raise StoreError(f"call store URL {mask_url(url)!r}: expected sqlite:///path or "
                     "postgresql://user@host/db")


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///relative`` or ``sqlite:////absolute`` URL."""
    rest = url.split(":", 1)[1]
    if not rest.startswith("///") or len(rest) <= 3:
        raise StoreError(f"call store URL {url!r}: expected sqlite:///relative/path.db or "
                         "sqlite:////absolute/path.db")
    return Path(rest[3:])


class Db:
    """One connection to one store, serialised by a lock.

    :meth:`transaction` runs a block in one transaction (SQLite: ``BEGIN IMMEDIATE``, so a
    writer takes the write lock up front and waits ``busy_timeout`` for it instead of failing
    half-way); :meth:`read` runs reads without one. Database errors come out as
    :class:`StoreError`. A PostgreSQL connection that broke is reopened on the next use.
    """

    def __init__(self, url: str, *, create: bool) -> None:
        self.url = url
        self.backend = backend_of(url)
        self._lock = threading.Lock()
        self._conn: Any = None
        self._create = create
        self._errors: tuple[type[Exception], ...] = (sqlite3.Error,)
        if self.backend == "postgresql":
            import psycopg

            self._errors = (psycopg.Error,)
        self._connect()

    # connections

    def _connect(self) -> None:
        try:
            if self.backend == "sqlite":
                self._conn = self._connect_sqlite()
            else:
                self._conn = self._connect_postgresql()
        except StoreError:
            raise
        except Exception as exc:
            if not isinstance(exc, (OSError, sqlite3.Error, *self._errors)):
                raise
            raise StoreError(f"cannot open call store {mask_url(self.url)}: {exc}") from exc

    def _connect_sqlite(self) -> sqlite3.Connection:
        path = sqlite_path(self.url)
        if not path.exists():
            if not self._create:
                raise StoreError(f"no call store at {path}")
            path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            # created with its mode before SQLite opens it (SQLite would use 0644); the -wal
            # and -shm files SQLite makes take the database file's mode
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, DB_FILE_MODE)
            os.close(fd)
            os.chmod(path, DB_FILE_MODE)
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys = ON")
            _switch_to_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL: durable at checkpoints, never corrupt
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_postgresql(self) -> Any:
        import psycopg

        kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": 5}
        password = os.environ.get(PASSWORD_ENV, "")
        if password:
            kwargs["password"] = password
        return psycopg.connect(self.url, **kwargs)

    def _usable(self) -> Any:
        if self._conn is None or (self.backend == "postgresql"
                                  and (self._conn.closed or self._conn.broken)):
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._connect()
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # statements

    def sql(self, text: str) -> str:
        """Portable SQL (``?`` placeholders) in this backend's parameter style."""
        return text if self.backend == "sqlite" else text.replace("?", "%s")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """One transaction, committed when the block ends, rolled back if it raises."""
        with self._lock:
            conn = self._usable()
            try:
                if self.backend == "sqlite":
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        yield Cursor(self, conn.cursor())
                    except BaseException:
                        conn.rollback()
                        raise
                    conn.commit()
                else:
                    with conn.transaction(), conn.cursor() as cur:
                        yield Cursor(self, cur)
            except self._errors as exc:
                raise StoreError(f"call store {mask_url(self.url)}: {exc}") from exc

    @contextlib.contextmanager
    def read(self) -> Iterator[Cursor]:
        """Reads, each statement on its own (a consistent snapshot is not needed)."""
        with self._lock:
            conn = self._usable()
            try:
                cur = conn.cursor()
                try:
                    yield Cursor(self, cur)
                finally:
                    cur.close()
            except self._errors as exc:
                raise StoreError(f"call store {mask_url(self.url)}: {exc}") from exc


class Cursor:
    """A cursor that takes portable SQL and gives rows as dicts."""

    def __init__(self, db: Db, cur: Any) -> None:
        self._db = db
        self._cur = cur

    def execute(self, text: str, params: Sequence[Any] = ()) -> Cursor:
        self._cur.execute(self._db.sql(text), tuple(params))
        return self

    def executemany(self, text: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._cur.executemany(self._db.sql(text), [tuple(r) for r in rows])

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)

    def one(self) -> tuple[Any, ...] | None:
        row = self._cur.fetchone()
        return None if row is None else tuple(row)

    def dicts(self) -> list[dict[str, Any]]:
        names = [d[0] for d in self._cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in self._cur.fetchall()]

    def tuples(self) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._cur.fetchall()]


def _switch_to_wal(conn: sqlite3.Connection, *, tries: int = 50, pause: float = 0.1) -> None:
    """``PRAGMA journal_mode = WAL``, retried while the file is locked: switching needs the
    database to itself, and SQLite can answer "database is locked" at once, without its busy
    handler, while another process opens or migrates the same new file (seen in CI: four
    media workers starting on one new store, one lost its first record). About 5 s at most."""
    for attempt in range(tries):
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or attempt == tries - 1:
                raise
            time.sleep(pause)
