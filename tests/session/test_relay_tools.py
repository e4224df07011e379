"""Model-driven calls with tools, keypad input, local turn taking, fallback and apology.

The product's real OpenAI Realtime client against the protocol mock over an in-memory
WebSocket, through the real AudioSocket server and the emulator's Asterisk side, in virtual
time. The control plane is the harness's recording stand-in (AMI Redirect-like); the full
AMI path is in tests/e2e/test_sts_e2e.py.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from fastagi_server.emulator.caller import CallerScript
from media_sidecar.config.loader import parse_config
from tests.fakes import FakeTts, dominant_freq, tone
from tests.mocks.openai_realtime import MockRealtimeServer, RealtimeScript
from tests.session.harness import run_session
from tests.session.providers import openai_factory

YAML = """
routing: {default: sts}
assistants:
  sts:
    provider: openai_realtime
    greeting: "Hello {caller_name}."
    instructions: "You help callers of ACME. Caller {caller_name} ({caller_id}), account {var.ACCOUNT}."
    realtime: {audio: ulaw, silence_ms: 400}
    barge_in: {greeting_protection_ms: 0}
    destinations:
      sales: {context: from-internal, exten: "2002", description: sales team}
      operator: {context: from-internal, exten: "0", description: the operator}
    fallback_destination: operator
    EXTRA
  local:
    provider: local
    brain: {greeting: "This is the backup assistant."}
