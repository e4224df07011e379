"""The mock Deepgram Voice Agent server against a raw trio-websocket client.

Memory streams under the autojump clock for the conversation flows (exact virtual timings), real
loopback TCP for one full session and the process entry point. Expected message orders are those
of reference/providers.md 2.5.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing
import trio_websocket

from media_sidecar.dsp.g711 import alaw_encode, ulaw_decode, ulaw_encode
from tests.mocks.client import RawClient
from tests.mocks.deepgram_agent import PATH, AgentScript, MockAgentServer, SessionLog
from tests.mocks.deepgram_agent.audio import EnergyVad, InputDecoder

ROOT = Path(__file__).resolve().parents[2]
AUTH = [(b"Authorization", b"Token test-key")]
TRANSFER = {
    "name": "transfer_call",
    "description": "Transfer the caller",
    "parameters": {
        "type": "object",
        "properties": {"extension": {"type": "string"}},
        "required": ["extension"],
    },
}
SETTINGS: dict[str, Any] = {
    "type": "Settings",
    "tags": ["asterisk"],
    "flags": {"history": True},
    "audio": {
        "input": {"encoding": "mulaw", "sample_rate": 8000},
        "output": {"encoding": "mulaw", "sample_rate": 8000, "container": "none"},
    },
    "agent": {
        "listen": {"provider": {"type": "deepgram", "version": "v1", "model": "nova-3"}},
        "think": {
            "provider": {"type": "open_ai", "model": "gpt-4o-mini"},
            "prompt": "You are a helpful phone agent for ACME.",
            "functions": [TRANSFER],
        },
        "speak": {"provider": {"type": "deepgram", "model": "aura-2-thalia-en"}},
    },
}
WIDTH = {"mulaw": 1, "alaw": 1, "linear16": 2}
REPLY = ["ConversationText", "History", "AgentStartedSpeaking", "Audio", "AgentAudioDone"]


def settings(
    *,
    input: tuple[str, int] = ("mulaw", 8000),
    output: tuple[str, int] = ("mulaw", 8000),
    greeting: str | None = None,
) -> dict[str, Any]:
    s = copy.deepcopy(SETTINGS)
    s["audio"]["input"] = {"encoding": input[0], "sample_rate": input[1]}
    s["audio"]["output"].update(encoding=output[0], sample_rate=output[1])
    if greeting is not None:
        s["agent"]["greeting"] = greeting
    return s


def frame(encoding: str, rate: int, amplitude: int) -> bytes:
    """20 ms of a 1 kHz tone in the given input format."""
    pcm = (amplitude * np.sin(2 * np.pi * 1000 * np.arange(rate // 50) / rate)).astype("<i2")
    if encoding == "mulaw":
        return ulaw_encode(pcm)
    if encoding == "alaw":
        return alaw_encode(pcm)
    return pcm.tobytes()


class Client(RawClient):
    """A raw client: every server message is kept with its arrival time (runtime clock); binary
    frames as ``{"type": "Audio", "data": ...}``."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        super().__init__(ws)
        self.input = ("mulaw", 8000)

    def types(self, start: int = 0) -> list[str]:
        """Message types from index ``start``; a run of audio frames is listed once."""
        out: list[str] = []
        for e in self.events[start:]:
            if not (e["type"] == "Audio" and out and out[-1] == "Audio"):
                out.append(e["type"])
        return out

    def audio(self, start: int = 0, end: int | None = None) -> list[bytes]:
        return [e["data"] for e in self.events[start:end] if e["type"] == "Audio"]

    async def apply(self, message: dict[str, Any]) -> None:
        self.input = (
            message["audio"]["input"]["encoding"],
            message["audio"]["input"]["sample_rate"],
        )
        await self.send(**message)
        await self.wait("SettingsApplied")

    async def speak(self, loud_ms: int, quiet_ms: int) -> None:
        """Send 20 ms frames in real (runtime) time: ``loud_ms`` of tone, then silence."""
        loud, quiet = frame(*self.input, 8000), frame(*self.input, 0)
        for f in [loud] * (loud_ms // 20) + [quiet] * (quiet_ms // 20):
            await self.ws.send_message(f)
            await trio.sleep(0.02)


@asynccontextmanager
async def session(
    server: MockAgentServer,
    headers: list[tuple[bytes, bytes]] = AUTH,
    apply: dict[str, Any] | None = None,
    subprotocols: list[str] | None = None,
) -> AsyncIterator[tuple[Client, SessionLog]]:
    """A client connected to ``server`` over an in-memory stream pair, past Welcome (and past
    SettingsApplied when ``apply`` is given)."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    n = len(server.sessions) + 1
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve_stream, server_stream)
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            client_stream,  # type: ignore[arg-type]
            "localhost",
            PATH,
            subprotocols=subprotocols,
            extra_headers=headers,
        )
        client = Client(ws)
        nursery.start_soon(client.reader)
        log = await server.wait_for_session(n)
        await client.wait("Welcome")
        if apply is not None:
            await client.apply(apply)
        yield client, log
        await ws.aclose()
        nursery.cancel_scope.cancel()


async def rejected_upgrade(
    server: MockAgentServer, headers: list[tuple[bytes, bytes]], path: str = PATH
) -> trio_websocket.ConnectionRejected:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    with pytest.RaisesGroup(trio_websocket.ConnectionRejected) as group:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.serve_stream, server_stream)
            await trio_websocket.wrap_client_stream(
                nursery,
                client_stream,  # type: ignore[arg-type]
                "localhost",
                path,
                extra_headers=headers,
            )
    await client_stream.aclose()
    rejected = group.value.exceptions[0]
    assert isinstance(rejected, trio_websocket.ConnectionRejected)
    return rejected


@asynccontextmanager
async def tcp_server(server: MockAgentServer) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        yield port
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def tcp_client(
    port: int, headers: list[tuple[bytes, bytes]] = AUTH
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """The test owns the socket: trio-websocket 0.12 does not close it after an abnormal close."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(
                nursery, stream, "localhost", PATH, extra_headers=headers
            )
            yield ws
            await ws.aclose()
            nursery.cancel_scope.cancel()


