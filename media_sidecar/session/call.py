"""One pipeline call: speech-to-text -> brain -> text-to-speech, overlapped, with barge-in.

Every task of the call lives in one nursery; if any of them fails the call ends with
``FAILED`` and no other call notices. Each agent turn runs in its own cancel scope with two
tasks: the brain's answer (an LLM stream, or the rule brain) releases sentences into a small
channel, and the speaking task streams each sentence's TTS audio into the playout as it
arrives. So the first sentence is heard while the model is still writing the second. Barge-in
cancels the scope: the LLM request is closed, the TTS stream is cleared, the playout is
flushed within the same frame, and the brain is told what the caller actually heard.

Once the brain commits to an action (transfer, hang up) the turn is no longer interruptible:
the farewell or "transferring you" plays to its last frame before the action. A stage that
fails before the call started hands it to the assistant's ``fallback_assistant``; mid-call it
gets the apology and the fallback destination (:meth:`MediaSession._fail_over`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from ..brain.base import Brain, Start
from ..config.schema import AssistantConfig, VadConfig
from ..constants import FRAME_SECONDS
from ..dsp.vad import SpeechEnded, SpeechStarted, TurnDetector, VoiceDetector
from ..pipeline import Stages, make_stages, stage_names
from ..pipeline.base import Net, ProviderError, SttEvent, SttFinal
from ..protocol.control import CallContext
from ..speech.base import SpeechToText
from ..speech.local import LocalSpeech
from ..tools.spec import ToolReply
from .base import ControlPort, leaf_exception
from .records import ToolAction
from .speaker import Speaker
from .turns import PipelineTurns

log = logging.getLogger("agi_voice.call")
__all__ = ["CallServices", "CallSession", "ControlPort"]


@dataclass
class CallServices:
    """Per-process engines and access a pipeline call uses (loaded once, shared; all blocking
    work off-loop)."""

    speaker_factory: Callable[[AssistantConfig], Speaker]
    """The local TTS engine (``.tts``) an assistant with ``tts: piper`` speaks with."""
    brain_factory: Callable[[AssistantConfig, CallContext], Brain]
    """The rule brain."""
    stt: SpeechToText | None
    """The local STT engine (None when no assistant needs one)."""
    vad_factory: Callable[[VadConfig], VoiceDetector] = VoiceDetector
    offload: Callable[..., Awaitable[Any]] = field(default=trio.to_thread.run_sync)
    """How blocking engine calls leave the event loop: worker threads in production; tests in
    virtual time pass an inline runner so the autojump clock never races a real thread."""
    net: Net = field(default_factory=Net)
    """How cloud stages reach their services (tests: in-memory transports to mocks)."""
    env: Mapping[str, str] | None = None
    """Where API keys are read (None: the process environment)."""
    speech: LocalSpeech | None = None
    """The local voices and STT engines with their inference pool and sentence cache, as
    :func:`~media_sidecar.app.load_local_services` loaded them (None: engines given directly)."""
    fillers: Mapping[str, bytes] = field(default_factory=dict)
    """Per assistant: its ``filler`` phrase, slin 8 kHz, rendered at load (an assistant
    without one here has no filler)."""


class CallSession(PipelineTurns):
    """A call served by a pipeline assistant (``provider: pipeline`` or ``local``)."""

    def __init__(self, *, services: CallServices, **kw: Any) -> None:
        """``kw``: :class:`MediaSession`'s arguments."""
        if services.env is not None and "env" not in kw:
            kw["env"] = services.env
        super().__init__(**kw)
        self.services = services
        self.vad = services.vad_factory(self.assistant.vad)
        self.turns = TurnDetector(self.assistant.vad)
        self.stages: Stages | None = None
        self.ready = False
        self._stt_t0: float | None = None
        """trio time the audio streamed to the STT service began (its clock's zero)."""
        self._last_speech_end: float | None = None
        self._init_turns(services.fillers.get(self.assistant.name, b""))

    @property
    def provider_name(self) -> str:
        return f"pipeline {stage_names(self.assistant)}"

    @property
    def brain(self) -> Brain:
        assert self.stages is not None
        return self.stages.brain

    # -- start-up ----------------------------------------------------------------------------

    def _start(self, nursery: trio.Nursery) -> None:
        self._quiet_since = self._t0
        nursery.start_soon(self._watchdog)
        nursery.start_soon(self._boot)

    async def _boot(self) -> None:
        s = self.services
        a = self.assistant
        try:
            local_tts = s.speaker_factory(a).tts if a.tts.engine == "piper" else None
            self.stages = make_stages(a, self.context, env=self.env, net=s.net,
                                      local_stt=s.stt, local_tts=local_tts,
                                      rules_brain=s.brain_factory, run_tool=self.call_tool,
                                      offload=s.offload)
        except ProviderError as exc:
            await self._start_failed(exc)
            return
        self.record.provider = {"name": "pipeline", "stages": stage_names(a)}
        self._make_voice(self.stages.synth)
        self._nursery.start_soon(self._run_synth)
        if self.stages.streaming_stt is not None:
            self._nursery.start_soon(self._run_stt)
        else:
            self._go()

    def _go(self) -> None:
        if self._committed:  # handed off (the drain) while its stages were starting
            return
        self.ready = True
        self._quiet_since = trio.current_time()
        self._start_turn(Start(), "start")

    async def _run_synth(self) -> None:
        assert self.stages is not None
        try:
            await self.stages.synth.start()
        except ProviderError as exc:  # sentences then fail one by one and the call fails over
            log.warning("call %s: TTS %s: %s", self.uuid, self.stages.synth.name, exc)

    async def _run_stt(self) -> None:
        stt = self.stages.streaming_stt if self.stages else None
        assert stt is not None
        error: BaseException | None = None
        started = False
        try:
            async with trio.open_nursery() as nursery:
                with trio.fail_after(self.assistant.start_timeout):
                    await nursery.start(self._stt_task)
                started = True
                self._go()
        except* ProviderError as eg:
            error = leaf_exception(eg)
        except* trio.TooSlowError:
            error = ProviderError(f"no answer within {self.assistant.start_timeout:g} s",
                                  retryable=True)
        except* (OSError, RuntimeError) as eg:
            error = ProviderError(f"{type(leaf_exception(eg)).__name__}: {leaf_exception(eg)}", retryable=True)
        err = error if isinstance(error, ProviderError) else ProviderError(
            f"{stt.name} STT stream ended", retryable=True)
        self.record.provider["stt_error"] = str(err)
        if not started:
            await self._start_failed(err)
        else:
            await self._stage_failed(f"STT {stt.name} failed mid-call: {err}")

    async def _stt_task(self, *, task_status: trio.TaskStatus[None]) -> None:
        assert self.stages is not None and self.stages.streaming_stt is not None
        await self.stages.streaming_stt.run(self._on_stt, task_status=task_status)

    async def _start_failed(self, error: ProviderError) -> None:
        """Nothing was said yet: the fallback assistant takes the call, or it is handed back."""
        log.warning("call %s: %s unavailable: %s", self.uuid, self.provider_name, error)
        self.record.provider["error"] = str(error)
        self._committed = True
        self._set_outcome("FAILED", reason=f"{self.provider_name} unavailable: {error}")
        if self.assistant.fallback_assistant and not self._closed.is_set():
            self.fallback_requested = self.keep_stream = True
            self._end()
            return
        await self._hand_back()

    async def _stage_failed(self, reason: str) -> None:
        if self._committed:
            return
        self.record.provider.setdefault("error", reason)
        if not self.playout.stats.audio_frames_sent and not self.playout.speaking:
            await self._start_failed(ProviderError(reason, retryable=True))
            return
        await self._fail_over(reason)

    # -- inbound -----------------------------------------------------------------------------

    def _on_frame(self, frame: bytes, t: float) -> None:
        if not self.ready:
            return
        stt = self.stages.streaming_stt if self.stages else None
        if stt is not None:
            if self._stt_t0 is None:
                self._stt_t0 = t - FRAME_SECONDS  # the frame's audio began 20 ms earlier
            stt.send_audio(frame)
        speech = self.vad.is_speech(frame)
        for e in self.turns.push(speech, frame, t):
            if isinstance(e, SpeechStarted):
                self._barged_this_utterance = False
                self._no_input_count = 0
            elif isinstance(e, SpeechEnded):
                self._quiet_since = t
                self._last_speech_end = e.t_end
                if stt is None:
                    self._caller_finished(None, e.audio, e.t_end)
        if self.turns.in_speech:
            self._quiet_since = t
            if speech:  # only a voiced frame can cut the agent off, never the hangover
                self._maybe_barge_in(t)

    def _on_stt(self, ev: SttEvent) -> None:
        if not isinstance(ev, SttFinal):
            return
        now = trio.current_time()
        end = self._last_speech_end or now
        if ev.end_audio_s is not None and self._stt_t0 is not None:
            end = min(now, self._stt_t0 + ev.end_audio_s)
        self._quiet_since = now
        self._caller_finished(ev.text, b"", end)

    # -- the brain's tools ---------------------------------------------------------------------

    async def _tool_transfer(self, destination: str, reason: str) -> ToolReply:
        if self.assistant.destination(destination) is None:
            self.record.actions.append(ToolAction(self._rel(trio.current_time()) or 0.0,
                                                  "transfer", destination,
                                                  result="refused: destination not allowed"))
            return ToolReply.error(f"{destination!r} is not a destination you may transfer to")
        return ToolReply(json.dumps({"ok": True, "status": "the caller is transferred once "
                                     "your sentence has been heard"}), respond=False)

    async def _tool_hangup(self, reason: str) -> ToolReply:
        return ToolReply(json.dumps({"ok": True, "status": "the call ends once your goodbye "
                                     "has been heard"}), respond=False)

    # -- record ------------------------------------------------------------------------------

    def _finish_record(self) -> None:
        super()._finish_record()
        self._finish_turn_records()
        if self.stages is not None:
            brain: Any = self.stages.brain
            llm = getattr(brain, "llm", brain)
            if hasattr(llm, "requests"):
                self.record.provider["llm_requests"] = llm.requests
                self.record.provider["usage"] = dict(llm.usage)
            synth: Any = self.stages.synth
            if getattr(synth, "rest_sentences", 0):
                self.record.provider["tts_rest_sentences"] = synth.rest_sentences

