"""Health, metrics and logs with the whole product on loopback: the sidecar's listener, the
FastAGI server in its own thread reporting over the control link, the fake AMI, and a call
from the Asterisk emulator. /ready follows the control link and the drain; /metrics parses
with prometheus-client's own parser and its counters move with a call; nothing logs the AMI
secret even at DEBUG."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from fastagi_server.emulator.ami_server import FakeAmiServer
from fastagi_server.emulator.call import run_call
from fastagi_server.emulator.caller import CallerScript
from fastagi_server.emulator.channel import ChannelSpec
from media_sidecar.app import SidecarPorts, run_sidecar
from media_sidecar.config.loader import load_config
from media_sidecar.config.schema import Config, Listen
from media_sidecar.ops.logs import make_formatter, secret_values
from media_sidecar.server.health import SidecarHealth
from tests.e2e.stack import (
    AMI_SECRET,
    AMI_USER,
    CountingRecords,
    FastAgiThread,
    _config,
    fake_services,
)
from tests.fakes import caller_says

pytestmark = pytest.mark.e2e

BASE = load_config()
SHORT = dataclasses.replace(BASE, assistants=(dataclasses.replace(
    BASE.assistants[0],
    brain=dataclasses.replace(BASE.assistants[0].brain, greeting="Hi, how can I help?")),))


@dataclass
class Product:
    cfg: Config
    ports: SidecarPorts
    health: SidecarHealth
    records: CountingRecords
    ami: FakeAmiServer
    fastagi: FastAgiThread | None = None

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient() as client:
            return await client.get(f"http://127.0.0.1:{self.ports.health}{path}")

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        resp = await self.get("/metrics")
        assert resp.status_code == 200
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(resp.text) for s in fam.samples}

    async def start_fastagi(self) -> int:
        self.fastagi = FastAgiThread(_config(self.cfg, self.ports, self.ami_port, ""))
        port = await self.fastagi.start()
        server = self.fastagi.server
        assert await trio.to_thread.run_sync(self.fastagi.call, server.control.wait_connected(10))
        await trio.to_thread.run_sync(self.fastagi.call, server.ami.wait_connected())
        return port

    @property
    def ami_port(self) -> int:
        assert self.ami.port is not None
        return self.ami.port


@asynccontextmanager
async def open_product(base: Config, records: str) -> AsyncIterator[Product]:
    """The sidecar with its health listener on a free port; FastAGI started by the test."""
    async with trio.open_nursery() as nursery:
        ami = FakeAmiServer(username=AMI_USER, secret=AMI_SECRET)
        await nursery.start(ami.serve)
        cfg = _config(base, None, None, records)
        health = SidecarHealth()
        writer = CountingRecords(records)
        ports = await nursery.start(lambda task_status: run_sidecar(
            cfg, fake_services(), {}, records=writer, health=health,
            health_listen=Listen("127.0.0.1", 0), task_status=task_status))
        product = Product(cfg, ports, health, writer, ami)
        try:
            yield product
        finally:
            if product.fastagi is not None:
                await product.fastagi.stop()
            nursery.cancel_scope.cancel()


async def wait_for(product: Product, key, value, within: float = 8.0) -> None:
    """Poll /metrics until a sample has a value (the control plane reports every 2 s)."""
    with trio.fail_after(within):
        for _ in range(int(within / 0.1)):
            if (await product.metrics()).get(key) == value:
                return
            await trio.sleep(0.1)


async def test_ready_follows_the_control_link_and_the_drain_and_metrics_move_with_a_call(
        tmp_path):
    async with open_product(SHORT, str(tmp_path / "calls.jsonl")) as product:
        assert product.ports.health > 0
        assert (await product.get("/live")).status_code == 200
        ready = await product.get("/ready")
        assert (ready.status_code, ready.text) == (503, "control link down\n")
        before = await product.metrics()
        assert before[("agi_voice_control_link_up", ())] == 0
        assert before[("agi_voice_ready", ())] == 0

        agi_port = await product.start_fastagi()
        assert (await product.get("/ready")).status_code == 200
        await wait_for(product, ("agi_voice_ami_up", ()), 1)
        doc = (await product.get("/health")).json()
        assert doc["ready"] and doc["ami"] == "up" and doc["planes"]["control"]["link"] == "up"
        assert doc["planes"]["control"]["ami_reconnects"] == 0

        with trio.fail_after(30):
            call = await run_call("127.0.0.1", agi_port, ChannelSpec(script="agent", dnid="7000"),
                                  CallerScript().speak_after_agent_quiet(caller_says("goodbye")),
                                  ami=product.ami)
        assert call.variables["AI_STATUS"] == "COMPLETED"
        assert await trio.to_thread.run_sync(product.records.wait, 1, 10)
        after = await product.metrics()
        assert after[("agi_voice_calls_total",
                      (("assistant", "receptionist"), ("outcome", "COMPLETED")))] == 1
        assert after[("agi_voice_calls_active", ())] == 0
        assert after[("agi_voice_first_frame_seconds_count", (("provider", "pipeline"),))] == 1
        assert after[("agi_voice_turn_latency_seconds_count", (("provider", "pipeline"),))] >= 1
        assert after[("agi_voice_ami_reconnects_total", ())] == 0
        assert ("agi_voice_build_info", (("version", "0.1.0"),)) in after
        # no per-call label anywhere
        for _, labels in after:
            assert not {k for k, _ in labels} & {"uuid", "caller", "channel", "callerid"}

        # a call the sidecar refuses counts by reason (its assistant's engines went missing)
        assert product.health.registry is not None
        product.health.registry.unavailable["receptionist"] = "the TTS voice is missing"
        with trio.fail_after(10):
            refused = await run_call("127.0.0.1", agi_port,
                                     ChannelSpec(script="agent", dnid="7000"),
                                     CallerScript(), ami=product.ami)
        assert refused.variables["AI_STATUS"] == "FAILED"
        assert (await product.metrics())[
            ("agi_voice_offers_refused_total", (("reason", "assistant_unavailable"),))] == 1
        assert (await product.get("/ready")).text == "no assistant can take calls\n"
        del product.health.registry.unavailable["receptionist"]

        product.health.set_draining()
        drain = await product.get("/ready")
        assert (drain.status_code, drain.text) == (503, "draining\n")
        assert (await product.metrics())[("agi_voice_draining", ())] == 1
        product.health.set_draining(False)
        assert (await product.get("/ready")).status_code == 200

        assert product.fastagi is not None
        await product.fastagi.stop()
        product.fastagi = None
        for _ in range(100):  # the sidecar sees the link close as the thread's loop ends
            if (await product.get("/ready")).status_code == 503:
                break
            await trio.sleep(0.05)
        assert (await product.get("/ready")).text == "control link down\n"
        assert (await product.get("/health")).json()["ami"] == "unknown"


async def test_no_secret_in_any_log_line_of_a_call_at_debug(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    async with open_product(SHORT, str(tmp_path / "calls.jsonl")) as product:
        agi_port = await product.start_fastagi()
        with trio.fail_after(30):
            call = await run_call("127.0.0.1", agi_port, ChannelSpec(script="agent", dnid="7000"),
                                  CallerScript().speak_after_agent_quiet(caller_says("goodbye")),
                                  ami=product.ami)
        assert call.variables["AI_STATUS"] == "COMPLETED"
        assert await trio.to_thread.run_sync(product.records.wait, 1, 10)
    assert product.ami.logins >= 1  # the secret was really used
    assert any(r.levelno == logging.DEBUG for r in caplog.records)
    lines = [r.getMessage() for r in caplog.records]
    assert not [ln for ln in lines if AMI_SECRET in ln]
    assert AMI_SECRET not in caplog.text
    # and the lines as the product prints them, in each format
    cfg = _config(SHORT, product.ports, product.ami_port, "")
    secrets = secret_values(cfg, env={})
    assert AMI_SECRET in secrets
    for fmt in ("text", "kv", "json"):
        formatter = make_formatter(fmt, secrets)
        assert not [r for r in caplog.records if AMI_SECRET in formatter.format(r)]
    # the structured call lines are there
    started = [r for r in caplog.records if r.getMessage() == "call started"]
    ended = [r for r in caplog.records if r.getMessage() == "call ended"]
    assert len(started) == len(ended) == 1
    line = make_formatter("kv").format(ended[0])
    assert "assistant=receptionist outcome=COMPLETED duration=" in line
