"""``python -m tests.mocks.deepgram_agent``: the mock as a process, for the capacity benchmark."""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import sys
from typing import Any

import trio

from .script import AgentScript
from .server import MockAgentServer


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


async def _amain(args: argparse.Namespace) -> None:
    script = AgentScript(
        reply_ms=args.reply_ms,
        send_rate=args.send_rate,
        chunk_ms=args.chunk_ms,
        first_byte_delay=args.first_byte_delay,
        vad_rms=args.vad_rms,
        idle_timeout=args.idle_timeout if args.idle_timeout > 0 else None,
    )
    server = MockAgentServer(args.api_key, script=script)
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


def main(argv: list[str] | None = None) -> int:
    """Serve until stdin reaches EOF (unless ``--ignore-stdin``) or SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(
        prog="python -m tests.mocks.deepgram_agent",
        description="Mock Deepgram Voice Agent API V1 WebSocket server.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--ready", help='write {"port": N, "pid": P} here once listening')
    p.add_argument("--api-key", default="test-key")
    p.add_argument("--reply-ms", type=int, default=AgentScript.reply_ms)
    p.add_argument("--send-rate", type=float, default=AgentScript.send_rate)
    p.add_argument("--chunk-ms", type=int, default=AgentScript.chunk_ms)
    p.add_argument("--first-byte-delay", type=float, default=AgentScript.first_byte_delay)
    p.add_argument("--vad-rms", type=float, default=AgentScript.vad_rms)
    p.add_argument("--idle-timeout", type=float, default=10.0, help="seconds; <= 0 disables")
    p.add_argument(
        "--ignore-stdin",
        action="store_true",
        help="serve until a signal only (stdin is /dev/null, say)",
    )
    trio.run(_amain, p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
