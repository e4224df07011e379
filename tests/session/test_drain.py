"""The sidecar's drain, in virtual time: the production AudioSocket server, registry and
:class:`SidecarLifecycle`, the emulator's Asterisk side over in-memory streams, fake engines.

A call still live at the deadline stops its agent at once, hears the drain announcement and is
transferred to its assistant's fallback destination (or handed back with FAILED, reason
draining); a call that ends before the deadline ends the drain early; new offers are refused
with reason draining and /ready says draining; each record is written before the drain
returns. Asserted at exact virtual times.
"""

from __future__ import annotations

import dataclasses
import uuid as uuidlib
from dataclasses import dataclass

import numpy as np
import pytest
import trio
import trio.testing

from fastagi_server.emulator.audiosocket_side import AudioSocketResult, AudioSocketSession
from fastagi_server.emulator.caller import CallerScript
from media_sidecar.app import load_announcements
from media_sidecar.config.loader import load_config, parse_config
from media_sidecar.config.schema import Config
from media_sidecar.protocol import control as c
from media_sidecar.server.health import SidecarHealth
from media_sidecar.server.lifecycle import SidecarLifecycle
from media_sidecar.session.records import CallRecord
from tests.fakes import FakeTts, dominant_freq, tone
from tests.session.harness import RecordingControl, build_server, inline, offer
from tests.streams import socket_stream_pair

FRAME = 0.02
BASE = load_config()


@pytest.fixture(autouse=True)
def _records_written_inline(monkeypatch):
    """The server writes each record in a worker thread; under the autojump clock a real
    thread lets virtual time jump ahead (to the drain deadline) while it runs. Inline, the
    drain's timings are exact."""
    monkeypatch.setattr(trio.to_thread, "run_sync", inline)
ANNOUNCEMENT = BASE.drain.announcement


@dataclass
class Drained:
    asterisk: AudioSocketResult
    record: CallRecord
    ended: c.Ended
    control: RecordingControl
    handed_off: int
    drain_started: float
    drain_done: float
    refused_during: c.Accept | c.Refuse
    not_ready_during: list[str]
    t0: float

    def loud(self) -> list[float]:
        return [f.t - self.t0 for f in self.asterisk.audio_frames()
                if np.abs(np.frombuffer(f.payload, dtype="<i2")).max(initial=0) > 300]


async def drain_during_call(cfg: Config, script: CallerScript, *, drain_at: float,
                            deadline: float, redirect: bool = True) -> Drained:
    """One call; the drain starts ``drain_at`` s after it with ``deadline``; a second offer
    is made just after the drain started."""
    server, registry, control = build_server(cfg, redirect=redirect)
    server.announcements = load_announcements(cfg, server.services)
    health = SidecarHealth()
    health.models_loaded = health.listening = True
    health.registry = registry
    lifecycle = SidecarLifecycle()
    lifecycle.attach(cfg, registry, server, health)
    call_uuid = str(uuidlib.uuid4())
    offer(registry, cfg, call_uuid)
    ast_stream, sidecar_stream = socket_stream_pair()
    session = AudioSocketSession(ast_stream, call_uuid, caller=script.player())
    control.session = session
    t0 = trio.current_time()
    seen: dict[str, object] = {}

    async def drain() -> None:
        await trio.sleep(drain_at)
        seen["started"] = trio.current_time() - t0
        async with trio.open_nursery() as inner:
            inner.start_soon(_run_drain, lifecycle, deadline, seen)
            await trio.sleep(0.1)
            seen["refused"] = registry.offer(c.Offer(uuid=str(uuidlib.uuid4()),
                                                     assistant=cfg.assistants[0].name,
                                                     context=c.CallContext()))
            seen["not_ready"] = health.not_ready()
        seen["done"] = trio.current_time() - t0

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle, sidecar_stream)
        nursery.start_soon(drain)
        with trio.fail_after(60):
            result = await session.run()
    records = server.memory_records.records  # type: ignore[attr-defined]
    assert len(records) == 1
    return Drained(result, records[0], control.ended[0], control, int(seen["handed"]),  # type: ignore[call-overload]
                   float(seen["started"]), float(seen["done"]),  # type: ignore[arg-type]
                   seen["refused"], seen["not_ready"], t0)  # type: ignore[arg-type]


async def _run_drain(lifecycle: SidecarLifecycle, deadline: float, seen: dict) -> None:
    seen["handed"] = await lifecycle.drain(deadline)


def _config(**assistant: object) -> Config:
    a = dataclasses.replace(BASE.assistants[0], **assistant)  # type: ignore[arg-type]
    return dataclasses.replace(BASE, assistants=(a,))


