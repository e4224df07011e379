"""Faults over real loopback sockets, each with the outcome the README's "Faults and limits"
table documents: what the caller hears, ``AI_STATUS`` / ``AI_REASON``, what the record says.

- the control link dropped mid-call: the conversation goes on (the media plane does not need
  the link), the FastAGI side reconnects at once and reports the outcome on the new link;
- the FastAGI process gone mid-call: the same on the media side;
- Asterisk closing the AudioSocket mid-frame (half a frame, then FIN, or RST): the call ends
  as a hang-up of the caller's leg, the record is written;
- the records disk full (ENOSPC on every write): the calls end normally, one ERROR, every
  failure counted;
- the wall clock jumping an hour either way mid-call: no timer fires early (they run on
  trio's monotonic clock) and the record's stamps agree with its duration;
- AMI down at the start, dropped mid-call (and staying down), half-open (no Pong): calls are
  served; a transfer is handed back to the dialplan (``AI_TRANSFER_TO``) while AMI is down, the
  client reconnects, and a Redirect is used again once it is up.

After each, no socket of this process (FastAGI, the sidecar, the emulator) is in CLOSE-WAIT.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import errno
import gc
import itertools
import json
import logging
import os
import socket
import struct
import time
import types

import pytest
import trio

from fastagi_server.emulator.ami_server import FakeAmiServer
from fastagi_server.emulator.audiosocket_side import AudioSocketResult
from fastagi_server.emulator.call import CallResult, run_call
from fastagi_server.emulator.caller import AgentQuiet, CallerScript
from fastagi_server.emulator.channel import ChannelSpec, EmulatedChannel
from media_sidecar.config.loader import load_config
from media_sidecar.ops.recordfile import RotatingJsonLines
from media_sidecar.protocol.audiosocket import encode_audio, encode_uuid
from media_sidecar.session import records as records_module
from tests.e2e.stack import (
    AMI_SECRET,
    AMI_USER,
    FastAgiThread,
    SidecarRunner,
    Stack,
    fake_services,
    open_stack,
)
from tests.e2e.stack import _config as stack_config
from tests.sockets import assert_no_close_wait

pytestmark = pytest.mark.e2e
_IDS = itertools.count(1)

BASE = load_config()


async def place(stack: Stack, script: CallerScript | None, channel: ChannelSpec,
                seconds: float = 20.0) -> CallResult:
    """One emulated call on its own channel through the stack."""
    with trio.fail_after(seconds):
        return await run_call("127.0.0.1", stack.agi_port, channel, script, ami=stack.ami)


def spec() -> ChannelSpec:
    n = next(_IDS)
    return ChannelSpec(script="agent", dnid="7000", channel=f"PJSIP/fault-{n:08x}",
                       uniqueid=f"1795268000.{n}")


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def _until(what, within: float = 10.0) -> None:
    with trio.fail_after(within):
        while True:
            if what():
                return
            await trio.sleep(0.02)


async def _in_call(stack: Stack) -> None:
    """Until the sidecar has the call live."""
    hub = stack.fastagi.server.control.clients[0]
    await _until(lambda: hub.reported is not None and hub.reported.calls == 1)


async def test_control_link_dropped_mid_call_the_conversation_goes_on(tmp_path):
    rec_path = tmp_path / "r.jsonl"
    async with open_stack(BASE, str(rec_path)) as stack:
        result: list[CallResult] = []

        async def call() -> None:
            result.append(await place(stack, CallerScript().hangup(at=3.0), spec(), 30))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await _in_call(stack)
            client = stack.fastagi.server.control.clients[0]
            ws = client._ws
            assert ws is not None

            async def drop() -> None:
                ws.transport.abort()  # the TCP connection is gone, no close handshake

            await trio.to_thread.run_sync(stack.fastagi.call, drop())
        await stack.wait_records(1)
        await stack.settle()
        reconnects = stack.fastagi.server.control.clients[0].reconnects
        await trio.to_thread.run_sync(assert_no_close_wait)
    (call,) = result
    session = call.audiosocket[0]
    assert session.closed_by == "caller_hangup"  # the caller talked to the end (3 s)
    assert session.ended_at - session.started_at > 2.5
    assert call.variables["AI_STATUS"] == "CALLER_HANGUP"
    assert reconnects > 0  # the FastAGI side put the link back up at once
    (rec,) = records(rec_path)
    # the AI_* outcome went over the new link: the record has the channel's final values
    assert rec["status"] == "CALLER_HANGUP" and rec["outcome_confirmed"] is True


async def _abort_every_socket() -> None:
    """On the FastAGI loop: what the kernel does to a killed process's sockets (every one
    closed at once, nothing more sent): abort each transport of this loop."""
    loop = asyncio.get_running_loop()
    for obj in gc.get_objects():
        # type(), not isinstance: a dead weak proxy among the objects raises on isinstance
        if issubclass(type(obj), asyncio.Transport) and getattr(obj, "_loop", None) is loop:
            obj.abort()


async def test_fastagi_gone_mid_call_the_media_side_ends_cleanly_and_writes_the_record(
        tmp_path):
    rec_path = tmp_path / "r.jsonl"
    async with open_stack(BASE, str(rec_path)) as stack:
        result: list[CallResult] = []

        async def call() -> None:
            result.append(await place(stack, CallerScript().hangup(at=3.0), spec(), 30))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await _in_call(stack)
            await trio.to_thread.run_sync(stack.fastagi.call, _abort_every_socket())
            await stack.fastagi.stop()
        await stack.wait_records(1)
        await trio.to_thread.run_sync(assert_no_close_wait)
    (call,) = result
    assert call.audiosocket[0].closed_by == "caller_hangup"  # no dead air: served to the end
    (rec,) = records(rec_path)
    assert rec["status"] == "CALLER_HANGUP" and rec["outcome_confirmed"] is False
    assert rec["duration"] > 2.5


def _half_frame_runner(how: str):
    """An AudioSocket leg that sends its UUID and 0.5 s of audio, then the header and 100 of
    the 320 payload bytes of one more frame, then closes (``fin``) or resets (``rst``)."""

    async def run(stream: trio.abc.Stream, ident: str, ch: EmulatedChannel) -> AudioSocketResult:
        res = AudioSocketResult(ident, started_at=trio.current_time())
        await stream.send_all(encode_uuid(ident))
        frame = encode_audio(bytes(320))
        for _ in range(25):
            await stream.send_all(frame)
            await trio.sleep(0.02)
        await stream.send_all(frame[:3 + 100])
        ch.hangup(16)  # the channel is gone: that is why Asterisk closed mid-frame
        if how == "rst":
            sock = stream.socket  # type: ignore[attr-defined]
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()
        res.closed_by, res.ended_at = "caller_hangup", trio.current_time()
        return res

    return run


@pytest.mark.parametrize("how", ["fin", "rst"])
async def test_asterisk_closing_the_audiosocket_mid_frame_ends_the_call_as_a_hangup(tmp_path,
                                                                                    how):
    rec_path = tmp_path / "r.jsonl"
    async with open_stack(BASE, str(rec_path)) as stack:
        with trio.fail_after(30):
            call = await run_call("127.0.0.1", stack.agi_port, spec(), None, ami=stack.ami,
                                  audio_runner=_half_frame_runner(how))
        await stack.wait_records(1)
        await stack.settle()
        await trio.to_thread.run_sync(assert_no_close_wait)
    assert call.variables["AI_STATUS"] == "CALLER_HANGUP"
    (rec,) = records(rec_path)
    assert rec["status"] == "CALLER_HANGUP"
    assert 0.4 < rec["duration"] < 2.0  # ended at the close, not at a timeout


async def test_records_disk_full_the_call_ends_normally_and_the_error_is_logged_once(
        tmp_path, caplog, monkeypatch):
    def full(self: RotatingJsonLines, line: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))

    # ENOSPC on every record write (the kernel's own, from /dev/full, is in
    # unit/test_limits_caps.py; here the retention sweeper would read /dev/full forever)
    monkeypatch.setattr(RotatingJsonLines, "_append", full)
    rec_path = tmp_path / "r.jsonl"
    async with open_stack(BASE, str(rec_path)) as stack:
        with caplog.at_level(logging.INFO, logger="agi_voice.records"):
            calls = [await place(stack, CallerScript().hangup(at=0.5), spec(), 30)
                     for _ in range(2)]
            await stack.wait_records(2)  # tried twice
        await stack.settle()
        writer = stack.sidecar_runner.records  # type: ignore[union-attr]
        await trio.to_thread.run_sync(assert_no_close_wait)
    assert [c.variables["AI_STATUS"] for c in calls] == ["CALLER_HANGUP"] * 2
    assert writer.write_errors == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "No space left on device" in errors[0].getMessage()
    assert not rec_path.exists()


class _JumpingClock:
    """``time.time`` and the records' ``datetime.now`` with an offset the test moves."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._time = time.time
        clock = self

        class _Datetime(dt.datetime):
            @classmethod
            def now(cls, tz=None):  # type: ignore[override]
                return dt.datetime.fromtimestamp(clock.time(), tz)

        self.module = types.SimpleNamespace(datetime=_Datetime, UTC=dt.UTC,
                                            timedelta=dt.timedelta)

    def time(self) -> float:
        return self._time() + self.offset


