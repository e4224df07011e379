"""A local TTS engine (Piper) as a pipeline stage: synthesis and resampling to 8 kHz in a
worker thread, one sentence at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import trio

from ..speech.base import SpeechEngineError, TextToSpeech
from ..speech.prompts import synthesize
from .base import ProviderError


class LocalSynth:
    """Implements :class:`~media_sidecar.pipeline.base.SpeechSynth` over a blocking engine.
    The engine (and its loaded model) is shared by every call; nothing is per call."""

    def __init__(self, engine: TextToSpeech,
                 offload: Callable[..., Awaitable[Any]] = trio.to_thread.run_sync) -> None:
        self.engine = engine
        self.name = engine.name
        self.rate = 8000
        """Resampled in the worker thread (one stateful resampler per sentence)."""
        self.offload = offload

    async def start(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        task_status.started()

    async def stream(self, text: str) -> AsyncIterator[np.ndarray]:
        try:
            slin = await self.offload(synthesize, self.engine, text, abandon_on_cancel=True)
        except SpeechEngineError as exc:
            raise ProviderError(str(exc), retryable=False) from None
        yield np.frombuffer(slin, dtype="<i2")
