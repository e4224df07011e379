"""A caller leg that sends no AudioSocket frames while the caller is quiet, in virtual time.

Phones and trunks with silence suppression / DTX, and a Local channel in ``Wait()``, send
nothing at all while the caller is quiet (seen on Asterisk 22.10.1). The emulator's
``send_silence=False`` is that leg. The session keeps the caller's 20 ms grid on the clock
(media_sidecar/session/gaps.py), so the turn ends, the agent answers, no-input reprompts and
hangs up, and speech-to-speech providers' server VADs hear the silence, at the same virtual
times as for a leg that streams silence frames.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import trio

from fastagi_server.emulator.audiosocket_side import AudioSocketConfig, agent_samples
from fastagi_server.emulator.caller import CallerScript
from media_sidecar.config.loader import load_config, parse_config
from media_sidecar.constants import FRAME_BYTES
from media_sidecar.protocol.audiosocket import AudioFormat, Kind, encode_audio, encode_dtmf
from media_sidecar.protocol.control import CallContext
from media_sidecar.session.base import MediaSession
from media_sidecar.session.clock import READ_PHASE
from media_sidecar.session.gaps import FILL_LAG, GAP_TOLERANCE, GapFiller
from media_sidecar.session.inbound import StreamClosed
from tests.fakes import caller_says, tone
from tests.mocks.deepgram_agent import AgentScript, MockAgentServer
from tests.mocks.openai_realtime import MockRealtimeServer, RealtimeScript
from tests.session.harness import Outcome, run_session
from tests.session.providers import deepgram_factory, openai_factory
from tests.streams import socket_stream_pair

FRAME = 0.02
CFG = load_config()
NO_INPUT = CFG.assistants[0].brain.no_input
QUIET_LEG = AudioSocketConfig(send_silence=False)


def ulaw(cfg: Any) -> Any:
    a = dataclasses.replace(cfg.assistants[0], audio_format="ulaw")
    return dataclasses.replace(cfg, assistants=(a,))


def caller_audio_frames(out: Outcome) -> list[float]:
    """Times (from the UUID) of the caller audio frames the emulated Asterisk sent."""
    return [
        round(f.t - out.asterisk.started_at, 6)
        for f in out.asterisk.frames_sent
        if f.kind == Kind.AUDIO
    ]


def agent_loud(out: Outcome) -> list[float]:
    """Times (from the UUID) of the agent's audible frames (any codec)."""
    codec = out.asterisk.agent_codec
    return [
        round(f.t - out.asterisk.started_at, 6)
        for f in out.asterisk.audio_frames()
        if np.abs(agent_samples(f, codec).astype(np.int32)).max(initial=0) > 300
    ]


def agent_started(out: Outcome) -> list[float]:
    """Times (from the UUID) at which agent audio resumed after at least 0.3 s of silence."""
    starts: list[float] = []
    last = -1.0
    for t in agent_loud(out):
        if t - last > 0.3 + 1e-6:
            starts.append(t)
        last = t
    return starts


def agent_ended_before(out: Outcome, t: float) -> float:
    """The end (from the UUID) of the agent's last audible frame sent before ``t``."""
    return max(x for x in agent_loud(out) if x < t - 1e-6) + FRAME


# -- (a) the pipeline answers a quiet leg at the same time as a streaming one -------------------


@pytest.mark.parametrize("codec", ["slin", "ulaw"])
async def test_quiet_leg_gets_its_answer_when_a_silence_sending_leg_does(autojump_clock, codec):
    """Caller speaks 10.0-11.2 s, then the quiet leg sends nothing: end of speech (700 ms
    hangover), the answer's first frame, every turn time equals the streaming leg's."""
    cfg = CFG if codec == "slin" else ulaw(CFG)
    script = (
        CallerScript()
        .speak(caller_says("what are your opening hours", 1.2), at=10.0)
        .hangup(at=16.0)
    )
    outs = {}
    for send_silence in (True, False):
        outs[send_silence] = await run_session(
            script,
            cfg=cfg,
            asterisk_config=AudioSocketConfig(send_silence=send_silence, caller_codec=codec),
        )
    loud, quiet = outs[True], outs[False]

    # the quiet leg really sent nothing but its speech: no frame before it, none after it
    assert caller_audio_frames(quiet) == pytest.approx(
        [round(10.02 + i * FRAME, 6) for i in range(60)], abs=1e-6
    )
    for out in (loud, quiet):
        turn = out.record.turns[1]
        assert (turn.trigger, turn.caller_text, turn.intent) == (
            "speech",
            "what are your opening hours",
            "hours",
        )
        # the last voiced frame is the one that arrived at 11.20 (its t_end is 11.22); the
        # frame clock read it at 11.21 and stamped it with its write phase
        assert turn.speech_end == pytest.approx(11.22, abs=1e-6)
        assert agent_started(out)[1] == pytest.approx(turn.first_frame_sent, abs=1e-6)
    # the end of speech is decided on the 35th silent slot after it (stamped 11.90), in the
    # read phase of 11.91, for both legs (the quiet leg's slots are the read phases' stamps);
    # both answers take the next write phase, 11.92
    q, s = quiet.record.turns[1], loud.record.turns[1]
    assert q.first_frame_sent == pytest.approx(11.92, abs=1e-6) and q.latency_ms == 700.0
    assert s.first_frame_sent == pytest.approx(11.92, abs=1e-6) and s.latency_ms == 700.0
    assert loud.record.turns[1].stt_done == pytest.approx(11.91, abs=1e-6)
    assert quiet.record.turns[1].stt_done == pytest.approx(11.91, abs=1e-6)
    assert [t.agent_text for t in quiet.record.turns] == [t.agent_text for t in loud.record.turns]
    assert quiet.ended.status == loud.ended.status == "CALLER_HANGUP"
    # (e) the record counts the silent frames made: one per read phase of the 16 s call
    # (stamped 0.00 ... 15.98) but the 60 that carried speech; none for a streaming leg
    assert loud.record.caller_frames_filled == 0
    assert quiet.record.caller_frames_filled == 800 - 60


