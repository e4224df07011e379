"""The raw WebSocket client the mocks' own tests drive them with: every server message kept with
its arrival time on the runtime clock (binary frames as ``{"type": "Audio", "data": ...}``)."""

from __future__ import annotations

import json
from typing import Any

import trio
import trio_websocket

__all__ = ["RawClient"]


class RawClient:
    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.times: list[float] = []
        self.closed: trio_websocket.CloseReason | None = None
        self._changed = trio.Event()

    async def reader(self) -> None:
        try:
            while True:
                message = await self.ws.get_message()
                self.events.append({"type": "Audio", "data": message}
                                   if isinstance(message, bytes) else json.loads(message))
                self.times.append(trio.current_time())
                self._changed.set()
                self._changed = trio.Event()
        except trio_websocket.ConnectionClosed as exc:
            self.closed = exc.reason
            self._changed.set()

    async def send(self, **message: Any) -> None:
        await self.ws.send_message(json.dumps(message))

    async def wait(self, type_name: str, n: int = 1) -> dict[str, Any]:
        """The n-th message of this type, once it has arrived."""
        while True:
            found = [e for e in self.events if e["type"] == type_name]
            if len(found) >= n:
                return found[n - 1]
            assert self.closed is None, f"closed while waiting for {type_name}: {self.types()}"
            await self._changed.wait()

    async def wait_closed(self) -> trio_websocket.CloseReason:
        while self.closed is None:
            await self._changed.wait()
        return self.closed

    def index(self, type_name: str, n: int = 1) -> int:
        return [i for i, e in enumerate(self.events) if e["type"] == type_name][n - 1]

    def types(self, start: int = 0) -> list[str]:
        """Message types from index ``start``."""
        return [e["type"] for e in self.events[start:]]
