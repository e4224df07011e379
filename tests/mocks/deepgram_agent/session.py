"""One Voice Agent connection: the message handlers, the agent's turns and the watchdog."""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio
import trio_websocket
from wsproto.frame_protocol import CloseReason

from .audio import Clip, EnergyVad, InputDecoder
from .script import AUDIO, MEDIA, SessionLog, Speech
from .settings import (
    SettingsError,
    check_listen_provider,
    check_settings,
    check_speak,
    check_think,
    declared_functions,
)
from .settings import parse_error as _parse_error

if TYPE_CHECKING:
    from .server import MockAgentServer

SEND_TIMEOUT = 30.0
"""A send the peer does not drain within this long ends the session."""
QUEUE_SIZE = 32
UNPARSABLE = "UNPARSABLE_CLIENT_MESSAGE"
UNKNOWN_FORMAT = "Text message received from client did not match any of the formats we expect."
TIMEOUT_TEXT = (
    "We waited too long for a websocket message. Please ensure that you're sending binary "
    "messages containing user speech."
)
INTERNAL_TEXT = "An internal server error occurred. Please try again."
UNKNOWN_ID = "UNKNOWN_FUNCTION_CALL_ID"
"""Warning code (the mock's own) for a FunctionCallResponse whose id no request is awaiting."""


CROSSING = 0.001
"""A response this soon (runtime clock) after its call's FunctionCallCancelled crossed it on the
wire (on the in-memory link under the virtual clock a round trip takes no time): tolerated,
noted in ``crossed_responses``. Any later one is a problem: the client ignored the cancellation."""


@dataclass(eq=False)
class _Job:
    kind: str
    """``turn`` (reply to a user text) or a Speech kind (``greeting``, ``inject``)."""
    text: str


@dataclass(eq=False)
class _Call:
    item: dict[str, Any]
    answered: trio.Event = field(default_factory=trio.Event)
    content: str = ""


