"""What every call's media session shares, whoever produces the agent's audio.

One nursery per call: the paced playout writer, the AudioSocket reader, and the tasks a
concrete session adds (:meth:`MediaSession._start`). If any of them fails the call ends with
``FAILED`` and no other call notices. The verdict (:class:`Ended`) is set once; the hand-back
frame ``00 00 00`` is sent by the playout writer after the last queued frame; a transfer goes
through the control plane (AMI Redirect) only to a destination the assistant allows, and is
handed back to the dialplan when AMI cannot do it.

:class:`~media_sidecar.session.call.CallSession` (local STT -> brain -> TTS) and
:class:`~media_sidecar.session.relay.RelaySession` (speech-to-speech providers) build on it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import trio

from ..config.schema import AssistantConfig
from ..constants import FRAME_BYTES, FRAME_SECONDS, SAMPLE_RATE
from ..protocol.audiosocket import (
    AudioFormat,
    AudioMessage,
    AudioSocketDecoder,
    AudioSocketError,
    DtmfMessage,
    ErrorMessage,
    HangupMessage,
    Message,
    UuidMessage,
)
from ..protocol.control import CallContext, Dtmf, Ended, Hangup, TransferResult
from ..tools.spec import (
    HANGUP,
    TRANSFER,
    ToolCallError,
    ToolReply,
    build_specs,
    check_arguments,
    decode_arguments,
)
from ..tools.webhook import call_webhook
from .clock import READ_PHASE, FrameClock, Port, frame_clock
from .gaps import GapFiller
from .inbound import CallerAudio, PayloadConverter, StreamClosed
from .playout import LATENESS_BINS_MS, Playout, PlayoutFull
from .recording import RecordedPlayout, Recorder, Recordings
from .records import CallRecord, ToolAction, ended_at

log = logging.getLogger("agi_voice.call")

REDIRECT_CLOSE_TIMEOUT = 5.0
"""After an AMI Redirect Asterisk closes the AudioSocket; if it does not, hand back anyway."""
TRANSFER_ANSWER_TIMEOUT = 3.0
"""How long the control plane may take to answer a transfer request."""
DTMF_DEDUPE_SECONDS = 0.5
"""The same digit from AMI and from AudioSocket within this long is one keypress."""
MAX_RECORDED_RESULT = 500
"""Characters of a tool's result kept in the call record."""


