"""The relay path with the echo assistant, through the real AudioSocket server, in virtual time.

The echo assistant is the simplest speech-to-speech provider: the caller's own audio comes back
in 100 ms chunks. It exercises everything a provider relay shares (inbound reader, chunked
agent audio cut into whole frames, paced playout, the verdict).
"""

from __future__ import annotations

import numpy as np
import pytest

from fastagi_server.emulator.caller import CallerScript
from media_sidecar.config.loader import parse_config
from media_sidecar.protocol.audiosocket import Kind
from tests.fakes import tone
from tests.session.harness import run_session

FRAME = 0.02
ECHO_YAML = """
routing: {default: echo}
assistants:
  echo:
    provider: echo
    echo: {chunk_ms: 100}
"""


async def test_echo_returns_the_callers_audio_on_the_grid_one_chunk_later(autojump_clock):
    cfg = parse_config(ECHO_YAML, "echo.yaml")
    said = tone(440, 1.0)
    script = CallerScript().speak(said, at=0.5).hangup(at=2.5)
    out = await run_session(script, cfg=cfg)

    assert out.ended.status == "CALLER_HANGUP"
    assert out.record.provider["name"] == "echo"
    times = [f.t for f in out.asterisk.frames_received]
    gaps = np.diff(times)
    assert gaps.size > 100 and np.allclose(gaps, FRAME, atol=1e-6)
    # the agent's audio is exactly what the caller said, whole frames, unclipped
    agent = [f for f in out.asterisk.audio_frames() if any(f.payload)]
    heard = b"".join(f.payload for f in agent)
    assert heard == said
    # ... and the first agent frame leaves one chunk (the 5th caller frame comes 80 ms after
    # the 1st) after the caller's first frame arrived, plus at most one frame until the frame
    # clock reads it and one more because a tick writes before it reads (the chunk completed
    # in a tick's read leaves on the next tick)
    first_caller = next(f.t for f in out.asterisk.frames_sent
                        if f.kind == Kind.AUDIO and any(f.payload))
    lag = agent[0].t - first_caller
    assert 0.08 <= lag <= 0.08 + 2 * FRAME + 1e-6
    relay = out.record.provider["relay"]
    caller_frames = sum(1 for f in out.asterisk.frames_sent if f.kind == Kind.AUDIO)
    assert caller_frames // 5 - 1 <= relay["chunks"] <= caller_frames // 5
    assert relay["first_frame_n"] >= 1
    assert 0 <= relay["first_frame_ms_max"] <= 20 + 1e-6


@pytest.mark.parametrize("codec", ["ulaw", "alaw"])
async def test_echo_over_a_g711_leg(autojump_clock, codec):
    from fastagi_server.emulator.audiosocket_side import AudioSocketConfig

    cfg = parse_config(ECHO_YAML.replace("provider: echo", f"provider: echo\n    audio_format: {codec}"),
                       "echo.yaml")
    said = tone(500, 0.6, amp=6000)
    script = CallerScript().speak(said, at=0.2).hangup(at=1.5)
    out = await run_session(script, cfg=cfg,
                            asterisk_config=AudioSocketConfig(caller_codec=codec))
    pcm = np.frombuffer(out.asterisk.agent_audio_pcm(), dtype="<i2").astype(np.float64)
    voiced = pcm[np.abs(pcm) > 100]
    # through G.711 on the caller leg, back as slin 8 kHz: the tone survives at its level
    assert voiced.size > 0.5 * 0.6 * 8000
    assert np.sqrt(np.mean(voiced ** 2)) == pytest.approx(6000 / np.sqrt(2), rel=0.1)
