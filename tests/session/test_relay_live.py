"""OpenAI GPT-Live calls: the product's client against the protocol mock over an in-memory
WebSocket, through the real AudioSocket server and the emulator's Asterisk side, virtual time.
The same scenarios as the Realtime and Deepgram provider tests."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import trio
import trio_websocket
from openai.types.live.client_event_param import ClientEventParam
from openai.types.live.server_event import ServerEvent

from fastagi_server.emulator.caller import CallerScript
from media_sidecar.config.loader import parse_config
from media_sidecar.protocol.control import CallContext
from media_sidecar.providers import make_setup
from media_sidecar.providers.openai_live import OpenAILiveSession, _append_event
from media_sidecar.tools.spec import ToolReply
from tests.contracts.strict import check
from tests.fakes import dominant_freq, tone
from tests.mocks.openai_live import LiveScript, MockLiveServer
from tests.session.harness import run_session
from tests.session.providers import memory_connector

YAML = """
routing: {default: live}
assistants:
  live:
    provider: openai_live
    greeting: "Hello {caller_name}."
    instructions: "You answer calls for ACME. The caller is {caller_name}."
    live: {audio: AUDIO}
    barge_in: {greeting_protection_ms: 0}
    destinations:
      sales: {context: from-internal, exten: "2002", description: sales team}
      operator: {context: from-internal, exten: "0"}
    fallback_destination: operator
    EXTRA
  local:
    provider: local
    brain: {greeting: "This is the backup assistant."}