# -- (b) no-input reprompt and hang-up on the clock -------------------------------------------


async def test_a_leg_that_never_sends_a_frame_is_reprompted_and_hung_up_on_time(autojump_clock):
    outs = {
        s: await run_session(
            CallerScript(), max_seconds=120, asterisk_config=AudioSocketConfig(send_silence=s)
        )
        for s in (True, False)
    }
    loud, quiet = outs[True], outs[False]
    assert caller_audio_frames(quiet) == []
    for out in (loud, quiet):
        rec = out.record
        assert [t.trigger for t in rec.turns] == ["start", "no-input", "no-input", "no-input"]
        assert [t.intent for t in rec.turns[1:]] == ["no_input", "no_input", "no_input_transfer"]
        # the embedded default passes a silent caller to a person: never hangs up on them
        assert out.ended.status == "TRANSFERRED" and out.ended.reason == "no input"
        assert out.ended.transfer_to == "operator" and out.asterisk.closed_by == "redirect"
    # each reprompt starts no_input.after (8 s) after the agent's previous audio ended: the
    # watchdog checks every 100 ms, then the reprompt takes the next playout tick
    starts = agent_started(quiet)
    assert len(starts) == 4
    assert starts == pytest.approx(agent_started(loud), abs=FRAME + 1e-6)
    for start in starts[1:]:
        waited = start - agent_ended_before(quiet, start)
        assert NO_INPUT.after <= waited <= NO_INPUT.after + 0.1 + FRAME + 1e-6
    assert quiet.record.duration == pytest.approx(loud.record.duration, abs=FRAME + 1e-6)
    # one silent frame per 20 ms slot of the whole call: nothing is counted twice
    slots = round(quiet.record.duration / FRAME)
    assert slots - 1 <= quiet.record.caller_frames_filled <= slots
    assert loud.record.caller_frames_filled == 0


async def test_a_caller_who_speaks_then_sends_nothing_is_reprompted_after_the_answer(
    autojump_clock,
):
    """The case that sat in dead air: speech, then no frames. The answer comes, then the
    reprompt no_input.after later, then the no-input hang-up."""
    script = CallerScript().speak(caller_says("what are your opening hours", 1.2), at=10.0)
    out = await run_session(script, max_seconds=120, asterisk_config=QUIET_LEG)
    rec = out.record
    assert [t.trigger for t in rec.turns] == ["start", "speech", "no-input", "no-input", "no-input"]
    assert rec.turns[1].first_frame_sent == pytest.approx(11.92, abs=1e-6)
    reprompt = rec.turns[2].first_frame_sent
    waited = reprompt - agent_ended_before(out, reprompt)
    assert NO_INPUT.after <= waited <= NO_INPUT.after + 0.1 + FRAME + 1e-6
    assert out.ended.reason == "no input"


@pytest.mark.parametrize("relay", [False, True])
async def test_max_call_seconds_ends_a_leg_that_never_sends_a_frame(autojump_clock, relay):
    if relay:
        mock = MockRealtimeServer(script=RealtimeScript(reply_ms=1000, replies=["Hello there."]))
        cfg = parse_config(RELAY_YAML.replace("EXTRA", "max_call_seconds: 12"), "sts.yaml")
        out = await run_session(
            CallerScript(),
            cfg=cfg,
            asterisk_config=QUIET_LEG,
            provider_factory=openai_factory(mock),
        )
    else:
        a = dataclasses.replace(CFG.assistants[0], max_call_seconds=12.0)
        out = await run_session(
            CallerScript(), cfg=dataclasses.replace(CFG, assistants=(a,)), asterisk_config=QUIET_LEG
        )
    assert out.ended.status == "COMPLETED"
    assert out.ended.reason == "maximum call duration reached"
    last = out.asterisk.frames_received[-1]
    assert last.kind == Kind.HANGUP  # handed back at the limit (the pipeline checks every 0.1 s)
    assert 12.0 <= last.t - out.asterisk.started_at <= 12.0 + 0.1 + FRAME + 1e-6
    assert caller_audio_frames(out) == []


