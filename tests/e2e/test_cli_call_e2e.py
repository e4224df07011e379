"""``agi-voice call`` as a person reads it, against the whole product on loopback.

The command's own code path (arguments -> caller script -> call -> record -> printed report)
runs against the end-to-end stack with the deterministic fake speech engines: the caller
"speaks" tones that FakeStt maps to sentences, so the printed caller text is what the product
recognised, and the agent text is what its brain said (FakeTts speaks it as a plain tone, so a
re-transcription could not produce it). AMI is off, as it is for a real `agi-voice call`: the
running serve's AMI cannot know an emulated channel.
"""

from __future__ import annotations

import dataclasses
import io
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import trio

from fastagi_server.cli import build_parser
from fastagi_server.emulator.call import write_wav
from fastagi_server.emulator.cli_call import (
    EXIT_OK,
    EXIT_TIMED_OUT,
    build_script,
    channel_spec,
    exit_code,
    place_call,
    report,
)
from media_sidecar.config.loader import load_config
from media_sidecar.config.schema import Config
from tests.e2e.stack import Stack, open_stack
from tests.fakes import caller_says

pytestmark = pytest.mark.e2e


def _config() -> Config:
    """The default receptionist with short replies, plus a 'sales' assistant to ask for."""
    base = load_config()
    rec = base.assistants[0]
    intents = tuple(
        dataclasses.replace(i, reply="Nine to five.") if i.name == "hours" else i
        for i in rec.brain.intents)
    rec = dataclasses.replace(rec, brain=dataclasses.replace(
        rec.brain, greeting="Hi, how can I help?", intents=intents))
    sales = dataclasses.replace(rec, name="sales", brain=dataclasses.replace(
        rec.brain, greeting="Sales desk, hello."))
    return dataclasses.replace(base, assistants=(rec, sales))


CONFIG = _config()


def _wav(tmp_path: Path, sentence: str) -> str:
    path = tmp_path / f"{sentence.replace(' ', '_')}.wav"
    write_wav(path, np.frombuffer(caller_says(sentence), dtype="<i2"))
    return str(path)


async def _run_cli(stack: Stack, records: Path, *argv: str, transcriber=None) -> tuple[str, int]:
    """What `agi-voice call ARGV` prints and its exit status, run in the test's trio loop."""
    args = build_parser().parse_args(["call", *argv])
    placed = await place_call("127.0.0.1", stack.agi_port, channel_spec(args),
                              build_script(args), max_seconds=args.max_seconds,
                              records_path=str(records))
    out = io.StringIO()
    report(placed, out, show_agi=args.show_agi, transcribe=args.transcribe,
           transcriber=transcriber)
    return out.getvalue(), exit_code(placed)


def _lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines()]


async def test_speech_and_keys_print_the_turns_as_the_product_had_them(tmp_path):
    records = tmp_path / "calls.jsonl"
    async with open_stack(CONFIG, str(records), ami=False) as stack:
        text, code = await _run_cli(
            stack, records, "--wav", _wav(tmp_path, "what are your opening hours"),
            "--dtmf", "2", "--max-seconds", "30", "--transcribe",
            transcriber=lambda pcm: "sells her support")
    lines = _lines(text)
    conversation = lines[lines.index(next(x for x in lines if x.startswith("== conversation"))):
                         lines.index("== the emulated caller (seconds from the AudioSocket start)")]
    # in order: greeting, the caller's words as recognised, the reply, the key, its reply
    said = [x.split(" ", 1)[1] for x in conversation[1:]]
    assert [s.split("[")[0].strip() for s in said[:5]] == [
        "agent Hi, how can I help?",
        "caller what are your opening hours",
        "agent Nine to five.",
        "caller pressed 2",
        "agent Transferring you to billing.",
    ]
    assert said[5].startswith("action transfer to billing (") and len(said) == 6
    assert "assistant receptionist" in conversation[0]
    # the caller's own actions, keys in words, not a Python repr
    assert any(x.endswith("presses 2 (AudioSocket DTMF frame)") for x in lines)
    assert "Dtmf(" not in text
    # a re-transcription only when asked, and labelled as one
    i = lines.index("== agent audio re-transcribed by the local STT (a check of the audio; "
                    "not the product's text)")
    assert lines[i + 1] == "sells her support"
    outcome = lines[lines.index("== outcome"):]
    assert {"AI_STATUS=TRANSFERRED", "AI_TRANSFER_TO=billing"} <= set(outcome)
    assert any(x.startswith("AI_REASON=") for x in outcome), text
    assert "TIMED OUT" not in text
    assert code == EXIT_OK


async def test_assistant_option_asks_for_it_and_the_report_says_who_answered(tmp_path):
    records = tmp_path / "calls.jsonl"
    async with open_stack(CONFIG, str(records), ami=False) as stack:
        text, code = await _run_cli(stack, records, "--assistant", "sales",
                                    "--wav", _wav(tmp_path, "goodbye"), "--max-seconds", "30")
    lines = _lines(text)
    assert lines[0].endswith("asking for assistant sales (AI_ASSISTANT)")
    head = next(x for x in lines if x.startswith("== conversation"))
    assert "assistant sales;" in head
    assert any(x.endswith("agent Sales desk, hello. [intent greeting]") for x in lines)
    assert any(x.endswith("caller goodbye") for x in lines)
    assert "AI_STATUS=COMPLETED" in lines
    assert code == EXIT_OK


async def test_a_timed_out_call_prints_what_it_gathered_and_says_so(tmp_path):
    records = tmp_path / "calls.jsonl"
    async with open_stack(CONFIG, str(records), ami=False) as stack:
        # the caller would speak at 10 s; the call is given 2.5 s
        text, code = await _run_cli(stack, records,
                                    "--wav", _wav(tmp_path, "goodbye") + "@10",
                                    "--max-seconds", "2.5", "--show-agi")
    lines = _lines(text)
    assert any(x.endswith("agent Hi, how can I help? [intent greeting]") for x in lines)
    assert any(x.startswith("== TIMED OUT after 2.5 s: the emulated caller hung up; "
                            "the AGI session ended") for x in lines)
    assert "AI_STATUS=CALLER_HANGUP" in lines
    assert any(x.startswith(">> EXEC AudioSocket") for x in lines)  # --show-agi
    assert code == EXIT_TIMED_OUT


async def test_a_server_that_never_lets_go_still_gives_a_report(tmp_path):
    """A FastAGI server that reads the request and then says nothing, even after the hang-up:
    the command gives up after the grace period and prints what it has."""
    async def silent(stream: trio.SocketStream) -> None:
        while await stream.receive_some(4096):
            pass
        await trio.sleep_forever()  # the peer closed: still never close our side

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        args = build_parser().parse_args(["call", "--dtmf", "1@5", "--max-seconds", "0.5"])
        placed = await place_call("127.0.0.1", port, channel_spec(args), build_script(args),
                                  max_seconds=0.5, hangup_grace=0.5,
                                  records_path=str(tmp_path / "r.jsonl"))
        nursery.cancel_scope.cancel()
    out = io.StringIO()
    report(placed, out)
    lines = _lines(out.getvalue())
    assert "(the call never reached the media sidecar: no conversation)" in lines
    assert ("== TIMED OUT after 0.5 s: the emulated caller hung up; the AGI session had not "
            "ended 0.5 s after that: the values below are what was set so far") in lines
    assert "AI_STATUS is not set" in lines
    assert placed.agi is None and exit_code(placed) == EXIT_TIMED_OUT
