"""GPT-Live calls end to end over real loopback sockets, in real time.

Emulator (FastAGI env block, AudioSocket frames at 20 ms, AMI events) -> FastAGI server ->
sidecar -> the product's GPT-Live client -> the GPT-Live protocol mock listening on loopback
TCP (real-time output with silence between utterances, server-side barge-in, responses
delegation); transfers go out as AMI Redirects to the fake AMI server; a webhook tool calls a
real HTTP server on loopback.
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
from tests.mocks.openai_live import LiveScript, MockLiveServer

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
LOCAL = "  backup:\n    provider: local\n    brain: {greeting: \"Backup here.\"}\n"


def config(assistants: str, default: str, rules: str = "") -> object:
    return parse_config(f"routing: {{default: {default}{rules}}}\nassistants:\n{assistants}",
                        "e2e.yaml")


def live(name: str, port: int, extra: str = "") -> str:
    return (f"  {name}:\n    provider: openai_live\n"
            f"    live: {{url: 'ws://127.0.0.1:{port}/v1/live/sessions', api_key_env: E2E_KEY}}\n"
            f"{COMMON}{extra}")


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def loud_frames(call) -> int:
    return sum(1 for f in call.audiosocket[0].audio_frames()
               if np.abs(np.frombuffer(f.payload, dtype="<i2")).max(initial=0) > 300)


def clean(mock: MockLiveServer) -> None:
    for log in mock.sessions:
        assert log.problems == [] and log.errors_sent == []


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("E2E_KEY", KEY)


async def test_live_call_answers_then_transfers_by_delegation_through_ami(tmp_path):
    mock = MockLiveServer(KEY, script=LiveScript(
        reply_ms=600, transcripts=["what are your hours", "sales please"],
        replies=["Nine to five."],
        function_calls={"sales": ("transfer_call", {"destination": "sales"})},
        speak_before_call="Transferring you to sales."))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(mock.serve)
        rec_path = tmp_path / "calls.jsonl"
        async with open_stack(config(live("live", port), "live"), str(rec_path)) as stack:
            script = (CallerScript().speak_after_agent_quiet(tone(500, 0.8), quiet_ms=400)
                      .speak(tone(500, 0.8), at=AgentQuiet(400)))
            call = await stack.call(script, seconds=30, variables=VARS)
            await stack.wait_records(1)
            (redirect,) = stack.ami_actions("Redirect")
        nursery.cancel_scope.cancel()
    assert (redirect["Context"], redirect["Exten"]) == ("from-internal", "2002")
    assert call.variables["AI_STATUS"] == "TRANSFERRED"
    log = mock.sessions[0]
    assert log.start["session"]["instructions"].startswith("ACME phone assistant. Account A-42.")
    assert log.start["session"]["audio"]["format"] == {"type": "audio/pcmu", "rate": 8000}
    (rec,) = records(rec_path)
    assert rec["status"] == "TRANSFERRED"
    turns = rec["turns"]
    assert turns[0]["agent_text"] == "Hello Probe."
    assert (turns[1]["caller_text"], turns[1]["agent_text"]) == ("what are your hours",
                                                                 "Nine to five.")
    assert turns[1]["latency_ms"] is not None
    assert turns[-1]["agent_text"] == "Transferring you to sales."
    tool = next(a for a in rec["actions"] if a["kind"] == "tool")
    assert (tool["tool"], tool["arguments"]) == ("transfer_call", {"destination": "sales"})
    assert rec["provider"]["usage"]["total_tokens"] == 833
    assert rec["provider"]["closed_reason"] == "close_requested"
    assert 88 <= loud_frames(call) <= 92  # greeting, answer and the whole announcement
    clean(mock)


async def test_live_call_hangs_up_after_the_whole_farewell(tmp_path):
    mock = MockLiveServer(KEY, script=LiveScript(
        reply_ms=600, transcripts=["bye now"], function_calls={"bye": ("hangup_call", {})},
        after_tool_reply="Goodbye!"))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(mock.serve)
        rec_path = tmp_path / "calls.jsonl"
        async with open_stack(config(live("live", port), "live"), str(rec_path)) as stack:
            script = CallerScript().speak_after_agent_quiet(tone(500, 0.8), quiet_ms=400)
            call = await stack.call(script, seconds=30, variables=VARS)
            await stack.wait_records(1)
            assert stack.ami_actions("Redirect") == []
        nursery.cancel_scope.cancel()
    assert call.variables["AI_STATUS"] == "COMPLETED"
    assert call.audiosocket[0].closed_by == "sidecar_hangup"
    (rec,) = records(rec_path)
    assert rec["turns"][-1]["agent_text"] == "Goodbye!"
    assert 58 <= loud_frames(call) <= 62  # greeting and the whole farewell
    clean(mock)


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


async def test_live_webhook_tool_result_reaches_the_model(tmp_path):
    crm = ThreadingHTTPServer(("127.0.0.1", 0), _Crm)
    crm.seen = []  # type: ignore[attr-defined]
    threading.Thread(target=crm.serve_forever, daemon=True).start()
    mock = MockLiveServer(KEY, script=LiveScript(
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
            async with open_stack(config(live("live", port, hook), "live"),
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
    assert seen["call"]["variables"] == {"ACCOUNT": "A-42"}
    (output,) = mock.sessions[0].function_outputs
    assert json.loads(output["output"]) == {"order": "7", "status": "shipped"}
    (rec,) = records(rec_path)
    assert rec["turns"][-1]["agent_text"] == "Your order has shipped."
    clean(mock)


async def test_live_down_at_start_falls_back_and_dying_mid_call_apologises(tmp_path):
    dying = MockLiveServer(KEY, script=LiveScript(reply_ms=1500, disconnect_mid_turn=1))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(dying.serve)
        # nothing listens on port 9: that assistant's provider is down
        assistants = live("fragile", port) + live("down", 9, "    fallback_assistant: backup\n")
        rules = ", rules: [{match: {dnid: '7003'}, assistant: down}]"
        rec_path = tmp_path / "calls.jsonl"
        async with open_stack(config(assistants + LOCAL, "fragile", rules),
                              str(rec_path)) as stack:

            async def place(dnid: str) -> None:
                script = (CallerScript().speak_after_agent_quiet(tone(500, 0.8), quiet_ms=300)
                          .hangup(at=AgentQuiet(1500)))
                await stack.call(script, seconds=40, dnid=dnid, channel=f"PJSIP/in-{dnid}",
                                 uniqueid=f"1795267900.{dnid}")

            async with trio.open_nursery() as calls:
                for dnid in ("7001", "7003"):
                    calls.start_soon(place, dnid)
            await stack.wait_records(2)
            redirects = stack.ami_actions("Redirect")
        nursery.cancel_scope.cancel()
    by_assistant = {r["assistant"]: r for r in records(rec_path)}
    fragile = by_assistant["fragile"]
    assert fragile["status"] == "TRANSFERRED" and fragile["transfer_to"] == "operator"
    assert [a["kind"] for a in fragile["actions"]] == ["apology", "transfer"]
    assert "1006" in fragile["provider"]["error"]
    assert [r["Exten"] for r in redirects] == ["0"]
    backup = by_assistant["backup"]
    assert backup["fallback_from"]["assistant"] == "down"
    assert backup["turns"][0]["agent_text"] == "Backup here."
