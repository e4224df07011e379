"""The Deepgram Voice Agent wire mapping (pure) and the ``deepgram:`` keys the loader checks:
Flux listen (v2) with its end-of-turn settings, speak/think fallback arrays, InjectAgentMessage,
UpdateListen/UpdateThink, LatencyReport and FunctionCallCancelled decoding. Shapes from
providers-2026-update.md section 3 (deepgram-sdk 7.17)."""

from __future__ import annotations

import pytest

from media_sidecar.config.loader import ConfigError, parse_config
from media_sidecar.config.schema import DeepgramAgentConfig
from media_sidecar.providers import deepgram_wire as wire
from media_sidecar.tools.spec import ToolSpec
from tests.mocks.deepgram_agent.settings import check_settings

YAML = """
routing: {default: dg}
assistants:
  dg:
    provider: deepgram_agent
    instructions: "Be brief."
    deepgram: DG
"""
ENV = {"OPENAI_TTS_AUTH": "Bearer sk-test", "LLM_KEY": "Bearer llm"}
TOOL = ToolSpec("hangup_call", "End the call", {"type": "object", "properties": {}})


def deepgram(body: str) -> DeepgramAgentConfig:
    a = parse_config(YAML.replace("DG", body), "dg.yaml").assistant("dg")
    assert a is not None
    return a.deepgram


def settings(cfg: DeepgramAgentConfig) -> dict:
    return wire.settings(cfg, instructions="Be brief.", greeting="Hi.", tools=[TOOL],
                         language="en", encoding="mulaw", rate=8000, env=ENV)


def test_default_settings_keep_the_v1_shape() -> None:
    s = settings(DeepgramAgentConfig())
    agent = s["agent"]
    assert agent["listen"] == {"provider": {"type": "deepgram", "version": "v1",
                                            "model": "nova-3", "language": "en"}}
    assert agent["think"] == {
        "provider": {"type": "open_ai", "model": "gpt-4o-mini", "temperature": 0.7},
        "prompt": "Be brief.",
        "functions": [{"name": "hangup_call", "description": "End the call",
                       "parameters": {"type": "object", "properties": {}}}]}
    assert agent["speak"] == {"provider": {"type": "deepgram", "model": "aura-2-thalia-en"}}
    assert check_settings(s).problems == ()


def test_flux_and_fallback_arrays_from_the_yaml() -> None:
    cfg = deepgram("""
      listen_version: v2
      listen_model: flux-general-multi
      eot_threshold: 0.8
      eager_eot_threshold: 0.5
      eot_timeout_ms: 6000
      language_hints: [en, de]
      keyterms: [ACME]
      speak:
        - {model: aura-2-thalia-en}
        - provider: open_ai
          model: tts-1
          voice: alloy
          url: https://api.openai.com/v1/audio/speech
          headers_env: {authorization: OPENAI_TTS_AUTH}
        - {provider: eleven_labs, model: eleven_flash_v2_5, language: en,
           url: "wss://api.elevenlabs.io/v1/text-to-speech/v/multi-stream-input"}
        - {provider: cartesia, model: sonic-2, voice: abc-123, url: "https://api.cartesia.ai/tts"}
      think:
        - {model: gpt-4.1-mini, temperature: 0.5}
        - {provider: anthropic, model: claude-3-5-haiku-latest}
        - {provider: open_ai, model: my-llm, url: "https://llm.example/v1/chat/completions",
           headers_env: {authorization: LLM_KEY}}
""")
    s = settings(cfg)
    agent = s["agent"]
    # 3.2: version always sent; language_hints plural; no language / smart_format on v2
    assert agent["listen"]["provider"] == {
        "type": "deepgram", "version": "v2", "model": "flux-general-multi",
        "eot_threshold": 0.8, "eager_eot_threshold": 0.5, "eot_timeout_ms": 6000,
        "language_hints": ["en", "de"], "keyterms": ["ACME"]}
    # 3.7: speak as an array of fallbacks; endpoint headers from the environment
    assert agent["speak"] == [
        {"provider": {"type": "deepgram", "model": "aura-2-thalia-en"}},
        {"provider": {"type": "open_ai", "model": "tts-1", "voice": "alloy"},
         "endpoint": {"url": "https://api.openai.com/v1/audio/speech",
                      "headers": {"authorization": "Bearer sk-test"}}},
        {"provider": {"type": "eleven_labs", "model_id": "eleven_flash_v2_5", "language": "en"},
         "endpoint": {"url": "wss://api.elevenlabs.io/v1/text-to-speech/v/multi-stream-input",
                      "headers": {}}},
        {"provider": {"type": "cartesia", "model_id": "sonic-2",
                      "voice": {"mode": "id", "id": "abc-123"}},
         "endpoint": {"url": "https://api.cartesia.ai/tts", "headers": {}}},
    ]
    # think as an array: every entry carries the prompt and the functions
    think = agent["think"]
    assert [t["provider"] for t in think] == [
        {"type": "open_ai", "model": "gpt-4.1-mini", "temperature": 0.5},
        {"type": "anthropic", "model": "claude-3-5-haiku-latest"},
        {"type": "open_ai", "model": "my-llm"}]
    assert think[2]["endpoint"] == {"url": "https://llm.example/v1/chat/completions",
                                    "headers": {"authorization": "Bearer llm"}}
    assert all(t["prompt"] == "Be brief." and t["functions"][0]["name"] == "hangup_call"
               for t in think)
    assert check_settings(s).problems == ()  # the mock accepts it as the service would


