"""The emulator's AudioSocket side and the scripted caller, in virtual time over memory streams.

A tiny in-test sidecar (:class:`FakeSidecar`) reads what the emulated Asterisk sends and sends
frames back; every assertion is on exact virtual timestamps (``autojump_clock``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import numpy as np
import pytest
import trio
import trio.testing

from fastagi_server.emulator.audiosocket_side import (
    AudioSocketConfig,
    AudioSocketResult,
    AudioSocketSession,
    run_audiosocket,
)
from fastagi_server.emulator.caller import (
    AgentQuiet,
    CallerAction,
    CallerScript,
    Dtmf,
    Hangup,
)
from media_sidecar.protocol.audiosocket import (
    MAX_WIRE_PAYLOAD,
    AudioMessage,
    AudioSocketDecoder,
    DtmfMessage,
    Kind,
    Message,
    UuidMessage,
    encode_audio,
    encode_hangup,
)

UUID = "f4062607-6071-44f8-8422-b8fa8b25e2dc"
TONE = (6000 * np.sin(2 * np.pi * 440 * np.arange(160) / 8000)).astype("<i2").tobytes()


def rms(payload: bytes) -> float:
    x = np.frombuffer(payload, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(x * x))) if len(x) else 0.0


class FakeSidecar:
    """The server end of one AudioSocket: records ``(t, message)`` until EOF."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = AudioSocketDecoder(max_payload=MAX_WIRE_PAYLOAD)
        self.got: list[tuple[float, Message]] = []
        self.eof_at: float | None = None

    async def listen(self) -> None:
        while True:
            try:
                data = await self.stream.receive_some(65536)
            except trio.ClosedResourceError:
                return
            now = trio.current_time()
            if not data:
                self.eof_at = now
                return
            self.decoder.receive_data(bytes(data))
            self.got.extend((now, m) for m in self.decoder.events())

    def audio(self) -> list[tuple[float, bytes]]:
        return [(t, m.payload) for t, m in self.got if isinstance(m, AudioMessage)]

    async def send_paced(self, start: float, frames: list[bytes]) -> None:
        for i, payload in enumerate(frames):
            await trio.sleep_until(start + 0.02 * i)
            await self.stream.send_all(encode_audio(payload))


Behaviour = Callable[[FakeSidecar, float], Awaitable[None]]


async def session_with(
    behaviour: Behaviour,
    *,
    script: CallerScript | None = None,
    on_action: Callable[[CallerAction], None] | None = None,
    **config: object,
) -> tuple[AudioSocketResult, FakeSidecar]:
    """Run one session against a sidecar doing ``behaviour(sidecar, t0)``."""
    ours, theirs = trio.testing.memory_stream_pair()
    sidecar = FakeSidecar(theirs)
    session = AudioSocketSession(
        ours, UUID, caller=script.player() if script else None,
        config=AudioSocketConfig(**config), on_action=on_action,  # type: ignore[arg-type]
    )  # fmt: skip
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sidecar.listen)
        nursery.start_soon(behaviour, sidecar, trio.current_time())
        result = await session.run()
        nursery.cancel_scope.cancel()
    return result, sidecar


def hangup_at(when: float) -> Behaviour:
    async def behaviour(sidecar: FakeSidecar, t0: float) -> None:
        await trio.sleep_until(t0 + when)
        await sidecar.stream.send_all(encode_hangup())

    return behaviour


async def silent(sidecar: FakeSidecar, t0: float) -> None:
    await trio.sleep_forever()


def rel(result: AudioSocketResult, t: float) -> float:
    return round(t - result.started_at, 6)


