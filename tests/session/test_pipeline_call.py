"""Pipeline calls: the product's stage clients against the protocol mocks over in-memory
streams, through the real AudioSocket server and the emulator's Asterisk side, virtual time."""

from __future__ import annotations

import numpy as np

from fastagi_server.emulator.caller import CallerScript
from media_sidecar.config.loader import parse_config
from tests.fakes import tone
from tests.mocks.deepgram_listen import ListenScript, MockListenServer
from tests.mocks.deepgram_speak import MockSpeakServer, SpeakScript
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
    llm: {engine: LLM, url: LLM_URL}
    tts: {engine: TTS}
    greeting: "Hello {caller_name}, how can I help?"
    instructions: "You answer calls for ACME. The caller is {caller_name}."
    barge_in: {greeting_protection_ms: 0}
    destinations:
      sales: {context: from-internal, exten: "2002", description: sales team}
      operator: {context: from-internal, exten: "0"}
    fallback_destination: operator
"""


def config(stt="deepgram", llm="openai", tts="deepgram", llm_url="", extra=""):
    text = (YAML.replace("STT", stt).replace("LLM_URL", f'"{llm_url}"').replace("LLM", llm)
            .replace("TTS", tts)) + extra
    return parse_config(text, "pipeline.yaml")


CHAT = ChatScript(replies={
    "opening hours": Reply("We open at nine. We close at five on weekdays."),
    "goodbye": Reply("Thanks for calling, goodbye!", tool_calls=(ToolCall("hangup_call", {}),)),
})


def loud(out) -> list[float]:
    return [f.t - out.t0 for f in out.asterisk.audio_frames()
            if np.abs(np.frombuffer(f.payload, dtype="<i2")).max(initial=0) > 300]


async def test_deepgram_stt_openai_llm_deepgram_tts_full_call(autojump_clock):
    listen = MockListenServer(script=ListenScript(transcripts=["what are your opening hours",
                                                               "goodbye"]))
    speak = MockSpeakServer(script=SpeakScript())
    chat = MockChatServer(script=CHAT)
    script = CallerScript().speak(tone(500, 1.0), at=4.0).speak(tone(400, 0.8), at=10.0)
    script = script.hangup(at=30.0)
    async with pipeline_net({"api.openai.com": chat},
                            {"api.deepgram.com/v1/listen": listen,
                             "api.deepgram.com/v1/speak": speak}) as net:
        out = await run_session(script, cfg=config(), net=net, env=KEYS)
    rec = out.record
    assert out.ended.status == "COMPLETED", out.ended
    assert [t.trigger for t in rec.turns] == ["start", "speech", "speech"]
    assert rec.turns[0].agent_text == "Hello Ada Lovelace, how can I help?"
    assert rec.turns[1].caller_text == "what are your opening hours"
    assert rec.turns[1].agent_text == "We open at nine. We close at five on weekdays."
    assert rec.turns[1].heard_text == rec.turns[1].agent_text
    assert rec.turns[2].caller_text == "goodbye"
    assert rec.turns[2].agent_text == "Thanks for calling, goodbye!"
    assert [a.tool for a in rec.actions if a.kind == "tool"] == ["hangup_call"]
    # the LLM saw the templated system prompt and the heard history
    msgs = chat.chats[-1].messages
    assert msgs[0] == {"role": "system",
                       "content": "You answer calls for ACME. The caller is Ada Lovelace."}
    assert [m["role"] for m in msgs[1:4]] == ["assistant", "user", "assistant"]
    q = listen.sessions[0].query
    assert q["encoding"] == ["linear16"] and q["sample_rate"] == ["8000"]
    assert speak.sessions[0].query["sample_rate"] == ["8000"]
    for t in rec.turns:
        print(t.index, t.stage_ms, t.latency_ms)
    print(rec.provider)
