"""Provider factories whose WebSocket runs over an in-memory stream to a protocol mock, so the
product's real provider clients and the mock share trio's virtual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import trio
import trio.testing
import trio_websocket

from media_sidecar.providers import make_setup
from media_sidecar.providers.deepgram_agent import DeepgramAgentSession
from media_sidecar.providers.openai_realtime import OpenAIRealtimeSession


def memory_connector(serve_stream: Callable[[trio.abc.Stream], Awaitable[None]], host: str):
    @asynccontextmanager
    async def connect(url: str, headers: list[tuple[bytes, bytes]]
                      ) -> AsyncIterator[trio_websocket.WebSocketConnection]:
        client, server = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_stream, server)
            resource = "/" + url.split("//", 1)[1].split("/", 1)[1]
            ws = await trio_websocket.wrap_client_stream(
                nursery, client, host, resource, extra_headers=headers)  # type: ignore[arg-type]
            try:
                yield ws
            finally:
                await ws.aclose()
                nursery.cancel_scope.cancel()

    return connect


def openai_factory(mock, key: str = "test-key"):
    connect = memory_connector(mock.serve_stream, "api.openai.com")

    def factory(assistant, context):
        return OpenAIRealtimeSession(assistant.realtime, make_setup(assistant, context),
                                     env={"OPENAI_API_KEY": key}, connect=connect)

    return factory


def deepgram_factory(mock, key: str = "test-key"):
    connect = memory_connector(mock.serve_stream, "agent.deepgram.com")

    def factory(assistant, context):
        return DeepgramAgentSession(assistant.deepgram, make_setup(assistant, context),
                                    env={"DEEPGRAM_API_KEY": key}, connect=connect)

    return factory
