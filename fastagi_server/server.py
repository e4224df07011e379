"""The control-plane process: FastAGI server, control link to the sidecar, AMI client.

Everything runs under one asyncio TaskGroup: the control-link keeper, the AMI client (when
configured) with a task that feeds its events to the call tracker, and the FastAGI listener.
Without AMI settings the server runs in degraded mode: transfers are handed back to the
dialplan (AI_STATUS=TRANSFERRED, AI_TRANSFER_TO) and DTMF comes from AudioSocket frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from media_sidecar.config.schema import Config

from .agi.connection import AgiConnection
from .agi.handler import AgiCallHandler
from .calls import CallTracker
from .control_client import ControlClient
from .stats import report_stats

log = logging.getLogger("agi_voice.fastagi")


class FastAgiServer:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.ami: Any = None
        self.control = ControlClient(cfg.control_url, self._transfer)
        self.tracker = CallTracker(self.control, None, transfer_mode=cfg.fastagi.transfer)
        self.handler = AgiCallHandler(cfg, self.control, self.tracker)
        self.port: int | None = None
        self.ready = asyncio.Event()
        self.active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def wait_idle(self) -> None:
        """Wait until no AGI connection is being handled (outcomes are final then)."""
        await self._idle.wait()

    async def _transfer(self, req: Any) -> Any:
        return await self.tracker.transfer(req)

    async def run(self) -> None:
        """Serve until cancelled."""
        async with contextlib.AsyncExitStack() as stack, asyncio.TaskGroup() as tg:
            tg.create_task(self.control.run())
            tg.create_task(report_stats(self))  # for the sidecar's /health and /metrics
            if self.cfg.ami.enabled:
                from .ami.client import AmiClient

                self.ami = await stack.enter_async_context(AmiClient(self.cfg.ami))
                self.tracker.ami = self.ami
                tg.create_task(self._pump_ami())
            else:
                log.warning("AMI not configured (AMI_HOST/AMI_USERNAME): degraded mode, "
                            "transfers go back to the dialplan, DTMF from AudioSocket frames")
            listen = self.cfg.fastagi.listen
            server = await asyncio.start_server(self._on_connection, listen.host, listen.port,
                                                limit=16384)
            await stack.enter_async_context(server)
            self.port = server.sockets[0].getsockname()[1]
            log.info("FastAGI listening on %s:%d; sidecar control %s; AudioSocket target %s",
                     listen.host, self.port, self.cfg.control_url, self.cfg.audiosocket_address)
            self.ready.set()
            await asyncio.Event().wait()

    async def _pump_ami(self) -> None:
        async for ev in self._ami_events():
            try:
                await self.tracker.on_ami_event(ev)
            except Exception:
                log.exception("AMI event handling failed")

    async def _ami_events(self) -> AsyncIterator[Any]:
        async for ev in self.ami.events():
            yield ev

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
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
