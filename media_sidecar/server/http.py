"""A small HTTP/1.1 server shell for trio: h11 moves the bytes, a handler answers GETs.

For the sidecar's own endpoints (health and metrics); it is not a web framework. Requests
have no body worth reading (any body is read and discarded, bounded), keep-alive is honoured,
and a connection idle for :data:`IDLE_SECONDS` or a request slower than that is closed.
A malformed request gets 400 and the connection is closed; it never affects another one.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h11
import trio

log = logging.getLogger("agi_voice.http")

IDLE_SECONDS = 10.0
MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[str, str], Awaitable[Response]]
"""(method, target) -> response. Only GET and HEAD reach it."""


async def serve_http(handler: Handler, listeners: list[trio.SocketListener], *,
                     task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve on already bound listeners (``trio.open_tcp_listeners``) until cancelled;
    reports the bound port."""
    bound = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(
            trio.serve_listeners, functools.partial(serve_connection, handler), listeners))
        task_status.started(bound)


async def serve_connection(handler: Handler, stream: trio.abc.Stream) -> None:
    """Serve one connection until the peer closes, an error, or an idle timeout."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    try:
        while True:
            with trio.move_on_after(IDLE_SECONDS) as idle:
                request = await _next_request(conn, stream)
            if idle.cancelled_caught or request is None:
                return
            if request.method not in (b"GET", b"HEAD"):
                resp = Response(405, b"method not allowed\n", headers=[("Allow", "GET, HEAD")])
            else:
                try:
                    resp = await handler(request.method.decode(), request.target.decode("ascii",
                                                                                        "replace"))
                except Exception:
                    log.exception("HTTP handler failed for %r", request.target)
                    resp = Response(500, b"internal error\n")
            await _send(conn, stream, resp, head_only=request.method == b"HEAD")
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except h11.RemoteProtocolError as exc:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            try:
                await _send(conn, stream, Response(exc.error_status_hint, b"bad request\n"),
                            head_only=False)
            except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
                pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(stream)


async def _next_request(conn: h11.Connection, stream: trio.abc.Stream) -> h11.Request | None:
    """The next request with its body read and discarded; None when the peer closed."""
    request: h11.Request | None = None
    body = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(16384)
            conn.receive_data(bytes(data))  # b"" tells h11 the peer closed
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += len(event.data)
            if body > MAX_BODY_BYTES:
                raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
        elif isinstance(event, h11.EndOfMessage):
            return request
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


async def _send(conn: h11.Connection, stream: trio.abc.Stream, resp: Response, *,
                head_only: bool) -> None:
    headers = [("Content-Type", resp.content_type), ("Content-Length", str(len(resp.body))),
               ("Cache-Control", "no-store"), *resp.headers]
    out = conn.send(h11.Response(status_code=resp.status, headers=headers)) or b""
    if not head_only and resp.body:
        out += conn.send(h11.Data(data=resp.body)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(out)
