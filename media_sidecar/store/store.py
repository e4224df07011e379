"""The call store: finished calls with their turns, tool calls and keypad digits.

A blocking API (callers run it in a worker thread: ``trio.to_thread``, ``anyio.to_thread``,
``asyncio.to_thread``); one connection per store, serialised by a lock. The media workers
write through :class:`~media_sidecar.store.writer.StoreWriter`; the dashboard reads.
"""

from __future__ import annotations

import math
import time
from typing import Any

from . import rows as R
from .db import Cursor, Db, StoreError
from .schema import check_version, migrate, read_version

MAX_LIMIT = 1000
SWEEP_BATCH = 500
"""Calls deleted per transaction by :meth:`CallStore.sweep` (short transactions: the media
workers keep writing while it runs)."""


def _like(text: str) -> str:
    """A case-insensitive LIKE pattern (``ESCAPE '\\'``) for ``text`` anywhere."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _percentile(ordered: list[float], p: float) -> float:
    """The ``p`` quantile (0..1) of sorted values, linear between the nearest ranks."""
    pos = (len(ordered) - 1) * p
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


class CallStore:
    """Finished calls in SQLite or PostgreSQL. Open one with :func:`media_sidecar.store.open_store`.

    Every method raises :class:`~media_sidecar.store.db.StoreError` when the database
    cannot be reached or refuses the statement.
    """

    def __init__(self, db: Db) -> None:
        self._db = db
        self.backend = db.backend
        self.url = db.url

    def schema_version(self) -> int:
        return read_version(self._db)

    # writing

    def save(self, record: dict[str, Any]) -> None:
        """Store one call record (``dataclasses.asdict`` of a
        :class:`~media_sidecar.session.records.CallRecord`), replacing any row of the same
        uuid with its turns, actions and digits (idempotent). One short transaction.

        Raises :class:`ValueError` for a record without a uuid.
        """
        rows = R.call_rows(record, time.time())
        with self._db.transaction() as cur:
            cur.execute("DELETE FROM calls WHERE uuid = ?", (rows["calls"][0][0],))
            cur.executemany(R.insert_sql("calls", R.CALL_COLUMNS), rows["calls"])
            cur.executemany(R.insert_sql("turns", R.TURN_COLUMNS), rows["turns"])
            cur.executemany(R.insert_sql("actions", R.ACTION_COLUMNS), rows["actions"])
            cur.executemany(R.insert_sql("dtmf", R.DTMF_COLUMNS), rows["dtmf"])

    def sweep(self, max_age_days: float, *, now: float | None = None) -> int:
        """Delete calls that started more than ``max_age_days`` ago (their turns, actions and
        digits with them), in batches; returns how many. ``max_age_days <= 0`` keeps all."""
        if max_age_days <= 0:
            return 0
        cutoff = (time.time() if now is None else now) - max_age_days * 86400.0
        deleted = 0
        while True:
            with self._db.transaction() as cur:
                uuids = [r[0] for r in cur.execute(
                    "SELECT uuid FROM calls WHERE started_ts < ? ORDER BY started_ts LIMIT ?",
                    (cutoff, SWEEP_BATCH)).tuples()]
                if not uuids:
                    return deleted
                cur.execute(f"DELETE FROM calls WHERE uuid IN ({', '.join('?' * len(uuids))})",
                            uuids)
                deleted += len(uuids)

    # reading

    def list_calls(self, *, q: str = "", assistant: str = "", status: str = "",
                   caller: str = "", since: str = "", until: str = "", limit: int = 50,
                   offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """A page of calls, newest first, and how many match in all.

        ``q`` finds text (case-insensitive) in the caller's number and name, the dialled
        number, the uuid and the turns' texts; ``assistant`` and ``status`` match exactly;
        ``caller`` is a substring of the number; ``since``/``until`` are ISO stamps on the
        start (``since`` inclusive, ``until`` exclusive; naive stamps are UTC). Raises
        :class:`ValueError` for a stamp that is not ISO 8601.
        """
        where, params = ["1 = 1"], []
        if q:
            pattern = _like(q)
            where.append("(" + " OR ".join(
                f"LOWER(c.{col}) LIKE ? ESCAPE '\\'" for col in
                ("caller", "caller_name", "dnid", "uuid")) +
                " OR EXISTS (SELECT 1 FROM turns t WHERE t.call_uuid = c.uuid AND ("
                "LOWER(t.caller_text) LIKE ? ESCAPE '\\' OR LOWER(t.agent_text) LIKE ? "
                "ESCAPE '\\')))")
            params += [pattern] * 6
        if assistant:
            where.append("c.assistant = ?")
            params.append(assistant)
        if status:
            where.append("c.status = ?")
            params.append(status)
        if caller:
            where.append("c.caller LIKE ? ESCAPE '\\'")
            params.append(_like(caller))
        self._range(where, params, since, until)
        cond = " AND ".join(where)
        limit = max(0, min(int(limit), MAX_LIMIT))
        with self._db.read() as cur:
            total = cur.execute(f"SELECT COUNT(*) FROM calls c WHERE {cond}", params).one()
            calls = cur.execute(
                "SELECT uuid, assistant, engine, caller, caller_name, dnid, started_at, "
                "ended_at, duration, status, reason, transfer_to, turn_count, latency_p50_ms, "
                f"has_recording, worker FROM calls c WHERE {cond} "
                "ORDER BY c.started_ts DESC, c.uuid DESC LIMIT ? OFFSET ?",
                [*params, limit, max(0, int(offset))]).dicts()
        for c in calls:
            c["turns"] = c.pop("turn_count")
            c["has_recording"] = bool(c["has_recording"])
        return calls, int(total[0]) if total else 0

    @staticmethod
    def _range(where: list[str], params: list[Any], since: str, until: str,
               column: str = "c.started_ts") -> None:
        for stamp, op in ((since, ">="), (until, "<")):
            if not stamp:
                continue
            ts = R.parse_stamp(stamp)
            if ts is None:
                raise ValueError(f"expected an ISO 8601 time, got {stamp!r}")
            where.append(f"{column} {op} ?")
            params.append(ts)

    def get_call(self, uuid: str) -> dict[str, Any] | None:
        """One call with everything stored about it (see the interface in the package
        docstring), or None."""
        with self._db.read() as cur:
            found = cur.execute("SELECT * FROM calls WHERE uuid = ?", (uuid,)).dicts()
            if not found:
                return None
            call = R.call_detail(found[0])
            call["turns"] = [R.turn_detail(t) for t in cur.execute(
                "SELECT * FROM turns WHERE call_uuid = ? ORDER BY seq", (uuid,)).dicts()]
            call["actions"] = [R.action_detail(a) for a in cur.execute(
                "SELECT * FROM actions WHERE call_uuid = ? ORDER BY seq", (uuid,)).dicts()]
            call["dtmf"] = [{"t": d["t"], "digit": d["digit"]} for d in cur.execute(
                "SELECT t, digit FROM dtmf WHERE call_uuid = ? ORDER BY seq", (uuid,)).dicts()]
        return call

    def calls_per_hour(self, *, since: str, until: str) -> list[dict[str, Any]]:
        """Calls by UTC hour of their start and final status, hours in order."""
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        self._range(where, params, since, until)
        with self._db.read() as cur:
            got = cur.execute(
                "SELECT c.started_hour AS hour, c.status AS status, COUNT(*) AS count "
                f"FROM calls c WHERE {' AND '.join(where)} "
                "GROUP BY c.started_hour, c.status ORDER BY c.started_hour, c.status",
                params).dicts()
        for g in got:
            g["count"] = int(g["count"])
        return got

    def latency_by_engine(self, *, since: str, until: str) -> list[dict[str, Any]]:
        """First-frame latency of speech turns by the assistant's engine: turns, p50, p90 and
        max in ms, engines by name."""
        where = ["t.turn_trigger = 'speech'", "t.latency_ms IS NOT NULL"]
        params: list[Any] = []
        self._range(where, params, since, until)
        with self._db.read() as cur:
            got = cur.execute(
                "SELECT c.engine, t.latency_ms FROM turns t JOIN calls c ON c.uuid = t.call_uuid "
                f"WHERE {' AND '.join(where)} ORDER BY c.engine, t.latency_ms", params).tuples()
        by: dict[str, list[float]] = {}
        for engine, latency in got:
            by.setdefault(engine, []).append(float(latency))
        return [{"engine": e, "turns": len(v), "p50_ms": _percentile(v, 0.5),
                 "p90_ms": _percentile(v, 0.9), "max_ms": v[-1]} for e, v in by.items()]

    def assistants(self) -> list[str]:
        """The assistants that have calls in the store, by name."""
        with self._db.read() as cur:
            return [r[0] for r in cur.execute(
                "SELECT DISTINCT assistant FROM calls ORDER BY assistant").tuples()]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> CallStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_db_store(url: str, *, create: bool) -> CallStore:
    """See :func:`media_sidecar.store.open_store`."""
    db = Db(url, create=create)
    try:
        if create:
            migrate(db)
        else:
            version = read_version(db)
            check_version(db, version)
            if version == 0:
                raise StoreError(f"{url}: not a call store (no schema)")
    except BaseException:
        db.close()
        raise
    return CallStore(db)


__all__ = ["CallStore", "Cursor", "StoreError", "open_db_store"]
