"""A caller the assistant cannot understand is not dropped: the whole product over loopback
(emulator -> FastAGI server -> sidecar -> fake AMI), with the embedded default assistant.

Fake speech engines (tests/fakes.py): the caller's "blah blah" is heard as such. Real time."""

from __future__ import annotations

import dataclasses
import json

import pytest

from fastagi_server.emulator.caller import CallerScript
from media_sidecar.config.loader import load_config
from tests.e2e.stack import open_stack
from tests.fakes import caller_says

pytestmark = pytest.mark.e2e

BASE = load_config()
BRAIN = BASE.assistants[0].brain
SHORT = dataclasses.replace(BASE, assistants=(dataclasses.replace(
    BASE.assistants[0], brain=dataclasses.replace(BRAIN, greeting="Hi, how can I help?",
                                                  fallback="Sorry, which department?")),))


async def test_two_misunderstandings_end_in_a_transfer_to_the_operator(tmp_path):
    rec_path = tmp_path / "calls.jsonl"
    async with open_stack(SHORT, str(rec_path)) as stack:
        script = (CallerScript().speak_after_agent_quiet(caller_says("blah blah", 1.0))
                  .speak_after_agent_quiet(caller_says("blah blah", 1.0)))
        call = await stack.call(script, seconds=40)
        (redirect,) = stack.ami_actions("Redirect")
        assert (redirect["Context"], redirect["Exten"]) == ("from-internal", "0")
        await stack.wait_records(1)
    assert call.variables["AI_STATUS"] == "TRANSFERRED"
    assert call.variables["AI_TRANSFER_TO"] == "operator"
    assert (call.channel.context, call.channel.exten) == ("from-internal", "0")
    (rec,) = [json.loads(line) for line in rec_path.read_text().splitlines()]
    assert [t["intent"] for t in rec["turns"]] == ["greeting", "fallback",
                                                   "not_understood_transfer"]
    assert [t["caller_text"] for t in rec["turns"][1:]] == ["blah blah", "blah blah"]
    assert rec["turns"][2]["agent_text"] == BRAIN.not_understood.reply
    assert rec["turns"][1]["match"]["how"] == "none"
