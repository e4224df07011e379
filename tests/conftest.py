"""Suite-wide checks on the provider mocks.

Every session and end-to-end test fails (at teardown) if a provider mock it started recorded a
protocol problem (the mocks note a client mistake in their log's ``problems`` and carry on), if
any message a client sent or a mock answered departs from the vendor's own SDK types
(tests/contracts), or if the OpenAI Realtime mock sent an ``error`` event. A test that provokes
one on purpose says so with ``@pytest.mark.mock_problems(...)`` / ``openai_error_expected``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHECKED_DIRS = ("session", "e2e", "contracts")

_LOG_CLASSES = (
    ("tests.mocks.openai_realtime.script", "SessionLog"),
    ("tests.mocks.deepgram_agent.script", "SessionLog"),
    ("tests.mocks.deepgram_listen.script", "ListenLog"),
    ("tests.mocks.deepgram_speak.script", "SpeakLog"),
    ("tests.mocks.deepgram_speak.script", "RestSpeech"),
    ("tests.mocks.openai_chat.script", "ChatLog"),
    ("tests.mocks.openai_audio.script", "SpeechLog"),
    ("tests.mocks.openai_audio.script", "TranscriptionLog"),
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "mock_problems: the test provokes mock-recorded protocol problems on purpose "
        "(args: substrings the expected problems contain)")
    config.addinivalue_line(
        "markers", "openai_error_expected: the test provokes an OpenAI Realtime error event")


def _checked(request: pytest.FixtureRequest) -> bool:
    parts = Path(str(request.node.path)).parts
    return "tests" in parts and parts[parts.index("tests") + 1] in CHECKED_DIRS


@pytest.fixture(autouse=True)
def mock_logs(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
              ) -> Iterator[list[Any]]:
    """Every provider-mock log created during the test; checked at teardown (see module)."""
    logs: list[Any] = []
    if not _checked(request):
        yield logs
        return
    import importlib

    for module, name in _LOG_CLASSES:
        cls = getattr(importlib.import_module(module), name)
        monkeypatch.setattr(cls, "__init__", _recording(cls.__init__, logs))
    yield logs
    failures = mock_failures(logs, request.node)
    if failures:
        pytest.fail("provider mocks recorded protocol problems:\n  " + "\n  ".join(failures),
                    pytrace=False)


def _recording(init: Any, logs: list[Any]) -> Any:
    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        logs.append(self)
    return __init__


def mock_failures(logs: list[Any], node: pytest.Item | None = None) -> list[str]:
    """Problems, contract departures and unexpected Realtime errors in these mock logs."""
    from tests.contracts.vendor import check_log

    expected: tuple[str, ...] = ()
    error_ok = False
    if node is not None:
        marker = node.get_closest_marker("mock_problems")
        expected = tuple(marker.args) if marker is not None else ()
        error_ok = node.get_closest_marker("openai_error_expected") is not None
    failures = []
    for log in logs:
        name = f"{type(log).__module__.split('.')[2]}"
        failures += [f"{name}: {p}" for p in getattr(log, "problems", [])
                     if not any(e in p for e in expected)]
        failures += check_log(log)
        if not error_ok and name == "openai_realtime":
            failures += [f"{name}: error event {e.get('error')}"
                         for e in log.server_events if e.get("type") == "error"]
    return failures
