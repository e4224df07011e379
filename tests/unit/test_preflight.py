"""Preflight (``fastagi_server.preflight``): what a valid config still needs from the machine,
each finding naming the key path; and ``check-config`` / ``serve`` acting on it."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastagi_server.cli import main as cli_main
from fastagi_server.preflight import Finding, format_finding, has_errors, preflight
from media_sidecar.config.loader import load_config, parse_config


def check(text: str, env: dict[str, str] | None = None, **kw: bool) -> list[Finding]:
    env = {} if env is None else env
    cfg = parse_config(text, "t.yaml", env=env)
    return preflight(cfg, env=env, text=text, **kw)


def at(findings: list[Finding], path: str) -> Finding:
    hits = [f for f in findings if f.path == path]
    assert len(hits) == 1, findings
    return hits[0]


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something already listens on (127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


# -- the embedded default -----------------------------------------------------------------------


def test_embedded_default_is_clean_without_any_environment() -> None:
    assert preflight(load_config(None, env={}), env={}) == []


# -- keys ---------------------------------------------------------------------------------------

REALTIME = """
assistants:
  concierge:
    provider: openai_realtime
    realtime: {api_key_env: CONCIERGE_KEY}
"""


def test_unset_api_key_is_a_warning_naming_the_key() -> None:
    f = at(check(REALTIME), "assistants.concierge.realtime.api_key_env")
    assert f.level == "warning" and f.check == "keys"
    assert "CONCIERGE_KEY is not set" in f.message and "AI_STATUS=FAILED" in f.message
    assert "export CONCIERGE_KEY=" in f.fix
    assert check(REALTIME, {"CONCIERGE_KEY": "sk-1"}) == []


def test_strict_makes_the_unset_key_an_error() -> None:
    f = at(check(REALTIME, strict=True), "assistants.concierge.realtime.api_key_env")
    assert f.level == "error"


def test_pipeline_stage_keys_and_webhook_header_secrets() -> None:
    text = """
assistants:
  desk:
    provider: pipeline
    stt: {engine: deepgram}
    llm: {engine: openai}
    tts: {engine: openai, api_key_env: MY_TTS_KEY}
    fallback_assistant: offline
    tools:
      webhooks:
        - {name: crm, url: "https://crm.example.com/hook", headers_env: {X-Token: CRM_TOKEN}}
  offline: {provider: echo}
  own_llm:
    provider: pipeline
    llm: {engine: openai, url: "http://127.0.0.1:8080/v1"}
