"""Fixed prompts, prepared at start-up: the apology said when a provider fails mid-call, the
drain's announcement said to each call handed off at the drain deadline, and the filler said
while a pipeline assistant's answer is slow.

A prompt is slin 8 kHz bytes, from a recording (WAV, 16-bit mono at any rate, or raw slin
8 kHz) or synthesised once with a local TTS engine, so saying it costs a call nothing and works
when the provider that failed was the call's only voice.
"""

from __future__ import annotations

import logging
import wave
from collections.abc import Callable

import numpy as np

from ..config.schema import AssistantConfig, Config
from ..dsp.resample import Resampler
from .base import SpeechEngineError, TextToSpeech

log = logging.getLogger("agi_voice.prompts")

MAX_PROMPT_SECONDS = 20


def load_prompt_file(path: str) -> bytes:
    """slin 8 kHz from a WAV file (16-bit mono, resampled if needed) or raw slin 8 kHz.

    Raises ValueError naming what is wrong with the file."""
    if path.lower().endswith(".wav"):
        try:
            with wave.open(path, "rb") as w:
                if w.getsampwidth() != 2 or w.getnchannels() != 1:
                    raise ValueError(f"{path}: expected 16-bit mono WAV")
                rate = w.getframerate()
                pcm = np.frombuffer(w.readframes(rate * MAX_PROMPT_SECONDS), dtype="<i2")
        except (wave.Error, EOFError) as exc:
            raise ValueError(f"{path}: not a readable WAV file: {exc}") from None
        if rate != 8000:
            r = Resampler(rate, 8000)
            pcm = np.concatenate([r.process(pcm), r.flush()]).astype("<i2")
        return pcm.astype("<i2").tobytes()
    with open(path, "rb") as f:
        data = f.read(8000 * 2 * MAX_PROMPT_SECONDS)
    return data[:len(data) - len(data) % 2]


def synthesize(tts: TextToSpeech, text: str) -> bytes:
    """``text`` said by ``tts``, as slin 8 kHz."""
    r = Resampler(tts.rate, 8000)
    parts = [r.process(np.asarray(c, dtype=np.int16)) for c in tts.synthesize(text)]
    parts.append(r.flush())
    return np.concatenate(parts).astype("<i2").tobytes()


def render_apologies(cfg: Config, tts_for: Callable[[AssistantConfig], TextToSpeech | None]
                     ) -> dict[str, bytes]:
    """Per model-driven assistant, its apology (file, else text through ``tts_for``).

    An assistant whose apology cannot be prepared gets none (logged once here): its calls
    still go to the fallback destination, only without the sentence."""
    out: dict[str, bytes] = {}
    for a in cfg.assistants:
        if a.offline or not (a.apology_file or a.apology):
            continue
        try:
            if a.apology_file:
                out[a.name] = load_prompt_file(a.apology_file)
                continue
            tts = tts_for(a)
            if tts is None:
                log.warning("assistant %s: no local TTS to say its apology (install the 'local' "
                            "extra or set apology_file); a failing provider ends calls without "
                            "it", a.name)
                continue
            out[a.name] = synthesize(tts, a.apology)
        except (OSError, ValueError, SpeechEngineError) as exc:
            log.warning("assistant %s: apology unavailable: %s", a.name, exc)
    return out


def render_announcements(cfg: Config, tts_for: Callable[[AssistantConfig], TextToSpeech | None]
                         ) -> dict[str, bytes]:
    """Per assistant, the drain's announcement (``drain.announcement``) in its local voice
    (through ``tts_for``), synthesised once per voice. An assistant without a local voice gets
    none (one warning): its calls are handed off at the deadline without the sentence."""
    text = cfg.drain.announcement.strip()
    out: dict[str, bytes] = {}
    if not text:
        return out
    by_engine: dict[int, bytes] = {}
    missing: list[str] = []
    for a in cfg.assistants:
        try:
            tts = tts_for(a)
            if tts is None:
                missing.append(a.name)
                continue
            if id(tts) not in by_engine:
                by_engine[id(tts)] = synthesize(tts, text)
            out[a.name] = by_engine[id(tts)]
        except (OSError, ValueError, SpeechEngineError) as exc:
            log.warning("assistant %s: drain announcement unavailable: %s", a.name, exc)
    if missing:
        log.warning("no local TTS to say the drain announcement for %s (install the 'local' "
                    "extra); their calls are handed off at the drain deadline without it",
                    ", ".join(missing))
    return out


def render_fillers(cfg: Config, tts_for: Callable[[AssistantConfig], TextToSpeech | None]
                   ) -> dict[str, bytes]:
    """Per pipeline assistant with a ``filler`` (after > 0, text set), the filler phrase
    ("One moment.") as slin 8 kHz in its local voice (``tts_for``), synthesised once per voice
    and text. An assistant without a local voice gets none (it then has no filler); a phrase
    that cannot be rendered is logged and skipped."""
    out: dict[str, bytes] = {}
    done: dict[tuple[int, str], bytes] = {}
    for a in cfg.assistants:
        text = a.filler.text.strip()
        if not a.is_pipeline or a.filler.after <= 0 or not text:
            continue
        try:
            tts = tts_for(a)
            if tts is None:
                continue
            key = (id(tts), text)
            if key not in done:
                done[key] = synthesize(tts, text)
            out[a.name] = done[key]
        except (OSError, ValueError, SpeechEngineError) as exc:
            log.warning("assistant %s: filler unavailable: %s", a.name, exc)
    return out
