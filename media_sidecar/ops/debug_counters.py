"""Debug counters for soak runs: each plane's live task count, written to a file once a second.

Off unless ``AGI_VOICE_DEBUG_COUNTERS`` names a directory (bench/soak.py sets it). Each process
then rewrites ``<dir>/<pid>.json`` (``{"pid", "kind", "tasks", "at"}`` and :func:`memory`'s figures) every
:data:`INTERVAL` seconds: ``tasks`` is the number of live trio tasks (the media worker) or
asyncio tasks (FastAGI). Counting walks the task tree (trio) or the loop's task set (asyncio):
O(tasks), once a second, so a few microseconds per call at soak sizes. A write that fails is
ignored (it is a debugging aid). Cancelling the writer ends it; it raises nothing else.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import json
import os
import sys
import time
from pathlib import Path

ENV = "AGI_VOICE_DEBUG_COUNTERS"
INTERVAL = 1.0


def target() -> Path | None:
    """The file this process writes, or None when the counters are off."""
    d = os.environ.get(ENV, "")
    return Path(d) / f"{os.getpid()}.json" if d else None


def memory() -> dict[str, int]:
    """Where this process's memory is, cheaply (no walk of the heap): Python's allocated
    blocks (``sys.getallocatedblocks``: live objects and buffers; cycles not yet collected
    count too), the cyclic collector's pending counts and collections per generation, and
    glibc's heap in use / free but held (``mallinfo2``, KiB; RSS growing while these do not is
    the allocator keeping pages, not live data)."""
    out: dict[str, int] = {"blocks": sys.getallocatedblocks()}
    for gen, (pending, stats) in enumerate(zip(gc.get_count(), gc.get_stats(), strict=True)):
        out[f"gc{gen}_pending"] = pending
        out[f"gc{gen}_collections"] = int(stats.get("collections", 0))
    out["gc_frozen"] = gc.get_freeze_count()
    heap = _mallinfo2()
    if heap is not None:
        out["heap_used_kib"], out["heap_free_kib"] = heap
    return out


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mallinfo2() -> tuple[int, int] | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
        m = libc.mallinfo2()
    except (OSError, AttributeError):  # not glibc, or glibc before 2.33
        return None
    return (m.uordblks + m.hblkhd) // 1024, m.fordblks // 1024


def _write(path: Path, kind: str, tasks: int) -> None:
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps({"pid": os.getpid(), "kind": kind, "tasks": tasks,
                                   "at": time.time(), **memory()}))
        tmp.replace(path)
    except OSError:
        pass


def trio_task_count() -> int:
    """Live trio tasks in this run (the root task's tree)."""
    import trio  # here: the FastAGI process (asyncio) imports this module too

    count = 0
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is None:
            continue
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


async def run_trio(path: Path, kind: str = "sidecar") -> None:
    """Write the trio task count to ``path`` every INTERVAL seconds until cancelled."""
    import trio

    while True:
        _write(path, kind, trio_task_count())
        await trio.sleep(INTERVAL)


async def run_asyncio(path: Path, kind: str = "fastagi") -> None:
    """Write the asyncio task count to ``path`` every INTERVAL seconds until cancelled."""
    while True:
        _write(path, kind, len(asyncio.all_tasks()))
        await asyncio.sleep(INTERVAL)
