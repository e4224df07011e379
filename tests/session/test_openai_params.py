"""Regressions for what the OpenAI clients send as the models move on:

- o-series and gpt-5 chat models refuse ``max_tokens`` (they take ``max_completion_tokens``)
  and a non-default ``temperature``; the chat mock refuses them as the API does;
- transcription languages are ISO-639-1 (``en-US`` was sent to Realtime as is);
- Realtime ``reasoning.effort`` only for the models that reason;
- defaults that are not retiring.

Every test here also runs through the suite's contract checks (tests/conftest.py)."""

from __future__ import annotations

from contextlib import aclosing

import pytest

from fastagi_server.emulator.caller import CallerScript
from media_sidecar.config.loader import parse_config
from media_sidecar.config.schema import LlmConfig, RealtimeConfig, SttConfig, TtsConfig
from media_sidecar.pipeline.base import ProviderError
from media_sidecar.pipeline.llm_openai import OpenAIChat
from media_sidecar.pipeline.stt_openai import OpenAITranscriber
from media_sidecar.pipeline.tts_openai import OpenAISpeech
from media_sidecar.providers.base import ProviderSetup
from media_sidecar.providers.openai_realtime import OpenAIRealtimeSession, iso_639_1
from tests.contracts.vendor import check_messages
from tests.fakes import tone
from tests.mocks.openai_chat import ChatScript, MockChatServer
from tests.mocks.openai_realtime import MockRealtimeServer, RealtimeScript
from tests.session.harness import run_session
from tests.session.pipeline import KEYS, pipeline_net
from tests.session.providers import openai_factory

HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]


async def ask(model: OpenAIChat) -> None:
    async with aclosing(model.stream(HELLO, [])) as events:
        async for _ in events:
            pass


@pytest.mark.parametrize(("model", "token_param", "param", "temperature"), [
    ("", "auto", "max_completion_tokens", False),  # the default, gpt-5.4-mini
    ("gpt-5-mini", "auto", "max_completion_tokens", False),
    ("o4-mini", "auto", "max_completion_tokens", False),
    ("gpt-4.1-mini", "auto", "max_tokens", True),
    ("my-reasoner", "max_completion_tokens", "max_completion_tokens", False),
    ("qwen3", "max_tokens", "max_tokens", True),
])
async def test_the_token_cap_and_temperature_by_model_family(
        autojump_clock, model: str, token_param: str, param: str, temperature: bool) -> None:
    chat = MockChatServer(script=ChatScript())
    async with pipeline_net({"api.openai.com": chat}) as net:
        cfg = LlmConfig(engine="openai", model=model, token_param=token_param,  # type: ignore[arg-type]
                        max_tokens=250, temperature=0.4)
        await ask(OpenAIChat(cfg, KEYS, net))
    (log,) = chat.chats
    assert log.status == 200, log.error
    assert log.body[param] == 250
    assert ({"max_tokens", "max_completion_tokens"} - {param}).isdisjoint(log.body)
    assert ("temperature" in log.body) is temperature
    if temperature:
        assert log.body["temperature"] == 0.4
    assert log.model == (model or "gpt-5.4-mini")


async def test_the_mock_refuses_max_tokens_and_temperature_for_gpt5_as_the_api_does(
        autojump_clock) -> None:
    chat = MockChatServer(script=ChatScript())
    async with pipeline_net({"api.openai.com": chat}) as net:
        old = OpenAIChat(LlmConfig(engine="openai", model="gpt-5.4-mini",
                                   token_param="max_tokens"), KEYS, net)
        with pytest.raises(ProviderError, match="'max_tokens' is not supported with this model"):
            await ask(old)
    assert chat.chats[0].status == 400
    chat.chats[0].problems.clear()  # provoked on purpose


@pytest.mark.parametrize(("tag", "iso"), [("en-US", "en"), ("en_GB", "en"), ("DE", "de"),
                                          ("fr", "fr"), ("yue", ""), ("", "")])
def test_iso_639_1(tag: str, iso: str) -> None:
    assert iso_639_1(tag) == iso


def realtime(model: str = "", effort: str = "", language: str = "en-US") -> dict:
    cfg = RealtimeConfig(**({"model": model} if model else {}),
                         reasoning_effort=effort)  # type: ignore[arg-type]
    session = OpenAIRealtimeSession(cfg, ProviderSetup("Be brief.", language=language), env={})
    return session._session_update()


def test_realtime_session_update_variants_meet_the_sdk_contract() -> None:
    """Branches the session tests do not all reach, built directly and checked."""
    events = [realtime(), realtime("gpt-realtime-2", "low"), realtime("gpt-realtime-1.5", "high"),
              realtime(language="yue"),
              OpenAIRealtimeSession(RealtimeConfig(turn_detection="semantic_vad", audio="pcm",
                                                   transcription_model=""),
                                    ProviderSetup("x"), env={})._session_update(),
              OpenAIRealtimeSession(RealtimeConfig(turn_detection="none"),
                                    ProviderSetup("x"), env={})._session_update()]
    assert check_messages("openai_realtime", events, sent_by="client") == []
    default = events[0]["session"]
    assert default["audio"]["input"]["transcription"] == {"model": "gpt-transcribe",
                                                          "language": "en"}
    assert "reasoning" not in default  # no effort configured: the model's default
    assert events[1]["session"]["reasoning"] == {"effort": "low"}
    assert "reasoning" not in events[2]["session"]  # gpt-realtime-1.5 does not reason
    assert events[3]["session"]["audio"]["input"]["transcription"] == {"model": "gpt-transcribe"}


def test_defaults_are_not_retiring() -> None:
    """gpt-realtime (2027-01-20), gpt-4o-mini (2027-01-14), gpt-4o-mini-transcribe
    (2027-02-26) are gone from the defaults. The speech endpoint has no successor yet."""
    assert RealtimeConfig().model == "gpt-realtime-2.1"
    assert RealtimeConfig().transcription_model == "gpt-transcribe"
    assert OpenAIChat(LlmConfig(engine="openai"), KEYS).model == "gpt-5.4-mini"
    assert OpenAITranscriber(SttConfig(engine="openai"), KEYS, "en-US").model == "gpt-transcribe"
    assert OpenAITranscriber(SttConfig(engine="openai"), KEYS, "en-US").language == "en"
    assert OpenAISpeech(TtsConfig(engine="openai"), KEYS).model == "gpt-4o-mini-tts"


async def test_a_realtime_call_in_en_us_with_reasoning(autojump_clock) -> None:
    """End to end through the session: the mock records a non-ISO language or a reasoning
    setting for a model that does not reason as a problem, which fails the test."""
    mock = MockRealtimeServer(script=RealtimeScript(reply_ms=500, replies=["Hello there."]))
    cfg = parse_config("""
routing: {default: sts}
assistants:
  sts:
    provider: openai_realtime
    language: en-US
    greeting: "Hello there."
    realtime: {reasoning_effort: low}
""", "sts.yaml")
    out = await run_session(CallerScript().speak(tone(500, 0.5), at=1.5).hangup(at=3.0),
                            cfg=cfg, provider_factory=openai_factory(mock, "test-key"))
    assert out.ended.status == "CALLER_HANGUP"
    log = mock.sessions[0]
    assert log.model == "gpt-realtime-2.1"
    (update,) = log.received("session.update")
    assert update["session"]["reasoning"] == {"effort": "low"}
    assert update["session"]["audio"]["input"]["transcription"]["language"] == "en"
    assert log.problems == []
