"""The ``live:`` settings of a GPT-Live assistant: defaults, the loader's refusals (each naming
its key), and the preflight's key and URL checks."""

from __future__ import annotations

import pytest

from fastagi_server.preflight import check_keys, check_urls, required_keys
from media_sidecar.config.loader import ConfigError, parse_config
from media_sidecar.providers import RELAY_PROVIDERS

BASE = "routing: {default: live}\nassistants:\n  live:\n    provider: openai_live\n"


def test_defaults_are_mu_law_passthrough_and_gpt_live_1():
    a = parse_config(BASE, "live.yaml").assistant("live")
    assert a is not None and "openai_live" in RELAY_PROVIDERS
    lv = a.live
    assert (lv.url, lv.model, lv.voice, lv.audio) == (
        "wss://api.openai.com/v1/live/sessions", "gpt-live-1", "marin", "auto")
    assert (lv.api_key_env, lv.jitter_ms, lv.end_silence_ms) == ("OPENAI_API_KEY", 60, 300)


@pytest.mark.parametrize(("live", "key"), [
    ("{audio: pcm, pcm_rate: 8000}", "live.pcm_rate"),
    ("{url: 'wss://api.openai.com/v1/live/sessions?model=gpt-live-1'}", "live.url"),
    ("{url: 'https://api.openai.com/v1/live/sessions'}", "live.url"),
    ("{jitter_ms: 900}", "live.jitter_ms"),
    ("{end_silence_ms: 10}", "live.end_silence_ms"),
    ("{audio: pcma}", "live.audio"),
    ("{turn_detection: none}", "live.turn_detection"),
])
def test_bad_live_settings_name_their_key(live, key):
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + f"    live: {live}\n", "live.yaml")
    assert f"assistants.live.{key}" in str(err.value)


def test_preflight_wants_the_key_and_checks_the_url():
    cfg = parse_config(BASE + "    live: {api_key_env: LIVE_KEY, url: 'ws://'}\n", "live.yaml")
    a = cfg.assistant("live")
    assert a is not None
    assert required_keys(a) == [("assistants.live.live.api_key_env", "LIVE_KEY", True)]
    assert any(f.path == "assistants.live.live.api_key_env" for f in check_keys(cfg, {}))
    assert [f.path for f in check_urls(cfg)] == ["assistants.live.live.url"]


def test_check_config_summary_shows_the_live_model_voice_and_delegate(tmp_path, capsys,
                                                                       monkeypatch):
    from fastagi_server.cli import main as cli_main

    monkeypatch.setenv("OPENAI_API_KEY", "k")
    path = tmp_path / "live.yaml"
    path.write_text("assistants:\n  lv: {provider: openai_live, live: {voice: cedar}}\n")
    assert cli_main(["check-config", str(path)]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines()
               if ln.startswith("  assistant lv")]
    assert "model=gpt-live-1 voice=cedar audio=auto delegate=gpt-5.6-luna" in line
    assert "stt=" not in line and "tts=" not in line
