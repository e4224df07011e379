"""Deepgram Aura text-to-speech: one streaming WebSocket per call, REST as the fallback.

The socket (``/v1/speak``, linear16 at 8 kHz: the call's own format, nothing to resample) is
opened when the call starts, so the greeting does not wait for it. Each sentence is ``Speak``
then ``Flush``; its audio streams back until ``Flushed``. A cancelled sentence (barge-in)
sends ``Clear``: audio still in flight is dropped until ``Cleared``, and the next sentence
waits for it. When the socket cannot be opened or dies, sentences go by REST
(``POST /v1/speak``, the body streamed as it is generated) for the rest of the call.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np
import trio
import trio_websocket

from ..config.schema import TtsConfig
from ..protocol.wirejson import loads_object
from ..providers.base import api_key
from ..providers.ws import open_provider_ws, receive
from .base import Net, PcmJoiner, ProviderError, post_for_pcm

log = logging.getLogger("agi_voice.tts")

DEEPGRAM_URL = "wss://api.deepgram.com/v1/speak"
DEFAULT_VOICE = "aura-2-thalia-en"
RATE = 8000
CLEAR_WAIT = 1.0
"""How long the next sentence waits for ``Cleared`` after a barge-in."""

_END = None
_REFUSED = False
"""Put in a sentence's channel when Deepgram refused its Flush (a Warning): say it by REST."""
FLUSH_LIMIT = 20
FLUSH_WINDOW = 60.0
"""Deepgram accepts 20 Flushes per 60 s on a socket; a sentence beyond that goes by REST."""


class DeepgramSpeech:
    """Implements :class:`~media_sidecar.pipeline.base.SpeechSynth` for ``engine: deepgram``."""

    name = "deepgram"
    rate = RATE

    def __init__(self, cfg: TtsConfig, env: Mapping[str, str], net: Net | None = None) -> None:
        self.cfg = cfg
        self.net = net or Net()
        self.key = api_key(env, cfg.api_key_env or "DEEPGRAM_API_KEY")
        query = urlencode({"model": cfg.voice or DEFAULT_VOICE, "encoding": "linear16",
                           "sample_rate": RATE, **({"speed": cfg.speed} if cfg.speed != 1 else {})})
        base = urlsplit(cfg.url or DEEPGRAM_URL)
        self.ws_url = urlunsplit((base.scheme, base.netloc, base.path, query, ""))
        http_scheme = {"wss": "https", "ws": "http"}.get(base.scheme, base.scheme)
        self.rest_url = urlunsplit((http_scheme, base.netloc, base.path,
                                    query + "&container=none", ""))
        self.ws: trio_websocket.WebSocketConnection | None = None
        self.ws_error = ""
        """Why the socket is not used (empty while it is)."""
        self.rest_sentences = 0
        self.audio_dropped = 0
        """Audio messages dropped after a Clear (the cut sentence's tail)."""
        self._ready = trio.Event()
        self._sink: trio.MemorySendChannel[bytes | bool | None] | None = None
        self._cleared = trio.Event()
        self._cleared.set()
        self._flushes: deque[float] = deque()

    @property
    def _headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"Authorization", f"Token {self.key}".encode())]

    async def start(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        task_status.started()  # sentences wait for the socket themselves (or use REST)
        if not self.cfg.streaming:
            self._give_up("streaming is off")
            return
        try:
            connect = self.net.ws(self.cfg.timeout)
            async with open_provider_ws(connect, self.ws_url, self._headers,
                                        "Deepgram TTS") as ws:
                self.ws = ws
                self._ready.set()
                await self._read(ws)
        except ProviderError as exc:
            self._give_up(str(exc))

    def _give_up(self, why: str) -> None:
        if not self.ws_error:
            log.warning("Deepgram TTS socket not used (%s); sentences go by REST", why)
        self.ws, self.ws_error = None, why or "closed"
        self._ready.set()
        if self._sink is not None:
            self._sink.close()

    async def _read(self, ws: trio_websocket.WebSocketConnection) -> None:
        while True:
            msg = await receive(ws)
            if isinstance(msg, bytes):
                if self._sink is not None:
                    self._sink.send_nowait(msg)
                else:
                    self.audio_dropped += 1
                continue
            data = loads_object(msg)
            if data is None:
                continue
            kind = data.get("type")
            if kind == "Flushed" and self._sink is not None:
                self._sink.send_nowait(_END)
            elif kind == "Cleared":
                self._cleared.set()
            elif kind in ("Warning", "Error"):
                log.warning("Deepgram TTS %s: %s", kind, str(data.get("description", ""))[:200])
                if self._sink is not None:
                    self._sink.send_nowait(_REFUSED)

    async def stream(self, text: str) -> AsyncIterator[np.ndarray]:
        with trio.move_on_after(self.cfg.timeout):
            await self._ready.wait()
        with trio.move_on_after(CLEAR_WAIT):
            await self._cleared.wait()
        ws = self.ws
        now = trio.current_time()
        while self._flushes and now - self._flushes[0] >= FLUSH_WINDOW:
            self._flushes.popleft()
        if ws is None or len(self._flushes) >= FLUSH_LIMIT:
            async for pcm in self._rest(text):
                yield pcm
            return
        self._flushes.append(now)
        refused = False
        send, recv = trio.open_memory_channel[bytes | bool | None](float("inf"))
        self._sink = send
        done = False
        joiner = PcmJoiner()
        try:
            await ws.send_message(json.dumps({"type": "Speak", "text": text}))
            await ws.send_message(json.dumps({"type": "Flush"}))
            async for data in recv:
                if data is _END:
                    done = True
                    break
                if data is _REFUSED or not isinstance(data, bytes):
                    refused = True
                    break
                samples = joiner.feed(data)
                if samples is not None:
                    yield samples
        except trio_websocket.ConnectionClosed:
            self._give_up("the socket closed")
        finally:
            self._sink = None
            if not done and self.ws is ws:
                self._cleared = trio.Event()
                with trio.CancelScope(shield=True), trio.move_on_after(0.5):
                    try:
                        await ws.send_message(json.dumps({"type": "Clear"}))
                    except trio_websocket.ConnectionClosed:
                        self._cleared.set()
        if refused or (not done and self.ws is None):  # refused, or the socket died: REST
            async for pcm in self._rest(text):
                yield pcm

    async def _rest(self, text: str) -> AsyncIterator[np.ndarray]:
        self.rest_sentences += 1
        what = f"Deepgram TTS at {urlsplit(self.rest_url).hostname}"
        async for pcm in post_for_pcm(self.net, self.rest_url, body={"text": text},
                                      headers={"Authorization": f"Token {self.key}"},
                                      within=self.cfg.timeout, what=what):
            yield pcm
