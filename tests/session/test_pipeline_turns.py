"""Pipeline turns in virtual time: stages overlapped, barge-in cancelling LLM and TTS together
with a heard-only history, stage failures, rules first, keypad input to the LLM."""

from __future__ import annotations

import numpy as np

from fastagi_server.emulator.caller import CallerScript
from media_sidecar.config.loader import parse_config
from tests.fakes import caller_says
from tests.mocks.deepgram_listen import ListenScript, MockListenServer
from tests.mocks.deepgram_speak import MockSpeakRestServer, MockSpeakServer, SpeakScript
from tests.mocks.openai_chat import MockChatServer
from tests.mocks.openai_chat.script import ChatScript, Reply, ToolCall
from tests.session.harness import run_session
from tests.session.pipeline import KEYS, pipeline_net

YAML = """
routing: {default: bot}
assistants:
  bot:
    provider: pipeline
    stt: {engine: STT}
    llm: {engine: openai LLM_EXTRA}
    tts: {engine: TTS}
    greeting: "Hi."
    instructions: "You answer calls for ACME."
    barge_in: {greeting_protection_ms: 0}
    destinations:
      billing: {context: from-internal, exten: "2001"}
      operator: {context: from-internal, exten: "0"}
    fallback_destination: operator
    EXTRA
  backup:
    provider: local
    brain: {greeting: "This is the backup assistant."}
"""

HOURS = "We open at nine in the morning. We close at five in the afternoon. Saturday is ten to two."


def config(stt="moonshine", tts="piper", llm_extra="", extra=""):
    return parse_config(YAML.replace("STT", stt).replace("TTS", tts)
                        .replace("LLM_EXTRA", llm_extra).replace("EXTRA", extra), "p.yaml")


def loud(out, start: float = 0.0) -> list[float]:
    return [f.t - out.t0 for f in out.asterisk.audio_frames()
            if f.t - out.t0 >= start
            and np.abs(np.frombuffer(f.payload, dtype="<i2")).max(initial=0) > 300]


async def test_first_sentence_is_spoken_while_the_llm_is_still_writing(autojump_clock):
    chat = MockChatServer(script=ChatScript(replies={"opening hours": Reply(HOURS)},
                                            first_token_delay=0.6, token_delay=0.12))
    speak = MockSpeakServer(script=SpeakScript(first_byte_delay=0.25))
    script = CallerScript().speak(caller_says("what are your opening hours", 1.0), at=2.0)
    script = script.hangup(at=15.0)
    async with pipeline_net({"api.openai.com": chat}, {"api.deepgram.com/v1/speak": speak}) as net:
        out = await run_session(script, cfg=config(tts="deepgram"), net=net, env=KEYS)
    turn = out.record.turns[1]
    s = turn.stage_ms
    assert turn.agent_text == HOURS and turn.heard_text == HOURS
    # scripted: first token 600 ms after the request, one word per 120 ms, TTS first byte 250 ms
    assert 590 <= s["llm_first_token"] - s["stt"] <= 610
    assert s["first_sentence"] < s["llm_done"] - 1000  # sentence 1 left long before the end
    # the first agent frame leaves within one frame of the first TTS audio
    assert 0 <= s["first_frame"] - s["tts_first_audio"] <= 20
    assert s["first_frame"] < s["llm_done"]
    flushes = speak.sessions[0].flushes
    assert [f.text for f in flushes[1:]] == ["We open at nine in the morning.",
                                             "We close at five in the afternoon.",
                                             "Saturday is ten to two."]
    # the caller heard one continuous answer: no gap between the sentences' audio
    answer = loud(out, start=turn.first_frame_sent)
    gaps = np.diff(answer)
    assert gaps.max() < 0.03, gaps.max()


