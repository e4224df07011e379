"""What the mock is told to do (:class:`RealtimeScript`) and what one connection did
(:class:`SessionLog`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.mocks.common import EventLog


@dataclass(frozen=True)
class RealtimeScript:
    """What the mock does. Counters (``error_after_responses``, ``disconnect_mid_response``)
    are 1-based over the responses of one session; reply texts and transcripts are consumed in
    order per session."""

    vad_rms: float = 500.0
    """RMS (16-bit scale) above which a 20 ms input frame is speech. ``threshold`` is ignored."""
    vad_start_ms: int = 60
    """Consecutive loud audio before ``speech_started``."""
    transcripts: list[str] = field(default_factory=list)
    """User transcripts per committed turn, then ``"utterance <n>"``."""
    replies: list[str] = field(default_factory=list)
    """Assistant reply texts per (non-tool) response, then ``"reply <n>"``."""
    reply_ms: int = 1500
    reply_pcm16_24k: bytes | None = None
    """Reply audio (24 kHz PCM16 LE) instead of the tone; ``reply_ms`` is then ignored."""
    tone_hz: float = 440.0
    tone_amplitude: int = 8000
    chunk_ms: int = 100
    """Audio per ``response.output_audio.delta``."""
    send_rate: float = 4.0
    """Multiple of real time at which deltas are sent; <= 0 sends them unpaced."""
    first_byte_delay: float = 0.0
    """Seconds between ``content_part.added`` and the first audio delta."""
    function_calls: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    """Substring of the turn's user input -> (tool name, arguments): that turn's response is a
    function call. The input is the committed audio's transcript or the text of a user
    ``input_text`` message. A tool the response cannot use (not declared in the session's or the
    response's ``tools``, or ``tool_choice: "none"``) is not called: the response is a normal
    reply and :attr:`SessionLog.problems` says why."""
    speak_before_call: str | None = None
    """If set, a function-call response first speaks this text (output_index 0)."""
    after_tool_reply: str = "done"
    """Reply text of the first response after a ``function_call_output`` item."""
    after_tool_replies: dict[str, str] = field(default_factory=dict)
    """Tool name -> reply text of the first response after that tool's ``function_call_output``
    (the latest output's tool, found by ``call_id``); else ``after_tool_reply``."""
    error_after_responses: int | None = None
    """The n-th response is replaced by an ``error`` event (server_error)."""
    disconnect_mid_response: int | None = None
    """The TCP stream is closed (no WebSocket close frame) halfway through the n-th response's
    audio."""
    garbage_mid_response: int | None = None
    """Halfway through the n-th response's audio the server stops the response (it never
    finishes) and sends only unusable frames from then on, every 250 ms: text that is not JSON,
    a binary frame, an event whose type is not a string, an audio delta that is not base64 (a
    broken proxy, or a service gone wrong, with the connection still open)."""
    confirm_format: dict[str, Any] | None = None
    """Output format the server confirms and uses whatever the client asked for."""
    close_after_seconds: float | None = None
    """After this long the server sends an ``error`` (code ``session_expired``) and closes."""


@dataclass(frozen=True)
class Truncation:
    item_id: str
    content_index: int
    audio_end_ms: int




@dataclass(eq=False)
class SessionLog(EventLog):
    """Everything one connection did. Appends and audio deltas are counted, not stored.
    ``close_reason``: ``client`` | ``disconnect_mid_response`` | ``close_after_seconds`` |
    ``send_failed``."""

    path: str = ""
    model: str | None = None
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    """Headers of interest (lower-case names); the credential values are redacted."""
    beta_header: str | None = None
    rejected_status: int | None = None
    client_events: list[dict[str, Any]] = field(default_factory=list, repr=False)
    append_count: int = 0
    audio_in_bytes: int = 0
    audio_in_ms: float = 0.0
    server_events: list[dict[str, Any]] = field(default_factory=list, repr=False)
    audio_deltas_sent: int = 0
    audio_out_bytes: int = 0
    audio_out_ms: float = 0.0
    assistant_audio_ms: dict[str, float] = field(default_factory=dict)
    """Audio generated (sent) per assistant item id, in ms."""
    truncations: list[Truncation] = field(default_factory=list)
    function_calls: list[dict[str, Any]] = field(default_factory=list)
    """``function_call`` items the server completed."""
    function_outputs: list[dict[str, Any]] = field(default_factory=list)
    """``function_call_output`` items received (as stored: ``id``, ``call_id``, ``output``)."""
    tools: list[dict[str, Any]] = field(default_factory=list)
    """The session's declared tools (``session.tools`` as last updated)."""
    problems: list[str] = field(default_factory=list)
    """Client mistakes the mock tolerated rather than answered with an ``error`` event (a
    scripted call to a tool the session did not declare, an output for an unknown call_id)."""
    response_instructions: list[Any] = field(default_factory=list)
    """``response.instructions`` per response, in order (one entry per :attr:`responses`);
    ``None`` when absent, as for every response the VAD creates."""
    user_texts: list[str] = field(default_factory=list)
    """Text of user ``input_text`` messages received (DTMF)."""
    user_transcripts: list[str] = field(default_factory=list)
    session: dict[str, Any] = field(default_factory=dict, repr=False)
    """The effective session config."""
    responses: int = 0

    def _inbound(self) -> list[dict[str, Any]]:
        return self.client_events

    def _outbound(self) -> list[dict[str, Any]]:
        return self.server_events
