"""Prometheus metrics of the whole product, exposed by the sidecar's ``/metrics``.

One :class:`prometheus_client.CollectorRegistry` per sidecar (not the process-global one, so
tests can run several sidecars in one process). Three sources:

- the finished call record (:meth:`SidecarMetrics.observe_record`, a
  :class:`~media_sidecar.session.records.RecordWriter` observer, run in its worker thread;
  prometheus-client is thread-safe): calls by outcome and assistant, turn and first-frame
  latency by provider, barge-ins, late playout frames, provider errors;
- the call registry (:class:`MeteredRegistry`): calls active, offers refused by the sidecar;
- the control plane's ``stats`` message and the health state (read at scrape time by
  :class:`_LiveCollector`): AMI up and reconnects, offers that never reached the sidecar,
  readiness, draining, the control link.

No label is per call (no uuid, caller or channel): labels are outcomes, assistant and provider
names from the config, and fixed reason and class names.
"""

from __future__ import annotations

import re
from collections import Counter as TallyCounter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from ..config.schema import Config
from ..protocol.control import Accept, Offer, Refuse
from ..server.registry import CallRegistry, LiveCall
from ..session.clock import process_clock_stats
from ..session.records import CallRecord
from .recordingfile import writer_failures

if TYPE_CHECKING:
    from ..server.health import SidecarHealth

OUTCOMES = frozenset({"COMPLETED", "TRANSFERRED", "CALLER_HANGUP", "FAILED"})
TURN_BUCKETS = (0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0)
"""Seconds from the caller's end of speech to the first agent frame."""
FIRST_FRAME_BUCKETS = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
"""Seconds from the AudioSocket connection to the first agent frame (greeting or answer)."""
_LABEL_SAFE = re.compile(r"[^A-Za-z0-9_.:-]")


def _label(value: str, default: str = "none") -> str:
    """A bounded, printable label value (names come from the config or fixed code)."""
    return _LABEL_SAFE.sub("_", value)[:64] or default


def refusal_class(reason: str, assistant_unavailable: bool) -> str:
    """A fixed label for why the sidecar refused an offer (its reason text names the call's
    details, which must not become a label)."""
    text = reason.lower()
    if "drain" in text:
        return "draining"
    if text.startswith("unknown assistant"):
        return "unknown_assistant"
    if assistant_unavailable:
        return "assistant_unavailable"
    if "duplicate" in text:
        return "duplicate_uuid"
    if "limit" in text:
        return "at_capacity"
    return "other"


def error_class(error: str, started: bool) -> str:
    """``timeout`` (no answer in time), ``start`` (could not start: the call was handed to its
    fallback or back to the dialplan) or ``mid_call``."""
    text = error.lower()
    if "no answer within" in text or "timed out" in text or "timeout" in text:
        return "timeout"
    return "mid_call" if started else "start"


class SidecarMetrics:
    """The product's metrics and the registry ``/metrics`` renders."""

    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls_active = Gauge("agi_voice_calls_active",
                                  "Calls with a live media session in this sidecar.", registry=r)
        self.calls = Counter("agi_voice_calls", "Finished calls by outcome (the final AI_STATUS) "
                             "and assistant.", ["outcome", "assistant"], registry=r)
        self.turn_latency = Histogram(
            "agi_voice_turn_latency_seconds", "Caller end of speech to the first agent frame "
            "sent, per answered turn.", ["provider"], buckets=TURN_BUCKETS, registry=r)
        self.first_frame = Histogram(
            "agi_voice_first_frame_seconds", "AudioSocket connection to the call's first agent "
            "frame (greeting or first answer).", ["provider"], buckets=FIRST_FRAME_BUCKETS,
            registry=r)
        self.barge_ins = Counter("agi_voice_barge_ins", "Times a caller interrupted the agent.",
                                 ["assistant"], registry=r)
        self.late_frames = Counter("agi_voice_playout_late_frames", "Agent frames written "
                                   "after their 20 ms deadline.", registry=r)
        self.blocked_ticks = Counter(
            "agi_voice_playout_blocked_ticks", "Frame-clock ticks a call's AudioSocket took no "
            "frame (Asterisk was not reading it).", registry=r)
        self.provider_errors = Counter(
            "agi_voice_provider_errors", "Provider or pipeline-stage failures by class "
            "(timeout, start, mid_call).", ["provider", "class"], registry=r)
        self.record_write_errors = Counter(
            "agi_voice_record_write_errors", "Call records that could not be written (disk "
            "full, permissions); the calls themselves ended normally.", registry=r)
        self.store_write_errors = Counter(
            "agi_voice_store_write_errors", "Call records that could not be written to the "
            "call store (store down, disk full, locked, queue full); the JSON-lines records "
            "and the calls were unaffected.", registry=r)
        self.refused = TallyCounter[str]()
        """Offers this sidecar refused, by :func:`refusal_class` (exported with the control
        plane's own in one family)."""
        self.health: SidecarHealth | None = None
        r.register(_LiveCollector(self))
        if process:
            ProcessCollector(registry=r)

    def count_record_error(self, exc: OSError) -> None:
        """A call record could not be written (any thread)."""
        self.record_write_errors.inc()

    def count_store_error(self, exc: BaseException) -> None:
        """A call record could not be written to the call store (any thread)."""
        self.store_write_errors.inc()

    def observe_record(self, rec: CallRecord) -> None:
        """Count a finished call from its record (any thread)."""
        provider = _label(str(rec.provider.get("name", "")))
        assistant = _label(rec.assistant)
        outcome = rec.status if rec.status in OUTCOMES else "OTHER"
        self.calls.labels(outcome, assistant).inc()
        sent = [t.first_frame_sent for t in rec.turns if t.first_frame_sent is not None]
        if sent:
            self.first_frame.labels(provider).observe(min(sent))
        for t in rec.turns:
            if t.latency_ms is not None:
                self.turn_latency.labels(provider).observe(t.latency_ms / 1000)
        if rec.barge_ins:
            self.barge_ins.labels(assistant).inc(rec.barge_ins)
        late = rec.playout.get("late_frames", 0)
        if isinstance(late, int) and late > 0:
            self.late_frames.inc(late)
        blocked = rec.playout.get("blocked_ticks", 0)
        if isinstance(blocked, int) and blocked > 0:
            self.blocked_ticks.inc(blocked)
        started = bool(sent)
        for key in ("error", "stt_error"):
            error = rec.provider.get(key)
            if error:
                self.provider_errors.labels(provider, error_class(str(error), started)).inc()
                break
        if rec.fallback_from:
            failed = _label(str(rec.fallback_from.get("provider", "")))
            self.provider_errors.labels(
                failed, error_class(str(rec.fallback_from.get("error", "")), False)).inc()


