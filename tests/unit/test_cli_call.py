"""``agi-voice call``: its help, how it reads call records, and how it words a record."""

from __future__ import annotations

import argparse
import json

import pytest

from fastagi_server.cli import build_parser
from fastagi_server.emulator.cli_call import build_script, conversation_lines, read_new_records


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[name]


def test_the_program_describes_itself():
    text = build_parser().format_help()
    assert "The ``agi-voice`` command." not in text
    assert "AI voice agent for Asterisk and FreePBX" in " ".join(text.split())


def test_every_call_option_has_help():
    call = _subparser("call")
    missing = [a.option_strings for a in call._actions if a.option_strings and not a.help]
    assert not missing
    assert "--assistant" in call.format_help() and "--transcribe" in call.format_help()


def test_assistant_becomes_the_channel_variable():
    from fastagi_server.emulator.cli_call import channel_spec

    args = build_parser().parse_args(["call", "--assistant", "sales", "--dtmf", "1"])
    assert dict(channel_spec(args).variables) == {"AI_ASSISTANT": "sales"}
    args = build_parser().parse_args(["call", "--dtmf", "1"])
    assert dict(channel_spec(args).variables) == {}


def test_a_bad_key_is_a_clear_error():
    args = build_parser().parse_args(["call", "--dtmf", "1x@2"])
    with pytest.raises(SystemExit, match="--dtmf '1x@2'.*not a DTMF digit"):
        build_script(args)


def test_records_are_read_from_the_offset_whole_lines_only(tmp_path):
    path = tmp_path / "calls.jsonl"
    assert read_new_records(path, 0) == ([], 0)  # no file yet
    old = json.dumps({"uuid": "old"}) + "\n"
    path.write_text(old)
    offset = len(old)
    new = json.dumps({"uuid": "a"}) + "\n" + "not json\n" + '{"uuid": "b"'  # b still being written
    with path.open("a") as f:
        f.write(new)
    recs, offset2 = read_new_records(path, offset)
    assert [r["uuid"] for r in recs] == ["a"]
    with path.open("a") as f:
        f.write("}\n")
    recs, offset3 = read_new_records(path, offset2)
    assert [r["uuid"] for r in recs] == ["b"] and offset3 == path.stat().st_size
    # rotated: the file is now shorter than the offset, so it is read from the start
    path.write_text(json.dumps({"uuid": "c"}) + "\n")
    recs, _ = read_new_records(path, offset3)
    assert [r["uuid"] for r in recs] == ["c"]


def test_a_record_reads_as_turns_in_order_with_keys_and_actions():
    rec = {
        "turns": [
            {"index": 0, "trigger": "start", "agent_text": "Hello.", "first_frame_sent": 0.2,
             "intent": "greeting"},
            {"index": 1, "trigger": "speech", "caller_text": "opening hours", "speech_end": 3.1,
             "agent_text": "Nine to five, Monday to Friday.", "first_frame_sent": 3.5,
             "latency_ms": 400.0, "interrupted": True, "heard_text": "Nine to five"},
            {"index": 2, "trigger": "dtmf", "caller_text": "[keypad 12]",
             "agent_text": "Account twelve.", "first_frame_sent": 6.0,
             "stage_ms": {"first_frame": 250.0}},
            {"index": 3, "trigger": "no-input", "agent_text": "Are you still there?",
             "first_frame_sent": 14.0},
        ],
        "actions": [{"t": 6.9, "kind": "transfer", "destination": "billing", "result": "ok"},
                    {"t": 5.0, "kind": "tool", "tool": "lookup", "arguments": {"id": "12"}}],
    }
    lines = [" ".join(x.split()) for x in conversation_lines(rec)]
    assert lines == [
        "0.20 agent Hello. [intent greeting]",
        "3.10 caller opening hours",
        "3.50 agent Nine to five, Monday to Friday. [400 ms after the caller stopped; "
        "interrupted; the caller heard: 'Nine to five']",
        "5.00 action tool lookup({\"id\": \"12\"})",
        "5.75 caller pressed 12",
        "6.00 agent Account twelve.",
        "6.90 action transfer to billing (ok)",
        "caller (said nothing)",
        "14.00 agent Are you still there?",
    ]


def test_a_record_without_transcripts_says_the_words_were_not_kept():
    rec = {"transcripts": False, "turns": [
        {"index": 0, "trigger": "start", "caller_text": "", "agent_text": "",
         "first_frame_sent": 0.2, "intent": "greeting"},
        {"index": 1, "trigger": "speech", "caller_text": "", "agent_text": "", "speech_end": 3.1,
         "first_frame_sent": 3.5, "intent": "hours"}]}
    lines = [" ".join(x.split()) for x in conversation_lines(rec)]
    assert lines == ["0.20 agent (words not kept) [intent greeting]",
                     "3.10 caller (words not kept)",
                     "3.50 agent (words not kept) [intent hours]"]
