"""The HTTP/1.1 shell the REST mocks share: h11 over any trio stream (real TCP or a memory
stream), streamed chunked bodies with real (virtual-)time pacing, per-request records with
waiters, scripted disconnects, and an httpx transport whose connections are memory stream pairs
so a product's ``httpx.AsyncClient`` and the mocks run on trio's autojump clock together.

Subclasses implement :meth:`MockHttpServer.handle`; everything on the wire is done here."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from email.message import Message
from functools import partial
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11
import httpcore
import httpx
import trio
import trio.testing

__all__ = [
    "Disconnect",
    "HttpRequest",
    "HttpResponse",
    "MockHttpServer",
    "RequestRecord",
    "json_response",
    "memory_transport",
    "open_memory_transport",
]

MAX_REQUEST_BYTES = 64 * 1024 * 1024
"""A request body larger than this is refused with 413 (a runaway client, not a test)."""


@dataclass
class HttpRequest:
    """One request as received. ``headers`` has lower-case names; repeats are joined by ", "."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    n: int = 0
    """1-based index of this request in the server's ``records`` (0: not from a server)."""

    def json(self) -> Any:
        """The body as JSON. Raises ValueError (json.JSONDecodeError) on bad JSON."""
        return json.loads(self.body)

    def form(self) -> tuple[dict[str, str], dict[str, tuple[str, str, bytes]]]:
        """A multipart/form-data body as (fields, files): ``files`` maps a part name to
        (filename, content_type, data) for parts with a filename; other parts are text fields.
        Raises ValueError if the body is not multipart/form-data or is malformed."""
        ctype = _header_params(self.headers.get("content-type", ""))
        boundary = ctype.get_param("boundary")
        if ctype.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
            raise ValueError(f"not multipart/form-data: {self.headers.get('content-type')!r}")
        return _parse_multipart(self.body, boundary.encode("latin-1"))


