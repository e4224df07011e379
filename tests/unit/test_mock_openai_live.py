"""The GPT-Live mock against providers-2026-update.md section 1 (1.13), driven by a raw client
over in-memory streams in virtual time; every server event it sends is checked against the
openai SDK 3.63 ``types/live`` server event union (strictly: unknown keys are errors)."""

from __future__ import annotations

import base64
import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing
import trio_websocket
from openai.types.live.client_event_param import ClientEventParam
from openai.types.live.server_event import ServerEvent

from media_sidecar.dsp.g711 import ulaw_encode
from tests.contracts.strict import check
from tests.mocks.client import RawClient
from tests.mocks.openai_live import LiveScript, MockLiveServer, SessionLog
from tests.mocks.openai_live.script import AUDIO_OUT
from tests.mocks.openai_live.wire import PATH

AUTH = [(b"Authorization", b"Bearer test-key")]
TOOL = {"type": "function", "name": "transfer_call", "description": "Transfer the caller",
        "parameters": {"type": "object", "properties": {"extension": {"type": "string"}},
                       "required": ["extension"], "additionalProperties": False}}
START: dict[str, Any] = {
    "type": "session.start", "event_id": "start_1",
    "session": {
        "model": "gpt-live-1", "instructions": "You are ACME's phone receptionist.",
        "audio": {"format": {"type": "audio/pcmu", "rate": 8000}, "output": {"voice": "marin"}},
        "delegation": {"type": "responses", "acknowledgement_delay_ms": 400, "responses": {
            "model": "gpt-5.6-luna", "instructions": "Run tasks.", "tools": [TOOL],
            "tool_choice": "auto", "parallel_tool_calls": False}}}}


def start(**session: Any) -> dict[str, Any]:
    event = copy.deepcopy(START)
    event["session"].update(session)
    return event


def frame(amplitude: int) -> str:
    pcm = (amplitude * np.sin(2 * np.pi * 1000 * np.arange(160) / 8000)).astype("<i2")
    return base64.b64encode(ulaw_encode(pcm)).decode("ascii")


