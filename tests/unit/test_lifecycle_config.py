"""The pieces of start and stop that need no process: the ``drain`` and ``service`` config
sections, what a reload keeps, the status-pipe lines, start-up errors as one line, the drain
refusal in the registry and its metric label, and ``--version``."""

from __future__ import annotations

import dataclasses
import errno
import os

import pytest

from fastagi_server import __version__
from fastagi_server.cli import build_parser
from media_sidecar.config.loader import ConfigError, load_config, parse_config
from media_sidecar.config.reload import RESTART_ONLY, for_reload
from media_sidecar.config.schema import Listen
from media_sidecar.ops.metrics import refusal_class
from media_sidecar.ops.status import (
    StartupError,
    StatusPipe,
    find_startup_error,
    listen_error,
    parse_status,
)
from media_sidecar.protocol import control as c
from media_sidecar.server.registry import CallRegistry

BASE = "assistants: {a: {provider: local}}\n"


def test_the_embedded_config_drains_for_30_seconds_with_an_announcement():
    cfg = load_config()
    assert cfg.drain.deadline_seconds == 30
    assert cfg.drain.announcement.startswith("I'm sorry")
    assert cfg.service.runtime_dir == ""


@pytest.mark.parametrize(("yaml", "path", "expected"), [
    ("drain: {deadline_seconds: -1}", "drain.deadline_seconds", "expected seconds 0..3600"),
    ("drain: {deadline_seconds: soon}", "drain.deadline_seconds", "expected a number"),
    ("drain: {announcement: " + "x" * 501 + "}", "drain.announcement", "at most 500"),
    ("drain: {deadline: 30}", "drain.deadline", "unknown key"),
    ("service: {runtime_dir: run/agi-voice}", "service.runtime_dir", "absolute directory"),
])
def test_drain_and_service_errors_name_the_key(yaml, path, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + yaml + "\n", "f.yaml")
    assert err.value.path == path
    assert expected in str(err.value)


def test_a_reload_keeps_what_needs_a_restart_and_says_which_changed():
    running = load_config(env={})
    new = parse_config(BASE + "fastagi: {listen: {port: 5000}}\n"
                       "drain: {deadline_seconds: 10}\n", "new.yaml", env={})
    effective, changed = for_reload(running, new)
    assert effective.fastagi.listen == running.fastagi.listen == Listen("127.0.0.1", 4573)
    assert effective.assistants == new.assistants  # what a reload is for
    assert effective.drain.deadline_seconds == 10
    assert effective.source == "new.yaml"
    assert changed == ["fastagi.listen"]
    assert set(changed) <= set(RESTART_ONLY)
    same, nothing = for_reload(running, running)
    assert same == running and nothing == []


def test_status_lines_round_trip_and_stay_one_line():
    read_fd, write_fd = os.pipe()
    pipe = StatusPipe(write_fd)
    pipe.ready()
    pipe.fatal("sidecar", "cannot listen\non 127.0.0.1:9092\n")
    pipe.reloaded(False, "bad")
    pipe.reloaded(True)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        got = [parse_status(line) for line in f]
    assert got == [("ready", ""), ("fatal", "cannot listen on 127.0.0.1:9092"),
                   ("reload-failed", "bad"), ("reloaded", "")]
    assert parse_status(b"INFO something logged\n") is None


def test_a_plane_alone_prints_its_fatal_line_itself(capsys):
    StatusPipe(None).fatal("fastagi", "cannot listen on 127.0.0.1:4573 for FastAGI: "
                                      "address already in use")
    assert capsys.readouterr().err == ("agi-voice fastagi: cannot listen on 127.0.0.1:4573 "
                                       "for FastAGI: address already in use\n")


def test_startup_errors_are_found_inside_exception_groups():
    err = listen_error("AudioSocket", "127.0.0.1", 9092, OSError(errno.EADDRINUSE, "in use"))
    assert str(err) == "cannot listen on 127.0.0.1:9092 for AudioSocket: address already in use"
    nested = ExceptionGroup("outer", [ValueError("x"), ExceptionGroup("inner", [err])])
    assert find_startup_error(nested) is err
    assert find_startup_error(ExceptionGroup("g", [ValueError("x")])) is None
    assert str(listen_error("FastAGI", "10.9.9.9", 1, OSError(errno.EADDRNOTAVAIL,
                                                                "Cannot assign requested address"))
               ) == "cannot listen on 10.9.9.9:1 for FastAGI: Cannot assign requested address"
    assert isinstance(err, StartupError)


async def test_a_draining_registry_refuses_offers_with_reason_draining():
    cfg = load_config()
    registry = CallRegistry(cfg)
    registry.draining = True
    reply = registry.offer(c.Offer(uuid="u1", assistant="receptionist", context=c.CallContext()))
    assert reply == c.Refuse(uuid="u1", reason=c.DRAINING)
    assert refusal_class(reply.reason, False) == "draining"


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"agi-voice {__version__}\n"


def test_the_planes_take_a_status_fd_that_help_does_not_show(capsys):
    args = build_parser().parse_args(["sidecar", "--status-fd", "7"])
    assert args.status_fd == 7
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sidecar", "--help"])
    assert "status-fd" not in capsys.readouterr().out


def test_drain_config_is_frozen():
    cfg = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.drain.deadline_seconds = 1  # type: ignore[misc]


def test_the_unit_reloads_through_agi_voice_reload_and_has_a_runtime_directory():
    from tests.unit.test_deploy import UNIT, parse_unit

    svc = parse_unit(UNIT)["Service"]
    (reload,) = svc["ExecReload"]
    assert reload.split()[1:] == ["reload", "--config", "/etc/agi-voice/agi-voice.yaml",
                                  "--pid", "$MAINPID"]
    assert reload.split()[0] == svc["ExecStart"][0].split()[0]
    assert svc["RuntimeDirectory"] == ["agi-voice"]
    deployed = load_config(UNIT.parents[1] / "agi-voice.yaml", env={})
    assert deployed.service.runtime_dir == "/run/agi-voice"
    # serve kills what is left before systemd's TimeoutStopSec would
    from fastagi_server.supervisor import FASTAGI_LAST_SECONDS, STOP_MARGIN_SECONDS

    stop = float(svc["TimeoutStopSec"][0])
    assert deployed.drain.deadline_seconds + STOP_MARGIN_SECONDS + FASTAGI_LAST_SECONDS < stop