# -- handshake ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "scheme"),
    [
        ([(b"Authorization", b"Token test-key")], "Token"),
        ([(b"Authorization", b"Bearer test-key")], "Bearer"),
        ([], "subprotocol"),  # browser style: Sec-WebSocket-Protocol: token, <key>
    ],
)
async def test_upgrade_accepts_token_bearer_and_subprotocol(
    autojump_clock: trio.abc.Clock, headers: list[tuple[bytes, bytes]], scheme: str
) -> None:
    server = MockAgentServer()
    protocols = ["token", "test-key"] if scheme == "subprotocol" else None
    async with session(server, headers, subprotocols=protocols) as (client, log):
        welcome = client.events[0]
        assert welcome == {"type": "Welcome", "request_id": log.request_id}
        assert uuid.UUID(welcome["request_id"]).version == 4
        assert log.auth_scheme == scheme and log.path == PATH
        assert "test-key" not in json.dumps(log.headers)  # the credential is redacted
        if scheme == "subprotocol":
            assert client.ws.subprotocol == "token"


@pytest.mark.parametrize(
    "headers",
    [
        [(b"Authorization", b"Token wrong")],
        [(b"Authorization", b"Basic test-key")],
        [(b"Authorization", b"test-key")],
        [],
    ],
)
async def test_upgrade_without_the_key_is_refused_with_401_and_a_deepgram_body(
    autojump_clock: trio.abc.Clock, headers: list[tuple[bytes, bytes]]
) -> None:
    server = MockAgentServer()
    rejected = await rejected_upgrade(server, headers)
    assert rejected.status_code == 401
    body = json.loads(rejected.body or b"")
    (log,) = server.rejected
    assert body == {
        "err_code": "INVALID_AUTH",
        "err_msg": "Invalid credentials.",
        "request_id": log.request_id,
    }
    assert log.rejected_status == 401 and server.sessions == []


async def test_wrong_path_is_404_and_reject_with_status_refuses_every_upgrade(
    autojump_clock: trio.abc.Clock,
) -> None:
    rejected = await rejected_upgrade(MockAgentServer(), AUTH, "/v1/agent")
    assert rejected.status_code == 404
    down = MockAgentServer(script=AgentScript(reject_with_status=503))
    rejected = await rejected_upgrade(down, AUTH)
    assert rejected.status_code == 503
    assert json.loads(rejected.body or b"")["err_code"] == "SERVICE_UNAVAILABLE"
    assert [log.rejected_status for log in down.rejected] == [503]


# -- settings -------------------------------------------------------------------------------------
async def test_welcome_then_settings_then_settings_applied(autojump_clock: trio.abc.Clock) -> None:
    async with session(MockAgentServer()) as (client, log):
        await client.send(**settings())
        await client.wait("SettingsApplied")
        assert client.types() == ["Welcome", "SettingsApplied"]
        assert log.settings == settings() and log.problems == []
        assert (await log.wait_for("Settings"))["agent"]["think"]["functions"] == [TRANSFER]
        # Update* are acknowledged and change the effective config, not the received Settings
        await client.send(type="UpdatePrompt", prompt="Be brief.")
        await client.send(
            type="UpdateSpeak", speak={"provider": {"type": "deepgram", "model": "aura-2-zeus-en"}}
        )
        await client.send(
            type="UpdateThink", think={"provider": {"type": "open_ai", "model": "gpt-4o"}}
        )
        listen = {"provider": {"type": "deepgram", "version": "v1", "model": "nova-3"}}
        await client.send(type="UpdateListen", listen=listen)
        await client.wait("ListenUpdated")
        assert client.types(2) == ["PromptUpdated", "SpeakUpdated", "ThinkUpdated", "ListenUpdated"]
        assert log.config is not None and log.config["agent"]["think"] == {
            "provider": {"type": "open_ai", "model": "gpt-4o"}
        }
        assert log.config["agent"]["speak"]["provider"]["model"] == "aura-2-zeus-en"
        assert log.settings["agent"]["think"]["prompt"] == SETTINGS["agent"]["think"]["prompt"]


