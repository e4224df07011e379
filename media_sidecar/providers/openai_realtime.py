"""OpenAI Realtime (GA) over WebSocket, as one call's speech-to-speech provider.

Wire facts (``shared/reference/providers.md`` section 1): JSON text frames; audio is base64 in
``input_audio_buffer.append`` and ``response.output_audio.delta``; the first server event is
``session.created``, answered by our ``session.update``; ``session.updated`` carries the
effective configuration, and the audio formats it confirms are the ones used, whatever was
asked (a provider that silently answers PCM16 when mu-law was requested is handled, never played
as the wrong bytes). GA has no ``OpenAI-Beta`` header.

Audio: mu-law 8 kHz both ways when possible (a table lookup, no resampling); otherwise PCM16
24 kHz through one stateful resampler per direction. On barge-in (``speech_started``) the relay
flushes the playout and this client sends ``conversation.item.truncate`` with the milliseconds
the caller actually heard, so the model's memory matches the call.

Tools: the assistant's tools are declared in ``session.tools``; a finished function call
(``response.function_call_arguments.done``) runs through the call's tool dispatcher, its result
goes back as a ``function_call_output`` item, and ``response.create`` is sent once the response
that made the call is done (the model never continues on its own after a tool). Keypad digits
arrive as a user ``input_text`` message. With ``turn_detection: none`` the call's own VAD takes
turns: the client sends only the caller's speech, then ``input_audio_buffer.commit`` and
``response.create``, and cancels and truncates the response itself on barge-in.

The API key is read from the environment at connect time and sent only in the handshake
header; it is never logged.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import trio
import trio_websocket

from ..config.schema import RealtimeConfig
from ..protocol.wirejson import loads_object, obj, whole
from .audio import AudioCodec
from .base import ProviderError, ProviderSetup, RelayPort, Unusable, api_key
from .ws import Connector, Outbox, open_provider_ws, receive, tcp_connector

log = logging.getLogger("agi_voice.openai_realtime")

PCM_RATE = 24000

_FORMATS: dict[str, dict[str, Any]] = {"ulaw": {"type": "audio/pcmu"}, "pcm": {"type": "audio/pcm", "rate": PCM_RATE}}


def iso_639_1(language: str) -> str:
    """The ISO-639-1 code of a language tag, which OpenAI's transcription takes (``en-US``,
    ``en_GB``, ``EN`` -> ``en``); "" when the tag has no two-letter primary subtag (``yue``,
    ``""``): the language is then left to detection rather than sent wrong."""
    primary = language.replace("_", "-").split("-")[0].strip().lower()
    return primary if len(primary) == 2 and primary.isalpha() else ""


def takes_reasoning(model: str) -> bool:
    """Whether a Realtime model accepts ``reasoning``: the reasoning models "such as
    gpt-realtime-2" (SDK 3.63 ``realtime_reasoning.py``): gpt-realtime-2, -2.1, -2.1-mini.
    Which others reason is not documented; they get no ``reasoning`` (the API refuses it)."""
    return model.startswith("gpt-realtime-2")


def realtime_url(cfg: RealtimeConfig) -> str:
    parts = urlsplit(cfg.url)
    query = f"{parts.query}&" if parts.query else ""
    return urlunsplit(parts._replace(query=query + urlencode({"model": cfg.model})))


def _append_event(audio: bytes) -> str:
    return ('{"type":"input_audio_buffer.append","audio":"'
            + base64.b64encode(audio).decode("ascii") + '"}')


def _codec(fmt: object) -> AudioCodec:
    """The codec for an OpenAI audio format object (``{"type": "audio/pcmu"}``, ...)."""
    if not isinstance(fmt, Mapping):
        raise ProviderError(f"audio format is not an object: {fmt!r}", retryable=False)
    kind = {"audio/pcmu": "ulaw", "audio/pcma": "alaw", "audio/pcm": "pcm"}.get(
        str(fmt.get("type")))
    rate = fmt.get("rate", PCM_RATE) if kind == "pcm" else 8000
    if kind is None or (kind == "pcm" and rate != PCM_RATE):
        raise ProviderError(f"unsupported audio format {dict(fmt)}", retryable=False)
    return AudioCodec(kind, int(rate))


class OpenAIRealtimeSession:
    name = "openai_realtime"

    speaks_after_tool = False

    def __init__(self, cfg: RealtimeConfig, setup: ProviderSetup, *,
                 env: Mapping[str, str] | None = None, connect: Connector | None = None) -> None:
        self.cfg = cfg
        self.setup = setup
        self.local_turns = cfg.turn_detection == "none"
        self._env = os.environ if env is None else env
        self._connect = connect or tcp_connector(cfg.connect_timeout)
        self._nursery: trio.Nursery | None = None
        self._active_response = False
        self._want_response = False
        self._tools_running = 0
        self._port: RelayPort | None = None
        self._unusable = Unusable("openai realtime")
        self._in: AudioCodec | None = None
        self._out: AudioCodec | None = None
        self._out_box = Outbox(_append_event)
        self._received: dict[str, int] = {}
        """Output audio bytes received per assistant item (truncate must not exceed it)."""
        self._last_item = ""
        self._started = False
        self.errors: list[dict[str, Any]] = []

    # -- SpeechToSpeech ------------------------------------------------------------------------

    def send_caller_audio(self, pcm: bytes) -> None:
        if self._in is None:
            return
        self._out_box.send_audio(self._in.encode(pcm), self._in.bytes_per_ms)

    async def run(self, port: RelayPort, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._port = port
        key = api_key(self._env, self.cfg.api_key_env)
        header = (b"api-key", key.encode()) if self.cfg.auth == "api-key" else (
            b"Authorization", b"Bearer " + key.encode())
        async with open_provider_ws(self._connect, realtime_url(self.cfg), [header],
                                    "OpenAI Realtime") as ws:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._out_box.run, ws)
                await self._receiver(ws, task_status)
                nursery.cancel_scope.cancel()

    def send_user_text(self, text: str) -> None:
        self._send_json({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": text}]}})
        self._request_response()

    def interrupt(self, cut: tuple[str, int] | None) -> None:
        if self._active_response:
            self._send_json({"type": "response.cancel"})
        if cut is not None:
            self._truncate(*cut)

    def commit_turn(self) -> None:
        self._send_json({"type": "input_audio_buffer.commit"})
        self._request_response()

    def closing(self) -> None:
        turn = self._turn_detection()
        if turn is not None:
            turn.update(create_response=False, interrupt_response=False)
            self._send_json({"type": "session.update", "session": {
                "type": "realtime", "audio": {"input": {"turn_detection": turn}}}})

    def _request_response(self) -> None:
        self._want_response = True
        self._maybe_respond()

    def _maybe_respond(self) -> None:
        """``response.create`` once nothing is in progress (one response at a time)."""
        if self._want_response and not self._active_response and not self._tools_running:
            self._want_response = False
            self._active_response = True  # until its response.done
            self._send_json({"type": "response.create"})

    # -- sending -------------------------------------------------------------------------------

    def _send_json(self, event: dict[str, Any]) -> None:
        self._out_box.send_json(event)

    def _turn_detection(self) -> dict[str, Any] | None:
        cfg = self.cfg
        if cfg.turn_detection == "none":
            return None
        if cfg.turn_detection == "semantic_vad":
            return {"type": "semantic_vad", "create_response": True, "interrupt_response": True}
        return {"type": "server_vad", "threshold": cfg.vad_threshold,
                "prefix_padding_ms": cfg.prefix_padding_ms,
                "silence_duration_ms": cfg.silence_ms,
                "create_response": True, "interrupt_response": True}

    def _session_update(self) -> dict[str, Any]:
        cfg = self.cfg
        fmt = _FORMATS["pcm" if cfg.audio == "pcm" else "ulaw"]
        audio_in: dict[str, Any] = {"format": fmt, "turn_detection": self._turn_detection()}
        if cfg.transcription_model:
            audio_in["transcription"] = {"model": cfg.transcription_model}
            language = iso_639_1(self.setup.language)
            if language:  # the API documents ISO-639-1 ("en", not "en-US")
                audio_in["transcription"]["language"] = language
        session: dict[str, Any] = {
            "type": "realtime", "output_modalities": ["audio"],
            "instructions": self.setup.instructions,
            "audio": {"input": audio_in, "output": {"format": fmt, "voice": cfg.voice}},
        }
        if cfg.reasoning_effort and takes_reasoning(cfg.model):
            session["reasoning"] = {"effort": cfg.reasoning_effort}
        if self.setup.tools:
            session["tools"] = [{"type": "function", "name": t.name, "description": t.description,
                                 "parameters": t.parameters} for t in self.setup.tools]
            session["tool_choice"] = "auto"
        return {"type": "session.update", "session": session}

    # -- receiving -----------------------------------------------------------------------------

    async def _receiver(self, ws: trio_websocket.WebSocketConnection,
                        task_status: trio.TaskStatus[None]) -> None:
        while True:
            raw = await receive(ws)
            t_in = trio.current_time()
            event = loads_object(raw)
            kind = event.get("type") if event is not None else None
            if event is None or not isinstance(kind, str):
                self._unusable.skip(self._port, f"a malformed event ({len(raw)} bytes)")
                continue
            if kind in ("response.output_audio.delta", "response.audio.delta"):
                self._on_audio(event, t_in)
            elif kind == "session.created":
                self._send_json(self._session_update())
            elif kind == "session.updated":
                self._on_session_updated(obj(event.get("session")), task_status)
            else:
                self._on_event(kind, event)

    def _on_session_updated(self, session: Mapping[str, Any],
                            task_status: trio.TaskStatus[None]) -> None:
        audio = obj(session.get("audio"))
        fmt_in = obj(audio.get("input")).get("format") or _FORMATS["pcm"]
        fmt_out = obj(audio.get("output")).get("format") or _FORMATS["pcm"]
        self._in, self._out = _codec(fmt_in), _codec(fmt_out)
        wanted = "pcm" if self.cfg.audio == "pcm" else "ulaw"
        if (self._in.name, self._out.name) != (wanted, wanted):
            log.warning("openai realtime confirmed audio %s in / %s out (asked for %s); "
                        "converting accordingly", self._in.name, self._out.name, wanted)
        if not self._started:
            self._started = True
            if self.setup.greeting:
                self._active_response = True
                self._send_json({"type": "response.create", "response": {
                    "instructions": "Greet the caller by saying exactly this, and nothing "
                                    f"else: {self.setup.greeting}"}})
            task_status.started()

    def _on_audio(self, event: Mapping[str, Any], t_in: float) -> None:
        if self._out is None or self._port is None:
            return
        item = str(event.get("item_id", ""))
        delta = event.get("delta", "")
        try:
            if not isinstance(delta, str):
                raise ValueError(delta)
            data = base64.b64decode(delta, validate=True)
        except ValueError:
            self._unusable.skip(self._port, "an audio delta that is not valid base64")
            return
        if item != self._last_item:
            self._out.reset_down()
            self._last_item = item
        self._received[item] = self._received.get(item, 0) + len(data)
        self._port.agent_audio(self._out.decode(data), item, t_in)

    def _on_event(self, kind: str, event: Mapping[str, Any]) -> None:
        port = self._port
        assert port is not None
        if kind == "input_audio_buffer.speech_started":
            cut = port.caller_speech_started()
            if cut is not None:
                item, played_ms = cut
                self._truncate(item, played_ms)
        elif kind == "input_audio_buffer.speech_stopped":
            # audio_end_ms includes the server VAD's silence_duration_ms (documented): the
            # caller stopped talking that much earlier.
            silence = self.cfg.silence_ms if self.cfg.turn_detection == "server_vad" else 0
            port.caller_speech_stopped(max(0, (whole(event.get("audio_end_ms")) or 0) - silence))
        elif kind in ("response.output_audio.done", "response.audio.done"):
            port.agent_audio_done(str(event.get("item_id", "")))
        elif kind in ("response.output_audio_transcript.done", "response.audio_transcript.done"):
            port.transcript("agent", str(event.get("transcript") or ""))
        elif kind == "conversation.item.input_audio_transcription.completed":
            port.transcript("caller", str(event.get("transcript") or ""))
        elif kind == "response.created":
            self._active_response = True
        elif kind == "response.function_call_arguments.done":
            assert self._nursery is not None
            self._tools_running += 1
            self._nursery.start_soon(self._run_tool, str(event.get("call_id", "")),
                                     str(event.get("name", "")), event.get("arguments"))
        elif kind == "response.done":
            resp = obj(event.get("response"))
            status = str(resp.get("status", ""))
            if status == "failed":
                log.warning("openai realtime response failed: %s", resp.get("status_details"))
            self._active_response = False
            usage = resp.get("usage")
            port.response_done(status, usage if isinstance(usage, dict) else None)
            self._maybe_respond()
        elif kind == "error":
            self._on_error(obj(event.get("error")))

    async def _run_tool(self, call_id: str, name: str, arguments: object) -> None:
        assert self._port is not None
        try:
            args = arguments if isinstance(arguments, (str, dict)) else None
            reply = await self._port.call_tool(name, args)
            self._send_json({"type": "conversation.item.create", "item": {
                "type": "function_call_output", "call_id": call_id, "output": reply.output}})
            if reply.respond:
                self._want_response = True
        finally:
            self._tools_running -= 1
            self._maybe_respond()

    def _truncate(self, item: str, played_ms: int) -> None:
        if self._out is None or item not in self._received:
            return
        generated_ms = self._received[item] // self._out.bytes_per_ms
        self._send_json({"type": "conversation.item.truncate", "item_id": item,
                         "content_index": 0, "audio_end_ms": min(played_ms, generated_ms)})

    def _on_error(self, error: Mapping[str, Any]) -> None:
        self.errors.append(dict(error))
        code = str(error.get("code") or "")
        log.warning("openai realtime error %s: %s", code or error.get("type"),
                    error.get("message"))
        if code == "conversation_already_has_active_response":
            # Our response.create raced one the server started (the caller spoke): that one
            # answers the same conversation, our request is dropped.
            self._active_response = True
        if code in ("session_expired", "invalid_api_key", "insufficient_quota"):
            raise ProviderError(f"provider error {code}: {error.get('message')}",
                                retryable=code == "session_expired")

