"""WebSocket client connections for providers, with the socket always closed.

trio-websocket 0.12's ``open_websocket_url`` leaves its TCP socket open after a refused
handshake or an abnormal close (a ResourceWarning per failed call until the garbage collector
runs). Here the TCP (or TLS) stream is opened by us, handed to ``wrap_client_stream``, and
closed in ``finally`` whatever happens. Handshake failures become :class:`ProviderError`,
permanent for 400/401/403/404 (a bad key or model), retryable otherwise.
"""

from __future__ import annotations

import json
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import trio
import trio_websocket

from .base import ProviderError

Connector = Callable[[str, list[tuple[bytes, bytes]]],
                     AbstractAsyncContextManager[trio_websocket.WebSocketConnection]]
"""Opens a WebSocket to a URL with extra handshake headers (tests pass in-memory ones)."""

PERMANENT_HTTP = frozenset({400, 401, 403, 404})
MAX_MESSAGE = 16 * 1024 * 1024
CLOSE_TIMEOUT = 0.5
"""How long a call's end waits for the provider to answer the WebSocket close."""


def tcp_connector(connect_timeout: float) -> Connector:
    """The production connector: ws:// or wss:// over a stream this module owns."""

    @asynccontextmanager
    async def connect(url: str, headers: list[tuple[bytes, bytes]]
                      ) -> AsyncIterator[trio_websocket.WebSocketConnection]:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ProviderError(f"not a ws:// or wss:// URL: {parts.scheme}://{parts.hostname}",
                                retryable=False)
        tls = parts.scheme == "wss"
        port = parts.port or (443 if tls else 80)
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.hostname if parts.port is None else f"{parts.hostname}:{port}"
        stream: trio.abc.Stream
        with trio.fail_after(connect_timeout):
            if tls:
                stream = await trio.open_ssl_over_tcp_stream(
                    parts.hostname, port, ssl_context=ssl.create_default_context(),
                    https_compatible=True)
            else:
                stream = await trio.open_tcp_stream(parts.hostname, port)
        try:
            async with trio.open_nursery() as nursery:
                with trio.fail_after(connect_timeout):
                    ws = await trio_websocket.wrap_client_stream(
                        nursery, stream, host, resource,  # type: ignore[arg-type]
                        extra_headers=headers, max_message_size=MAX_MESSAGE)
                try:
                    yield ws
                finally:
                    with trio.move_on_after(CLOSE_TIMEOUT) as scope:
                        scope.shield = True
                        await ws.aclose()
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as eg:
            # the nursery wraps what the body raised; callers expect the exception itself
            if len(eg.exceptions) == 1:
                raise eg.exceptions[0] from None
            raise
        finally:
            await trio.aclose_forcefully(stream)

    return connect


@asynccontextmanager
async def open_provider_ws(connect: Connector, url: str, headers: list[tuple[bytes, bytes]],
                           what: str) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """``connect(url, headers)`` with every connection failure turned into ProviderError."""
    try:
        try:
            async with connect(url, headers) as ws:
                yield ws
        except BaseExceptionGroup as eg:
            # a connector's nursery wraps what failed; one failure is handled as itself
            if len(eg.exceptions) != 1:
                raise
            leaf: BaseException = eg
            while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
                leaf = leaf.exceptions[0]
            raise leaf from None
    except trio_websocket.ConnectionRejected as exc:
        status = exc.status_code or 0
        detail = error_message(exc.body) or f"HTTP {status}"
        raise ProviderError(f"{what} refused the connection: HTTP {status}: {detail}",
                            retryable=status not in PERMANENT_HTTP) from None
    except trio.TooSlowError:
        raise ProviderError(f"{what} did not answer the connection in time",
                            retryable=True) from None
    except (trio_websocket.HandshakeError, OSError) as exc:
        raise ProviderError(f"cannot connect to {what}: {type(exc).__name__}: {exc}",
                            retryable=True) from None


def error_message(body: bytes | None) -> str:
    """The readable part of an HTTP error body (OpenAI ``error.message``, Deepgram
    ``err_msg``), at most 200 characters; never the request's headers."""
    if not body:
        return ""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested too deeply to parse
        return body[:200].decode("utf-8", "replace")
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err.get("code") or "")[:200]
        for key in ("err_msg", "message", "description", "err_code"):
            if data.get(key):
                return str(data[key])[:200]
    return body[:200].decode("utf-8", "replace")


MAX_PENDING_MS = 1000
"""Caller audio held while the socket is slow; older audio is dropped beyond this."""


class Outbox:
    """One provider WebSocket's outbound side: JSON control messages, sent first and in order,
    then the caller audio gathered since the last send, in one message framed by ``frame``
    (OpenAI: base64 in a JSON event; Deepgram: the raw bytes). Nothing here blocks the call:
    audio beyond :data:`MAX_PENDING_MS` drops the oldest and is counted."""

    def __init__(self, frame: Callable[[bytes], str | bytes]) -> None:
        self._frame = frame
        self._control: deque[str] = deque()
        self._audio = bytearray()
        self._wake = trio.Event()
        self.frames_dropped = 0
        self.last_audio_sent = 0.0
        """trio time audio last went out (or the sender started)."""

    def send_json(self, message: dict[str, Any]) -> None:
        self._control.append(json.dumps(message, separators=(",", ":")))
        self._wake.set()

    def send_audio(self, data: bytes, bytes_per_ms: int) -> None:
        limit = bytes_per_ms * MAX_PENDING_MS
        if len(self._audio) + len(data) > limit:
            del self._audio[:len(self._audio) + len(data) - limit]
            self.frames_dropped += 1
        self._audio += data
        self._wake.set()

    def clear_audio(self) -> None:
        self._audio.clear()

    async def run(self, ws: trio_websocket.WebSocketConnection) -> None:
        """Send until the connection closes (the receiver reports that)."""
        self.last_audio_sent = trio.current_time()
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                while self._control:
                    await ws.send_message(self._control.popleft())
                if self._audio:
                    message = self._frame(bytes(self._audio))
                    self._audio.clear()
                    self.last_audio_sent = trio.current_time()
                    await ws.send_message(message)
        except trio_websocket.ConnectionClosed:
            return


async def receive(ws: trio_websocket.WebSocketConnection) -> str | bytes:
    """The next message; a closed connection is a ProviderError (permanent only for 1008,
    policy violation: a bad key or request)."""
    try:
        return await ws.get_message()
    except trio_websocket.ConnectionClosed as exc:
        reason = exc.reason
        code = reason.code if reason is not None else 1006
        raise ProviderError(f"connection closed (code {code})", retryable=code != 1008) from None