# -- what goes to the sidecar -------------------------------------------------------------------
async def test_uuid_first_then_a_frame_every_20ms(autojump_clock: trio.abc.Clock) -> None:
    result, sidecar = await session_with(hangup_at(1.01))
    assert isinstance(sidecar.got[0][1], UuidMessage) and str(sidecar.got[0][1].uuid) == UUID
    assert result.frames_sent[0].kind == Kind.UUID and rel(result, result.frames_sent[0].t) == 0
    audio = result.frames_sent[1:]
    assert [rel(result, f.t) for f in audio] == [round(0.02 * k, 6) for k in range(1, 51)]
    assert all(f.kind == Kind.AUDIO and f.payload == bytes(320) for f in audio)
    assert [rel(result, t) for t, _ in sidecar.audio()] == [
        round(0.02 * k, 6) for k in range(1, 51)
    ]
    assert (result.result_code, result.closed_by, result.hangup_sent_by_sidecar) == (
        0, "sidecar_hangup", True,
    )  # fmt: skip
    assert rel(result, result.ended_at) == 1.01 and rel(result, sidecar.eof_at or 0) == 1.01


async def test_ulaw_leg_sends_160_byte_frames_with_kind_0x10(
    autojump_clock: trio.abc.Clock,
) -> None:
    script = CallerScript().speak(TONE, at=0.04)
    result, sidecar = await session_with(hangup_at(0.11), script=script, caller_codec="ulaw")
    payloads = [p for _, p in sidecar.audio()]
    assert [len(p) for p in payloads] == [160] * 5
    assert payloads[0] == b"\xff" * 160  # mu-law silence
    assert payloads[2] != b"\xff" * 160 and result.frames_sent[1].kind == Kind.AUDIO


async def test_dtmf_frames(autojump_clock: trio.abc.Clock) -> None:
    actions: list[CallerAction] = []
    script = (
        CallerScript().dtmf("1", at=0.5).dtmf("5", at=0.7, via="ami").dtmf("#", at=0.9, via="both")
    )
    ours, theirs = trio.testing.memory_stream_pair()
    sidecar = FakeSidecar(theirs)
    session = AudioSocketSession(ours, UUID, caller=script.player(), on_action=actions.append)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sidecar.listen)
        nursery.start_soon(hangup_at(1.21), sidecar, trio.current_time())
        nursery.start_soon(_later, 1.105, lambda: session.queue_dtmf("7"))  # AMI PlayDTMF
        result = await session.run()
    dtmf = [f for f in result.frames_sent if f.kind == Kind.DTMF]
    assert [(rel(result, f.t), f.payload) for f in dtmf] == [(0.5, b"1"), (0.9, b"#"), (1.12, b"7")]
    raw = b"".join(encode_audio(bytes(320)) if f.kind == Kind.AUDIO else bytes((f.kind, 0, 1)) + f.payload
                   for f in result.frames_sent[1:])  # fmt: skip
    assert (
        b"\x03\x00\x01\x31" + encode_audio(bytes(320)) in raw
    )  # the digit goes before the tick's audio
    assert [m.digit for _, m in sidecar.got if isinstance(m, DtmfMessage)] == ["1", "#", "7"]
    assert actions == [Dtmf("1", "audiosocket"), Dtmf("5", "ami"), Dtmf("#", "both")]


# -- what comes from the sidecar -----------------------------------------------------------------
async def test_records_arrival_times_and_agent_audio(autojump_clock: trio.abc.Clock) -> None:
    wide = np.zeros(320, dtype="<i2").tobytes()  # 20 ms of slin16

    async def behaviour(sidecar: FakeSidecar, t0: float) -> None:
        for at, frame in ((0.1, encode_audio(TONE)), (0.13, encode_audio(TONE[::-1])),
                          (0.5, encode_audio(wide, Kind.AUDIO_SLIN16))):  # fmt: skip
            await trio.sleep_until(t0 + at)
            await sidecar.stream.send_all(frame)
        await sidecar.stream.aclose()

    result, _ = await session_with(behaviour)
    assert result.frame_times() == pytest.approx([0.1, 0.13, 0.5])
    assert [f.kind for f in result.frames_received] == [0x10, 0x10, 0x12]
    pcm = result.agent_audio_pcm()
    assert pcm[:640] == TONE + TONE[::-1] and len(pcm) == 640 + 320
    assert (result.result_code, result.closed_by) == (0, "sidecar_eof")
    assert result.early_frames == 0 and result.max_lead == 0


