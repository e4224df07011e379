"""``python -m tests.mocks.openai_realtime``: see :mod:`tests.mocks.openai_realtime.cli`."""

import sys

from tests.mocks.openai_realtime.cli import main

if __name__ == "__main__":
    sys.exit(main())
