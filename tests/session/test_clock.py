"""The process's frame clock in virtual time: many calls on one grid, one task, and what one
call does (a crash, a peer that stops reading, a reset) never reaching another."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import numpy as np
import pytest
import trio

from media_sidecar.constants import FRAME_BYTES, FRAME_SECONDS
from media_sidecar.protocol.audiosocket import (
    AudioMessage,
    AudioSocketDecoder,
    HangupMessage,
    encode_audio,
)
from media_sidecar.session.clock import READ_PHASE, FrameClock, Port, frame_clock
from media_sidecar.session.playout import Playout
from tests.streams import socket_stream_pair


class Sink:
    """A call's inbound side: records what the clock hands it, optionally raising."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.data: list[tuple[float, bytes]] = []
        self.closed: tuple[str, float] | None = None
        self.ticks: list[float] = []
        self.fail_at = fail_at

    def caller_data(self, data: bytes, now: float) -> bool:
        self.data.append((now, data))
        return True

    def caller_closed(self, reason: str, error: str, now: float) -> None:
        self.closed = (reason, now)

    def caller_tick(self, now: float) -> None:
        self.ticks.append(now)
        if self.fail_at is not None and len(self.ticks) == self.fail_at:
            raise RuntimeError("a bug in this call")


class Peer:
    """Asterisk's end of one call: collects every frame the clock writes, with its time."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.frames: list[tuple[float, object]] = []
        self.decoder = AudioSocketDecoder()
        self.reading = trio.Event()
        self.reading.set()

    async def read(self) -> None:
        while True:
            await self.reading.wait()
            try:
                data = await self.stream.receive_some(65536)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
            if not data:
                return
            self.decoder.receive_data(data)  # raises on a torn frame
            for msg in self.decoder.events():
                self.frames.append((trio.current_time(), msg))


Body = Callable[[FrameClock, list[Port], list[Peer], list[Sink]], Awaitable[None]]


async def run_calls(n: int, body: Body, *, sinks: list[Sink] | None = None,
                    setup: Callable[[trio.SocketStream, trio.SocketStream], None] | None = None
                    ) -> tuple[FrameClock, list[Port], list[Peer], list[Sink]]:
    clock = FrameClock()
    sinks = sinks or [Sink() for _ in range(n)]
    pairs = [socket_stream_pair() for _ in range(n)]
    if setup is not None:
        for ast, side in pairs:
            setup(ast, side)
    peers = [Peer(ast) for ast, _ in pairs]
    ports: list[Port] = []
    async with trio.open_nursery() as ticking:
        ticking.start_soon(clock.run)
        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(peer.read)
            for (_, side), sink in zip(pairs, sinks, strict=True):
                ports.append(clock.attach(side, Playout(), sink))
            await body(clock, ports, peers, sinks)
            for port in ports:
                clock.detach(port)
            for _, side in pairs:
                await side.aclose()
        ticking.cancel_scope.cancel()
    for ast, _ in pairs:
        await ast.aclose()
    return clock, ports, peers, sinks


async def test_every_call_gets_one_frame_per_tick_on_one_grid_from_one_task(autojump_clock):
    async def body(clock, ports, peers, sinks):
        await trio.sleep(1.0 - 1e-6)

    clock, _, peers, sinks = await run_calls(50, body)
    t0 = peers[0].frames[0][0]
    for peer in peers:
        times = [t for t, _ in peer.frames]
        assert times == pytest.approx([t0 + k * FRAME_SECONDS for k in range(50)], abs=1e-9)
        assert all(isinstance(m, AudioMessage) for _, m in peer.frames)
    # one task woke twice per tick for all 50 calls (write phase, read phase)
    assert clock.stats.ticks == 50 and clock.stats.max_ports == 50
    assert clock.stats.late_ticks == 0
    # every call's read phase is half a frame after its write phase
    for sink in sinks:
        assert sink.ticks == pytest.approx([t0 + READ_PHASE + k * FRAME_SECONDS
                                            for k in range(50)], abs=1e-9)


async def test_the_clock_sleeps_while_no_call_is_attached(autojump_clock):
    clock = FrameClock()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(clock.run)
        await trio.sleep(60)
        assert clock.stats.ticks == 0
        ast, side = socket_stream_pair()
        port = clock.attach(side, Playout(), Sink())
        await trio.sleep(0.1 - 1e-6)
        assert clock.stats.ticks == 5
        clock.detach(port)
        await trio.sleep(60)
        assert clock.stats.ticks <= 6  # at most the tick that found it gone
        nursery.cancel_scope.cancel()
    await ast.aclose()
    await side.aclose()


async def test_caller_bytes_are_read_in_the_read_phase_after_they_arrive(autojump_clock):
    async def body(clock, ports, peers, sinks):
        await trio.sleep(0.005)  # 5 ms into the first frame
        await peers[0].stream.send_all(encode_audio(b"\x01\x00" * 160))
        await trio.sleep(0.1)

    _, _, peers, sinks = await run_calls(1, body)
    t0 = peers[0].frames[0][0]
    ((t, data),) = sinks[0].data
    assert t == pytest.approx(t0 + READ_PHASE, abs=1e-9)  # 5 ms later: at most one frame
    assert data == encode_audio(b"\x01\x00" * 160)


async def test_a_crash_in_one_call_ends_that_call_only(autojump_clock):
    sinks = [Sink(), Sink(fail_at=10), Sink()]

    async def body(clock, ports, peers, sinks):
        await ports[1].done.wait()
        assert isinstance(ports[1].error, RuntimeError)
        await trio.sleep(0.5)

    clock, ports, peers, sinks = await run_calls(3, body, sinks=sinks)
    assert len(peers[1].frames) == 10  # nothing after the tick it failed in
    for i in (0, 2):
        assert ports[i].error is None and not ports[i].broken
        gaps = np.diff([t for t, _ in peers[i].frames])
        assert len(peers[i].frames) == 10 + 25 and np.allclose(gaps, FRAME_SECONDS)


async def test_a_peer_that_stops_reading_gets_whole_frames_and_no_burst(autojump_clock):
    """Its socket fills: a short write's rest goes first when it reads again (no torn frame:
    the peer's decoder would raise), the playout does not advance while blocked, and the other
    call keeps its grid."""

    def small_buffers(ast: trio.SocketStream, side: trio.SocketStream) -> None:
        side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        ast.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    async def body(clock, ports, peers, sinks):
        seg = ports[0].playout.enqueue(b"\x10\x00" * (FRAME_BYTES // 2) * 500)  # 10 s
        peers[0].reading = trio.Event()  # Asterisk stops reading call 0
        await trio.sleep(2.0)
        blocked = ports[0].playout.stats.blocked_ticks
        sent_while_blocked = seg.frames_sent
        assert blocked > 50 and sent_while_blocked < 100
        await trio.sleep(1.0)
        assert seg.frames_sent == sent_while_blocked  # nothing made while it could not go
        peers[0].reading.set()
        await trio.sleep(1.0)
        assert seg.frames_sent > sent_while_blocked

    _, ports, peers, _ = await run_calls(2, body, setup=small_buffers)
    assert all(isinstance(m, AudioMessage) and len(m.payload) == FRAME_BYTES
               for _, m in peers[0].frames)
    other = [t for t, _ in peers[1].frames]
    assert np.allclose(np.diff(other), FRAME_SECONDS)


async def test_a_peer_that_resets_ends_its_call_as_gone(autojump_clock):
    async def body(clock, ports, peers, sinks):
        await trio.sleep(0.1)
        peers[0].stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                          b"\x01\x00\x00\x00\x00\x00\x00\x00")
        await peers[0].stream.aclose()
        await ports[0].done.wait()
        await trio.sleep(0.2)

    _, ports, peers, sinks = await run_calls(2, body)
    assert ports[0].broken or (sinks[0].closed is not None)
    assert ports[1].error is None and not ports[1].broken and sinks[1].closed is None
    assert len(peers[1].frames) >= 15


async def test_the_hand_back_is_the_last_thing_written(autojump_clock):
    async def body(clock, ports, peers, sinks):
        ports[0].playout.enqueue(b"\x10\x00" * (FRAME_BYTES // 2) * 3)
        ports[0].playout.hand_back()
        await ports[0].done.wait()
        await trio.sleep(0.2)

    _, ports, peers, _ = await run_calls(1, body)
    msgs = [m for _, m in peers[0].frames]
    assert isinstance(msgs[-1], HangupMessage) and len(msgs) == 4
    assert ports[0].handed_back and ports[0].playout.hand_back_sent.is_set()


async def test_one_clock_per_trio_run():
    assert frame_clock() is frame_clock()


def test_only_sockets_can_be_attached():
    async def main() -> None:
        a, b = trio.testing.memory_stream_pair()
        with pytest.raises(TypeError, match="socket stream"):
            FrameClock().attach(a, Playout(), Sink())

    trio.run(main)
