"""Call records: one JSON line per finished call.

The record holds who called, which assistant answered, how it ended, every turn with both
transcripts and its timings, and every tool action. Timings are seconds on the call's clock
(trio time relative to the AudioSocket connection); ``started_at``/``ended_at`` are wall-clock
ISO stamps for people and CRMs (``time.time`` is used for stamps only).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger("agi_voice.records")


def wall_clock() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass
class TurnRecord:
    index: int
    trigger: str
    """speech, dtmf, no-input or start."""
    caller_text: str = ""
    agent_text: str = ""
    heard_text: str = ""
    intent: str = ""
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


@dataclass
class ToolAction:
    t: float
    kind: str
    """transfer, hangup, apology, or tool (a model's function call, any tool)."""
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
    playout: dict[str, Any] = field(default_factory=dict)
    caller_frames_dropped: int = 0
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


class RecordWriter:
    """Appends records to a JSON-lines file (or only logs them when no path is configured).

    Writes are small and serialised by a lock; callers run :meth:`write` in a worker thread.
    A write error is logged and never ends the process or another call.
    """

    def __init__(self, path: str = "") -> None:
        self.path = path
        self._lock = threading.Lock()
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write(self, record: CallRecord) -> None:
        line = record.to_json()
        log.info("call record %s", line)
        if not self.path:
            return
        try:
            with self._lock, open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError as exc:
            log.error("cannot write call record to %s: %s", self.path, exc)
