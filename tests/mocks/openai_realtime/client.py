"""A raw client for the mock: every server event kept with its arrival time, helpers that speak
(20 ms mu-law frames in runtime time), update the session, send user text, tool outputs and
``response.create``; connections over an in-memory stream (for the autojump clock) or real TCP.
Used by tests/unit/test_mock_openai_realtime.py; nothing in the mock imports it."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import trio
import trio.testing
import trio_websocket

from media_sidecar.dsp.g711 import ulaw_encode
from tests.mocks.client import RawClient
from tests.mocks.openai_realtime.script import SessionLog
from tests.mocks.openai_realtime.server import MockRealtimeServer

URL = "/v1/realtime?model=gpt-realtime"
AUTH = [(b"Authorization", b"Bearer test-key")]
PCMU = {"type": "audio/pcmu"}
LOUD_20MS = ulaw_encode((8000 * np.sin(2 * np.pi * 1000 * np.arange(160) / 8000)).astype("<i2"))
QUIET_20MS = ulaw_encode(np.zeros(160, dtype="<i2"))


class Client(RawClient):
    """A raw client: every server event is kept with its arrival time (runtime clock)."""

    def types(self, start: int = 0) -> list[str]:
        """Event types from index ``start``; a run of interleaved ``*.delta`` events is listed once
        per type, in order of first appearance."""
        out: list[str] = []
        run: set[str] = set()
        for e in self.events[start:]:
            t = e["type"]
            if not t.endswith(".delta"):
                run = set()
            elif t in run:
                continue
            else:
                run.add(t)
            out.append(t)
        return out

    def audio(self, response_id: str) -> list[bytes]:
        return [
            base64.b64decode(e["delta"])
            for e in self.events
            if e["type"] == "response.output_audio.delta" and e["response_id"] == response_id
        ]

    async def speak(self, loud_ms: int, quiet_ms: int) -> None:
        """Append 20 ms mu-law frames in real (runtime) time: ``loud_ms`` of tone, then silence."""
        for frame in [LOUD_20MS] * (loud_ms // 20) + [QUIET_20MS] * (quiet_ms // 20):
            await self.send(
                type="input_audio_buffer.append", audio=base64.b64encode(frame).decode()
            )
            await trio.sleep(0.02)

    async def update(
        self, *, tools: list[dict[str, Any]] | None = None, **audio_input: Any
    ) -> dict[str, Any]:
        """session.update to mu-law both ways (plus the given input fields and tools); the
        session.updated."""
        n = len([e for e in self.events if e["type"] == "session.updated"]) + 1
        audio = {"input": {"format": PCMU, **audio_input}, "output": {"format": PCMU}}
        session: dict[str, Any] = {"type": "realtime", "audio": audio}
        if tools is not None:
            session["tools"] = tools
        await self.send(type="session.update", session=session)
        return await self.wait("session.updated", n)

    async def say(self, text: str) -> None:
        """A user text message (how the client sends DTMF digits)."""
        content = [{"type": "input_text", "text": text}]
        await self.send(
            type="conversation.item.create",
            item={"type": "message", "role": "user", "content": content},
        )

    async def respond(self, **response: Any) -> dict[str, Any]:
        """response.create (with these ``response`` fields); the response of its response.done."""
        n = len([e for e in self.events if e["type"] == "response.done"]) + 1
        await self.send(type="response.create", **({"response": response} if response else {}))
        return (await self.wait("response.done", n))["response"]

    async def tool_output(self, call_id: str, output: str) -> None:
        await self.send(
            type="conversation.item.create",
            item={"type": "function_call_output", "call_id": call_id, "output": output},
        )


@asynccontextmanager
async def memory_session(
    server: MockRealtimeServer, headers: list[tuple[bytes, bytes]] = AUTH
) -> AsyncIterator[tuple[Client, SessionLog]]:
    """A client connected to ``server`` over an in-memory stream pair."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    n = len(server.sessions) + 1
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve_stream, server_stream)
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            client_stream,  # type: ignore[arg-type]
            "localhost",
            URL,
            extra_headers=headers,
        )
        client = Client(ws)
        nursery.start_soon(client.reader)
        log = await server.wait_for_session(n)
        await client.wait("session.created")
        yield client, log
        await ws.aclose()
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def tcp_client(
    port: int, headers: list[tuple[bytes, bytes]] = AUTH
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A client over real TCP. The test owns the socket: trio-websocket's open_websocket does
    not close it after an abnormal closure (it would leak into a ResourceWarning)."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(
                nursery, stream, "localhost", URL, extra_headers=headers
            )
            yield ws
            await ws.aclose()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def tcp_server(server: MockRealtimeServer) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        yield port
        nursery.cancel_scope.cancel()
