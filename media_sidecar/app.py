"""The sidecar process: load engines once, then serve the control link and AudioSocket.

``run_sidecar`` is what ``agi-voice serve`` runs in the media process; tests start it in their
own trio loop with port 0 and read the bound ports from :class:`SidecarPorts`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from .brain.rules import RulesBrain
from .config.schema import AssistantConfig, Config, Listen, TtsConfig
from .ops.metrics import MeteredRegistry, SidecarMetrics
from .ops.status import StartupError
from .protocol.control import CallContext
from .providers import SpeechToSpeech, make_provider
from .server.audiosocket_server import AudioSocketServer, serve_audiosocket
from .server.control_server import ControlHub, serve_control
from .server.health import SidecarHealth, serve_health
from .server.lifecycle import Assets, SidecarLifecycle
from .session.call import CallServices
from .session.recording import Recordings
from .session.records import RecordWriter
from .session.speaker import Speaker
from .speech.base import SpeechEngineError, TextToSpeech
from .store.paths import data_dir
from .store.writer import StoreWriter

log = logging.getLogger("agi_voice.sidecar")

ProviderFactory = Callable[[AssistantConfig, CallContext], SpeechToSpeech]


@dataclass(frozen=True)
class SidecarPorts:
    audiosocket: int
    control: int
    health: int = 0
    """0 when the health listener is off (or could not bind)."""


def rules_brain(assistant: AssistantConfig, context: CallContext) -> RulesBrain:
    return RulesBrain(assistant.brain, assistant.destinations)


def load_local_services(cfg: Config, current: CallServices | None = None
                        ) -> tuple[CallServices | None, dict[str, str]]:
    """Load the offline engines the pipeline assistants name, and render their fixed sentences
    (blocking: run it in a worker thread, or outside trio).

    With ``sidecar.inference.enabled`` the models load in the inference pool's processes (on a
    reload, ``current``'s pool, which loads what is new), never in this one. Returns the
    services and, per assistant that cannot run, the reason (its offers are then refused and
    the dialplan falls through to its fallback at once). Cloud stages need no loading; their
    keys are read when a call starts.
    """
    from .speech.local import load_local_speech

    speech = load_local_speech(cfg, current.speech if current is not None else None)
    pipelines = [a for a in cfg.assistants if a.is_pipeline]
    if not pipelines or all(a.name in speech.unavailable for a in pipelines):
        if speech.pool is not None and (current is None or current.speech is None
                                        or current.speech.pool is not speech.pool):
            speech.pool.close()
        return None, speech.unavailable
    stt = next(iter(speech.ears.values()), None)

    def speaker(a: AssistantConfig | None) -> Speaker:
        voice = speech.voice_for(a) if a is not None else next(iter(speech.voices.values()),
                                                                 None)
        if voice is None:
            raise SpeechEngineError("no local TTS engine is loaded")
        return Speaker(voice)

    services = CallServices(speaker_factory=speaker, brain_factory=rules_brain, stt=stt,
                            speech=speech)
    services.fillers = load_fillers(cfg, services)
    return services, speech.unavailable


def load_fillers(cfg: Config, services: CallServices | None) -> dict[str, bytes]:
    """The filler phrase of every pipeline assistant, in its local voice (the default Piper
    voice for a cloud voice, as for the apology), from the sentence cache."""
    from .speech.prompts import render_fillers

    return render_fillers(cfg, _local_voices(services))


def _local_voices(services: CallServices | None) -> Callable[[AssistantConfig],
                                                              TextToSpeech | None]:
    """An assistant's local voice for fixed prompts: its sentence cache when they were rendered
    there, else the assistant's Piper voice or the default one loaded in this process (cloud
    voices may be what failed); None without Piper."""
    from .speech import make_tts

    engines: dict[object, TextToSpeech | None] = {}

    def tts_for(a: AssistantConfig) -> TextToSpeech | None:
        if services is not None and services.speech is not None:
            cached = services.speech.prompt_voice(a)
            if cached is not None:
                return cached
        elif services is not None:
            try:
                return services.speaker_factory(a).tts
            except SpeechEngineError:
                pass
        voice = a.tts if a.tts.engine == "piper" else TtsConfig()  # cloud voices may be down
        if voice not in engines:
            try:
                engines[voice] = make_tts(voice)
            except SpeechEngineError as exc:
                log.info("no local TTS for fixed prompts: %s", exc)
                engines[voice] = None
        return engines[voice]

    return tts_for


def load_prompts(cfg: Config, services: CallServices | None) -> dict[str, bytes]:
    """The apologies of the model-driven assistants, with the local TTS when there is one."""
    from .speech.prompts import render_apologies

    return render_apologies(cfg, _local_voices(services))


def load_announcements(cfg: Config, services: CallServices | None) -> dict[str, bytes]:
    """The drain's announcement per assistant, with the local TTS when there is one."""
    from .speech.prompts import render_announcements

    return render_announcements(cfg, _local_voices(services))


