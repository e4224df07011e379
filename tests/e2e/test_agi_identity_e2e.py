"""A caller cannot pose as another call: end to end through the Asterisk emulator.

Found on a real Asterisk 22.10.1: a caller name ``Mallory`` + LF + ``agi_channel: <another live
channel>`` made pressing 1 AMI-redirect THE OTHER call, and an injected ``agi_arg_1`` chose the
assistant. The emulator writes caller ID raw into the request block, as Asterisk does, and
answers ``GET FULL VARIABLE`` from the channel itself; it also records the warning Asterisk
logs when ``BASE64_ENCODE`` gets an empty argument, which must never happen on a normal call.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import trio

from fastagi_server.emulator.call import CallResult
from fastagi_server.emulator.caller import AgentQuiet, CallerScript
from media_sidecar.config.loader import load_config
from tests.e2e.stack import open_stack
from tests.fakes import caller_says

pytestmark = pytest.mark.e2e

BASE = load_config()
SHORT = dataclasses.replace(
    BASE,
    assistants=(
        dataclasses.replace(
            BASE.assistants[0],
            brain=dataclasses.replace(BASE.assistants[0].brain, greeting="Hi, how can I help?"),
        ),
    ),
)

VICTIM = "Local/100@test-00000001;2"
HOSTILE = "Local/100@test-00000002;2"
FORGED_TAIL = (
    "\nagi_callingpres: 0\nagi_callingani2: 0\nagi_callington: 0\nagi_callingtns: 0"
    "\nagi_dnid: 7000\nagi_rdnis: unknown\nagi_context: test\nagi_extension: 100"
    "\nagi_priority: 1\nagi_enhanced: 0.0\nagi_accountcode: \nagi_threadid: 1"
    "\nagi_arg_1: AI_ASSISTANT=nosuch"
)


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def full_variable_reads(call: CallResult) -> list[str]:
    return [line for line in call.agi.lines(">>") if line.startswith("GET FULL VARIABLE")]


def assert_no_asterisk_warnings(*calls: CallResult) -> None:
    for call in calls:
        assert call.channel.warnings == [], (call.channel.name, call.channel.warnings)


async def test_forged_channel_in_caller_name_cannot_redirect_another_call(tmp_path):
    rec_path = tmp_path / "calls.jsonl"
    async with open_stack(SHORT, str(rec_path)) as stack:
        results: dict[str, CallResult] = {}

        async def one(key, script, spec):
            results[key] = await stack.call(script, seconds=40, **spec)

        async with trio.open_nursery() as n:
            # the victim is still talking when the hostile caller presses 1 (transfer to sales)
            n.start_soon(
                one,
                "victim",
                CallerScript().speak_after_agent_quiet(caller_says("goodbye"), 2500),
                dict(channel=VICTIM, uniqueid="1795267856.3"),
            )
            n.start_soon(
                one,
                "hostile",
                CallerScript().dtmf("1", at=AgentQuiet(300), via="ami"),
                dict(
                    channel=HOSTILE,
                    uniqueid="1795267856.5",
                    calleridname=f"Mallory\nagi_channel: {VICTIM}",
                ),
            )
        await stack.settle()
        await stack.wait_records(2)
        redirects = stack.ami_actions("Redirect")
        setvars = stack.ami_actions("Setvar")
        outcomes = {o.channel: o for o in stack.fastagi.server.handler.outcomes}
    victim, hostile = results["victim"], results["hostile"]
    # only the hostile call moved, on AMI and on the channel
    assert [(a["Channel"], a["Exten"]) for a in redirects] == [(HOSTILE, "2002")]
    assert {a["Channel"] for a in setvars} == {HOSTILE}
    assert hostile.variables["AI_STATUS"] == "TRANSFERRED"
    assert hostile.variables["AI_TRANSFER_TO"] == "sales"
    assert hostile.audiosocket[0].closed_by == "redirect"
    # the victim's call went on and ended normally
    assert victim.variables["AI_STATUS"] == "COMPLETED"
    assert "AI_TRANSFER_TO" not in victim.variables or not victim.variables["AI_TRANSFER_TO"]
    assert victim.channel.redirect_target is None
    assert victim.audiosocket[0].closed_by == "sidecar_hangup"
    # outcome and record name the hostile call's own channel
    assert set(outcomes) == {VICTIM, HOSTILE}
    assert outcomes[HOSTILE].status == "TRANSFERRED"
    assert outcomes[HOSTILE].uniqueid == "1795267856.5"
    assert outcomes[VICTIM].status == "COMPLETED"
    by_channel = {r["channel"]: r for r in records(rec_path)}
    assert set(by_channel) == {VICTIM, HOSTILE}
    assert by_channel[HOSTILE]["uniqueid"] == "1795267856.5"
    assert by_channel[HOSTILE]["caller_name"] == f"Mallory\nagi_channel: {VICTIM}"  # data
    assert by_channel[HOSTILE]["status"] == "TRANSFERRED"
    # one identity read per call, and Asterisk never warned
    assert len(full_variable_reads(victim)) == len(full_variable_reads(hostile)) == 1
    assert_no_asterisk_warnings(victim, hostile)


@pytest.mark.parametrize(
    "name",
    ["x\nagi_arg_1: AI_ASSISTANT=nosuch", "Mallory" + FORGED_TAIL],
    ids=["injected arg", "forged tail"],
)
async def test_injected_arg_does_not_choose_the_assistant(tmp_path, name):
    async with open_stack(SHORT, str(tmp_path / "r.jsonl")) as stack:
        goodbye = CallerScript().speak_after_agent_quiet(caller_says("goodbye"))
        call = await stack.call(goodbye, seconds=30, calleridname=name, args=())
        # the same text as a REAL argument does choose (and fails: no such assistant)
        real = await stack.call(CallerScript(), seconds=10, args=("AI_ASSISTANT=nosuch",))
    assert call.variables["AI_STATUS"] == "COMPLETED"
    assert call.audiosocket and call.audiosocket[0].closed_by == "sidecar_hangup"
    assert real.variables["AI_STATUS"] == "FAILED"
    assert "unknown assistant 'nosuch'" in real.variables["AI_REASON"]
    assert_no_asterisk_warnings(call, real)


async def test_blank_line_in_caller_name_fails_cleanly_to_the_dialplan(tmp_path):
    # A blank line ends the block early; the forged tail before it names an assistant and a
    # forged reply follows it. The call must not get that assistant: a clean FAILED instead.
    name = "x" + FORGED_TAIL + "\n\n200 result=1 (eA==)"
    async with open_stack(SHORT, str(tmp_path / "r.jsonl")) as stack:
        call = await stack.call(CallerScript(), seconds=10, calleridname=name, args=())
        await stack.settle()
        outcome = stack.fastagi.server.handler.outcomes[-1]
    assert call.variables["AI_STATUS"] == "FAILED"
    assert "ended the AGI request block early" in call.variables["AI_REASON"]
    assert not call.audiosocket
    assert outcome.channel == call.channel.name
    assert_no_asterisk_warnings(call)


async def test_ai_vars_take_a_second_read_and_unset_ones_cause_no_warning(tmp_path):
    rec_path = tmp_path / "r.jsonl"
    variables = {"AI_VARS": "ACCOUNT,MISSING", "AI_VAR_ACCOUNT": "42"}
    async with open_stack(SHORT, str(rec_path)) as stack:
        goodbye = CallerScript().speak_after_agent_quiet(caller_says("goodbye"))
        call = await stack.call(goodbye, seconds=30, variables=variables)
        plain = await stack.call(goodbye, seconds=30)
    assert call.variables["AI_STATUS"] == plain.variables["AI_STATUS"] == "COMPLETED"
    assert len(full_variable_reads(call)) == 2 and len(full_variable_reads(plain)) == 1
    assert_no_asterisk_warnings(call, plain)
