"""Conversations on the real Asterisk: transfer by voice, goodbye, keypad, caller hang-up,
ten turns in a row. The caller is the ``;2`` half of a Local channel playing Piper-spoken
phrases; what it heard is recorded by MixMonitor and transcribed."""

from __future__ import annotations

from pathlib import Path

from .audio import Phrase, heard, heard_most, speech_segments, spoken_seconds
from .conftest import FAREWELL, GREETING
from .peer import AmiDriver, AsteriskPeer
from .product import ProductProcess
from .scenario import CallerPlan, place_call


def first_agent_audio_after(agent: list[tuple[float, float]], t: float) -> float | None:
    return next((a for a, _ in agent if a >= t), None)


async def test_transfer_by_voice_reaches_the_destination(
        asterisk: AsteriskPeer, agi_voice: ProductProcess, ami: AmiDriver,
        phrases: dict[str, Phrase], workdir: Path,
        measured: dict[str, object]) -> None:
    plan = CallerPlan().wait(2.5).say(phrases["transfer_sales"]).wait(6)
    call = await place_call(asterisk, ami, plan, script="agent", workdir=workdir,
                            name="transfer")
    reached = call.named("Reached")
    assert [e.get("Dest") for e in reached] == ["sales"], call.events
    assert reached[0].get("Outcome", "").startswith("TRANSFERRED|sales"), reached[0].as_dict()
    rec = await agi_voice.wait_record(call.channel)
    assert rec["status"] == "TRANSFERRED" and rec["transfer_to"] == "sales"
    # the announcement was said (the product's text) and heard whole on the caller's leg (its
    # recorded length is the synthesis's); the tiny STT model only has to catch its main word
    assert "transferring you to sales" in rec["turns"][1]["agent_text"], rec["turns"]
    said = " ".join(call.agent_said())
    assert heard(said, "transferring"), said
    start, end = speech_segments(call.agent_audio())[-1]
    assert end - start >= 0.9 * spoken_seconds("Of course, transferring you to sales."), (
        start, end)
    measured["answer_gap_s"] = call.answer_gaps()
    measured["latency_ms"] = [t["latency_ms"] for t in rec["turns"] if t["trigger"] == "speech"]


async def test_goodbye_plays_the_whole_farewell_then_completes(
        asterisk: AsteriskPeer, agi_voice: ProductProcess, ami: AmiDriver,
        phrases: dict[str, Phrase], workdir: Path,
        measured: dict[str, object]) -> None:
    plan = CallerPlan().wait(2.5).say(phrases["goodbye"]).wait(8)
    call = await place_call(asterisk, ami, plan, script="agent", workdir=workdir,
                            name="goodbye")
    assert call.outcome[0] == "COMPLETED", (call.outcome, call.reason)
    said = call.agent_said()
    assert len(said) >= 2, said
    assert heard_most(said[0], GREETING), said
    assert heard_most(said[-1], FAREWELL), said
    measured["answer_gap_s"] = call.answer_gaps()
    start, end = speech_segments(call.agent_audio())[-1]
    measured["farewell_s"] = round(end - start, 2)
    assert end - start >= 0.9 * spoken_seconds(FAREWELL), (start, end)  # heard whole
    rec = await agi_voice.wait_record(call.channel)
    assert rec["status"] == "COMPLETED"


async def test_ten_caller_turns_without_a_drop(
        asterisk: AsteriskPeer, agi_voice: ProductProcess, ami: AmiDriver,
        phrases: dict[str, Phrase], workdir: Path,
        measured: dict[str, object]) -> None:
    plan = CallerPlan().wait(2.5)
    for i in range(10):
        plan.say(phrases["hours" if i % 2 else "hello"]).wait(3.5)
    plan.say(phrases["goodbye"]).wait(6)
    call = await place_call(asterisk, ami, plan, script="agent", workdir=workdir,
                            name="ten-turns", timeout=150)
    assert call.outcome[0] == "COMPLETED", (call.outcome, call.reason)
    rec = await agi_voice.wait_record(call.channel)
    speech_turns = [t for t in rec["turns"] if t["trigger"] == "speech"]
    assert len(speech_turns) == 11, [t["caller_text"] for t in rec["turns"]]
    agent = speech_segments(call.agent_audio())
    assert len(agent) >= 12, agent  # greeting + 10 answers + farewell, all heard by the caller
    gaps = sorted(call.answer_gaps())
    measured["answer_gap_s_p50_max"] = [gaps[len(gaps) // 2], gaps[-1]]
    lat = sorted(t["latency_ms"] for t in speech_turns if t["latency_ms"] is not None)
    measured["latency_ms_p50_max"] = [lat[len(lat) // 2], lat[-1]]
