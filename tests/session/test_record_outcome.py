"""The call record carries the control plane's final outcome (virtual time).

The production AudioSocket server over in-memory streams: when a call's media session ends, its
handler holds the record until the control plane's ``outcome`` arrives (bounded, only while a
control link is up) and writes it with those values and the sidecar's own verdict beside them.
The wait is the finished call's own: another call runs on undisturbed.
"""

from __future__ import annotations

import uuid as uuidlib

import pytest
import trio
import trio.testing

from fastagi_server.emulator.audiosocket_side import AudioSocketSession
from fastagi_server.emulator.caller import CallerScript
from media_sidecar.config.loader import load_config
from media_sidecar.protocol import control as c
from tests.fakes import caller_says
from tests.session.harness import build_server, offer
from tests.streams import socket_stream_pair

CFG = load_config()


async def one_call(server, registry, script: CallerScript):
    """Offer a call; returns its uuid and (the Asterisk side, the sidecar's stream end)."""
    call_uuid = str(uuidlib.uuid4())
    offer(registry, CFG, call_uuid)
    ast, side = socket_stream_pair()
    return call_uuid, (AudioSocketSession(ast, call_uuid, caller=script.player()), side)


def time_outcome_waits(registry) -> dict[str, float]:
    """Record when each call's wait for its outcome ended (the record is written right after,
    in a worker thread, where the autojump clock cannot give exact times)."""
    ended: dict[str, float] = {}
    wait = registry.wait_outcome

    async def timed(uuid: str, time_limit: float):
        try:
            return await wait(uuid, time_limit)
        finally:
            ended[uuid] = trio.current_time()

    registry.wait_outcome = timed
    return ended


async def test_record_waits_for_the_outcome_and_keeps_the_media_verdict(autojump_clock):
    server, registry, _ = build_server(CFG)
    registry.set_link(True)
    waits = time_outcome_waits(registry)
    hang_uuid, (hang, hang_side) = await one_call(server, registry, CallerScript().hangup(at=1.0))
    good_uuid, (good, good_side) = await one_call(
        server, registry, CallerScript().speak_after_agent_quiet(caller_says("goodbye")))
    t0 = trio.current_time()
    async with trio.open_nursery() as n:
        n.start_soon(server.handle, hang_side)
        n.start_soon(server.handle, good_side)
        n.start_soon(hang.run)
        n.start_soon(good.run)
        # the hung-up call's media ended at 1.0 s; the control plane learns (from AMI, after
        # the AGI socket closed) that it was a redirect, and says so 2.5 s later
        await trio.sleep(3.5)
        registry.outcome_arrived(c.Outcome(hang_uuid, "TRANSFERRED",
                                           "redirected by AMI, not by the assistant"))
    recs = {r.uuid: r for r in server.memory_records.records}  # type: ignore[attr-defined]
    assert waits[hang_uuid] - t0 == pytest.approx(3.5)
    rec = recs[hang_uuid]
    assert (rec.status, rec.reason, rec.transfer_to) == (
        "TRANSFERRED", "redirected by AMI, not by the assistant", "")
    assert rec.outcome_confirmed is True
    assert rec.media_verdict["status"] == "CALLER_HANGUP"
    # the other call was not held up by that wait: it completed and, with no outcome sent for
    # it, its record kept the sidecar's verdict once the bound passed
    rec2 = recs[good_uuid]
    assert good.result.closed_by == "sidecar_hangup"
    assert rec2.status == "COMPLETED" and rec2.outcome_confirmed is False
    assert rec2.media_verdict == {"status": "COMPLETED", "reason": rec2.reason}
    assert waits[good_uuid] - good.result.ended_at == pytest.approx(c.OUTCOME_WAIT_SECONDS,
                                                                     abs=0.021)


async def test_without_a_control_link_the_record_is_written_at_once(autojump_clock):
    server, registry, _ = build_server(CFG)
    assert registry.link_up is False
    waits = time_outcome_waits(registry)
    hang_uuid, (hang, side) = await one_call(server, registry, CallerScript().hangup(at=1.0))
    async with trio.open_nursery() as n:
        n.start_soon(server.handle, side)
        await hang.run()
    (rec,) = server.memory_records.records  # type: ignore[attr-defined]
    assert rec.status == "CALLER_HANGUP" and rec.outcome_confirmed is False
    assert waits[hang_uuid] == pytest.approx(hang.result.ended_at, abs=0.021)
