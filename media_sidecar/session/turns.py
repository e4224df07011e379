"""Agent turns of a pipeline call: brain and TTS overlapped, barge-in, keypad, no-input.

:class:`PipelineTurns` is the turn-taking half of :class:`~.call.CallSession` (which adds the
stages' start-up and the inbound audio). A turn is two tasks in one cancel scope: the brain's
answer releases sentences into a channel; the speaking task streams each sentence's TTS audio
into the playout. Cancelling the scope closes the LLM stream and the TTS stream together.

No dead air while thinking: a third task of a caller's turn waits ``filler.after`` seconds from
the end of the caller's speech; if the brain has released nothing by then, the filler ("One
moment.", rendered once at load) is queued, at most once per turn. The answer's audio is
queued after it (the playout is first in, first out), so the two never overlap. The offline STT's transcript is re-scored against the assistant's
vocabulary before the brain sees it (:mod:`media_sidecar.brain.vocabulary`).
"""

from __future__ import annotations

import logging
from contextlib import aclosing
from dataclasses import dataclass, field

import trio

from ..brain.base import (
    Act,
    Brain,
    BrainInput,
    NoInputTimeout,
    Say,
    TurnInfo,
    UserDtmf,
    UserText,
)
from ..brain.vocabulary import AcousticChoice, AcousticRescorer, Rescorer
from ..constants import FRAME_SECONDS
from ..dsp.vad import TurnDetector
from ..pipeline import Stages
from ..pipeline.base import ProviderError, SpeechSynth, Transcriber
from .base import MediaSession, leaf_exception
from .digits import DigitGroup
from .playout import PlayoutFull, Segment
from .records import ToolAction, TurnRecord
from .voice import Utterance, Voice

log = logging.getLogger("agi_voice.call")

SENTENCE_QUEUE = 16
"""Sentences the brain may be ahead of the speaking task (the LLM is never held back more)."""


@dataclass(eq=False)
class Turn:
    rec: TurnRecord
    scope: trio.CancelScope
    utterances: list[Utterance] = field(default_factory=list)
    started: float = 0.0
    info: TurnInfo = field(default_factory=TurnInfo)
    speech_end: float | None = None
    """trio time the caller's speech ended (speech turns)."""
    answered: trio.Event = field(default_factory=trio.Event)
    """The brain released its first output (or finished without one)."""
    ended: bool = False
    """Its task is over (answered, cancelled or failed); its audio may still be playing."""

    @property
    def played_out(self) -> bool:
        """Over, and every segment of its audio played or flushed."""
        return (self.ended and (self.filler is None or self.filler.done.is_set())
                and all(s.done.is_set() for u in self.utterances for s in u.segments))
    filler: Segment | None = None


