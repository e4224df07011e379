"""The AudioSocket TCP server: the trio shell around the codec and the call session.

Per connection: TCP_NODELAY; the first message must be a UUID within ``uuid_timeout``; the UUID
must have been offered by the control plane (else the connection is closed without a byte);
then one session in its own nursery (:class:`CallSession` for the local assistant,
:class:`RelaySession` for speech-to-speech providers). A relayed call whose provider cannot
start is handed, on the same connection, to the assistant's ``fallback_assistant``. Whatever
happens inside a call, the handler returns normally, so the server and every other call keep
running.

When a call ends, its handler sends the sidecar's verdict (``ended``), then holds the call record
until the control plane's ``outcome`` says what it finally set on the channel (at most
``OUTCOME_WAIT_SECONDS``, not at all while the control link is down), and writes the record
with those values and its own verdict beside them. Only the finished call's own task waits.
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import Callable, Mapping
from typing import Any

import trio

from ..config.schema import AssistantConfig, Config
from ..ops.logs import fields
from ..ops.status import listen_error
from ..protocol.audiosocket import AudioFormat, AudioSocketDecoder, AudioSocketError, UuidMessage
from ..protocol.control import OUTCOME_WAIT_SECONDS, CallContext, Ended, Offer
from ..providers import RELAY_PROVIDERS, SpeechToSpeech, make_provider
from ..session.base import MediaSession
from ..session.call import CallServices, CallSession, ControlPort
from ..session.clock import FrameClock
from ..session.recording import Recordings
from ..session.records import CallRecord, RecordWriter
from ..session.relay import RelaySession
from .registry import CallRegistry

log = logging.getLogger("agi_voice.audiosocket")


class AudioSocketServer:
    def __init__(self, cfg: Config, registry: CallRegistry, services: CallServices | None,
                 control: ControlPort, records: RecordWriter,
                 on_ended: Callable[[Ended], object] | None = None,
                 provider_factory: Callable[[AssistantConfig, CallContext], SpeechToSpeech]
                 = make_provider, prompts: Mapping[str, bytes] | None = None) -> None:
        self.cfg = cfg
        self.prompts = dict(prompts or {})
        """Per assistant: its apology, slin 8 kHz, rendered at start-up."""
        self.provider_factory = provider_factory
        self.registry = registry
        self.services = services
        self.control = control
        self.records = records
        self.on_ended = on_ended
        self.calls_started = 0
        self.calls_rejected = 0
        self.outcome_wait = OUTCOME_WAIT_SECONDS
        """Seconds a finished call's record waits for the control plane's outcome."""
        self.announcements: dict[str, bytes] = {}
        """Per assistant: the drain's announcement, slin 8 kHz, rendered at start-up."""
        self.active = 0
        """Calls past the UUID check whose record is not written yet (the drain waits for
        none)."""
        self.worker = ""
        """This media worker's name, written into each call record."""
        self.clock: FrameClock | None = None
        """The frame clock calls go by (None: the process's, :func:`frame_clock`; tests give
        each call a clock of its own to fix its phase)."""
        self.recordings: Recordings | None = None
        """Where the calls of assistants with ``recording: true`` are recorded (None: none)."""

    async def handle(self, stream: trio.abc.Stream) -> None:
        """Serve one AudioSocket connection; never raises (one bad call never disturbs another).

        The stream is a ``trio.SocketStream`` (TCP from Asterisk, with TCP_NODELAY; tests may
        use a ``socketpair``): the process's frame clock writes and reads its socket.
        """
        if isinstance(stream, trio.SocketStream) and stream.socket.family != socket.AF_UNIX:
            stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await self._handle(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            log.exception("AudioSocket connection failed")
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)

    async def _handle(self, stream: trio.abc.Stream) -> None:
        sc = self.cfg.sidecar
        decoder = AudioSocketDecoder(sc.max_payload)
        first = None
        rest: list = []
        with trio.move_on_after(sc.uuid_timeout):
            while first is None:
                data = await stream.receive_some(65536)
                if not data:
                    return
                try:
                    decoder.receive_data(data)
                except AudioSocketError as exc:
                    log.warning("AudioSocket connection rejected: %s", exc)
                    self.calls_rejected += 1
                    return
                msgs = decoder.events()
                if msgs:
                    first, rest = msgs[0], msgs[1:]
        if first is None:
            log.warning("AudioSocket connection sent no UUID within %.1f s", sc.uuid_timeout)
            self.calls_rejected += 1
            return
        if not isinstance(first, UuidMessage):
            log.warning("AudioSocket connection began with %s, not a UUID", type(first).__name__)
            self.calls_rejected += 1
            return
        uuid = str(first.uuid)
        offer = self.registry.claim(uuid)
        if offer is None:
            log.warning("AudioSocket connection for UUID %s that was never offered: closed", uuid)
            self.calls_rejected += 1
            return
        self.active += 1
        try:
            await self._serve_call(uuid, offer, decoder, stream, rest)
        finally:
            self.active -= 1
            self.registry.notify()

    async def _serve_call(self, uuid: str, offer: Offer, decoder: AudioSocketDecoder,
                          stream: trio.abc.Stream, rest: list[Any]) -> None:
        """Run a claimed call, then send its verdict and write its record (shielded)."""
        assistant = self.cfg.assistant(offer.assistant)
        if assistant is None:
            return  # the registry refused such offers already
        session = self._session(uuid, assistant, offer, decoder)
        if session is None:
            return  # the registry refused such offers already: no engines
        self.calls_started += 1
        log.info("call started", extra=fields(uuid=uuid, assistant=assistant.name,
                                              caller=offer.context.callerid or "unknown"))
        ended = await self._run(uuid, session, stream, rest)
        if session.fallback_requested:
            session, ended = await self._fall_back(uuid, session, offer, decoder, stream, ended)
        log.debug("call %s media ended: %s %s", uuid, ended.status, ended.reason)
        with trio.CancelScope(shield=True):
            if self.on_ended is not None and not session.verdict_sent:
                await self.on_ended(ended)  # type: ignore[misc]
            await self._settle_outcome(uuid, session.record)
            rec = session.record  # the final outcome: what the channel's AI_STATUS says
            log.info("call ended", extra=fields(uuid=uuid, assistant=rec.assistant,
                                                outcome=rec.status, duration=rec.duration,
                                                reason=rec.reason))
            await trio.to_thread.run_sync(self.records.write, session.record)
            session.release()

    async def _settle_outcome(self, uuid: str, record: CallRecord) -> None:
        """Give the record the AI_* values the control plane finally set, keeping the
        sidecar's own verdict in ``media_verdict``.

        The control plane learns some outcomes only after the media session is over (a
        third-party AMI Redirect is told from a hangup only once the AGI socket closed), so
        the record waits for its ``outcome`` up to ``outcome_wait`` seconds; without a control
        link it does not wait. Runs shielded in the call's own handler task.
        """
        record.media_verdict = {"status": record.status, "reason": record.reason}
        outcome = await self.registry.wait_outcome(uuid, self.outcome_wait)
        if outcome is None:
            log.info("call %s: no outcome from the control plane; the record keeps the "
                     "sidecar's verdict", uuid)
            return
        record.status, record.reason = outcome.status, outcome.reason
        record.transfer_to = outcome.transfer_to
        record.outcome_confirmed = True

    async def _fall_back(self, uuid: str, failed: MediaSession, offer: Offer,
                         decoder: AudioSocketDecoder, stream: trio.abc.Stream,
                         ended: Ended) -> tuple[MediaSession, Ended]:
        """The provider (or a pipeline stage) could not start: the fallback assistant takes the
        silent call."""
        fallback = self.cfg.assistant(failed.assistant.fallback_assistant)
        session = None
        if fallback is not None and fallback.name not in self.registry.unavailable:
            session = self._session(uuid, fallback, offer, decoder)
        if fallback is None or session is None:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
            return failed, ended
        log.warning("call %s: provider %s unavailable, assistant %s takes the call",
                    uuid, failed.provider_name, fallback.name)
        session.record.fallback_from = {
            "assistant": failed.assistant.name, "provider": failed.provider_name,
            "error": failed.record.provider.get("error", "")}
        return session, await self._run(uuid, session, stream, [])

    def _session(self, uuid: str, assistant: AssistantConfig, offer: Offer,
                 decoder: AudioSocketDecoder) -> MediaSession | None:
        sc = self.cfg.sidecar
        common: dict[str, Any] = dict(
            uuid=uuid, assistant=assistant, context=offer.context,
            fmt=AudioFormat.parse(assistant.audio_format), control=self.control,
            decoder=decoder,
            playout_seconds=sc.playout.queue_seconds, lead_frames=sc.playout.lead_frames,
            apology=self.prompts.get(assistant.name, b""), on_verdict=self.on_ended,
            clock=self.clock, recordings=self.recordings)
        if assistant.provider in RELAY_PROVIDERS:
            extra: dict[str, Any] = {}
            if self.services is not None:
                extra["vad_factory"] = self.services.vad_factory
            return RelaySession(provider=self.provider_factory(assistant, offer.context),
                                **common, **extra)
        if self.services is not None:
            return CallSession(services=self.services, **common)
        return None

    async def _run(self, uuid: str, session: MediaSession, stream: trio.abc.Stream,
                   rest: list[Any]) -> Ended:
        self.registry.attach(uuid, session)
        session.record.worker = self.worker
        try:
            return await session.run(stream, rest)
        finally:
            self.registry.detach(uuid)


async def serve_audiosocket(server: AudioSocketServer, host: str, port: int,
                            *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Listen for AudioSocket connections; reports the bound port through ``task_status``.
    Raises :class:`~media_sidecar.ops.status.StartupError` when the address cannot be bound."""
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise listen_error("AudioSocket", host, port, exc) from None
    bound = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(trio.serve_listeners, server.handle, listeners))
        task_status.started(bound)
