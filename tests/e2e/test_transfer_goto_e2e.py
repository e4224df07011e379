"""Transfers by dialplan Goto after the hand-back (``fastagi.transfer: auto`` on an Asterisk
that continues the dialplan after AudioSocket's ``00 00 00``, as 22.10.1 does): no AMI
Redirect, so none of the warnings Asterisk logs when a Redirect pulls a channel out of the
AudioSocket application, and no AMI needed at all."""

from __future__ import annotations

import json

import pytest

from fastagi_server.emulator.caller import AgentQuiet, CallerScript
from tests.e2e.stack import open_stack
from tests.e2e.test_calls_e2e import SHORT
from tests.fakes import caller_says

pytestmark = pytest.mark.e2e


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("ami", [True, False], ids=["with-ami", "without-ami"])
async def test_spoken_transfer_goes_on_in_the_dialplan_after_the_hand_back(tmp_path, ami):
    rec_path = tmp_path / "calls.jsonl"
    async with open_stack(SHORT, str(rec_path), ami=ami, transfer="auto") as stack:
        script = CallerScript().speak_after_agent_quiet(
            caller_says("please transfer me to the billing department"))
        call = await stack.call(script, seconds=30)
        if ami:
            assert not stack.ami_actions("Redirect") and not stack.ami_actions("Setvar")
    # the announcement played to its end, then 00 00 00; the AGI sent the channel on itself
    assert call.audiosocket[0].closed_by == "sidecar_hangup"
    assert call.channel.goto_target == ("from-internal", "2001", 1)
    assert (call.channel.context, call.channel.exten) == ("from-internal", "2001")
    assert call.variables["AI_STATUS"] == "TRANSFERRED"
    assert call.variables["AI_TRANSFER_TO"] == "billing"
    assert call.agi_status == "SUCCESS"
    assert any(line.startswith('EXEC Goto "from-internal,2001,1"')
               for line in call.agi.lines(">>")), call.agi.lines(">>")
    (rec,) = records(rec_path)
    assert rec["status"] == "TRANSFERRED" and rec["transfer_to"] == "billing"
    assert rec["actions"][-1]["result"] == "handed back; the dialplan goes on at the destination"


async def test_keypad_transfer_by_goto(tmp_path):
    async with open_stack(SHORT, str(tmp_path / "r.jsonl"), transfer="auto") as stack:
        call = await stack.call(CallerScript().dtmf("1", at=AgentQuiet(300), via="ami"),
                                seconds=30)
        assert not stack.ami_actions("Redirect")
    assert call.channel.goto_target == ("from-internal", "2002", 1)
    assert call.variables["AI_TRANSFER_TO"] == "sales"


async def test_an_older_asterisk_is_transferred_by_ami_redirect(tmp_path):
    """20.13 returns -1 (hangs up) on 00 00 00: auto falls back to the AMI Redirect."""
    async with open_stack(SHORT, str(tmp_path / "r.jsonl"), transfer="auto") as stack:
        call = await stack.call(CallerScript().dtmf("1", at=AgentQuiet(300), via="ami"),
                                seconds=30, version="20.13.0")
        (redirect,) = stack.ami_actions("Redirect")
        assert redirect["Exten"] == "2002"
    assert call.channel.goto_target is None
    assert call.variables["AI_STATUS"] == "TRANSFERRED"
