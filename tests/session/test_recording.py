"""Call recordings in virtual time: the WAV holds, slot for slot, what the emulated Asterisk
sent (left) and received (right).

The expected file is rebuilt from the emulator's own frame log: every caller frame it sent and
every audio frame it received, each at its 20 ms slot counted from the first frame the sidecar
wrote. A caller frame sent at an emulator tick is read in the sidecar's next read phase and
stamped with that tick's write phase, so both logs share one grid here (the harness starts the
frame clock with the call).
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import uuid as uuidlib
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
from prometheus_client import generate_latest

from fastagi_server.emulator.audiosocket_side import AudioSocketConfig, AudioSocketSession
from fastagi_server.emulator.caller import AgentQuiet, CallerScript
from media_sidecar.config.loader import load_config
from media_sidecar.dsp import g711
from media_sidecar.dsp.resample import Resampler
from media_sidecar.ops import recordingfile
from media_sidecar.ops.metrics import SidecarMetrics
from media_sidecar.ops.recordingfile import RecordingWriter
from media_sidecar.protocol.audiosocket import Kind
from media_sidecar.session.clock import FrameClock
from media_sidecar.session.recording import Recordings
from tests.fakes import caller_says, dominant_freq
from tests.session.harness import Outcome, build_server, offer
from tests.streams import socket_stream_pair

FRAME = 0.02
CFG = load_config()


def recorded(audio_format: str = "slin", recording: bool = True) -> Any:
    a = dataclasses.replace(CFG.assistants[0], audio_format=audio_format, recording=recording,
                            brain=dataclasses.replace(CFG.assistants[0].brain,
                                                      greeting="Hi, how can I help?"))
    return dataclasses.replace(CFG, assistants=(a,))


@pytest.fixture(autouse=True)
def writer(monkeypatch):
    """A writer thread of the test's own (the process's one keeps its failing state)."""
    w = RecordingWriter()
    monkeypatch.setattr(recordingfile, "_WRITER", [w])
    yield w
    w.close()


def exposition() -> str:
    """The sidecar's /metrics text (the recording counters read the process's writer)."""
    return generate_latest(SidecarMetrics(process=False).registry).decode()


async def run_recorded(script: CallerScript, cfg: Any, recordings: Recordings | None, *,
                       asterisk: AudioSocketConfig | None = None) -> Outcome:
    """tests/session/harness.run_session with the server's recordings set."""
    server, registry, control = build_server(cfg)
    server.recordings = recordings
    call_uuid = str(uuidlib.uuid4())
    offer(registry, cfg, call_uuid)
    ast_stream, sidecar_stream = socket_stream_pair()
    session = AudioSocketSession(ast_stream, call_uuid, caller=script.player(), config=asterisk)
    control.session = session
    t0 = trio.current_time()
    server.clock = FrameClock()
    async with trio.open_nursery() as ticking:
        ticking.start_soon(server.clock.run)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle, sidecar_stream)
            with trio.fail_after(60):
                result = await session.run()
        ticking.cancel_scope.cancel()
    (record,) = server.memory_records.records  # type: ignore[attr-defined]
    return Outcome(result, control.ended[0], record, control, server.tts, server, t0)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getcomptype()) == (2, 2, "NONE")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
        assert len(data) == w.getnframes()
        return data, w.getframerate()


def expected(out: Outcome, rate: int, codec: str = "slin") -> np.ndarray:
    """The stereo file the emulator's frame log says the sidecar should have written."""
    res = out.asterisk
    spf = rate // 50
    agent = [f for f in res.frames_received if f.kind == Kind.AUDIO]
    t0 = agent[0].t
    caller = [f for f in res.frames_sent if f.kind in (Kind.AUDIO, Kind.AUDIO_SLIN16)]
    # after the hand-back frame the sidecar reads nothing more (the call is Asterisk's again)
    hand_back = [f.t for f in res.frames_received if f.kind == Kind.HANGUP]
    if hand_back:
        caller = [f for f in caller if round((f.t - hand_back[0]) / FRAME) < 0]
    slots = [round((f.t - t0) / FRAME) for f in agent + caller]
    assert min(slots) >= 0
    want = np.zeros(((max(slots) + 1) * spf, 2), dtype="<i2")
    up = Resampler(8000, rate) if rate != 8000 else None
    pos = 0
    for f in agent:  # the agent's frames are contiguous: the resampler's stream is one piece
        x = np.frombuffer(f.payload, dtype="<i2")
        x = up.process(x) if up is not None else x
        want[pos:pos + len(x), 1] = x
        pos += len(x)
        assert pos <= (round((f.t - t0) / FRAME) + 1) * spf
    for f in caller:
        s = round((f.t - t0) / FRAME) * spf
        if codec == "ulaw":
            x = g711.ulaw_decode(f.payload).astype("<i2")
        else:
            x = np.frombuffer(f.payload, dtype="<i2")
        want[s:s + spf, 0] = x
    return want


