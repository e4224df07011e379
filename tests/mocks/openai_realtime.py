"""A mock of the OpenAI Realtime API (GA, WebSocket), written from reference/providers.md section 1.

It speaks the GA wire protocol: ``session.created`` on connect, ``session.update`` merged into
the effective config and echoed in full by ``session.updated``, never-acknowledged
``input_audio_buffer.append``, an energy VAD (``server_vad`` / ``semantic_vad``) or manual
commits, the exact response event sequences of 1.7 (audio), 1.8 (barge-in) and 1.9 (function
call), truncation checked against the audio generated for the item, ``error`` events of 1.10 that
leave the session open, and HTTP errors at the upgrade. What it does is steered by a
:class:`RealtimeScript`; what happened is recorded in one :class:`SessionLog` per connection.

It serves real TCP (:meth:`MockRealtimeServer.serve`) or any trio stream
(:meth:`MockRealtimeServer.serve_stream`, e.g. a memory stream under the autojump clock): all
pacing uses ``trio.sleep_until`` on the runtime clock. As a process, for the capacity benchmark::

    python -m tests.mocks.openai_realtime --port 0 --ready FILE [--reply-ms N] [--send-rate X]

Per-append cost is one base64 decode, one table lookup and one vectorised RMS per 20 ms; the reply
audio is rendered, encoded and base64-chunked once per output format and shared by all sessions.
Not modelled: text-only output (``output_modalities: ["text"]``), out-of-band responses, MCP
tools, ``idle_timeout_ms``, the beta protocol, item insertion at ``previous_item_id``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import itertools
import json
import math
import os
import signal
import stat
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import trio
import trio_websocket

from media_sidecar.dsp.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

__all__ = ["MockRealtimeServer", "RealtimeScript", "SessionClosedError", "SessionLog", "Truncation"]

PCM24: dict[str, Any] = {"type": "audio/pcm", "rate": 24000}
FORMATS = ("audio/pcm", "audio/pcmu", "audio/pcma")
VAD_FRAME_MS = 20
MIN_COMMIT_MS = 100.0
SEND_TIMEOUT = 30.0
"""A send the peer does not drain within this long ends the session (it cannot be half-undone)."""
SERVER_VAD_DEFAULTS: dict[str, Any] = {
    "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500,
    "idle_timeout_ms": None, "create_response": True, "interrupt_response": True,
}  # fmt: skip
SEMANTIC_VAD_DEFAULTS: dict[str, Any] = {
    "type": "semantic_vad", "eagerness": "auto", "create_response": True, "interrupt_response": True,
}  # fmt: skip
SESSION_KEYS = frozenset({
    "type", "model", "instructions", "output_modalities", "audio", "tools", "tool_choice",
    "max_output_tokens", "include", "prompt", "reasoning", "parallel_tool_calls", "tracing",
    "truncation",
})  # fmt: skip
REPLACED = frozenset(
    {
        "format",
        "turn_detection",
        "transcription",
        "noise_reduction",
        "tools",
        "tool_choice",
        "tracing",
        "prompt",
        "truncation",
        "include",
        "reasoning",
    }
)
HEADERS_OF_INTEREST = (
    "authorization",
    "api-key",
    "openai-beta",
    "openai-organization",
    "openai-project",
    "openai-safety-identifier",
    "user-agent",
)
USAGE: dict[str, Any] = {
    "total_tokens": 253, "input_tokens": 132, "output_tokens": 121,
    "input_token_details": {"text_tokens": 119, "audio_tokens": 13, "image_tokens": 0,
                            "cached_tokens": 64,
                            "cached_tokens_details": {"text_tokens": 64, "audio_tokens": 0,
                                                      "image_tokens": 0}},
    "output_token_details": {"text_tokens": 30, "audio_tokens": 91},
}  # fmt: skip
TRANSCRIPTION_USAGE: dict[str, Any] = {
    "type": "tokens", "input_tokens": 21, "output_tokens": 7, "total_tokens": 28,
    "input_token_details": {"text_tokens": 0, "audio_tokens": 21},
}  # fmt: skip
RATE_LIMITS: list[dict[str, Any]] = [
    {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
    {"name": "tokens", "limit": 40000, "remaining": 39000, "reset_seconds": 1.5},
]


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
    """Substring of the turn's user transcript -> (tool name, arguments): that turn's response
    is a function call."""
    speak_before_call: str | None = None
    """If set, a function-call response first speaks this text (output_index 0)."""
    after_tool_reply: str = "done"
    """Reply text of the first response after a ``function_call_output`` item."""
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
    """``function_call_output`` items received (as stored, with ``id``)."""
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


# -- audio ----------------------------------------------------------------------------------------
def _rate(fmt: dict[str, Any]) -> int:
    return 24000 if fmt.get("type") == "audio/pcm" else 8000


def _bytes_per_ms(fmt: dict[str, Any]) -> float:
    return 48.0 if fmt.get("type") == "audio/pcm" else 8.0


def _decode(kind: str, raw: bytes) -> np.ndarray:
    """Input bytes in the given format as int16 samples at the format's rate."""
    if kind == "audio/pcmu":
        return ulaw_decode(raw)
    if kind == "audio/pcma":
        return alaw_decode(raw)
    return np.frombuffer(raw, dtype="<i2", count=len(raw) // 2)


@dataclass(frozen=True)
class _Clip:
    chunks: tuple[tuple[str, float, int], ...]
    """(base64, ms, bytes) per delta."""


def _render_clip(script: RealtimeScript, kind: str) -> _Clip:
    """The reply audio in the output format, cut into ``chunk_ms`` deltas, base64-encoded."""
    if script.reply_pcm16_24k is not None:
        raw = script.reply_pcm16_24k
        pcm = np.frombuffer(raw, dtype="<i2", count=len(raw) // 2)
    else:
        t = np.arange(24 * script.reply_ms) / 24000.0
        pcm = (script.tone_amplitude * np.sin(2 * np.pi * script.tone_hz * t)).astype("<i2")
    if kind == "audio/pcm":
        data, per_ms = pcm.astype("<i2").tobytes(), 48
    else:  # 24k -> 8k: a 3-tap average is low-pass enough for a mock
        n = len(pcm) // 3 * 3
        pcm8 = np.rint(pcm[:n].astype(np.float32).reshape(-1, 3).mean(axis=1)).astype("<i2")
        data, per_ms = (ulaw_encode(pcm8) if kind == "audio/pcmu" else alaw_encode(pcm8)), 8
    step = max(1, script.chunk_ms * per_ms)
    chunks = tuple(
        (
            base64.b64encode(data[i : i + step]).decode("ascii"),
            len(data[i : i + step]) / per_ms,
            len(data[i : i + step]),
        )
        for i in range(0, len(data), step)
    )
    return _Clip(chunks)


# -- the server -----------------------------------------------------------------------------------
class MockRealtimeServer:
    """Serves the mock over TCP or over given streams; one :class:`SessionLog` per session."""

    def __init__(self, api_key: str = "test-key", *, script: RealtimeScript | None = None) -> None:
        self.api_key = api_key
        self.script = script if script is not None else RealtimeScript()
        self.sessions: list[SessionLog] = []
        self.rejected: list[SessionLog] = []
        self.port: int | None = None
        self._clips: dict[str, _Clip] = {}
        self._session_added = trio.Event()

    def clip(self, fmt: dict[str, Any]) -> _Clip:
        kind = fmt.get("type", "audio/pcm")
        if kind not in self._clips:
            self._clips[kind] = _render_clip(self.script, kind)
        return self._clips[kind]

    async def wait_for_session(self, n: int = 1) -> SessionLog:
        """The n-th accepted session's log (1-based), once it exists."""
        while len(self.sessions) < n:
            await self._session_added.wait()
        return self.sessions[n - 1]

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on host:port until cancelled; ``task_status.started(bound_port)``."""
        async with trio.open_nursery() as nursery:
            serve = partial(
                trio_websocket.serve_websocket,
                self.handle_request,
                host,
                port,
                None,
                connect_timeout=10,
                disconnect_timeout=5,
            )
            ws_server = await nursery.start(serve)
            self.port = ws_server.port
            task_status.started(self.port)

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one connection over an already connected stream (e.g. a memory stream)."""
        try:
            async with trio.open_nursery() as nursery:
                request = await trio_websocket.wrap_server_stream(nursery, stream)
                await self.handle_request(request)
                nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(stream)

    async def handle_request(self, request: trio_websocket.WebSocketRequest) -> None:
        """Check the upgrade (path, auth, model), then run the session until either side closes.
        Rejections answer HTTP 401/404/400 with an OpenAI JSON error body."""
        raw = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
        url = urlsplit(request.path)
        log = SessionLog(path=request.path)
        log.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        log.model = log.query.get("model")
        log.headers = {k: raw[k] for k in HEADERS_OF_INTEREST if k in raw}
        for secret in ("authorization", "api-key"):
            if secret in log.headers:
                log.headers[secret] = log.headers[secret].split(" ")[0] + " ***"
        log.beta_header = raw.get("openai-beta")
        rejection = self._check(url.path, log.query, raw)
        if rejection is not None:
            status, body = rejection
            log.rejected_status = status
            self.rejected.append(log)
            await request.reject(
                status,
                extra_headers=[(b"Content-Type", b"application/json")],
                body=json.dumps(body).encode(),
            )
            log._close("rejected")
            return
        self.sessions.append(log)
        self._session_added.set()
        self._session_added = trio.Event()
        ws = await request.accept()
        try:
            async with trio.open_nursery() as nursery:
                await _Session(self, ws, log, nursery, _transport(request)).run()
        finally:
            with trio.move_on_after(2.0, shield=True):
                await ws.aclose()
            log._close("client")

    def _check(
        self, path: str, query: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]] | None:
        def err(message: str, code: str | None) -> dict[str, Any]:
            return {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": code,
                }
            }

        if not path.rstrip("/").endswith("/v1/realtime"):
            return 404, err(f"Invalid URL (GET {path})", None)
        auth = headers.get("authorization", "")
        if not (auth == f"Bearer {self.api_key}" or headers.get("api-key") == self.api_key):
            shown = (auth.removeprefix("Bearer ") or headers.get("api-key", ""))[-4:]
            return 401, err(f"Incorrect API key provided: ...{shown}.", "invalid_api_key")
        if not (query.get("model") or query.get("call_id") or query.get("intent")):
            return 400, err("Missing required parameter: 'model'.", "missing_required_parameter")
        return None


