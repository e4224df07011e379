"""A call record (as :func:`dataclasses.asdict` gives it) to the store's rows, and back.

Pure: no database, no I/O. The columns the history lists, filters and charts by are columns;
nested data the detail view shows whole (provider usage, playout counts, the recording, a
turn's stage timings) is JSON text. Whatever the record holds that has no column of its own
(fallback, media verdict, barge-in times, ...) goes to ``extra_json``, so nothing is lost.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
from collections.abc import Mapping
from typing import Any

CALL_COLUMNS = ("uuid", "assistant", "engine", "caller", "caller_name", "dnid", "channel",
                "uniqueid", "started_at", "started_ts", "started_hour", "ended_at", "duration",
                "status", "reason", "transfer_to", "end_cause", "worker", "barge_ins",
                "turn_count", "latency_p50_ms", "has_recording", "transcripts",
                "outcome_confirmed", "provider_json", "usage_json", "recording_json",
                "playout_json", "extra_json", "record_json", "saved_at")
TURN_COLUMNS = ("call_uuid", "seq", "turn_index", "turn_trigger", "caller_text",
                "rescored_text", "agent_text", "heard_text", "intent", "match_json",
                "filler_at", "interrupted", "speech_end", "stt_done", "llm_first_token",
                "first_sentence", "llm_done", "first_audio_ready", "first_frame_sent",
                "latency_ms", "stage_ms_json", "provider_latency_ms_json")
ACTION_COLUMNS = ("call_uuid", "seq", "t", "kind", "destination", "reason", "result", "tool",
                  "arguments_json", "duration_ms")
DTMF_COLUMNS = ("call_uuid", "seq", "t", "digit")

_TEXT = ("assistant", "engine", "caller", "caller_name", "dnid", "channel", "uniqueid",
         "ended_at", "status", "reason", "transfer_to", "end_cause", "worker")
_OWN = set(_TEXT) | {"uuid", "started_at", "duration", "barge_ins", "turns", "actions", "dtmf",
                     "dtmf_at",
                     "provider", "recording", "playout", "outcome_confirmed", "transcripts"}
_TURN_TIMES = ("filler_at", "speech_end", "stt_done", "llm_first_token", "first_sentence",
               "llm_done", "first_audio_ready", "first_frame_sent", "latency_ms")
_TURN_TEXT = ("caller_text", "rescored_text", "agent_text", "heard_text", "intent")


def insert_sql(table: str, columns: tuple[str, ...]) -> str:
    return (f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))})")


def parse_stamp(text: str) -> float | None:
    """Seconds since the epoch of an ISO 8601 stamp (naive: UTC), or None."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def hour_of(ts: float) -> str:
    """The UTC hour a moment falls in, as an ISO stamp (``2026-12-05T17:00:00+00:00``)."""
    when = dt.datetime.fromtimestamp(ts, dt.UTC).replace(minute=0, second=0, microsecond=0)
    return when.isoformat()


def _json(value: Any) -> str:
    return json.dumps(value if value is not None else {}, ensure_ascii=False,
                      separators=(",", ":"), default=str)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def keypresses(call: Mapping[str, Any]) -> list[tuple[float | None, str]]:
    """A call's keypresses as (call-relative time or None, digit): a record's digits with
    their times beside them in ``dtmf_at`` (none in records written before it existed), or
    the store's rows (``{"t", "digit"}``)."""
    times = call.get("dtmf_at") or []
    out: list[tuple[float | None, str]] = []
    for seq, d in enumerate(call.get("dtmf") or []):
        if isinstance(d, Mapping):  # a digit with its time
            out.append((_num(d.get("t")), _str(d.get("digit"))))
        else:
            at = times[seq] if isinstance(times, list) and seq < len(times) else None
            out.append((_num(at), _str(d)))
    return out


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def speech_latency_p50(turns: list[dict[str, Any]]) -> float | None:
    """The median first-frame latency of a call's speech turns (None: none measured)."""
    lat = [float(t["latency_ms"]) for t in turns
           if t.get("trigger") == "speech" and _num(t.get("latency_ms")) is not None]
    return statistics.median(lat) if lat else None


