"""Fixed sentences from the cache, in virtual time: a call whose sentences are all cached
synthesises nothing and sounds exactly as one that synthesised them; a sentence missing from
the cache is synthesised as before."""

from __future__ import annotations

import pytest

from fastagi_server.emulator.caller import CallerScript
from media_sidecar.brain.text import split_sentences
from media_sidecar.config.loader import load_config
from media_sidecar.session.speaker import Speaker
from media_sidecar.speech.cache import SentenceCache, fixed_sentences
from media_sidecar.speech.local import LocalVoice
from media_sidecar.speech.prompts import synthesize
from tests.fakes import FakeTts, caller_says
from tests.session import harness

CFG = load_config()
A = CFG.assistants[0]
BILLING = next(i.reply for i in A.brain.intents if i.name == "billing")


def script() -> CallerScript:
    return CallerScript().speak_after_agent_quiet(
        caller_says("please transfer me to the billing department"))


def rendered(leave_out: tuple[str, ...] = ()) -> SentenceCache:
    """The default assistant's fixed sentences said by the fake voice, as the sidecar renders
    them at load."""
    cache = SentenceCache()
    for text in fixed_sentences(A):
        if text not in leave_out:
            cache.put("fake", text, synthesize(FakeTts(), text))
    return cache


@pytest.fixture
def cached_voice(monkeypatch):
    """The harness's speaker, with the fake voice behind the sentence cache last appended
    (none yet: an empty cache)."""
    caches: list[SentenceCache] = []

    def speaker(tts):
        return Speaker(LocalVoice("fake", tts, cache=caches[-1] if caches else None))

    monkeypatch.setattr(harness, "Speaker", speaker)
    return caches


def frames(out: harness.Outcome) -> list[tuple[float, bytes]]:
    return [(round(f.t - out.t0, 6), f.payload) for f in out.agent_frames()]


async def test_a_call_of_fixed_sentences_synthesises_nothing_and_sounds_the_same(
        autojump_clock, cached_voice):
    plain = await harness.run_session(script())
    assert plain.tts.spoken  # the greeting and the billing reply, synthesised
    cached_voice.append(rendered())
    out = await harness.run_session(script())
    assert out.tts.spoken == []
    assert out.ended.status == "TRANSFERRED"
    assert frames(out) == frames(plain)
    assert out.record.turns[1].agent_text == BILLING


async def test_a_sentence_missing_from_the_cache_is_synthesised(autojump_clock, cached_voice):
    missing = split_sentences(BILLING)[0]
    cached_voice.append(rendered(leave_out=(missing,)))
    out = await harness.run_session(script())
    assert out.tts.spoken == [missing]
    assert out.ended.status == "TRANSFERRED"
