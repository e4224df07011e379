"""Understanding the caller, whole calls in virtual time: misheard words reach their intents,
a caller misunderstood twice goes to a person, silence is not a misunderstanding, and a slow
answer is covered by the filler without ever overlapping it.

The recogniser is a fake that "hears" a fixed transcript per tone frequency, so the product's
re-scoring, rule brain and turn taking are what is tested; the LLM is the OpenAI chat mock
with a scripted first-token delay.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastagi_server.emulator.caller import CallerScript
from media_sidecar.config.loader import load_config, parse_config
from tests.fakes import RATE, dominant_freq, tone
from tests.mocks.openai_chat import MockChatServer
from tests.mocks.openai_chat.script import ChatScript, Reply
from tests.session import harness
from tests.session.harness import run_session
from tests.session.pipeline import KEYS, pipeline_net

FRAME = 0.02
HEARD = {
    350: "Thales, please.",
    450: "sails please",
    550: "Police transfer me to the billing department.",
    650: "Um, uh, I'd like, um, the billing department.",
    750: "blah blah",
    850: "what are your opening hours",
    950: "extension two oh oh three",
}
"""What the fake recogniser hears for each tone (the misheard forms callers reported)."""


class MishearingStt:
    name = "fake"

    def transcribe(self, pcm: np.ndarray, rate: int) -> str:
        if len(pcm) < rate // 10:
            return ""
        f = dominant_freq(pcm, rate)
        best = min(HEARD, key=lambda k: abs(k - f))
        return HEARD[best] if abs(best - f) < 30 else ""


def says(text: str, seconds: float = 1.0) -> bytes:
    return tone(next(f for f, s in HEARD.items() if s == text), seconds)


FILLER_HZ = 500
FILLER = tone(FILLER_HZ, 0.5, amp=6000)
"""The filler as the sidecar would have rendered it: a 500 Hz tone, 25 frames, told apart
from the fake TTS's 1 kHz answers."""


@pytest.fixture
def engines(monkeypatch):
    """The harness's server with the mishearing recogniser and a rendered filler."""
    original = harness.build_server

    def build(cfg, **kw):
        server, registry, control = original(cfg, **kw)
        server.services.stt = MishearingStt()
        server.services.fillers = {a.name: FILLER for a in cfg.assistants}
        return server, registry, control

    monkeypatch.setattr(harness, "build_server", build)


def frames_by_pitch(out, start: float = 0.0) -> list[tuple[float, int]]:
    """(call time, dominant frequency rounded to 100 Hz) of every loud agent frame."""
    rows = []
    for f in out.asterisk.audio_frames():
        pcm = np.frombuffer(f.payload, dtype="<i2")
        if f.t - out.t0 >= start and np.abs(pcm).max(initial=0) > 300:
            rows.append((round(f.t - out.t0, 3), round(dominant_freq(pcm, RATE), -2)))
    return rows


@pytest.mark.parametrize(
    ("heard", "intent", "destination", "rescored"),
    [
        ("Thales, please.", "sales", "sales", "Sales, please."),
        ("sails please", "sales", "sales", "sales please"),
        ("Police transfer me to the billing department.", "billing", "billing", ""),
        ("Um, uh, I'd like, um, the billing department.", "billing", "billing", ""),
        ("extension two oh oh three", "extension", "support", ""),
    ],
)
async def test_misheard_phrasings_reach_their_intents(autojump_clock, engines, heard, intent,
                                                      destination, rescored):
    out = await run_session(CallerScript().speak_after_agent_quiet(says(heard)))
    assert out.ended.status == "TRANSFERRED" and out.ended.transfer_to == destination
    turn = out.record.turns[1]
    assert (turn.caller_text, turn.rescored_text, turn.intent) == (heard, rescored, intent)
    assert turn.match["score"] >= 0.8 and turn.match["how"] != "none"
    assert turn.filler_at is None  # the rule brain answers at once: no filler


async def test_two_misunderstandings_in_a_row_go_to_the_operator(autojump_clock, engines):
    script = (CallerScript().speak_after_agent_quiet(says("blah blah"))
              .speak_after_agent_quiet(says("blah blah")))
    out = await run_session(script)
    rec = out.record
    assert [t.intent for t in rec.turns] == ["greeting", "fallback", "not_understood_transfer"]
    assert rec.turns[1].match == {"term": "", "heard": "", "score": 0.0, "how": "none"}
    brain = load_config().assistants[0].brain
    assert rec.turns[1].agent_text == brain.fallback
    assert rec.turns[2].agent_text == brain.not_understood.reply
    assert out.ended.status == "TRANSFERRED" and out.ended.transfer_to == "operator"
    assert out.ended.reason == "caller not understood"
    (req,) = out.control.requests
    assert (req.context, req.exten) == ("from-internal", "0")


