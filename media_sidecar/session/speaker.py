"""Turns the brain's sentences into queued agent audio for one call.

TTS runs in a worker thread (``trio.to_thread``) so one call's synthesis never delays another
call's frames; each sentence is queued as soon as it is synthesized, so the first sentence plays
while the next is being made. Each utterance goes through one stateful resampler from the
engine's rate to the call's 8 kHz, across all the chunks the engine yields for it (never
per-chunk resampling); the resampler lives in the worker thread for that utterance, so a
barge-in on the trio side never races with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import trio

from ..brain.base import Say
from ..dsp.resample import Resampler
from ..speech.base import TextToSpeech
from .playout import Playout, Segment


class Speaker:
    def __init__(self, tts: TextToSpeech, out_rate: int = 8000) -> None:
        self.tts = tts
        self.out_rate = out_rate
        self.offload: Callable[..., Awaitable[Any]] = trio.to_thread.run_sync

    async def say(self, out: Say, playout: Playout) -> Segment | None:
        """Synthesize ``out.text`` and queue it; returns the segment, or None for empty text.

        Cancellation abandons the worker thread's result (the sentence is not queued).
        """
        text = out.text.strip()
        if not text:
            return None
        pcm = await self.offload(self._synthesize, text, abandon_on_cancel=True)
        return playout.enqueue(pcm, text=text, interruptible=out.interruptible)

    def _synthesize(self, text: str) -> bytes:
        resampler = Resampler(self.tts.rate, self.out_rate)
        parts = [resampler.process(np.asarray(c, dtype=np.int16)) for c in self.tts.synthesize(text)]
        parts.append(resampler.flush())
        return np.concatenate(parts).astype("<i2").tobytes()
