"""mu-law, A-law and slin16 assistants end to end through ``Dial(AudioSocket/...,c(...))``.

Emulator -> FastAGI server -> ``EXEC Dial "AudioSocket/host:port/uuid/c(codec),5,g"`` -> the
emulated AudioSocket channel connects to the sidecar and sends the caller's audio in that codec
(G.711 160 bytes as kind 0x10, slin16 640 bytes as 0x12); the sidecar answers in slin 8 kHz
(kind 0x10 is slin on every leg, so Asterisk would transcode it to the caller's codec). Real
loopback sockets, real time.
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest

from fastagi_server.emulator.caller import CallerScript
from media_sidecar.config.loader import load_config, parse_config
from media_sidecar.protocol.audiosocket import AUDIO_KIND_RATES, Kind
from tests.e2e.stack import open_stack
from tests.fakes import caller_says, dominant_freq, tone

pytestmark = pytest.mark.e2e

BASE = load_config()
RULES = BASE.assistants[0]
SHORT = dataclasses.replace(RULES, brain=dataclasses.replace(RULES.brain,
                                                             greeting="Hi, how can I help?"))
CALLER_FRAMES = {"ulaw": (Kind.AUDIO, 160), "alaw": (Kind.AUDIO, 160),
                 "slin16": (Kind.AUDIO_SLIN16, 640)}


def rules_config(codec: str):
    return dataclasses.replace(BASE, assistants=(dataclasses.replace(SHORT, audio_format=codec),))


def echo_config(codec: str):
    return parse_config(f"assistants:\n  echo:\n    provider: echo\n    audio_format: {codec}\n",
                        "echo.yaml")


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def heard(pcm: np.ndarray, seconds: float) -> np.ndarray:
    """``seconds`` of audio from the first sample above the noise floor."""
    start = int(np.argmax(np.abs(pcm) > 100))
    return pcm[start:start + int(seconds * 8000)]


def exec_lines(call) -> list[str]:
    return [line for line in call.agi.lines(">>") if line.startswith("EXEC")]


@pytest.mark.parametrize("codec", ["ulaw", "alaw", "slin16"])
async def test_echo_through_dial_comes_back_intact(tmp_path, codec):
    """The caller's tone goes in as mu-law / A-law / slin16 and comes back as itself."""
    rec_path = tmp_path / "r.jsonl"
    said = tone(500, 0.8, amp=6000)
    async with open_stack(echo_config(codec), str(rec_path)) as stack:
        call = await stack.call(CallerScript().speak(said, at=0.3).hangup(at=2.0), seconds=20)
        await stack.settle()
        await stack.wait_records(1)
    (line,) = exec_lines(call)
    assert line == (f'EXEC Dial "AudioSocket/{stack.cfg.audiosocket_address}/'
                    f'{call.audiosocket[0].uuid}/c({codec}),5,g"')
    session = call.audiosocket[0]
    kind, size = CALLER_FRAMES[codec]
    assert {(f.kind, len(f.payload)) for f in session.frames_sent
            if f.kind in AUDIO_KIND_RATES} == {(int(kind), size)}
    assert {(f.kind, len(f.payload)) for f in session.audio_frames()} == {(int(Kind.AUDIO), 320)}
    pcm = np.frombuffer(session.agent_audio_pcm(), dtype="<i2")
    assert np.sum(np.abs(pcm) > 100) > 0.6 * 0.8 * 8000  # most of the 0.8 s came back
    echo = heard(pcm, 0.6)
    assert dominant_freq(echo, 8000) == pytest.approx(500, abs=15)
    assert np.sqrt(np.mean(echo.astype(np.float64) ** 2)) == pytest.approx(6000 / np.sqrt(2),
                                                                           rel=0.1)
    assert call.variables["DIALSTATUS"] == "ANSWER"
    assert call.variables["AI_STATUS"] == "CALLER_HANGUP"
    (rec,) = records(rec_path)
    assert rec["status"] == "CALLER_HANGUP" and rec["outcome_confirmed"] is True


async def test_ulaw_rules_assistant_hears_the_caller_and_completes(tmp_path):
    """The rules assistant with the fake TTS: its greeting reaches the caller whole (1 kHz,
    as long as the fake TTS makes it), the caller's mu-law 'goodbye' is understood."""
    async with open_stack(rules_config("ulaw"), str(tmp_path / "r.jsonl")) as stack:
        call = await stack.call(CallerScript().speak_after_agent_quiet(caller_says("goodbye")),
                                seconds=30)
    session = call.audiosocket[0]
    assert session.closed_by == "sidecar_hangup"  # 00 00 00: the leg ends, Dial's g goes on
    assert call.variables["AI_STATUS"] == "COMPLETED" and call.variables["DIALSTATUS"] == "ANSWER"
    assert call.agi_status == "SUCCESS"
    assert not [line for line in exec_lines(call) if line.startswith("EXEC AudioSocket")]
    pcm = np.frombuffer(session.agent_audio_pcm(), dtype="<i2")
    greeting = len("Hi, how can I help?") * 0.06  # FakeTts: 60 ms per character, 1 kHz
    said = heard(pcm, greeting)
    # whole and at its level (FakeTts: amplitude 6000) all the way through
    assert np.sqrt(np.mean(said.astype(np.float64) ** 2)) == pytest.approx(6000 / np.sqrt(2),
                                                                           rel=0.1)
    assert dominant_freq(said, 8000) == pytest.approx(1000, abs=15)


async def test_transfer_by_voice_over_dial_redirects_the_caller_channel(tmp_path):
    rec_path = tmp_path / "r.jsonl"
    async with open_stack(rules_config("alaw"), str(rec_path)) as stack:
        script = CallerScript().speak_after_agent_quiet(
            caller_says("please transfer me to the billing department"))
        call = await stack.call(script, seconds=30)
        (redirect,) = stack.ami_actions("Redirect")
        await stack.settle()
        await stack.wait_records(1)
    # AMI redirected the caller's own channel (not the AudioSocket leg) out of the bridge
    assert (redirect["Channel"], redirect["Context"], redirect["Exten"]) == (
        call.channel.name, "from-internal", "2001")
    assert call.audiosocket[0].closed_by == "redirect"
    assert call.agi_status == "HANGUP"
    assert (call.channel.context, call.channel.exten) == ("from-internal", "2001")
    assert call.variables["AI_STATUS"] == "TRANSFERRED"
    assert call.variables["AI_TRANSFER_TO"] == "billing"
    (rec,) = records(rec_path)
    assert (rec["status"], rec["transfer_to"]) == ("TRANSFERRED", "billing")


async def test_sidecar_unreachable_over_dial_fails_with_the_reason(tmp_path):
    """The control link is up (the offer is accepted) but nothing listens where Asterisk
    must connect: chan_audiosocket cannot connect, DIALSTATUS=CHANUNAVAIL -> FAILED at once."""
    async with open_stack(rules_config("ulaw"), str(tmp_path / "r.jsonl")) as stack:
        (worker,) = stack.fastagi.server.control.clients  # Asterisk is sent where none is
        worker.audiosocket_address = "127.0.0.1:9"
        t0 = time.monotonic()
        call = await stack.call(CallerScript(), seconds=10)
        elapsed = time.monotonic() - t0
    assert call.variables["DIALSTATUS"] == "CHANUNAVAIL"
    assert call.variables["AI_STATUS"] == "FAILED"
    assert "could not connect to the media sidecar" in call.variables["AI_REASON"]
    assert "CHANUNAVAIL" in call.variables["AI_REASON"]
    assert not call.audiosocket
    assert elapsed < 1.5  # no wait for a verdict that cannot come
