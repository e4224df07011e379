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

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import trio

from ..brain.prompt import fill, template_values
from ..config.schema import AssistantConfig
from ..protocol.control import CallContext
from ..tools.spec import ToolReply, ToolSpec, build_specs


@dataclass(frozen=True, slots=True)
class ProviderSetup:
    """What every provider session is told about its call, in provider-neutral terms."""

    instructions: str
    greeting: str = ""
    tools: list[ToolSpec] = field(default_factory=list)
    language: str = "en"


def make_setup(assistant: AssistantConfig, context: CallContext,
               now: dt.datetime | None = None) -> ProviderSetup:
    """The assistant's instructions and greeting filled with the call context, and its tools."""
    if now is None:
        zone = ZoneInfo(assistant.timezone) if assistant.timezone else None
        now = dt.datetime.now(zone)
    values = template_values(
        caller_id=context.callerid, caller_name=context.calleridname, dnid=context.dnid,
        extension=context.extension, assistant=assistant.name,
        language=context.language or assistant.language, variables=context.variables, now=now)
    return ProviderSetup(instructions=fill(assistant.instructions, values),
                         greeting=fill(assistant.greeting, values),
                         tools=build_specs(assistant), language=assistant.language)


class ProviderError(Exception):
    """The provider cannot serve this call (any more).

    ``retryable`` tells a transient fault (network, 5xx, rate limit) from a permanent one (bad
    key, unknown model, bad request): a retry or a fallback provider makes sense only for the
    first kind.
    """

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def api_key(env: Mapping[str, str], name: str) -> str:
    """The key in environment variable ``name``; a missing key is a permanent failure."""
    key = env.get(name, "")
    if not key:
        raise ProviderError(f"the environment variable {name} is not set", retryable=False)
    return key


class Unusable:
    """A session's count of provider messages it had to skip (not JSON, no type, audio that is
    not base64). The first is logged at WARNING, the rest only at DEBUG and counted in the call
    record (``provider.malformed_events``), so a service that sends garbage cannot flood the
    log; the call's answer watchdog (``answer_timeout``) ends the wait for an answer that never
    comes."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.count = 0

    def skip(self, port: RelayPort | None, what: str) -> None:
        self.count += 1
        level = logging.WARNING if self.count == 1 else logging.DEBUG
        _log.log(level, "%s: skipped %s%s", self.provider, what,
                 " (further ones are counted in the call record: provider.malformed_events)"
                 if self.count == 1 else "")
        if port is not None:
            port.provider_note("malformed_events", self.count)


_log = logging.getLogger("agi_voice.provider")


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

    def provider_note(self, key: str, value: object) -> None:
        """A provider fact for the call record's ``provider`` section (a close reason, session
        seconds); may be called while the session is being torn down."""

    async def call_tool(self, name: str, arguments: str | dict[str, Any] | None) -> ToolReply:
        """Run the model's function call; the reply's ``output`` goes back to the model, and
        the model is asked to go on speaking only when ``respond`` is true."""

    def tool_cancelled(self, name: str) -> bool:
        """The provider withdrew function call ``name`` after :meth:`call_tool` had answered
        it (Deepgram ``FunctionCallCancelled``): a transfer or hang-up it started that is not
        carried out yet is called off, and the caller may interrupt again. Returns whether
        one was (the provider then hears the caller again)."""

    def provider_latency(self, item_id: str, figures: Mapping[str, float]) -> None:
        """The provider's own latency figures (seconds, by its names) for the response that
        spoke item ``item_id`` (Deepgram ``LatencyReport``): kept in that turn's record."""


class SpeechToSpeech(Protocol):
    """One call's session with a speech-to-speech provider."""

    name: str

    async def run(self, port: RelayPort, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, configure, report ``started`` once the call may begin, then serve until
        cancelled. Raises ProviderError when the provider fails (before or after started)."""

    local_turns: bool
    """True when the provider's own turn detection is off: the call's VAD decides when the
    caller starts (:meth:`interrupt`) and ends (:meth:`commit_turn`) a turn, and only the
    caller's speech is sent."""
    speaks_after_tool: bool
    """True when the provider speaks again on its own after every tool result (Deepgram)."""

    def send_caller_audio(self, pcm: bytes) -> None:
        """One 20 ms slin 8 kHz caller frame (never blocks; the session queues or drops)."""

    def send_user_text(self, text: str) -> None:
        """A user message in text (keypad digits); the provider answers it."""

    def interrupt(self, cut: tuple[str, int] | None) -> None:
        """The call cut the agent off itself (local VAD, a keypress): stop the response and,
        if given, shorten item ``cut[0]`` to the ``cut[1]`` ms the caller heard."""

    def commit_turn(self) -> None:
        """Local turn taking: the caller finished speaking; ask for the answer."""

    def closing(self) -> None:
        """The call is ending (farewell, transfer announcement): the caller may no longer
        interrupt, and nothing they say starts a new response."""
