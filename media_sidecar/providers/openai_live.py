"""OpenAI GPT-Live over its primary WebSocket, as one call's speech-to-speech provider.

Wire facts (``shared/reference/providers-2026-update.md`` section 1): ``wss://.../v1/live/sessions``
with no query and a Bearer key; JSON text frames both ways; the client speaks first with
``session.start`` (model, instructions, one ``audio.format`` for both directions, voice,
delegation: all immutable) and sends nothing else before ``session.started``. Caller audio goes
as ``session.input_audio.append`` (never acknowledged), continuously: the model needs the silence
to find turn ends. The server is full duplex and owns turn taking and barge-in: there is no
speech-started, response or truncate event, only transcript fragments with ``start_ms/end_ms``
on the session timeline, and output audio said to arrive at real-time pace, silence included
([3P], not in OpenAI's docs).

So agent utterances, their transcripts and the caller talking over them are worked out from
the audio and the transcript fragments by :mod:`.live_utterances`; nothing is sent for a
barge-in, as nothing can be.

Greeting: a ``session.commentary.append`` (``delegation_id`` null) right after
``session.started`` asks the model to say it. Tools: with any tool the session uses *responses
delegation*: a backend Responses model gets the tools; its ``response.output_item.done``
function calls (inside ``response.event``) run through the call's tool dispatcher, each result
goes back as ``response.item.create`` ``function_call_output``, and one ``response.create``
follows once the backend response completed and every call has its output (only when the
dispatcher wants the model to speak again: an already announced transfer is not re-announced).
Without tools, a client delegation is answered with a commentary saying nothing can be done.
While the call is leaving, ``session.input_audio.mute`` stops the model from hearing (and being
interrupted by) the caller. Keypad digits go as a commentary too (there is no user-text event).

Errors: ``error`` events are command rejections and only logged, except before
``session.started`` (the start was refused) and the account codes (bad key, quota, billing),
which end the session, permanently. ``session.closed`` mid-call ends it too: retryable unless the
reason is ``content`` (a safety stop). A socket closed without ``session.closed`` is retryable on
the close codes the SDK reconnects on. At the end of the call ``session.close`` is sent and
``session.closed`` awaited for a moment (shielded); its reason and the session seconds go into
the call record. The API key is sent only in the handshake header and never logged.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio
import trio_websocket

from ..config.schema import LiveConfig
from ..protocol.wirejson import loads_object, number, obj, whole
from .audio import AudioCodec
from .base import ProviderError, ProviderSetup, RelayPort, Unusable, api_key
from .live_utterances import Utterances
from .ws import Connector, Outbox, open_provider_ws, tcp_connector

log = logging.getLogger("agi_voice.openai_live")

CLOSE_WAIT = 1.0
"""How long the end of a call waits for ``session.closed`` after ``session.close``."""
PING_TIMEOUT = 20.0
RETRY_CLOSE_CODES = frozenset({1001, 1005, 1006, 1011, 1012, 1013, 1015})
"""Close codes the OpenAI SDK reconnects on (``types/websocket_reconnection.py``)."""
FATAL_CODES = frozenset({"invalid_api_key", "insufficient_quota", "account_deactivated",
                         "billing_hard_limit_reached"})
PERMANENT_CLOSE_REASONS = frozenset({"content"})
DELEGATE_PROMPT = ("You carry out tasks for a phone assistant during a live call. Use the tools "
                   "when a task needs them and never invent their results. Reply in one or two "
                   "short, plain spoken sentences.")
_FORMAT_KINDS = {"audio/pcmu": "ulaw", "audio/pcma": "alaw", "audio/pcm": "pcm"}


def session_format(cfg: LiveConfig) -> dict[str, Any]:
    """The ``audio.format`` asked for: mu-law 8 kHz (``rate`` is required), or PCM16."""
    if cfg.audio == "pcm":
        return {"type": "audio/pcm", "rate": cfg.pcm_rate}
    return {"type": "audio/pcmu", "rate": 8000}


def codec_for(fmt: object) -> AudioCodec:
    """The codec for a GPT-Live format object; anything else is a permanent failure."""
    if not isinstance(fmt, Mapping) or not isinstance(fmt.get("type"), str) or (
            fmt["type"] not in _FORMAT_KINDS):
        raise ProviderError(f"unsupported audio format {fmt!r}", retryable=False)
    kind = _FORMAT_KINDS[str(fmt["type"])]
    rate = fmt.get("rate")
    if not isinstance(rate, int) or (kind == "pcm") != (rate in (16000, 24000)) or (
            kind != "pcm" and rate != 8000):
        raise ProviderError(f"unsupported audio format {dict(fmt)}", retryable=False)
    return AudioCodec(kind, rate)


@dataclass(eq=False)
class _Delegation:
    """One responses delegation's current backend response and its function calls."""

    completed: bool = False
    failed: bool = False
    pending: set[str] = field(default_factory=set)
    calls: int = 0
    respond: bool = False
    continued: bool = False


