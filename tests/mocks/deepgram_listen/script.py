"""What the listen mock does (:class:`ListenScript`) and what happened (:class:`ListenLog`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.mocks.common import EventLog, SessionClosedError

from .wire import ListenParams

__all__ = ["MEDIA", "ListenLog", "ListenScript", "SessionClosedError", "Utterance"]

MEDIA = "Media"
"""Pseudo-type under which client binary frames (asyncapi ``ListenV1Media``) are counted."""


@dataclass(frozen=True)
class ListenScript:
    """What the mock does. Utterances are numbered from 1 per session; the n-th detected one
    is transcribed as ``transcripts[n-1]``, then ``"utterance <n>"``."""

    transcripts: Sequence[str] = ()
    """Final transcripts, verbatim (with punctuation and capitals) when the query asks for
    ``punctuate`` or ``smart_format``; otherwise lower-cased with the punctuation stripped."""
    vad_rms: float = 500.0
    """RMS (16-bit scale) above which a 20 ms input frame is speech."""
    vad_start_ms: int = 60
    """Consecutive loud audio before speech starts (``SpeechStarted``)."""
    segment_ms: int = 500
    """With ``endpointing=false``: quiet audio that ends a segment (``is_final`` true,
    ``speech_final`` false)."""
    interim_ms: int = 300
    """With ``interim_results=true``: an interim Results per this much audio since the start."""
    final_delay: float = 0.0
    """Seconds (runtime) between the end of speech being detected and its final Results."""
    confidence: float = 0.98
    model_name: str = "2-phonecall-nova"
    model_version: str = "2024-01-18.26916"
    model_arch: str = "nova-2"
    model_uuid: str = "c2d1e8a4-5f3b-4f5e-9d2a-3b8f1e7c6a10"
    idle_timeout: float | None = 10.0
    """Neither audio nor KeepAlive for this long: close 1011 ``NET-0001``. None disables it."""
    reject_with_status: int | None = None
    """Every upgrade is refused with this HTTP status (e.g. 503: provider down)."""
    disconnect_after_utterances: int | None = None
    """The connection is dropped (no close frame) right after the n-th final Results."""
    close_after_utterances: int | None = None
    """The server closes 1011 ``NET-0000`` right after the n-th final Results."""


@dataclass(eq=False)
class Utterance:
    """One detected stretch of speech. Audio times are seconds of received audio; ``*_at``
    are runtime-clock times."""

    n: int
    transcript: str
    speech_start: float
    """Audio time of the first loud frame of the utterance."""
    started_at: float
    speech_end: float | None = None
    """Audio time of the end of the last loud frame (set when the utterance ends)."""
    ended_at: float | None = None
    """When the end was detected (endpointing, Finalize or CloseStream)."""
    final_sent_at: float | None = None
    speech_final: bool = False
    from_finalize: bool = False
    interims: int = 0
    """Interim Results sent for it."""


@dataclass(eq=False)
class ListenLog(EventLog):
    """Everything one connection did. Binary frames are counted (type ``Media``), not stored.
    ``close_reason``: ``client`` | ``rejected`` | ``close_stream`` | ``idle`` (1011 NET-0001) |
    ``undecodable`` (1008 DATA-0000) | ``close_after_utterances`` (1011 NET-0000) |
    ``disconnect_after_utterances`` | ``send_failed``."""

    path: str = ""
    request_id: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    """Headers of interest (lower-case names); the credential is redacted."""
    auth_scheme: str | None = None
    """``Token`` | ``Bearer`` | ``subprotocol``, once accepted."""
    rejected_status: int | None = None
    rejected_reason: str | None = None
    query: dict[str, list[str]] = field(default_factory=dict)
    """The query string as sent (every parameter, repeated ones in order)."""
    params: ListenParams | None = None
    """The parsed query, once accepted."""
    client_messages: list[dict[str, Any]] = field(default_factory=list, repr=False)
    server_messages: list[dict[str, Any]] = field(default_factory=list, repr=False)
    audio_in_frames: int = 0
    audio_in_bytes: int = 0
    audio_in_ms: float = 0.0
    utterances: list[Utterance] = field(default_factory=list)
    keepalive_times: list[float] = field(default_factory=list)
    close_code: int | None = None
    """Close code the server sent (None: the client closed first, or the stream was dropped)."""
    problems: list[str] = field(default_factory=list)
    """Client deviations the mock tolerated (or that ended the session)."""

    @property
    def finalize_count(self) -> int:
        return self.count("Finalize")

    @property
    def transcripts(self) -> list[str]:
        """Transcripts of the final Results sent, in order."""
        return [u.transcript for u in self.utterances if u.final_sent_at is not None]

    def _inbound(self) -> list[dict[str, Any]]:
        return self.client_messages

    def _outbound(self) -> list[dict[str, Any]]:
        return self.server_messages
