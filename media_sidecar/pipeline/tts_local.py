"""A local TTS engine (Piper) as a pipeline stage, one sentence at a time.

A fixed sentence of the voice (:mod:`..speech.cache`) plays from memory. Any other goes to the
inference pool, whose process resamples to 8 kHz and streams each chunk Piper makes (one per
sentence Piper finds in the text) as soon as it is made; without a pool, synthesis and
resampling run through ``offload`` (a worker thread; inline in virtual-time tests) and the
sentence arrives whole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

import numpy as np
import trio

from ..speech.base import SpeechEngineError, TextToSpeech
from ..speech.local import LocalVoice
from ..speech.prompts import synthesize
from .base import ProviderError


class LocalSynth:
    """Implements :class:`~media_sidecar.pipeline.base.SpeechSynth` over a local engine. One per
    call (its key in the pool's fair queue); the engine and its model are shared."""

    def __init__(self, engine: TextToSpeech,
                 offload: Callable[..., Awaitable[Any]] = trio.to_thread.run_sync) -> None:
        self.engine = engine
        self.name = engine.name
        self.rate = 8000
        """The cache, the pool and the offload path all deliver slin 8 kHz."""
        self.offload = offload
        self.cache_hits = 0
        self.synthesized = 0

    async def start(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        task_status.started()

    async def stream(self, text: str) -> AsyncIterator[np.ndarray]:
        """``text`` as slin 8 kHz chunks. Closing the stream early (barge-in) or cancelling
        drops a queued synthesis and stops a running one after its current chunk. Raises
        ProviderError (permanent) if the engine fails or its inference process dies."""
        voice = self.engine if isinstance(self.engine, LocalVoice) else None
        if voice is not None:
            cached = voice.cached(text)
            if cached is not None:
                self.cache_hits += 1
                yield np.frombuffer(cached, dtype="<i2")
                return
        self.synthesized += 1
        try:
            if voice is not None and voice.pool is not None:
                async with aclosing(voice.pool.synthesize(self, voice.key, text)) as chunks:
                    async for chunk in chunks:
                        yield np.frombuffer(chunk, dtype="<i2")
                return
            engine = voice.engine if voice is not None else self.engine
            slin = await self.offload(synthesize, engine, text, abandon_on_cancel=True)
        except SpeechEngineError as exc:
            raise ProviderError(str(exc), retryable=False) from None
        yield np.frombuffer(slin, dtype="<i2")