def leaf_exception(exc: BaseException) -> BaseException:
    """The first real exception in a (nested) exception group (a nursery wraps what failed)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class ControlPort:
    """What a call may ask of the control plane. The default has no control plane."""

    async def request_transfer(self, uuid: str, key: str, context: str, exten: str,
                               priority: str) -> TransferResult:
        return TransferResult(uuid=uuid, ok=False, method="dialplan", detail="no AMI")


class MediaSession:
    def __init__(self, *, uuid: str, assistant: AssistantConfig, context: CallContext,
                 fmt: AudioFormat, control: ControlPort | None = None,
                 decoder: AudioSocketDecoder | None = None,
                 playout_seconds: float = 60.0, lead_frames: int = 0, apology: bytes = b"",
                 env: Mapping[str, str] | None = None,
                 on_verdict: Callable[[Ended], Awaitable[object]] | None = None,
                 clock: FrameClock | None = None,
                 recordings: Recordings | None = None) -> None:
        self.uuid = uuid
        self.assistant = assistant
        self.context = context
        self.fmt = fmt
        self.control = control or ControlPort()
        self.decoder = decoder or AudioSocketDecoder()
        self.clock = clock
        """The frame clock this call's frames go by (None: this trio run's, :func:`frame_clock`)."""
        self._convert = PayloadConverter(fmt)
        self._pending: Sequence[Message] = ()
        self._leg_open = False
        self._on_clock = False
        self.playout_seconds = playout_seconds
        self.lead_frames = lead_frames
        self.record = CallRecord(uuid=uuid, assistant=assistant.name, engine=assistant.provider,
                                 caller=context.callerid,
                                 caller_name=context.calleridname, dnid=context.dnid,
                                 channel=context.channel, uniqueid=context.uniqueid)
        self.outcome: Ended | None = None
        self.caller_speaking = False
        """The provider's own turn detection hears the caller now (speech-to-speech calls
        whose provider takes the turns); for the dashboard's live view."""
        self.playout: Playout
        self._t0 = 0.0
        self._nursery: trio.Nursery
        self._committed = False
        """Set once the session commits to ending the call (transfer, hang-up)."""
        self._closed = trio.Event()
        self._transfer_pending = ""
        self._pcm_rest = bytearray()
        self._gaps = GapFiller(0.0)
        """The caller's 20 ms grid on the clock (restarted at the session start in run())."""
        self._last_dtmf: tuple[str, str, float] | None = None
        self.apology = apology
        """slin 8 kHz said before a mid-call fail-over (rendered once per process)."""
        self.env = os.environ if env is None else env
        self.keep_stream = False
        """Set by a session that hands its still-open AudioSocket to a fallback session."""
        self.fallback_requested = False
        """Its provider or stages could not start and the assistant has a fallback assistant:
        the server runs that one on this call's AudioSocket (nothing was played yet)."""
        self.on_verdict = on_verdict
        self.verdict_sent = False
        """The verdict went to the control plane before the hand-back frame (Asterisk's
        AudioSocket returns on that frame, and the dialplan wants AI_STATUS at once)."""
        self._tools = {t.name: t for t in build_specs(assistant)}
        self.recordings = recordings
        """Where a recorded call goes (``assistant.recording``); None: this call is not recorded."""
        self.recorder: Recorder | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, stream: trio.abc.Stream, pending: Sequence[Message] = ()) -> Ended:
        """Run the call until it ends; returns the verdict. Never raises for call-level faults.

        ``stream`` is the AudioSocket connection (a ``trio.SocketStream``: the frame clock writes
        and reads its socket without blocking); ``pending`` are messages the server already
        decoded after the UUID (same TCP read)."""
        self._t0 = trio.current_time()
        self._gaps = GapFiller(self._t0)
        self._pending = pending
        self._leg_open = True
        if self.recordings is not None and self.assistant.recording:
            self.recorder = self.recordings.start(self.uuid, self.record.started_at, self.fmt,
                                                  start=self._t0)
        if self.recorder is not None:
            self.playout = RecordedPlayout(self.recorder, self.fmt,
                                           max_seconds=self.playout_seconds)
        else:
            self.playout = Playout(self.fmt, max_seconds=self.playout_seconds)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                clock = self.clock or frame_clock()
                port = clock.attach(stream, self.playout, self, lead_frames=self.lead_frames)
                nursery.start_soon(self._run_port, clock, port)
                self._start(nursery)
        except Exception as exc:  # a bug or engine failure in this call ends this call only
            log.exception("call %s failed", self.uuid)
            self._set_outcome("FAILED", reason=f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self._leg_open = False
            if not self.keep_stream:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(stream)
        if self.outcome is None:
            self._set_outcome("FAILED", reason="session ended without a verdict")
        assert self.outcome is not None
        self._finish_record()
        if self.recorder is not None:  # after the duration is taken: this waits for the disk
            with trio.CancelScope(shield=True):
                self.record.recording = await self.recorder.finish(
                    self._t0 + self.record.duration)
        return self.outcome

    @property
    def provider_name(self) -> str:
        return self.assistant.provider

    def _start(self, nursery: trio.Nursery) -> None:
        """Start the session's own tasks (called inside the call's nursery)."""
        raise NotImplementedError

    def _rel(self, t: float | None) -> float | None:
        return None if t is None else round(t - self._t0, 3)

    def _set_outcome(self, status: str, *, reason: str = "", transfer_to: str = "",
                     method: str = "") -> None:
        if self.outcome is None:
            self.outcome = Ended(uuid=self.uuid, status=status, reason=reason,
                                 transfer_to=transfer_to, transfer_method=method,
                                 summary=self._summary())

    def _end(self) -> None:
        self._closed.set()
        self._nursery.cancel_scope.cancel()

    async def _run_port(self, clock: FrameClock, port: Port) -> None:
        """The call's place on the frame clock: waits until its hand-back frame is out or its
        socket is gone, then ends the call. A bug in this call's frame handling (raised in the
        clock's tick) is re-raised here, so it ends this call as ``FAILED``."""
        try:
            await port.done.wait()
        finally:
            clock.detach(port)
        if port.error is not None:
            raise port.error
        if port.broken:
            self._set_outcome("CALLER_HANGUP", reason="AudioSocket connection closed")
        self._end()

    # -- inbound -------------------------------------------------------------------------------

    # The caller's side, fed by the frame clock in its tick (see :mod:`.clock`). The caller's
    # time runs on the clock, not on the arrival of frames: a leg with silence suppression or
    # DTX (or a Local channel in ``Wait()``) sends nothing while the caller is quiet. When no
    # caller audio came for :data:`~.gaps.GAP_TOLERANCE` (from the session start or the last
    # audio), silent frames stamped with their 20 ms grid times go through :meth:`_on_frame` up
    # to now, then one per tick until real audio arrives: the VAD, the turn detector, a
    # streaming STT and a speech-to-speech provider all hear the silence, so the turn ends,
    # no-input reprompts and the call times out.

    # What the clock reads in a read phase arrived during the frame before it: it is stamped
    # with the middle of that frame, ``now - READ_PHASE``, the write phase (exact for a peer
    # that sends on the clock's grid, unbiased for any other phase), so end-of-speech times
    # and turn latencies are not flattered by the read delay.

    def caller_data(self, data: bytes, now: float) -> bool:
        """Bytes from Asterisk (the clock's read). False once the leg has ended."""
        now -= READ_PHASE
        if not self._on_clock:
            self._clock_started(now)
        try:
            self.decoder.receive_data(data)
            msgs = self.decoder.events()
        except AudioSocketError as exc:
            self._caller_ended(StreamClosed(now, "protocol-error", str(exc)))
            return False
        return self._caller_messages(msgs, now)

    def caller_closed(self, reason: str, error: str, now: float) -> None:
        self._caller_ended(StreamClosed(now - READ_PHASE, reason, error))

    def caller_tick(self, now: float) -> None:
        now -= READ_PHASE
        if not self._on_clock:
            self._clock_started(now)
        if self._pending:
            msgs, self._pending = self._pending, ()
            if not self._caller_messages(msgs, now):
                return
        if self._leg_open:
            slots = self._gaps.due(now)  # [] until its deadline (which tolerates float rounding)
            if slots:
                self._fill_gap(slots)

    def _clock_started(self, now: float) -> None:
        """The call's first read phase: its caller grid (the gap slots) is the stamps of the
        clock's read phases, as real frames get them, counted from one frame before this one."""
        self._on_clock = True
        self._gaps.heard(now - FRAME_SECONDS)

    def _caller_messages(self, msgs: Sequence[Message], now: float) -> bool:
        for msg in msgs:
            if not self._leg_open:
                return False
            if isinstance(msg, AudioMessage):
                pcm = self._convert(msg.payload)
                if pcm:
                    if self._gaps.filling:
                        # already in a gap: its slots before this audio's own 20 ms (missed
                        # by a stalled clock) come first
                        self._fill_gap(self._gaps.due(now - FRAME_SECONDS))
                    self._gaps.heard(now)
                    if self.recorder is not None:  # at the call's rate (slin16: as it came)
                        self.recorder.caller(pcm if self.fmt.rate == SAMPLE_RATE
                                             else msg.payload[:len(msg.payload) & ~1], now)
                    self._on_audio(CallerAudio(pcm, now))
            elif isinstance(msg, DtmfMessage):
                self._on_dtmf(msg.digit, "audiosocket", now)
            elif isinstance(msg, HangupMessage):
                self._caller_ended(StreamClosed(now, "peer-hangup-frame"))
            elif isinstance(msg, ErrorMessage):
                self._caller_ended(StreamClosed(now, "peer-error",
                                                f"AudioSocket error frame code {msg.code}"))
            elif isinstance(msg, UuidMessage):
                self._caller_ended(StreamClosed(
                    now, "protocol-error", "a second UUID message on an established call"))
        return self._leg_open

    def _caller_ended(self, ev: StreamClosed) -> None:
        if self._leg_open:
            self._leg_open = False
            self._stream_closed(ev)

    def _fill_gap(self, slots: list[float]) -> None:
        """Silent caller frames for the grid ``slots`` no audio arrived for (slin 8 kHz, as
        every frame reaching :meth:`_on_frame` is, whatever the leg's codec)."""
        for t in slots:
            if self.recorder is not None:
                self.recorder.caller_silence(t)
            frame = bytes(FRAME_BYTES)
            if self._pcm_rest:  # the tail of a short or 30 ms message: completed with silence
                frame = bytes(self._pcm_rest) + frame[len(self._pcm_rest):]
                self._pcm_rest.clear()
            self._on_frame(frame, t)

    def _on_audio(self, ev: CallerAudio) -> None:
        # Asterisk sends one message per channel voice frame: usually 20 ms, but 30 ms ptime
        # and short frames (276 bytes at the end of a played file) happen. Sessions get 20 ms.
        if len(ev.pcm) == FRAME_BYTES and not self._pcm_rest:
            self._on_frame(ev.pcm, ev.t)
            return
        self._pcm_rest += ev.pcm
        while len(self._pcm_rest) >= FRAME_BYTES:
            frame = bytes(self._pcm_rest[:FRAME_BYTES])
            del self._pcm_rest[:FRAME_BYTES]
            self._on_frame(frame, ev.t)

    def _on_frame(self, frame: bytes, t: float) -> None:
        """One 20 ms slin 8 kHz caller frame that arrived at trio time ``t``, or a silent one
        for the grid slot ``t`` of a gap in the caller's audio (:meth:`_listen`)."""
        raise NotImplementedError

    def deliver_control(self, msg: object) -> None:
        """A control-plane message for this call (AMI DTMF or Hangup)."""
        if isinstance(msg, Dtmf):
            self._on_dtmf(msg.digit, "ami", trio.current_time())
        elif isinstance(msg, Hangup):
            self.record.end_cause = msg.cause
            self._set_outcome("CALLER_HANGUP", reason=f"channel hung up ({msg.cause or 'AMI'})")
            self._end()

    def _on_dtmf(self, digit: str, source: str, t: float) -> None:
        last = self._last_dtmf
        self._last_dtmf = (digit, source, t)
        if last and last[0] == digit and last[1] != source and t - last[2] < DTMF_DEDUPE_SECONDS:
            return  # the same keypress reported by AMI and by AudioSocket
        self.record.dtmf.append(digit)
        self.record.dtmf_at.append(self._rel(t) or 0.0)
        self._on_digit(digit, t)

    def _on_digit(self, digit: str, t: float) -> None:
        """One keypress (deduplicated across AMI and AudioSocket)."""

    def _stream_closed(self, ev: StreamClosed) -> None:
        """The caller leg's AudioSocket ended: set the verdict and end the call."""
        if ev.reason == "protocol-error":
            self._set_outcome("FAILED", reason=f"bad AudioSocket data: {ev.error}")
        elif self._transfer_pending:
            # Asterisk closes the AudioSocket when the AMI Redirect lands, which can come
            # before the control plane's answer.
            self._set_outcome("TRANSFERRED", transfer_to=self._transfer_pending,
                              method="redirect", reason=f"transferred to {self._transfer_pending}")
        else:
            self._set_outcome("CALLER_HANGUP", reason="caller leg closed the AudioSocket")
        self._end()

    # -- ending the call -------------------------------------------------------------------------

    async def _transfer(self, key: str, reason: str = "") -> bool:
        """Transfer to the assistant's destination ``key`` and end the call.

        Returns False (and does nothing else) when the assistant does not allow ``key``.
        Waits for queued audio to finish first, so the sentence before it is heard whole.
        """
        t = self._rel(trio.current_time()) or 0.0
        dest = self.assistant.destination(key)
        if dest is None:
            self.record.actions.append(ToolAction(t, "transfer", key,
                                                  result="refused: destination not allowed"))
            return False
        await self.playout.wait_idle()
        self._transfer_pending = key
        # recorded now: Asterisk may close the AudioSocket (the Redirect landed) before the
        # control plane's answer arrives, which ends this task
        action = ToolAction(t, "transfer", key, reason=reason, result="redirected by AMI")
        self.record.actions.append(action)
        try:
            with trio.fail_after(TRANSFER_ANSWER_TIMEOUT):
                res = await self.control.request_transfer(self.uuid, key, dest.context,
                                                          dest.exten, dest.priority)
        except trio.TooSlowError:
            res = TransferResult(uuid=self.uuid, ok=False, method="dialplan",
                                 detail="control plane did not answer")
        finally:
            self._transfer_pending = ""
        if res.ok and res.method == "goto":
            # the control plane sends the channel on once the AudioSocket is handed back
            action.result = "handed back; the dialplan goes on at the destination"
            self._set_outcome("TRANSFERRED", transfer_to=key, method="goto",
                              reason=reason or f"transferred to {key}")
            await self._hand_back()
            return True
        if res.ok and res.method == "redirect":
            self._set_outcome("TRANSFERRED", transfer_to=key, method="redirect",
                              reason=reason or f"transferred to {key}")
            with trio.move_on_after(REDIRECT_CLOSE_TIMEOUT):
                await self._closed.wait()
            await self._hand_back()
            return True
        action.result = f"handed back to dialplan ({res.detail})"
        self._set_outcome("TRANSFERRED", transfer_to=key, method="dialplan",
                          reason=reason or f"transfer to {key} via dialplan")
        await self._hand_back()
        return True

    async def _hand_back(self) -> None:
        """Send ``00 00 00`` after queued audio, then end the call (at once if the leg is gone).

        The verdict is sent to the control plane first: the call's teardown (a provider's
        WebSocket closing) must not delay AI_STATUS."""
        if self.outcome is not None and self.on_verdict is not None and not self.verdict_sent:
            self.verdict_sent = True
            with trio.CancelScope(shield=True):
                await self.on_verdict(self.outcome)
        if not self._closed.is_set():
            self.playout.hand_back()
            with trio.move_on_after(self.playout_seconds + 1.0):
                await self.playout.hand_back_sent.wait()
        self._end()

    async def _fail_over(self, reason: str) -> None:
        """Something this call depends on broke: go to the assistant's fallback destination,
        or hand the call back with ``FAILED`` so the dialplan's fallback takes it."""
        if self._committed:
            return
        self._committed = True
        self.playout.flush()
        log.warning("call %s: %s", self.uuid, reason)
        await self._pass_on(reason, self.apology, "apology")

    def hand_off(self, announcement: bytes, reason: str) -> bool:
        """End this live call now from outside its tasks (the drain's deadline; on the
        sidecar's trio thread): the agent stops at once, ``announcement`` (slin 8 kHz) is said,
        then the call goes to the assistant's fallback destination, or is handed back with
        ``FAILED`` and ``reason``. The record is written as for any call.

        Returns False, doing nothing, when the call is already ending by itself (a transfer,
        a farewell, a hang-up) or has not started its tasks."""
        nursery: trio.Nursery | None = getattr(self, "_nursery", None)
        if nursery is None or self._committed or self._closed.is_set():
            return False
        self._stop_agent()
        self.playout.flush()
        self._committed = True
        try:
            nursery.start_soon(self._pass_on, reason, announcement, "announcement")
        except RuntimeError:  # the call's nursery is closing: it is over anyway
            return False
        log.info("call %s: handed off (%s)", self.uuid, reason)
        return True

    def _stop_agent(self) -> None:
        """Stop the agent's current answer for good (the call is being handed off): a
        session cancels its turn or drops its provider's audio still in flight."""

    async def _pass_on(self, reason: str, prompt: bytes, label: str) -> None:
        """Say ``prompt`` (the apology, the drain's announcement) unless the leg is gone, then
        go to the fallback destination, or hand the call back with ``FAILED`` and ``reason``.
        The caller of this has set ``_committed``."""
        await trio.lowlevel.checkpoint()  # a cancelled turn unwinds before the flush
        self.playout.flush()
        if prompt and not self._closed.is_set():
            try:
                self.playout.enqueue(prompt, text=f"({label})", interruptible=False)
                self.record.actions.append(ToolAction(self._rel(trio.current_time()) or 0.0,
                                                      label, result="played"))
            except PlayoutFull:
                pass
        fallback = self.assistant.fallback_destination
        if fallback and await self._transfer(fallback, reason=reason):
            return
        self._set_outcome("FAILED", reason=reason)
        await self._hand_back()

    # -- tools -------------------------------------------------------------------------------

    def call_info(self) -> dict[str, Any]:
        """The call context a webhook receives (no secrets: what the dialplan offered)."""
        c = self.context
        return {"uuid": self.uuid, "assistant": self.assistant.name, "caller_id": c.callerid,
                "caller_name": c.calleridname, "dnid": c.dnid, "extension": c.extension,
                "channel": c.channel, "uniqueid": c.uniqueid, "linkedid": c.linkedid,
                "language": c.language or self.assistant.language,
                "variables": dict(c.variables)}

    async def call_tool(self, name: str, arguments: str | dict[str, Any] | None) -> ToolReply:
        """Run one function call of the model; every call (refused ones too) is recorded with
        its arguments and result. Never raises: problems become an error for the model."""
        t0 = trio.current_time()
        action = ToolAction(self._rel(t0) or 0.0, "tool", tool=name)
        self.record.actions.append(action)
        spec = self._tools.get(name)
        try:
            if spec is None:
                raise ToolCallError(f"there is no tool named {name!r}")
            args = decode_arguments(arguments)
            action.arguments = args
            check_arguments(args, spec.parameters)
            if self._committed:
                reply = ToolReply(ToolReply.error("the call is already ending").output, False)
            elif name == TRANSFER:
                reply = await self._tool_transfer(str(args["destination"]),
                                                  str(args.get("reason", "")))
            elif name == HANGUP:
                reply = await self._tool_hangup(str(args.get("reason", "")))
            else:
                hook = next(h for h in self.assistant.tools.webhooks if h.name == name)
                reply = await call_webhook(hook, args, self.call_info(), env=self.env)
        except ToolCallError as exc:
            if not action.arguments and arguments:
                action.arguments = {"raw": str(arguments)[:MAX_RECORDED_RESULT]}
            reply = ToolReply.error(str(exc))
        action.result = reply.output[:MAX_RECORDED_RESULT]
        action.duration_ms = round((trio.current_time() - t0) * 1000, 1)
        log.info("call %s tool %s -> %s", self.uuid, name, action.result[:120])
        return reply

    async def _tool_transfer(self, destination: str, reason: str) -> ToolReply:
        raise NotImplementedError

    async def _tool_hangup(self, reason: str) -> ToolReply:
        raise NotImplementedError

    # -- live view -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """What the dashboard shows of this live call (the health listener's ``/calls``): who
        called, for how long, who is speaking now, the turns so far and their last words. Read
        on the sidecar's trio thread; changes nothing."""
        r = self.record
        playout: Playout | None = getattr(self, "playout", None)
        agent = playout is not None and playout.speaking
        # the turn detector of a pipeline call (``turns``) or of a relay call with local turns
        detector = getattr(self, "turns", None) or getattr(self, "_turns", None)
        caller = bool(getattr(detector, "in_speech", False)) or self.caller_speaking
        return {
            "uuid": self.uuid, "assistant": self.assistant.name, "engine": self.assistant.provider,
            "caller": r.caller, "caller_name": r.caller_name, "dnid": r.dnid,
            "started_at": r.started_at, "worker": r.worker,
            "duration": round(max(0.0, trio.current_time() - self._t0), 1),
            "speaking": ("both" if caller and agent else "caller" if caller
                         else "agent" if agent else "none"),
            "turns": r.next_turn_index,
            "last_caller": next((t.caller_text for t in reversed(r.turns) if t.caller_text), ""),
            "last_agent": next((t.agent_text for t in reversed(r.turns) if t.agent_text), ""),
        }

    # -- record ------------------------------------------------------------------------------

    def _summary(self) -> str:
        said = [t.caller_text for t in self.record.turns if t.caller_text]
        return ("; ".join(said))[-200:]

    def release(self) -> None:
        """Break the reference cycles this call made (its collaborators hold it back: a
        provider its port, a digit group its callback), once it is over and its record
        written, so the call's objects are freed at once by reference counting. Otherwise
        they wait for a full collection of the cyclic garbage collector, which the media
        process runs rarely (:func:`media_sidecar.process.settle_heap`): the soak saw 200
        concurrent calls grow a worker by about 100 KiB a call. Idempotent; ``record`` and
        ``outcome`` stay readable."""
        digits = getattr(self, "_digits", None)
        if digits is not None:
            digits.deliver = _deliver_nowhere
        voice = getattr(self, "voice", None)
        if voice is not None:
            voice.protected = _unprotected

    def _finish_record(self) -> None:
        r = self.record
        assert self.outcome is not None
        r.duration = round(trio.current_time() - self._t0, 3)
        r.ended_at = ended_at(r.started_at, r.duration)  # not the wall clock: it may jump
        r.status, r.reason, r.transfer_to = (self.outcome.status, self.outcome.reason,
                                             self.outcome.transfer_to)
        st = self.playout.stats
        r.playout = {"frames": st.frames_sent, "audio_frames": st.audio_frames_sent,
                     "late_frames": st.late_frames, "max_lateness_ms": round(st.max_lateness * 1000, 3),
                     "lateness_hist": dict(zip((str(b) for b in LATENESS_BINS_MS),
                                               st.lateness_hist, strict=True)),
                     "flushes": st.flushes, "frames_flushed": st.frames_flushed,
                     "blocked_ticks": st.blocked_ticks}
        r.caller_frames_filled = self._gaps.filled


def _deliver_nowhere(digits: list[str]) -> None:
    """A released call's digit group delivers nowhere."""


def _unprotected() -> bool:
    """A released call's voice is no longer protected (nothing plays any more)."""
    return False
