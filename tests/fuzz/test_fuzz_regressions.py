"""The fuzzers' findings, each pinned by the input that found it (or its shortest form).

Before the fixes each of these raised something other than the module's typed error: a
RecursionError from JSON or YAML nested too deeply, an AttributeError or TypeError from a
vendor field of the wrong type, an OverflowError from a number no float holds, a ValueError
from YAML's own constructors, a UnicodeEncodeError from a lone surrogate on its way to UTF-8.
"""

from __future__ import annotations

import json

import httpx
import pytest
import trio
import trio.testing

from fastagi_server.agi.protocol import cmd_set_variable
from fastagi_server.ami.codec import encode_message
from media_sidecar.config.loader import ConfigError, default_yaml_text, parse_config
from media_sidecar.config.schema import (
    DeepgramAgentConfig,
    LiveConfig,
    LlmConfig,
    RealtimeConfig,
    SttConfig,
    WebhookTool,
)
from media_sidecar.pipeline.base import Net, ProviderError, TextDelta, ToolCall
from media_sidecar.pipeline.llm_ollama import OllamaChat
from media_sidecar.pipeline.llm_openai import OpenAIChat
from media_sidecar.pipeline.stt_deepgram import DeepgramListen
from media_sidecar.pipeline.stt_openai import OpenAITranscriber
from media_sidecar.protocol import control as c
from media_sidecar.protocol import wirejson
from media_sidecar.providers.deepgram_agent import DeepgramAgentSession
from media_sidecar.providers.openai_live import OpenAILiveSession
from media_sidecar.providers.openai_realtime import OpenAIRealtimeSession
from media_sidecar.tools.spec import ToolCallError, parse_arguments
from media_sidecar.tools.webhook import call_webhook

from .providers_harness import ScriptedWs, connector, run_session
from .strategies import deep_json
from .test_fuzz_pipeline import RESOLVER
from .test_fuzz_providers import DEEPGRAM_START, ENV, LIVE_START, REALTIME_START, SETUP

DEEP = deep_json(5000)


def run(fn) -> None:
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


# -- control link ---------------------------------------------------------------------------------

def test_control_message_nested_too_deeply_is_a_control_error():
    with pytest.raises(c.ControlError, match="nested too deeply"):
        c.decode(deep_json(30000))


@pytest.mark.parametrize("body", [
    {"type": "offer", "uuid": "6c0d1b8e-6d8a-4b6e-9f4e-2f1d5b7c9a01", "assistant": 5},
    {"type": "offer", "uuid": "6c0d1b8e-6d8a-4b6e-9f4e-2f1d5b7c9a01", "assistant": "a",
     "context": {"callerid": ["x"]}},
    {"type": "offer", "uuid": "6c0d1b8e-6d8a-4b6e-9f4e-2f1d5b7c9a01", "assistant": "a",
     "context": {"variables": {"A": 1}}},
    {"type": "dtmf", "uuid": "6c0d1b8e-6d8a-4b6e-9f4e-2f1d5b7c9a01", "digit": None},
    {"type": "stats", "refused": {"busy": "many"}},
    {"type": "hello", "role": "fastagi", "version": True},
], ids=["assistant int", "context list", "variables int", "digit null", "refused str",
        "version bool"])
def test_control_fields_of_the_wrong_type_are_a_control_error(body):
    with pytest.raises(c.ControlError, match="is not of type"):
        c.decode(json.dumps(body))


def test_control_stats_uptime_may_be_an_integer():
    assert c.decode('{"type": "stats", "uptime": 3}') == c.Stats(uptime=3)


def test_control_text_with_a_lone_surrogate_goes_out_as_utf8():
    msg = c.Ended("6c0d1b8e-6d8a-4b6e-9f4e-2f1d5b7c9a01", "COMPLETED", summary="half \ud83d")
    text = c.encode(msg)
    text.encode("utf-8")
    assert c.decode(text) == msg
    plain = c.Ended("6c0d1b8e-6d8a-4b6e-9f4e-2f1d5b7c9a01", "COMPLETED", summary="Zoë")
    assert "Zoë" in c.encode(plain)  # ordinary text is still written as is


# -- AGI and AMI encoders -------------------------------------------------------------------------

def test_agi_and_ami_values_with_a_lone_surrogate_are_sent_with_a_replacement():
    assert cmd_set_variable("AI_SUMMARY", "ok \ud83d") == b'SET VARIABLE AI_SUMMARY "ok ?"\n'
    assert encode_message([("Action", "Setvar"), ("Value", "ok \ud83d")]) == (
        b"Action: Setvar\r\nValue: ok ?\r\n\r\n")


# -- configuration --------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "[" * 3000 + "]" * 3000, "a: 2001-13-45", "a: " + "1" * 5000,
], ids=["deep", "bad date", "5000 digits"])
def test_yaml_the_parser_itself_refuses_is_a_config_error(text):
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config(text, "x.yaml", {})


