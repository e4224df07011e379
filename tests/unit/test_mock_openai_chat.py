"""The mock OpenAI Chat Completions server against a raw httpx client: the SSE wire of
reference/providers.md 5.1 event by event, with exact virtual timings (memory transport under the
autojump clock); once over loopback TCP and once as a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.mocks.http import open_memory_transport
from tests.mocks.openai_chat import ChatScript, MockChatServer, Reply, ToolCall

ROOT = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": "Bearer test-key"}
TRANSFER = {"type": "function", "function": {
    "name": "transfer_call", "description": "Transfer the caller",
    "parameters": {"type": "object", "properties": {"extension": {"type": "string"}},
                   "required": ["extension"]}}}
CALL = ToolCall("transfer_call", {"extension": "200", "note": "sales \"desk\""})


def body(text: str = "What time do you open?", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "stream": True, "tools": [TRANSFER],
            "messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": text}], **extra}


@asynccontextmanager
async def client_for(server: MockChatServer, headers: dict[str, str] | None = None
                     ) -> AsyncIterator[httpx.AsyncClient]:
    async with open_memory_transport({"api.openai.com": server}) as transport:
        async with httpx.AsyncClient(transport=transport, base_url="https://api.openai.com",
                                     headers=AUTH if headers is None else headers) as client:
            yield client


async def read_sse(client: httpx.AsyncClient, payload: dict[str, Any]
                   ) -> tuple[httpx.Response, list[tuple[float, Any]]]:
    """POST and read the SSE body: (response, [(arrival time, parsed data)]) with the framing
    checked: every event is exactly one ``data: `` line and a blank line."""
    events: list[tuple[float, Any]] = []
    start = trio.current_time()
    async with client.stream("POST", "/v1/chat/completions", json=payload) as response:
        buffer = ""
        async for text in response.aiter_text():
            buffer += text
            while "\n\n" in buffer:
                event, buffer = buffer.split("\n\n", 1)
                assert event.startswith("data: ") and "\n" not in event, repr(event)
                data = event[len("data: "):]
                events.append((trio.current_time() - start,
                               data if data == "[DONE]" else json.loads(data)))
        assert buffer == ""
    return response, events


def deltas(events: list[tuple[float, Any]]) -> list[dict[str, Any]]:
    return [e["choices"][0]["delta"] for _, e in events if isinstance(e, dict) and e.get("choices")]


def reassemble(events: list[tuple[float, Any]]) -> dict[int, dict[str, str]]:
    """Tool calls by index, as a client accumulates OpenAI fragments."""
    calls: dict[int, dict[str, str]] = {}
    for delta in deltas(events):
        for part in delta.get("tool_calls", []):
            call = calls.setdefault(part["index"], {"id": "", "name": "", "arguments": ""})
            call["id"] = part.get("id", call["id"])
            call["name"] += part.get("function", {}).get("name", "")
            call["arguments"] += part["function"].get("arguments", "")
    return calls


async def test_text_turn_wire_and_timing(autojump_clock: trio.abc.Clock) -> None:
    server = MockChatServer(script=ChatScript(replies={"OPEN": Reply("We open at nine.")}))
    async with client_for(server) as client:
        response, events = await read_sse(client, body())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == (0.3 + 3 * 0.05, "[DONE]")
    chunks = [e for _, e in events[:-1]]
    assert {c["id"] for c in chunks} == {"chatcmpl-1"}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert all(c["model"] == "gpt-4o-mini" and isinstance(c["created"], int) for c in chunks)
    assert chunks[0]["choices"][0] == {"index": 0, "finish_reason": None, "logprobs": None,
                                       "delta": {"role": "assistant", "content": "",
                                                 "refusal": None}}
    words = [d["content"] for d in deltas(events)[1:-1]]
    assert words == ["We", " open", " at", " nine."]
    assert [t for t, _ in events[1:5]] == pytest.approx([0.3, 0.35, 0.4, 0.45])
    assert events[0][0] == 0
    assert chunks[-1]["choices"] == [{"index": 0, "delta": {}, "logprobs": None,
                                      "finish_reason": "stop"}]
    assert not any("usage" in c for c in chunks)
    log = await server.wait_chat_finished(1)
    assert log.completed and not log.client_closed and log.problems == []
    assert log.deltas_sent == 4 and log.first_token_at == 0.3 and log.text_sent == "We open at nine."
    assert log.model == "gpt-4o-mini" and log.stream and log.messages[-1]["role"] == "user"


async def test_usage_chunk_only_when_requested(autojump_clock: trio.abc.Clock) -> None:
    server = MockChatServer()
    async with client_for(server) as client:
        _, with_usage = await read_sse(client, body(stream_options={"include_usage": True}))
        _, without = await read_sse(client, body())
    usage = with_usage[-2][1]
    assert usage["choices"] == [] and usage["id"] == "chatcmpl-1"
    assert usage["usage"]["total_tokens"] == usage["usage"]["prompt_tokens"] + 2
    assert with_usage[-3][1]["choices"][0]["finish_reason"] == "stop"
    assert without[-2][1]["choices"][0]["finish_reason"] == "stop"
    assert "".join(d.get("content") or "" for d in deltas(without)) == "reply 2"


async def test_tool_call_fragments_reassemble(autojump_clock: trio.abc.Clock) -> None:
    script = ChatScript(replies={"sales": Reply(tool_calls=(CALL,))})
    server = MockChatServer(script=script)
    async with client_for(server) as client:
        _, events = await read_sse(client, body("Transfer me to SALES please"))
    first = deltas(events)[0]
    assert first == {"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "call_1_1", "type": "function",
         "function": {"name": "transfer_call", "arguments": ""}}]}
    assert events[0][0] == 0.3  # no role chunk before it
    pieces = [d["tool_calls"][0] for d in deltas(events)[1:-1]]
    assert len(pieces) == 3 and all(set(p) == {"index", "function"} for p in pieces)
    call = reassemble(events)[0]
    assert call["id"] == "call_1_1" and json.loads(call["arguments"]) == dict(CALL.arguments)
    assert events[-2][1]["choices"][0]["finish_reason"] == "tool_calls"
    assert (await server.wait_chat_finished()).tool_call_ids == ["call_1_1"]


async def test_text_then_two_whole_tool_calls(autojump_clock: trio.abc.Clock) -> None:
    calls = (CALL, ToolCall("transfer_call", {"extension": "300"}))
    script = ChatScript(replies={"sales": Reply("One moment.", calls)}, tool_call_style="whole")
    async with client_for(MockChatServer(script=script)) as client:
        _, events = await read_sse(client, body("sales"))
    ds = deltas(events)
    assert ds[0]["role"] == "assistant" and [d.get("content") for d in ds[1:3]] == ["One",
                                                                                   " moment."]
    assert ds[3:5] == [{"tool_calls": [{"index": i, "id": f"call_1_{i + 1}", "type": "function",
                                        "function": {"name": "transfer_call",
                                                     "arguments": json.dumps(
                                                         dict(c.arguments),
                                                         separators=(",", ":"))}}]}
                       for i, c in enumerate(calls)]
    assert events[4][0] == 0.3 + 3 * 0.05


async def test_undeclared_scripted_tool_is_not_emitted(autojump_clock: trio.abc.Clock) -> None:
    script = ChatScript(replies={"sales": Reply("Sure.", (ToolCall("hang_up"),))})
    server = MockChatServer(script=script)
    async with client_for(server) as client:
        _, events = await read_sse(client, body("sales"))
    assert reassemble(events) == {} and events[-2][1]["choices"][0]["finish_reason"] == "stop"
    assert "hang_up" in server.chats[0].problems[0]


def follow_up(call_id: str = "call_1_1", *, answered: bool = True) -> dict[str, Any]:
    b = body("sales")
    b["messages"] += [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1_1", "type": "function",
         "function": {"name": "transfer_call", "arguments": "{\"extension\":\"200\"}"}}]}]
    if answered:
        b["messages"].append({"role": "tool", "tool_call_id": call_id, "content": "{\"ok\":true}"})
    return b


async def test_tool_follow_up_gets_the_after_tool_reply(autojump_clock: trio.abc.Clock) -> None:
    script = ChatScript(replies={"sales": Reply(tool_calls=(CALL,))},
                        after_tool={"transfer_call": Reply("Transferring you now.")})
    async with client_for(MockChatServer(script=script)) as client:
        _, events = await read_sse(client, follow_up())
        _, default = await read_sse(client, {**follow_up(), "tools": []})
    assert "".join(d.get("content") or "" for d in deltas(events)) == "Transferring you now."
    assert "".join(d.get("content") or "" for d in deltas(default)) == "Transferring you now."
    plain = MockChatServer()
    async with client_for(plain) as client:
        _, events = await read_sse(client, follow_up())
    assert "".join(d.get("content") or "" for d in deltas(events)) == "done"


@pytest.mark.parametrize("payload", [follow_up("call_nope"), follow_up(answered=False)])
async def test_tool_messages_must_match_the_calls(
    autojump_clock: trio.abc.Clock, payload: dict[str, Any]
) -> None:
    server = MockChatServer()
    async with client_for(server) as client:
        r = await client.post("/v1/chat/completions", json=payload)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and "tool" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    assert server.chats[0].status == 400 and server.chats[0].problems


@pytest.mark.parametrize(("patch", "param"), [
    ({"model": None}, "model"),
    ({"model": 4}, "model"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"tools": [{"type": "function", "function": {"description": "x"}}]},
     "tools[0].function.name"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
    ({"stream": False, "stream_options": {"include_usage": True}}, "stream_options"),
])
async def test_bad_bodies_are_400_with_the_param(
    autojump_clock: trio.abc.Clock, patch: dict[str, Any], param: str
) -> None:
    payload = {k: v for k, v in {**body(), **patch}.items() if v is not None}
    async with client_for(MockChatServer()) as client:
        r = await client.post("/v1/chat/completions", json=payload)
    assert r.status_code == 400 and r.json()["error"]["param"] == param


async def test_object_arguments_in_history_are_refused(autojump_clock: trio.abc.Clock) -> None:
    payload = follow_up()
    payload["messages"][2]["tool_calls"][0]["function"]["arguments"] = {"extension": "200"}
    async with client_for(MockChatServer()) as client:
        r = await client.post("/v1/chat/completions", json=payload)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_type"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
async def test_auth_is_required(autojump_clock: trio.abc.Clock, headers: dict[str, str]) -> None:
    server = MockChatServer()
    async with client_for(server, headers) as client:
        r = await client.post("/v1/chat/completions", json=body())
        models = await client.get("/v1/models")
    assert r.status_code == models.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert server.records[0].request.headers.get("authorization") in (None, "<redacted>")
    async with client_for(MockChatServer(api_key=None), {}) as client:
        assert (await client.post("/v1/chat/completions", json=body())).status_code == 200


async def test_non_stream_completion_and_models(autojump_clock: trio.abc.Clock) -> None:
    script = ChatScript(replies={"sales": Reply("Sure.", (CALL,))})
    async with client_for(MockChatServer(script=script)) as client:
        r = await client.post("/v1/chat/completions", json={**body("sales"), "stream": False})
        answered_at = trio.current_time()
        models = (await client.get("/v1/models")).json()
        missing = await client.get("/v1/nothing")
    c = r.json()
    assert c["object"] == "chat.completion" and c["id"] == "chatcmpl-1"
    assert answered_at == 0.3 + 4 * 0.05  # "Sure." and 4 tool-call deltas
    choice = c["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "Sure."
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"])["extension"] \
        == "200"
    assert c["usage"]["completion_tokens"] == 5
    assert models["object"] == "list" and models["data"][0]["id"] == "gpt-4o-mini"
    assert missing.status_code == 404 and "Invalid URL" in missing.json()["error"]["message"]


async def test_reply_matching_order_and_default(autojump_clock: trio.abc.Clock) -> None:
    script = ChatScript(replies={"hours": Reply("A"), "open": Reply("B")})
    server = MockChatServer(script=script)
    texts = []
    async with client_for(server) as client:
        for prompt in ("When are you OPEN, what HOURS?", "when open", "hello"):
            _, events = await read_sse(client, body(prompt))
            texts.append("".join(d.get("content") or "" for d in deltas(events)))
    assert texts == ["A", "B", "reply 3"]


async def test_reject_and_fail_request(autojump_clock: trio.abc.Clock) -> None:
    async with client_for(MockChatServer(script=ChatScript(reject_status=503))) as client:
        r = await client.post("/v1/chat/completions", json=body())
    assert r.status_code == 503 and r.json()["error"]["type"] == "server_error"
    server = MockChatServer(script=ChatScript(fail_request=2))
    async with client_for(server) as client:
        statuses = [(await client.post("/v1/chat/completions", json=body())).status_code
                    for _ in range(3)]
    assert statuses == [200, 500, 200] and server.chats[1].status == 500


async def test_disconnect_mid_stream(autojump_clock: trio.abc.Clock) -> None:
    server = MockChatServer(script=ChatScript(replies={"": Reply("one two three four")},
                                              disconnect_request=(1, 2)))
    received = ""
    async with client_for(server) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("POST", "/v1/chat/completions", json=body()) as r:
                async for text in r.aiter_text():
                    received += text
    assert "[DONE]" not in received and received.count("data: ") == 3  # role + 2 deltas
    log = await server.wait_chat_finished(1)
    assert log.disconnected and log.deltas_sent == 2 and log.finished_at == 0.3 + 2 * 0.05


async def test_error_event_mid_stream(autojump_clock: trio.abc.Clock) -> None:
    server = MockChatServer(script=ChatScript(replies={"": Reply("one two three")},
                                              error_event_request=(1, 1)))
    async with client_for(server) as client:
        response, events = await read_sse(client, body())
    assert response.status_code == 200 and len(deltas(events)) == 2
    assert events[-1][1]["error"]["type"] == "server_error" and events[-1][0] == 0.35
    log = await server.wait_chat_finished(1)
    assert log.completed and log.error and log.deltas_sent == 1


async def test_client_closing_early_is_recorded(autojump_clock: trio.abc.Clock) -> None:
    server = MockChatServer(script=ChatScript(replies={"": Reply("a b c d e f g h")}))
    async with client_for(server) as client:
        async with client.stream("POST", "/v1/chat/completions", json=body()) as r:
            with trio.CancelScope() as scope:  # barge-in: cancel, never break out
                async for text in r.aiter_text():
                    if "\"b\"" in text or " b" in text:
                        scope.cancel()
        log = await server.wait_chat_finished(1)
    assert log.client_closed and not log.completed
    assert log.deltas_sent == 2 and log.finished_at == 0.35


async def test_over_loopback_tcp() -> None:
    script = ChatScript(first_token_delay=0.01, token_delay=0.001,
                        replies={"sales": Reply("Okay.", (CALL,))})
    server = MockChatServer(script=script)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=AUTH) as client:
            _, events = await read_sse(client, body("sales"))
        nursery.cancel_scope.cancel()
    assert events[-1][1] == "[DONE]"
    assert json.loads(reassemble(events)[0]["arguments"]) == dict(CALL.arguments)


async def test_process_serves_and_stops_on_stdin_eof(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    os.mkfifo(ready)  # opening a FIFO blocks until the writer does: no polling
    cmd = [sys.executable, "-m", "tests.mocks.openai_chat", "--port", "0", "--ready", str(ready),
           "--api-key", "k2", "--first-token-delay", "0", "--token-delay", "0"]
    proc = await trio.lowlevel.open_process(cmd, cwd=ROOT, stdin=subprocess.PIPE)
    try:
        with trio.fail_after(30):
            info = json.loads(
                await trio.to_thread.run_sync(ready.read_text, abandon_on_cancel=True))
            assert info["pid"] == proc.pid
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{info['port']}",
                                         headers={"Authorization": "Bearer k2"}) as client:
                _, events = await read_sse(client, body())
            assert events[-1][1] == "[DONE]"
            assert proc.stdin is not None
            await proc.stdin.aclose()
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if proc.stdin is not None:
            await proc.stdin.aclose()