class OpenAILiveSession:
    name = "openai_live"
    local_turns = False
    speaks_after_tool = False
    """A continuation is asked for only when the dispatcher wants one (``ToolReply.respond``)."""

    def __init__(self, cfg: LiveConfig, setup: ProviderSetup, *,
                 env: Mapping[str, str] | None = None, connect: Connector | None = None) -> None:
        self.cfg = cfg
        self.setup = setup
        self._env = os.environ if env is None else env
        self._connect = connect or tcp_connector(cfg.connect_timeout)
        self._port: RelayPort | None = None
        self._unusable = Unusable("openai live")
        self._nursery: trio.Nursery | None = None
        self._codec: AudioCodec | None = None
        self._out_box = Outbox(_append_event)
        self._started = False
        self._closed_reason: str | None = None
        self._hang_up = trio.Event()
        self._close_sent = False
        self._turns: Utterances | None = None
        self._delegations: dict[str, _Delegation] = {}
        self._seen_calls: set[str] = set()
        self._usage_seconds = 0.0
        self.errors: list[dict[str, Any]] = []

    # -- SpeechToSpeech ------------------------------------------------------------------------

    def send_caller_audio(self, pcm: bytes) -> None:
        if self._codec is None or self._turns is None:
            return
        self._turns.sent_ms += len(pcm) // 16
        self._out_box.send_audio(self._codec.encode(pcm), self._codec.bytes_per_ms)

    def send_user_text(self, text: str) -> None:
        self._send_json({"type": "session.commentary.append", "delegation_id": None,
                         "content": text})

    def interrupt(self, cut: tuple[str, int] | None) -> None:
        # No cancel exists for the voice: the rest of the utterance is dropped here.
        if self._turns is not None:
            self._turns.cut()

    def commit_turn(self) -> None:
        pass  # the server takes turns itself

    def closing(self) -> None:
        if self._started and self._turns is not None and not self._turns.muted:
            self._turns.muted = True
            self._send_json({"type": "session.input_audio.mute"})

    async def run(self, port: RelayPort, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the call until cancelled. Once the session started, the connection runs
        shielded, so that when the call ends (this task is cancelled) ``session.close`` still
        goes out and ``session.closed`` is read, for at most :data:`CLOSE_WAIT`. Raises
        ProviderError on failure."""
        self._port = port
        self._turns = turns = Utterances(self.cfg, port)
        key = api_key(self._env, self.cfg.api_key_env)
        shield = trio.CancelScope()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._connection, shield, key)
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    self._hang_up.set()
                    shield.deadline = trio.current_time() + CLOSE_WAIT
        except BaseExceptionGroup as eg:
            leaf: BaseException = eg
            while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
                leaf = leaf.exceptions[0]
            if isinstance(leaf, ProviderError):
                raise leaf from None  # the relay (and a reader) expect the failure itself
            raise
        finally:
            turns.end()
            if self._closed_reason is not None:
                port.provider_note("closed_reason", self._closed_reason)
            port.provider_note("session_seconds", round(self._usage_seconds, 3))

    async def _connection(self, shield: trio.CancelScope, key: str, *,
                          task_status: trio.TaskStatus[None]) -> None:
        headers = [(b"Authorization", b"Bearer " + key.encode())]
        with shield:
            async with open_provider_ws(self._connect, self.cfg.url, headers,
                                        "OpenAI GPT-Live") as ws:
                self._send_json(self.session_start())
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._out_box.run, ws)
                    assert self._turns is not None
                    nursery.start_soon(self._turns.watch)
                    nursery.start_soon(self._close_on_hang_up)
                    if self.cfg.ping_seconds > 0:
                        nursery.start_soon(self._pinger, ws)

                    def started() -> None:
                        shield.shield = True  # from now on the end of the call closes politely
                        task_status.started()

                    await self._receiver(ws, started)
                    nursery.cancel_scope.cancel()

    async def _close_on_hang_up(self) -> None:
        await self._hang_up.wait()
        self._close_sent = True
        self._send_json({"type": "session.close", "event_id": "close_1"})

    # -- sending -------------------------------------------------------------------------------

    def _send_json(self, event: dict[str, Any]) -> None:
        self._out_box.send_json(event)

    def session_start(self) -> dict[str, Any]:
        """The ``session.start`` event for this call (section 1.3; strict: no other fields)."""
        cfg, setup = self.cfg, self.setup
        instructions = setup.instructions
        session: dict[str, Any] = {
            "model": cfg.model,
            "audio": {"format": session_format(cfg), "output": {"voice": cfg.voice}},
        }
        if setup.tools:
            names = ", ".join(t.name for t in setup.tools)
            instructions = (f"{instructions}\n\nDelegate every task that needs one of these "
                            f"actions: {names}; never say it is done before the result is in.")
            session["delegation"] = {
                "type": "responses", "acknowledgement_delay_ms": cfg.acknowledgement_delay_ms,
                "responses": {
                    "model": cfg.delegate_model,
                    "instructions": cfg.delegate_instructions or (
                        f"{DELEGATE_PROMPT}\n\nThe phone assistant's instructions:\n"
                        f"{setup.instructions}"),
                    "tools": [{"type": "function", "name": t.name, "description": t.description,
                               "parameters": t.parameters} for t in setup.tools],
                    "tool_choice": "auto", "parallel_tool_calls": False}}
        if instructions:
            session["instructions"] = instructions
        return {"type": "session.start", "event_id": "start_1", "session": session}

    async def _pinger(self, ws: trio_websocket.WebSocketConnection) -> None:
        while True:
            await trio.sleep(self.cfg.ping_seconds)
            with trio.move_on_after(PING_TIMEOUT) as scope:
                try:
                    await ws.ping()
                except trio_websocket.ConnectionClosed:
                    return  # the receiver reports it
            if scope.cancelled_caught:
                raise ProviderError(f"no WebSocket pong within {PING_TIMEOUT:.0f} s",
                                    retryable=True)

    # -- receiving -----------------------------------------------------------------------------

    async def _receiver(self, ws: trio_websocket.WebSocketConnection,
                        started: Callable[[], None]) -> None:
        """Until ``session.closed`` answers our ``session.close`` (or the socket closes after
        it); raises ProviderError for anything that ends the session otherwise."""
        while self._closed_reason is None:
            try:
                raw = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                if self._close_sent:
                    return
                code = exc.reason.code if exc.reason is not None else 1006
                raise ProviderError(f"connection closed without session.closed (code {code})",
                                    retryable=code in RETRY_CLOSE_CODES) from None
            t_in = trio.current_time()
            event = loads_object(raw)
            kind = event.get("type") if event is not None else None
            if event is None or not isinstance(kind, str):
                self._unusable.skip(self._port, f"a malformed event ({len(raw)} bytes)")
                continue
            if kind == "session.output_audio.delta":
                self._on_audio(str(event.get("delta") or ""), t_in)
            elif kind == "session.started":
                self._on_started(obj(event.get("session")), started)
            else:
                self._on_event(kind, event)

    def _on_started(self, session: Mapping[str, Any], started: Callable[[], None]) -> None:
        if self._started:
            return
        fmt = obj(session.get("audio")).get("format") or session_format(self.cfg)
        self._codec = codec_for(fmt)
        if self._turns is not None:
            self._turns.codec = self._codec
        if fmt != session_format(self.cfg):
            log.warning("openai live confirmed audio %s (asked for %s); converting accordingly",
                        fmt, session_format(self.cfg))
        self._started = True
        if self.setup.greeting:
            self._send_json({
                "type": "session.commentary.append", "event_id": "greet_1", "delegation_id": None,
                "content": "Greet the caller now by saying exactly this, word for word: "
                           f"\"{self.setup.greeting}\" Do not wait for the caller to speak."})
        started()

    def _on_event(self, kind: str, event: Mapping[str, Any]) -> None:
        assert self._turns is not None
        if kind == "session.input_transcript.delta":
            self._turns.caller_text(str(event.get("delta") or ""), _ms(event.get("start_ms")),
                                    _ms(event.get("end_ms")))
        elif kind == "session.output_transcript.delta":
            self._turns.agent_text(str(event.get("delta") or ""), _ms(event.get("start_ms")))
        elif kind == "session.delegation.created":
            self._on_delegation(obj(event.get("delegation")))
        elif kind == "response.event":
            self._on_response_event(str(event.get("delegation_id") or ""),
                                    obj(event.get("event")))
        elif kind == "session.usage.updated":
            self._on_usage(event.get("usage"))
        elif kind == "session.closed":
            reason = str(event.get("reason") or "")
            self._closed_reason = reason
            self._on_usage(event.get("usage"))
            if self._close_sent:
                return
            raise ProviderError(f"session closed by the server: {reason}",
                                retryable=reason not in PERMANENT_CLOSE_REASONS)
        elif kind == "error":
            self._on_error(obj(event.get("error")))
        elif kind == "info":
            log.info("openai live info %s: %s", event.get("code"), event.get("message"))

    def _on_audio(self, delta: str, t_in: float) -> None:
        if self._codec is None or self._turns is None:
            return
        try:
            data = base64.b64decode(delta, validate=True)
        except ValueError:
            self._unusable.skip(self._port, "an audio delta that is not valid base64")
            return
        self._turns.agent_audio(self._codec.decode(data), t_in)

    # -- tools: delegation ---------------------------------------------------------------------

    def _on_delegation(self, delegation: Mapping[str, Any]) -> None:
        del_id = str(delegation.get("id") or "")
        if delegation.get("target") == "client":
            self._send_json({"type": "session.commentary.append", "delegation_id": del_id,
                             "content": "Nothing can be looked up or done on this call; tell "
                                        "the caller briefly and offer what you can."})
        elif delegation.get("target") == "responses":
            self._delegations.setdefault(del_id, _Delegation())

    def _on_response_event(self, del_id: str, inner: Mapping[str, Any]) -> None:
        assert self._port is not None and self._nursery is not None
        kind = inner.get("type")
        d = self._delegations.setdefault(del_id, _Delegation())
        if kind == "response.created":
            self._delegations[del_id] = _Delegation()
        elif kind == "response.output_item.done":
            item = obj(inner.get("item"))
            call_id = str(item.get("call_id") or "")
            if item.get("type") != "function_call" or not call_id or call_id in self._seen_calls:
                return
            self._seen_calls.add(call_id)
            d.pending.add(call_id)
            d.calls += 1
            args = item.get("arguments")
            self._nursery.start_soon(self._run_tool, d, call_id, str(item.get("name") or ""),
                                     args if isinstance(args, (str, dict)) else None)
        elif kind in ("response.completed", "response.failed", "response.incomplete"):
            resp = obj(inner.get("response"))
            status = str(resp.get("status") or kind.removeprefix("response."))
            usage = resp.get("usage")
            self._port.response_done(status, usage if isinstance(usage, dict) else None)
            d.completed = True
            d.failed = kind != "response.completed"
            if d.failed:
                log.warning("openai live delegated response %s: %s", status,
                            resp.get("status_details") or resp.get("error"))
            self._maybe_continue(d)

    async def _run_tool(self, d: _Delegation, call_id: str, name: str,
                        arguments: str | dict[str, Any] | None) -> None:
        assert self._port is not None
        reply = await self._port.call_tool(name, arguments)
        if d.failed:
            # outputs for calls of a failed response are refused: tell the model as context
            self._send_json({"type": "session.thinking.append", "delegation_id": None,
                             "content": f"Result of {name}: {reply.output}"[:2000]})
        else:
            self._send_json({"type": "response.item.create", "item": {
                "type": "function_call_output", "call_id": call_id, "output": reply.output}})
        d.respond = d.respond or reply.respond
        d.pending.discard(call_id)
        self._maybe_continue(d)

    def _maybe_continue(self, d: _Delegation) -> None:
        """One ``response.create`` once the backend response completed and every call of it
        has its output (an early one is refused with ``function_call_outputs_required``)."""
        if (d.completed and not d.failed and d.calls and not d.pending and d.respond
                and not d.continued):
            d.continued = True
            self._send_json({"type": "response.create"})

    # -- usage and errors ----------------------------------------------------------------------

    def _on_usage(self, usage: object) -> None:
        seconds = number(obj(usage).get("seconds"))
        if seconds is not None:
            self._usage_seconds = max(self._usage_seconds, seconds)

    def _on_error(self, error: Mapping[str, Any]) -> None:
        self.errors.append(dict(error))
        code = str(error.get("code") or "")
        message = str(error.get("message") or "")
        log.warning("openai live error %s: %s", code or error.get("type"), message)
        if code in FATAL_CODES:
            raise ProviderError(f"provider error {code}: {message}", retryable=False)
        if not self._started:
            retryable = error.get("type") == "server_error"
            raise ProviderError(f"session.start refused: {code or error.get('type')}: {message}",
                                retryable=retryable)


def _append_event(audio: bytes) -> str:
    return ('{"type":"session.input_audio.append","audio":"'
            + base64.b64encode(audio).decode("ascii") + '"}')


def _ms(value: object) -> int | None:
    return whole(value)


__all__ = ["OpenAILiveSession", "codec_for", "session_format"]
