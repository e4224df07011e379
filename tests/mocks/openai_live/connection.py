"""The plumbing of one mock connection: event ids, sending server events (shielded, counted in
the :class:`SessionLog`), ``error`` events, closing (``session.closed``, a close frame, or a
dropped stream), and the reader loop that dispatches client events to the handlers.

Class chain: ``_Connection`` (here) -> ``_Agent`` (agent.py: the caller's audio, the model's
turns, output audio, delegation) -> ``_Session`` (session.py: the client event handlers).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio
import trio_websocket

from tests.mocks.openai_live.script import AUDIO_IN, AUDIO_OUT, LiveScript, SessionLog
from tests.mocks.openai_live.wire import WireError, check_event, error_event

if TYPE_CHECKING:
    from tests.mocks.openai_live.server import MockLiveServer

Handler = Callable[[dict[str, Any]], Awaitable[None]]
SEND_TIMEOUT = 30.0
"""A send the peer does not drain within this long ends the session."""


class _Connection:
    """Sends are shielded so a cancellation lands between frames, never inside one; a peer
    that is gone or stuck ends the session quietly."""

    handlers: dict[str, Handler]

    def __init__(self, server: MockLiveServer, ws: trio_websocket.WebSocketConnection,
                 log: SessionLog, nursery: trio.Nursery, transport: trio.abc.Stream) -> None:
        self.server, self.ws, self.log = server, ws, log
        self.script: LiveScript = server.script
        self.nursery, self.transport = nursery, transport
        self.closed = False
        self.started = False
        self.started_at = 0.0
        self._events = itertools.count(1)
        self._ids: dict[str, itertools.count[int]] = {}

    def new_id(self, prefix: str) -> str:
        counter = self._ids.setdefault(prefix, itertools.count(1))
        return f"{prefix}_{next(counter)}"

    @property
    def timeline_ms(self) -> int:
        """The session timeline: milliseconds of caller audio received."""
        return int(self.log.audio_in_ms)

    # -- sending ---------------------------------------------------------------------------------

    async def _send_frame(self, payload: str) -> bool:
        if self.closed:
            return False
        with trio.CancelScope(shield=True, deadline=trio.current_time() + SEND_TIMEOUT):
            try:
                await self.ws.send_message(payload)
                return True
            except trio_websocket.ConnectionClosed:
                pass
        self.closed = True
        self.log._close("send_failed")
        self.nursery.cancel_scope.cancel()
        return False

    async def send(self, event: dict[str, Any]) -> None:
        """One server event with a fresh ``event_id`` (first key after ``type``)."""
        event = {"type": event["type"], "event_id": f"evt_{next(self._events)}",
                 **{k: v for k, v in event.items() if k != "type"}}
        if await self._send_frame(json.dumps(event)):
            self.log.server_messages.append(event)
            self.log._bump(True, event["type"])

    async def send_audio(self, b64: str, ms: float) -> None:
        """``session.output_audio.delta``: no event_id on the primary WebSocket; counted only."""
        if await self._send_frame('{"type":"' + AUDIO_OUT + '","delta":"' + b64 + '"}'):
            self.log.audio_out_ms += ms
            self.log._bump(True, AUDIO_OUT)

    async def error(self, code: str, message: str, *, param: str | None = None,
                    event: dict[str, Any] | None = None, problem: str | None = None,
                    kind: str = "invalid_request_error") -> None:
        """An ``error`` event (the session goes on); ``problem`` notes a client mistake."""
        client_id = event.get("event_id") if event else None
        out = error_event("", code, message, param=param, kind=kind,
                          client_event_id=client_id if isinstance(client_id, str) else None)
        self.log.errors_sent.append(out["error"])
        if problem:
            self.log.problems.append(problem)
        del out["event_id"]
        await self.send(out)

    def usage(self) -> dict[str, float | int]:
        seconds = trio.current_time() - self.started_at if self.started else 0.0
        return {"seconds": round(seconds, 3), "active_seconds": int(seconds),
                "paused_seconds": 0}

    # -- ending ----------------------------------------------------------------------------------

    async def close_session(self, reason: str, client_event_id: str | None = None) -> None:
        """``session.closed`` (terminal), then a normal close frame; the session ends."""
        if self.closed:
            return
        event: dict[str, Any] = {"type": "session.closed", "reason": reason,
                                 "usage": self.usage(), "session": self.log.session or {}}
        if client_event_id is not None:
            event["client_event_id"] = client_event_id
        await self.send(event)
        self.log.closed_reason = reason
        await self.close_ws(f"closed:{reason}")

    async def close_ws(self, why: str) -> None:
        self.closed = True
        self.log._close(why)
        with trio.move_on_after(2.0, shield=True):
            await self.ws.aclose(1000)
        self.nursery.cancel_scope.cancel()

    async def abort(self, why: str) -> None:
        """Drop the transport without a WebSocket close frame (the client sees 1006)."""
        self.closed = True
        self.log._close(why)
        await trio.aclose_forcefully(self.transport)
        self.nursery.cancel_scope.cancel()

    # -- reading ---------------------------------------------------------------------------------

    async def on_audio_in(self, event: dict[str, Any]) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        """Handle client events in order until either side closes."""
        while not self.closed:
            try:
                raw = await self.ws.get_message()
            except trio_websocket.ConnectionClosed:
                self.log._close("client")
                break
            await self._on_message(raw)
        self.nursery.cancel_scope.cancel()

    async def _on_message(self, raw: str | bytes) -> None:
        try:
            event = json.loads(raw)
        except ValueError:
            event = None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            await self.error("invalid_json", "The message is not a JSON event object.",
                             problem=f"unparsable message: {raw[:80]!r}")
            return
        kind = event["type"]
        if kind != AUDIO_IN:
            self.log.client_messages.append(event)
        try:
            check_event(event)
            if not self.started and kind != "session.start":
                raise WireError("session_not_started",
                                f"'{kind}' before session.start: send session.start first.")
            if self.started and kind == "session.start":
                raise WireError("session_already_started", "The session has already started.")
            if kind == AUDIO_IN:
                await self.on_audio_in(event)
            elif kind in self.handlers:
                await self.handlers[kind](event)
        except WireError as exc:
            await self.error(exc.code, exc.message, param=exc.param, event=event,
                             problem=f"{kind} refused: {exc.code}: {exc.message}")
        self.log._bump(False, kind)
