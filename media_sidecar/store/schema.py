"""The call store's schema as numbered migrations, and applying them.

``MIGRATIONS[i]`` takes a database from version ``i`` to ``i + 1``. Each step runs in its own
transaction with the version bump, so a step is applied whole or not at all; the version is
kept in the database (a one-row ``schema_version`` table, the same on both backends). Several
processes may open the store at once: the step runs under the database's write lock (SQLite
``BEGIN IMMEDIATE``, a PostgreSQL advisory lock), and each re-reads the version inside it.

A database at a version above ``len(MIGRATIONS)`` was written by a newer agi-voice and is
refused rather than guessed at. The SQL is portable (TEXT, INTEGER, BIGINT, DOUBLE PRECISION;
booleans as 0/1 integers; JSON as TEXT); a new column is a new step, never an edit of an old one.
"""

from __future__ import annotations

from .db import Cursor, Db, StoreError, mask_url

MIGRATION_LOCK = 7_017_001
"""PostgreSQL advisory lock key held while a migration step runs."""

_CALLS = """
CREATE TABLE calls (
    uuid TEXT PRIMARY KEY,
    assistant TEXT NOT NULL DEFAULT '',
    engine TEXT NOT NULL DEFAULT '',
    caller TEXT NOT NULL DEFAULT '',
    caller_name TEXT NOT NULL DEFAULT '',
    dnid TEXT NOT NULL DEFAULT '',
    channel TEXT NOT NULL DEFAULT '',
    uniqueid TEXT NOT NULL DEFAULT '',
    started_at TEXT NOT NULL,
    started_ts DOUBLE PRECISION NOT NULL,
    started_hour TEXT NOT NULL,
    ended_at TEXT NOT NULL DEFAULT '',
    duration DOUBLE PRECISION NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    transfer_to TEXT NOT NULL DEFAULT '',
    end_cause TEXT NOT NULL DEFAULT '',
    worker TEXT NOT NULL DEFAULT '',
    barge_ins INTEGER NOT NULL DEFAULT 0,
    turn_count INTEGER NOT NULL DEFAULT 0,
    latency_p50_ms DOUBLE PRECISION,
    has_recording INTEGER NOT NULL DEFAULT 0,
    transcripts INTEGER NOT NULL DEFAULT 1,
    outcome_confirmed INTEGER NOT NULL DEFAULT 0,
    provider_json TEXT NOT NULL DEFAULT '{}',
    usage_json TEXT NOT NULL DEFAULT '{}',
    recording_json TEXT NOT NULL DEFAULT '{}',
    playout_json TEXT NOT NULL DEFAULT '{}',
    extra_json TEXT NOT NULL DEFAULT '{}',
    record_json TEXT NOT NULL,
    saved_at DOUBLE PRECISION NOT NULL
)"""

_TURNS = """
CREATE TABLE turns (
    call_uuid TEXT NOT NULL REFERENCES calls (uuid) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    turn_index INTEGER NOT NULL,
    turn_trigger TEXT NOT NULL DEFAULT '',
    caller_text TEXT NOT NULL DEFAULT '',
    rescored_text TEXT NOT NULL DEFAULT '',
    agent_text TEXT NOT NULL DEFAULT '',
    heard_text TEXT NOT NULL DEFAULT '',
    intent TEXT NOT NULL DEFAULT '',
    match_json TEXT NOT NULL DEFAULT '{}',
    filler_at DOUBLE PRECISION,
    interrupted INTEGER NOT NULL DEFAULT 0,
    speech_end DOUBLE PRECISION,
    stt_done DOUBLE PRECISION,
    llm_first_token DOUBLE PRECISION,
    first_sentence DOUBLE PRECISION,
    llm_done DOUBLE PRECISION,
    first_audio_ready DOUBLE PRECISION,
    first_frame_sent DOUBLE PRECISION,
    latency_ms DOUBLE PRECISION,
    stage_ms_json TEXT NOT NULL DEFAULT '{}',
    provider_latency_ms_json TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (call_uuid, seq)
)"""

_ACTIONS = """
CREATE TABLE actions (
    call_uuid TEXT NOT NULL REFERENCES calls (uuid) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    t DOUBLE PRECISION,
    kind TEXT NOT NULL DEFAULT '',
    destination TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    result TEXT NOT NULL DEFAULT '',
    tool TEXT NOT NULL DEFAULT '',
    arguments_json TEXT NOT NULL DEFAULT '{}',
    duration_ms DOUBLE PRECISION,
    PRIMARY KEY (call_uuid, seq)
)"""

_DTMF = """
CREATE TABLE dtmf (
    call_uuid TEXT NOT NULL REFERENCES calls (uuid) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    t DOUBLE PRECISION,
    digit TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (call_uuid, seq)
)"""

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: calls, turns, actions (tool calls with arguments and results), DTMF; indexes for the
    # history's newest-first list, its filters, the per-hour chart and latency by engine
    (_CALLS, _TURNS, _ACTIONS, _DTMF,
     "CREATE INDEX calls_started ON calls (started_ts)",
     "CREATE INDEX calls_assistant ON calls (assistant, started_ts)",
     "CREATE INDEX calls_status ON calls (status, started_ts)",
     "CREATE INDEX calls_engine ON calls (engine, started_ts)",
     "CREATE INDEX calls_caller ON calls (caller)"),
)

SCHEMA_VERSION = len(MIGRATIONS)


def _lock(db: Db, cur: Cursor) -> None:
    if db.backend == "postgresql":
        cur.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
    cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")


def _version(cur: Cursor) -> int | None:
    row = cur.execute("SELECT MAX(version) FROM schema_version").one()
    return None if row is None or row[0] is None else int(row[0])


def read_version(db: Db) -> int:
    """The database's schema version (0: empty, never migrated)."""
    with db.read() as cur:
        if db.backend == "sqlite":
            found = cur.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                "AND name = 'schema_version'").one()
        else:
            found = cur.execute("SELECT to_regclass('schema_version')::text").one()
            found = found if found and found[0] else None
        if found is None:
            return 0
        return _version(cur) or 0


def check_version(db: Db, version: int) -> None:
    """Raise :class:`StoreError` for a database from a newer agi-voice."""
    if version > SCHEMA_VERSION:
        raise StoreError(f"call store {mask_url(db.url)} has schema version {version}, newer "
                         f"than this agi-voice knows ({SCHEMA_VERSION}): upgrade agi-voice, or "
                         "point store.url at another database")


def migrate(db: Db) -> int:
    """Apply the missing steps, each in one transaction; returns the version reached.

    Raises :class:`StoreError` for a newer database or a step that fails (the database stays
    at the last step that completed).
    """
    while True:
        with db.transaction() as cur:
            _lock(db, cur)
            version = _version(cur)
            if version is None:
                cur.execute("INSERT INTO schema_version (version) VALUES (0)")
                version = 0
            check_version(db, version)
            if version == SCHEMA_VERSION:
                return version
            for statement in MIGRATIONS[version]:
                cur.execute(statement)
            cur.execute("UPDATE schema_version SET version = ?", (version + 1,))