async def test_burst_is_counted_as_early_frames(autojump_clock: trio.abc.Clock) -> None:
    async def burst(sidecar: FakeSidecar, t0: float) -> None:
        await trio.sleep_until(t0 + 0.1)
        await sidecar.stream.send_all(b"".join(encode_audio(TONE) for _ in range(50)))
        await sidecar.stream.send_all(encode_hangup())

    result, _ = await session_with(burst)
    assert len(result.audio_frames()) == 50
    assert result.early_frames == 46  # frame i is i*20 ms ahead; > 60 ms from the 5th on
    assert result.max_lead == pytest.approx(0.98)

    async def paced(sidecar: FakeSidecar, t0: float) -> None:
        await sidecar.send_paced(t0 + 0.1, [TONE] * 50)
        await sidecar.stream.send_all(encode_hangup())

    result, _ = await session_with(paced)
    assert (result.early_frames, result.max_lead) == (0, 0)


@pytest.mark.parametrize(
    ("bad", "kind"),
    [
        (b"\x03\x00\x01\x35", 0x03),  # B8: DTMF from the server
        (b"\xff\x00\x01\x02", 0xFF),  # B9: error kind
        (b"\x01\x00\x10" + bytes(16), 0x01),  # B10: a UUID from the server
        (b"\x10\x00\x00", None),  # zero-length audio
        (b"\x02\x00\x00", None),  # a kind nobody defines
    ],
)
async def test_protocol_errors_tear_down(
    autojump_clock: trio.abc.Clock, bad: bytes, kind: int | None
) -> None:
    async def behaviour(sidecar: FakeSidecar, t0: float) -> None:
        await trio.sleep_until(t0 + 0.3)
        await sidecar.stream.send_all(encode_audio(TONE) + bad)

    result, sidecar = await session_with(behaviour)
    assert (result.result_code, result.closed_by) == (-1, "protocol_error")
    assert result.frames_received[0].payload == TONE  # the good frame before it still counts
    if kind is not None:
        assert result.frames_received[-1].kind == kind
    assert rel(result, sidecar.eof_at or 0) == 0.3


async def test_eof_inside_a_frame_is_an_error(autojump_clock: trio.abc.Clock) -> None:
    async def behaviour(sidecar: FakeSidecar, t0: float) -> None:
        await sidecar.stream.send_all(encode_audio(TONE)[:100])
        await sidecar.stream.aclose()

    result, _ = await session_with(behaviour, payload_stall_timeout=None)
    assert (result.result_code, result.closed_by) == (-1, "protocol_error")


async def test_payload_after_its_header_must_come_within_5ms(
    autojump_clock: trio.abc.Clock,
) -> None:
    frame = encode_audio(TONE)

    async def split(sidecar: FakeSidecar, t0: float) -> None:
        await trio.sleep_until(t0 + 0.2)
        await sidecar.stream.send_all(frame[:3])
        await trio.sleep(0.020)  # B13: the session is gone by now
        await sidecar.stream.send_all(frame[3:])

    result, _ = await session_with(split)
    assert (result.closed_by, rel(result, result.ended_at)) == ("payload_stall", 0.205)

    async def tolerated(sidecar: FakeSidecar, t0: float) -> None:
        await sidecar.stream.send_all(frame[:1])  # a header split 1+2 with a 5 ms gap: fine
        await trio.sleep(0.005)
        await sidecar.stream.send_all(frame[1:100])
        await trio.sleep(0.004)  # progress every < 5 ms keeps the payload read alive
        await sidecar.stream.send_all(frame[100:] + encode_hangup())

    result, _ = await session_with(tolerated)
    assert result.closed_by == "sidecar_hangup" and result.frames_received[0].payload == TONE


