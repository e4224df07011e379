"""The local engines as calls see them: the sentence cache first, then the inference pool.

:class:`LocalVoice` and :class:`LocalEar` are what :class:`~..session.call.CallServices`
hands a pipeline call for ``tts: piper`` and ``stt: moonshine``. The pipeline stages
(:mod:`..pipeline.tts_local`, :mod:`..pipeline.stt_local`) send their requests to
:attr:`pool` when there is one (``sidecar.inference.enabled``), else run :attr:`engine` through
the call's ``offload`` (worker threads; inline in virtual-time tests).

Both also implement the blocking engine interfaces (:class:`~.base.TextToSpeech`,
:class:`~.base.SpeechToText`) with an engine of this process, loaded on first use, for tools
and tests that synthesise or transcribe outside a call; the media process never loads a model
for a call when a pool runs.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import trio

from ..config.schema import AssistantConfig, Config
from .base import SpeechEngineError, SpeechToText, TextToSpeech
from .cache import SentenceCache, fixed_sentences, prompt_texts, prompt_voice
from .pool import EngineSet, InferencePool, run_blocking, stt_key, tts_key
from .prompts import synthesize

__all__ = ["LocalEar", "LocalSpeech", "LocalVoice", "PrerenderedVoice", "load_local_speech",
           "pool_size"]

log = logging.getLogger("agi_voice.speech")


class LocalVoice:
    """One local voice (engine, voice, speed). Implements TextToSpeech (blocking, in-process)."""

    def __init__(self, key: str, engine: TextToSpeech, pool: InferencePool | None = None,
                 cache: SentenceCache | None = None) -> None:
        self.key = key
        """The pool's engine key and the cache's voice key."""
        self.engine = engine
        self.pool = pool
        self.cache = cache if cache is not None else SentenceCache()
        self.name = engine.name
        self.rate = engine.rate

    def cached(self, text: str) -> bytes | None:
        """``text`` as slin 8 kHz if it is a fixed sentence of this voice."""
        return self.cache.get(self.key, text)

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        """Blocking synthesis in this process at :attr:`rate` (see the module docstring)."""
        return self.engine.synthesize(text)


class LocalEar:
    """One local STT engine (engine, model). Implements SpeechToText (blocking, in-process)."""

    def __init__(self, key: str, engine: SpeechToText, pool: InferencePool | None = None
                 ) -> None:
        self.key = key
        self.engine = engine
        self.pool = pool
        self.name = engine.name

    def transcribe(self, pcm: np.ndarray, rate: int) -> str:
        """Blocking transcription in this process (see the module docstring)."""
        return self.engine.transcribe(pcm, rate)

    def score(self, pcm: np.ndarray, rate: int, texts: list[str]) -> list[float]:
        """Blocking acoustic scoring of ``texts`` in this process (the engine's ``score``).
        Raises SpeechEngineError when the engine cannot score."""
        score = getattr(self.engine, "score", None)
        if score is None:
            raise SpeechEngineError(f"STT engine {self.name} cannot score texts")
        return list(score(pcm, rate, texts))


class PrerenderedVoice:
    """Implements TextToSpeech (at 8 kHz) over the cache only: how the fixed prompts (apology,
    announcement, filler) are taken from it without loading a model in this process. Raises
    SpeechEngineError for a text that was not rendered."""

    def __init__(self, key: str, cache: SentenceCache, name: str = "cache") -> None:
        self.key = key
        self.cache = cache
        self.name = name
        self.rate = 8000

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        pcm = self.cache.get(self.key, text)
        if pcm is None:
            raise SpeechEngineError(f"{text!r} was not rendered for voice {self.key}")
        yield np.frombuffer(pcm, dtype="<i2")


@dataclass
class LocalSpeech:
    """The local engines a config needs, as loaded by :func:`load_local_speech`."""

    voices: dict[str, LocalVoice] = field(default_factory=dict)
    """Engine key -> voice."""
    ears: dict[str, LocalEar] = field(default_factory=dict)
    pool: InferencePool | None = None
    cache: SentenceCache = field(default_factory=SentenceCache)
    unavailable: dict[str, str] = field(default_factory=dict)
    """Assistant name -> why its local engines cannot run."""

    def voice_for(self, a: AssistantConfig) -> LocalVoice | None:
        return self.voices.get(tts_key(a.tts)) if a.tts.engine == "piper" else None

    def ear_for(self, a: AssistantConfig) -> LocalEar | None:
        return self.ears.get(stt_key(a.stt)) if a.stt.engine == "moonshine" else None

    def prompt_voice(self, a: AssistantConfig) -> PrerenderedVoice | None:
        """The cache of ``a``'s prompt voice, when its prompts were rendered."""
        key = tts_key(prompt_voice(a))
        if not any(k == key for k, _ in self.cache.keys()):
            return None
        return PrerenderedVoice(key, self.cache)


def pool_size(cfg: Config) -> int:
    """``sidecar.inference.processes``, or by default this host's cores shared among its media
    workers (``sidecar.workers``, default one per core), at least one."""
    n = cfg.sidecar.inference.processes
    if n:
        return n
    try:
        cores = len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    workers = getattr(cfg.sidecar, "workers", None)
    workers = cores if workers is None else max(1, workers)
    return max(1, cores // workers)


def load_local_speech(cfg: Config, current: LocalSpeech | None = None, *,
                      module: str = "media_sidecar.speech") -> LocalSpeech:
    """Load what ``cfg``'s pipeline assistants need (blocking: run it in a worker thread, or
    outside trio): their local STT and TTS, in the inference pool (``current``'s, when given:
    a reload; else a new one) or in this process, and the sentence cache of every local voice
    (reusing what ``current`` already rendered). With no pipeline assistant, nothing loads.
    ``module`` provides ``make_stt`` and ``make_tts`` (tests: a fake without models).
    """
    engines = importlib.import_module(module)
    make_stt, make_tts = engines.make_stt, engines.make_tts
    out = LocalSpeech()
    pipelines = [a for a in cfg.assistants if a.is_pipeline]
    if not pipelines:
        return out
    inf = cfg.sidecar.inference
    pooled = inf.enabled
    wanted = EngineSet()
    needs: dict[str, list[str]] = {}
    """Assistant -> its engine keys."""
    voices_for_prompts = {tts_key(prompt_voice(a)): prompt_voice(a) for a in cfg.assistants
                          if prompt_texts(cfg, a)}
    for a in pipelines:
        keys = needs.setdefault(a.name, [])
        try:
            if a.stt.engine == "moonshine":
                key = wanted.add_stt(a.stt)
                keys.append(key)
                if key not in out.ears:
                    stt = make_stt(a.stt, load=not pooled)
                    warm = getattr(stt, "warm", None)
                    if warm is not None and not pooled:  # (the pool's processes warm their own)
                        warm()
                    out.ears[key] = LocalEar(key, stt)
            if a.tts.engine == "piper":
                key = wanted.add_tts(a.tts)
                keys.append(key)
                if key not in out.voices:
                    out.voices[key] = LocalVoice(key, make_tts(a.tts, load=not pooled))
        except SpeechEngineError as exc:
            out.unavailable[a.name] = str(exc)
            log.error("assistant %s cannot take calls: %s", a.name, exc)
    for key, voice_cfg in voices_for_prompts.items():
        if key in out.voices:
            continue
        try:
            wanted.add_tts(voice_cfg)
            out.voices[key] = LocalVoice(key, make_tts(voice_cfg, load=not pooled))
        except SpeechEngineError as exc:
            log.info("no local TTS for fixed prompts: %s", exc)
    if all(a.name in out.unavailable for a in pipelines):
        return out
    if pooled:
        out.pool = _pool(cfg, wanted, current, module)
        for a in pipelines:
            errors = [out.pool.errors[k] for k in needs.get(a.name, ()) if k in out.pool.errors]
            if errors and a.name not in out.unavailable:
                out.unavailable[a.name] = errors[0]
                log.error("assistant %s cannot take calls: %s", a.name, errors[0])
        for key in out.pool.errors:
            out.voices.pop(key, None)
            out.ears.pop(key, None)
        for v in out.voices.values():
            v.pool = out.pool
        for e in out.ears.values():
            e.pool = out.pool
    for v in out.voices.values():
        v.cache = out.cache
    _render(cfg, out, current)
    return out


def _pool(cfg: Config, wanted: EngineSet, current: LocalSpeech | None,
          module: str) -> InferencePool:
    inf = cfg.sidecar.inference
    if current is not None and current.pool is not None:
        pool = current.pool
        run_blocking(pool.load, wanted)
        return pool
    pool = InferencePool(wanted, processes=pool_size(cfg), threads=inf.threads, nice=inf.nice,
                         module=module)
    pool.start()
    return pool


def _render(cfg: Config, out: LocalSpeech, current: LocalSpeech | None) -> None:
    """Fill ``out.cache``: every voice's fixed sentences, and the prompt texts in each
    assistant's prompt voice."""
    wanted: dict[tuple[str, str], None] = {}
    for a in cfg.assistants:
        voice = out.voice_for(a) if a.is_pipeline else None
        if voice is not None and a.name not in out.unavailable:
            for text in fixed_sentences(a):
                wanted[(voice.key, text)] = None
        key = tts_key(prompt_voice(a))
        if key in out.voices:
            for text in prompt_texts(cfg, a):
                wanted[(key, text)] = None
    rendered: list[tuple[tuple[str, str], bytes | str]]
    missing = out.cache.reuse(current.cache if current is not None else None, wanted)
    t0 = time.monotonic()
    if out.pool is not None:
        pool = out.pool

        async def render_all() -> list[tuple[tuple[str, str], bytes | str]]:
            results: list[tuple[tuple[str, str], bytes | str]] = []

            async def one(item: tuple[str, str]) -> None:
                try:
                    results.append((item, await pool.synthesize_all("cache", *item)))
                except SpeechEngineError as exc:
                    results.append((item, str(exc)))

            async with trio.open_nursery() as nursery:
                for item in missing:
                    nursery.start_soon(one, item)
            return results

        rendered = run_blocking(render_all) if missing else []
    else:
        rendered = []
        for item in missing:
            try:
                rendered.append((item, synthesize(out.voices[item[0]].engine, item[1])))
            except SpeechEngineError as exc:
                rendered.append((item, str(exc)))
    for (voice_key, text), pcm in rendered:
        if isinstance(pcm, bytes):
            out.cache.put(voice_key, text, pcm)
        else:
            log.warning("voice %s: %r not rendered: %s", voice_key, text, pcm)
    log.info("sentence cache: %d sentences, %.1f s of audio, %d kB (%d rendered in %.1f s, "
             "%d kept)", len(out.cache), out.cache.seconds, out.cache.nbytes // 1024,
             len(missing), time.monotonic() - t0, len(wanted) - len(missing))
