"""OpenAI speech (``POST /v1/audio/speech``): raw PCM 24 kHz, streamed as it is generated.

One request per sentence; the response body is read as it arrives and handed on in whole
samples (a chunk boundary may split one). Cancelling a sentence closes its request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import httpx
import numpy as np
import trio

from ..config.schema import TtsConfig
from ..providers.base import api_key
from ..providers.ws import error_message
from .base import Net, http_error

OPENAI_URL = "https://api.openai.com/v1"
RATE = 24000


class OpenAISpeech:
    """Implements :class:`~media_sidecar.pipeline.base.SpeechSynth` for ``engine: openai``."""

    name = "openai"
    rate = RATE

    def __init__(self, cfg: TtsConfig, env: Mapping[str, str], net: Net | None = None) -> None:
        self.cfg = cfg
        self.net = net or Net()
        self.url = (cfg.url or OPENAI_URL).rstrip("/") + "/audio/speech"
        self.key = api_key(env, cfg.api_key_env or "OPENAI_API_KEY")
        self.model = cfg.model or "gpt-4o-mini-tts"

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
        headers = {"Authorization": f"Bearer {self.key}"}
        rest = b""
        try:
            async with self.net.http.stream(
                    "POST", self.url, timeout=self.cfg.timeout, json=self.body(text), headers=headers) as resp:
                if resp.status_code != 200:
                    raise http_error(what, status=resp.status_code,
                                     detail=error_message(await resp.aread()))
                async for data in resp.aiter_bytes():
                    data = rest + data
                    cut = len(data) - len(data) % 2
                    rest = data[cut:]
                    if cut:
                        yield np.frombuffer(data[:cut], dtype="<i2")
        except httpx.HTTPError as exc:
            raise http_error(what, exc) from None
