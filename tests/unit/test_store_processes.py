"""Several media worker processes write one SQLite call store at once, as ``serve`` runs them
(one StoreWriter each): every record arrives. WAL, ``busy_timeout`` and short ``BEGIN
IMMEDIATE`` transactions are what make this hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from media_sidecar.store import open_store

WORKER = """
import sys, threading
from media_sidecar.session.records import CallRecord, TurnRecord
from media_sidecar.store.writer import StoreWriter

url, name, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
w = StoreWriter(url, queue_size=n)
w.start()
sys.stdout.write("ready\\n"); sys.stdout.flush()
sys.stdin.readline()  # every process starts writing at once
for i in range(n):
    r = CallRecord(uuid=f"{name}-{i}", assistant="a", engine="pipeline", worker=name)
    for t in range(5):
        r.add_turn(TurnRecord(index=t, trigger="speech", caller_text="hello " * 20,
                              latency_ms=100.0 + t))
    w.submit(r)
ok = w.close(timeout=60.0)
print(f"{w.saved} {w.errors} {ok}")
"""


def test_four_processes_write_one_sqlite_store_and_every_row_arrives(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    # nothing made beforehand: the processes create and migrate the file at once too
    n, names = 60, ["0", "1", "2", "3"]
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, url, name, str(n), "go"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for name in names]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [p.communicate(timeout=90)[0].split() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert results == [[str(n), "0", "True"]] * len(names)
    with open_store(url) as s:
        calls, total = s.list_calls(limit=1000)
        assert total == n * len(names)
        assert {c["worker"] for c in calls} == set(names)
        with s._db.read() as cur:
            assert cur.execute("SELECT COUNT(*) FROM turns").one() == (5 * n * len(names),)
