"""One call's media session: reader, turn taking and barge-in, agent turns, paced playout.

Every task of the call lives in one nursery; if any of them fails the call ends with
``FAILED`` and no other call notices. An agent turn (STT -> brain -> TTS -> playout) runs in its
own cancel scope: barge-in cancels the scope and flushes the playout within the same frame.
Once the brain commits to an action (transfer, hang up) the turn is no longer interruptible:
the farewell or the "transferring you" sentence plays to its last frame before the action.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio

from ..brain.base import (
    Act,
    Brain,
    BrainInput,
    BrainOutput,
    NoInputTimeout,
    Say,
    Start,
    TurnInfo,
    UserDtmf,
    UserText,
)
from ..config.schema import AssistantConfig, VadConfig
from ..constants import FRAME_SECONDS
from ..dsp.vad import SpeechEnded, SpeechStarted, TurnDetector, VoiceDetector
from ..protocol.control import CallContext
from ..speech.base import SpeechToText
from .base import ControlPort, MediaSession
from .inbound import CallerAudio
from .playout import Segment
from .records import ToolAction, TurnRecord
from .speaker import Speaker

log = logging.getLogger("agi_voice.call")
__all__ = ["CallServices", "CallSession", "ControlPort"]


@dataclass
class CallServices:
    """Per-process engines a call uses (loaded once, shared; all blocking work off-loop)."""

    speaker_factory: Callable[[AssistantConfig], Speaker]
    brain_factory: Callable[[AssistantConfig, CallContext], Brain]
    stt: SpeechToText
    vad_factory: Callable[[VadConfig], VoiceDetector] = VoiceDetector
    offload: Callable[..., Awaitable[Any]] = field(default=trio.to_thread.run_sync)
    """How blocking engine calls leave the event loop: worker threads in production; tests in
    virtual time pass an inline runner so the autojump clock never races a real thread."""


@dataclass
class _Turn:
    rec: TurnRecord
    scope: trio.CancelScope
    segments: list[Segment] = field(default_factory=list)


class CallSession(MediaSession):
    """A call served by the local assistant: offline STT -> brain -> TTS."""

    def __init__(self, *, services: CallServices, **kw: Any) -> None:
        """``kw``: :class:`MediaSession`'s arguments."""
        super().__init__(**kw)
        assistant, context = self.assistant, self.context
        self.services = services
        self.brain = services.brain_factory(assistant, context)
        self.speaker = services.speaker_factory(assistant)
        self.speaker.offload = services.offload
        self.vad = services.vad_factory(assistant.vad)
        self.turns = TurnDetector(assistant.vad)
        self._turn: _Turn | None = None
        self._quiet_since = 0.0
        self._no_input_count = 0
        self._barged_this_utterance = False
        self._all_turns: list[_Turn] = []
        self._speaking: _Turn | None = None
        """The turn whose audio is (or was last) in the playout."""

    def _start(self, nursery: trio.Nursery) -> None:
        self._quiet_since = self._t0
        nursery.start_soon(self._listen)
        nursery.start_soon(self._watchdog)
        self._start_turn(Start(), "start")

    # -- inbound -----------------------------------------------------------------------------

    def _on_frame(self, frame: bytes, t: float) -> None:
        ev = CallerAudio(frame, t)
        speech = self.vad.is_speech(ev.pcm)
        for e in self.turns.push(speech, ev.pcm, ev.t):
            if isinstance(e, SpeechStarted):
                self._barged_this_utterance = False
                self._no_input_count = 0
            elif isinstance(e, SpeechEnded):
                self._quiet_since = ev.t
                self._caller_finished(e)
        if self.turns.in_speech:
            self._quiet_since = ev.t
            if speech:  # only a voiced frame can cut the agent off, never the hangover
                self._maybe_barge_in(ev.t)

    def _maybe_barge_in(self, t: float) -> None:
        cfg = self.assistant.barge_in
        if (not cfg.enabled or self._committed or self._barged_this_utterance
                or not self.playout.speaking or not self.playout.interruptible
                or self.turns.speech_ms < cfg.min_speech_ms):
            return
        turn = self._speaking
        if turn is not None and turn.rec.trigger == "start":
            first = turn.segments[0].started_at if turn.segments else None
            if first is None or t - first < cfg.greeting_protection_ms / 1000:
                return
        self._barged_this_utterance = True
        self.record.barge_ins += 1
        self.record.barge_in_at.append(self._rel(t) or 0.0)
        dropped = self.playout.flush()
        if turn is not None:
            turn.rec.interrupted = True
            self.brain.heard(self._heard(turn), complete=False)
        if self._turn is not None:
            self._turn.scope.cancel()
        log.info("call %s barge-in at %.3f s, %d frames flushed", self.uuid, t - self._t0, dropped)

    def _caller_finished(self, e: SpeechEnded) -> None:
        if self._committed:
            return
        if self.playout.speaking and not self._barged_this_utterance:
            return  # a backchannel or echo under the agent's speech: not a turn
        if self._turn is not None:
            self._turn.scope.cancel()  # the caller said more while the agent was thinking
        self._start_turn(None, "speech", audio=e.audio, speech_end=e.t_end)

    def _on_digit(self, digit: str, t: float) -> None:
        if self._committed:
            return
        self._no_input_count = 0
        if self._speaking is not None and self.playout.speaking:
            self._speaking.rec.interrupted = True
        if self._turn is not None:
            self._turn.scope.cancel()
        self.playout.flush()
        self._start_turn(UserDtmf(digit), "dtmf")

    # -- agent turns ---------------------------------------------------------------------------

    def _start_turn(self, event: BrainInput | None, trigger: str, *, audio: bytes = b"",
                    speech_end: float | None = None) -> None:
        rec = TurnRecord(index=len(self.record.turns), trigger=trigger,
                         speech_end=self._rel(speech_end))
        self.record.turns.append(rec)
        turn = _Turn(rec=rec, scope=trio.CancelScope())
        self._turn = turn
        self._nursery.start_soon(self._run_turn, turn, event, audio)

    async def _run_turn(self, turn: _Turn, event: BrainInput | None, audio: bytes) -> None:
        self._all_turns.append(turn)
        try:
            await self._turn_body(turn, event, audio)
        finally:
            self._after_turn(turn)

    async def _turn_body(self, turn: _Turn, event: BrainInput | None, audio: bytes) -> None:
        rec = turn.rec
        with turn.scope:
            if event is None:
                text = await self.services.offload(self._transcribe, audio,
                                                   abandon_on_cancel=True)
                rec.caller_text = text
                rec.stt_done = self._rel(trio.current_time())
                if not text.strip():
                    rec.intent = "(no words)"
                    return
                event = UserText(text)
            elif isinstance(event, UserDtmf):
                rec.caller_text = f"[DTMF {event.digit}]"
            info = TurnInfo()
            async with aclosing(self.brain.respond(event, info)) as outputs:
                await self._play_outputs(turn, outputs, info)

    async def _play_outputs(self, turn: _Turn, outputs: AsyncGenerator[BrainOutput, None],
                            info: TurnInfo) -> None:
        rec = turn.rec
        async for out in outputs:
            rec.intent = info.intent
            if isinstance(out, Say):
                if self._committed:
                    out = Say(out.text, interruptible=False)
                seg = await self.speaker.say(out, self.playout)
                if seg is not None:
                    self._speaking = turn
                    if rec.first_audio_ready is None:
                        rec.first_audio_ready = self._rel(trio.current_time())
                    turn.segments.append(seg)
                    rec.agent_text = f"{rec.agent_text} {out.text}".strip()
            elif isinstance(out, Act):
                # Committed: barge-in, DTMF and new speech no longer cancel this turn; only
                # the end of the call (hangup, redirect) does.
                self._committed = True
                await self._act(out, rec)
                return

    def _transcribe(self, audio: bytes) -> str:
        pcm = np.frombuffer(audio, dtype="<i2")
        return self.services.stt.transcribe(pcm, 8000).strip()

    @staticmethod
    def _heard(turn: _Turn) -> str:
        return " ".join(s.heard_text for s in turn.segments if s.frames_sent).strip()

    def _after_turn(self, turn: _Turn) -> None:
        if self._turn is turn:
            self._turn = None
        if not turn.rec.interrupted:
            self.brain.heard(" ".join(s.text for s in turn.segments), complete=True)

    async def _act(self, act: Act, rec: TurnRecord) -> None:
        await self.playout.wait_idle()  # the sentence before the action plays to its end
        if act.kind == "hangup":
            t = self._rel(trio.current_time()) or 0.0
            self.record.actions.append(ToolAction(t, "hangup", reason=act.reason, result="ok"))
            self._set_outcome("COMPLETED", reason=act.reason or "assistant ended the call")
            await self._hand_back()
            return
        if not await self._transfer(act.destination, act.reason):
            self._committed = False

    # -- no input and limits ---------------------------------------------------------------------

    async def _watchdog(self) -> None:
        no_input = self.assistant.brain.no_input
        while True:
            await trio.sleep(0.1)
            now = trio.current_time()
            if now - self._t0 > self.assistant.max_call_seconds and not self._committed:
                self._committed = True
                self._set_outcome("COMPLETED", reason="maximum call duration reached")
                await self._hand_back()
                return
            busy = (self._turn is not None or self.playout.speaking or self.turns.in_speech
                    or self._committed)
            if busy:
                last = self.playout.last_audio_at
                self._quiet_since = max(self._quiet_since, (last or now) + FRAME_SECONDS)
                continue
            if no_input.after > 0 and now - self._quiet_since >= no_input.after:
                self._no_input_count += 1
                self._quiet_since = now
                self._start_turn(NoInputTimeout(self._no_input_count), "no-input")

    # -- record ------------------------------------------------------------------------------

    def _finish_record(self) -> None:
        super()._finish_record()
        for turn in self._all_turns:
            rec = turn.rec
            sent = [s for s in turn.segments if s.started_at is not None]
            if sent:
                rec.first_frame_sent = self._rel(sent[0].started_at)
            rec.heard_text = " ".join(s.heard_text for s in sent).strip()
            if rec.first_frame_sent is not None and rec.speech_end is not None:
                rec.latency_ms = round((rec.first_frame_sent - rec.speech_end) * 1000, 1)
                for name, t in (("stt", rec.stt_done), ("first_audio_ready", rec.first_audio_ready)):
                    if t is not None:
                        rec.stage_ms[name] = round((t - rec.speech_end) * 1000, 1)
