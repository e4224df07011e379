"""What the mock does (:class:`AgentScript`) and what happened (:class:`SessionLog`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.mocks.common import EventLog, SessionClosedError

__all__ = ["AgentScript", "SessionClosedError", "SessionLog", "Speech"]

MEDIA = "Media"
"""Pseudo-type under which client binary frames (asyncapi ``AgentV1Media``) are counted."""
AUDIO = "Audio"
"""Pseudo-type under which server binary frames (asyncapi ``AgentV1Audio``) are counted."""


LATENCY = {"stt_latency": 0.12, "ttt_token_latency": 0.34, "ttt_text_latency": 0.36,
           "ttt_tool_latency": 0.41, "tts_latency": 0.18, "total_latency": 0.71}
"""providers-2026-update.md 3.1's example (SDK 7.17 ``agent_v1latency_report.py``: every field
optional, seconds)."""


@dataclass(frozen=True)
class AgentScript:
    """What the mock does. Agent turns are the replies to user turns (spoken or injected),
    numbered from 1 per session; the greeting and injected agent messages are not turns.
    Transcripts and replies are consumed in order per session."""

    vad_rms: float = 500.0
    """RMS (16-bit scale) above which a 20 ms input frame is speech."""
    vad_start_ms: int = 60
    """Consecutive loud audio before ``UserStartedSpeaking``."""
    vad_end_ms: int = 500
    """Consecutive quiet audio that ends the user's turn."""
    transcripts: Sequence[str] = ()
    """User transcripts per spoken turn, then ``"utterance <n>"``."""
    replies: Sequence[str] = ()
    """Assistant texts per plain reply, then ``"reply <n>"``."""
    reply_ms: int = 1500
    """Length of the tone spoken for every agent message (greeting and injections included)."""
    reply_pcm16: bytes | None = None
    """Speech audio (PCM16 LE at ``reply_pcm16_rate``) instead of the tone."""
    reply_pcm16_rate: int = 24000
    tone_hz: float = 440.0
    tone_amplitude: int = 8000
    chunk_ms: int = 100
    """Audio per binary frame sent."""
    send_rate: float = 4.0
    """Multiple of real time at which audio frames are sent; <= 0 sends them unpaced."""
    first_byte_delay: float = 0.0
    """Seconds between an agent message's ``ConversationText`` and its first audio."""
    function_calls: Mapping[str, tuple[str, Mapping[str, Any]]] = field(default_factory=dict)
    """Substring of the user text (case-insensitive) -> (function name, arguments): that turn
    is a function call. The function must be declared in the Settings, else it is a plain reply
    and a problem is recorded."""
    speak_before_call: str | None = None
    """If set, a function-call turn first speaks this text, then sends the request."""
    after_tool_reply: str = "done"
    """What the agent says once the function result is in."""
    server_function_result: str = '{"mock":"not executed"}'
    """``content`` of the server's FunctionCallResponse for a function with an ``endpoint``."""
    error_after_turns: int | None = None
    """The n-th agent turn is replaced by ``Error`` INTERNAL_SERVER_ERROR, then close."""
    disconnect_mid_turn: int | None = None
    """The stream is closed (no close frame) halfway through the n-th turn's first audio."""
    reject_with_status: int | None = None
    """Every upgrade is refused with this HTTP status (e.g. 503: provider down)."""
    total_latency: float = 0.82
    tts_latency: float = 0.21
    ttt_latency: float = 0.61
    """Figures reported by ``AgentStartedSpeaking`` (seconds); no delay is implied."""
    cancel_function_calls_after: float | None = None
    """Seconds after each client-side ``FunctionCallRequest`` (0: right behind it, before any
    response is read) the server sends ``FunctionCallCancelled`` for it and drops the turn: no
    History function_calls, no after-tool reply. It is sent even if the response already came
    (the live order of a response in flight and a cancellation is not documented); a response
    that arrives after it is a problem. None: calls are never cancelled."""
    latency_report: Mapping[str, float] | None = field(default_factory=lambda: dict(LATENCY))
    """``LatencyReport`` figures (seconds) sent after each agent turn's ``AgentAudioDone``
    (``ttt_tool_latency`` only for a turn with a function call); None: no reports."""
    idle_timeout: float | None = 10.0
    """With neither audio nor KeepAlive for this long: ``Error`` CLIENT_MESSAGE_TIMEOUT, close.
    None disables it."""


@dataclass(eq=False)
class Speech:
    """One agent message and how much of its audio went out."""

    kind: str
    """``greeting`` | ``reply`` | ``before_call`` | ``after_tool`` | ``inject``."""
    text: str
    turn: int | None
    """The agent turn it belongs to; None for the greeting and injected messages."""
    started_at: float
    """Runtime clock when its ConversationText was sent."""
    total_ms: float
    bytes_sent: int = 0
    ms_sent: float = 0.0
    interrupted: bool = False
    """Cut by UserStartedSpeaking (or InjectAgentMessage ``interrupt``) before AgentAudioDone."""
    done: bool = False
    """AgentAudioDone was sent."""




@dataclass(eq=False)
class SessionLog(EventLog):
    """Everything one connection did. Binary frames are counted (types ``Media`` received,
    ``Audio`` sent), not stored. ``close_reason``: ``client`` | ``rejected`` |
    ``error:<CODE>`` | ``disconnect_mid_turn`` | ``send_failed``."""

    path: str = ""
    request_id: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    """Headers of interest (lower-case names); the credential is redacted."""
    auth_scheme: str | None = None
    """``Token`` | ``Bearer`` | ``subprotocol``, once accepted."""
    rejected_status: int | None = None
    settings: dict[str, Any] | None = field(default=None, repr=False)
    """The Settings message as received (once applied)."""
    config: dict[str, Any] | None = field(default=None, repr=False)
    """Effective settings: Settings with UpdatePrompt/Speak/Think/Listen applied."""
    client_messages: list[dict[str, Any]] = field(default_factory=list, repr=False)
    server_messages: list[dict[str, Any]] = field(default_factory=list, repr=False)
    audio_in_frames: int = 0
    audio_in_bytes: int = 0
    audio_in_ms: float = 0.0
    audio_out_frames: int = 0
    audio_out_bytes: int = 0
    audio_out_ms: float = 0.0
    speeches: list[Speech] = field(default_factory=list)
    turns: int = 0
    """Agent turns started."""
    user_texts: list[str] = field(default_factory=list)
    """User turns: transcripts of spoken turns and injected user messages, in order."""
    keepalive_times: list[float] = field(default_factory=list)
    function_requests: list[dict[str, Any]] = field(default_factory=list)
    """The ``functions`` items of the FunctionCallRequests sent."""
    function_responses: list[dict[str, Any]] = field(default_factory=list)
    """FunctionCallResponse messages received, matched or not."""
    injected_user: list[str] = field(default_factory=list)
    injected_agent: list[str] = field(default_factory=list)
    cancelled_calls: list[str] = field(default_factory=list)
    """Ids named by the FunctionCallCancelled messages sent."""
    crossed_responses: list[dict[str, Any]] = field(default_factory=list, repr=False)
    """FunctionCallResponses that crossed their cancellation on the wire (not problems)."""
    problems: list[str] = field(default_factory=list)
    """Client deviations the mock tolerated (or the script could not follow)."""

    @property
    def interrupted(self) -> list[Speech]:
        return [s for s in self.speeches if s.interrupted]

    def _inbound(self) -> list[dict[str, Any]]:
        return self.client_messages

    def _outbound(self) -> list[dict[str, Any]]:
        return self.server_messages
