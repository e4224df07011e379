"""The inbound direction of one AudioSocket connection: bytes -> typed caller events.

The process's frame clock (:mod:`.clock`) reads each call's bytes once per tick; the session
decodes them (:class:`~media_sidecar.protocol.audiosocket.AudioSocketDecoder`), turns audio
payloads into slin 8 kHz with the call's known codec (:class:`PayloadConverter`) and acts on
the events below at once, in the clock's tick.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..dsp import g711
from ..dsp.resample import Resampler
from ..protocol.audiosocket import (
    AudioFormat,
    Codec,
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
