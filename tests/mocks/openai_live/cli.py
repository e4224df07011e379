"""The mock as a process, for benchmarks and manual runs::

    python -m tests.mocks.openai_live --port 0 --ready FILE [--api-key K] [--reply-ms N]
        [--send-rate X] [--chunk-ms N] [--first-byte-delay S] [--vad-rms R] [--ignore-stdin]

Writes ``{"port": N, "pid": P}`` to ``--ready`` once listening; serves until stdin reaches EOF
(unless ``--ignore-stdin``) or SIGTERM / SIGINT, then exits 0.
"""

from __future__ import annotations

import argparse

from tests.mocks.common import add_process_args, run_process
from tests.mocks.openai_live.script import LiveScript
from tests.mocks.openai_live.server import MockLiveServer


def main(argv: list[str] | None = None) -> int:
    """Serve until stdin reaches EOF (unless ``--ignore-stdin``) or SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(prog="python -m tests.mocks.openai_live",
                                description="Mock OpenAI GPT-Live WebSocket server.")
    add_process_args(p, LiveScript)
    args = p.parse_args(argv)
    script = LiveScript(reply_ms=args.reply_ms, send_rate=args.send_rate,
                        chunk_ms=args.chunk_ms, first_byte_delay=args.first_byte_delay,
                        vad_rms=args.vad_rms)
    run_process(MockLiveServer(args.api_key, script=script), args)
    return 0
