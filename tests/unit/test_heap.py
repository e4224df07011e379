"""The periodic full collection both planes run (media_sidecar/ops/heap.py)."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref

import pytest
import trio

from fastagi_server import server as fastagi_server
from media_sidecar import process as media_process
from media_sidecar.ops.heap import FULL_COLLECTION_SECONDS, full_collection


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def cyclic_garbage() -> weakref.ref[Node]:
    return weakref.ref(Node())


@pytest.fixture
def no_automatic_gc():
    was = gc.isenabled()
    gc.disable()  # only the code under test may collect
    try:
        yield
    finally:
        if was:
            gc.enable()


def test_full_collection_frees_cycles_and_logs_what_it_found(
        no_automatic_gc, caplog: pytest.LogCaptureFixture) -> None:
    ref = cyclic_garbage()
    assert ref() is not None
    log = logging.getLogger("agi_voice.test.heap")
    with caplog.at_level(logging.DEBUG, logger=log.name):
        full_collection(log)
    assert ref() is None
    (line,) = [r.getMessage() for r in caplog.records if r.name == log.name]
    assert line.startswith("full garbage collection: ") and " unreachable objects in " in line


async def test_the_media_process_collects_once_per_period(no_automatic_gc, autojump_clock) -> None:
    refs = [cyclic_garbage()]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(media_process.collect_periodically)
        await trio.sleep(FULL_COLLECTION_SECONDS - 1)
        assert refs[0]() is not None  # not before the period
        await trio.sleep(2)
        assert refs[0]() is None
        refs.append(cyclic_garbage())
        await trio.sleep(FULL_COLLECTION_SECONDS)
        assert refs[1]() is None  # and again, every period
        nursery.cancel_scope.cancel()


def test_the_fastagi_process_collects_until_cancelled(no_automatic_gc) -> None:
    async def main() -> None:
        ref = cyclic_garbage()
        task = asyncio.create_task(fastagi_server.collect_periodically(every=0.0))
        for _ in range(3):
            await asyncio.sleep(0)
        assert ref() is None
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_a_settled_media_process_runs_young_collections_only() -> None:
    """After start-up (media_sidecar.process.settle_heap) the collector never starts an older
    collection by itself (one walked 500 calls' objects for 75 ms inside the frame clock's
    step): young ones still free young cycles, and the periodic full one does the rest."""
    thresholds, was_enabled = gc.get_threshold(), gc.isenabled()
    gc.enable()
    try:
        media_process.settle_heap()
        before = [s["collections"] for s in gc.get_stats()]
        keep = []
        for i in range(600_000):  # 30 generation-0 thresholds' worth of survivors
            keep.append([i])
            if i % 3 == 0:
                Node()  # and young cyclic garbage
        after = [s["collections"] for s in gc.get_stats()]
        assert after[0] - before[0] >= 10  # young collections ran
        assert after[1] == before[1] and after[2] == before[2]  # no older one
        del keep
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        if not was_enabled:
            gc.disable()
