"""The media worker's store writer, its configuration and the data directory.

The writer is a thread fed by a bounded queue: these tests drive it with real SQLite stores
and wait for it with its own ``close`` (which drains the queue), never with sleeps.
"""

from __future__ import annotations

import logging
import stat
import threading
import time
from pathlib import Path

import pytest

from media_sidecar.config.loader import ConfigError, default_yaml_text, load_config, parse_config
from media_sidecar.ops.metrics import SidecarMetrics
from media_sidecar.session.records import CallRecord, ToolAction, TurnRecord
from media_sidecar.store import CallStore, StoreError, data_dir, mask_url, open_store
from media_sidecar.store.writer import StoreWriter


def rec(uuid: str) -> CallRecord:
    r = CallRecord(uuid=uuid, assistant="front-desk", engine="pipeline", caller="100",
                   status="COMPLETED", dtmf=["4"])
    r.add_turn(TurnRecord(index=0, trigger="speech", caller_text="my secret address",
                          agent_text="noted", heard_text="my secret", latency_ms=300.0,
                          match={"term": "x", "heard": "my secret"}))
    r.actions.append(ToolAction(t=1.0, kind="tool", tool="crm", arguments={"ssn": "123"},
                                result="found"))
    return r


def test_records_are_saved_and_close_drains_the_queue(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    w = StoreWriter(url, queue_size=100)
    w.start()
    for i in range(20):
        w.submit(rec(f"call-{i}"))
    assert w.close(timeout=30.0)
    assert (w.saved, w.errors) == (20, 0)
    with open_store(url) as s:
        assert s.list_calls(limit=100)[1] == 20
        got = s.get_call("call-7")
        assert got is not None and got["turns"][0]["caller_text"] == "my secret address"


def test_without_transcripts_no_words_reach_the_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    w = StoreWriter(url, transcripts=False)
    w.start()
    w.submit(rec("quiet"))
    assert w.close(timeout=30.0)
    with open_store(url) as s:
        got = s.get_call("quiet")
        assert got is not None
        turn = got["turns"][0]
        assert (turn["caller_text"], turn["agent_text"], turn["heard_text"]) == ("", "", "")
        assert turn["match"]["heard"] == "" and turn["latency_ms"] == 300.0
        assert got["actions"][0]["arguments"] == {} and got["actions"][0]["result"] == ""
        assert got["dtmf"] == [] and got["transcripts"] is False
        assert s.list_calls(q="secret")[1] == 0
        with s._db.read() as cur:  # not even in the export column
            (body,) = cur.execute("SELECT record_json FROM calls").one() or ("",)
            assert "secret" not in body and "123" not in body


class FlakyStore:
    """Opens a real store, except while ``broken`` (then opening fails as a full disk would)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.broken = True
        self.opened = 0

    def open(self, url: str) -> CallStore:
        self.opened += 1
        if self.broken:
            raise StoreError("cannot open call store: disk full")
        return open_store(self.url)


def test_failures_are_counted_logged_once_and_recover(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    flaky = FlakyStore(url)
    metrics = SidecarMetrics(process=False)
    w = StoreWriter(url, on_error=metrics.count_store_error, opener=flaky.open)
    caplog.set_level(logging.INFO, "agi_voice.store")
    w.start()
    for i in range(3):
        w.submit(rec(f"lost-{i}"))
    assert w.close(timeout=30.0)
    assert (w.saved, w.errors, flaky.opened) == (0, 3, 3)  # each record retries the open
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "disk full" in errors[0].getMessage()
    assert metrics.registry.get_sample_value("agi_voice_store_write_errors_total") == 3
    flaky.broken = False
    w.start()
    w.submit(rec("kept"))
    assert w.close(timeout=30.0)
    assert (w.saved, w.errors) == (1, 3)
    assert any("writes again" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)
    with open_store(url) as s:
        assert [c["uuid"] for c in s.list_calls()[0]] == ["kept"]


def test_a_passing_fault_is_retried_and_loses_no_record(tmp_path: Path) -> None:
    # seen in CI: four workers starting on one new SQLite file, one open failed "database is
    # locked" and its first record was lost; a fault that passes costs nothing now
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    flaky = FlakyStore(url)

    def open_once_locked(u: str) -> CallStore:
        try:
            return flaky.open(u)
        finally:
            flaky.broken = False  # only the first open fails

    w = StoreWriter(url, opener=open_once_locked)
    w.start()
    w.submit(rec("first"))
    deadline = time.monotonic() + 10
    while w.saved + w.errors == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.close(timeout=30.0)
    assert (w.saved, w.errors, flaky.opened) == (1, 0, 2)
    with open_store(url) as s:
        assert [c["uuid"] for c in s.list_calls()[0]] == ["first"]


def test_a_full_queue_never_blocks_the_submitter(tmp_path: Path) -> None:
    release = threading.Event()
    url = f"sqlite:///{tmp_path / 'calls.db'}"

    def slow_open(u: str) -> CallStore:
        release.wait(30)
        return open_store(url)

    errors: list[BaseException] = []
    w = StoreWriter(url, queue_size=2, on_error=errors.append, opener=slow_open)
    w.start()
    for i in range(6):  # the thread holds one, the queue two: the other three are refused
        w.submit(rec(f"r{i}"))
    # the thread may not have taken the first yet: 3 or 4 refused, never a wait
    assert w.errors in (3, 4) and len(errors) == w.errors
    assert "queue is full" in str(errors[0])
    release.set()
    assert w.close(timeout=30.0)
    assert w.saved == 6 - w.errors


def test_sweep_runs_in_the_writer_thread(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    old = rec("ancient")
    old.started_at = "2001-01-01T00:00:00.000+00:00"
    w = StoreWriter(url, max_age_days=30)
    w.start()
    w.submit(old)
    w.submit(rec("today"))
    w.request_sweep()
    assert w.close(timeout=30.0)
    assert w.swept == 1
    with open_store(url) as s:
        assert [c["uuid"] for c in s.list_calls()[0]] == ["today"]


def test_store_config_defaults_env_and_validation() -> None:
    cfg = load_config(env={})
    assert (cfg.store.enabled, cfg.store.url, cfg.store.max_age_days, cfg.store.queue) == \
        (True, "", 90.0, 2000)
    pg = "postgresql://agi@db.example/calls"
    assert load_config(env={"AGI_VOICE_STORE": pg}).store.url == pg
    text = default_yaml_text()
    for old, new, key in (('url: "${AGI_VOICE_STORE:-}"', "url: mysql://x", "store.url"),
                          ("max_age_days: 90\n  queue", "max_age_days: -1\n  queue",
                           "store.max_age_days"),
                          ("queue: 2000", "queue: 0", "store.queue")):
        assert text.count(old) == 1
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            parse_config(text.replace(old, new), "t.yaml", env={})


def test_the_url_is_logged_with_its_password_masked() -> None:
    assert mask_url("postgresql://agi:s3cr3t@db:5432/calls") == "postgresql://agi:***@db:5432/calls"
    assert mask_url("postgresql://agi@db/calls") == "postgresql://agi@db/calls"
    assert mask_url("sqlite:////var/lib/x.db") == "sqlite:////var/lib/x.db"


def test_data_dir_order_and_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGI_VOICE_DATA_DIR", str(tmp_path / "own"))
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path / 'sd1'}:{tmp_path / 'sd2'}")
    assert data_dir() == tmp_path / "own"
    assert stat.S_IMODE((tmp_path / "own").stat().st_mode) == 0o750
    monkeypatch.delenv("AGI_VOICE_DATA_DIR")
    assert data_dir() == tmp_path / "sd1"
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".local" / "state" / "agi-voice"
