"""Caller audio for the real-Asterisk tier, and what the caller's leg recorded.

Caller phrases are spoken by the bundled Piper voice (the ``local`` extra) once per session and
written as 8 kHz 16-bit mono WAV files into the instance's sounds directory, where
``Playback()`` finds them. What the agent said is recorded by ``MixMonitor`` on the caller's
half of the Local channel and transcribed by the same Moonshine STT the product uses.
"""

from __future__ import annotations

import difflib
import math
import re
import wave
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from media_sidecar.dsp.levels import dbfs
from media_sidecar.speech.moonshine_stt import MoonshineStt
from media_sidecar.speech.piper_tts import PiperTts
from media_sidecar.speech.prompts import synthesize

RATE = 8000
FRAME = 160  # samples in 20 ms


@cache
def _tts() -> PiperTts:
    tts = PiperTts("joe-us")
    tts.load()
    return tts


@cache
def _stt() -> MoonshineStt:
    stt = MoonshineStt("tiny-en")
    stt.load()
    return stt


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40]


def write_wav(path: Path, pcm: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.astype("<i2").tobytes())


def read_wav(path: Path) -> np.ndarray:
    """int16 mono samples at 8 kHz (MixMonitor writes ``.wav`` as 8 kHz 16-bit mono)."""
    with wave.open(str(path), "rb") as w:
        if w.getframerate() != RATE or w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: expected 8 kHz 16-bit mono, got {w.getparams()}")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()


@dataclass(frozen=True)
class Phrase:
    text: str
    name: str
    """Playback() argument: the file name without ``.wav`` in the sounds directory."""
    seconds: float


def make_phrase(sounds: Path, text: str) -> Phrase:
    """``text`` spoken by Piper as ``sounds/<slug>.wav`` (8 kHz), with 100 ms of silence
    around it so Playback's first and last frames are quiet."""
    pcm = np.frombuffer(synthesize(_tts(), text), dtype="<i2")
    pad = np.zeros(RATE // 10, dtype=np.int16)
    pcm = np.concatenate([pad, pcm, pad])
    name = f"caller_{slug(text)}"
    write_wav(sounds / f"{name}.wav", pcm)
    return Phrase(text, name, len(pcm) / RATE)


def spoken_seconds(text: str) -> float:
    """How long the product's own voice (the same Piper voice) says ``text``, first to last
    loud frame: what a whole utterance measures on the caller's leg."""
    segs = speech_segments(np.frombuffer(synthesize(_tts(), text), dtype="<i2"))
    return segs[-1][1] - segs[0][0] if segs else 0.0


def transcribe(pcm: np.ndarray) -> str:
    if len(pcm) < RATE // 4:
        return ""
    return _stt().transcribe(pcm.astype(np.int16), RATE)


def frame_levels(pcm: np.ndarray) -> np.ndarray:
    """dBFS of each 20 ms frame."""
    n = len(pcm) // FRAME
    return np.array([dbfs(pcm[i * FRAME:(i + 1) * FRAME].astype("<i2").tobytes())
                     for i in range(n)])


def speech_segments(pcm: np.ndarray, *, floor_dbfs: float = -45.0, gap_ms: int = 400,
                    min_ms: int = 100) -> list[tuple[float, float]]:
    """(start, end) seconds of the loud stretches: frames above ``floor_dbfs``, joined across
    quiet gaps shorter than ``gap_ms``, dropping stretches shorter than ``min_ms``."""
    loud = frame_levels(pcm) > floor_dbfs
    segs: list[list[int]] = []
    for i, on in enumerate(loud):
        if not on:
            continue
        if segs and (i - segs[-1][1]) * 20 <= gap_ms:
            segs[-1][1] = i + 1
        else:
            segs.append([i, i + 1])
    return [(a * 0.02, b * 0.02) for a, b in segs if (b - a) * 20 >= min_ms]


def words(text: str) -> set[str]:
    return {w.strip("'") for w in re.findall(r"[a-z']+", text.lower().replace("-", ""))}


def heard(text: str, *expected: str) -> bool:
    """True if every expected word is in ``text``, allowing the small slips of a tiny STT
    model on telephone audio ("sale" for "sales"): a word counts when a heard word is at
    least 80 % similar."""
    got = words(text)
    return all(any(difflib.SequenceMatcher(None, w, g).ratio() >= 0.8 for g in got)
               for w in expected)


def heard_most(text: str, sentence: str, share: float = 0.8) -> bool:
    """True if at least ``share`` of the words of ``sentence`` are :func:`heard` in ``text``.

    For a whole sentence of Piper speech: Piper samples its prosody on every synthesis, and the
    tiny STT then slips on about one word in thirty ("pat your call" for "pass your call",
    "dubai" for "goodbye"; measured over 30 syntheses of each fixed sentence), so demanding
    every word fails a run now and then, while a different or garbled sentence still fails.
    """
    expected = sorted(words(sentence))
    hits = sum(heard(text, w) for w in expected)
    return hits >= max(1, math.ceil(share * len(expected) - 1e-9))
