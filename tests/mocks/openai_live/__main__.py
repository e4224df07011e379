"""``python -m tests.mocks.openai_live``: see :mod:`tests.mocks.openai_live.cli`."""

import sys

from tests.mocks.openai_live.cli import main

if __name__ == "__main__":
    sys.exit(main())
