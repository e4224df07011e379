"""The seam between a relayed call and a speech-to-speech provider.

A provider session owns its connection (a WebSocket, or nothing for the echo assistant) and
speaks in the call's terms only: caller audio in as slin 8 kHz 20 ms frames, agent audio out as
slin 8 kHz chunks tagged with the provider's item id, plus a few events (the caller started
speaking, transcripts, a response ended). Everything about pacing, barge-in and the hand-back
lives in :class:`media_sidecar.session.relay.RelaySession`, so every provider gets the same
playout behaviour.

Provider sessions run inside the call's nursery; they report a dead provider by raising
:class:`ProviderError` from :meth:`SpeechToSpeech.run`, which the relay session turns into the
call's graceful end.
"""

from __future__ import annotations

from typing import Protocol

import trio


class ProviderError(Exception):
    """The provider cannot serve this call (any more).

    ``retryable`` tells a transient fault (network, 5xx, rate limit) from a permanent one (bad
    key, unknown model, bad request): a retry or a fallback provider makes sense only for the
    first kind.
    """

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class RelayPort(Protocol):
    """What a provider session may tell the call it serves (all non-blocking)."""

    def agent_audio(self, pcm: bytes, item_id: str, t_in: float) -> None:
        """slin 8 kHz agent audio for item ``item_id``; ``t_in`` is the trio time the
        provider's message arrived (before any decoding), for the relay-overhead figure."""

    def agent_audio_done(self, item_id: str) -> None:
        """No more audio will come for ``item_id`` (its last partial frame may be played)."""

    def caller_speech_started(self) -> tuple[str, int] | None:
        """The provider heard the caller start talking. The call flushes interruptible agent
        audio (barge-in) and returns ``(item_id, ms of that item actually played)`` for the
        item that was cut off, or None when nothing was cut (nothing playing, or protected)."""

    def caller_speech_stopped(self, audio_end_ms: int) -> None:
        """The provider's end of caller speech, on the provider's input-audio clock."""

    def transcript(self, role: str, text: str) -> None:
        """A final transcript: role ``caller`` or ``agent``."""

    def response_done(self, status: str, usage: dict[str, object] | None) -> None:
        """A provider response ended (completed, cancelled, failed, incomplete)."""


class SpeechToSpeech(Protocol):
    """One call's session with a speech-to-speech provider."""

    name: str

    async def run(self, port: RelayPort, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, configure, report ``started`` once the call may begin, then serve until
        cancelled. Raises ProviderError when the provider fails (before or after started)."""

    def send_caller_audio(self, pcm: bytes) -> None:
        """One 20 ms slin 8 kHz caller frame (never blocks; the session queues or drops)."""
