"""The offline local assistant end to end with the real models (Moonshine STT, Piper TTS).

The caller's speech is made with the bundled Piper voice and sent as 8 kHz audio; what the
assistant says back is transcribed with the same STT. Real sockets, real time.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from fastagi_server.emulator.caller import CallerScript
from media_sidecar.app import load_local_services
from media_sidecar.config.loader import load_config
from media_sidecar.dsp.resample import Resampler
from media_sidecar.protocol.audiosocket import Kind
from tests.e2e.stack import open_stack

pytestmark = [pytest.mark.e2e, pytest.mark.local_models]

BASE = load_config()
CFG = dataclasses.replace(BASE, assistants=(dataclasses.replace(
    BASE.assistants[0],
    brain=dataclasses.replace(BASE.assistants[0].brain, greeting="Hi, how can I help?")),))


@pytest.fixture(scope="module")
def services():
    svc, unavailable = load_local_services(CFG)
    assert svc is not None and not unavailable, unavailable
    return svc


def speech_8k(services, text: str) -> np.ndarray:
    tts = services.speaker_factory(None).tts
    audio = np.concatenate([np.asarray(c, dtype=np.int16) for c in tts.synthesize(text)])
    r = Resampler(tts.rate, 8000)
    return np.concatenate([r.process(audio), r.flush()]).astype(np.int16)


def transcribe(services, pcm: np.ndarray) -> str:
    return services.stt.transcribe(pcm, 8000).lower()


async def test_billing_transfer_with_real_speech(services, tmp_path):
    rec_path = tmp_path / "calls.jsonl"
    caller = speech_8k(services, "Please transfer me to the billing department.")
    async with open_stack(CFG, str(rec_path), services=services) as stack:
        call = await stack.call(CallerScript().speak_after_agent_quiet(caller), seconds=40)
        (redirect,) = stack.ami_actions("Redirect")
    assert (redirect["Context"], redirect["Exten"], redirect["Priority"]) == ("from-internal", "2001", "1")
    assert call.variables["AI_STATUS"] == "TRANSFERRED"
    assert call.variables["AI_TRANSFER_TO"] == "billing"
    # what the assistant said after the caller spoke is audible speech about billing
    session = call.audiosocket[0]
    spoke_at = session.started_at + next(s.t for s in call.caller_log if "speak" in s.what.lower())
    reply = b"".join(f.payload for f in session.audio_frames() if f.t > spoke_at + 1.0)
    heard = transcribe(services, np.frombuffer(reply, dtype="<i2"))
    assert "billing" in heard, heard
    (rec,) = [json.loads(x) for x in rec_path.read_text().splitlines()]
    assert "billing" in rec["turns"][1]["caller_text"].lower()
    assert "billing" in rec["turns"][1]["agent_text"].lower()
    assert rec["turns"][1]["latency_ms"] is not None


async def test_goodbye_with_real_speech_plays_the_whole_farewell(services, tmp_path):
    caller = speech_8k(services, "Thanks, that's all. Goodbye.")
    async with open_stack(CFG, str(tmp_path / "calls.jsonl"), services=services) as stack:
        call = await stack.call(CallerScript().speak_after_agent_quiet(caller), seconds=40)
    session = call.audiosocket[0]
    assert call.variables["AI_STATUS"] == "COMPLETED"
    assert session.frames_received[-1].kind == Kind.HANGUP
    # the farewell is complete and nothing follows it: its last loud frame is followed only by
    # Piper's own trailing pause (~0.2 s) before the hand-back
    frames = session.audio_frames()
    loud = [f for f in frames if np.abs(np.frombuffer(f.payload, "<i2")).max() > 300]
    assert session.frames_received[-1].t - loud[-1].t < 0.5
    # ...and it is the whole farewell, byte for byte: the rules brain's reply is two fixed
    # sentences, rendered once into the sentence cache at load, and both are in what the caller
    # heard, in order, the second ending the audio (but for the last frame's padding). Judged
    # by bytes, not by the tiny STT: Piper samples its prosody, so one "Goodbye!" is heard as
    # "goodbye", the next as "good day" or "dubai".
    voice = services.speech.voice_for(CFG.assistants[0])
    heard = b"".join(f.payload for f in frames)
    thanks, bye = voice.cached("Thank you for calling."), voice.cached("Goodbye!")
    assert thanks and bye
    assert 0 <= heard.rfind(thanks) < heard.rfind(bye)
    assert len(heard) - (heard.rfind(bye) + len(bye)) < 320
