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


MAX_RECORD_TURNS = 500
"""Turns a call record keeps (in memory during the call, and in the file): beyond it the first
turn (the greeting) and the latest ones stay, and ``turns_dropped`` counts the rest. A 900 s
call with a turn every 2 s stays under it."""
MAX_RECORD_ITEMS = 500
"""Actions, keypad digits and barge-in times a record keeps (the latest ones)."""
MAX_TEXT_CHARS = 2000
"""Characters of each turn text a record keeps (the rest is cut, marked with an ellipsis)."""


def wall_clock() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def ended_at(started_at: str, duration: float) -> str:
    """The end stamp of a call: its start stamp plus its duration on the monotonic clock, so
    a wall-clock jump during the call (NTP step, an operator's ``date``) cannot make the record
    end before it started or disagree with ``duration``."""
    try:
        start = dt.datetime.fromisoformat(started_at)
    except ValueError:
        return wall_clock()
    return (start + dt.timedelta(seconds=duration)).isoformat(timespec="milliseconds")


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
    engine: str = ""
    """The assistant's ``provider`` setting (pipeline, local, openai_realtime, openai_live,
    deepgram_agent, echo): what the call store groups turn latency by."""
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
    dtmf_at: list[float] = field(default_factory=list)
    """Call-relative times of the keypresses in :attr:`dtmf`, one per digit."""
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
    turns_dropped: int = 0
    """Turns left out of ``turns`` beyond :data:`MAX_RECORD_TURNS` (the oldest after the
    first)."""
    media_verdict: dict[str, str] = field(default_factory=dict)
    """The sidecar's own verdict when the media session ended: ``status`` and ``reason``."""
    outcome_confirmed: bool = False
    """True: ``status``, ``reason`` and ``transfer_to`` are the AI_* values the control plane
    finally set on the channel (its ``outcome`` message). False: it did not say in time, or the
    control link was down; they are then the sidecar's own verdict."""
    recording: dict[str, Any] = field(default_factory=dict)
    """The call's recording when its assistant records (``recording: true``): ``path`` (the
    .wav, absolute), ``seconds``, ``rate``, ``channels`` (2: caller left, agent right), and
    ``truncated: true`` when it stopped early (the disk, or the writer falling behind); ``{}``
    when the call was not recorded."""

    @property
    def next_turn_index(self) -> int:
        """The index of the next turn (counting the ones left out)."""
        return len(self.turns) + self.turns_dropped

    def add_turn(self, rec: TurnRecord) -> None:
        """Append a turn, keeping at most :data:`MAX_RECORD_TURNS` (the first and the
        latest): a long call's record is bounded in memory as in the file."""
        self.turns.append(rec)
        if len(self.turns) > MAX_RECORD_TURNS:
            del self.turns[1]
            self.turns_dropped += 1

    def to_json(self) -> str:
        return json.dumps(capped(asdict(self)), ensure_ascii=False, separators=(",", ":"))


_TURN_TEXT = ("caller_text", "rescored_text", "agent_text", "heard_text")


def _cut(text: Any) -> Any:
    if isinstance(text, str) and len(text) > MAX_TEXT_CHARS:
        return text[:MAX_TEXT_CHARS - 1] + "\u2026"
    return text


def capped(body: dict[str, Any]) -> dict[str, Any]:
    """A record (as :func:`dataclasses.asdict` gives it) within the caps: each turn text at
    most :data:`MAX_TEXT_CHARS`, the latest :data:`MAX_RECORD_ITEMS` actions, digits and
    barge-in times (a count of the others in ``items_dropped`` when any were cut)."""
    body = dict(body)
    body["turns"] = [{**t, **{k: _cut(t.get(k, "")) for k in _TURN_TEXT}}
                     for t in body.get("turns", [])]
    dropped = 0
    for key in ("actions", "dtmf", "dtmf_at", "barge_in_at"):
        items = body.get(key) or []
        if len(items) > MAX_RECORD_ITEMS:
            if key != "dtmf_at":  # the digits' own times: counted with the digits
                dropped += len(items) - MAX_RECORD_ITEMS
            body[key] = items[-MAX_RECORD_ITEMS:]
    if dropped:
        body["items_dropped"] = dropped
    return body


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
    body["dtmf_at"] = []
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
        self.error_observers: list[Callable[[OSError], None]] = []
        """Called (in the writing thread) for each record that could not be written."""
        self.write_errors = 0
        """Records that could not be written (disk full, permissions, ...)."""
        self._failing = False
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
        return json.dumps(without_text(capped(asdict(record))), ensure_ascii=False,
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
        with self._lock:
            try:
                self._file.append(line)
            except OSError as exc:
                self._write_failed(exc)
                return
            if self._failing:
                self._failing = False
                log.warning("call records are written to %s again (%d could not be written)",
                            self.path, self.write_errors)

    def _write_failed(self, exc: OSError) -> None:
        """One ERROR per run of failures (a full disk fails every call: one line, not one a
        call); each failure is counted and told to :attr:`error_observers` (the metric). The
        call itself has already ended normally."""
        self.write_errors += 1
        if not self._failing:
            self._failing = True
            log.error("cannot write call record to %s: %s (further failures are only counted, "
                      "agi_voice_record_write_errors_total, until a write succeeds)",
                      self.path, exc)
        for observe in self.error_observers:
            try:
                observe(exc)
            except Exception:
                log.exception("call record error observer failed")

    def sweep(self) -> None:
        """Delete records past ``max_age_days`` (see :mod:`media_sidecar.ops.recordfile`)."""
        if self._file is None:
            return
        try:
            with self._lock:
                self._file.sweep()
        except OSError as exc:
            log.error("cannot apply call-record retention to %s: %s", self.path, exc)
