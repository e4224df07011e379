"""Messages the clients build on branches the session tests do not all reach, built directly and
checked against the vendors' SDK types; and the pure answer builders of the mocks the same way.
(What the session and e2e tests send and receive is checked by tests/conftest.py.)"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from media_sidecar.config.schema import LlmConfig, SttConfig, TtsConfig
from media_sidecar.pipeline.llm_brain import CANCELLED
from media_sidecar.pipeline.llm_openai import OpenAIChat
from media_sidecar.pipeline.stt_deepgram import DeepgramListen
from media_sidecar.pipeline.tts_deepgram import DeepgramSpeech
from media_sidecar.pipeline.tts_openai import OpenAISpeech
from media_sidecar.providers.openai_realtime import _append_event
from media_sidecar.tools.spec import ToolSpec
from tests.contracts.vendor import check_form_fields, check_messages, check_query
from tests.mocks.openai_audio.transcription import (
    TranscriptionRequest,
    render_response,
    stream_events,
)
from tests.mocks.openai_chat.script import Reply, ToolCall
from tests.mocks.openai_chat.sse import ChunkFactory, plan_reply
from tests.mocks.openai_chat.sse import usage as chat_usage

KEYS = {"OPENAI_API_KEY": "k", "DEEPGRAM_API_KEY": "k"}
TOOL = ToolSpec("order_status", "Look up an order.", {
    "type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]})
CALL = {"id": "call_1", "type": "function",
        "function": {"name": "order_status", "arguments": '{"order": "42"}'}}
HISTORY: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "[The caller pressed the keypad: 1 2]"},
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "name": "order_status", "content": CANCELLED},
    {"role": "user", "content": "never mind"},
]


@pytest.mark.parametrize("cfg", [
    LlmConfig(engine="openai"),
    LlmConfig(engine="openai", model="gpt-4.1-mini"),
    LlmConfig(engine="openai", url="http://127.0.0.1:8000/v1", model="qwen3",
              token_param="max_tokens"),
])
@pytest.mark.parametrize("tools", [[], [TOOL]])
def test_chat_bodies(cfg: LlmConfig, tools: list[ToolSpec]) -> None:
    body = OpenAIChat(cfg, KEYS).body(HISTORY, tools)
    assert check_messages("openai_chat", [body], sent_by="client") == []


@pytest.mark.parametrize("cfg", [
    TtsConfig(engine="openai"),
    TtsConfig(engine="openai", model="tts-1", speed=1.25),
    TtsConfig(engine="openai", instructions="Warm and slow.", voice="cedar"),
])
def test_speech_bodies(cfg: TtsConfig) -> None:
    body = OpenAISpeech(cfg, KEYS).body("We open at nine.")
    assert check_messages("openai_speech", [body], sent_by="client") == []


def test_transcription_form_fields() -> None:
    # the fields stt_openai sends, with every optional one
    assert check_form_fields({"model": "gpt-transcribe", "response_format": "json",
                              "language": "en", "prompt": "ACME, Lovelace"}) == []


def test_realtime_audio_append_which_the_mock_counts_but_does_not_store() -> None:
    event = json.loads(_append_event(b"\xff" * 160))
    assert check_messages("openai_realtime", [event], sent_by="client") == []


@pytest.mark.parametrize("cfg", [SttConfig(engine="deepgram"),
                                 SttConfig(engine="deepgram", keyterms=("ACME", "Lovelace"),
                                           language="en-US", model="nova-3")])
def test_deepgram_listen_query_and_messages(cfg: SttConfig) -> None:
    listen = DeepgramListen(cfg, KEYS, "en")
    names = [k for k, _ in parse_qsl(urlsplit(listen.url).query)]
    assert check_query("listen", names) == []
    assert check_messages("deepgram_listen", [{"type": "KeepAlive"}, {"type": "Finalize"},
                                              {"type": "CloseStream"}], sent_by="client") == []


@pytest.mark.parametrize("cfg", [TtsConfig(engine="deepgram"),
                                 TtsConfig(engine="deepgram", speed=1.2)])
def test_deepgram_speak_queries(cfg: TtsConfig) -> None:
    speech = DeepgramSpeech(cfg, KEYS)
    assert check_query("speak", [k for k, _ in parse_qsl(urlsplit(speech.ws_url).query)]) == []
    names = [k for k, _ in parse_qsl(urlsplit(speech.rest_url).query)]
    assert check_query("speak_rest", names) == []


# -- the mocks' answers built by their pure helpers ------------------------------------------

@pytest.mark.parametrize("reply", [Reply("We open at nine."),
                                   Reply("One moment.", (ToolCall("order_status", {"o": 1}),)),
                                   Reply("", (ToolCall("a"), ToolCall("b")))])
@pytest.mark.parametrize("style", ["fragments", "whole"])
def test_chat_mock_chunks_and_completion(reply: Reply, style: str) -> None:
    ids = [f"call_{i}" for i in range(len(reply.tool_calls))]
    plan = plan_reply(reply, ids, style)
    factory = ChunkFactory("chatcmpl-1", 1767225600, "gpt-5.4-mini", "fp_mock")
    objects = [factory.chunk(d) for d in ([plan.role_delta] if plan.role_delta else [])]
    objects += [factory.chunk(d) for d in plan.deltas]
    objects += [factory.chunk({}, plan.finish_reason), factory.usage_chunk(chat_usage(20, 5)),
                factory.completion(plan, chat_usage(20, 5))]
    assert check_messages("openai_chat", objects, sent_by="server") == []


@pytest.mark.parametrize(("model", "fmt"), [("gpt-transcribe", "json"), ("whisper-1", "json"),
                                          ("whisper-1", "verbose_json")])
def test_transcription_mock_answers(model: str, fmt: str) -> None:
    """verbose_json is whisper-1's only; whisper-1 does not stream (the mock honours both)."""
    request = TranscriptionRequest(model=model, filename="u.wav", extension="wav",
                                   response_format=fmt, language="en")
    _, body = render_response(request, "What time do you open?", 1.5)
    messages = [json.loads(body)]
    if model != "whisper-1":
        messages += [json.loads(e.decode().removeprefix("data: "))
                     for e in stream_events(request, "What time", 1.0)]
    assert check_messages("openai_transcription", messages, sent_by="server") == []
