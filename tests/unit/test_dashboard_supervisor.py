"""``serve`` runs the dashboard as a child process whose failure never touches the planes
(on the stand-in planes of test_supervisor.py, which speak the status pipe)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal

from fastagi_server import supervisor as sv
from media_sidecar.config.loader import load_config
from media_sidecar.config.schema import DashboardConfig, Listen
from tests.unit.test_supervisor import lines, make, printed, run

CFG = load_config()


def test_serve_runs_the_dashboard_when_it_is_enabled():
    sup = sv.Supervisor(CFG, "/etc/agi-voice.yaml")
    assert sup.planes["dashboard"].argv[1:] == ["-m", "fastagi_server.cli", "dashboard",
                                                "--config", "/etc/agi-voice.yaml"]
    for off in (DashboardConfig(enabled=False), DashboardConfig(listen=Listen("127.0.0.1", 0))):
        assert "dashboard" not in sv.Supervisor(dataclasses.replace(CFG, dashboard=off),
                                                None).planes


def test_a_dashboard_that_cannot_start_is_left_off_and_serve_runs_on(tmp_path, capsys, caplog):
    sup, log = make(tmp_path, {"sidecar": "normal", "fastagi": "normal", "dashboard": "fatal"})

    gone = asyncio.Event()
    on_exit = sup._on_exit

    def exited(plane: sv.Plane, code: int) -> None:
        on_exit(plane, code)
        if plane.role == "dashboard":
            gone.set()

    sup._on_exit = exited  # type: ignore[method-assign]

    async def scenario() -> int:
        task = asyncio.create_task(sup.run())
        await sup.said_("sidecar", "ready")
        await sup.said_("fastagi", "ready")
        await gone.wait()  # its fatal line, then its exit: serve goes on
        assert not sup.stopping
        os.kill(os.getpid(), signal.SIGTERM)
        return await task

    with caplog.at_level(logging.ERROR, "agi_voice.serve"):
        assert run(scenario()) == 0  # a drain, not a failed start
    assert printed(capsys) == []
    assert any(r.message.startswith("dashboard off: cannot listen") for r in caplog.records)
    got = lines(log)
    assert got.count("dashboard start") == 1  # not retried
    assert got.count("sidecar start") == 1 and got.count("fastagi start") == 1
    assert "sidecar TERM" in got and "fastagi TERM" in got


def test_a_dashboard_that_dies_is_restarted_alone(tmp_path):
    sup, log = make(tmp_path, {"sidecar": "normal", "fastagi": "normal",
                               "dashboard": "crash-once"})

    async def scenario() -> int:
        task = asyncio.create_task(sup.run())
        await sup.said_("dashboard", "ready", 2)  # restarted after its crash (0.5 s backoff)
        await sup.said_("sidecar", "ready")
        await sup.said_("fastagi", "ready")
        os.kill(os.getpid(), signal.SIGTERM)
        return await task

    assert run(scenario()) == 0
    got = lines(log)
    assert (got.count("dashboard start"), got.count("sidecar start"),
            got.count("fastagi start")) == (2, 1, 1)
    assert "dashboard TERM" in got