"""
FRAME = 0.02


def config(extra: str = "", audio: str = "auto"):
    return parse_config(YAML.replace("EXTRA", extra).replace("AUDIO", audio), "live.yaml")


def live_factory(mock: MockLiveServer, key: str = "test-key"):
    connect = memory_connector(mock.serve_stream, "api.openai.com")

    def factory(assistant, context):
        return OpenAILiveSession(assistant.live, make_setup(assistant, context),
                                 env={"OPENAI_API_KEY": key}, connect=connect)

    return factory


def loud_times(out) -> list[float]:
    return [f.t for f in out.asterisk.audio_frames()
            if np.abs(np.frombuffer(f.payload, dtype="<i2")).max(initial=0) > 300]


def no_problems(mock: MockLiveServer) -> None:
    """The mock saw no client mistake, sent no error, and every message either side sent
    conforms to the openai SDK 3.63 ``types/live`` unions (strictly: no unknown keys)."""
    for log in mock.sessions:
        assert log.problems == []
        assert log.errors_sent == []
        assert [p for m in log.client_messages for p in check(m, ClientEventParam)] == []
        assert [p for m in log.server_messages for p in check(m, ServerEvent)] == []


@pytest.mark.parametrize("audio", ["auto", "pcm"])
async def test_greeting_then_an_answer_with_transcripts_and_latency(autojump_clock, audio):
    mock = MockLiveServer(script=LiveScript(reply_ms=1000, transcripts=["what time is it"],
                                            replies=["It is noon."]))
    script = CallerScript().speak(tone(500, 1.0), at=2.0).hangup(at=6.0)
    out = await run_session(script, cfg=config(audio=audio), provider_factory=live_factory(mock))

    log = mock.sessions[0]
    assert log.path == "/v1/live/sessions" and log.query == ""
    assert log.headers["authorization"] == "Bearer ***"
    assert "openai-beta" not in log.headers
    start = log.start["session"]
    fmt = {"auto": {"type": "audio/pcmu", "rate": 8000},
           "pcm": {"type": "audio/pcm", "rate": 16000}}[audio]
    assert start["audio"] == {"format": fmt, "output": {"voice": "marin"}}
    assert start["model"] == "gpt-live-1"
    assert start["instructions"].startswith("You answer calls for ACME. The caller is Ada")
    assert log.sent_types()[0] == "session.started"
    (greet,) = log.commentary
    assert greet["delegation_id"] is None and '"Hello Ada Lovelace."' in greet["content"]
    # greeting (1 s) and answer (1 s) heard as the mock's 440 Hz tone, on the 20 ms grid
    loud = loud_times(out)
    assert 98 <= len(loud) <= 102
    frames = [np.frombuffer(f.payload, dtype="<i2") for f in out.asterisk.audio_frames()]
    assert abs(dominant_freq(np.concatenate(frames), 8000) - 440) < 15
    gaps = np.diff([f.t for f in out.asterisk.frames_received])
    assert np.allclose(gaps, FRAME, atol=1e-6)
    turns = out.record.turns
    assert [t.trigger for t in turns] == ["start", "speech"]
    assert turns[0].agent_text == "Hello Ada Lovelace."
    assert (turns[1].caller_text, turns[1].agent_text) == ("what time is it", "It is noon.")
    # caller end of speech -> first agent frame: the mock's 500 ms end of turn, the 60 ms
    # jitter buffer (three 20 ms deltas), a frame tick
    assert turns[1].latency_ms is not None and 500 <= turns[1].latency_ms <= 600
    assert out.ended.status == "CALLER_HANGUP"
    # the call's end closed the session properly; its reason and length are in the record
    assert log.received("session.close") and log.closed_reason == "close_requested"
    assert out.record.provider["closed_reason"] == "close_requested"
    assert out.record.provider["session_seconds"] > 5
    no_problems(mock)


async def test_barge_in_flushes_and_the_record_keeps_what_was_heard(autojump_clock):
    mock = MockLiveServer(script=LiveScript(reply_ms=3000,
                                            replies=["one two three four five six"]))
    # greeting 3 s; the caller asks at 3.5 s; talks over the answer 1 s into it
    script = (CallerScript().speak(tone(500, 0.8), at=3.5)
              .barge_in(tone(600, 0.8), utterance=2, delay=1.0).hangup(at=9.0))
    out = await run_session(script, cfg=config(), provider_factory=live_factory(mock))

    log = mock.sessions[0]
    (cut,) = log.interrupted
    assert cut.kind == "reply" and 0 < cut.frames_sent < cut.total_frames
    assert out.record.barge_ins == 1
    answer = out.record.turns[1]
    assert answer.interrupted
    # the record keeps the words the model said before it stopped, not the whole reply
    said = answer.agent_text.split()
    assert said and said == "one two three four five six".split()[:len(said)]
    assert len(said) < 6 and answer.heard_text
    barge = out.record.barge_in_at[0] + out.asterisk.started_at
    heard = [t for t in loud_times(out) if t > out.asterisk.started_at + 3.1]
    assert heard, "the answer was never heard"
    assert not [t for t in heard if barge + FRAME + 1e-9 < t < barge + 0.5]
    no_problems(mock)


async def test_transfer_after_the_announcement_is_heard(autojump_clock):
    mock = MockLiveServer(script=LiveScript(
        reply_ms=1000, transcripts=["sales please"],
        function_calls={"sales": ("transfer_call", {"destination": "sales"})},
        speak_before_call="Transferring you to sales."))
    script = CallerScript().speak(tone(500, 1.0), at=2.0).hangup(at=20.0)
    out = await run_session(script, cfg=config(), provider_factory=live_factory(mock))

    assert (out.ended.status, out.ended.transfer_to) == ("TRANSFERRED", "sales")
    (req,) = out.control.requests
    assert req.exten == "2002"
    log = mock.sessions[0]
    delegation = log.start["session"]["delegation"]
    assert delegation["type"] == "responses"
    tools = {t["name"]: t for t in delegation["responses"]["tools"]}
    assert set(tools) == {"transfer_call", "hangup_call"}
    assert tools["transfer_call"]["parameters"]["properties"]["destination"]["enum"] == [
        "sales", "operator"]
    (output,) = log.function_outputs
    assert output["call_id"] == log.function_calls[0]["call_id"]
    assert json.loads(output["output"])["status"] == "transferring"
    assert log.response_creates == 0  # already announced: no second announcement asked for
    assert log.muted_at is not None  # the caller could no longer cut the announcement
    assert 98 <= len(loud_times(out)) <= 102  # greeting + the whole announcement
    assert out.record.turns[-1].agent_text == "Transferring you to sales."
    assert out.record.provider["usage"]["total_tokens"] == 833
    no_problems(mock)


async def test_hangup_plays_the_whole_farewell_and_mutes_the_caller(autojump_clock):
    mock = MockLiveServer(script=LiveScript(
        reply_ms=1000, transcripts=["bye now"], function_calls={"bye": ("hangup_call", {})},
        after_tool_reply="Goodbye, thanks for calling."))
    script = (CallerScript().speak(tone(500, 0.8), at=1.5)
              .barge_in(tone(600, 0.6), utterance=2, delay=0.2).hangup(at=20.0))
    out = await run_session(script, cfg=config(), provider_factory=live_factory(mock))

    assert out.ended.status == "COMPLETED"
    log = mock.sessions[0]
    assert log.response_creates == 1  # nothing said before the tool: the farewell was asked for
    assert not log.interrupted  # muted: the caller's words never reached the model
    assert 98 <= len(loud_times(out)) <= 102  # greeting + the whole farewell
    assert out.record.turns[-1].agent_text == "Goodbye, thanks for calling."
    no_problems(mock)


async def test_a_webhook_result_goes_back_and_the_model_speaks_it(autojump_clock, monkeypatch):
    seen = []

    async def fake_webhook(hook, args, call, env=None):
        seen.append((hook.name, args, call["caller_id"]))
        return ToolReply(json.dumps({"order": args["order"], "status": "shipped"}))

    monkeypatch.setattr("media_sidecar.session.base.call_webhook", fake_webhook)
    mock = MockLiveServer(script=LiveScript(
        reply_ms=500, transcripts=["where is order seven"],
        function_calls={"order": ("order_status", {"order": "7"})},
        after_tool_reply="Your order has shipped."))
    hook = ("tools:\n      webhooks:\n        - name: order_status\n"
            "          url: https://crm.example/orders\n"
            "          parameters: {type: object, properties: {order: {type: string}}}")
    script = CallerScript().speak(tone(500, 0.8), at=1.5).hangup(at=8.0)
    out = await run_session(script, cfg=config(hook), provider_factory=live_factory(mock))

    assert seen == [("order_status", {"order": "7"}, "5551234")]
    log = mock.sessions[0]
    (output,) = log.function_outputs
    assert json.loads(output["output"]) == {"order": "7", "status": "shipped"}
    assert log.response_creates == 1
    assert out.record.turns[-1].agent_text == "Your order has shipped."
    no_problems(mock)


async def test_keypad_digits_reach_the_model_as_commentary(autojump_clock):
    mock = MockLiveServer(script=LiveScript(reply_ms=500, replies=["Thanks."]))
    script = CallerScript().dtmf("7*", at=1.5).dtmf("#", at=2.2).hangup(at=6.0)
    out = await run_session(script, cfg=config(), provider_factory=live_factory(mock))
    log = mock.sessions[0]
    assert [c["content"] for c in log.commentary[1:]] == [
        "(The caller pressed these keypad keys: 7 * #)"]
    assert out.record.turns[-1].trigger == "dtmf"
    assert out.record.turns[-1].agent_text == "Thanks."
    no_problems(mock)


async def test_dying_mid_call_apologises_and_transfers_to_the_fallback(autojump_clock):
    mock = MockLiveServer(script=LiveScript(reply_ms=800, disconnect_mid_turn=1))
    script = CallerScript().speak(tone(500, 0.8), at=1.5).hangup(at=20.0)
    out = await run_session(script, cfg=config(), provider_factory=live_factory(mock))
    assert (out.ended.status, out.ended.transfer_to) == ("TRANSFERRED", "operator")
    assert "code 1006" in out.record.provider["error"]
    assert out.record.provider["retryable"] is True
    assert [a.kind for a in out.record.actions] == ["apology", "transfer"]


async def test_session_closed_mid_call_puts_its_reason_in_the_record(autojump_clock):
    mock = MockLiveServer(script=LiveScript(reply_ms=800, close_after_turns=1,
                                            close_reason="content"))
    script = CallerScript().speak(tone(500, 0.8), at=1.5).hangup(at=20.0)
    out = await run_session(script, cfg=config(), provider_factory=live_factory(mock))
    assert out.ended.transfer_to == "operator"
    p = out.record.provider
    assert p["closed_reason"] == "content" and "content" in p["error"]
    assert p["retryable"] is False  # a safety stop is not retried


async def test_bad_key_at_start_hands_the_call_to_the_fallback_assistant(autojump_clock):
    mock = MockLiveServer(api_key="right")
    out = await run_session(CallerScript().hangup(at=4.0),
                            cfg=config("fallback_assistant: local"),
                            provider_factory=live_factory(mock, key="wrong"))
    assert mock.rejected[0].rejected_status == 401
    assert out.record.assistant == "local"
    assert "401" in out.record.fallback_from["error"]
    assert out.record.turns[0].agent_text == "This is the backup assistant."


async def test_a_refused_session_start_is_permanent_and_falls_back(autojump_clock):
    mock = MockLiveServer(script=LiveScript(
        refuse_start=("insufficient_quota", "You exceeded your current quota.")))
    out = await run_session(CallerScript().hangup(at=4.0),
                            cfg=config("fallback_assistant: local"),
                            provider_factory=live_factory(mock))
    assert "insufficient_quota" in out.record.fallback_from["error"]
    assert out.record.assistant == "local"


@pytest.mark.parametrize(("audio", "tools"), [("auto", True), ("pcm", True), ("auto", False)])
def test_every_event_the_client_builds_conforms_to_the_sdk(audio, tools):
    a = config(audio=audio).assistant("live")
    setup = make_setup(a, CallContext())
    if not tools:
        setup = dataclasses.replace(setup, tools=[])
    p = OpenAILiveSession(a.live, setup, env={})
    start = p.session_start()
    assert ("delegation" in start["session"]) is tools
    events = [start, json.loads(_append_event(b"\xff" * 160)),
              {"type": "session.input_audio.mute"},
              {"type": "session.close", "event_id": "close_1"},
              {"type": "response.item.create", "item": {
                  "type": "function_call_output", "call_id": "call_1", "output": "{}"}},
              {"type": "response.create"},
              {"type": "session.thinking.append", "delegation_id": None, "content": "x"}]
    for event in events:
        assert check(event, ClientEventParam) == [], event["type"]


@pytest.mark.parametrize(("send_silence", "send_rate"), [(False, 1.0), (False, 4.0)])
async def test_utterances_end_without_silence_frames_and_with_bursts(autojump_clock, send_silence,
                                                                     send_rate):
    """A server that sends nothing between utterances (the gap ends an utterance) or sends
    faster than real time (the playout paces it): same turns, same audio heard."""
    mock = MockLiveServer(script=LiveScript(
        reply_ms=1000, transcripts=["bye now"], function_calls={"bye": ("hangup_call", {})},
        after_tool_reply="Goodbye.", send_silence=send_silence, send_rate=send_rate))
    script = CallerScript().speak(tone(500, 0.8), at=1.5).hangup(at=20.0)
    out = await run_session(script, cfg=config(), provider_factory=live_factory(mock))
    assert out.ended.status == "COMPLETED"
    assert [t.agent_text for t in out.record.turns] == ["Hello Ada Lovelace.", "Goodbye."]
    assert 98 <= len(loud_times(out)) <= 102
    no_problems(mock)


async def test_websocket_pings_are_answered_and_leave_the_session_alone(autojump_clock,
                                                                       monkeypatch):
    pongs = []
    ping = trio_websocket.WebSocketConnection.ping

    async def counted(self, payload=None):
        await ping(self, payload)
        pongs.append(trio.current_time())

    monkeypatch.setattr(trio_websocket.WebSocketConnection, "ping", counted)
    mock = MockLiveServer(script=LiveScript(reply_ms=400))
    script = CallerScript().hangup(at=12.0)
    cfg = parse_config(YAML.replace("{audio: AUDIO}", "{ping_seconds: 2}").replace("EXTRA", ""),
                       "live.yaml")
    assert cfg.assistant("live").live.ping_seconds == 2
    out = await run_session(script, cfg=cfg, provider_factory=live_factory(mock))
    assert out.ended.status == "CALLER_HANGUP"
    assert "error" not in out.record.provider
    assert len(pongs) >= 5  # one every 2 s, each answered
    no_problems(mock)
