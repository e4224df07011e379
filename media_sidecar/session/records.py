"""Call records: one JSON line per finished call.

The record holds who called, which assistant answered, how it ended, every turn with both
transcripts and its timings, and every tool action. Timings are seconds on the call's clock
(trio time relative to the AudioSocket connection); ``started_at``/``ended_at`` are wall-clock
ISO stamps for people and CRMs (``time.time`` is used for stamps only).

The file is rotated by size and pruned by age (``sidecar.records``, see
:mod:`media_sidecar.ops.recordfile`); with ``transcripts: false`` a record keeps outcomes,
timings and actions but none of the caller's or the agent's words (:func:`without_text`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..config.schema import RecordsConfig
from ..ops.recordfile import RotatingJsonLines

log = logging.getLogger("agi_voice.records")


def wall_clock() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass
class TurnRecord:
    index: int
    trigger: str
    """speech, dtmf, no-input or start."""
    caller_text: str = ""
    """What the STT heard (DTMF turns: ``[DTMF 1]``)."""
    rescored_text: str = ""
    """The caller's words after re-scoring against the assistant's vocabulary (local STT,
    ``stt.rescore``), when that changed them: what the brain was given."""
    agent_text: str = ""
    heard_text: str = ""
    intent: str = ""
    match: dict[str, Any] = field(default_factory=dict)
    """The rule brain's match: term, heard (the caller's words), score (1.0 exact), how."""
    filler_at: float | None = None
    """The filler ("One moment.") started playing: the answer was slow (``filler.after``)."""
    interrupted: bool = False
    speech_end: float | None = None
    """Caller end of speech (VAD), call-relative seconds."""
    stt_done: float | None = None
    """The caller's words are known (STT final)."""
    llm_first_token: float | None = None
    first_sentence: float | None = None
    """The brain released its first complete sentence to TTS."""
    llm_done: float | None = None
    first_audio_ready: float | None = None
    """The first TTS audio of the answer arrived."""
    first_frame_sent: float | None = None
    latency_ms: float | None = None
    """Caller end of speech to first agent frame sent to Asterisk."""
    stage_ms: dict[str, float] = field(default_factory=dict)
    """Each stage's time from the caller's end of speech (from the turn's start when there was
    no speech: greeting, keypad, no-input): stt, llm_first_token, first_sentence,
    tts_first_audio, first_frame, llm_done."""
    provider_latency_ms: dict[str, float] = field(default_factory=dict)
    """A speech-to-speech provider's own figures for this turn, in ms under its names
    (Deepgram ``LatencyReport``: stt_latency, ttt_token_latency, tts_latency, total_latency,
    ...), beside ours in ``latency_ms`` and ``stage_ms``."""


@dataclass
class ToolAction:
    t: float
    kind: str
    """transfer, hangup, apology, announcement (the drain's, before a hand-off), or tool (a
    model's function call, any tool)."""
    destination: str = ""
    reason: str = ""
    result: str = ""
    tool: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    duration_ms: float | None = None


@dataclass
class CallRecord:
    uuid: str
    assistant: str
    caller: str = ""
    caller_name: str = ""
    dnid: str = ""
    channel: str = ""
    uniqueid: str = ""
    started_at: str = field(default_factory=wall_clock)
    ended_at: str = ""
    duration: float = 0.0
    status: str = ""
    reason: str = ""
    transfer_to: str = ""
    end_cause: str = ""
    turns: list[TurnRecord] = field(default_factory=list)
    actions: list[ToolAction] = field(default_factory=list)
    dtmf: list[str] = field(default_factory=list)
    barge_ins: int = 0
    barge_in_at: list[float] = field(default_factory=list)
    """Call-relative times of the frames in which barge-in was decided."""
    worker: str = ""
    """The media worker that served the call: its index (``sidecar --worker I``)."""
    playout: dict[str, Any] = field(default_factory=dict)
    caller_frames_filled: int = 0
    """Silent 20 ms frames made for gaps in the caller's audio (a leg with silence suppression
    or DTX sends nothing while the caller is quiet); 0 for a leg that streams continuously."""
    provider: dict[str, Any] = field(default_factory=dict)
    """Speech-to-speech calls: provider name, usage it reported, relay timings, its error."""
    fallback_from: dict[str, Any] = field(default_factory=dict)
    """When another assistant took over at the start: the first one, its provider, the error."""
    media_verdict: dict[str, str] = field(default_factory=dict)
    """The sidecar's own verdict when the media session ended: ``status`` and ``reason``."""
    outcome_confirmed: bool = False
    """True: ``status``, ``reason`` and ``transfer_to`` are the AI_* values the control plane
    finally set on the channel (its ``outcome`` message). False: it did not say in time, or the
    control link was down; they are then the sidecar's own verdict."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))


_TURN_TEXT = ("caller_text", "rescored_text", "agent_text", "heard_text")


def without_text(body: dict[str, Any]) -> dict[str, Any]:
    """A record (as :func:`dataclasses.asdict` gives it) without what was said: turn texts,
    keypad digits, tool arguments and results are emptied, and ``transcripts: false`` marks
    it. Outcomes, timings, intents and action kinds and destinations stay."""
    body = dict(body)
    body["turns"] = [{**t, **dict.fromkeys(_TURN_TEXT, ""),
                      "match": {**t.get("match", {}), "heard": ""} if t.get("match") else {}}
                     for t in body.get("turns", [])]
    body["actions"] = [{**a, "arguments": {}, "result": ""} for a in body.get("actions", [])]
    body["dtmf"] = []
    body["transcripts"] = False
    return body


class RecordWriter:
    """Appends records to a JSON-lines file (or only logs them when no path is configured).

    Writes are small and serialised by a lock; callers run :meth:`write` and :meth:`sweep` in
    a worker thread. A write error is logged and never ends the process or another call.
    ``policy`` sets rotation, retention and whether transcripts are kept (default: the
    schema's). Each function in :attr:`observers` sees every record first (metrics, the
    call-end log line); one that raises is logged and skipped.
    """

    def __init__(self, path: str = "", policy: RecordsConfig | None = None) -> None:
        self.path = path
        self.policy = policy or RecordsConfig()
        self.observers: list[Callable[[CallRecord], None]] = []
        self._lock = threading.Lock()
        self._file: RotatingJsonLines | None = None
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._file = RotatingJsonLines(path, max_bytes=self.policy.max_bytes,
                                           backups=self.policy.backups,
                                           max_age_days=self.policy.max_age_days)

    def encode(self, record: CallRecord) -> str:
        """The record's JSON line, without its text when the policy keeps no transcripts."""
        if self.policy.transcripts:
            return record.to_json()
        return json.dumps(without_text(asdict(record)), ensure_ascii=False,
                          separators=(",", ":"))

    def write(self, record: CallRecord) -> None:
        for observe in self.observers:
            try:
                observe(record)
            except Exception:
                log.exception("call record observer failed")
        line = self.encode(record)
        log.info("call record %s", line)
        if self._file is None:
            return
        try:
            with self._lock:
                self._file.append(line)
        except OSError as exc:
            log.error("cannot write call record to %s: %s", self.path, exc)

    def sweep(self) -> None:
        """Delete records past ``max_age_days`` (see :mod:`media_sidecar.ops.recordfile`)."""
        if self._file is None:
            return
        try:
            with self._lock:
                self._file.sweep()
        except OSError as exc:
            log.error("cannot apply call-record retention to %s: %s", self.path, exc)
