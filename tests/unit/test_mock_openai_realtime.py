"""The mock OpenAI Realtime (GA) server against a raw trio-websocket client.

Memory streams under the autojump clock for the conversation flows (exact virtual timings), real
loopback TCP for the handshake rejection, the abrupt disconnect and the process entry point.
The expected event orders are those of reference/providers.md 1.7 (audio turn), 1.8 (barge-in)
and 1.9 (function call).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing
import trio_websocket

from media_sidecar.dsp.g711 import ulaw_decode, ulaw_encode
from tests.mocks.openai_realtime import MockRealtimeServer, RealtimeScript, SessionLog

ROOT = Path(__file__).resolve().parents[2]
URL = "/v1/realtime?model=gpt-realtime"
AUTH = [(b"Authorization", b"Bearer test-key")]
PCMU = {"type": "audio/pcmu"}
LOUD_20MS = ulaw_encode((8000 * np.sin(2 * np.pi * 1000 * np.arange(160) / 8000)).astype("<i2"))
QUIET_20MS = ulaw_encode(np.zeros(160, dtype="<i2"))

RESPONSE_AUDIO = [
    "response.created",
    "rate_limits.updated",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
    "response.output_audio_transcript.delta",
    "response.output_audio.delta",
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "response.output_item.done",
    "conversation.item.done",
    "response.done",
]
FUNCTION_CALL = [
    "response.output_item.added",
    "conversation.item.added",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_item.done",
    "conversation.item.done",
]


class Client:
    """A raw client: every server event is kept with its arrival time (runtime clock)."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.times: list[float] = []
        self.closed: trio_websocket.CloseReason | None = None
        self._changed = trio.Event()

    async def reader(self) -> None:
        try:
            while True:
                message = await self.ws.get_message()
                self.events.append(json.loads(message))
                self.times.append(trio.current_time())
                self._changed.set()
                self._changed = trio.Event()
        except trio_websocket.ConnectionClosed as exc:
            self.closed = exc.reason
            self._changed.set()

    async def send(self, **event: Any) -> None:
        await self.ws.send_message(json.dumps(event))

    async def wait(self, type_name: str, n: int = 1) -> dict[str, Any]:
        """The n-th event of this type, once it has arrived."""
        while True:
            found = [e for e in self.events if e["type"] == type_name]
            if len(found) >= n:
                return found[n - 1]
            assert self.closed is None, f"closed while waiting for {type_name}: {self.types()}"
            await self._changed.wait()

    async def wait_closed(self) -> trio_websocket.CloseReason:
        while self.closed is None:
            await self._changed.wait()
        return self.closed

    def types(self, start: int = 0) -> list[str]:
        """Event types from index ``start``; a run of interleaved ``*.delta`` events is listed once
        per type, in order of first appearance."""
        out: list[str] = []
        run: set[str] = set()
        for e in self.events[start:]:
            t = e["type"]
            if not t.endswith(".delta"):
                run = set()
            elif t in run:
                continue
            else:
                run.add(t)
            out.append(t)
        return out

    def index(self, type_name: str, n: int = 1) -> int:
        return [i for i, e in enumerate(self.events) if e["type"] == type_name][n - 1]

    def audio(self, response_id: str) -> list[bytes]:
        return [
            base64.b64decode(e["delta"])
            for e in self.events
            if e["type"] == "response.output_audio.delta" and e["response_id"] == response_id
        ]

    async def speak(self, loud_ms: int, quiet_ms: int) -> None:
        """Append 20 ms mu-law frames in real (runtime) time: ``loud_ms`` of tone, then silence."""
        for frame in [LOUD_20MS] * (loud_ms // 20) + [QUIET_20MS] * (quiet_ms // 20):
            await self.send(
                type="input_audio_buffer.append", audio=base64.b64encode(frame).decode()
            )
            await trio.sleep(0.02)

    async def update(self, **audio_input: Any) -> dict[str, Any]:
        """session.update to mu-law both ways (plus the given input fields); the session.updated."""
        n = len([e for e in self.events if e["type"] == "session.updated"]) + 1
        audio = {"input": {"format": PCMU, **audio_input}, "output": {"format": PCMU}}
        await self.send(type="session.update", session={"type": "realtime", "audio": audio})
        return await self.wait("session.updated", n)


@asynccontextmanager
async def memory_session(
    server: MockRealtimeServer, headers: list[tuple[bytes, bytes]] = AUTH
) -> AsyncIterator[tuple[Client, SessionLog]]:
    """A client connected to ``server`` over an in-memory stream pair."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    n = len(server.sessions) + 1
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve_stream, server_stream)
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            client_stream,  # type: ignore[arg-type]
            "localhost",
            URL,
            extra_headers=headers,
        )
        client = Client(ws)
        nursery.start_soon(client.reader)
        log = await server.wait_for_session(n)
        await client.wait("session.created")
        yield client, log
        await ws.aclose()
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def tcp_client(
    port: int, headers: list[tuple[bytes, bytes]] = AUTH
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A client over real TCP. The test owns the socket: trio-websocket's open_websocket does
    not close it after an abnormal closure (it would leak into a ResourceWarning)."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(
                nursery, stream, "localhost", URL, extra_headers=headers
            )
            yield ws
            await ws.aclose()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def tcp_server(server: MockRealtimeServer) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        yield port
        nursery.cancel_scope.cancel()


# -- handshake ------------------------------------------------------------------------------------
async def test_bad_key_is_rejected_at_the_upgrade_with_401_and_an_openai_error_body() -> None:
    server = MockRealtimeServer(api_key="right")
    async with tcp_server(server) as port:
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            with pytest.RaisesGroup(trio_websocket.ConnectionRejected) as group:
                async with trio.open_nursery() as nursery:
                    bad = [(b"Authorization", b"Bearer wrong")]
                    await trio_websocket.wrap_client_stream(
                        nursery, stream, "localhost", URL, extra_headers=bad
                    )
        good = [(b"api-key", b"right"), (b"OpenAI-Beta", b"realtime=v1")]  # Azure style
        async with tcp_client(port, good) as ws:
            created = json.loads(await ws.get_message())
    rejected = group.value.exceptions[0]
    assert isinstance(rejected, trio_websocket.ConnectionRejected)
    assert rejected.status_code == 401
    assert json.loads(rejected.body or b"") == {
        "error": {
            "message": "Incorrect API key provided: ...rong.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    assert [log.rejected_status for log in server.rejected] == [401]
    assert created["type"] == "session.created" and created["event_id"] == "event_1"
    (log,) = server.sessions
    assert log.model == "gpt-realtime" and log.beta_header == "realtime=v1"
    assert log.headers["api-key"] == "right ***"


# -- session --------------------------------------------------------------------------------------
async def test_session_created_defaults_then_update_echoes_pcmu(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = MockRealtimeServer()
    async with memory_session(server) as (client, log):
        created = client.events[0]["session"]
        assert created["id"].startswith("sess_") and created["object"] == "realtime.session"
        assert created["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert created["audio"]["output"] == {
            "format": {"type": "audio/pcm", "rate": 24000},
            "voice": "marin",
            "speed": 1.0,
        }
        assert created["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500
        updated = (
            await client.update(turn_detection={"type": "server_vad", "silence_duration_ms": 300})
        )["session"]
        assert updated["audio"]["input"]["format"] == PCMU
        assert updated["audio"]["output"]["format"] == PCMU
        assert updated["audio"]["output"]["voice"] == "marin"  # not in the update: kept
        td = updated["audio"]["input"]["turn_detection"]
        assert (
            td["silence_duration_ms"] == 300
            and td["prefix_padding_ms"] == 300
            and td["create_response"]
        )
        assert updated["id"] == created["id"] and log.session == updated
        # GA requires session.type; a beta-style flat field is an unknown parameter
        await client.send(type="session.update", event_id="c1", session={"instructions": "x"})
        await client.send(
            type="session.update", session={"type": "realtime", "input_audio_format": "g711_ulaw"}
        )
        err1, err2 = await client.wait("error"), await client.wait("error", 2)
        assert (err1["error"]["code"], err1["error"]["param"], err1["error"]["event_id"]) == (
            "missing_required_parameter",
            "session.type",
            "c1",
        )
        assert err2["error"]["code"] == "unknown_parameter"
        assert log.session == updated  # rejected updates change nothing


async def test_invalid_json_and_unknown_type_are_invalid_event_errors_and_session_continues(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_session(MockRealtimeServer()) as (client, log):
        await client.ws.send_message("{not json")
        await client.send(type="no.such.event", event_id="c7")
        await client.send(type="input_audio_buffer.clear")
        await client.wait("input_audio_buffer.cleared")
        errors = [e["error"] for e in client.events if e["type"] == "error"]
        assert [e["code"] for e in errors] == ["invalid_event", "invalid_event"]
        assert errors[1]["event_id"] == "c7" and errors[1]["type"] == "invalid_request_error"
        assert (await log.wait_for("no.such.event"))["event_id"] == "c7"


# -- a spoken turn (1.7) --------------------------------------------------------------------------
async def test_happy_path_turn_in_pcmu(autojump_clock: trio.abc.Clock) -> None:
    script = RealtimeScript(transcripts=["what time do you open"], replies=["We open at nine a.m."])
    server = MockRealtimeServer(script=script)
    async with memory_session(server) as (client, log):
        await client.update(transcription={"model": "gpt-4o-mini-transcribe"})
        start = len(client.events)
        await client.speak(1000, 1000)
        done = await client.wait("response.done")
        assert client.types(start) == [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
            "conversation.item.input_audio_transcription.delta",
            "conversation.item.input_audio_transcription.completed",
            *RESPONSE_AUDIO,
        ]
        started = await client.wait("input_audio_buffer.speech_started")
        stopped = await client.wait("input_audio_buffer.speech_stopped")
        user_item = started["item_id"]
        assert started["audio_start_ms"] == 0  # onset 0 ms minus 300 ms prefix, clamped
        assert stopped == {**stopped, "audio_end_ms": 1500, "item_id": user_item}
        completed = await client.wait("conversation.item.input_audio_transcription.completed")
        assert (completed["item_id"], completed["transcript"]) == (
            user_item,
            "what time do you open",
        )
        # detection happens as the 60th ms of tone and the 500th ms of silence arrive
        t0 = client.times[start] - 0.06
        assert client.times[
            client.index("input_audio_buffer.speech_stopped")
        ] - t0 == pytest.approx(1.5)
        assistant = (await client.wait("response.output_item.added"))["item"]
        assert (await client.wait("conversation.item.added", 2))["previous_item_id"] == user_item
        response = done["response"]
        assert response["status"] == "completed" and response["usage"]["total_tokens"] > 0
        assert response["audio"]["output"]["format"] == PCMU
        assert response["output"] == [
            {
                "id": assistant["id"],
                "object": "realtime.item",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_audio", "transcript": "We open at nine a.m."}],
            }
        ]
        transcript = "".join(
            e["delta"]
            for e in client.events
            if e["type"] == "response.output_audio_transcript.delta"
        )
        assert transcript == "We open at nine a.m."
        # 1.5 s of mu-law in 100 ms deltas (800 bytes), paced at 4x real time: one every 25 ms
        chunks = client.audio(response["id"])
        assert [len(c) for c in chunks] == [800] * 15
        pcm = ulaw_decode(b"".join(chunks)).astype(np.float32)
        assert 5000 < np.sqrt(np.mean(pcm * pcm)) < 6000  # the 440 Hz tone at amplitude 8000
        delta_times = [
            t
            for t, e in zip(client.times, client.events, strict=True)
            if e["type"].endswith("audio.delta")
        ]
        assert delta_times[-1] - delta_times[0] == pytest.approx(14 * 0.025)
        assert log.assistant_audio_ms == {assistant["id"]: 1500.0}
        assert log.append_count == 100 and log.audio_in_ms == 2000 and log.audio_in_bytes == 16000
        assert (
            log.audio_deltas_sent == 15
            and log.count("response.output_audio.delta", sent=True) == 15
        )
        assert log.user_transcripts == ["what time do you open"] and log.responses == 1


# -- barge-in and truncation (1.8) ----------------------------------------------------------------
async def test_barge_in_cancels_with_turn_detected_and_truncate_is_checked(
    autojump_clock: trio.abc.Clock,
) -> None:
    script = RealtimeScript(
        replies=["We open at nine a.m. and close at six p.m."], reply_ms=3000, send_rate=1.0
    )
    async with memory_session(MockRealtimeServer(script=script)) as (client, log):
        await client.update()
        await client.speak(400, 500)  # response starts as the 500th ms of silence arrives
        created = await client.wait("response.created")
        await client.speak(0, 600)  # 600 ms of the reply play, then the caller talks over it
        mark = len(client.events)
        await client.speak(200, 0)
        done = await client.wait("response.done")
        assert client.types(mark) == [
            "input_audio_buffer.speech_started",
            "response.output_audio.done",
            "response.output_audio_transcript.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.done",
        ]
        assert done["response"]["id"] == created["response"]["id"]
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"] == {
            "type": "cancelled",
            "reason": "turn_detected",
        }
        item = (await client.wait("response.output_item.done"))["item"]
        partial = (await client.wait("response.output_audio_transcript.done"))["transcript"]
        assert item["status"] == "incomplete"
        assert item["content"] == [{"type": "output_audio", "transcript": partial}]
        assert (
            "We open at nine a.m. and close at six p.m.".startswith(partial)
            and 0 < len(partial) < 40
        )
        generated = log.assistant_audio_ms[item["id"]]
        assert generated == 700.0  # 600 ms at 1x plus the 60 ms of speech onset, in 100 ms deltas
        assert sum(len(c) for c in client.audio(created["response"]["id"])) == generated * 8
        # the client truncates at what it played: beyond the generated audio is an error
        await client.send(
            type="conversation.item.truncate",
            item_id=item["id"],
            content_index=0,
            audio_end_ms=1200,
        )
        error = await client.wait("error")
        assert (error["error"]["code"], error["error"]["param"]) == (
            "invalid_value",
            "audio_end_ms",
        )
        await client.send(
            type="conversation.item.truncate", item_id=item["id"], content_index=0, audio_end_ms=640
        )
        truncated = await client.wait("conversation.item.truncated")
        assert (truncated["item_id"], truncated["content_index"], truncated["audio_end_ms"]) == (
            item["id"],
            0,
            640,
        )
        await client.send(
            type="conversation.item.truncate", item_id="item_nope", content_index=0, audio_end_ms=1
        )
        assert (await client.wait("error", 2))["error"]["param"] == "item_id"
        assert [(t.item_id, t.audio_end_ms) for t in log.truncations] == [(item["id"], 640)]
        # the interrupting speech still becomes a turn with its own response
        await client.speak(0, 500)
        assert (await client.wait("response.done", 2))["response"]["status"] == "completed"


async def test_manual_mode_commit_clear_and_client_cancel(autojump_clock: trio.abc.Clock) -> None:
    script = RealtimeScript(send_rate=1.0, reply_ms=2000)
    async with memory_session(MockRealtimeServer(script=script)) as (client, log):
        await client.update(turn_detection=None)
        await client.send(type="response.cancel")
        assert (await client.wait("error"))["error"]["code"] == "response_cancel_not_active"
        await client.speak(60, 0)
        await client.send(type="input_audio_buffer.commit")
        error = await client.wait("error", 2)
        assert error["error"]["code"] == "input_audio_buffer_commit_empty"
        assert "60.00ms" in error["error"]["message"]
        await client.speak(300, 0)  # no VAD events in manual mode
        await client.send(type="input_audio_buffer.clear")
        await client.wait("input_audio_buffer.cleared")
        await client.speak(200, 0)
        await client.send(type="input_audio_buffer.commit")
        committed = await client.wait("input_audio_buffer.committed")
        await client.wait("conversation.item.done")
        assert "input_audio_buffer.speech_started" not in client.types()
        # greeting-style response.create with instructions, cancelled by the client mid-audio
        await client.send(type="response.create", response={"instructions": "Greet the caller."})
        await client.wait("response.output_audio.delta", 3)
        await client.send(type="response.create")
        assert (await client.wait("error", 3))["error"][
            "code"
        ] == "conversation_already_has_active_response"
        await client.send(type="response.cancel")
        done = await client.wait("response.done")
        assert done["response"]["status_details"] == {
            "type": "cancelled",
            "reason": "client_cancelled",
        }
        assert (await log.wait_for("response.create"))["response"][
            "instructions"
        ] == "Greet the caller."
        assert log.count("input_audio_buffer.append") == 28 and committed["item_id"].startswith(
            "item_"
        )


# -- function calling (1.9) -----------------------------------------------------------------------
@pytest.mark.parametrize("speak_first", [None, "One moment please."])
async def test_function_call_then_output_then_response_create(
    autojump_clock: trio.abc.Clock, speak_first: str | None
) -> None:
    script = RealtimeScript(
        transcripts=["please transfer me to sales"],
        function_calls={"transfer": ("transfer_call", {"extension": "200"})},
        speak_before_call=speak_first,
        after_tool_reply="Transferring you now.",
    )
    async with memory_session(MockRealtimeServer(script=script)) as (client, log):
        await client.update()
        await client.speak(400, 500)
        done = (await client.wait("response.done"))["response"]
        start = client.index("response.created")
        message = RESPONSE_AUDIO[2:-1] if speak_first else []
        assert client.types(start) == [
            "response.created",
            "rate_limits.updated",
            *message,
            *FUNCTION_CALL,
            "response.done",
        ]
        call = done["output"][-1]
        assert call == {
            "id": call["id"],
            "object": "realtime.item",
            "type": "function_call",
            "status": "completed",
            "name": "transfer_call",
            "call_id": call["call_id"],
            "arguments": '{"extension":"200"}',
        }
        assert call["call_id"].startswith("call_") and done["status"] == "completed"
        args = [e for e in client.events if e["type"] == "response.function_call_arguments.delta"]
        assert len(args) == 2 and "".join(e["delta"] for e in args) == '{"extension":"200"}'
        arg_done = await client.wait("response.function_call_arguments.done")
        assert (arg_done["name"], arg_done["output_index"]) == (
            "transfer_call",
            1 if speak_first else 0,
        )
        assert len(done["output"]) == (2 if speak_first else 1)
        # the model waits for the tool result and then for response.create
        mark = len(client.events)
        output = {
            "type": "function_call_output",
            "call_id": call["call_id"],
            "output": '{"ok":true}',
        }
        n_done = client.types().count("conversation.item.done")
        await client.send(type="conversation.item.create", item=output)
        await client.wait("conversation.item.done", n_done + 1)
        added = await client.wait("conversation.item.added", 3 + (1 if speak_first else 0))
        assert added["previous_item_id"] == call["id"]
        assert added["item"] == {
            "id": added["item"]["id"],
            "object": "realtime.item",
            **output,
            "status": "completed",
        }
        await log.wait_for("conversation.item.create")
        assert log.function_outputs == [added["item"]] and log.function_calls == [call]
        assert client.types(mark) == ["conversation.item.added", "conversation.item.done"]
        await client.send(type="response.create")
        second = (await client.wait("response.done", 2))["response"]
        assert second["output"][0]["content"][0]["transcript"] == "Transferring you now."
        # a DTMF digit as a user text item is recorded
        text_item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "DTMF 5"}],
        }
        await client.send(type="conversation.item.create", item=text_item)
        await log.wait_for("conversation.item.create", 2)
        assert log.user_texts == ["DTMF 5"]


# -- scripted faults ------------------------------------------------------------------------------
async def test_confirm_format_overrides_the_requested_output_format(
    autojump_clock: trio.abc.Clock,
) -> None:
    pcm24 = {"type": "audio/pcm", "rate": 24000}
    script = RealtimeScript(confirm_format=pcm24, reply_ms=500)
    async with memory_session(MockRealtimeServer(script=script)) as (client, _):
        updated = (await client.update(turn_detection=None))["session"]
        assert updated["audio"]["input"]["format"] == PCMU  # input honoured
        assert updated["audio"]["output"]["format"] == pcm24  # pcmu asked, PCM16 confirmed
        await client.send(type="response.create")
        done = (await client.wait("response.done"))["response"]
        assert done["audio"]["output"]["format"] == pcm24
        assert [len(c) for c in client.audio(done["id"])] == [4800] * 5  # 100 ms of 24 kHz PCM16


async def test_error_after_responses_replaces_the_nth_response(
    autojump_clock: trio.abc.Clock,
) -> None:
    script = RealtimeScript(error_after_responses=2, reply_ms=200)
    async with memory_session(MockRealtimeServer(script=script)) as (client, log):
        await client.send(type="response.create")
        await client.wait("response.done", 1)
        await client.send(type="response.create")
        await client.wait("error", 1)
        await client.send(type="response.create")
        await client.wait("response.done", 2)
        errors = [e["error"] for e in client.events if e["type"] == "error"]
        assert [(e["type"], e["code"]) for e in errors] == [("server_error", "server_error")]
        assert log.responses == 3 and len(log.sent("response.done")) == 2


async def test_disconnect_mid_response_drops_the_socket(autojump_clock: trio.abc.Clock) -> None:
    script = RealtimeScript(disconnect_mid_response=1, reply_ms=1000)
    async with memory_session(MockRealtimeServer(script=script)) as (client, log):
        await client.send(type="response.create")
        reason = await client.wait_closed()
        assert reason.code == 1006  # no close frame: abnormal closure
        assert len(client.audio(client.events[1]["response"]["id"])) == 5
        assert "response.done" not in client.types()
        assert log.close_reason == "disconnect_mid_response"
        await log.closed.wait()


async def test_disconnect_mid_response_over_tcp() -> None:
    server = MockRealtimeServer(script=RealtimeScript(disconnect_mid_response=1, send_rate=0))
    async with tcp_server(server) as port:
        async with tcp_client(port) as ws:
            await ws.send_message(json.dumps({"type": "response.create"}))
            types = []
            with pytest.raises(trio_websocket.ConnectionClosed) as caught:
                while True:
                    types.append(json.loads(await ws.get_message())["type"])
    assert caught.value.reason is not None and caught.value.reason.code == 1006
    assert types.count("response.output_audio.delta") == 7  # half of 15
    assert "response.done" not in types
    assert server.sessions[0].close_reason == "disconnect_mid_response"


async def test_close_after_seconds_sends_session_expired_then_closes(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_session(
        MockRealtimeServer(script=RealtimeScript(close_after_seconds=30))
    ) as (client, log):
        t0 = trio.current_time()
        reason = await client.wait_closed()
        assert trio.current_time() - t0 == pytest.approx(30)
        assert reason.code == 1000
        assert client.events[-1]["error"]["code"] == "session_expired"
        assert log.close_reason == "close_after_seconds"


# -- as a process ---------------------------------------------------------------------------------
@pytest.mark.parametrize("stop", ["stdin", "sigterm"])
async def test_process_writes_ready_file_serves_and_stops(tmp_path: Path, stop: str) -> None:
    ready = tmp_path / "ready"
    os.mkfifo(ready)  # opening a FIFO blocks until the writer does: no polling
    cmd = [
        sys.executable,
        "-m",
        "tests.mocks.openai_realtime",
        "--port",
        "0",
        "--ready",
        str(ready),
        "--reply-ms",
        "200",
    ]
    proc = await trio.lowlevel.open_process(cmd, cwd=ROOT, stdin=subprocess.PIPE)
    try:
        with trio.fail_after(30):
            info = json.loads(
                await trio.to_thread.run_sync(ready.read_text, abandon_on_cancel=True)
            )
            assert info["pid"] == proc.pid
            async with tcp_client(info["port"]) as ws:
                assert json.loads(await ws.get_message())["type"] == "session.created"
            assert proc.stdin is not None
            if stop == "stdin":
                await proc.stdin.aclose()
            else:
                proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if proc.stdin is not None:
            await proc.stdin.aclose()
