"""``agi-voice doctor`` against the fake AMI (the trio FakeAmiServer in a thread), with the
AMI user's classes, the loaded modules and the version set as each case needs."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastagi_server.cli import main as cli_main
from fastagi_server.doctor import Check, keypad_over_audiosocket, parse_version, run_doctor
from media_sidecar.config.loader import parse_config
from tests.unit.test_ami_client import ServerThread, fake_ami

LEAST = frozenset({"call", "reporting"})
"""asterisk_conf/manager_custom.conf's write classes."""
LEAST_READ = frozenset({"call", "dtmf", "dialplan", "user", "system"})

CONFIG = """
fastagi: {listen: {port: 0}}
sidecar: {audiosocket: {port: 0}, control: {port: 0}}
ami: {host: 127.0.0.1, port: "${AMI_PORT}", username: agent, secret: "${AMI_SECRET}"}
assistants:
  desk: {provider: echo}
"""


def doctor(port: int, secret: str = "agentsecret", text: str = CONFIG,
           action_timeout: float = 2.0) -> list[Check]:
    env = {"AMI_PORT": str(port), "AMI_SECRET": secret}
    cfg = parse_config(text, "doctor.yaml", env=env)
    return asyncio.run(run_doctor(cfg, env=env, action_timeout=action_timeout))


def named(checks: list[Check], name: str) -> Check:
    hits = [c for c in checks if c.name == name]
    assert len(hits) == 1, [c.line() for c in checks]
    return hits[0]


def fails(checks: list[Check]) -> list[str]:
    return [c.line() for c in checks if c.status == "FAIL"]


@pytest.fixture
def ami() -> Iterator[ServerThread]:
    with fake_ami() as st:
        yield st


def test_full_user_passes_with_every_module_and_the_exact_version(ami: ServerThread) -> None:
    checks = doctor(ami.port)
    assert fails(checks) == []
    assert named(checks, "AMI reachable").detail.endswith("answers as AMI 11.0.0 (Asterisk 22)")
    assert named(checks, "AMI login").status == "OK"
    assert named(checks, "AMI write classes").status == "OK"
    assert named(checks, "AMI read classes").status == "OK"
    assert named(checks, "Asterisk version").detail == "22.10.1 (AMI 11.0.0)"
    for module in ("res_agi", "res_audiosocket", "app_audiosocket"):
        assert named(checks, f"module {module}").detail.startswith("loaded")
    chan = named(checks, "module chan_audiosocket")  # loaded, and not needed by a slin desk
    assert chan.status == "OK" and "not needed" in chan.detail
    assert named(checks, "keypad over AudioSocket").status == "OK"
    # a user with every class is told it has more than it needs
    assert named(checks, "AMI least privilege").status == "WARN"
    # nothing changed on the PBX: the write probes aimed at a channel that does not exist
    sent = ami.call(lambda: list(ami.server.actions))
    assert {a["Action"] for a in sent} >= {"Login", "Redirect", "Setvar", "Getvar", "Logoff"}
    assert "Hangup" not in {a["Action"] for a in sent}
    assert all(a.get("Channel") in (None, "agi-voice-doctor/no-such-channel") for a in sent)


def test_missing_write_class_fails_with_the_fix(ami: ServerThread) -> None:
    ami.server.write_classes = frozenset({"reporting"})
    checks = doctor(ami.port)
    write = named(checks, "AMI write classes")
    assert write.status == "FAIL"
    assert write.detail.startswith("Redirect, Setvar, Hangup refused (Permission denied)")
    assert "Getvar" not in write.detail  # reporting is enough for Getvar
    assert "under [agent] set write = call,reporting" in write.fix
    assert "manager reload" in write.fix
    assert fails(checks) == [write.line()]


def test_least_privilege_user_passes_but_cannot_see_modules_or_read_classes(
        ami: ServerThread) -> None:
    ami.server.write_classes = LEAST
    ami.server.read_classes = LEAST_READ
    checks = doctor(ami.port)
    assert fails(checks) == []
    assert [c.name for c in checks if c.name == "AMI least privilege"] == []
    modules = named(checks, "Asterisk modules")
    assert modules.status == "WARN" and "write class system" in modules.detail
    assert "asterisk -rx 'module show like audiosocket'" in modules.fix
    read = named(checks, "AMI read classes")
    assert read.status == "WARN" and "system is granted (FullyBooted arrived)" in read.detail
    assert named(checks, "Asterisk version").status == "OK"  # CoreSettings: reporting


def test_missing_module_fails_with_the_fix(ami: ServerThread) -> None:
    ami.server.modules.discard("app_audiosocket")
    checks = doctor(ami.port)
    app = named(checks, "module app_audiosocket")
    assert app.status == "FAIL" and "needed for desk" in app.detail
    assert app.fix.startswith("asterisk -rx 'module load app_audiosocket.so'")
    assert "noload => app_audiosocket.so" in app.fix


def test_modules_through_the_cli_when_only_command_is_granted(ami: ServerThread) -> None:
    ami.server.write_classes = LEAST | {"command"}
    ami.server.modules.discard("chan_audiosocket")
    text = CONFIG + "  g711: {provider: echo, audio_format: ulaw}\n"
    checks = doctor(ami.port, text=text)
    assert named(checks, "module app_audiosocket").status == "OK"
    chan = named(checks, "module chan_audiosocket")
    assert chan.status == "FAIL" and "Dial(AudioSocket/...), needed for g711" in chan.detail


