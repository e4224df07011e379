"""The mock Ollama server against a raw httpx client: native ``/api/chat`` NDJSON line by line
(reference/providers.md 6.1) and the OpenAI-compatible ``/v1`` (6.2), with exact virtual timings
(memory transport under the autojump clock); once over loopback TCP and once as a process."""

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
from tests.mocks.ollama import NDJSON, VERSION, MockOllamaServer
from tests.mocks.openai_chat import ChatScript, Reply, ToolCall

ROOT = Path(__file__).resolve().parents[2]
TRANSFER = {"type": "function", "function": {
    "name": "transfer_call", "description": "Transfer the caller",
    "parameters": {"type": "object", "properties": {"extension": {"type": "string"}},
                   "required": ["extension"]}}}
CALL = ToolCall("transfer_call", {"extension": "200"})
SCRIPT = ChatScript(model="qwen3", replies={"sales": Reply(tool_calls=(CALL,)),
                                            "open": Reply("We open at nine.")},
                    after_tool={"transfer_call": Reply("Transferring.")})


def body(text: str = "When do you open?", **extra: Any) -> dict[str, Any]:
    return {"model": "qwen3", "think": False, "keep_alive": "5m",
            "options": {"temperature": 0.7, "num_ctx": 4096}, "tools": [TRANSFER],
            "messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": text}], **extra}


@asynccontextmanager
async def client_for(server: MockOllamaServer) -> AsyncIterator[httpx.AsyncClient]:
    async with open_memory_transport({"localhost": server}) as transport:
        async with httpx.AsyncClient(transport=transport,
                                     base_url="http://localhost:11434") as client:
            yield client


async def read_ndjson(client: httpx.AsyncClient, payload: dict[str, Any]
                      ) -> tuple[httpx.Response, list[tuple[float, dict[str, Any]]]]:
    """POST /api/chat and read the body line by line: (response, [(arrival time, object)])."""
    lines: list[tuple[float, dict[str, Any]]] = []
    start = trio.current_time()
    async with client.stream("POST", "/api/chat", json=payload) as response:
        buffer = ""
        async for text in response.aiter_text():
            buffer += text
            while "\n" in buffer:
                line, buffer = buffer.split("\n", 1)
                lines.append((trio.current_time() - start, json.loads(line)))
        assert buffer == ""
    return response, lines


async def test_text_turn_ndjson(autojump_clock: trio.abc.Clock) -> None:
    server = MockOllamaServer(script=SCRIPT)
    async with client_for(server) as client:
        response, lines = await read_ndjson(client, body())
    assert response.status_code == 200 and response.headers["content-type"] == NDJSON
    assert [t for t, _ in lines] == pytest.approx([0.3, 0.35, 0.4, 0.45, 0.45])
    *deltas, last = [obj for _, obj in lines]
    assert [d["message"] for d in deltas] == [{"role": "assistant", "content": c}
                                             for c in ("We", " open", " at", " nine.")]
    assert all(d["done"] is False and d["model"] == "qwen3" for d in deltas)
    assert deltas[0]["created_at"].endswith("Z") and "T" in deltas[0]["created_at"]
    assert last["done"] is True and last["done_reason"] == "stop"
    assert last["message"] == {"role": "assistant", "content": ""}
    assert last["eval_count"] == 4 and last["total_duration"] == 450_000_000
    assert last["eval_duration"] == 150_000_000 and last["prompt_eval_count"] > 0
    assert all(isinstance(last[k], int) for k in ("load_duration", "prompt_eval_duration"))
    log = await server.wait_chat_finished(1)
    assert log.completed and log.stream and log.first_token_at == 0.3
    assert log.params["options"]["num_ctx"] == 4096 and log.params["keep_alive"] == "5m"


async def test_tool_call_is_whole_with_object_arguments(autojump_clock: trio.abc.Clock) -> None:
    server = MockOllamaServer(script=SCRIPT)
    async with client_for(server) as client:
        _, lines = await read_ndjson(client, body("Transfer me to sales"))
        follow = body("Transfer me to sales")
        follow["messages"] += [
            {"role": "assistant", "content": "", "tool_calls": [lines[0][1]["message"]
                                                                ["tool_calls"][0]]},
            {"role": "tool", "tool_name": "transfer_call", "content": "{\"ok\":true}"}]
        _, after = await read_ndjson(client, follow)
    assert lines[0][1]["message"] == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1_1", "function": {"index": 0, "name": "transfer_call",
                                        "arguments": {"extension": "200"}}}]}
    assert lines[1][1]["done"] and lines[1][1]["done_reason"] == "stop" and len(lines) == 2
    assert "".join(o["message"]["content"] for _, o in after) == "Transferring."
    assert server.chats[1].problems == []


