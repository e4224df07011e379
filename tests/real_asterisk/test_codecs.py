"""Both media paths on the real Asterisk: the ``AudioSocket()`` application (slin 8 kHz) and
``Dial(AudioSocket/...)`` with the assistant's own codec (mu-law, A-law, slin16) straight
through. The agent must be heard intact on the caller's leg and a transfer must work on each."""

from __future__ import annotations

from pathlib import Path

import pytest

from .audio import Phrase, heard
from .peer import AmiDriver, AsteriskPeer
from .product import ProductProcess
from .scenario import CallerPlan, place_call


@pytest.mark.parametrize("script", ["agent", "ulaw_desk", "alaw_desk", "slin16_desk"])
async def test_each_media_path_is_heard_intact_and_transfers(
        script: str, asterisk: AsteriskPeer, agi_voice: ProductProcess, ami: AmiDriver,
        phrases: dict[str, Phrase], workdir: Path, measured: dict[str, object]) -> None:
    plan = CallerPlan().wait(2.5).say(phrases["billing"]).wait(6)
    call = await place_call(asterisk, ami, plan, script=script, workdir=workdir,
                            name=f"codec-{script}")
    said = call.agent_said()
    assert said and heard(said[0], "hello", "help"), said  # not garbled: transcribed as said
    assert heard(" ".join(said[1:]), "transferring", "billing"), said
    assert [e.get("Dest") for e in call.named("Reached")] == ["billing"], call.events
    rec = await agi_voice.wait_record(call.channel)
    assert rec["status"] == "TRANSFERRED" and rec["transfer_to"] == "billing", rec
    assert rec["turns"][1]["intent"] == "billing", rec["turns"]
    # the caller's words reached the STT intact through the codec too
    assert heard(rec["turns"][1]["caller_text"], "question", "bill"), rec["turns"][1]
    measured["answer_gap_s"] = call.answer_gaps()
    measured["latency_ms"] = rec["turns"][1]["latency_ms"]
