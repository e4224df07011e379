"""A graceful stop on the real Asterisk: SIGTERM to ``agi-voice serve`` mid-call. New calls fall
back at once (``AI_REASON=draining``); the live call is told so and handed to its fallback
destination at the drain deadline; its record is written; ``serve`` exits 0."""

from __future__ import annotations

import signal
from pathlib import Path

import trio

from .audio import heard_most
from .conftest import ROUTING, tier_assistants
from .peer import AmiDriver, AsteriskPeer
from .product import ProductProcess, ami_env, product_config
from .scenario import CallerPlan, agent_context, originate, place_call

ANNOUNCEMENT = "Sorry, I have to pass your call on now."


async def test_sigterm_mid_call_drains_to_the_fallback_and_refuses_new_calls(
        asterisk: AsteriskPeer, ami: AmiDriver, workdir: Path,
        measured: dict[str, object]) -> None:
    cfg = product_config(workdir / "drain", tier_assistants(), ROUTING)
    cfg["drain"] = {"deadline_seconds": 3.0, "announcement": ANNOUNCEMENT}
    proc = ProductProcess(cfg, workdir / "drain", env=ami_env(asterisk))
    proc.start()
    try:
        asterisk.set_context("av-agent-drain", agent_context(proc.fastagi_port))
        live = await originate(asterisk, ami, CallerPlan().wait(25), script="agent",
                               workdir=workdir, name="drain-live", context="av-agent-drain")
        await live.channel(ami)
        await trio.sleep(3)  # the call is under way (greeting said) when the PBX host stops us
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        t_term = trio.current_time()
        refused = await place_call(asterisk, ami, CallerPlan().wait(4), script="agent",
                                   workdir=workdir, name="drain-new",
                                   context="av-agent-drain")
        call = await live.finish(ami)
        rc = await trio.to_thread.run_sync(proc.proc.wait, 30)
    finally:
        proc.stop()
    # a call placed during the drain fell back at once
    assert refused.outcome[0] == "FAILED" and refused.reason == "draining", refused.outcome
    assert [e.get("Reason") for e in refused.named("Fallback")] == ["draining"]
    # the live call heard the announcement, then went to its fallback destination (operator)
    reached = call.named("Reached")
    assert [e.get("Dest") for e in reached] == ["operator"], call.events
    handed_at = ami.time_of(reached[0]) - t_term
    assert 3.0 <= handed_at < 12.0, handed_at
    assert heard_most(call.agent_said()[-1], ANNOUNCEMENT), call.agent_said()
    rec = await proc.wait_record(call.channel)
    assert rec["status"] == "TRANSFERRED" and rec["transfer_to"] == "operator", rec
    assert rec["outcome_confirmed"] is True
    assert rc == 0, proc.lines[-30:]
    measured["sigterm_to_hand_off_s"] = round(handed_at, 2)
