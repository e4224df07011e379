"""``POST /v1/audio/transcriptions`` without I/O: form validation (reference/providers.md 5.3),
WAV parsing and measurement, and the response bodies. Pure (numpy only)."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from media_sidecar.dsp.g711 import alaw_decode, ulaw_decode

from .script import ApiError

__all__ = [
    "EXTENSIONS",
    "FORMATS",
    "MAX_FILE_BYTES",
    "MODELS",
    "TranscriptionRequest",
    "WavError",
    "WavInfo",
    "parse_wav",
    "render_response",
    "stream_events",
    "usage",
    "validate_transcription",
]

PATH = "/v1/audio/transcriptions"
MODELS = ("gpt-transcribe", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "whisper-1",
          "gpt-4o-transcribe-diarize")
EXTENSIONS = ("flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "wav", "webm")
FORMATS: dict[str, tuple[str, ...]] = {
    "whisper-1": ("json", "text", "srt", "verbose_json", "vtt"),
    "gpt-4o-transcribe-diarize": ("json", "text", "diarized_json"),
}
"""Response formats per model; the other (gpt-*) models take ``json`` and ``text``."""
TOKEN_FORMATS = ("json", "text")
MAX_FILE_BYTES = 25 * 1024 * 1024
MIN_SECONDS = 0.1
WAV_ENCODINGS = {(1, 16): "pcm16", (7, 8): "mulaw", (6, 8): "alaw"}
"""(format tag, bits per sample) the mock decodes; WAVE_FORMAT_EXTENSIBLE is read through its
sub-format."""


class WavError(ValueError):
    """The file is not a WAV the mock can decode; the message says why."""


@dataclass(frozen=True)
class WavInfo:
    rate: int
    channels: int
    encoding: str
    """``pcm16`` | ``mulaw`` | ``alaw``."""
    frames: int
    """Samples per channel."""
    rms: float
    """Over all samples, 16-bit scale."""

    @property
    def seconds(self) -> float:
        return self.frames / self.rate


def parse_wav(data: bytes) -> WavInfo:
    """Read a RIFF/WAVE file: the ``fmt `` chunk (PCM 16-bit, mu-law or A-law; any rate and
    channel count) and the ``data`` chunk. A data size larger than the file (a header written
    before the length was known, 0xFFFFFFFF) is read to the end of the file. Raises WavError."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavError("not a RIFF/WAVE file")
    fmt: tuple[int, int, int, int, int] | None = None
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            if len(body) < 16:
                raise WavError(f"fmt chunk of {len(body)} bytes < 16")
            tag, channels, rate, _, block, bits = struct.unpack_from("<HHIIHH", body)
            if tag == 0xFFFE and len(body) >= 26:
                tag = struct.unpack_from("<H", body, 24)[0]  # sub-format GUID's first 2 bytes
            fmt = (tag, channels, rate, block, bits)
        elif cid == b"data":
            if fmt is None:
                raise WavError("data chunk before fmt chunk")
            return _measure(body, *fmt)
        pos += 8 + size + (size & 1)
    raise WavError("no fmt chunk" if fmt is None else "no data chunk")


