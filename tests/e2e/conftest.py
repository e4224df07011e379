"""End-to-end tests run the product's planes in this process: a fault test's CLOSE-WAIT check
(tests/sockets.py) must judge only the sockets of its own calls. A socket an earlier test left
in CLOSE-WAIT is charged to no one here, and named in the run's summary instead."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.sockets import mark_test_start

EARLIER_LEAKS: dict[str, str] = {}
"""Test id -> the CLOSE-WAIT sockets that were already there when it began."""


@pytest.fixture(autouse=True)
def _close_wait_baseline(request: pytest.FixtureRequest) -> Iterator[None]:
    leaked = mark_test_start()
    if leaked:
        EARLIER_LEAKS[request.node.nodeid] = ", ".join(f"{s.local} <- {s.remote}"
                                                       for s in leaked)
    yield


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if EARLIER_LEAKS:
        first = next(iter(EARLIER_LEAKS))
        terminalreporter.write_sep("=", "sockets left in CLOSE-WAIT by earlier tests")
        terminalreporter.write_line(f"{len(EARLIER_LEAKS)} e2e tests began with some; the "
                                    f"first: {first}: {EARLIER_LEAKS[first]}")