@pytest.mark.parametrize("jump", [3600.0, -3600.0])
async def test_a_wall_clock_jump_mid_call_fires_no_timer_and_keeps_the_record_sane(
        tmp_path, monkeypatch, jump):
    clock = _JumpingClock()
    monkeypatch.setattr(time, "time", clock.time)
    monkeypatch.setattr(records_module, "dt", clock.module)
    rec_path = tmp_path / "r.jsonl"
    short = dataclasses.replace(BASE, assistants=tuple(
        dataclasses.replace(a, max_call_seconds=60.0) for a in BASE.assistants))
    async with open_stack(short, str(rec_path)) as stack:
        result: list[CallResult] = []

        async def call() -> None:
            result.append(await place(stack, CallerScript().hangup(at=3.0), spec(), 30))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await _in_call(stack)
            clock.offset = jump  # an NTP step, an operator's `date -s`
        await stack.wait_records(1)
        await stack.settle()
        await trio.to_thread.run_sync(assert_no_close_wait)
    (call,) = result
    assert call.audiosocket[0].closed_by == "caller_hangup"  # max_call_seconds did not fire
    assert call.variables["AI_STATUS"] == "CALLER_HANGUP"
    (rec,) = records(rec_path)
    started = dt.datetime.fromisoformat(rec["started_at"])
    ended = dt.datetime.fromisoformat(rec["ended_at"])
    assert 2.5 < rec["duration"] < 5.0
    assert (ended - started).total_seconds() == pytest.approx(rec["duration"], abs=0.002)


