"""The project's own ``asterisk_conf/`` on the real Asterisk: both dialplan contexts as shipped
(only the FastAGI port changed to this test's), and agi-voice logged in as the least-privilege
AMI user of ``manager_custom.conf`` with its event filters."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .audio import Phrase
from .conftest import ROUTING, tier_assistants
from .peer import REPO, AmiDriver, AsteriskPeer
from .product import ProductProcess, ami_env, product_config
from .scenario import CallerPlan, place_call

SECRET = "tier-only-secret-0123456789"


@pytest.fixture(scope="module")
def shipped(asterisk: AsteriskPeer, workdir: Path) -> Iterator[ProductProcess]:
    """agi-voice as asterisk_conf/README.md sets it up, beside the session's own."""
    conf = REPO / "asterisk_conf"
    manager = (conf / "manager_custom.conf").read_text()
    assert "secret = CHANGE-ME" in manager
    (asterisk.etc / "manager_custom.conf").write_text(
        manager.replace("secret = CHANGE-ME", f"secret = {SECRET}"))
    with open(asterisk.etc / "manager.conf", "a") as f:
        f.write(f'\n#include "{asterisk.etc / "manager_custom.conf"}"\n')
    asterisk.cli("manager reload")
    assert "agi-voice" in asterisk.cli("manager show user agi-voice")

    cfg = product_config(workdir / "shipped", tier_assistants(), ROUTING)
    proc = ProductProcess(cfg, workdir / "shipped",
                          env=ami_env(asterisk, user="agi-voice", secret=SECRET))
    dialplan = (conf / "extensions_custom.conf").read_text()
    assert dialplan.count("AGI(agi://127.0.0.1:4573/") == 2
    proc.start()
    asterisk.include_file("extensions_custom.conf", dialplan.replace(
        "agi://127.0.0.1:4573/", f"agi://127.0.0.1:{proc.fastagi_port}/"))
    try:
        yield proc
    finally:
        proc.stop()


def noop_outcome(call_events: list, channel: str) -> str:
    """The AppData of the dialplan's own outcome log line (``NoOp(agi-voice: AGISTATUS=...)``)."""
    for e in call_events:
        if (e.event == "Newexten" and e.get("Channel") == channel
                and e.get("Application") == "NoOp"
                and "AI_STATUS=" in (e.get("AppData") or "")):
            return e.get("AppData") or ""
    return ""


async def test_freepbx_custom_destination_transfers_by_voice_as_the_least_privilege_user(
        asterisk: AsteriskPeer, shipped: ProductProcess, ami: AmiDriver,
        phrases: dict[str, Phrase], workdir: Path) -> None:
    plan = CallerPlan().wait(2.5).say(phrases["transfer_sales"]).wait(6)
    call = await place_call(asterisk, ami, plan, script="", workdir=workdir,
                            name="freepbx", context="agi-voice", exten="s")
    assert [e.get("Dest") for e in call.named("Reached")] == ["sales"], call.events
    rec = await shipped.wait_record(call.channel)
    assert rec["status"] == "TRANSFERRED" and rec["transfer_to"] == "sales"
    assert any("AMI logged in" in ln and "as agi-voice" in ln for ln in shipped.lines)
    assert not [ln for ln in shipped.lines if "AMI" in ln and (" WARNING " in ln
                                                                or " ERROR " in ln)]


async def test_freepbx_custom_destination_keypad_through_the_filtered_events(
        asterisk: AsteriskPeer, shipped: ProductProcess, ami: AmiDriver,
        workdir: Path) -> None:
    plan = CallerPlan().wait(2.5).dtmf("#").wait(6)
    call = await place_call(asterisk, ami, plan, script="", workdir=workdir,
                            name="freepbx-dtmf", context="agi-voice", exten="s")
    outcome = noop_outcome(call.events, call.channel)
    assert re.search(r"AGISTATUS=SUCCESS AI_STATUS=COMPLETED", outcome), outcome
    rec = await shipped.wait_record(call.channel)
    assert rec["dtmf"] == ["#"] and rec["status"] == "COMPLETED"


async def test_plain_asterisk_example_context_completes_with_the_caller_variable(
        asterisk: AsteriskPeer, shipped: ProductProcess, ami: AmiDriver,
        phrases: dict[str, Phrase], workdir: Path) -> None:
    plan = CallerPlan().wait(2.5).say(phrases["goodbye"]).wait(8)
    call = await place_call(asterisk, ami, plan, script="", workdir=workdir,
                            name="example", context="agi-voice-example", exten="7000",
                            caller_num="201")
    outcome = noop_outcome(call.events, call.channel)
    assert "AI_STATUS=COMPLETED" in outcome, outcome
    hangups = [e for e in call.events if e.event == "Newexten" and e.get("Channel") ==
               call.channel and e.get("Application") in ("Dial", "VoiceMail")]
    assert not hangups, "the example's fallback ran on a completed call"
    rec = await shipped.wait_record(call.channel)
    assert rec["status"] == "COMPLETED" and rec["assistant"] == "receptionist"


async def test_shipped_dialplan_falls_back_to_the_operator_when_agi_voice_is_down(
        asterisk: AsteriskPeer, shipped: ProductProcess, ami: AmiDriver,
        workdir: Path) -> None:
    shipped.stop()
    call = await place_call(asterisk, ami, CallerPlan().wait(6), script="", workdir=workdir,
                            name="freepbx-down", context="agi-voice", exten="s")
    outcome = noop_outcome(call.events, call.channel)
    assert "AGISTATUS=FAILURE" in outcome, outcome
    assert [e.get("Dest") for e in call.named("Reached")] == ["operator"], call.events
