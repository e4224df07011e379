"""``python -m tests.mocks.openai_chat``: the mock as a process (benchmarks, manual runs)."""

from __future__ import annotations

import argparse
import sys

from tests.mocks.common import add_serving_args, run_process

from .script import ChatScript
from .server import MockChatServer


def add_chat_args(p: argparse.ArgumentParser) -> None:
    """The script options the chat mocks' processes share (defaults from ChatScript)."""
    defaults = ChatScript()
    p.add_argument("--first-token-delay", type=float, default=defaults.first_token_delay)
    p.add_argument("--token-delay", type=float, default=defaults.token_delay)
    p.add_argument("--model", default=None, help="the model listed (default: the script's)")


def main(argv: list[str] | None = None) -> int:
    """Serve until stdin reaches EOF (unless ``--ignore-stdin``) or SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(prog="python -m tests.mocks.openai_chat",
                                description="Mock OpenAI Chat Completions server.")
    add_serving_args(p)
    add_chat_args(p)
    p.add_argument("--api-key", default="test-key", help='"" disables auth')
    p.add_argument("--style", choices=("fragments", "whole"), default="fragments")
    args = p.parse_args(argv)
    script = ChatScript(first_token_delay=args.first_token_delay, token_delay=args.token_delay,
                        tool_call_style=args.style,
                        **({"model": args.model} if args.model else {}))
    run_process(MockChatServer(args.api_key or None, script=script), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
