"""Session harness: the real AudioSocket server handler over in-memory streams, virtual time.

The Asterisk side is the emulator's AudioSocketSession; the sidecar side is the production
AudioSocketServer.handle (UUID check, registry claim, CallSession). Only the speech engines are
fakes (tests/fakes.py), and the control plane is a recording stand-in that redirects like AMI.
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass, field

import trio
import trio.testing

from fastagi_server.emulator.audiosocket_side import (
    AudioSocketConfig,
    AudioSocketResult,
    AudioSocketSession,
)
from fastagi_server.emulator.caller import CallerScript
from media_sidecar.app import load_prompts, rules_brain
from media_sidecar.config.loader import load_config
from media_sidecar.config.schema import Config
from media_sidecar.pipeline.base import Net
from media_sidecar.protocol import control as c
from media_sidecar.providers import make_provider
from media_sidecar.server.audiosocket_server import AudioSocketServer
from media_sidecar.server.registry import CallRegistry
from media_sidecar.session.call import CallServices, ControlPort
from media_sidecar.session.clock import FrameClock
from media_sidecar.session.records import CallRecord, RecordWriter
from media_sidecar.session.speaker import Speaker
from tests.fakes import EnergyVad, FakeStt, FakeTts
from tests.streams import socket_stream_pair


async def inline(fn, *args, abandon_on_cancel: bool = False):
    """Run a blocking engine call inline (deterministic under the autojump clock)."""
    return fn(*args)


class RecordingControl(ControlPort):
    """Stands in for the FastAGI side: records transfer requests; with ``redirect`` it answers
    like a successful AMI Redirect and then closes the AudioSocket as Asterisk does."""

    def __init__(self, redirect: bool = True) -> None:
        self.redirect = redirect
        self.requests: list[c.TransferRequest] = []
        self.session: AudioSocketSession | None = None
        self.ended: list[c.Ended] = []

    async def request_transfer(self, uuid, key, context, exten, priority):
        self.requests.append(c.TransferRequest(uuid, key, context, exten, priority))
        if not self.redirect:
            return c.TransferResult(uuid=uuid, ok=False, method="dialplan", detail="no AMI")
        if self.session is not None:
            self.session.stop("redirect")
        return c.TransferResult(uuid=uuid, ok=True, method="redirect")

    async def on_ended(self, ended: c.Ended) -> None:
        self.ended.append(ended)


class MemoryRecords(RecordWriter):
    def __init__(self) -> None:
        super().__init__("")
        self.records: list[CallRecord] = []

    def write(self, record: CallRecord) -> None:
        self.records.append(record)


@dataclass
class Outcome:
    asterisk: AudioSocketResult
    ended: c.Ended
    record: CallRecord
    control: RecordingControl
    tts: FakeTts
    server: AudioSocketServer
    t0: float
    extra: dict = field(default_factory=dict)

    def agent_frames(self):
        return [f for f in self.asterisk.audio_frames() if any(f.payload)]


def build_server(cfg: Config, *, redirect: bool = True, provider_factory=None, net=None,
                 env=None):
    """The production AudioSocket server with fake engines and a recording control plane
    (apologies are rendered by the fake TTS, as the sidecar renders them at start-up)."""
    registry = CallRegistry(cfg)
    tts = FakeTts()
    services = CallServices(speaker_factory=lambda a: Speaker(tts), brain_factory=rules_brain,
                            stt=FakeStt(), vad_factory=EnergyVad, offload=inline,
                            net=net or Net(), env=env)
    control = RecordingControl(redirect)
    records = MemoryRecords()
    server = AudioSocketServer(cfg, registry, services, control, records,
                               on_ended=control.on_ended,
                               provider_factory=provider_factory or make_provider,
                               prompts=load_prompts(cfg, services))
    server.tts = tts  # type: ignore[attr-defined]
    server.memory_records = records  # type: ignore[attr-defined]
    return server, registry, control


CONTEXT = c.CallContext(callerid="5551234", calleridname="Ada Lovelace", dnid="7000",
                        channel="PJSIP/alice-00000001", uniqueid="1700000000.1",
                        variables={"ACCOUNT": "A-42"})


def offer(registry: CallRegistry, cfg: Config, call_uuid: str) -> None:
    reply = registry.offer(c.Offer(uuid=call_uuid, assistant=cfg.routing.default or
                                   cfg.assistants[0].name, context=CONTEXT))
    assert isinstance(reply, c.Accept), reply


async def run_session(script: CallerScript, *, cfg: Config | None = None, redirect: bool = True,
                      offered: bool = True, uuid: str | None = None, max_seconds: float = 60.0,
                      asterisk_config: AudioSocketConfig | None = None,
                      provider_factory=None, net=None, env=None) -> Outcome:
    cfg = cfg or load_config()
    server, registry, control = build_server(cfg, redirect=redirect,
                                             provider_factory=provider_factory, net=net, env=env)
    call_uuid = uuid or str(uuidlib.uuid4())
    if offered:
        offer(registry, cfg, call_uuid)
    ast_stream, sidecar_stream = socket_stream_pair()
    session = AudioSocketSession(ast_stream, call_uuid, caller=script.player(),
                                 config=asterisk_config)
    control.session = session
    t0 = trio.current_time()
    # A frame clock of the call's own: its grid starts with the call, as the emulated
    # Asterisk's does (a shared clock's phase would depend on the calls before).
    server.clock = FrameClock()
    async with trio.open_nursery() as ticking:
        ticking.start_soon(server.clock.run)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle, sidecar_stream)
            with trio.fail_after(max_seconds):
                result = await session.run()
        ticking.cancel_scope.cancel()
    ended = control.ended[0] if control.ended else None
    records = server.memory_records.records  # type: ignore[attr-defined]
    record = records[0] if records else None
    return Outcome(result, ended, record, control, server.tts, server, t0)  # type: ignore[arg-type]
