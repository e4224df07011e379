"""Speech engines for the local pipeline, chosen per assistant by name in the YAML config.

:func:`make_stt` and :func:`make_tts` build an engine from its config section and, by default,
load its model (blocking, about 0.5 s for Moonshine and 1.5 s for Piper, once per process), so
a missing engine is found at startup rather than on a caller's first sentence. Engine modules
are imported only when their engine is asked for, so a deployment without the ``local`` extra
never touches them.
"""

from __future__ import annotations

from ..config.schema import SttConfig, TtsConfig
from .base import SpeechEngineError, SpeechToText, TextToSpeech

__all__ = ["STT_ENGINES", "TTS_ENGINES", "make_stt", "make_tts", "set_threads"]

STT_ENGINES = ("moonshine",)
TTS_ENGINES = ("piper",)


def set_threads(threads: int) -> None:
    """Limit onnxruntime to ``threads`` intra-op threads in engines loaded from now on (the
    inference processes call it first; 0 leaves onnxruntime's default, one per core).

    Piper gets session options; Moonshine's C library has only a switch to one thread
    (``MOONSHINE_ORT_SINGLE_THREAD``), so more than one leaves it at its default.
    """
    import os

    from . import moonshine_stt, piper_tts

    piper_tts.ORT_THREADS = threads
    moonshine_stt.SCORER_THREADS = threads
    if threads == 1:
        os.environ["MOONSHINE_ORT_SINGLE_THREAD"] = "1"


def make_stt(cfg: SttConfig, *, load: bool = True) -> SpeechToText:
    """The speech-to-text engine ``cfg`` names, with its model loaded unless ``load=False``
    (then it loads on first use).

    Raises SpeechEngineError naming the engine if it is unknown, and naming the model if it is
    unknown, not installed or fails to load.
    """
    if cfg.engine == "moonshine":
        from .moonshine_stt import MoonshineStt

        stt = MoonshineStt(cfg.model or "tiny-en")
        if load:
            stt.load()
        return stt
    raise SpeechEngineError(
        f"unknown STT engine {cfg.engine!r}; available: {', '.join(STT_ENGINES)}"
    )


def make_tts(cfg: TtsConfig, *, load: bool = True) -> TextToSpeech:
    """The text-to-speech engine ``cfg`` names, with its voice loaded unless ``load=False``
    (then it loads on first use).

    Raises SpeechEngineError naming the engine if it is unknown, and naming the voice if it is
    unknown, not installed or fails to load; ValueError for a speed outside 0.25..4.
    """
    if cfg.engine == "piper":
        from .piper_tts import PiperTts

        tts = PiperTts(cfg.voice or "joe-us", speed=cfg.speed)
        if load:
            tts.load()
        return tts
    raise SpeechEngineError(
        f"unknown TTS engine {cfg.engine!r}; available: {', '.join(TTS_ENGINES)}"
    )
