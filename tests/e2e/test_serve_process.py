"""Start and stop of ``agi-voice serve`` as an administrator runs it: the real command as a
child process with a YAML file on free loopback ports, the real local models (Moonshine and
Piper: the ``local`` extra), calls from the Asterisk emulator over real sockets.

- a busy port: ``serve``, ``fastagi`` and ``sidecar`` exit non-zero with one line, no traceback;
- a call while the media plane loads its models fails at once; one after ``/ready`` is served;
- SIGTERM mid-call: a call that ends by itself within the deadline finishes, one still live at
  the deadline hears the announcement and goes to its fallback, a new call gets
  ``AI_REASON=draining``, ``/ready`` answers 503, every record is written, exit 0;
- SIGHUP: the next call has the new greeting while a live call keeps its old config; an
  invalid config is refused and the last good one goes on serving;
- ``--version``.
"""

from __future__ import annotations

import copy
import signal
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from fastagi_server import __version__
from fastagi_server.emulator.call import CallResult, run_call
from fastagi_server.emulator.caller import AgentQuiet, CallerScript
from fastagi_server.emulator.channel import ChannelSpec
from tests.e2e.serve import Serve, cli, serve_config

pytestmark = [pytest.mark.e2e, pytest.mark.local_models]
pytest.importorskip("piper")
pytest.importorskip("moonshine_voice")


def assistant(greeting: str, goodbye: str = "Goodbye!") -> dict[str, Any]:
    """The offline receptionist, short: a greeting, '#' hangs up, silence is waited out."""
    return {
        "provider": "local",
        "stt": {"engine": "moonshine", "model": "tiny-en"},
        "tts": {"engine": "piper", "voice": "joe-us"},
        "destinations": {"operator": {"context": "from-internal", "exten": "0"}},
        "fallback_destination": "operator",
        "brain": {
            "greeting": greeting,
            "dtmf": {"#": {"reply": goodbye, "action": {"kind": "hangup",
                                                         "reason": "caller pressed hash"}}},
            "no_input": {"after": 60},
        },
    }


@asynccontextmanager
async def running(workdir: Path, config: dict[str, Any]) -> AsyncIterator[Serve]:
    serve = Serve(workdir, config)
    serve.start()
    try:
        yield serve
    finally:
        serve.kill()


_CALLS = iter(range(1, 1000))


async def call(serve: Serve, script: CallerScript | None = None, *, seconds: float = 40.0,
               **spec: Any) -> CallResult:
    spec.setdefault("script", "agent")
    spec.setdefault("dnid", "7000")
    spec.setdefault("uniqueid", f"1795267856.{next(_CALLS)}")
    with trio.fail_after(seconds):
        return await run_call("127.0.0.1", serve.agi_port, ChannelSpec(**spec), script)


def hash_after_greeting(at: float | None = None) -> CallerScript:
    """Press '#' once the greeting is over (or at ``at`` s); hang up at 40 s at the latest."""
    when = AgentQuiet(400) if at is None else at
    return CallerScript().dtmf("#", at=when).hangup(at=40.0)


def by_channel(records: list[dict[str, Any]], channel: str) -> dict[str, Any]:
    (rec,) = [r for r in records if r.get("channel") == channel]
    return rec


def agent_said(rec: dict[str, Any]) -> list[str]:
    return [t["agent_text"] for t in rec["turns"]]


# -- start-up -------------------------------------------------------------------------------------


def test_version():
    done = cli("--version")
    assert (done.returncode, done.stdout) == (0, f"agi-voice {__version__}\n")


