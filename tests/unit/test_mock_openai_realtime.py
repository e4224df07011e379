"""The mock OpenAI Realtime (GA) server against a raw trio-websocket client
(tests/mocks/openai_realtime/client.py).

Memory streams under the autojump clock for the conversation flows (exact virtual timings), real
loopback TCP for the handshake rejection, the abrupt disconnect and the process entry point.
The expected event orders are those of reference/providers.md 1.7 (audio turn), 1.8 (barge-in)
and 1.9 (function call).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
import trio_websocket

from media_sidecar.dsp.g711 import ulaw_decode
from tests.mocks.openai_realtime import MockRealtimeServer, RealtimeScript
from tests.mocks.openai_realtime.client import PCMU, URL, memory_session, tcp_client, tcp_server

ROOT = Path(__file__).resolve().parents[2]
STRING_ARG = {"type": "object", "properties": {"extension": {"type": "string"}}}
TRANSFER = {"type": "function", "name": "transfer_call", "parameters": STRING_ARG}
HOURS = {"type": "function", "name": "lookup_hours", "parameters": {"type": "object"}}

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
        await client.update(tools=[TRANSFER])
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


# -- text turns, tools, response instructions ----------------------------------------------------
def said(response: dict[str, Any]) -> list[str]:
    """The transcripts of a response's assistant messages."""
    return [
        part["transcript"]
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
    ]


async def test_user_text_then_response_create_is_planned_like_a_spoken_turn(
    autojump_clock: trio.abc.Clock,
) -> None:
    script = RealtimeScript(
        replies=["You pressed five."],
        function_calls={"DTMF 0": ("transfer_call", {"extension": "0"})},
        reply_ms=200,
    )
    async with memory_session(MockRealtimeServer(script=script)) as (client, log):
        await client.update(tools=[TRANSFER], turn_detection=None)
        await client.say("DTMF 5")
        added = await client.wait("conversation.item.added")
        assert added["item"]["content"] == [{"type": "input_text", "text": "DTMF 5"}]
        assert "response.created" not in client.types()  # a text item alone starts nothing
        assert said(await client.respond()) == ["You pressed five."]
        await client.say("DTMF 0")
        call = (await client.respond())["output"][0]
        assert (call["type"], call["name"], call["arguments"]) == (
            "function_call",
            "transfer_call",
            '{"extension":"0"}',
        )
        assert log.user_texts == ["DTMF 5", "DTMF 0"] and log.user_transcripts == []
        assert said(await client.respond()) == ["reply 2"]  # the text was answered once only
        assert log.problems == []


