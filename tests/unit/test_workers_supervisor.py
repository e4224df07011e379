"""``agi-voice serve``'s supervisor with several media workers, on the stand-in planes of
test_supervisor.py (small processes that speak the status pipe and note every signal).

What is checked: each worker is its own plane with its own command line (``--worker I``);
one that dies after it was ready is restarted alone while the others run on; a reload goes to
every worker and to FastAGI only once all of them said ``reloaded``; one worker's refusal
keeps FastAGI on its config; at the stop deadline every worker is killed before FastAGI;
pinning puts worker I on the I-th CPU of serve's own set.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal

import pytest

from fastagi_server import supervisor as sv
from media_sidecar.config.loader import load_config
from media_sidecar.config.schema import DrainConfig
from media_sidecar.config.workers import worker_count
from tests.unit.test_supervisor import lines, make, run

CFG = load_config()


def with_workers(n: int, **sidecar) -> object:
    return dataclasses.replace(CFG, sidecar=dataclasses.replace(CFG.sidecar, workers=n,
                                                                **sidecar),
                               drain=DrainConfig(deadline_seconds=5))


def test_serve_runs_one_plane_per_worker_each_with_its_worker_index():
    cfg = with_workers(3)
    assert sv.plane_roles(cfg) == ["sidecar-0", "sidecar-1", "sidecar-2", "fastagi"]
    argv = sv.plane_argv("sidecar-2", "/etc/agi-voice.yaml", verbose=False)
    assert argv[1:] == ["-m", "fastagi_server.cli", "sidecar", "--config",
                        "/etc/agi-voice.yaml", "--worker", "2"]
    assert sv.plane_argv("fastagi", None, verbose=False)[1:] == ["-m", "fastagi_server.cli",
                                                                 "fastagi"]
    # the default: one worker per CPU this process may run on
    default = sv.Supervisor(CFG, None)
    assert [r for r in default.planes if r.startswith("sidecar-")] == [
        f"sidecar-{i}" for i in range(len(os.sched_getaffinity(0)))]
    assert worker_count(CFG) == len(os.sched_getaffinity(0))


def test_a_dead_worker_is_restarted_alone_and_the_others_run_on(tmp_path):
    sup, log = make(tmp_path, {"sidecar-0": "normal", "sidecar-1": "crash-once",
                               "fastagi": "normal"}, with_workers(2))

    async def scenario() -> int:
        task = asyncio.create_task(sup.run())
        await sup.said_("sidecar-1", "ready", 2)  # restarted after its crash
        await sup.said_("sidecar-0", "ready")
        await sup.said_("fastagi", "ready")
        os.kill(os.getpid(), signal.SIGTERM)
        return await task

    assert run(scenario()) == 0
    got = lines(log)
    assert (got.count("sidecar-0 start"), got.count("sidecar-1 start"),
            got.count("fastagi start")) == (1, 2, 1)
    assert {"sidecar-0 TERM", "sidecar-1 TERM", "fastagi TERM"} <= set(got)


def test_reload_goes_to_every_worker_and_to_fastagi_once_all_said_reloaded(tmp_path):
    sup, log = make(tmp_path, {"sidecar-0": "normal", "sidecar-1": "normal",
                               "fastagi": "normal"}, with_workers(2))

    async def scenario() -> int:
        task = asyncio.create_task(sup.run())
        for role in ("sidecar-0", "sidecar-1", "fastagi"):
            await sup.said_(role, "ready")
        sup.events.put_nowait(sv._Event("reload"))
        await sup.said_("fastagi", "reloaded")
        sup.events.put_nowait(sv._Event("stop"))
        return await task

    assert run(scenario()) == 0
    fastagi_at = sup.said.index(("fastagi", "reloaded"))
    assert sup.said.index(("sidecar-0", "reloaded")) < fastagi_at
    assert sup.said.index(("sidecar-1", "reloaded")) < fastagi_at
    hups = [ln for ln in lines(log) if "HUP" in ln]
    assert sorted(hups[:2]) == ["sidecar-0 HUP", "sidecar-1 HUP"] and hups[2:] == ["fastagi HUP"]


def test_one_worker_refusing_the_reload_keeps_fastagi_on_its_config(tmp_path, caplog):
    sup, log = make(tmp_path, {"sidecar-0": "normal", "sidecar-1": "reload-fails",
                               "fastagi": "normal"}, with_workers(2))

    async def scenario() -> int:
        task = asyncio.create_task(sup.run())
        for role in ("sidecar-0", "sidecar-1", "fastagi"):
            await sup.said_(role, "ready")
        sup.events.put_nowait(sv._Event("reload"))
        await sup.said_("sidecar-1", "reload-failed")
        await sup.said_("sidecar-0", "reloaded")
        sup.events.put_nowait(sv._Event("stop"))
        return await task

    assert run(scenario()) == 0
    assert "fastagi HUP" not in lines(log)
    assert "sidecar-1 refused the new config (assistant x cannot take calls: no voice); " \
           "FastAGI keeps its config too" in caplog.text
    assert "config reloaded by both planes" not in caplog.text


def test_at_the_stop_deadline_every_worker_is_killed_before_fastagi(tmp_path, monkeypatch):
    monkeypatch.setattr(sv, "STOP_MARGIN_SECONDS", 0.3)
    monkeypatch.setattr(sv, "FASTAGI_LAST_SECONDS", 0.5)
    cfg = dataclasses.replace(with_workers(2), drain=DrainConfig(deadline_seconds=0))
    sup, _ = make(tmp_path, {"sidecar-0": "stubborn", "sidecar-1": "stubborn",
                             "fastagi": "stubborn"}, cfg)
    exits: list[str] = []
    original = sup._on_exit

    def on_exit(plane: sv.Plane, code: int) -> None:
        exits.append(plane.role)
        original(plane, code)

    sup._on_exit = on_exit  # type: ignore[method-assign]

    async def scenario() -> int:
        task = asyncio.create_task(sup.run())
        for role in ("sidecar-0", "sidecar-1", "fastagi"):
            await sup.said_(role, "ready")
        sup.events.put_nowait(sv._Event("stop"))
        return await task

    assert run(scenario()) == 1
    assert sorted(exits[:2]) == ["sidecar-0", "sidecar-1"] and exits[2] == "fastagi"


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux CPU affinity")
def test_pinned_workers_each_run_on_one_cpu_of_serves_set(tmp_path):
    cpus = sorted(os.sched_getaffinity(0))
    sup, _ = make(tmp_path, {"sidecar-0": "normal", "sidecar-1": "normal",
                             "fastagi": "normal"}, with_workers(2, pin_workers=True))
    seen: dict[str, set[int]] = {}

    async def scenario() -> int:
        task = asyncio.create_task(sup.run())
        for role in ("sidecar-0", "sidecar-1", "fastagi"):
            await sup.said_(role, "ready")
        for role, plane in sup.planes.items():
            assert plane.proc is not None
            seen[role] = os.sched_getaffinity(plane.proc.pid)
        sup.events.put_nowait(sv._Event("stop"))
        return await task

    assert run(scenario()) == 0
    assert seen["sidecar-0"] == {cpus[0]}
    assert seen["sidecar-1"] == {cpus[1 % len(cpus)]}
    assert seen["fastagi"] == set(cpus)  # FastAGI is not pinned
