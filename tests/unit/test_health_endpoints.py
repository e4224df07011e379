"""The health listener over a real loopback socket: /live, /ready (and what flips it),
/health JSON, /metrics in the Prometheus text format, and HTTP edge cases."""

from __future__ import annotations

import dataclasses
import json
import logging

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from media_sidecar.config.loader import load_config
from media_sidecar.ops.metrics import MeteredRegistry, SidecarMetrics
from media_sidecar.protocol.control import Offer, Refuse, Stats
from media_sidecar.server.control_server import ControlHub
from media_sidecar.server.health import SidecarHealth, serve_health

CFG = load_config()
OFFER_UUID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


def started_health() -> tuple[SidecarHealth, SidecarMetrics, MeteredRegistry, ControlHub]:
    """A health state as a running sidecar leaves it: models loaded, listening, link up."""
    metrics = SidecarMetrics(process=False)
    health = SidecarHealth()
    metrics.health = health
    registry = MeteredRegistry(CFG, {}, metrics)
    hub = ControlHub(registry)
    health.registry, health.hub = registry, hub
    health.models_loaded = health.listening = True
    registry.set_link(True)
    return health, metrics, registry, hub


async def get(port: int, path: str, method: str = "GET") -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.request(method, f"http://127.0.0.1:{port}{path}")


async def test_live_ready_health_and_metrics(nursery):
    health, metrics, registry, hub = started_health()
    port = await nursery.start(serve_health, health, metrics, "127.0.0.1", 0)

    live = await get(port, "/live")
    assert (live.status_code, live.text) == (200, "live\n")
    ready = await get(port, "/ready")
    assert (ready.status_code, ready.text) == (200, "ready\n")

    hub.peer_stats = Stats(version="0.1.0", uptime=3.5, ami="up", ami_reconnects=2,
                           refused={"sidecar_unreachable": 4}, agi_connections=1)
    doc = (await get(port, "/health")).json()
    assert doc["ready"] is True and doc["not_ready"] == [] and doc["active_calls"] == 0
    assert doc["ami"] == "up" and doc["version"] == "0.1.0"
    assert doc["planes"]["media"]["state"] == "up"
    assert doc["planes"]["control"] == {"link": "up", "version": "0.1.0", "uptime_seconds": 3.5,
                                        "ami": "up", "ami_reconnects": 2, "agi_connections": 1,
                                        "draining": False}

    assert isinstance(registry.offer(Offer(uuid=OFFER_UUID, assistant="nope")), Refuse)
    resp = await get(port, "/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(resp.text) for s in fam.samples}
    assert samples[("agi_voice_ready", ())] == 1
    assert samples[("agi_voice_ami_up", ())] == 1
    assert samples[("agi_voice_ami_reconnects_total", ())] == 2
    assert samples[("agi_voice_offers_refused_total", (("reason", "unknown_assistant"),))] == 1
    assert samples[("agi_voice_offers_refused_total", (("reason", "sidecar_unreachable"),))] == 4
    assert samples[("agi_voice_calls_active", ())] == 0


async def test_ready_flips_with_the_media_plane_the_link_and_the_drain(nursery):
    health, metrics, registry, hub = started_health()
    port = await nursery.start(serve_health, health, metrics, "127.0.0.1", 0)

    async def ready() -> tuple[int, str]:
        r = await get(port, "/ready")
        return r.status_code, r.text

    assert await ready() == (200, "ready\n")
    health.set_draining()
    assert await ready() == (503, "draining\n")
    assert (await get(port, "/health")).json()["planes"]["media"]["state"] == "draining"
    assert (await get(port, "/live")).status_code == 200  # draining is alive
    health.set_draining(False)
    hub.peer_stats = Stats(draining=True)  # the control plane drains: not ready either
    assert await ready() == (503, "control plane draining\n")
    hub.peer_stats = Stats(ami="down")  # AMI down is degraded mode, still ready
    assert await ready() == (200, "ready\n")
    assert (await get(port, "/health")).json()["ami"] == "down"
    registry.set_link(False)
    assert await ready() == (503, "control link down\n")
    assert (await get(port, "/health")).json()["ami"] == "unknown"
    registry.set_link(True)
    health.listening = False
    assert await ready() == (503, "media plane not listening\n")
    health.listening = True
    registry.unavailable = {a.name: "no speech engines" for a in CFG.assistants}
    assert await ready() == (503, "no assistant can take calls\n")


async def test_not_ready_while_models_load():
    health = SidecarHealth()
    assert health.not_ready() == ["models loading", "media plane not listening",
                                  "control link down"]
    doc = health.snapshot()
    assert doc["ready"] is False and doc["planes"]["media"]["state"] == "starting"
    assert doc["ami"] == "unknown" and doc["active_calls"] == 0


async def test_http_edges(nursery):
    health, metrics, _, _ = started_health()
    port = await nursery.start(serve_health, health, metrics, "127.0.0.1", 0)
    assert (await get(port, "/nope")).status_code == 404
    assert (await get(port, "/live", "POST")).status_code == 405
    head = await get(port, "/ready", "HEAD")
    assert head.status_code == 200 and head.content == b""
    assert (await get(port, "/ready?verbose=1")).status_code == 200
    async with httpx.AsyncClient() as client:  # keep-alive: several requests, one connection
        for _ in range(3):
            assert (await client.get(f"http://127.0.0.1:{port}/live")).status_code == 200
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
    with trio.fail_after(5):
        reply = b""
        while chunk := await stream.receive_some(4096):
            reply += chunk
    await stream.aclose()
    assert reply.startswith(b"HTTP/1.1 400")
    assert (await get(port, "/live")).status_code == 200  # the listener is unaffected


async def test_a_busy_port_turns_the_listener_off_with_one_error(nursery, caplog):
    caplog.set_level(logging.ERROR, "agi_voice.health")
    taken = trio.socket.socket()
    await taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    health, metrics, _, _ = started_health()
    try:
        port = await nursery.start(serve_health, health, metrics, "127.0.0.1", busy)
    finally:
        taken.close()
    assert port == 0
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"health listener off: cannot listen on 127.0.0.1:{busy}")


def test_health_config_and_port_zero_turns_it_off():
    assert CFG.health.active and CFG.health.listen.port == 9094
    assert CFG.health.listen.host == "127.0.0.1"
    off = dataclasses.replace(CFG.health, listen=dataclasses.replace(CFG.health.listen, port=0))
    assert not off.active
    assert not dataclasses.replace(CFG.health, enabled=False).active


@pytest.mark.parametrize("body", [
    {"version": "x", "ami": 7, "refused": {"a": "lots"}, "ami_reconnects": "many"},
])
async def test_malformed_peer_stats_never_break_a_scrape(nursery, body):
    health, metrics, _, hub = started_health()
    hub.peer_stats = Stats(**body)
    port = await nursery.start(serve_health, health, metrics, "127.0.0.1", 0)
    resp = await get(port, "/metrics")
    assert resp.status_code == 200
    names = {f.name for f in text_string_to_metric_families(resp.text)}
    assert {"agi_voice_ami_up", "agi_voice_ami_reconnects", "agi_voice_offers_refused"} <= names
    assert json.loads((await get(port, "/health")).text)["ami"] == "unknown"