def goodbye_call() -> CallerScript:
    return CallerScript().speak_after_agent_quiet(caller_says("goodbye"))


@pytest.mark.parametrize("codec,rate", [("slin", 8000), ("ulaw", 8000), ("slin16", 16000)])
async def test_the_wav_is_what_the_media_plane_heard_and_sent_slot_for_slot(
        autojump_clock, tmp_path, codec, rate):
    out = await run_recorded(goodbye_call(), recorded(codec), Recordings(tmp_path / "rec"),
                             asterisk=AudioSocketConfig(caller_codec=codec))
    assert out.ended.status == "COMPLETED"
    rec = out.record.recording
    day = out.record.started_at[:10]
    assert rec["path"] == str(tmp_path / "rec" / day / f"{out.record.uuid}.wav")
    assert (rec["rate"], rec["channels"]) == (rate, 2) and "truncated" not in rec
    data, file_rate = read_wav(rec["path"])
    assert file_rate == rate
    want = expected(out, rate, codec)
    # the file runs to the last frame on the grid; the emulator's log may end a slot earlier
    assert len(data) - len(want) in (0, rate // 50)
    np.testing.assert_array_equal(data[:len(want)], want)
    assert rec["seconds"] == pytest.approx(len(data) / rate)
    frames = len(data) / (rate // 50)
    assert abs(frames - out.record.duration / FRAME) <= 1
    assert (os.stat(rec["path"]).st_mode & 0o777) == 0o640


async def test_the_caller_is_on_the_left_and_the_agent_on_the_right_at_their_times(
        autojump_clock, tmp_path):
    """Known audio at known times: the greeting (the fake TTS's 1 kHz tone) on the right from
    the first frame, the caller's goodbye tone on the left where the emulator played it."""
    out = await run_recorded(goodbye_call(), recorded(), Recordings(tmp_path))
    data, rate = read_wav(out.record.recording["path"])
    left, right = data[:, 0].astype(np.float64), data[:, 1].astype(np.float64)
    first_agent = next(f.t for f in out.asterisk.frames_received if f.kind == Kind.AUDIO)
    spoke = [f.t for f in out.asterisk.frames_sent if f.kind == Kind.AUDIO and any(f.payload)]
    start = round((spoke[0] - first_agent) / FRAME) * 160
    said = np.frombuffer(caller_says("goodbye"), dtype="<i2")
    assert not left[:start].any()
    np.testing.assert_array_equal(left[start:start + len(said)], said)
    assert dominant_freq(left[start:start + 8000], rate) == pytest.approx(
        dominant_freq(said[:8000].astype(np.float64), rate), abs=2)
    assert not right[start:start + len(said)].any()  # the agent is quiet while the caller speaks
    greeting = right[:16000]
    assert np.abs(greeting).max() > 3000 and not left[:8000].any()
    assert dominant_freq(right[:4000], rate) == pytest.approx(1000, abs=5)
    # the farewell plays after the caller's words
    assert np.abs(right[start + len(said):]).max() > 3000


async def test_a_quiet_leg_is_recorded_with_its_gaps_filled(autojump_clock, tmp_path):
    """A leg with silence suppression sends nothing while the caller is quiet: the left channel
    is silence there (the gap filler's frames), and the file still spans the whole call."""
    out = await run_recorded(goodbye_call(), recorded(), Recordings(tmp_path),
                             asterisk=AudioSocketConfig(send_silence=False))
    assert out.ended.status == "COMPLETED" and out.record.caller_frames_filled > 50
    data, _ = read_wav(out.record.recording["path"])
    np.testing.assert_array_equal(data[:len(expected(out, 8000))], expected(out, 8000))
    assert abs(len(data) / 160 - out.record.duration / FRAME) <= 1


async def test_an_assistant_without_recording_writes_no_file(autojump_clock, tmp_path):
    out = await run_recorded(goodbye_call(), recorded(recording=False), Recordings(tmp_path))
    assert out.ended.status == "COMPLETED" and out.record.recording == {}
    assert list(tmp_path.rglob("*")) == []


@pytest.mark.parametrize("broken", ["folder-is-a-file", "disk-full"])
async def test_a_failing_disk_does_not_disturb_the_call(autojump_clock, tmp_path, caplog,
                                                         monkeypatch, broken):
    assert 'agi_voice_recordings_failed_total{reason="write_error"} 0.0' in exposition()
    plain = await run_recorded(goodbye_call(), recorded(recording=False), None)
    root = tmp_path / "rec"
    if broken == "folder-is-a-file":
        root.write_text("not a folder")
    else:  # the first second of audio is written, then the disk is full
        real, data_writes = recordingfile._write_all, []

        def full(fd: int, data: bytes, offset: int) -> None:
            if offset:
                data_writes.append(offset)
                if len(data_writes) > 1:
                    raise OSError(errno.ENOSPC, "No space left on device")
            real(fd, data, offset)

        monkeypatch.setattr(recordingfile, "_write_all", full)
    with caplog.at_level(logging.ERROR, logger="agi_voice.recordings"):
        out = await run_recorded(goodbye_call(), recorded(), Recordings(root))
    # the same call, frame for frame, as one that is not recorded
    assert out.ended.status == plain.ended.status == "COMPLETED"
    assert [round(f.t - out.asterisk.started_at, 6) for f in out.asterisk.frames_received] == \
        [round(f.t - plain.asterisk.started_at, 6) for f in plain.asterisk.frames_received]
    assert [f.payload for f in out.asterisk.frames_received] == \
        [f.payload for f in plain.asterisk.frames_received]
    assert out.record.duration == plain.record.duration
    errors = [r for r in caplog.records if r.name == "agi_voice.recordings"]
    assert len(errors) == 1 and "cannot write recording" in errors[0].getMessage()
    # ...and the administrator's monitoring sees it: one recording failed on the disk
    assert 'agi_voice_recordings_failed_total{reason="write_error"} 1.0' in exposition()
    assert 'agi_voice_recordings_failed_total{reason="writer_behind"} 0.0' in exposition()
    if broken == "folder-is-a-file":
        assert out.record.recording == {}
        assert not list(tmp_path.rglob("*.wav"))
    else:  # what was written before the disk filled up is a valid, shorter file
        assert out.record.recording["truncated"] is True
        assert out.record.recording["seconds"] == 1.0
        data, _ = read_wav(out.record.recording["path"])
        np.testing.assert_array_equal(data, expected(out, 8000)[:8000])


async def test_a_dtmf_only_call_is_recorded_to_its_end(autojump_clock, tmp_path):
    """A call that ends by a keypress (hang-up on #) after the greeting: the file spans it."""
    script = CallerScript().dtmf("#", at=AgentQuiet(300))
    out = await run_recorded(script, recorded(), Recordings(tmp_path))
    data, _ = read_wav(out.record.recording["path"])
    np.testing.assert_array_equal(data[:len(expected(out, 8000))], expected(out, 8000))
    assert abs(len(data) / 160 - out.record.duration / FRAME) <= 1


async def test_a_relayed_call_is_recorded_the_same_way(autojump_clock, tmp_path):
    """A speech-to-speech session (the echo provider): the caller's tone on the left, and the
    same tone on the right where the provider's audio was played, a few frames later."""
    from media_sidecar.config.loader import parse_config
    from tests.fakes import tone

    cfg = parse_config("routing: {default: echo}\nassistants:\n  echo:\n    provider: echo\n"
                       "    echo: {chunk_ms: 100}\n    recording: true\n", "echo.yaml")
    said = tone(440, 1.0)
    out = await run_recorded(CallerScript().speak(said, at=0.5).hangup(at=2.5), cfg,
                             Recordings(tmp_path))
    assert out.ended.status == "CALLER_HANGUP"
    data, _ = read_wav(out.record.recording["path"])
    np.testing.assert_array_equal(data[:len(expected(out, 8000))], expected(out, 8000))
    assert abs(len(data) / 160 - out.record.duration / FRAME) <= 1
    x = np.frombuffer(said, dtype="<i2")
    lead = np.flatnonzero(x)[0]  # the tone starts at 0
    left_at = np.flatnonzero(data[:, 0])[0] - lead
    right_at = np.flatnonzero(data[:, 1])[0] - lead
    np.testing.assert_array_equal(data[left_at:left_at + len(x), 0], x)
    np.testing.assert_array_equal(data[right_at:right_at + len(x), 1], x)
    assert 4 * 160 <= right_at - left_at <= 7 * 160  # one 100 ms chunk, plus a frame or two
