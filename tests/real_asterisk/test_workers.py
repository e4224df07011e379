"""The product runs several media workers on the real Asterisk: concurrent calls are placed on
different workers (lowest load first), and each is served whole by its own."""

from __future__ import annotations

from pathlib import Path

import trio

from .audio import Phrase
from .peer import AmiDriver, AsteriskPeer
from .product import WORKERS, ProductProcess
from .scenario import CallerPlan, CallResult, place_call


async def test_concurrent_calls_are_spread_over_the_media_workers(
        asterisk: AsteriskPeer, agi_voice: ProductProcess, ami: AmiDriver,
        phrases: dict[str, Phrase], workdir: Path, measured: dict[str, object]) -> None:
    calls: dict[int, CallResult] = {}

    async def one(i: int) -> None:
        # greeting, the hours question, the answer, then the caller hangs up
        plan = CallerPlan().wait(2.5).say(phrases["hours"]).wait(6)
        calls[i] = await place_call(asterisk, ami, plan, script="agent", workdir=workdir,
                                    name=f"worker{i}")

    async with trio.open_nursery() as nursery:
        for i in range(WORKERS):
            nursery.start_soon(one, i)
            await trio.sleep(0.5)  # the first call is on its worker before the next is placed
    records = [await agi_voice.wait_record(calls[i].channel) for i in range(WORKERS)]
    assert sorted(r["worker"] for r in records) == [str(i) for i in range(WORKERS)], records
    for rec in records:
        assert rec["status"] == "CALLER_HANGUP", rec
        assert [t["intent"] for t in rec["turns"]][:2] == ["greeting", "hours"], rec["turns"]
        assert rec["playout"]["late_frames"] == 0, rec["playout"]
    measured["workers_used"] = sorted(r["worker"] for r in records)
