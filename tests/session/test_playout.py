"""The paced playout writer under trio's virtual clock: exact deadlines, flush, stalls."""

from __future__ import annotations

import numpy as np
import pytest
import trio

from media_sidecar.constants import FRAME_BYTES, FRAME_SECONDS
from media_sidecar.protocol.audiosocket import (
    AudioFormat,
    AudioMessage,
    AudioSocketDecoder,
    Codec,
    HangupMessage,
)
from media_sidecar.session.clock import FrameClock
from media_sidecar.session.playout import Playout, PlayoutFull
from tests.streams import socket_stream_pair


class Wire:
    """A playout on the frame clock over a socketpair; Asterisk's end records what arrives,
    with the virtual time of each frame. ``stall_at``: the clock's tick that many frames in
    takes ``stall`` seconds (the process was busy)."""

    def __init__(self, clock: trio.testing.MockClock | None = None, stall_at: int | None = None,
                 stall: float = 0.0) -> None:
        self.sent: list[tuple[float, bytes]] = []
        self.mock = clock
        self.stall_at = stall_at
        self.stall = stall
        self.ticks = 0

    # the call's inbound side (a sink that only counts the clock's read phases)
    def caller_data(self, data: bytes, now: float) -> bool:
        return True

    def caller_closed(self, reason: str, error: str, now: float) -> None:
        pass

    def caller_tick(self, now: float) -> None:
        self.ticks += 1
        if self.mock is not None and self.ticks == self.stall_at:
            self.mock.jump(self.stall)

    async def play(self, p: Playout, body, *, lead_frames: int = 0) -> None:  # noqa: ANN001
        """Run ``body(port)`` with ``p`` on a frame clock of its own; record what arrives."""
        ast, side = socket_stream_pair()
        clock = FrameClock()
        decoder = AudioSocketDecoder()

        async def read() -> None:
            while data := await ast.receive_some(65536):
                decoder.receive_data(data)
                for msg in decoder.events():
                    self.sent.append((trio.current_time(), msg))

        async with trio.open_nursery() as ticking:
            ticking.start_soon(clock.run)
            async with trio.open_nursery() as n:
                n.start_soon(read)
                port = clock.attach(side, p, self, lead_frames=lead_frames)
                await body(port)
                clock.detach(port)
                await side.aclose()  # the reader sees the end and returns
            ticking.cancel_scope.cancel()
        await ast.aclose()

    def frames(self) -> list[tuple[float, object]]:
        return list(self.sent)


def tone(frames: int, amp: int = 8000) -> bytes:
    n = frames * FRAME_BYTES // 2
    return (np.full(n, amp, dtype="<i2")).tobytes()


async def test_every_frame_on_its_deadline_and_silence_when_idle(autojump_clock):
    wire = Wire()
    p = Playout()

    async def body(port):
        await trio.sleep(0.51)

    await wire.play(p, body)
    frames = wire.frames()
    assert len(frames) == 26  # t = 0, 0.02, ..., 0.50
    t0 = frames[0][0]
    for i, (t, msg) in enumerate(frames):
        assert t == pytest.approx(t0 + i * FRAME_SECONDS, abs=1e-9)
        assert isinstance(msg, AudioMessage) and msg.kind == 0x10
        assert msg.payload == bytes(FRAME_BYTES)
    assert p.stats.lateness_hist[0] == 26 and p.stats.late_frames == 0


async def test_audio_plays_in_order_then_silence_and_done_fires(autojump_clock):
    wire = Wire()
    p = Playout()
    box = {}

    async def body(port):
        await trio.sleep(0.1)
        box["seg"] = seg = p.enqueue(tone(5, 1000) + tone(5, 2000)[: FRAME_BYTES * 5 - 100],
                                     text="hi")
        assert p.speaking
        await seg.done.wait()
        box["done_at"] = trio.current_time()
        await trio.sleep(0.1)

    await wire.play(p, body)
    seg, done_at = box["seg"], box["done_at"]
    audio = [(t, m) for t, m in wire.frames() if m.payload != bytes(FRAME_BYTES)]
    assert len(audio) == 10
    first_t = audio[0][0]
    assert all(t == pytest.approx(first_t + i * 0.02, abs=1e-9) for i, (t, _) in enumerate(audio))
    # the last partial frame is padded with zeros, never sent short
    assert len(audio[-1][1].payload) == FRAME_BYTES
    assert seg.frames_sent == 10 and not seg.interrupted
    assert done_at == pytest.approx(audio[-1][0], abs=1e-9)  # set as the last frame leaves
    assert not p.speaking