# -- the 2 s inactivity rule ----------------------------------------------------------------------
async def test_idle_timeout_when_both_sides_are_silent(autojump_clock: trio.abc.Clock) -> None:
    """B7: far end and server silent -> closed at UUID + 2.0 s, result -1."""
    result, sidecar = await session_with(silent, send_silence=False)
    assert (result.result_code, result.closed_by) == (-1, "idle_timeout")
    assert rel(result, result.ended_at) == 2.0 and rel(result, sidecar.eof_at or 0) == 2.0
    assert len(result.frames_sent) == 1  # only the UUID


async def test_idle_timeout_counts_caller_frames_unless_told_not_to(
    autojump_clock: trio.abc.Clock,
) -> None:
    result, _ = await session_with(hangup_at(3.0))
    assert result.closed_by == "sidecar_hangup"  # caller silence frames keep it alive
    result, _ = await session_with(hangup_at(3.0), idle_timeout_requires_both=False)
    assert (result.closed_by, rel(result, result.ended_at)) == ("idle_timeout", 2.0)

    async def one_frame(sidecar: FakeSidecar, t0: float) -> None:
        await trio.sleep_until(t0 + 1.5)
        await sidecar.stream.send_all(encode_audio(TONE))
        await trio.sleep_forever()

    result, _ = await session_with(one_frame, send_silence=False)
    assert (result.closed_by, rel(result, result.ended_at)) == ("idle_timeout", 3.5)


# -- caller hangup / redirect ---------------------------------------------------------------------
@pytest.mark.parametrize("redirect", [False, True])
async def test_scripted_hangup_or_redirect_closes_the_socket(
    autojump_clock: trio.abc.Clock, redirect: bool
) -> None:
    script = CallerScript()
    script = script.redirect("test", "redir", at=1.0) if redirect else script.hangup(at=1.0)
    result, sidecar = await session_with(silent, script=script)
    assert result.result_code == -1
    assert result.closed_by == ("redirect" if redirect else "caller_hangup")
    assert rel(result, sidecar.eof_at or 0) == 1.0
    assert (
        result.frames_sent[-1].kind == Kind.AUDIO and rel(result, result.frames_sent[-1].t) == 0.98
    )


async def test_run_audiosocket_standalone(autojump_clock: trio.abc.Clock) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hangup_at(0.05), FakeSidecar(theirs), trio.current_time())
        result = await run_audiosocket(ours, UUID)
    assert result.result_code == 0 and len(result.frames_sent) == 3


# -- a scripted conversation on a timeline --------------------------------------------------------
async def test_turn_taking_conversation_timeline(autojump_clock: trio.abc.Clock) -> None:
    """Bot greets 0.11-1.11 s; caller answers 0.5 s after the bot went quiet (0.8 s of speech);
    the bot replies 0.3 s after the caller stopped; the caller hangs up 1 s after that."""
    speech = np.full(6400, 3000, dtype=np.int16)  # 0.8 s
    script = CallerScript().speak_after_agent_quiet(speech, quiet_ms=500)
    script.hangup(at=AgentQuiet(1000))
    bot_replied: list[float] = []

    async def bot(sidecar: FakeSidecar, t0: float) -> None:
        await sidecar.send_paced(t0 + 0.11, [TONE] * 50)
        k = 0
        while True:  # polls at t0 + 0.01 + 0.02 k: never at a caller-frame instant
            k += 1
            await trio.sleep_until(t0 + 0.01 + 0.02 * k)
            loud = [t for t, p in sidecar.audio() if rms(p) > 500]
            if loud and trio.current_time() - loud[-1] >= 0.3 - 1e-9:
                break
        bot_replied.append(trio.current_time() - t0)
        await sidecar.send_paced(trio.current_time(), [TONE] * 30)
        await trio.sleep_forever()

    result, sidecar = await session_with(bot, script=script)
    loud_sent = [
        rel(result, f.t)
        for f in result.frames_sent
        if f.kind == Kind.AUDIO and rms(f.payload) > 500
    ]
    assert (loud_sent[0], loud_sent[-1], len(loud_sent)) == (1.62, 2.42, 41)  # speech 1.61-2.41
    assert bot_replied == [pytest.approx(2.73)]
    assert (result.closed_by, rel(result, result.ended_at)) == ("caller_hangup", 4.34)


