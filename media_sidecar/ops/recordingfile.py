"""The recordings' files: one writer thread per process, the WAV header, retention.

:mod:`media_sidecar.session.recording` fills each recorded call's chunks on the trio thread
and hands them here; nothing in this module runs on the trio loop except :meth:`submit`, which
never blocks. The writer thread ``pwrite`` s each chunk at its place in the file (a chunk never
sent leaves a hole that reads as silence), writes the 44-byte header with placeholder sizes
first and patches it when the call's last chunk comes (:func:`wav_header`), and creates the
day folders (0750) and files (0640).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["CHANNELS", "CLOSE_TIMEOUT", "HEADER_BYTES", "QUEUE_CHUNKS", "Chunk",
           "RecordingFile", "RecordingWriter", "recording_writer", "sweep", "wav_header",
           "writer_failures"]

log = logging.getLogger("agi_voice.recordings")

QUEUE_CHUNKS = 256
"""Chunks the writer thread's queue holds (a process with 100 recorded calls fills it in about
2.5 s of a stalled disk; at most 16 MiB of 8 kHz audio): beyond it a recording stops."""
CLOSE_TIMEOUT = 5.0
"""Seconds (real time, in a worker thread) a finished call waits to hand its last chunk to the
writer, and again for the file to be finalised, before its record is written without it."""
CHANNELS = 2
HEADER_BYTES = 44
FILE_MODE = 0o640
DIR_MODE = 0o750
_PLACEHOLDER = 0xFFFFFFFF
"""RIFF and data sizes until the call ends: 'unknown, read to the end' for ffmpeg and sox."""
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def wav_header(rate: int, data_bytes: int = _PLACEHOLDER, channels: int = CHANNELS) -> bytes:
    """A 44-byte canonical PCM WAV header (16-bit). ``data_bytes`` defaults to the placeholder."""
    block = channels * 2
    riff = _PLACEHOLDER if data_bytes == _PLACEHOLDER else min(36 + data_bytes, _PLACEHOLDER)
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, 16)
            + b"data" + struct.pack("<I", data_bytes))


@dataclass(eq=False)
class RecordingFile:
    """One recording's file, shared by the call (trio thread) and the writer thread. Only the
    writer changes it; the call reads ``error`` (a str assignment is atomic)."""

    path: Path
    rate: int
    fd: int = -1
    samples: int = 0
    """Stereo samples (WAV frames) written so far: the extent of the successful writes."""
    error: str = ""
    existed: bool = False
    """The file was created (an error after that leaves a finalised, shorter file)."""
    closed: threading.Event = field(default_factory=threading.Event)

    @property
    def block(self) -> int:
        return CHANNELS * 2


@dataclass(eq=False)
class Chunk:
    file: RecordingFile
    offset: int
    """Stereo sample index of ``audio[0]`` in the file."""
    audio: np.ndarray
    last: bool = False
    """The call ended: ``audio`` is its last piece; the file is finalised after it."""
    total: int = 0
    """With ``last``: the file's length in stereo samples (silence at the end is not sent)."""


