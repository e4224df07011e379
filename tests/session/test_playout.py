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
from media_sidecar.session.playout import Playout, PlayoutFull


class Wire:
    """Records what the writer sends, with the virtual time of each send."""

    def __init__(self, stall_at: int | None = None, stall: float = 0.0) -> None:
        self.sent: list[tuple[float, bytes]] = []
        self.stall_at = stall_at
        self.stall = stall

    async def send(self, data: bytes) -> None:
        self.sent.append((trio.current_time(), data))
        if self.stall_at is not None and len(self.sent) == self.stall_at:
            await trio.sleep(self.stall)

    def frames(self) -> list[tuple[float, object]]:
        out = []
        for t, data in self.sent:
            d = AudioSocketDecoder()
            d.receive_data(data)
            (msg,) = d.events()
            out.append((t, msg))
        return out


def tone(frames: int, amp: int = 8000) -> bytes:
    n = frames * FRAME_BYTES // 2
    return (np.full(n, amp, dtype="<i2")).tobytes()


async def test_every_frame_on_its_deadline_and_silence_when_idle(autojump_clock):
    wire = Wire()
    p = Playout(wire.send)
    async with trio.open_nursery() as n:
        n.start_soon(p.run)
        await trio.sleep(0.51)
        n.cancel_scope.cancel()
    frames = wire.frames()
    assert len(frames) == 26  # t = 0, 0.02, ..., 0.50
    t0 = frames[0][0]
    for i, (t, msg) in enumerate(frames):
        assert t == pytest.approx(t0 + i * FRAME_SECONDS, abs=1e-9)
        assert isinstance(msg, AudioMessage) and msg.kind == 0x10
        assert msg.payload == bytes(FRAME_BYTES)


async def test_audio_plays_in_order_then_silence_and_done_fires(autojump_clock):
    wire = Wire()
    p = Playout(wire.send)
    async with trio.open_nursery() as n:
        n.start_soon(p.run)
        await trio.sleep(0.1)
        seg = p.enqueue(tone(5, 1000) + tone(5, 2000)[: FRAME_BYTES * 5 - 100], text="hi")
        assert p.speaking
        await seg.done.wait()
        done_at = trio.current_time()
        await trio.sleep(0.1)
        n.cancel_scope.cancel()
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
    p = Playout(wire.send)
    async with trio.open_nursery() as n:
        n.start_soon(p.run)
        seg = p.enqueue(tone(100), text="one two three four five six seven eight nine ten")
        await trio.sleep(0.205)  # between two frames
        flushed_at = trio.current_time()
        dropped = p.flush()
        await trio.sleep(0.2)
        n.cancel_scope.cancel()
    assert dropped > 0 and seg.interrupted and seg.done.is_set()
    after = [m for t, m in wire.frames() if t > flushed_at]
    assert after and all(m.payload == bytes(FRAME_BYTES) for m in after)
    before = [m for t, m in wire.frames() if t <= flushed_at]
    assert sum(m.payload != bytes(FRAME_BYTES) for m in before) == seg.frames_sent == 11
    assert seg.heard_text == "one"  # 11 of 100 frames heard: a tenth of the words


async def test_non_interruptible_segment_survives_flush(autojump_clock):
    wire = Wire()
    p = Playout(wire.send)
    async with trio.open_nursery() as n:
        n.start_soon(p.run)
        farewell = p.enqueue(tone(10), text="goodbye", interruptible=False)
        other = p.enqueue(tone(10), text="later")
        assert not p.interruptible
        await trio.sleep(0.05)
        p.flush()
        await farewell.done.wait()
        n.cancel_scope.cancel()
    assert not farewell.interrupted and farewell.frames_sent == 10
    assert other.interrupted and other.frames_sent == 0


async def test_stall_never_causes_a_catch_up_burst(autojump_clock):
    wire = Wire(stall_at=5, stall=0.1)
    p = Playout(wire.send)
    async with trio.open_nursery() as n:
        n.start_soon(p.run)
        await trio.sleep(1.0)
        n.cancel_scope.cancel()
    times = [t for t, _ in wire.sent]
    gaps = np.diff(times)
    # frame 5's send blocked 100 ms; the next frame goes right after it, then the 20 ms grid
    assert gaps[4] == pytest.approx(0.1, abs=1e-9)
    assert all(g >= FRAME_SECONDS - 1e-9 for g in gaps)
    assert p.stats.late_frames == 1


async def test_hand_back_after_queued_audio(autojump_clock):
    wire = Wire()
    p = Playout(wire.send)
    async with trio.open_nursery() as n:
        n.start_soon(p.run)
        p.enqueue(tone(3), text="bye", interruptible=False)
        p.hand_back()
        await p.hand_back_sent.wait()
    msgs = [m for _, m in wire.frames()]
    assert isinstance(msgs[-1], HangupMessage)
    assert sum(isinstance(m, AudioMessage) and m.payload != bytes(FRAME_BYTES) for m in msgs) == 3


@pytest.mark.parametrize("fmt", [AudioFormat(Codec.ULAW, 8000), AudioFormat(Codec.ALAW, 8000),
                                 AudioFormat(Codec.SLIN, 16000)])
async def test_every_leg_gets_slin_8khz_back(autojump_clock, fmt):
    """Asterisk reads kind 0x10 as slin 8 kHz whatever the leg's codec (res_audiosocket.c), so
    a Dial(AudioSocket/...c(ulaw|alaw|slin16)) leg gets slin 8 kHz back, as the app does."""
    wire = Wire()
    p = Playout(wire.send, fmt)
    async with trio.open_nursery() as n:
        n.start_soon(p.run)
        p.enqueue(tone(1))
        await trio.sleep(0.05)
        n.cancel_scope.cancel()
    (_, first), (_, second), *_ = wire.frames()
    assert first.kind == second.kind == 0x10
    assert len(first.payload) == len(second.payload) == 320
    assert first.payload == tone(1)[:320]


def test_bounded_buffer_refuses_more():
    async def main():
        p = Playout(Wire().send, max_seconds=1.0)
        p.enqueue(tone(40))
        with pytest.raises(PlayoutFull):
            p.enqueue(tone(20))

    trio.run(main)


async def test_bounded_lead_runs_that_many_frames_ahead_then_paces(autojump_clock):
    wire = Wire()
    p = Playout(wire.send, lead_frames=2)
    async with trio.open_nursery() as n:
        n.start_soon(p.run)
        await trio.sleep(0.11)
        n.cancel_scope.cancel()
    times = [t for t, _ in wire.sent]
    assert times[:3] == [times[0]] * 3  # the lead goes out at once ...
    assert np.allclose(np.diff(times[2:]), FRAME_SECONDS)  # ... then one frame per 20 ms
    assert len(times) == 3 + 5
