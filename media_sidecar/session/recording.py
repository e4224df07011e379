"""Call recordings: a stereo WAV of what the media plane heard (left) and sent (right).

Opt-in per assistant (``recording: true``). A recorded call writes
``<recordings.path>/<YYYY-MM-DD>/<uuid>.wav`` (the UTC date its record started): 16-bit PCM,
two channels, the caller on the left and the agent on the right, at the call's rate (8000 Hz
for slin, ulaw and alaw, 16000 for slin16), one 20 ms frame per frame-clock tick:

- **left**: the caller's audio as the session decoded it (mu-law and A-law to linear, slin16
  as it came), including the silent frames the gap filler makes for a quiet leg
  (:mod:`.gaps`); a tick in which nothing came is silence;
- **right**: each frame the frame clock wrote toward Asterisk at its write phase
  (:meth:`.playout.Playout.next_wire`: agent audio or the idle silence), which is slin 8 kHz on
  every leg, upsampled with a stateful :class:`~media_sidecar.dsp.resample.Resampler` for a
  16 kHz call; a tick whose frame could not be written (a peer not reading) is silence.

Both sides are placed by their trio time on the call's 20 ms grid, counted from the first
frame written: a caller frame is stamped with its tick's write phase (see
:meth:`.base.MediaSession.caller_data`), so the caller and the agent of one tick share a
slot. Frames that a stalled clock read in one burst end at their read's slot.

Nothing here blocks the trio loop: frames are written into an in-memory chunk of
:data:`CHUNK_SECONDS`; a full chunk goes through a bounded queue to one writer thread per
process (:class:`~media_sidecar.ops.recordingfile.RecordingWriter`), which writes it at its
place in the file. The WAV header
is written first with placeholder sizes and patched when the call ends (a file left by a
crash keeps the placeholder: ``sox --ignore-length`` repairs it). When the queue is full or
the disk fails the recording stops there and is marked truncated; the call goes on untouched.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import trio

from ..constants import FRAME_SECONDS, SAMPLE_RATE
from ..dsp.resample import Resampler
from ..ops.recordingfile import (
    CHANNELS,
    CLOSE_TIMEOUT,
    Chunk,
    RecordingFile,
    RecordingWriter,
    recording_writer,
    sweep,
)
from ..protocol.audiosocket import AudioFormat
from .playout import Playout

__all__ = ["CHUNK_SECONDS", "RecordedPlayout", "Recorder", "Recordings"]

log = logging.getLogger("agi_voice.recordings")

CHUNK_SECONDS = 1.0
"""Audio kept in memory per call before it goes to the writer thread."""
_UUID = re.compile(r"^[0-9A-Za-z-]{1,64}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# -- one call ----------------------------------------------------------------------------------


class Recorder:
    """One call's recording, fed on the trio thread (the frame clock's tick) and never blocking.

    :meth:`agent` takes each frame written toward Asterisk, :meth:`caller` each piece of the
    caller's decoded audio and :meth:`caller_silence` each slot the gap filler made silent;
    :meth:`finish` hands the rest to the writer and says what the file holds.
    """

    def __init__(self, path: Path, fmt: AudioFormat, *, writer: RecordingWriter | None = None,
                 chunk_seconds: float = CHUNK_SECONDS, start: float | None = None) -> None:
        """``start``: the call's start (trio time); the file then begins with the whole frames
        that passed before the first one was written (0 or 1 on the frame clock)."""
        self.rate = fmt.rate
        self.file = RecordingFile(path, fmt.rate)
        self.writer = writer or recording_writer()
        self.spf = fmt.rate * 20 // 1000
        """Samples per 20 ms frame at the call's rate."""
        self._chunk_len = max(1, round(chunk_seconds / FRAME_SECONDS)) * self.spf
        self._buf = np.zeros((self._chunk_len, CHANNELS), dtype="<i2")
        self._base = 0
        """Sample index of ``_buf[0]`` (a multiple of the chunk length)."""
        self._dirty = False
        self._start = start
        self._t0: float | None = None
        """Time of the first frame (slot ``_lead``)."""
        self._lead = 0
        self._agent_next = 0
        self._caller_next = 0
        self._pend: list[bytes] = []
        self._pend_t = 0.0
        self._up = Resampler(SAMPLE_RATE, fmt.rate) if fmt.rate != SAMPLE_RATE else None
        self.truncated = False
        """Stopped early: the writer's queue was full, or the disk failed."""

    @property
    def stopped(self) -> bool:
        return self.truncated or bool(self.file.error)

    def _slot(self, t: float) -> int:
        if self._t0 is None:
            self._t0 = t
            if self._start is not None:
                self._lead = max(0, round((t - self._start) / FRAME_SECONDS))
        return self._lead + max(0, int((t - self._t0) / FRAME_SECONDS + 0.5))

    def agent(self, wire: bytes, t: float) -> None:
        """The frame the clock writes at ``t``: an AudioSocket audio message (slin 8 kHz)."""
        if self.stopped:
            return
        self._commit()
        x = np.frombuffer(wire, dtype="<i2", offset=3)  # after the 3-byte kind + length header
        if self._up is not None:
            x = self._up.process(x)
        slot = self._slot(t) * self.spf
        # In step the next frame starts where the last ended (the resampler's output is
        # continuous); a tick without a frame leaves its slot silent.
        start = slot if slot - self._agent_next >= self.spf else self._agent_next
        self._put(1, start, x)
        self._agent_next = start + len(x)

    def caller(self, pcm: bytes, t: float) -> None:
        """Caller audio at the call's rate stamped ``t`` (the session's stamp of its read)."""
        if self.stopped:
            return
        if self._pend and t != self._pend_t:
            self._commit()
        self._pend.append(pcm)
        self._pend_t = t

    def caller_silence(self, t: float) -> None:
        """A slot of the caller's grid the gap filler made silent."""
        if self.stopped:
            return
        self._commit()
        self._caller_next = max(self._caller_next, (self._slot(t) + 1) * self.spf)

    def _commit(self) -> None:
        """Place the caller audio read in one read phase so that it ends at its slot's end (a
        burst a stalled clock read at once goes before it) and never before what is there."""
        if not self._pend:
            return
        data = b"".join(self._pend) if len(self._pend) > 1 else self._pend[0]
        self._pend.clear()
        x = np.frombuffer(data, dtype="<i2", count=len(data) // 2)
        end = (self._slot(self._pend_t) + 1) * self.spf
        start = max(self._caller_next, end - len(x))
        self._put(0, start, x)
        self._caller_next = start + len(x)

    def _put(self, ch: int, start: int, x: np.ndarray) -> None:
        n, i = len(x), 0
        while i < n and not self.truncated:
            s = start + i
            if s < self._base:  # in a chunk already handed on (only after a stall): dropped
                i += min(n - i, self._base - s)
                continue
            if s >= self._base + self._chunk_len:
                self._emit(s - s % self._chunk_len)
                continue
            k = min(n - i, self._base + self._chunk_len - s)
            self._buf[s - self._base:s - self._base + k, ch] = x[i:i + k]
            self._dirty = True
            i += k

    def _emit(self, new_base: int) -> None:
        """Hand the current chunk to the writer (a chunk nothing was written to is a hole in
        the file, which reads as silence) and start the one at ``new_base``."""
        if self._dirty and not self.writer.submit(Chunk(self.file, self._base, self._buf)):
            self.truncated = True
            self.writer.count_behind()
            log.warning("recording %s stops at %.1f s: the writer is behind (queue full)",
                        self.file.path, self._base / self.rate)
            return
        self._buf = np.zeros((self._chunk_len, CHANNELS), dtype="<i2")
        self._base, self._dirty = new_base, False

    @property
    def samples(self) -> int:
        """Stereo samples so far (the longer side)."""
        return max(self._agent_next, self._caller_next)

    async def finish(self, end: float | None = None) -> dict[str, Any]:
        """End the recording: the last chunk and the header patch go to the writer, and this
        waits (in a worker thread, at most twice :data:`CLOSE_TIMEOUT`) for the file to be
        final. ``end`` is when the call ended (trio time): the file runs to the frame nearest
        it, as long as the call on the grid (within a frame).

        Returns the record's ``recording`` entry: ``path``, ``seconds``, ``rate``,
        ``channels``, and ``truncated: true`` when it stopped early; ``{}`` when no file could
        be made. Never raises for I/O problems (they are logged). Cancellation abandons the
        wait (the writer still finalises the file)."""
        if not self.stopped:
            self._commit()
        total = 0 if self.stopped else self.samples
        if end is not None and self._t0 is not None and total:
            whole = self._lead + round((end - self._t0) / FRAME_SECONDS)
            total = max(total, whole * self.spf)
        length = min(max(0, total - self._base), self._chunk_len)
        last = Chunk(self.file, self._base, self._buf[:length], last=True, total=total)
        done = await trio.to_thread.run_sync(self._hand_over, last, abandon_on_cancel=True)
        f = self.file
        if not done:
            log.error("recording %s: the writer did not finish it in time", f.path)
        if not f.existed:
            return {}
        entry: dict[str, Any] = {"path": str(f.path), "seconds": round(f.samples / self.rate, 3),
                                 "rate": self.rate, "channels": CHANNELS}
        if self.truncated or f.error or not done:
            entry["truncated"] = True
        return entry

    def _hand_over(self, last: Chunk) -> bool:
        if not self.writer.submit_last(last):
            return False
        return self.file.closed.wait(CLOSE_TIMEOUT)


class RecordedPlayout(Playout):
    """A :class:`Playout` that hands each frame it gives the frame clock to a :class:`Recorder`
    (the frame written at this tick's write phase; the hand-back frame is not audio)."""

    def __init__(self, recorder: Recorder, fmt: AudioFormat, *, max_seconds: float = 60.0) -> None:
        super().__init__(fmt, max_seconds=max_seconds)
        self.recorder = recorder

    def next_wire(self, now: float, late: float = 0.0) -> tuple[bytes, bool]:
        data, hangup = super().next_wire(now, late)
        if not hangup:
            self.recorder.agent(data, now)
        return data, hangup


# -- the process's recordings -----------------------------------------------------------------


class Recordings:
    """Where this process's recordings go (``recordings.path``, default
    ``<data dir>/recordings``) and their retention (``recordings.max_age_days``)."""

    def __init__(self, root: str | Path, max_age_days: float = 30.0,
                 writer: RecordingWriter | None = None) -> None:
        self.root = Path(root).absolute()
        self.max_age_days = max_age_days
        self.writer = writer

    def path_for(self, uuid: str, started_at: str) -> Path:
        """``<root>/<YYYY-MM-DD>/<uuid>.wav`` for a call whose record started at ``started_at``
        (an ISO stamp in UTC; today's UTC date if it is not one). Raises ValueError for a
        UUID that is not a plain name."""
        if not _UUID.match(uuid):
            raise ValueError(f"not a call UUID: {uuid!r}")
        day = started_at[:10] if _DAY.match(started_at[:10]) else \
            dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
        return self.root / day / f"{uuid}.wav"

    def start(self, uuid: str, started_at: str, fmt: AudioFormat, *,
              start: float | None = None) -> Recorder | None:
        """A recorder for a call that started at trio time ``start`` (no I/O here: the writer
        thread creates the file); None, logged, for a UUID that cannot name a file."""
        try:
            path = self.path_for(uuid, started_at)
        except ValueError as exc:
            log.warning("call not recorded: %s", exc)
            return None
        return Recorder(path, fmt, writer=self.writer, start=start)

    def sweep(self, *, now: float | None = None) -> int:
        """Apply the retention (blocking: run it in a thread); returns files deleted."""
        return sweep(self.root, self.max_age_days, now=now)