class Session:
    """The reader task handles client messages in order; agent speech runs in a worker task,
    one job at a time, each message in its own cancel scope (barge-in cancels it). Sends are
    shielded, so a cancellation lands between frames, never inside one. Any ``Error`` ends the
    session: it is sent, then the server closes with an empty close frame (the client sees
    1005, as clients of the live service report)."""

    def __init__(
        self,
        server: MockAgentServer,
        ws: trio_websocket.WebSocketConnection,
        log: SessionLog,
        nursery: trio.Nursery,
        transport: trio.abc.Stream,
    ) -> None:
        self.server, self.script, self.ws, self.log = server, server.script, ws, log
        self.nursery, self.transport = nursery, transport
        self.closed = False
        self.applied = False
        self.history = True
        self.functions: dict[str, dict[str, Any]] = {}
        self.decoder: InputDecoder | None = None
        self.vad: EnergyVad | None = None
        self.clip: Clip | None = None
        self.last_activity = trio.current_time()
        self.jobs_in, self.jobs_out = trio.open_memory_channel[_Job](QUEUE_SIZE)
        self.busy = False
        self.current: Speech | None = None
        self.speech_scope = trio.CancelScope()
        self.speech_done = trio.Event()
        self.user_speaking = False
        self.spoken_turns = 0
        self.replies_used = 0
        self.calls: dict[str, _Call] = {}
        self.cancelled: dict[str, float] = {}
        """Cancelled call id -> runtime clock when FunctionCallCancelled was sent."""
        self.call_ids = itertools.count(1)
        self.handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            "Settings": self._on_settings,
            "UpdatePrompt": self._on_update_prompt,
            "UpdateSpeak": self._on_update_speak,
            "UpdateThink": self._on_update_think,
            "UpdateListen": self._on_update_listen,
            "InjectUserMessage": self._on_inject_user,
            "InjectAgentMessage": self._on_inject_agent,
            "FunctionCallResponse": self._on_function_response,
        }

    # -- plumbing ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Send Welcome, then handle client messages until either side closes."""
        await self.send({"type": "Welcome", "request_id": self.log.request_id})
        if self.script.idle_timeout is not None:
            self.nursery.start_soon(self._idle_watch, self.script.idle_timeout)
        self.nursery.start_soon(self._worker)
        while not self.closed:
            try:
                message = await self.ws.get_message()
            except trio_websocket.ConnectionClosed:
                self.log._close("client")
                break
            if isinstance(message, bytes):
                await self._on_audio(message)
            else:
                await self._on_text(message)
        self.nursery.cancel_scope.cancel()

    async def _send_frame(self, payload: str | bytes) -> bool:
        if self.closed:
            return False
        with trio.CancelScope(shield=True, deadline=trio.current_time() + SEND_TIMEOUT):
            try:
                await self.ws.send_message(payload)
                return True
            except trio_websocket.ConnectionClosed:
                pass
        # timed out or the peer is gone: the session cannot go on
        self.closed = True
        self.log._close("send_failed")
        self.nursery.cancel_scope.cancel()
        return False

    async def send(self, message: dict[str, Any]) -> None:
        """Send one JSON message. Shielded: a cancel lands before or after it, never inside."""
        if await self._send_frame(json.dumps(message)):
            self.log.server_messages.append(message)
            self.log._bump(True, message["type"])

    async def fatal(self, code: str, description: str) -> None:
        """Send ``Error``, close the WebSocket and end the session."""
        if self.closed:
            return
        await self.send({"type": "Error", "description": description, "code": code})
        self.closed = True
        self.log._close(f"error:{code}")
        with trio.move_on_after(2.0, shield=True):
            await self.ws.aclose(CloseReason.NO_STATUS_RCVD)
        self.nursery.cancel_scope.cancel()

    async def _abort(self, reason: str) -> None:
        """Drop the transport without a WebSocket close frame (the client sees 1006)."""
        self.closed = True
        self.log._close(reason)
        await trio.aclose_forcefully(self.transport)
        self.nursery.cancel_scope.cancel()

    async def _idle_watch(self, idle: float) -> None:
        while True:
            await trio.sleep_until(self.last_activity + idle)
            if trio.current_time() >= self.last_activity + idle:
                await self.fatal("CLIENT_MESSAGE_TIMEOUT", TIMEOUT_TEXT)
                return

    # -- client messages --------------------------------------------------------------------------
    async def _on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            self.log.problems.append(f"unparsable text message: {text[:80]!r}")
            await self.fatal(UNPARSABLE, UNKNOWN_FORMAT)
            return
        type_name = message["type"]
        self.log.client_messages.append(message)
        try:
            if type_name == "KeepAlive":
                self.last_activity = trio.current_time()
                self.log.keepalive_times.append(self.last_activity)
            elif type_name not in self.handlers:
                self.log.problems.append(f"unknown message type {type_name!r}")
                await self.fatal(UNPARSABLE, UNKNOWN_FORMAT)
            elif not self.applied and type_name != "Settings":
                self.log.problems.append(f"{type_name} before Settings")
                await self.fatal(UNPARSABLE, f"Expected Settings before {type_name}.")
            else:
                await self.handlers[type_name](message)
        except SettingsError as exc:
            self.log.problems.append(f"{type_name} refused: {exc}")
            await self.fatal(exc.code, exc.description)
        self.log._bump(False, type_name)

    async def _on_audio(self, raw: bytes) -> None:
        log = self.log
        self.last_activity = trio.current_time()
        log.audio_in_frames += 1
        log.audio_in_bytes += len(raw)
        if not self.applied:
            log.problems.append("binary audio before SettingsApplied")
            await self.fatal(UNPARSABLE, "Binary message received before Settings were applied.")
        elif self.decoder is not None:
            log.audio_in_ms += self.decoder.ms(len(raw))
            if self.vad is not None:
                for started in self.vad.feed(self.decoder.decode(raw)):
                    await (self._user_started() if started else self._user_stopped())
        log._bump(False, MEDIA)

    async def _on_settings(self, message: dict[str, Any]) -> None:
        if self.applied:
            raise SettingsError("INVALID_SETTINGS", "Settings have already been applied.")
        setup = check_settings(message)
        self.log.problems.extend(setup.problems)
        agent = message["agent"]
        if isinstance(agent, dict):
            self.functions = declared_functions(agent["think"])
        self.history = (message.get("flags") or {}).get("history", True)
        script = self.script
        self.decoder = InputDecoder(setup.in_encoding, setup.in_rate)
        if self.decoder.decodes:
            self.vad = EnergyVad(
                setup.in_rate, script.vad_rms, script.vad_start_ms, script.vad_end_ms
            )
        else:
            self.log.problems.append(
                f"input {setup.in_encoding} is not decoded by the mock: no VAD, no audio ms"
            )
        self.clip = self.server.clip(setup.out_encoding, setup.out_rate)
        self.log.settings = copy.deepcopy(message)
        self.log.config = copy.deepcopy(message)
        self.applied = True
        await self.send({"type": "SettingsApplied"})
        if isinstance(agent, dict) and agent.get("greeting"):
            self._enqueue(_Job("greeting", agent["greeting"]))

    def _agent_config(self) -> dict[str, Any] | None:
        agent = (self.log.config or {}).get("agent")
        return agent if isinstance(agent, dict) else None

    async def _on_update_prompt(self, message: dict[str, Any]) -> None:
        prompt = message.get("prompt")
        if not isinstance(prompt, str):
            raise _parse_error("prompt")
        agent = self._agent_config()
        if agent is not None:  # appended to the existing prompt (providers.md 2.3)
            for think in agent["think"] if isinstance(agent["think"], list) else [agent["think"]]:
                think["prompt"] = f"{think['prompt']}\n{prompt}" if think.get("prompt") else prompt
        await self.send({"type": "PromptUpdated"})

    async def _on_update_speak(self, message: dict[str, Any]) -> None:
        check_speak(message.get("speak"), "speak")
        agent = self._agent_config()
        if agent is not None:
            agent["speak"] = copy.deepcopy(message["speak"])
        await self.send({"type": "SpeakUpdated"})

    async def _on_update_think(self, message: dict[str, Any]) -> None:
        check_think(message.get("think"), "think")
        agent = self._agent_config()
        if agent is not None:
            agent["think"] = copy.deepcopy(message["think"])
        self.functions = declared_functions(message["think"])
        await self.send({"type": "ThinkUpdated"})

    async def _on_update_listen(self, message: dict[str, Any]) -> None:
        """asyncapi ``AgentV1UpdateListen``: the provider's identity (type, version, model) must
        match the session's; keyterms change mid-session only with Flux (3.3). The mock
        refuses either with INVALID_SETTINGS (the live wording is not documented)."""
        listen = message.get("listen")
        if not isinstance(listen, dict) or not isinstance(listen.get("provider"), dict):
            raise _parse_error("listen")
        provider = listen["provider"]
        self.log.problems.extend(check_listen_provider(provider, "listen.provider"))
        agent = self._agent_config()
        if agent is not None:
            current = agent["listen"]["provider"]
            identity = ("type", "version", "model")
            if any(provider.get(k) != current.get(k) for k in identity):
                raise SettingsError(
                    "INVALID_SETTINGS", "UpdateListen must keep the provider type, version and model."
                )
            if "keyterms" in provider and provider.get("version") != "v2":
                raise SettingsError("INVALID_SETTINGS", "Keyterms can only be updated with Flux.")
            agent["listen"] = copy.deepcopy(listen)
        await self.send({"type": "ListenUpdated"})

    async def _on_inject_user(self, message: dict[str, Any]) -> None:
        content = message.get("content")
        if not isinstance(content, str):
            raise _parse_error("content")
        self.log.injected_user.append(content)
        await self._user_turn(content)

    async def _on_inject_agent(self, message: dict[str, Any]) -> None:
        text = message.get("message")
        if text is None and "content" in message:  # providers.md 2.3 CONFLICT: accept both
            text = message["content"]
            self.log.problems.append("InjectAgentMessage used 'content' (spec: 'message')")
        behavior = message.get("behavior", "default")
        if not isinstance(text, str):
            raise _parse_error("message")
        if behavior not in ("default", "queue", "interrupt"):
            raise _parse_error("behavior")
        self.log.injected_agent.append(text)
        if behavior == "default" and (self.user_speaking or self._agent_mid_turn()):
            who = "user is speaking" if self.user_speaking else "agent is mid-turn"
            await self.send(
                {"type": "InjectionRefused", "message": f"Cannot inject a message: the {who}."}
            )
            return
        if behavior == "interrupt":
            await self._interrupt()
        self._enqueue(_Job("inject", text))

    async def _on_function_response(self, message: dict[str, Any]) -> None:
        for key in ("name", "content"):
            if not isinstance(message.get(key), str):
                raise _parse_error(key)
        self.log.function_responses.append(message)
        call_id = message.get("id")
        call = self.calls.pop(call_id, None) if isinstance(call_id, str) else None
        sent = self.cancelled.get(call_id) if isinstance(call_id, str) else None
        if call is None and sent is not None and trio.current_time() - sent <= CROSSING:
            self.log.crossed_responses.append(message)  # sent before the client could know
            return
        if call is None:
            what = "cancelled" if sent is not None else "unknown"
            self.log.problems.append(f"FunctionCallResponse for {what} id {call_id!r}")
            await self.send(
                {
                    "type": "Warning",
                    "description": f"No function call with id {call_id!r} is awaiting a response.",
                    "code": UNKNOWN_ID,
                }
            )
            return
        if message["name"] != call.item["name"]:
            self.log.problems.append(
                f"FunctionCallResponse {call_id} names {message['name']!r}, "
                f"the request named {call.item['name']!r}"
            )
        call.content = message["content"]
        call.answered.set()

    # -- the user's turns -------------------------------------------------------------------------
    async def _user_started(self) -> None:
        self.user_speaking = True
        await self._interrupt()  # no audio of the cut message may follow UserStartedSpeaking
        await self.send({"type": "UserStartedSpeaking"})

    async def _user_stopped(self) -> None:
        self.user_speaking = False
        self.spoken_turns += 1
        t = self.script.transcripts
        n = self.spoken_turns
        await self._user_turn(t[n - 1] if n <= len(t) else f"utterance {n}")

    async def _user_turn(self, text: str) -> None:
        self.log.user_texts.append(text)
        await self.send({"type": "ConversationText", "role": "user", "content": text})
        if self.history:
            await self.send({"type": "History", "role": "user", "content": text})
        self._enqueue(_Job("turn", text))

    def _enqueue(self, job: _Job) -> None:
        try:
            self.jobs_in.send_nowait(job)
        except trio.WouldBlock:
            self.log.problems.append(f"agent queue full: dropped {job.kind} {job.text!r}")

    def _agent_mid_turn(self) -> bool:
        return self.busy or self.jobs_out.statistics().current_buffer_used > 0

    async def _interrupt(self) -> None:
        """Cut the message being spoken, if any, and wait until its task has stopped."""
        speech = self.current
        if speech is not None and not speech.done:
            speech.interrupted = True
            self.speech_scope.cancel()
            await self.speech_done.wait()

    # -- the agent's turns ------------------------------------------------------------------------
    async def _worker(self) -> None:
        async for job in self.jobs_out:
            self.busy = True
            if job.kind == "turn":
                await self._agent_turn(job.text)
            else:
                await self._speak(job.text, job.kind, None, False)
            self.busy = False

    def _plan_call(self, text: str) -> tuple[str, dict[str, Any]] | None:
        for trigger, (name, arguments) in self.script.function_calls.items():
            if trigger.lower() in text.lower():
                if name in self.functions:
                    return name, dict(arguments)
                self.log.problems.append(f"script calls {name!r}, not declared in the Settings")
                return None
        return None

    async def _agent_turn(self, text: str) -> None:
        self.log.turns += 1
        n, script = self.log.turns, self.script
        if script.error_after_turns == n:
            await self.fatal("INTERNAL_SERVER_ERROR", INTERNAL_TEXT)
            return
        disconnect = script.disconnect_mid_turn == n
        call = self._plan_call(text)
        if call is None:
            self.replies_used += 1
            r = script.replies
            reply = r[self.replies_used - 1] if self.replies_used <= len(r) else f"reply {n}"
            await self._speak(reply, "reply", n, disconnect)
            await self._latency_report(tool=False)
            return
        if script.speak_before_call:
            await self._speak(script.speak_before_call, "before_call", n, disconnect)
            disconnect = False
        if await self._function_call(*call):
            await self._speak(script.after_tool_reply, "after_tool", n, disconnect)
        await self._latency_report(tool=True)

    async def _latency_report(self, tool: bool) -> None:
        figures = self.script.latency_report
        if figures is not None:
            body = {k: v for k, v in figures.items() if tool or k != "ttt_tool_latency"}
            await self.send({"type": "LatencyReport", **body})

    async def _function_call(self, name: str, arguments: dict[str, Any]) -> bool:
        """Request one function; wait for the client's response (client-side) or answer it
        ourselves (functions with an ``endpoint`` are not executed). Returns False when the
        script cancelled it (``FunctionCallCancelled``)."""
        call_id, client_side = f"fc_{next(self.call_ids)}", not self.functions[name].get("endpoint")
        item = {
            "id": call_id,
            "name": name,
            "arguments": json.dumps(arguments, separators=(",", ":")),
            "client_side": client_side,
        }
        self.log.function_requests.append(item)
        call = _Call(item)
        if client_side:
            self.calls[call_id] = call
        await self.send({"type": "FunctionCallRequest", "functions": [item]})
        cancel_after = self.script.cancel_function_calls_after
        if client_side and cancel_after is not None:
            if cancel_after > 0:
                await trio.sleep(cancel_after)
            self.calls.pop(call_id, None)
            self.cancelled[call_id] = trio.current_time()
            self.log.cancelled_calls.append(call_id)
            await self.send(
                {"type": "FunctionCallCancelled", "functions": [{"id": call_id, "name": name}]}
            )
            return False
        if client_side:
            await call.answered.wait()
        else:
            call.content = self.script.server_function_result
            await self.send(
                {
                    "type": "FunctionCallResponse",
                    "id": call_id,
                    "name": name,
                    "content": call.content,
                }
            )
        if self.history:
            await self.send(
                {"type": "History", "function_calls": [{**item, "response": call.content}]}
            )
        return True

    async def _checked_send(self, message: dict[str, Any]) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        await self.send(message)

    async def _speak(self, text: str, kind: str, turn: int | None, disconnect: bool) -> None:
        """ConversationText, AgentStartedSpeaking (not for the greeting), the audio frames
        paced on the runtime clock, AgentAudioDone. An interruption stops it between frames
        and no AgentAudioDone follows."""
        clip = self.clip
        assert clip is not None
        log, script = self.log, self.script
        speech = Speech(kind, text, turn, trio.current_time(), clip.total_ms)
        log.speeches.append(speech)
        self.current, self.speech_done = speech, trio.Event()
        self.speech_scope = trio.CancelScope()
        try:
            with self.speech_scope:
                await self._checked_send(
                    {"type": "ConversationText", "role": "assistant", "content": text}
                )
                if self.history:
                    await self._checked_send(
                        {"type": "History", "role": "assistant", "content": text}
                    )
                if script.first_byte_delay > 0:
                    await trio.sleep(script.first_byte_delay)
                if kind != "greeting":
                    await self._checked_send(
                        {
                            "type": "AgentStartedSpeaking",
                            "total_latency": script.total_latency,
                            "tts_latency": script.tts_latency,
                            "ttt_latency": script.ttt_latency,
                        }
                    )
                await self._stream(speech, clip, disconnect)
                await self._checked_send({"type": "AgentAudioDone"})
                speech.done = True
        finally:
            self.current = None
            self.speech_done.set()

    async def _stream(self, speech: Speech, clip: Clip, disconnect: bool) -> None:
        log, script = self.log, self.script
        step = script.chunk_ms / 1000 / script.send_rate if script.send_rate > 0 else 0.0
        t0 = trio.current_time()
        half = len(clip.frames) // 2
        for k, (frame, ms) in enumerate(zip(clip.frames, clip.frame_ms, strict=True)):
            if k and step:
                await trio.sleep_until(t0 + k * step)
            else:
                await trio.lowlevel.checkpoint()
            if disconnect and k == half:
                await self._abort("disconnect_mid_turn")
                await trio.lowlevel.checkpoint()  # the nursery is cancelled: raises Cancelled
            if not await self._send_frame(frame):
                return
            speech.bytes_sent += len(frame)
            speech.ms_sent += ms
            log.audio_out_frames += 1
            log.audio_out_bytes += len(frame)
            log.audio_out_ms += ms
            log._bump(True, AUDIO)
