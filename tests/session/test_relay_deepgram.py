"""Deepgram Voice Agent calls: the product's client against the protocol mock over an in-memory
WebSocket, through the real AudioSocket server and the emulator's Asterisk side, virtual time."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trio

from fastagi_server.emulator.caller import CallerScript
from media_sidecar.config.loader import parse_config
from media_sidecar.protocol.control import CallContext
from media_sidecar.providers import make_setup
from media_sidecar.providers.base import ProviderError
from media_sidecar.providers.deepgram_agent import DeepgramAgentSession
from media_sidecar.tools.spec import ToolReply
from tests.fakes import dominant_freq, tone
from tests.mocks.deepgram_agent import AgentScript, MockAgentServer
from tests.session.harness import run_session
from tests.session.providers import deepgram_factory, memory_connector

YAML = """
routing: {default: dg}
assistants:
  dg:
    provider: deepgram_agent
    greeting: "Hello {caller_name}."
    instructions: "You answer calls for ACME. The caller is {caller_name}."
    deepgram: {keyterms: [ACME]}
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


def config(extra: str = ""):
    return parse_config(YAML.replace("EXTRA", extra), "dg.yaml")


def loud_times(out) -> list[float]:
    return [f.t for f in out.asterisk.audio_frames()
            if np.abs(np.frombuffer(f.payload, dtype="<i2")).max(initial=0) > 300]


async def test_greeting_then_an_answer_with_transcripts_and_latency(autojump_clock):
    mock = MockAgentServer(script=AgentScript(reply_ms=1000, transcripts=["what time is it"],
                                              replies=["It is noon."]))
    script = CallerScript().speak(tone(500, 1.0), at=2.0).hangup(at=6.0)
    out = await run_session(script, cfg=config(), provider_factory=deepgram_factory(mock))

    log = mock.sessions[0]
    s = log.settings
    assert s["audio"] == {"input": {"encoding": "mulaw", "sample_rate": 8000},
                          "output": {"encoding": "mulaw", "sample_rate": 8000,
                                     "container": "none"}}
    agent = s["agent"]
    assert agent["greeting"] == "Hello Ada Lovelace."
    assert agent["think"]["prompt"] == "You answer calls for ACME. The caller is Ada Lovelace."
    assert [f["name"] for f in agent["think"]["functions"]] == ["transfer_call", "hangup_call"]
    assert agent["listen"]["provider"]["keyterms"] == ["ACME"]
    assert log.auth_scheme == "Token"
    # greeting (1 s) and answer (1 s) heard as the mock's 440 Hz tone, on the 20 ms grid
    loud = loud_times(out)
    assert 98 <= len(loud) <= 102
    frames = [np.frombuffer(f.payload, dtype="<i2") for f in out.asterisk.audio_frames()]
    assert abs(dominant_freq(np.concatenate(frames), 8000) - 440) < 15
    turns = out.record.turns
    assert [t.trigger for t in turns] == ["start", "speech"]
    assert turns[0].agent_text == "Hello Ada Lovelace."
    assert (turns[1].caller_text, turns[1].agent_text) == ("what time is it", "It is noon.")
    # caller end of speech -> first agent frame: the mock's 500 ms end-of-speech wait + a tick
    assert turns[1].latency_ms is not None and 500 <= turns[1].latency_ms <= 560
    assert out.ended.status == "CALLER_HANGUP"


async def test_barge_in_flushes_within_a_frame_and_drops_the_rest(autojump_clock):
    mock = MockAgentServer(script=AgentScript(reply_ms=3000, send_rate=1.0))
    script = (CallerScript().speak(tone(500, 0.8), at=3.5)
              .barge_in(tone(600, 0.8), utterance=2, delay=1.0).hangup(at=9.0))
    out = await run_session(script, cfg=config(), provider_factory=deepgram_factory(mock))

    log = mock.sessions[0]
    assert len(log.interrupted) == 1
    assert out.record.barge_ins == 1 and out.record.turns[1].interrupted
    barge = out.record.barge_in_at[0] + out.asterisk.started_at
    answer = [t for t in loud_times(out) if t > out.asterisk.started_at + 3.1]
    assert answer, "the answer was never heard"
    assert not [t for t in answer if barge + 0.021 < t < barge + 0.5]


