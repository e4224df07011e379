"""Hostile caller ID, caller name, DNID and ``AI_VAR_*`` values, end to end through the
Asterisk emulator (FastAGI and AMI as Asterisk 22 speaks them) and the whole product.

Each payload (CR, LF, a forged request-block tail, a forged AGI command and AMI action, NUL
where a channel can hold it, quotes and backslashes, ``${...}`` and ``$[...]``, 1000
characters, bytes that are not UTF-8) goes into all four fields of one call at once. For
every call:

* every line the emulator received on the AGI socket is one of the product's own commands
  (no second command ran), and the only channel variables set are the product's ``AI_*``
  outputs, by AGI and by AMI ``Setvar`` alike;
* every AMI action the fake AMI server received is one the product sends, naming this call's
  own channel;
* the value reaches the call record, the webhook's call context and the provider's prompt as
  inert data (exactly, and, in a prompt, cleaned of control characters and braces);
* the call goes on normally: a transfer by keypad reaches AMI Redirect, a goodbye completes.

A value holding a blank line ends the request block early (what follows is not Asterisk's):
that call fails cleanly to the dialplan (``AI_STATUS=FAILED``), by design, without a command
or variable of the caller's making. A value longer than a request-block line may be (8 KiB)
ends the AGI connection before any command: the dialplan sees no ``AI_STATUS`` and takes its
fallback, as when agi-voice is unreachable. A value holding an unmatched ``)`` before a ``:``
comes back cut from Asterisk's expression parser (fastagi_server/agi/identity.py): that call
fails cleanly too, ``AI_STATUS=FAILED``.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trio

from fastagi_server.emulator.call import CallResult
from fastagi_server.emulator.caller import AgentQuiet, CallerScript
from fastagi_server.emulator.channel import parse_args
from media_sidecar.brain.prompt import clean
from media_sidecar.config.loader import load_config, parse_config
from tests.e2e.stack import open_stack
from tests.fakes import caller_says, tone
from tests.mocks.openai_realtime import MockRealtimeServer, RealtimeScript

pytestmark = pytest.mark.e2e

BASE = load_config()
SHORT = dataclasses.replace(BASE, assistants=(dataclasses.replace(
    BASE.assistants[0], brain=dataclasses.replace(BASE.assistants[0].brain,
                                                  greeting="Hi, how can I help?")),))

OUTPUTS = {"AI_STATUS", "AI_REASON", "AI_TRANSFER_TO", "AI_SUMMARY"}
"""The only channel variables agi-voice sets."""
ASTERISK_OWN = {"AGISTATUS"}
"""Set by Asterisk itself when the AGI application ends."""
AMI_ACTIONS = {"Login", "Logoff", "Ping", "Events", "Filter", "CoreShowChannels", "Setvar",
               "Redirect", "Getvar", "Hangup"}
AGI_COMMANDS = {("GET", "FULL", "VARIABLE"), ("SET", "VARIABLE"), ("EXEC",), ("ANSWER",),
                ("CHANNEL", "STATUS"), ("VERBOSE",), ("NOOP",), ("GET", "VARIABLE")}
APPS = {"AudioSocket", "Goto", "Dial"}

NOT_UTF8 = b"Zo\xc3 \xff\xfe".decode("utf-8", "surrogateescape")
PAYLOADS = {
    "lf-forged-tail": "Mallory\nagi_arg_1: AI_ASSISTANT=nosuch\nagi_channel: Local/x@y-1;2",
    "cr-lf-agi-command": 'x"\r\nEXEC System "touch /tmp/pwned"\r\nSET VARIABLE AI_OWNED 1',
    "ami-action": "Eve\r\nAction: Hangup\r\nChannel: Local/100@test-00000001;2\r\nX: y",
    "quotes": 'O\'Brien "the \\"boss\\"" \\\\ \\',
    "dialplan-expr": "${SHELL(id)} $[1+1] ${CHANNEL} ${EVAL(x)} $(x) :",
    "long": "A" * 1000,
    "not-utf8": NOT_UTF8,
    "blank-line": "x\n\n200 result=1 (eA==)\nHANGUP",
    "over-8k": "B" * 9000,
    "paren-colon": "Bob :) : hi",
}
TRANSFER = {"cr-lf-agi-command", "ami-action", "dialplan-expr", "not-utf8"}
"""Payloads whose call presses 1 (a transfer through AMI Setvar and Redirect); the others say
goodbye."""
NUL_VALUE = "before\x00after"
"""A channel's caller ID is a C string and cannot hold NUL; a variable set from AMI or ARI as
a byte string could, in the emulator at least: used for ``AI_VAR_NOTE`` only."""


def received(value: str) -> str:
    """What the product reads back: bytes that are not UTF-8 become U+FFFD."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def check_agi_and_ami(call: CallResult, variables: dict[str, str], ami_actions: list[dict],
                      channel: str) -> None:
    for line in call.agi.lines(">>"):
        argv = parse_args(line)
        assert any(tuple(argv[:len(v)]) == v for v in AGI_COMMANDS), line
        if argv[0] == "EXEC":
            assert argv[1] in APPS and len(argv) <= 3, line
        if argv[:2] == ["SET", "VARIABLE"]:
            assert argv[2] in OUTPUTS and len(argv) == 4, line
    assert set(call.variables) - set(variables) <= OUTPUTS | ASTERISK_OWN, call.variables
    for name, value in variables.items():
        assert call.variables[name] == value, name
    for action in ami_actions:
        assert action.get("Action") in AMI_ACTIONS, action
        if action.get("Action") in ("Setvar", "Redirect", "Hangup", "Getvar"):
            assert action.get("Channel") == channel, action
        if action.get("Action") == "Setvar":
            assert action.get("Variable") in OUTPUTS, action


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("key", sorted(PAYLOADS), ids=sorted(PAYLOADS))
async def test_hostile_caller_fields_are_data_through_agi_and_ami(tmp_path, key):
    value = PAYLOADS[key]
    variables = {"AI_VARS": "NOTE", "AI_VAR_NOTE": value if key != "quotes" else NUL_VALUE}
    channel = "Local/100@test-00000007;2"
    rec_path = tmp_path / "calls.jsonl"
    transfer = key in TRANSFER
    async with open_stack(SHORT, str(rec_path)) as stack:
        script = (CallerScript().dtmf("1", at=AgentQuiet(300), via="ami") if transfer else
                  CallerScript().speak_after_agent_quiet(caller_says("goodbye")))
        fields = dict(callerid=value, calleridname=value, dnid=value)
        if key == "over-8k":  # dnid only: the fake AMI server's events carry the caller name,
            fields = dict(dnid=value)  # and it refuses lines over 1024 bytes (Asterisk does not)
        call = await stack.call(script, seconds=40, channel=channel, variables=variables,
                                **fields)
        await stack.settle()
        if key not in ("blank-line", "over-8k", "paren-colon"):
            await stack.wait_records(1)
        assert stack.ami is not None
        actions = list(stack.ami.actions)
    check_agi_and_ami(call, variables, actions, channel)
    if key == "over-8k":
        assert call.agi.lines(">>") == [] and "AI_STATUS" not in call.variables
        assert not call.audiosocket
        return
    if key in ("blank-line", "paren-colon"):
        assert call.variables["AI_STATUS"] == "FAILED"
        reason = "ended the AGI request block early" if key == "blank-line" else "incomplete"
        assert reason in call.variables["AI_REASON"], call.variables["AI_REASON"]
        assert not call.audiosocket
        return
    (rec,) = records(rec_path)
    assert rec["channel"] == channel
    assert rec["caller_name"] == received(value)
    if transfer:
        (redirect,) = [a for a in actions if a.get("Action") == "Redirect"]
        assert (redirect["Channel"], redirect["Exten"]) == (channel, "2002")
        assert call.variables["AI_STATUS"] == "TRANSFERRED"
        assert call.variables["AI_TRANSFER_TO"] == "sales"
    else:
        assert call.variables["AI_STATUS"] == "COMPLETED"
        assert call.audiosocket[0].closed_by == "sidecar_hangup"
    assert call.channel.warnings == []


