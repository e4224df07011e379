"""Pipeline stages against their protocol mocks in virtual time: one :class:`Net` whose HTTP
requests and WebSockets run over in-memory streams to the mocks (by host, and for WebSockets by
path, e.g. Deepgram's /v1/listen and /v1/speak on one host)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio
import trio.testing
import trio_websocket

from media_sidecar.pipeline.base import Net, ProviderError
from tests.mocks.common import MockWsServer
from tests.mocks.http import MockHttpServer, open_memory_transport

KEYS = {"OPENAI_API_KEY": "test-key", "DEEPGRAM_API_KEY": "test-key"}


def ws_router(routes: Mapping[str, MockWsServer]):
    """A connector: ``routes`` maps "host/path-prefix" to the mock serving it."""

    @asynccontextmanager
    async def connect(url: str, headers: list[tuple[bytes, bytes]]
                      ) -> AsyncIterator[trio_websocket.WebSocketConnection]:
        parts = urlsplit(url)
        key = next((k for k in routes if f"{parts.hostname}{parts.path}".startswith(k)), None)
        if key is None:
            raise OSError(f"no mock for {parts.hostname}{parts.path}")
        client, server = trio.testing.memory_stream_pair()
        resource = parts.path + (f"?{parts.query}" if parts.query else "")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(routes[key].serve_stream, server)
            ws = await trio_websocket.wrap_client_stream(
                nursery, client, parts.hostname or "", resource,  # type: ignore[arg-type]
                extra_headers=headers)
            try:
                yield ws
            finally:
                await ws.aclose()
                nursery.cancel_scope.cancel()

    return connect


@asynccontextmanager
async def pipeline_net(http: Mapping[str, MockHttpServer] | None = None,
                       ws: Mapping[str, MockWsServer] | None = None) -> AsyncIterator[Net]:
    async with open_memory_transport(dict(http or {})) as transport:
        net = Net(transport=transport, connect=ws_router(dict(ws or {})))
        try:
            yield net
        finally:
            await net.aclose()


__all__ = ["KEYS", "ProviderError", "pipeline_net", "ws_router"]
