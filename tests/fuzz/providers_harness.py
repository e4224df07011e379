"""Drives a provider session through its public ``run`` over a scripted in-memory WebSocket,
with a relay port that checks every value it is given against :class:`RelayPort`'s types."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing
import trio_websocket

from media_sidecar.providers.base import ProviderError
from media_sidecar.tools.spec import ToolReply


class PortTypeError(AssertionError):
    """A provider handed the call a value of the wrong type (it would fail in the relay)."""


def _check(ok: bool, what: str, value: object) -> None:
    if not ok:
        raise PortTypeError(f"{what}: {value!r:.120}")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_text(v: object) -> bool:
    """A str that UTF-8 can carry (no lone surrogate: records, the control link and AGI all
    write UTF-8)."""
    if not isinstance(v, str):
        return False
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class StrictPort:
    """A RelayPort that records calls and refuses values its protocol does not allow."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self._cut = False

    def agent_audio(self, pcm: bytes, item_id: str, t_in: float) -> None:
        _check(isinstance(pcm, bytes) and _is_text(item_id), "agent_audio", (item_id,))
        self.calls.append(("agent_audio", (len(pcm), item_id)))

    def agent_audio_done(self, item_id: str) -> None:
        _check(_is_text(item_id), "agent_audio_done", item_id)
        self.calls.append(("agent_audio_done", (item_id,)))

    def caller_speech_started(self) -> tuple[str, int] | None:
        self._cut = not self._cut
        return ("item_1", 120) if self._cut else None

    def caller_speech_stopped(self, audio_end_ms: int) -> None:
        _check(_is_int(audio_end_ms), "caller_speech_stopped", audio_end_ms)

    def transcript(self, role: str, text: str) -> None:
        _check(role in ("caller", "agent") and _is_text(text), "transcript", (role, text))

    def response_done(self, status: str, usage: dict[str, object] | None) -> None:
        _check(_is_text(status) and (usage is None or isinstance(usage, dict)),
               "response_done", (status, usage))

    def provider_note(self, key: str, value: object) -> None:
        _check(isinstance(key, str), "provider_note", key)

    async def call_tool(self, name: str, arguments: str | dict[str, Any] | None) -> ToolReply:
        _check(_is_text(name) and (arguments is None or isinstance(arguments, str | dict)),
               "call_tool", (name, arguments))
        await trio.sleep(0.01)
        return ToolReply('{"ok": true}', respond=len(name) % 2 == 0)

    def tool_cancelled(self, name: str) -> bool:
        _check(_is_text(name), "tool_cancelled", name)
        return True

    def provider_latency(self, item_id: str, figures: Mapping[str, float]) -> None:
        _check(isinstance(item_id, str) and all(
            isinstance(k, str) and isinstance(v, float) and math.isfinite(v)
            for k, v in figures.items()), "provider_latency", figures)


class ScriptedWs:
    """The provider's side of a WebSocket: hands out ``messages`` in order, then closes."""

    def __init__(self, messages: list[str | bytes], close_code: int = 1011) -> None:
        self.messages = list(messages)
        self.sent: list[str | bytes] = []
        self.close_code = close_code

    async def get_message(self) -> str | bytes:
        await trio.sleep(0.005)
        if self.messages:
            return self.messages.pop(0)
        raise trio_websocket.ConnectionClosed(
            trio_websocket.CloseReason(self.close_code, "script over"))

    async def send_message(self, message: str | bytes) -> None:
        await trio.lowlevel.checkpoint()
        self.sent.append(message)

    async def ping(self, payload: bytes | None = None) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def connector(ws: ScriptedWs) -> Callable[..., Any]:
    @asynccontextmanager
    async def connect(url: str, headers: list[tuple[bytes, bytes]]) -> AsyncIterator[Any]:
        yield ws

    return connect


def run_session(make: Callable[[Callable[..., Any]], Any], messages: list[str | bytes],
                limit: float = 120.0) -> StrictPort:
    """Run ``make(connect).run(port)`` in virtual time until the script is over; raise
    whatever escaped other than :class:`ProviderError` (the typed error)."""
    port = StrictPort()
    ws = ScriptedWs(messages)

    async def main() -> None:
        session = make(connector(ws))
        with trio.move_on_after(limit):
            try:
                await session.run(port)
            except* ProviderError:
                pass

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return port
