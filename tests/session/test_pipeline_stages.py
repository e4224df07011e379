"""Pipeline stage options, one full call each: every STT, LLM and TTS engine against its
protocol mock, through the real AudioSocket server and the emulator's Asterisk side, in
virtual time. Each test checks both transcripts in the call record and that stage's wire facts
in the mock's log."""

from __future__ import annotations

import math

import pytest
import trio

from fastagi_server.emulator.caller import CallerScript
from media_sidecar.brain.text import split_sentences
from media_sidecar.config.loader import parse_config
from media_sidecar.dsp.vad import POST_ROLL_MS, PRE_ROLL_MS
from media_sidecar.session import base as session_base
from media_sidecar.session.playout import Playout
from tests.fakes import SENTENCES, FakeTts, tone
from tests.mocks.deepgram_speak import MockSpeakRestServer, MockSpeakServer, SpeakScript
from tests.mocks.ollama import MockOllamaServer
from tests.mocks.openai_audio import AudioScript, MockAudioServer
from tests.mocks.openai_chat import ChatScript, MockChatServer, Reply, ToolCall
from tests.session.harness import run_session
from tests.session.pipeline import KEYS, pipeline_net

FRAME = 0.02
GREETING = "Hello Ada Lovelace, how can I help?"
HOURS = "We open at nine. We close at five on weekdays."
BYE = "Thanks for calling, goodbye!"
SYSTEM = {"role": "system", "content": "You answer calls for ACME. The caller is Ada Lovelace."}

YAML = """
routing: {default: bot}
assistants:
  bot:
    provider: pipeline
    stt: <STT>
    llm: <LLM>
    tts: <TTS>
    greeting: "Hello {caller_name}, how can I help?"
    instructions: "You answer calls for ACME. The caller is {caller_name}."
    barge_in: {greeting_protection_ms: 0}
    destinations:
      sales: {context: from-internal, exten: "2002", description: sales team}
      operator: {context: from-internal, exten: "0"}
    fallback_destination: operator
"""


def config(stt: str = "{engine: moonshine}", llm: str = "{engine: openai}",
           tts: str = "{engine: piper}"):
    text = YAML.replace("<STT>", stt).replace("<LLM>", llm).replace("<TTS>", tts)
    return parse_config(text, "stages.yaml")


def chat_script(**kw) -> ChatScript:
    """Opening hours in two sentences; goodbye with the hangup tool."""
    return ChatScript(replies={
        "opening hours": Reply(HOURS),
        "goodbye": Reply(BYE, tool_calls=(ToolCall("hangup_call", {"reason": "done"}),)),
    }, **kw)


def hours_then_bye() -> CallerScript:
    """The caller asks for the opening hours (500 Hz), then says goodbye (400 Hz); hangs up at
    30 s if the agent has not ended the call by then."""
    return (CallerScript().speak(tone(500, 1.0), at=4.0).speak(tone(400, 0.8), at=10.0)
            .hangup(at=30.0))


def assert_hours_then_bye(out, caller=(SENTENCES[500], SENTENCES[400])) -> None:
    """Greeting, the opening-hours answer and the farewell, each heard whole; the call ended by
    the hangup tool after the farewell."""
    rec = out.record
    assert out.ended.status == "COMPLETED", out.ended
    assert out.asterisk.closed_by == "sidecar_hangup"
    assert [t.trigger for t in rec.turns] == ["start", "speech", "speech"]
    assert [t.caller_text for t in rec.turns] == ["", *caller]
    assert [t.agent_text for t in rec.turns] == [GREETING, HOURS, BYE]
    assert [t.heard_text for t in rec.turns] == [GREETING, HOURS, BYE]
    assert [a.kind for a in rec.actions] == ["tool", "hangup"]
    assert rec.actions[0].tool == "hangup_call" and rec.actions[0].arguments == {"reason": "done"}


def frames_of(seconds: float) -> int:
    return math.ceil(round(seconds / FRAME, 6))


# -- speech to text ------------------------------------------------------------------------------