async def test_transfer_waits_for_what_the_agent_says_after_the_tool(autojump_clock):
    mock = MockAgentServer(script=AgentScript(
        reply_ms=1000, transcripts=["sales please"],
        function_calls={"sales": ("transfer_call", {"destination": "sales"})},
        after_tool_reply="Transferring you to sales now."))
    script = CallerScript().speak(tone(500, 1.0), at=2.0).hangup(at=20.0)
    out = await run_session(script, cfg=config(), provider_factory=deepgram_factory(mock))

    assert (out.ended.status, out.ended.transfer_to) == ("TRANSFERRED", "sales")
    (req,) = out.control.requests
    assert req.exten == "2002"
    (resp,) = mock.sessions[0].function_responses
    assert json.loads(resp["content"])["status"] == "transferring"
    assert 98 <= len(loud_times(out)) <= 102  # greeting + the whole announcement


async def test_refused_destination_goes_back_to_the_model(autojump_clock):
    mock = MockAgentServer(script=AgentScript(
        reply_ms=600, transcripts=["the boss"],
        function_calls={"boss": ("transfer_call", {"destination": "ceo"})},
        after_tool_reply="I can't do that."))
    script = CallerScript().speak(tone(500, 1.0), at=1.5).hangup(at=8.0)
    out = await run_session(script, cfg=config(), provider_factory=deepgram_factory(mock))
    assert out.control.requests == []
    (resp,) = mock.sessions[0].function_responses
    assert json.loads(resp["content"])["ok"] is False
    assert out.ended.status == "CALLER_HANGUP"


async def test_hangup_plays_the_farewell_and_mutes_the_caller(autojump_clock):
    mock = MockAgentServer(script=AgentScript(
        reply_ms=1000, transcripts=["bye"], function_calls={"bye": ("hangup_call", {})},
        after_tool_reply="Goodbye, thanks for calling."))
    script = (CallerScript().speak(tone(500, 0.8), at=1.5)
              .barge_in(tone(600, 0.6), utterance=2, delay=0.2).hangup(at=20.0))
    out = await run_session(script, cfg=config("deepgram: {keepalive_seconds: 0.5}"),
                            provider_factory=deepgram_factory(mock))

    assert out.ended.status == "COMPLETED"
    assert 98 <= len(loud_times(out)) <= 102  # greeting + the whole farewell
    log = mock.sessions[0]
    assert not log.interrupted  # the caller's words never reached Deepgram: nothing was cut
    assert log.keepalive_times  # audio stopped, so KeepAlive kept the socket open


async def test_keypad_digits_are_injected_as_a_user_message(autojump_clock):
    mock = MockAgentServer(script=AgentScript(reply_ms=500, replies=["Thanks."]))
    script = CallerScript().dtmf("7*", at=1.5).dtmf("#", at=2.2).hangup(at=6.0)
    out = await run_session(script, cfg=config(), provider_factory=deepgram_factory(mock))
    assert mock.sessions[0].injected_user == ["(The caller pressed these keypad keys: 7 * #)"]
    assert out.record.turns[-1].trigger == "dtmf"


async def test_error_mid_call_apologises_and_transfers_to_the_fallback(autojump_clock):
    mock = MockAgentServer(script=AgentScript(reply_ms=800, error_after_turns=1))
    script = CallerScript().speak(tone(500, 0.8), at=1.5).hangup(at=20.0)
    out = await run_session(script, cfg=config(), provider_factory=deepgram_factory(mock))
    assert (out.ended.status, out.ended.transfer_to) == ("TRANSFERRED", "operator")
    assert "INTERNAL_SERVER_ERROR" in out.record.provider["error"]
    assert [a.kind for a in out.record.actions] == ["apology", "transfer"]


async def test_bad_key_at_start_hands_the_call_to_the_fallback_assistant(autojump_clock):
    mock = MockAgentServer(api_key="right")
    out = await run_session(CallerScript().hangup(at=4.0),
                            cfg=config("fallback_assistant: local"),
                            provider_factory=deepgram_factory(mock, key="wrong"))
    assert mock.rejected[0].rejected_status == 401
    assert out.record.assistant == "local"
    assert "401" in out.record.fallback_from["error"]
    assert out.record.turns[0].agent_text == "This is the backup assistant."


async def test_keepalive_keeps_an_idle_session_open(autojump_clock):
    mock = MockAgentServer(script=AgentScript(idle_timeout=10.0))
    a = config().assistant("dg")
    provider = DeepgramAgentSession(a.deepgram, make_setup(a, CallContext()),
                                    env={"DEEPGRAM_API_KEY": "test-key"},
                                    connect=memory_connector(mock.serve_stream, "dg"))
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, _Port())
        await trio.sleep(30)  # no caller audio at all for 30 s (virtual)
        nursery.cancel_scope.cancel()
    log = mock.sessions[0]
    assert log.close_reason is None or "TIMEOUT" not in log.close_reason
    gaps = np.diff(log.keepalive_times)
    assert len(log.keepalive_times) >= 3 and np.allclose(gaps, 8.0, atol=0.05)