def _transport(request: trio_websocket.WebSocketRequest) -> trio.abc.Stream:
    # trio-websocket has no public way to drop the TCP connection without a close frame, which is
    # exactly the fault disconnect_mid_response simulates; 0.12.x keeps the stream here.
    return request._connection._stream  # type: ignore[attr-defined, no-any-return]


@dataclass(eq=False)
class _Item:
    """An output item in flight: which of its closing events have been sent."""

    item: dict[str, Any]
    output_index: int
    previous_item_id: str | None
    part_added: bool = False
    audio_done: bool = False
    transcript_done: bool = False
    part_done: bool = False
    transcript: str = ""
    arguments: str = ""


@dataclass(eq=False)
class _Response:
    id: str
    fmt: dict[str, Any]
    voice: str
    metadata: Any
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    output: list[dict[str, Any]] = field(default_factory=list)
    open: _Item | None = None
    finished: bool = False

    def body(self, status: str, details: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "object": "realtime.response",
            "id": self.id,
            "status": status,
            "status_details": details,
            "output": list(self.output),
            "conversation_id": "conv_001",
            "output_modalities": ["audio"],
            "max_output_tokens": "inf",
            "audio": {"output": {"format": self.fmt, "voice": self.voice}},
            "usage": USAGE if status != "in_progress" else None,
            "metadata": self.metadata,
        }


