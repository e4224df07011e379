"""The shared HTTP/1.1 mock shell (tests/mocks/http.py) against a real httpx.AsyncClient: over
the memory transport under the autojump clock (exact virtual timings), and once over loopback TCP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from tests.mocks.http import (
    Disconnect,
    HttpRequest,
    HttpResponse,
    MockHttpServer,
    json_response,
    memory_transport,
    open_memory_transport,
)


class EchoServer(MockHttpServer):
    """``/stream``: three chunks ``gap`` s apart; ``/die``: one chunk, then Disconnect;
    ``/drop``: Disconnect with no response; ``/form``: the parsed multipart form; anything else:
    a JSON echo of the request."""

    def __init__(self, gap: float = 0.5) -> None:
        super().__init__()
        self.gap = gap
        self.requests: list[HttpRequest] = []

    async def handle(self, request: HttpRequest) -> HttpResponse:
        self.requests.append(request)
        if request.path == "/stream":
            return HttpResponse(200, [("Content-Type", "text/plain")], self._chunks(3))
        if request.path == "/die":
            return HttpResponse(200, [], self._die())
        if request.path == "/drop":
            raise Disconnect
        if request.path == "/form":
            try:
                fields, files = request.form()
            except ValueError as exc:
                return json_response(400, {"error": str(exc)})
            return json_response(200, {"fields": fields, "files": {
                k: [f, c, d.hex()] for k, (f, c, d) in files.items()}})
        return json_response(200, {"method": request.method, "path": request.path,
                                   "query": request.query, "body": request.body.decode()})

    async def _chunks(self, n: int) -> AsyncIterator[bytes]:
        for i in range(n):
            await trio.sleep(self.gap)
            yield f"chunk{i};".encode()

    async def _die(self) -> AsyncIterator[bytes]:
        yield b"partial"
        await trio.sleep(0.1)
        raise Disconnect


async def read_one_chunk(client: httpx.AsyncClient, url: str) -> bytes:
    """Stream ``url`` and stop after the first chunk the way a barge-in does: by cancellation.
    (A ``break`` out of ``aiter_raw`` would leave httpx's and httpcore's async generators
    suspended, and trio warns about each when they are garbage collected: the same
    goes for ``break`` or ``return`` inside the loop.)"""
    chunks = []
    async with client.stream("GET", url) as response:
        with trio.CancelScope() as scope:
            async for chunk in response.aiter_raw():
                chunks.append(chunk)
                scope.cancel()  # the next read raises Cancelled through every generator
    return chunks[0]


async def test_plain_request_round_trip_and_keep_alive(autojump_clock: trio.abc.Clock) -> None:
    server = EchoServer()
    async with open_memory_transport({"api.example.com": server}) as transport:
        async with httpx.AsyncClient(transport=transport) as client:
            r1 = await client.post("https://api.example.com/v1/x?a=1&a=2&b=",
                                   content=b"hello", headers={"Authorization": "Bearer k"})
            r2 = await client.get("https://api.example.com/other")
    assert r1.status_code == 200
    assert r1.json() == {"method": "POST", "path": "/v1/x", "query": {"a": ["1", "2"], "b": [""]},
                         "body": "hello"}
    assert r2.json()["path"] == "/other"
    assert server.connections == 1  # keep-alive: both requests on one connection
    assert [r.completed for r in server.records] == [True, True]
    assert server.requests[0].headers["authorization"] == "Bearer k"
    assert server.records[0].request.headers["authorization"] == "<redacted>"
    assert server.records[0].status == 200 and server.records[0].chunks_sent == 1


async def test_streamed_body_arrives_chunk_by_chunk_in_virtual_time(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = EchoServer()
    arrivals: list[tuple[float, bytes]] = []
    async with open_memory_transport({"localhost": server}) as transport:
        async with httpx.AsyncClient(transport=transport) as client:
            start = trio.current_time()
            async with client.stream("GET", "http://localhost:8080/stream") as response:
                assert response.headers["transfer-encoding"] == "chunked"
                async for chunk in response.aiter_raw():
                    arrivals.append((trio.current_time() - start, chunk))
    assert arrivals == [(0.5, b"chunk0;"), (1.0, b"chunk1;"), (1.5, b"chunk2;")]
    record = await server.wait_finished(1)
    assert record.completed and not record.client_closed and record.chunks_sent == 3
    assert record.finished_at is not None and record.finished_at - record.started_at == 1.5


async def test_closing_the_response_early_marks_client_closed(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = EchoServer()
    async with open_memory_transport({"localhost": server}) as transport:
        async with httpx.AsyncClient(transport=transport) as client:
            await read_one_chunk(client, "http://localhost/stream")
            closed_at = trio.current_time()
            record = await server.wait_finished(1)
            assert record.client_closed and not record.completed
            assert record.chunks_sent == 1
            # noticed at once, not at the next chunk 0.5 s later
            assert record.finished_at == closed_at == 0.5
            # the pool opens a fresh connection for the next request
            assert (await client.get("http://localhost/again")).status_code == 200
    assert server.connections == 2


async def test_disconnect_drops_the_connection_mid_body(autojump_clock: trio.abc.Clock) -> None:
    server = EchoServer()
    received = b""
    async with open_memory_transport({"localhost": server}) as transport:
        async with httpx.AsyncClient(transport=transport) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                async with client.stream("GET", "http://localhost/die") as response:
                    async for chunk in response.aiter_raw():
                        received += chunk
    assert received == b"partial"
    record = server.records[0]
    assert record.disconnected and not record.completed and record.finished_at == 0.1


async def test_disconnect_from_handle_drops_without_a_response(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = EchoServer()
    async with open_memory_transport({"localhost": server}) as transport:
        async with httpx.AsyncClient(transport=transport) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get("http://localhost/drop")
            assert (await client.get("http://localhost/next")).status_code == 200
    assert server.records[0].disconnected and server.records[0].status == 0
    assert [r.request.n for r in server.records] == [1, 2] and server.connections == 2


async def test_unknown_host_is_a_connect_error(autojump_clock: trio.abc.Clock) -> None:
    async with open_memory_transport({"localhost": EchoServer()}) as transport:
        async with httpx.AsyncClient(transport=transport) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get("http://elsewhere/")


async def test_wait_for_request_waits_for_the_request(autojump_clock: trio.abc.Clock) -> None:
    server = EchoServer()
    async with open_memory_transport({"localhost": server}) as transport:
        async with httpx.AsyncClient(transport=transport) as client, trio.open_nursery() as n:
            async def later() -> None:
                await trio.sleep(2)
                await client.get("http://localhost/late")
            n.start_soon(later)
            record = await server.wait_for_request(1)
            assert record.request.path == "/late" and trio.current_time() == 2


async def test_multipart_form_is_parsed(autojump_clock: trio.abc.Clock) -> None:
    server = EchoServer()
    audio = bytes(range(256)) + b"\r\n--not-a-boundary\r\n"
    async with open_memory_transport({"localhost": server}) as transport:
        async with httpx.AsyncClient(transport=transport) as client:
            r = await client.post("http://localhost/form", data={"model": "whisper-1"},
                                  files={"file": ("a.wav", audio, "audio/wav")})
            bad = await client.post("http://localhost/form", json={"x": 1})
    assert r.json() == {"fields": {"model": "whisper-1"},
                        "files": {"file": ["a.wav", "audio/wav", audio.hex()]}}
    assert bad.status_code == 400 and "multipart" in bad.json()["error"]
    assert server.requests[-1].json() == {"x": 1}
    with pytest.raises(ValueError):
        HttpRequest("POST", "/", {}, {}, b"{bad").json()


async def test_memory_transport_without_a_context(autojump_clock: trio.abc.Clock) -> None:
    server = EchoServer()
    async with httpx.AsyncClient(transport=memory_transport({"localhost": server})) as client:
        assert (await client.get("http://localhost/x")).json()["path"] == "/x"


async def test_streaming_over_loopback_tcp() -> None:
    server = EchoServer(gap=0.02)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        assert server.port == port
        async with httpx.AsyncClient() as client:
            async with client.stream("GET", f"http://127.0.0.1:{port}/stream") as response:
                body = b"".join([c async for c in response.aiter_raw()])
            echo = await client.post(f"http://127.0.0.1:{port}/e", content=b"x")
            await read_one_chunk(client, f"http://127.0.0.1:{port}/stream")
            record = await server.wait_finished(3)
        nursery.cancel_scope.cancel()
    assert body == b"chunk0;chunk1;chunk2;" and echo.json()["body"] == "x"
    assert server.connections == 1  # keep-alive
    assert record.client_closed and record.chunks_sent == 1