async def test_tool_result_by_call_id_and_unmatched(autojump_clock: trio.abc.Clock) -> None:
    server = MockOllamaServer(script=SCRIPT)
    history = [{"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_9", "function": {"name": "transfer_call", "arguments": {"extension": "1"}}}]}]
    by_id = body("sales")
    by_id["messages"] += [*history, {"role": "tool", "tool_call_id": "call_9", "content": "ok"}]
    unmatched = body("sales")
    unmatched["messages"] += [{"role": "tool", "tool_name": "hang_up", "content": "ok"}]
    async with client_for(server) as client:
        _, a = await read_ndjson(client, by_id)
        _, b = await read_ndjson(client, unmatched)
    assert "".join(o["message"]["content"] for _, o in a) == "Transferring."
    assert "".join(o["message"]["content"] for _, o in b) == "done"
    assert server.chats[0].problems == [] and "hang_up" in server.chats[1].problems[0]


@pytest.mark.parametrize(("patch", "status", "words"), [
    ({"model": "llama9"}, 404, 'model "llama9" not found, try pulling it first'),
    ({"model": None}, 400, "model is required"),
    ({"messages": [{"role": "user", "content": ["x"]}]}, 400, "cannot unmarshal array"),
    ({"messages": [{"role": "robot", "content": "x"}]}, 400, "invalid role"),
    ({"messages": [{"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "transfer_call", "arguments": "{\"extension\":\"2\"}"}}]}]},
     400, "cannot unmarshal string"),
    ({"tools": [{"type": "function"}]}, 400, "function.name"),
    ({"stream": "yes"}, 400, "cannot unmarshal string"),
])
async def test_refused_bodies(autojump_clock: trio.abc.Clock, patch: dict[str, Any], status: int,
                              words: str) -> None:
    server = MockOllamaServer(script=SCRIPT)
    payload = {k: v for k, v in {**body(), **patch}.items() if v is not None}
    async with client_for(server) as client:
        r = await client.post("/api/chat", json=payload)
        bad_json = await client.post("/api/chat", content=b"{nope")
    assert r.status_code == status and words in r.json()["error"] and set(r.json()) == {"error"}
    assert bad_json.status_code == 400 and server.chats[0].status == status


async def test_stream_false_and_load(autojump_clock: trio.abc.Clock) -> None:
    server = MockOllamaServer(script=SCRIPT)
    async with client_for(server) as client:
        r = await client.post("/api/chat", json=body("open", stream=False))
        at = trio.current_time()
        call = (await client.post("/api/chat", json=body("sales", stream=False))).json()
        load = await client.post("/api/chat", json={"model": "qwen3:latest"})
    assert r.headers["content-type"] == "application/json" and at == 0.3 + 3 * 0.05
    assert r.json()["message"] == {"role": "assistant", "content": "We open at nine."}
    assert r.json()["done"] is True and r.json()["eval_count"] == 4
    assert call["message"]["tool_calls"][0]["function"]["arguments"] == {"extension": "200"}
    assert load.json()["done_reason"] == "load" and load.json()["done"] is True


async def test_tags_version_root_and_404(autojump_clock: trio.abc.Clock) -> None:
    server = MockOllamaServer(script=ChatScript(model="qwen3", models=("llama3.2:3b",)))
    async with client_for(server) as client:
        tags = (await client.get("/api/tags")).json()
        version = (await client.get("/api/version")).json()
        root = await client.get("/")
        missing = await client.get("/api/nothing")
    assert [m["name"] for m in tags["models"]] == ["qwen3:latest", "llama3.2:3b"]
    assert tags["models"][0]["details"]["format"] == "gguf"
    assert version == {"version": VERSION} and root.text == "Ollama is running"
    assert missing.status_code == 404 and missing.text == "404 page not found"


