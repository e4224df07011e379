"""A local STT engine (Moonshine) as a pipeline stage: one utterance per worker-thread call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import trio

from ..speech.base import SpeechEngineError, SpeechToText
from .base import ProviderError


class LocalTranscriber:
    """Implements :class:`~media_sidecar.pipeline.base.Transcriber` over a blocking engine."""

    def __init__(self, engine: SpeechToText,
                 offload: Callable[..., Awaitable[Any]] = trio.to_thread.run_sync) -> None:
        self.engine = engine
        self.name = engine.name
        self.offload = offload

    async def transcribe(self, pcm: bytes) -> str:
        samples = np.frombuffer(pcm, dtype="<i2")
        try:
            text = await self.offload(self.engine.transcribe, samples, 8000,
                                      abandon_on_cancel=True)
        except SpeechEngineError as exc:
            raise ProviderError(str(exc), retryable=False) from None
        return str(text).strip()