def test_a_busy_port_is_one_line_and_a_non_zero_exit_for_serve_fastagi_and_sidecar(tmp_path):
    config = serve_config(tmp_path, {"echo": {"provider": "echo"}})
    path = tmp_path / "agi-voice.yaml"
    Serve(tmp_path, config).write_config()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config["fastagi"]["listen"]["port"] = port
        config["sidecar"]["audiosocket"]["port"] = port
        Serve(tmp_path, config).write_config()
        outcomes = {command: cli(command, "--config", str(path))
                    for command in ("serve", "fastagi", "sidecar")}
    for command, done in outcomes.items():
        assert done.returncode != 0, command
        assert "Traceback" not in done.stderr, done.stderr
        errors = [ln for ln in done.stderr.splitlines() if f"127.0.0.1:{port}" in ln]
        assert len(errors) <= 2 and errors, (command, done.stderr)
    # serve's preflight names each listener on the port; each plane alone says it once
    assert f"FastAGI address 127.0.0.1:{port} is already in use" in outcomes["serve"].stderr
    assert outcomes["fastagi"].returncode == 1
    assert (f"agi-voice fastagi: cannot listen on 127.0.0.1:{port} for FastAGI: address "
            "already in use") in outcomes["fastagi"].stderr.splitlines()
    assert outcomes["sidecar"].returncode == 1
    assert (f"agi-voice sidecar: cannot listen on 127.0.0.1:{port} for AudioSocket: address "
            "already in use") in outcomes["sidecar"].stderr.splitlines()


async def test_a_call_during_start_up_fails_at_once_and_one_after_ready_is_served(tmp_path):
    config = serve_config(tmp_path, {"receptionist": assistant("Hello.")})
    async with running(tmp_path, config) as serve:
        # FastAGI listens within a second; the media plane needs a few to load its models
        await serve.line("fastagi ready")
        assert not [ln for ln in serve.lines if "sidecar ready" in ln]
        t0 = time.monotonic()
        early = await call(serve, CallerScript())
        assert time.monotonic() - t0 < 1.0
        assert early.variables["AI_STATUS"] == "FAILED"
        assert early.variables["AI_REASON"].startswith("media plane not ready: starting")
        assert not early.audiosocket  # never sent to AudioSocket

        await serve.ready()
        served = await call(serve, hash_after_greeting(), channel="PJSIP/after-ready-1")
        assert served.variables["AI_STATUS"] == "COMPLETED"
        serve.signal(signal.SIGTERM)
        assert await serve.wait() == 0
        rec = by_channel(serve.records(), "PJSIP/after-ready-1")
        assert agent_said(rec) == ["Hello.", "Goodbye!"]
        assert not [ln for ln in serve.lines if "Traceback" in ln]


# -- stop -----------------------------------------------------------------------------------------


async def test_sigterm_drains_calls_finish_or_go_to_their_fallback_and_new_ones_are_refused(
        tmp_path):
    deadline = 6.0
    config = serve_config(tmp_path, {"receptionist": assistant("Hello.")},
                          drain={"deadline_seconds": deadline,
                                 "announcement": "We are restarting. Passing you on."})
    async with running(tmp_path, config) as serve:
        await serve.ready()
        results: dict[str, CallResult] = {}

        async def place(name: str, script: CallerScript) -> None:
            results[name] = await call(serve, script, channel=f"PJSIP/{name}-1")

        async with trio.open_nursery() as nursery:
            # "finishes" presses '#' 3 s into the drain; "stays" is silent until hung up
            nursery.start_soon(place, "stays", CallerScript().hangup(at=40.0))
            nursery.start_soon(place, "finishes", hash_after_greeting(at=4.0))
            await serve.line("call started", nth=2)
            mark = len(serve.lines)
            serve.signal(signal.SIGTERM)
            t_term = time.monotonic()
            await serve.line("draining: new calls are refused", after=mark)
            refused = await call(serve, CallerScript(), channel="PJSIP/during-1")
            ready = await serve.get("/ready")
            assert ready.status_code == 503 and "draining" in ready.text
            nursery.start_soon(_refusal_counted, serve)
        assert await serve.wait() == 0
        took = time.monotonic() - t_term

    assert (refused.variables["AI_STATUS"], refused.variables["AI_REASON"]) == (
        "FAILED", "draining")
    assert results["finishes"].variables["AI_STATUS"] == "COMPLETED"
    stays = results["stays"].variables
    assert (stays["AI_STATUS"], stays["AI_TRANSFER_TO"], stays["AI_REASON"]) == (
        "TRANSFERRED", "operator", "draining")
    assert deadline < took < deadline + 15
    records = serve.records()
    finished = by_channel(records, "PJSIP/finishes-1")
    assert (finished["status"], agent_said(finished)) == ("COMPLETED", ["Hello.", "Goodbye!"])
    handed = by_channel(records, "PJSIP/stays-1")
    assert (handed["status"], handed["transfer_to"], handed["reason"]) == (
        "TRANSFERRED", "operator", "draining")
    assert [a["kind"] for a in handed["actions"]] == ["announcement", "transfer"]
    assert handed["outcome_confirmed"]  # the FastAGI side was still there for its outcome
    assert "PJSIP/during-1" not in {r.get("channel") for r in records}
    assert not [ln for ln in serve.lines if "Traceback" in ln]


