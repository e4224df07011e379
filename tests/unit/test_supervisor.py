"""``agi-voice serve``'s supervisor with stand-in planes: small Python processes that speak the
status-pipe protocol (media_sidecar.ops.status) and note every signal they get in a log file.

What is checked: a plane that cannot start makes serve exit 1 with that plane's one line and
stops the other plane; a plane that dies after it was ready is restarted; a stop sends SIGTERM
to both and exits 0 once both have drained; a second stop signal is forwarded at once; what is
left at the stop deadline is killed (exit 1); a reload validates the file first and goes to the
media plane, then, only once it answered ``reloaded``, to FastAGI; the pid file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
from pathlib import Path

import pytest

from fastagi_server import supervisor as sv
from media_sidecar.config.loader import load_config
from media_sidecar.config.schema import Config, DrainConfig, ServiceConfig

PLANE = r'''
import os, signal, sys, time
role, mode, log = sys.argv[1], sys.argv[2], sys.argv[3]
fd = int(sys.argv[sys.argv.index("--status-fd") + 1])

def note(what):
    with open(log, "a") as f:
        f.write(f"{role} {what}\n")

def say(line):
    os.write(fd, (line + "\n").encode())

with open(log, "a+") as f:
    f.seek(0)
    starts = sum(1 for ln in f if ln == f"{role} start\n")
note("start")
if mode == "fatal":
    say("fatal cannot listen on 127.0.0.1:9 for AudioSocket: address already in use")
    sys.exit(1)
if mode == "exit3":
    sys.exit(3)

def on_term(signum, frame):
    note("TERM")
    if mode != "stubborn":
        sys.exit(0)

def on_hup(signum, frame):
    note("HUP")
    say("reload-failed assistant x cannot take calls: no voice" if mode == "reload-fails"
        else "reloaded")

signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGHUP, on_hup)
say("ready")
if mode == "crash-once" and starts == 0:
    sys.exit(1)
while True:
    signal.pause()
'''


class Observed(sv.Supervisor):
    """The supervisor, with a way for a test to wait for what the planes said."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.said: list[tuple[str, str]] = []
        self._waiters: list[tuple[str, str, asyncio.Future[None]]] = []

    def _on_status(self, plane: sv.Plane, line: str) -> None:
        super()._on_status(plane, line)
        self.said.append((plane.role, line))
        for role, kind, fut in self._waiters:
            if role == plane.role and line.split(" ")[0] == kind and not fut.done():
                fut.set_result(None)

    async def said_(self, role: str, kind: str, nth: int = 1) -> None:
        """Until ``role`` has said ``kind`` ``nth`` times."""
        while sum(1 for r, ln in self.said if r == role and ln.split(" ")[0] == kind) < nth:
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append((role, kind, fut))
            await fut


def make(tmp_path: Path, modes: dict[str, str], cfg: Config | None = None,
         config_path: str | None = None) -> tuple[Observed, Path]:
    script = tmp_path / "plane.py"
    script.write_text(PLANE)
    log = tmp_path / "planes.log"
    argv = {role: [sys.executable, str(script), role, mode, str(log)]
            for role, mode in modes.items()}
    cfg = cfg or dataclasses.replace(load_config(), drain=DrainConfig(deadline_seconds=5))
    return Observed(cfg, config_path, argv=argv, pid_path=tmp_path / "serve.pid"), log


def lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def printed(capsys) -> list[str]:
    """What serve printed itself on stderr (not log lines, which another test may have
    routed to stderr too)."""
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("agi-voice")]


def run(coro):  # the supervisor installs signal handlers: the main thread's own loop
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_a_plane_that_cannot_start_makes_serve_exit_1_with_its_one_line(tmp_path, capsys):
    sup, log = make(tmp_path, {"sidecar": "fatal", "fastagi": "normal"})
    assert run(sup.run()) == 1
    assert printed(capsys) == ["agi-voice: sidecar: cannot listen on 127.0.0.1:9 for "
                               "AudioSocket: address already in use"]
    # not restarted; the other plane was stopped (perhaps before it got to note its start)
    assert lines(log).count("sidecar start") == 1
    assert lines(log).count("fastagi start") <= 1
    assert not (tmp_path / "serve.pid").exists()


