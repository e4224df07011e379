"""The Asterisk side of one AudioSocket connection (the ``AudioSocket()`` app), in trio.

Works over any :class:`trio.abc.Stream`: a TCP stream to the sidecar, or one end of
``trio.testing.memory_stream_pair()`` under the autojump clock. What it does, as Asterisk
22.10.1 does it (telephony.md A, captures ``as_B*``, ``as_R1``):

* sends the UUID frame (``0x01``) first; then one caller frame every 20 ms on an absolute
  deadline schedule from the UUID send time (the first at +20 ms, as captured): slin 320 bytes,
  or G.711 160 bytes still labelled kind ``0x10`` as ``Dial(AudioSocket/...c(ulaw))`` does, or
  slin16 640 bytes as kind ``0x12`` as ``Dial(AudioSocket/...c(slin16))`` does (22.7+);
  silence when the caller script is quiet (a real phone keeps sending RTP) unless
  ``send_silence=False`` (a far end that sends nothing, as a Local channel in ``Wait()``);
* DTMF as ``03 00 01 <digit>``, sent in the tick the script or AMI asked for it;
* reads the sidecar with :class:`AudioSocketDecoder` and records every frame with its arrival
  time ``trio.current_time()``;
* ends like the app: ``00 00 00`` or EOF from the sidecar -> result 0; caller hangup or
  redirect -> the socket is closed (the sidecar sees EOF), result -1; a kind other than
  ``0x00``/``0x10``-``0x18``, an empty audio payload, EOF inside a frame, a payload that
  trails its header by more than 5 ms, or 2.0 s without activity -> torn down, result -1.

Early frames: Asterisk writes every received frame straight to the channel (no jitter buffer),
so a sidecar that bursts ahead of real time gets frames dropped further on. The session keeps a
virtual playout clock and counts the frames that arrived more than ``burst_tolerance`` ahead.
"""

from __future__ import annotations

import math
import uuid as uuid_mod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import trio

from fastagi_server.emulator.caller import CallerAction, CallerPlayer, Dtmf, Hangup, Redirect
from media_sidecar.constants import FRAME_BYTES, FRAME_SECONDS, SAMPLE_RATE
from media_sidecar.protocol.audiosocket import (
    AUDIO_KIND_RATES,
    MAX_WIRE_PAYLOAD,
    AudioMessage,
    AudioSocketDecoder,
    AudioSocketError,
    DtmfMessage,
    ErrorMessage,
    HangupMessage,
    Kind,
    Message,
    UuidMessage,
    encode_audio,
    encode_dtmf,
    encode_uuid,
)

if TYPE_CHECKING:
    from media_sidecar.dsp.resample import Resampler

CallerCodec = Literal["slin", "ulaw", "alaw", "slin16"]
_G711 = ("ulaw", "alaw")
ClosedBy = Literal[
    "sidecar_hangup",  # 00 00 00 -> 0
    "sidecar_eof",  # the sidecar closed -> 0
    "sidecar_reset",  # read/write error on the socket -> -1
    "caller_hangup",  # the channel hung up -> -1
    "redirect",  # AMI Redirect (async goto) -> -1
    "protocol_error",  # bad kind, empty audio, EOF mid-frame -> -1
    "payload_stall",  # payload > 5 ms after its header -> -1
    "idle_timeout",  # 2 s of no activity -> -1
    "not_answered",  # EXEC AudioSocket on a channel not Up: connected, closed, nothing sent
]
_RESULT_CODES: dict[str, int] = {"sidecar_hangup": 0, "sidecar_eof": 0}
WRITE_ERROR_GRACE = 0.005