# -- (c) speech-to-speech providers with server VAD hear the silence ---------------------------

RELAY_YAML = """
routing: {default: sts}
assistants:
  sts:
    provider: openai_realtime
    greeting: "Hello there."
    realtime: {audio: ulaw, silence_ms: 400}
    barge_in: {greeting_protection_ms: 0}
    EXTRA
"""

DEEPGRAM_YAML = """
routing: {default: dg}
assistants:
  dg:
    provider: deepgram_agent
    greeting: "Hello."
    barge_in: {greeting_protection_ms: 0}
"""


@pytest.mark.parametrize("vendor", ["openai", "deepgram"])
async def test_relay_server_vad_answers_a_quiet_leg(autojump_clock, vendor):
    """The provider's VAD counts audio: without the silent frames a quiet leg's turn never
    ends. With them the answer comes exactly when it does for a streaming leg."""
    script = CallerScript().speak(tone(500, 1.0), at=2.0).hangup(at=6.0)
    outs = {}
    for send_silence in (True, False):
        if vendor == "openai":
            mock: Any = MockRealtimeServer(
                script=RealtimeScript(
                    reply_ms=1000,
                    transcripts=["what time is it"],
                    replies=["Hello there.", "It is noon."],
                )
            )
            cfg, factory = parse_config(RELAY_YAML.replace("EXTRA", ""), "sts.yaml"), openai_factory
        else:
            mock = MockAgentServer(
                script=AgentScript(
                    reply_ms=1000, transcripts=["what time is it"], replies=["It is noon."]
                )
            )
            cfg, factory = parse_config(DEEPGRAM_YAML, "dg.yaml"), deepgram_factory
        out = await run_session(
            script,
            cfg=cfg,
            provider_factory=factory(mock),
            asterisk_config=AudioSocketConfig(send_silence=send_silence),
        )
        outs[send_silence] = out
    loud, quiet = outs[True], outs[False]
    assert caller_audio_frames(quiet) == pytest.approx(
        [round(2.02 + i * FRAME, 6) for i in range(50)], abs=1e-6
    )
    wait = 0.4 if vendor == "openai" else 0.5  # the provider's end-of-speech silence
    for out in (loud, quiet):
        turns = out.record.turns
        assert [t.trigger for t in turns] == ["start", "speech"]
        assert (turns[1].caller_text, turns[1].agent_text) == ("what time is it", "It is noon.")
        assert turns[1].latency_ms is not None
        assert wait * 1000 <= turns[1].latency_ms <= wait * 1000 + 60
    assert quiet.record.turns[1].speech_end == pytest.approx(
        loud.record.turns[1].speech_end, abs=FILL_LAG + 1e-6
    )
    assert quiet.record.turns[1].first_frame_sent == pytest.approx(
        loud.record.turns[1].first_frame_sent, abs=FRAME + 1e-6
    )
    assert loud.record.caller_frames_filled == 0 and quiet.record.caller_frames_filled > 150


# -- (d) the base session's gap filling, frame by frame ---------------------------------------


class Recorder(MediaSession):
    """A session that only records the caller frames its inbound path produces."""

    def __init__(self) -> None:
        super().__init__(
            uuid="u", assistant=CFG.assistants[0], context=CallContext(), fmt=AudioFormat()
        )
        self.frames: list[tuple[float, bytes]] = []
        self.fills: list[float] = []

    def _start(self, nursery: trio.Nursery) -> None:
        self._gaps = CountingFiller(self._t0, self)

    def _on_frame(self, frame: bytes, t: float) -> None:
        self.frames.append((round(t - self._t0, 6), frame))

    def _on_digit(self, digit: str, t: float) -> None:
        pass

    def _stream_closed(self, ev: StreamClosed) -> None:
        self._set_outcome("CALLER_HANGUP")
        self._end()


class CountingFiller(GapFiller):
    def __init__(self, start: float, owner: Recorder) -> None:
        super().__init__(start)
        self.owner = owner

    def due(self, now: float) -> list[float]:
        slots = super().due(now)
        if slots:
            self.owner.fills.append(round(now - self.owner._t0, 6))
        return slots


READ = READ_PHASE
"""Asterisk's bytes written at a tick are read this much later (and stamped with the tick)."""