def test_a_list_of_one_is_sent_as_an_object() -> None:
    cfg = deepgram("{speak: [{model: aura-2-zeus-en}], think: [{model: gpt-4.1-mini}]}")
    agent = settings(cfg)["agent"]
    assert agent["speak"] == {"provider": {"type": "deepgram", "model": "aura-2-zeus-en"}}
    assert agent["think"]["provider"] == {"type": "open_ai", "model": "gpt-4.1-mini"}


def test_a_missing_header_variable_is_named() -> None:
    cfg = deepgram("{think: [{model: m, url: 'https://x', headers_env: {authorization: NOPE}}]}")
    with pytest.raises(wire.MissingEnv, match="NOPE"):
        settings(cfg)


@pytest.mark.parametrize(
    ("body", "key", "needle"),
    [
        ("{listen_version: v2}", "deepgram.listen_model", "flux-general-en"),
        ("{listen_model: flux-general-en}", "deepgram.listen_model", "listen_version: v2"),
        ("{eot_threshold: 0.7}", "deepgram.eot_threshold", "only with listen_version: v2"),
        ("{eot_timeout_ms: 3000}", "deepgram.eot_timeout_ms", "only with listen_version: v2"),
        ("{listen_version: v3}", "deepgram.listen_version", "expected one of"),
        ("{listen_version: v2, listen_model: flux-general-en, eot_threshold: 0.4}",
         "deepgram.eot_threshold", "0.5..1.0"),
        ("{listen_version: v2, listen_model: flux-general-en, eager_eot_threshold: 0.95}",
         "deepgram.eager_eot_threshold", "0.3..0.9"),
        ("{listen_version: v2, listen_model: flux-general-en, eot_timeout_ms: 100}",
         "deepgram.eot_timeout_ms", "500..60000"),
        ("{listen_version: v2, listen_model: flux-general-en, language_hints: [de]}",
         "deepgram.language_hints", "flux-general-multi"),
        ("{speak: {model: x}}", "deepgram.speak", "a list of providers"),
        ("{speak: [{provider: polly}]}", "deepgram.speak[0].provider", "expected one of"),
        ("{speak: [{provider: deepgram}]}", "deepgram.speak[0].model", "required"),
        ("{speak: [{provider: open_ai, model: tts-1, url: 'https://x'}]}",
         "deepgram.speak[0].voice", "required for provider open_ai"),
        ("{speak: [{provider: eleven_labs, model: m}]}", "deepgram.speak[0].url", "required"),
        ("{speak: [{provider: cartesia, model: m, voice: v, url: 'wss://x'}]}",
         "deepgram.speak[0].url", "wss only for eleven_labs"),
        ("{speak: [{model: m, colour: red}]}", "deepgram.speak[0].colour", "unknown key"),
        ("{speak: [{model: m}], speak_model: aura-2-zeus-en}", "deepgram.speak_model",
         "not both"),
        ("{think: [{provider: open_ai}]}", "deepgram.think[0].model", "required"),
        ("{think: [{model: m, url: 'ftp://x'}]}", "deepgram.think[0].url", "http(s)"),
        ("{think: [{model: m}], think_model: gpt-4o}", "deepgram.think_model", "not both"),
        ("{think: [{model: m, url: 'https://x', headers_env: {authorization: 'sk-1'}}]}",
         "deepgram.think[0].headers_env.authorization", "environment variable name"),
    ],
)
def test_the_loader_names_the_key(body: str, key: str, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        deepgram(body)
    assert exc.value.path == f"assistants.dg.{key}" and needle in str(exc.value)


def test_inject_agent_message_carries_message_and_behavior() -> None:
    # 3.5 / asyncapi AgentV1InjectAgentMessage: the field is ``message`` (not ``content``)
    assert wire.inject_agent_message("One moment.", "queue") == {
        "type": "InjectAgentMessage", "message": "One moment.", "behavior": "queue"}
    assert wire.inject_agent_message("Hi.")["behavior"] == "default"
    with pytest.raises(ValueError, match="behavior"):
        wire.inject_agent_message("Hi.", "shout")  # type: ignore[arg-type]


def test_update_listen_keeps_the_identity_and_update_think_replaces() -> None:
    flux = {"type": "deepgram", "version": "v2", "model": "flux-general-en", "eot_threshold": 0.7}
    # 3.3: identity (type, version, model) kept, as the server requires
    assert wire.update_listen(flux, eot_timeout_ms=9000, model="other", eot_threshold=None) == {
        "type": "UpdateListen", "listen": {"provider": {**flux, "eot_timeout_ms": 9000}}}
    assert wire.update_listen(flux, keyterms=["order number"])["listen"]["provider"][
        "keyterms"] == ["order number"]
    with pytest.raises(ValueError, match="Flux"):
        wire.update_listen({"type": "deepgram", "version": "v1", "model": "nova-3"},
                           keyterms=["x"])
    think = [{"provider": {"type": "open_ai", "model": "gpt-4.1-mini"}, "prompt": "p"}]
    assert wire.update_think(think) == {"type": "UpdateThink", "think": think}


def test_server_reports_are_decoded() -> None:
    assert wire.latency_figures({"type": "LatencyReport", "total_latency": 0.71,
                                 "tts_latency": 1, "stt_latency": None, "x": 2.0,
                                 "ttt_tool_latency": True}) == {
        "total_latency": 0.71, "tts_latency": 1.0}
    assert wire.cancelled_calls({"type": "FunctionCallCancelled", "functions": [
        {"id": "fc_1", "name": "transfer_call"}, "junk"]}) == [("fc_1", "transfer_call")]
