"""What the speak mocks (WebSocket and REST) share, pure: the query parsed and validated
(:func:`parse_params`), how long a text is spoken (:func:`speech_ms`), the rendered audio
(:class:`Renderer`) and the WAV header."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from tests.mocks.deepgram_agent.audio import Clip, render_clip

from .script import SpeakScript

__all__ = [
    "DEFAULT_MODEL",
    "RATES",
    "REST_ENCODINGS",
    "WS_ENCODINGS",
    "FormatError",
    "Renderer",
    "SpeakParams",
    "parse_params",
    "speech_ms",
    "wav_header",
]

DEFAULT_MODEL = "aura-asteria-en"
WS_ENCODINGS = ("linear16", "mulaw", "alaw")
"""asyncapi ``SpeakV1Encoding``: the streaming encodings."""
REST_ENCODINGS = ("linear16", "mulaw", "alaw", "mp3", "opus", "flac", "aac")
"""openapi ``/v1/speak`` encodings; only the first three are rendered by the mock."""
RATES = {
    "linear16": (8000, 16000, 24000, 32000, 48000),
    "mulaw": (8000, 16000),
    "alaw": (8000, 16000),
}
"""openapi ``V1SpeakPostParametersSampleRate0..2`` (the WebSocket takes the same)."""
DEFAULT_RATE = {"linear16": 24000, "mulaw": 8000, "alaw": 8000}
CACHE_SIZE = 256
"""Rendered clips kept (a long benchmark speaks many lengths)."""
WAV_FORMAT = {"linear16": (1, 16), "alaw": (6, 8), "mulaw": (7, 8)}
"""WAVE format tag and bits per sample."""


class FormatError(ValueError):
    """The query is refused with HTTP 400; ``code`` is the ``err_code``, the message the
    ``err_msg``."""

    def __init__(self, message: str, code: str = "INVALID_QUERY_PARAMETER") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SpeakParams:
    model: str = DEFAULT_MODEL
    encoding: str = "linear16"
    sample_rate: int = 24000
    speed: float = 1.0
    container: str = "none"
    """REST only: ``none`` or ``wav`` (a 44-byte WAV header first). The WebSocket has none."""

    @property
    def width(self) -> int:
        return 2 if self.encoding == "linear16" else 1

    @property
    def content_type(self) -> str:
        """The REST Content-Type (the live values are unverified, providers.md 4.1)."""
        if self.container == "wav":
            return "audio/wav"
        return {"linear16": "audio/l16", "mulaw": "audio/mulaw", "alaw": "audio/alaw"}[
            self.encoding
        ] + f";rate={self.sample_rate}"


def _invalid(name: str, value: str) -> FormatError:
    return FormatError(f"Invalid '{name}' value of '{value}'.")


def parse_params(query: dict[str, list[str]], *, rest: bool) -> SpeakParams:
    """The parameters of a ``/v1/speak`` request. The WebSocket takes linear16 (default),
    mulaw, alaw; REST also names mp3, opus, flac, aac, refused here as unsupported in the mock
    (code UNSUPPORTED_IN_MOCK), as is an omitted REST ``encoding`` (openapi's default is mp3).
    ``sample_rate`` defaults to 24000 for linear16 and 8000 for mulaw / alaw. Raises
    FormatError."""
    last = {k: v[-1] for k, v in query.items() if v}
    if rest and "encoding" not in last:
        raise FormatError(
            "encoding omitted: the REST default is mp3 (openapi), unsupported in mock; "
            "send encoding=linear16|mulaw|alaw explicitly.",
            "UNSUPPORTED_IN_MOCK",
        )
    encoding = last.get("encoding", "linear16")
    if encoding not in (REST_ENCODINGS if rest else WS_ENCODINGS):
        raise _invalid("encoding", encoding)
    if encoding not in WS_ENCODINGS:
        raise FormatError(f"encoding {encoding} is unsupported in mock.", "UNSUPPORTED_IN_MOCK")
    rate = DEFAULT_RATE[encoding]
    if "sample_rate" in last:
        value = last["sample_rate"]
        if not value.isdigit() or int(value) not in RATES[encoding]:
            raise _invalid("sample_rate", value)
        rate = int(value)
    speed = 1.0
    if "speed" in last:
        try:
            speed = float(last["speed"])
        except ValueError:
            speed = math.nan
        if not speed > 0 or math.isinf(speed):
            raise _invalid("speed", last["speed"])
    container = "none"
    if rest:
        container = last.get("container", "wav")  # openapi: wav is the default
        if container not in ("none", "wav"):
            raise _invalid("container", container)
    return SpeakParams(
        model=last.get("model", DEFAULT_MODEL),
        encoding=encoding,
        sample_rate=rate,
        speed=speed,
        container=container,
    )


def speech_ms(text: str, script: SpeakScript, speed: float = 1.0) -> int:
    """How long ``text`` is spoken: ``ms_per_char`` per character, at least ``min_ms``,
    divided by ``speed``; 0 for an empty (or all-blank) text."""
    if not text.strip():
        return 0
    return round(max(script.min_ms, script.ms_per_char * len(text)) / speed)


def wav_header(encoding: str, rate: int, data_bytes: int) -> bytes:
    """A 44-byte RIFF/WAVE header (PCM 16-bit, A-law or mu-law 8-bit, mono)."""
    tag, bits = WAV_FORMAT[encoding]
    block = bits // 8
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, tag, 1, rate, rate * block, block, bits)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


class Renderer:
    """The audio of a flush or request, rendered once per (encoding, rate, length) and shared:
    ``script.pcm16`` when set (every text speaks that clip), else a tone of :func:`speech_ms`."""

    def __init__(self, script: SpeakScript) -> None:
        self.script = script
        self._clips: dict[tuple[str, int, int], Clip] = {}

    def clip(self, params: SpeakParams, text: str) -> Clip:
        ms = speech_ms(text, self.script, params.speed)
        if ms == 0:
            return Clip((), (), 0.0)
        if self.script.pcm16 is not None:
            ms = -1  # one key for the voice clip
        key = (params.encoding, params.sample_rate, ms)
        if key not in self._clips:
            if len(self._clips) >= CACHE_SIZE:
                self._clips.clear()
            s = self.script
            self._clips[key] = render_clip(
                encoding=params.encoding,
                rate=params.sample_rate,
                reply_ms=ms,
                chunk_ms=s.chunk_ms,
                tone_hz=s.tone_hz,
                tone_amplitude=s.tone_amplitude,
                pcm16=s.pcm16,
                pcm16_rate=s.pcm16_rate,
            )
        return self._clips[key]