"""
    found = check(text)
    assert {f.path for f in found} == {
        "assistants.desk.stt.api_key_env", "assistants.desk.llm.api_key_env",
        "assistants.desk.tts.api_key_env", "assistants.desk.tools.webhooks[0].headers_env.X-Token",
    }  # own_llm: a server of one's own needs no key
    assert "DEEPGRAM_API_KEY is not set" in at(found, "assistants.desk.stt.api_key_env").message
    assert "fallback assistant 'offline'" in at(found, "assistants.desk.tts.api_key_env").message
    hook = at(found, "assistants.desk.tools.webhooks[0].headers_env.X-Token")
    assert "CRM_TOKEN" in hook.message and "without this header" in hook.message


def test_unset_variable_referenced_without_a_default() -> None:
    text = 'assistants:\n  x: {provider: echo, greeting: "${GREETING_TEXT}"}\n'
    f = at(check(text), "assistants.x.greeting")
    assert f.level == "warning" and "${GREETING_TEXT}" in f.message
    assert check(text, {"GREETING_TEXT": "hi"}) == []


# -- AMI ----------------------------------------------------------------------------------------


def test_ami_host_without_secret_is_an_error_naming_the_variable() -> None:
    env = {"AMI_HOST": "127.0.0.1", "AMI_USERNAME": "agi-voice"}
    found = preflight(load_config(None, env=env), env=env)
    f = at(found, "ami.secret")
    assert f.level == "error" and "AMI_SECRET is not set" in f.message
    assert "[agi-voice]" in f.fix
    assert preflight(load_config(None, env={**env, "AMI_SECRET": "s"}), env=env) == []


def test_ami_host_without_username_is_an_error() -> None:
    env = {"AMI_HOST": "127.0.0.1", "AMI_SECRET": "s"}
    f = at(preflight(load_config(None, env=env), env=env), "ami.username")
    assert f.level == "error" and "without AMI" in f.message


# -- voices and models --------------------------------------------------------------------------


def test_unknown_piper_voice_is_an_error_naming_the_key() -> None:
    text = "assistants:\n  desk:\n    provider: local\n    tts: {engine: piper, voice: joe-uk}\n"
    f = at(check(text), "assistants.desk.tts.voice")
    assert f.level == "error" and "joe-uk" in f.message and f.check == "speech"
    assert check(text, speech=False) == []


def test_unknown_moonshine_model_is_an_error_naming_the_key() -> None:
    text = "assistants:\n  desk:\n    provider: local\n    stt: {engine: moonshine, model: huge-xx}\n"
    f = at(check(text), "assistants.desk.stt.model")
    assert f.level == "error" and "huge-xx" in f.message and "tiny-en" in f.fix


# -- destinations, URLs -------------------------------------------------------------------------

DESTS = """
assistants:
  desk:
    provider: echo
    destinations:
      spaced: {context: "from internal", exten: "2001"}
      pattern: {context: from-internal, exten: "_2XXX"}
      empty: {context: from-internal, exten: "2002", priority: ""}
      zero: {context: from-internal, exten: "2003", priority: "0"}
      comma: {context: from-internal, exten: "20,04"}
      second: {context: from-internal, exten: "2005", priority: "2"}
      label: {context: from-internal, exten: "2006", priority: start}
      fine: {context: from-internal, exten: "*98"}
