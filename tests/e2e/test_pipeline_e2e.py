"""Pipeline calls end to end over real loopback sockets, in real time.

Emulator (FastAGI env block, AudioSocket frames at 20 ms, AMI events) -> FastAGI server ->
sidecar -> the pipeline's stage clients -> protocol mocks on loopback TCP (OpenAI-compatible
chat over HTTP, Deepgram listen and speak over WebSockets); the engines of the local stages are
the deterministic fakes (tests/fakes.py); transfers go out as AMI Redirects to the fake AMI.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import trio

from fastagi_server.emulator.caller import AgentQuiet, CallerScript
from media_sidecar.config.loader import parse_config
from tests.e2e.stack import open_stack
from tests.fakes import caller_says
from tests.mocks.deepgram_listen import ListenScript, MockListenServer
from tests.mocks.deepgram_speak import MockSpeakServer, SpeakScript
from tests.mocks.openai_chat import MockChatServer
from tests.mocks.openai_chat.script import ChatScript, Reply, ToolCall

pytestmark = pytest.mark.e2e

COMMON = """
    greeting: "Hello {caller_name}."
    instructions: "ACME phone assistant. Account {var.ACCOUNT}."
    destinations:
      sales: {context: from-internal, exten: "2002", description: sales team}
      operator: {context: from-internal, exten: "0", description: the operator}
    fallback_destination: operator
    barge_in: {greeting_protection_ms: 0}
"""
VARS = {"AI_VARS": "ACCOUNT", "AI_VAR_ACCOUNT": "A-42"}


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def loud_frames(call) -> int:
    return sum(1 for f in call.audiosocket[0].audio_frames()
               if np.abs(np.frombuffer(f.payload, dtype="<i2")).max(initial=0) > 300)


async def test_local_stt_compatible_llm_local_tts_transfers_by_tool_call(tmp_path):
    """The mixed pipeline: local STT, an OpenAI-compatible LLM without a key (a local
    server), local TTS; the model's transfer_call becomes an AMI Redirect."""
    chat = MockChatServer(api_key=None, script=ChatScript(
        replies={"opening hours": Reply("We open at nine. We close at five."),
                 "sales": Reply("Transferring you to sales.", tool_calls=(
                     ToolCall("transfer_call", {"destination": "sales"}),))},
        first_token_delay=0.2, token_delay=0.02, tool_call_style="whole"))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(chat.serve)
        cfg = parse_config(f"""
routing: {{default: mixed}}
assistants:
  mixed:
    provider: pipeline
    stt: {{engine: moonshine}}
    llm: {{engine: openai, url: "http://127.0.0.1:{port}/v1", model: qwen3,
           api_key_env: NO_SUCH_KEY}}
    tts: {{engine: piper}}
{COMMON}""", "e2e.yaml")
        rec_path = tmp_path / "calls.jsonl"
        async with open_stack(cfg, str(rec_path)) as stack:
            script = (CallerScript()
                      .speak_after_agent_quiet(caller_says("what are your opening hours", 1.0),
                                               quiet_ms=400)
                      .speak(caller_says("I want to talk to sales", 1.0), at=AgentQuiet(400)))
            call = await stack.call(script, seconds=30, variables=VARS)
            await stack.wait_records(1)
            (redirect,) = stack.ami_actions("Redirect")
        nursery.cancel_scope.cancel()
    assert (redirect["Context"], redirect["Exten"]) == ("from-internal", "2002")
    assert call.variables["AI_STATUS"] == "TRANSFERRED"
    assert call.variables["AI_TRANSFER_TO"] == "sales"
    (rec,) = records(rec_path)
    assert rec["provider"]["stages"] == "moonshine+openai+piper"
    turns = rec["turns"]
    assert turns[0]["agent_text"] == "Hello Probe."
    assert (turns[1]["caller_text"], turns[1]["agent_text"]) == (
        "what are your opening hours", "We open at nine. We close at five.")
    assert turns[2]["caller_text"] == "I want to talk to sales"
    assert turns[2]["heard_text"] == "Transferring you to sales."
    assert turns[1]["latency_ms"] is not None and turns[1]["stage_ms"]["first_sentence"] > 0
    tool = next(a for a in rec["actions"] if a["kind"] == "tool")
    assert (tool["tool"], tool["arguments"]) == ("transfer_call", {"destination": "sales"})
    assert chat.chats[0].messages[0]["content"] == "ACME phone assistant. Account A-42."
    assert "authorization" not in chat.chats[0].record.request.headers


async def test_cloud_pipeline_deepgram_openai_deepgram_hangs_up_after_the_farewell(
        tmp_path, monkeypatch):
    monkeypatch.setenv("E2E_DG", "e2e-key")
    monkeypatch.setenv("E2E_OAI", "e2e-key")
    listen = MockListenServer("e2e-key", script=ListenScript(
        transcripts=["what are your opening hours", "goodbye"]))
    speak = MockSpeakServer("e2e-key", script=SpeakScript(first_byte_delay=0.1))
    chat = MockChatServer("e2e-key", script=ChatScript(replies={
        "opening hours": Reply("Nine to five."),
        "goodbye": Reply("Goodbye!", tool_calls=(ToolCall("hangup_call", {}),))},
        first_token_delay=0.2, token_delay=0.02))
    async with trio.open_nursery() as nursery:
        lp = await nursery.start(listen.serve)
        sp = await nursery.start(speak.serve)
        cp = await nursery.start(chat.serve)
        cfg = parse_config(f"""
routing: {{default: cloud}}
assistants:
  cloud:
    provider: pipeline
    stt: {{engine: deepgram, url: "ws://127.0.0.1:{lp}/v1/listen", api_key_env: E2E_DG}}
    llm: {{engine: openai, url: "http://127.0.0.1:{cp}/v1", api_key_env: E2E_OAI}}
    tts: {{engine: deepgram, url: "ws://127.0.0.1:{sp}/v1/speak", api_key_env: E2E_DG}}
{COMMON}""", "e2e.yaml")
        rec_path = tmp_path / "calls.jsonl"
        async with open_stack(cfg, str(rec_path)) as stack:
            script = (CallerScript()
                      .speak_after_agent_quiet(caller_says("what are your opening hours", 1.0),
                                               quiet_ms=400)
                      .speak(caller_says("goodbye", 0.8), at=AgentQuiet(400)))
            call = await stack.call(script, seconds=30, variables=VARS)
            await stack.wait_records(1)
        nursery.cancel_scope.cancel()
    assert call.variables["AI_STATUS"] == "COMPLETED"
    (rec,) = records(rec_path)
    turns = rec["turns"]
    assert [t["caller_text"] for t in turns[1:]] == ["what are your opening hours", "goodbye"]
    assert [t["heard_text"] for t in turns] == ["Hello Probe.", "Nine to five.",
                                                "Goodbye!"]
    s = turns[1]["stage_ms"]
    assert s["stt"] <= s["llm_first_token"] <= s["first_sentence"] <= s["tts_first_audio"]
    # the whole farewell was played before the hang-up: "Goodbye!" is 8 chars x 60 ms
    assert loud_frames(call) >= (len("Hello Probe.") + 13 + 8) * 3 - 6
    assert listen.sessions[0].query["encoding"] == ["linear16"]
