"""Health and metrics over HTTP: ``/live``, ``/ready``, ``/health`` and Prometheus ``/metrics``.

Where it lives: in the media sidecar process, on one listener (``health.listen``, default
127.0.0.1:9094). The sidecar knows what most of it is about (calls, turns, playout, providers,
models, readiness of the media plane), and it already holds the one link to the control plane:
the FastAGI process sends its own state and counters over that link (``stats``: AMI state and
reconnects, offers that never got the sidecar's answer, AGI connections, its drain), so one
scrape sees both planes and nothing here is served twice. A single port for both planes also
means one firewall rule and one probe. When the FastAGI process is down, the control link is
down and ``/ready`` says so; when the sidecar is down nothing answers, which a probe reads as
not ready.

- ``/live``: 200 while the process runs its event loop (the listener starts before the models
  load, so a slow start is live but not ready).
- ``/ready``: 200 when the media plane listens, its models are loaded, at least one assistant
  can take calls, the control link is up and neither plane is draining; else 503 with the
  reasons, one a line. AMI is reported but never makes it unready: without AMI the product runs
  in degraded mode (transfers through the dialplan), which is a valid way to run.
- ``/health``: JSON for people and dashboards (version, uptime, ready and why not, active
  calls, per-plane state, AMI state); always 200.
- ``/metrics``: the Prometheus text format (:mod:`media_sidecar.ops.metrics`).
- ``/calls``: JSON, this worker's live calls (``{"worker", "calls": [...]}``, see
  :meth:`~media_sidecar.server.registry.CallRegistry.snapshot`), which the dashboard polls.

The listener is unauthenticated: keep it on loopback or behind a firewall. If its port cannot
be bound, the sidecar logs one ERROR and goes on serving calls without it (a probe then sees
it as down).
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import __version__
from ..protocol.control import Stats
from .http import Response, serve_http

if TYPE_CHECKING:
    from ..ops.metrics import SidecarMetrics
    from .control_server import ControlHub
    from .registry import CallRegistry

log = logging.getLogger("agi_voice.health")


class SidecarHealth:
    """What ``/ready`` and ``/health`` report; the sidecar fills it in as it starts.

    The drain sets :attr:`draining` (or calls :meth:`set_draining`): ``/ready`` then answers
    503 at once. Everything is read and written on the sidecar's trio thread.
    """

    def __init__(self, version: str = __version__) -> None:
        self.version = version
        self.started = time.monotonic()  # uptime only; nothing is timed by it
        self.models_loaded = False
        self.listening = False
        """The AudioSocket and control listeners are bound."""
        self.draining = False
        self.registry: CallRegistry | None = None
        self.hub: ControlHub | None = None
        self.ports: dict[str, int] = {}

    def set_draining(self, draining: bool = True) -> None:
        self.draining = draining

    @property
    def link_up(self) -> bool:
        return self.registry is not None and self.registry.link_up

    def peer_stats(self) -> Stats | None:
        """The control plane's latest ``stats``, while its link is up."""
        if self.hub is None or not self.link_up:
            return None
        return self.hub.peer_stats

    @property
    def draining_any(self) -> bool:
        peer = self.peer_stats()
        return self.draining or (peer is not None and peer.draining is True)

    def not_ready(self) -> list[str]:
        """Why ``/ready`` is 503 (empty when ready)."""
        out = []
        if not self.models_loaded:
            out.append("models loading")
        if not self.listening:
            out.append("media plane not listening")
        reg = self.registry
        if reg is not None and reg.cfg.assistants and all(
                a.name in reg.unavailable for a in reg.cfg.assistants):
            out.append("no assistant can take calls")
        if not self.link_up:
            out.append("control link down")
        if self.draining:
            out.append("draining")
        peer = self.peer_stats()
        if peer is not None and peer.draining is True:
            out.append("control plane draining")
        return out

    @property
    def ready(self) -> bool:
        return not self.not_ready()

    def ami_state(self) -> str:
        """up, down, off (not configured: degraded mode) or unknown (no report yet)."""
        peer = self.peer_stats()
        if peer is None or peer.ami not in ("up", "down", "off"):
            return "unknown"
        return peer.ami

    def live_calls(self) -> dict[str, Any]:
        """The ``/calls`` document: this worker's live calls (the dashboard's live page)."""
        calls = self.registry.snapshot() if self.registry is not None else []
        worker = next((c["worker"] for c in calls if c.get("worker")), "")
        return {"worker": worker, "calls": calls}

    def snapshot(self) -> dict[str, Any]:
        """The ``/health`` document."""
        reg = self.registry
        active = getattr(reg, "live_calls", 0) if reg is not None else 0
        peer = self.peer_stats()
        control: dict[str, Any] = {"link": "up" if self.link_up else "down"}
        if peer is not None:
            control.update(version=peer.version, uptime_seconds=peer.uptime, ami=self.ami_state(),
                           ami_reconnects=peer.ami_reconnects,
                           agi_connections=peer.agi_connections, draining=peer.draining)
        reasons = self.not_ready()
        return {
            "version": self.version,
            "uptime_seconds": round(time.monotonic() - self.started, 3),
            "ready": not reasons,
            "not_ready": reasons,
            "draining": self.draining_any,
            "active_calls": active,
            "ami": self.ami_state(),
            "planes": {
                "media": {
                    "state": "draining" if self.draining else
                             "up" if self.listening and self.models_loaded else "starting",
                    "models_loaded": self.models_loaded,
                    "listening": self.listening,
                    "ports": dict(self.ports),
                    "unavailable_assistants": dict(reg.unavailable) if reg is not None else {},
                },
                "control": control,
            },
        }


class HealthEndpoints:
    """The routes; :meth:`handle` is the HTTP handler."""

    def __init__(self, health: SidecarHealth, metrics: SidecarMetrics | None) -> None:
        self.health = health
        self.metrics = metrics

    async def handle(self, method: str, target: str) -> Response:
        path = target.split("?", 1)[0]
        if path == "/live":
            return Response(200, b"live\n")
        if path == "/ready":
            reasons = self.health.not_ready()
            if reasons:
                return Response(503, ("".join(f"{r}\n" for r in reasons)).encode())
            return Response(200, b"ready\n")
        if path == "/health":
            body = json.dumps(self.health.snapshot(), indent=2).encode() + b"\n"
            return Response(200, body, "application/json")
        if path == "/calls":
            body = json.dumps(self.health.live_calls(), ensure_ascii=False).encode() + b"\n"
            return Response(200, body, "application/json")
        if path == "/metrics" and self.metrics is not None:
            return Response(200, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST)
        return Response(404, b"not found: /live, /ready, /health, /metrics, /calls\n")


async def serve_health(health: SidecarHealth, metrics: SidecarMetrics | None, host: str,
                       port: int, *,
                       task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the endpoints until cancelled; reports the bound port, or 0 (with one ERROR line)
    when the address cannot be bound: calls are served either way."""
    endpoints = HealthEndpoints(health, metrics)
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        log.error("health listener off: cannot listen on %s:%d: %s", host, port,
                  exc.strerror or exc)
        task_status.started(0)
        return
    await serve_http(endpoints.handle, listeners, task_status=task_status)
