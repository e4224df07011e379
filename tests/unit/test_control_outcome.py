"""The ``outcome`` control message (FastAGI -> sidecar) and how the sidecar's registry holds it.

The FastAGI side knows some outcomes only after the media session is over (a third-party AMI
Redirect is told from a hangup only once the AGI socket closed); it reports the AI_* values it
finally set, and the sidecar's call record waits for them, bounded.
"""

from __future__ import annotations

import asyncio
import logging
import uuid as uuidlib

import pytest
import trio

from fastagi_server.agi.handler import (
    HANGUP_LINE_WAIT_SECONDS,
    HANGUP_VERDICT_WAIT_SECONDS,
    VERDICT_WAIT_SECONDS,
)
from fastagi_server.calls import DISPOSITION_WAIT_SECONDS
from fastagi_server.control_client import ControlClient
from media_sidecar.config.loader import load_config
from media_sidecar.protocol import control as c
from media_sidecar.server.registry import MAX_HELD_OUTCOMES, CallRegistry

UUID = str(uuidlib.uuid4())
CFG = load_config()


def test_outcome_round_trip():
    msg = c.Outcome(uuid=UUID, status="TRANSFERRED",
                    reason="redirected by AMI, not by the assistant", transfer_to="")
    text = c.encode(msg)
    assert '"type":"outcome"' in text
    assert c.decode(text) == msg
    assert c.decode(c.encode(c.Outcome(UUID, "COMPLETED"))) == c.Outcome(UUID, "COMPLETED")


@pytest.mark.parametrize("text, error", [
    ('{"type":"outcome","uuid":"nope","status":"COMPLETED"}', "not a UUID"),
    (f'{{"type":"outcome","uuid":"{UUID}"}}', "status"),
    (f'{{"type":"outcome","uuid":"{UUID}","status":"COMPLETED","summary":"x"}}',
     "unknown fields"),
])
def test_malformed_outcome_is_refused(text, error):
    with pytest.raises(c.ControlError, match=error):
        c.decode(text)


def test_a_new_message_type_is_a_compatible_addition():
    """Why ``outcome`` keeps PROTOCOL_VERSION 1: a peer that does not know a type gets a
    ControlError from decode, which both ends log and ignore (the link stays up)."""
    assert c.PROTOCOL_VERSION == 1
    with pytest.raises(c.ControlError, match="unknown control message type 'outcome_v9'"):
        c.decode(f'{{"type":"outcome_v9","uuid":"{UUID}"}}')


def test_the_sidecar_waits_longer_than_the_fastagi_side_can_take():
    fastagi_worst = max(VERDICT_WAIT_SECONDS,
                        HANGUP_VERDICT_WAIT_SECONDS + HANGUP_LINE_WAIT_SECONDS) \
        + DISPOSITION_WAIT_SECONDS
    assert c.OUTCOME_WAIT_SECONDS >= fastagi_worst + 1.0


def test_report_outcome_with_the_link_down_is_dropped_with_a_log_line(caplog):
    client = ControlClient("ws://127.0.0.1:9/control", on_transfer=None)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="agi_voice.control_client"):
        sent = asyncio.run(client.report_outcome(c.Outcome(UUID, "COMPLETED")))
    assert sent is False
    assert "outcome of" in caplog.text and "not reported" in caplog.text


def test_a_verdict_after_the_agi_side_forgot_the_call_leaves_nothing_behind():
    client = ControlClient("ws://127.0.0.1:9/control", on_transfer=None)  # type: ignore[arg-type]
    ended = c.Ended(uuid=UUID, status="COMPLETED", reason="caller hung up")
    asyncio.run(_verdicts(client, ended))
    assert client._ended == {}


async def _verdicts(client: ControlClient, ended: c.Ended) -> None:
    async with asyncio.TaskGroup() as tg:
        # awaited: the slot made for a call that is still served takes its verdict
        waiter = tg.create_task(client.wait_ended(UUID, 5.0))
        await asyncio.sleep(0)
        client._dispatch(c.encode(ended), tg)
        assert await waiter == ended
        client.forget(UUID)
        # late: the AGI session already ended (a caller hang-up); no slot is made for it
        client._dispatch(c.encode(ended), tg)


# -- the registry holds outcomes for the call records ------------------------------------------


def registry(link: bool = True) -> CallRegistry:
    reg = CallRegistry(CFG)
    reg.set_link(link)
    return reg


async def test_an_outcome_that_arrived_first_is_returned_at_once(autojump_clock):
    reg = registry()
    reg.outcome_arrived(c.Outcome(UUID.upper(), "CALLER_HANGUP", "channel hung up"))
    t0 = trio.current_time()
    got = await reg.wait_outcome(UUID, 6.0)
    assert got == c.Outcome(UUID.upper(), "CALLER_HANGUP", "channel hung up")
    assert trio.current_time() == t0
    assert await reg.wait_outcome(UUID, 0.0) is None  # taken once


async def test_the_wait_ends_when_the_outcome_arrives(autojump_clock):
    reg = registry()
    got = []
    t0 = trio.current_time()

    async def waiter():
        got.append((await reg.wait_outcome(UUID, 6.0), trio.current_time() - t0))

    async with trio.open_nursery() as n:
        n.start_soon(waiter)
        await trio.sleep(3.2)
        reg.outcome_arrived(c.Outcome(UUID, "TRANSFERRED", "redirected by AMI"))
    assert got == [(c.Outcome(UUID, "TRANSFERRED", "redirected by AMI"), pytest.approx(3.2))]


async def test_no_outcome_gives_up_after_the_bound(autojump_clock):
    reg = registry()
    t0 = trio.current_time()
    assert await reg.wait_outcome(UUID, 6.0) is None
    assert trio.current_time() - t0 == pytest.approx(6.0)


async def test_link_down_does_not_wait_and_a_lost_link_ends_the_wait(autojump_clock):
    reg = registry(link=False)
    t0 = trio.current_time()
    assert await reg.wait_outcome(UUID, 6.0) is None
    assert trio.current_time() == t0

    reg.set_link(True)
    got = []

    async def waiter():
        got.append((await reg.wait_outcome(UUID, 6.0), trio.current_time() - t0))

    async with trio.open_nursery() as n:
        n.start_soon(waiter)
        await trio.sleep(1.0)
        reg.set_link(False)
    assert got == [(None, pytest.approx(1.0))]


async def test_an_outcome_for_a_call_that_never_connected_withdraws_its_offer(autojump_clock):
    reg = registry()
    assert isinstance(reg.offer(c.Offer(uuid=UUID, assistant=CFG.assistants[0].name)), c.Accept)
    reg.outcome_arrived(c.Outcome(UUID, "FAILED", "could not connect"))
    assert reg.claim(UUID) is None  # the AudioSocket can no longer claim it
    assert await reg.wait_outcome(UUID, 0.0) is None  # and nothing is held for it


def test_held_outcomes_are_bounded():
    reg = registry()
    ids = [str(uuidlib.uuid4()) for _ in range(MAX_HELD_OUTCOMES + 5)]
    for u in ids:
        reg.outcome_arrived(c.Outcome(u, "COMPLETED"))
    held = reg._outcomes
    assert len(held) == MAX_HELD_OUTCOMES
    assert ids[0].lower() not in held and ids[-1].lower() in held