# -- FunctionCallCancelled (SDK 7.17 agent_v1function_call_cancelled.py) ----------------------

async def test_a_cancelled_transfer_never_redirects_and_the_call_goes_on(autojump_clock):
    # the transfer was answered at once; the cancellation crosses the response on the wire
    mock = MockAgentServer(script=AgentScript(
        reply_ms=600, transcripts=["sales please", "never mind"], replies=["Sure."],
        function_calls={"sales": ("transfer_call", {"destination": "sales"})},
        cancel_function_calls_after=0.3))
    script = (CallerScript().speak(tone(500, 0.8), at=1.5).speak(tone(500, 0.8), at=8.0)
              .hangup(at=14.0))
    out = await run_session(script, cfg=config(), provider_factory=deepgram_factory(mock))

    log = mock.sessions[0]
    assert log.cancelled_calls == ["fc_1"] and not log.problems
    assert out.control.requests == []  # never redirected
    assert out.ended.status == "CALLER_HANGUP"
    assert [(a.kind, a.result) for a in out.record.actions if a.kind != "tool"] == [
        ("transfer", "cancelled by the provider")]
    # the caller is heard again: the second utterance got its answer
    assert log.user_texts == ["sales please", "never mind"]
    assert out.record.turns[-1].agent_text == "Sure."


async def test_a_transfer_cancelled_right_behind_its_request_never_redirects(autojump_clock):
    mock = MockAgentServer(script=AgentScript(
        reply_ms=600, transcripts=["sales please"],
        function_calls={"sales": ("transfer_call", {"destination": "sales"})},
        cancel_function_calls_after=0.0))
    script = CallerScript().speak(tone(500, 0.8), at=1.5).hangup(at=12.0)
    out = await run_session(script, cfg=config(), provider_factory=deepgram_factory(mock))
    assert out.control.requests == []
    assert out.ended.status == "CALLER_HANGUP"
    assert not mock.sessions[0].problems  # no response after the cancellation


async def test_a_cancelled_hangup_never_hangs_up(autojump_clock):
    mock = MockAgentServer(script=AgentScript(
        reply_ms=600, transcripts=["bye", "one more thing"], replies=["Yes?"],
        function_calls={"bye": ("hangup_call", {})}, cancel_function_calls_after=0.3))
    script = (CallerScript().speak(tone(500, 0.8), at=1.5).speak(tone(500, 0.8), at=8.0)
              .hangup(at=14.0))
    out = await run_session(script, cfg=config(), provider_factory=deepgram_factory(mock))
    assert out.ended.status == "CALLER_HANGUP"  # not COMPLETED by the model's hang-up
    assert ("hangup", "cancelled by the provider") in [(a.kind, a.result)
                                                       for a in out.record.actions]
    assert mock.sessions[0].user_texts == ["bye", "one more thing"]


async def test_latency_report_goes_into_the_turn_beside_our_figures(autojump_clock):
    mock = MockAgentServer(script=AgentScript(reply_ms=600, replies=["It is noon."]))
    script = CallerScript().speak(tone(500, 0.8), at=2.0).hangup(at=6.0)
    out = await run_session(script, cfg=config(), provider_factory=deepgram_factory(mock))
    greeting, answer = out.record.turns
    assert greeting.provider_latency_ms == {}  # the greeting is not a turn for Deepgram
    assert answer.provider_latency_ms == {
        "stt_latency": 120.0, "ttt_token_latency": 340.0, "ttt_text_latency": 360.0,
        "tts_latency": 180.0, "total_latency": 710.0}
    assert answer.latency_ms is not None


class _Port:
    """The least a provider session needs, to watch it alone; ``call_tool`` takes
    ``tool_seconds`` (a webhook in flight) and notes what it finished."""

    def __init__(self, tool_seconds: float = 0.0) -> None:
        self.tool_seconds = tool_seconds
        self.tools_done: list[str] = []
        self.withdrawn: list[str] = []
        self.latency: list[tuple[str, dict[str, float]]] = []

    def agent_audio(self, pcm, item_id, t_in): pass
    def agent_audio_done(self, item_id): pass
    def caller_speech_started(self): return None
    def caller_speech_stopped(self, audio_end_ms): pass
    def transcript(self, role, text): pass
    def response_done(self, status, usage): pass

    def tool_cancelled(self, name):
        self.withdrawn.append(name)
        return False

    def provider_latency(self, item_id, figures):
        self.latency.append((item_id, dict(figures)))

    async def call_tool(self, name, arguments):
        await trio.sleep(self.tool_seconds)
        self.tools_done.append(name)
        return ToolReply('{"ok": true}')


