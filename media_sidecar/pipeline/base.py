"""The pipeline's stages in the call's terms: typed events in and out, no vendor JSON.

A pipeline assistant is three stages chosen in YAML: speech-to-text, a language model, and
text-to-speech. Each vendor module (``stt_deepgram``, ``llm_openai``, ``tts_deepgram``, ...)
implements one of the interfaces here and keeps its wire format to itself; the pipeline
session (:mod:`media_sidecar.session.call`) sees only these types.

Network access goes through :class:`Net`, so tests hand every stage an in-memory transport to
a protocol mock (sharing trio's virtual clock) and production uses real sockets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import numpy as np
import trio

from ..providers.base import ProviderError
from ..providers.ws import Connector, error_message, tcp_connector
from ..tools.spec import ToolSpec

__all__ = [
    "ChatModel", "LlmDone", "LlmEvent", "Net", "PcmJoiner", "ProviderError", "SpeechSynth",
    "StreamingStt", "SttFinal", "SttInterim", "SttSpeechStarted", "TextDelta", "ToolCall",
    "Transcriber", "http_error", "post_for_pcm",
]


class Net:
    """How stages reach their services: one shared httpx client (its connection pool keeps
    TLS sessions to the LLM and TTS hosts warm across turns and calls) and a WebSocket
    connector. Tests pass an in-memory transport and connector to protocol mocks."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None,
                 connect: Connector | None = None) -> None:
        self.transport = transport
        self.connect = connect
        self._client: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        """The shared client (never closed by a stage); redirects are not followed. Give
        each request its ``timeout``."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                follow_redirects=False, transport=self.transport,
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=40,
                                    keepalive_expiry=60.0))
        return self._client

    def ws(self, connect_timeout: float) -> Connector:
        return self.connect or tcp_connector(connect_timeout)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def http_error(what: str, exc: BaseException | None = None, status: int = 0,
               detail: str = "") -> ProviderError:
    """A failed HTTP exchange as ProviderError: 400/401/403/404 permanent, the rest
    retryable. Never includes request headers (they carry the key)."""
    if status:
        text = f"{what} answered HTTP {status}" + (f": {detail}" if detail else "")
        return ProviderError(text, retryable=status not in (400, 401, 403, 404))
    if isinstance(exc, httpx.TimeoutException):
        return ProviderError(f"{what} did not answer in time", retryable=True)
    name = type(exc).__name__ if exc is not None else "error"
    return ProviderError(f"cannot reach {what}: {name}", retryable=True)


class PcmJoiner:
    """int16 samples from byte chunks whose boundaries may split a sample (HTTP bodies and
    WebSocket messages are cut wherever the sender likes)."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, data: bytes) -> np.ndarray | None:
        data = self._rest + data
        cut = len(data) - len(data) % 2
        self._rest = data[cut:]
        return np.frombuffer(data[:cut], dtype="<i2") if cut else None


async def post_for_pcm(net: Net, url: str, *, body: dict[str, Any], headers: dict[str, str],
                       within: float, what: str) -> AsyncIterator[np.ndarray]:
    """POST ``body`` and stream the raw PCM16 answer back as it arrives (OpenAI speech,
    Deepgram REST speak). Raises ProviderError for an HTTP error or a broken stream."""
    joiner = PcmJoiner()
    try:
        async with net.http.stream("POST", url, json=body, headers=headers,
                                   timeout=within) as resp:
            if resp.status_code != 200:
                raise http_error(what, status=resp.status_code,
                                 detail=error_message(await resp.aread()))
            async for data in resp.aiter_bytes():
                pcm = joiner.feed(data)
                if pcm is not None:
                    yield pcm
    except httpx.HTTPError as exc:
        raise http_error(what, exc) from None


# -- speech to text ---------------------------------------------------------------------------

class Transcriber(Protocol):
    """Transcribes one utterance that the call's own VAD cut (Moonshine, OpenAI REST)."""

    name: str

    async def transcribe(self, pcm: bytes) -> str:
        """slin 8 kHz bytes of one utterance -> text ("" for no words).
        Raises ProviderError when the service fails."""
        ...


@dataclass(frozen=True, slots=True)
class SttSpeechStarted:
    """The STT service heard speech begin (``audio_s``: seconds into the audio sent)."""

    audio_s: float


@dataclass(frozen=True, slots=True)
class SttInterim:
    text: str


@dataclass(frozen=True, slots=True)
class SttFinal:
    """The caller's turn is over: all the text since the last final."""

    text: str
    end_audio_s: float | None = None
    """Seconds into the audio sent where the last word ended (None if not reported)."""


SttEvent = SttSpeechStarted | SttInterim | SttFinal


class StreamingStt(Protocol):
    """A per-call streaming recogniser whose endpointing ends the caller's turns (Deepgram)."""

    name: str

    async def run(self, on_event: Callable[[SttEvent], None], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, report ``started``, then stream until cancelled. Raises ProviderError
        when the service fails."""
        ...

    def send_audio(self, pcm: bytes) -> None:
        """One 20 ms slin 8 kHz caller frame (never blocks)."""
        ...


# -- language model ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str | dict[str, Any]
    """A JSON string (OpenAI) or an object (Ollama)."""


@dataclass(frozen=True, slots=True)
class LlmDone:
    finish_reason: str = "stop"
    usage: Mapping[str, Any] = field(default_factory=dict)


LlmEvent = TextDelta | ToolCall | LlmDone


class ChatModel(Protocol):
    """A streamed chat model. Messages are in the OpenAI chat format (system, user,
    assistant with optional ``tool_calls``, tool with ``tool_call_id`` and ``name``); a vendor
    module converts them to its own."""

    name: str

    def stream(self, messages: list[dict[str, Any]], tools: list[ToolSpec]
               ) -> AsyncIterator[LlmEvent]:
        """Text deltas and complete tool calls as they arrive, then one LlmDone. Closing the
        iterator early closes the request (barge-in). Raises ProviderError."""
        ...


# -- text to speech ------------------------------------------------------------------------------

class SpeechSynth(Protocol):
    """One call's text-to-speech. :meth:`start` runs for the whole call (a connection, or
    nothing); :meth:`stream` says one sentence, yielding int16 PCM at :attr:`rate` as it
    arrives. Cancelling a :meth:`stream` drops what the service had not sent yet (Deepgram
    ``Clear``)."""

    name: str
    rate: int

    async def start(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Run for the call (connect, keep the connection); report ``started`` at once or
        when connected. Returns when there is nothing to run. Raises ProviderError only for
        a fault that makes this engine unusable for the rest of the call."""
        ...

    def stream(self, text: str) -> AsyncIterator[np.ndarray]:
        ...