class Client(RawClient):
    async def speak(self, loud_ms: int, quiet_ms: int) -> None:
        """20 ms mu-law frames in runtime time: ``loud_ms`` of tone, then silence."""
        for f in [frame(8000)] * (loud_ms // 20) + [frame(0)] * (quiet_ms // 20):
            try:
                await self.send(type="session.input_audio.append", audio=f)
            except trio_websocket.ConnectionClosed:
                return  # the server ended the session (a scripted fault)
            await trio.sleep(0.02)

    def audio_times(self) -> list[float]:
        return [t for e, t in zip(self.events, self.times, strict=True) if e["type"] == AUDIO_OUT]

    def loud_deltas(self) -> int:
        return sum(1 for e in self.events if e["type"] == AUDIO_OUT
                   and base64.b64decode(e["delta"]) != base64.b64decode(
                       e["delta"])[:1] * len(base64.b64decode(e["delta"])))


def contract(log: SessionLog, client: bool = True) -> list[str]:
    """Departures from the SDK types of what the mock sent (and the client, unless wrong on
    purpose)."""
    return ([p for m in log.server_messages for p in check(m, ServerEvent)]
            + [p for m in log.client_messages if client for p in check(m, ClientEventParam)])


@asynccontextmanager
async def session(server: MockLiveServer, first: dict[str, Any] | None = START,
                  client_contract: bool = True) -> AsyncIterator[tuple[Client, SessionLog]]:
    """A client connected over an in-memory stream pair; past ``session.started`` when
    ``first`` is the default start."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    n = len(server.sessions) + 1
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve_stream, server_stream)
        ws = await trio_websocket.wrap_client_stream(
            nursery, client_stream, "localhost", PATH, extra_headers=AUTH)  # type: ignore[arg-type]
        client = Client(ws)
        nursery.start_soon(client.reader)
        log = await server.wait_for_session(n)
        if first is not None:
            await client.send(**first)
            if first is START:
                await client.wait("session.started")
        yield client, log
        await ws.aclose()
        nursery.cancel_scope.cancel()
    assert contract(log, client_contract) == []


async def rejected(server: MockLiveServer, path: str,
                   headers: list[tuple[bytes, bytes]] = AUTH) -> int:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    with pytest.RaisesGroup(trio_websocket.ConnectionRejected) as group:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.serve_stream, server_stream)
            await trio_websocket.wrap_client_stream(
                nursery, client_stream, "localhost", path,  # type: ignore[arg-type]
                extra_headers=headers)
    await client_stream.aclose()
    exc = group.value.exceptions[0]
    assert isinstance(exc, trio_websocket.ConnectionRejected)
    return exc.status_code or 0


async def test_upgrade_wants_the_path_no_query_and_a_bearer_key(autojump_clock):
    server = MockLiveServer()
    assert await rejected(server, "/v1/realtime") == 404
    assert await rejected(server, PATH + "?model=gpt-live-1") == 400
    assert await rejected(server, PATH, [(b"Authorization", b"Bearer nope")]) == 401
    assert await rejected(MockLiveServer(script=LiveScript(reject_with_status=503)), PATH) == 503


async def test_started_echoes_the_client_event_id_and_the_resolved_session(autojump_clock):
    server = MockLiveServer()
    async with session(server) as (client, log):
        started = await client.wait("session.started")
        assert started["client_event_id"] == "start_1"
        s = started["session"]
        assert s["status"] == "active" and s["id"].startswith("sess_")
        assert s["audio"]["format"] == {"type": "audio/pcmu", "rate": 8000}
        await client.speak(0, 100)  # appends are never acknowledged
        assert log.count("session.input_audio.append") == 5
        assert client.types().count("session.started") == 1
        assert {t for t in client.types() if t != AUDIO_OUT} == {"session.started"}
    assert log.problems == []


@pytest.mark.parametrize(("session_fields", "code", "param"), [
    ({"voice": "cedar"}, "unknown_parameter", "session.voice"),
    ({"turn_detection": None}, "unknown_parameter", "session.turn_detection"),
    ({"audio": {"format": {"type": "audio/pcmu"}}}, "missing_required_parameter",
     "session.audio.format.rate"),
    ({"audio": {"format": {"type": "audio/pcm", "rate": 8000}}}, "invalid_value",
     "session.audio.format.rate"),
    ({"model": ""}, "missing_required_parameter", "session.model"),
])
async def test_session_start_is_strict(autojump_clock, session_fields, code, param):
    server = MockLiveServer()
    async with session(server, start(**session_fields), client_contract=False) as (client, log):
        error = await client.wait("error")
        assert (error["error"]["code"], error["error"]["param"]) == (code, param)
        assert error["client_event_id"] == "start_1"
        assert (await client.wait_closed()).code == 1000
    assert log.problems and log.close_reason == "refused_start"


async def test_anything_before_session_start_is_an_error(autojump_clock):
    server = MockLiveServer()
    async with session(server, first=None) as (client, log):
        await client.send(type="session.input_audio.append", audio=frame(0))
        error = await client.wait("error")
        assert error["error"]["code"] == "session_not_started"
        await client.send(**START)
        await client.wait("session.started")
    assert log.problems == ["session.input_audio.append refused: session_not_started: "
                            "'session.input_audio.append' before session.start: send "
                            "session.start first."]


async def test_commentary_greets_paced_in_real_time_with_silence_between(autojump_clock):
    server = MockLiveServer(script=LiveScript(reply_ms=400))
    async with session(server) as (client, log):
        await client.send(type="session.commentary.append", event_id="greet_1",
                          delegation_id=None, content='Greet the caller: "Hello there."')
        await client.wait("session.commentary.appended")
        await trio.sleep(1.0)
        times = client.audio_times()
        assert np.allclose(np.diff(times), 0.02)  # one 20 ms delta every 20 ms
        assert client.loud_deltas() == 20  # 400 ms of speech, the rest silence
        words = [e["delta"] for e in client.events
                 if e["type"] == "session.output_transcript.delta"]
        assert "".join(words) == " Hello there."
        assert [s.text for s in log.speeches] == ["Hello there."]


async def test_caller_speech_interrupts_the_model_and_is_transcribed(autojump_clock):
    server = MockLiveServer(script=LiveScript(reply_ms=2000, transcripts=["sales please"],
                                              replies=["Hi.", "Sure."]))
    async with session(server) as (client, log):
        await client.send(type="session.commentary.append", delegation_id=None,
                          content="greet")
        await trio.sleep(0.5)
        await client.speak(400, 600)  # talks over the greeting
        first, rest = [e for e in client.events if e["type"] == "session.input_transcript.delta"]
        assert (first["delta"], rest["delta"]) == (" sales", " please")
        assert first["start_ms"] == 0 and first["end_ms"] == 60
        assert rest["end_ms"] == 400
        (cut,) = log.interrupted
        assert cut.text == "Hi." and 0 < cut.frames_sent < cut.total_frames
        assert log.user_texts == ["sales please"]
        await trio.sleep(2.5)
        assert [s.text for s in log.speeches] == ["Hi.", "Sure."]


async def test_muted_input_is_silence_to_the_model(autojump_clock):
    server = MockLiveServer(script=LiveScript(reply_ms=2000))
    async with session(server) as (client, log):
        await client.send(type="session.input_audio.mute", event_id="m1")
        assert (await client.wait("session.input_audio.muted"))["client_event_id"] == "m1"
        await client.speak(400, 600)
        assert log.user_texts == [] and log.muted_at is not None


async def test_delegation_round_trip_and_early_response_create(autojump_clock):
    server = MockLiveServer(script=LiveScript(
        reply_ms=200, transcripts=["sales please"], speak_before_call="One moment.",
        function_calls={"sales": ("transfer_call", {"extension": "200"})},
        after_tool_reply="Transferring you."))
    async with session(server) as (client, log):
        await client.speak(400, 600)
        created = await client.wait("session.delegation.created")
        assert created["delegation"]["target"] == "responses"
        await client.wait("response.event", 3)
        done = [e["event"] for e in client.events if e["type"] == "response.event"]
        assert [e["type"] for e in done] == ["response.created", "response.output_item.done",
                                             "response.completed"]
        item = done[1]["item"]
        assert (item["name"], item["arguments"]) == ("transfer_call", '{"extension":"200"}')
        await client.send(type="response.create", event_id="early")
        error = await client.wait("error")
        assert error["error"]["code"] == "function_call_outputs_required"
        await client.send(type="response.item.create", item={
            "type": "function_call_output", "call_id": "call_nope", "output": "{}"})
        await client.wait("error", 2)
        await client.send(type="response.item.create", item={
            "type": "function_call_output", "call_id": item["call_id"], "output": '{"ok":true}'})
        await client.send(type="response.create")
        await client.wait("response.event", 5)
        await trio.sleep(0.6)
        assert [s.kind for s in log.speeches] == ["acknowledgement", "after_tool"]
        assert log.function_outputs[0]["call_id"] == item["call_id"]
    assert len(log.problems) == 2  # the early response.create and the unknown call id


async def test_a_non_null_delegation_id_is_refused_under_responses_delegation(autojump_clock):
    server = MockLiveServer()
    async with session(server) as (client, log):
        await client.send(type="session.thinking.append", delegation_id="del_1", content="x")
        assert (await client.wait("error"))["error"]["param"] == "delegation_id"
        await client.send(type="session.thinking.append", delegation_id=None, content="x")
        await client.wait("session.thinking.appended")
    assert len(log.problems) == 1


async def test_session_close_answers_with_usage_and_closed(autojump_clock):
    server = MockLiveServer()
    async with session(server) as (client, log):
        await trio.sleep(3)
        await client.send(type="session.close", event_id="close_1")
        closed = await client.wait("session.closed")
        assert closed["reason"] == "close_requested" and closed["client_event_id"] == "close_1"
        assert closed["usage"]["seconds"] == pytest.approx(3.0, abs=0.05)
        assert client.types(client.index("session.usage.updated"))[-2:] == [
            "session.usage.updated", "session.closed"]
        assert (await client.wait_closed()).code == 1000
    assert log.closed_reason == "close_requested"


async def test_scripted_faults(autojump_clock):
    server = MockLiveServer(script=LiveScript(reply_ms=400, close_after_turns=1))
    async with session(server) as (client, log):
        await client.speak(300, 600)
        closed = await client.wait("session.closed")
        assert closed["reason"] == "connection_lost"
    server = MockLiveServer(script=LiveScript(reply_ms=400, disconnect_mid_turn=1))
    async with session(server) as (client, log):
        await client.speak(300, 600)
        assert (await client.wait_closed()).code == 1006
    assert log.close_reason == "disconnect_mid_turn"
    server = MockLiveServer(script=LiveScript(refuse_start=("insufficient_quota", "Quota.")))
    async with session(server, first=start()) as (client, log):
        assert (await client.wait("error"))["error"]["code"] == "insufficient_quota"
        assert (await client.wait_closed()).code == 1000
    assert log.close_reason == "refused_start"