async def test_barge_in_closes_llm_and_tts_flushes_playout_and_keeps_heard_history(
        autojump_clock):
    chat = MockChatServer(script=ChatScript(
        replies={"opening hours": Reply(HOURS), "blah": Reply("Sorry, go ahead.")},
        first_token_delay=0.3, token_delay=0.2))
    speak = MockSpeakServer(script=SpeakScript(first_byte_delay=0.1, send_rate=1.0))
    script = (CallerScript().speak(caller_says("what are your opening hours", 1.0), at=2.0)
              .speak(caller_says("blah blah", 0.8), at=6.0).hangup(at=14.0))
    async with pipeline_net({"api.openai.com": chat}, {"api.deepgram.com/v1/speak": speak}) as net:
        out = await run_session(script, cfg=config(tts="deepgram"), net=net, env=KEYS)
    rec = out.record
    assert rec.barge_ins == 1
    cut = rec.barge_in_at[0]
    answer = rec.turns[1]
    assert answer.interrupted
    # the LLM request was closed before its end, the TTS told to Clear
    assert chat.chats[0].client_closed and not chat.chats[0].completed
    log = speak.sessions[0]
    assert log.count("Clear") == 1 and log.count("Cleared", sent=True) == 1
    # no agent audio from one frame after the barge-in until the next answer
    after = [t for t in loud(out, start=cut + 0.021) if t < rec.turns[2].first_frame_sent - 0.005]
    assert after == []
    # the next request's history holds only what the caller heard of the cut answer
    heard = answer.heard_text
    assert heard and HOURS.startswith(heard) and len(heard) < len("We open at nine in the morning.")
    msgs = chat.chats[1].messages
    assert msgs[-2] == {"role": "assistant", "content": heard}
    assert msgs[-1] == {"role": "user", "content": "blah blah"}
    assert rec.turns[2].agent_text == "Sorry, go ahead."


async def test_llm_failing_mid_call_apologises_and_transfers_to_the_fallback(autojump_clock):
    chat = MockChatServer(script=ChatScript(replies={"opening hours": Reply("Nine to five.")},
                                            fail_request=2))
    script = (CallerScript().speak(caller_says("what are your opening hours", 1.0), at=2.0)
              .speak(caller_says("blah blah", 0.8), at=6.0).hangup(at=20.0))
    async with pipeline_net({"api.openai.com": chat}) as net:
        out = await run_session(script, cfg=config(), net=net, env=KEYS)
    assert out.ended.status == "TRANSFERRED" and out.ended.transfer_to == "operator"
    kinds = [a.kind for a in out.record.actions]
    assert kinds == ["apology", "transfer"]
    assert "HTTP 500" in out.ended.reason
    assert out.control.requests[0].exten == "0"


async def test_llm_silent_past_its_timeout_is_a_failed_turn(autojump_clock):
    chat = MockChatServer(script=ChatScript(first_token_delay=30.0))
    script = CallerScript().speak(caller_says("what are your opening hours", 1.0), at=2.0)
    script = script.hangup(at=20.0)
    async with pipeline_net({"api.openai.com": chat}) as net:
        out = await run_session(script, cfg=config(llm_extra=", timeout: 2"), net=net, env=KEYS)
    assert out.ended.status == "TRANSFERRED" and "within 2 s" in out.ended.reason
    assert chat.chats[0].client_closed


async def test_streaming_stt_refused_at_start_hands_the_call_to_the_fallback_assistant(
        autojump_clock):
    listen = MockListenServer(script=ListenScript(reject_with_status=503))
    chat = MockChatServer(script=ChatScript())
    script = CallerScript().hangup(at=4.0)
    async with pipeline_net({"api.openai.com": chat},
                            {"api.deepgram.com/v1/listen": listen}) as net:
        out = await run_session(script, cfg=config(stt="deepgram",
                                                   extra="fallback_assistant: backup"),
                                net=net, env=KEYS)
    rec = out.record
    assert rec.assistant == "backup"
    assert rec.fallback_from["assistant"] == "bot"
    assert "503" in rec.fallback_from["error"]
    assert rec.turns[0].agent_text == "This is the backup assistant."
    assert rec.turns[0].first_frame_sent is not None and rec.turns[0].first_frame_sent < 0.5


async def test_streaming_stt_dying_mid_call_fails_over(autojump_clock):
    listen = MockListenServer(script=ListenScript(transcripts=["what are your opening hours"],
                                                  disconnect_after_utterances=1))
    chat = MockChatServer(script=ChatScript(replies={"opening hours": Reply("Nine to five.")}))
    script = CallerScript().speak(caller_says("what are your opening hours", 1.0), at=2.0)
    script = script.hangup(at=20.0)
    async with pipeline_net({"api.openai.com": chat},
                            {"api.deepgram.com/v1/listen": listen}) as net:
        out = await run_session(script, cfg=config(stt="deepgram"), net=net, env=KEYS)
    assert out.ended.status == "TRANSFERRED" and out.ended.transfer_to == "operator"
    assert "STT" in out.ended.reason
    assert "apology" in [a.kind for a in out.record.actions]


