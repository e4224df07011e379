"""The pipeline assistant's stages in the YAML: parsed, defaulted, validated with clear errors."""

from __future__ import annotations

import pytest

from media_sidecar.config.loader import ConfigError, parse_config
from media_sidecar.pipeline import stage_names


def cfg(body: str):
    return parse_config(f"assistants:\n  bot:\n    provider: pipeline\n{body}", "p.yaml")


def test_stages_are_parsed_with_engine_defaults() -> None:
    a = cfg("""    stt: {engine: deepgram, keyterms: [ACME, Zorbo], endpointing_ms: 250}
    llm: {engine: ollama, model: qwen3, rules_first: true}
    tts: {engine: openai, voice: cedar, instructions: "Warm and brisk."}
""").assistant("bot")
    assert a.is_pipeline and a.uses_llm and not a.offline
    assert a.stt.keyterms == ("ACME", "Zorbo") and a.stt.endpointing_ms == 250
    assert (a.llm.engine, a.llm.model, a.llm.rules_first) == ("ollama", "qwen3", True)
    assert (a.tts.voice, a.tts.model, a.tts.streaming) == ("cedar", "", True)
    assert stage_names(a) == "deepgram+rules>ollama+openai"


def test_local_is_the_offline_pipeline() -> None:
    a = parse_config("assistants:\n  r: {provider: local}\n", "p.yaml").assistant("r")
    assert a.is_pipeline and a.offline and not a.uses_llm
    assert stage_names(a) == "moonshine+rules+piper"


@pytest.mark.parametrize(("body", "path", "message"), [
    ("    stt: {engine: whisper}\n", "bot.stt.engine", "expected one of"),
    ("    llm: {engine: gpt}\n", "bot.llm.engine", "expected one of"),
    ("    tts: {engine: espeak}\n", "bot.tts.engine", "expected one of"),
    ("    stt: {engine: deepgram, utterance_end_ms: 500}\n", "bot.stt.utterance_end_ms",
     "minimum is 1000"),
    ("    stt: {engine: deepgram, url: 'https://api.deepgram.com/v1/listen'}\n", "bot.stt.url",
     "ws(s)://"),
    ("    tts: {engine: openai, speed: 9}\n", "bot.tts.speed", "0.25..4"),
    ("    llm: {engine: openai, url: 'ftp://x'}\n", "bot.llm.url", "http(s)://"),
    ("    llm: {engine: openai, timeout: 0}\n", "bot.llm.timeout", "above 0"),
    ("    llm: {engine: openai, history_messages: 1}\n", "bot.llm.history_messages", "2..1000"),
    ("    llm: {rules_first: true}\n", "bot.llm.rules_first", "needs an llm engine"),
    ("    llm: {engine: llama_cpp, model_path: /no/such.gguf}\n", "bot.llm.model_path",
     "no such GGUF file"),
    ("    llm: {engine: openai, api_key: sk-123}\n", "bot.llm.api_key", "unknown key"),
])
def test_stage_errors_name_the_key(body: str, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        cfg(body)
    assert f"assistants.{path}" in str(err.value) and message in str(err.value)
