"""Fuzzing each speech-to-speech provider's event parsing through its public ``run``: a valid
handshake, then messages with known event types and arbitrary field values, raw text,
non-objects and over-deep JSON. Property: only ProviderError (the typed error) ends the
session, and the relay port is only ever handed values of the types it declares."""

from __future__ import annotations

import base64
import json

from hypothesis import given
from hypothesis import strategies as st

from media_sidecar.config.schema import DeepgramAgentConfig, LiveConfig, RealtimeConfig
from media_sidecar.providers.base import ProviderSetup
from media_sidecar.providers.deepgram_agent import DeepgramAgentSession
from media_sidecar.providers.openai_live import OpenAILiveSession
from media_sidecar.providers.openai_realtime import OpenAIRealtimeSession
from media_sidecar.tools.spec import ToolSpec

from .budget import fuzz
from .providers_harness import run_session
from .strategies import json_text, json_value

ENV = {"OPENAI_API_KEY": "k", "DEEPGRAM_API_KEY": "k", "FUZZ_KEY": "k"}
SETUP = ProviderSetup(instructions="Be brief.", greeting="Hello.",
                      tools=[ToolSpec("lookup", "Look up.", {"type": "object"})])
AUDIO = base64.b64encode(b"\x7f" * 160).decode()

REALTIME_EVENTS = [
    "session.created", "session.updated", "response.output_audio.delta", "response.audio.delta",
    "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
    "response.output_audio.done", "response.output_audio_transcript.done",
    "conversation.item.input_audio_transcription.completed", "response.created",
    "response.function_call_arguments.done", "response.done", "error",
]
REALTIME_FIELDS = ["session", "delta", "item_id", "audio_end_ms", "transcript", "call_id",
                   "name", "arguments", "response", "error", "audio", "format", "input",
                   "output", "status", "usage", "code", "message", "rate"]
REALTIME_START = [json.dumps({"type": "session.created"}), json.dumps({
    "type": "session.updated", "session": {"audio": {
        "input": {"format": {"type": "audio/pcmu"}}, "output": {"format": {"type": "audio/pcmu"}}}}})]

DEEPGRAM_EVENTS = ["Welcome", "SettingsApplied", "UserStartedSpeaking", "ConversationText",
                   "AgentAudioDone", "AgentStartedSpeaking", "LatencyReport",
                   "FunctionCallRequest", "FunctionCallCancelled", "Error", "Warning",
                   "InjectionRefused"]
DEEPGRAM_FIELDS = ["content", "role", "functions", "id", "name", "arguments", "client_side",
                   "code", "description", "message", "total_latency", "tts_latency",
                   "ttt_latency", "stt_latency"]
DEEPGRAM_START = [json.dumps({"type": "Welcome"}), json.dumps({"type": "SettingsApplied"})]

LIVE_EVENTS = ["session.started", "session.output_audio.delta", "session.input_transcript.delta",
               "session.output_transcript.delta", "session.delegation.created",
               "response.event", "session.usage.updated", "session.closed", "error", "info"]
LIVE_FIELDS = ["session", "delta", "start_ms", "end_ms", "delegation", "delegation_id", "event",
               "usage", "reason", "error", "code", "message", "audio", "format", "id", "target",
               "item", "response", "call_id", "name", "arguments", "seconds"]
LIVE_START = [json.dumps({"type": "session.started", "session": {
    "audio": {"format": {"type": "audio/pcmu", "rate": 8000}}}})]


def script(start: list[str], events: list[str], fields: list[str], *, binary: bool = False):
    message = json_text(events, fields)
    if binary:
        message = st.one_of(message, st.binary(max_size=400))
    good_audio = st.just(json.dumps({"type": events[2], "delta": AUDIO, "item_id": "a"}))
    return st.builds(lambda pre, body: pre + body,
                     st.sampled_from([start, start[:1], []]),
                     st.lists(st.one_of(message, good_audio), max_size=14))


@fuzz(0.5)
@given(script(REALTIME_START, REALTIME_EVENTS, REALTIME_FIELDS),
       st.sampled_from(["server_vad", "none"]))
def test_openai_realtime_events(messages, turns):
    cfg = RealtimeConfig(turn_detection=turns)
    run_session(lambda connect: OpenAIRealtimeSession(cfg, SETUP, env=ENV, connect=connect),
                messages)


@fuzz(0.5)
@given(script(DEEPGRAM_START, DEEPGRAM_EVENTS, DEEPGRAM_FIELDS, binary=True))
def test_deepgram_agent_events(messages):
    cfg = DeepgramAgentConfig(api_key_env="FUZZ_KEY")
    run_session(lambda connect: DeepgramAgentSession(cfg, SETUP, env=ENV, connect=connect),
                messages)


@fuzz(0.5)
@given(script(LIVE_START, LIVE_EVENTS, LIVE_FIELDS),
       st.dictionaries(st.sampled_from(["type", "item", "response", "status", "usage"]),
                       json_value, max_size=4))
def test_openai_live_events(messages, inner):
    # a well-formed response.event wrapper with a fuzzed inner event reaches the tool path
    messages = [*messages, json.dumps({"type": "response.event", "delegation_id": "d",
                                       "event": {"type": "response.output_item.done", **inner}},
                                      allow_nan=True)]
    run_session(lambda connect: OpenAILiveSession(LiveConfig(), SETUP, env=ENV,
                                                  connect=connect), messages)
