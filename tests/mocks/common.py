"""What the provider mocks share: the per-connection event log with its waiters, the WebSocket
server shell (TCP or any trio stream), and the command-line process for the benchmarks."""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import trio
import trio_websocket

__all__ = ["EventLog", "MockWsServer", "Serves", "SessionClosedError", "add_process_args",
           "add_serving_args", "run_process"]


class SessionClosedError(Exception):
    """A :meth:`EventLog.wait_for` could not be satisfied: the session ended first."""


@dataclass(eq=False)
class EventLog:
    """Counts of the messages a connection received and sent, by type, with waiters.

    Subclasses say where the stored messages are (:meth:`_inbound`, :meth:`_outbound`); audio
    is counted, not stored, and waiting for it returns ``{"type": ..., "count": n}``."""

    close_reason: str | None = None
    closed: trio.Event = field(default_factory=trio.Event)
    _counts: dict[tuple[bool, str], int] = field(default_factory=dict, repr=False)
    _waiters: list[tuple[bool, str, int, trio.Event]] = field(default_factory=list, repr=False)

    def _inbound(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _outbound(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def count(self, type_name: str, *, sent: bool = False) -> int:
        """How many messages of this type were received (or, with ``sent``, sent)."""
        return self._counts.get((sent, type_name), 0)

    def received(self, type_name: str) -> list[dict[str, Any]]:
        return [m for m in self._inbound() if m.get("type") == type_name]

    def sent(self, type_name: str) -> list[dict[str, Any]]:
        return [m for m in self._outbound() if m["type"] == type_name]

    def sent_types(self) -> list[str]:
        return [m["type"] for m in self._outbound()]

    async def wait_for(self, type_name: str, count: int = 1) -> dict[str, Any]:
        """Wait until the ``count``-th client message of this type has been handled; return
        it. Raises SessionClosedError if the session ends first."""
        await self._wait(False, type_name, count)
        return self._nth(self._inbound(), type_name, count)

    async def wait_for_sent(self, type_name: str, count: int = 1) -> dict[str, Any]:
        """Wait until the ``count``-th server message of this type has been sent; return it.
        Raises SessionClosedError as wait_for."""
        await self._wait(True, type_name, count)
        return self._nth(self._outbound(), type_name, count)

    async def _wait(self, sent: bool, type_name: str, count: int) -> None:
        if self.count(type_name, sent=sent) < count:
            if not self.closed.is_set():
                event = trio.Event()
                self._waiters.append((sent, type_name, count, event))
                await event.wait()
            if self.count(type_name, sent=sent) < count:
                raise SessionClosedError(f"session closed before {count} x {type_name}")

    @staticmethod
    def _nth(messages: list[dict[str, Any]], type_name: str, count: int) -> dict[str, Any]:
        matches = [m for m in messages if m.get("type") == type_name]
        return matches[count - 1] if len(matches) >= count else {"type": type_name, "count": count}

    def _bump(self, sent: bool, type_name: str) -> None:
        key = (sent, type_name)
        n = self._counts[key] = self._counts.get(key, 0) + 1
        if self._waiters:
            keep = []
            for w in self._waiters:
                if w[0] == sent and w[1] == type_name and w[2] <= n:
                    w[3].set()
                else:
                    keep.append(w)
            self._waiters = keep

    def _close(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
        self.closed.set()
        for w in self._waiters:
            w[3].set()
        self._waiters = []


class MockWsServer:
    """The serving shell of a mock: accepted and rejected session logs, TCP or a given stream.
    Subclasses implement :meth:`handle_request` (the upgrade checks and the session)."""

    def __init__(self) -> None:
        self.sessions: list[Any] = []
        self.rejected: list[Any] = []
        self.port: int | None = None
        self._session_added = trio.Event()

    async def handle_request(self, request: trio_websocket.WebSocketRequest) -> None:
        raise NotImplementedError

    async def run_accepted(self, ws: trio_websocket.WebSocketConnection, log: EventLog,
                           session: Callable[[trio.Nursery], Awaitable[None]]) -> None:
        """Record ``log`` as an accepted session, run ``session(nursery)``, then close."""
        self.sessions.append(log)
        self._session_added.set()
        self._session_added = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                await session(nursery)
        finally:
            with trio.move_on_after(2.0, shield=True):
                await ws.aclose()
            log._close("client")

    async def wait_for_session(self, n: int = 1) -> Any:
        """The n-th accepted session's log (1-based), once it exists."""
        while len(self.sessions) < n:
            await self._session_added.wait()
        return self.sessions[n - 1]

    async def serve(self, host: str = "127.0.0.1", port: int = 0, *,
                    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on host:port until cancelled; ``task_status.started(bound_port)``."""
        async with trio.open_nursery() as nursery:
            serve = partial(trio_websocket.serve_websocket, self.handle_request, host, port,
                            None, connect_timeout=10, disconnect_timeout=5)
            ws_server = await nursery.start(serve)
            self.port = ws_server.port
            task_status.started(self.port)

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one connection over an already connected stream (e.g. a memory stream)."""
        try:
            async with trio.open_nursery() as nursery:
                request = await trio_websocket.wrap_server_stream(nursery, stream)
                await self.handle_request(request)
                nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(stream)


# -- the mock as a process (benchmarks) --------------------------------------------------------

def add_serving_args(p: argparse.ArgumentParser) -> None:
    """The options every mock process takes: where to listen, the ready file, stdin."""
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--ready", help='write {"port": N, "pid": P} here once listening')
    p.add_argument("--ignore-stdin", action="store_true",
                   help="serve until a signal only (stdin is /dev/null, say)")


def add_process_args(p: argparse.ArgumentParser, script: Any) -> None:
    """The options of the speech-to-speech mocks' processes; defaults from the script class
    ``script``."""
    add_serving_args(p)
    p.add_argument("--api-key", default="test-key")
    p.add_argument("--reply-ms", type=int, default=script.reply_ms)
    p.add_argument("--send-rate", type=float, default=script.send_rate)
    p.add_argument("--chunk-ms", type=int, default=script.chunk_ms)
    p.add_argument("--first-byte-delay", type=float, default=script.first_byte_delay)
    p.add_argument("--vad-rms", type=float, default=script.vad_rms)


class Serves(Protocol):
    """A mock that can listen on TCP (WebSocket or HTTP)."""

    async def serve(self, host: str = ..., port: int = ..., *,
                    task_status: trio.TaskStatus[int] = ...) -> None: ...


def run_process(server: Serves, args: argparse.Namespace) -> None:
    """Serve until stdin reaches EOF (unless ``--ignore-stdin``) or SIGTERM/SIGINT; writes
    ``{"port": N, "pid": P}`` to ``--ready`` once listening."""
    trio.run(_serve_process, server, args)


async def _serve_process(server: Serves, args: argparse.Namespace) -> None:
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            port = await nursery.start(server.serve, args.host, args.port)
            if args.ready:
                _write_ready(args.ready, {"port": port, "pid": os.getpid()})
            if not args.ignore_stdin:
                nursery.start_soon(_stdin_watch, nursery.cancel_scope)
            async for _ in signals:
                break
        nursery.cancel_scope.cancel()


def _write_ready(path: str, payload: dict[str, Any]) -> None:
    """Atomic for a regular file (tmp + rename); a FIFO is written directly so a reader blocked
    on it wakes up."""
    text = json.dumps(payload)
    if os.path.exists(path) and stat.S_ISFIFO(os.stat(path).st_mode):
        with open(path, "w") as f:
            f.write(text)
        return
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _drain_stdin() -> None:
    while os.read(sys.stdin.fileno(), 65536):
        pass


async def _stdin_watch(scope: trio.CancelScope) -> None:
    await trio.to_thread.run_sync(_drain_stdin, abandon_on_cancel=True)
    scope.cancel()
