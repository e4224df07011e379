"""``POST /v1/audio/speech`` without I/O: request validation (reference/providers.md 5.2) and the
response audio, cut into chunks. Pure (numpy only)."""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tests.mocks.deepgram_agent.audio import render_clip

from .script import ApiError, AudioScript

__all__ = [
    "CONTENT_TYPES",
    "MAX_INPUT_CHARS",
    "MODELS",
    "PCM_RATE",
    "VOICES",
    "SpeechAudio",
    "SpeechRequest",
    "render_speech",
    "speech_ms",
    "sse_events",
    "validate_speech",
    "wav_header",
]

PATH = "/v1/audio/speech"
PCM_RATE = 24000
"""``pcm``: raw 24 kHz, 16-bit signed little-endian, mono, no header."""
MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15")
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer",
          "verse", "marin", "cedar")
CONTENT_TYPES = {"mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac",
                 "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}
RENDERED = ("pcm", "wav")
OPAQUE = {"mp3": b"ID3\x04\x00\x00\x00\x00\x00\x00", "opus": b"OggS\x00\x02",
          "aac": b"\xff\xf1\x50\x80", "flac": b"fLaC\x00\x00\x00\x22"}
"""A container's magic bytes: what a non-rendered format gets, padded to 32 bytes."""
MAX_INPUT_CHARS = 4096
MIN_SPEED, MAX_SPEED = 0.25, 4.0


@dataclass(frozen=True)
class SpeechRequest:
    """A validated request body."""

    model: str
    input: str
    voice: str | dict[str, Any]
    instructions: str | None = None
    response_format: str = "mp3"
    speed: float = 1.0
    stream_format: str = "audio"


@dataclass(frozen=True)
class SpeechAudio:
    """A response body cut into chunks, with the audio each chunk carries."""

    content_type: str
    chunks: tuple[bytes, ...]
    chunk_ms: tuple[float, ...]
    total_ms: float
    rendered: bool

    @property
    def total_bytes(self) -> int:
        return sum(len(c) for c in self.chunks)


def _invalid(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _choice(body: Mapping[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = body.get(name, default)
    if value not in allowed:
        listed = ", ".join(f"'{a}'" for a in allowed)
        raise _invalid(name, f"Invalid value: {value!r}. Supported values are: {listed}.")
    return str(value)


def validate_speech(body: Any) -> SpeechRequest:
    """The request of a decoded JSON body. Raises :class:`ApiError` 400 naming the field."""
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    for name in ("model", "input", "voice"):
        if name not in body:
            raise _invalid(name, f"Missing required parameter: '{name}'.",
                           "missing_required_parameter")
    model = _choice(body, "model", MODELS, "")
    text = body["input"]
    if not isinstance(text, str):
        raise _invalid("input", "Invalid type for 'input': expected a string.", "invalid_type")
    if len(text) > MAX_INPUT_CHARS:
        raise _invalid("input", f"Invalid 'input': string too long. Expected a string with "
                       f"maximum length {MAX_INPUT_CHARS}, but got a string with length "
                       f"{len(text)} instead.", "string_above_max_length")
    voice = body["voice"]
    if isinstance(voice, dict):
        if not isinstance(voice.get("id"), str) or not voice["id"]:
            raise _invalid("voice", "Invalid 'voice': a custom voice needs a string 'id'.")
    else:
        _choice(body, "voice", VOICES, "")
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _invalid("instructions", "Invalid type for 'instructions': expected a string.",
                           "invalid_type")
        if model.startswith("tts-1"):
            raise _invalid("instructions", f"Instructions are not supported with {model}.",
                           "unsupported_parameter")
    response_format = _choice(body, "response_format", tuple(CONTENT_TYPES), "mp3")
    speed = body.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, int | float):
        raise _invalid("speed", "Invalid type for 'speed': expected a number.", "invalid_type")
    if speed < MIN_SPEED:
        raise _invalid("speed", f"Invalid 'speed': decimal below minimum value. Expected a value "
                       f">= {MIN_SPEED}, but got {speed} instead.", "decimal_below_min_value")
    if speed > MAX_SPEED:
        raise _invalid("speed", f"Invalid 'speed': decimal above maximum value. Expected a value "
                       f"<= {MAX_SPEED}, but got {speed} instead.", "decimal_above_max_value")
    stream_format = _choice(body, "stream_format", ("audio", "sse"), "audio")
    if stream_format == "sse" and model.startswith("tts-1"):
        raise _invalid("stream_format", f"stream_format 'sse' is not supported with {model}.",
                       "unsupported_parameter")
    return SpeechRequest(model, text, voice, instructions, response_format, float(speed),
                         stream_format)


def speech_ms(script: AudioScript, text: str, speed: float) -> int:
    """Length of the tone for ``text``: ``ms_per_char`` per character over ``speed``, at least
    ``min_speech_ms``, rounded to the millisecond."""
    return round(max(script.min_speech_ms, script.ms_per_char * len(text) / speed))


def wav_header(data_bytes: int, rate: int = PCM_RATE, channels: int = 1) -> bytes:
    """A 44-byte RIFF/WAVE PCM 16-bit header for ``data_bytes`` of samples."""
    block = channels * 2
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, 16)
            + b"data" + struct.pack("<I", data_bytes))


def render_speech(script: AudioScript, request: SpeechRequest) -> SpeechAudio:
    """The body for ``request``: pcm (and wav, with a header in front of the first chunk) carry
    ``script.pcm16`` or a tone of :func:`speech_ms`, in ``chunk_ms`` chunks; the compressed
    formats carry a few opaque bytes in one chunk (``rendered`` False, no audio)."""
    fmt = request.response_format
    if fmt not in RENDERED:
        return SpeechAudio(CONTENT_TYPES[fmt], (OPAQUE[fmt].ljust(32, b"\x00"),), (0.0,), 0.0,
                           False)
    clip = render_clip(encoding="linear16", rate=PCM_RATE,
                       reply_ms=speech_ms(script, request.input, request.speed),
                       chunk_ms=script.chunk_ms, tone_hz=script.tone_hz,
                       tone_amplitude=script.tone_amplitude, pcm16=script.pcm16,
                       pcm16_rate=PCM_RATE)
    chunks = list(clip.frames) or [b""]
    if fmt == "wav":
        chunks[0] = wav_header(sum(len(f) for f in clip.frames)) + chunks[0]
    frame_ms = clip.frame_ms or (0.0,)
    return SpeechAudio(CONTENT_TYPES[fmt], tuple(chunks), frame_ms, clip.total_ms, True)


def sse_events(request: SpeechRequest, audio: SpeechAudio) -> tuple[bytes, ...]:
    """``stream_format: "sse"``: one ``speech.audio.delta`` (base64 ``audio``) per chunk, then
    ``speech.audio.done`` with token usage. The event names are those of reference/providers.md
    5.2, marked unverified there; the usage figures are the mock's own estimate."""
    events: list[dict[str, Any]] = [
        {"type": "speech.audio.delta", "audio": base64.b64encode(c).decode("ascii")}
        for c in audio.chunks]
    input_tokens = max(1, math.ceil(len(request.input) / 4))
    output_tokens = math.ceil(audio.total_ms / 1000 * 50)
    events.append({"type": "speech.audio.done", "usage": {
        "input_tokens": input_tokens, "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens}})
    return tuple(f"data: {json.dumps(e)}\n\n".encode() for e in events)
