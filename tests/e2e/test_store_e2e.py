"""Calls through the emulator end up in the call store (issue 17): turns with their stage
timings, the transfer, keypad digits and the outcome; the JSON-lines export is unchanged.

The whole product on loopback (tests/e2e/stack.py) with ``store.url`` pointing at a SQLite file
in the test's directory; the store is read once the stack has stopped (stopping drains the
sidecar's store writer).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from fastagi_server.emulator.caller import AgentQuiet, CallerScript
from media_sidecar.config.loader import load_config
from media_sidecar.config.schema import StoreConfig
from media_sidecar.store import open_store
from tests.e2e.stack import open_stack
from tests.fakes import caller_says

pytestmark = pytest.mark.e2e

BASE = load_config()


async def test_calls_land_in_the_store_with_turns_actions_digits_and_outcome(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    cfg = dataclasses.replace(BASE, store=StoreConfig(url=url))
    rec_path = tmp_path / "calls.jsonl"
    async with open_stack(cfg, str(rec_path)) as stack:
        spoken = await stack.call(CallerScript().speak_after_agent_quiet(
            caller_says("please transfer me to the billing department")), seconds=30)
        keyed = await stack.call(CallerScript().dtmf("1", at=AgentQuiet(300), via="audiosocket"),
                                 seconds=30, callerid="5550199")
        await stack.wait_records(2)
    exported = {r["uuid"]: r for r in map(json.loads, rec_path.read_text().splitlines())}
    assert set(exported) == {spoken.audiosocket[0].uuid, keyed.audiosocket[0].uuid}
    with open_store(url, create=False) as store:
        calls, total = store.list_calls()
        assert total == 2 and [c["uuid"] for c in calls] == [keyed.audiosocket[0].uuid, spoken.audiosocket[0].uuid]
        for uuid, rec in exported.items():
            got = store.get_call(uuid)
            assert got is not None
            # the export and the store agree field for field
            for key in ("assistant", "engine", "caller", "dnid", "started_at", "ended_at",
                        "duration", "status", "reason", "transfer_to", "end_cause", "worker",
                        "playout", "provider", "outcome_confirmed", "media_verdict"):
                assert got[key] == rec[key], key
            assert got["turns"] == rec["turns"] and got["actions"] == rec["actions"]
            assert [d["digit"] for d in got["dtmf"]] == rec["dtmf"]
        assert exported[spoken.audiosocket[0].uuid]["engine"] == BASE.assistants[0].provider != ""

        said = store.get_call(spoken.audiosocket[0].uuid)
        assert said is not None
        assert (said["status"], said["transfer_to"]) == ("TRANSFERRED", "billing")
        asked = said["turns"][1]
        assert asked["trigger"] == "speech" and asked["caller_text"].startswith("please transfer")
        assert asked["latency_ms"] is not None and asked["latency_ms"] > 0
        assert {"stt", "first_frame"} <= set(asked["stage_ms"])
        assert said["latency_p50_ms"] == asked["latency_ms"]
        (transfer,) = [a for a in said["actions"] if a["kind"] == "transfer"]
        assert transfer["destination"] == "billing"
        assert [c["uuid"] for c in store.list_calls(q="BILLING department")[0]] == [spoken.audiosocket[0].uuid]

        pressed = store.get_call(keyed.audiosocket[0].uuid)
        assert pressed is not None and pressed["caller"] == "5550199"
        assert [d["digit"] for d in pressed["dtmf"]] == ["1"]
        assert (pressed["status"], pressed["transfer_to"]) == ("TRANSFERRED", "sales")
        assert pressed["turns"][-1]["trigger"] == "dtmf"
        assert store.assistants() == [BASE.assistants[0].name]
