"""Whole calls through the real AudioSocket server handler, in virtual time.

The Asterisk side is the emulator (UUID, caller frames every 20 ms, DTMF frames, redirect);
the speech engines are deterministic fakes (tests/fakes.py); everything between is the product.
"""

from __future__ import annotations

import dataclasses
import math
import uuid as uuidlib

import numpy as np
import pytest
import trio
import trio.testing

from fastagi_server.emulator.caller import AgentQuiet, CallerScript
from media_sidecar.brain.text import split_sentences
from media_sidecar.config.loader import load_config
from media_sidecar.protocol.audiosocket import Kind, encode_audio, encode_uuid
from tests.fakes import FakeTts, caller_says
from tests.session.harness import run_session
from tests.streams import socket_stream_pair

FRAME = 0.02
CFG = load_config()
BRAIN = CFG.assistants[0].brain


def reply_of(name: str) -> str:
    return next(i.reply for i in BRAIN.intents if i.name == name)


def assert_on_grid(times: list[float]) -> None:
    gaps = np.diff(times)
    assert gaps.size > 10
    assert np.allclose(gaps, FRAME, atol=1e-6), f"gaps off the 20 ms grid: {sorted(set(np.round(gaps, 4)))}"


async def test_transfer_request_after_reply_and_every_frame_on_the_grid(autojump_clock):
    script = CallerScript().speak_after_agent_quiet(
        caller_says("please transfer me to the billing department"))
    out = await run_session(script)

    assert out.ended.status == "TRANSFERRED" and out.ended.transfer_to == "billing"
    (req,) = out.control.requests
    assert (req.destination, req.context, req.exten, req.priority) == ("billing", "from-internal", "2001", "1")
    assert out.asterisk.closed_by == "redirect"
    # greeting first, then the billing reply, each played to its end
    assert out.tts.spoken[0].startswith("Hello, thanks for calling")
    assert split_sentences(reply_of("billing"))[-1] == out.tts.spoken[-1]
    rec = out.record
    assert rec.turns[0].trigger == "start" and rec.turns[1].caller_text.startswith("please transfer")
    assert rec.turns[1].agent_text == reply_of("billing") and rec.turns[1].intent == "billing"
    assert [a.kind for a in rec.actions] == ["transfer"]
    # frames leave every 20 ms from the first moment, silence included (no gap while thinking)
    times = [f.t for f in out.asterisk.frames_received]
    assert_on_grid(times)
    assert times[0] - out.asterisk.started_at == pytest.approx(0.0, abs=1e-6)
    # the reply played completely before the transfer was requested
    reply_frames = math.ceil(FakeTts.seconds(reply_of("billing")) / FRAME)
    assert rec.playout["audio_frames"] >= reply_frames
    # per-turn latency is recorded: caller end of speech -> first agent frame; with instant
    # engines it is the end-of-speech hangover plus at most two frames of our own overhead
    t1 = rec.turns[1]
    hangover = CFG.assistants[0].vad.end_ms
    assert t1.latency_ms is not None and hangover <= t1.latency_ms <= hangover + 40


async def test_goodbye_plays_farewell_to_the_last_frame_then_hangup_frame(autojump_clock):
    script = CallerScript().speak_after_agent_quiet(caller_says("goodbye"))
    out = await run_session(script)
    assert out.ended.status == "COMPLETED"
    assert out.asterisk.closed_by == "sidecar_hangup" and out.asterisk.result_code == 0
    frames = out.asterisk.frames_received
    assert frames[-1].kind == Kind.HANGUP
    farewell = split_sentences(reply_of("goodbye"))
    n = sum(math.ceil(FakeTts.seconds(s) / FRAME) for s in farewell)
    loud = [i for i, f in enumerate(frames) if f.kind == Kind.AUDIO and any(f.payload)]
    # the farewell's frames are the last audio, contiguous, and 00 00 00 comes right after them
    tail = loud[-n:]
    assert tail == list(range(tail[0], tail[0] + n))
    assert len(frames) - 1 - tail[-1] <= 1
    assert frames[-1].t - frames[tail[-1]].t == pytest.approx(FRAME, abs=1e-6)


@pytest.mark.parametrize("digit,dest", [("1", "sales"), ("2", "billing")])
async def test_dtmf_frame_triggers_the_mapped_transfer(autojump_clock, digit, dest):
    script = CallerScript().dtmf(digit, at=AgentQuiet(500))
    out = await run_session(script)
    assert out.ended.status == "TRANSFERRED" and out.ended.transfer_to == dest
    assert out.record.dtmf == [digit]
    assert out.record.turns[-1].trigger == "dtmf"


