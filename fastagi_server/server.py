"""The control-plane process: FastAGI server, control link to the sidecar, AMI client.

Everything runs under one asyncio TaskGroup: the control-link keeper, the AMI client (when
configured) with a task that feeds its events to the call tracker, and the FastAGI listener.
Without AMI settings the server runs in degraded mode: transfers are handed back to the
dialplan (AI_STATUS=TRANSFERRED, AI_TRANSFER_TO) and DTMF comes from AudioSocket frames.

Calls are answered from the start, but until a media worker's control link is up (a worker
accepts it only once its models are loaded) each one gets ``AI_STATUS=FAILED`` at once with
"media plane not ready: starting". Each call is placed on one of the media workers
(:mod:`.placement`). :meth:`FastAgiServer.drain` refuses new calls
(``AI_REASON=draining``) and returns :meth:`FastAgiServer.run` once every AGI connection is
done; :meth:`FastAgiServer.reload` switches routing and assistants for new calls.

Only the addresses in ``fastagi.allow`` (default loopback) may connect: any other peer is
closed at once, without a byte, and logged (a WARNING per address at most once a minute, with
the count refused meanwhile). The list is read at start-up (a reload does not change it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from media_sidecar.config.addresses import AllowList
from media_sidecar.config.reload import for_reload
from media_sidecar.config.schema import Config
from media_sidecar.ops import debug_counters
from media_sidecar.ops.heap import FULL_COLLECTION_SECONDS, full_collection
from media_sidecar.ops.status import listen_error

from .agi.connection import AgiConnection
from .agi.handler import AgiCallHandler
from .calls import CallTracker
from .control_client import ControlClient
from .placement import MediaPool
from .stats import report_stats, snapshot

log = logging.getLogger("agi_voice.fastagi")

REFUSED_LOG_SECONDS = 60.0
"""A refused address is logged at most this often (a scan must not flood the log)."""


async def collect_periodically(every: float = FULL_COLLECTION_SECONDS) -> None:
    """A full collection every ``every`` seconds, until cancelled (see ops/heap.py)."""
    while True:
        await asyncio.sleep(every)
        full_collection(log)


class FastAgiServer:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.ami: Any = None
        self.control = MediaPool.from_config(cfg, self._transfer, client=ControlClient)
        """One control link per media worker; places each call (:mod:`.placement`)."""
        self.tracker = CallTracker(self.control, None, transfer_mode=cfg.fastagi.transfer)
        self.handler = AgiCallHandler(cfg, self.control, self.tracker)
        self.port: int | None = None
        self.ready = asyncio.Event()
        self.active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.started = time.monotonic()  # uptime in the stats only
        self.draining = False
        """Read by the stats reporter: the sidecar's /ready answers 503 while it is set."""
        self._stop = asyncio.Event()
        self.allow = AllowList.from_entries(cfg.fastagi.allow)
        self.refused = 0
        """Connections closed because their address is not in ``fastagi.allow``."""
        self._refused_log: dict[str, tuple[float, int]] = {}

    async def wait_idle(self) -> None:
        """Wait until no AGI connection is being handled (outcomes are final then)."""
        await self._idle.wait()

    async def _transfer(self, req: Any) -> Any:
        return await self.tracker.transfer(req)

    async def run(self) -> None:
        """Serve until cancelled, or until :meth:`drain` is done. Raises
        :class:`~media_sidecar.ops.status.StartupError` when the FastAGI address cannot be
        bound."""
        async with contextlib.AsyncExitStack() as stack, asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self.control.run()),
                     tg.create_task(report_stats(self))]  # for the sidecar's /health, /metrics
            tasks.append(tg.create_task(collect_periodically()))
            counters = debug_counters.target()
            if counters is not None:  # soak runs only (bench/soak.py)
                tasks.append(tg.create_task(debug_counters.run_asyncio(counters)))
            if self.cfg.ami.enabled:
                from .ami.client import AmiClient

                self.ami = await stack.enter_async_context(AmiClient(self.cfg.ami))
                self.tracker.ami = self.ami
                tasks.append(tg.create_task(self._pump_ami()))
            else:
                log.warning("AMI not configured (AMI_HOST/AMI_USERNAME): degraded mode, "
                            "transfers go back to the dialplan, DTMF from AudioSocket frames")
            listen = self.cfg.fastagi.listen
            try:
                server = await asyncio.start_server(self._on_connection, listen.host,
                                                    listen.port, limit=16384)
            except OSError as exc:
                raise listen_error("FastAGI", listen.host, listen.port, exc) from None
            await stack.enter_async_context(server)
            self.port = server.sockets[0].getsockname()[1]
            log.info("FastAGI listening on %s:%d; %d media worker(s): %s", listen.host,
                     self.port, len(self.control.clients),
                     "; ".join(f"{cl.name} control {cl.url} AudioSocket "
                               f"{cl.audiosocket_address}" for cl in self.control.clients))
            self.ready.set()
            await self._stop.wait()
            for task in tasks:  # drained: the link and AMI close, then the listener
                task.cancel()

    async def drain(self, limit: float) -> None:
        """Refuse new calls from now on (``AI_STATUS=FAILED``, ``AI_REASON=draining``), tell
        the sidecar at once (its ``/ready`` answers 503), wait until every AGI connection is
        done (at most ``limit`` seconds), then make :meth:`run` return. A call the sidecar
        hands off at its deadline is still an AGI connection here until its transfer and its
        outcome are done, so this plane outlives the media plane's drain."""
        self.draining = True
        self.handler.draining = True
        await self.control.send(snapshot(self, self.started))
        log.info("draining: new calls are refused; %d AGI connection(s) in progress",
                 self.active)
        try:
            await asyncio.wait_for(self._idle.wait(), limit)
        except TimeoutError:
            log.warning("drain: %d AGI connection(s) still open after %.0f s; stopping anyway",
                        self.active, limit)
        self._stop.set()

    def reload(self, new: Config) -> list[str]:
        """Route calls that start from now on with ``new`` (validated); a live call keeps the
        assistant it started with. Returns the key paths that differ but need a restart
        (they are kept as they were)."""
        effective, restart_only = for_reload(self.cfg, new)
        self.cfg = self.handler.cfg = effective
        self.tracker.transfer_mode = effective.fastagi.transfer
        return restart_only

    async def _pump_ami(self) -> None:
        async for ev in self._ami_events():
            try:
                await self.tracker.on_ami_event(ev)
            except Exception:
                log.exception("AMI event handling failed")

    async def _ami_events(self) -> AsyncIterator[Any]:
        async for ev in self.ami.events():
            yield ev

    def _admit(self, writer: asyncio.StreamWriter) -> bool:
        """True when the peer is in ``fastagi.allow``; else the connection is aborted at once
        (no byte is written) and logged."""
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if self.allow.allows(host):
            return True
        self.refused += 1
        writer.transport.abort()
        now = asyncio.get_running_loop().time()
        last, skipped = self._refused_log.get(host, (-REFUSED_LOG_SECONDS, 0))
        if now - last >= REFUSED_LOG_SECONDS:
            more = f" ({skipped} more since the last line)" if skipped else ""
            log.warning("FastAGI connection from %s refused: not in fastagi.allow%s",
                        host or "an unknown address", more)
            if len(self._refused_log) >= 1024:  # bounded: forget the oldest entry
                self._refused_log.pop(next(iter(self._refused_log)))
            self._refused_log[host] = (now, 0)
        else:
            self._refused_log[host] = (last, skipped + 1)
        return False

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        if not self._admit(writer):
            return
        self.active += 1
        self._idle.clear()
        conn = AgiConnection(reader, writer)
        try:
            await self.handler.handle(conn)
        except Exception:
            log.exception("FastAGI connection failed")
        finally:
            self.active -= 1
            if self.active == 0:
                self._idle.set()
            with contextlib.suppress(Exception):
                await conn.close()


async def run_fastagi(cfg: Config) -> None:
    await FastAgiServer(cfg).run()
