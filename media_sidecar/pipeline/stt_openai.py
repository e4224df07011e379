"""OpenAI transcription (``POST /v1/audio/transcriptions``), one request per utterance.

agi-voice's own VAD cuts the utterance (local endpointing); it is sent as a 16-bit 8 kHz WAV
in ``multipart/form-data``, and the JSON answer's ``text`` is the caller's turn.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Mapping
from urllib.parse import urlsplit

import httpx

from ..config.schema import SttConfig
from ..providers.base import api_key
from ..providers.openai_realtime import iso_639_1
from ..providers.ws import error_message
from .base import Net, ProviderError, http_error

OPENAI_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-transcribe"
"""gpt-4o-mini-transcribe, gpt-4o-transcribe and whisper-1 shut down 2027-02-26 (SDK 3.63)."""


def wav_bytes(pcm: bytes, rate: int = 8000) -> bytes:
    """slin ``pcm`` as a mono 16-bit WAV file."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


class OpenAITranscriber:
    """Implements :class:`~media_sidecar.pipeline.base.Transcriber` for ``engine: openai``."""

    name = "openai"

    def __init__(self, cfg: SttConfig, env: Mapping[str, str], language: str,
                 net: Net | None = None) -> None:
        self.cfg = cfg
        self.net = net or Net()
        self.url = (cfg.url or OPENAI_URL).rstrip("/") + "/audio/transcriptions"
        self.key = api_key(env, cfg.api_key_env or "OPENAI_API_KEY")
        self.model = cfg.model or DEFAULT_MODEL
        self.language = iso_639_1(cfg.language or language)

    async def transcribe(self, pcm: bytes) -> str:
        what = f"OpenAI transcription at {urlsplit(self.url).hostname}"
        data = {"model": self.model, "response_format": "json"}
        if self.language:
            data["language"] = self.language
        if self.cfg.prompt:
            data["prompt"] = self.cfg.prompt
        files = {"file": ("utterance.wav", wav_bytes(pcm), "audio/wav")}
        try:
            resp = await self.net.http.post(self.url, data=data, files=files,
                                            headers={"Authorization": f"Bearer {self.key}"},
                                            timeout=self.cfg.timeout)
        except httpx.HTTPError as exc:
            raise http_error(what, exc) from None
        if resp.status_code != 200:
            raise http_error(what, status=resp.status_code, detail=error_message(resp.content))
        try:
            text = resp.json().get("text", "")
        except (ValueError, AttributeError, RecursionError):
            raise ProviderError(f"{what} sent an unreadable answer", retryable=True) from None
        return str(text).strip()