async def test_tts_socket_dying_mid_sentence_goes_on_by_rest(autojump_clock):
    chat = MockChatServer(script=ChatScript(replies={
        "opening hours": Reply("Nine to five."),
        "goodbye": Reply("Bye now.", tool_calls=(ToolCall("hangup_call", {}),))}))
    script = SpeakScript(disconnect_on_flush=2)
    speak, rest = MockSpeakServer(script=script), MockSpeakRestServer(script=script)
    caller = (CallerScript().speak(caller_says("what are your opening hours", 1.0), at=2.0)
              .speak(caller_says("goodbye", 0.8), at=7.0).hangup(at=20.0))
    async with pipeline_net({"api.openai.com": chat, "api.deepgram.com": rest},
                            {"api.deepgram.com/v1/speak": speak}) as net:
        out = await run_session(caller, cfg=config(tts="deepgram"), net=net, env=KEYS)
    assert out.ended.status == "COMPLETED"
    assert out.record.provider["tts_rest_sentences"] == 2
    assert [r.request.json()["text"] for r in rest.records] == ["Nine to five.", "Bye now."]
    assert out.record.turns[1].heard_text == "Nine to five."


async def test_rules_first_answers_known_intents_without_the_llm(autojump_clock):
    chat = MockChatServer(script=ChatScript(replies={"opening hours": Reply("Nine to five.")}))
    rules = """brain:
      intents:
        - {name: billing, keywords: [billing], reply: "Transferring you to billing.",
           action: {kind: transfer, destination: billing}}"""
    script = (CallerScript().speak(caller_says("what are your opening hours", 1.0), at=2.0)
              .speak(caller_says("please transfer me to the billing department", 1.0), at=6.0)
              .hangup(at=20.0))
    async with pipeline_net({"api.openai.com": chat}) as net:
        out = await run_session(script, cfg=config(llm_extra=", rules_first: true", extra=rules),
                                net=net, env=KEYS)
    assert len(chat.chats) == 1  # the hours question only
    turns = out.record.turns
    assert (turns[1].intent, turns[1].agent_text) == ("llm", "Nine to five.")
    assert (turns[2].intent, turns[2].agent_text) == ("billing", "Transferring you to billing.")
    assert out.ended.status == "TRANSFERRED" and out.ended.transfer_to == "billing"


async def test_keypad_digits_reach_the_llm_as_one_message(autojump_clock):
    chat = MockChatServer(script=ChatScript(replies={"keypad": Reply("Got it.")}))
    script = CallerScript().dtmf("12#", at=1.5, gap=0.3).hangup(at=6.0)
    async with pipeline_net({"api.openai.com": chat}) as net:
        out = await run_session(script, cfg=config(), net=net, env=KEYS)
    assert len(chat.chats) == 1
    assert chat.chats[0].messages[-1] == {"role": "user",
                                          "content": "[The caller pressed the keypad: 1 2 #]"}
    turn = out.record.turns[1]
    assert (turn.trigger, turn.caller_text, turn.agent_text) == ("dtmf", "[DTMF 12#]", "Got it.")


async def test_sentences_past_deepgrams_flush_limit_are_said_by_rest(autojump_clock):
    chat = MockChatServer(script=ChatScript(replies={"opening hours": Reply(HOURS)}))
    script = SpeakScript(flush_limit=2)
    speak, rest = MockSpeakServer(script=script), MockSpeakRestServer(script=script)
    caller = CallerScript().speak(caller_says("what are your opening hours", 1.0), at=2.0)
    caller = caller.hangup(at=14.0)
    async with pipeline_net({"api.openai.com": chat, "api.deepgram.com": rest},
                            {"api.deepgram.com/v1/speak": speak}) as net:
        out = await run_session(caller, cfg=config(tts="deepgram"), net=net, env=KEYS)
    # greeting and sentence 1 by the socket; Deepgram warns at the third Flush: REST says it
    assert len(speak.sessions[0].warnings) >= 1
    assert [r.request.json()["text"] for r in rest.records] == [
        "We close at five in the afternoon.", "Saturday is ten to two."]
    assert out.record.turns[1].heard_text == HOURS