async def test_ami_down_mid_call_a_transfer_goes_back_to_the_dialplan(tmp_path):
    rec_path = tmp_path / "r.jsonl"
    async with open_stack(BASE, str(rec_path)) as stack:
        assert stack.ami is not None
        result: list[CallResult] = []
        script = CallerScript().dtmf("1", at=AgentQuiet(300), via="audiosocket")  # sales

        async def call() -> None:
            result.append(await place(stack, script, spec(), 30))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await _in_call(stack)
            stack.ami.reject_logins = True  # and it stays down
            assert stack.ami.drop_connections() == 1
        await stack.wait_records(1)
        await stack.settle()
        redirects = stack.ami_actions("Redirect")
        await trio.to_thread.run_sync(assert_no_close_wait)
    (call,) = result
    assert not redirects
    assert call.audiosocket[0].closed_by == "sidecar_hangup"  # 00 00 00: to the dialplan
    assert (call.variables["AI_STATUS"], call.variables["AI_TRANSFER_TO"]) == (
        "TRANSFERRED", "sales")
    (rec,) = records(rec_path)
    assert rec["status"] == "TRANSFERRED" and rec["transfer_to"] == "sales"


async def test_ami_half_open_is_replaced_and_the_call_goes_on(tmp_path):
    async with open_stack(BASE, str(tmp_path / "r.jsonl")) as stack:
        assert stack.ami is not None
        result: list[CallResult] = []

        async def call() -> None:
            result.append(await place(stack, CallerScript().hangup(at=7.0), spec(), 30))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await _in_call(stack)
            logins, conns = stack.ami.logins, stack.ami.connections
            stack.ami.answer_pings = False  # TCP up, no Pong (ping_interval 2 s, timeout 2 s)
            await _until(lambda: stack.ami.connections > conns, within=8.0)
            stack.ami.answer_pings = True
        await stack.settle()
        assert stack.ami.logins > logins  # logged in again on a new connection
        await trio.to_thread.run_sync(assert_no_close_wait)
    (call,) = result
    assert call.audiosocket[0].closed_by == "caller_hangup"
    assert call.variables["AI_STATUS"] == "CALLER_HANGUP"


async def test_ami_down_at_start_calls_are_served_and_ami_is_used_once_it_is_up(tmp_path):
    """FastAGI starts while nothing listens on the AMI port: calls are served at once (a
    transfer goes back to the dialplan); once AMI is up the client logs in and the next
    transfer is an AMI Redirect."""
    rec = str(tmp_path / "r.jsonl")
    with socket.socket() as probe:  # a port nothing listens on (yet)
        probe.bind(("127.0.0.1", 0))
        ami_port = probe.getsockname()[1]
    async with trio.open_nursery() as nursery:
        runner = SidecarRunner(nursery, stack_config(BASE, None, None, rec), fake_services())
        ports = await runner.start()
        cfg = stack_config(BASE, ports, ami_port, rec)
        cfg = dataclasses.replace(cfg, ami=dataclasses.replace(cfg.ami, reconnect_max=1.0))
        fastagi = FastAgiThread(cfg)
        agi_port = await fastagi.start()
        stack = Stack(cfg, agi_port, ports, None, fastagi, runner)
        assert await stack.control_link_up()
        script = CallerScript().dtmf("1", at=AgentQuiet(300), via="audiosocket")  # sales
        try:
            before = await place(stack, script, spec(), 30)
            ami = FakeAmiServer(username=AMI_USER, secret=AMI_SECRET, port=ami_port)
            await nursery.start(ami.serve)
            await trio.to_thread.run_sync(fastagi.call, fastagi.server.ami.wait_connected(), 15)
            stack.ami = ami
            after = await place(stack, script, spec(), 30)
            await stack.wait_records(2)
            await stack.settle()
            await trio.to_thread.run_sync(assert_no_close_wait)
        finally:
            await fastagi.stop()
            nursery.cancel_scope.cancel()
    assert before.audiosocket[0].closed_by == "sidecar_hangup"  # handed back to the dialplan
    assert (before.variables["AI_STATUS"], before.variables["AI_TRANSFER_TO"]) == (
        "TRANSFERRED", "sales")
    assert after.audiosocket[0].closed_by == "redirect"  # AMI did it
    assert [a["Exten"] for a in ami.actions if a.get("Action") == "Redirect"] == ["2002"]
