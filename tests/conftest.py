"""Suite-wide checks on the provider mocks.

Every session, end-to-end and contract test fails (at teardown) if a provider mock it started
recorded a protocol problem (the mocks note a client mistake in their log's ``problems`` and
carry on), if
any message a client sent or a mock answered departs from the vendor's own SDK types
(tests/contracts), or if the OpenAI Realtime mock sent an ``error`` event. A test that provokes
one on purpose says so with ``@pytest.mark.mock_problems(...)`` / ``openai_error_expected``.
The mocks' own unit tests (tests/unit/test_mock_*.py) get the check of what the mock sent.
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.contracts.vendor import check_log

CHECKED_DIRS = ("session", "e2e", "contracts")

_LOG_CLASSES = (
    ("tests.mocks.openai_realtime.script", "SessionLog"),
    ("tests.mocks.deepgram_agent.script", "SessionLog"),
    ("tests.mocks.openai_live.script", "SessionLog"),
    ("tests.mocks.deepgram_listen.script", "ListenLog"),
    ("tests.mocks.deepgram_speak.script", "SpeakLog"),
    ("tests.mocks.deepgram_speak.script", "RestSpeech"),
    ("tests.mocks.openai_chat.script", "ChatLog"),
    ("tests.mocks.openai_audio.script", "SpeechLog"),
    ("tests.mocks.openai_audio.script", "TranscriptionLog"),
)


_DATA_DIR_KEY = "_agi_voice_data_dir"


def pytest_configure(config: pytest.Config) -> None:
    # The data directory (call store, recordings) of every test and every process a test
    # starts: a temporary one for the session, never the home directory.
    data = tempfile.mkdtemp(prefix="agi-voice-data-")
    os.environ["AGI_VOICE_DATA_DIR"] = data
    setattr(config, _DATA_DIR_KEY, data)
    config.addinivalue_line(
        "markers", "mock_problems: the test provokes mock-recorded protocol problems on purpose "
        "(args: substrings the expected problems contain)")
    config.addinivalue_line(
        "markers", "openai_error_expected: the test provokes an OpenAI Realtime error event")


def pytest_unconfigure(config: pytest.Config) -> None:
    data = getattr(config, _DATA_DIR_KEY, None)
    if data:
        shutil.rmtree(data, ignore_errors=True)


def _mode(request: pytest.FixtureRequest) -> str | None:
    """``full`` for session, e2e and contract tests; ``server`` for the mocks' own unit tests
    (they send wrong client messages on purpose, but what a mock answers must still be the
    vendor's); None elsewhere."""
    path = Path(str(request.node.path))
    parts = path.parts
    if "tests" not in parts or parts.index("tests") + 1 >= len(parts):
        return None
    if parts[parts.index("tests") + 1] in CHECKED_DIRS:
        return "full"
    if path.name.startswith("test_mock_"):
        return "server"
    return None


@pytest.fixture(autouse=True)
def mock_logs(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
              ) -> Iterator[list[Any]]:
    """Every provider-mock log created during the test; checked at teardown (see module)."""
    logs: list[Any] = []
    mode = _mode(request)
    if mode is None:
        yield logs
        return
    for module, name in _LOG_CLASSES:
        cls = getattr(importlib.import_module(module), name)
        monkeypatch.setattr(cls, "__init__", _recording(cls.__init__, logs))
    yield logs
    if mode == "full":
        failures = mock_failures(logs, request.node)
    else:
        failures = [p for log in logs for p in check_log(log, client=False)]
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
