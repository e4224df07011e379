"""What grows per call: tracemalloc snapshots between batches of sequential echo calls.

    python bench/soak_tracemalloc.py [--batches 8] [--batch 100] [--seconds 0.3]

Both planes run in this process, as the e2e tests run them (tests/e2e/stack.py: the sidecar in
trio, FastAGI on its own asyncio loop in a thread, the fake AMI), so one tracemalloc sees both;
a line's file says which plane it belongs to. After a warm-up batch, each batch of calls is
followed by a snapshot; the report lists the lines whose allocations grew the most from the
first snapshot after warm-up to the last, per call, plus the traced total and the process RSS
per batch (RSS growing while the traced total does not is the allocator, not Python objects).

Not a test and not for CI: a diagnostic (bench/BENCHMARKS.md, "Soak").
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import gc
import os
import re
import sys
import tempfile
import threading
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

from fastagi_server.emulator.caller import CallerScript  # noqa: E402
from media_sidecar.config.loader import parse_config  # noqa: E402
from tests.e2e.stack import open_stack  # noqa: E402
from tests.fakes import tone  # noqa: E402

CONFIG = """
routing: {default: echo}
drain: {announcement: ""}
assistants:
  echo: {provider: echo, apology: "", echo: {chunk_ms: 100}}
"""


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def malloc_kib() -> tuple[int, int, int]:
    """glibc's heap (all arenas): bytes in use, free but held, and in mmapped chunks (KiB)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
        m = libc.mallinfo2()
    except (OSError, AttributeError):
        return (0, 0, 0)
    return (m.uordblks // 1024, m.fordblks // 1024, m.hblkhd // 1024)


def anon_rss_by_size() -> dict[str, int]:
    """RSS (KiB) of anonymous mappings by their size: pymalloc's arenas are 1 MiB mappings
    (CPython 3.10+ on 64-bit), glibc's heap is ``[heap]`` and 64 MiB thread arenas."""
    out: dict[str, int] = collections.Counter()
    size_kib, kind = 0, ""
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and not head[0].endswith(":"):
            lo, hi = (int(x, 16) for x in head[0].split("-"))
            size_kib = (hi - lo) // 1024
            name = head[5] if len(head) > 5 else ""
            kind = ("heap" if name == "[heap]" else "stack" if name.startswith("[stack") else
                    "file" if name.startswith("/") else "other" if name else
                    "1MiB" if size_kib == 1024 else "64MiB" if size_kib in (65536, 65532) else
                    "anon")
        elif head[0] == "Rss:":
            out[kind] += int(head[1])
    return dict(out)


def pymalloc() -> dict[str, int]:
    """pymalloc's own figures (``sys._debugmallocstats``): arenas held now, KiB in its blocks
    in use, KiB free in its pools and arenas."""
    with tempfile.TemporaryFile("w+") as f:
        saved = os.dup(2)
        sys.stderr.flush()
        os.dup2(f.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read()

    def num(label: str) -> int:
        m = re.search(rf"^{re.escape(label)}\s*=\s*([\d,]+)", text, re.M)
        return int(m.group(1).replace(",", "")) if m else -1

    return {"arenas": num("# arenas allocated current"),
            "used_kib": num("# bytes in allocated blocks") // 1024,
            "free_kib": (num("# bytes in available blocks") + num("# bytes in empty pools")
                         + num("# bytes lost to pool headers")) // 1024}


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def main(batches: int, batch: int, seconds: float, top: int, trace: bool) -> None:
    cfg = parse_config(CONFIG, "soak-tracemalloc.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        async with open_stack(cfg, str(Path(tmp) / "calls.jsonl")) as stack:
            audio = tone(300, seconds)

            async def calls(n: int) -> str:
                statuses: collections.Counter[str] = collections.Counter()
                for _ in range(n):
                    script = CallerScript().speak(audio, at=0.05).hangup(at=seconds + 0.1)
                    call = await stack.call(script, seconds=30)
                    statuses[call.variables.get("AI_STATUS", "unset")] += 1
                await stack.settle()
                return ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))

            print(f"warm-up: {batch} calls", flush=True)
            await calls(batch)
            gc.collect()
            if trace:  # (with tracemalloc on, pymalloc reports no figures of its own)
                tracemalloc.start(12)
            snaps = []
            for k in range(batches):
                failed = await calls(batch)
                await trio.sleep(0.5)
                gc.collect()
                if trace:
                    snaps.append(tracemalloc.take_snapshot().filter_traces([
                        tracemalloc.Filter(False, tracemalloc.__file__),
                        tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
                    ]))
                traced, _peak = tracemalloc.get_traced_memory()
                used, free, mapped = malloc_kib()
                print(f"batch {k + 1}: {batch} calls (AI_STATUS: {failed}), traced "
                      f"{traced / 1024:.0f} KiB, RSS {rss_kib() / 1024:.1f} MiB, malloc in use "
                      f"{used} KiB, free held {free} KiB, mmapped {mapped} KiB, threads "
                      f"{threading.active_count()}; RSS by mapping {anon_rss_by_size()}; "
                      f"pymalloc {pymalloc()}",
                      flush=True)
            if not trace:
                return
            n = batch * (len(snaps) - 1)
            print(f"\ngrowth by file, per call ({n} calls):")
            for stat in snaps[-1].compare_to(snaps[0], "filename")[:top]:
                if stat.size_diff > 0:
                    print(f"{stat.size_diff / n:8.1f} B/call  {stat.traceback[0].filename}")
            print(f"\ngrowth from the first to the last snapshot, per call ({n} calls):")
            for stat in snaps[-1].compare_to(snaps[0], "traceback")[:top]:
                if stat.size_diff <= 0:
                    continue
                print(f"{stat.size_diff / n:8.1f} B/call {stat.count_diff / n:6.2f} "
                      f"blocks/call  total {stat.size_diff / 1024:.1f} KiB")
                for line in stat.traceback.format(limit=6):
                    print("    " + line)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=0.3)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--no-trace", action="store_true",
                    help="no tracemalloc: RSS, glibc's and pymalloc's own figures only")
    a = ap.parse_args()
    trio.run(main, a.batches, a.batch, a.seconds, a.top, not a.no_trace)
