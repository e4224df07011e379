"""The call store's API over both backends: SQLite and a real PostgreSQL server.

Every test here runs twice (``backend`` is parametrised); the PostgreSQL run uses a private
cluster (tests/unit/store_backends.py) and is skipped only when PostgreSQL is not installed.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from media_sidecar.session.records import CallRecord, ToolAction, TurnRecord
from media_sidecar.store import SCHEMA_VERSION, CallStore, StoreError, open_store
from media_sidecar.store import schema as store_schema
from tests.unit.store_backends import store_url

T0 = dt.datetime(2026, 12, 5, 17, 10, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(request, request.param, tmp_path)


@pytest.fixture
def store(url: str) -> Iterator[CallStore]:
    s = open_store(url)
    yield s
    s.close()


def record(uuid: str, *, minutes: float = 0.0, assistant: str = "front-desk",
           engine: str = "pipeline", caller: str = "5551234", status: str = "COMPLETED",
           latencies: tuple[float, ...] = (400.0,), says: str = "I need billing") -> dict[str, Any]:
    """A full call record as the media worker writes it, started ``minutes`` after T0."""
    started = T0 + dt.timedelta(minutes=minutes)
    rec = CallRecord(uuid=uuid, assistant=assistant, engine=engine, caller=caller,
                     caller_name="Ada Lovelace", dnid="7000", channel="PJSIP/100-0001",
                     started_at=started.isoformat(timespec="milliseconds"),
                     ended_at=(started + dt.timedelta(seconds=12.5)).isoformat(), duration=12.5,
                     status=status, reason="caller said goodbye", transfer_to="", worker="1",
                     dtmf=["1", "#"], dtmf_at=[4.5, 5.25], barge_ins=1, barge_in_at=[3.25],
                     playout={"late_frames": 0, "frames": 600},
                     provider={"name": "deepgram", "usage": {"input_tokens": 12}},
                     media_verdict={"status": status, "reason": "x"}, outcome_confirmed=True)
    rec.add_turn(TurnRecord(index=0, trigger="start", agent_text="Hello, how can I help?",
                            first_frame_sent=0.12, stage_ms={"first_frame": 120.0}))
    for i, lat in enumerate(latencies, 1):
        rec.add_turn(TurnRecord(
            index=i, trigger="speech", caller_text=f"{says} {i}", agent_text="Transferring.",
            intent="billing", match={"term": "billing", "score": 1.0}, interrupted=i == 2,
            speech_end=2.0 * i, stt_done=2.0 * i + 0.1, first_frame_sent=2.0 * i + lat / 1000,
            latency_ms=lat, stage_ms={"stt": 100.0, "first_frame": lat},
            provider_latency_ms={"total_latency": lat - 10}))
    rec.actions.append(ToolAction(t=5.5, kind="tool", tool="lookup", arguments={"id": "42"},
                                  result='{"ok": true}', duration_ms=35.0))
    rec.actions.append(ToolAction(t=6.0, kind="transfer", destination="billing", reason="asked"))
    return asdict(rec)


def test_opening_migrates_to_the_current_schema_once(url: str) -> None:
    with open_store(url) as s:
        assert s.schema_version() == SCHEMA_VERSION >= 1
        s.save(record("a"))
    with open_store(url) as s:  # a second open applies nothing and keeps the data
        assert s.schema_version() == SCHEMA_VERSION
        assert s.list_calls()[1] == 1


def test_a_database_from_a_newer_version_is_refused(store: CallStore, url: str) -> None:
    with store._db.transaction() as cur:
        cur.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        open_store(url)
    with pytest.raises(StoreError, match="newer"):
        open_store(url, create=False)


def test_a_failing_migration_step_leaves_the_previous_version(
        url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = (*store_schema.MIGRATIONS, ("CREATE TABLE extra (x INTEGER)", "NOT SQL AT ALL"))
    monkeypatch.setattr(store_schema, "MIGRATIONS", bad)
    monkeypatch.setattr(store_schema, "SCHEMA_VERSION", len(bad))
    with pytest.raises(StoreError):
        open_store(url)
    monkeypatch.undo()
    with open_store(url) as s:  # the failed step left nothing: not its table, not its number
        assert s.schema_version() == SCHEMA_VERSION
        with s._db.transaction() as cur:
            cur.execute("CREATE TABLE extra (x INTEGER)")


def test_a_call_round_trips_with_turns_actions_and_digits(store: CallStore) -> None:
    sent = record("call-1", latencies=(400.0, 600.0, 500.0))
    store.save(sent)
    got = store.get_call("call-1")
    assert got is not None
    for key in ("uuid", "assistant", "engine", "caller", "caller_name", "dnid", "channel",
                "started_at", "ended_at", "duration", "status", "reason", "worker", "barge_ins",
                "playout", "provider", "outcome_confirmed", "media_verdict", "barge_in_at"):
        assert got[key] == sent[key], key
    assert got["turns"] == sent["turns"]  # every field, in order, stage_ms and provider figures
    assert got["actions"] == sent["actions"]
    assert got["dtmf"] == [{"t": 4.5, "digit": "1"}, {"t": 5.25, "digit": "#"}]
    assert got["usage"] == {"input_tokens": 12}
    assert got["recording"] == {} and got["has_recording"] is False
    assert got["latency_p50_ms"] == 500.0 and got["turn_count"] == 4
    assert store.get_call("nope") is None


def test_saving_again_replaces_the_call_and_its_rows(store: CallStore) -> None:
    store.save(record("c", latencies=(400.0, 500.0)))
    again = record("c", latencies=(300.0,), status="TRANSFERRED")
    again["recording"] = {"path": "/x/c.wav", "seconds": 12.5, "rate": 8000, "channels": 2}
    store.save(again)
    got = store.get_call("c")
    assert got is not None
    assert got["status"] == "TRANSFERRED" and len(got["turns"]) == 2
    assert got["recording"]["rate"] == 8000 and got["has_recording"] is True
    assert len(got["actions"]) == 2 and len(got["dtmf"]) == 2
    calls, total = store.list_calls()
    assert total == 1 and calls[0]["has_recording"] is True and calls[0]["turns"] == 2


def test_list_is_newest_first_with_search_filters_and_pages(store: CallStore) -> None:
    store.save(record("u-old", minutes=0, caller="100", says="Where is my INVOICE"))
    store.save(record("u-mid", minutes=30, caller="200", assistant="sales", status="TRANSFERRED"))
    store.save(record("u-new", minutes=90, caller="5550100", says="50% off?"))
    calls, total = store.list_calls()
    assert [c["uuid"] for c in calls] == ["u-new", "u-mid", "u-old"] and total == 3
    assert set(calls[0]) == {"uuid", "assistant", "engine", "caller", "caller_name", "dnid",
                             "started_at", "ended_at", "duration", "status", "reason",
                             "transfer_to", "turns", "latency_p50_ms", "has_recording", "worker"}

    def uuids(**kw: Any) -> list[str]:
        return [c["uuid"] for c in store.list_calls(**kw)[0]]

    assert uuids(q="invoice") == ["u-old"]  # a turn's text, any case
    assert uuids(q="50%") == ["u-new"]  # LIKE wildcards in the query are literal
    assert uuids(q="_") == []
    assert uuids(q="u-mi") == ["u-mid"] and uuids(q="lovelace") == ["u-new", "u-mid", "u-old"]
    assert uuids(assistant="sales") == ["u-mid"] and uuids(status="COMPLETED") == ["u-new", "u-old"]
    assert uuids(caller="555") == ["u-new"]
    assert uuids(since="2026-12-05T17:40:00+00:00") == ["u-new", "u-mid"]
    assert uuids(since="2026-12-05T17:40:00Z", until="2026-12-05T18:00:00") == ["u-mid"]
    page, total = store.list_calls(limit=1, offset=1)
    assert [c["uuid"] for c in page] == ["u-mid"] and total == 3
    with pytest.raises(ValueError, match="ISO 8601"):
        store.list_calls(since="yesterday")


def test_charts_count_calls_per_hour_and_latency_by_engine(store: CallStore) -> None:
    store.save(record("a", minutes=0, latencies=(100.0, 200.0, 300.0)))
    store.save(record("b", minutes=20, status="TRANSFERRED", latencies=(400.0,)))
    store.save(record("c", minutes=60, engine="openai_realtime", latencies=(900.0, 700.0)))
    store.save(record("d", minutes=600))  # outside the window
    window = {"since": "2026-12-05T17:00:00Z", "until": "2026-12-05T19:00:00Z"}
    assert store.calls_per_hour(**window) == [
        {"hour": "2026-12-05T17:00:00+00:00", "status": "COMPLETED", "count": 1},
        {"hour": "2026-12-05T17:00:00+00:00", "status": "TRANSFERRED", "count": 1},
        {"hour": "2026-12-05T18:00:00+00:00", "status": "COMPLETED", "count": 1}]
    # speech turns only (the greeting is not a response time)
    assert store.latency_by_engine(**window) == [
        {"engine": "openai_realtime", "turns": 2, "p50_ms": 800.0, "p90_ms": 880.0,
         "max_ms": 900.0},
        {"engine": "pipeline", "turns": 4, "p50_ms": 250.0, "p90_ms": 370.0, "max_ms": 400.0}]
    assert store.assistants() == ["front-desk"]


def test_sweep_deletes_old_calls_with_their_rows(store: CallStore) -> None:
    store.save(record("old", minutes=0))
    store.save(record("new", minutes=60 * 24 * 10))
    now = (T0 + dt.timedelta(days=12)).timestamp()
    assert store.sweep(0, now=now) == 0  # 0: kept for ever
    assert store.sweep(5, now=now) == 1
    assert [c["uuid"] for c in store.list_calls()[0]] == ["new"]
    with store._db.read() as cur:  # ON DELETE CASCADE took the turns, actions and digits
        for table in ("turns", "actions", "dtmf"):
            rows = cur.execute(f"SELECT DISTINCT call_uuid FROM {table}").tuples()
            assert rows == [("new",)], table
    assert store.sweep(5, now=now) == 0


def test_opening_without_create_needs_an_existing_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no call store"):
        open_store(f"sqlite:///{tmp_path / 'missing.db'}", create=False)
    assert not (tmp_path / "missing.db").exists()


def test_sqlite_file_is_private_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "calls.db"
    old = os.umask(0o022)
    try:
        with open_store(f"sqlite:///{path}") as s:
            s.save(record("x"))
            with s._db.read() as cur:
                assert cur.execute("PRAGMA journal_mode").one() == ("wal",)
                assert cur.execute("PRAGMA foreign_keys").one() == (1,)
                assert cur.execute("PRAGMA busy_timeout").one() == (5000,)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_default_store_lives_in_the_data_dir(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setenv("AGI_VOICE_DATA_DIR", str(tmp_path / "state"))
    with open_store() as s:
        assert s.backend == "sqlite" and s.url == f"sqlite:///{tmp_path / 'state' / 'calls.db'}"
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o750