def _provider(mock, yaml_extra: str = ""):
    a = config(yaml_extra).assistant("dg")
    return DeepgramAgentSession(a.deepgram, make_setup(a, CallContext()),
                                env={"DEEPGRAM_API_KEY": "test-key"},
                                connect=memory_connector(mock.serve_stream, "dg"))


@pytest.mark.parametrize("cancel_after", [0.0, 0.5])
async def test_a_cancelled_webhook_result_is_not_sent(autojump_clock, cancel_after):
    mock = MockAgentServer(script=AgentScript(
        reply_ms=300, function_calls={"weather": ("hangup_call", {})},
        cancel_function_calls_after=cancel_after))
    provider, port = _provider(mock), _Port(tool_seconds=2.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, port)
        provider.send_user_text("what is the weather")
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    log = mock.sessions[0]
    assert log.cancelled_calls == ["fc_1"]
    assert log.function_responses == [] and not log.problems
    assert port.tools_done == []  # cancelled in flight: its result never existed
    assert port.withdrawn == []


FLUX = """deepgram:
      listen_version: v2
      listen_model: flux-general-en
      eot_threshold: 0.8
      eot_timeout_ms: 4000
      keyterms: [ACME]
      speak: [{model: aura-2-thalia-en}, {model: aura-2-zeus-en}]
      think: [{model: gpt-4.1-mini}, {provider: anthropic, model: claude-3-5-haiku-latest}]"""


async def test_flux_listen_and_fallback_arrays_reach_the_settings(autojump_clock):
    mock = MockAgentServer(script=AgentScript(reply_ms=600, replies=["It is noon."]))
    script = CallerScript().speak(tone(500, 0.8), at=2.0).hangup(at=6.0)
    out = await run_session(script, cfg=config(FLUX), provider_factory=deepgram_factory(mock))
    agent = mock.sessions[0].settings["agent"]
    assert agent["listen"]["provider"] == {
        "type": "deepgram", "version": "v2", "model": "flux-general-en", "eot_threshold": 0.8,
        "eot_timeout_ms": 4000, "keyterms": ["ACME"]}
    assert [s["provider"]["model"] for s in agent["speak"]] == ["aura-2-thalia-en",
                                                               "aura-2-zeus-en"]
    assert [t["provider"]["type"] for t in agent["think"]] == ["open_ai", "anthropic"]
    assert [f["name"] for f in agent["think"][1]["functions"]] == ["transfer_call",
                                                                   "hangup_call"]
    assert out.record.turns[-1].agent_text == "It is noon."


async def test_announce_and_update_listen_on_the_wire(autojump_clock):
    mock = MockAgentServer(script=AgentScript(reply_ms=300))
    provider, port = _provider(mock, FLUX), _Port()
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, port)
        provider.announce("Please hold while I check that.")
        provider.update_listen(eot_timeout_ms=9000)
        await trio.sleep(2)
        nursery.cancel_scope.cancel()
    log = mock.sessions[0]
    sent = [m for m in log.client_messages if m["type"] in ("InjectAgentMessage", "UpdateListen")]
    assert sent == [
        {"type": "InjectAgentMessage", "message": "Please hold while I check that.",
         "behavior": "queue"},
        {"type": "UpdateListen", "listen": {"provider": {
            "type": "deepgram", "version": "v2", "model": "flux-general-en",
            "eot_threshold": 0.8, "eot_timeout_ms": 9000, "keyterms": ["ACME"]}}}]
    assert [s.kind for s in log.speeches] == ["greeting", "inject"]
    assert log.config["agent"]["listen"]["provider"]["eot_timeout_ms"] == 9000
    assert log.count("ListenUpdated", sent=True) == 1


async def test_a_missing_endpoint_header_variable_is_a_permanent_failure(autojump_clock):
    mock = MockAgentServer()
    provider = _provider(mock, "deepgram: {speak: [{provider: open_ai, model: tts-1, "
                               "voice: alloy, url: 'https://x', "
                               "headers_env: {authorization: NO_SUCH_VAR}}]}")
    with pytest.RaisesGroup(ProviderError, flatten_subgroups=True) as group:
        async with trio.open_nursery() as nursery:
            await nursery.start(provider.run, _Port())
    (exc,) = group.value.exceptions
    assert "NO_SUCH_VAR" in str(exc) and not exc.retryable