@dataclass(frozen=True, slots=True)
class AudioSocketConfig:
    """How the emulated channel behaves on the AudioSocket.

    ``idle_timeout_requires_both=True`` is Asterisk's rule: the 2 s timer runs only while
    neither side sends anything (caller frames count as activity). ``False`` makes it fire on 2 s
    of sidecar silence alone: a stricter check that the sidecar streams continuously.
    """

    caller_codec: CallerCodec = "slin"
    send_silence: bool = True
    idle_timeout: float | None = 2.0
    idle_timeout_requires_both: bool = True
    payload_stall_timeout: float | None = 0.005
    burst_tolerance: float = 0.060
    agent_codec: CallerCodec = "slin"  # what kind 0x10 from the sidecar carries (Asterisk: slin)


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame on the wire: ``t`` is ``trio.current_time()`` when it was sent or received."""

    t: float
    kind: int
    payload: bytes


@dataclass(slots=True)
class AudioSocketResult:
    """What happened on one AudioSocket connection; ``result_code`` is the app's return value."""

    uuid: str
    result_code: int = -1
    closed_by: ClosedBy | None = None
    error: str | None = None
    hangup_sent_by_sidecar: bool = False
    started_at: float = 0.0
    ended_at: float = 0.0
    frames_received: list[Frame] = field(default_factory=list)
    frames_sent: list[Frame] = field(default_factory=list)
    early_frames: int = 0
    max_lead: float = 0.0
    agent_codec: CallerCodec = "slin"
    caller_codec: CallerCodec = "slin"

    def frame_times(self, relative: bool = True) -> list[float]:
        """Arrival times of the sidecar's frames (from the UUID send time if ``relative``)."""
        base = self.started_at if relative else 0.0
        return [f.t - base for f in self.frames_received]

    def audio_frames(self) -> list[Frame]:
        return [f for f in self.frames_received if f.kind in AUDIO_KIND_RATES]

    def agent_audio_pcm(self) -> bytes:
        """Everything the sidecar sent, as one slin 8 kHz stream (gaps are not filled)."""
        return b"".join(
            agent_samples(f, self.agent_codec).astype("<i2").tobytes() for f in self.audio_frames()
        )