"""


def test_bad_destinations_are_errors_naming_the_key() -> None:
    found = check(DESTS)
    p = "assistants.desk.destinations"
    errors = {f.path for f in found if f.level == "error"}
    assert errors == {f"{p}.spaced.context", f"{p}.pattern.exten", f"{p}.empty.priority",
                      f"{p}.zero.priority", f"{p}.comma.exten"}
    assert "pattern" in at(found, f"{p}.pattern.exten").message
    # a priority other than 1 works, but the shipped Newexten filter passes only priority 1
    warnings = {f.path for f in found if f.level == "warning"}
    assert warnings == {f"{p}.second.priority", f"{p}.label.priority"}


@pytest.mark.parametrize("url, why", [
    ("http://exa mple.com/hook", "whitespace"),
    ("https://example.com:99999/hook", "not a valid URL"),
    ("http://:8080/hook", "no host name"),
])
def test_bad_webhook_url_is_an_error_naming_the_key(url: str, why: str) -> None:
    text = (f"assistants:\n  desk:\n    provider: openai_realtime\n    tools:\n      webhooks:\n"
            f"        - {{name: crm, url: \"{url}\", allow_http: true}}\n")
    f = at(check(text, {"OPENAI_API_KEY": "k"}), "assistants.desk.tools.webhooks[0].url")
    assert f.level == "error" and why in f.message


def test_speech_to_speech_provider_url_is_checked() -> None:
    text = ('assistants:\n  rt:\n    provider: openai_realtime\n'
            '    realtime: {url: "https://api.openai.com/v1/realtime"}\n')
    f = at(check(text, {"OPENAI_API_KEY": "k"}), "assistants.rt.realtime.url")
    assert "ws:// or wss://" in f.message


# -- network layout, records, ports -------------------------------------------------------------


def test_loopback_audiosocket_address_with_ami_on_another_host_is_a_warning() -> None:
    text = ('ami: {host: 192.0.2.10, username: agi-voice, secret: "${S}"}\n'
            'assistants: {x: {provider: echo}}\n')
    found = check(text, {"S": "s"})
    f = at(found, "sidecar.audiosocket.host")
    assert f.level == "warning" and "192.0.2.10" in f.message and "127.0.0.1:9092" in f.message
    assert "fastagi.audiosocket_address" in f.fix
    assert at(found, "fastagi.listen.host").level == "warning"
    explicit = text.replace("ami:", "fastagi: {audiosocket_address: '127.0.0.1:9092'}\nami:")
    assert at(check(explicit, {"S": "s"}), "fastagi.audiosocket_address").level == "warning"
    # Asterisk on this host: loopback is right
    assert check(text.replace("192.0.2.10", "127.0.0.1"), {"S": "s"}) == []


def test_audiosocket_address_outside_while_the_sidecar_listens_on_loopback() -> None:
    text = ("fastagi: {audiosocket_address: '10.0.0.5:9092'}\n"
            "assistants: {x: {provider: echo}}\n")
    f = at(check(text), "sidecar.audiosocket.host")
    assert "10.0.0.5:9092" in f.message and "0.0.0.0" in f.fix


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_records_path_not_writable_is_an_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    text = f"sidecar: {{records_path: '{locked}/sub/calls.jsonl'}}\nassistants: {{x: {{}}}}\n"
    f = at(check(text, speech=False), "sidecar.records_path")
    assert f.level == "error" and str(locked) in f.message
    ok = text.replace(str(locked), str(tmp_path))
    assert check(ok, speech=False) == []


def test_records_path_under_a_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    text = f"sidecar: {{records_path: '{tmp_path}/afile/calls.jsonl'}}\nassistants: {{x: {{}}}}\n"
    f = at(check(text, speech=False), "sidecar.records_path")
    assert f.level == "error" and "afile is not a directory" in f.message


def test_busy_port_is_an_error_for_serve_only(listening: int) -> None:
    text = (f"fastagi: {{listen: {{host: 127.0.0.1, port: {listening}}}}}\n"
            "assistants: {x: {provider: echo}}\n")
    assert check(text) == []  # check-config does not bind
    f = at(check(text, serve=True), "fastagi.listen.port")
    assert f.level == "error" and f"127.0.0.1:{listening} is already in use" in f.message
    assert f"sport = :{listening}" in f.fix


def test_busy_health_port_is_only_a_warning(listening: int) -> None:
    text = (f"health: {{listen: {{host: 127.0.0.1, port: {listening}}}}}\n"
            "fastagi: {listen: {port: 0}}\n"
            "sidecar: {audiosocket: {port: 0}, control: {port: 0}}\n"
            "assistants: {x: {provider: echo}}\n")
    f = at(check(text, serve=True), "health.listen.port")
    assert f.level == "warning" and "served without /live" in f.message


def test_busy_dashboard_port_is_only_a_warning(listening: int) -> None:
    text = (f"dashboard: {{listen: {{host: 127.0.0.1, port: {listening}}}}}\n"
            "fastagi: {listen: {port: 0}}\n"
            "sidecar: {audiosocket: {port: 0}, control: {port: 0}}\nhealth: {enabled: false}\n"
            "assistants: {x: {provider: echo}}\n")
    f = at(check(text, serve=True), "dashboard.listen.port")
    assert f.level == "warning" and "served without the dashboard" in f.message


def test_dashboard_beyond_loopback_without_its_password_is_a_warning() -> None:
    text = ("dashboard: {listen: {host: 0.0.0.0, port: 9095}}\n"
            "assistants: {x: {provider: echo}}\n")
    f = at(check(text, speech=False), "dashboard.listen.host")
    assert f.level == "warning" and "AGI_VOICE_DASHBOARD_PASSWORD" in f.message
    assert not [x for x in check(text, {"AGI_VOICE_DASHBOARD_PASSWORD": "s3cret!"},
                                 speech=False) if x.path.startswith("dashboard")]
    loopback = "dashboard: {listen: {host: 127.0.0.1, port: 9095}}\nassistants: {x: {provider: echo}}\n"
    assert not [x for x in check(loopback, speech=False) if x.path.startswith("dashboard")]


def test_two_listeners_on_one_port_for_serve() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    text = (f"sidecar: {{audiosocket: {{port: {port}}}, control: {{port: {port}}}}}\n"
            "assistants: {x: {provider: echo}}\n")
    f = at(check(text, serve=True), "sidecar.control.port")
    assert "AudioSocket" in f.message


def test_format_names_file_key_and_fix() -> None:
    f = Finding("error", "assistants.x.tts.voice", "unknown voice", "use joe-us", "speech")
    assert format_finding(f, "c.yaml") == (
        "error: c.yaml: assistants.x.tts.voice: unknown voice (fix: use joe-us)")
    assert has_errors([f]) and not has_errors([Finding("warning", "p", "m")])


# -- the CLI ------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_check_config_exit_status_and_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONCIERGE_KEY", raising=False)
    path = write(tmp_path, REALTIME)
    assert cli_main(["check-config", path]) == 0
    out = capsys.readouterr().out
    assert f"{path}: OK, 1 warning(s)" in out
    assert (f"warning: {path}: assistants.concierge.realtime.api_key_env: CONCIERGE_KEY is not "
            "set") in out
    assert cli_main(["check-config", "--strict", path]) == 1
    out = capsys.readouterr().out
    assert f"{path}: 1 error(s)" in out and "error: " in out
    monkeypatch.setenv("CONCIERGE_KEY", "sk-test")
    assert cli_main(["check-config", "--strict", path]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: OK\n")


def test_check_config_errors_exit_1_and_an_invalid_file_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "assistants:\n  desk:\n    provider: local\n"
                           "    tts: {engine: piper, voice: joe-uk}\n")
    assert cli_main(["check-config", path]) == 1
    assert f"error: {path}: assistants.desk.tts.voice: unknown Piper voice 'joe-uk'" in (
        capsys.readouterr().out)
    bad = write(tmp_path, "assistants:\n  desk: {provider: nope}\n")
    with pytest.raises(SystemExit) as info:
        cli_main(["check-config", bad])
    assert info.value.code == 2


def test_check_config_summary_fits_the_provider(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    monkeypatch.setenv("DEEPGRAM_API_KEY", "k")
    path = write(tmp_path, """