async def test_openai_stt_sends_one_8khz_wav_per_utterance(autojump_clock):
    said = ["what are your opening hours on Saturday", "goodbye then"]  # not FakeStt's words
    audio = MockAudioServer(script=AudioScript(transcripts=said))
    chat = MockChatServer(script=chat_script())
    async with pipeline_net({"api.openai.com": chat, "audio.test": audio}) as net:
        out = await run_session(hours_then_bye(), net=net, env=KEYS, cfg=config(
            stt="{engine: openai, url: 'https://audio.test/v1'}"))
    assert_hours_then_bye(out, caller=said)
    assert out.server.services.stt.calls == 0  # the local engine stayed idle
    first, second = audio.transcriptions
    for t, seconds in ((first, 1.0), (second, 0.8)):
        assert t.status == 200 and t.completed
        assert t.fields == {"model": "gpt-transcribe", "response_format": "json",
                            "language": "en"}
        assert (t.filename, t.content_type) == ("utterance.wav", "audio/wav")
        assert (t.encoding, t.rate, t.channels) == ("pcm16", 8000, 1)
        # the utterance the call's VAD cut: the tone with its pre- and post-roll
        assert t.audio_seconds == pytest.approx(seconds + (PRE_ROLL_MS + POST_ROLL_MS) / 1000)
    rec = out.record
    for turn, t in zip(rec.turns[1:], audio.transcriptions, strict=True):
        # the transcript is the caller's turn as soon as it arrives
        assert turn.caller_text == t.text
        assert turn.stt_done == pytest.approx(
            t.started_at - out.t0 + audio.script.transcribe_delay, abs=1e-6)
    assert [c.messages[-1] for c in chat.chats] == [{"role": "user", "content": text}
                                                    for text in said]


async def test_moonshine_stt_transcribes_locally(autojump_clock):
    chat = MockChatServer(script=chat_script())
    async with pipeline_net({"api.openai.com": chat}) as net:
        out = await run_session(hours_then_bye(), net=net, env=KEYS, cfg=config())
    assert_hours_then_bye(out)
    assert out.server.services.stt.calls == 2  # one per utterance
    assert out.record.provider["stages"] == "moonshine+openai+piper"
    msgs = chat.chats[-1].messages
    assert msgs[0] == SYSTEM
    assert msgs[1:] == [{"role": "assistant", "content": GREETING},
                        {"role": "user", "content": SENTENCES[500]},
                        {"role": "assistant", "content": HOURS},
                        {"role": "user", "content": SENTENCES[400]}]


# -- language model ------------------------------------------------------------------------------

async def test_ollama_native_objects_for_arguments_and_tool_name_on_results(autojump_clock):
    refused = "I can only put you through to sales."
    ollama = MockOllamaServer(script=ChatScript(model="qwen3", replies={
        "billing": Reply(tool_calls=(ToolCall("transfer_call", {"destination": "billing"}),)),
        "goodbye": Reply(BYE, tool_calls=(ToolCall("hangup_call", {"reason": "done"}),)),
    }, after_tool={"transfer_call": Reply(refused)}))
    caller = (CallerScript().speak(tone(300, 1.0), at=4.0).speak(tone(400, 0.8), at=10.0)
              .hangup(at=30.0))
    async with pipeline_net({"127.0.0.1": ollama}) as net:
        out = await run_session(caller, net=net, env={},
                                cfg=config(llm="{engine: ollama, model: qwen3}"))
    rec = out.record
    assert out.ended.status == "COMPLETED" and out.asterisk.closed_by == "sidecar_hangup"
    assert [t.caller_text for t in rec.turns] == ["", SENTENCES[300], SENTENCES[400]]
    assert [t.agent_text for t in rec.turns] == [GREETING, refused, BYE]
    assert [t.heard_text for t in rec.turns] == [GREETING, refused, BYE]
    # the model's object arguments reached the tools as they were sent
    transfer, hangup, hung_up = rec.actions
    assert (transfer.tool, transfer.arguments) == ("transfer_call", {"destination": "billing"})
    assert "must be one of ['sales', 'operator']" in transfer.result
    assert (hangup.tool, hangup.arguments) == ("hangup_call", {"reason": "done"})
    assert hung_up.kind == "hangup" and not out.control.requests
    # the wire: three NDJSON chats, each accepted without a problem
    assert [(c.path, c.model, c.status, c.problems) for c in ollama.chats] == [
        ("/api/chat", "qwen3", 200, [])] * 3
    first, after_tool, bye = ollama.chats
    assert first.params["think"] is False and first.params["keep_alive"] == "5m"
    assert first.params["options"] == {"temperature": 0.7, "num_predict": 300}
    assert first.messages == [SYSTEM, {"role": "assistant", "content": GREETING},
                              {"role": "user", "content": SENTENCES[300]}]
    call_id = first.tool_call_ids[0]
    assert after_tool.messages[3:] == [
        {"role": "assistant", "content": "", "tool_calls": [{"id": call_id, "function": {
            "index": 0, "name": "transfer_call", "arguments": {"destination": "billing"}}}]},
        {"role": "tool", "content": transfer.result, "tool_name": "transfer_call",
         "tool_call_id": call_id}]
    assert bye.messages[-2:] == [{"role": "assistant", "content": refused},
                                 {"role": "user", "content": "goodbye"}]


