"""The sidecar process: load engines once, then serve the control link and AudioSocket.

``run_sidecar`` is what ``agi-voice serve`` runs in the media process; tests start it in their
own trio loop with port 0 and read the bound ports from :class:`SidecarPorts`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

from .brain.rules import RulesBrain
from .config.schema import AssistantConfig, Config, TtsConfig
from .protocol.control import CallContext
from .providers import SpeechToSpeech, make_provider
from .server.audiosocket_server import AudioSocketServer, serve_audiosocket
from .server.control_server import ControlHub, serve_control
from .server.registry import CallRegistry
from .session.call import CallServices
from .session.records import RecordWriter
from .session.speaker import Speaker
from .speech.base import SpeechEngineError, SpeechToText, TextToSpeech

log = logging.getLogger("agi_voice.sidecar")

ProviderFactory = Callable[[AssistantConfig, CallContext], SpeechToSpeech]


@dataclass(frozen=True)
class SidecarPorts:
    audiosocket: int
    control: int


def rules_brain(assistant: AssistantConfig, context: CallContext) -> RulesBrain:
    return RulesBrain(assistant.brain)


def load_local_services(cfg: Config) -> tuple[CallServices | None, dict[str, str]]:
    """Load the offline engines the pipeline assistants name (once per process).

    Returns the services and, per assistant that cannot run, the reason (its offers are then
    refused and the dialplan falls through to its fallback at once). Cloud stages need no
    loading; their keys are read when a call starts.
    """
    from .speech import make_stt, make_tts

    unavailable: dict[str, str] = {}
    stt: SpeechToText | None = None
    tts: TextToSpeech | None = None
    pipelines = [a for a in cfg.assistants if a.is_pipeline]
    for a in pipelines:
        try:
            if a.stt.engine == "moonshine":
                stt = stt or make_stt(a.stt)
            if a.tts.engine == "piper":
                tts = tts or make_tts(a.tts)
        except SpeechEngineError as exc:
            unavailable[a.name] = str(exc)
            log.error("assistant %s cannot take calls: %s", a.name, exc)
    if not pipelines or all(a.name in unavailable for a in pipelines):
        return None, unavailable
    engine = tts

    def speaker(_a: AssistantConfig) -> Speaker:
        if engine is None:
            raise SpeechEngineError("no local TTS engine is loaded")
        return Speaker(engine)

    services = CallServices(speaker_factory=speaker, brain_factory=rules_brain, stt=stt)
    return services, unavailable


def load_prompts(cfg: Config, services: CallServices | None) -> dict[str, bytes]:
    """The apologies of the model-driven assistants, with the local TTS when there is one."""
    from .speech import make_tts
    from .speech.prompts import render_apologies

    engines: dict[object, TextToSpeech | None] = {}

    def tts_for(a: AssistantConfig) -> TextToSpeech | None:
        if services is not None:
            try:
                return services.speaker_factory(a).tts
            except SpeechEngineError:
                pass
        voice = a.tts if a.tts.engine == "piper" else TtsConfig()  # cloud voices may be down
        if voice not in engines:
            try:
                engines[voice] = make_tts(voice)
            except SpeechEngineError as exc:
                log.info("no local TTS for apologies: %s", exc)
                engines[voice] = None
        return engines[voice]

    return render_apologies(cfg, tts_for)


async def run_sidecar(cfg: Config, services: CallServices | None = None,
                      unavailable: dict[str, str] | None = None, *,
                      provider_factory: ProviderFactory = make_provider,
                      prompts: dict[str, bytes] | None = None,
                      records: RecordWriter | None = None,
                      task_status: trio.TaskStatus[SidecarPorts] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled. Engines and prompts are loaded here unless given."""
    if services is None:
        services, unavailable = await trio.to_thread.run_sync(load_local_services, cfg)
    if prompts is None:
        prompts = await trio.to_thread.run_sync(load_prompts, cfg, services)
    registry = CallRegistry(cfg, unavailable or {})
    if services is None:
        # Nothing can take a call, but the control link still answers so every offer is refused
        # at once with the reason (AI_STATUS=FAILED) instead of timing out.
        registry.unavailable = {a.name: "no speech engines available" for a in cfg.assistants
                                if a.is_pipeline} | (unavailable or {})
    hub = ControlHub(registry)
    records = records or RecordWriter(cfg.sidecar.records_path)
    server = AudioSocketServer(cfg, registry, services, hub, records, on_ended=hub.send,
                               provider_factory=provider_factory, prompts=prompts)
    sc = cfg.sidecar
    try:
        async with trio.open_nursery() as nursery:
            control_port = await nursery.start(serve_control, hub, sc.control.host,
                                               sc.control.port)
            as_port = await nursery.start(functools.partial(
                serve_audiosocket, server, sc.audiosocket.host, sc.audiosocket.port))
            log.info("sidecar ready: AudioSocket %s:%d, control ws://%s:%d/control",
                     sc.audiosocket.host, as_port, sc.control.host, control_port)
            task_status.started(SidecarPorts(audiosocket=as_port, control=control_port))
    finally:
        if services is not None:  # the pipeline's pooled HTTP connections
            with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                await services.net.aclose()
