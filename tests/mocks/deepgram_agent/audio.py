"""Audio for the mock: input decoding, an energy VAD, and the rendered reply clip. Pure numpy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from media_sidecar.dsp.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

__all__ = ["Clip", "EnergyVad", "InputDecoder", "render_clip"]

VAD_FRAME_MS = 20
SAMPLE_WIDTH = {"mulaw": 1, "alaw": 1, "linear16": 2, "linear32": 4}
"""Input encodings the mock decodes (bytes per sample). Others are counted, not listened to."""


class InputDecoder:
    """Client audio bytes -> int16 samples. Multi-byte samples split across frames are carried."""

    def __init__(self, encoding: str, rate: int) -> None:
        self.encoding = encoding
        self.width = SAMPLE_WIDTH.get(encoding, 0)
        self.bytes_per_ms = rate * self.width / 1000
        self._carry = b""

    @property
    def decodes(self) -> bool:
        return self.width > 0

    def ms(self, nbytes: int) -> float:
        return nbytes / self.bytes_per_ms if self.width else 0.0

    def decode(self, raw: bytes) -> np.ndarray:
        if self.width == 1:
            return ulaw_decode(raw) if self.encoding == "mulaw" else alaw_decode(raw)
        if self._carry:
            raw = self._carry + raw
        n = len(raw) // self.width
        self._carry = raw[n * self.width :]
        if self.width == 2:
            return np.frombuffer(raw, dtype="<i2", count=n)
        return (np.frombuffer(raw, dtype="<i4", count=n) >> 16).astype(np.int16)


class EnergyVad:
    """Speech start after ``start_ms`` of consecutive loud 20 ms frames, end after ``end_ms`` of
    consecutive quiet ones. :meth:`feed` returns the transitions: True = started, False = ended."""

    def __init__(self, rate: int, rms: float, start_ms: int, end_ms: int) -> None:
        self.frame = rate * VAD_FRAME_MS // 1000
        # RMS > rms without sqrt and mean: the sum of squares against a scaled threshold
        self.threshold = rms * rms * self.frame
        self.start_ms, self.end_ms = start_ms, end_ms
        self.speaking = False
        self.loud_ms = self.quiet_ms = 0
        self._rest = np.empty(0, dtype=np.int16)

    def feed(self, samples: np.ndarray) -> list[bool]:
        if self._rest.size:
            samples = np.concatenate((self._rest, samples))
        n = samples.size // self.frame
        self._rest = samples[n * self.frame :]
        if n == 0:
            return []
        x = samples[: n * self.frame].astype(np.float32).reshape(n, self.frame)
        loud = np.einsum("ij,ij->i", x, x) > self.threshold
        out: list[bool] = []
        for is_loud in loud.tolist():
            if not self.speaking:
                self.loud_ms = self.loud_ms + VAD_FRAME_MS if is_loud else 0
                if self.loud_ms >= self.start_ms:
                    self.speaking, self.loud_ms, self.quiet_ms = True, 0, 0
                    out.append(True)
            else:
                self.quiet_ms = 0 if is_loud else self.quiet_ms + VAD_FRAME_MS
                if self.quiet_ms >= self.end_ms:
                    self.speaking, self.loud_ms, self.quiet_ms = False, 0, 0
                    out.append(False)
        return out


@dataclass(frozen=True)
class Clip:
    """An agent message's audio in one output format, cut into frames."""

    frames: tuple[bytes, ...]
    frame_ms: tuple[float, ...]
    total_ms: float


def render_clip(
    *,
    encoding: str,
    rate: int,
    reply_ms: int,
    chunk_ms: int,
    tone_hz: float,
    tone_amplitude: int,
    pcm16: bytes | None = None,
    pcm16_rate: int = 24000,
) -> Clip:
    """The tone (or ``pcm16`` resampled linearly) in ``encoding`` at ``rate``, in ``chunk_ms``
    frames. ``encoding`` is linear16, mulaw or alaw."""
    if pcm16 is not None:
        src = np.frombuffer(pcm16, dtype="<i2", count=len(pcm16) // 2).astype(np.float32)
        n = len(src) * rate // pcm16_rate
        pcm = np.interp(np.arange(n) * (pcm16_rate / rate), np.arange(len(src)), src)
    else:
        t = np.arange(rate * reply_ms // 1000) / rate
        pcm = tone_amplitude * np.sin(2 * np.pi * tone_hz * t)
    samples = np.clip(np.rint(pcm), -32768, 32767).astype("<i2")
    if encoding == "linear16":
        data, width = samples.tobytes(), 2
    elif encoding == "mulaw":
        data, width = ulaw_encode(samples), 1
    elif encoding == "alaw":
        data, width = alaw_encode(samples), 1
    else:
        raise ValueError(f"cannot render {encoding}")
    step = max(1, rate * chunk_ms // 1000) * width
    frames = tuple(data[i : i + step] for i in range(0, len(data), step))
    frame_ms = tuple(len(f) / width * 1000 / rate for f in frames)
    return Clip(frames, frame_ms, len(samples) * 1000 / rate)
