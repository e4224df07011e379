"""Speech engine interfaces used by the local pipeline: offline STT and TTS.

Engines are blocking model code; the session runs them through ``trio.to_thread`` so one call's
inference never delays another call's frames. Engines hold no per-call state unless noted, so
one loaded model serves every call (loading Piper takes ~1 s, Moonshine ~0.5 s).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np


class SpeechToText(Protocol):
    name: str

    def transcribe(self, pcm: np.ndarray, rate: int) -> str:
        """Transcribe one utterance of int16 mono PCM at ``rate`` Hz. Blocking; thread-safe."""
        ...


class TextToSpeech(Protocol):
    name: str
    rate: int
    """Sample rate of the audio this engine produces."""

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        """Yield int16 mono PCM chunks at ``rate`` for ``text``. Blocking; thread-safe."""
        ...


class SpeechEngineError(RuntimeError):
    """An engine is missing (extra not installed) or failed to load."""
