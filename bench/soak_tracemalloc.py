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
import gc
import sys
import tempfile
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


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def main(batches: int, batch: int, seconds: float, top: int) -> None:
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
            tracemalloc.start(12)
            snaps = []
            for k in range(batches):
                failed = await calls(batch)
                await trio.sleep(0.5)
                gc.collect()
                snap = tracemalloc.take_snapshot().filter_traces([
                    tracemalloc.Filter(False, tracemalloc.__file__),
                    tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
                ])
                snaps.append(snap)
                traced, _peak = tracemalloc.get_traced_memory()
                print(f"batch {k + 1}: {batch} calls (AI_STATUS: {failed}), traced "
                      f"{traced / 1024:.0f} KiB, RSS {rss_kib() / 1024:.1f} MiB", flush=True)
            n = batch * (len(snaps) - 1)
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
    a = ap.parse_args()
    trio.run(main, a.batches, a.batch, a.seconds, a.top)
