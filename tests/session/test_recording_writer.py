"""The recorder and its writer thread without a call: placement on the grid, chunks, the
header, a full queue, a crash's file, retention."""

from __future__ import annotations

import os
import struct
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from media_sidecar.ops.recordingfile import (
    HEADER_BYTES,
    Chunk,
    RecordingFile,
    RecordingWriter,
    sweep,
    wav_header,
)
from media_sidecar.protocol.audiosocket import AudioFormat, encode_audio
from media_sidecar.session.recording import Recorder, Recordings

SLIN = AudioFormat()
F = 0.02


def frame(value: int) -> bytes:
    return np.full(160, value, dtype="<i2").tobytes()


def wire(value: int) -> bytes:
    return encode_audio(frame(value))


def read(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)


def slots(data: np.ndarray, ch: int) -> list[int]:
    """The value of each 20 ms slot of one channel (each slot must be constant)."""
    out = []
    for k in range(len(data) // 160):
        s = data[k * 160:(k + 1) * 160, ch]
        assert (s == s[0]).all()
        out.append(int(s[0]))
    return out


async def test_frames_land_in_their_slots_across_chunks(tmp_path):
    rec = Recorder(tmp_path / "a.wav", SLIN, writer=RecordingWriter(), chunk_seconds=0.1)
    t0 = 1000.0
    for k in range(12):
        if k != 7:  # a tick whose frame could not be written: silence there
            rec.agent(wire(k + 1), t0 + k * F)
        if k not in (3, 4):
            rec.caller(frame(-(k + 1)), t0 + k * F)
        else:
            rec.caller_silence(t0 + k * F)
    entry = await rec.finish()
    assert entry == {"path": str(tmp_path / "a.wav"), "seconds": 0.24, "rate": 8000,
                     "channels": 2}
    data = read(tmp_path / "a.wav")
    assert slots(data, 1) == [1, 2, 3, 4, 5, 6, 7, 0, 9, 10, 11, 12]
    assert slots(data, 0) == [-1, -2, -3, 0, 0, -6, -7, -8, -9, -10, -11, -12]


async def test_a_burst_read_after_a_stall_ends_at_its_read_slot(tmp_path):
    """A stalled clock reads several frames at once, all stamped with that read: they go
    before its slot (where the silence of the stall is), not after it."""
    rec = Recorder(tmp_path / "b.wav", SLIN, writer=RecordingWriter())
    t0 = 5.0
    rec.agent(wire(1), t0)
    rec.caller(frame(-1), t0)
    for v in (-2, -3, -4):  # three frames, one read at slot 3
        rec.caller(frame(v), t0 + 3 * F)
    rec.agent(wire(4), t0 + 3 * F)  # the next write re-clamped to slot 3
    rec.caller(frame(-5), t0 + 4 * F)
    await rec.finish()
    data = read(tmp_path / "b.wav")
    assert slots(data, 0) == [-1, -2, -3, -4, -5]
    assert slots(data, 1) == [1, 0, 0, 4, 0]


async def test_a_16khz_call_keeps_its_rate_and_upsamples_the_agent(tmp_path):
    rec = Recorder(tmp_path / "c.wav", AudioFormat.parse("slin16"), writer=RecordingWriter())
    for k in range(10):
        rec.agent(wire(1000), k * F)
        rec.caller(np.full(320, -7, dtype="<i2").tobytes(), k * F)
    entry = await rec.finish()
    assert (entry["rate"], entry["seconds"]) == (16000, 0.2)
    with wave.open(entry["path"], "rb") as w:
        assert w.getframerate() == 16000 and w.getnframes() == 3200
        data = np.frombuffer(w.readframes(3200), dtype="<i2").reshape(-1, 2)
    assert (data[:, 0] == -7).all()
    assert np.abs(data[200:3000, 1] - 1000).max() <= 2  # a steady level upsampled


class Limited(RecordingWriter):
    """A writer whose queue takes ``room`` chunks, then is full."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def submit(self, chunk: Chunk) -> bool:
        if self.room == 0:
            return False
        self.room -= 1
        return super().submit(chunk)


async def test_a_full_queue_stops_the_recording_and_marks_it_truncated(tmp_path, caplog):
    writer = Limited(2)
    rec = Recorder(tmp_path / "d.wav", SLIN, writer=writer, chunk_seconds=0.1)
    for k in range(40):
        rec.agent(wire(3), k * F)
        rec.caller(frame(4), k * F)
    assert rec.truncated
    assert writer.behind == 1 and writer.errors == 0  # one recording stopped, counted once
    entry = await rec.finish()
    assert entry["truncated"] is True and entry["seconds"] == 0.2  # two chunks of 0.1 s
    data = read(tmp_path / "d.wav")
    assert len(data) == 1600 and (data == [4, 3]).all()
    assert sum("queue full" in r.getMessage() for r in caplog.records) == 1


def test_an_unfinished_file_has_a_placeholder_header_and_its_audio(tmp_path):
    """What a crash leaves: the header says 'unknown length', the chunks are in place."""
    writer = RecordingWriter()
    rec = Recorder(tmp_path / "e.wav", SLIN, writer=writer, chunk_seconds=0.1)
    for k in range(6):  # one chunk of 5 frames goes to the writer; the 6th stays in memory
        rec.agent(wire(9), k * F)
    # a file of its own as a barrier: once it is closed, the writer is done with the chunk
    barrier = RecordingFile(tmp_path / "barrier.wav", 8000)
    writer.submit_last(Chunk(barrier, 0, np.zeros((0, 2), dtype="<i2"), last=True))
    assert barrier.closed.wait(5)
    head = (tmp_path / "e.wav").read_bytes()
    assert head[:HEADER_BYTES] == wav_header(8000)
    assert struct.unpack("<I", head[40:44]) == (0xFFFFFFFF,)
    audio = np.frombuffer(head[HEADER_BYTES:], dtype="<i2").reshape(-1, 2)
    assert len(audio) == 800 and (audio[:, 1] == 9).all()


async def test_the_file_spans_the_call_from_its_start_to_its_end(tmp_path):
    """A call whose first frame was written one tick after it started begins with a silent
    frame; one that ended frames after its last frame (a slow teardown) ends with silence."""
    rec = Recorder(tmp_path / "f.wav", SLIN, writer=RecordingWriter(), start=10.0)
    for k in range(4):
        rec.agent(wire(5), 10.02 + k * F)
        rec.caller(frame(-5), 10.02 + k * F)
    entry = await rec.finish(end=10.02 + 4 * F + 0.009)
    data = read(tmp_path / "f.wav")
    assert slots(data, 1) == [0, 5, 5, 5, 5]
    assert slots(data, 0) == [0, -5, -5, -5, -5]
    assert entry["seconds"] == 0.1
    rec = Recorder(tmp_path / "g.wav", SLIN, writer=RecordingWriter(), start=10.0)
    rec.agent(wire(5), 10.0)
    await rec.finish(end=10.0 + 6 * F)
    assert slots(read(tmp_path / "g.wav"), 1) == [5, 0, 0, 0, 0, 0]


def test_wav_header_is_canonical():
    h = wav_header(16000, 6400)
    assert len(h) == HEADER_BYTES
    assert struct.unpack("<4sI4s4sIHHIIHH4sI", h) == (
        b"RIFF", 36 + 6400, b"WAVE", b"fmt ", 16, 1, 2, 16000, 64000, 4, 16, b"data", 6400)


def test_paths_are_per_day_and_refuse_a_strange_uuid(tmp_path):
    r = Recordings(tmp_path)
    assert r.path_for("0b7e-11", "2026-12-05T17:00:00.000+00:00") == \
        tmp_path / "2026-12-05" / "0b7e-11.wav"
    with pytest.raises(ValueError):
        r.path_for("../../etc/passwd", "2026-12-05T17:00:00")


def test_sweep_deletes_old_recordings_then_empty_old_days(tmp_path):
    now = time.mktime((2026, 12, 5, 12, 0, 0, 0, 0, 0))
    day = 86400

    def make(rel: str, age_days: float) -> Path:
        p = tmp_path / rel
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"RIFF")
        os.utime(p, (now - age_days * day, now - age_days * day))
        return p

    old = make("2026-10-01/a.wav", 65)
    kept = make("2026-11-20/b.wav", 15)
    mixed_old = make("2026-11-01/c.wav", 34)
    mixed_new = make("2026-11-01/d.wav", 20)  # touched late (a long call at midnight...)
    other = make("2026-10-01/notes.txt", 65)  # not ours: left alone, and so is its folder
    (tmp_path / "2026-12-05").mkdir()  # today's, empty: a call may be about to write there
    (tmp_path / "2026-09-01").mkdir()  # an old empty day folder
    assert sweep(tmp_path, 30, now=now) == 2
    assert not old.exists() and not mixed_old.exists()
    assert kept.exists() and mixed_new.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "2026-10-01", "2026-11-01", "2026-11-20", "2026-12-05"]
    other.unlink()
    assert sweep(tmp_path, 30, now=now) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2026-11-01", "2026-11-20",
                                                          "2026-12-05"]
    assert sweep(tmp_path, 0, now=now) == 0 and kept.exists()  # 0: kept forever


def test_config_reads_recordings_and_the_per_assistant_switch():
    from media_sidecar.config.loader import ConfigError, default_yaml_text, parse_config

    base = default_yaml_text()
    cfg = parse_config(base, "x.yaml", {"AGI_VOICE_RECORDINGS": "/srv/rec"})
    assert (cfg.recordings.path, cfg.recordings.max_age_days) == ("/srv/rec", 30.0)
    assert not cfg.assistants[0].recording  # opt-in
    on = base.replace("    recording: false\n", "    recording: true\n")
    assert parse_config(on, "x.yaml", {}).assistants[0].recording
    bad = base.replace("  max_age_days: 30\n", "  max_age_days: -1\n")
    with pytest.raises(ConfigError, match="recordings.max_age_days"):
        parse_config(bad, "x.yaml", {})


async def test_a_stalled_disk_never_blocks_the_frames(tmp_path, monkeypatch):
    """The writer thread hangs on its first write (a dead NFS mount): feeding frames still
    returns at once (were anything to wait for the disk, this test would hang), the queue
    fills, the recording stops, and once the disk answers the file holds what was queued."""
    from media_sidecar.ops import recordingfile

    real, disk, stuck = recordingfile._write_all, threading.Event(), threading.Event()

    def stalled(fd: int, data: bytes, offset: int) -> None:
        stuck.set()
        disk.wait()
        real(fd, data, offset)

    monkeypatch.setattr(recordingfile, "_write_all", stalled)
    writer = RecordingWriter(max_chunks=2)
    rec = Recorder(tmp_path / "s.wav", SLIN, writer=writer, chunk_seconds=0.1)
    for k in range(250):  # 5 s of frames, 50 chunks
        rec.agent(wire(2), k * F)
        rec.caller(frame(1), k * F)
        if k == 5:  # the first chunk went: the thread is stuck in its first write
            assert stuck.wait(5)
    assert rec.truncated
    disk.set()
    entry = await rec.finish()
    # the chunk the thread was writing and the two queued
    assert entry["truncated"] is True and entry["seconds"] == 0.3
    assert (read(tmp_path / "s.wav") == [1, 2]).all()
    writer.close()
