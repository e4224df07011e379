"""The sidecar end of the control link: a trio-websocket server speaking protocol.control.

The FastAGI server connects (and reconnects after either side restarts). Several FastAGI
servers may share this media worker (docs/topology.md): each call's messages go back on the link
its offer came on (a call whose link closed: the newest link); messages for calls are matched by
uuid. A link that asked for them (``watch_load``) gets ``load`` reports. A malformed message is
answered with nothing and logged; it never ends the link or another call.

With a shared secret (:mod:`media_sidecar.ops.control_secret`) the worker answers ``hello`` with
a challenge and serves the link only once the FastAGI side proved it holds the secret
(:mod:`media_sidecar.protocol.control_auth`); a wrong or missing answer closes the link with
code 1008 and a WARNING naming the peer. The whole handshake has
:data:`HANDSHAKE_SECONDS`.
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

from ..ops import debug_counters
from ..ops.control_secret import check_bind, control_secret, secret_env_name
from ..ops.status import listen_error
from ..protocol import control as c
from ..protocol import control_auth as auth
from ..session.call import ControlPort
from .registry import CallRegistry

log = logging.getLogger("agi_voice.control")

HANDSHAKE_SECONDS = 5.0
"""From the WebSocket accept to the end of ``hello`` (and the secret's handshake): a peer that
is slower is closed."""
POLICY_VIOLATION = 1008


class ControlHub(ControlPort):
    """Owns the current control-link connection and pending transfer requests."""

    def __init__(self, registry: CallRegistry, worker: str = "",
                 secret: str | None = None) -> None:
        self.registry = registry
        self.secret = secret
        """The control link's shared secret ("" none; None: read from the environment when
        :func:`serve_control` starts)."""
        self.rejected = 0
        """Links closed because the peer did not prove it holds the secret."""
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
        peer = _peer(ws)
        first: c.Hello | None = None
        with trio.move_on_after(HANDSHAKE_SECONDS):
            try:
                msg = c.decode(await ws.get_message())
                if not isinstance(msg, c.Hello):
                    raise c.ControlError("the first control message must be hello")
                if self.secret and not await self._authenticate(ws, peer):
                    return
                await ws.send_message(c.encode(c.Hello(role="sidecar")))
                first = msg
            except (c.ControlError, ConnectionClosed) as exc:
                log.warning("control link handshake from %s failed: %s", peer, exc)
                await ws.aclose(code=1002, reason=str(exc)[:100])
                return
        if first is None:
            log.warning("control link from %s closed: no handshake within %.0f s", peer,
                        HANDSHAKE_SECONDS)
            with trio.move_on_after(1.0):
                await ws.aclose(code=POLICY_VIOLATION, reason="handshake timeout")
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

    async def _authenticate(self, ws: WebSocketConnection, peer: str) -> bool:
        """Challenge the peer (control_auth); True when it proved it holds the secret, else
        the link is closed (1008) with a WARNING. Raises ConnectionClosed when the peer
        goes away."""
        assert self.secret
        challenge = auth.Challenge(auth.new_nonce())
        await ws.send_message(auth.encode(challenge))
        text = await ws.get_message()
        why = ""
        try:
            reply = auth.decode(text)
        except auth.AuthError as exc:
            why = f"no valid answer to the challenge ({exc})"
        else:
            if not isinstance(reply, auth.Response):
                why = "no answer to the challenge"
            elif not auth.verify(auth.client_mac(self.secret, challenge.nonce, reply.nonce),
                                 reply.mac):
                why = "wrong control link secret"
        if why:
            self.rejected += 1
            log.warning("control link from %s refused: %s (the FastAGI side needs the same "
                        "secret in %s)", peer, why, secret_env_name(self.registry.cfg))
            await ws.aclose(code=POLICY_VIOLATION, reason="control secret rejected")
            return False
        assert isinstance(reply, auth.Response)
        proof = auth.Proof(auth.server_mac(self.secret, challenge.nonce, reply.nonce))
        await ws.send_message(auth.encode(proof))
        return True

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
        elif isinstance(msg, c.Withdraw):
            if self.registry.withdraw(msg.uuid):
                self._call_links.pop(msg.uuid.lower(), None)
                log.info("call %s withdrawn before its AudioSocket connected: %s", msg.uuid,
                         msg.reason or "no reason given")
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
    :class:`~media_sidecar.ops.status.StartupError` when the address cannot be bound, or is
    not loopback and there is no shared secret (:func:`~media_sidecar.ops.control_secret.
    check_bind`)."""
    if hub.secret is None:
        hub.secret = control_secret(hub.registry.cfg)
    check_bind(hub.registry.cfg, host, hub.secret)
    if hub.secret:
        log.info("control link requires the shared secret (%s)",
                 secret_env_name(hub.registry.cfg))
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise listen_error("the control link", host, port, exc) from None
    # connect_timeout: a TCP connection that never sends its HTTP upgrade (a port probe, a
    # scanner) is closed after HANDSHAKE_SECONDS; trio-websocket's default kept one that the
    # peer had already closed in CLOSE-WAIT for 60 s
    server = WebSocketServer(hub.handle, listeners, connect_timeout=HANDSHAKE_SECONDS)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        counters = debug_counters.target()
        if counters is not None:  # soak runs only (bench/soak.py)
            nursery.start_soon(debug_counters.run_trio, counters)
        task_status.started(server.port)


def _peer(ws: WebSocketConnection) -> str:
    remote = ws.remote
    return remote if isinstance(remote, str) else f"{remote.address}:{remote.port}"
