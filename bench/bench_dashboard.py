"""How long the dashboard's pages take with N calls in the store (SQLite), end to end over HTTP.

``python -m bench.bench_dashboard --calls 1000 --repeat 5``: fills a temp store with synthetic
calls (tests/browser/fill.py), serves the real dashboard on a free loopback port, and times
each page (server side: the store query and the render, plus loopback HTTP) as median and max
of ``--repeat`` requests. A figure, never a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from media_sidecar.config.loader import load_config
from media_sidecar.config.schema import Listen
from media_sidecar.store import open_store
from tests.browser.fill import fill
from tests.browser.harness import running_dashboard, with_store


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'calls.db'}"
        store = open_store(url)
        t0 = time.perf_counter()
        records = fill(store, args.calls, hours=24 * 7, now=dt.datetime.now(dt.UTC))
        fill_s = time.perf_counter() - t0
        store.close()
        cfg = load_config()
        cfg = dataclasses.replace(cfg, health=dataclasses.replace(
            cfg.health, listen=Listen("127.0.0.1", 0)))  # no live workers to poll
        cfg = with_store(cfg, url)
        pages = {
            "history": "/calls",
            "history page 10": "/calls?page=10",
            "search (words said)": "/calls?q=internet+is+down",
            "filters (assistant+outcome)": "/calls?assistant=billing&status=TRANSFERRED",
            "detail": f"/calls/{records[len(records) // 2]['uuid']}",
            "stats 24 h": "/stats?hours=24",
            "stats 7 days": "/stats?hours=168",
            "api/calls": "/api/calls",
        }
        print(f"{args.calls} calls saved in {fill_s:.2f} s "
              f"({fill_s / args.calls * 1000:.2f} ms a call)")
        with running_dashboard(cfg, store=open_store(url)) as base:
            for name, path in pages.items():
                times = []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    with urllib.request.urlopen(base + path, timeout=30) as resp:
                        body = resp.read()
                    times.append((time.perf_counter() - t) * 1000)
                print(f"{name:30s} median {statistics.median(times):7.1f} ms  "
                      f"max {max(times):7.1f} ms  {len(body) / 1024:6.1f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
