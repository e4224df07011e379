"""What the mock does (:class:`LiveScript`) and what happened (:class:`SessionLog`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.mocks.common import EventLog, SessionClosedError

__all__ = ["LiveScript", "SessionClosedError", "SessionLog", "Speech"]

AUDIO_IN = "session.input_audio.append"
AUDIO_OUT = "session.output_audio.delta"


@dataclass(frozen=True)
class LiveScript:
    """What the mock does. Agent turns are the answers to the caller's utterances, numbered
    from 1 per session; commentary (the greeting, keypad digits) is spoken but is not a turn.
    Transcripts and replies are consumed in order per session."""

    vad_rms: float = 500.0
    """RMS (16-bit scale) above which a 20 ms input frame is speech."""
    vad_start_ms: int = 60
    """Loud audio before the model notices the caller (and stops talking over them)."""
    vad_end_ms: int = 500
    """Quiet audio that ends the caller's utterance; the answer starts then."""
    transcripts: Sequence[str] = ()
    """Caller transcripts per utterance, then ``"utterance <n>"``."""
    replies: Sequence[str] = ()
    """Agent texts per plain answer (and per commentary without a quoted text), then
    ``"reply <n>"``. A commentary with a quoted text says that text (the greeting)."""
    reply_ms: int = 1500
    """Length of the tone spoken for every agent utterance."""
    tone_hz: float = 440.0
    tone_amplitude: int = 8000
    chunk_ms: int = 20
    """Audio per ``session.output_audio.delta``."""
    send_rate: float = 1.0
    """Multiple of real time at which output deltas are sent (the service: real time)."""
    send_silence: bool = True
    """Output deltas keep flowing when the model is quiet, silence included ([3P] behaviour)."""
    first_byte_delay: float = 0.0
    """Seconds between the end of the caller's utterance and the answer."""
    function_calls: Mapping[str, tuple[str, Mapping[str, Any]]] = field(default_factory=dict)
    """Substring of the caller text (case-insensitive) -> (function, arguments): that turn is a
    delegation whose backend response calls the function. It must be a declared tool of a
    responses delegation, else it is a plain answer and a problem is recorded."""
    speak_before_call: str | None = None
    """If set, the acknowledgement spoken after ``session.delegation.created``, before the
    function call."""
    after_tool_reply: str = "done"
    """What the model says once the continuation (``response.create``) completed."""
    usage_interval: float = 10.0
    """Seconds between ``session.usage.updated`` events."""
    expires_in: int = 3600
    disconnect_mid_turn: int | None = None
    """The stream is dropped (no close frame: 1006) halfway through the n-th turn's audio."""
    close_after_turns: int | None = None
    """The n-th turn is replaced by ``session.closed`` with ``close_reason``, then a 1000 close."""
    close_reason: str = "connection_lost"
    refuse_start: tuple[str, str] | None = None
    """(code, message): ``session.start`` is answered with this ``error``, then a 1000 close."""
    reject_with_status: int | None = None
    """Every upgrade is refused with this HTTP status (e.g. 503: provider down)."""


@dataclass(eq=False)
class Speech:
    """One agent utterance and how much of its audio went out."""

    kind: str
    """``commentary`` | ``reply`` | ``acknowledgement`` | ``after_tool``."""
    text: str
    turn: int | None
    started_at: float
    frames: list[bytes] = field(default_factory=list, repr=False)
    total_frames: int = 0
    frames_sent: int = 0
    interrupted: bool = False
    done: bool = False


@dataclass(eq=False)
class SessionLog(EventLog):
    """Everything one connection did. Audio appends and output deltas are counted (types
    ``session.input_audio.append`` received, ``session.output_audio.delta`` sent), not stored.
    ``close_reason``: ``client`` | ``rejected`` | ``refused_start`` | ``closed:<reason>`` |
    ``disconnect_mid_turn`` | ``send_failed``."""

    path: str = ""
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    """Headers of interest (lower-case names); the credential is redacted."""
    rejected_status: int | None = None
    start: dict[str, Any] | None = field(default=None, repr=False)
    """The ``session.start`` event as received."""
    session: dict[str, Any] | None = field(default=None, repr=False)
    """The resolved session (``session.started``'s ``session``)."""
    client_messages: list[dict[str, Any]] = field(default_factory=list, repr=False)
    server_messages: list[dict[str, Any]] = field(default_factory=list, repr=False)
    audio_in_ms: float = 0.0
    audio_out_ms: float = 0.0
    speech_out_ms: float = 0.0
    speeches: list[Speech] = field(default_factory=list)
    turns: int = 0
    user_texts: list[str] = field(default_factory=list)
    commentary: list[dict[str, Any]] = field(default_factory=list)
    delegations: list[dict[str, Any]] = field(default_factory=list)
    function_calls: list[dict[str, Any]] = field(default_factory=list)
    function_outputs: list[dict[str, Any]] = field(default_factory=list)
    response_creates: int = 0
    muted_at: float | None = None
    errors_sent: list[dict[str, Any]] = field(default_factory=list)
    closed_reason: str | None = None
    """``reason`` of the ``session.closed`` sent, if any."""
    problems: list[str] = field(default_factory=list)
    """Client protocol mistakes the mock saw (an ``error`` was sent for each)."""

    @property
    def interrupted(self) -> list[Speech]:
        return [s for s in self.speeches if s.interrupted]

    def _inbound(self) -> list[dict[str, Any]]:
        return self.client_messages

    def _outbound(self) -> list[dict[str, Any]]:
        return self.server_messages