async def test_faults(autojump_clock: trio.abc.Clock) -> None:
    script = ChatScript(model="qwen3", replies={"": Reply("a b c")}, fail_request=1,
                        error_event_request=(2, 1), disconnect_request=(3, 2))
    server = MockOllamaServer(script=script)
    async with client_for(server) as client:
        failed = await client.post("/api/chat", json=body())
        response, lines = await read_ndjson(client, body())
        with pytest.raises(httpx.RemoteProtocolError):
            await read_ndjson(client, body())
    assert failed.status_code == 500 and "error" in failed.json()
    assert response.status_code == 200 and len(lines) == 2
    assert set(lines[-1][1]) == {"error"} and lines[-1][0] == 0.35
    dropped = await server.wait_chat_finished(3)
    assert dropped.disconnected and dropped.deltas_sent == 2
    async with client_for(MockOllamaServer(script=ChatScript(reject_status=503))) as client:
        assert (await client.post("/api/chat", json=body())).status_code == 503


async def test_client_closing_early_is_recorded(autojump_clock: trio.abc.Clock) -> None:
    server = MockOllamaServer(script=ChatScript(model="qwen3", replies={"": Reply("a b c d")}))
    async with client_for(server) as client:
        async with client.stream("POST", "/api/chat", json=body()) as response:
            with trio.CancelScope() as scope:  # barge-in: cancel, never break out
                async for _ in response.aiter_lines():
                    scope.cancel()
        log = await server.wait_chat_finished(1)
    assert log.client_closed and log.deltas_sent == 1 and log.finished_at == 0.3


async def test_v1_uses_whole_tool_calls_and_fp_ollama(autojump_clock: trio.abc.Clock) -> None:
    server = MockOllamaServer(script=SCRIPT)
    payload = {**body("sales"), "stream": True, "stream_options": {"include_usage": True}}
    events = []
    async with client_for(server) as client:
        async with client.stream("POST", "/v1/chat/completions", json=payload) as response:
            assert response.headers["content-type"] == "text/event-stream"
            async for line in response.aiter_lines():
                if line:
                    events.append(line.removeprefix("data: "))
        unknown = await client.post("/v1/chat/completions", json={**payload, "model": "x"})
        models = (await client.get("/v1/models")).json()
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["system_fingerprint"] for c in chunks} == {"fp_ollama"}
    delta = chunks[0]["choices"][0]["delta"]
    assert delta["role"] == "assistant" and delta["tool_calls"] == [
        {"index": 0, "id": "call_1_1", "type": "function",
         "function": {"name": "transfer_call", "arguments": "{\"extension\":\"200\"}"}}]
    assert chunks[1]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[2]["choices"] == [] and "usage" in chunks[2]
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"
    assert models["data"][0]["id"] == "qwen3" and models["data"][0]["owned_by"] == "library"
    assert [c.path for c in server.chats] == ["/v1/chat/completions"] * 2


async def test_v1_tolerates_unmatched_tool_ids(autojump_clock: trio.abc.Clock) -> None:
    server = MockOllamaServer(script=SCRIPT)
    payload = {**body("sales"), "stream": False}
    payload["messages"] = [*payload["messages"],
                           {"role": "tool", "tool_call_id": "call_x", "content": "ok"}]
    async with client_for(server) as client:
        r = await client.post("/v1/chat/completions", json=payload)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "done"
    assert server.chats[0].problems


async def test_over_loopback_tcp() -> None:
    server = MockOllamaServer(script=ChatScript(model="qwen3", first_token_delay=0.01,
                                                token_delay=0.001))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            _, lines = await read_ndjson(client, body())
        nursery.cancel_scope.cancel()
    assert "".join(o["message"]["content"] for _, o in lines) == "reply 1"
    assert lines[-1][1]["done"] is True


async def test_process_serves_and_stops_on_stdin_eof(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    os.mkfifo(ready)  # opening a FIFO blocks until the writer does: no polling
    cmd = [sys.executable, "-m", "tests.mocks.ollama", "--port", "0", "--ready", str(ready),
           "--model", "llama3.2", "--first-token-delay", "0", "--token-delay", "0"]
    proc = await trio.lowlevel.open_process(cmd, cwd=ROOT, stdin=subprocess.PIPE)
    try:
        with trio.fail_after(30):
            info = json.loads(
                await trio.to_thread.run_sync(ready.read_text, abandon_on_cancel=True))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{info['port']}") as client:
                _, lines = await read_ndjson(client, body(model="llama3.2"))
            assert lines[-1][1]["done"] is True
            assert proc.stdin is not None
            await proc.stdin.aclose()
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if proc.stdin is not None:
            await proc.stdin.aclose()
