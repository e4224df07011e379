"""What the speak mocks do (:class:`SpeakScript`) and what happened (:class:`SpeakLog` per
WebSocket, :class:`RestSpeech` per REST request)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.mocks.common import EventLog, SessionClosedError

if TYPE_CHECKING:
    from .audio import SpeakParams

__all__ = [
    "AUDIO",
    "ClearRecord",
    "FlushRecord",
    "RestSpeech",
    "SessionClosedError",
    "SpeakLog",
    "SpeakScript",
]

AUDIO = "Audio"
"""Pseudo-type under which server binary frames (asyncapi ``SpeakV1Audio``) are counted."""


@dataclass(frozen=True)
class SpeakScript:
    """What the mocks do; the WebSocket and the REST mock each take one."""

    ms_per_char: int = 60
    """Audio per character of the flushed text (a tone), at least ``min_ms``."""
    min_ms: int = 200
    pcm16: bytes | None = None
    """Speech audio (PCM16 LE at ``pcm16_rate``) spoken for every text instead of the tone."""
    pcm16_rate: int = 24000
    tone_hz: float = 440.0
    tone_amplitude: int = 8000
    chunk_ms: int = 100
    """Audio per binary frame (WebSocket) or body chunk (REST)."""
    send_rate: float = 4.0
    """Multiple of real time at which audio is sent; <= 0 sends it unpaced."""
    first_byte_delay: float = 0.15
    """Seconds from a Flush (REST: the request) to its first audio: the scripted TTS latency."""
    flush_limit: int = 20
    flush_window: float = 60.0
    """More than ``flush_limit`` Flushes within ``flush_window`` seconds: Warning, not flushed."""
    model_version: str = "2025-04-07.0"
    model_uuid: str = "ecb76e9d-f2db-4127-8060-79b05590d22f"
    idle_timeout: float | None = None
    """WebSocket: no client message for this long closes 1011 ``NET-0001``. None: never."""
    reject_with_status: int | None = None
    """Every upgrade (REST: request) is refused with this HTTP status."""
    disconnect_on_flush: int | None = None
    """WebSocket: the connection is dropped (no close frame) halfway through the n-th
    flush's audio (1-based)."""
    fail_request: int | None = None
    """REST: the n-th request (1-based) is answered ``fail_status`` with a Deepgram error."""
    fail_status: int = 500
    disconnect_request: int | None = None
    """REST: the n-th request's connection is dropped halfway through its audio."""


@dataclass(eq=False)
class FlushRecord:
    """One Flush and its audio. ``*_at`` are runtime-clock times."""

    sequence_id: int
    text: str
    queued_at: float
    audio_ms_total: float = 0.0
    audio_ms_sent: float = 0.0
    bytes_sent: int = 0
    cleared: bool = False
    """Cut (playing) or dropped (queued) by a Clear."""
    first_audio_at: float | None = None
    flushed_at: float | None = None
    """When ``Flushed`` was sent (None if cleared or the session ended first)."""


@dataclass(eq=False)
class ClearRecord:
    at: float
    sequence_id: int
    """The ``sequence_id`` of the ``Cleared`` sent (the number of Flushes before it)."""
    cut: int | None
    """Sequence id of the flush whose audio was cut, if one was playing."""
    dropped: list[int] = field(default_factory=list)
    """Sequence ids of queued flushes dropped."""
    dropped_text: str = ""
    """Spoken but not flushed text dropped."""


@dataclass(eq=False)
class SpeakLog(EventLog):
    """Everything one WebSocket did. Binary frames are counted (type ``Audio`` sent), not
    stored. ``close_reason``: ``client`` | ``rejected`` | ``close`` (the client's Close, 1000) |
    ``idle`` (1011 NET-0001) | ``undecodable`` (1008 DATA-0000) | ``binary`` (1003
    MESSAGE-0000) | ``disconnect_on_flush`` | ``send_failed``."""

    path: str = ""
    request_id: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    auth_scheme: str | None = None
    rejected_status: int | None = None
    rejected_reason: str | None = None
    query: dict[str, list[str]] = field(default_factory=dict)
    params: SpeakParams | None = None
    client_messages: list[dict[str, Any]] = field(default_factory=list, repr=False)
    server_messages: list[dict[str, Any]] = field(default_factory=list, repr=False)
    texts: list[str] = field(default_factory=list)
    """Speak texts in the order received."""
    flushes: list[FlushRecord] = field(default_factory=list)
    clears: list[ClearRecord] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    audio_out_frames: int = 0
    audio_out_bytes: int = 0
    audio_out_ms: float = 0.0
    close_code: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def spoken(self) -> list[str]:
        """Texts of the flushes whose audio went out whole (Flushed sent)."""
        return [f.text for f in self.flushes if f.flushed_at is not None]

    def _inbound(self) -> list[dict[str, Any]]:
        return self.client_messages

    def _outbound(self) -> list[dict[str, Any]]:
        return self.server_messages


@dataclass(eq=False)
class RestSpeech:
    """One REST request to ``/v1/speak`` and its answer."""

    n: int
    request_id: str
    query: dict[str, list[str]]
    text: str | None
    status: int = 200
    error: dict[str, Any] | None = None
    """The error body, for a refused request."""
    params: SpeakParams | None = None
    audio_ms_total: float = 0.0
    audio_ms_sent: float = 0.0
    bytes_sent: int = 0
    """Body bytes (WAV header included)."""
    first_byte_at: float | None = None
    finished_at: float | None = None
    disconnected: bool = False