async def _refusal_counted(serve: Serve) -> None:
    """/metrics counts the refused call by its reason (the control plane's next report)."""
    with trio.fail_after(5):
        while True:
            text = (await serve.get("/metrics")).text
            if 'agi_voice_offers_refused_total{reason="draining"} 1.0' in text:
                return
            await trio.sleep(0.1)


# -- reload ---------------------------------------------------------------------------------------


async def test_sighup_serves_new_calls_with_the_new_config_and_live_calls_keep_theirs(
        tmp_path):
    config = serve_config(tmp_path, {"receptionist": assistant("Hello from the old config.")})
    new = copy.deepcopy(config)
    new["assistants"]["receptionist"] = assistant("Welcome to the new config.",
                                                  goodbye="Bye from the new config.")
    async with running(tmp_path, config) as serve:
        await serve.ready()
        results: dict[str, CallResult] = {}

        async def place(name: str, script: CallerScript) -> None:
            results[name] = await call(serve, script, channel=f"PJSIP/{name}-1")

        async with trio.open_nursery() as nursery:
            # "live" presses '#' 12 s in: after the reload, under the config it started with
            nursery.start_soon(place, "live", hash_after_greeting(at=12.0))
            await serve.line("call started")
            mark = len(serve.lines)
            serve.write_config(new)
            serve.signal(signal.SIGHUP)
            await serve.line("config reloaded by both planes", after=mark)
            assert "live" not in results  # still in progress
            await place("next", hash_after_greeting())

        # an invalid config is refused; the last good one goes on serving
        mark = len(serve.lines)
        serve.write_config(text=serve.config_path.read_text().replace("provider: local",
                                                                      "provider: nosuch"))
        serve.signal(signal.SIGHUP)
        refused = await serve.line("config reload refused", after=mark)
        assert "assistants.receptionist.provider: unknown provider 'nosuch'" in refused
        await place("after-invalid", hash_after_greeting())
        serve.signal(signal.SIGTERM)
        assert await serve.wait() == 0

    for name in ("live", "next", "after-invalid"):
        assert results[name].variables["AI_STATUS"] == "COMPLETED", name
    records = serve.records()
    assert agent_said(by_channel(records, "PJSIP/live-1")) == [
        "Hello from the old config.", "Goodbye!"]
    for name in ("next", "after-invalid"):
        assert agent_said(by_channel(records, f"PJSIP/{name}-1")) == [
            "Welcome to the new config.", "Bye from the new config."]
    assert not [ln for ln in serve.lines if "Traceback" in ln]


async def test_agi_voice_reload_finds_serve_by_its_pid_file(tmp_path):
    config = serve_config(tmp_path, {"echo": {"provider": "echo"}})
    async with running(tmp_path, config) as serve:
        await serve.line("fastagi ready")
        pid_file = tmp_path / f"agi-voice-{serve.agi_port}.pid"
        assert pid_file.read_text().strip() == str(serve.proc.pid)  # type: ignore[union-attr]
        await serve.ready()
        mark = len(serve.lines)
        done = await trio.to_thread.run_sync(
            lambda: cli("reload", "--config", str(serve.config_path)))
        assert done.returncode == 0, done.stderr
        await serve.line("config reloaded by both planes", after=mark)
        # an invalid file: refused by the command itself, nothing sent
        serve.write_config(text="assistants: {echo: {provider: nosuch}}\n")
        bad = await trio.to_thread.run_sync(
            lambda: cli("reload", "--config", str(serve.config_path)))
        assert bad.returncode == 2 and "unknown provider 'nosuch'" in bad.stderr
        serve.signal(signal.SIGTERM)
        assert await serve.wait() == 0
    assert not pid_file.exists()
    serve.write_config()  # a valid file again: now only the serve is missing
    gone = cli("reload", "--config", str(serve.config_path), "--pid-file", str(pid_file))
    assert gone.returncode == 1 and "no running serve found" in gone.stderr