async def _later(delay: float, fn: Callable[[], object]) -> None:
    await trio.sleep(delay)
    fn()


# -- the caller player on its own (pure) ----------------------------------------------------------
def ticks(player, until: float, agent: Callable[[float], bool] = lambda t: False):  # type: ignore[no-untyped-def]
    """Drive a player from t=0 like the session does; return {tick: (actions, frame)}."""
    player.start_call(0.0)
    player.begin_audio(0.0)
    out = {}
    for k in range(1, round(until / 0.02) + 1):
        now = round(0.02 * k, 9)
        if agent(now - 0.02):  # the agent frame that arrived at the previous tick
            player.observe_agent(now - 0.02, np.full(160, 2000, dtype=np.int16))
        out[round(now, 2)] = (player.poll(now), player.frame(now))
    return out


def test_speak_at_is_sample_accurate() -> None:
    pcm = np.full(400, 1000, dtype=np.int16)  # 50 ms
    out = ticks(CallerScript().speak(pcm, at=0.51).player(), 0.6)
    assert out[0.5][1] is None
    first = np.frombuffer(out[0.52][1], dtype="<i2")
    assert (first[:80] == 0).all() and (first[80:] == 1000).all()
    assert np.frombuffer(out[0.56][1], dtype="<i2")[:80].tolist() == [1000] * 80
    assert out[0.58][1] is None


def test_overlapping_speech_is_mixed_and_clipped() -> None:
    loud = np.full(160, 30000, dtype=np.int16)
    out = ticks(CallerScript().speak(loud, at=0.0).speak(loud, at=0.0).player(), 0.02)
    assert set(np.frombuffer(out[0.02][1], dtype="<i2").tolist()) == {32767}


def test_agent_relative_triggers() -> None:
    speech = np.full(800, 500, dtype=np.int16)  # 0.1 s
    script = (
        CallerScript()
        .speak_after_agent_quiet(speech, quiet_ms=300)  # agent: 0-1 s -> speak at 1.3
        .speak_after_agent_quiet(speech, quiet_ms=300)  # agent: 2-4 s -> speak at 4.3
        .barge_in(speech, utterance=2, delay=0.8)  # 2.0 + 0.8
        .dtmf("12#", at=5.0, gap=0.25)
        .hangup(at=0.9, anchor="call")
    )
    player = script.player()
    out = ticks(player, 5.6, agent=lambda t: t < 1.0 - 1e-9 or 2.0 - 1e-9 < t < 4.0 - 1e-9)
    assert [round(t, 6) for t in player.agent_utterances] == [0.0, 2.0]
    started = sorted(round(s.t, 2) for s in player.log if s.what.startswith("speak"))
    assert started == [1.3, 2.8, 4.3]
    assert [(round(s.t, 2), s.what) for s in player.log if "speak" not in s.what] == [
        (0.9, "Hangup(cause=16)"),
        (5.0, "Dtmf(digit='1', via='audiosocket')"),
        (5.25, "Dtmf(digit='2', via='audiosocket')"),
        (5.5, "Dtmf(digit='#', via='audiosocket')"),
    ]
    assert out[0.9][0] == [Hangup()] and player.done


def test_next_deadline_and_lost_speech() -> None:
    player = CallerScript().speak(b"\x01\x00" * 80, at=0.2).hangup(at=3.0, anchor="call").player()
    assert player.next_deadline() is None
    player.start_call(10.0)
    assert player.next_deadline() == 13.0
    player.begin_audio(11.0)
    assert player.next_deadline() == pytest.approx(11.2)
    player.end_audio()
    assert player.poll(11.2) == [] and "lost" in player.log[0].what
    assert player.poll(13.0) == [Hangup()] and player.next_deadline() is None


def test_script_validation() -> None:
    with pytest.raises(ValueError):
        CallerScript().dtmf("x", at=1.0)
    with pytest.raises(ValueError):
        CallerScript().speak(b"\x00", at=0.0)