def test_missing_read_class_fails_when_it_can_be_read(ami: ServerThread) -> None:
    ami.server.read_classes = frozenset({"call", "system"})
    read = named(doctor(ami.port), "AMI read classes")
    assert read.status == "FAIL"
    assert "dtmf (DTMFEnd (keypad digits))" in read.detail and "dialplan" in read.detail
    assert "read = call,dtmf,dialplan,user,system" in read.fix


def test_wrong_secret_fails_the_login(ami: ServerThread) -> None:
    checks = doctor(ami.port, secret="wrong")
    login = named(checks, "AMI login")
    assert login.status == "FAIL" and "Authentication failed" in login.detail
    assert "AMI_SECRET" in login.fix and "permit=" in login.fix
    assert [c.name for c in checks if c.name.startswith("AMI write")] == []


def test_old_asterisk_has_no_keypad_over_audiosocket(ami: ServerThread) -> None:
    ami.server.asterisk_version = "22.3.0"
    keypad = named(doctor(ami.port), "keypad over AudioSocket")
    assert keypad.status == "WARN" and "only as AMI DTMFEnd" in keypad.detail


def test_unreachable_ami_fails_with_the_fix() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    checks = doctor(port)
    reach = named(checks, "AMI reachable")
    assert reach.status == "FAIL" and "connection refused" in reach.detail
    assert "enabled = yes" in reach.fix
    assert named(checks, "keypad over AudioSocket").status == "WARN"


def test_not_ami_and_a_silent_peer() -> None:
    async def main() -> tuple[list[Check], list[Check]]:
        async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                await writer.drain()
                await reader.read()
            finally:
                writer.close()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                writer.write(b"Asterisk Call Manager/11.0.0\r\n")
                await writer.drain()
                await reader.read()  # never answers the login
            finally:
                writer.close()

        results = []
        for handler in (http, silent):
            server = await asyncio.start_server(handler, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            env = {"AMI_PORT": str(port), "AMI_SECRET": "s"}
            cfg = parse_config(CONFIG, "doctor.yaml", env=env)
            async with server:
                results.append(await run_doctor(cfg, env=env, action_timeout=0.3))
        return results[0], results[1]

    not_ami, silent = asyncio.run(main())
    reach = named(not_ami, "AMI reachable")
    assert reach.status == "FAIL" and "is not AMI" in reach.detail
    session = named(silent, "AMI session")
    assert session.status == "FAIL" and "no answer in time" in session.detail


def test_without_ami_is_a_warning_not_a_failure() -> None:
    cfg = parse_config("assistants: {x: {provider: echo}}\n", "d.yaml", env={})
    checks = asyncio.run(run_doctor(cfg, env={}))
    assert fails(checks) == []
    assert named(checks, "AMI").status == "WARN"


def test_unknown_voice_fails_the_model_check() -> None:
    cfg = parse_config("assistants:\n  desk:\n    provider: local\n"
                       "    tts: {engine: piper, voice: joe-uk}\n"
                       "    stt: {engine: moonshine, model: base-xx}\n", "d.yaml", env={})
    checks = asyncio.run(run_doctor(cfg, env={}))
    lines = fails(checks)
    assert any("assistants.desk.tts.voice: unknown Piper voice 'joe-uk'" in ln for ln in lines)
    assert any("assistants.desk.stt.model: unknown Moonshine model 'base-xx'" in ln
               for ln in lines)


@pytest.mark.local_models
def test_models_load_for_real() -> None:
    from media_sidecar.config.loader import load_config

    checks = asyncio.run(run_doctor(load_config(None, env={}), env={}))
    loads = [c for c in checks if c.name == "model loads"]
    assert [c.status for c in loads] == ["OK", "OK"]
    assert "Moonshine tiny-en loaded" in loads[0].detail
    assert "Piper voice joe-us loaded" in loads[1].detail


def test_versions() -> None:
    assert parse_version("22.10.1") == (22, 10)
    assert parse_version("certified-20.7-cert3") == (20, 7)
    assert parse_version("GIT-master-abc") is None
    assert [keypad_over_audiosocket(v) for v in ((20, 13), (20, 14), (21, 9), (22, 3), (22, 4),
                                                  (23, 0), (19, 8), (18, 26))] == [
        False, True, True, False, True, True, False, False]


def test_cli_exit_status(ami: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    monkeypatch.setenv("AMI_PORT", str(ami.port))
    monkeypatch.setenv("AMI_SECRET", "agentsecret")
    assert cli_main(["doctor", "--config", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"OK   config: {path} is valid: 1 assistant(s)"
    assert out[-1].startswith("0 failure(s), ")
    ami.server.write_classes = frozenset({"reporting"})
    assert cli_main(["doctor", "--config", str(path), "--timeout", "2"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert any(ln.startswith("FAIL AMI write classes: Redirect, Setvar, Hangup refused") and
               ". Fix: in manager.conf" in ln for ln in out)
    assert out[-1].startswith("1 failure(s), ")