class PipelineTurns(MediaSession):
    turns: TurnDetector
    voice: Voice
    stages: Stages | None
    ready: bool
    """The stages are up (set by the session); before that, keys and speech are ignored."""

    @property
    def brain(self) -> Brain:
        raise NotImplementedError

    @property
    def transcriber(self) -> Transcriber | None:
        return self.stages.transcriber if self.stages is not None else None

    async def _stage_failed(self, reason: str) -> None:
        raise NotImplementedError

    def _init_turns(self, filler: bytes = b"") -> None:
        """``filler``: the assistant's filler phrase rendered at load (slin 8 kHz); empty:
        no filler."""
        self._filler_pcm = filler
        self._turn: Turn | None = None
        self._speaking: Turn | None = None
        """The turn whose audio is (or was last) in the playout."""
        self._all_turns: list[Turn] = []
        self._quiet_since = 0.0
        self._no_input_count = 0
        self._barged_this_utterance = False
        a = self.assistant
        self._digits = DigitGroup(a.dtmf_input, self._send_digits)
        self._groups_digits = a.uses_llm and a.dtmf_input.to_model
        self._rule_digits = {m.digit for m in a.brain.dtmf} if (
            not a.uses_llm or a.llm.rules_first) else set()
        self._rescorer = (Rescorer.for_assistant(a) if a.stt.engine == "moonshine"
                          and a.stt.rescore else None)
        self._acoustic = AcousticRescorer.for_assistant(a)

    def _stop_agent(self) -> None:
        """The call is handed off: the turn in progress (its LLM and TTS streams) ends."""
        if self._turn is not None:
            self._turn.scope.cancel()
        self._digits.clear()

    def _make_voice(self, synth: SpeechSynth) -> None:
        self.voice = Voice(synth, self.playout, protected=lambda: self._committed)

    # -- caller events -------------------------------------------------------------------------

    def _maybe_barge_in(self, t: float) -> None:
        cfg = self.assistant.barge_in
        if (not cfg.enabled or self._committed or self._barged_this_utterance
                or not self.playout.speaking or not self.playout.interruptible
                or self.turns.speech_ms < cfg.min_speech_ms):
            return
        turn = self._speaking
        if turn is not None and turn.rec.trigger == "start":
            first = turn.utterances[0].started_at if turn.utterances else None
            if first is None or t - first < cfg.greeting_protection_ms / 1000:
                return
        self._barged_this_utterance = True
        self._interrupt(t)

    def _interrupt(self, t: float) -> None:
        """Cut the agent off: flush the playout, tell the brain what was heard, cancel the
        turn (its LLM and TTS streams close with it)."""
        self.record.barge_ins += 1
        self.record.barge_in_at.append(self._rel(t) or 0.0)
        dropped = self.playout.flush()
        turn = self._speaking
        if turn is not None and not turn.rec.interrupted:
            turn.rec.interrupted = True
            self.brain.heard(self._heard(turn), complete=False)
        if self._turn is not None:
            self._turn.scope.cancel()
        log.info("call %s barge-in at %.3f s, %d frames flushed", self.uuid, t - self._t0,
                 dropped)

    def _caller_finished(self, text: str | None, audio: bytes, t_end: float) -> None:
        """The caller's turn ended: ``text`` from a streaming STT, else ``audio`` to
        transcribe."""
        if self._committed or (text is not None and not text.strip()):
            return
        if self.playout.speaking and not self._barged_this_utterance:
            return  # a backchannel or echo under the agent's speech: not a turn
        if self._turn is not None:
            self._turn.scope.cancel()  # the caller said more while the agent was thinking
        self._start_turn(None if text is None else UserText(text), "speech", audio=audio,
                         speech_end=t_end)
        if text is not None:
            assert self._turn is not None
            self._turn.rec.caller_text = text
            self._turn.rec.stt_done = self._rel(trio.current_time())

    def _on_digit(self, digit: str, t: float) -> None:
        if self._committed or not self.ready:
            return
        self._no_input_count = 0
        if self.playout.speaking or self._turn is not None:
            if self.playout.speaking and self.playout.interruptible:
                self._interrupt(t)
            elif self._turn is not None:
                self._turn.scope.cancel()
        if not self._groups_digits or (not self._digits.digits and digit in self._rule_digits):
            self._start_turn(UserDtmf(digit), "dtmf")
            return
        self._digits.add(digit, t, self._nursery)

    def _send_digits(self, digits: list[str]) -> None:
        if not self._committed:
            self._start_turn(UserDtmf("".join(digits)), "dtmf")

    # -- agent turns ---------------------------------------------------------------------------

    def _start_turn(self, event: BrainInput | None, trigger: str, *, audio: bytes = b"",
                    speech_end: float | None = None) -> None:
        self._fold_played_turns()
        rec = TurnRecord(index=self.record.next_turn_index, trigger=trigger,
                         speech_end=self._rel(speech_end))
        self.record.add_turn(rec)
        turn = Turn(rec=rec, scope=trio.CancelScope(), started=trio.current_time(),
                    speech_end=speech_end)
        self._turn = turn
        self._all_turns.append(turn)
        self._nursery.start_soon(self._run_turn, turn, event, audio)

    async def _run_turn(self, turn: Turn, event: BrainInput | None, audio: bytes) -> None:
        error: BaseException | None = None
        try:
            await self._turn_body(turn, event, audio)
        except* ProviderError as eg:
            error = leaf_exception(eg)
        finally:
            self._after_turn(turn)
        if error is not None:
            turn.rec.intent = turn.rec.intent or "(stage failed)"
            await self._stage_failed(str(error))

    async def _turn_body(self, turn: Turn, event: BrainInput | None, audio: bytes) -> None:
        with turn.scope:
            async with trio.open_nursery() as nursery:
                if (self._filler_pcm and self.assistant.filler.after > 0
                        and turn.rec.trigger in ("speech", "dtmf")):
                    nursery.start_soon(self._filler, turn)
                try:
                    await self._answer_turn(turn, event, audio)
                finally:
                    turn.answered.set()  # a filler not yet started is not needed any more

    async def _filler(self, turn: Turn) -> None:
        """Queue the filler once if the brain has released nothing ``filler.after`` seconds
        after the caller stopped speaking (or pressed the key). The answer's audio, queued
        later, plays after the filler's last frame. Ends at once when the brain answers first;
        cancelled with the turn (a barge-in also flushes the filler)."""
        cfg = self.assistant.filler
        base = turn.speech_end if turn.speech_end is not None else turn.started
        with trio.move_on_at(base + cfg.after):
            await turn.answered.wait()
        if turn.answered.is_set() or self._committed:
            return
        try:
            turn.filler = self.playout.enqueue(self._filler_pcm, text=cfg.text)
        except PlayoutFull:
            return
        self._speaking = turn
        log.info("call %s: answer slow, filler said %.3f s after the caller", self.uuid,
                 trio.current_time() - base)

    async def _answer_turn(self, turn: Turn, event: BrainInput | None, audio: bytes) -> None:
        rec = turn.rec
        choice: AcousticChoice | None = None
        if event is None:
            assert self.transcriber is not None
            text = heard = await self.transcriber.transcribe(audio)
            rec.caller_text = text
            rec.stt_done = self._rel(trio.current_time())
            if not text.strip():
                rec.intent = "(no words)"
                return
            if self._rescorer is not None:
                rescored = self._rescorer.rescore(text)
                if rescored.changes:
                    rec.rescored_text = text = rescored.text
            choice = await self._acoustic_choice(heard, text, audio)
            if choice is not None:
                rec.rescored_text = text = choice.text
            event = UserText(text)
        elif isinstance(event, UserDtmf):
            rec.caller_text = f"[DTMF {event.digit}]"
        try:
            act = await self._converse(turn, event)
        finally:
            if choice is not None and turn.info.match.get("how", "none") != "none":
                turn.info.match = choice.record(rec.caller_text)
        if act is not None:
            await self._act(act, rec)

    async def _acoustic_choice(self, heard: str, text: str, audio: bytes
                               ) -> AcousticChoice | None:
        """The assistant's own phrase the caller's audio supports better than (or nearly as
        well as) the free transcript ``heard``, when the brain would not understand ``text``
        (:class:`~media_sidecar.brain.vocabulary.AcousticRescorer`); None otherwise, or if
        scoring fails (logged: the transcript is used as it is)."""
        acoustic = self._acoustic
        score = getattr(self.transcriber, "score", None)
        if (acoustic is None or score is None or not getattr(self.transcriber, "can_score", False)
                or not audio or not acoustic.needed(heard, text)):
            return None
        candidates = acoustic.candidates(heard)
        if not candidates:
            return None
        try:
            scores = await score(audio, [heard, *(c.text for c in candidates)])
        except ProviderError as exc:
            log.warning("call %s: acoustic re-scoring failed: %s", self.uuid, exc)
            return None
        try:
            return acoustic.choose(candidates, list(scores))
        except ValueError as exc:  # an engine answering with the wrong number of scores
            log.warning("call %s: acoustic re-scoring failed: %s", self.uuid, exc)
            return None

    async def _converse(self, turn: Turn, event: BrainInput) -> Act | None:
        """The brain's sentences go to the speaking task as they come; returns its action."""
        act: Act | None = None
        info = turn.info
        send, recv = trio.open_memory_channel[Say](SENTENCE_QUEUE)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._speak, turn, recv)
            async with send, aclosing(self.brain.respond(event, info)) as outputs:
                async for out in outputs:
                    turn.answered.set()
                    turn.rec.intent = info.intent
                    if isinstance(out, Say):
                        await send.send(out)
                    elif isinstance(out, Act):
                        # Committed: barge-in, DTMF and new speech no longer cancel this turn;
                        # only the end of the call (hangup, redirect) does.
                        self._committed = True
                        self.playout.protect()
                        act = out
                        break
        turn.rec.intent = info.intent
        return act

    async def _speak(self, turn: Turn, recv: trio.MemoryReceiveChannel[Say]) -> None:
        rec = turn.rec
        async with recv:
            async for say in recv:
                utt = Utterance(say.text, interruptible=say.interruptible and not self._committed)
                turn.utterances.append(utt)
                rec.agent_text = f"{rec.agent_text} {say.text}".strip()
                self._speaking = turn
                await self.voice.say(utt)

    @staticmethod
    def _heard(turn: Turn) -> str:
        return " ".join(u.heard_text for u in turn.utterances if u.heard_text).strip()

    def _after_turn(self, turn: Turn) -> None:
        turn.ended = True
        if self._turn is turn:
            self._turn = None
        if turn.rec.interrupted:
            return  # told at the barge-in
        if turn.scope.cancel_called:
            self.brain.heard(self._heard(turn), complete=False)
        else:
            self.brain.heard(" ".join(u.text for u in turn.utterances), complete=True)

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
                    or self._committed or bool(self._digits.digits)
                    or not self.ready)
            if busy:
                last = self.playout.last_audio_at
                self._quiet_since = max(self._quiet_since, (last or now) + FRAME_SECONDS)
                continue
            if no_input.after > 0 and now - self._quiet_since >= no_input.after:
                self._no_input_count += 1
                self._quiet_since = now
                self._start_turn(NoInputTimeout(self._no_input_count), "no-input")

    # -- record ------------------------------------------------------------------------------

    def _fold_played_turns(self) -> None:
        """Complete the record of every turn whose audio has all played out and let the turn
        go: its utterances hold their TTS audio (16 KB a second of agent speech), which a
        long call must not keep to its end. The turn being spoken is kept (a barge-in reads
        what of it was heard)."""
        keep: list[Turn] = []
        for turn in self._all_turns:
            if turn.played_out and turn is not self._turn and turn is not self._speaking:
                self._finish_turn_record(turn)
            else:
                keep.append(turn)
        self._all_turns = keep

    def _finish_turn_records(self) -> None:
        for turn in self._all_turns:
            self._finish_turn_record(turn)

    def _finish_turn_record(self, turn: Turn) -> None:
        """Complete a turn's record from its utterances and timings (once it is over)."""
        rec, info = turn.rec, turn.info
        spoken = [u for u in turn.utterances if u.started_at is not None]
        if spoken:
            rec.first_frame_sent = self._rel(spoken[0].started_at)
        rec.heard_text = " ".join(u.heard_text for u in spoken if u.heard_text).strip()
        arrived = [u.first_audio_at for u in turn.utterances if u.first_audio_at is not None]
        rec.first_audio_ready = self._rel(arrived[0]) if arrived else None
        rec.llm_first_token = self._rel(info.first_token)
        rec.first_sentence = self._rel(info.first_sentence)
        rec.llm_done = self._rel(info.llm_done)
        rec.match = dict(info.match)
        if turn.filler is not None:
            rec.filler_at = self._rel(turn.filler.started_at)
        base = rec.speech_end if rec.speech_end is not None else self._rel(turn.started)
        if rec.first_frame_sent is not None and rec.speech_end is not None:
            rec.latency_ms = round((rec.first_frame_sent - rec.speech_end) * 1000, 1)
        if base is None:
            return
        stages: tuple[tuple[str, float | None], ...] = (
            ("stt", rec.stt_done), ("llm_first_token", rec.llm_first_token),
            ("first_sentence", rec.first_sentence), ("tts_first_audio", rec.first_audio_ready),
            ("first_frame", rec.first_frame_sent), ("llm_done", rec.llm_done))
        for name, t in stages:
            if t is not None:
                rec.stage_ms[name] = round((t - base) * 1000, 1)
