"""Limits in the small: the per-caller rate limit, busy and withdraw in the registry, the caps
that bound a call's record and chat history, and a records disk that is full."""

from __future__ import annotations

import json
import logging
import os
import uuid as uuidlib

import pytest
import trio
import trio.lowlevel

from fastagi_server.agi.handler import refusal_reason
from fastagi_server.calls import CallerRateLimit
from media_sidecar.config.loader import load_config
from media_sidecar.ops.metrics import SidecarMetrics
from media_sidecar.pipeline.llm_brain import MAX_USER_CHARS
from media_sidecar.protocol import control as c
from media_sidecar.server.registry import CallRegistry
from media_sidecar.session.records import (
    MAX_RECORD_ITEMS,
    MAX_RECORD_TURNS,
    MAX_TEXT_CHARS,
    CallRecord,
    RecordWriter,
    TurnRecord,
)

CFG = load_config()
ASSISTANT = CFG.assistants[0].name


# -- rate limit ------------------------------------------------------------------------------

def test_rate_limit_counts_admitted_calls_in_a_sliding_window():
    rl = CallerRateLimit(2, 60.0)
    assert [rl.admit("5551", t) for t in (0.0, 10.0, 20.0)] == [True, True, False]
    assert rl.admit("5552", 20.0)  # another caller has a count of its own
    assert not rl.admit("5551", 59.9)  # still two within the last 60 s
    assert rl.admit("5551", 60.0)  # the call at 0.0 left the window
    assert not rl.admit("5551", 65.0)
    assert rl.limited == 3


def test_rate_limit_off_by_default_and_callers_without_a_number_share_a_count():
    assert all(CallerRateLimit(0, 60.0).admit("5551", 0.0) for _ in range(1000))
    rl = CallerRateLimit(1, 60.0)
    assert rl.admit("unknown", 0.0)
    assert not rl.admit("", 1.0) and not rl.admit("Anonymous", 2.0)


def test_rate_limit_memory_is_bounded():
    rl = CallerRateLimit(3, 60.0)
    rl.MAX_CALLERS = 100  # type: ignore[misc]
    for i in range(5000):
        assert rl.admit(f"555{i}", i * 0.001)  # all within the window
        assert len(rl) <= 100
    for i in range(5000):  # long after: every count expired
        rl.admit(f"777{i}", 1000.0 + i)
    assert len(rl) <= 100


def test_refusal_reasons_become_ai_reason():
    assert refusal_reason("busy: at the limit of 2 calls") == "busy"
    assert refusal_reason("sidecar is at its limit of 2 calls") == "busy"  # an older worker
    assert refusal_reason("draining") == "draining"
    assert refusal_reason("no voice installed") == "sidecar refused: no voice installed"


# -- busy and withdraw in the worker's registry ---------------------------------------------

def _cfg(max_calls: int):
    import dataclasses
    return dataclasses.replace(CFG, sidecar=dataclasses.replace(CFG.sidecar, max_calls=max_calls,
                                                                offer_ttl=30.0))


async def test_withdraw_frees_the_slot_at_once_and_leaves_live_calls_alone(autojump_clock):
    reg = CallRegistry(_cfg(2))
    ids = [str(uuidlib.uuid4()) for _ in range(4)]
    assert all(isinstance(reg.offer(c.Offer(u, ASSISTANT)), c.Accept) for u in ids[:2])
    full = reg.offer(c.Offer(ids[2], ASSISTANT))
    assert isinstance(full, c.Refuse) and full.reason == "busy: at the limit of 2 calls"
    assert reg.withdraw(ids[0]) and not reg.withdraw(ids[0])  # once
    assert reg.pending_offers == 1 and reg.withdrawn == 1
    assert isinstance(reg.offer(c.Offer(ids[2], ASSISTANT)), c.Accept)  # no 30 s wait
    assert reg.claim(ids[0]) is None  # a late AudioSocket for it is not accepted
    reg.attach(ids[1], object())  # type: ignore[arg-type]  # connected: a live call
    assert reg.claim(ids[1]) is not None
    assert not reg.withdraw(ids[1])
    assert [u for u, _ in reg.live()] == [ids[1]]
    await trio.lowlevel.checkpoint()


def test_withdraw_is_a_control_message():
    u = str(uuidlib.uuid4())
    msg = c.Withdraw(uuid=u, reason="EXEC AudioSocket returned -1")
    assert json.loads(c.encode(msg)) == {"type": "withdraw", "uuid": u,
                                         "reason": "EXEC AudioSocket returned -1"}
    assert c.decode(c.encode(msg)) == msg
    with pytest.raises(c.ControlError):
        c.decode(json.dumps({"type": "withdraw", "uuid": "not-a-uuid"}))


