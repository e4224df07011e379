"""Call recordings end to end: emulator -> FastAGI server -> sidecar (run_sidecar, as served),
over real loopback sockets in real time.

A recorded assistant's call leaves a WAV the standard library reads back, named in the call's
JSON-lines record; an assistant that does not record leaves none; a recordings folder that
cannot be written costs the recording only.
"""

from __future__ import annotations

import dataclasses
import json
import wave
from pathlib import Path

import numpy as np
import pytest

from fastagi_server.emulator.caller import CallerScript
from media_sidecar.config.loader import load_config
from media_sidecar.config.schema import Match, RecordingsConfig, Rule
from tests.e2e.stack import open_stack
from tests.fakes import caller_says, dominant_freq

pytestmark = pytest.mark.e2e

BASE = load_config()
_A = dataclasses.replace(BASE.assistants[0], brain=dataclasses.replace(
    BASE.assistants[0].brain, greeting="Hi, how can I help?"))
RECORDED, PLAIN = "7000", "7001"


def config(recordings: Path) -> object:
    return dataclasses.replace(
        BASE,
        assistants=(dataclasses.replace(_A, name="recorded", recording=True),
                    dataclasses.replace(_A, name="plain", recording=False)),
        routing=dataclasses.replace(BASE.routing, default="recorded",
                                    rules=(Rule(Match(dnid=PLAIN), "plain"),)),
        recordings=RecordingsConfig(path=str(recordings)))


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def goodbye() -> CallerScript:
    return CallerScript().speak_after_agent_quiet(caller_says("goodbye"))


async def test_a_recorded_call_leaves_a_wav_and_a_plain_one_none(tmp_path):
    rec_dir, rec_file = tmp_path / "recordings", tmp_path / "calls.jsonl"
    async with open_stack(config(rec_dir), str(rec_file)) as stack:  # type: ignore[arg-type]
        call = await stack.call(goodbye(), dnid=RECORDED, seconds=30)
        await stack.wait_records(1)
        plain = await stack.call(goodbye(), dnid=PLAIN, seconds=30)
        await stack.wait_records(2)
    assert call.variables["AI_STATUS"] == plain.variables["AI_STATUS"] == "COMPLETED"
    rec, other = records(rec_file)
    assert (rec["assistant"], other["assistant"]) == ("recorded", "plain")
    assert other["recording"] == {}
    r = rec["recording"]
    assert r["path"] == str(rec_dir / rec["started_at"][:10] / f"{rec['uuid']}.wav")
    assert (r["rate"], r["channels"]) == (8000, 2) and "truncated" not in r
    assert [p.name for p in rec_dir.rglob("*.wav")] == [f"{rec['uuid']}.wav"]
    with wave.open(r["path"], "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    assert len(data) == round(r["seconds"] * 8000)
    assert abs(len(data) / 160 - rec["duration"] / 0.02) <= 1
    left, right = data[:, 0], data[:, 1]
    # the caller's goodbye (a 400 Hz tone, tests/fakes.py) on the left, the greeting's 1 kHz
    # tone on the right before it
    loud = np.flatnonzero(np.abs(left) > 3000)
    assert len(loud) > 8000 * 0.6  # most of a 1.2 s tone of amplitude 8000
    said = left[loud[0]:loud[0] + 8000]
    assert dominant_freq(said, 8000) == pytest.approx(400, abs=5)
    first = np.flatnonzero(right[:loud[0]])[0]
    assert dominant_freq(right[first:first + 1600], 8000) == pytest.approx(1000, abs=5)
    assert not np.abs(right[loud[0]:loud[0] + 8000]).max() > 100  # the agent listens


async def test_a_recordings_folder_that_is_a_file_costs_only_the_recording(tmp_path):
    blocked = tmp_path / "recordings"
    blocked.write_text("a file where the folder should be")
    rec_file = tmp_path / "calls.jsonl"
    async with open_stack(config(blocked), str(rec_file)) as stack:  # type: ignore[arg-type]
        call = await stack.call(goodbye(), dnid=RECORDED, seconds=30)
        await stack.wait_records(1)
    assert call.variables["AI_STATUS"] == "COMPLETED"
    (rec,) = records(rec_file)
    assert rec["status"] == "COMPLETED" and rec["turns"][-1]["caller_text"] == "goodbye"
    assert rec["recording"] == {}
    assert blocked.read_text() == "a file where the folder should be"
