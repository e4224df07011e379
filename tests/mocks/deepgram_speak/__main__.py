"""``python -m tests.mocks.deepgram_speak``: the speak mocks as a process::

    python -m tests.mocks.deepgram_speak --port 0 --ready FILE [--api-key K] [--rest-port N]
        [--ms-per-char N] [--chunk-ms N] [--send-rate X] [--first-byte-delay S]
        [--idle-timeout S] [--ignore-stdin]

The WebSocket mock on ``--port``; with ``--rest-port`` (0: any free port) the REST mock too.
Writes ``{"port": N, "pid": P}`` (plus ``"rest_port"``) to ``--ready`` once listening; serves
until stdin reaches EOF (unless ``--ignore-stdin``) or SIGTERM / SIGINT, then exits 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import trio

from tests.mocks.common import _stdin_watch, _write_ready

from .rest import MockSpeakRestServer
from .script import SpeakScript
from .server import MockSpeakServer


def main(argv: list[str] | None = None) -> int:
    """Serve until stdin reaches EOF (unless ``--ignore-stdin``) or SIGTERM/SIGINT."""
    d = SpeakScript()
    p = argparse.ArgumentParser(
        prog="python -m tests.mocks.deepgram_speak",
        description="Mock Deepgram TTS: /v1/speak WebSocket (and REST with --rest-port).",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--rest-port", type=int, default=None)
    p.add_argument("--ready", help='write {"port": N, "rest_port": R, "pid": P} once listening')
    p.add_argument("--api-key", default="test-key")
    p.add_argument("--ms-per-char", type=int, default=d.ms_per_char)
    p.add_argument("--chunk-ms", type=int, default=d.chunk_ms)
    p.add_argument("--send-rate", type=float, default=d.send_rate)
    p.add_argument("--first-byte-delay", type=float, default=d.first_byte_delay)
    p.add_argument("--idle-timeout", type=float, default=0.0, help="seconds; <= 0 disables")
    p.add_argument(
        "--ignore-stdin",
        action="store_true",
        help="serve until a signal only (stdin is /dev/null, say)",
    )
    args = p.parse_args(argv)
    script = SpeakScript(
        ms_per_char=args.ms_per_char,
        chunk_ms=args.chunk_ms,
        send_rate=args.send_rate,
        first_byte_delay=args.first_byte_delay,
        idle_timeout=args.idle_timeout if args.idle_timeout > 0 else None,
    )
    trio.run(_serve, args, script)
    return 0


async def _serve(args: argparse.Namespace, script: SpeakScript) -> None:
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            ready = {
                "port": await nursery.start(
                    MockSpeakServer(args.api_key, script=script).serve, args.host, args.port
                )
            }
            if args.rest_port is not None:
                rest = MockSpeakRestServer(args.api_key, script=script)
                ready["rest_port"] = await nursery.start(rest.serve, args.host, args.rest_port)
            if args.ready:
                _write_ready(args.ready, {**ready, "pid": os.getpid()})
            if not args.ignore_stdin:
                nursery.start_soon(_stdin_watch, nursery.cancel_scope)
            async for _ in signals:
                break
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    sys.exit(main())
