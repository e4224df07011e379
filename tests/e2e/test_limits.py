"""Limits over real loopback sockets: offers withdrawn, busy, the per-caller rate limit.

- An offer holds one of the worker's ``sidecar.max_calls`` slots until its AudioSocket
  connects. When ``EXEC AudioSocket`` fails, or the AGI session ends before it connects, the
  FastAGI side withdraws the offer (control message ``withdraw``) and the slot is free at once:
  more than ``max_calls`` such failures in a row, well within ``offer_ttl``, and the next calls
  are still served.
- At ``max_calls`` a worker refuses; the FastAGI side tries the next worker, and only when
  every worker is full does the call get ``AI_STATUS=FAILED``, ``AI_REASON=busy``, at once.
- ``fastagi.caller_rate_limit``: a caller over it gets ``FAILED`` / ``rate-limited`` at once,
  without an offer; other callers are unaffected.

After each scenario no socket of this process (FastAGI, the workers, the emulator) is left
in CLOSE-WAIT (tests/sockets.py).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from fastagi_server.emulator.agi_side import AgiResult, AgiSession
from fastagi_server.emulator.call import CallResult, run_call
from fastagi_server.emulator.caller import CallerScript
from fastagi_server.emulator.channel import ChannelSpec, EmulatedChannel
from media_sidecar.config.loader import load_config
from media_sidecar.config.schema import AmiConfig, Config, FastAgiConfig, Listen
from tests.e2e.stack import CountingRecords, FastAgiThread, Stack, open_stack
from tests.e2e.test_placement_workers import Pool, Worker, sidecar_config
from tests.sockets import assert_no_close_wait

pytestmark = pytest.mark.e2e
_IDS = itertools.count(1)

BASE = load_config()


def limited(max_calls: int, **fastagi: object) -> Config:
    return dataclasses.replace(
        BASE, sidecar=dataclasses.replace(BASE.sidecar, max_calls=max_calls, offer_ttl=600.0),
        fastagi=dataclasses.replace(BASE.fastagi, **fastagi))  # type: ignore[arg-type]


async def place(stack: Stack, script: CallerScript | None, channel: ChannelSpec,
                seconds: float = 20.0) -> CallResult:
    """One emulated call on its own channel through the stack."""
    with trio.fail_after(seconds):
        return await run_call("127.0.0.1", stack.agi_port, channel, script, ami=stack.ami)


def spec(caller: str = "5551234") -> ChannelSpec:
    n = next(_IDS)
    return ChannelSpec(script="agent", dnid="7000", channel=f"PJSIP/lim-{n:08x}",
                       uniqueid=f"1795267900.{n}", callerid=caller)


class _Tripwire(trio.abc.Stream):
    """The emulated Asterisk's end of the AGI socket; when the FastAGI server sends a line
    starting with ``trigger``, ``action`` runs before the emulator sees it."""

    def __init__(self, inner: trio.abc.Stream, trigger: bytes,
                 action: Callable[[], Awaitable[bytes | None]]) -> None:
        self.inner, self.trigger, self.action = inner, trigger, action
        self.tripped = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.inner.receive_some(max_bytes)
        if not self.tripped and any(line.startswith(self.trigger)
                                    for line in data.split(b"\n")):
            self.tripped = True
            replaced = await self.action()
            if replaced is not None:
                return replaced
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _agi_cut(port: int, how: str) -> AgiResult:
    """One call whose AGI session ends after the offer was accepted and before the
    AudioSocket connects: ``hangup`` (the channel hangs up as the server asks for CHANNEL
    STATUS: 511 from there on) or ``close`` (the AGI socket is gone when the server sends
    ANSWER: Asterisk's end closed)."""
    ch = EmulatedChannel(spec())
    stream = await trio.open_tcp_stream("127.0.0.1", port)

    async def hangup() -> None:
        ch.hangup(16)

    async def close() -> bytes:
        await stream.aclose()
        return b""  # the emulator sees the server's end as closed

    trigger, action = ((b"CHANNEL STATUS", hangup) if how == "hangup"
                       else (b"ANSWER", close))
    wire = _Tripwire(stream, trigger, action)
    result = await AgiSession(wire, ch, request=f"agi://127.0.0.1:{port}/agent").run()
    assert wire.tripped
    return result


async def _refused_connect(host: str, port: int) -> trio.abc.Stream:
    raise OSError(111, "Connection refused")  # EXEC AudioSocket: connect() fails, result -1


@pytest.mark.parametrize("fault", ["exec_fails", "agi_hangup_first", "agi_closed_first"])
async def test_failed_connects_withdraw_their_offers_and_calls_are_still_served(tmp_path,
                                                                                fault):
    max_calls = 2
    async with open_stack(limited(max_calls), str(tmp_path / "r.jsonl")) as stack:
        t0 = trio.current_time()
        for _ in range(max_calls + 2):  # more failures than slots, well within offer_ttl
            if fault == "exec_fails":
                failed = await run_call("127.0.0.1", stack.agi_port, spec(), None, ami=stack.ami,
                                        connect_audiosocket=_refused_connect)
                assert failed.variables["AI_STATUS"] == "FAILED"
                assert failed.variables["AI_REASON"] == (
                    "AudioSocket could not connect to the media sidecar")
            else:
                await _agi_cut(stack.agi_port, "hangup" if fault == "agi_hangup_first"
                               else "close")
        await stack.settle()
        assert trio.current_time() - t0 < 20  # far below offer_ttl (600 s)
        # every slot is free again: max_calls calls at once are all served
        results: list[CallResult] = []

        async def served() -> None:
            results.append(await place(stack, CallerScript().hangup(at=1.0), spec(), 20))

        async with trio.open_nursery() as nursery:
            for _ in range(max_calls):
                nursery.start_soon(served)
        await stack.settle()
        await stack.wait_records(max_calls)
        await trio.to_thread.run_sync(assert_no_close_wait)
    for r in results:
        assert (r.variables["AI_STATUS"], r.audiosocket[0].closed_by) == (
            "CALLER_HANGUP", "caller_hangup"), r.variables


@asynccontextmanager
async def open_full_pool(tmp_path: Path, max_calls: int) -> AsyncIterator[Pool]:
    """Two media workers (test_placement_workers' harness) with ``sidecar.max_calls``."""
    async with trio.open_nursery() as nursery:
        workers = []
        for i in range(2):
            rec = str(tmp_path / f"w{i}.jsonl")
            w = Worker(f"w{i}", CountingRecords(rec))
            base = sidecar_config(rec)
            cfg = dataclasses.replace(base, sidecar=dataclasses.replace(
                base.sidecar, max_calls=max_calls))
            w.ports = await nursery.start(w.run, cfg)
            workers.append(w)
        cfg = dataclasses.replace(
            BASE, ami=AmiConfig(), sidecar=dataclasses.replace(BASE.sidecar, workers=0),
            fastagi=FastAgiConfig(listen=Listen("127.0.0.1", 0),
                                  media=tuple(w.host for w in workers)))
        fastagi = FastAgiThread(cfg)
        pool = Pool(workers, fastagi, await fastagi.start())
        clients = fastagi.server.control.clients
        await pool.until(lambda: all(cl.connected and cl.reported is not None
                                     for cl in clients))
        try:
            yield pool
        finally:
            await fastagi.stop()
            nursery.cancel_scope.cancel()


async def test_busy_only_when_every_worker_is_full(tmp_path):
    async with open_full_pool(tmp_path, max_calls=1) as pool:
        w0, w1 = pool.workers
        results: dict[str, CallResult] = {}

        async def on_pool(name: str, hangup_at: float) -> None:
            results[name] = await pool.call(name, hangup_at)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(on_pool, "first", 4.0)
            await pool.until(lambda: w0.calls == 1)
            nursery.start_soon(on_pool, "second", 4.0)  # w0 is full: the next worker
            await pool.until(lambda: w1.calls == 1)
            t0 = trio.current_time()
            busy = await pool.call("busy", 4.0)  # both full
            took = trio.current_time() - t0
        after = await pool.call("after", 0.5)  # room again
        await trio.to_thread.run_sync(assert_no_close_wait)
    assert (busy.variables["AI_STATUS"], busy.variables["AI_REASON"]) == ("FAILED", "busy")
    assert not busy.audiosocket and busy.agi_status == "SUCCESS"  # the dialplan goes on
    assert took < 1.0
    assert [pool.placed_on(n) for n in ("first", "second", "after")] == ["w0", "w1", "w0"]
    assert {k: r.variables["AI_STATUS"] for k, r in results.items()} == {
        "first": "CALLER_HANGUP", "second": "CALLER_HANGUP"}
    assert after.variables["AI_STATUS"] == "CALLER_HANGUP"


async def test_a_caller_over_the_rate_limit_is_refused_at_once_and_others_are_served(tmp_path):
    cfg = limited(10, caller_rate_limit=2, caller_rate_window=600.0)
    async with open_stack(cfg, str(tmp_path / "r.jsonl")) as stack:
        calls = []
        for _ in range(2):
            calls.append(await place(stack, CallerScript().hangup(at=0.3), spec("5550001"), 20))
        t0 = trio.current_time()
        limited_call = await place(stack, None, spec("5550001"), 20)
        took = trio.current_time() - t0
        other = await place(stack, CallerScript().hangup(at=0.3), spec("5550002"), 20)
        await stack.settle()
        await trio.to_thread.run_sync(assert_no_close_wait)
        refused = dict(stack.fastagi.server.handler.refused)
    assert [c.variables["AI_STATUS"] for c in calls] == ["CALLER_HANGUP"] * 2
    assert (limited_call.variables["AI_STATUS"], limited_call.variables["AI_REASON"]) == (
        "FAILED", "rate-limited")
    assert not limited_call.audiosocket and limited_call.agi_status == "SUCCESS"
    assert took < 1.0
    assert other.variables["AI_STATUS"] == "CALLER_HANGUP"
    assert refused == {"rate-limited": 1}
