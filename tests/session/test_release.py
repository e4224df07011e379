"""A finished call frees its objects by reference counting: nothing of it waits for the cyclic
garbage collector, which a media process runs only every few minutes (media_sidecar/process.py).

The soak (bench/soak.py) found each call's session graph (session, playout, segments, provider,
turn records) held in reference cycles: 200 concurrent calls for 5 minutes grew a media worker
from 70 to 316 MiB. :meth:`MediaSession.release` breaks them once the record is written; these
tests run calls of each kind and look at what a full collection would have to free.
"""

from __future__ import annotations

import gc

import pytest

from fastagi_server.emulator.caller import CallerScript
from media_sidecar.config.loader import parse_config
from media_sidecar.session.base import MediaSession
from tests.fakes import tone
from tests.mocks.deepgram_agent import AgentScript, MockAgentServer
from tests.mocks.openai_realtime import MockRealtimeServer, RealtimeScript
from tests.session.harness import run_session
from tests.session.providers import deepgram_factory, openai_factory

ASSISTANTS = """
routing: {default: a}
assistants:
  a:
    provider: PROVIDER
    greeting: "Hello there."
    destinations: {operator: {context: from-internal, exten: "0", description: operator}}
    fallback_destination: operator
    dtmf_input: {to_model: true}
"""


def unreachable_now() -> list[object]:
    """What a full collection finds unreachable now (kept, not freed, for the look)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


@pytest.mark.parametrize("provider", ["echo", "local", "openai_realtime", "deepgram_agent"])
async def test_a_finished_call_leaves_no_cycle_holding_its_session(autojump_clock, provider):
    factory = None
    if provider == "openai_realtime":
        factory = openai_factory(MockRealtimeServer(script=RealtimeScript(
            reply_ms=500, transcripts=["hi"], replies=["Hello there.", "Fine."])))
    elif provider == "deepgram_agent":
        factory = deepgram_factory(MockAgentServer(script=AgentScript(reply_ms=500,
                                                                      replies=["Fine."])))
    cfg = parse_config(ASSISTANTS.replace("PROVIDER", provider), "release.yaml")
    script = (CallerScript().speak(tone(500, 0.8), at=1.5).dtmf("5", at=3.0)
              .speak(tone(500, 0.6), at=4.0).hangup(at=7.0))
    gc.collect()  # whatever earlier tests left
    gc.disable()  # no automatic collection may free the call's cycles before the look
    try:
        out = await run_session(script, cfg=cfg, provider_factory=factory)
        assert out.ended.status == "CALLER_HANGUP", out.ended
        assert len(out.record.turns) >= 2
        del out  # the harness's view of the call: the product's own objects are looked at
        left = [o for o in unreachable_now() if isinstance(o, MediaSession)
                or type(o).__module__.startswith("media_sidecar.")]
    finally:
        gc.enable()
    assert not left, sorted({type(o).__qualname__ for o in left})
