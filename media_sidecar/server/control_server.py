"""The sidecar end of the control link: a trio-websocket server speaking protocol.control.

The FastAGI server connects (and reconnects after either side restarts). Several FastAGI
servers may share this media worker (docs/topology.md): each call's messages go back on the link
its offer came on (a call whose link closed: the newest link); messages for calls are matched by
uuid. A link that asked for them (``watch_load``) gets ``load`` reports. A malformed message is
answered with nothing and logged; it never ends the link or another call.
"""

from __future__ import annotations

import logging

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
)

from ..ops.status import listen_error
from ..protocol import control as c
from ..session.call import ControlPort
from .registry import CallRegistry

log = logging.getLogger("agi_voice.control")


class ControlHub(ControlPort):
    """Owns the current control-link connection and pending transfer requests."""

    def __init__(self, registry: CallRegistry, worker: str = "") -> None:
        self.registry = registry
        self.worker = worker
        """This media worker's name (``--worker``): an offer naming another is refused."""
        self._ws: WebSocketConnection | None = None
        self._links: list[WebSocketConnection] = []
        self._call_links: dict[str, WebSocketConnection] = {}
        self._watchers: set[WebSocketConnection] = set()
        self._last_load: dict[WebSocketConnection, c.Load] = {}
        self._transfers: dict[str, trio.MemorySendChannel[c.TransferResult]] = {}
        self.peer_stats: c.Stats | None = None
        """The control plane's latest ``stats`` (for /health and /metrics)."""

    async def send(self, msg: c.ControlMessage) -> bool:
        """Send on the link the call's offer came on (else the newest); False (logged) when
        there is none or it just closed."""
        key = getattr(msg, "uuid", "").lower()
        ws = self._call_links.get(key) or self._ws
        if isinstance(msg, c.Ended):
            self._call_links.pop(key, None)  # nothing more goes to the control plane for it
        if ws is None:
            log.warning("control link down; dropped %s for %s", msg.TYPE, getattr(msg, "uuid", ""))
            return False
        try:
            await ws.send_message(c.encode(msg))
            return True
        except ConnectionClosed:
            return False

    def load(self) -> c.Load:
        """This worker's load now (what ``load`` reports)."""
        reg = self.registry
        return c.Load(worker=self.worker, calls=len(reg.live()), offers=reg.pending_offers,
                      max_calls=reg.cfg.sidecar.max_calls, draining=reg.draining)

    async def _report_load(self, ws: WebSocketConnection, force: bool = False) -> None:
        """Send ``load`` to a watching link when it changed (or ``force``)."""
        if ws not in self._watchers:
            return
        now = self.load()
        if force or self._last_load.get(ws) != now:
            self._last_load[ws] = now
            await ws.send_message(c.encode(now))

    async def _load_reporter(self, ws: WebSocketConnection) -> None:
        """Report a changed load within LOAD_REPORT_SECONDS; runs until cancelled or the link
        closes."""
        while True:
            with trio.move_on_after(c.LOAD_REPORT_SECONDS):
                await self.registry.wait_changed()
            await self._report_load(ws)

    async def request_transfer(self, uuid: str, key: str, context: str, exten: str,
                               priority: str) -> c.TransferResult:
        """Ask the control plane to transfer; waits for its TransferResult (caller adds a timeout)."""
        send, recv = trio.open_memory_channel[c.TransferResult](1)
        self._transfers[uuid.lower()] = send
        try:
            req = c.TransferRequest(uuid=uuid, destination=key, context=context, exten=exten,
                                    priority=priority)
            if not await self.send(req):
                return c.TransferResult(uuid=uuid, ok=False, method="dialplan",
                                        detail="control link down")
            return await recv.receive()
        finally:
            self._transfers.pop(uuid.lower(), None)

    async def handle(self, request: WebSocketRequest) -> None:
        if request.path.split("?")[0] != "/control":
            await request.reject(404)
            return
        ws = await request.accept()
        try:
            first = c.decode(await ws.get_message())
            if not isinstance(first, c.Hello):
                raise c.ControlError("the first control message must be hello")
            await ws.send_message(c.encode(c.Hello(role="sidecar")))
        except (c.ControlError, ConnectionClosed) as exc:
            log.warning("control link handshake failed: %s", exc)
            await ws.aclose(code=1002, reason=str(exc)[:100])
            return
        self._ws = ws
        self._links.append(ws)
        self.registry.set_link(True)
        log.info("control link up from %s", first.role)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._load_reporter, ws)
                while True:
                    text = await ws.get_message()
                    try:
                        msg = c.decode(text)
                    except c.ControlError as exc:
                        log.warning("bad control message ignored: %s", exc)
                        continue
                    await self._dispatch(ws, msg)
        except* ConnectionClosed:
            log.info("control link closed")
        finally:
            self._links.remove(ws)
            self._watchers.discard(ws)
            self._last_load.pop(ws, None)
            for key in [k for k, w in self._call_links.items() if w is ws]:
                del self._call_links[key]
            if self._ws is ws:
                self._ws = self._links[-1] if self._links else None
            if not self._links:
                self.registry.set_link(False)

    async def _dispatch(self, ws: WebSocketConnection, msg: c.ControlMessage) -> None:
        if isinstance(msg, c.Offer):
            reply: c.Accept | c.Refuse
            if msg.worker and self.worker and msg.worker != self.worker:
                log.warning("refused call %s: offered to media worker %s, this is worker %s",
                            msg.uuid, msg.worker, self.worker)
                self.registry.refused += 1
                reply = c.Refuse(uuid=msg.uuid, reason=f"offered to media worker {msg.worker}, "
                                 f"this is worker {self.worker}")
            else:
                reply = self.registry.offer(msg)
            if isinstance(reply, c.Accept):
                self._call_links[msg.uuid.lower()] = ws
            await ws.send_message(c.encode(reply))
            await self._report_load(ws)  # right after the accept: its sender counts on it
        elif isinstance(msg, c.WatchLoad):
            self._watchers.add(ws)
            await self._report_load(ws, force=True)
        elif isinstance(msg, (c.Dtmf, c.Hangup)):
            self.registry.deliver(msg)
        elif isinstance(msg, c.Outcome):
            self.registry.outcome_arrived(msg)
        elif isinstance(msg, c.Stats):
            self.peer_stats = msg
        elif isinstance(msg, c.TransferResult):
            chan = self._transfers.get(msg.uuid.lower())
            if chan is not None:
                chan.send_nowait(msg)
        else:
            log.warning("unexpected control message %s ignored", msg.TYPE)


async def serve_control(hub: ControlHub, host: str, port: int,
                        *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the control link; reports the bound port through ``task_status``. Raises
    :class:`~media_sidecar.ops.status.StartupError` when the address cannot be bound."""
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise listen_error("the control link", host, port, exc) from None
    server = WebSocketServer(hub.handle, listeners)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        task_status.started(server.port)
