"""The sidecar end of the control link: a trio-websocket server speaking protocol.control.

The FastAGI server connects (and reconnects after either side restarts). The newest
connection is the one the sidecar talks on; messages for calls are matched by uuid. A malformed
message is answered with nothing and logged; it never ends the link or another call.
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

    def __init__(self, registry: CallRegistry) -> None:
        self.registry = registry
        self._ws: WebSocketConnection | None = None
        self._transfers: dict[str, trio.MemorySendChannel[c.TransferResult]] = {}
        self.peer_stats: c.Stats | None = None
        """The control plane's latest ``stats`` (for /health and /metrics)."""

    async def send(self, msg: c.ControlMessage) -> bool:
        """Send on the current link; False (logged) when there is none or it just closed."""
        ws = self._ws
        if ws is None:
            log.warning("control link down; dropped %s for %s", msg.TYPE, getattr(msg, "uuid", ""))
            return False
        try:
            await ws.send_message(c.encode(msg))
            return True
        except ConnectionClosed:
            return False

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
        self.registry.set_link(True)
        log.info("control link up from %s", first.role)
        try:
            while True:
                text = await ws.get_message()
                try:
                    msg = c.decode(text)
                except c.ControlError as exc:
                    log.warning("bad control message ignored: %s", exc)
                    continue
                await self._dispatch(ws, msg)
        except ConnectionClosed:
            log.info("control link closed")
        finally:
            if self._ws is ws:
                self._ws = None
                self.registry.set_link(False)

    async def _dispatch(self, ws: WebSocketConnection, msg: c.ControlMessage) -> None:
        if isinstance(msg, c.Offer):
            reply = self.registry.offer(msg)
            await ws.send_message(c.encode(reply))
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
