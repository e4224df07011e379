"""The sentence cache and the local engines as the sidecar loads them, with a real inference
pool of fake engines (tests/unit/inference_fake.py), outside virtual time: what is rendered
at load and at a reload, and that a fixed sentence never reaches the pool."""

from __future__ import annotations

import dataclasses
import os
from contextlib import aclosing
from pathlib import Path

import numpy as np
import pytest
import trio

from media_sidecar.brain.text import split_sentences
from media_sidecar.config.loader import load_config
from media_sidecar.config.schema import Config, InferenceConfig
from media_sidecar.pipeline.tts_local import LocalSynth
from media_sidecar.speech.cache import fixed_sentences
from media_sidecar.speech.local import LocalSpeech, load_local_speech
from tests.unit.test_layering import FORBIDDEN_IN_PURE, ROOT, import_chains

FAKE = "tests.unit.inference_fake"


def config(log: Path, greeting: str = "Hello there. How can I help?") -> Config:
    base = load_config()
    a = base.assistants[0]
    a = dataclasses.replace(
        a, stt=dataclasses.replace(a.stt, model=str(log)),
        tts=dataclasses.replace(a.tts, voice=str(log)),
        brain=dataclasses.replace(a.brain, greeting=greeting))
    sidecar = dataclasses.replace(base.sidecar, inference=InferenceConfig(processes=2))
    return dataclasses.replace(base, assistants=(a,), sidecar=sidecar)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "ran.log"
    path.touch()
    return path


@pytest.fixture
def loaded(log: Path):
    cfg = config(log)
    speech = load_local_speech(cfg, module=FAKE)
    yield cfg, speech
    assert speech.pool is not None
    speech.pool.close()


def synthesized(log: Path) -> list[str]:
    return [line.split(" ", 2)[2] for line in log.read_text().splitlines()
            if line.split(" ")[1] == "said"]


def test_every_fixed_sentence_and_prompt_is_rendered_once_at_load(loaded, log):
    cfg, speech = loaded
    a = cfg.assistants[0]
    (voice,) = speech.voices.values()
    assert speech.pool is not None and voice.pool is speech.pool and speech.pool.size == 2
    sentences = fixed_sentences(a)
    assert {"Hello there.", "How can I help?", "One moment."} <= set(sentences)
    for reply in [i.reply for i in a.brain.intents] + [a.brain.no_input.reprompt]:
        for s in split_sentences(reply):
            assert voice.cached(s) is not None, s
    # the drain announcement is one prompt (the offline assistant has no apology)
    assert voice.cached(cfg.drain.announcement) is not None
    assert sorted(synthesized(log)) == sorted({*sentences, cfg.drain.announcement})
    assert len(speech.cache) == len(synthesized(log))
    # fake chunks: 0.1 s each, 2 per text, 8 kHz
    assert speech.cache.nbytes == len(speech.cache) * 2 * 800 * 2


async def test_a_cached_sentence_never_reaches_the_pool(loaded, log):
    _, speech = loaded
    (voice,) = speech.voices.values()
    assert speech.pool is not None
    before = dict(speech.pool.stats.requests)
    synth = LocalSynth(voice)

    async def say(text: str) -> np.ndarray:
        async with aclosing(synth.stream(text)) as chunks:
            return np.concatenate([c async for c in chunks])

    greeting = await say("Hello there.")
    assert np.array_equal(greeting, np.frombuffer(voice.cached("Hello there.") or b"", "<i2"))
    assert speech.pool.stats.requests == before
    assert synth.cache_hits == 1 and synth.synthesized == 0
    other = await say("fresh words chunks=3")
    assert len(other) == 3 * 800 and speech.pool.stats.requests["tts"] == before["tts"] + 1
    assert synthesized(log)[-1] == "fresh words chunks=3"


def test_a_reload_keeps_the_pool_and_renders_only_new_sentences(loaded, log):
    cfg, speech = loaded
    assert speech.pool is not None
    pids = speech.pool.pids
    rendered = len(synthesized(log))
    new = load_local_speech(config(log, greeting="Hello there. What can I do for you?"),
                            LocalSpeech(pool=speech.pool, cache=speech.cache), module=FAKE)
    assert new.pool is speech.pool and new.pool.pids == pids
    assert synthesized(log)[rendered:] == ["What can I do for you?"]
    (voice,) = new.voices.values()
    assert voice.cached("What can I do for you?") and voice.cached("Hello there.")
    assert voice.cached("How can I help?") is None  # no longer in the config


def test_without_the_pool_the_cache_is_rendered_in_this_process(log):
    cfg = config(log)
    cfg = dataclasses.replace(cfg, sidecar=dataclasses.replace(
        cfg.sidecar, inference=InferenceConfig(enabled=False)))
    speech = load_local_speech(cfg, module=FAKE)
    assert speech.pool is None
    (voice,) = speech.voices.values()
    assert voice.cached("Hello there.") is not None
    # rendered here: the log's pid is this process's
    assert {line.split()[0] for line in log.read_text().splitlines()} == {str(os.getpid())}


def test_the_pool_wire_and_queue_are_pure():
    """The wire codec and the fair queue import no I/O or clock module themselves (their
    package's ``__init__`` reaches the engines, whose loaders take locks)."""
    for module in ("wire", "fair"):
        path = ROOT / "media_sidecar" / "speech" / f"{module}.py"
        bad = [name for chain, _, name in import_chains(path)
               if name.split(".")[0] in FORBIDDEN_IN_PURE
               and not any(step.startswith("(package)") for step in chain)]
        assert not bad, (module, bad)


def test_a_pool_request_from_a_trio_run_of_its_own(loaded):
    _, speech = loaded
    (voice,) = speech.voices.values()
    assert speech.pool is not None
    pcm = trio.run(speech.pool.synthesize_all, "x", voice.key, "y chunks=1")
    assert len(pcm) == 1600