async def test_update_prompt_appends_to_the_prompt(autojump_clock: trio.abc.Clock) -> None:
    async with session(MockAgentServer(), apply=settings()) as (client, log):
        await client.send(type="UpdatePrompt", prompt="Be brief.")
        await client.wait("PromptUpdated")
        assert log.config is not None
        assert log.config["agent"]["think"]["prompt"] == (
            "You are a helpful phone agent for ACME.\nBe brief."
        )


LP = ("agent", "listen", "provider")
FLUX = {"type": "deepgram", "version": "v2", "model": "flux-general-en"}
SPEAK = {"provider": {"type": "deepgram", "model": "aura-2-thalia-en"}}
OPENAI_TTS = {"type": "open_ai", "model": "tts-1", "voice": "alloy"}


def _drop(*path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(s: dict[str, Any]) -> None:
        for key in path[:-1]:
            s = s[key]
        del s[path[-1]]

    return mutate


def _set(value: Any, *path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(s: dict[str, Any]) -> None:
        for key in path[:-1]:
            s = s[key]
        s[path[-1]] = value

    return mutate


PARSE = "UNPARSABLE_CLIENT_MESSAGE"


@pytest.mark.parametrize(
    ("mutate", "code", "needle"),
    [
        (_drop("audio", "input", "sample_rate"), PARSE, "audio.input.sample_rate"),
        (_set("pcm", "audio", "input", "encoding"), PARSE, "audio.input.encoding"),
        (_set("wav", "audio", "output", "encoding"), PARSE, "audio.output.encoding"),
        (_drop("agent"), PARSE, "agent"),
        (_set(3, "agent", "greeting"), PARSE, "agent.greeting"),
        (_set("x", "agent", "instructions"), PARSE, "agent.instructions"),
        (_set([{"name": "f"}], "agent", "think", "functions"), PARSE, "functions[0].description"),
        (_set("not-a-uuid", "agent"), PARSE, "agent"),
        (_drop("agent", "think"), "INVALID_SETTINGS", "agent.think"),
        (_set([TRANSFER, TRANSFER], "agent", "think", "functions"), "INVALID_SETTINGS", "twice"),
        (_set(24000, "audio", "output", "sample_rate"), "INVALID_SETTINGS", "24000"),
        (_set("mp3", "audio", "output", "encoding"), "INVALID_SETTINGS", "mp3"),
        (_set("wav", "audio", "output", "container"), "INVALID_SETTINGS", "wav"),
        # Flux (listen v2, providers-2026-update.md 3.2) and speak fallbacks (3.7)
        (_set({**FLUX, "language": "en"}, *LP), PARSE, "agent.listen.provider.language"),
        (_set({**FLUX, "smart_format": True}, *LP), PARSE, "provider.smart_format"),
        (_set({"type": "deepgram", "version": "v2"}, *LP), PARSE, "agent.listen.provider.model"),
        (_set({**FLUX, "eot_threshold": 1.1}, *LP), "INVALID_SETTINGS", "eot_threshold"),
        (_set({**FLUX, "eager_eot_threshold": 0.2}, *LP), "INVALID_SETTINGS", "eager_eot"),
        (_set({**FLUX, "eot_timeout_ms": 1.5}, *LP), PARSE, "eot_timeout_ms"),
        (_set({**FLUX, "language_hints": ["de"]}, *LP), "INVALID_SETTINGS", "language_hints"),
        (_set({**FLUX, "model": "nova-3"}, *LP), "INVALID_SETTINGS", "not a Flux model"),
        (_set({**FLUX, "version": "v3"}, *LP), PARSE, "agent.listen.provider.version"),
        (_set([SPEAK, {"provider": OPENAI_TTS}], "agent", "speak"), "INVALID_SETTINGS",
         "agent.speak[1].endpoint is required"),
        (_set([SPEAK, {"provider": OPENAI_TTS, "endpoint": {"url": "wss://x"}}], "agent", "speak"),
         "INVALID_SETTINGS", "agent.speak[1].endpoint.url"),
    ],
)
async def test_invalid_settings_end_the_session_with_an_error(
    autojump_clock: trio.abc.Clock,
    mutate: Callable[[dict[str, Any]], None],
    code: str,
    needle: str,
) -> None:
    bad = settings()
    mutate(bad)
    async with session(MockAgentServer()) as (client, log):
        await client.send(**bad)
        error = await client.wait("Error")
        reason = await client.wait_closed()
    assert error["code"] == code and needle in error["description"]
    assert set(error) == {"type", "description", "code"}
    assert reason.code == 1005  # an empty close frame follows the Error
    assert "SettingsApplied" not in client.types()
    assert log.close_reason == f"error:{code}" and log.settings is None


async def test_binary_audio_before_settings_is_an_error(autojump_clock: trio.abc.Clock) -> None:
    async with session(MockAgentServer()) as (client, log):
        await client.ws.send_message(frame("mulaw", 8000, 0))
        error = await client.wait("Error")
        await client.wait_closed()
    assert error["code"] == PARSE and "before Settings" in error["description"]
    assert log.problems == ["binary audio before SettingsApplied"]


@pytest.mark.parametrize("message", ["{not json", '["Settings"]', '{"type": "NoSuchThing"}'])
async def test_unparsable_or_unknown_messages_end_the_session(
    autojump_clock: trio.abc.Clock, message: str
) -> None:
    async with session(MockAgentServer(), apply=settings()) as (client, log):
        await client.ws.send_message(message)
        error = await client.wait("Error")
        assert (await client.wait_closed()).code == 1005
    assert error == {
        "type": "Error",
        "description": "Text message received from client did not match any of the formats "
        "we expect.",
        "code": PARSE,
    }
    assert log.close_reason == f"error:{PARSE}" and len(log.problems) == 1


def test_vad_over_linear16_split_at_odd_byte_boundaries_matches_whole_frames() -> None:
    loud, quiet = frame("linear16", 16000, 8000), frame("linear16", 16000, 0)
    stream = loud * 10 + quiet * 30
    events: dict[int, list[bool]] = {}
    for size in (640, 333):  # whole 20 ms frames, and pieces that split samples
        decoder, vad = InputDecoder("linear16", 16000), EnergyVad(16000, 500.0, 60, 500)
        pieces = [stream[i : i + size] for i in range(0, len(stream), size)]
        events[size] = [e for piece in pieces for e in vad.feed(decoder.decode(piece))]
        assert decoder.ms(len(stream)) == 800
    assert events[640] == events[333] == [True, False]


# -- agent audio ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "output", [("mulaw", 8000), ("alaw", 8000), ("linear16", 16000), ("linear16", 24000)]
)
async def test_greeting_is_spoken_in_the_requested_encoding_and_rate(
    autojump_clock: trio.abc.Clock, output: tuple[str, int]
) -> None:
    server = MockAgentServer(script=AgentScript(reply_ms=500, chunk_ms=100))
    greeting = "Thanks for calling ACME, how can I help?"
    async with session(server, apply=settings(output=output, greeting=greeting)) as (client, log):
        await client.wait("AgentAudioDone")
        assert client.types(1) == [
            "SettingsApplied",
            "ConversationText",
            "History",
            "Audio",
            "AgentAudioDone",
        ]
        assert (await client.wait("ConversationText")) == {
            "type": "ConversationText",
            "role": "assistant",
            "content": greeting,
        }
        encoding, rate = output
        chunks = client.audio()
        assert [len(c) for c in chunks] == [100 * rate // 1000 * WIDTH[encoding]] * 5
        assert sum(map(len, chunks)) == 500 * rate // 1000 * WIDTH[encoding]
        (speech,) = log.speeches
        assert (speech.kind, speech.ms_sent, speech.done) == ("greeting", 500.0, True)
        if encoding == "linear16":
            pcm = np.frombuffer(b"".join(chunks), dtype="<i2").astype(np.float32)
            assert 5000 < np.sqrt(np.mean(pcm * pcm)) < 6000  # the tone at amplitude 8000


@pytest.mark.parametrize(
    "input", [("mulaw", 8000), ("alaw", 8000), ("linear16", 16000), ("linear16", 48000)]
)
async def test_spoken_turn_gets_a_reply(
    autojump_clock: trio.abc.Clock, input: tuple[str, int]
) -> None:
    script = AgentScript(
        transcripts=["what time do you open"],
        replies=["We open at nine."],
        reply_ms=1000,
        total_latency=0.5,
    )
    async with session(MockAgentServer(script=script), apply=settings(input=input)) as (
        client,
        log,
    ):
        start = len(client.events)
        t0 = trio.current_time()
        await client.speak(1000, 600)
        await client.wait("AgentAudioDone")
        assert client.types(start) == ["UserStartedSpeaking", "ConversationText", "History", *REPLY]
        # onset as the 60th ms of tone arrives; the turn ends with the 500th ms of silence
        assert client.times[start] - t0 == pytest.approx(0.04)
        user = await client.wait("ConversationText")
        assert user == {
            "type": "ConversationText",
            "role": "user",
            "content": "what time do you open",
        }
        assert (await client.wait("ConversationText", 2))["content"] == "We open at nine."
        assert client.times[start + 1] - t0 == pytest.approx(1.48)
        started = await client.wait("AgentStartedSpeaking")
        assert started == {
            "type": "AgentStartedSpeaking",
            "total_latency": 0.5,
            "tts_latency": 0.21,
            "ttt_latency": 0.61,
        }
        chunks = client.audio()
        assert [len(c) for c in chunks] == [800] * 10  # 100 ms frames of mu-law 8 kHz
        pcm = ulaw_decode(b"".join(chunks)).astype(np.float32)
        assert 5000 < np.sqrt(np.mean(pcm * pcm)) < 6000
        audio_times = [
            t for t, e in zip(client.times, client.events, strict=True) if e["type"] == "Audio"
        ]
        assert audio_times[-1] - audio_times[0] == pytest.approx(9 * 0.025)  # 4x real time
    assert log.audio_in_ms == 1600 and log.audio_in_frames == 80
    assert log.user_texts == ["what time do you open"] and log.turns == 1
    assert [(s.kind, s.turn, s.ms_sent, s.done) for s in log.speeches] == [
        ("reply", 1, 1000.0, True)
    ]
    assert log.audio_out_bytes == 8000 and log.count("Audio", sent=True) == 10
    assert log.problems == []


async def test_barge_in_stops_the_reply_audio_at_once(autojump_clock: trio.abc.Clock) -> None:
    script = AgentScript(
        replies=["We open at nine a.m. and close at six."], reply_ms=3000, send_rate=1.0
    )
    async with session(MockAgentServer(script=script), apply=settings()) as (client, log):
        await client.speak(400, 500)  # the reply starts as the 500th ms of silence arrives
        await client.wait("AgentStartedSpeaking")
        await client.speak(0, 600)  # 600 ms of the reply go out, then the caller talks over it
        await client.speak(200, 0)
        barge = client.index("UserStartedSpeaking", 2)
        assert client.audio(barge) == []
        await client.speak(0, 100)  # nothing more of the cut reply arrives
        assert client.audio(barge) == [] and client.types().count("AgentAudioDone") == 0
        (cut,) = log.interrupted
        assert cut.ms_sent == 700.0  # frames at 0, 100, ..., 600 ms
        assert sum(map(len, client.audio(0, barge))) == 700 * 8 == cut.bytes_sent
        assert not cut.done and cut.total_ms == 3000
        # the interrupting speech is a turn of its own, answered in full
        await client.speak(0, 400)
        await client.wait("AgentAudioDone")
        assert client.types(barge) == ["UserStartedSpeaking", "ConversationText", "History", *REPLY]
        assert [s.interrupted for s in log.speeches] == [True, False]


async def test_first_byte_delay_holds_the_audio(autojump_clock: trio.abc.Clock) -> None:
    script = AgentScript(first_byte_delay=0.7, reply_ms=200)
    async with session(MockAgentServer(script=script), apply=settings()) as (client, _):
        await client.send(type="InjectUserMessage", content="hello")
        await client.wait("AgentAudioDone")
        first = client.index("Audio")
        text = client.index("ConversationText", 2)
        assert client.times[first] - client.times[text] == pytest.approx(0.7)


# -- function calls -------------------------------------------------------------------------------
@pytest.mark.parametrize("before", [None, "One moment please."])
async def test_function_call_round_trip(autojump_clock: trio.abc.Clock, before: str | None) -> None:
    script = AgentScript(
        transcripts=["Please transfer me to Sales."],
        function_calls={"transfer me": ("transfer_call", {"extension": "200"})},
        speak_before_call=before,
        after_tool_reply="Transferring you to sales now.",
        reply_ms=200,
    )
    async with session(MockAgentServer(script=script), apply=settings()) as (client, log):
        start = len(client.events)
        await client.speak(400, 500)
        request = await client.wait("FunctionCallRequest")
        spoken = [*REPLY] if before else []
        assert client.types(start) == [
            "UserStartedSpeaking",
            "ConversationText",
            "History",
            *spoken,
            "FunctionCallRequest",
        ]
        call = {
            "id": "fc_1",
            "name": "transfer_call",
            "arguments": '{"extension":"200"}',
            "client_side": True,
        }
        assert request == {"type": "FunctionCallRequest", "functions": [call]}
        # a response for an unknown id is a Warning; the request keeps waiting
        await client.send(
            type="FunctionCallResponse", id="fc_9", name="transfer_call", content="{}"
        )
        warning = await client.wait("Warning")
        assert warning["code"] == "UNKNOWN_FUNCTION_CALL_ID"
        mark = len(client.events)
        await client.send(
            type="FunctionCallResponse", id="fc_1", name="transfer_call", content='{"ok":true}'
        )
        await client.wait("AgentAudioDone", 2 if before else 1)
        assert client.types(mark) == ["History", *REPLY]
        history = client.events[mark]
        assert history == {
            "type": "History",
            "function_calls": [{**call, "response": '{"ok":true}'}],
        }
        reply = client.events[mark + 1]
        assert reply["content"] == "Transferring you to sales now."
    assert log.function_requests == [call]
    assert [r["id"] for r in log.function_responses] == ["fc_9", "fc_1"]
    assert log.problems == ["FunctionCallResponse for unknown id 'fc_9'"]
    kinds = [s.kind for s in log.speeches]
    assert kinds == (["before_call", "after_tool"] if before else ["after_tool"])


async def test_server_side_and_undeclared_functions(autojump_clock: trio.abc.Clock) -> None:
    lookup = {
        "name": "lookup",
        "description": "Look up",
        "parameters": {"type": "object"},
        "endpoint": {"url": "https://example.com/lookup", "method": "post"},
    }
    s = settings()
    s["agent"]["think"]["functions"] = [TRANSFER, lookup]
    script = AgentScript(
        function_calls={"look": ("lookup", {"q": "x"}), "weather": ("get_weather", {})},
        after_tool_reply="Found it.",
        reply_ms=100,
    )
    async with session(MockAgentServer(script=script), apply=s) as (client, log):
        await client.send(type="InjectUserMessage", content="look it up")
        await client.wait("AgentAudioDone")
        request = (await client.wait("FunctionCallRequest"))["functions"][0]
        assert request["client_side"] is False  # has an endpoint: the server runs it
        response = await client.wait("FunctionCallResponse")
        assert response == {
            "type": "FunctionCallResponse",
            "id": request["id"],
            "name": "lookup",
            "content": '{"mock":"not executed"}',
        }
        await client.send(type="InjectUserMessage", content="and the weather?")
        await client.wait("AgentAudioDone", 2)
        assert client.types().count("FunctionCallRequest") == 1
        assert (await client.wait("ConversationText", 4))["content"] == "reply 2"
    assert log.problems == ["script calls 'get_weather', not declared in the Settings"]


# -- injections -----------------------------------------------------------------------------------
async def test_inject_user_message_is_a_user_turn(autojump_clock: trio.abc.Clock) -> None:
    script = AgentScript(replies=["You pressed five."], reply_ms=200)
    async with session(MockAgentServer(script=script), apply=settings()) as (client, log):
        start = len(client.events)
        await client.send(type="InjectUserMessage", content="DTMF 5")
        await client.wait("AgentAudioDone")
        assert client.types(start) == ["ConversationText", "History", *REPLY]
        assert client.events[start] == {
            "type": "ConversationText",
            "role": "user",
            "content": "DTMF 5",
        }
        assert client.events[start + 1] == {"type": "History", "role": "user", "content": "DTMF 5"}
        assert (await client.wait("ConversationText", 2))["content"] == "You pressed five."
    assert log.injected_user == ["DTMF 5"] and log.user_texts == ["DTMF 5"] and log.turns == 1


async def test_history_flag_false_suppresses_history(autojump_clock: trio.abc.Clock) -> None:
    s = settings()
    s["flags"] = {"history": False}
    async with session(MockAgentServer(script=AgentScript(reply_ms=100)), apply=s) as (client, _):
        await client.send(type="InjectUserMessage", content="hi")
        await client.wait("AgentAudioDone")
        assert "History" not in client.types()


async def test_inject_agent_message_spoken_refused_and_content_alias(
    autojump_clock: trio.abc.Clock,
) -> None:
    script = AgentScript(reply_ms=400, send_rate=1.0)
    async with session(MockAgentServer(script=script), apply=settings()) as (client, log):
        await client.send(type="InjectAgentMessage", message="Are you still there?")
        await client.wait("AgentAudioDone")
        said = await client.wait("ConversationText")
        assert (said["role"], said["content"]) == ("assistant", "Are you still there?")
        # while the user speaks (or the agent is mid-turn) a default injection is refused
        await client.speak(100, 0)
        await client.send(type="InjectAgentMessage", message="Hello?")
        refused = await client.wait("InjectionRefused")
        assert "user is speaking" in refused["message"]
        await client.speak(0, 500)
        await client.wait("AgentStartedSpeaking", 2)  # reply to "utterance 1" is playing
        await client.send(type="InjectAgentMessage", message="Hello?")
        assert "mid-turn" in (await client.wait("InjectionRefused", 2))["message"]
        await client.wait("AgentAudioDone", 2)
        await client.send(type="InjectAgentMessage", content="Goodbye.")  # AVA's field name
        await client.wait("AgentAudioDone", 3)
        assert (await client.wait("ConversationText", 4))["content"] == "Goodbye."
    assert log.injected_agent == ["Are you still there?", "Hello?", "Hello?", "Goodbye."]
    assert log.problems == ["InjectAgentMessage used 'content' (spec: 'message')"]
    assert [s.kind for s in log.speeches] == ["inject", "reply", "inject"]


# -- keepalive and idle timeout -------------------------------------------------------------------
async def test_keepalive_keeps_an_idle_session_open_and_its_absence_ends_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with session(MockAgentServer(), apply=settings()) as (client, log):
        t0 = trio.current_time()
        for _ in range(5):  # 40 s without audio, a KeepAlive every 8 s
            await trio.sleep(8)
            await client.send(type="KeepAlive")
        await log.wait_for("KeepAlive", 5)
        assert client.closed is None and client.types() == ["Welcome", "SettingsApplied"]
        error = await client.wait("Error")
        assert (await client.wait_closed()).code == 1005
        assert client.times[-1] - t0 == pytest.approx(50)  # 10 s after the last KeepAlive
    assert error["code"] == "CLIENT_MESSAGE_TIMEOUT"
    assert [t - t0 for t in log.keepalive_times] == pytest.approx([8, 16, 24, 32, 40])
    assert log.close_reason == "error:CLIENT_MESSAGE_TIMEOUT"


# -- scripted faults ------------------------------------------------------------------------------
async def test_error_after_turns_replaces_the_nth_turn(autojump_clock: trio.abc.Clock) -> None:
    script = AgentScript(error_after_turns=2, reply_ms=100)
    async with session(MockAgentServer(script=script), apply=settings()) as (client, log):
        await client.send(type="InjectUserMessage", content="one")
        await client.wait("AgentAudioDone")
        await client.send(type="InjectUserMessage", content="two")
        error = await client.wait("Error")
        assert (await client.wait_closed()).code == 1005
    assert error["code"] == "INTERNAL_SERVER_ERROR"
    assert client.types()[-3:] == ["ConversationText", "History", "Error"]
    assert log.turns == 2 and len(log.speeches) == 1


async def test_disconnect_mid_turn_drops_the_stream(autojump_clock: trio.abc.Clock) -> None:
    script = AgentScript(disconnect_mid_turn=1, reply_ms=1000)
    async with session(MockAgentServer(script=script), apply=settings()) as (client, log):
        await client.send(type="InjectUserMessage", content="hello")
        reason = await client.wait_closed()
    assert reason.code == 1006  # no close frame: abnormal closure
    assert len(client.audio()) == 5 and "AgentAudioDone" not in client.types()
    assert log.close_reason == "disconnect_mid_turn" and log.speeches[0].ms_sent == 500


# -- real sockets ---------------------------------------------------------------------------------
async def test_full_session_over_loopback_tcp() -> None:
    server = MockAgentServer(script=AgentScript(send_rate=0, reply_ms=1000))
    async with tcp_server(server) as port:
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            with pytest.RaisesGroup(trio_websocket.ConnectionRejected) as group:
                async with trio.open_nursery() as nursery:
                    await trio_websocket.wrap_client_stream(
                        nursery,
                        stream,
                        "localhost",
                        PATH,
                        extra_headers=[(b"Authorization", b"Bearer nope")],
                    )
        async with tcp_client(port, [(b"Authorization", b"Bearer test-key")]) as ws:
            types = [json.loads(await ws.get_message())["type"]]
            await ws.send_message(json.dumps(settings(output=("linear16", 16000))))
            await ws.send_message(json.dumps({"type": "InjectUserMessage", "content": "hi"}))
            nbytes = 0
            while types[-1] != "AgentAudioDone":
                message = await ws.get_message()
                if isinstance(message, bytes):
                    nbytes += len(message)
                    if types[-1] != "Audio":
                        types.append("Audio")
                else:
                    types.append(json.loads(message)["type"])
    rejected = group.value.exceptions[0]
    assert isinstance(rejected, trio_websocket.ConnectionRejected) and rejected.status_code == 401
    assert types == ["Welcome", "SettingsApplied", "ConversationText", "History", *REPLY]
    assert nbytes == 1000 * 16 * 2
    await server.sessions[0].closed.wait()
    assert server.sessions[0].close_reason == "client"


async def test_process_writes_ready_file_serves_and_stops_on_stdin_eof(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    os.mkfifo(ready)  # opening a FIFO blocks until the writer does: no polling
    cmd = [
        sys.executable,
        "-m",
        "tests.mocks.deepgram_agent",
        "--port",
        "0",
        "--ready",
        str(ready),
        "--api-key",
        "K",
        "--reply-ms",
        "200",
        "--send-rate",
        "0",
    ]
    proc = await trio.lowlevel.open_process(cmd, cwd=ROOT, stdin=subprocess.PIPE)
    try:
        with trio.fail_after(30):
            info = json.loads(
                await trio.to_thread.run_sync(ready.read_text, abandon_on_cancel=True)
            )
            assert info["pid"] == proc.pid
            async with tcp_client(info["port"], [(b"Authorization", b"Token K")]) as ws:
                assert json.loads(await ws.get_message())["type"] == "Welcome"
            assert proc.stdin is not None
            await proc.stdin.aclose()
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if proc.stdin is not None:
            await proc.stdin.aclose()


async def test_function_call_cancelled_drops_the_turn(autojump_clock: trio.abc.Clock) -> None:
    """SDK 7.17 ``agent_v1function_call_cancelled.py``: ``functions[{id, name}]``; the client
    sends no response for those. A response later than a crossing is a problem."""
    script = AgentScript(
        transcripts=["Please transfer me to Sales."],
        function_calls={"transfer me": ("transfer_call", {"extension": "200"})},
        cancel_function_calls_after=0.25,
        reply_ms=200,
    )
    async with session(MockAgentServer(script=script), apply=settings()) as (client, log):
        await client.speak(400, 500)
        await client.wait("FunctionCallRequest")
        cancelled = await client.wait("FunctionCallCancelled")
        kinds = [e["type"] for e in client.events]
        sent = client.times[kinds.index("FunctionCallCancelled")]
        assert sent - client.times[kinds.index("FunctionCallRequest")] == pytest.approx(0.25)
        assert cancelled == {
            "type": "FunctionCallCancelled",
            "functions": [{"id": "fc_1", "name": "transfer_call"}],
        }
        report = await client.wait("LatencyReport")
        assert "ttt_tool_latency" in report  # a tool turn's report
        await trio.sleep(1)
        await client.send(
            type="FunctionCallResponse", id="fc_1", name="transfer_call", content="{}"
        )
        await client.wait("Warning")
    assert log.cancelled_calls == ["fc_1"] and log.crossed_responses == []
    assert "AgentAudioDone" not in client.types()  # no after-tool reply, no History
    assert not [e for e in client.events if e["type"] == "History" and "function_calls" in e]
    assert log.problems == ["FunctionCallResponse for cancelled id 'fc_1'"]


async def test_a_response_crossing_its_cancellation_is_tolerated(
    autojump_clock: trio.abc.Clock,
) -> None:
    script = AgentScript(
        transcripts=["transfer me"],
        function_calls={"transfer me": ("transfer_call", {"extension": "200"})},
        cancel_function_calls_after=0.0,
    )
    async with session(MockAgentServer(script=script), apply=settings()) as (client, log):
        await client.send(type="InjectUserMessage", content="transfer me")
        await client.wait("FunctionCallRequest")
        await client.send(
            type="FunctionCallResponse", id="fc_1", name="transfer_call", content="{}"
        )
        await client.wait("FunctionCallCancelled")
        await trio.sleep(0.5)
    assert [r["id"] for r in log.crossed_responses] == ["fc_1"]
    assert log.problems == [] and log.count("Warning", sent=True) == 0


@pytest.mark.parametrize("figures", [None, {"total_latency": 0.5}])
async def test_latency_report_after_each_turn(
    autojump_clock: trio.abc.Clock, figures: dict[str, float] | None
) -> None:
    """providers-2026-update.md 3.1: after each turn, every field optional (seconds)."""
    kw: dict[str, Any] = {} if figures is None else {"latency_report": figures}
    script = AgentScript(transcripts=["hello"], reply_ms=200, **kw)
    async with session(MockAgentServer(script=script), apply=settings()) as (client, _):
        await client.speak(400, 500)
        await client.wait("AgentAudioDone")
        report = await client.wait("LatencyReport")
        assert client.types()[-2:] == ["AgentAudioDone", "LatencyReport"]
    if figures is None:
        assert report == {"type": "LatencyReport", "stt_latency": 0.12,
                          "ttt_token_latency": 0.34, "ttt_text_latency": 0.36,
                          "tts_latency": 0.18, "total_latency": 0.71}
    else:
        assert report == {"type": "LatencyReport", "total_latency": 0.5}


async def test_flux_listen_and_fallback_arrays_are_accepted(autojump_clock: trio.abc.Clock) -> None:
    """The Settings shape of providers-2026-update.md 3.2 and 3.7, as the product sends it."""
    good = settings()
    good["agent"]["listen"]["provider"] = {
        **FLUX, "model": "flux-general-multi", "eot_threshold": 1.0,
        "eager_eot_threshold": 0.5, "eot_timeout_ms": 5000, "keyterms": ["ACME"],
        "language_hints": ["en", "de"],
    }
    good["agent"]["speak"] = [
        SPEAK,
        {"provider": OPENAI_TTS, "endpoint": {"url": "https://api.openai.com/v1/audio/speech",
                                              "headers": {"authorization": "Bearer k"}}},
    ]
    think = good["agent"]["think"]
    good["agent"]["think"] = [think, {**think, "provider": {"type": "anthropic",
                                                            "model": "claude-3-5-haiku-latest"}}]
    async with session(MockAgentServer(), apply=good) as (client, log):
        assert "SettingsApplied" in client.types()
    assert log.problems == []


async def test_listen_version_omitted_is_inferred_and_noted(autojump_clock: trio.abc.Clock) -> None:
    good = settings()
    del good["agent"]["listen"]["provider"]["version"]
    good["agent"]["listen"]["provider"]["language"] = "en"  # a V1-only key: inferred v1
    async with session(MockAgentServer(), apply=good) as (_, log):
        pass
    assert log.problems == [
        "agent.listen.provider.version omitted (send it: it is the discriminator)"
    ]


@pytest.mark.parametrize(
    ("provider", "needle"),
    [
        ({**FLUX, "model": "flux-general-multi"}, "type, version and model"),
        ({"type": "deepgram", "version": "v1", "model": "nova-3", "keyterms": ["x"]}, "Flux"),
    ],
)
async def test_update_listen_keeps_the_identity_and_keyterms_need_flux(
    autojump_clock: trio.abc.Clock, provider: dict[str, Any], needle: str
) -> None:
    """asyncapi AgentV1UpdateListen: identity (type, version, model) must match; 3.3:
    keyterms mid-session only for Flux."""
    async with session(MockAgentServer(), apply=settings()) as (client, _):
        await client.send(type="UpdateListen", listen={"provider": provider})
        error = await client.wait("Error")
    assert error["code"] == "INVALID_SETTINGS" and needle in error["description"]


async def test_update_listen_changes_flux_end_of_turn(autojump_clock: trio.abc.Clock) -> None:
    good = settings()
    good["agent"]["listen"]["provider"] = dict(FLUX)
    async with session(MockAgentServer(), apply=good) as (client, log):
        provider = {**FLUX, "eot_threshold": 0.8, "keyterms": ["order number"]}
        await client.send(type="UpdateListen", listen={"provider": provider})
        await client.wait("ListenUpdated")
    assert log.config is not None and log.config["agent"]["listen"]["provider"] == provider