class _LiveCollector(Collector):
    """Read at scrape time: readiness, the control plane's reported state, refused offers."""

    def __init__(self, metrics: SidecarMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        from .. import __version__

        info = GaugeMetricFamily("agi_voice_build_info", "The running version.",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        health = self.metrics.health
        peer = health.peer_stats() if health is not None else None
        refused = CounterMetricFamily(
            "agi_voice_offers_refused", "Calls offered but not taken, by reason (refused by "
            "the sidecar, or no answer from it as the control plane saw it).",
            labels=["reason"])
        tally = TallyCounter(self.metrics.refused)
        for reason, n in (peer.refused.items() if peer is not None else ()):
            if isinstance(n, int):
                tally[_label(str(reason))] += n
        for reason, n in sorted(tally.items()):
            refused.add_metric([reason], n)
        yield refused
        yield CounterMetricFamily("agi_voice_ami_reconnects", "AMI logins after the first "
                                  "(control plane).",
                                  value=peer.ami_reconnects if peer is not None
                                  and isinstance(peer.ami_reconnects, int) else 0)
        yield GaugeMetricFamily("agi_voice_ami_up", "1 while the control plane is logged in "
                                "to AMI (0: down, not configured, or unknown).",
                                value=1 if peer is not None and peer.ami == "up" else 0)
        failed = CounterMetricFamily(
            "agi_voice_recordings_failed", "Recordings stopped early, by reason: write_error "
            "(disk full, permissions) or writer_behind (the writer's queue was full); the "
            "calls went on, and each file holds what was written before.", labels=["reason"])
        for reason, n in writer_failures().items():
            failed.add_metric([reason], n)
        yield failed
        clock = process_clock_stats()
        if clock is not None:
            yield CounterMetricFamily("agi_voice_frame_clock_ticks", "20 ms ticks of the "
                                      "process's frame clock.", value=clock.ticks)
            yield CounterMetricFamily("agi_voice_frame_clock_late_ticks", "Ticks more than a "
                                      "frame late (the grid was re-clamped: every call on it "
                                      "skipped a frame).", value=clock.late_ticks)
            yield CounterMetricFamily("agi_voice_frame_clock_busy_seconds", "Time spent in "
                                      "ticks (writing, reading, feeding every call): its rate "
                                      "is the share of a core the media loop needs.",
                                      value=clock.busy_seconds)
            yield GaugeMetricFamily("agi_voice_frame_clock_calls", "Calls on the frame clock.",
                                    value=clock.ports)
        if health is None:
            return
        yield GaugeMetricFamily("agi_voice_ready", "1 when /ready answers 200.",
                                value=1 if health.ready else 0)
        yield GaugeMetricFamily("agi_voice_draining", "1 while either plane is draining.",
                                value=1 if health.draining_any else 0)
        yield GaugeMetricFamily("agi_voice_control_link_up", "1 while the FastAGI server is "
                                "connected to this sidecar.", value=1 if health.link_up else 0)


class MeteredRegistry(CallRegistry):
    """The call registry, counting live calls and refused offers into :class:`SidecarMetrics`."""

    def __init__(self, cfg: Config, unavailable: dict[str, str] | None,
                 metrics: SidecarMetrics) -> None:
        super().__init__(cfg, unavailable)
        self.metrics = metrics
        self._metered: set[str] = set()

    @property
    def live_calls(self) -> int:
        return len(self._metered)

    def offer(self, o: Offer) -> Accept | Refuse:
        reply = super().offer(o)
        if isinstance(reply, Refuse):
            self.metrics.refused[refusal_class(reply.reason, o.assistant in self.unavailable)] += 1
        return reply

    def attach(self, uuid: str, call: LiveCall) -> None:
        super().attach(uuid, call)
        self._metered.add(uuid.lower())
        self.metrics.calls_active.set(len(self._metered))

    def detach(self, uuid: str) -> None:
        super().detach(uuid)
        self._metered.discard(uuid.lower())
        self.metrics.calls_active.set(len(self._metered))


def describe(metrics: SidecarMetrics) -> list[str]:
    """The metric family names exposed (for the README and a test)."""
    return sorted({m.name for m in metrics.registry.collect()})
