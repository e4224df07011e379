"""``agi-voice doctor`` against the real Asterisk: the instance's full user passes; a user with
only ``write = reporting`` is told which write class is missing; an unloaded AudioSocket app
is reported with the command that loads it. No calls are placed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from fastagi_server.doctor import Check, run_doctor
from media_sidecar.config.loader import parse_config

from .peer import AsteriskPeer

REPORTING_USER, REPORTING_SECRET = "doctor-reporting", "doctor-only-secret-0123456789"

CONFIG = """
fastagi: {listen: {port: 0}}
sidecar: {audiosocket: {port: 0}, control: {port: 0}}
ami: {host: 127.0.0.1, port: "${AMI_PORT}", username: "${AMI_USERNAME}", secret: "${AMI_SECRET}"}
assistants:
  desk: {provider: echo}
  g711: {provider: echo, audio_format: ulaw}
"""


@pytest.fixture(scope="module")
def reporting_user(asterisk: AsteriskPeer) -> Iterator[str]:
    """An AMI user who may read what agi-voice needs but write only ``reporting``."""
    conf = asterisk.etc / "manager_doctor.conf"
    conf.write_text(f"[{REPORTING_USER}]\nsecret = {REPORTING_SECRET}\n"
                    "deny = 0.0.0.0/0.0.0.0\npermit = 127.0.0.1/255.255.255.255\n"
                    "read = call,dtmf,dialplan,user,system\nwrite = reporting\n")
    with open(asterisk.etc / "manager.conf", "a") as f:
        f.write(f'\n#include "{conf}"\n')
    asterisk.cli("manager reload")
    assert "write perm: reporting" in asterisk.cli(f"manager show user {REPORTING_USER}")
    yield REPORTING_USER


def doctor(asterisk: AsteriskPeer, user: str, secret: str) -> list[Check]:
    env = {"AMI_PORT": str(asterisk.ami_port), "AMI_USERNAME": user, "AMI_SECRET": secret}
    cfg = parse_config(CONFIG, "doctor.yaml", env=env)
    return asyncio.run(run_doctor(cfg, env=env, action_timeout=5.0))


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def fails(checks: list[Check]) -> list[str]:
    return [c.line() for c in checks if c.status == "FAIL"]


def test_doctor_passes_with_the_full_user(asterisk: AsteriskPeer) -> None:
    checks = doctor(asterisk, asterisk.user, asterisk.secret)
    assert fails(checks) == []
    c = by_name(checks)
    assert c["AMI reachable"].detail.endswith("answers as AMI 11.0.0 (Asterisk 22)")
    assert c["AMI write classes"].status == "OK"
    assert c["AMI read classes"].status == "OK"  # read through 'manager show user'
    assert c["Asterisk version"].detail == "22.10.1 (AMI 11.0.0)"
    for module in ("res_agi", "res_audiosocket", "app_audiosocket", "chan_audiosocket"):
        assert c[f"module {module}"].detail.startswith("loaded"), c[f"module {module}"]
    assert c["keypad over AudioSocket"].status == "OK"


def test_doctor_reports_a_missing_write_class_with_its_fix(
        asterisk: AsteriskPeer, reporting_user: str) -> None:
    checks = doctor(asterisk, reporting_user, REPORTING_SECRET)
    c = by_name(checks)
    write = c["AMI write classes"]
    assert write.status == "FAIL"
    assert write.detail.startswith("Redirect, Setvar, Hangup refused (Permission denied)")
    assert f"under [{reporting_user}] set write = call,reporting" in write.fix
    assert fails(checks) == [write.line()]
    # what such a user can still learn: the version (CoreSettings: reporting)
    assert c["Asterisk version"].detail == "22.10.1 (AMI 11.0.0)"
    assert c["Asterisk modules"].status == "WARN"  # ModuleCheck needs system
    assert "FullyBooted arrived" in c["AMI read classes"].detail


def test_doctor_reports_a_missing_module_with_its_fix(asterisk: AsteriskPeer) -> None:
    assert "Unloaded app_audiosocket.so" in asterisk.cli("module unload app_audiosocket.so")
    try:
        checks = doctor(asterisk, asterisk.user, asterisk.secret)
    finally:
        assert "Loaded app_audiosocket.so" in asterisk.cli("module load app_audiosocket.so")
    app = by_name(checks)["module app_audiosocket"]
    assert app.status == "FAIL" and "needed for desk" in app.detail
    assert app.fix.startswith("asterisk -rx 'module load app_audiosocket.so'")
    assert fails(checks) == [app.line()]