async def test_ollama_openai_compatible_v1_without_a_key(autojump_clock):
    ollama = MockOllamaServer(script=chat_script(model="qwen3", tool_call_style="whole"))
    async with pipeline_net({"127.0.0.1": ollama}) as net:
        out = await run_session(hours_then_bye(), net=net, env={}, cfg=config(
            llm="{engine: openai, url: 'http://127.0.0.1:11434/v1', model: qwen3}"))
    assert_hours_then_bye(out)
    assert [(c.path, c.model, c.status, c.problems) for c in ollama.chats] == [
        ("/v1/chat/completions", "qwen3", 200, [])] * 2
    for c in ollama.chats:
        assert "authorization" not in c.record.request.headers
        assert c.messages[0] == SYSTEM and c.stream


ANNOUNCE = "Let me put you through to our sales team."


async def text_and_transfer_call():
    """The caller asks for sales (600 Hz); the model answers with a sentence and, in the same
    reply, a transfer_call tool call (OpenAI's argument fragments)."""
    chat = MockChatServer(script=ChatScript(replies={"sales": Reply(ANNOUNCE, tool_calls=(
        ToolCall("transfer_call", {"destination": "sales", "reason": "sales question"}),))}))
    caller = CallerScript().speak(tone(600, 1.0), at=4.0).hangup(at=30.0)
    async with pipeline_net({"api.openai.com": chat}) as net:
        out = await run_session(caller, net=net, env=KEYS, cfg=config())
    assert out.ended.status == "TRANSFERRED", out.ended
    assert len(chat.chats) == 1 and chat.chats[0].completed
    return out


AGENT_FRAMES = frames_of(FakeTts.seconds(GREETING)) + frames_of(FakeTts.seconds(ANNOUNCE))
"""Frames of the greeting and the transfer announcement (FakeTts: 60 ms per character)."""


async def test_openai_text_and_transfer_announces_then_redirects(autojump_clock):
    out = await text_and_transfer_call()
    rec = out.record
    assert (out.ended.transfer_to, out.ended.transfer_method) == ("sales", "redirect")
    (req,) = out.control.requests
    assert (req.destination, req.context, req.exten, req.priority) == (
        "sales", "from-internal", "2002", "1")
    assert out.asterisk.closed_by == "redirect"
    assert [t.caller_text for t in rec.turns] == ["", SENTENCES[600]]
    assert [t.agent_text for t in rec.turns] == [GREETING, ANNOUNCE]
    assert [t.heard_text for t in rec.turns] == [GREETING, ANNOUNCE]
    assert rec.turns[1].intent == "transfer"
    assert [(a.kind, a.tool or a.destination) for a in rec.actions] == [
        ("tool", "transfer_call"), ("transfer", "sales")]
    assert rec.actions[0].arguments == {"destination": "sales", "reason": "sales question"}
    # the sidecar sent every frame of the announcement before it asked for the redirect, and
    # the emulator's session ended at the redirect right after the last one (the redirect
    # never overtakes the last frame: see the test below)
    assert rec.playout["audio_frames"] == AGENT_FRAMES
    frames = out.agent_frames()
    assert len(frames) == AGENT_FRAMES
    assert 0 <= out.asterisk.ended_at - frames[-1].t <= 2 * FRAME


class SlowWritePlayout(Playout):
    """The product's playout whose every AudioSocket write takes 1 ms: a transport whose
    write yields before the bytes have left (back-pressure; trio's memory streams, as in this
    harness, checkpoint before they buffer)."""

    def __init__(self, send, *args, **kw) -> None:
        async def slow_send(frame: bytes) -> None:
            await trio.sleep(0.001)
            await send(frame)

        super().__init__(slow_send, *args, **kw)


async def test_transfer_waits_until_the_last_announcement_frame_is_written(autojump_clock,
                                                                           monkeypatch):
    monkeypatch.setattr(session_base, "Playout", SlowWritePlayout)
    out = await text_and_transfer_call()
    assert out.record.turns[1].heard_text == ANNOUNCE
    assert len(out.agent_frames()) == AGENT_FRAMES


