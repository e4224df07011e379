"""The mock as a process, for the capacity benchmark::

    python -m tests.mocks.openai_realtime --port 0 --ready FILE [--api-key K] [--reply-ms N]
        [--send-rate X] [--chunk-ms N] [--first-byte-delay S] [--vad-rms R] [--ignore-stdin]

Writes ``{"port": N, "pid": P}`` to ``--ready`` once listening; serves until stdin reaches EOF
(unless ``--ignore-stdin``) or SIGTERM / SIGINT, then exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import sys
from typing import Any

import trio

from tests.mocks.openai_realtime.script import RealtimeScript
from tests.mocks.openai_realtime.server import MockRealtimeServer


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


async def _amain(args: argparse.Namespace) -> None:
    script = RealtimeScript(
        reply_ms=args.reply_ms,
        send_rate=args.send_rate,
        chunk_ms=args.chunk_ms,
        first_byte_delay=args.first_byte_delay,
        vad_rms=args.vad_rms,
    )
    server = MockRealtimeServer(args.api_key, script=script)
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


async def _stdin_watch(scope: trio.CancelScope) -> None:
    await trio.to_thread.run_sync(_drain_stdin, abandon_on_cancel=True)
    scope.cancel()


def main(argv: list[str] | None = None) -> int:
    """Serve until stdin reaches EOF (unless ``--ignore-stdin``) or SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(
        prog="python -m tests.mocks.openai_realtime",
        description="Mock OpenAI Realtime (GA) WebSocket server.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--ready", help='write {"port": N, "pid": P} here once listening')
    p.add_argument("--api-key", default="test-key")
    p.add_argument("--reply-ms", type=int, default=RealtimeScript.reply_ms)
    p.add_argument("--send-rate", type=float, default=RealtimeScript.send_rate)
    p.add_argument("--chunk-ms", type=int, default=RealtimeScript.chunk_ms)
    p.add_argument("--first-byte-delay", type=float, default=RealtimeScript.first_byte_delay)
    p.add_argument("--vad-rms", type=float, default=RealtimeScript.vad_rms)
    p.add_argument(
        "--ignore-stdin",
        action="store_true",
        help="serve until a signal only (stdin is /dev/null, say)",
    )
    trio.run(_amain, p.parse_args(argv))
    return 0
