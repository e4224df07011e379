"""``python -m tests.mocks.ollama``: the mock as a process (benchmarks, manual runs)."""

from __future__ import annotations

import argparse
import sys

from tests.mocks.common import add_serving_args, run_process
from tests.mocks.openai_chat import ChatScript
from tests.mocks.openai_chat.__main__ import add_chat_args

from .server import DEFAULT_MODEL, MockOllamaServer


def main(argv: list[str] | None = None) -> int:
    """Serve until stdin reaches EOF (unless ``--ignore-stdin``) or SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(prog="python -m tests.mocks.ollama",
                                description="Mock Ollama server (/api/chat and /v1).")
    add_serving_args(p)
    add_chat_args(p)
    args = p.parse_args(argv)
    script = ChatScript(first_token_delay=args.first_token_delay, token_delay=args.token_delay,
                        model=args.model or DEFAULT_MODEL)
    run_process(MockOllamaServer(script=script), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