def _measure(body: bytes, tag: int, channels: int, rate: int, block: int, bits: int) -> WavInfo:
    encoding = WAV_ENCODINGS.get((tag, bits))
    if encoding is None:
        raise WavError(f"unsupported WAV encoding: format tag {tag}, {bits} bits")
    if channels < 1 or rate < 1:
        raise WavError(f"bad fmt: {channels} channels at {rate} Hz")
    if block != channels * bits // 8:
        raise WavError(f"bad fmt: block align {block} for {channels} x {bits} bits")
    usable = len(body) - len(body) % block
    if encoding == "pcm16":
        samples = np.frombuffer(body, dtype="<i2", count=usable // 2)
    elif encoding == "mulaw":
        samples = ulaw_decode(body[:usable])
    else:
        samples = alaw_decode(body[:usable])
    x = samples.astype(np.float64)
    rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    return WavInfo(rate, channels, encoding, usable // block, rms)


@dataclass(frozen=True)
class TranscriptionRequest:
    """A validated form."""

    model: str
    filename: str
    extension: str
    response_format: str = "json"
    stream: bool = False
    """SSE requested (and honoured: whisper-1 ignores it, as documented)."""
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None


def _invalid(param: str, message: str, code: str | None = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def validate_transcription(fields: Mapping[str, str],
                           files: Mapping[str, tuple[str | None, str | None, bytes]]
                           ) -> TranscriptionRequest:
    """The request of a multipart form. Raises :class:`ApiError` 400 (413 for a file over
    25 MB) naming the field."""
    if "file" not in files:
        raise _invalid("file", "Missing required parameter: 'file'.",
                       "missing_required_parameter")
    filename, _, data = files["file"]
    if len(data) > MAX_FILE_BYTES:
        raise ApiError(413, f"Maximum content size limit ({MAX_FILE_BYTES}) exceeded "
                       f"({len(data)} bytes read)", param="file", code=None)
    extension = (filename or "").rpartition(".")[2].lower() if "." in (filename or "") else ""
    if extension not in EXTENSIONS:
        raise _invalid("file", f"Invalid file format. Supported formats: {list(EXTENSIONS)}",
                       "invalid_value")
    if "model" not in fields:
        raise _invalid("model", "Missing required parameter: 'model'.",
                       "missing_required_parameter")
    model = fields["model"]
    if model not in MODELS:
        raise _invalid("model", f"Invalid value: '{model}'. Supported values are: "
                       + ", ".join(f"'{m}'" for m in MODELS) + ".")
    response_format = fields.get("response_format", "json")
    allowed = FORMATS.get(model, TOKEN_FORMATS)
    if response_format not in allowed:
        raise _invalid("response_format", f"response_format '{response_format}' is not "
                       f"compatible with model '{model}'. Use one of: {', '.join(allowed)}.",
                       "unsupported_value")
    stream = _boolean(fields.get("stream", "false"), "stream")
    temperature = None
    if "temperature" in fields:
        try:
            temperature = float(fields["temperature"])
        except ValueError:
            raise _invalid("temperature", "Invalid type for 'temperature': expected a number.",
                           "invalid_type") from None
        if not 0.0 <= temperature <= 1.0:
            raise _invalid("temperature", f"Invalid 'temperature': expected a value between 0 "
                           f"and 1, but got {temperature} instead.")
    return TranscriptionRequest(model, filename or "", extension, response_format,
                                stream and model != "whisper-1", fields.get("language"),
                                fields.get("prompt"), temperature)


def _boolean(value: str, name: str) -> bool:
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0", ""):
        return False
    raise _invalid(name, f"Invalid value for '{name}': expected a boolean.", "invalid_type")


def check_duration(seconds: float) -> None:
    """Raises :class:`ApiError` 400 for audio shorter than OpenAI's 0.1 s minimum."""
    if seconds < MIN_SECONDS:
        raise _invalid("file", f"Audio file is too short. Minimum audio length is {MIN_SECONDS} "
                       f"seconds.", "audio_too_short")


def usage(request: TranscriptionRequest, seconds: float | None, text: str) -> dict[str, Any]:
    """whisper-1: ``{"type": "duration", "seconds"}``; the gpt-* models: ``{"type": "tokens",
    ...}`` with the mock's estimate (10 audio tokens per second, a text token per 4 characters of
    prompt or transcript). Unknown duration (not a WAV) counts as 0 s."""
    secs = seconds or 0.0
    if request.model == "whisper-1":
        return {"type": "duration", "seconds": round(secs, 3)}
    audio_tokens = math.ceil(secs * 10)
    text_tokens = math.ceil(len(request.prompt or "") / 4)
    output_tokens = math.ceil(len(text) / 4)
    input_tokens = audio_tokens + text_tokens
    return {"type": "tokens", "input_tokens": input_tokens,
            "input_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
            "output_tokens": output_tokens, "total_tokens": input_tokens + output_tokens}


def render_response(request: TranscriptionRequest, text: str, seconds: float | None
                    ) -> tuple[str, bytes]:
    """(content type, body) of a non-streamed response in ``request.response_format``."""
    fmt, secs = request.response_format, seconds or 0.0
    if fmt == "text":
        return "text/plain; charset=utf-8", (text + "\n").encode()
    if fmt in ("srt", "vtt"):
        return "text/plain; charset=utf-8", _subtitles(fmt, text, secs).encode()
    body: dict[str, Any] = {"text": text}
    if fmt == "verbose_json":
        body = {"task": "transcribe", "language": request.language or "english",
                "duration": round(secs, 3), "text": text,
                "segments": [_segment(text, secs)] if text else []}
    elif fmt == "diarized_json":
        body = {"task": "transcribe", "duration": round(secs, 3), "text": text, "segments": [
            {"type": "transcript.text.segment", "id": "seg_0", "start": 0.0,
             "end": round(secs, 3), "text": text, "speaker": "A"}] if text else []}
    body["usage"] = usage(request, seconds, text)
    return "application/json", json.dumps(body).encode()


def _segment(text: str, seconds: float) -> dict[str, Any]:
    return {"id": 0, "seek": 0, "start": 0.0, "end": round(seconds, 3), "text": " " + text,
            "tokens": [], "temperature": 0.0, "avg_logprob": -0.2, "compression_ratio": 1.0,
            "no_speech_prob": 0.01}


def _subtitles(fmt: str, text: str, seconds: float) -> str:
    def stamp(t: float, sep: str) -> str:
        ms = round(t * 1000)
        return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"

    head = "WEBVTT\n\n" if fmt == "vtt" else "1\n"
    sep = "." if fmt == "vtt" else ","
    if not text:
        return head if fmt == "vtt" else ""
    return f"{head}{stamp(0, sep)} --> {stamp(seconds, sep)}\n{text}\n\n"


def stream_events(request: TranscriptionRequest, text: str, seconds: float | None
                  ) -> tuple[bytes, ...]:
    """``stream=true``: a ``transcript.text.delta`` per word (with its leading space), then
    ``transcript.text.done`` with the whole text and the usage; SSE ``data:`` lines, no
    ``[DONE]``."""
    words = text.split(" ")
    deltas = [w if i == 0 else " " + w for i, w in enumerate(words)] if text else []
    events: list[dict[str, Any]] = [{"type": "transcript.text.delta", "delta": d}
                                    for d in deltas]
    events.append({"type": "transcript.text.done", "text": text,
                   "usage": usage(request, seconds, text)})
    return tuple(f"data: {json.dumps(e)}\n\n".encode() for e in events)
