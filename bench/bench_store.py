"""Call store write and read timings: save() per call, list_calls() and get_call().

Not part of ``bench/run.py``. ``--url`` picks the store (default: a SQLite file in a temporary
directory); each call has ``--turns`` speech turns, two actions and two digits.

    .venv/bin/python bench/bench_store.py --calls 200
    .venv/bin/python bench/bench_store.py --url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from media_sidecar.session.records import CallRecord, ToolAction, TurnRecord  # noqa: E402
from media_sidecar.store import open_store  # noqa: E402


def make(i: int, turns: int) -> dict:
    r = CallRecord(uuid=f"bench-{i}", assistant="front-desk", engine="pipeline",
                   caller=f"555{i:04d}", status="COMPLETED", dtmf=["1", "#"])
    for t in range(turns):
        r.add_turn(TurnRecord(index=t, trigger="speech", caller_text="I would like billing " * 3,
                              agent_text="Transferring you to billing now.", latency_ms=400.0 + t,
                              stage_ms={"stt": 120.0, "first_frame": 400.0 + t}))
    r.actions += [ToolAction(t=1.0, kind="tool", tool="crm", arguments={"id": i}, result="ok"),
                  ToolAction(t=2.0, kind="transfer", destination="billing")]
    return asdict(r)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="")
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--turns", type=int, default=8)
    args = ap.parse_args()
    url = args.url or f"sqlite:///{tempfile.mkdtemp()}/calls.db"
    records = [make(i, args.turns) for i in range(args.calls)]
    with open_store(url) as store:
        saves = []
        for rec in records:
            t0 = time.perf_counter()
            store.save(rec)
            saves.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        store.list_calls(q="billing", limit=50)
        listed = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        store.get_call(f"bench-{args.calls // 2}")
        got = (time.perf_counter() - t0) * 1000
        saves.sort()
        print(f"{store.backend}: {args.calls} calls x {args.turns} turns: save p50 "
              f"{statistics.median(saves):.2f} ms, p95 {saves[int(len(saves) * 0.95)]:.2f} ms; "
              f"list_calls(q=...) {listed:.1f} ms; get_call {got:.2f} ms")


if __name__ == "__main__":
    main()