async def test_barge_in_flushes_within_one_frame_and_next_turn_proceeds(autojump_clock):
    script = (CallerScript()
              .speak_after_agent_quiet(caller_says("what are your opening hours"))
              .barge_in(caller_says("blah blah", 1.0), utterance=2, delay=1.0)
              .hangup(at=AgentQuiet(3000)))
    out = await run_session(script)
    rec = out.record
    assert rec.barge_ins == 1
    decided = out.t0 + rec.barge_in_at[0]
    # no agent audio after the frame in which the VAD decided
    hours_and_after = [f for f in out.agent_frames() if f.t > decided + 1e-9]
    fallback_start = min(f.t for f in hours_and_after)
    assert fallback_start > decided + 0.5  # the next agent audio is the next turn's answer
    interrupted = rec.turns[1]
    assert interrupted.intent == "hours" and interrupted.interrupted
    assert interrupted.heard_text and len(interrupted.heard_text) < len(interrupted.agent_text)
    # the next turn proceeds normally: the barge-in speech gets the fallback, then goodbye ends it
    assert rec.turns[2].caller_text == "blah blah" and rec.turns[2].intent == "fallback"
    assert not rec.turns[2].interrupted and len(rec.turns) == 3
    fallback = split_sentences(BRAIN.fallback)
    assert out.tts.spoken[-len(fallback):] == fallback
    assert out.ended.status == "CALLER_HANGUP"
    assert_on_grid([f.t for f in out.asterisk.frames_received])


async def test_greeting_is_protected_from_early_barge_in(autojump_clock):
    script = CallerScript().speak(caller_says("blah blah", 0.6), at=0.3).hangup(at=8.0)
    out = await run_session(script)
    assert out.record.barge_ins == 0
    assert out.record.turns[0].interrupted is False


async def test_no_input_reprompts_then_passes_the_caller_to_a_person(autojump_clock):
    out = await run_session(CallerScript(), max_seconds=120)
    rec = out.record
    assert [t.trigger for t in rec.turns] == ["start", "no-input", "no-input", "no-input"]
    reprompt = split_sentences(BRAIN.no_input.reprompt)[0]
    assert out.tts.spoken.count(reprompt) == BRAIN.no_input.max_reprompts
    assert out.tts.spoken[-1] == split_sentences(BRAIN.no_input.hangup_reply)[-1]
    # the embedded default never hangs up on a silent caller: the operator takes the call
    assert out.ended.status == "TRANSFERRED" and out.ended.reason == "no input"
    assert out.ended.transfer_to == "operator" and out.asterisk.closed_by == "redirect"


async def test_transfer_without_ami_hands_back_to_the_dialplan(autojump_clock):
    script = CallerScript().speak_after_agent_quiet(caller_says("I want to talk to sales"))
    out = await run_session(script, redirect=False)
    assert out.ended.status == "TRANSFERRED" and out.ended.transfer_to == "sales"
    assert out.ended.transfer_method == "dialplan"
    assert out.asterisk.closed_by == "sidecar_hangup"


async def test_caller_hangup_mid_reply_ends_the_call(autojump_clock):
    script = CallerScript().hangup(at=2.0)
    out = await run_session(script)
    assert out.ended.status == "CALLER_HANGUP"
    assert out.record.duration == pytest.approx(2.0, abs=0.05)


async def test_ulaw_call_end_to_end(autojump_clock):
    from fastagi_server.emulator.audiosocket_side import AudioSocketConfig

    a = dataclasses.replace(CFG.assistants[0], audio_format="ulaw")
    cfg = dataclasses.replace(CFG, assistants=(a,))
    script = CallerScript().speak_after_agent_quiet(caller_says("goodbye"))
    out = await run_session(script, cfg=cfg,
                            asterisk_config=AudioSocketConfig(caller_codec="ulaw"))
    assert out.ended.status == "COMPLETED"
    # mu-law in; slin 8 kHz back, the only thing Asterisk reads kind 0x10 as
    audio = [f for f in out.asterisk.frames_received if f.kind == Kind.AUDIO]
    assert audio and all(len(f.payload) == 320 for f in audio)


async def test_unknown_uuid_is_closed_without_a_byte(autojump_clock):
    out = await run_session(CallerScript(), offered=False)
    assert out.asterisk.frames_received == []
    assert out.asterisk.closed_by in ("sidecar_eof", "sidecar_reset")
    assert out.server.calls_rejected == 1 and out.ended is None


async def test_malformed_frame_ends_only_that_call(autojump_clock):
    """A bad frame on one call: that call fails; a concurrent call completes normally."""
    from tests.session.harness import build_server, offer

    server, registry, control = build_server(CFG)
    bad_uuid, good_uuid = str(uuidlib.uuid4()), str(uuidlib.uuid4())
    for u in (bad_uuid, good_uuid):
        offer(registry, CFG, u)
    bad_ast, bad_side = socket_stream_pair()
    from fastagi_server.emulator.audiosocket_side import AudioSocketSession

    good_ast, good_side = socket_stream_pair()
    good = AudioSocketSession(good_ast, good_uuid, caller=CallerScript()
                              .speak_after_agent_quiet(caller_says("goodbye")).player())
    async with trio.open_nursery() as n:
        n.start_soon(server.handle, bad_side)
        n.start_soon(server.handle, good_side)
        await bad_ast.send_all(encode_uuid(bad_uuid) + encode_audio(bytes(320)))
        await trio.sleep(0.5)
        await bad_ast.send_all(b"\x42\x00\x01x")  # unknown kind
        result = await good.run()
        await bad_ast.aclose()
    statuses = {e.uuid: e for e in control.ended}
    assert statuses[bad_uuid].status == "FAILED" and "0x42" in statuses[bad_uuid].reason
    assert statuses[good_uuid].status == "COMPLETED" and result.result_code == 0