@dataclass
class HttpResponse:
    """What :meth:`MockHttpServer.handle` answers. A bytes body is sent with Content-Length; an
    async iterator is sent chunked, each chunk written as soon as it is yielded."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | AsyncIterator[bytes] = b""


class Disconnect(Exception):
    """Raise inside a streaming body generator: the server drops the connection at once (no
    terminating chunk), like a provider dying mid-response. Raised by
    :meth:`MockHttpServer.handle` itself, the connection is dropped with no response at all."""


@dataclass(eq=False)
class RequestRecord:
    """One request handled and how its response went. The stored request's Authorization
    header is ``"<redacted>"``."""

    request: HttpRequest
    status: int
    started_at: float
    """Runtime clock when the whole request had been received."""
    finished_at: float | None = None
    completed: bool = False
    """The whole response body was written."""
    client_closed: bool = False
    """The client went away before the response was complete."""
    disconnected: bool = False
    """The body generator raised :class:`Disconnect`: the server dropped the connection."""
    chunks_sent: int = 0
    """Body chunks written (1 for a non-empty bytes body)."""
    ended: trio.Event = field(default_factory=trio.Event, repr=False)
    """Set once the response ended, whichever way."""


class MockHttpServer:
    """Serves HTTP/1.1 (keep-alive) over TCP or any trio stream; one :class:`RequestRecord` per
    request in ``records``. Subclasses implement :meth:`handle`."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []
        self.port: int | None = None
        self.connections = 0
        """Connections served so far (keep-alive reuse shows as fewer connections than records)."""
        self._record_added = trio.Event()

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one request; errors are answered as 4xx/5xx responses, not raised (except
        :class:`Disconnect`: drop the connection without answering)."""
        raise NotImplementedError

    async def wait_for_request(self, n: int = 1) -> RequestRecord:
        """The n-th request's record (1-based), once the request has been received."""
        while len(self.records) < n:
            await self._record_added.wait()
        return self.records[n - 1]

    async def wait_finished(self, n: int = 1) -> RequestRecord:
        """The n-th request's record once its response ended (completed, client closed or
        disconnected)."""
        record = await self.wait_for_request(n)
        await record.ended.wait()
        return record

    async def serve(self, host: str = "127.0.0.1", port: int = 0, *,
                    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on host:port until cancelled; ``task_status.started(bound_port)``."""
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, self.serve_stream, port,
                                                    host=host))
            self.port = int(listeners[0].socket.getsockname()[1])
            task_status.started(self.port)

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one connection (many requests with keep-alive) until the client closes it, a
        response forbids reuse, or cancellation; always closes the stream. Raises what
        :meth:`handle` raises (a bug in the mock)."""
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                try:
                    request = await _read_request(conn, stream)
                except h11.RemoteProtocolError as exc:
                    await _send_error_quietly(conn, stream, exc.error_status_hint, str(exc))
                    return
                if request is None:
                    return
                await self._respond(conn, stream, request)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        finally:
            await trio.aclose_forcefully(stream)

    async def _respond(self, conn: h11.Connection, stream: trio.abc.Stream,
                       request: HttpRequest) -> None:
        request.n = len(self.records) + 1
        stored = request
        if "authorization" in request.headers:
            stored = replace(request, headers={**request.headers, "authorization": "<redacted>"})
        record = RequestRecord(request=stored, status=0, started_at=trio.current_time())
        self.records.append(record)
        self._record_added.set()
        self._record_added = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                # The watcher is the only reader while the response is out: it notices the
                # client closing even while the body generator sleeps between chunks.
                nursery.start_soon(_watch_client, conn, stream, record, nursery.cancel_scope)
                try:
                    response = await self.handle(request)
                except Disconnect:
                    record.disconnected = True
                else:
                    record.status = response.status
                    await _send_response(conn, stream, response, record)
                nursery.cancel_scope.cancel()
        finally:
            record.finished_at = trio.current_time()
            record.ended.set()


async def _read_request(conn: h11.Connection, stream: trio.abc.Stream) -> HttpRequest | None:
    """The next whole request, or None once the client closed the connection."""
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            conn.receive_data(bytes(data))
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_REQUEST_BYTES:
                raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
        elif isinstance(event, h11.EndOfMessage) and head is not None:
            return _build_request(head, bytes(body))
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


def _build_request(head: h11.Request, body: bytes) -> HttpRequest:
    headers: dict[str, str] = {}
    for name, value in head.headers:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    target = urlsplit(head.target.decode("latin-1"))
    return HttpRequest(
        method=head.method.decode("ascii"),
        path=target.path,
        query=parse_qs(target.query, keep_blank_values=True),
        headers=headers,
        body=body,
    )


async def _watch_client(conn: h11.Connection, stream: trio.abc.Stream, record: RequestRecord,
                        scope: trio.CancelScope) -> None:
    """Until cancelled: buffer whatever the client sends (a pipelined request) into h11; on
    EOF or a broken stream mark ``client_closed`` and cancel the response."""
    while True:
        try:
            data = await stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            record.client_closed = True
            scope.cancel()
            return
        conn.receive_data(bytes(data))


async def _send_response(conn: h11.Connection, stream: trio.abc.Stream, response: HttpResponse,
                         record: RequestRecord) -> None:
    """Write the response; sets the record's completed / client_closed / disconnected."""
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    names = {k.lower() for k, _ in headers}
    body = response.body
    if isinstance(body, bytes):
        if b"content-length" not in names:
            headers.append((b"Content-Length", str(len(body)).encode()))
    elif b"transfer-encoding" not in names:
        headers.append((b"Transfer-Encoding", b"chunked"))
    try:
        await _send(conn, stream, h11.Response(status_code=response.status, headers=headers))
        if isinstance(body, bytes):
            if body:
                await _send(conn, stream, h11.Data(data=body))
                record.chunks_sent += 1
        else:
            try:
                async for chunk in body:
                    if chunk:
                        await _send(conn, stream, h11.Data(data=chunk))
                        record.chunks_sent += 1
            except Disconnect:
                record.disconnected = True
                return
            finally:
                aclose = getattr(body, "aclose", None)
                if aclose is not None:
                    with trio.CancelScope(shield=True):
                        await aclose()
        await _send(conn, stream, h11.EndOfMessage())
        record.completed = True
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        record.client_closed = True


async def _send(conn: h11.Connection, stream: trio.abc.Stream, event: h11.Event) -> None:
    data = conn.send(event)
    if data:
        await stream.send_all(data)


async def _send_error_quietly(conn: h11.Connection, stream: trio.abc.Stream, status: int,
                              message: str) -> None:
    """Answer an unparsable request if h11 still lets us; a gone client is ignored."""
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    body = json.dumps({"error": message}).encode()
    headers = [(b"Content-Type", b"application/json"),
               (b"Content-Length", str(len(body)).encode()), (b"Connection", b"close")]
    try:
        await _send(conn, stream, h11.Response(status_code=status, headers=headers))
        await _send(conn, stream, h11.Data(data=body))
        await _send(conn, stream, h11.EndOfMessage())
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
        pass


def json_response(status: int, payload: Any,
                  headers: list[tuple[str, str]] | None = None) -> HttpResponse:
    """A JSON response (Content-Type application/json) with extra headers, if any."""
    return HttpResponse(status, [("Content-Type", "application/json"), *(headers or [])],
                        json.dumps(payload).encode())


# -- multipart/form-data -------------------------------------------------------------------------

def _header_params(value: str) -> Message:
    message = Message()
    message["content-type"] = value
    return message


def _parse_multipart(body: bytes, boundary: bytes
                     ) -> tuple[dict[str, str], dict[str, tuple[str, str, bytes]]]:
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, str, bytes]] = {}
    delimiter = b"--" + boundary
    pieces = body.split(delimiter)
    if len(pieces) < 3 or not pieces[-1].startswith(b"--"):
        raise ValueError("multipart body without its closing boundary")
    for piece in pieces[1:-1]:
        if not piece.startswith(b"\r\n") or not piece.endswith(b"\r\n"):
            raise ValueError("multipart part not delimited by CRLF")
        head, sep, data = piece[2:-2].partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("multipart part without a blank line after its headers")
        part_headers = Message()
        for line in head.decode("utf-8").split("\r\n"):
            key, colon, value = line.partition(":")
            if not colon:
                raise ValueError(f"bad multipart header line {line!r}")
            part_headers[key.strip()] = value.strip()
        name = part_headers.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise ValueError("multipart part without a name")
        filename = part_headers.get_param("filename", header="content-disposition")
        if isinstance(filename, str):
            ctype = part_headers.get("content-type", "application/octet-stream")
            files[name] = (filename, str(ctype), data)
        else:
            fields[name] = data.decode("utf-8")
    return fields, files