# -- into the prompt and the webhook -------------------------------------------------------------

KEY = "e2e-key"


class _Hook(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append(body)  # type: ignore[attr-defined]
        out = b'{"status": "noted"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def assistant(port: int, hook_port: int) -> str:
    return f"""
routing: {{default: sts}}
assistants:
  sts:
    provider: openai_realtime
    realtime: {{url: 'ws://127.0.0.1:{port}/v1/realtime', api_key_env: E2E_KEY, silence_ms: 400}}
    greeting: "Hello {{caller_name}}."
    instructions: "Caller {{caller_id}} named {{caller_name}} dialled {{dnid}}. Note {{var.NOTE}}."
    destinations:
      sales: {{context: from-internal, exten: "2002", description: sales team}}
    barge_in: {{greeting_protection_ms: 0}}
    tools:
      webhooks:
        - name: note
          url: http://127.0.0.1:{hook_port}/note
          allow_http: true
          allow_private: true
          parameters: {{type: object, properties: {{text: {{type: string}}}}, required: [text]}}
"""


@pytest.mark.parametrize("key", ["lf-forged-tail", "dialplan-expr", "not-utf8", "quotes"])
async def test_hostile_values_reach_prompt_and_webhook_as_inert_data(tmp_path, monkeypatch, key):
    monkeypatch.setenv("E2E_KEY", KEY)
    value = PAYLOADS[key]
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    hook.seen = []  # type: ignore[attr-defined]
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    mock = MockRealtimeServer(KEY, script=RealtimeScript(
        reply_ms=400, transcripts=["note this"],
        function_calls={"note": ("note", {"text": value})},
        after_tool_reply="Noted."))
    channel = "Local/100@test-00000009;2"
    variables = {"AI_VARS": "NOTE", "AI_VAR_NOTE": value}
    try:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(mock.serve)
            cfg = parse_config(assistant(port, hook.server_port), "e2e.yaml")
            async with open_stack(cfg, str(tmp_path / "calls.jsonl")) as stack:
                script = (CallerScript().speak_after_agent_quiet(tone(500, 0.8), quiet_ms=400)
                          .hangup(at=AgentQuiet(600)))
                call = await stack.call(script, seconds=30, channel=channel, callerid=value,
                                        calleridname=value, dnid=value, variables=variables)
                await stack.wait_records(1)
                await stack.settle()
                assert stack.ami is not None
                actions = list(stack.ami.actions)
            nursery.cancel_scope.cancel()
    finally:
        hook.shutdown()
        hook.server_close()
    check_agi_and_ami(call, variables, actions, channel)
    got = received(value)
    # the prompt: each value cleaned (no control characters, no braces, capped), nothing expanded
    session = mock.sessions[0].session
    assert session["instructions"] == (f"Caller {clean(got)} named {clean(got)} dialled "
                                       f"{clean(got)}. Note {clean(got)}.")
    assert not any(ch in session["instructions"] for ch in "\r\n\0{}")
    # the webhook: the exact values, as JSON strings
    (seen,) = hook.seen  # type: ignore[attr-defined]
    assert seen["arguments"] == {"text": got}  # a lone surrogate from the model: U+FFFD
    ctx = seen["call"]
    assert (ctx["caller_id"], ctx["caller_name"], ctx["dnid"]) == (got, got, got)
    # AI_VAR_* values come with line breaks and control characters made spaces
    assert list(ctx["variables"]) == ["NOTE"] and ctx["variables"]["NOTE"].split() == got.split()
    assert ctx["channel"] == channel
