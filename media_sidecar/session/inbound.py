"""The inbound direction of one AudioSocket connection: bytes -> typed caller events.

The reader only moves bytes: it decodes frames, turns the payload into slin 8 kHz with the
call's known codec, and puts events on a bounded queue that drops the OLDEST caller audio when
full (counted), so the reader never blocks and a slow consumer costs audio, not the connection.
DTMF and the end of the stream are never dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import trio

from ..dsp import g711
from ..dsp.resample import Resampler
from ..protocol.audiosocket import (
    AudioFormat,
    AudioMessage,
    AudioSocketDecoder,
    AudioSocketError,
    Codec,
    DtmfMessage,
    ErrorMessage,
    HangupMessage,
    Message,
    UuidMessage,
)


@dataclass(frozen=True, slots=True)
class CallerAudio:
    pcm: bytes
    """slin 8 kHz."""
    t: float


@dataclass(frozen=True, slots=True)
class CallerDtmf:
    digit: str
    t: float
    source: str = "audiosocket"


@dataclass(frozen=True, slots=True)
class StreamClosed:
    t: float
    reason: str
    error: str = ""


InboundEvent = CallerAudio | CallerDtmf | StreamClosed


class DropOldestQueue:
    """A bounded queue of inbound events; when full, the oldest *audio* event is dropped."""

    def __init__(self, max_audio: int) -> None:
        self._items: deque[InboundEvent] = deque()
        self._max_audio = max_audio
        self._audio = 0
        self._ready = trio.Event()
        self.dropped = 0

    def put(self, ev: InboundEvent) -> None:
        if isinstance(ev, CallerAudio):
            if self._audio >= self._max_audio:
                for i, old in enumerate(self._items):
                    if isinstance(old, CallerAudio):
                        del self._items[i]
                        self._audio -= 1
                        self.dropped += 1
                        break
            self._audio += 1
        self._items.append(ev)
        self._ready.set()

    async def get(self) -> InboundEvent:
        while not self._items:
            self._ready = trio.Event()
            await self._ready.wait()
        ev = self._items.popleft()
        if isinstance(ev, CallerAudio):
            self._audio -= 1
        return ev


class PayloadConverter:
    """Turns one call's inbound audio payloads into slin 8 kHz (stateful per call)."""

    def __init__(self, fmt: AudioFormat) -> None:
        self.fmt = fmt
        self._down = (
            Resampler(fmt.rate, 8000) if fmt.codec is Codec.SLIN and fmt.rate != 8000 else None
        )

    def __call__(self, payload: bytes) -> bytes:
        if self.fmt.codec is Codec.ULAW:
            return g711.ulaw_decode(payload).astype("<i2").tobytes()
        if self.fmt.codec is Codec.ALAW:
            return g711.alaw_decode(payload).astype("<i2").tobytes()
        if len(payload) % 2:
            payload = payload[:-1]
        if self._down is not None:
            return self._down.process(np.frombuffer(payload, dtype="<i2")).astype("<i2").tobytes()
        return payload


async def read_inbound(
    stream: trio.abc.ReceiveStream,
    decoder: AudioSocketDecoder,
    fmt: AudioFormat,
    queue: DropOldestQueue,
    pending: Sequence[Message] = (),
) -> None:
    """Read until EOF or a protocol error; always ends by putting one StreamClosed.

    ``pending`` are messages the server already decoded after the UUID (same TCP read).
    A peer that resets the connection ends the same way as EOF (the caller leg is gone).
    Cancellation propagates (nothing is put).
    """
    convert = PayloadConverter(fmt)
    reason, error = "eof", ""
    try:
        msgs: Sequence[Message] = pending
        while True:
            now = trio.current_time()
            for msg in msgs:
                if isinstance(msg, AudioMessage):
                    pcm = convert(msg.payload)
                    if pcm:
                        queue.put(CallerAudio(pcm, now))
                elif isinstance(msg, DtmfMessage):
                    queue.put(CallerDtmf(msg.digit, now))
                elif isinstance(msg, HangupMessage):
                    reason = "peer-hangup-frame"
                    raise _Stop
                elif isinstance(msg, ErrorMessage):
                    reason, error = "peer-error", f"AudioSocket error frame code {msg.code}"
                    raise _Stop
                elif isinstance(msg, UuidMessage):
                    raise AudioSocketError("a second UUID message on an established call")
            data = await stream.receive_some(65536)
            if not data:
                break
            decoder.receive_data(data)
            msgs = decoder.events()
    except _Stop:
        pass
    except AudioSocketError as exc:
        reason, error = "protocol-error", str(exc)
    except trio.BrokenResourceError as exc:
        reason, error = "reset", str(exc) or "connection reset"
    except trio.ClosedResourceError:
        reason = "closed"
    queue.put(StreamClosed(trio.current_time(), reason, error))


class _Stop(Exception):
    pass