# -- text to speech ------------------------------------------------------------------------------

async def test_openai_tts_pcm_per_sentence_resampled_to_8khz(autojump_clock):
    audio = MockAudioServer()
    chat = MockChatServer(script=chat_script())
    async with pipeline_net({"api.openai.com": chat, "audio.test": audio}) as net:
        out = await run_session(hours_then_bye(), net=net, env=KEYS, cfg=config(
            tts="{engine: openai, url: 'https://audio.test/v1'}"))
    assert_hours_then_bye(out)
    sentences = [GREETING, *split_sentences(HOURS), BYE]
    assert [s.body for s in audio.speeches] == [
        {"model": "gpt-4o-mini-tts", "input": s, "voice": "marin", "response_format": "pcm",
         "speed": 1.0} for s in sentences]
    assert all(s.status == 200 and s.completed and s.rendered for s in audio.speeches)
    script = audio.script
    seconds = sum(max(script.min_speech_ms, script.ms_per_char * len(s)) for s in sentences)
    assert abs(len(out.agent_frames()) - seconds / 1000 / FRAME) <= 2


async def test_deepgram_tts_without_streaming_uses_rest_only(autojump_clock):
    ws, rest = MockSpeakServer(), MockSpeakRestServer()
    chat = MockChatServer(script=chat_script())
    async with pipeline_net({"api.openai.com": chat, "api.deepgram.com": rest},
                            {"api.deepgram.com/v1/speak": ws}) as net:
        out = await run_session(hours_then_bye(), net=net, env=KEYS, cfg=config(
            tts="{engine: deepgram, streaming: false}"))
    assert_hours_then_bye(out)
    assert ws.sessions == [] and ws.rejected == []
    assert_rest_speech(out, rest)


async def test_deepgram_tts_socket_refused_falls_back_to_rest(autojump_clock):
    ws = MockSpeakServer(script=SpeakScript(reject_with_status=503))
    rest = MockSpeakRestServer()
    chat = MockChatServer(script=chat_script())
    async with pipeline_net({"api.openai.com": chat, "api.deepgram.com": rest},
                            {"api.deepgram.com/v1/speak": ws}) as net:
        out = await run_session(hours_then_bye(), net=net, env=KEYS,
                                cfg=config(tts="{engine: deepgram}"))
    assert_hours_then_bye(out)
    assert ws.sessions == [] and [r.rejected_status for r in ws.rejected] == [503]
    assert_rest_speech(out, rest)
    # no dead air: the greeting went by REST at once, not after the connect timeout
    assert out.record.turns[0].first_frame_sent < rest.script.first_byte_delay + 2 * FRAME


def assert_rest_speech(out, rest: MockSpeakRestServer) -> None:
    """Every sentence by REST, 8 kHz linear16 with no container, and heard to its end."""
    sentences = [GREETING, *split_sentences(HOURS), BYE]
    assert [s.text for s in rest.speeches] == sentences
    for s in rest.speeches:
        assert s.status == 200 and not s.disconnected
        assert s.query == {"model": ["aura-2-thalia-en"], "encoding": ["linear16"],
                           "sample_rate": ["8000"], "container": ["none"]}
        assert s.audio_ms_sent == s.audio_ms_total
    assert out.record.provider["tts_rest_sentences"] == len(sentences)
    assert len(out.agent_frames()) == sum(frames_of(s.audio_ms_total / 1000)
                                          for s in rest.speeches)


# -- a missing key -------------------------------------------------------------------------------

async def test_missing_tts_key_hands_the_call_back_at_once(autojump_clock):
    ollama = MockOllamaServer()
    async with pipeline_net({"127.0.0.1": ollama}) as net:
        out = await run_session(hours_then_bye(), net=net, env={"DEEPGRAM_API_KEY": "k"},
                                cfg=config(llm="{engine: ollama, model: qwen3}",
                                           tts="{engine: openai}"))
    assert out.ended.status == "FAILED"
    assert out.ended.reason == ("pipeline moonshine+ollama+openai unavailable: the environment "
                                "variable OPENAI_API_KEY is not set")
    assert out.record.provider["error"] == "the environment variable OPENAI_API_KEY is not set"
    assert out.asterisk.closed_by == "sidecar_hangup"
    assert out.asterisk.ended_at - out.asterisk.started_at < FRAME  # at once, no greeting
    assert out.agent_frames() == [] and out.record.turns == []
    assert ollama.chats == []
