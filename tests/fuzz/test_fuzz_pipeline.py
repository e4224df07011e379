"""Fuzzing the pipeline's stream parsers (Deepgram streaming STT, OpenAI transcription, the
chat-completions SSE stream, Ollama's NDJSON stream) and what a webhook tool returns, with
what a server might send. Property: typed events or ProviderError; a webhook never raises
and always gives the model text."""

from __future__ import annotations

import inspect
import json

import httpx
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from media_sidecar.config.schema import LlmConfig, SttConfig, WebhookTool
from media_sidecar.pipeline.base import (
    LlmDone,
    Net,
    ProviderError,
    SttFinal,
    SttInterim,
    SttSpeechStarted,
    TextDelta,
    ToolCall,
)
from media_sidecar.pipeline.llm_ollama import OllamaChat
from media_sidecar.pipeline.llm_openai import OpenAIChat
from media_sidecar.pipeline.stt_deepgram import DeepgramListen
from media_sidecar.pipeline.stt_openai import OpenAITranscriber
from media_sidecar.tools.spec import ToolCallError, ToolReply, parse_arguments
from media_sidecar.tools.webhook import call_webhook

from .budget import fuzz
from .providers_harness import ScriptedWs, connector
from .strategies import Deep, dumps, hostile_text, json_text, json_value

ENV = {"DEEPGRAM_API_KEY": "k", "OPENAI_API_KEY": "k"}


def run(fn) -> None:
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


# -- Deepgram streaming STT ---------------------------------------------------------------------

DG_EVENTS = ["Results", "UtteranceEnd", "SpeechStarted", "Metadata"]
DG_FIELDS = ["channel", "alternatives", "transcript", "words", "end", "is_final",
             "speech_final", "last_word_end", "timestamp", "request_id"]
dg_result = st.builds(
    lambda alts, final, speech: json.dumps({"type": "Results", "is_final": final,
                                            "speech_final": speech,
                                            "channel": {"alternatives": alts}}, allow_nan=True),
    st.lists(st.dictionaries(st.sampled_from(["transcript", "words"]), json_value), max_size=2),
    json_value, json_value,
)


@fuzz(0.5)
@given(st.lists(st.one_of(json_text(DG_EVENTS, DG_FIELDS), dg_result, st.binary(max_size=20)),
                max_size=14))
def test_deepgram_stt_events(messages):
    events = []
    stt = DeepgramListen(SttConfig(engine="deepgram"), ENV, "en",
                         Net(connect=connector(ScriptedWs(messages))))

    async def main() -> None:
        try:
            await stt.run(events.append)
        except* ProviderError:
            pass

    run(main)
    for ev in events:
        assert isinstance(ev, SttSpeechStarted | SttInterim | SttFinal)
        if isinstance(ev, SttSpeechStarted):
            assert isinstance(ev.audio_s, float)
        elif isinstance(ev, SttFinal):
            ev.text.encode("utf-8")
            assert isinstance(ev.text, str) and (ev.end_audio_s is None
                                                 or isinstance(ev.end_audio_s, float))


# -- HTTP answers -------------------------------------------------------------------------------

def transport(status: int, body: bytes, content_type: str = "application/json"):
    return httpx.MockTransport(lambda request: httpx.Response(
        status, content=body, headers={"Content-Type": content_type}))


bodies = st.one_of(json_value.map(dumps).map(str.encode), st.binary(max_size=200),
                   st.integers(1000, 20000).map(lambda n: Deep(n).encode()))


@fuzz(0.5)
@given(st.sampled_from([200, 200, 400, 401, 500, 503]), bodies)
def test_openai_transcription_answers(status, body):
    stt = OpenAITranscriber(SttConfig(engine="openai"), ENV, "en", Net(transport(status, body)))

    async def main() -> None:
        try:
            text = await stt.transcribe(b"\0" * 320)
        except ProviderError:
            return
        assert isinstance(text, str)

    run(main)


SSE_FIELDS = ["choices", "delta", "content", "tool_calls", "index", "id", "function", "name",
              "arguments", "finish_reason", "usage", "error", "message"]
choice = st.fixed_dictionaries({}, optional={
    "delta": st.one_of(json_value, st.fixed_dictionaries({}, optional={
        "content": json_value,
        "tool_calls": st.one_of(json_value, st.lists(st.dictionaries(
            st.sampled_from(["index", "id", "function"]),
            st.one_of(json_value, st.dictionaries(st.sampled_from(["name", "arguments"]),
                                                  json_value))), max_size=2))})),
    "finish_reason": json_value})
