"""Whole calls over real loopback sockets: emulator -> FastAGI server -> sidecar -> AMI.

These use the deterministic fake speech engines (the speech models have their own e2e test in
test_local_assistant_e2e.py) and run in real time, because three processes' worth of real
sockets cannot share trio's virtual clock.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid as uuidlib

import pytest
import trio

from fastagi_server.emulator.caller import AgentQuiet, CallerScript
from media_sidecar.config.loader import load_config
from media_sidecar.protocol.audiosocket import Kind, encode_uuid
from tests.e2e.stack import open_stack
from tests.fakes import caller_says

pytestmark = pytest.mark.e2e

BASE = load_config()
SHORT = dataclasses.replace(BASE, assistants=(dataclasses.replace(
    BASE.assistants[0],
    brain=dataclasses.replace(BASE.assistants[0].brain, greeting="Hi, how can I help?")),))


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_spoken_transfer_redirects_by_ami_and_sets_outcome(tmp_path):
    rec_path = tmp_path / "calls.jsonl"
    async with open_stack(SHORT, str(rec_path)) as stack:
        script = CallerScript().speak_after_agent_quiet(
            caller_says("please transfer me to the billing department"))
        call = await stack.call(script, seconds=30)
        # AMI: Setvar AI_STATUS/AI_TRANSFER_TO on the channel, then Redirect to billing
        (redirect,) = stack.ami_actions("Redirect")
        assert (redirect["Channel"], redirect["Context"], redirect["Exten"], redirect["Priority"]) \
            == (call.channel.name, "from-internal", "2001", "1")
        setvars = {a["Variable"]: a["Value"] for a in stack.ami_actions("Setvar")}
        assert setvars == {"AI_STATUS": "TRANSFERRED", "AI_TRANSFER_TO": "billing"}
    # the redirect looked like a hangup to AGI; the variables are set and the channel moved on
    assert call.variables["AI_STATUS"] == "TRANSFERRED"
    assert call.variables["AI_TRANSFER_TO"] == "billing"
    assert call.audiosocket[0].closed_by == "redirect"
    assert (call.channel.context, call.channel.exten) == ("from-internal", "2001")
    (rec,) = records(rec_path)
    assert rec["status"] == "TRANSFERRED" and rec["caller"] == "5551234" and rec["dnid"] == "7000"
    assert rec["turns"][1]["caller_text"].startswith("please transfer me")
    assert "billing" in rec["turns"][1]["agent_text"]


async def test_dtmf_through_ami_triggers_the_mapped_action(tmp_path):
    async with open_stack(SHORT, str(tmp_path / "r.jsonl")) as stack:
        script = CallerScript().dtmf("1", at=AgentQuiet(300), via="ami")
        call = await stack.call(script, seconds=30)
        (redirect,) = stack.ami_actions("Redirect")
        assert redirect["Exten"] == "2002"  # sales
    assert call.variables["AI_STATUS"] == "TRANSFERRED" and call.variables["AI_TRANSFER_TO"] == "sales"
    # the digit came by AMI only: no 0x03 frame was sent on the AudioSocket
    assert not [f for f in call.audiosocket[0].frames_sent if f.kind == Kind.DTMF]


async def test_degraded_mode_without_ami_hands_transfer_to_the_dialplan(tmp_path):
    async with open_stack(SHORT, str(tmp_path / "r.jsonl"), ami=False) as stack:
        script = CallerScript().dtmf("2", at=AgentQuiet(300), via="audiosocket")
        call = await stack.call(script, seconds=30)
    assert call.audiosocket[0].closed_by == "sidecar_hangup"  # 00 00 00: back to the dialplan
    assert call.variables["AI_STATUS"] == "TRANSFERRED" and call.variables["AI_TRANSFER_TO"] == "billing"


async def test_goodbye_completes_and_hands_back(tmp_path):
    async with open_stack(SHORT, str(tmp_path / "r.jsonl")) as stack:
        call = await stack.call(CallerScript().speak_after_agent_quiet(caller_says("goodbye")),
                                seconds=30)
    session = call.audiosocket[0]
    assert session.closed_by == "sidecar_hangup" and session.frames_received[-1].kind == Kind.HANGUP
    assert call.variables["AI_STATUS"] == "COMPLETED"
    assert call.agi_status == "SUCCESS"


async def test_sidecar_down_fails_fast_to_the_dialplan(tmp_path):
    async with open_stack(SHORT, str(tmp_path / "r.jsonl"), sidecar=False) as stack:
        t0 = time.monotonic()
        call = await stack.call(CallerScript(), seconds=10)
        elapsed = time.monotonic() - t0
    assert call.variables["AI_STATUS"] == "FAILED"
    assert "sidecar" in call.variables["AI_REASON"]
    assert elapsed < 1.0
    assert not call.audiosocket  # EXEC AudioSocket was never attempted


async def test_unknown_assistant_fails_fast(tmp_path):
    async with open_stack(SHORT, str(tmp_path / "r.jsonl")) as stack:
        call = await stack.call(CallerScript(), seconds=10, variables={"AI_ASSISTANT": "nope"})
    assert call.variables["AI_STATUS"] == "FAILED"
    assert "unknown assistant" in call.variables["AI_REASON"]
    assert not call.audiosocket


async def test_caller_hangup_during_exec_and_a_second_call_is_unaffected(tmp_path):
    async with open_stack(SHORT, str(tmp_path / "r.jsonl")) as stack:
        results = {}

        async def one(name, script, channel, uniqueid):
            results[name] = await stack.call(script, seconds=30, channel=channel,
                                             uniqueid=uniqueid)

        async with trio.open_nursery() as n:
            n.start_soon(one, "hangup", CallerScript().hangup(at=1.0),
                         "Local/100@test-00000001;2", "1795267856.3")
            n.start_soon(one, "good", CallerScript().speak_after_agent_quiet(caller_says("goodbye")),
                         "Local/100@test-00000002;2", "1795267856.5")
        await stack.settle()
    hung = results["hangup"]
    assert hung.audiosocket[0].closed_by == "caller_hangup"
    outcomes = {o.uuid: o for o in stack.fastagi.server.handler.outcomes}
    assert [o.status for o in outcomes.values()].count("CALLER_HANGUP") == 1
    assert hung.agi_status == "HANGUP"
    assert hung.variables.get("AI_STATUS") == "CALLER_HANGUP"
    good = results["good"]
    assert good.variables["AI_STATUS"] == "COMPLETED"


async def test_ami_redirect_mid_call_is_told_apart_from_a_hangup(tmp_path):
    rec_path = tmp_path / "r.jsonl"
    async with open_stack(SHORT, str(rec_path)) as stack:
        script = CallerScript().redirect("from-internal", "0", 1, at=1.5)
        call = await stack.call(script, seconds=30)
        # after the AGI socket closed, AMI said "redirect" (Newexten at the target, not a
        # Hangup): the live channel is marked through AMI and the outcome says so
        with trio.fail_after(5):
            await stack.ami.wait_for_action("Setvar", Variable="AI_STATUS", Value="TRANSFERRED")
        await stack.settle()
        outcome = stack.fastagi.server.handler.outcomes[-1]
        await stack.wait_records(1)
    assert call.audiosocket[0].closed_by == "redirect"
    assert call.agi_status == "HANGUP"  # to AGI the redirect looked exactly like a hangup
    assert outcome.status == "TRANSFERRED" and "redirected by AMI" in outcome.reason
    # the sidecar had closed the call by then; its record waited for the control plane's word
    (rec,) = records(rec_path)
    assert (rec["status"], rec["reason"]) == (outcome.status, outcome.reason)
    assert rec["outcome_confirmed"] is True
    assert rec["media_verdict"]["status"] == "CALLER_HANGUP"


async def test_unknown_uuid_and_garbage_are_closed_without_a_byte(tmp_path):
    async with open_stack(SHORT, str(tmp_path / "r.jsonl")) as stack:
        assert stack.sidecar is not None
        for first in (encode_uuid(uuidlib.uuid4()), b"\x10\x01\x40" + bytes(320), b"\xee\x00\x00"):
            s = await trio.open_tcp_stream("127.0.0.1", stack.sidecar.audiosocket)
            await s.send_all(first)
            with trio.fail_after(5):
                assert await s.receive_some(100) == b""
            await s.aclose()
        # a real call still works afterwards
        call = await stack.call(CallerScript().speak_after_agent_quiet(caller_says("goodbye")),
                                seconds=30)
    assert call.variables["AI_STATUS"] == "COMPLETED"


async def test_control_link_survives_a_sidecar_restart(tmp_path):
    async with open_stack(SHORT, str(tmp_path / "r.jsonl")) as stack:
        goodbye = CallerScript().speak_after_agent_quiet(caller_says("goodbye"))
        first = await stack.call(goodbye, seconds=30)
        assert first.variables["AI_STATUS"] == "COMPLETED"
        assert stack.sidecar_runner is not None
        await stack.sidecar_runner.stop()
        # while the sidecar is down a call fails fast to the dialplan fallback
        down = await stack.call(CallerScript(), seconds=10)
        assert down.variables["AI_STATUS"] == "FAILED"
        await stack.sidecar_runner.start()
        assert await stack.control_link_up()
        again = await stack.call(goodbye, seconds=30)
    assert again.variables["AI_STATUS"] == "COMPLETED"


def final_ai_variables(call, stack) -> dict[str, str]:
    """The AI_* values the channel ends with: what AGI set, then what AMI Setvar set on it.

    In these calls AMI Setvars come either before AGI's own SET VARIABLEs with the same values
    (a transfer by the assistant: Setvar, Redirect, then the outcome over AGI) or after the AGI
    socket closed (a third-party redirect, marked once AMI told it from a hangup), so applying
    them last gives the values the channel really ends with.
    """
    out = {k: v for k, v in call.variables.items() if k.startswith("AI_")}
    for a in stack.ami_actions("Setvar"):
        if a["Channel"] == call.channel.name:
            out[a["Variable"]] = a["Value"]
    return out


async def test_call_records_say_what_ai_status_says(tmp_path, monkeypatch):
    """The record's status/reason/transfer_to equal the channel's final AI_* variables for
    every kind of ending, a third-party redirect included: the FastAGI side tells that one
    from a hangup only after the AGI socket closed, after the media session ended, and the
    sidecar's record waits for it (keeping its own verdict as media_verdict)."""
    from media_sidecar.config.schema import RealtimeConfig

    monkeypatch.delenv("AGI_VOICE_E2E_NO_KEY", raising=False)
    broken = dataclasses.replace(
        SHORT.assistants[0], name="broken", provider="openai_realtime", apology="",
        realtime=RealtimeConfig(url="ws://127.0.0.1:9/v1/realtime",
                                api_key_env="AGI_VOICE_E2E_NO_KEY"))
    cfg = dataclasses.replace(SHORT, assistants=(*SHORT.assistants, broken))
    rec_path = tmp_path / "r.jsonl"
    scripts = {
        "redirect": (CallerScript().redirect("from-internal", "0", 1, at=1.5), {}),
        "hangup": (CallerScript().hangup(at=1.5), {}),
        "completed": (CallerScript().speak_after_agent_quiet(caller_says("goodbye")), {}),
        "transfer": (CallerScript().speak_after_agent_quiet(
            caller_says("please transfer me to the billing department")), {}),
        "failed": (CallerScript(), {"variables": {"AI_ASSISTANT": "broken"}}),
    }
    async with open_stack(cfg, str(rec_path)) as stack:
        calls = {}

        async def one(n, name):
            script, extra = scripts[name]
            calls[name] = await stack.call(script, seconds=30, channel=f"PJSIP/t{n}-0000000{n}",
                                           uniqueid=f"1795267900.{n}", **extra)

        async with trio.open_nursery() as nursery:
            for n, name in enumerate(scripts, 1):
                nursery.start_soon(one, n, name)
        await stack.settle()
        await stack.wait_records(len(scripts), within=15)
    by_uuid = {r["uuid"]: r for r in records(rec_path)}
    expect = {"redirect": "TRANSFERRED", "hangup": "CALLER_HANGUP", "completed": "COMPLETED",
              "transfer": "TRANSFERRED", "failed": "FAILED"}
    for name, call in calls.items():
        final = final_ai_variables(call, stack)
        rec = by_uuid[call.audiosocket[0].uuid]
        assert final["AI_STATUS"] == expect[name], (name, final)
        assert (rec["status"], rec["reason"], rec["transfer_to"]) == (
            final["AI_STATUS"], final.get("AI_REASON", ""), final.get("AI_TRANSFER_TO", "")), name
        assert rec["outcome_confirmed"] is True, name
    # the sidecar saw the redirect only as its caller leg closing: its own verdict is kept
    red = by_uuid[calls["redirect"].audiosocket[0].uuid]
    assert red["reason"] == "redirected by AMI, not by the assistant"
    assert red["media_verdict"]["status"] == "CALLER_HANGUP"
    assert by_uuid[calls["transfer"].audiosocket[0].uuid]["transfer_to"] == "billing"
