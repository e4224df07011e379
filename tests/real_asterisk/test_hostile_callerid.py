"""Caller ID is data, never identity: hostile caller names set with ``Set(CALLERID(name)=...)``
on the real Asterisk (which writes them raw into the FastAGI environment block) cannot move
another caller's call, choose the assistant, or run anything."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import trio

from .peer import AmiDriver, AsteriskPeer
from .product import ProductProcess
from .scenario import CallerPlan, agent_context, originate, place_call


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_forged_agi_channel_line_does_not_move_another_callers_call(
        asterisk: AsteriskPeer, agi_voice: ProductProcess, ami: AmiDriver,
        workdir: Path) -> None:
    before = len(asterisk.log_lines())
    victim = await originate(asterisk, ami, CallerPlan().wait(9).dtmf("#").wait(5),
                             script="agent", workdir=workdir, name="victim")
    victim_channel = await victim.channel(ami)
    forged = (f"Mallory\nagi_channel: {victim_channel}\nagi_uniqueid: {victim.uniqueid}\n"
              "agi_arg_1: AI_ASSISTANT=nosuch")
    await trio.sleep(1)
    hostile = await place_call(asterisk, ami, CallerPlan().wait(2.5).dtmf("1").wait(6),
                               script="agent", workdir=workdir, name="mallory",
                               variables={"AV_CNAME_B64": b64(forged)})
    # the hostile call was transferred, itself; nobody else was
    reached = hostile.named("Reached")
    assert [(e.get("Dest"), e.get("Channel")) for e in reached] == [("sales", hostile.channel)]
    rec = await agi_voice.wait_record(hostile.channel)
    assert rec["status"] == "TRANSFERRED" and rec["assistant"] == "receptionist", rec
    assert rec["uniqueid"] == hostile.uniqueid and rec["channel"] == hostile.channel
    assert rec["caller_name"].startswith("Mallory") and victim_channel not in rec["channel"]
    # the victim's call went on, untouched, and ended as its caller chose
    victim_call = await victim.finish(ami)
    assert not victim_call.named("Reached"), victim_call.events
    assert victim_call.outcome[0] == "COMPLETED", (victim_call.outcome, victim_call.reason)
    vrec = await agi_voice.wait_record(victim_call.channel)
    assert vrec["dtmf"] == ["#"] and vrec["status"] == "COMPLETED"
    # no second AGI command ran: Asterisk logged no AGI error for either call
    assert not [ln for ln in asterisk.problems(before) if "res_agi" in ln]


async def test_hostile_caller_names_are_kept_as_data(
        asterisk: AsteriskPeer, agi_voice: ProductProcess, ami: AmiDriver,
        workdir: Path) -> None:
    payloads = [
        "x\nagi_arg_1: AI_ASSISTANT=nosuch",
        'Eve "${CHANNEL}" $[1+1] \\ ;',
        "Carol\r\nagi_network_script: echo?assistant=echo",
        "A" * 300,
    ]
    for i, name in enumerate(payloads):
        call = await place_call(asterisk, ami, CallerPlan().wait(2.5).dtmf("#").wait(5),
                                script="agent", workdir=workdir, name=f"hostile{i}",
                                variables={"AV_CNAME_B64": b64(name)})
        assert call.outcome[0] == "COMPLETED", (name, call.outcome, call.reason)
        rec = await agi_voice.wait_record(call.channel)
        assert rec["assistant"] == "receptionist", (name, rec["assistant"])
        assert rec["channel"] == call.channel and rec["uniqueid"] == call.uniqueid
        # the name is data: no variable was expanded in it
        first_line = name.split("\n")[0].split("\r")[0]
        assert "$" not in first_line or "${CHANNEL}" in rec["caller_name"], rec["caller_name"]


def cuts_request_block(value: str) -> bool:
    """Whether ``agi_dnid: <value>\\n`` holds an empty line (Asterisk writes it raw)."""
    return any(seg in ("", "\r") for seg in value.split("\n")[1:])


def injection_context(fastagi_port: int) -> str:
    """The agent context with two more hostile inputs set from base64 before the AGI (the
    dialplan cannot write CR or LF literally): ``CALLERID(dnid)`` from ``AV_DNID_B64`` and
    ``AI_VAR_NOTE`` (listed in ``AI_VARS``) from ``AV_NOTE_B64``."""
    base = agent_context(fastagi_port)
    extra = (" same => n,Set(CALLERID(dnid)=${BASE64_DECODE(${AV_DNID_B64})})\n"
             " same => n,Set(AI_VARS=NOTE)\n"
             " same => n,Set(AI_VAR_NOTE=${BASE64_DECODE(${AV_NOTE_B64})})\n")
    # before the caller-name GotoIf, which jumps straight to the AGI when AV_CNAME_B64 is
    # unset (inserted after it, these lines never ran: the "empty DNID" this test once showed)
    anchor = " same => n,GotoIf($[\"${AV_CNAME_B64}\""
    assert anchor in base
    return base.replace(anchor, extra + anchor, 1)


async def test_hostile_dnid_and_ai_var_are_kept_as_data(
        asterisk: AsteriskPeer, agi_voice: ProductProcess, ami: AmiDriver,
        workdir: Path) -> None:
    context = "av-agent-injection"
    asterisk.set_context(context, injection_context(agi_voice.fastagi_port))
    payloads = [
        "7000\nagi_arg_1: AI_ASSISTANT=nosuch\nagi_channel: Local/x@y-1;2",
        'x"\nEXEC UserEvent "Injected"\nSET VARIABLE AI_OWNED 1',
        "Eve\r\n\r\nAction: Hangup\r\nChannel: Local/x\r\n",
        '${SHELL(id)} $[1+1] ${CHANNEL} "q" \\ :) :',
        "B" * 300,
    ]
    before = len(asterisk.log_lines())
    for i, value in enumerate(payloads):
        call = await place_call(asterisk, ami, CallerPlan().wait(2.5).dtmf("#").wait(5),
                                script="agent", workdir=workdir, name=f"inject{i}",
                                context=context,
                                variables={"AV_DNID_B64": b64(value), "AV_NOTE_B64": b64(value)})
        if re.search(r"\).*:", value) and not cuts_request_block(value):
            # an unmatched ')' before a ':' makes Asterisk's expression parser cut the value
            # it reads back (identity.py): an incomplete identity is refused, never trusted
            assert call.outcome[0] == "FAILED", (value, call.outcome, call.reason)
            assert "incomplete" in call.reason, (value, call.reason)
            assert call.named("Fallback"), call.events
        elif cuts_request_block(value):
            # a blank line in the DNID ended Asterisk's request block inside it: the arguments
            # that followed are not the dialplan's, so the call is refused cleanly and the
            # dialplan goes on to its fallback (identity.py's module doc)
            assert call.outcome[0] == "FAILED", (value, call.outcome, call.reason)
            assert "blank line in dnid" in call.reason, (value, call.reason)
            assert call.named("Fallback"), call.events
        else:
            assert call.outcome[0] == "COMPLETED", (value, call.outcome, call.reason)
            rec = await agi_voice.wait_record(call.channel)
            assert rec["assistant"] == "receptionist", (value, rec["assistant"])
            assert rec["channel"] == call.channel and rec["uniqueid"] == call.uniqueid
            # data, nothing expanded; Asterisk itself keeps at most 255 characters of it
            assert rec["dnid"] == value[:255], (value, rec["dnid"])
        # no UserEvent of the payload's making, no AI_OWNED
        assert not [e for e in call.events if e.event == "UserEvent"
                    and e.get("UserEvent") == "Injected"], call.events
        assert not [e for e in call.events if e.event == "VarSet"
                    and e.get("Variable") == "AI_OWNED"], call.events
    assert not [ln for ln in asterisk.problems(before) if "res_agi" in ln]
