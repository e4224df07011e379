"""The call store's test backends: a SQLite file per test, and a private PostgreSQL cluster.

The cluster is a real PostgreSQL server (``initdb`` + ``pg_ctl`` from
``/usr/lib/postgresql/*/bin``) in a temporary directory on a free loopback port, started once
per test session, with a fresh schema per test. As root, initdb refuses to run, so the
cluster runs as the ``postgres`` user (``runuser``) in a directory that user owns. Tests that
need it are skipped, saying why, only when no PostgreSQL binaries are installed.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """A private PostgreSQL server for the tests (trust authentication on loopback only)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="agi-voice-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=self.root)
        if done.returncode != 0:
            log = self.root / "log"
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr or done.stdout}"
                               + (log.read_text() if log.exists() else ""))

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60",
                  "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
                  "-c fsync=off -c synchronous_commit=off -c full_page_writes=off", "start")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def reset(self) -> None:
        """An empty ``public`` schema: what a test's store starts from."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")


_cluster: PgCluster | None = None


def cluster(request: pytest.FixtureRequest) -> PgCluster:
    """The session's cluster, started at first use (stopped at the end of the session)."""
    global _cluster
    if _cluster is None:
        bindir = pg_bin()
        if bindir is None:
            pytest.skip("no PostgreSQL binaries (/usr/lib/postgresql/*/bin/initdb): "
                        "apt-get install postgresql to test the store on PostgreSQL")
        started = PgCluster(bindir)
        started.start()
        _cluster = started

        def stop() -> None:
            global _cluster
            started.stop()
            _cluster = None

        request.session.config.add_cleanup(stop)
    return _cluster


def store_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    """A fresh, empty store's URL on ``backend``."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'calls.db'}"
    pg = cluster(request)
    pg.reset()
    return pg.url()
