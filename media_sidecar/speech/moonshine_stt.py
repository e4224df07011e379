"""Offline speech-to-text with Moonshine (package ``moonshine-voice``, the ``local`` extra).

Moonshine's tiny English model (26 MB, bundled with the package) transcribes a finished
utterance in about a tenth of its duration on one core, and accepts 8 kHz audio directly, so
the caller's audio goes in as it comes off the call.

Threading: each model is loaded once per process and shared by every call. The C library
serialises work on one transcriber anyway, but its Python wrapper reads the returned
transcript after the C call returns, and that memory is only valid "until the next call to that
transcriber"; so a lock spans call and read. Concurrent utterances queue on it (about 0.1-0.2 s
each); a busier deployment runs more sidecar processes.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from ..dsp.levels import dbfs
from .base import SpeechEngineError

log = logging.getLogger("agi_voice.speech")

__all__ = ["MODEL_ARCHES", "MoonshineStt", "load_transcriber"]

SCORER_THREADS = 1
"""onnxruntime threads of the acoustic scorer (:mod:`.moonshine_scorer`); the inference
processes set it from ``sidecar.inference.threads``."""

INSTALL_HINT = "install the 'local' extra: pip install 'agi-voice[local]'"

MODEL_ARCHES = {
    "tiny-en": "TINY",
    "base-en": "BASE",
}
"""Model names this engine knows, with their ``moonshine_voice.ModelArch`` member names."""

SILENCE_DBFS = -60.0
"""Utterances quieter than this (RMS) are not transcribed: the model "hears" words such as
"You" in silence, and nothing that quiet is a caller talking."""


class _Loaded:
    """A loaded transcriber and the lock that serialises its use."""

    def __init__(self, transcriber: Any) -> None:
        self.transcriber = transcriber
        self.lock = threading.Lock()


_CACHE: dict[str, _Loaded] = {}
_CACHE_LOCK = threading.Lock()


def load_transcriber(model: str) -> _Loaded:
    """Load Moonshine ``model`` (e.g. "tiny-en") once per process; later calls return it.

    Blocking (about 0.5 s the first time): call it from a worker thread. Raises
    SpeechEngineError if moonshine-voice is not installed, the model is unknown or missing,
    or loading fails.
    """
    with _CACHE_LOCK:
        loaded = _CACHE.get(model)
        if loaded is not None:
            return loaded
        arch_name = MODEL_ARCHES.get(model)
        if arch_name is None:
            known = ", ".join(sorted(MODEL_ARCHES))
            raise SpeechEngineError(f"unknown Moonshine model {model!r}; known models: {known}")
        try:
            from moonshine_voice import ModelArch
            from moonshine_voice.transcriber import Transcriber
            from moonshine_voice.utils import get_model_path
        except ImportError as exc:
            raise SpeechEngineError(
                f"Moonshine STT is not available ({exc}); {INSTALL_HINT}"
            ) from exc
        path = get_model_path(model)
        if not path.is_dir():
            raise SpeechEngineError(
                f"Moonshine model {model!r} not found at {path}; "
                f"fetch it with: python -m moonshine_voice.download --language en"
            )
        try:
            transcriber = Transcriber(str(path), model_arch=ModelArch[arch_name])
        except Exception as exc:  # the library raises its own MoonshineError and OSError
            raise SpeechEngineError(f"cannot load Moonshine model {model!r}: {exc}") from exc
        loaded = _CACHE[model] = _Loaded(transcriber)
        return loaded


class MoonshineStt:
    """Moonshine speech-to-text. Implements :class:`~media_sidecar.speech.base.SpeechToText`.

    Construction is cheap; the model loads on the first :meth:`transcribe` (or call
    :meth:`load` in a worker thread at startup to take that second off the first call).
    """

    name = "moonshine"

    def __init__(self, model: str = "tiny-en") -> None:
        """Raises SpeechEngineError for a model name this engine does not know."""
        if model not in MODEL_ARCHES:
            known = ", ".join(sorted(MODEL_ARCHES))
            raise SpeechEngineError(f"unknown Moonshine model {model!r}; known models: {known}")
        self.model = model

    def load(self) -> None:
        """Load the model now (blocking). Raises SpeechEngineError as load_transcriber does."""
        load_transcriber(self.model)

    def warm(self) -> None:
        """Run the model and the acoustic scorer once on a second of quiet noise (blocking),
        so the first caller does not pay for onnxruntime's first run (its arenas and kernel
        choices): about 300 ms more on a process's first re-scoring, which on the real-Asterisk
        tier pushed a first answer past ``filler.after`` and behind the filler (2.0 s against
        0.9 s). A warm-up that fails is only a slower first turn."""
        noise = (np.random.default_rng(0).standard_normal(8000) * 300).astype(np.int16)
        try:
            self.transcribe(noise, 8000)
            self.score(noise, 8000, ["hello", "goodbye"])
        except (SpeechEngineError, ValueError) as exc:
            log.warning("Moonshine %s warm-up failed: %s", self.model, exc)

    def transcribe(self, pcm: np.ndarray, rate: int) -> str:
        """Transcribe one utterance of int16 mono PCM at ``rate`` Hz (8000 or 16000 are best).

        Returns the text of all lines joined by spaces ("" for no speech, and without running
        the model for audio below :data:`SILENCE_DBFS`). Blocking and
        thread-safe: run it in a worker thread. Raises SpeechEngineError if the engine cannot
        be loaded or transcription fails, ValueError for samples that are not 1-D int16.
        """
        samples = np.asarray(pcm)
        if samples.ndim != 1 or samples.dtype.kind != "i" or samples.dtype.itemsize != 2:
            raise ValueError(
                f"expected 1-D int16 samples, got {samples.dtype} of shape {samples.shape}"
            )
        if samples.size == 0 or dbfs(samples) < SILENCE_DBFS:
            return ""
        # The wrapper copies a Python sequence into a ctypes array; a list is its fast path.
        audio = (samples.astype(np.float32) / 32768.0).tolist()
        loaded = load_transcriber(self.model)
        with loaded.lock:
            try:
                transcript = loaded.transcriber.transcribe_without_streaming(
                    audio, sample_rate=rate
                )
            except Exception as exc:  # MoonshineError and ctypes errors
                raise SpeechEngineError(f"Moonshine transcription failed: {exc}") from exc
            texts = [line.text.strip() for line in transcript.lines]
        return " ".join(t for t in texts if t)

    def score(self, pcm: np.ndarray, rate: int, texts: list[str]) -> list[float]:
        """Each of ``texts`` scored against the utterance by the model's own decoder (its
        log-probability; the first text is the free transcript, the others are decoded from
        where they part from it), then the score of the model's own decoding of the audio: :meth:`.moonshine_scorer.MoonshineScorer.score`. Blocking and
        thread-safe. Raises SpeechEngineError if the model cannot be loaded or fails,
        ValueError for samples that are not 1-D int16."""
        from .moonshine_scorer import load_scorer

        samples = np.asarray(pcm)
        if samples.ndim != 1 or samples.dtype.kind != "i" or samples.dtype.itemsize != 2:
            raise ValueError(
                f"expected 1-D int16 samples, got {samples.dtype} of shape {samples.shape}"
            )
        return load_scorer(self.model, SCORER_THREADS).score(samples, rate, texts)
