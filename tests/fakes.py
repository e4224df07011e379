"""Deterministic stand-ins for the speech engines, for session tests in virtual time.

They are fakes of the *engines* (model code), never of the session under test: the caller
"speaks" pure tones whose frequency names a sentence, FakeStt maps the frequency back to that
sentence, FakeTts renders each sentence as a tone 60 ms per character so tests can compute
exactly how long the agent talks.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

SENTENCES = {
    300: "please transfer me to the billing department",
    400: "goodbye",
    500: "what are your opening hours",
    600: "I want to talk to sales",
    700: "blah blah",
}
RATE = 8000


def tone(freq: float, seconds: float, amp: int = 8000, rate: int = RATE) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def caller_says(text: str, seconds: float = 1.2) -> bytes:
    freq = next(f for f, s in SENTENCES.items() if s == text)
    return tone(freq, seconds)


def dominant_freq(pcm: np.ndarray, rate: int) -> float:
    x = pcm.astype(np.float32)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


class FakeStt:
    name = "fake"

    def __init__(self) -> None:
        self.calls = 0

    def transcribe(self, pcm: np.ndarray, rate: int) -> str:
        self.calls += 1
        if len(pcm) < rate // 10:
            return ""
        f = dominant_freq(pcm, rate)
        best = min(SENTENCES, key=lambda k: abs(k - f))
        return SENTENCES[best] if abs(best - f) < 30 else ""


class FakeTts:
    """Speaks each sentence as a 1 kHz tone, 60 ms per character, at 16 kHz (so the speaker
    really resamples)."""

    name = "fake"
    rate = 16000
    SECONDS_PER_CHAR = 0.06

    def __init__(self) -> None:
        self.spoken: list[str] = []

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        self.spoken.append(text)
        n = int(len(text) * self.SECONDS_PER_CHAR * self.rate)
        t = np.arange(n) / self.rate
        audio = (6000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
        half = n // 2
        yield audio[:half]
        yield audio[half:]

    @classmethod
    def seconds(cls, text: str) -> float:
        return len(text) * cls.SECONDS_PER_CHAR


class EnergyVad:
    """A voice detector by energy alone (the engines under test are the session's, not VAD's)."""

    def __init__(self, cfg: object = None) -> None:
        pass

    def is_speech(self, frame: bytes) -> bool:
        x = np.frombuffer(frame, dtype="<i2").astype(np.float32)
        return bool(x.size) and float(np.sqrt(np.mean(x * x))) > 500.0