async def test_a_call_live_at_the_deadline_hears_the_announcement_then_goes_to_its_fallback(
        autojump_clock):
    # the greeting (about 8 s of fake speech) is still playing at the deadline
    out = await drain_during_call(BASE, CallerScript().hangup(at=40.0), drain_at=1.0,
                                  deadline=4.0)
    assert out.handed_off == 1
    assert (out.ended.status, out.ended.transfer_to, out.ended.reason) == (
        "TRANSFERRED", "operator", "draining")
    assert [r.exten for r in out.control.requests] == ["0"]
    kinds = [(a.kind, a.destination) for a in out.record.actions]
    assert kinds == [("announcement", ""), ("transfer", "operator")]
    assert out.record.actions[0].t == 5.0  # at the deadline: drain at 1 s + 4 s
    # the greeting stops at the deadline and the announcement follows without a gap; the
    # agent then says nothing more before the transfer
    loud = out.loud()
    assert loud[0] < 0.1
    assert np.allclose(np.diff(loud), FRAME, atol=1e-6)
    assert abs(loud[-1] - (5.0 + FakeTts.seconds(ANNOUNCEMENT))) <= 2 * FRAME
    assert out.asterisk.closed_by == "redirect"
    # meanwhile new calls were refused and /ready said why; the drain ended with the record
    assert out.refused_during == c.Refuse(uuid=out.refused_during.uuid, reason="draining")
    assert "draining" in out.not_ready_during
    assert out.drain_done >= out.asterisk.ended_at - out.t0


async def test_without_a_fallback_destination_the_call_is_handed_back_failed_draining(
        autojump_clock):
    cfg = _config(fallback_destination="")
    out = await drain_during_call(cfg, CallerScript().hangup(at=40.0), drain_at=0.5,
                                  deadline=2.0)
    assert (out.ended.status, out.ended.reason) == ("FAILED", "draining")
    assert out.control.requests == []
    assert [a.kind for a in out.record.actions] == ["announcement"]
    assert out.asterisk.hangup_sent_by_sidecar  # 00 00 00 after the announcement
    loud = out.loud()
    assert abs(loud[-1] - (2.5 + FakeTts.seconds(ANNOUNCEMENT))) <= 2 * FRAME
    assert out.asterisk.ended_at - out.t0 < 2.5 + FakeTts.seconds(ANNOUNCEMENT) + 0.2


async def test_a_call_that_ends_before_the_deadline_ends_the_drain_with_its_record(
        autojump_clock):
    out = await drain_during_call(BASE, CallerScript().hangup(at=3.0), drain_at=1.0,
                                  deadline=30.0)
    assert out.handed_off == 0
    assert out.ended.status == "CALLER_HANGUP"
    assert [a.kind for a in out.record.actions] == []
    # the drain returns as soon as the record is written, not at the deadline
    assert 3.0 <= out.drain_done < 3.1


async def test_an_empty_announcement_hands_off_at_once_without_a_sentence(autojump_clock):
    cfg = dataclasses.replace(BASE, drain=dataclasses.replace(BASE.drain, announcement=""))
    out = await drain_during_call(cfg, CallerScript().hangup(at=40.0), drain_at=1.0,
                                  deadline=1.0)
    assert [a.kind for a in out.record.actions] == ["transfer"]
    assert out.control.requests[0].exten == "0"
    assert out.loud()[-1] <= 2.0 + FRAME  # the greeting stopped at the deadline
    assert out.asterisk.ended_at - out.t0 < 2.1


ECHO = """
routing: {default: echo}
assistants:
  echo:
    provider: echo
    echo: {chunk_ms: 100}
    destinations:
      operator: {context: from-internal, exten: "0"}
    fallback_destination: operator
"""


async def test_a_relayed_call_stops_relaying_the_provider_at_the_deadline(autojump_clock):
    # the echo provider says back what the caller says (440 Hz); the fake TTS's announcement
    # is a 1 kHz tone: after the deadline only the announcement is heard
    cfg = parse_config(ECHO, "echo.yaml")
    script = CallerScript().speak(tone(440, 9.0), at=0.2).hangup(at=40.0)
    out = await drain_during_call(cfg, script, drain_at=1.0, deadline=2.0)
    assert (out.ended.status, out.ended.transfer_to, out.ended.reason) == (
        "TRANSFERRED", "operator", "draining")
    frames = [f for f in out.asterisk.audio_frames() if any(f.payload)]
    before = [f for f in frames if f.t - out.t0 < 3.0]
    after = [f for f in frames if f.t - out.t0 >= 3.0 + FRAME]

    def freq(fs):
        pcm = np.frombuffer(b"".join(f.payload for f in fs), dtype="<i2")
        return dominant_freq(pcm, 8000)

    assert abs(freq(before) - 440) < 20
    assert abs(freq(after) - 1000) < 20
    assert len(after) * FRAME <= FakeTts.seconds(ANNOUNCEMENT) + FRAME