async def test_response_instructions_are_recorded_per_response(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_session(MockRealtimeServer(script=RealtimeScript(reply_ms=200))) as (
        client,
        log,
    ):
        await client.update()
        greeting = "Greet the caller by saying exactly this: Hello there."
        await client.respond(instructions=greeting)
        await client.speak(400, 500)  # a VAD turn: its response has no instructions
        await client.wait("response.done", 2)
        await client.respond(metadata={"purpose": "x"})
        assert log.response_instructions == [greeting, None, None] and log.responses == 3


async def test_a_scripted_call_to_an_undeclared_tool_is_a_problem_and_a_plain_reply(
    autojump_clock: trio.abc.Clock,
) -> None:
    script = RealtimeScript(
        transcripts=["transfer me please"],
        replies=["I cannot do that."],
        function_calls={"transfer": ("transfer_call", {"extension": "200"})},
        reply_ms=200,
    )
    async with memory_session(MockRealtimeServer(script=script)) as (client, log):
        assert log.tools == []
        await client.update(tools=[HOURS])
        assert log.tools == [HOURS]
        await client.speak(400, 500)
        done = (await client.wait("response.done"))["response"]
        assert said(done) == ["I cannot do that."] and log.function_calls == []
        assert "response.function_call_arguments.done" not in client.types()
        (problem,) = log.problems
        assert "'transfer_call'" in problem and "lookup_hours" in problem
        # tools given with the response override the session's; tool_choice "none" forbids calls
        await client.say("transfer now")
        assert (await client.respond(tools=[TRANSFER]))["output"][0]["name"] == "transfer_call"
        await client.update(tools=[TRANSFER, HOURS])
        assert log.tools == [TRANSFER, HOURS]
        await client.say("transfer again")
        assert said(await client.respond(tool_choice="none")) == ["reply 2"]
        assert len(log.problems) == 2 and "tool_choice" in log.problems[1]
        assert [c["name"] for c in log.function_calls] == ["transfer_call"]


async def test_after_tool_replies_per_tool_and_function_outputs_are_recorded(
    autojump_clock: trio.abc.Clock,
) -> None:
    script = RealtimeScript(
        function_calls={
            "hours": ("lookup_hours", {}),
            "transfer": ("transfer_call", {"extension": "200"}),
        },
        after_tool_replies={"lookup_hours": "We open at nine."},
        after_tool_reply="Transferring you now.",
        reply_ms=200,
    )
    async with memory_session(MockRealtimeServer(script=script)) as (client, log):
        await client.update(tools=[TRANSFER, HOURS], turn_detection=None)
        replies = []
        for text in ("what are your hours", "transfer me"):
            await client.say(text)
            call = (await client.respond())["output"][0]
            await client.tool_output(call["call_id"], '{"ok":true}')
            replies += said(await client.respond())
        assert replies == ["We open at nine.", "Transferring you now."]  # per tool, fallback
        await client.tool_output("call_nope", '"late"')  # an output for no call: tolerated
        assert said(await client.respond()) == ["Transferring you now."]
        assert log.problems == ["function_call_output for unknown call_id 'call_nope'"]
        calls = [c["call_id"] for c in log.function_calls]
        assert [(o["call_id"], o["output"]) for o in log.function_outputs] == [
            (calls[0], '{"ok":true}'),
            (calls[1], '{"ok":true}'),
            ("call_nope", '"late"'),
        ]
        assert all(o["type"] == "function_call_output" for o in log.function_outputs)


# -- turn detection changed mid-session and client-managed turns ----------------------------------
async def test_turn_detection_updated_mid_session_applies_to_the_following_audio(
    autojump_clock: trio.abc.Clock,
) -> None:
    script = RealtimeScript(reply_ms=3000, send_rate=1.0)
    async with memory_session(MockRealtimeServer(script=script)) as (client, log):
        # interrupt_response false: the caller talks over the reply and it plays to the end
        await client.update(turn_detection={"type": "server_vad", "interrupt_response": False})
        await client.speak(400, 500)
        first = await client.wait("response.created")
        await client.speak(0, 300)
        await client.speak(400, 0)
        await client.wait("input_audio_buffer.speech_started", 2)
        done = (await client.wait("response.done"))["response"]
        assert client.index("input_audio_buffer.speech_started", 2) < client.index("response.done")
        assert done["id"] == first["response"]["id"] and done["status"] == "completed"
        assert log.assistant_audio_ms[done["output"][0]["id"]] == 3000.0
        await client.speak(0, 500)  # that speech is a turn of its own, answered after
        assert (await client.wait("response.done", 2))["response"]["status"] == "completed"
        # create_response false: the turn is committed, no response
        await client.update(turn_detection={"type": "server_vad", "create_response": False})
        await client.speak(400, 500)
        await client.wait("input_audio_buffer.committed", 3)
        await client.speak(0, 1000)
        assert log.responses == 2
        # turn_detection null: no VAD events at all
        await client.update(turn_detection=None)
        await client.speak(400, 600)
        assert client.types().count("input_audio_buffer.speech_started") == 3
        # back to server_vad (interrupt_response defaults to true): barge-in cancels again
        await client.update(turn_detection={"type": "server_vad"})
        await client.send(type="response.create")
        await client.wait("response.output_audio.delta", 30 + 30 + 2)  # 2 deltas of this one
        await client.speak(200, 0)
        cancelled = (await client.wait("response.done", 3))["response"]
        assert cancelled["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
        assert log.responses == 3


async def test_client_managed_turns_commit_transcribe_respond_and_cancel(
    autojump_clock: trio.abc.Clock,
) -> None:
    script = RealtimeScript(
        transcripts=["please transfer me to sales", "what time is it"],
        replies=["It is noon."],
        function_calls={"transfer": ("transfer_call", {"extension": "200"})},
        reply_ms=2000,
        send_rate=1.0,
    )
    async with memory_session(MockRealtimeServer(script=script)) as (client, log):
        await client.update(
            tools=[TRANSFER],
            turn_detection=None,
            transcription={"model": "gpt-4o-mini-transcribe"},
        )
        await client.speak(300, 200)
        mark = len(client.events)
        await client.send(type="input_audio_buffer.commit")
        completed = await client.wait("conversation.item.input_audio_transcription.completed")
        assert client.types(mark) == [
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
            "conversation.item.input_audio_transcription.delta",
            "conversation.item.input_audio_transcription.completed",
        ]
        committed = await client.wait("input_audio_buffer.committed")
        assert completed["item_id"] == committed["item_id"]
        assert completed["transcript"] == "please transfer me to sales"
        call = (await client.respond())["output"][0]
        assert call["name"] == "transfer_call"  # planned from the committed turn's transcript
        # the next turn: a reply, cancelled by the client halfway
        await client.speak(300, 200)
        await client.send(type="input_audio_buffer.commit")
        await client.wait("conversation.item.input_audio_transcription.completed", 2)
        await client.send(type="response.create")
        created = (await client.wait("response.created", 2))["response"]
        await client.wait("response.output_audio.delta", 10)
        await client.send(type="response.cancel", response_id=created["id"])
        done = (await client.wait("response.done", 2))["response"]
        assert (done["id"], done["status"]) == (created["id"], "cancelled")
        assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
        assert done["output"][0]["status"] == "incomplete"
        assert "It is noon.".startswith(said(done)[0])
        assert log.user_transcripts == ["please transfer me to sales", "what time is it"]
        assert "input_audio_buffer.speech_started" not in client.types()


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
