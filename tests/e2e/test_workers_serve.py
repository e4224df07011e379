"""``agi-voice serve`` with two media workers, as an administrator runs it: the real command as
a child process, a YAML file with ``sidecar.workers: 2`` on free loopback ports, the echo
assistant (no models to load), calls from the Asterisk emulator over real sockets.

It starts both workers (each ready on its own health port: base and base + 10), serves a call
on each (the second call goes to the idle worker), loses only the call of a worker killed
mid-call (that call gets ``AI_STATUS=FAILED`` with a reason, the other completes, the worker is
restarted and serves again), reloads every worker before FastAGI, and drains with exit 0.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from fastagi_server.emulator.call import CallResult, run_call
from fastagi_server.emulator.caller import CallerScript
from fastagi_server.emulator.channel import ChannelSpec
from tests.e2e.serve import Serve, serve_config

pytestmark = pytest.mark.e2e
_IDS = itertools.count(1)

STEP = 10


def _free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def two_worker_config(workdir: Path) -> dict[str, Any]:
    """The echo assistant on two workers; every port of both is free now."""
    while True:
        cfg = serve_config(workdir, {"echo": {"provider": "echo"}},
                           drain={"deadline_seconds": 5})
        cfg["sidecar"].update(workers=2, worker_port_step=STEP)
        bases = [cfg["sidecar"]["audiosocket"]["port"], cfg["sidecar"]["control"]["port"],
                 cfg["health"]["listen"]["port"]]
        ports = [p + i * STEP for p in bases for i in (0, 1)] + [cfg["fastagi"]["listen"]["port"]]
        if len(set(ports)) == len(ports) and max(ports) < 65536 and all(map(_free, ports[1::2])):
            return cfg


@asynccontextmanager
async def running(workdir: Path) -> AsyncIterator[Serve]:
    serve = Serve(workdir, two_worker_config(workdir))
    serve.start()
    try:
        yield serve
    finally:
        serve.kill()
        for line in serve.lines:  # the harness knows the planes of one sidecar only
            if "started sidecar-" in line and "(pid " in line:
                pid = int(line.rsplit("(pid ", 1)[1].split(")")[0])
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


async def call(serve: Serve, name: str, hangup_at: float) -> CallResult:
    spec = ChannelSpec(script="agent", dnid="7000", channel=f"PJSIP/{name}-1",
                       uniqueid=f"1795267856.{next(_IDS)}")
    with trio.fail_after(40):
        return await run_call("127.0.0.1", serve.agi_port, spec,
                              CallerScript().hangup(at=hangup_at))


async def health(serve: Serve, worker: int) -> dict[str, Any]:
    port = serve.health_port + worker * STEP
    async with httpx.AsyncClient() as client:
        return json.loads((await client.get(f"http://127.0.0.1:{port}/health",
                                            timeout=5)).text)


async def until_active(serve: Serve, worker: int, n: int) -> None:
    with trio.fail_after(10):
        while True:
            if (await health(serve, worker))["active_calls"] == n:
                return
            await trio.sleep(0.05)


async def until_ready(serve: Serve, worker: int) -> None:
    """Until the worker's own ``/ready`` answers 200 (as a probe of that worker sees it)."""
    port = serve.health_port + worker * STEP
    with trio.fail_after(30):
        while True:
            try:
                async with httpx.AsyncClient() as client:
                    got = await client.get(f"http://127.0.0.1:{port}/ready", timeout=5)
                if got.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.05)


async def placed_on(serve: Serve, name: str) -> str:
    """The worker of a call, from FastAGI's last line about it (written once its AGI is done
    and the disposition known: after the emulator's end of the call)."""
    line = await serve.line(f"AGI 'PJSIP/{name}-1' ")
    return line.rsplit("(media worker ", 1)[1].rstrip(")") if "(media worker " in line else ""


def worker_pid(serve: Serve, worker: int) -> int:
    line = [ln for ln in serve.lines if f"started sidecar-{worker} (pid " in ln][-1]
    return int(line.rsplit("(pid ", 1)[1].split(")")[0])


async def test_serve_runs_two_workers_places_calls_on_both_survives_a_worker_reloads_drains(
        tmp_path):
    async with running(tmp_path) as serve:
        await serve.line("serving: both planes are ready (2 media workers)")
        for worker in (0, 1):  # each worker answers on its own health port
            await until_ready(serve, worker)
            assert (await health(serve, worker))["ready"] is True, worker

        results: dict[str, CallResult] = {}

        async def place(name: str, hangup_at: float) -> None:
            results[name] = await call(serve, name, hangup_at)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(place, "one", 6.0)
            await until_active(serve, 0, 1)
            nursery.start_soon(place, "two", 30.0)
            await until_active(serve, 1, 1)  # the idle worker got the second call
            mark = len(serve.lines)
            os.kill(worker_pid(serve, 1), signal.SIGKILL)
            await serve.line("sidecar-1 exited with status -9; restarting it", after=mark)
            await serve.line("started sidecar-1 (pid", after=mark)
        assert results["one"].variables["AI_STATUS"] == "CALLER_HANGUP"
        lost = results["two"].variables
        assert (lost["AI_STATUS"], lost["AI_REASON"]) == (
        "FAILED", "media worker 1 stopped during the call (its control link closed)")
        assert [await placed_on(serve, n) for n in ("one", "two")] == ["0", "1"]

        await until_ready(serve, 1)  # the restarted worker is back
        await serve.line("control link up from", nth=3)
        async with trio.open_nursery() as nursery:  # one call on each again
            nursery.start_soon(place, "three", 3.0)
            await until_active(serve, 0, 1)
            nursery.start_soon(place, "four", 1.0)
        assert [await placed_on(serve, n) for n in ("three", "four")] == ["0", "1"]
        assert results["four"].variables["AI_STATUS"] == "CALLER_HANGUP"

        mark = len(serve.lines)
        serve.signal(signal.SIGHUP)
        await serve.line("config reloaded by both planes", after=mark)
        reloaded = [ln for ln in serve.lines[mark:] if "config reloaded from" in ln]
        assert len(reloaded) == 3  # both workers and FastAGI

        serve.signal(signal.SIGTERM)
        assert await serve.wait() == 0
    assert not [ln for ln in serve.lines if "Traceback" in ln]
