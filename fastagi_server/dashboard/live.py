"""Live calls: the dashboard polls every media worker's ``/calls`` while a browser watches.

Each media worker's health listener answers ``GET /calls`` with its live calls
(:meth:`media_sidecar.server.registry.CallRegistry.snapshot`). The local workers are the ones
``serve`` runs (health port + ``i * sidecar.worker_port_step``, as
:mod:`media_sidecar.config.workers` shifts every port), the remote ones are
``fastagi.media[].health_url``. :class:`LiveFeed` polls them all at once about every second,
only while at least one browser is subscribed (server-sent events), and hands each result to
every subscriber's bounded queue (a slow browser skips results; it never holds up the poll).
A worker that does not answer is shown as such; it never stops the others' calls showing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from media_sidecar.config.schema import Config
from media_sidecar.config.workers import worker_count

log = logging.getLogger("agi_voice.dashboard")

POLL_SECONDS = 1.0
POLL_TIMEOUT = 0.8
"""One worker's ``/calls`` answer within this, or it shows as not answering this round."""
SUBSCRIBER_QUEUE = 4


@dataclass(frozen=True)
class WorkerSource:
    name: str
    url: str
    """The worker's ``/calls`` URL."""


def _health_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def worker_sources(cfg: Config, workers: int | None = None) -> list[WorkerSource]:
    """The ``/calls`` URL of each local worker (none when the health listener is off), then of
    each ``fastagi.media`` entry that has a ``health_url``."""
    out = []
    listen = cfg.health.listen
    if cfg.health.active:
        n = worker_count(cfg) if workers is None else workers
        for i in range(n):
            port = listen.port + i * cfg.sidecar.worker_port_step
            out.append(WorkerSource(str(i), f"http://{_health_host(listen.host)}:{port}/calls"))
    for host in cfg.fastagi.media:
        if host.health_url:
            name = host.name or host.health_url
            out.append(WorkerSource(name, host.health_url.rstrip("/") + "/calls"))
    return out


class LiveFeed:
    """Polls the workers while anyone subscribes; :meth:`subscribe` yields each snapshot."""

    def __init__(self, sources: list[WorkerSource], *, interval: float = POLL_SECONDS,
                 timeout: float = POLL_TIMEOUT) -> None:
        self.sources = sources
        self.interval = interval
        self.timeout = timeout
        self.latest: dict[str, Any] = {"calls": [], "workers": [], "at": ""}
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._wanted = asyncio.Event()
        self._client: httpx.AsyncClient | None = None

    async def run(self) -> None:
        """Poll until cancelled (the app's lifespan task); idle while nobody watches."""
        async with httpx.AsyncClient(timeout=self.timeout, trust_env=False) as client:
            self._client = client
            try:
                while True:
                    await self._wanted.wait()
                    snap = await self.poll()
                    for queue in list(self._subscribers):
                        if queue.full():
                            with contextlib.suppress(asyncio.QueueEmpty):
                                queue.get_nowait()  # the browser is behind: the newest wins
                        queue.put_nowait(snap)
                    await asyncio.sleep(self.interval)
            finally:
                self._client = None

    async def poll(self) -> dict[str, Any]:
        """Every worker's live calls now (one round), also kept as :attr:`latest`."""
        client = self._client
        own = None
        if client is None:
            own = client = httpx.AsyncClient(timeout=self.timeout, trust_env=False)
        try:
            results = await asyncio.gather(*(self._one(client, s) for s in self.sources))
        finally:
            if own is not None:
                await own.aclose()
        calls: list[dict[str, Any]] = []
        workers = []
        for source, (got, error) in zip(self.sources, results, strict=True):
            workers.append({"name": source.name, "ok": not error, "error": error})
            for call in got:
                calls.append({**call, "worker": source.name})
        calls.sort(key=lambda c: str(c.get("started_at", "")))
        self.latest = {"calls": calls, "workers": workers,
                       "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")}
        return self.latest

    async def _one(self, client: httpx.AsyncClient,
                   source: WorkerSource) -> tuple[list[dict[str, Any]], str]:
        try:
            resp = await client.get(source.url)
            resp.raise_for_status()
            body = resp.json()
            calls = body.get("calls", []) if isinstance(body, dict) else []
            return [c for c in calls if isinstance(c, dict)], ""
        except (httpx.HTTPError, ValueError) as exc:
            return [], type(exc).__name__

    async def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        """Each snapshot from now on (the latest one first), until the consumer stops."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        self._wanted.set()
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)
            if not self._subscribers:
                self._wanted.clear()
