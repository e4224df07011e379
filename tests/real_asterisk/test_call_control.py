"""Call control on the real Asterisk: keypad two ways, the caller hanging up mid-reply, a
redirect by a third party, agi-voice's media plane down."""

from __future__ import annotations

from pathlib import Path

import trio

from .audio import Phrase
from .peer import AmiDriver, AsteriskPeer
from .product import ProductProcess, product_config
from .scenario import AGENT_CONTEXT, CallerPlan, agent_context, originate, place_call


async def test_keypad_by_senddtmf_runs_the_mapped_action_once(
        asterisk: AsteriskPeer, agi_voice: ProductProcess, ami: AmiDriver,
        workdir: Path, measured: dict[str, object]) -> None:
    plan = CallerPlan().wait(2.5).dtmf("1").wait(6)
    call = await place_call(asterisk, ami, plan, script="agent", workdir=workdir, name="dtmf")
    assert [e.get("Dest") for e in call.named("Reached")] == ["sales"], call.events
    rec = await agi_voice.wait_record(call.channel)
    assert rec["dtmf"] == ["1"], rec["dtmf"]  # AMI DTMFEnd and the AudioSocket frame: once
    assert [a["kind"] for a in rec["actions"]] == ["transfer"], rec["actions"]
    assert rec["status"] == "TRANSFERRED" and rec["transfer_to"] == "sales"
    key_turn = next(t for t in rec["turns"] if t["trigger"] == "dtmf")
    measured["key_to_first_frame_ms"] = key_turn["stage_ms"].get("first_frame")


async def test_keypad_by_ami_playdtmf_runs_the_mapped_action_once(
        asterisk: AsteriskPeer, agi_voice: ProductProcess, ami: AmiDriver,
        workdir: Path) -> None:
    plan = CallerPlan().wait(10)
    placed = await originate(asterisk, ami, plan, script="agent", workdir=workdir,
                             name="playdtmf")
    channel = await placed.channel(ami)
    await trio.sleep(2.5)  # the caller presses the key 2.5 s into the call
    resp = await ami.action("PlayDTMF", Channel=channel, Digit="#", Duration=120,
                            Receive="true")
    assert resp.get("Response") == "Success", resp.as_dict()
    call = await placed.finish(ami)
    assert call.outcome[0] == "COMPLETED", (call.outcome, call.reason)
    rec = await agi_voice.wait_record(call.channel)
    assert rec["dtmf"] == ["#"], rec["dtmf"]
    assert rec["reason"] == "caller pressed hash"


async def test_caller_hangs_up_mid_reply_and_the_next_call_is_fine(
        asterisk: AsteriskPeer, agi_voice: ProductProcess, ami: AmiDriver,
        phrases: dict[str, Phrase], workdir: Path) -> None:
    before = len(agi_voice.lines)
    # the answer to "opening hours" starts ~1 s after the phrase ends; hang up 0.4 s into it
    plan = CallerPlan().wait(2.5).say(phrases["hours"]).wait(1.4)
    call = await place_call(asterisk, ami, plan, script="agent", workdir=workdir,
                            name="hangup-mid-reply")
    rec = await agi_voice.wait_record(call.channel)
    assert rec["status"] == "CALLER_HANGUP", rec["reason"]
    assert call.outcome[0] == "CALLER_HANGUP", (call.outcome, call.reason)  # h extension
    assert not [ln for ln in agi_voice.lines[before:] if "Traceback" in ln or " ERROR " in ln]
    nxt = await place_call(asterisk, ami, CallerPlan().wait(2.5).dtmf("#").wait(5),
                           script="agent", workdir=workdir, name="after-hangup")
    assert nxt.outcome[0] == "COMPLETED", (nxt.outcome, nxt.reason)


async def test_third_party_redirect_is_recorded_as_such(
        asterisk: AsteriskPeer, agi_voice: ProductProcess, ami: AmiDriver,
        workdir: Path) -> None:
    placed = await originate(asterisk, ami, CallerPlan().wait(12), script="agent",
                             workdir=workdir, name="redirect")
    channel = await placed.channel(ami)
    await trio.sleep(3)  # someone at the PBX moves the call 3 s in
    resp = await ami.action("Redirect", Channel=channel, Context="from-internal", Exten="0",
                            Priority=1)
    assert resp.get("Response") == "Success", resp.as_dict()
    call = await placed.finish(ami)
    assert [e.get("Dest") for e in call.named("Reached")] == ["operator"]
    status, _to, _agi = call.outcome  # the channel's variables 1.5 s after it arrived
    assert status == "TRANSFERRED", (call.outcome, call.reason)
    assert "redirected" in call.reason and "not by the assistant" in call.reason, call.reason
    rec = await agi_voice.wait_record(call.channel)
    assert rec["status"] == "TRANSFERRED", rec
    assert rec["reason"] == call.reason, (rec["reason"], call.reason)


async def test_media_plane_down_fails_fast_to_the_dialplan_fallback(
        asterisk: AsteriskPeer, agi_voice: ProductProcess, ami: AmiDriver,
        workdir: Path, measured: dict[str, object]) -> None:
    # a FastAGI plane whose media plane is not running (nothing listens on its control port)
    cfg = product_config(workdir / "no-sidecar", {"receptionist": {"provider": "echo"}},
                         {"default": "receptionist"})
    fastagi = ProductProcess(cfg, workdir / "no-sidecar", command="fastagi",
                             ready_line="FastAGI listening")
    fastagi.start()
    try:
        asterisk.set_context("av-agent-nosidecar", agent_context(fastagi.fastagi_port))
        t0 = trio.current_time()
        call = await place_call(asterisk, ami, CallerPlan().wait(5), script="agent",
                                workdir=workdir, name="nosidecar",
                                context="av-agent-nosidecar")
    finally:
        fastagi.stop()
        asterisk.set_context(AGENT_CONTEXT, agent_context(agi_voice.fastagi_port))
    assert call.outcome[0] == "FAILED", (call.outcome, call.reason)
    assert "sidecar" in call.reason, call.reason
    fallback = call.named("Fallback")
    assert len(fallback) == 1 and fallback[0].get("Reason") == call.reason
    assert call.done is not None
    assert ami.time_of(call.done) - t0 < 3.0, ami.time_of(call.done) - t0
    measured["originate_to_fallback_s"] = round(ami.time_of(call.done) - t0, 3)