async def test_silence_is_not_a_misunderstanding(autojump_clock, engines):
    """One misunderstanding, then silence: no-input reprompts (not the transfer), then an
    understood request resets nothing it should not and is answered."""
    script = (CallerScript().speak_after_agent_quiet(says("blah blah"))
              .speak(says("what are your opening hours"), at=27.0).hangup(at=40.0))
    out = await run_session(script, max_seconds=120)
    rec = out.record
    assert [(t.trigger, t.intent) for t in rec.turns] == [
        ("start", "greeting"), ("speech", "fallback"), ("no-input", "no_input"),
        ("speech", "hours")]
    assert out.ended.status == "CALLER_HANGUP"


YAML = """
routing: {default: bot}
assistants:
  bot:
    provider: pipeline
    llm: {engine: openai}
    greeting: "Hi."
    instructions: "You answer calls for ACME."
    destinations:
      operator: {context: from-internal, exten: "0"}
    fallback_destination: operator
    FILLER
"""


def llm_config(filler: str = ""):
    return parse_config(YAML.replace("FILLER", filler), "llm.yaml")


async def run_llm_call(first_token_delay: float, filler: str = ""):
    chat = MockChatServer(script=ChatScript(replies={"opening hours": Reply("Nine to five.")},
                                            first_token_delay=first_token_delay,
                                            token_delay=0.05))
    script = CallerScript().speak(says("what are your opening hours", 1.0), at=2.0)
    async with pipeline_net({"api.openai.com": chat}) as net:
        return await run_session(script.hangup(at=12.0), cfg=llm_config(filler), net=net,
                                 env=KEYS)


async def test_a_slow_llm_gets_the_filler_at_the_threshold_then_the_answer(autojump_clock,
                                                                            engines):
    out = await run_llm_call(first_token_delay=3.0)
    turn = out.record.turns[1]
    assert turn.intent == "llm" and turn.agent_text == "Nine to five."
    # the filler's first frame leaves at the first tick from 1.2 s after the end of speech
    assert 1.2 <= turn.filler_at - turn.speech_end <= 1.2 + FRAME + 1e-6
    rows = frames_by_pitch(out, start=turn.speech_end)
    filler = [t for t, hz in rows if hz == FILLER_HZ]
    answer = [t for t, hz in rows if hz == 1000]
    assert len(filler) == len(FILLER) // 320 and filler[0] == pytest.approx(turn.filler_at)
    assert np.allclose(np.diff(filler), FRAME)  # played whole, once
    assert answer[0] == pytest.approx(turn.first_frame_sent) and answer[0] > filler[-1]
    # the answer is not counted from the filler: latency is the answer's own
    assert turn.latency_ms == pytest.approx((turn.first_frame_sent - turn.speech_end) * 1000)


async def test_an_answer_ready_during_the_filler_waits_for_its_last_frame(autojump_clock,
                                                                          engines):
    # The first token arrives 1.45 s after the end of speech (0.7 s hangover + 0.75 s): the
    # filler started at 1.2 s and has 0.5 s to play.
    out = await run_llm_call(first_token_delay=0.75)
    turn = out.record.turns[1]
    assert turn.filler_at is not None
    rows = frames_by_pitch(out, start=turn.speech_end)
    pitches = [hz for _, hz in rows]
    n = len(FILLER) // 320
    assert pitches[:n] == [FILLER_HZ] * n and set(pitches[n:]) == {1000}
    times = [t for t, _ in rows]
    assert np.allclose(np.diff(times), FRAME)  # filler then answer, back to back, no overlap
    assert turn.llm_first_token < times[n]  # the answer was ready before the filler ended


async def test_no_filler_when_the_answer_comes_first_or_it_is_off(autojump_clock, engines):
    quick = await run_llm_call(first_token_delay=0.3)
    assert quick.record.turns[1].filler_at is None
    assert {hz for _, hz in frames_by_pitch(quick)} == {1000}
    off = await run_llm_call(first_token_delay=3.0, filler="filler: {after: 0}")
    assert off.record.turns[1].filler_at is None
    assert {hz for _, hz in frames_by_pitch(off)} == {1000}


async def test_a_barge_in_during_the_filler_cuts_it_and_the_turn(autojump_clock, engines):
    chat = MockChatServer(script=ChatScript(replies={"opening hours": Reply("Nine to five."),
                                                     "blah": Reply("Go ahead.")},
                                            first_token_delay=3.0))
    script = (CallerScript().speak(says("what are your opening hours", 1.0), at=2.0)
              .speak(says("blah blah", 1.0), at=4.4).hangup(at=14.0))
    async with pipeline_net({"api.openai.com": chat}) as net:
        out = await run_session(script, cfg=llm_config(), net=net, env=KEYS)
    rec = out.record
    assert rec.barge_ins == 1 and rec.turns[1].interrupted
    assert rec.turns[1].filler_at is not None and rec.turns[1].agent_text == ""
    assert chat.chats[0].client_closed
    cut, second = rec.barge_in_at[0], rec.turns[2].filler_at
    assert second is not None and second > cut + 1.2  # the next turn's own filler
    filler = [t for t, hz in frames_by_pitch(out) if hz == FILLER_HZ]
    assert not [t for t in filler if cut + FRAME < t < second]
    assert rec.turns[2].agent_text == "Go ahead."