async def test_flush_takes_effect_at_the_next_frame(autojump_clock):
    wire = Wire()
    p = Playout()
    box = {}

    async def body(port):
        box["seg"] = p.enqueue(tone(100), text="one two three four five six seven eight nine ten")
        await trio.sleep(0.205)  # between two frames
        box["flushed_at"] = trio.current_time()
        box["dropped"] = p.flush()
        await trio.sleep(0.2)

    await wire.play(p, body)
    seg, flushed_at = box["seg"], box["flushed_at"]
    assert box["dropped"] > 0 and seg.interrupted and seg.done.is_set()
    after = [m for t, m in wire.frames() if t > flushed_at]
    assert after and all(m.payload == bytes(FRAME_BYTES) for m in after)
    before = [m for t, m in wire.frames() if t <= flushed_at]
    assert sum(m.payload != bytes(FRAME_BYTES) for m in before) == seg.frames_sent == 11
    assert seg.heard_text == "one"  # 11 of 100 frames heard: a tenth of the words


async def test_non_interruptible_segment_survives_flush(autojump_clock):
    wire = Wire()
    p = Playout()
    box = {}

    async def body(port):
        box["farewell"] = farewell = p.enqueue(tone(10), text="goodbye", interruptible=False)
        box["other"] = p.enqueue(tone(10), text="later")
        assert not p.interruptible
        await trio.sleep(0.05)
        p.flush()
        await farewell.done.wait()

    await wire.play(p, body)
    farewell, other = box["farewell"], box["other"]
    assert not farewell.interrupted and farewell.frames_sent == 10
    assert other.interrupted and other.frames_sent == 0


async def test_stall_never_causes_a_catch_up_burst(autojump_clock):
    wire = Wire(autojump_clock, stall_at=5, stall=0.1)
    p = Playout()

    async def body(port):
        await trio.sleep(1.0)

    await wire.play(p, body)
    times = [t for t, _ in wire.sent]
    gaps = np.diff(times)
    # the 5th tick's read phase (half a frame after its write) took 100 ms: the next frame
    # goes right after it, then the 20 ms grid again, never a burst of the missed ones
    assert gaps[4] == pytest.approx(FRAME_SECONDS / 2 + 0.1, abs=1e-9)
    assert all(g >= FRAME_SECONDS - 1e-9 for g in gaps)
    assert np.allclose(gaps[5:], FRAME_SECONDS)
    assert p.stats.late_frames == 1


async def test_hand_back_after_queued_audio(autojump_clock):
    wire = Wire()
    p = Playout()
    box = {}

    async def body(port):
        p.enqueue(tone(3), text="bye", interruptible=False)
        p.hand_back()
        await p.hand_back_sent.wait()
        box["port"] = port

    await wire.play(p, body)
    msgs = [m for _, m in wire.frames()]
    assert isinstance(msgs[-1], HangupMessage)
    assert sum(isinstance(m, AudioMessage) and m.payload != bytes(FRAME_BYTES) for m in msgs) == 3
    assert box["port"].handed_back and box["port"].done.is_set()


@pytest.mark.parametrize("fmt", [AudioFormat(Codec.ULAW, 8000), AudioFormat(Codec.ALAW, 8000),
                                 AudioFormat(Codec.SLIN, 16000)])
async def test_every_leg_gets_slin_8khz_back(autojump_clock, fmt):
    """Asterisk reads kind 0x10 as slin 8 kHz whatever the leg's codec (res_audiosocket.c), so
    a Dial(AudioSocket/...c(ulaw|alaw|slin16)) leg gets slin 8 kHz back, as the app does."""
    wire = Wire()
    p = Playout(fmt)

    async def body(port):
        p.enqueue(tone(1))
        await trio.sleep(0.05)

    await wire.play(p, body)
    (_, first), (_, second), *_ = wire.frames()
    assert first.kind == second.kind == 0x10
    assert len(first.payload) == len(second.payload) == 320
    assert first.payload == tone(1)[:320]


def test_bounded_buffer_refuses_more():
    p = Playout(max_seconds=1.0)
    p.enqueue(tone(40))
    with pytest.raises(PlayoutFull):
        p.enqueue(tone(20))


async def test_bounded_lead_runs_that_many_frames_ahead_then_paces(autojump_clock):
    wire = Wire()
    p = Playout()

    async def body(port):
        await trio.sleep(0.11)

    await wire.play(p, body, lead_frames=2)
    times = [t for t, _ in wire.sent]
    assert times[:3] == [times[0]] * 3  # the lead goes out at once ...
    assert np.allclose(np.diff(times[2:]), FRAME_SECONDS)  # ... then one frame per 20 ms
    assert len(times) == 3 + 5


async def test_a_played_or_dropped_segment_keeps_its_counts_not_its_audio(autojump_clock):
    """A long call must not hold every sentence it ever said (bounded memory per call)."""
    wire = Wire()
    p = Playout()
    box = {}

    async def body(port):
        box["played"] = played = p.enqueue(tone(3), text="one two three")
        await played.done.wait()
        box["cut"] = p.enqueue(tone(50), text="a b c d e f g h i j")
        await trio.sleep(0.105)  # five frames of it
        p.flush()

    await wire.play(p, body)
    played, cut = box["played"], box["cut"]
    assert played.pcm == b"" and played.total_frames == 3 and played.heard_text == "one two three"
    assert cut.pcm == b"" and cut.total_frames == 50 and cut.interrupted
    assert cut.frames_sent == 5 and cut.heard_text == "a"  # 5 of 50 frames: a tenth