assistants:
  rt: {provider: openai_realtime, audio_format: ulaw, realtime: {voice: cedar}}
  dg: {provider: deepgram_agent}
  desk:
    provider: pipeline
    stt: {engine: moonshine, model: tiny-en}
    llm: {engine: ollama, model: qwen3}
    tts: {engine: piper}
""")
    assert cli_main(["check-config", path]) == 0
    lines = {ln.split(":")[0].strip(): ln for ln in capsys.readouterr().out.splitlines()
             if ln.startswith("  assistant ")}
    rt, dg, desk = lines["assistant rt"], lines["assistant dg"], lines["assistant desk"]
    assert "model=gpt-realtime-2.1 voice=cedar" in rt and "format=ulaw path=dial" in rt
    assert "listen=nova-3 think=open_ai/gpt-4o-mini speak=aura-2-thalia-en" in dg
    for line in (rt, dg):
        assert "stt=" not in line and "tts=" not in line and "intents=" not in line
    assert "stt=moonshine:tiny-en llm=ollama:qwen3 tts=piper" in desk and "path=app" in desk


def test_serve_on_a_busy_port_exits_2_with_one_line(
        tmp_path: Path, listening: int, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, f"fastagi: {{listen: {{host: 127.0.0.1, port: {listening}}}}}\n"
                           "assistants: {x: {provider: echo}}\n")
    with pytest.raises(SystemExit) as info:
        cli_main(["serve", "--config", path])
    assert info.value.code == 2
    # (a warning line may come too: the health port, if something else holds it)
    err = [ln for ln in capsys.readouterr().err.splitlines()
           if ln.startswith("agi-voice: error:")]
    assert err == [f"agi-voice: error: {path}: fastagi.listen.port: FastAGI address "
                   f"127.0.0.1:{listening} is already in use (fix: stop what listens there "
                   f"(see: ss -ltnp 'sport = :{listening}'; another agi-voice?) or choose "
                   "another fastagi.listen.port)"]
