"""The dashboard's charts as geometry for server-rendered SVG (pure: no I/O, no framework).

Each function turns store rows into rectangles in a fixed coordinate box; the templates draw
them as ``<rect>`` elements with a CSS class per series (colours live in the stylesheet), so
the page needs no chart library and no script, and every label goes through the templates'
escaping.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

STAGES = (
    ("stt", "STT final"),
    ("llm_first_token", "LLM first token"),
    ("first_sentence", "first sentence"),
    ("tts_first_audio", "TTS first audio"),
    ("first_frame", "first frame sent"),
)
"""A turn's stages in order, each timed from the caller's end of speech (``stage_ms``)."""

STATUS_ORDER = ("COMPLETED", "TRANSFERRED", "CALLER_HANGUP", "FAILED")

WATERFALL_WIDTH = 560
BAR_CHART = (720, 220)
"""Width and height of the calls-per-hour plot area (px, SVG user units)."""


def status_class(status: str) -> str:
    """The CSS class of an outcome (unknown ones share ``s-other``)."""
    return f"s-{status.lower()}" if status in STATUS_ORDER else "s-other"


def clock(seconds: float | None) -> str:
    """Call-relative seconds as ``m:ss.s`` (``-`` for None)."""
    if seconds is None:
        return "-"
    m, s = divmod(max(0.0, float(seconds)), 60)
    return f"{int(m)}:{s:04.1f}"


def duration(seconds: float | None) -> str:
    """A call's length as ``m:ss`` (``h:mm:ss`` past an hour)."""
    if seconds is None:
        return "-"
    total = int(round(float(seconds)))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def stamp(iso: str) -> str:
    """An ISO stamp as ``YYYY-MM-DD HH:MM:SS`` (UTC, as stored)."""
    try:
        t = dt.datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return iso or "-"
    if t.tzinfo is not None:
        t = t.astimezone(dt.UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S")


def waterfall(turns: Sequence[Mapping[str, Any]], width: int = WATERFALL_WIDTH) -> dict[str, Any]:
    """One row per turn with stage timings: a segment per stage from the previous stage's
    time to its own, scaled so the slowest turn fills ``width``."""
    rows = []
    longest = 0.0
    for turn in turns:
        stages = turn.get("stage_ms") or {}
        if not any(k in stages for k, _ in STAGES):
            continue
        segs = []
        prev = 0.0
        for key, label in STAGES:
            v = stages.get(key)
            if v is None:
                continue
            v = float(v)
            segs.append({"stage": key, "label": label, "start": prev, "end": max(prev, v),
                         "ms": v})
            prev = max(prev, v)
        longest = max(longest, prev)
        rows.append({"index": turn.get("index"), "trigger": turn.get("trigger", ""),
                     "total": stages.get("first_frame", turn.get("latency_ms")),
                     "segments": segs})
    scale = width / longest if longest > 0 else 0.0
    for row in rows:
        for seg in row["segments"]:
            seg["x"] = round(seg["start"] * scale, 1)
            seg["w"] = round(max(1.0, (seg["end"] - seg["start"]) * scale), 1)
    return {"rows": rows, "width": width, "max_ms": longest,
            "ticks": _ticks(longest, scale)}


def _ticks(longest: float, scale: float) -> list[dict[str, Any]]:
    if longest <= 0:
        return []
    step = next((s for s in (50, 100, 200, 250, 500, 1000, 2000, 5000, 10000, 30000)
                 if longest / s <= 6), 60000)
    return [{"x": round(v * scale, 1), "label": f"{v / 1000:g} s" if v >= 1000 else f"{v} ms"}
            for v in range(0, int(longest) + 1, step)]


def calls_per_hour(rows: Iterable[Mapping[str, Any]], since: dt.datetime, until: dt.datetime,
                   size: tuple[int, int] = BAR_CHART) -> dict[str, Any]:
    """Stacked bars, one per hour from ``since`` to ``until`` (empty hours too), one segment
    per outcome (in :data:`STATUS_ORDER`, then the others by name)."""
    width, height = size
    counts: dict[dt.datetime, dict[str, int]] = {}
    statuses: set[str] = set()
    for row in rows:
        try:
            hour = dt.datetime.fromisoformat(str(row["hour"])).astimezone(dt.UTC)
        except (KeyError, ValueError):
            continue
        status = str(row.get("status") or "?")
        statuses.add(status)
        per = counts.setdefault(hour.replace(minute=0, second=0, microsecond=0), {})
        per[status] = per.get(status, 0) + int(row.get("count", 0))
    order = [s for s in STATUS_ORDER if s in statuses] + sorted(statuses - set(STATUS_ORDER))
    start = since.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    hours: list[dt.datetime] = []
    t = start
    while t < until and len(hours) < 24 * 31:
        hours.append(t)
        t += dt.timedelta(hours=1)
    top = max((sum(counts.get(h, {}).values()) for h in hours), default=0)
    top = max(top, 1)
    bar_w = width / max(len(hours), 1)
    bars = []
    for i, h in enumerate(hours):
        per = counts.get(h, {})
        y = float(height)
        segs = []
        for status in order:
            n = per.get(status, 0)
            if not n:
                continue
            seg_h = n / top * height
            y -= seg_h
            segs.append({"status": status, "css": status_class(status), "count": n,
                         "y": round(y, 1), "h": round(seg_h, 1)})
        bars.append({"x": round(i * bar_w + 1, 1), "w": round(max(bar_w - 2, 1), 1),
                     "hour": h.strftime("%m-%d %H:00"), "label": h.strftime("%H"),
                     "total": sum(per.values()), "segments": segs,
                     "show_label": len(hours) <= 24 or i % max(1, len(hours) // 24) == 0})
    return {"bars": bars, "width": width, "height": height, "top": top,
            "legend": [{"status": s, "css": status_class(s)} for s in order],
            "total": sum(b["total"] for b in bars)}


def latency_bars(rows: Iterable[Mapping[str, Any]], width: int = 480) -> dict[str, Any]:
    """Per engine: its p50 and p90 turn latency as two bars on one scale."""
    items = [dict(r) for r in rows]
    top = max((float(r.get("p90_ms") or 0) for r in items), default=0.0) or 1.0
    for r in items:
        r["p50_w"] = round(float(r.get("p50_ms") or 0) / top * width, 1)
        r["p90_w"] = round(float(r.get("p90_ms") or 0) / top * width, 1)
    return {"rows": items, "width": width}
