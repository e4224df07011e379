"""Placing calls across media workers, over real loopback sockets.

Two sidecars are started independently (each ``run_sidecar`` on its own ports, as on two media
hosts) and given to the FastAGI server as a ``fastagi.media`` list of control URLs
(``sidecar.workers: 0``: no local ones). Calls come from the Asterisk emulator.

- the least-loaded worker gets the call (ties: the first listed);
- a worker that refuses (an assistant it cannot serve) is skipped, and one whose link is down;
- a worker that dies mid-call loses only its own call: that call gets ``AI_STATUS=FAILED``
  with a reason and the dialplan goes on, while the call on the other worker completes and
  new calls go to the survivor.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from fastagi_server.emulator.call import CallResult, run_call
from fastagi_server.emulator.caller import CallerScript
from fastagi_server.emulator.channel import ChannelSpec
from media_sidecar.app import SidecarPorts, run_sidecar
from media_sidecar.config.loader import load_config
from media_sidecar.config.schema import AmiConfig, Config, FastAgiConfig, Listen, MediaHost
from media_sidecar.server.health import SidecarHealth
from tests.e2e.stack import CountingRecords, FastAgiThread, fake_services

pytestmark = pytest.mark.e2e
_IDS = itertools.count(1)

BASE = load_config()
ASSISTANT = BASE.assistants[0].name


@dataclass
class Worker:
    """One independently started sidecar, in its own cancel scope (cancelling it is its
    process dying: every socket it holds closes)."""

    name: str
    records: CountingRecords
    unavailable: dict[str, str] = field(default_factory=dict)
    health: SidecarHealth = field(default_factory=SidecarHealth)
    scope: trio.CancelScope | None = None
    ports: SidecarPorts | None = None

    async def run(self, cfg: Config, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as self.scope:
            await run_sidecar(cfg, fake_services(), self.unavailable, records=self.records,
                              health=self.health, worker=self.name, task_status=task_status)

    def kill(self) -> None:
        assert self.scope is not None
        self.scope.cancel()

    @property
    def calls(self) -> int:
        hub = self.health.hub
        return 0 if hub is None else hub.load().calls

    @property
    def host(self) -> MediaHost:
        assert self.ports is not None
        return MediaHost(control_url=f"ws://127.0.0.1:{self.ports.control}/control",
                         audiosocket_address=f"127.0.0.1:{self.ports.audiosocket}",
                         name=self.name)


@dataclass
class Pool:
    workers: list[Worker]
    fastagi: FastAgiThread
    agi_port: int

    async def call(self, name: str, hangup_at: float = 2.0) -> CallResult:
        spec = ChannelSpec(script="agent", dnid="7000", channel=f"PJSIP/{name}-1",
                       uniqueid=f"1795267856.{next(_IDS)}")
        with trio.fail_after(30):
            result = await run_call("127.0.0.1", self.agi_port, spec,
                                    CallerScript().hangup(at=hangup_at))
        # the FastAGI side records the outcome once its AGI session is over, which can be
        # after the emulated channel has seen the end of AGI()
        await self.until(lambda: any(o.channel == spec.channel
                                     for o in self.fastagi.server.handler.outcomes))
        return result

    def placed_on(self, channel_name: str) -> str:
        """The worker the FastAGI side placed a finished call on (its outcome)."""
        outcomes = [o for o in self.fastagi.server.handler.outcomes
                    if o.channel == f"PJSIP/{channel_name}-1"]
        assert len(outcomes) == 1, outcomes
        return outcomes[0].worker

    async def loads(self) -> list[int]:
        async def read() -> list[int]:
            return [cl.load for cl in self.fastagi.server.control.clients]

        return await trio.to_thread.run_sync(self.fastagi.call, read())

    async def until_loads(self, want: list[int]) -> None:
        """Until the FastAGI side sees these loads (a worker reports within 1 s)."""
        with trio.fail_after(10):
            while True:
                if await self.loads() == want:
                    return
                await trio.sleep(0.02)

    async def until(self, what: Any) -> None:
        """Until ``what()`` holds (what the sidecars report changes within a frame or two)."""
        with trio.fail_after(10):
            while True:
                if what():
                    return
                await trio.sleep(0.02)


def sidecar_config(records: str) -> Config:
    return dataclasses.replace(
        BASE, health=dataclasses.replace(BASE.health, enabled=False),
        sidecar=dataclasses.replace(BASE.sidecar, audiosocket=Listen("127.0.0.1", 0),
                                    control=Listen("127.0.0.1", 0), records_path=records,
                                    workers=1))


@asynccontextmanager
async def open_pool(tmp_path: Path, n: int = 2,
                    unavailable: dict[int, dict[str, str]] | None = None,
                    ) -> AsyncIterator[Pool]:
    unavailable = unavailable or {}
    async with trio.open_nursery() as nursery:
        workers = []
        for i in range(n):
            rec = str(tmp_path / f"w{i}.jsonl")
            w = Worker(f"w{i}", CountingRecords(rec), dict(unavailable.get(i, {})))
            w.ports = await nursery.start(w.run, sidecar_config(rec))
            workers.append(w)
        cfg = dataclasses.replace(
            BASE, ami=AmiConfig(),
            sidecar=dataclasses.replace(BASE.sidecar, workers=0),
            fastagi=FastAgiConfig(listen=Listen("127.0.0.1", 0),
                                  media=tuple(w.host for w in workers)))
        fastagi = FastAgiThread(cfg)
        agi_port = await fastagi.start()
        pool = Pool(workers, fastagi, agi_port)
        clients = fastagi.server.control.clients
        await pool.until(lambda: all(cl.connected and cl.reported is not None
                                     for cl in clients))
        try:
            yield pool
        finally:
            await fastagi.stop()
            nursery.cancel_scope.cancel()


async def test_the_least_loaded_worker_gets_the_call(tmp_path):
    async with open_pool(tmp_path) as pool:
        w0, w1 = pool.workers
        results: dict[str, CallResult] = {}

        async def place(name: str, hangup_at: float) -> None:
            results[name] = await pool.call(name, hangup_at)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(place, "first", 3.0)  # a tie: the first listed worker
            await pool.until(lambda: w0.calls == 1)
            assert await pool.loads() == [1, 0]  # w0 reported its call over the control link
            nursery.start_soon(place, "second", 2.0)
            await pool.until(lambda: w1.calls == 1)
            assert await pool.loads() == [1, 1]
        await pool.until_loads([0, 0])  # both idle again: a tie
        third = await pool.call("third", 0.5)
    assert {k: r.variables["AI_STATUS"] for k, r in results.items()} == {
        "first": "CALLER_HANGUP", "second": "CALLER_HANGUP"}
    assert third.variables["AI_STATUS"] == "CALLER_HANGUP"
    assert [pool.placed_on(n) for n in ("first", "second", "third")] == ["w0", "w1", "w0"]
    assert (w0.records.written, w1.records.written) == (2, 1)


async def test_a_refusing_worker_is_skipped_and_only_when_all_refuse_the_call_fails(tmp_path):
    cannot = {ASSISTANT: "no voice installed"}
    async with open_pool(tmp_path, unavailable={0: cannot}) as pool:
        served = await pool.call("served", 0.5)
        assert pool.placed_on("served") == "w1"
    assert served.variables["AI_STATUS"] == "CALLER_HANGUP"

    async with open_pool(tmp_path, unavailable={0: cannot, 1: cannot}) as pool:
        t0 = trio.current_time()
        refused = await pool.call("refused", 0.5)
        assert trio.current_time() - t0 < 1.0  # the dialplan falls back at once
    assert refused.variables["AI_STATUS"] == "FAILED"
    assert refused.variables["AI_REASON"] == "sidecar refused: no voice installed"
    assert not refused.audiosocket


async def test_a_worker_whose_link_is_down_is_skipped(tmp_path):
    async with open_pool(tmp_path) as pool:
        w0, _ = pool.workers
        w0.kill()
        clients = pool.fastagi.server.control.clients
        await pool.until(lambda: not clients[0].connected)
        assert pool.fastagi.server.control.connected  # ready: one link is up
        result = await pool.call("after", 0.5)
        assert pool.placed_on("after") == "w1"
    assert result.variables["AI_STATUS"] == "CALLER_HANGUP"


async def test_a_worker_that_dies_mid_call_loses_only_its_own_call(tmp_path):
    async with open_pool(tmp_path) as pool:
        w0, w1 = pool.workers
        results: dict[str, CallResult] = {}

        async def place(name: str, hangup_at: float) -> None:
            results[name] = await pool.call(name, hangup_at)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(place, "doomed", 20.0)
            await pool.until(lambda: w0.calls == 1)
            nursery.start_soon(place, "survivor", 3.0)
            await pool.until(lambda: w1.calls == 1)
            w0.kill()  # its sockets close: the AudioSocket and the control link
            await pool.until(lambda: "doomed" in results)
            assert "survivor" not in results  # still talking on w1
            late = await pool.call("late", 0.5)  # placed on the survivor meanwhile
    doomed = results["doomed"].variables
    assert (doomed["AI_STATUS"], doomed["AI_REASON"]) == (
        "FAILED", "media worker w0 stopped during the call (its control link closed)")
    assert results["doomed"].agi_status != "HANGUP"  # the dialplan goes on after AGI()
    assert results["survivor"].variables["AI_STATUS"] == "CALLER_HANGUP"
    assert late.variables["AI_STATUS"] == "CALLER_HANGUP"
    assert [pool.placed_on(n) for n in ("doomed", "survivor", "late")] == ["w0", "w1", "w1"]