class _Session:
    """One connection's conversation. The reader task handles client events in order; each
    response streams in its own task and cancel scope. Sends are shielded so a cancellation
    (barge-in) lands between frames, never inside one; closing events of a cancelled response
    are sent by whoever cancelled it, after the response task has stopped."""

    def __init__(
        self,
        server: MockRealtimeServer,
        ws: trio_websocket.WebSocketConnection,
        log: SessionLog,
        nursery: trio.Nursery,
        transport: trio.abc.Stream,
    ) -> None:
        self.server, self.script, self.ws, self.log = server, server.script, ws, log
        self.nursery, self.transport = nursery, transport
        self.closed = False
        self._events = itertools.count(1)
        self._ids: dict[str, itertools.count[int]] = {}
        self.items: dict[str, dict[str, Any]] = {}
        self.last_item_id: str | None = None
        self.active: _Response | None = None
        self.audio_sent = False
        # input audio, on the input clock (ms of audio received)
        self.audio_ms = 0.0
        self.buffer_ms = 0.0
        self.committed_ms = 0.0
        self.remainder = np.empty(0, dtype=np.int16)
        self.speaking = False
        self.loud_ms = 0
        self.loud_start_ms = 0.0
        self.quiet_ms = 0
        self.user_item_id: str | None = None
        # conversation script state
        self.turns = 0
        self.replies_used = 0
        self.pending_transcript: str | None = None
        self.after_tool = False
        self.config = self._default_config(log.model or "gpt-realtime")
        log.session = self.config
        self.handlers = {
            "session.update": self._on_session_update,
            "input_audio_buffer.commit": self._on_commit,
            "input_audio_buffer.clear": self._on_clear,
            "conversation.item.create": self._on_item_create,
            "conversation.item.retrieve": self._on_item_retrieve,
            "conversation.item.truncate": self._on_truncate,
            "conversation.item.delete": self._on_item_delete,
            "response.create": self._on_response_create,
            "response.cancel": self._on_response_cancel,
        }

    def new_id(self, prefix: str) -> str:
        counter = self._ids.setdefault(prefix, itertools.count(1))
        return f"{prefix}_{next(counter):03d}"

    def _default_config(self, model: str) -> dict[str, Any]:
        out_fmt = dict(self.script.confirm_format or PCM24)
        return {
            "id": self.new_id("sess"),
            "object": "realtime.session",
            "type": "realtime",
            "model": model,
            "output_modalities": ["audio"],
            "instructions": "",
            "audio": {
                "input": {
                    "format": dict(PCM24),
                    "transcription": None,
                    "noise_reduction": None,
                    "turn_detection": dict(SERVER_VAD_DEFAULTS),
                },
                "output": {"format": out_fmt, "voice": "marin", "speed": 1.0},
            },
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "tracing": None,
            "prompt": None,
            "expires_at": int(time.time()) + 3600,
            "include": None,
        }

    @property
    def in_fmt(self) -> dict[str, Any]:
        return self.config["audio"]["input"]["format"]  # type: ignore[no-any-return]

    @property
    def out_fmt(self) -> dict[str, Any]:
        return self.config["audio"]["output"]["format"]  # type: ignore[no-any-return]

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        return self.config["audio"]["input"]["turn_detection"]  # type: ignore[no-any-return]

    # -- plumbing ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Send session.created, then handle client events until the client goes away."""
        await self.send("session.created", session=self.config)
        if self.script.close_after_seconds is not None:
            self.nursery.start_soon(self._expire, self.script.close_after_seconds)
        while not self.closed:
            try:
                message = await self.ws.get_message()
            except trio_websocket.ConnectionClosed:
                self.log._close("client")
                break
            await self._dispatch(message)
        self.nursery.cancel_scope.cancel()

    async def send(self, type_name: str, **fields: Any) -> None:
        """Send one server event. Shielded: a cancel lands before or after a frame, never in it.
        A closed or stuck peer ends the session (the nursery is cancelled); nothing raises."""
        if self.closed:
            return
        event = {"type": type_name, "event_id": f"event_{next(self._events)}", **fields}
        text = json.dumps(event)
        failed = False
        with trio.CancelScope(shield=True, deadline=trio.current_time() + SEND_TIMEOUT) as scope:
            try:
                await self.ws.send_message(text)
            except trio_websocket.ConnectionClosed:
                failed = True
        if failed or scope.cancelled_caught:
            self.closed = True
            self.log._close("send_failed")
            self.nursery.cancel_scope.cancel()
            return
        if type_name == "response.output_audio.delta":
            self.log.audio_deltas_sent += 1
        else:
            self.log.server_events.append(event)
        self.log._bump(True, type_name)

    async def error(
        self,
        code: str | None,
        message: str,
        *,
        param: str | None = None,
        client_event: dict[str, Any] | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        event_id = client_event.get("event_id") if client_event else None
        await self.send(
            "error",
            error={
                "type": kind,
                "code": code,
                "message": message,
                "param": param,
                "event_id": event_id,
            },
        )

    async def _dispatch(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            await self.error("invalid_event", "Binary frames are not supported; send JSON text.")
            return
        try:
            event = json.loads(message)
        except ValueError as exc:
            await self.error(
                "invalid_event", f"We could not parse the JSON body of your request. ({exc})"
            )
            return
        if not isinstance(event, dict):
            await self.error("invalid_event", "Events must be JSON objects.")
            return
        type_name = event.get("type")
        if type_name == "input_audio_buffer.append":  # hot path: counted, never stored
            await self._on_append(event)
            self.log._bump(False, type_name)
            return
        self.log.client_events.append(event)
        handler = self.handlers.get(type_name) if isinstance(type_name, str) else None
        if handler is None:
            message = (
                f"Invalid value: '{type_name}'. Supported values are: "
                f"{', '.join(['input_audio_buffer.append', *self.handlers])}."
                if type_name is not None
                else "The 'type' field is missing."
            )
            await self.error("invalid_event", message, param="type", client_event=event)
        else:
            await handler(event)
        self.log._bump(False, str(type_name))

    async def _expire(self, seconds: float) -> None:
        await trio.sleep(seconds)
        self.log._close("close_after_seconds")
        await self.error("session_expired", "Your session hit the maximum duration.")
        self.closed = True
        with trio.move_on_after(2.0):
            await self.ws.aclose(1000, "session expired")
        self.nursery.cancel_scope.cancel()

    async def _abort(self, reason: str) -> None:
        """Drop the transport without a WebSocket close frame (the client sees code 1006)."""
        self.closed = True
        self.log._close(reason)
        await trio.aclose_forcefully(self.transport)
        self.nursery.cancel_scope.cancel()

    # -- session.update ---------------------------------------------------------------------------
    async def _on_session_update(self, event: dict[str, Any]) -> None:
        patch = event.get("session")
        if not isinstance(patch, dict):
            await self.error(
                "missing_required_parameter",
                "Missing required parameter: 'session'.",
                param="session",
                client_event=event,
            )
            return
        problem = self._validate(patch)
        if problem is not None:
            code, message, param = problem
            await self.error(code, message, param=param, client_event=event)
            return
        config = copy.deepcopy(self.config)
        _merge(config, {k: v for k, v in patch.items() if k != "model"})
        audio_in = config["audio"]["input"]
        td = audio_in.get("turn_detection")
        if isinstance(td, dict):
            defaults = SERVER_VAD_DEFAULTS if td["type"] == "server_vad" else SEMANTIC_VAD_DEFAULTS
            audio_in["turn_detection"] = {**defaults, **td}
        if self.script.confirm_format is not None:
            config["audio"]["output"]["format"] = dict(self.script.confirm_format)
        if config["audio"]["input"]["format"] != self.in_fmt:
            self.remainder = np.empty(0, dtype=np.int16)
        self.config = self.log.session = config
        await self.send("session.updated", session=config)

    def _validate(self, patch: dict[str, Any]) -> tuple[str, str, str] | None:
        """(code, message, param) of the first problem of a GA session.update, or None."""
        if "type" not in patch:
            return (
                "missing_required_parameter",
                "Missing required parameter: 'session.type'.",
                "session.type",
            )
        if patch["type"] != "realtime":
            return (
                "invalid_value",
                f"Invalid value: '{patch['type']}'. This mock supports 'realtime' sessions.",
                "session.type",
            )
        for key in patch:
            if key not in SESSION_KEYS:
                return "unknown_parameter", f"Unknown parameter: 'session.{key}'.", f"session.{key}"
        audio = patch.get("audio") or {}
        for side in ("input", "output"):
            fmt = (audio.get(side) or {}).get("format")
            if fmt is None:
                continue
            param = f"session.audio.{side}.format"
            if not isinstance(fmt, dict) or fmt.get("type") not in FORMATS:
                return "invalid_value", f"Invalid value for '{param}': {fmt!r}.", param
            if fmt["type"] == "audio/pcm" and fmt.get("rate", 24000) != 24000:
                return (
                    "invalid_value",
                    "Only a rate of 24000 is supported for audio/pcm.",
                    f"{param}.rate",
                )
        td = (audio.get("input") or {}).get("turn_detection")
        if td is not None and (
            not isinstance(td, dict) or td.get("type") not in ("server_vad", "semantic_vad")
        ):
            param = "session.audio.input.turn_detection.type"
            return "invalid_value", f"Invalid value for '{param}': {td!r}.", param
        voice = (audio.get("output") or {}).get("voice")
        if (
            voice is not None
            and self.audio_sent
            and voice != self.config["audio"]["output"]["voice"]
        ):
            return (
                "cannot_update_voice",
                "Cannot update a conversation's voice if assistant audio is present.",
                "session.audio.output.voice",
            )
        return None

    # -- input audio ------------------------------------------------------------------------------
    async def _on_append(self, event: dict[str, Any]) -> None:
        try:
            raw = base64.b64decode(event.get("audio") or b"", validate=True)
        except (binascii.Error, TypeError, ValueError):
            await self.error(
                "invalid_value",
                "Invalid 'audio'. Expected base64-encoded audio.",
                param="audio",
                client_event=event,
            )
            return
        log = self.log
        log.append_count += 1
        log.audio_in_bytes += len(raw)
        kind = self.in_fmt["type"]
        ms = len(raw) / _bytes_per_ms(self.in_fmt)
        log.audio_in_ms += ms
        self.buffer_ms += ms
        if self.turn_detection is None:
            self.audio_ms += ms
            return
        samples = _decode(kind, raw)
        if self.remainder.size:
            samples = np.concatenate((self.remainder, samples))
        frame = _rate(self.in_fmt) * VAD_FRAME_MS // 1000
        n = samples.size // frame
        self.remainder = samples[n * frame :]
        if n == 0:
            return
        x = samples[: n * frame].astype(np.float32).reshape(n, frame)
        # RMS > vad_rms, without the sqrt and mean: sum of squares against a scaled threshold
        loud = np.einsum("ij,ij->i", x, x) > self.script.vad_rms**2 * frame
        for is_loud in loud.tolist():
            await self._vad_frame(is_loud)

    async def _vad_frame(self, loud: bool) -> None:
        start = self.audio_ms
        self.audio_ms += VAD_FRAME_MS
        td = self.turn_detection
        if td is None:
            return
        if not self.speaking:
            if not loud:
                self.loud_ms = 0
                return
            if self.loud_ms == 0:
                self.loud_start_ms = start
            self.loud_ms += VAD_FRAME_MS
            if self.loud_ms >= self.script.vad_start_ms:
                await self._speech_started(td)
        elif loud:
            self.quiet_ms = 0
        else:
            self.quiet_ms += VAD_FRAME_MS
            if self.quiet_ms >= td.get("silence_duration_ms", 500):
                await self._speech_stopped(td)

    async def _speech_started(self, td: dict[str, Any]) -> None:
        self.speaking, self.quiet_ms, self.loud_ms = True, 0, 0
        item_id = self.user_item_id = self.new_id("item")
        start = max(self.loud_start_ms - td.get("prefix_padding_ms", 300), self.committed_ms)
        await self.send(
            "input_audio_buffer.speech_started", audio_start_ms=int(start), item_id=item_id
        )
        if td.get("interrupt_response", True):
            await self._cancel_active("turn_detected")

    async def _speech_stopped(self, td: dict[str, Any]) -> None:
        item_id = self.user_item_id or self.new_id("item")
        await self.send(
            "input_audio_buffer.speech_stopped", audio_end_ms=int(self.audio_ms), item_id=item_id
        )
        await self._commit(item_id)
        if td.get("create_response", True) and self.active is None:
            await self._start_response({})

    async def _commit(self, item_id: str) -> None:
        """Commit the buffer as a user audio item (committed, item added/done, transcription)."""
        self.speaking, self.quiet_ms, self.loud_ms, self.user_item_id = False, 0, 0, None
        self.buffer_ms, self.committed_ms = 0.0, self.audio_ms
        self.turns += 1
        t = self.script.transcripts
        transcript = t[self.turns - 1] if self.turns <= len(t) else f"utterance {self.turns}"
        self.pending_transcript = transcript
        self.log.user_transcripts.append(transcript)
        previous = self.last_item_id
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self._store(item)
        await self.send("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id)
        await self.send("conversation.item.added", previous_item_id=previous, item=item)
        await self.send("conversation.item.done", previous_item_id=previous, item=item)
        if self.config["audio"]["input"].get("transcription"):
            ids = {"item_id": item_id, "content_index": 0}
            await self.send(
                "conversation.item.input_audio_transcription.delta", **ids, delta=transcript
            )
            await self.send(
                "conversation.item.input_audio_transcription.completed",
                **ids,
                transcript=transcript,
                usage=TRANSCRIPTION_USAGE,
            )

    async def _on_commit(self, event: dict[str, Any]) -> None:
        if self.buffer_ms < MIN_COMMIT_MS:
            await self.error(
                "input_audio_buffer_commit_empty",
                "Error committing input audio "
                f"buffer: buffer too small. Expected at least 100ms of audio, but "
                f"buffer only has {self.buffer_ms:.2f}ms of audio.",
                client_event=event,
            )
            return
        await self._commit(self.user_item_id or self.new_id("item"))

    async def _on_clear(self, event: dict[str, Any]) -> None:
        self.speaking, self.quiet_ms, self.loud_ms, self.user_item_id = False, 0, 0, None
        self.buffer_ms, self.committed_ms = 0.0, self.audio_ms
        self.remainder = np.empty(0, dtype=np.int16)
        await self.send("input_audio_buffer.cleared")

    # -- conversation items -----------------------------------------------------------------------
    def _store(self, item: dict[str, Any]) -> None:
        self.items[item["id"]] = item
        self.last_item_id = item["id"]

    async def _on_item_create(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        kind = item.get("type") if isinstance(item, dict) else None
        if not isinstance(item, dict) or kind not in (
            "message",
            "function_call",
            "function_call_output",
        ):
            await self.error(
                "invalid_value", f"Invalid 'item': {item!r}.", param="item", client_event=event
            )
            return
        if kind == "function_call_output" and not (
            isinstance(item.get("call_id"), str) and isinstance(item.get("output"), str)
        ):
            await self.error(
                "missing_required_parameter",
                "A function_call_output needs 'call_id' and 'output' strings.",
                param="item",
                client_event=event,
            )
            return
        previous = event.get("previous_item_id", self.last_item_id)
        stored = {
            "id": item.get("id") or self.new_id("item"),
            "object": "realtime.item",
            **{k: v for k, v in item.items() if k != "id"},
            "status": "completed",
        }
        self._store(stored)
        if kind == "function_call_output":
            self.log.function_outputs.append(stored)
            self.after_tool = True
        elif kind == "message" and item.get("role") == "user":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "input_text":
                    self.log.user_texts.append(str(part.get("text", "")))
        previous = None if previous == "root" else previous
        await self.send("conversation.item.added", previous_item_id=previous, item=stored)
        await self.send("conversation.item.done", previous_item_id=previous, item=stored)

    async def _on_item_retrieve(self, event: dict[str, Any]) -> None:
        item = self.items.get(str(event.get("item_id")))
        if item is None:
            await self._no_item(event)
        else:
            await self.send("conversation.item.retrieved", item=item)

    async def _on_item_delete(self, event: dict[str, Any]) -> None:
        item = self.items.pop(str(event.get("item_id")), None)
        if item is None:
            await self._no_item(event)
        else:
            await self.send("conversation.item.deleted", item_id=item["id"])

    async def _no_item(self, event: dict[str, Any]) -> None:
        await self.error(
            "invalid_value",
            f"Item with item_id '{event.get('item_id')}' not found.",
            param="item_id",
            client_event=event,
        )

    async def _on_truncate(self, event: dict[str, Any]) -> None:
        item_id, end = str(event.get("item_id")), event.get("audio_end_ms")
        content_index = event.get("content_index", 0)
        item = self.items.get(item_id)
        if item is None:
            await self._no_item(event)
            return
        if item.get("type") != "message" or item.get("role") != "assistant":
            await self.error(
                "invalid_value",
                "Only assistant messages can be truncated.",
                param="item_id",
                client_event=event,
            )
            return
        generated = self.log.assistant_audio_ms.get(item_id, 0.0)
        if isinstance(end, bool) or not isinstance(end, int) or end < 0:
            await self.error(
                "invalid_value",
                "'audio_end_ms' must be a non-negative integer.",
                param="audio_end_ms",
                client_event=event,
            )
            return
        if end > math.ceil(generated):
            await self.error(
                "invalid_value",
                f"Audio content of {generated:.0f}ms is already shorter than {end}ms",
                param="audio_end_ms",
                client_event=event,
            )
            return
        self.log.truncations.append(Truncation(item_id, content_index, end))
        await self.send(
            "conversation.item.truncated",
            item_id=item_id,
            content_index=content_index,
            audio_end_ms=end,
        )

    # -- responses --------------------------------------------------------------------------------
    async def _on_response_create(self, event: dict[str, Any]) -> None:
        if self.active is not None:
            await self.error(
                "conversation_already_has_active_response",
                "Conversation already "
                f"has an active response in progress: {self.active.id}. Wait until "
                "the response is finished before creating a new one.",
                client_event=event,
            )
            return
        request = event.get("response")
        await self._start_response(request if isinstance(request, dict) else {})

    async def _on_response_cancel(self, event: dict[str, Any]) -> None:
        wanted = event.get("response_id")
        active = self.active
        if (
            active is None
            or (wanted and wanted != active.id)
            or not await self._cancel_active("client_cancelled")
        ):
            await self.error(
                "response_cancel_not_active",
                "Cancellation failed: no active response found.",
                client_event=event,
            )

    async def _start_response(self, request: dict[str, Any]) -> None:
        """Send response.created (and rate limits) now; stream the rest in a task."""
        self.log.responses += 1
        n = self.log.responses
        if self.script.error_after_responses == n:
            await self.error(
                "server_error",
                "The server had an error while processing your request. Sorry about that!",
                kind="server_error",
            )
            return
        output = (request.get("audio") or {}).get("output") or {}
        fmt = output["format"] if isinstance(output.get("format"), dict) else self.out_fmt
        voice = output.get("voice") or self.config["audio"]["output"]["voice"]
        resp = _Response(self.new_id("resp"), fmt, voice, request.get("metadata"))
        text, call = self._plan()
        self.active = resp
        await self.send("response.created", response=resp.body("in_progress", None))
        await self.send("rate_limits.updated", rate_limits=RATE_LIMITS)
        disconnect = self.script.disconnect_mid_response == n
        self.nursery.start_soon(self._run_response, resp, text, call, disconnect)

    def _plan(self) -> tuple[str | None, tuple[str, dict[str, Any]] | None]:
        """(reply text or None, function call or None) for the next response."""
        transcript, self.pending_transcript = self.pending_transcript, None
        if self.after_tool:
            self.after_tool = False
            return self.script.after_tool_reply, None
        if transcript is not None:
            for trigger, call in self.script.function_calls.items():
                if trigger in transcript:
                    return self.script.speak_before_call, call
        self.replies_used += 1
        r = self.script.replies
        return (
            r[self.replies_used - 1]
            if self.replies_used <= len(r)
            else f"reply {self.replies_used}"
        ), None

    async def _run_response(
        self,
        resp: _Response,
        text: str | None,
        call: tuple[str, dict[str, Any]] | None,
        disconnect: bool,
    ) -> None:
        try:
            with resp.scope:
                if text is not None:
                    await self._stream_message(resp, text, disconnect)
                if call is not None:
                    await self._stream_call(resp, *call)
                await trio.lowlevel.checkpoint_if_cancelled()
                await self.send("response.done", response=resp.body("completed", None))
                resp.finished = True
                self.active = None
        finally:
            resp.done.set()

    async def _rsend(self, type_name: str, **fields: Any) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        await self.send(type_name, **fields)

    async def _open_item(self, resp: _Response, item: dict[str, Any]) -> _Item:
        previous = self.last_item_id
        self._store(item)
        resp.open = _Item(item, len(resp.output), previous)
        await self._rsend(
            "response.output_item.added",
            response_id=resp.id,
            output_index=resp.open.output_index,
            item=item,
        )
        await self._rsend("conversation.item.added", previous_item_id=previous, item=item)
        return resp.open

    async def _close_item(self, resp: _Response, o: _Item, final: dict[str, Any]) -> None:
        self.items[final["id"]] = final
        await self._rsend(
            "response.output_item.done",
            response_id=resp.id,
            output_index=o.output_index,
            item=final,
        )
        resp.output.append(final)
        resp.open = None
        await self.send("conversation.item.done", previous_item_id=o.previous_item_id, item=final)

    async def _stream_message(self, resp: _Response, text: str, disconnect: bool) -> None:
        item_id = self.new_id("item")
        o = await self._open_item(
            resp,
            {
                "id": item_id,
                "object": "realtime.item",
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            },
        )
        ids = {
            "response_id": resp.id,
            "item_id": item_id,
            "output_index": o.output_index,
            "content_index": 0,
        }
        await self._rsend(
            "response.content_part.added", **ids, part={"type": "audio", "transcript": ""}
        )
        o.part_added = True
        chunks = self.server.clip(resp.fmt).chunks
        words = text.split(" ") if text else []
        sent_words = 0
        log = self.log
        log.assistant_audio_ms[item_id] = 0.0
        if self.script.first_byte_delay > 0:
            await trio.sleep(self.script.first_byte_delay)
        step = (
            self.script.chunk_ms / 1000 / self.script.send_rate if self.script.send_rate > 0 else 0
        )
        t0 = trio.current_time()
        for k in range(max(len(chunks), 1)):
            if k:
                if step:
                    await trio.sleep_until(t0 + k * step)
                else:
                    await trio.lowlevel.checkpoint()
            due = math.ceil((k + 1) * len(words) / max(len(chunks), 1))
            if due > sent_words:
                delta = (" " if sent_words else "") + " ".join(words[sent_words:due])
                await self._rsend("response.output_audio_transcript.delta", **ids, delta=delta)
                o.transcript += delta
                sent_words = due
            if not chunks:
                break
            if disconnect and k == len(chunks) // 2:
                await self._abort("disconnect_mid_response")
                await trio.lowlevel.checkpoint()  # the nursery is cancelled: raises Cancelled
            b64, ms, nbytes = chunks[k]
            await self._rsend("response.output_audio.delta", **ids, delta=b64)
            self.audio_sent = True
            log.assistant_audio_ms[item_id] += ms
            log.audio_out_ms += ms
            log.audio_out_bytes += nbytes
        await self._rsend("response.output_audio.done", **ids)
        o.audio_done = True
        await self._rsend("response.output_audio_transcript.done", **ids, transcript=text)
        o.transcript_done = True
        await self._rsend(
            "response.content_part.done", **ids, part={"type": "audio", "transcript": text}
        )
        o.part_done = True
        await self._close_item(
            resp,
            o,
            {
                **o.item,
                "status": "completed",
                "content": [{"type": "output_audio", "transcript": text}],
            },
        )

    async def _stream_call(self, resp: _Response, name: str, arguments: dict[str, Any]) -> None:
        item_id, call_id = self.new_id("item"), self.new_id("call")
        args = json.dumps(arguments, separators=(",", ":"))
        o = await self._open_item(
            resp,
            {
                "id": item_id,
                "object": "realtime.item",
                "type": "function_call",
                "status": "in_progress",
                "name": name,
                "call_id": call_id,
                "arguments": "",
            },
        )
        ids = {
            "response_id": resp.id,
            "item_id": item_id,
            "output_index": o.output_index,
            "call_id": call_id,
        }
        half = len(args) // 2
        for delta in (args[:half], args[half:]):
            if delta:
                await self._rsend("response.function_call_arguments.delta", **ids, delta=delta)
                o.arguments += delta
        await self._rsend("response.function_call_arguments.done", **ids, name=name, arguments=args)
        final = {**o.item, "status": "completed", "arguments": args}
        await self._close_item(resp, o, final)
        self.log.function_calls.append(final)

    async def _cancel_active(self, reason: str) -> bool:
        """Stop the active response and send its closing events (providers.md 1.8). False if
        there was nothing left to cancel."""
        resp = self.active
        if resp is None or resp.finished:
            return False
        resp.scope.cancel()
        await resp.done.wait()
        if resp.finished:
            return False
        self.active = None
        o = resp.open
        if o is not None:
            item = o.item
            content: list[dict[str, Any]] = []
            if item["type"] == "message" and o.part_added:
                ids = {
                    "response_id": resp.id,
                    "item_id": item["id"],
                    "output_index": o.output_index,
                    "content_index": 0,
                }
                if not o.audio_done:
                    await self.send("response.output_audio.done", **ids)
                if not o.transcript_done:
                    await self.send(
                        "response.output_audio_transcript.done", **ids, transcript=o.transcript
                    )
                if not o.part_done:
                    await self.send(
                        "response.content_part.done",
                        **ids,
                        part={"type": "audio", "transcript": o.transcript},
                    )
                content = [{"type": "output_audio", "transcript": o.transcript}]
            final = {**item, "status": "incomplete"}
            if item["type"] == "message":
                final["content"] = content
            else:
                final["arguments"] = o.arguments
            self.items[item["id"]] = final
            await self.send(
                "response.output_item.done",
                response_id=resp.id,
                output_index=o.output_index,
                item=final,
            )
            resp.output.append(final)
            resp.open = None
        details = {"type": "cancelled", "reason": reason}
        await self.send("response.done", response=resp.body("cancelled", details))
        return True


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> None:
    """Merge a session.update into a (deep-copied) config: present fields only; whole objects
    such as formats and turn_detection are replaced; ``null`` clears."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key not in REPLACED:
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


# -- as a process ---------------------------------------------------------------------------------
def _write_ready(path: str, payload: dict[str, Any]) -> None:
    """Atomic for a regular file (tmp + rename); a FIFO is written directly so a reader blocked
    on it wakes up."""
    text = json.dumps(payload)
    if os.path.exists(path) and stat.S_ISFIFO(os.stat(path).st_mode):
        with open(path, "w") as f:
            f.write(text)
        return
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _drain_stdin() -> None:
    while os.read(sys.stdin.fileno(), 65536):
        pass


async def _amain(args: argparse.Namespace) -> None:
    script = RealtimeScript(
        reply_ms=args.reply_ms,
        send_rate=args.send_rate,
        chunk_ms=args.chunk_ms,
        first_byte_delay=args.first_byte_delay,
        vad_rms=args.vad_rms,
    )
    server = MockRealtimeServer(args.api_key, script=script)
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            port = await nursery.start(server.serve, args.host, args.port)
            if args.ready:
                _write_ready(args.ready, {"port": port, "pid": os.getpid()})
            if not args.ignore_stdin:
                nursery.start_soon(_stdin_watch, nursery.cancel_scope)
            async for _ in signals:
                break
        nursery.cancel_scope.cancel()


async def _stdin_watch(scope: trio.CancelScope) -> None:
    await trio.to_thread.run_sync(_drain_stdin, abandon_on_cancel=True)
    scope.cancel()


def main(argv: list[str] | None = None) -> int:
    """Serve until stdin reaches EOF (unless ``--ignore-stdin``) or SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(
        prog="python -m tests.mocks.openai_realtime",
        description="Mock OpenAI Realtime (GA) WebSocket server.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--ready", help='write {"port": N, "pid": P} here once listening')
    p.add_argument("--api-key", default="test-key")
    p.add_argument("--reply-ms", type=int, default=RealtimeScript.reply_ms)
    p.add_argument("--send-rate", type=float, default=RealtimeScript.send_rate)
    p.add_argument("--chunk-ms", type=int, default=RealtimeScript.chunk_ms)
    p.add_argument("--first-byte-delay", type=float, default=RealtimeScript.first_byte_delay)
    p.add_argument("--vad-rms", type=float, default=RealtimeScript.vad_rms)
    p.add_argument(
        "--ignore-stdin",
        action="store_true",
        help="serve until a signal only (stdin is /dev/null, say)",
    )
    trio.run(_amain, p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
