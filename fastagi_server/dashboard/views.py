"""What the pages show, built from store rows (pure: no I/O, no framework).

The call detail's conversation (:func:`conversation`), the history's filters from a query
string (:class:`Filters`), and the pager.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from media_sidecar.store.rows import keypresses

PAGE_SIZE = 50


def _date(value: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        return None


@dataclass(frozen=True)
class Filters:
    """The history's search and filters, as the query string gives them (bad values are
    ignored, never an error)."""

    q: str = ""
    assistant: str = ""
    status: str = ""
    since: str = ""
    """A date (YYYY-MM-DD, UTC): calls that started on or after it."""
    until: str = ""
    """A date: calls that started on or before it (the whole day)."""
    page: int = 1

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Filters:
        def get(key: str, limit: int = 200) -> str:
            return str(query.get(key, "")).strip()[:limit]

        try:
            page = max(1, min(int(get("page", 8) or 1), 100000))
        except ValueError:
            page = 1
        since = get("since", 10)
        until = get("until", 10)
        return cls(q=get("q"), assistant=get("assistant"), status=get("status", 40),
                   since=since if _date(since) else "", until=until if _date(until) else "",
                   page=page)

    def store_args(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`CallStore.list_calls` for this page."""
        since = _date(self.since)
        until = _date(self.until)
        return {
            "q": self.q, "assistant": self.assistant, "status": self.status,
            "since": f"{since.isoformat()}T00:00:00+00:00" if since else "",
            "until": (f"{(until + dt.timedelta(days=1)).isoformat()}T00:00:00+00:00"
                      if until else ""),
            "limit": PAGE_SIZE, "offset": (self.page - 1) * PAGE_SIZE,
        }

    def query(self, **change: Any) -> str:
        """The query string of these filters with ``change`` applied (empty values left
        out)."""
        values = {"q": self.q, "assistant": self.assistant, "status": self.status,
                  "since": self.since, "until": self.until, "page": self.page, **change}
        if values.get("page") == 1:
            values.pop("page")
        return urlencode({k: v for k, v in values.items() if v not in ("", None)})

    @property
    def active(self) -> bool:
        return any((self.q, self.assistant, self.status, self.since, self.until))


def pager(filters: Filters, total: int) -> dict[str, Any]:
    pages = max(1, math.ceil(total / PAGE_SIZE))
    page = min(filters.page, pages)
    return {"page": page, "pages": pages, "total": total,
            "first": (page - 1) * PAGE_SIZE + 1 if total else 0,
            "last": min(page * PAGE_SIZE, total),
            "prev": filters.query(page=page - 1) if page > 1 else None,
            "next": filters.query(page=page + 1) if page < pages else None}


def conversation(call: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The call as a conversation in time order: the caller's and the agent's words of each
    turn (bubbles), and the tool calls, transfers and keypresses between them (notes).

    Times are call-relative seconds: the caller's words at their end of speech (the STT final
    for a turn without one), the agent's at its first frame sent."""
    items: list[dict[str, Any]] = []
    for turn in call.get("turns") or []:
        t_caller = turn.get("speech_end")
        if t_caller is None:
            t_caller = turn.get("stt_done")
        if turn.get("caller_text"):
            items.append({"kind": "caller", "t": t_caller, "text": turn["caller_text"],
                          "rescored": turn.get("rescored_text", ""),
                          "intent": turn.get("intent", ""), "trigger": turn.get("trigger", ""),
                          "index": turn.get("index")})
        if turn.get("agent_text"):
            t_agent = turn.get("first_frame_sent")
            if t_agent is None:
                t_agent = t_caller
            items.append({"kind": "agent", "t": t_agent, "text": turn["agent_text"],
                          "interrupted": bool(turn.get("interrupted")),
                          "heard": turn.get("heard_text", ""),
                          "latency_ms": turn.get("latency_ms"), "index": turn.get("index")})
    for action in call.get("actions") or []:
        items.append({"kind": "action", "t": action.get("t"), "action": action})
    for key in digits(call):
        if key["t"] is not None:
            items.append({"kind": "dtmf", "t": key["t"], "digit": key["digit"]})
    order = {"caller": 0, "dtmf": 1, "action": 2, "agent": 3}
    items.sort(key=lambda i: (i["t"] is None, i["t"] or 0.0, order[i["kind"]]))
    return items


def digits(call: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The call's keypresses as ``{"t", "digit"}`` (:func:`media_sidecar.store.rows.keypresses`:
    the store's rows, or a record's digits with their times from ``dtmf_at``)."""
    return [{"t": t, "digit": digit} for t, digit in keypresses(call)]