def test_alias_inside_itself_is_a_config_error():
    with pytest.raises(ConfigError, match="alias refers to itself"):
        parse_config("0: &0 [*0]", "x.yaml", {})


def test_alias_bomb_is_refused_at_once():
    # nine levels of nine aliases: 400 bytes that expand to 9**9 values ("billion laughs");
    # walked copy by copy, it held check-config for hours
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    with pytest.raises(ConfigError, match="aliases expand to more than 200,000 values"):
        parse_config("\n".join(lines), "x.yaml", {})


def test_aliases_that_share_a_block_still_load():
    cfg = parse_config("assistants:\n  a: &e {provider: echo}\n  b: *e\nrouting: {default: a}\n",
                       "x.yaml", {})
    assert [(a.name, a.provider) for a in cfg.assistants] == [("a", "echo"), ("b", "echo")]


def test_number_no_float_holds_is_a_config_error():
    text = default_yaml_text() + "\ndrain: {deadline_seconds: 1" + "0" * 400 + "}\n"
    with pytest.raises(ConfigError, match="drain.deadline_seconds: expected a number"):
        parse_config(text, "x.yaml", {"AMI_SECRET": "s"})


def test_routing_pattern_with_a_huge_repeat_is_a_config_error():
    text = default_yaml_text().replace('match: {script: "agent/support"}',
                                       "match: {dnid: 'a{4294967296}'}")
    assert "4294967296" in text
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        parse_config(text, "x.yaml", {"AMI_SECRET": "s"})


# -- tools ---------------------------------------------------------------------------------------

def test_webhook_answer_nested_too_deeply_reaches_the_model_as_text():
    tool = WebhookTool(name="lookup", url="https://crm.example/hook")
    mock = httpx.MockTransport(lambda request: httpx.Response(200, content=DEEP.encode()))

    async def main() -> None:
        reply = await call_webhook(tool, {}, {"uuid": "u"}, env={}, transport=mock, **RESOLVER)
        assert json.loads(reply.output)["ok"] is True

    run(main)


def test_tool_arguments_nested_too_deeply_are_a_tool_call_error():
    with pytest.raises(ToolCallError, match="not valid JSON"):
        parse_arguments(DEEP, {"type": "object"})


# -- provider events ------------------------------------------------------------------------------

def ev(**fields) -> str:
    return json.dumps(fields)


REALTIME_BAD = [
    ev(type="session.updated", session=[]),
    ev(type="session.updated", session={"audio": "pcm"}),
    ev(type="response.output_audio.delta", delta=5, item_id="a"),
    '{"type": "input_audio_buffer.speech_stopped", "audio_end_ms": Infinity}',
    ev(type="input_audio_buffer.speech_stopped", audio_end_ms="late"),
    ev(type="response.done", response=["x"]),
    ev(type="response.done", response={"status": "completed", "usage": [1]}),
    ev(type="error", error="boom"),
    ev(type=["session.created"]),
    '{"type": "x", "y": ' + DEEP + "}",
    ev(type="conversation.item.input_audio_transcription.completed", transcript="a \ud83d"),
]
DEEPGRAM_BAD = [
    ev(type="FunctionCallRequest", functions=5),
    ev(type="FunctionCallCancelled", functions=7),
    '{"type": "AgentStartedSpeaking", "total_latency": 1' + "0" * 400 + "}",
    '{"type": "LatencyReport", "tts_latency": 1' + "0" * 400 + "}",
    ev(type="ConversationText", role="user", content="\ud83d"),
    DEEP,
]
LIVE_BAD = [
    ev(type="session.input_transcript.delta", delta="x", start_ms=1e300),
    '{"type": "session.input_transcript.delta", "delta": "x", "start_ms": NaN}',
    ev(type="session.delegation.created", delegation=[]),
    ev(type="response.event", delegation_id="d", event="x"),
    ev(type="response.event", delegation_id="d",
       event={"type": "response.output_item.done", "item": [1]}),
    ev(type="response.event", delegation_id="d",
       event={"type": "response.completed", "response": "done"}),
    '{"type": "session.usage.updated", "usage": {"seconds": 1' + "0" * 400 + "}}",
    ev(type="error", error=3),
]


@pytest.mark.parametrize("bad", REALTIME_BAD)
def test_openai_realtime_malformed_event(bad):
    run_session(lambda connect: OpenAIRealtimeSession(RealtimeConfig(), SETUP, env=ENV,
                                                      connect=connect), [*REALTIME_START, bad])