def load_assets(cfg: Config, current: CallServices | None) -> Assets:
    """Everything ``cfg`` needs loaded, for a reload (blocking: run it in a worker thread).
    Models are cached per process (and the inference pool's processes stay), so only a
    changed STT or TTS costs a load, and only new fixed sentences are rendered. The new
    services share the running ones' HTTP connection pool (closed once, at exit)."""
    services, unavailable = load_local_services(cfg, current)
    if services is not None and current is not None:
        services = dataclasses.replace(services, net=current.net)
    return Assets(services, unavailable, load_prompts(cfg, services),
                  load_announcements(cfg, services))


RETENTION_SWEEP_SECONDS = 3600.0
"""How often records past ``sidecar.records.max_age_days`` are deleted (and once at start)."""


async def sweep_records(records: RecordWriter) -> None:
    """Apply the record retention at start-up and every hour, in a worker thread (it may
    rewrite a file). Runs until cancelled; cancellation waits for a sweep in progress."""
    while True:
        await trio.to_thread.run_sync(records.sweep)
        await trio.sleep(RETENTION_SWEEP_SECONDS)


def make_recordings(cfg: Config) -> Recordings | None:
    """Where this process records calls (``recordings``; the assistants with ``recording:
    true`` use it); None, with an ERROR, when its folder cannot be named (no data directory).
    The folders themselves are made by the writer thread when a recording starts."""
    rc = cfg.recordings
    try:
        root = Path(rc.path) if rc.path else data_dir() / "recordings"
    except OSError as exc:
        log.error("recordings are off: no data directory (%s)", exc)
        return None
    return Recordings(root, rc.max_age_days)


async def sweep_recordings(recordings: Recordings) -> None:
    """Apply ``recordings.max_age_days`` at start-up and every hour, in a worker thread.
    Runs until cancelled; cancellation waits for a sweep in progress."""
    while True:
        await trio.to_thread.run_sync(recordings.sweep)
        await trio.sleep(RETENTION_SWEEP_SECONDS)


async def sweep_store(writer: StoreWriter) -> None:
    """Ask the store writer to apply ``store.max_age_days`` at start-up and every hour (the
    writer's thread does it between records). Runs until cancelled."""
    while True:
        writer.request_sweep()
        await trio.sleep(RETENTION_SWEEP_SECONDS)


def start_store_writer(cfg: Config, metrics: SidecarMetrics) -> StoreWriter | None:
    """The call store's writer thread (``store``), started; None when the store is off."""
    if not cfg.store.enabled:
        return None
    writer = StoreWriter(cfg.store.url, queue_size=cfg.store.queue,
                         transcripts=cfg.sidecar.records.transcripts,
                         max_age_days=cfg.store.max_age_days, on_error=metrics.count_store_error)
    writer.start()
    return writer


STORE_DRAIN_SECONDS = 5.0
"""How long stopping waits for records queued for the call store (the JSON-lines records are
already written)."""