class RecordingWriter:
    """The process's recording writer: one daemon thread fed by a bounded queue.

    :meth:`submit` never blocks (False when the queue is full); :meth:`submit_last` blocks (call
    it in a worker thread). Write errors are logged once per run of failures (one ERROR for a
    full disk, not one a call) and counted in :attr:`errors`; they end the recording they hit,
    never the thread.
    """

    def __init__(self, max_chunks: int = QUEUE_CHUNKS) -> None:
        self._queue: queue.Queue[Chunk | None] = queue.Queue(max_chunks)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.errors = 0
        """Recordings a write error stopped (disk full, permissions)."""
        self.behind = 0
        """Recordings stopped because this writer's queue was full (:meth:`count_behind`)."""
        self._failing = False

    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    t = threading.Thread(target=self._run, name="agi-voice recordings",
                                         daemon=True)
                    t.start()
                    self._thread = t

    def count_behind(self) -> None:
        """A recording stopped early because :meth:`submit` found the queue full."""
        self.behind += 1

    def submit(self, chunk: Chunk) -> bool:
        """Queue a chunk without blocking; False when the queue is full."""
        self._ensure_thread()
        try:
            self._queue.put_nowait(chunk)
        except queue.Full:
            return False
        return True

    def submit_last(self, chunk: Chunk, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Queue a file's last chunk, waiting up to ``timeout`` s for room (blocking)."""
        self._ensure_thread()
        try:
            self._queue.put(chunk, timeout=timeout)
        except queue.Full:
            return False
        return True

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Stop the thread once what is queued is written (blocking, at most ``timeout`` s
        each to queue the stop and to join). Tests use it; the process's writer lives as long
        as the process (every call finishes its file before its record is written)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                return
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            chunk = self._queue.get()
            if chunk is None:
                return
            try:
                self._write(chunk)
            except Exception:  # noqa: BLE001 - a bug here must not end every later recording
                log.exception("recording writer failed on %s", chunk.file.path)
                chunk.file.error = chunk.file.error or "internal error"
                _close_fd(chunk.file)
                chunk.file.closed.set()

    def _write(self, chunk: Chunk) -> None:
        f = chunk.file
        if not f.error:
            try:
                if f.fd < 0:
                    f.path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
                    f.fd = os.open(f.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                                   FILE_MODE)
                    f.existed = True
                    os.fchmod(f.fd, FILE_MODE)  # whatever the umask
                    _write_all(f.fd, wav_header(f.rate), 0)
                if len(chunk.audio):
                    _write_all(f.fd, chunk.audio.tobytes(), HEADER_BYTES + chunk.offset * f.block)
                    f.samples = max(f.samples, chunk.offset + len(chunk.audio))
                if chunk.last:
                    f.samples = max(f.samples, chunk.total)
                    self._finalise(f)
            except OSError as exc:
                self._failed(f, exc)
            else:
                if self._failing:
                    self._failing = False
                    log.warning("recordings are written again (%s)", f.path)
        if chunk.last:
            if f.error and f.fd >= 0:
                try:  # what was written before the error stays readable
                    self._finalise(f)
                except OSError:
                    pass
            _close_fd(f)
            f.closed.set()

    @staticmethod
    def _finalise(f: RecordingFile) -> None:
        size = f.samples * f.block
        os.ftruncate(f.fd, HEADER_BYTES + size)  # a hole left by the last chunk reads as zeros
        _write_all(f.fd, wav_header(f.rate, size), 0)
        _close_fd(f)

    def _failed(self, f: RecordingFile, exc: OSError) -> None:
        f.error = str(exc) or type(exc).__name__
        self.errors += 1
        if not self._failing:
            self._failing = True
            log.error("cannot write recording %s: %s (the recording stops; further failures "
                      "are only counted until a write succeeds)", f.path, exc)


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _close_fd(f: RecordingFile) -> None:
    if f.fd >= 0:
        fd, f.fd = f.fd, -1
        os.close(fd)


_WRITER: list[RecordingWriter] = []
_WRITER_LOCK = threading.Lock()


def recording_writer() -> RecordingWriter:
    """The process's writer (its thread starts with the first chunk)."""
    with _WRITER_LOCK:
        if not _WRITER:
            _WRITER.append(RecordingWriter())
        return _WRITER[0]


def writer_failures() -> dict[str, int]:
    """The process's recordings stopped early, by reason (``write_error``, ``writer_behind``),
    for /metrics; zeros while no recording has started (the writer is not created here)."""
    with _WRITER_LOCK:
        w = _WRITER[0] if _WRITER else None
    return {"write_error": w.errors if w is not None else 0,
            "writer_behind": w.behind if w is not None else 0}


def sweep(root: Path, max_age_days: float, *, now: float | None = None) -> int:
    """Delete recordings (``<root>/<day>/*.wav``) last written more than ``max_age_days`` ago,
    then the day folders left empty (not today's or yesterday's, in UTC: a call may be about to
    write there). ``max_age_days`` 0 keeps everything. Several processes may sweep at once (a
    file another one deleted is skipped). Returns the files deleted; errors are logged."""
    if max_age_days <= 0 or not root.is_dir():
        return 0
    now = time.time() if now is None else now
    cutoff = now - max_age_days * 86400
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    keep = {today.isoformat(), (today - dt.timedelta(days=1)).isoformat()}
    deleted = 0
    for day in sorted(root.iterdir()):
        if not (_DAY.match(day.name) and day.is_dir()):
            continue
        try:
            for f in day.iterdir():
                if f.suffix == ".wav" and f.stat().st_mtime < cutoff:
                    f.unlink(missing_ok=True)
                    deleted += 1
            if day.name not in keep and not any(day.iterdir()):
                day.rmdir()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.error("cannot apply the recordings retention in %s: %s", day, exc)
    if deleted:
        log.info("recordings retention: %d file(s) older than %g days deleted", deleted,
                 max_age_days)
    return deleted
