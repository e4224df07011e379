"""One ``/v1/speak`` WebSocket: the client's Speak / Flush / Clear / Close, the flush queue
spoken by a worker task, the flush limit and the scripted faults."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import trio
import trio_websocket

from tests.mocks.deepgram_ws import DeepgramWsSession

from .audio import SpeakParams
from .script import AUDIO, ClearRecord, FlushRecord, SpeakLog

if TYPE_CHECKING:
    from .server import MockSpeakServer

__all__ = ["SpeakSession"]

QUEUE_SIZE = 64
"""Flushes queued behind the one playing; more is a runaway client (recorded, dropped)."""
FLUSH_LIMIT_CODE = "FLUSH_LIMIT_EXCEEDED"
"""Warning code (the mock's own: the live code is undocumented) past the flush limit."""


class SpeakSession(DeepgramWsSession):
    """The reader task handles client messages in order; a worker speaks the queued flushes
    one at a time, each in its own cancel scope (Clear cancels it). Audio and Flushed sends
    are shielded, so a Clear lands between frames: at most the frame in flight follows it."""

    def __init__(
        self,
        server: MockSpeakServer,
        ws: trio_websocket.WebSocketConnection,
        log: SpeakLog,
        nursery: trio.Nursery,
        transport: trio.abc.Stream,
    ) -> None:
        assert log.params is not None
        self.server, self.script, self.ws, self.log = server, server.script, ws, log
        self.params: SpeakParams = log.params
        self.nursery, self.transport = nursery, transport
        self.closed = False
        self.buffer = ""
        self.next_seq = 0
        self.flush_times: deque[float] = deque()
        self.queue: deque[FlushRecord] = deque()
        self.wakeup = trio.Event()
        self.progress = trio.Event()
        """Set (and replaced) each time the worker finishes a flush."""
        self.playing: FlushRecord | None = None
        self.play_scope = trio.CancelScope()
        self.play_done = trio.Event()
        self.last_activity = trio.current_time()

    # -- plumbing ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Send Metadata, then handle client messages until either side closes."""
        await self.send(
            {
                "type": "Metadata",
                "request_id": self.log.request_id,
                "model_name": self.params.model,
                "model_version": self.script.model_version,
                "model_uuid": self.script.model_uuid,
            }
        )
        self.nursery.start_soon(self._worker)
        if self.script.idle_timeout is not None:
            self.nursery.start_soon(self._idle_watch, self.script.idle_timeout)
        while not self.closed:
            try:
                message = await self.ws.get_message()
            except trio_websocket.ConnectionClosed:
                self.log._close("client")
                break
            self.last_activity = trio.current_time()
            if isinstance(message, bytes):
                self.log.problems.append(f"binary frame of {len(message)} bytes")
                await self._close(1003, "MESSAGE-0000", "binary")
            else:
                await self._on_text(message)
        self.nursery.cancel_scope.cancel()

    # -- client messages --------------------------------------------------------------------------
    async def _on_text(self, text: str) -> None:
        message = await self._parse_text(text)
        if message is None:
            return
        type_name = message["type"]
        if type_name == "Speak" and isinstance(message.get("text"), str):
            self.buffer += message["text"]
            self.log.texts.append(message["text"])
        elif type_name == "Flush":
            await self._flush()
        elif type_name == "Clear":
            await self._clear()
        elif type_name == "Close":
            if self.buffer:
                await self._flush()
            while self.queue or self.playing is not None:
                await self.progress.wait()
            await self._close(1000, "", "close")
        else:
            what = "Speak without a string text" if type_name == "Speak" else "unknown type"
            self.log.problems.append(f"{what}: {text[:80]!r}")
            await self._close(1008, "DATA-0000", "undecodable")
        self.log._bump(False, type_name)

    async def _flush(self) -> None:
        """Queue the buffered text as the next flush, unless past the flush limit (Warning;
        the text stays buffered)."""
        now, script = trio.current_time(), self.script
        while self.flush_times and self.flush_times[0] <= now - script.flush_window:
            self.flush_times.popleft()
        if len(self.flush_times) >= script.flush_limit:
            warning = {
                "type": "Warning",
                "description": f"Flush limit of {script.flush_limit} per "
                f"{script.flush_window:g} seconds exceeded: no more Flush messages are processed "
                "until the window has passed.",
                "code": FLUSH_LIMIT_CODE,
            }
            self.log.warnings.append(warning)
            await self.send(warning)
            return
        if len(self.queue) >= QUEUE_SIZE:
            self.log.problems.append(f"flush queue full: dropped {self.buffer!r}")
            return
        self.flush_times.append(now)
        job = FlushRecord(self.next_seq, self.buffer, now)
        self.next_seq += 1
        self.buffer = ""
        self.log.flushes.append(job)
        self.queue.append(job)
        self.wakeup.set()

    async def _clear(self) -> None:
        """Drop the buffered text and the queued flushes, cut the one playing (waiting until
        its task has stopped), then ``Cleared``."""
        record = ClearRecord(
            trio.current_time(),
            self.next_seq,
            None,
            [j.sequence_id for j in self.queue],
            self.buffer,
        )
        for job in self.queue:
            job.cleared = True
        self.queue.clear()
        self.buffer = ""
        cut = self.playing
        if cut is not None:
            cut.cleared = True
            record.cut = cut.sequence_id
            self.play_scope.cancel()
            await self.play_done.wait()
        self.log.clears.append(record)
        await self.send({"type": "Cleared", "sequence_id": record.sequence_id})

    # -- the audio --------------------------------------------------------------------------------
    async def _worker(self) -> None:
        while True:
            if not self.queue:
                self.wakeup = trio.Event()
                await self.wakeup.wait()
                continue
            job = self.queue.popleft()
            self.playing, self.play_done = job, trio.Event()
            self.play_scope = trio.CancelScope()
            try:
                with self.play_scope:
                    await self._speak(job)
            finally:
                self.playing = None
                self.play_done.set()
                self.progress.set()
                self.progress = trio.Event()

    async def _speak(self, job: FlushRecord) -> None:
        """The flush's audio after ``first_byte_delay`` (counted from the Flush; a queued
        flush starts no earlier than the end of the one before), paced, then Flushed."""
        script, log = self.script, self.log
        clip = self.server.renderer.clip(self.params, job.text)
        job.audio_ms_total = clip.total_ms
        if clip.frames:
            await trio.sleep_until(job.queued_at + script.first_byte_delay)
        disconnect = script.disconnect_on_flush == job.sequence_id + 1
        step = script.chunk_ms / 1000 / script.send_rate if script.send_rate > 0 else 0.0
        t0 = trio.current_time()
        for k, (frame, ms) in enumerate(zip(clip.frames, clip.frame_ms, strict=True)):
            if k and step:
                await trio.sleep_until(t0 + k * step)
            else:
                await trio.lowlevel.checkpoint()
            if disconnect and k == len(clip.frames) // 2:
                await self._abort("disconnect_on_flush")
                await trio.lowlevel.checkpoint()  # the nursery is cancelled: raises Cancelled
            if not await self._send_frame(frame):
                return
            if job.first_audio_at is None:
                job.first_audio_at = trio.current_time()
            job.audio_ms_sent += ms
            job.bytes_sent += len(frame)
            log.audio_out_frames += 1
            log.audio_out_bytes += len(frame)
            log.audio_out_ms += ms
            log._bump(True, AUDIO)
        await trio.lowlevel.checkpoint_if_cancelled()
        await self.send({"type": "Flushed", "sequence_id": job.sequence_id})
        job.flushed_at = trio.current_time()
