"""What the mock is told to do (:class:`RealtimeScript`) and what one connection did
(:class:`SessionLog`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio


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
    confirm_format: dict[str, Any] | None = None
    """Output format the server confirms and uses whatever the client asked for."""
    close_after_seconds: float | None = None
    """After this long the server sends an ``error`` (code ``session_expired``) and closes."""


@dataclass(frozen=True)
class Truncation:
    item_id: str
    content_index: int
    audio_end_ms: int


class SessionClosedError(Exception):
    """A :meth:`SessionLog.wait_for` could not be satisfied: the session ended first."""


@dataclass(eq=False)
class SessionLog:
    """Everything one connection did. Appends and audio deltas are counted, not stored."""

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
    close_reason: str | None = None
    """``client`` | ``disconnect_mid_response`` | ``close_after_seconds`` | ``send_failed``."""
    closed: trio.Event = field(default_factory=trio.Event)
    _counts: dict[tuple[bool, str], int] = field(default_factory=dict, repr=False)
    _waiters: list[tuple[bool, str, int, trio.Event]] = field(default_factory=list, repr=False)

    def count(self, type_name: str, *, sent: bool = False) -> int:
        """How many events of this type were received (or, with ``sent``, sent)."""
        return self._counts.get((sent, type_name), 0)

    def received(self, type_name: str) -> list[dict[str, Any]]:
        return [e for e in self.client_events if e.get("type") == type_name]

    def sent(self, type_name: str) -> list[dict[str, Any]]:
        return [e for e in self.server_events if e["type"] == type_name]

    def sent_types(self) -> list[str]:
        return [e["type"] for e in self.server_events]

    async def wait_for(self, type_name: str, count: int = 1) -> dict[str, Any]:
        """Wait until the ``count``-th client event of this type has been handled; return it
        (for appends, ``{"type": ..., "count": n}``). Raises SessionClosedError if the session
        ends first."""
        await self._wait(False, type_name, count)
        return self._nth(self.client_events, type_name, count)

    async def wait_for_sent(self, type_name: str, count: int = 1) -> dict[str, Any]:
        """Wait until the ``count``-th server event of this type has been sent; return it (for
        audio deltas, ``{"type": ..., "count": n}``). Raises SessionClosedError as wait_for."""
        await self._wait(True, type_name, count)
        return self._nth(self.server_events, type_name, count)

    async def _wait(self, sent: bool, type_name: str, count: int) -> None:
        if self.count(type_name, sent=sent) < count:
            if not self.closed.is_set():
                event = trio.Event()
                self._waiters.append((sent, type_name, count, event))
                await event.wait()
            if self.count(type_name, sent=sent) < count:
                raise SessionClosedError(f"session closed before {count} x {type_name}")

    def _nth(self, events: list[dict[str, Any]], type_name: str, count: int) -> dict[str, Any]:
        matches = [e for e in events if e.get("type") == type_name]
        return matches[count - 1] if matches else {"type": type_name, "count": count}

    def _bump(self, sent: bool, type_name: str) -> None:
        key = (sent, type_name)
        n = self._counts[key] = self._counts.get(key, 0) + 1
        if self._waiters:
            keep = []
            for w in self._waiters:
                if w[0] == sent and w[1] == type_name and w[2] <= n:
                    w[3].set()
                else:
                    keep.append(w)
            self._waiters = keep

    def _close(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
        self.closed.set()
        for w in self._waiters:
            w[3].set()
        self._waiters = []