async def listen(events: list[tuple[float, bytes]], until: float) -> Recorder:
    """Run a session on the process's frame clock, with Asterisk's ``events`` (AudioSocket
    bytes) sent at their (relative) times, and Asterisk closing at ``until``."""
    s = Recorder()
    ast, side = socket_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.run, side)
        await trio.lowlevel.checkpoint()
        t0 = trio.current_time()
        for at, data in events:
            await trio.sleep_until(t0 + at)
            await ast.send_all(data)
        await trio.sleep_until(t0 + until)
        await ast.aclose()
    assert s._t0 == t0
    return s


VOICE = b"\x10\x27" * (FRAME_BYTES // 2)


def audio(pcm: bytes = VOICE) -> bytes:
    return encode_audio(pcm)


async def test_a_leg_that_sends_nothing_gets_one_silent_frame_per_slot_from_the_start(
    autojump_clock,
):
    s = await listen([], until=1.0)
    times = [t for t, _ in s.frames]
    # nothing for GAP_TOLERANCE, then the slots since the start, then one per read phase:
    # the slots are the read phases' stamps (0.00 ... 0.98), as real frames get them
    assert times == pytest.approx([round(k * FRAME, 6) for k in range(50)], abs=1e-6)
    assert all(f == bytes(FRAME_BYTES) for _, f in s.frames)
    assert s._gaps.filled == 50
    # the first fill is in the first read phase past the tolerance, with the slots it covered;
    # then one slot in each read phase
    assert s.fills[0] == pytest.approx(GAP_TOLERANCE - FRAME, abs=1e-6)
    assert np.allclose(np.diff(s.fills), FRAME)
    assert len(s.fills) == 50 - int(GAP_TOLERANCE / FRAME + 1e-9) + 1


async def test_real_frames_resume_the_grid_and_are_not_double_counted(autojump_clock):
    # speech 0.02-0.20, nothing until 0.60, speech again 0.60-0.70 (a DTMF in the gap)
    events: list[tuple[float, bytes]] = [(round(0.02 * k, 6), audio()) for k in range(1, 11)]
    events.append((0.40, encode_dtmf("5")))
    events += [(round(0.60 + 0.02 * k, 6), audio()) for k in range(6)]
    s = await listen(events, until=0.72)
    real = [t for t, f in s.frames if f == VOICE]
    silent = [t for t, f in s.frames if f != VOICE]
    # real frames are read half a frame after they were sent, stamped with the send time
    assert real == pytest.approx(
        [round(0.02 * k, 6) for k in range(1, 11)] + [round(0.60 + 0.02 * k, 6) for k in range(6)],
        abs=1e-6,
    )
    # the gap 0.20-0.60 is filled on the grid of the last real frame, the DTMF changes nothing,
    # and the slot 0.60 belongs to the real frame that was read then
    assert silent == pytest.approx([round(0.22 + 0.02 * k, 6) for k in range(19)], abs=1e-6)
    assert s._gaps.filled == 19
    assert [t for t, _ in s.frames] == sorted(t for t, _ in s.frames)
    assert s.record.dtmf == ["5"]


async def test_a_partial_message_is_completed_with_silence_at_the_gap(autojump_clock):
    # a 30 ms message (480 bytes): one frame now, the other 10 ms waits for more audio
    s = await listen([(0.04, audio(VOICE + VOICE[:160]))], until=0.2)
    assert s.frames[0] == (0.04, VOICE)
    t, first_gap_frame = s.frames[1]
    assert t == pytest.approx(0.06, abs=1e-6)
    assert first_gap_frame == VOICE[:160] + bytes(160)
    assert all(f == bytes(FRAME_BYTES) for _, f in s.frames[2:])


async def test_a_streaming_leg_never_gets_a_silent_frame(autojump_clock):
    # frames every 20 ms with up to 21 ms of jitter (read up to two ticks later): never a gap
    jitter = [0.0, 0.021, 0.0, 0.015, 0.0, 0.021, 0.003]
    events = [(round(0.02 * k + jitter[k % len(jitter)], 6), audio()) for k in range(1, 100)]
    events.sort(key=lambda e: e[0])
    s = await listen(events, until=2.0 + 0.06)
    assert s._gaps.filled == 0 and len(s.frames) == 99


async def test_audio_read_on_the_tick_the_gap_expires_is_taken_before_silence(autojump_clock):
    """The tolerance deadline and the audio that ends the pause fall in the same read phase:
    the clock reads before it fills, so that audio covers the time and no silence goes in
    front."""
    s = await listen([(FRAME, audio()), (FRAME + GAP_TOLERANCE, audio())], until=0.2)
    assert [t for t, _ in s.frames][:2] == pytest.approx([FRAME, FRAME + GAP_TOLERANCE],
                                                         abs=1e-6)
    assert s.frames[1][1] == VOICE