def test_a_plane_that_dies_before_ready_without_a_line_is_named_with_its_status(
        tmp_path, capsys):
    sup, log = make(tmp_path, {"sidecar": "normal", "fastagi": "exit3"})
    assert run(sup.run()) == 1
    assert printed(capsys) == ["agi-voice: fastagi: exited with status 3 before it was ready"]
    assert lines(log).count("fastagi start") == 1  # not restarted


def test_a_plane_that_dies_after_ready_is_restarted_and_a_stop_drains_both(tmp_path, capsys):
    sup, log = make(tmp_path, {"sidecar": "crash-once", "fastagi": "normal"})

    async def scenario() -> int:
        task = asyncio.create_task(sup.run())
        await sup.said_("sidecar", "ready", 2)  # restarted after its crash (0.5 s backoff)
        await sup.said_("fastagi", "ready")
        assert (tmp_path / "serve.pid").read_text() == f"{os.getpid()}\n"
        os.kill(os.getpid(), signal.SIGTERM)
        return await task

    assert run(scenario()) == 0
    assert printed(capsys) == []
    got = lines(log)
    assert got.count("sidecar start") == 2 and got.count("fastagi start") == 1
    assert got.count("sidecar TERM") == 1 and got.count("fastagi TERM") == 1
    assert not (tmp_path / "serve.pid").exists()


def test_what_is_left_at_the_stop_deadline_is_killed_media_plane_first(
        tmp_path, monkeypatch):
    monkeypatch.setattr(sv, "STOP_MARGIN_SECONDS", 0.3)
    monkeypatch.setattr(sv, "FASTAGI_LAST_SECONDS", 0.3)
    cfg = dataclasses.replace(load_config(), drain=DrainConfig(deadline_seconds=0))
    sup, log = make(tmp_path, {"sidecar": "stubborn", "fastagi": "stubborn"}, cfg)
    exits: list[tuple[str, float]] = []
    original = sup._on_exit

    def on_exit(plane: sv.Plane, code: int) -> None:
        exits.append((plane.role, code))
        original(plane, code)

    sup._on_exit = on_exit  # type: ignore[method-assign]

    async def scenario() -> int:
        task = asyncio.create_task(sup.run())
        await sup.said_("sidecar", "ready")
        await sup.said_("fastagi", "ready")
        sup.events.put_nowait(sv._Event("stop"))
        return await task

    assert run(scenario()) == 1  # a plane had to be killed
    assert exits == [("sidecar", -signal.SIGKILL), ("fastagi", -signal.SIGKILL)]
    assert lines(log).count("sidecar TERM") == 1


def test_a_second_stop_signal_is_forwarded_at_once(tmp_path, monkeypatch):
    sup, log = make(tmp_path, {"sidecar": "stubborn", "fastagi": "normal"})
    sent: list[tuple[str, int]] = []
    signal_plane = sv.Supervisor._signal

    def record(plane: sv.Plane, signum: int) -> None:
        sent.append((plane.role, signum))
        signal_plane(plane, signum)

    monkeypatch.setattr(sv.Supervisor, "_signal", staticmethod(record))

    async def scenario() -> int:
        task = asyncio.create_task(sup.run())
        await sup.said_("sidecar", "ready")
        await sup.said_("fastagi", "ready")
        for ev in (sv._Event("stop"), sv._Event("stop"), sv._Event("kill", "sidecar")):
            sup.events.put_nowait(ev)  # handled in this order
        return await task

    assert run(scenario()) == 1  # the stubborn plane had to be killed
    assert [s for s in sent if s[0] == "sidecar"] == [
        ("sidecar", signal.SIGTERM), ("sidecar", signal.SIGTERM), ("sidecar", signal.SIGKILL)]


