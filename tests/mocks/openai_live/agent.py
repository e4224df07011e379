"""The model's side of one mock connection: it listens to the caller (energy VAD) while it
talks, stops talking as soon as the caller does (server-side barge-in), answers each utterance
after ``vad_end_ms`` of quiet, and streams its audio through one *mixer* at real-time pace,
silence included, with the output transcript paced word by word alongside. Delegations follow
section 1.8 A: ``session.delegation.created``, an optional acknowledgement, the backend's
``response.event`` s with the function call, then the continuation once every call has its
output and ``response.create`` came.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio

from tests.mocks.deepgram_agent.audio import EnergyVad, InputDecoder, render_clip
from tests.mocks.openai_live.connection import _Connection
from tests.mocks.openai_live.script import Speech
from tests.mocks.openai_live.wire import WireError, format_codec

QUEUE_SIZE = 16
BACKEND_USAGE = {"input_tokens": 812, "output_tokens": 21, "total_tokens": 833}
QUOTED = re.compile(r'"([^"]+)"')


@dataclass(eq=False)
class _Job:
    kind: str
    """``turn`` (answer a caller utterance) or ``commentary``."""
    text: str


@dataclass(eq=False)
class _Pending:
    """A delegation waiting for its function outputs and ``response.create``."""

    delegation_id: str
    calls: dict[str, str]
    """call_id -> function name, until its output arrives."""
    go: trio.Event = field(default_factory=trio.Event)


class _Agent(_Connection):
    def setup_audio(self, fmt: dict[str, Any]) -> None:
        s = self.script
        enc, rate = format_codec(fmt)
        self.decoder = InputDecoder(enc, rate)
        self.vad = EnergyVad(rate, s.vad_rms, s.vad_start_ms, s.vad_end_ms)
        clip = self.server.clip(enc, rate)
        self.frames = [base64.b64encode(f).decode("ascii") for f in clip.frames]
        silent = render_clip(encoding=enc, rate=rate, reply_ms=s.chunk_ms, chunk_ms=s.chunk_ms,
                             tone_hz=s.tone_hz, tone_amplitude=0)
        self.silence = base64.b64encode(silent.frames[0]).decode("ascii")
        self.muted = False
        self.current: Speech | None = None
        self.speech_done = trio.Event()
        self.disconnect_speech: Speech | None = None
        self.jobs_in, self.jobs_out = trio.open_memory_channel[_Job](QUEUE_SIZE)
        self.utterances = self.replies_used = 0
        self.fragment_ms = self.words_sent = 0
        self.caller_words: list[str] = []
        self.pending: _Pending | None = None
        self.nursery.start_soon(self._mixer)
        self.nursery.start_soon(self._worker)
        self.nursery.start_soon(self._usage)

    # -- the caller's audio ------------------------------------------------------------------------

    async def on_audio_in(self, event: dict[str, Any]) -> None:
        audio = event.get("audio")
        try:
            raw = base64.b64decode(audio if isinstance(audio, str) else "", validate=True)
        except ValueError:
            raise WireError("invalid_value", "Invalid base64 audio.", "audio") from None
        samples = self.decoder.decode(raw)
        self.log.audio_in_ms += self.decoder.ms(len(raw))
        if self.muted:
            samples = np.zeros_like(samples)  # muted: the model hears silence instead
        for started in self.vad.feed(samples):
            if started:
                await self._caller_started()
            else:
                await self._caller_stopped()

    async def _caller_started(self) -> None:
        self.interrupt()  # the model stops talking by itself; nothing tells the client
        self.utterances += 1
        t = self.script.transcripts
        n = self.utterances
        self.caller_words = (t[n - 1] if n <= len(t) else f"utterance {n}").split()
        now = self.timeline_ms
        self.fragment_ms = now - self.script.vad_start_ms
        self.words_sent = 0
        if len(self.caller_words) > 1:  # streaming recognition: the first word at once
            self.words_sent = 1
            await self.send({"type": "session.input_transcript.delta",
                             "delta": " " + self.caller_words[0],
                             "start_ms": self.fragment_ms, "end_ms": now})
            self.fragment_ms = now

    async def _caller_stopped(self) -> None:
        end = self.timeline_ms - self.script.vad_end_ms
        if len(self.caller_words) > self.words_sent:
            await self.send({"type": "session.input_transcript.delta",
                             "delta": " " + " ".join(self.caller_words[self.words_sent:]),
                             "start_ms": self.fragment_ms,
                             "end_ms": max(end, self.fragment_ms)})
        text = " ".join(self.caller_words)
        self.log.user_texts.append(text)
        self.enqueue(_Job("turn", text))

    def enqueue(self, job: _Job) -> None:
        try:
            self.jobs_in.send_nowait(job)
        except trio.WouldBlock:
            self.log.problems.append(f"agent queue full: dropped {job.kind} {job.text!r}")

    def interrupt(self) -> None:
        speech = self.current
        if speech is not None and not speech.done:
            speech.interrupted = True
            self.current = None
            self.speech_done.set()

    # -- the model's turns -------------------------------------------------------------------------

    async def _worker(self) -> None:
        async for job in self.jobs_out:
            if self.script.first_byte_delay > 0:
                await trio.sleep(self.script.first_byte_delay)
            if job.kind == "turn":
                await self._turn(job.text)
            else:
                quoted = QUOTED.search(job.text)
                await self.speak(quoted.group(1) if quoted else self._next_reply(), "commentary",
                                 None)

    def _next_reply(self) -> str:
        self.replies_used += 1
        r = self.script.replies
        return r[self.replies_used - 1] if self.replies_used <= len(r) else (
            f"reply {self.replies_used}")

    async def _turn(self, text: str) -> None:
        self.log.turns += 1
        n, s = self.log.turns, self.script
        if s.close_after_turns == n:
            await self.close_session(s.close_reason)
            return
        disconnect = s.disconnect_mid_turn == n
        call = self._plan_call(text)
        if call is None:
            await self.speak(self._next_reply(), "reply", n, disconnect)
            return
        await self._delegate(*call, n, disconnect)

    def _plan_call(self, text: str) -> tuple[str, dict[str, Any]] | None:
        delegation = (self.log.session or {}).get("delegation") or {}
        tools = {t.get("name") for t in (delegation.get("responses") or {}).get("tools") or []}
        for trigger, (name, arguments) in self.script.function_calls.items():
            if trigger.lower() in text.lower():
                if name in tools:
                    return name, dict(arguments)
                self.log.problems.append(f"script calls {name!r}, not a delegated tool")
                return None
        return None

    async def _delegate(self, name: str, arguments: dict[str, Any], turn: int,
                        disconnect: bool) -> None:
        del_id, resp_id = self.new_id("del"), self.new_id("resp")
        delegation = {"id": del_id, "target": "responses", "type": "delegation",
                      "response_id": resp_id}
        self.log.delegations.append(delegation)
        await self.send({"type": "session.delegation.created", "offset_ms": self.timeline_ms,
                         "delegation": delegation})
        if self.script.speak_before_call:
            await self.speak(self.script.speak_before_call, "acknowledgement", turn, disconnect)
            disconnect = False
        call_id = self.new_id("call")
        item = {"type": "function_call", "id": self.new_id("fc"), "call_id": call_id,
                "name": name, "arguments": json.dumps(arguments, separators=(",", ":")),
                "status": "completed"}
        self.log.function_calls.append(item)
        self.pending = pending = _Pending(del_id, {call_id: name})
        await self._backend(del_id, {"type": "response.created",
                                     "response": {"id": resp_id, "status": "in_progress"}})
        await self._backend(del_id, {"type": "response.output_item.done", "output_index": 0,
                                     "item": item})
        await self._backend(del_id, {"type": "response.completed", "response": {
            "id": resp_id, "status": "completed", "usage": BACKEND_USAGE}})
        await pending.go.wait()
        self.pending = None
        cont = self.new_id("resp")
        await self._backend(del_id, {"type": "response.created",
                                     "response": {"id": cont, "status": "in_progress"}})
        await self._backend(del_id, {"type": "response.completed", "response": {
            "id": cont, "status": "completed",
            "usage": {"input_tokens": 40, "output_tokens": 12, "total_tokens": 52}}})
        await self.speak(self.script.after_tool_reply, "after_tool", turn, disconnect)

    async def _backend(self, delegation_id: str | None, inner: dict[str, Any]) -> None:
        await self.send({"type": "response.event", "delegation_id": delegation_id,
                         "event": inner})

    # -- output audio ------------------------------------------------------------------------------

    async def speak(self, text: str, kind: str, turn: int | None,
                    disconnect: bool = False) -> Speech:
        """Queue one utterance for the mixer and wait until it was sent or interrupted."""
        speech = Speech(kind, text, turn, trio.current_time(), frames=self.frames,
                        total_frames=len(self.frames))
        self.log.speeches.append(speech)
        if disconnect:
            self.disconnect_speech = speech
        self.interrupt()
        self.current, self.speech_done = speech, trio.Event()
        await self.speech_done.wait()
        return speech

    async def _mixer(self) -> None:
        """One delta per ``chunk_ms`` on an absolute clock: the utterance's next frame, or
        silence; the output transcript's words go out with the frames that say them."""
        s = self.script
        step = s.chunk_ms / 1000 / s.send_rate
        t0, k = trio.current_time(), 0
        while True:
            k += 1
            await trio.sleep_until(t0 + k * step)
            speech = self.current
            if speech is None:
                if s.send_silence:
                    await self.send_audio(self.silence, s.chunk_ms)
                continue
            i = speech.frames_sent
            if speech is self.disconnect_speech and i == speech.total_frames // 2:
                await self.abort("disconnect_mid_turn")
                return
            await self.send_audio(speech.frames[i], s.chunk_ms)
            speech.frames_sent += 1
            self.log.speech_out_ms += s.chunk_ms
            words = speech.text.split()
            for w in range(len(words)):
                if w * speech.total_frames // len(words) == i:
                    await self.send({"type": "session.output_transcript.delta",
                                     "delta": " " + words[w], "start_ms": self.timeline_ms,
                                     "end_ms": self.timeline_ms + s.chunk_ms})
            if speech.frames_sent >= speech.total_frames and self.current is speech:
                speech.done = True
                self.current = None
                self.speech_done.set()

    async def _usage(self) -> None:
        while True:
            await trio.sleep(self.script.usage_interval)
            await self.send({"type": "session.usage.updated", "usage": self.usage(),
                             "context_window": {"usage_ratio": 0.01}})
