"""Start-up and probe noise stays at DEBUG; real trouble still warns once. Also what the
control plane reports to the sidecar (``stats``)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import uuid as uuidlib

import pytest

from fastagi_server import control_client as cc
from fastagi_server.server import FastAgiServer
from fastagi_server.stats import snapshot
from media_sidecar.config.loader import load_config
from media_sidecar.config.schema import FastAgiConfig, Listen
from media_sidecar.protocol import control as c


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def no_transfer(req: c.TransferRequest) -> c.TransferResult:
    raise AssertionError("no transfer expected")


def run_client(seconds: float) -> cc.ControlClient:
    client = cc.ControlClient(f"ws://127.0.0.1:{closed_port()}/control", no_transfer,
                              backoff_min=0.02, backoff_max=0.05)

    async def main() -> None:
        task = asyncio.create_task(client.run())
        await asyncio.sleep(seconds)
        with pytest.raises(cc.ControlUnavailable):
            await client.offer(c.Offer(uuid=str(uuidlib.uuid4()), assistant="a"), 0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    return client


def test_a_link_not_up_yet_is_debug_then_one_warning(caplog, monkeypatch):
    caplog.set_level(logging.DEBUG, "agi_voice.control_client")
    client = run_client(0.3)
    records = [r for r in caplog.records if r.name == "agi_voice.control_client"]
    assert records and {r.levelno for r in records} == {logging.DEBUG}
    assert client.unanswered == {"sidecar_unreachable": 1}

    caplog.clear()
    monkeypatch.setattr(cc, "STILL_DOWN_WARNING_SECONDS", 0.1)
    run_client(0.5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "still down after" in warnings[0]


def test_a_tcp_probe_of_the_fastagi_port_is_not_a_warning(caplog):
    caplog.set_level(logging.DEBUG)
    base = load_config()
    cfg = dataclasses.replace(base, fastagi=FastAgiConfig(
        listen=Listen("127.0.0.1", 0), control_url=f"ws://127.0.0.1:{closed_port()}/control",
        env_timeout=0.5))
    server = FastAgiServer(cfg)

    async def main() -> None:
        task = asyncio.create_task(server.run())
        await asyncio.wait_for(server.ready.wait(), 10)
        assert server.port is not None
        for _ in range(3):  # connect and close, as a load balancer or a port check does
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.close()
            await writer.wait_closed()
        await asyncio.wait_for(server.wait_idle(), 5)
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    probes = [r for r in caplog.records if "dropped before a request" in r.getMessage()]
    assert len(probes) == 3 and {r.levelno for r in probes} == {logging.DEBUG}


def test_stats_snapshot_of_the_control_plane():
    base = load_config()
    server = FastAgiServer(base)
    server.control.unanswered["sidecar_timeout"] += 2
    server.active = 3
    stats = snapshot(server, started=0.0)
    assert (stats.ami, stats.ami_reconnects, stats.refused, stats.agi_connections,
            stats.draining) == ("off", 0, {"sidecar_timeout": 2}, 3, False)
    assert c.decode(c.encode(stats)) == stats  # it travels as a control message

    class Ami:
        connected = False
        logins = 4

    with_ami = FastAgiServer(dataclasses.replace(base, ami=dataclasses.replace(
        base.ami, host="127.0.0.1", username="u")))
    with_ami.ami = Ami()
    assert (snapshot(with_ami, 0.0).ami, snapshot(with_ami, 0.0).ami_reconnects) == ("down", 3)
