"""Says the brain's sentences: TTS audio streams into the playout as it arrives.

Each sentence becomes an :class:`Utterance`: the TTS stage's chunks are resampled to 8 kHz by
one stateful resampler per sentence (never per chunk), cut into whole 20 ms frames (a partial
frame waits for the next chunk, so chunk boundaries never add silence) and queued at once, so
the first frame can leave on the next tick after the first audio arrives. Cancelling a
sentence closes the TTS stream (Deepgram ``Clear``, the HTTP request closed); what was queued
is the session's to flush.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field

import numpy as np
import trio

from ..constants import FRAME_BYTES, FRAME_SECONDS
from ..dsp.resample import Resampler
from ..pipeline.base import SpeechSynth
from .playout import Playout, Segment

SECONDS_PER_CHAR = 0.065
"""Typical speaking rate of TTS voices (about 15 characters a second), to estimate how long a
sentence whose audio was still arriving would have lasted."""


@dataclass(eq=False)
class Utterance:
    """One sentence as spoken: its text and the playout segments its audio went into."""

    text: str
    interruptible: bool = True
    segments: list[Segment] = field(default_factory=list)
    complete: bool = False
    """The TTS stage delivered all of it."""
    first_audio_at: float | None = None
    """trio time its first TTS audio arrived."""

    @property
    def started_at(self) -> float | None:
        return self.segments[0].started_at if self.segments else None

    @property
    def frames_sent(self) -> int:
        return sum(s.frames_sent for s in self.segments)

    @property
    def heard_text(self) -> str:
        """The words the caller heard, in proportion to the audio played (all of them once
        every frame of a complete sentence went out)."""
        total = sum(s.total_frames for s in self.segments)
        sent = self.frames_sent
        if not total or not sent:
            return ""
        if self.complete and sent >= total:
            return self.text
        if not self.complete:  # the rest was still coming: its length is estimated
            total = max(total, round(len(self.text) * SECONDS_PER_CHAR / FRAME_SECONDS))
        words = self.text.split()
        return " ".join(words[: int(len(words) * sent / total)])


class Voice:
    """One call's speaking: a TTS stage and the playout it feeds."""

    def __init__(self, synth: SpeechSynth, playout: Playout,
                 protected: Callable[[], bool] = lambda: False) -> None:
        self.synth = synth
        self.playout = playout
        self.protected = protected
        """True once the call is ending: new audio is queued non-interruptible."""

    async def say(self, utt: Utterance) -> Utterance:
        """Stream ``utt.text`` into the playout; returns when the TTS stage is done with it."""
        resampler = Resampler(self.synth.rate, 8000) if self.synth.rate != 8000 else None
        carry = bytearray()
        async with aclosing(self.synth.stream(utt.text)) as chunks:  # type: ignore[type-var]
            async for chunk in chunks:
                if utt.first_audio_at is None:
                    utt.first_audio_at = trio.current_time()
                pcm = np.asarray(chunk, dtype=np.int16)
                if resampler is not None:
                    pcm = resampler.process(pcm)
                carry += pcm.astype("<i2").tobytes()
                whole = len(carry) - len(carry) % FRAME_BYTES
                if whole:
                    self._queue(utt, bytes(carry[:whole]))
                    del carry[:whole]
        if resampler is not None:
            carry += resampler.flush().astype("<i2").tobytes()
        if carry:
            self._queue(utt, bytes(carry))
        utt.complete = True
        return utt

    def _queue(self, utt: Utterance, pcm: bytes) -> None:
        interruptible = utt.interruptible and not self.protected()
        seg = self.playout.enqueue(pcm, text=utt.text if not utt.segments else "",
                                   interruptible=interruptible)
        if seg.total_frames:
            utt.segments.append(seg)
        if self.protected():
            self.playout.protect()  # what is already queued is the farewell too
