"""A call relayed to a speech-to-speech provider (OpenAI Realtime, the echo assistant, ...).

Caller audio goes to the provider one 20 ms frame at a time; the provider's audio comes back in
chunks of any size, tagged with an item id, and is cut into whole 20 ms frames for the paced
playout (a partial frame waits for the next chunk, so no zero padding clicks inside an
utterance). The provider's turn taking decides when the caller talks; when it hears the caller
start (``caller_speech_started``) the session flushes interruptible agent audio at the next
frame, drops whatever audio of the cut items is still in flight, and tells the provider how
many milliseconds of the item the caller actually heard (the playout's frame count, not the
bytes received), which OpenAI needs for ``conversation.item.truncate``.

Tools: the model's function calls run through :meth:`MediaSession.call_tool`. A transfer or
a hang-up makes the call *leave*: from then on the caller cannot interrupt (the provider is told
too), the announcement or farewell is awaited (the one already spoken, or the one the model
says after the tool result) and played to its last frame, and only then is the AMI Redirect
requested or the call handed back. Keypad digits are collected (inter-digit gap, terminator)
and sent to the model as a user message; the first one cuts the agent off like speech.

Turn taking is the provider's, unless its turn detection is off (``local_turns``): then the
assistant's VAD decides, only the caller's speech (with a short pre-roll) is sent, barge-in
flushes and cancels locally, and the end of speech commits the turn.

A provider that fails before the call could start hands the still-silent call to the
assistant's ``fallback_assistant`` (the server runs it on the same AudioSocket), or ends it at
once with ``FAILED`` (the dialplan's fallback takes the caller). One that fails mid-call gets
the caller an apology, then the fallback destination, or the hand-back with ``FAILED``.

Relay overhead is measured here: for each chunk, provider message in (``t_in``, before any
decoding) to the chunk queued in the playout, and, when the playout was idle, to its first frame
sent. Both are summarised in the call record's ``provider.relay``.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio

from ..config.schema import VadConfig
from ..constants import FRAME_BYTES, FRAME_MS
from ..dsp.vad import SpeechEnded, SpeechStarted, TurnDetector, VoiceDetector
from ..providers.base import ProviderError, SpeechToSpeech
from ..tools.spec import HANGUP, TRANSFER, ToolReply
from .base import MediaSession, leaf_exception
from .digits import DigitGroup
from .playout import PlayoutFull, Segment
from .records import ToolAction, TurnRecord

log = logging.getLogger("agi_voice.relay")

MAX_TIMING_SAMPLES = 5000
"""Relay timing samples kept per call (enough for a 100 s reply in 20 ms chunks)."""
ANNOUNCE_TIMEOUT = 6.0
"""How long a leaving call waits for the model to start and finish its farewell or transfer
announcement when none was spoken before the tool call."""
MORE_SPEECH_TIMEOUT = 2.5
"""How long it waits for a provider that speaks after every tool result (Deepgram) when an
announcement was already spoken."""
DRAIN_TIMEOUT = 15.0
"""Most time a leaving call waits for audio still arriving from the provider."""
PRE_ROLL_FRAMES = 15
"""Local turn taking: caller audio sent from before the detected speech start (300 ms)."""


@dataclass(eq=False)
class _Item:
    id: str
    turn: TurnRecord
    seq: int
    rest: bytearray = field(default_factory=bytearray)
    segments: list[Segment] = field(default_factory=list)
    cut: bool = False
    done: bool = False

    @property
    def frames_played(self) -> int:
        return sum(s.frames_sent for s in self.segments)


class RelaySession(MediaSession):
    def __init__(self, *, provider: SpeechToSpeech, start_timeout: float | None = None,
                 vad_factory: Callable[[VadConfig], VoiceDetector] = VoiceDetector,
                 **kw: Any) -> None:
        """``kw``: :class:`MediaSession`'s arguments."""
        super().__init__(**kw)
        assistant = self.assistant
        self.provider = provider
        self.start_timeout = assistant.start_timeout if start_timeout is None else start_timeout
        self.ready = False
        self._leaving = ""
        """transfer or hangup once the model decided the call ends (no more barge-in)."""
        self._changed = trio.Event()
        self._item_seq = 0
        self._spoke_since_caller = False
        self._pending_trigger = ""
        self._pending_caller_text = ""
        self._digits = DigitGroup(self.assistant.dtmf_input, self._send_digits)
        self._vad: VoiceDetector | None = None
        self._turns: TurnDetector | None = None
        self._pre_roll: deque[bytes] = deque(maxlen=PRE_ROLL_FRAMES)
        self._cut_this_utterance = False
        if provider.local_turns:
            self._vad = vad_factory(assistant.vad)
            self._turns = TurnDetector(assistant.vad)
        self._items: dict[str, _Item] = {}
        self._first_sent_at: float | None = None
        """trio time the first caller frame went to the provider (its input-audio clock's 0)."""
        self._speech_end: float | None = None
        self._caller_texts: list[str] = []
        self._audio_dropped = 0
        self._proc_ms: list[float] = []
        self._idle_waits: list[tuple[Segment, float]] = []
        self._usage: dict[str, int] = {}
        self._leave_scope: trio.CancelScope | None = None
        """The pending transfer or hang-up, until it is carried out (the provider may still
        withdraw the function call that started it)."""
        self._muted = False
        """The call was handed off (the drain): the provider's audio is dropped from now on."""
        self.record.provider = {"name": provider.name}
        self._answer_due: float | None = None
        """While the provider owes the caller an answer: when its silence becomes a failure."""
        self._answer_changed = trio.Event()
        self._tools_running = 0

    def _start(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self._run_provider)
        nursery.start_soon(self._watchdog)
        if self.assistant.answer_timeout > 0:
            nursery.start_soon(self._answer_watch)

    # -- provider lifecycle --------------------------------------------------------------------

    async def _run_provider(self) -> None:
        error: ProviderError | None = None
        try:
            async with trio.open_nursery() as nursery:
                with trio.fail_after(self.start_timeout):
                    await nursery.start(self._provider_task)
                self.ready = True
        except* ProviderError as eg:
            error = leaf_exception(eg)  # type: ignore[assignment]
        except* trio.TooSlowError:
            error = ProviderError(f"no answer within {self.start_timeout:.0f} s", retryable=True)
        except* (OSError, RuntimeError) as eg:
            exc = leaf_exception(eg)
            error = ProviderError(f"{type(exc).__name__}: {exc}", retryable=True)
        if error is None:
            error = ProviderError("the provider session ended", retryable=True)
        self.record.provider["error"] = str(error)
        self.record.provider["retryable"] = error.retryable
        if not self.ready:
            log.warning("call %s: provider %s unavailable: %s", self.uuid, self.provider.name,
                        error)
            self._committed = True
            self._set_outcome("FAILED", reason=f"provider {self.provider.name} unavailable: {error}")
            if self.assistant.fallback_assistant and not self._closed.is_set():
                # Nothing was played yet: the fallback assistant takes the same AudioSocket.
                self.fallback_requested = self.keep_stream = True
                self._end()
                return
            await self._hand_back()
            return
        self.ready = False
        if self._leaving or self._committed:
            return  # the call is already ending; the leave task finishes it with what it has
        await self._fail_over(f"provider {self.provider.name} failed mid-call: {error}")

    async def _provider_task(self, *, task_status: trio.TaskStatus[None]) -> None:
        await self.provider.run(self, task_status=task_status)

    # -- inbound -------------------------------------------------------------------------------

    def _on_frame(self, frame: bytes, t: float) -> None:
        if not self.ready or self._committed:
            return  # the provider is not there yet (or any more): the caller hears silence
        if self._turns is not None:
            self._local_turn(frame, t)
            return
        if self._first_sent_at is None:
            # The frame's audio started 20 ms before it arrived.
            self._first_sent_at = t - FRAME_MS / 1000
        self.provider.send_caller_audio(frame)

    def _local_turn(self, frame: bytes, t: float) -> None:
        """Turn taking by our VAD: send only the caller's speech, cut the agent off, commit."""
        assert self._vad is not None and self._turns is not None
        speech = self._vad.is_speech(frame)
        was_speaking = self._turns.in_speech
        events = self._turns.push(speech, frame, t)
        for e in events:
            if isinstance(e, SpeechStarted):
                self._cut_this_utterance = False
                for f in self._pre_roll:
                    self.provider.send_caller_audio(f)
                self._pre_roll.clear()
            elif isinstance(e, SpeechEnded):
                self.provider.send_caller_audio(frame)
                self._speech_end = e.t_end
                if not self._leaving:
                    self._spoke_since_caller = False
                    self.provider.commit_turn()
                    self._owe_answer()
        if self._turns.in_speech:
            if was_speaking:
                self.provider.send_caller_audio(frame)
            if (speech and not self._cut_this_utterance
                    and self._turns.speech_ms >= self.assistant.barge_in.min_speech_ms):
                self._cut_this_utterance = True
                self.provider.interrupt(self.caller_speech_started())
        elif not any(isinstance(e, SpeechEnded) for e in events):
            self._pre_roll.append(frame)

    def _on_digit(self, digit: str, t: float) -> None:
        cfg = self.assistant.dtmf_input
        if not cfg.to_model or not self.ready or self._committed or self._leaving:
            return
        if not self._digits.digits:  # a keypress cuts the agent off like speech
            self.provider.interrupt(self.caller_speech_started())
        self._digits.add(digit, t, self._nursery)

    def _send_digits(self, digits: list[str]) -> None:
        if self._leaving or self._committed:
            return
        keys = " ".join(digits)
        self._pending_trigger = "dtmf"
        self._pending_caller_text = f"[keypad {keys}]"
        self._spoke_since_caller = False
        self.provider.send_user_text(f"(The caller pressed these keypad keys: {keys})")
        self._owe_answer()

    # -- RelayPort: what the provider tells the call ---------------------------------------------

    def _item(self, item_id: str) -> _Item:
        item = self._items.get(item_id)
        if item is None:
            trigger = self._pending_trigger or (
                "speech" if self._speech_end is not None else (
                    "start" if not self.record.turns else "provider"))
            rec = TurnRecord(index=self.record.next_turn_index, trigger=trigger,
                             speech_end=self._rel(self._speech_end))
            if self._caller_texts and trigger == "speech":
                rec.caller_text = " ".join(self._caller_texts)
                self._caller_texts.clear()
            elif trigger == "dtmf":
                rec.caller_text = self._pending_caller_text
            self._speech_end = None
            self._pending_trigger = self._pending_caller_text = ""
            self.record.add_turn(rec)
            self._item_seq += 1
            item = self._items[item_id] = _Item(item_id, rec, self._item_seq)
        return item

    def agent_audio(self, pcm: bytes, item_id: str, t_in: float) -> None:
        if self._answer_due is not None:  # it is answering: its silence counts from here
            self._owe_answer()
        if self._muted:
            self._audio_dropped += len(pcm)
            return
        if self._committed and not self.playout.speaking:
            return
        item = self._item(item_id)
        if item.cut:
            self._audio_dropped += len(pcm)
            return
        self._spoke_since_caller = True
        item.rest += pcm
        n = len(item.rest) - len(item.rest) % FRAME_BYTES
        if n:
            self._enqueue(item, bytes(item.rest[:n]), t_in)
            del item.rest[:n]

    def agent_audio_done(self, item_id: str) -> None:
        item = self._items.get(item_id)
        if item is None or item.done:
            return
        if self._muted:
            item.cut = True
        item.done = True
        self._notify()
        if item.cut or not item.rest:
            return
        pcm = bytes(item.rest) + bytes(FRAME_BYTES - len(item.rest))
        item.rest.clear()
        self._enqueue(item, pcm, trio.current_time())

    def _enqueue(self, item: _Item, pcm: bytes, t_in: float) -> None:
        was_idle = not self.playout.speaking
        try:
            seg = self.playout.enqueue(pcm, interruptible=not (self._committed or self._leaving))
        except PlayoutFull:
            self._audio_dropped += len(pcm)
            log.warning("call %s: playout buffer full, agent audio dropped", self.uuid)
            return
        if len(self._proc_ms) < MAX_TIMING_SAMPLES:
            self._proc_ms.append((trio.current_time() - t_in) * 1000)
        if was_idle and len(self._idle_waits) < MAX_TIMING_SAMPLES:
            self._idle_waits.append((seg, t_in))
        item.segments.append(seg)
        if item.turn.first_audio_ready is None:
            item.turn.first_audio_ready = self._rel(t_in)
            self._notify()

    def caller_speech_started(self) -> tuple[str, int] | None:
        self.caller_speaking = True
        self._answer_owed(False)  # owed again when the caller stops
        cfg = self.assistant.barge_in
        if not cfg.enabled or self._committed or self._leaving:
            return None
        self._spoke_since_caller = False
        now = trio.current_time()
        playing = [i for i in self._items.values() if not i.cut and i.frames_played]
        # The agent is talking while its audio plays, and also between two chunks of an answer
        # still streaming in (the playout can run dry for a frame when audio arrives in real time).
        talking = self.playout.speaking or any(not i.done for i in playing)
        if talking:
            if not self.playout.interruptible:
                return None
            first = next((s.started_at for i in self._items.values() if i.turn.trigger == "start"
                          for s in i.segments if s.started_at is not None), None)
            current = playing[-1] if playing else None
            if (current is not None and current.turn.trigger == "start" and first is not None
                    and now - first < cfg.greeting_protection_ms / 1000):
                return None
        for item in self._items.values():
            item.cut = True  # audio of these items still in flight is dropped on arrival
            item.rest.clear()
        self._notify()
        if not talking:
            return None
        dropped = self.playout.flush()
        self.record.barge_ins += 1
        self.record.barge_in_at.append(self._rel(now) or 0.0)
        if not playing:
            return None
        item = playing[-1]
        item.turn.interrupted = True
        log.info("call %s barge-in at %.3f s, %d frames flushed", self.uuid, now - self._t0,
                 dropped)
        return item.id, item.frames_played * FRAME_MS

    def caller_speech_stopped(self, audio_end_ms: int) -> None:
        self.caller_speaking = False
        if self._first_sent_at is not None:
            self._speech_end = self._first_sent_at + audio_end_ms / 1000
        self._owe_answer()

    def transcript(self, role: str, text: str) -> None:
        text = text.strip()
        if not text:
            return
        if role == "agent":
            turn = self.record.turns[-1] if self.record.turns else None
            if turn is not None:
                turn.agent_text = f"{turn.agent_text} {text}".strip()
            return
        for turn in reversed(self.record.turns):
            if turn.trigger == "speech" and not turn.caller_text:
                turn.caller_text = text
                return
        self._caller_texts.append(text)

    def response_done(self, status: str, usage: dict[str, object] | None) -> None:
        self._answer_owed(False)
        for key, value in (usage or {}).items():
            if isinstance(value, int) and not isinstance(value, bool):
                self._usage[key] = self._usage.get(key, 0) + value

    def provider_note(self, key: str, value: object) -> None:
        if key not in ("name", "usage", "error", "retryable", "relay", "audio_dropped_bytes"):
            self.record.provider[key] = value

    # -- leaving: transfer and hang-up by the model -------------------------------------------

    async def _tool_transfer(self, destination: str, reason: str) -> ToolReply:
        if self._leaving:
            return ToolReply(ToolReply.error("the call is already ending").output, False)
        if self.assistant.destination(destination) is None:  # the schema's enum said so too
            allowed = [k for k, _ in self.assistant.destinations]
            self.record.actions.append(ToolAction(self._rel(trio.current_time()) or 0.0,
                                                  "transfer", destination,
                                                  result="refused: destination not allowed"))
            return ToolReply.error(f"transfer to {destination!r} is not allowed; "
                                   f"the allowed destinations are {allowed}")
        announced = self._begin_leaving("transfer")

        async def act() -> None:
            self._committed = True
            await self._transfer(destination, reason or "transfer requested by the assistant")

        self._nursery.start_soon(self._leave, announced, act)
        return ToolReply(json.dumps({"ok": True, "status": "transferring",
                                     "destination": destination}), respond=not announced)

    async def _tool_hangup(self, reason: str) -> ToolReply:
        if self._leaving:
            return ToolReply(ToolReply.error("the call is already ending").output, False)
        announced = self._begin_leaving("hangup")

        async def act() -> None:
            self._committed = True
            t = self._rel(trio.current_time()) or 0.0
            self.record.actions.append(ToolAction(t, "hangup", reason=reason, result="ok"))
            self._set_outcome("COMPLETED", reason=reason or "the assistant ended the call")
            await self._hand_back()

        self._nursery.start_soon(self._leave, announced, act)
        note = ("The call ends when your goodbye has been heard." if announced else
                "Say a short goodbye now; the call ends when it has been heard.")
        return ToolReply(json.dumps({"ok": True, "status": "ending", "note": note}),
                         respond=not announced)

    def _stop_agent(self) -> None:
        """The call is handed off: the response in progress stops, the provider is told the
        call is ending, and its audio still in flight is dropped."""
        self._muted = True
        for item in self._items.values():
            item.cut = True
        self._digits.clear()
        if self.ready:
            self.provider.interrupt(None)
            self.provider.closing()
        self._notify()

    def _begin_leaving(self, kind: str) -> bool:
        """Stop barge-in and tell the provider; returns whether the model already spoke since
        the caller last did (its announcement or farewell)."""
        self._leaving = kind
        self._digits.clear()
        self.playout.protect()
        self.provider.closing()
        return self._spoke_since_caller

    async def _leave(self, announced: bool, act: Callable[[], Awaitable[None]]) -> None:
        mark = self._item_seq
        with trio.CancelScope() as scope:  # cancelled by tool_cancelled
            self._leave_scope = scope
            if not announced or self.provider.speaks_after_tool:
                # The announcement or farewell comes after the tool result: wait for it to
                # arrive completely (a provider that says nothing only costs the timeout).
                await self._wait_until(
                    lambda: any(i.seq > mark and (i.done or i.cut) for i in self._items.values()),
                    ANNOUNCE_TIMEOUT if not announced else MORE_SPEECH_TIMEOUT)
            await self._wait_until(
                lambda: all(i.done or i.cut or not (i.segments or i.rest)
                            for i in self._items.values()), DRAIN_TIMEOUT)
            self.playout.protect()
            await self.playout.wait_idle()
        self._leave_scope = None
        if not scope.cancel_called:
            await act()

    def tool_cancelled(self, name: str) -> bool:
        kind = {TRANSFER: "transfer", HANGUP: "hangup"}.get(name)
        if kind is None or self._leaving != kind or self._committed or self._leave_scope is None:
            return False
        self._leave_scope.cancel()
        self._leave_scope = None
        self._leaving = ""
        self.record.actions.append(ToolAction(self._rel(trio.current_time()) or 0.0, kind,
                                              result="cancelled by the provider"))
        log.info("call %s: the provider withdrew its %s", self.uuid, kind)
        return True

    def provider_latency(self, item_id: str, figures: Mapping[str, float]) -> None:
        item = self._items.get(item_id)
        turn = item.turn if item is not None else (
            self.record.turns[-1] if self.record.turns else None)
        if turn is not None:
            turn.provider_latency_ms.update(
                {k: round(v * 1000, 1) for k, v in figures.items()})

    async def _wait_until(self, ready: Callable[[], bool], within: float) -> bool:
        with trio.move_on_after(within):
            while not ready():
                await self._changed.wait()
            return True
        return False

    def _notify(self) -> None:
        """Wake whoever waits for the items to change (a new item, one done or cut)."""
        self._changed.set()
        self._changed = trio.Event()

    # -- limits and record -----------------------------------------------------------------------

    async def call_tool(self, name: str, arguments: str | dict[str, Any] | None) -> ToolReply:
        self._tools_running += 1
        try:
            reply = await super().call_tool(name, arguments)
        finally:
            self._tools_running -= 1
        if reply.respond:  # the model is asked to go on speaking
            self._owe_answer()
        return reply

    def _owe_answer(self) -> None:
        """The provider owes the caller an answer from now (re-arms the deadline)."""
        self._answer_owed(True)

    def _answer_owed(self, owed: bool) -> None:
        due = trio.current_time() + self.assistant.answer_timeout if owed else None
        if due is None and self._answer_due is None:
            return
        self._answer_due = due
        self._answer_changed.set()
        self._answer_changed = trio.Event()

    async def _answer_watch(self) -> None:
        """Dead air from the provider (issue 14): it owes an answer (the caller spoke or keyed
        digits, a tool answered, or its answer is under way) and has sent nothing for
        ``answer_timeout`` while nothing plays: a provider that hangs with its connection open,
        or sends only what cannot be used (malformed events are skipped one by one, so a
        provider that sends nothing else would otherwise keep the caller waiting for good)."""
        while True:
            due, changed = self._answer_due, self._answer_changed
            if due is None:
                await changed.wait()
                continue
            if self.playout.speaking:
                # the caller still hears the answer so far: the silence starts when it ends
                async with trio.open_nursery() as race:
                    for wait in (changed.wait, self.playout.wait_idle):
                        race.start_soon(_first, wait, race.cancel_scope)
                if self._answer_due is not None and not self.playout.speaking:
                    self._answer_due = trio.current_time() + self.assistant.answer_timeout
                continue
            with trio.move_on_at(due):
                await changed.wait()
                continue
            if self._leaving or self._committed:  # the leave has its own bound
                self._answer_due = None
                continue
            if self._tools_running:  # a tool is at work (it has its own timeout)
                self._answer_due = trio.current_time() + self.assistant.answer_timeout
                continue
            timeout = self.assistant.answer_timeout
            error = f"no answer within {timeout:.0f} s (the provider went silent)"
            self.record.provider["error"] = error
            self.record.provider["retryable"] = True
            await self._fail_over(f"provider {self.provider.name} failed mid-call: {error}")
            return

    async def _watchdog(self) -> None:
        await trio.sleep(self.assistant.max_call_seconds)
        if not self._committed:
            self._committed = True
            self._set_outcome("COMPLETED", reason="maximum call duration reached")
            await self._hand_back()

    def release(self) -> None:
        super().release()
        # a provider (and the OpenAI Live utterance tracker) holds this call as its port
        for holder in (self.provider, getattr(self.provider, "_turns", None)):
            for attr in ("_port", "port"):
                if holder is not None and getattr(holder, attr, None) is self:
                    setattr(holder, attr, None)

    def _finish_record(self) -> None:
        super()._finish_record()
        for item in self._items.values():
            rec = item.turn
            sent = [s for s in item.segments if s.started_at is not None]
            if sent and rec.first_frame_sent is None:
                rec.first_frame_sent = self._rel(sent[0].started_at)
            if item.cut and sent:
                words = rec.agent_text.split()
                total = sum(s.total_frames for s in item.segments) or 1
                rec.heard_text = " ".join(words[:len(words) * item.frames_played // total])
            elif sent:
                rec.heard_text = rec.agent_text
            if rec.first_frame_sent is not None and rec.speech_end is not None:
                rec.latency_ms = round((rec.first_frame_sent - rec.speech_end) * 1000, 1)
                if rec.first_audio_ready is not None:
                    rec.stage_ms["provider_first_audio"] = round(
                        (rec.first_audio_ready - rec.speech_end) * 1000, 1)
        waits = [(s.started_at - t) * 1000 for s, t in self._idle_waits if s.started_at is not None]
        p = self.record.provider
        p["usage"] = self._usage
        p["audio_dropped_bytes"] = self._audio_dropped
        p["relay"] = {"chunks": len(self._proc_ms), **_stats("queue_ms", self._proc_ms),
                      "first_frame_n": len(waits), **_stats("first_frame_ms", waits)}


async def _first(wait: Callable[[], Awaitable[Any]], scope: trio.CancelScope) -> None:
    """Run ``wait``, then cancel ``scope``: the first of several waits ends them all."""
    await wait()
    scope.cancel()


def _stats(name: str, values: list[float]) -> dict[str, Any]:
    if not values:
        return {}
    a = np.asarray(values)
    return {f"{name}_p50": round(float(np.percentile(a, 50)), 3),
            f"{name}_p99": round(float(np.percentile(a, 99)), 3),
            f"{name}_max": round(float(a.max()), 3)}