def call_rows(record: dict[str, Any], saved_at: float) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of one record: ``{"calls": [row], "turns": [...], "actions": [...],
    "dtmf": [...]}``, each a tuple in the order of the ``*_COLUMNS``."""
    uuid = _str(record.get("uuid"))
    if not uuid:
        raise ValueError("a call record without a uuid")
    started_at = _str(record.get("started_at"))
    started_ts = parse_stamp(started_at)
    if started_ts is None:
        started_ts = saved_at
        started_at = dt.datetime.fromtimestamp(saved_at, dt.UTC).isoformat(
            timespec="milliseconds")
    turns = [t for t in record.get("turns") or [] if isinstance(t, dict)]
    provider = record.get("provider") or {}
    usage = provider.get("usage") if isinstance(provider, dict) else None
    recording = record.get("recording") or {}
    extra = {k: v for k, v in record.items() if k not in _OWN}
    call = {**{k: _str(record.get(k)) for k in _TEXT},
            "uuid": uuid, "started_at": started_at, "started_ts": started_ts,
            "started_hour": hour_of(started_ts), "duration": _num(record.get("duration")) or 0.0,
            "barge_ins": int(record.get("barge_ins") or 0), "turn_count": len(turns),
            "latency_p50_ms": speech_latency_p50(turns), "has_recording": int(bool(recording)),
            "transcripts": int(record.get("transcripts", True) is not False),
            "outcome_confirmed": int(bool(record.get("outcome_confirmed"))),
            "provider_json": _json(provider), "usage_json": _json(usage or {}),
            "recording_json": _json(recording), "playout_json": _json(record.get("playout")),
            "extra_json": _json(extra), "record_json": _json(record), "saved_at": saved_at}
    turn_rows = []
    for seq, t in enumerate(turns):
        turn_rows.append((
            uuid, seq, int(t.get("index", seq) or 0), _str(t.get("trigger")),
            *(_str(t.get(k)) for k in _TURN_TEXT[:4]), _str(t.get("intent")),
            _json(t.get("match")), _num(t.get("filler_at")), int(bool(t.get("interrupted"))),
            *(_num(t.get(k)) for k in _TURN_TIMES[1:]),
            _json(t.get("stage_ms")), _json(t.get("provider_latency_ms"))))
    action_rows = []
    for seq, a in enumerate(x for x in record.get("actions") or [] if isinstance(x, dict)):
        action_rows.append((uuid, seq, _num(a.get("t")), _str(a.get("kind")),
                            _str(a.get("destination")), _str(a.get("reason")),
                            _str(a.get("result")), _str(a.get("tool")),
                            _json(a.get("arguments")), _num(a.get("duration_ms"))))
    dtmf_rows = [(uuid, seq, t, digit) for seq, (t, digit) in enumerate(keypresses(record))]
    return {"calls": [tuple(call[c] for c in CALL_COLUMNS)], "turns": turn_rows,
            "actions": action_rows, "dtmf": dtmf_rows}


def _load(text: Any) -> Any:
    try:
        return json.loads(text) if text else {}
    except (TypeError, ValueError):
        return {}


def call_detail(call: dict[str, Any]) -> dict[str, Any]:
    """A ``calls`` row as the detail view gets it: JSON columns decoded under the record's
    own names, flags as booleans, whatever else the record held merged in."""
    out = {k: v for k, v in call.items() if not k.endswith("_json")}
    for flag in ("has_recording", "transcripts", "outcome_confirmed"):
        out[flag] = bool(out.get(flag))
    for name in ("provider", "usage", "recording", "playout"):
        out[name] = _load(call.get(f"{name}_json"))
    extra = _load(call.get("extra_json"))
    if isinstance(extra, dict):
        out = {**extra, **out}
    return out


def turn_detail(row: dict[str, Any]) -> dict[str, Any]:
    """A ``turns`` row as a :class:`~media_sidecar.session.records.TurnRecord` dict."""
    out: dict[str, Any] = {"index": row["turn_index"], "trigger": row["turn_trigger"]}
    for k in _TURN_TEXT[:4]:
        out[k] = row[k]
    out["intent"] = row["intent"]
    out["match"] = _load(row["match_json"])
    out["filler_at"] = row["filler_at"]
    out["interrupted"] = bool(row["interrupted"])
    for k in _TURN_TIMES[1:]:
        out[k] = row[k]
    out["stage_ms"] = _load(row["stage_ms_json"])
    out["provider_latency_ms"] = _load(row["provider_latency_ms_json"])
    return out


def action_detail(row: dict[str, Any]) -> dict[str, Any]:
    """An ``actions`` row as a :class:`~media_sidecar.session.records.ToolAction` dict."""
    return {"t": row["t"], "kind": row["kind"], "destination": row["destination"],
            "reason": row["reason"], "result": row["result"], "tool": row["tool"],
            "arguments": _load(row["arguments_json"]), "duration_ms": row["duration_ms"]}
