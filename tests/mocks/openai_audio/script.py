"""What the mock does (:class:`AudioScript`) and what each request got (:class:`SpeechLog`,
:class:`TranscriptionLog`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.mocks.http import RequestRecord

__all__ = ["ENDPOINTS", "ApiError", "AudioScript", "RequestLog", "SpeechLog", "TranscriptionLog"]

ENDPOINTS = ("speech", "transcription")


@dataclass(frozen=True)
class AudioScript:
    """What the mock does. Request counters (``fail_request``, ``disconnect_request``) are
    1-based per endpoint over the requests that passed authentication, valid or not;
    ``faults_on`` says which endpoints they apply to. Transcripts are consumed in order over the
    server's life by the non-silent transcription requests."""

    # -- speech (POST /v1/audio/speech) --
    ms_per_char: float = 60.0
    """Tone length per input character, at speed 1.0 (divided by ``speed``)."""
    min_speech_ms: float = 200.0
    """Shortest tone rendered."""
    pcm16: bytes | None = None
    """Speech audio (24 kHz PCM16 LE mono) sent for every request instead of the tone."""
    tone_hz: float = 440.0
    tone_amplitude: int = 8000
    chunk_ms: int = 100
    """Audio per body chunk."""
    send_rate: float = 4.0
    """Multiple of real time at which chunks are sent; <= 0 sends them unpaced."""
    first_byte_delay: float = 0.25
    """Seconds between the request and the response head with the first chunk (the TTS
    latency)."""
    # -- transcription (POST /v1/audio/transcriptions) --
    transcripts: Sequence[str] = ()
    """Transcript per non-silent request, then ``"utterance <n>"``."""
    vad_rms: float = 500.0
    """RMS (16-bit scale) of the whole WAV below which it is silence."""
    silence_is_empty: bool = True
    """Silent WAV audio gets ``""`` (as OpenAI answers silence) and consumes no transcript."""
    transcribe_delay: float = 0.3
    """Seconds between the request and the response head."""
    stream_delta_delay: float = 0.05
    """Seconds between the events of a streamed transcription (``stream=true``)."""
    # -- faults --
    reject_status: int | None = None
    """Every request (before authentication) is refused with this status and an error body."""
    fail_request: int | None = None
    """The n-th request gets 500 with a ``server_error`` body (after the endpoint's delay)."""
    disconnect_request: int | None = None
    """The n-th request's connection is dropped halfway through its response body."""
    faults_on: Sequence[str] = ENDPOINTS
    """Endpoints (``speech``, ``transcription``) whose requests ``fail_request`` and
    ``disconnect_request`` count."""


@dataclass(eq=False)
class RequestLog:
    """What one request to an endpoint got. ``finished_at``, ``completed``, ``client_closed``
    and ``disconnected`` are read from the HTTP shell's record of the request."""

    n: int
    """1-based number of the request on its endpoint (requests that passed authentication)."""
    started_at: float
    """Runtime clock when the whole request had been received."""
    request_id: str = ""
    """The ``x-request-id`` response header."""
    status: int = 0
    """The response status; 0 if the client left before the response head."""
    error: dict[str, Any] | None = None
    """The ``error`` object of a 4xx/5xx body."""
    fault: str | None = None
    """``fail`` | ``disconnect`` when a scripted fault was applied."""
    bytes_sent: int = 0
    """Body bytes written to the client."""
    first_byte_at: float | None = None
    """Runtime clock when the first body bytes were written (the head goes just before)."""
    record: RequestRecord | None = field(default=None, repr=False)

    @property
    def finished_at(self) -> float | None:
        return self.record.finished_at if self.record is not None else None

    @property
    def completed(self) -> bool:
        """The whole response body was written."""
        return self.record is not None and self.record.completed

    @property
    def client_closed(self) -> bool:
        """The client went away before the response was complete."""
        return self.record is not None and self.record.client_closed

    @property
    def disconnected(self) -> bool:
        """The mock dropped the connection (``disconnect_request``)."""
        return self.record is not None and self.record.disconnected

    async def wait_finished(self) -> None:
        """Until the response ended: completed, client closed or disconnected."""
        if self.record is not None:
            await self.record.ended.wait()


@dataclass(eq=False)
class SpeechLog(RequestLog):
    """One ``/v1/audio/speech`` request."""

    body: dict[str, Any] | None = None
    """The request JSON as received (None if it was not a JSON object)."""
    response_format: str = "mp3"
    stream_format: str = "audio"
    rendered: bool = False
    """Real audio was sent (pcm, wav); mp3/opus/aac/flac get a few opaque bytes."""
    audio_ms_total: float = 0.0
    """Length of the rendered audio (0 when not rendered)."""
    audio_bytes_total: int = 0
    """Body bytes of the complete response (a wav header included)."""
    chunks_sent: int = 0


@dataclass(eq=False)
class TranscriptionLog(RequestLog):
    """One ``/v1/audio/transcriptions`` request."""

    fields: dict[str, str] = field(default_factory=dict)
    """The non-file form fields."""
    filename: str | None = None
    content_type: str | None = None
    file_bytes: int = 0
    audio_seconds: float | None = None
    """Measured for WAV files; None for other formats."""
    rate: int | None = None
    channels: int | None = None
    encoding: str | None = None
    """``pcm16`` | ``mulaw`` | ``alaw`` for WAV files."""
    rms: float | None = None
    silent: bool = False
    text: str | None = None
    """The transcript returned (None for errors)."""
    response_format: str = "json"
    streamed: bool = False


class ApiError(Exception):
    """A refused request: the HTTP status and OpenAI's error object
    ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.error: dict[str, Any] = {"message": message, "type": type, "param": param,
                                      "code": code}

    def body(self) -> dict[str, Any]:
        return {"error": dict(self.error)}