chunk = st.one_of(
    st.fixed_dictionaries({}, optional={"choices": st.one_of(json_value, st.lists(choice,
                                                                                  max_size=2)),
                                        "usage": json_value}),
    st.fixed_dictionaries({"error": json_value}), json_value)
sse_line = st.one_of(chunk.map(lambda c: "data: " + dumps(c)), st.just("data: [DONE]"),
                     st.just(": keep-alive"), st.just(""), hostile_text.map(lambda t: "data: " + t),
                     st.just("data: " + Deep(5000)))


def drain(chat, messages) -> list:
    out: list = []

    async def main() -> None:
        try:
            async for ev in chat.stream(messages, []):
                out.append(ev)
        except ProviderError:
            pass

    run(main)
    return out


def check_llm_events(events: list) -> None:
    for ev in events:
        assert isinstance(ev, TextDelta | ToolCall | LlmDone)
        if isinstance(ev, TextDelta):
            assert isinstance(ev.text, str)
            ev.text.encode("utf-8")  # no lone surrogate reaches the speech or the record
        elif isinstance(ev, ToolCall):
            assert isinstance(ev.id, str) and isinstance(ev.name, str)
            assert isinstance(ev.arguments, str | dict)
        else:
            assert isinstance(ev.finish_reason, str)


@fuzz(0.5)
@given(st.lists(sse_line, max_size=12), st.sampled_from([200, 200, 429, 500]))
def test_openai_chat_sse_stream(lines, status):
    body = "\n".join(lines).encode("utf-8", "surrogatepass")
    chat = OpenAIChat(LlmConfig(engine="openai", api_key_env="OPENAI_API_KEY"), ENV,
                      Net(transport(status, body, "text/event-stream")))
    check_llm_events(drain(chat, [{"role": "user", "content": "hi"}]))


ollama_chunk = st.one_of(
    st.fixed_dictionaries({}, optional={
        "message": st.one_of(json_value, st.fixed_dictionaries({}, optional={
            "content": json_value, "tool_calls": st.one_of(json_value, st.lists(
                st.fixed_dictionaries({}, optional={"id": json_value, "function": st.one_of(
                    json_value, st.dictionaries(st.sampled_from(["name", "arguments"]),
                                                json_value))}), max_size=2))})),
        "done": json_value, "done_reason": json_value, "eval_count": json_value}),
    json_value)


@fuzz(0.5)
@given(st.lists(st.one_of(ollama_chunk.map(dumps), hostile_text, st.just(Deep(5000))),
                max_size=10))
def test_ollama_ndjson_stream(lines):
    body = "\n".join(lines).encode("utf-8", "surrogatepass")
    chat = OllamaChat(LlmConfig(engine="ollama"), {}, Net(transport(200, body,
                                                                    "application/x-ndjson")))
    check_llm_events(drain(chat, [{"role": "user", "content": "hi"}]))


# -- tools: what a webhook returns, what a model sends -------------------------------------------

async def _public_address(host: str, port: int) -> list[str]:
    return ["93.184.215.14"]  # a global address; the mock transport never connects to it


RESOLVER = ({"resolver": _public_address}
            if "resolver" in inspect.signature(call_webhook).parameters else {})
"""No DNS in tests: the webhook's SSRF check resolves through this when it has one."""


@fuzz()
@given(st.integers(100, 599), bodies, st.integers(16, 4096),
       st.sampled_from(["application/json", "text/plain", "text/html; charset=latin-1"]))
def test_webhook_answers_always_reach_the_model_as_text(status, body, cap, content_type):
    tool = WebhookTool(name="lookup", url="https://crm.example/hook", max_result_bytes=cap)

    async def main() -> None:
        reply = await call_webhook(tool, {"q": "x"}, {"uuid": "u", "caller_name": "Eve\n"},
                                   env={}, transport=transport(status, body, content_type),
                                   **RESOLVER)
        assert isinstance(reply, ToolReply) and isinstance(reply.output, str)
        assert len(reply.output.encode()) <= 4 * cap + 200

    run(main)


@fuzz()
@given(st.one_of(json_value.map(dumps), hostile_text, st.none(), json_value,
                 st.integers(1000, 40000).map(Deep)),
       st.dictionaries(st.text(max_size=8), json_value, max_size=3))
def test_tool_arguments_from_a_model(raw, schema):
    try:
        args = parse_arguments(raw if isinstance(raw, str | dict) or raw is None else None,
                               {"type": "object", **schema})
    except ToolCallError:
        return
    assert isinstance(args, dict)
