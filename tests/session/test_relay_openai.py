"""OpenAI Realtime calls through the real AudioSocket server and our client, in virtual time.

Asterisk is the emulator; the provider is the protocol-faithful mock (tests/mocks), connected
to the product's client over an in-memory stream so the autojump clock drives both.
"""

from __future__ import annotations

import numpy as np
import pytest
import trio

from fastagi_server.emulator.caller import CallerScript
from media_sidecar.config.loader import parse_config
from tests.fakes import tone
from tests.mocks.openai_realtime import MockRealtimeServer, RealtimeScript
from tests.session.harness import run_session
from tests.session.providers import openai_factory

FRAME = 0.02
YAML = """
routing: {default: sts}
assistants:
  sts:
    provider: openai_realtime
    greeting: "Hello there."
    realtime: {audio: AUDIO, silence_ms: 400}
    barge_in: {greeting_protection_ms: 0}
"""


def memory_provider(mock: MockRealtimeServer, key: str = "test-key"):
    return openai_factory(mock, key)


def loud_times(out) -> list[float]:
    return [f.t for f in out.asterisk.audio_frames()
            if np.abs(np.frombuffer(f.payload, dtype="<i2")).max(initial=0) > 300]


@pytest.mark.parametrize("audio", ["ulaw", "pcm"])
async def test_greeting_then_an_answer_with_transcripts(autojump_clock, audio):
    mock = MockRealtimeServer(script=RealtimeScript(reply_ms=1000, transcripts=["what time is it"],
                                                    replies=["Hello there.", "It is noon."]))
    cfg = parse_config(YAML.replace("AUDIO", audio), "sts.yaml")
    script = CallerScript().speak(tone(500, 1.0), at=2.0).hangup(at=6.0)
    out = await run_session(script, cfg=cfg, provider_factory=memory_provider(mock))

    assert out.ended.status == "CALLER_HANGUP"
    log = mock.sessions[0]
    fmt = {"ulaw": {"type": "audio/pcmu"}, "pcm": {"type": "audio/pcm", "rate": 24000}}[audio]
    assert log.session["audio"]["output"]["format"] == fmt
    assert log.model == "gpt-realtime-2.1"
    # greeting (1 s) then the answer (1 s) reached Asterisk as audio, on the 20 ms grid
    loud = loud_times(out)
    assert 90 <= len(loud) <= 102
    gaps = np.diff([f.t for f in out.asterisk.frames_received])
    assert np.allclose(gaps, FRAME, atol=1e-6)
    turns = out.record.turns
    assert [t.trigger for t in turns] == ["start", "speech"]
    assert turns[0].agent_text == "Hello there."
    assert turns[1].caller_text == "what time is it" and turns[1].agent_text == "It is noon."
    # turn latency: caller end of speech -> first agent frame, with the provider's 400 ms VAD
    assert turns[1].latency_ms is not None and 400 <= turns[1].latency_ms <= 400 + 60


async def test_barge_in_flushes_and_truncates_at_the_audio_actually_played(autojump_clock):
    mock = MockRealtimeServer(script=RealtimeScript(reply_ms=3000, vad_start_ms=60))
    cfg = parse_config(YAML.replace("AUDIO", "ulaw"), "sts.yaml")
    # greeting 3 s; the caller asks at 3.5 s; barges in 1 s into the answer (utterance 2)
    script = (CallerScript().speak(tone(500, 0.8), at=3.5)
              .barge_in(tone(600, 0.8), utterance=2, delay=1.0).hangup(at=9.0))
    out = await run_session(script, cfg=cfg, provider_factory=memory_provider(mock))

    log = mock.sessions[0]
    (trunc,) = log.truncations
    answer_item = trunc.item_id
    # the frames of the answer that reached Asterisk before the flush
    loud = loud_times(out)
    greeting_end = 3.0 + out.asterisk.started_at
    answer_frames = [t for t in loud if t > greeting_end + 0.1]
    assert answer_frames, "the answer was never heard"
    barge = out.record.barge_in_at[0] + out.asterisk.started_at
    played_ms = len([t for t in answer_frames if t <= barge + 1e-9]) * 20
    assert abs(trunc.audio_end_ms - played_ms) <= 20
    assert trunc.audio_end_ms < log.assistant_audio_ms[answer_item]
    # nothing of the cut answer after the flush frame
    assert not [t for t in answer_frames if t > barge + FRAME + 1e-9 and t < barge + 0.5]
    assert out.record.turns[1].interrupted


async def test_live_view_shows_the_caller_speaking_by_the_providers_turn_detection(
        autojump_clock, monkeypatch):
    # the provider takes the turns (server VAD): the dashboard's "who is speaking" follows its
    # speech_started / speech_stopped, not a local detector (there is none)
    from media_sidecar.server.registry import CallRegistry

    calls = []
    attached = trio.Event()
    attach = CallRegistry.attach

    def attach_and_keep(self, uuid, call):
        calls.append(call)
        attached.set()
        return attach(self, uuid, call)

    monkeypatch.setattr(CallRegistry, "attach", attach_and_keep)
    mock = MockRealtimeServer(script=RealtimeScript(reply_ms=1000, transcripts=["hi"],
                                                    replies=["Hello there.", "It is noon."]))
    cfg = parse_config(YAML.replace("AUDIO", "pcm"), "sts.yaml")
    script = CallerScript().speak(tone(500, 1.5), at=2.0).hangup(at=6.0)
    seen: dict[float, str] = {}

    async def look() -> None:
        await attached.wait()
        t0 = trio.current_time()
        for at in (3.0, 4.5, 5.8):  # caller talking; the answer playing; quiet
            await trio.sleep_until(t0 + at)
            seen[at] = calls[0].snapshot()["speaking"]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(look)
        out = await run_session(script, cfg=cfg, provider_factory=memory_provider(mock))
    assert out.ended.status == "CALLER_HANGUP"
    assert seen == {3.0: "caller", 4.5: "agent", 5.8: "none"}, seen
