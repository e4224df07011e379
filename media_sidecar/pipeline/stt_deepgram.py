"""Deepgram streaming speech-to-text (``/v1/listen``): one WebSocket per call.

All caller audio is streamed (linear16 8 kHz, the call's own format); Deepgram's endpointing
ends the caller's turn. ``is_final`` results are collected; ``speech_final`` (a pause) or
``UtteranceEnd`` (no words for ``utterance_end_ms``, the backstop in noise) releases them as
one :class:`~.base.SttFinal`. ``KeepAlive`` goes out when no audio was sent for a while
(Deepgram closes a socket silent for 10 s).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from urllib.parse import urlencode, urlsplit, urlunsplit

import trio
import trio_websocket

from ..config.schema import SttConfig
from ..protocol.wirejson import loads_object, number, obj, objects, string
from ..providers.base import api_key
from ..providers.ws import Outbox, open_provider_ws, receive
from .base import Net, SttEvent, SttFinal, SttInterim, SttSpeechStarted

log = logging.getLogger("agi_voice.stt")

DEEPGRAM_URL = "wss://api.deepgram.com/v1/listen"
DEFAULT_MODEL = "nova-3"
KEEPALIVE_SECONDS = 4.0
BYTES_PER_MS = 16
"""linear16 at 8 kHz."""


class DeepgramListen:
    """Implements :class:`~media_sidecar.pipeline.base.StreamingStt` for ``engine: deepgram``."""

    name = "deepgram"

    def __init__(self, cfg: SttConfig, env: Mapping[str, str], language: str,
                 net: Net | None = None) -> None:
        self.cfg = cfg
        self.net = net or Net()
        self.key = api_key(env, cfg.api_key_env or "DEEPGRAM_API_KEY")
        params: list[tuple[str, str | int]] = [
            ("model", cfg.model or DEFAULT_MODEL), ("encoding", "linear16"),
            ("sample_rate", 8000), ("channels", 1), ("interim_results", "true"),
            ("endpointing", cfg.endpointing_ms), ("utterance_end_ms", cfg.utterance_end_ms),
            ("vad_events", "true"), ("smart_format", "true"),
            ("language", cfg.language or language or "en"),
        ]
        params += [("keyterm", k) for k in cfg.keyterms]
        base = urlsplit(cfg.url or DEEPGRAM_URL)
        self.url = urlunsplit((base.scheme, base.netloc, base.path, urlencode(params), ""))
        self.outbox = Outbox(lambda b: b)
        self.request_id = ""
        self.finals = 0
        self._pending: list[str] = []
        self._last_end: float | None = None

    def send_audio(self, pcm: bytes) -> None:
        self.outbox.send_audio(pcm, BYTES_PER_MS)

    async def run(self, on_event: Callable[[SttEvent], None], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        headers = [(b"Authorization", f"Token {self.key}".encode())]
        async with open_provider_ws(self.net.ws(self.cfg.timeout), self.url, headers,
                                    "Deepgram STT") as ws, trio.open_nursery() as nursery:
            nursery.start_soon(self.outbox.run, ws)
            nursery.start_soon(self._keepalive)
            task_status.started()
            await self._read(ws, on_event)

    async def _keepalive(self) -> None:
        while True:
            await trio.sleep(1.0)
            if trio.current_time() - self.outbox.last_audio_sent >= KEEPALIVE_SECONDS:
                self.outbox.send_json({"type": "KeepAlive"})
                self.outbox.last_audio_sent = trio.current_time()

    async def _read(self, ws: trio_websocket.WebSocketConnection,
                    on_event: Callable[[SttEvent], None]) -> None:
        while True:
            msg = await receive(ws)
            if isinstance(msg, bytes):
                continue
            data = loads_object(msg)
            if data is None:
                continue
            kind = data.get("type")
            if kind == "Results":
                self._result(data, on_event)
            elif kind == "UtteranceEnd":
                self._release(on_event, data.get("last_word_end"))
            elif kind == "SpeechStarted":
                on_event(SttSpeechStarted(number(data.get("timestamp")) or 0.0))
            elif kind == "Metadata":
                self.request_id = str(data.get("request_id", ""))

    def _result(self, data: Mapping[str, object], on_event: Callable[[SttEvent], None]) -> None:
        alts = objects(obj(data.get("channel")).get("alternatives")) or [{}]
        text = string(alts[0].get("transcript")).strip()
        words = objects(alts[0].get("words"))
        end = number(words[-1].get("end")) if words else None
        if end is not None:
            self._last_end = end
        if not data.get("is_final"):
            if text:
                on_event(SttInterim(" ".join([*self._pending, text])))
            return
        if text:
            self._pending.append(text)
        if data.get("speech_final"):
            self._release(on_event, None)

    def _release(self, on_event: Callable[[SttEvent], None], last_end: object) -> None:
        if not self._pending:
            return
        text = " ".join(self._pending)
        self._pending = []
        self.finals += 1
        end = number(last_end)
        if end is None:
            end = self._last_end
        on_event(SttFinal(text, end))
