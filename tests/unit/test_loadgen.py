"""The multi-process load generator (fastagi_server/emulator/loadgen.py) over real loopback.

The generator processes run on the real clock (they are separate processes), so these tests
assert what does not depend on timing: the bytes the server receives, what the generator counts,
how calls are spread over processes, and the grid its ticks were scheduled on.
"""

from __future__ import annotations

import numpy as np
import pytest
import trio

from fastagi_server.emulator.loadgen import FRAME_WIRE, LoadEngine, encode_caller
from media_sidecar.constants import FRAME_BYTES
from media_sidecar.protocol.audiosocket import (
    AudioMessage,
    AudioSocketDecoder,
    UuidMessage,
    encode_audio,
    encode_hangup,
)

LOUD = (np.full(FRAME_BYTES // 2, 5000, dtype="<i2")).tobytes()


def test_encode_caller_frames_and_pads() -> None:
    pcm = bytes(range(256)) * 2 + b"\x01\x02" * 32  # 576 bytes: one frame and 256 bytes
    wire = encode_caller(pcm)
    assert len(wire) == 2 * FRAME_WIRE
    dec = AudioSocketDecoder()
    dec.receive_data(wire)
    msgs = dec.events()
    assert [type(m) for m in msgs] == [AudioMessage, AudioMessage]
    assert b"".join(m.payload for m in msgs if isinstance(m, AudioMessage)) == pcm + bytes(64)


class EchoServer:
    """Reads the UUID, then echoes every caller frame back at once; with ``hangup_after`` it
    sends that many frames in ONE write followed by a hang-up instead."""

    def __init__(self, hangup_after: int = 0) -> None:
        self.hangup_after = hangup_after
        self.received: dict[str, list[bytes]] = {}

    async def handle(self, stream: trio.SocketStream) -> None:
        dec = AudioSocketDecoder()
        ident = ""
        async with stream:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                dec.receive_data(data)
                for msg in dec.events():
                    if isinstance(msg, UuidMessage):
                        ident = str(msg.uuid)
                        self.received[ident] = []
                    elif isinstance(msg, AudioMessage):
                        self.received[ident].append(msg.payload)
                        if self.hangup_after:
                            await stream.send_all(
                                encode_audio(LOUD) * self.hangup_after + encode_hangup())
                            return
                        await stream.send_all(encode_audio(msg.payload))


async def serve(server: EchoServer, nursery: trio.Nursery) -> int:
    listeners = await nursery.start(trio.serve_tcp, server.handle, 0)
    return int(listeners[0].socket.getsockname()[1])


async def test_calls_spread_over_processes_and_counted() -> None:
    server = EchoServer()
    signal = LOUD * 5  # 100 ms of sound, then silence
    async with trio.open_nursery() as nursery:
        port = await serve(server, nursery)
        with LoadEngine(procs=2) as engine:
            engine.stats(reset=True)
            results = []

            async def one() -> None:
                results.append(await engine.run_direct("127.0.0.1", port, signal, 0.3))

            async with trio.open_nursery() as calls:
                for _ in range(4):
                    calls.start_soon(one)
            stats = engine.stats(reset=True)
        nursery.cancel_scope.cancel()
    assert sorted(r.worker for r in results) == [0, 0, 1, 1]
    for r in results:
        assert r.closed_by == "caller_hangup", r.error
        got = server.received[r.uuid]
        assert len(got) == r.caller_frames_sent >= 5
        assert got[:5] == [LOUD] * 5
        assert set(got[5:]) <= {bytes(FRAME_BYTES)}
        assert r.loud_frames == 5  # the echoed sound, never the echoed silence
        assert 5 <= len(r.arrivals) <= r.caller_frames_sent
        assert np.all(np.diff(r.arrivals) >= 0)
    assert [s["index"] for s in stats] == [0, 1]
    assert sum(s["calls_added"] for s in stats) == 4
    assert sum(s["frames_sent"] for s in stats) == sum(r.caller_frames_sent for r in results)
    assert sum(s["loud_frames"] for s in stats) == 20
    for s in stats:
        deadlines = np.frombuffer(s["tick_deadline"], dtype=np.float64)
        assert len(deadlines) > 0
        steps = np.diff(deadlines) / 0.02
        assert np.allclose(steps, np.round(steps)) and np.all(np.round(steps) >= 1)
        phase = (deadlines - s["phase_ms"] / 1000) / 0.02
        assert np.allclose(phase, np.round(phase), atol=1e-6)
    assert [s["phase_ms"] for s in stats] == [0.0, 10.0]


async def test_server_hangup_and_coalesced_frames() -> None:
    server = EchoServer(hangup_after=2)
    async with trio.open_nursery() as nursery:
        port = await serve(server, nursery)
        with LoadEngine(procs=1) as engine:
            res = await engine.run_direct("127.0.0.1", port, LOUD, 5.0)
            stats = engine.stats()
        nursery.cancel_scope.cancel()
    assert res.closed_by == "sidecar_hangup"
    assert res.hangup_sent_by_sidecar
    assert len(res.arrivals) == 2 and res.loud_frames == 2
    assert stats[0]["coalesced_reads"] >= 1 or stats[0]["reads"] >= 2


async def test_connect_refused_is_a_result() -> None:
    with trio.socket.socket() as s:
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        with LoadEngine(procs=1) as engine:
            res = await engine.run_direct("127.0.0.1", port, LOUD, 1.0)
    assert res.closed_by == "sidecar_reset"
    assert "failed" in (res.error or "")
    assert res.worker == -1  # never handed to a generator process


def test_procs_must_be_positive() -> None:
    with pytest.raises(ValueError, match="procs"):
        LoadEngine(procs=0)