# -- record and history caps -----------------------------------------------------------------

def test_a_record_keeps_the_first_and_the_latest_turns_and_cuts_long_texts():
    rec = CallRecord(uuid=str(uuidlib.uuid4()), assistant=ASSISTANT)
    for _ in range(MAX_RECORD_TURNS * 3):
        rec.add_turn(TurnRecord(index=rec.next_turn_index, trigger="speech",
                                caller_text="x" * (MAX_TEXT_CHARS * 5)))
        assert len(rec.turns) <= MAX_RECORD_TURNS
    assert rec.turns[0].index == 0 and rec.turns[-1].index == MAX_RECORD_TURNS * 3 - 1
    assert rec.turns_dropped == MAX_RECORD_TURNS * 2
    rec.dtmf = ["1"] * (MAX_RECORD_ITEMS + 7)
    body = json.loads(rec.to_json())
    assert len(body["turns"]) == MAX_RECORD_TURNS and body["turns_dropped"] == MAX_RECORD_TURNS * 2
    assert {len(t["caller_text"]) for t in body["turns"]} == {MAX_TEXT_CHARS}
    assert body["turns"][0]["caller_text"].endswith("\u2026")
    assert len(body["dtmf"]) == MAX_RECORD_ITEMS and body["items_dropped"] == 7
    assert len(rec.to_json()) < MAX_RECORD_TURNS * (MAX_TEXT_CHARS + 1000)


def test_the_llm_history_keeps_the_end_of_a_very_long_turn():
    from tests.unit.test_llm_brain import brain  # the LLM brain with a scripted model

    b = brain(None, history_messages=4)
    for i in range(200):
        b._user(f"turn {i} " + "y" * (MAX_USER_CHARS * 3))
    assert len(b.messages) <= 4
    assert all(len(m["content"]) <= MAX_USER_CHARS for m in b.messages)
    assert b.messages[-1]["content"].startswith("\u2026")


# -- the records disk full -------------------------------------------------------------------

def test_a_full_records_disk_is_logged_once_and_counted(tmp_path, caplog):
    path = tmp_path / "calls.jsonl"
    os.symlink("/dev/full", path)  # every write: ENOSPC from the kernel
    writer = RecordWriter(str(path))
    metrics = SidecarMetrics(process=False)
    writer.error_observers.append(metrics.count_record_error)
    with caplog.at_level(logging.INFO, logger="agi_voice.records"):
        for _ in range(3):
            writer.write(CallRecord(uuid=str(uuidlib.uuid4()), assistant=ASSISTANT))
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "No space left on device" in errors[0].getMessage()
        assert writer.write_errors == 3
        assert metrics.registry.get_sample_value("agi_voice_record_write_errors_total") == 3
        os.unlink(path)  # space again
        writer.write(CallRecord(uuid=str(uuidlib.uuid4()), assistant=ASSISTANT))
    assert len(path.read_text().splitlines()) == 1
    assert any("written to" in r.getMessage() and "again" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)


# -- a long conversation does not keep its agent audio ---------------------------------------

async def test_played_turns_release_their_audio_and_keep_complete_records(autojump_clock,
                                                                          monkeypatch):
    """Each finished turn's record is completed as soon as its audio has played, and the turn
    (its utterances hold the synthesised PCM) is let go: a long call holds one or two."""
    from fastagi_server.emulator.caller import AgentQuiet, CallerScript
    from media_sidecar.session.turns import PipelineTurns
    from tests.fakes import caller_says
    from tests.session.harness import run_session

    held: list[int] = []
    fold = PipelineTurns._fold_played_turns

    def watching(self: PipelineTurns) -> None:
        fold(self)
        held.append(len(self._all_turns))

    monkeypatch.setattr(PipelineTurns, "_fold_played_turns", watching)
    script = CallerScript()
    for _ in range(8):
        script.speak(caller_says("what are your opening hours", 0.8), at=AgentQuiet(400))
    script.hangup(at=AgentQuiet(800))
    out = await run_session(script, max_seconds=120)
    turns = out.record.turns
    assert len(turns) == 9  # the greeting and eight answers
    assert max(held) <= 1 and len(held) == 9
    assert all(t.first_frame_sent is not None and t.heard_text for t in turns)
    assert [t.index for t in turns] == list(range(9))
