"""The control plane's state and counters, reported to the sidecar over the control link.

The sidecar serves the one health/metrics listener (see ``media_sidecar.server.health``): it
knows the calls, turns and playout. What only this process knows (AMI up or down, AMI
reconnects, offers that never got the sidecar's answer, AGI connections, whether this plane is
draining) goes to it in a ``stats`` message when the link comes up and every
:data:`STATS_INTERVAL` seconds after, as cumulative counters.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

from media_sidecar.protocol import control as c

from . import __version__

STATS_INTERVAL = 2.0
"""Seconds between reports; /metrics shows this plane's counters at most this late."""


def snapshot(server: Any, started: float) -> c.Stats:
    """The ``stats`` message for a :class:`~fastagi_server.server.FastAgiServer` now."""
    ami = "off"
    reconnects = 0
    if server.cfg.ami.enabled:
        client = server.ami
        ami = "up" if client is not None and client.connected else "down"
        reconnects = max(0, client.logins - 1) if client is not None else 0
    refused = collections.Counter(server.control.unanswered)
    # calls this side refused without an offer (draining)
    refused.update(server.handler.refused)
    return c.Stats(version=__version__, uptime=round(time.monotonic() - started, 3), ami=ami,
                   ami_reconnects=reconnects, refused=dict(refused),
                   agi_connections=server.active,
                   draining=server.draining)


async def report_stats(server: Any, interval: float = STATS_INTERVAL) -> None:
    """Send :func:`snapshot` whenever the control link is up: at once when it comes up, then
    every ``interval`` seconds. Runs until cancelled; a send on a closing link is dropped."""
    started = getattr(server, "started", None) or time.monotonic()
    control = server.control
    while True:
        if await control.wait_connected(interval):
            await control.send(snapshot(server, started))
            await asyncio.sleep(interval)