def test_openai_realtime_format_of_an_unhashable_type_fails_the_provider_only():
    bad = ev(type="session.updated", session={"audio": {"input": {"format": {"type": []}}}})
    run_session(lambda connect: OpenAIRealtimeSession(RealtimeConfig(), SETUP, env=ENV,
                                                      connect=connect), [REALTIME_START[0], bad])


@pytest.mark.parametrize("bad", DEEPGRAM_BAD)
def test_deepgram_agent_malformed_message(bad):
    cfg = DeepgramAgentConfig(api_key_env="FUZZ_KEY")
    run_session(lambda connect: DeepgramAgentSession(cfg, SETUP, env=ENV, connect=connect),
                [*DEEPGRAM_START, bad])


@pytest.mark.parametrize("bad", [*LIVE_BAD, ev(type="session.started", session={
    "audio": {"format": {"type": ["audio/pcmu"], "rate": 8000}}})])
def test_openai_live_malformed_event(bad):
    run_session(lambda connect: OpenAILiveSession(LiveConfig(), SETUP, env=ENV,
                                                  connect=connect), [*LIVE_START, bad])


def test_lone_surrogates_in_vendor_json_become_replacement_characters():
    assert wirejson.loads('{"t": "a \\ud83d", "ok": "\\ud83d\\ude00"}') == {
        "t": "a \ufffd", "ok": "\U0001f600"}
    assert wirejson.number(10**400) is None and wirejson.whole(float("nan")) is None


# -- pipeline stages ------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [
    ev(type="SpeechStarted", timestamp="soon"),
    ev(type="Results", channel=[], is_final=True),
    ev(type="Results", channel={"alternatives": [{"transcript": "hi", "words": [{"end": "x"}]}]},
       is_final=True, speech_final=True),
    ev(type="UtteranceEnd", last_word_end="x"),
    '{"type": "UtteranceEnd", "last_word_end": 1' + "0" * 400 + "}",
    "[1, 2]", DEEP,
])
def test_deepgram_stt_malformed_message(bad):
    final = ev(type="Results", channel={"alternatives": [{"transcript": "hello"}]},
               is_final=True, speech_final=True)
    events: list = []
    stt = DeepgramListen(SttConfig(engine="deepgram"), ENV, "en",
                         Net(connect=connector(ScriptedWs([bad, final]))))

    async def main() -> None:
        try:
            await stt.run(events.append)
        except* ProviderError:
            pass

    run(main)
    assert events and events[-1].text.endswith("hello")


@pytest.mark.parametrize("status", [200, 400])
def test_openai_transcription_nested_too_deeply_is_a_provider_error(status):
    # 200: the answer; 400: the error body whose message is quoted (providers.ws.error_message)
    net = Net(httpx.MockTransport(lambda r: httpx.Response(status, content=DEEP.encode())))
    stt = OpenAITranscriber(SttConfig(engine="openai"), ENV, "en", net)

    async def main() -> None:
        with pytest.raises(ProviderError):
            await stt.transcribe(b"\0" * 320)

    run(main)


def sse(*chunks: str) -> bytes:
    return "\n\n".join(f"data: {ch}" for ch in [*chunks, "[DONE]"]).encode()


@pytest.mark.parametrize("body", [
    sse('{"choices": [1, {"delta": "x"}]}'),
    sse('{"choices": [{"delta": {"content": 5, "tool_calls": [{"index": "a", "id": 3, '
        '"function": {"name": "f", "arguments": [1]}}]}, "finish_reason": 2}]}'),
    sse('{"error": {"message": 5}}'),
    sse(DEEP),
])
def test_openai_chat_malformed_chunk(body):
    net = Net(httpx.MockTransport(lambda r: httpx.Response(200, content=body)))
    chat = OpenAIChat(LlmConfig(engine="openai", api_key_env="OPENAI_API_KEY"), ENV, net)
    out: list = []

    async def main() -> None:
        try:
            async for e in chat.stream([{"role": "user", "content": "hi"}], []):
                out.append(e)
        except ProviderError:
            pass

    run(main)
    for e in out:
        assert not isinstance(e, TextDelta) or isinstance(e.text, str)
        assert not isinstance(e, ToolCall) or isinstance(e.id, str)


@pytest.mark.parametrize("line", ["[1]", '"x"', DEEP, '{"message": [], "done": true}',
                                  '{"message": {"tool_calls": [{"function": {"name": "f", '
                                  '"arguments": 5}}]}, "done": true, "done_reason": 1}'])
def test_ollama_malformed_line(line):
    net = Net(httpx.MockTransport(lambda r: httpx.Response(200, content=line.encode())))
    chat = OllamaChat(LlmConfig(engine="ollama"), {}, net)

    async def main() -> None:
        try:
            async for e in chat.stream([{"role": "user", "content": "hi"}], []):
                assert not isinstance(e, ToolCall) or isinstance(e.arguments, str | dict)
        except ProviderError:
            pass

    run(main)
