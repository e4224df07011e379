"""``python -m tests.mocks.deepgram_agent``: the mock as a process, for the capacity benchmark."""

from __future__ import annotations

import argparse
import sys

from tests.mocks.common import add_process_args, run_process

from .script import AgentScript
from .server import MockAgentServer


def main(argv: list[str] | None = None) -> int:
    """Serve until stdin reaches EOF (unless ``--ignore-stdin``) or SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(
        prog="python -m tests.mocks.deepgram_agent",
        description="Mock Deepgram Voice Agent API V1 WebSocket server.",
    )
    add_process_args(p, AgentScript)
    p.add_argument("--idle-timeout", type=float, default=10.0, help="seconds; <= 0 disables")
    args = p.parse_args(argv)
    script = AgentScript(
        reply_ms=args.reply_ms,
        send_rate=args.send_rate,
        chunk_ms=args.chunk_ms,
        first_byte_delay=args.first_byte_delay,
        vad_rms=args.vad_rms,
        idle_timeout=args.idle_timeout if args.idle_timeout > 0 else None,
    )
    run_process(MockAgentServer(args.api_key, script=script), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
