"""What the Deepgram listen and speak mocks share: the upgrade helpers (headers, auth, scripted
and real refusals) and the session's plumbing (sending, shielded and bounded; the close with a
code, the abort without one, the idle timer, parsing a client text frame)."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

import trio
import trio_websocket

HEADERS_OF_INTEREST = ("authorization", "sec-websocket-protocol", "user-agent", "x-dg-tag")


def request_headers(request: trio_websocket.WebSocketRequest) -> dict[str, str]:
    """The upgrade's headers, lower-case names."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}


def redacted_headers(headers: dict[str, str]) -> dict[str, str]:
    """The headers worth logging, the credential redacted (``Token ***``)."""
    out = {k: headers[k] for k in HEADERS_OF_INTEREST if k in headers}
    if "authorization" in out:
        out["authorization"] = out["authorization"].split(" ")[0] + " ***"
    if "sec-websocket-protocol" in out:
        out["sec-websocket-protocol"] = "***"
    return out


def authenticate(
    request: trio_websocket.WebSocketRequest, headers: dict[str, str], api_key: str
) -> str | None:
    """``Token`` | ``Bearer`` (``Authorization: <scheme> <key>``) or ``subprotocol``
    (``Sec-WebSocket-Protocol: token, <key>``, the browser style); None if refused."""
    scheme, _, key = headers.get("authorization", "").partition(" ")
    if scheme in ("Token", "Bearer") and key == api_key:
        return scheme
    if list(request.proposed_subprotocols) == ["token", api_key]:
        return "subprotocol"
    return None


def scripted_refusal(status: int) -> tuple[int, str, str]:
    """(status, err_code, err_msg) of a scripted refusal (503 -> SERVICE_UNAVAILABLE)."""
    phrase = HTTPStatus(status).phrase
    return status, phrase.upper().replace(" ", "_"), f"{phrase} (scripted)."


async def refuse(
    request: trio_websocket.WebSocketRequest, request_id: str, status: int, code: str, message: str
) -> None:
    """Answer the upgrade with an HTTP error as Deepgram does: a JSON body
    ``{"err_code", "err_msg", "request_id"}`` and the ``dg-request-id`` / ``dg-error`` headers."""
    body = {"err_code": code, "err_msg": message, "request_id": request_id}
    await request.reject(
        status,
        extra_headers=[
            (b"Content-Type", b"application/json"),
            (b"dg-request-id", request_id.encode()),
            (b"dg-error", message.encode("utf-8")),
        ],
        body=json.dumps(body, separators=(",", ":")).encode(),
    )


def transport_of(request: trio_websocket.WebSocketRequest) -> trio.abc.Stream:
    """The connection's byte stream, to drop it without a close frame (a scripted fault)."""
    # trio-websocket has no public way to drop the TCP connection without a close frame;
    # 0.12.x keeps the stream here.
    return request._connection._stream  # type: ignore[attr-defined, no-any-return]


SEND_TIMEOUT = 30.0
"""A client that does not drain a message within this long is treated as gone."""


class DeepgramWsSession:
    """Subclasses set ``ws``, ``transport``, ``log`` (an EventLog with ``close_code``,
    ``problems``, ``client_messages``, ``server_messages``), ``nursery``, ``closed`` and
    ``last_activity`` in their ``__init__``."""

    ws: trio_websocket.WebSocketConnection
    transport: trio.abc.Stream
    log: Any
    nursery: trio.Nursery
    closed: bool
    last_activity: float

    async def _send_frame(self, payload: str | bytes) -> bool:
        """Send one frame. Shielded: a cancel lands before or after it, never inside. A peer
        that is gone or does not drain it within SEND_TIMEOUT ends the session."""
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

    async def send(self, message: dict[str, Any]) -> None:
        """Send one JSON message and log it."""
        if await self._send_frame(json.dumps(message)):
            self.log.server_messages.append(message)
            self.log._bump(True, message["type"])

    async def _close(self, code: int, reason: str, why: str) -> None:
        """Close the WebSocket with ``code``/``reason`` and end the session."""
        if self.closed:
            return
        self.closed = True
        self.log.close_code = code
        self.log._close(why)
        with trio.move_on_after(2.0, shield=True):
            await self.ws.aclose(code, reason)
        self.nursery.cancel_scope.cancel()

    async def _abort(self, why: str) -> None:
        """Drop the transport without a close frame (the client sees 1006)."""
        self.closed = True
        self.log._close(why)
        await trio.aclose_forcefully(self.transport)
        self.nursery.cancel_scope.cancel()

    async def _idle_watch(self, idle: float) -> None:
        while True:
            await trio.sleep_until(self.last_activity + idle)
            if trio.current_time() >= self.last_activity + idle:
                await self._close(1011, "NET-0001", "idle")
                return

    async def _parse_text(self, text: str) -> dict[str, Any] | None:
        """The client's JSON message, logged; anything else closes 1008 DATA-0000."""
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            self.log.problems.append(f"unparsable text message: {text[:80]!r}")
            await self._close(1008, "DATA-0000", "undecodable")
            return None
        self.log.client_messages.append(message)
        return message
