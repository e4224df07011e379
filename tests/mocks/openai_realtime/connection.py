"""The plumbing of one mock connection: ids, the effective session config, sending server events
(shielded, counted in the :class:`SessionLog`), ``error`` events, and the reader loop that
dispatches client events to the handlers the subclasses define.

Class chain: ``_Connection`` (here) -> ``_Responses`` (responses.py: the output side) ->
``_Session`` (session.py: session.update, input audio, conversation items).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio
import trio_websocket

from tests.mocks.openai_realtime.script import RealtimeScript, SessionLog
from tests.mocks.openai_realtime.wire import PCM24, SEND_TIMEOUT, SERVER_VAD_DEFAULTS

if TYPE_CHECKING:
    from tests.mocks.openai_realtime.server import MockRealtimeServer

Handler = Callable[[dict[str, Any]], Awaitable[None]]


class _Connection:
    """One connection's plumbing. Sends are shielded so a cancellation (barge-in) lands between
    frames, never inside one; a peer that is gone or stuck ends the session quietly."""

    handlers: dict[str, Handler]
    """Client event type -> handler; ``input_audio_buffer.append`` is dispatched separately."""

    def __init__(
        self,
        server: MockRealtimeServer,
        ws: trio_websocket.WebSocketConnection,
        log: SessionLog,
        nursery: trio.Nursery,
        transport: trio.abc.Stream,
    ) -> None:
        self.server, self.ws, self.log = server, ws, log
        self.script: RealtimeScript = server.script
        self.nursery, self.transport = nursery, transport
        self.closed = False
        self._events = itertools.count(1)
        self._ids: dict[str, itertools.count[int]] = {}
        self.items: dict[str, dict[str, Any]] = {}
        self.last_item_id: str | None = None
        self.config = self._default_config(log.model or "gpt-realtime")
        log.session = self.config

    def new_id(self, prefix: str) -> str:
        counter = self._ids.setdefault(prefix, itertools.count(1))
        return f"{prefix}_{next(counter):03d}"

    def _default_config(self, model: str) -> dict[str, Any]:
        out_fmt = dict(self.script.confirm_format or PCM24)
        return {
            "id": self.new_id("sess"),
            "object": "realtime.session",
            "type": "realtime",
            "model": model,
            "output_modalities": ["audio"],
            "instructions": "",
            "audio": {
                "input": {
                    "format": dict(PCM24),
                    "transcription": None,
                    "noise_reduction": None,
                    "turn_detection": dict(SERVER_VAD_DEFAULTS),
                },
                "output": {"format": out_fmt, "voice": "marin", "speed": 1.0},
            },
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "tracing": None,
            "prompt": None,
            "expires_at": int(time.time()) + 3600,
            "include": None,
        }

    @property
    def in_fmt(self) -> dict[str, Any]:
        return self.config["audio"]["input"]["format"]  # type: ignore[no-any-return]

    @property
    def out_fmt(self) -> dict[str, Any]:
        return self.config["audio"]["output"]["format"]  # type: ignore[no-any-return]

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        return self.config["audio"]["input"]["turn_detection"]  # type: ignore[no-any-return]

    def _store(self, item: dict[str, Any]) -> None:
        self.items[item["id"]] = item
        self.last_item_id = item["id"]

    # -- plumbing ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Send session.created, then handle client events until the client goes away."""
        await self.send("session.created", session=self.config)
        if self.script.close_after_seconds is not None:
            self.nursery.start_soon(self._expire, self.script.close_after_seconds)
        while not self.closed:
            try:
                message = await self.ws.get_message()
            except trio_websocket.ConnectionClosed:
                self.log._close("client")
                break
            await self._dispatch(message)
        self.nursery.cancel_scope.cancel()

    async def send(self, type_name: str, **fields: Any) -> None:
        """Send one server event. Shielded: a cancel lands before or after a frame, never in it.
        A closed or stuck peer ends the session (the nursery is cancelled); nothing raises."""
        if self.closed:
            return
        event = {"type": type_name, "event_id": f"event_{next(self._events)}", **fields}
        text = json.dumps(event)
        failed = False
        with trio.CancelScope(shield=True, deadline=trio.current_time() + SEND_TIMEOUT) as scope:
            try:
                await self.ws.send_message(text)
            except trio_websocket.ConnectionClosed:
                failed = True
        if failed or scope.cancelled_caught:
            self.closed = True
            self.log._close("send_failed")
            self.nursery.cancel_scope.cancel()
            return
        if type_name == "response.output_audio.delta":
            self.log.audio_deltas_sent += 1
        else:
            self.log.server_events.append(event)
        self.log._bump(True, type_name)

    async def error(
        self,
        code: str | None,
        message: str,
        *,
        param: str | None = None,
        client_event: dict[str, Any] | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        event_id = client_event.get("event_id") if client_event else None
        await self.send(
            "error",
            error={
                "type": kind,
                "code": code,
                "message": message,
                "param": param,
                "event_id": event_id,
            },
        )

    async def _on_append(self, event: dict[str, Any]) -> None:
        raise NotImplementedError

    async def _dispatch(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            await self.error("invalid_event", "Binary frames are not supported; send JSON text.")
            return
        try:
            event = json.loads(message)
        except ValueError as exc:
            await self.error(
                "invalid_event", f"We could not parse the JSON body of your request. ({exc})"
            )
            return
        if not isinstance(event, dict):
            await self.error("invalid_event", "Events must be JSON objects.")
            return
        type_name = event.get("type")
        if type_name == "input_audio_buffer.append":  # hot path: counted, never stored
            await self._on_append(event)
            self.log._bump(False, type_name)
            return
        self.log.client_events.append(event)
        handler = self.handlers.get(type_name) if isinstance(type_name, str) else None
        if handler is None:
            message = (
                f"Invalid value: '{type_name}'. Supported values are: "
                f"{', '.join(['input_audio_buffer.append', *self.handlers])}."
                if type_name is not None
                else "The 'type' field is missing."
            )
            await self.error("invalid_event", message, param="type", client_event=event)
        else:
            await handler(event)
        self.log._bump(False, str(type_name))

    async def _expire(self, seconds: float) -> None:
        await trio.sleep(seconds)
        self.log._close("close_after_seconds")
        await self.error("session_expired", "Your session hit the maximum duration.")
        self.closed = True
        with trio.move_on_after(2.0):
            await self.ws.aclose(1000, "session expired")
        self.nursery.cancel_scope.cancel()

    async def _abort(self, reason: str) -> None:
        """Drop the transport without a WebSocket close frame (the client sees code 1006)."""
        self.closed = True
        self.log._close(reason)
        await trio.aclose_forcefully(self.transport)
        self.nursery.cancel_scope.cancel()
