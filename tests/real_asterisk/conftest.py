"""The real-Asterisk tier: a private Asterisk 22.10.1 per test session, agi-voice beside it.

Skipped, with the reason and how to enable it, when no built Asterisk is found (a fresh clone
without ``../shared``, or before ``build.sh`` ran; ``.ci/run`` builds it once per machine).

Session fixtures (synchronous: processes, not trio tasks): ``asterisk`` (the instance, with
the agent and transfer-target contexts), ``phrases`` (the caller's phrases as WAV files),
``agi_voice`` (``agi-voice serve`` with the test config, AMI pointed at the instance). Each
test gets its own AMI connection (``ami``), a trio fixture.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from .audio import Phrase, make_phrase
from .peer import AmiDriver, AsteriskPeer, asterisk_prefix, start_peer
from .product import ProductProcess, ami_env, product_config
from .scenario import AGENT_CONTEXT, agent_context, targets_context

PREFIX, SKIP_REASON = asterisk_prefix()

PHRASES = {
    "sales": "Sales, please.",
    "transfer_sales": "Please transfer me to the sales team.",
    "billing": "I have a question about my bill.",
    "hours": "What are your opening hours?",
    "goodbye": "That's all, goodbye.",
    "hello": "Hello there.",
}

GREETING = "Hello, how can I help?"
FAREWELL = "Thank you for calling. Goodbye!"
DESTINATIONS = {
    "billing": {"context": "from-internal", "exten": "2001", "priority": "1",
                "description": "billing department"},
    "sales": {"context": "from-internal", "exten": "2002", "priority": "1",
              "description": "sales team"},
    "support": {"context": "from-internal", "exten": "2003", "priority": "1",
                "description": "technical support"},
    "operator": {"context": "from-internal", "exten": "0", "priority": "1",
                 "description": "the operator"},
}


def receptionist(**overrides: object) -> dict[str, object]:
    """The embedded default's local receptionist, with a short greeting so tests are quick."""
    a: dict[str, object] = {
        "provider": "local", "language": "en", "audio_format": "slin",
        "stt": {"engine": "moonshine", "model": "tiny-en"},
        "tts": {"engine": "piper", "voice": "joe-us"},
        "vad": {"aggressiveness": 2, "start_ms": 120, "end_ms": 700},
        "barge_in": {"enabled": True, "min_speech_ms": 240, "greeting_protection_ms": 1500},
        "destinations": DESTINATIONS,
        "fallback_destination": "operator",
        "brain": {
            "greeting": GREETING,
            "fallback": "Sorry, I can put you through to billing, sales or support.",
            "intents": [
                {"name": "billing", "keywords": ["billing", "invoice", "payment", "bill"],
                 "reply": "Sure, transferring you to billing.",
                 "action": {"kind": "transfer", "destination": "billing"}},
                {"name": "sales", "keywords": ["sales", "buy", "pricing", "price"],
                 "reply": "Of course, transferring you to sales.",
                 "action": {"kind": "transfer", "destination": "sales"}},
                {"name": "goodbye", "keywords": ["goodbye", "bye", "that's all"],
                 "reply": FAREWELL,
                 "action": {"kind": "hangup", "reason": "caller said goodbye"}},
                {"name": "hours", "keywords": ["hours", "open", "opening"],
                 "reply": "We're open nine to five."},
                {"name": "hello", "keywords": ["hello", "hi"], "reply": "Hi. What can I do?"},
            ],
            "dtmf": {
                "1": {"reply": "Transferring you to sales.",
                      "action": {"kind": "transfer", "destination": "sales"}},
                "#": {"reply": "Goodbye!", "action": {"kind": "hangup",
                                                       "reason": "caller pressed hash"}},
            },
            "no_input": {"after": 3.0, "reprompt": "Are you still there?", "max_reprompts": 1,
                         "hangup_reply": "I have not heard anything. Goodbye."},
        },
    }
    a.update(overrides)
    return a


def tier_assistants() -> dict[str, object]:
    return {
        "receptionist": receptionist(),
        "ulaw_desk": receptionist(audio_format="ulaw"),
        "alaw_desk": receptionist(audio_format="alaw"),
        "slin16_desk": receptionist(audio_format="slin16"),
        "echo": {"provider": "echo"},
    }


ROUTING = {
    "default": "receptionist",
    "rules": [{"match": {"script": name}, "assistant": name}
              for name in ("ulaw_desk", "alaw_desk", "slin16_desk", "echo")],
}


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    """Everything the tier writes (instance, recordings, agi-voice logs and records). Set
    AGI_VOICE_TIER_DIR to keep it for a look afterwards."""
    keep = os.environ.get("AGI_VOICE_TIER_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        yield Path(keep)
        return
    # short: the instance's control socket path must stay under 107 bytes
    with tempfile.TemporaryDirectory(prefix="av-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def asterisk(workdir: Path) -> Iterator[AsteriskPeer]:
    if PREFIX is None:
        pytest.skip(SKIP_REASON)
    peer = start_peer(PREFIX, workdir / "ast")
    try:
        peer.set_context("from-internal", targets_context())
        yield peer
    finally:
        peer.stop()


@pytest.fixture(scope="session")
def phrases(asterisk: AsteriskPeer) -> dict[str, Phrase]:
    return {key: make_phrase(asterisk.sounds, text) for key, text in PHRASES.items()}


@pytest.fixture(scope="session")
def agi_voice(asterisk: AsteriskPeer, workdir: Path) -> Iterator[ProductProcess]:
    cfg = product_config(workdir / "agi-voice", tier_assistants(), ROUTING)
    proc = ProductProcess(cfg, workdir / "agi-voice", env=ami_env(asterisk))
    proc.start()
    asterisk.set_context(AGENT_CONTEXT, agent_context(proc.fastagi_port))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def ami(asterisk: AsteriskPeer) -> AsyncIterator[AmiDriver]:
    async with trio.open_nursery() as nursery:
        drv = await AmiDriver.connect(asterisk, nursery)
        try:
            yield drv
        finally:
            await drv.aclose()
            nursery.cancel_scope.cancel()


MEASURED: dict[str, object] = {}
"""Figures the tier's tests measured (reported, never asserted on): printed at the end of the
run and written to measurements.json in the tier's directory."""


@pytest.fixture
def measured(request: pytest.FixtureRequest) -> dict[str, object]:
    """This test's entry in :data:`MEASURED`."""
    entry: dict[str, object] = {}
    MEASURED[request.node.name] = entry
    return entry


@pytest.fixture(scope="session", autouse=True)
def _write_measurements(workdir: Path) -> Iterator[None]:
    yield
    if MEASURED:
        (workdir / "measurements.json").write_text(json.dumps(MEASURED, indent=1))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if MEASURED:
        terminalreporter.section("real Asterisk: measured")
        for name, entry in MEASURED.items():
            if entry:
                terminalreporter.write_line(f"{name}: {json.dumps(entry)}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "real_asterisk" in item.nodeid:
            item.add_marker(pytest.mark.real_asterisk)
