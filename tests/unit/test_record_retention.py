"""The call-record file: rotation by size, retention by age, and records without transcripts."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat

from media_sidecar.config.schema import RecordsConfig
from media_sidecar.ops.recordfile import RotatingJsonLines
from media_sidecar.session.records import CallRecord, RecordWriter, ToolAction, TurnRecord

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def stamp(days_ago: float) -> str:
    return (NOW - dt.timedelta(days=days_ago)).isoformat(timespec="milliseconds")


def line(n: int, days_ago: float = 0.0, pad: int = 0) -> str:
    return json.dumps({"uuid": str(n), "ended_at": stamp(days_ago), "pad": "x" * pad})


def uuids(path) -> list[str]:
    return [json.loads(x)["uuid"] for x in path.read_text().splitlines()]


def test_rotation_by_size_keeps_the_newest_backups(tmp_path):
    path = tmp_path / "calls.jsonl"
    f = RotatingJsonLines(path, max_bytes=250, backups=2)
    for n in range(10):
        f.append(line(n, pad=40))  # about 100 bytes a line: two lines a file
    assert [p.name for p in f.files()] == ["calls.jsonl.2", "calls.jsonl.1", "calls.jsonl"]
    assert uuids(path) == ["8", "9"]
    assert uuids(tmp_path / "calls.jsonl.1") == ["6", "7"]
    assert uuids(tmp_path / "calls.jsonl.2") == ["4", "5"]
    assert all(p.stat().st_size <= 250 for p in f.files())
    assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0  # not world-readable


def test_a_record_larger_than_max_bytes_still_gets_written(tmp_path):
    path = tmp_path / "calls.jsonl"
    f = RotatingJsonLines(path, max_bytes=50, backups=1)
    f.append(line(1, pad=100))
    f.append(line(2, pad=100))
    assert uuids(path) == ["2"] and uuids(tmp_path / "calls.jsonl.1") == ["1"]


def test_fewer_backups_than_before_and_no_backups(tmp_path):
    path = tmp_path / "calls.jsonl"
    for n in (1, 2, 3, 4):
        (tmp_path / f"calls.jsonl.{n}").write_text(line(n) + "\n")
    f = RotatingJsonLines(path, max_bytes=100, backups=2)
    f.append(line(10, pad=60))
    f.append(line(11, pad=60))
    assert [p.name for p in f.files()] == ["calls.jsonl.2", "calls.jsonl.1", "calls.jsonl"]
    assert uuids(tmp_path / "calls.jsonl.2") == ["1"]
    none = RotatingJsonLines(tmp_path / "solo.jsonl", max_bytes=100, backups=0)
    none.append(line(20, pad=60))
    none.append(line(21, pad=60))
    assert [p.name for p in none.files()] == ["solo.jsonl"]
    assert uuids(tmp_path / "solo.jsonl") == ["21"]


def test_retention_deletes_old_files_and_the_expired_head(tmp_path):
    path = tmp_path / "calls.jsonl"
    old = tmp_path / "calls.jsonl.2"
    old.write_text(line(1, 40) + "\n" + line(2, 35) + "\n")
    mixed = tmp_path / "calls.jsonl.1"
    mixed.write_text(line(3, 31) + "\n" + line(4, 29) + "\n" + "not json\n" + line(5, 31) + "\n")
    path.write_text(line(6, 1) + "\n")
    day = 86400
    os.utime(old, (NOW.timestamp() - 35 * day,) * 2)
    os.utime(mixed, (NOW.timestamp() - 1 * day,) * 2)
    f = RotatingJsonLines(path, max_age_days=30, clock=NOW.timestamp)
    result = f.sweep()
    assert (result.files_deleted, result.records_pruned) == (1, 1)
    assert not old.exists()
    # records are in the order calls ended: pruning stops at the first one to keep
    assert mixed.read_text().splitlines()[0] == line(4, 29)
    assert len(mixed.read_text().splitlines()) == 3
    assert uuids(path) == ["6"]
    assert f.sweep().records_pruned == 0  # nothing more to do
    assert RotatingJsonLines(path, max_age_days=0).sweep().files_deleted == 0


def test_retention_can_empty_the_live_file(tmp_path):
    path = tmp_path / "calls.jsonl"
    path.write_text(line(1, 10) + "\n" + line(2, 9) + "\n")
    RotatingJsonLines(path, max_age_days=7, clock=NOW.timestamp).sweep()
    assert path.read_text() == ""


def sample_record() -> CallRecord:
    rec = CallRecord(uuid="0b7e", assistant="receptionist", caller="5551234", status="TRANSFERRED",
                     transfer_to="billing", duration=9.5, dtmf=["1", "2"], barge_ins=1)
    rec.turns = [TurnRecord(index=0, trigger="start", agent_text="Hello", heard_text="Hello",
                            first_frame_sent=0.4),
                 TurnRecord(index=1, trigger="speech", caller_text="my card 4111", intent="billing",
                            agent_text="Transferring you", latency_ms=620.0)]
    rec.actions = [ToolAction(t=8.0, kind="tool", tool="lookup", arguments={"card": "4111"},
                              result="balance 10"),
                   ToolAction(t=9.0, kind="transfer", destination="billing")]
    return rec


def test_transcripts_off_keeps_outcomes_and_timings_only(tmp_path):
    path = tmp_path / "calls.jsonl"
    writer = RecordWriter(str(path), RecordsConfig(transcripts=False))
    writer.write(sample_record())
    text = path.read_text()
    for said in ("Hello", "4111", "Transferring", "balance"):
        assert said not in text
    rec = json.loads(text)
    assert rec["transcripts"] is False and rec["dtmf"] == []
    assert (rec["status"], rec["transfer_to"], rec["duration"], rec["barge_ins"]) == \
        ("TRANSFERRED", "billing", 9.5, 1)
    assert rec["turns"][1]["intent"] == "billing" and rec["turns"][1]["latency_ms"] == 620.0
    assert rec["turns"][1]["caller_text"] == ""
    assert [a["kind"] for a in rec["actions"]] == ["tool", "transfer"]
    assert rec["actions"][1]["destination"] == "billing"


def test_transcripts_on_by_default_and_observers_see_every_record(tmp_path):
    path = tmp_path / "calls.jsonl"
    writer = RecordWriter(str(path))
    seen: list[str] = []
    writer.observers.append(lambda r: seen.append(r.uuid))
    writer.observers.append(lambda r: 1 / 0)  # a failing observer never loses the record
    writer.write(sample_record())
    rec = json.loads(path.read_text())
    assert rec["turns"][1]["caller_text"] == "my card 4111" and "transcripts" not in rec
    assert seen == ["0b7e"]


def test_writer_rotates_by_its_policy(tmp_path):
    path = tmp_path / "calls.jsonl"
    writer = RecordWriter(str(path), RecordsConfig(max_bytes=4096, backups=3))
    size = len(writer.encode(sample_record())) + 1
    for _ in range(2 * (4096 // size) + 1):
        writer.write(sample_record())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calls.jsonl", "calls.jsonl.1",
                                                          "calls.jsonl.2"]
    writer.sweep()  # no age limit hit: nothing removed
    assert len(list(tmp_path.iterdir())) == 3
