"""Deepgram Voice Agent API V1 over WebSocket, as one call's speech-to-speech provider.

Wire facts (``shared/reference/providers.md`` section 2): control messages are JSON text
frames, audio is raw binary frames both ways in the formats ``Settings`` names. The server
speaks first (``Welcome``); the client sends ``Settings`` and no audio before
``SettingsApplied``. Deepgram runs listen, think and speak itself; we relay audio, act on
``UserStartedSpeaking`` (barge-in: flush at the next frame; there is no truncate message),
answer client-side ``FunctionCallRequest``s with ``FunctionCallResponse`` (Deepgram speaks again
on its own afterwards) and send keypad digits as ``InjectUserMessage``. The message shapes
(Settings with Flux listen and fallback arrays, InjectAgentMessage, UpdateListen, the reports)
are in :mod:`.deepgram_wire`.

``FunctionCallCancelled`` (SDK 7.17) withdraws calls: a tool not started never starts, one in
flight (a webhook) is cancelled and nothing is answered; a transfer or hang-up already answered
(the cancellation crossed our response) is called off through the relay if not carried out
yet. ``LatencyReport`` figures go to the turn whose audio they follow.

Deepgram has no item ids: agent audio is numbered here, a new item after every
``AgentAudioDone``, barge-in or local interruption, so the relay can drop the rest of a cut turn.
``SettingsApplied`` echoes no format, so the requested one is used (mu-law 8 kHz: no
conversion at all). Deepgram reports no end-of-speech time; the caller's last loud frame before
the user's ``ConversationText`` stands in for it (energy, on the audio sent), which is what the
per-turn latency in the call record is measured from.

``KeepAlive`` (a text frame) goes out when no caller audio was sent for ``keepalive_seconds``:
while the call is ending the caller's audio is not sent at all, so nothing they say can cut the
farewell short. ``Error`` ends the session (documented as such).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import trio
import trio_websocket

from ..config.schema import DeepgramAgentConfig
from ..protocol.wirejson import loads_object, number, objects
from . import deepgram_wire as wire
from .audio import AudioCodec
from .base import ProviderError, ProviderSetup, RelayPort, Unusable, api_key
from .ws import Connector, Outbox, open_provider_ws, receive, tcp_connector

log = logging.getLogger("agi_voice.deepgram_agent")

LOUD_RMS = 300.0
"""Caller frames louder than this (about -40 dBFS) count as speech for the end-of-speech time."""
MAX_ANSWERED = 16
_PERMANENT_CODES = frozenset({"INVALID_SETTINGS", "UNPARSABLE_CLIENT_MESSAGE"})
_ids = itertools.count(1)


class DeepgramAgentSession:
    name = "deepgram_agent"
    local_turns = False
    speaks_after_tool = True

    def __init__(self, cfg: DeepgramAgentConfig, setup: ProviderSetup, *,
                 env: Mapping[str, str] | None = None, connect: Connector | None = None) -> None:
        self.cfg = cfg
        self.setup = setup
        self._env = os.environ if env is None else env
        self._connect = connect or tcp_connector(cfg.connect_timeout)
        kind = "pcm" if cfg.audio == "linear16" else "ulaw"
        self._codec = AudioCodec(kind, cfg.sample_rate if kind == "pcm" else 8000)
        self._port: RelayPort | None = None
        self._unusable = Unusable("deepgram agent")
        self._nursery: trio.Nursery | None = None
        self._ready = False
        self._muted = False
        self._out_box = Outbox(bytes)
        self._item = self._new_item()
        self._item_has_audio = False
        self._spoken_item = ""
        """The last item that had audio: the response a LatencyReport is about."""
        self._agent_text: list[str] = []
        self._sent_ms = 0
        self._last_loud_ms: int | None = None
        self.keepalives = 0
        self._listen: dict[str, Any] = {}
        """The listen provider in force (Settings, then each UpdateListen)."""
        self.latencies: list[dict[str, float]] = []
        self._calls: dict[str, trio.CancelScope] = {}
        """Function calls whose tool is running (or about to), by id: FunctionCallCancelled
        cancels the scope."""
        self._answered: dict[str, str] = {}
        """Recently answered function calls, id -> name: a FunctionCallCancelled that crossed
        our response on the wire still calls off the transfer or hang-up it started."""

    @staticmethod
    def _new_item() -> str:
        return f"dg_{next(_ids)}"

    # -- SpeechToSpeech ------------------------------------------------------------------------

    def send_caller_audio(self, pcm: bytes) -> None:
        if not self._ready or self._muted:
            return
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
        self._sent_ms += len(samples) // 8
        if samples.size and float(np.sqrt(np.mean(samples * samples))) > LOUD_RMS:
            self._last_loud_ms = self._sent_ms
        self._out_box.send_audio(self._codec.encode(pcm), self._codec.bytes_per_ms)

    def send_user_text(self, text: str) -> None:
        self._send_json({"type": "InjectUserMessage", "content": text})

    def interrupt(self, cut: tuple[str, int] | None) -> None:
        # Deepgram has no cancel or truncate: the rest of the turn's audio is dropped by the
        # relay (the item is cut) and new audio starts a new item.
        self._next_item()

    def commit_turn(self) -> None:
        pass  # Deepgram always takes turns itself

    def closing(self) -> None:
        self._muted = True
        self._out_box.clear_audio()

    async def run(self, port: RelayPort, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._port = port
        key = api_key(self._env, self.cfg.api_key_env)
        header = (b"Authorization", b"Token " + key.encode())
        async with open_provider_ws(self._connect, self.cfg.url, [header],
                                    "Deepgram Voice Agent") as ws:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._out_box.run, ws)
                nursery.start_soon(self._keepalive)
                await self._receiver(ws, task_status)
                nursery.cancel_scope.cancel()

    # -- sending -------------------------------------------------------------------------------

    def _send_json(self, message: dict[str, Any]) -> None:
        self._out_box.send_json(message)

    async def _keepalive(self) -> None:
        box = self._out_box
        box.last_audio_sent = trio.current_time()
        period = self.cfg.keepalive_seconds
        while True:
            await trio.sleep_until(box.last_audio_sent + period)
            if trio.current_time() - box.last_audio_sent >= period:
                self._send_json({"type": "KeepAlive"})
                self.keepalives += 1
                box.last_audio_sent = trio.current_time()

    def settings(self) -> dict[str, Any]:
        """The ``Settings`` message for this call (:func:`.deepgram_wire.settings`). Raises
        MissingEnv."""
        setup = self.setup
        return wire.settings(self.cfg, instructions=setup.instructions, greeting=setup.greeting,
                             tools=setup.tools, language=setup.language,
                             encoding={"ulaw": "mulaw", "pcm": "linear16"}[self._codec.name],
                             rate=self._codec.rate, env=self._env)

    def announce(self, text: str, behavior: wire.Behavior = "queue") -> None:
        """Have the agent say ``text`` in its own voice (``InjectAgentMessage``); with
        ``default`` Deepgram refuses while either side is mid-turn (logged)."""
        self._send_json(wire.inject_agent_message(text, behavior))

    def update_listen(self, **changes: Any) -> None:
        """Change listen settings mid-call (``UpdateListen``), e.g. Flux's ``eot_timeout_ms``
        while the caller reads out a number. Raises ValueError (keyterms without Flux)."""
        message = wire.update_listen(self._listen, **changes)
        self._listen = message["listen"]["provider"]
        self._send_json(message)

    # -- receiving -----------------------------------------------------------------------------

    async def _receiver(self, ws: trio_websocket.WebSocketConnection,
                        task_status: trio.TaskStatus[None]) -> None:
        while True:
            raw = await receive(ws)
            t_in = trio.current_time()
            if isinstance(raw, bytes):
                self._on_audio(raw, t_in)
                continue
            msg = loads_object(raw)
            kind = msg.get("type") if msg is not None else None
            if msg is None or not isinstance(kind, str):
                self._unusable.skip(self._port, f"a malformed message ({len(raw)} bytes)")
                continue
            if kind == "Welcome":
                try:
                    message = self.settings()
                except wire.MissingEnv as exc:
                    raise ProviderError(str(exc), retryable=False) from None
                self._listen = message["agent"]["listen"]["provider"]
                self._send_json(message)
            elif kind == "SettingsApplied":
                if not self._ready:
                    self._ready = True
                    task_status.started()
            else:
                self._on_message(kind, msg)

    def _on_audio(self, data: bytes, t_in: float) -> None:
        port = self._port
        if port is None or not self._ready:
            return
        if not self._item_has_audio:
            self._item_has_audio = True
            self._spoken_item = self._item
            self._codec.reset_down()
        port.agent_audio(self._codec.decode(data), self._item, t_in)
        self._flush_agent_text()

    def _flush_agent_text(self) -> None:
        if self._agent_text and self._port is not None:
            self._port.transcript("agent", " ".join(self._agent_text))
            self._agent_text.clear()

    def _next_item(self) -> None:
        self._item = self._new_item()
        self._item_has_audio = False

    def _on_message(self, kind: str, msg: Mapping[str, Any]) -> None:
        port = self._port
        assert port is not None
        if kind == "UserStartedSpeaking":
            port.caller_speech_started()
            self._last_loud_ms = None
            self._next_item()
        elif kind == "ConversationText":
            text = str(msg.get("content") or "")
            if msg.get("role") == "user":
                if self._last_loud_ms is not None:
                    port.caller_speech_stopped(self._last_loud_ms)
                port.transcript("caller", text)
            elif self._item_has_audio:
                port.transcript("agent", text)
            else:
                self._agent_text.append(text)  # said by the next audio: recorded with it
        elif kind == "AgentAudioDone":
            if self._item_has_audio:
                self._flush_agent_text()
                port.agent_audio_done(self._item)
            port.response_done("completed", None)
            self._next_item()
        elif kind == "AgentStartedSpeaking":
            started = {k: number(msg.get(k)) for k in ("total_latency", "tts_latency",
                                                       "ttt_latency")}
            self.latencies.append({k: v for k, v in started.items() if v is not None})
        elif kind == "LatencyReport":  # after each turn; every figure optional (seconds)
            figures = wire.latency_figures(msg)
            if figures:
                port.provider_latency(self._spoken_item or self._item, figures)
        elif kind == "FunctionCallRequest":
            for f in objects(msg.get("functions")):
                if f.get("client_side", True):
                    assert self._nursery is not None
                    call_id = str(f.get("id", ""))
                    self._calls[call_id] = trio.CancelScope()  # before the task runs
                    self._nursery.start_soon(self._run_tool, call_id, str(f.get("name", "")),
                                             f.get("arguments"))
        elif kind == "FunctionCallCancelled":
            for call_id, name in wire.cancelled_calls(msg):
                self._cancel_call(call_id, name)
        elif kind == "Error":
            code = str(msg.get("code") or "")
            raise ProviderError(f"provider error {code}: {msg.get('description', '')}",
                                retryable=code not in _PERMANENT_CODES)
        elif kind in ("Warning", "InjectionRefused"):
            log.warning("deepgram agent %s: %s", kind,
                        msg.get("description") or msg.get("message") or msg.get("code"))

    async def _run_tool(self, call_id: str, name: str, arguments: object) -> None:
        """Run one client-side function call and answer it, unless the server cancels it
        first: then the tool does not start, or (a webhook in flight) is cancelled and its
        result dropped, and no ``FunctionCallResponse`` is sent (SDK 7.17
        ``agent_v1function_call_cancelled_functions_item.py``: "Send no FunctionCallResponse
        for this id")."""
        assert self._port is not None
        args = arguments if isinstance(arguments, (str, dict)) else None
        scope = self._calls.get(call_id) or trio.CancelScope()
        reply = None
        try:
            with scope:
                if not scope.cancel_called:  # call_tool may finish without a checkpoint
                    reply = await self._port.call_tool(name, args)
        finally:
            self._calls.pop(call_id, None)
        if scope.cancel_called:
            if reply is not None:  # it ran to its end in the same tick: undo what it started
                self._withdraw(name)
            log.info("deepgram agent: function call %s (%s) cancelled by the server",
                     call_id, name)
            return
        assert reply is not None
        self._answered[call_id] = name
        while len(self._answered) > MAX_ANSWERED:
            del self._answered[next(iter(self._answered))]
        self._send_json({"type": "FunctionCallResponse", "id": call_id, "name": name,
                         "content": reply.output})

    def _cancel_call(self, call_id: str, name: str) -> None:
        scope = self._calls.get(call_id)
        if scope is not None:
            scope.cancel()
        elif call_id in self._answered:  # our response crossed the cancellation
            self._withdraw(self._answered.pop(call_id))
        else:
            log.warning("deepgram agent: FunctionCallCancelled for unknown call %s (%s)",
                        call_id, name)

    def _withdraw(self, name: str) -> None:
        """A cancelled call's tool already ran: a transfer or hang-up it started and that is
        not carried out yet is called off, and the caller is heard again."""
        assert self._port is not None
        if self._port.tool_cancelled(name):
            self._muted = False
