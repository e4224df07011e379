"""One ``/v1/listen`` connection: audio through the energy VAD into scripted Results, the client's
control messages, the idle watchdog and the scripted faults."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import trio
import trio_websocket

from tests.mocks.deepgram_agent.audio import VAD_FRAME_MS, EnergyVad, InputDecoder
from tests.mocks.deepgram_ws import DeepgramWsSession

from .script import MEDIA, ListenLog, ListenScript, Utterance
from .wire import ListenParams, metadata, results, shown_words

__all__ = ["ListenSession"]

QUEUE_SIZE = 64
"""Finals waiting out ``final_delay``; more is a runaway client (recorded, dropped)."""


class ListenSession(DeepgramWsSession):
    """The reader task decodes audio and handles client messages in order; every 20 ms VAD
    frame advances the audio clock (``frames``) that all transcript times are in. Finals
    delayed by ``final_delay`` go out from a worker task, in order. Sends are shielded, so a
    cancellation lands between messages, never inside one."""

    def __init__(
        self,
        script: ListenScript,
        ws: trio_websocket.WebSocketConnection,
        log: ListenLog,
        nursery: trio.Nursery,
        transport: trio.abc.Stream,
    ) -> None:
        assert log.params is not None
        self.script, self.ws, self.log, self.nursery = script, ws, log, nursery
        self.params: ListenParams = log.params
        self.transport = transport
        self.closed = False
        rate = self.params.sample_rate * self.params.channels  # interleaved channels: one VAD
        self.decoder = InputDecoder(self.params.encoding, rate)
        end_ms = self.params.endpointing
        self.vad = EnergyVad(
            rate,
            script.vad_rms,
            script.vad_start_ms,
            max(1, end_ms if end_ms is not None else script.segment_ms),
        )
        self.start_frames = math.ceil(script.vad_start_ms / VAD_FRAME_MS)
        self.rest = np.empty(0, dtype=np.int16)
        self.frames = 0
        self.sha = hashlib.sha256()
        self.created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        self.last_activity = trio.current_time()
        self.current: Utterance | None = None
        self.start_frame = 0
        self.last_loud = 0.0
        self.segment_start = 0.0
        self.last_word_end: float | None = None
        """Armed UtteranceEnd: the end of the last word of the latest final."""
        self.finals_in, self.finals_out = trio.open_memory_channel[
            tuple[float, Utterance, dict[str, Any], bool]
        ](QUEUE_SIZE)
        self.pending = 0
        self.drained = trio.Event()
        self.meta = {
            "request_id": log.request_id,
            "model_info": {
                "name": script.model_name,
                "version": script.model_version,
                "arch": script.model_arch,
            },
            "model_uuid": script.model_uuid,
        }

    @property
    def cursor(self) -> float:
        """Seconds of audio received and run through the VAD."""
        return self.frames * VAD_FRAME_MS / 1000

    # -- plumbing ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Handle client frames until either side closes."""
        if self.script.idle_timeout is not None:
            self.nursery.start_soon(self._idle_watch, self.script.idle_timeout)
        if self.script.final_delay > 0:
            self.nursery.start_soon(self._finals_worker)
        if not self.decoder.decodes:
            self.log.problems.append(
                f"encoding {self.params.encoding} is not decoded by the mock: no transcripts"
            )
        while not self.closed:
            try:
                message = await self.ws.get_message()
            except trio_websocket.ConnectionClosed:
                self.log._close("client")
                break
            self.last_activity = trio.current_time()
            if isinstance(message, bytes):
                await self._on_audio(message)
            else:
                await self._on_text(message)
        self.nursery.cancel_scope.cancel()

    # -- client frames ----------------------------------------------------------------------------
    async def _on_text(self, text: str) -> None:
        message = await self._parse_text(text)
        if message is None:
            return
        type_name = message["type"]
        if type_name == "KeepAlive":
            self.log.keepalive_times.append(self.last_activity)
        elif type_name == "Finalize":
            if self.current is not None:
                await self._finish(speech_final=False, from_finalize=True)
        elif type_name == "CloseStream":
            await self._close_stream()
        elif type_name == "Configure":
            await self._on_configure(message)
        else:
            self.log.problems.append(f"unknown message type {type_name!r}")
            await self._close(1008, "DATA-0000", "undecodable")
        self.log._bump(False, type_name)

    async def _on_configure(self, message: dict[str, Any]) -> None:
        """SDK 7.17's ``Configure`` (not in the asyncapi copy): keyterms acknowledged."""
        keyterms = message.get("keyterms", [])
        if isinstance(keyterms, list) and all(isinstance(k, str) for k in keyterms):
            await self.send(
                {
                    "type": "ConfigureSuccess",
                    "request_id": self.log.request_id,
                    "keyterms": keyterms,
                }
            )
        else:
            await self.send(
                {
                    "type": "ConfigureFailure",
                    "request_id": self.log.request_id,
                    "code": "INVALID_KEYTERMS",
                    "description": "keyterms: strings",
                }
            )

    async def _close_stream(self) -> None:
        """Finalize what is being said, wait for pending finals, Metadata, close 1000."""
        if self.current is not None:
            await self._finish(speech_final=False, from_finalize=False)
        if self.pending:
            await self.drained.wait()
        await self.send(
            metadata(
                request_id=self.log.request_id,
                sha256=self.sha.hexdigest(),
                created=self.created,
                duration=self.log.audio_in_ms / 1000,
                channels=self.params.channels,
            )
        )
        await self._close(1000, "", "close_stream")

    async def _on_audio(self, raw: bytes) -> None:
        log = self.log
        log.audio_in_frames += 1
        log.audio_in_bytes += len(raw)
        log._bump(False, MEDIA)
        if not raw:  # the deprecated way to close the stream
            log.problems.append("empty binary frame (deprecated CloseStream)")
            await self._close_stream()
            return
        self.sha.update(raw)
        if not self.decoder.decodes:
            return
        log.audio_in_ms += self.decoder.ms(len(raw))
        samples = self.decoder.decode(raw)
        if self.rest.size:
            samples = np.concatenate((self.rest, samples))
        size = self.vad.frame
        n = samples.size // size
        self.rest = samples[n * size :]
        for k in range(n):
            await self._on_frame(samples[k * size : (k + 1) * size])
            if self.closed:
                return

    # -- speech -----------------------------------------------------------------------------------
    async def _on_frame(self, x: np.ndarray) -> None:
        vad, params = self.vad, self.params
        was = vad.speaking
        changes = vad.feed(x)
        self.frames += 1
        started, ended = changes == [True], changes == [False]
        loud = started or (was and not ended and vad.quiet_ms == 0) or (not was and vad.loud_ms > 0)
        if loud:
            self.last_loud = self.cursor
        if started:
            await self._speech_started()
        utt = self.current
        if utt is not None and params.interim_results and not ended:
            elapsed_ms = (self.frames - self.start_frame) * VAD_FRAME_MS
            if elapsed_ms >= (utt.interims + 1) * self.script.interim_ms:
                await self._interim(utt)
        if ended and utt is not None:
            await self._finish(speech_final=params.endpointing is not None, from_finalize=False)
        await self._check_utterance_end()

    async def _speech_started(self) -> None:
        n = len(self.log.utterances) + 1
        t = self.script.transcripts
        self.start_frame = self.frames - self.start_frames
        utt = Utterance(
            n=n,
            transcript=t[n - 1] if n <= len(t) else f"utterance {n}",
            speech_start=self.start_frame * VAD_FRAME_MS / 1000,
            started_at=trio.current_time(),
        )
        self.log.utterances.append(utt)
        self.current = utt
        self.last_word_end = None  # new words are coming: no UtteranceEnd for the old ones
        if self.params.vad_events:
            await self.send(
                {"type": "SpeechStarted", "channel": [0], "timestamp": round(utt.speech_start, 3)}
            )

    def _results(self, utt: Utterance, n_words: int, **flags: bool) -> dict[str, Any]:
        words = shown_words(utt.transcript, self.params.punctuated)[:n_words]
        return results(
            words=words,
            punctuated=self.params.punctuated,
            span=(self.segment_start, self.cursor),
            words_span=(utt.speech_start, self.last_loud),
            confidence=self.script.confidence,
            meta=self.meta,
            **flags,
        )

    async def _interim(self, utt: Utterance) -> None:
        utt.interims += 1
        await self.send(
            self._results(
                utt, utt.interims, is_final=False, speech_final=False, from_finalize=False
            )
        )

    async def _finish(self, *, speech_final: bool, from_finalize: bool) -> None:
        """End the current utterance: its final Results now, or after ``final_delay``."""
        utt = self.current
        assert utt is not None
        self.current = None
        vad = self.vad
        vad.speaking, vad.loud_ms, vad.quiet_ms = False, 0, 0  # Finalize cuts the VAD's turn too
        utt.speech_end = self.last_loud
        utt.ended_at = trio.current_time()
        utt.speech_final, utt.from_finalize = speech_final, from_finalize
        message = self._results(
            utt, 10**6, is_final=True, speech_final=speech_final, from_finalize=from_finalize
        )
        has_words = bool(message["channel"]["alternatives"][0]["words"])
        self.segment_start = self.cursor
        delay = self.script.final_delay
        if delay <= 0:
            await self._send_final(utt, message, has_words)
            return
        try:
            self.finals_in.send_nowait((trio.current_time() + delay, utt, message, has_words))
        except trio.WouldBlock:
            self.log.problems.append(f"final queue full: dropped utterance {utt.n}")
            return
        if self.pending == 0:
            self.drained = trio.Event()
        self.pending += 1

    async def _finals_worker(self) -> None:
        async for due, utt, message, has_words in self.finals_out:
            await trio.sleep_until(due)
            await self._send_final(utt, message, has_words)
            self.pending -= 1
            if self.pending == 0:
                self.drained.set()

    async def _send_final(self, utt: Utterance, message: dict[str, Any], has_words: bool) -> None:
        await self.send(message)
        utt.final_sent_at = trio.current_time()
        if has_words and self.params.utterance_end_ms and utt is self.log.utterances[-1]:
            assert utt.speech_end is not None
            self.last_word_end = round(utt.speech_end, 3)
        if self.script.disconnect_after_utterances == utt.n:
            await self._abort("disconnect_after_utterances")
        elif self.script.close_after_utterances == utt.n:
            await self._close(1011, "NET-0000", "close_after_utterances")

    async def _check_utterance_end(self) -> None:
        """``UtteranceEnd`` once ``utterance_end_ms`` of audio passed since the last word of the
        latest final (audio time: like the live service, it needs audio to keep coming)."""
        end, ms = self.last_word_end, self.params.utterance_end_ms
        if end is None or ms is None or self.current is not None:
            return
        if round((self.cursor - end) * 1000) >= ms:
            self.last_word_end = None
            await self.send({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": end})