# -- httpx over memory streams ---------------------------------------------------------------------

_Spawn = Callable[["MockHttpServer", trio.abc.Stream], object]
"""Starts ``server.serve_stream(stream)`` as a task somewhere."""


@contextmanager
def _map_timeout(timeout: float | None, error: type[Exception],
                 timeout_error: type[Exception]) -> Iterator[None]:
    try:
        with trio.fail_after(timeout if timeout is not None else float("inf")):
            yield
    except trio.TooSlowError as exc:
        raise timeout_error(str(exc)) from exc
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise error(str(exc) or type(exc).__name__) from exc


class _MemoryNetworkStream(httpcore.AsyncNetworkStream):
    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        with _map_timeout(timeout, httpcore.ReadError, httpcore.ReadTimeout):
            return bytes(await self._stream.receive_some(max_bytes))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if buffer:
            with _map_timeout(timeout, httpcore.WriteError, httpcore.WriteTimeout):
                await self._stream.send_all(buffer)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self._stream)

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:  # noqa: ASYNC109
        return self  # https over a memory stream: no TLS, the mock reads plain HTTP

    def get_extra_info(self, info: str) -> Any:
        return None


class _MemoryBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, servers: Mapping[str, MockHttpServer], spawn: _Spawn) -> None:
        self._servers = servers
        self._spawn = spawn
        self.closed = False

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109
                          local_address: str | None = None,
                          socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        server = self._servers.get(host)
        if server is None or self.closed:
            raise httpcore.ConnectError(f"no mock server for host {host!r}" if server is None
                                        else "memory transport closed")
        client_side, server_side = trio.testing.memory_stream_pair()
        self._spawn(server, server_side)
        return _MemoryNetworkStream(client_side)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("no unix sockets in the memory transport")

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


_EXCEPTIONS: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.ProtocolError: httpx.ProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
}


@contextmanager
def _map_httpcore_exceptions() -> Iterator[None]:
    """httpcore errors as the httpx errors httpx.AsyncHTTPTransport raises for them."""
    try:
        yield
    except Exception as exc:
        mapped = next((_EXCEPTIONS[t] for t in type(exc).__mro__ if t in _EXCEPTIONS), None)
        if mapped is None:
            raise
        raise mapped(str(exc)) from exc


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _map_httpcore_exceptions():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            await aclose()


class MemoryTransport(httpx.AsyncBaseTransport):
    """httpx transport to mock servers over memory streams (see :func:`open_memory_transport`)."""

    def __init__(self, servers: Mapping[str, MockHttpServer], spawn: _Spawn) -> None:
        self._backend = _MemoryBackend(servers, spawn)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # never handshakes; no CA loading
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context, http1=True, http2=False, network_backend=self._backend)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Mirrors httpx.AsyncHTTPTransport: httpx request -> httpcore -> streamed response."""
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=request.url.raw_scheme, host=request.url.raw_host,
                             port=request.url.port, target=request.url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _map_httpcore_exceptions():
            response = await self._pool.handle_async_request(core_request)
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(status_code=response.status, headers=response.headers,
                              stream=_ResponseStream(response.stream),
                              extensions=response.extensions)

    async def aclose(self) -> None:
        await self._pool.aclose()


@asynccontextmanager
async def open_memory_transport(servers: Mapping[str, MockHttpServer]
                                ) -> AsyncIterator[MemoryTransport]:
    """An httpx transport whose connections are memory stream pairs served by
    ``servers[host]`` (the URL's host name; the port is ignored; https works, without TLS) in a
    nursery this context owns, so client and mocks share trio's clock. An unknown host raises
    httpx.ConnectError. At exit every connection is closed (server side; the server tasks are
    cancelled). An exception raised by a mock's handler propagates out of the block."""
    async with trio.open_nursery() as nursery:
        transport = MemoryTransport(
            servers, lambda server, stream: nursery.start_soon(server.serve_stream, stream))
        try:
            yield transport
        finally:
            transport._backend.closed = True
            nursery.cancel_scope.cancel()


def memory_transport(servers: Mapping[str, MockHttpServer]) -> MemoryTransport:
    """As :func:`open_memory_transport` without a context: each connection's server task is a
    trio system task (cancelled when the run ends). A handler exception then crashes the run
    (TrioInternalError), so prefer the context-manager form."""
    return MemoryTransport(servers, lambda server, stream: trio.lowlevel.spawn_system_task(
        server.serve_stream, stream))
