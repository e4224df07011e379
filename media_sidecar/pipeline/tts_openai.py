"""OpenAI speech (``POST /v1/audio/speech``): raw PCM 24 kHz, streamed as it is generated.

One request per sentence; the response body is read as it arrives and handed on in whole
samples (a chunk boundary may split one). Cancelling a sentence closes its request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import numpy as np
import trio

from ..config.schema import TtsConfig
from ..providers.base import api_key
from .base import Net, post_for_pcm

OPENAI_URL = "https://api.openai.com/v1"
RATE = 24000
DEFAULT_MODEL = "gpt-4o-mini-tts"
"""Every /v1/audio/speech model (tts-1, tts-1-hd, gpt-4o-mini-tts and its snapshot) shuts down
2027-01-06 and OpenAI names no speech-endpoint replacement (its TTS guide points to
gpt-realtime-2.1-mini over the Realtime API, which this endpoint does not serve). Kept as the
default until then; past it, use ``tts: deepgram`` or ``piper``, or a speech-to-speech provider."""


class OpenAISpeech:
    """Implements :class:`~media_sidecar.pipeline.base.SpeechSynth` for ``engine: openai``."""

    name = "openai"
    rate = RATE

    def __init__(self, cfg: TtsConfig, env: Mapping[str, str], net: Net | None = None) -> None:
        self.cfg = cfg
        self.net = net or Net()
        self.url = (cfg.url or OPENAI_URL).rstrip("/") + "/audio/speech"
        self.key = api_key(env, cfg.api_key_env or "OPENAI_API_KEY")
        self.model = cfg.model or DEFAULT_MODEL

    async def start(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        task_status.started()

    def body(self, text: str) -> dict[str, object]:
        body: dict[str, object] = {"model": self.model, "input": text[:4096],
                                   "voice": self.cfg.voice or "marin", "response_format": "pcm",
                                   "speed": self.cfg.speed}
        if self.cfg.instructions and not self.model.startswith("tts-1"):
            body["instructions"] = self.cfg.instructions
        return body

    async def stream(self, text: str) -> AsyncIterator[np.ndarray]:
        what = f"OpenAI speech at {urlsplit(self.url).hostname}"
        async for pcm in post_for_pcm(self.net, self.url, body=self.body(text),
                                      headers={"Authorization": f"Bearer {self.key}"},
                                      within=self.cfg.timeout, what=what):
            yield pcm
