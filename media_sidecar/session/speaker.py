"""The local voice an assistant with ``tts: {engine: piper}`` speaks with.

A :class:`Speaker` holds the process's loaded TTS engine (one model serves every call);
:class:`~media_sidecar.pipeline.tts_local.LocalSynth` runs it in a worker thread sentence by
sentence, and :class:`~media_sidecar.session.voice.Voice` streams the audio into the playout.
"""

from __future__ import annotations

from ..speech.base import TextToSpeech


class Speaker:
    def __init__(self, tts: TextToSpeech) -> None:
        self.tts = tts