def test_reload_goes_to_the_media_plane_first_then_to_fastagi(tmp_path):
    sup, log = make(tmp_path, {"sidecar": "normal", "fastagi": "normal"})

    async def scenario() -> int:
        task = asyncio.create_task(sup.run())
        await sup.said_("sidecar", "ready")
        await sup.said_("fastagi", "ready")
        os.kill(os.getpid(), signal.SIGHUP)
        await sup.said_("fastagi", "reloaded")
        sup.events.put_nowait(sv._Event("stop"))
        return await task

    assert run(scenario()) == 0
    assert sup.said.index(("sidecar", "reloaded")) < sup.said.index(("fastagi", "reloaded"))
    got = [ln for ln in lines(log) if "HUP" in ln or "reload" in ln]
    assert got == ["sidecar HUP", "fastagi HUP"]


def test_a_media_plane_that_refuses_the_reload_leaves_fastagi_on_the_old_config(
        tmp_path, caplog):
    sup, log = make(tmp_path, {"sidecar": "reload-fails", "fastagi": "normal"})

    async def scenario() -> int:
        task = asyncio.create_task(sup.run())
        await sup.said_("sidecar", "ready")
        await sup.said_("fastagi", "ready")
        sup.events.put_nowait(sv._Event("reload"))
        await sup.said_("sidecar", "reload-failed")
        sup.events.put_nowait(sv._Event("stop"))
        return await task

    assert run(scenario()) == 0
    assert "fastagi HUP" not in lines(log)
    assert ("sidecar refused the new config (assistant x cannot take calls: no voice); "
            "FastAGI keeps its config too") in caplog.text


def test_an_invalid_config_is_refused_before_any_plane_hears_of_it(tmp_path, caplog):
    path = tmp_path / "agi-voice.yaml"
    path.write_text("assistants: {a: {provider: local}}\n")
    sup, log = make(tmp_path, {"sidecar": "normal", "fastagi": "normal"},
                    config_path=str(path))

    async def scenario() -> int:
        task = asyncio.create_task(sup.run())
        await sup.said_("sidecar", "ready")
        await sup.said_("fastagi", "ready")
        path.write_text("assistants: {a: {provider: nosuch}}\n")
        sup.events.put_nowait(sv._Event("reload"))
        sup.events.put_nowait(sv._Event("stop"))  # handled after the reload, in order
        return await task

    assert run(scenario()) == 0
    assert not [ln for ln in lines(log) if "HUP" in ln]
    assert (f"config reload refused: {path}: assistants.a.provider: unknown provider "
            "'nosuch'") in caplog.text


def test_the_pid_file_is_named_after_the_fastagi_port_in_the_runtime_dir(tmp_path):
    cfg = load_config()
    assert sv.pid_file(cfg, env={"RUNTIME_DIRECTORY": "/run/agi-voice"}) == Path(
        "/run/agi-voice/agi-voice-4573.pid")
    assert sv.pid_file(cfg, env={"XDG_RUNTIME_DIR": "/run/user/1000"}) == Path(
        "/run/user/1000/agi-voice-4573.pid")
    own = dataclasses.replace(cfg, service=ServiceConfig(runtime_dir=str(tmp_path)))
    assert sv.pid_file(own, env={"RUNTIME_DIRECTORY": "/run/x"}) == tmp_path / \
        "agi-voice-4573.pid"


@pytest.mark.parametrize("role", ["sidecar", "fastagi"])
def test_plane_command_lines(role):
    argv = sv.plane_argv(role, "/etc/agi-voice/agi-voice.yaml", verbose=True)
    assert argv[1:] == ["-m", "fastagi_server.cli", "-v", role, "--config",
                        "/etc/agi-voice/agi-voice.yaml"]
