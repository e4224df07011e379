"""Speech-to-speech calls end to end over real loopback sockets, in real time.

Emulator (FastAGI env block, AudioSocket frames at 20 ms, AMI events) -> FastAGI server ->
sidecar -> the product's provider clients -> the protocol mocks of OpenAI Realtime and
Deepgram Voice Agent listening on loopback TCP; transfers go out as AMI Redirects to the fake
AMI server; webhook tools call a real HTTP server on loopback.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import trio

from fastagi_server.emulator.caller import AgentQuiet, CallerScript
from media_sidecar.config.loader import parse_config
from tests.e2e.stack import open_stack
from tests.fakes import tone
from tests.mocks.deepgram_agent import AgentScript, MockAgentServer
from tests.mocks.openai_realtime import MockRealtimeServer, RealtimeScript

pytestmark = pytest.mark.e2e

KEY = "e2e-key"
COMMON = """
    greeting: "Hello {caller_name}."
    instructions: "ACME phone assistant. Account {var.ACCOUNT}."
    apology: "Sorry, one moment."
    destinations:
      sales: {context: from-internal, exten: "2002", description: sales team}
      operator: {context: from-internal, exten: "0", description: the operator}
    fallback_destination: operator
    barge_in: {greeting_protection_ms: 0}
"""
VARS = {"AI_VARS": "ACCOUNT", "AI_VAR_ACCOUNT": "A-42"}


def config(assistants: str, default: str, rules: str = "") -> object:
    return parse_config(f"routing: {{default: {default}{rules}}}\nassistants:\n{assistants}",
                        "e2e.yaml")


def openai(name: str, port: int, extra: str = "") -> str:
    return (f"  {name}:\n    provider: openai_realtime\n"
            f"    realtime: {{url: 'ws://127.0.0.1:{port}/v1/realtime', api_key_env: E2E_KEY,"
            f" silence_ms: 400}}\n{COMMON}{extra}")


def deepgram(name: str, port: int, extra: str = "") -> str:
    return (f"  {name}:\n    provider: deepgram_agent\n"
            f"    deepgram: {{url: 'ws://127.0.0.1:{port}/v1/agent/converse',"
            f" api_key_env: E2E_KEY}}\n{COMMON}{extra}")


LOCAL = "  backup:\n    provider: local\n    brain: {greeting: \"Backup here.\"}\n"


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def loud_frames(call) -> int:
    return sum(1 for f in call.audiosocket[0].audio_frames()
               if np.abs(np.frombuffer(f.payload, dtype="<i2")).max(initial=0) > 300)


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("E2E_KEY", KEY)


async def test_openai_call_answers_then_transfers_by_function_call_through_ami(tmp_path):
    mock = MockRealtimeServer(KEY, script=RealtimeScript(
        reply_ms=600, transcripts=["what are your hours", "sales please"],
        replies=["Hello.", "Nine to five."],
        function_calls={"sales": ("transfer_call", {"destination": "sales"})},
        speak_before_call="Transferring you to sales."))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(mock.serve)
        cfg = config(openai("sts", port), "sts")
        rec_path = tmp_path / "calls.jsonl"
        async with open_stack(cfg, str(rec_path)) as stack:
            script = (CallerScript().speak_after_agent_quiet(tone(500, 0.8), quiet_ms=400)
                      .speak(tone(500, 0.8), at=AgentQuiet(400)))
            call = await stack.call(script, seconds=30, variables=VARS)
            await stack.wait_records(1)
            (redirect,) = stack.ami_actions("Redirect")
        nursery.cancel_scope.cancel()
    assert (redirect["Context"], redirect["Exten"]) == ("from-internal", "2002")
    assert call.variables["AI_STATUS"] == "TRANSFERRED"
    assert call.variables["AI_TRANSFER_TO"] == "sales"
    assert mock.sessions[0].session["instructions"] == "ACME phone assistant. Account A-42."
    (rec,) = records(rec_path)
    assert rec["status"] == "TRANSFERRED"
    turns = rec["turns"]
    assert turns[0]["agent_text"] == "Hello."
    assert (turns[1]["caller_text"], turns[1]["agent_text"]) == ("what are your hours",
                                                                 "Nine to five.")
    assert turns[1]["latency_ms"] is not None
    tool = next(a for a in rec["actions"] if a["kind"] == "tool")
    assert (tool["tool"], tool["arguments"]) == ("transfer_call", {"destination": "sales"})
    assert rec["provider"]["usage"]["total_tokens"] > 0
    # greeting, answer and the whole announcement, 0.6 s each
    assert 88 <= loud_frames(call) <= 92


async def test_deepgram_call_answers_then_hangs_up_after_the_farewell(tmp_path):
    mock = MockAgentServer(KEY, script=AgentScript(
        reply_ms=600, transcripts=["what are your hours", "bye"], replies=["Nine to five."],
        function_calls={"bye": ("hangup_call", {"reason": "done"})},
        after_tool_reply="Goodbye!"))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(mock.serve)
        rec_path = tmp_path / "calls.jsonl"
        async with open_stack(config(deepgram("dg", port), "dg"), str(rec_path)) as stack:
            script = (CallerScript().speak_after_agent_quiet(tone(500, 0.8), quiet_ms=400)
                      .speak(tone(500, 0.8), at=AgentQuiet(400)))
            call = await stack.call(script, seconds=30, variables=VARS)
            await stack.wait_records(1)
            assert stack.ami_actions("Redirect") == []
        nursery.cancel_scope.cancel()
    assert call.variables["AI_STATUS"] == "COMPLETED"
    assert call.audiosocket[0].closed_by == "sidecar_hangup"
    (rec,) = records(rec_path)
    turns = rec["turns"]
    assert turns[0]["agent_text"] == "Hello Probe."
    assert (turns[1]["caller_text"], turns[1]["agent_text"]) == ("what are your hours",
                                                                 "Nine to five.")
    assert turns[-1]["agent_text"] == "Goodbye!"
    assert 88 <= loud_frames(call) <= 92  # greeting, answer, the whole farewell


class _Crm(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append(body)  # type: ignore[attr-defined]
        out = json.dumps({"order": body["arguments"]["order"], "status": "shipped"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


async def test_webhook_tool_gets_the_call_context_and_its_result_reaches_the_model(tmp_path):
    crm = ThreadingHTTPServer(("127.0.0.1", 0), _Crm)
    crm.seen = []  # type: ignore[attr-defined]
    threading.Thread(target=crm.serve_forever, daemon=True).start()
    mock = MockRealtimeServer(KEY, script=RealtimeScript(
        reply_ms=500, transcripts=["where is order seven"],
        function_calls={"order": ("order_status", {"order": "7"})},
        after_tool_reply="Your order has shipped."))
    hook = (f"    tools:\n      webhooks:\n        - name: order_status\n"
            f"          url: http://127.0.0.1:{crm.server_port}/orders\n"
            f"          allow_http: true\n          allow_private: true\n"
            f"          parameters: {{type: object, properties: {{order: {{type: string}}}},"
            f" required: [order]}}\n")
    try:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(mock.serve)
            rec_path = tmp_path / "calls.jsonl"
            async with open_stack(config(openai("sts", port, hook), "sts"),
                                  str(rec_path)) as stack:
                script = (CallerScript().speak_after_agent_quiet(tone(500, 0.8), quiet_ms=400)
                          .hangup(at=AgentQuiet(600)))
                await stack.call(script, seconds=30, variables=VARS)
                await stack.wait_records(1)
            nursery.cancel_scope.cancel()
    finally:
        crm.shutdown()
        crm.server_close()
    (seen,) = crm.seen
    assert seen["arguments"] == {"order": "7"}
    call = seen["call"]
    assert (call["caller_id"], call["caller_name"], call["dnid"]) == ("5551234", "Probe", "7000")
    assert call["variables"] == {"ACCOUNT": "A-42"}
    (output,) = mock.sessions[0].function_outputs
    assert json.loads(output["output"]) == {"order": "7", "status": "shipped"}
    (rec,) = records(rec_path)
    assert rec["turns"][-1]["agent_text"] == "Your order has shipped."


async def test_provider_down_at_start_falls_back_and_dying_mid_call_spares_other_calls(
        tmp_path):
    dying = MockRealtimeServer(KEY, script=RealtimeScript(reply_ms=1500, replies=["Hello."],
                                                          disconnect_mid_response=2))
    steady = MockAgentServer(KEY, script=AgentScript(reply_ms=1500, replies=["Fine."]))
    async with trio.open_nursery() as nursery:
        p1 = await nursery.start(dying.serve)
        p2 = await nursery.start(steady.serve)
        # nothing listens on port 9: that assistant's provider is down
        assistants = (openai("fragile", p1) + deepgram("steady", p2)
                      + openai("down", 9, "    fallback_assistant: backup\n") + LOCAL)
        rules = (", rules: [{match: {dnid: '7001'}, assistant: fragile},"
                 " {match: {dnid: '7003'}, assistant: down}]")
        rec_path = tmp_path / "calls.jsonl"
        async with open_stack(config(assistants, "steady", rules), str(rec_path)) as stack:
            results: dict[str, object] = {}

            async def place(dnid: str) -> None:
                script = (CallerScript().speak_after_agent_quiet(tone(500, 0.8), quiet_ms=300)
                          .hangup(at=AgentQuiet(1500)))
                # each call its own channel and uniqueid, as Asterisk gives them: the control
                # plane tells calls apart by them (AMI events, redirects)
                results[dnid] = await stack.call(script, seconds=40, dnid=dnid,
                                                 channel=f"PJSIP/in-{dnid}",
                                                 uniqueid=f"1795267900.{dnid}")

            async with trio.open_nursery() as calls:
                for dnid in ("7001", "7002", "7003"):
                    calls.start_soon(place, dnid)
            await stack.wait_records(3)
            redirects = stack.ami_actions("Redirect")
        nursery.cancel_scope.cancel()
    by_assistant = {r["assistant"]: r for r in records(rec_path)}
    # the provider that died mid-answer: apology, then the fallback destination by AMI
    fragile = by_assistant["fragile"]
    assert fragile["status"] == "TRANSFERRED" and fragile["transfer_to"] == "operator"
    assert [a["kind"] for a in fragile["actions"]] == ["apology", "transfer"]
    assert [r["Exten"] for r in redirects] == ["0"]
    # the concurrent call on the other provider never noticed
    calm = by_assistant["steady"]
    assert calm["status"] == "CALLER_HANGUP"
    assert [t["agent_text"] for t in calm["turns"]] == ["Hello Probe.", "Fine."]
    # at most one stall of the whole loop: this real-time test runs the media plane, FastAGI,
    # both provider mocks and the emulator in ONE process (one GIL) on a shared 2-core CI
    # machine, where one scheduler hiccup over 20 ms was seen once in many runs; that one
    # call's fault never disturbs another is tested exactly in virtual time
    # (tests/session/test_clock.py: a crash, a reset, a peer that stops reading)
    assert calm["playout"]["late_frames"] <= 1, calm["playout"]
    # the provider that was down at the start: the backup assistant took the call at once
    backup = by_assistant["backup"]
    assert backup["fallback_from"]["assistant"] == "down"
    assert backup["turns"][0]["agent_text"] == "Backup here."
    assert results["7003"].variables.get("AI_STATUS") in (None, "", "CALLER_HANGUP")  # type: ignore[attr-defined]


async def test_provider_sending_garbage_mid_answer_ends_in_the_apology_and_the_operator(
        tmp_path):
    # a service (or a proxy in front of it) that turns to garbage halfway through an answer,
    # its connection still open: every unusable frame is skipped, and after answer_timeout of
    # silence the caller gets the apology and the fallback destination, not dead air
    garbage = MockRealtimeServer(KEY, script=RealtimeScript(reply_ms=1500, replies=["Hello."],
                                                            garbage_mid_response=2))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(garbage.serve)
        rec_path = tmp_path / "calls.jsonl"
        cfg = config(openai("broken", port, "    answer_timeout: 2\n"), "broken")
        async with open_stack(cfg, str(rec_path)) as stack:
            script = CallerScript().speak_after_agent_quiet(tone(500, 0.8), quiet_ms=300)
            call = await stack.call(script, seconds=20)
            await stack.wait_records(1)
            redirects = stack.ami_actions("Redirect")
        nursery.cancel_scope.cancel()
    (rec,) = records(rec_path)
    assert rec["status"] == "TRANSFERRED" and rec["transfer_to"] == "operator", rec["reason"]
    assert "no answer within 2 s" in rec["provider"]["error"]
    assert rec["provider"]["malformed_events"] >= 3
    assert [a["kind"] for a in rec["actions"]] == ["apology", "transfer"]
    assert [r["Exten"] for r in redirects] == ["0"]
    assert call.variables.get("AI_STATUS") == "TRANSFERRED"
