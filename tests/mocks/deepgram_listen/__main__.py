"""``python -m tests.mocks.deepgram_listen``: the listen mock as a process::

    python -m tests.mocks.deepgram_listen --port 0 --ready FILE [--api-key K]
        [--transcript TEXT ...] [--final-delay S] [--interim-ms N] [--vad-rms R]
        [--idle-timeout S] [--ignore-stdin]

Writes ``{"port": N, "pid": P}`` to ``--ready`` once listening; serves until stdin reaches EOF
(unless ``--ignore-stdin``) or SIGTERM / SIGINT, then exits 0.
"""

from __future__ import annotations

import argparse
import sys

from tests.mocks.common import add_serving_args, run_process

from .script import ListenScript
from .server import MockListenServer


def main(argv: list[str] | None = None) -> int:
    """Serve until stdin reaches EOF (unless ``--ignore-stdin``) or SIGTERM/SIGINT."""
    d = ListenScript()
    p = argparse.ArgumentParser(
        prog="python -m tests.mocks.deepgram_listen",
        description="Mock Deepgram streaming STT (/v1/listen) WebSocket server.",
    )
    add_serving_args(p)
    p.add_argument("--api-key", default="test-key")
    p.add_argument(
        "--transcript",
        action="append",
        default=[],
        help="transcript of the next utterance (repeatable)",
    )
    p.add_argument("--final-delay", type=float, default=d.final_delay)
    p.add_argument("--interim-ms", type=int, default=d.interim_ms)
    p.add_argument("--vad-rms", type=float, default=d.vad_rms)
    p.add_argument("--idle-timeout", type=float, default=10.0, help="seconds; <= 0 disables")
    args = p.parse_args(argv)
    script = ListenScript(
        transcripts=tuple(args.transcript),
        final_delay=args.final_delay,
        interim_ms=args.interim_ms,
        vad_rms=args.vad_rms,
        idle_timeout=args.idle_timeout if args.idle_timeout > 0 else None,
    )
    run_process(MockListenServer(args.api_key, script=script), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
