"""Debug counters for soak runs: each plane's live task count, written to a file once a second.

Off unless ``AGI_VOICE_DEBUG_COUNTERS`` names a directory (bench/soak.py sets it). Each process
then rewrites ``<dir>/<pid>.json`` (``{"pid", "kind", "tasks", "at"}``) every
:data:`INTERVAL` seconds: ``tasks`` is the number of live trio tasks (the media worker) or
asyncio tasks (FastAGI). Counting walks the task tree (trio) or the loop's task set (asyncio):
O(tasks), once a second, so a few microseconds per call at soak sizes. A write that fails is
ignored (it is a debugging aid). Cancelling the writer ends it; it raises nothing else.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

ENV = "AGI_VOICE_DEBUG_COUNTERS"
INTERVAL = 1.0


def target() -> Path | None:
    """The file this process writes, or None when the counters are off."""
    d = os.environ.get(ENV, "")
    return Path(d) / f"{os.getpid()}.json" if d else None


def _write(path: Path, kind: str, tasks: int) -> None:
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps({"pid": os.getpid(), "kind": kind, "tasks": tasks,
                                   "at": time.time()}))
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