async def run_sidecar(cfg: Config, services: CallServices | None = None,
                      unavailable: dict[str, str] | None = None, *,
                      provider_factory: ProviderFactory = make_provider,
                      prompts: dict[str, bytes] | None = None,
                      announcements: dict[str, bytes] | None = None,
                      records: RecordWriter | None = None,
                      health: SidecarHealth | None = None,
                      health_listen: Listen | None = None,
                      lifecycle: SidecarLifecycle | None = None,
                      strict: bool = False,
                      worker: str = "",
                      task_status: trio.TaskStatus[SidecarPorts] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled. Engines and prompts are loaded here unless given.

    The health listener (``cfg.health``, or ``health_listen`` where port 0 picks a free
    port: for tests) starts first, so ``/live`` answers and ``/ready`` says "models loading"
    while the engines load. ``health`` is the readiness state to fill in (the drain sets
    its ``draining``); one is made when not given. ``lifecycle`` is given what the drain and
    the reload act on once the sidecar serves. The control link is accepted only once the
    engines are loaded: until then the FastAGI side fails calls at once ("starting").

    Raises :class:`~media_sidecar.ops.status.StartupError` (possibly inside an exception
    group) when a listener cannot bind, or, with ``strict``, when an assistant's local engines
    cannot load (the ``sidecar`` command; without it such an assistant's offers are refused).
    ``worker`` is this media worker's name (``--worker``): offers naming another are refused.
    """
    health = health or SidecarHealth()
    metrics = SidecarMetrics()
    metrics.health = health
    async with trio.open_nursery() as nursery:
        listen = health_listen or (cfg.health.listen if cfg.health.active else None)
        health_port = 0
        if listen is not None:
            health_port = await nursery.start(serve_health, health, metrics, listen.host,
                                              listen.port)
        given = _Given(services, unavailable, prompts, announcements, records, worker)
        await _serve(cfg, given, provider_factory, health, metrics, health_port, lifecycle,
                     strict, task_status)
        nursery.cancel_scope.cancel()  # reached only if serving ended by itself


@dataclass
class _Given:
    """What a caller of :func:`run_sidecar` may bring instead of the sidecar loading it."""

    services: CallServices | None
    unavailable: dict[str, str] | None
    prompts: dict[str, bytes] | None
    announcements: dict[str, bytes] | None
    records: RecordWriter | None
    worker: str = ""


async def _serve(cfg: Config, given: _Given, provider_factory: ProviderFactory,
                 health: SidecarHealth, metrics: SidecarMetrics, health_port: int,
                 lifecycle: SidecarLifecycle | None, strict: bool,
                 task_status: trio.TaskStatus[SidecarPorts]) -> None:
    services, unavailable = given.services, given.unavailable
    if services is None:
        services, unavailable = await trio.to_thread.run_sync(load_local_services, cfg)
        if strict and unavailable:
            name, why = next(iter(unavailable.items()))
            raise StartupError(f"assistant {name} cannot take calls: {why}")
    prompts, announcements = given.prompts, given.announcements
    if prompts is None:
        prompts = await trio.to_thread.run_sync(load_prompts, cfg, services)
    if announcements is None:
        announcements = await trio.to_thread.run_sync(load_announcements, cfg, services)
    health.models_loaded = True
    registry = MeteredRegistry(cfg, unavailable or {}, metrics)
    if services is None:
        # Nothing can take a call, but the control link still answers so every offer is refused
        # at once with the reason (AI_STATUS=FAILED) instead of timing out.
        registry.unavailable = {a.name: "no speech engines available" for a in cfg.assistants
                                if a.is_pipeline} | (unavailable or {})
    hub = ControlHub(registry, given.worker)
    health.registry, health.hub = registry, hub
    records = given.records or RecordWriter(cfg.sidecar.records_path, cfg.sidecar.records)
    records.observers.append(metrics.observe_record)
    records.error_observers.append(metrics.count_record_error)
    store = start_store_writer(cfg, metrics)
    if store is not None:
        records.observers.append(store.submit)
    server = AudioSocketServer(cfg, registry, services, hub, records, on_ended=hub.send,
                               provider_factory=provider_factory, prompts=prompts)
    server.announcements = announcements
    server.recordings = make_recordings(cfg)
    server.worker = given.worker
    sc = cfg.sidecar
    try:
        async with trio.open_nursery() as nursery:
            # AudioSocket first: the control link is what tells the FastAGI side "ready"
            as_port = await nursery.start(functools.partial(
                serve_audiosocket, server, sc.audiosocket.host, sc.audiosocket.port))
            control_port = await nursery.start(serve_control, hub, sc.control.host,
                                               sc.control.port)
            nursery.start_soon(sweep_records, records)
            if server.recordings is not None:
                nursery.start_soon(sweep_recordings, server.recordings)
            if store is not None:
                nursery.start_soon(sweep_store, store)
            if lifecycle is not None:
                lifecycle.attach(cfg, registry, server, health)
            health.ports = {"audiosocket": as_port, "control": control_port,
                            "health": health_port}
            health.listening = True
            log.info("sidecar ready: AudioSocket %s:%d, control ws://%s:%d/control%s",
                     sc.audiosocket.host, as_port, sc.control.host, control_port,
                     f", health and metrics on port {health_port}" if health_port else "")
            task_status.started(SidecarPorts(audiosocket=as_port, control=control_port,
                                             health=health_port))
    finally:
        records.observers.remove(metrics.observe_record)  # a restart brings its own metrics
        records.error_observers.remove(metrics.count_record_error)
        if store is not None:  # every call's record was queued: drain, bounded
            records.observers.remove(store.submit)
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(store.close, STORE_DRAIN_SECONDS)
        if services is not None:  # the pipeline's pooled HTTP connections
            with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                await services.net.aclose()
        pool = services.speech.pool if services is not None and services.speech else None
        if pool is not None and given.services is None:  # loaded here: ours to stop
            pool.shutdown()
            with trio.CancelScope(shield=True), trio.move_on_after(3.0):
                await trio.to_thread.run_sync(pool.join)
