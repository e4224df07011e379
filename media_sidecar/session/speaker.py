"""The local voice an assistant with ``tts: {engine: piper}`` speaks with.

A :class:`Speaker` holds the voice shared by every call: in production a
:class:`~media_sidecar.speech.local.LocalVoice` (the inference pool and the sentence cache of
that voice; no model in this process), in tests any
:class:`~media_sidecar.speech.base.TextToSpeech`.
:class:`~media_sidecar.pipeline.tts_local.LocalSynth` says sentences with it one by one (a
cached one from memory), and :class:`~media_sidecar.session.voice.Voice` streams the audio
into the playout.
"""

from __future__ import annotations

from ..speech.base import TextToSpeech


class Speaker:
    def __init__(self, tts: TextToSpeech) -> None:
        self.tts = tts