"""


def config(extra: str = ""):
    return parse_config(YAML.replace("EXTRA", extra), "sts.yaml")


def loud_times(out) -> list[float]:
    return [f.t for f in out.asterisk.audio_frames()
            if np.abs(np.frombuffer(f.payload, dtype="<i2")).max(initial=0) > 300]


def tool_actions(record, kind: str = "tool"):
    return [a for a in record.actions if a.kind == kind]


async def test_session_carries_templated_instructions_and_the_tools(autojump_clock):
    mock = MockRealtimeServer(script=RealtimeScript(reply_ms=400))
    out = await run_session(CallerScript().hangup(at=2.0), cfg=config(),
                            provider_factory=openai_factory(mock))
    log = mock.sessions[0]
    assert log.session["instructions"] == (
        "You help callers of ACME. Caller Ada Lovelace (5551234), account A-42.")
    assert "Hello Ada Lovelace." in log.response_instructions[0]
    tools = {t["name"]: t for t in log.tools}
    assert set(tools) == {"transfer_call", "hangup_call"}
    assert tools["transfer_call"]["parameters"]["properties"]["destination"]["enum"] == [
        "sales", "operator"]
    assert out.ended.status == "CALLER_HANGUP"


async def test_transfer_by_function_call_after_the_announcement_is_heard(autojump_clock):
    mock = MockRealtimeServer(script=RealtimeScript(
        reply_ms=1000, transcripts=["sales please"],
        function_calls={"sales": ("transfer_call", {"destination": "sales"})},
        speak_before_call="Transferring you to sales."))
    script = CallerScript().speak(tone(500, 1.0), at=2.0).hangup(at=20.0)
    out = await run_session(script, cfg=config(), provider_factory=openai_factory(mock))

    assert (out.ended.status, out.ended.transfer_to) == ("TRANSFERRED", "sales")
    (req,) = out.control.requests
    assert (req.context, req.exten, req.priority) == ("from-internal", "2002", "1")
    assert out.asterisk.closed_by == "redirect"
    # the greeting (1 s) and the whole announcement (1 s) reached Asterisk before the redirect
    assert 98 <= len(loud_times(out)) <= 102
    log = mock.sessions[0]
    (output,) = log.function_outputs
    assert json.loads(output["output"])["status"] == "transferring"
    assert log.responses == 2  # the announcement was spoken: no response after the tool
    (call,) = tool_actions(out.record)
    assert (call.tool, call.arguments) == ("transfer_call", {"destination": "sales"})
    (done,) = tool_actions(out.record, "transfer")
    assert done.result == "redirected by AMI"


async def test_transfer_to_a_destination_not_allowed_is_refused_to_the_model(autojump_clock):
    mock = MockRealtimeServer(script=RealtimeScript(
        reply_ms=600, transcripts=["put me through to the boss"],
        function_calls={"boss": ("transfer_call", {"destination": "ceo"})},
        after_tool_replies={"transfer_call": "Sorry, I can't transfer you there."}))
    script = CallerScript().speak(tone(500, 1.0), at=1.5).hangup(at=8.0)
    out = await run_session(script, cfg=config(), provider_factory=openai_factory(mock))

    assert out.control.requests == []
    assert out.ended.status == "CALLER_HANGUP"
    (output,) = mock.sessions[0].function_outputs
    reply = json.loads(output["output"])
    assert reply["ok"] is False and "sales" in reply["error"]
    # the model was asked to answer, and its answer reached the caller
    assert out.record.turns[-1].agent_text == "Sorry, I can't transfer you there."
    assert out.record.turns[-1].first_frame_sent is not None
    (call,) = tool_actions(out.record)
    assert call.arguments == {"destination": "ceo"} and '"ok": false' in call.result


async def test_hangup_plays_the_whole_farewell_even_if_the_caller_talks(autojump_clock):
    mock = MockRealtimeServer(script=RealtimeScript(
        reply_ms=1000, transcripts=["bye"],
        function_calls={"bye": ("hangup_call", {"reason": "caller said goodbye"})},
        speak_before_call="Goodbye, thanks for calling."))
    script = (CallerScript().speak(tone(500, 0.8), at=1.5)
              .barge_in(tone(600, 0.5), utterance=2, delay=0.3).hangup(at=20.0))
    out = await run_session(script, cfg=config(), provider_factory=openai_factory(mock))

    assert out.ended.status == "COMPLETED" and "goodbye" in out.ended.reason
    assert out.asterisk.closed_by == "sidecar_hangup"
    assert 98 <= len(loud_times(out)) <= 102  # greeting + the whole farewell
    assert out.record.barge_ins == 0
    assert out.record.playout["frames_flushed"] == 0
    (done,) = tool_actions(out.record, "hangup")
    assert done.reason == "caller said goodbye"


async def test_hangup_without_a_farewell_asks_for_one_and_plays_it(autojump_clock):
    mock = MockRealtimeServer(script=RealtimeScript(
        reply_ms=800, transcripts=["that's all"],
        function_calls={"all": ("hangup_call", {})},
        after_tool_replies={"hangup_call": "Goodbye then."}))
    script = CallerScript().speak(tone(500, 0.8), at=1.2).hangup(at=20.0)
    out = await run_session(script, cfg=config(), provider_factory=openai_factory(mock))

    assert out.ended.status == "COMPLETED"
    log = mock.sessions[0]
    assert "goodbye" in json.loads(log.function_outputs[0]["output"])["note"]
    assert out.record.turns[-1].agent_text == "Goodbye then."
    assert 78 <= len(loud_times(out)) <= 82  # greeting + farewell, 0.8 s each


async def test_keypad_digits_reach_the_model_as_one_user_message(autojump_clock):
    mock = MockRealtimeServer(script=RealtimeScript(reply_ms=600, replies=["Hi.", "Got it."]))
    script = CallerScript().dtmf("12#", at=1.5, gap=0.3).hangup(at=6.0)
    out = await run_session(script, cfg=config(), provider_factory=openai_factory(mock))

    log = mock.sessions[0]
    assert log.user_texts == ["(The caller pressed these keypad keys: 1 2 #)"]
    turn = out.record.turns[-1]
    assert (turn.trigger, turn.caller_text, turn.agent_text) == (
        "dtmf", "[keypad 1 2 #]", "Got it.")
    assert out.record.dtmf == ["1", "2", "#"]
    # each digit with the call-relative time it was pressed (1.5 s, then 0.3 s apart)
    assert out.record.dtmf_at == pytest.approx([1.5, 1.8, 2.1], abs=0.021)


async def test_keypad_digits_without_terminator_are_sent_after_the_gap(autojump_clock):
    mock = MockRealtimeServer(script=RealtimeScript(reply_ms=400))
    script = CallerScript().dtmf("42", at=1.0, gap=0.5).hangup(at=6.0)
    await run_session(script, cfg=config("dtmf_input: {inter_digit_ms: 1000}"),
                      provider_factory=openai_factory(mock))
    log = mock.sessions[0]
    assert log.user_texts == ["(The caller pressed these keypad keys: 4 2)"]
    # sent 1 s after the last key, not before
    sent = [e for e in log.client_events if e.get("type") == "conversation.item.create"]
    assert len(sent) == 1


async def test_local_turn_taking_commits_and_barges_in_itself(autojump_clock):
    # sent at real time, so the answer is still being generated when the caller cuts in
    mock = MockRealtimeServer(script=RealtimeScript(reply_ms=3000, transcripts=["hello"],
                                                    send_rate=1.0))
    cfg = parse_config(YAML.replace("EXTRA", "vad: {start_ms: 60, end_ms: 400}").replace(
        "silence_ms: 400}", "silence_ms: 400, turn_detection: none}"), "sts.yaml")
    script = (CallerScript().speak(tone(500, 1.0), at=3.5)
              .barge_in(tone(600, 0.8), utterance=2, delay=1.0).hangup(at=10.0))
    out = await run_session(script, cfg=cfg, provider_factory=openai_factory(mock))

    log = mock.sessions[0]
    assert log.session["audio"]["input"]["turn_detection"] is None
    assert log.count("input_audio_buffer.commit") >= 1
    assert log.count("response.cancel") == 1
    (trunc,) = log.truncations
    loud = loud_times(out)
    barge = out.record.barge_in_at[0] + out.asterisk.started_at
    answer = [t for t in loud if t > out.asterisk.started_at + 3.0 + 0.1]
    played_ms = len([t for t in answer if t <= barge + 1e-9]) * 20
    assert abs(trunc.audio_end_ms - played_ms) <= 20
    assert not [t for t in answer if barge + 0.021 < t < barge + 0.5]
    # only the caller's speech went to the provider (pre-roll and hangover included)
    assert log.audio_in_ms < 4000
    assert out.record.turns[1].latency_ms is not None


async def test_provider_down_at_start_hands_the_call_to_the_fallback_assistant(autojump_clock):
    mock = MockRealtimeServer(api_key="the-right-key")
    script = CallerScript().hangup(at=5.0)
    out = await run_session(script, cfg=config("fallback_assistant: local"),
                            provider_factory=openai_factory(mock, key="a-wrong-key"))

    assert mock.rejected[0].rejected_status == 401
    rec = out.record
    assert rec.assistant == "local"
    assert rec.fallback_from["assistant"] == "sts" and "401" in rec.fallback_from["error"]
    assert rec.turns[0].agent_text == "This is the backup assistant."
    first = loud_times(out)[0] - out.asterisk.started_at
    assert first < 0.5  # no dead air: the backup greets at once
    assert out.ended.status == "CALLER_HANGUP"


async def test_provider_down_at_start_without_fallback_fails_fast(autojump_clock):
    mock = MockRealtimeServer(api_key="the-right-key")
    out = await run_session(CallerScript().hangup(at=5.0), cfg=config(),
                            provider_factory=openai_factory(mock, key="a-wrong-key"))
    assert out.ended.status == "FAILED" and "401" in out.ended.reason
    assert out.asterisk.closed_by == "sidecar_hangup"
    assert out.asterisk.ended_at - out.asterisk.started_at < 0.5


async def test_provider_dying_mid_call_apologises_then_transfers_to_the_fallback(autojump_clock):
    mock = MockRealtimeServer(script=RealtimeScript(reply_ms=2000, transcripts=["hi"],
                                                    disconnect_mid_response=2))
    script = CallerScript().speak(tone(500, 0.8), at=2.5).hangup(at=20.0)
    out = await run_session(script, cfg=config(), provider_factory=openai_factory(mock))

    assert (out.ended.status, out.ended.transfer_to) == ("TRANSFERRED", "operator")
    assert "failed mid-call" in out.ended.reason
    (req,) = out.control.requests
    assert req.exten == "0"
    (apology,) = tool_actions(out.record, "apology")
    # the apology (the fake TTS's 1 kHz tone) was heard whole before the redirect
    frames = [np.frombuffer(f.payload, dtype="<i2") for f in out.asterisk.audio_frames()]
    khz = [f for f in frames if np.abs(f).max(initial=0) > 300 and
           abs(dominant_freq(f, 8000) - 1000) < 60]
    expected = FakeTts.seconds("I'm sorry, I'm having technical difficulties.") / 0.02
    assert abs(len(khz) - expected) <= 2


async def test_a_different_confirmed_format_is_converted_not_played_raw(autojump_clock):
    mock = MockRealtimeServer(script=RealtimeScript(
        reply_ms=1000, confirm_format={"type": "audio/pcm", "rate": 24000}))
    out = await run_session(CallerScript().hangup(at=3.0), cfg=config(),
                            provider_factory=openai_factory(mock))
    frames = [np.frombuffer(f.payload, dtype="<i2") for f in out.asterisk.audio_frames()
              if np.abs(np.frombuffer(f.payload, dtype="<i2")).max(initial=0) > 300]
    assert len(frames) >= 45
    assert abs(dominant_freq(np.concatenate(frames), 8000) - 440) < 15


async def test_provider_turned_to_garbage_mid_answer_is_failed_over_after_answer_timeout(
        autojump_clock, caplog):
    # halfway through its answer the service sends only unusable frames, connection open:
    # each is skipped, and after answer_timeout of silence the caller gets the apology and
    # the operator instead of waiting for good
    mock = MockRealtimeServer(script=RealtimeScript(reply_ms=2000, transcripts=["hi"],
                                                    garbage_mid_response=2))
    script = CallerScript().speak(tone(500, 0.8), at=2.5).hangup(at=40.0)
    out = await run_session(script, cfg=config(), provider_factory=openai_factory(mock))

    assert (out.ended.status, out.ended.transfer_to) == ("TRANSFERRED", "operator")
    assert "no answer within 10 s" in out.ended.reason
    assert out.record.provider["error"].startswith("no answer within 10 s")
    # ~40 unusable frames in those 10 s: counted, and logged once
    assert out.record.provider["malformed_events"] >= 30
    skipped = [r for r in caplog.records if "skipped" in r.getMessage()
               and r.levelno >= logging.WARNING]
    assert len(skipped) == 1, [r.getMessage() for r in skipped]
    assert [a.kind for a in out.record.actions] == ["apology", "transfer"]
    frames = [(f.t, np.frombuffer(f.payload, dtype="<i2")) for f in out.asterisk.audio_frames()]
    tone440 = [t for t, f in frames if np.abs(f).max(initial=0) > 300
               and abs(dominant_freq(f, 8000) - 440) < 60]
    apology = [t for t, f in frames if np.abs(f).max(initial=0) > 300
               and abs(dominant_freq(f, 8000) - 1000) < 60]
    answer = [t for t in tone440 if t > 3.0]  # after the greeting
    assert 0.9 <= len(answer) * 0.02 <= 1.1  # half of the 2 s answer was heard
    silence = apology[0] - answer[-1]
    assert 10.0 <= silence <= 10.1, silence  # the bound, counted from the last frame heard
    expected = FakeTts.seconds("I'm sorry, I'm having technical difficulties.") / 0.02
    assert abs(len(apology) - expected) <= 2


async def test_a_slow_answer_within_answer_timeout_is_waited_for(autojump_clock):
    mock = MockRealtimeServer(script=RealtimeScript(reply_ms=1000, transcripts=["hi"],
                                                    first_byte_delay=6.0))
    # every response starts 6 s late (the greeting too: it plays at 6-7 s)
    script = CallerScript().speak(tone(500, 0.8), at=8.0).hangup(at=25.0)
    out = await run_session(script, cfg=config(), provider_factory=openai_factory(mock))
    assert out.ended.status == "CALLER_HANGUP", out.ended
    assert "error" not in out.record.provider
    assert [t.trigger for t in out.record.turns] == ["start", "speech"]
    assert out.record.turns[1].latency_ms is not None and out.record.turns[1].latency_ms > 6000


async def test_answer_timeout_zero_never_fails_a_silent_provider(autojump_clock):
    mock = MockRealtimeServer(script=RealtimeScript(reply_ms=2000, transcripts=["hi"],
                                                    garbage_mid_response=2))
    script = CallerScript().speak(tone(500, 0.8), at=2.5).hangup(at=30.0)
    out = await run_session(script, cfg=config("answer_timeout: 0"),
                            provider_factory=openai_factory(mock))
    assert out.ended.status == "CALLER_HANGUP", out.ended
    assert not tool_actions(out.record, "apology")
