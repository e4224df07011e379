"""Acoustic re-scoring in whole calls, in virtual time: a transcript that matches nothing
("Feel.") reaches its intent when the recogniser's own decoder finds the assistant's phrase
close enough to the audio; not when it does not, not when ``stt.acoustic`` is off, and a
scoring failure leaves the transcript as it was.

The recogniser is a fake that hears a fixed transcript per tone and scores texts from a table
(the real model's scoring is tested in tests/unit/test_moonshine_scorer.py); what is tested
is the product's path: the candidates, the margin, the rule brain and the call record.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fastagi_server.emulator.caller import CallerScript
from media_sidecar.config.loader import load_config
from media_sidecar.speech.base import SpeechEngineError
from tests.fakes import dominant_freq, tone
from tests.session import harness
from tests.session.harness import run_session

HEARD = {450: "Feel.", 650: "Could you put me through to yourselves, team, please?"}
FREE_SCORE = -1.0


class ScoringStt:
    """Hears ``HEARD`` by tone; scores the free transcript ``FREE_SCORE``, every text of
    ``scores`` its value, anything else -6, and its own decoding ``own``."""

    name = "fake"

    def __init__(self, scores: dict[str, float], fail: bool = False) -> None:
        self.scores = scores
        self.fail = fail
        self.own = -3.0
        """Below the free transcript's: the reference is the better of the two."""
        self.scored: list[list[str]] = []

    def transcribe(self, pcm: np.ndarray, rate: int) -> str:
        if len(pcm) < rate // 10:
            return ""
        f = dominant_freq(pcm, rate)
        best = min(HEARD, key=lambda k: abs(k - f))
        return HEARD[best] if abs(best - f) < 30 else ""

    def score(self, pcm: np.ndarray, rate: int, texts: list[str]) -> list[float]:
        assert pcm.dtype.kind == "i" and rate == 8000 and len(pcm) > rate // 2
        self.scored.append(list(texts))
        if self.fail:
            raise SpeechEngineError("scorer broken")
        return [*(FREE_SCORE if i == 0 else self.scores.get(t, -6.0)
                  for i, t in enumerate(texts)), self.own]


def says(text: str) -> bytes:
    return tone(next(f for f, s in HEARD.items() if s == text), 1.0)


@pytest.fixture
def stt(monkeypatch):
    """Install a ScoringStt; the test sets its table."""
    engine = ScoringStt({})
    original = harness.build_server

    def build(cfg, **kw):
        server, registry, control = original(cfg, **kw)
        server.services.stt = engine
        return server, registry, control

    monkeypatch.setattr(harness, "build_server", build)
    return engine


def acoustic_off():
    cfg = load_config()
    a = cfg.assistants[0]
    a = dataclasses.replace(a, stt=dataclasses.replace(a.stt, acoustic=False))
    return dataclasses.replace(cfg, assistants=(a, *cfg.assistants[1:]))


async def test_a_misheard_request_reaches_its_intent_acoustically(autojump_clock, stt):
    stt.scores = {"Sales.": -0.4, "Help.": -1.5}
    out = await run_session(CallerScript().speak_after_agent_quiet(says("Feel.")))
    assert out.ended.status == "TRANSFERRED" and out.ended.transfer_to == "sales"
    turn = out.record.turns[1]
    assert (turn.caller_text, turn.rescored_text, turn.intent) == ("Feel.", "Sales.", "sales")
    assert turn.match == {"term": "sales", "heard": "Feel.", "score": -0.4,
                          "free_score": -1.0, "how": "acoustic"}
    (texts,) = stt.scored
    assert texts[0] == "Feel." and "Sales." in texts and "Billing." in texts


async def test_one_misheard_word_in_a_long_request_is_replaced(autojump_clock, stt):
    heard = "Could you put me through to yourselves, team, please?"
    fixed = "Could you put me through to sales, team, please?"
    stt.scores = {fixed: -1.3}
    out = await run_session(CallerScript().speak_after_agent_quiet(says(heard)))
    turn = out.record.turns[1]
    assert (turn.rescored_text, turn.intent, turn.match["how"]) == (fixed, "sales", "acoustic")
    (texts,) = stt.scored
    assert "Sales." not in texts  # a long transcript is not replaced whole


async def test_a_phrase_the_recognisers_own_decoding_beats_is_not_taken(autojump_clock, stt):
    """The reference is the better of the free transcript and the model's own decoding of
    the audio: a phrase close to the first but far below the second is not taken."""
    stt.scores, stt.own = {"Sales.": -0.4}, 3.0
    out = await run_session(CallerScript().speak_after_agent_quiet(says("Feel.")).hangup(at=12))
    assert out.record.turns[1].intent == "fallback"
    assert len(stt.scored) == 1


async def test_a_phrase_scoring_below_the_margin_is_not_taken(autojump_clock, stt):
    margin = load_config().assistants[0].stt.acoustic_margin
    stt.scores = {"Sales.": FREE_SCORE - margin - 0.05}
    out = await run_session(CallerScript().speak_after_agent_quiet(says("Feel.")).hangup(at=12))
    turn = out.record.turns[1]
    assert (turn.rescored_text, turn.intent) == ("", "fallback")
    assert turn.match["how"] == "none"
    assert len(stt.scored) == 1


async def test_acoustic_rescoring_can_be_switched_off(autojump_clock, stt):
    stt.scores = {"Sales.": -0.4}
    out = await run_session(CallerScript().speak_after_agent_quiet(says("Feel.")).hangup(at=12),
                            cfg=acoustic_off())
    assert out.record.turns[1].intent == "fallback"
    assert stt.scored == []


async def test_a_scoring_failure_leaves_the_transcript_as_heard(autojump_clock, stt):
    stt.scores, stt.fail = {"Sales.": -0.4}, True
    out = await run_session(CallerScript().speak_after_agent_quiet(says("Feel.")).hangup(at=12))
    assert [t.intent for t in out.record.turns] == ["greeting", "fallback"]
    assert out.ended.status == "CALLER_HANGUP"
