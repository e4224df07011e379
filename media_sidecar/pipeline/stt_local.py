"""A local STT engine (Moonshine) as a pipeline stage: one utterance per request, sent to the
inference pool when there is one, else run through ``offload`` (a worker thread; inline in
virtual-time tests)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import trio

from ..speech.base import SpeechEngineError, SpeechToText
from ..speech.local import LocalEar
from .base import ProviderError


class LocalTranscriber:
    """Implements :class:`~media_sidecar.pipeline.base.Transcriber` over a local engine. One
    per call: it is the call's key for the pool's fair queue."""

    def __init__(self, engine: SpeechToText,
                 offload: Callable[..., Awaitable[Any]] = trio.to_thread.run_sync) -> None:
        self.engine = engine
        self.name = engine.name
        self.offload = offload

    async def transcribe(self, pcm: bytes) -> str:
        """The utterance's text. Cancellation drops the request (a running transcription in
        the pool finishes there, unread). Raises ProviderError (permanent) if the engine fails
        or its inference process dies."""
        engine = self.engine
        try:
            if isinstance(engine, LocalEar) and engine.pool is not None:
                text = await engine.pool.transcribe(self, engine.key, pcm, 8000)
            else:
                samples = np.frombuffer(pcm, dtype="<i2")
                text = await self.offload(engine.transcribe, samples, 8000,
                                          abandon_on_cancel=True)
        except SpeechEngineError as exc:
            raise ProviderError(str(exc), retryable=False) from None
        return str(text).strip()

    @property
    def can_score(self) -> bool:
        """Whether the engine scores texts against audio (Moonshine does; fakes may not)."""
        return callable(getattr(self.engine, "score", None)) and (
            not isinstance(self.engine, LocalEar)
            or callable(getattr(self.engine.engine, "score", None)))

    async def score(self, pcm: bytes, texts: list[str]) -> list[float]:
        """Each of ``texts`` scored against the utterance by the engine's own decoder, then
        the score of the engine's own decoding (the acoustic re-scoring: the first text is
        the free transcript), in the pool when there is one. Cancellation drops the request. Raises ProviderError
        (permanent) if the engine cannot score or fails."""
        engine = self.engine
        try:
            if isinstance(engine, LocalEar) and engine.pool is not None:
                return await engine.pool.score(self, engine.key, pcm, texts, 8000)
            score = getattr(engine, "score", None)
            if score is None:
                raise SpeechEngineError(f"STT engine {self.name} cannot score texts")
            samples = np.frombuffer(pcm, dtype="<i2")
            return list(await self.offload(score, samples, 8000, texts,
                                           abandon_on_cancel=True))
        except SpeechEngineError as exc:
            raise ProviderError(str(exc), retryable=False) from None