def agent_samples(frame: Frame, codec: CallerCodec = "slin") -> np.ndarray:
    """The int16 8 kHz samples of one audio frame from the sidecar (resampled if not 8 kHz)."""
    if frame.kind == Kind.AUDIO and codec in _G711:
        from media_sidecar.dsp import g711  # lazy: only G.711 legs need it

        return (
            g711.ulaw_decode(frame.payload) if codec == "ulaw" else g711.alaw_decode(frame.payload)
        )
    samples = np.frombuffer(frame.payload[: len(frame.payload) // 2 * 2], dtype="<i2").astype(
        np.int16
    )
    rate = AUDIO_KIND_RATES[frame.kind]
    if rate == SAMPLE_RATE:
        return samples
    from media_sidecar.dsp.resample import Resampler  # lazy: only wideband frames need it

    rs = Resampler(rate, SAMPLE_RATE)
    return np.concatenate([rs.process(samples), rs.flush()])


def _raw(msg: Message) -> tuple[int, bytes]:
    """Kind and payload of a message the app refuses (for the record)."""
    if isinstance(msg, UuidMessage):
        return int(Kind.UUID), msg.uuid.bytes
    if isinstance(msg, DtmfMessage):
        return int(Kind.DTMF), msg.digit.encode()
    if isinstance(msg, ErrorMessage):
        return int(Kind.ERROR), b"" if msg.code is None else bytes((msg.code,))
    return -1, b""


def _frame_seconds(kind: int, payload_len: int, codec: CallerCodec) -> float:
    width = 1 if (kind == Kind.AUDIO and codec in _G711) else 2
    return payload_len / width / AUDIO_KIND_RATES[kind]


class AudioSocketSession:
    """One AudioSocket connection from the Asterisk side. Use once: ``await session.run()``.

    ``on_action`` receives the caller actions the script fires during the session (hangup,
    redirect, and DTMF for its AMI part); the channel owner turns them into channel state and
    calls :meth:`stop`. Without it the session handles hangup and redirect itself.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        uuid: str | uuid_mod.UUID,
        *,
        caller: CallerPlayer | None = None,
        config: AudioSocketConfig | None = None,
        on_action: Callable[[CallerAction], None] | None = None,
    ) -> None:
        self._stream = stream
        self._uuid = uuid_mod.UUID(str(uuid))
        self._caller = caller
        self.config = config or AudioSocketConfig()
        self._on_action = on_action
        self._decoder = AudioSocketDecoder(max_payload=MAX_WIRE_PAYLOAD)
        self._dtmf: deque[str] = deque()
        self._scope: trio.CancelScope | None = None
        self._send_lock = trio.StrictFIFOLock()
        self._last_sidecar = 0.0
        self._last_caller = 0.0
        self._activity = trio.Event()
        self._playout_end = -math.inf
        self._write_error: str | None = None
        self._reader_done = trio.Event()
        self._up: Resampler | None = None
        self._up_buf = np.zeros(0, dtype=np.int16)
        self.result = AudioSocketResult(
            str(self._uuid),
            agent_codec=self.config.agent_codec,
            caller_codec=self.config.caller_codec,
        )

    # -- control from the channel (sync, callable from any task) ---------------------------------
    def stop(self, closed_by: ClosedBy, error: str | None = None) -> None:
        """End the session (first reason wins): the socket is closed when :meth:`run` unwinds."""
        if self.result.closed_by is None:
            self.result.closed_by = closed_by
            self.result.result_code = _RESULT_CODES.get(closed_by, -1)
            self.result.error = error
        if self._scope is not None:
            self._scope.cancel()

    def queue_dtmf(self, digit: str) -> None:
        """Send ``03 00 01 <digit>`` at the next tick (AMI PlayDTMF ... Receive: yes)."""
        encode_dtmf(digit)  # validates
        self._dtmf.append(digit)

    @property
    def running(self) -> bool:
        return self._scope is not None and self.result.closed_by is None

    # -- the session ---------------------------------------------------------------------------
    async def run(self) -> AudioSocketResult:
        """Send the UUID, stream both ways until an end condition, close the stream.

        Returns the result; it does not raise for anything the sidecar does. Cancellation from
        outside propagates (the stream is still closed).
        """
        res = self.result
        res.started_at = self._last_sidecar = self._last_caller = trio.current_time()
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                # The app sends the UUID before its loop: a dead channel then ends it at once.
                if not await self._send(encode_uuid(self._uuid), int(Kind.UUID), self._uuid.bytes):
                    self.stop("sidecar_reset", self._write_error)
                if res.closed_by is not None:
                    return res
                if self._caller is not None:
                    self._caller.begin_audio(res.started_at)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._reader)
                    nursery.start_soon(self._ticker)
                    if self.config.idle_timeout is not None:
                        nursery.start_soon(self._watchdog, self.config.idle_timeout)
        finally:
            res.ended_at = trio.current_time()
            if self._caller is not None:
                self._caller.end_audio()
            with trio.move_on_after(1.0) as cleanup:
                cleanup.shield = True
                await self._stream.aclose()
        return res

    async def _send(self, data: bytes, kind: int, payload: bytes) -> bool:
        """Write one whole frame; False if the socket is broken (the error is kept)."""
        async with self._send_lock:
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._write_error = f"write failed: {exc!r}"
                return False
        self.result.frames_sent.append(Frame(trio.current_time(), kind, payload))
        return True

    async def _ticker(self) -> None:
        """One caller frame per 20 ms on absolute deadlines; script actions and DTMF first."""
        t0 = self.result.started_at
        k = 1
        while await self._tick(t0 + k * FRAME_SECONDS):
            k += 1
        # A write failed. Over TCP the peer's FIN is read before any write error shows, and
        # the app returns 0 for it: let the reader see the EOF first if it is there.
        with trio.move_on_after(WRITE_ERROR_GRACE):
            await self._reader_done.wait()
        self.stop("sidecar_reset", self._write_error)

    async def _tick(self, now: float) -> bool:
        await trio.sleep_until(now)
        if self._caller is not None:
            for action in self._caller.poll(now):
                self._act(action)
        while self._dtmf:
            digit = self._dtmf.popleft()
            if not await self._send(encode_dtmf(digit), int(Kind.DTMF), digit.encode()):
                return False
        pcm = self._caller.frame(now) if self._caller is not None else None
        if pcm is None and self.config.send_silence:
            pcm = bytes(FRAME_BYTES)
        if pcm is not None:
            payload = self._encode_caller(pcm)
            kind = int(Kind.AUDIO_SLIN16 if self.config.caller_codec == "slin16" else Kind.AUDIO)
            if not await self._send(encode_audio(payload, kind), kind, payload):
                return False
            self._last_caller = now
            self._activity.set()
        return True

    def _act(self, action: CallerAction) -> None:
        if isinstance(action, Dtmf) and action.via in ("audiosocket", "both"):
            self._dtmf.append(action.digit)
        if self._on_action is not None:
            self._on_action(action)
        elif isinstance(action, Hangup):
            self.stop("caller_hangup")
        elif isinstance(action, Redirect):
            self.stop("redirect")

    def _encode_caller(self, pcm: bytes) -> bytes:
        codec = self.config.caller_codec
        if codec == "slin":
            return pcm
        if codec == "slin16":
            return self._upsample(pcm)
        from media_sidecar.dsp import g711  # lazy: only G.711 legs need it

        return g711.ulaw_encode(pcm) if codec == "ulaw" else g711.alaw_encode(pcm)

    def _upsample(self, pcm: bytes) -> bytes:
        """One 8 kHz caller frame as one 640-byte slin16 frame (a stateful resampler; its
        start-up delay is filled with silence so every frame is whole)."""
        from media_sidecar.dsp.resample import Resampler  # lazy: only slin16 legs need it

        if self._up is None:
            self._up = Resampler(SAMPLE_RATE, 16000)
        out = np.concatenate([self._up_buf, self._up.process(np.frombuffer(pcm, dtype="<i2"))])
        want = len(pcm)  # bytes of 8 kHz = samples of 16 kHz
        if len(out) < want:
            out = np.concatenate([np.zeros(want - len(out), dtype=np.int16), out])
        self._up_buf = out[want:]
        return out[:want].astype("<i2").tobytes()

    async def _reader(self) -> None:
        try:
            await self._read_frames()
        finally:
            self._reader_done.set()

    async def _read_frames(self) -> None:
        stall = self.config.payload_stall_timeout
        deadline = math.inf
        while True:
            with trio.move_on_at(deadline) as waited:
                try:
                    data = await self._stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self.stop("sidecar_reset", f"read failed: {exc!r}")
                    return
            if waited.cancelled_caught:  # the payload did not follow its header in time
                self.stop("payload_stall", "Poll timed out while waiting for data (payload)")
                return
            now = trio.current_time()
            if not data:
                if self._decoder.buffered:
                    self.stop(
                        "protocol_error", f"EOF inside a frame ({self._decoder.buffered} bytes)"
                    )
                else:
                    self.stop("sidecar_eof")
                return
            self._last_sidecar = now
            self._activity.set()
            error: AudioSocketError | None = None
            try:
                self._decoder.receive_data(bytes(data))
            except AudioSocketError as exc:
                error = exc
            for msg in self._decoder.events():  # frames before a bad one are still processed
                if not self._handle(now, msg):
                    return
            if error is not None:
                self.stop("protocol_error", str(error))
                return
            partial = stall is not None and self._decoder.buffered >= 3
            deadline = now + stall if partial and stall is not None else math.inf

    def _handle(self, now: float, msg: Message) -> bool:
        """Record one decoded message; False once the session must end."""
        if isinstance(msg, HangupMessage):
            self.result.frames_received.append(Frame(now, int(Kind.HANGUP), b""))
            self.result.hangup_sent_by_sidecar = True
            self.stop("sidecar_hangup")
            return False
        if not isinstance(msg, AudioMessage):
            kind, payload = _raw(msg)
            self.result.frames_received.append(Frame(now, kind, payload))
            self.stop(
                "protocol_error",
                f"Received AudioSocket message other than hangup or audio (kind 0x{kind:02x})",
            )
            return False
        self.result.frames_received.append(Frame(now, msg.kind, msg.payload))
        self._burst_check(now, _frame_seconds(msg.kind, len(msg.payload), self.config.agent_codec))
        if self._caller is not None:
            frame = Frame(now, msg.kind, msg.payload)
            self._caller.observe_agent(now, agent_samples(frame, self.config.agent_codec))
        return True

    def _burst_check(self, now: float, seconds: float) -> None:
        start = max(now, self._playout_end)
        self._playout_end = start + seconds
        lead = round(start - now, 9)  # float noise of t0 + k * 0.02 is not a lead
        self.result.max_lead = max(self.result.max_lead, lead)
        if lead > self.config.burst_tolerance + 1e-9:
            self.result.early_frames += 1

    async def _watchdog(self, idle_limit: float) -> None:
        """Asterisk's ``MAX_WAIT_TIMEOUT_MSEC``: 2 s with no activity ends the app with -1."""
        while True:
            last = self._last_sidecar
            if self.config.idle_timeout_requires_both:
                last = max(last, self._last_caller)
            deadline = last + idle_limit
            if trio.current_time() >= deadline:
                ms = idle_limit * 1000
                self.stop("idle_timeout", f"Reached timeout after {ms:.0f} ms of no activity")
                return
            self._activity = trio.Event()
            with trio.move_on_at(deadline):
                await self._activity.wait()


async def run_audiosocket(
    stream: trio.abc.Stream,
    uuid: str | uuid_mod.UUID,
    *,
    caller: CallerPlayer | None = None,
    config: AudioSocketConfig | None = None,
) -> AudioSocketResult:
    """Run one standalone session (no AGI, no channel): a script hangup or redirect ends it."""
    return await AudioSocketSession(stream, uuid, caller=caller, config=config).run()


__all__ = [
    "AudioSocketConfig",
    "AudioSocketResult",
    "AudioSocketSession",
    "ClosedBy",
    "Frame",
    "agent_samples",
    "run_audiosocket",
]
