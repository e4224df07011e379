"""Ollama's native ``POST /api/chat`` (reference/providers.md 6.1): the body checks (pure) and
the answer: NDJSON lines paced like the chat mocks, or one JSON object with ``stream: false``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import trio

from tests.mocks.http import Disconnect, HttpResponse, json_response
from tests.mocks.openai_chat import ChatLog, ChatServer
from tests.mocks.openai_chat.request import ChatRequest
from tests.mocks.openai_chat.script import Reply, prompt_tokens, split_words

__all__ = ["NDJSON", "OllamaRequestError", "answer_chat", "ndjson_line", "parse_ollama_chat"]

NDJSON = "application/x-ndjson"
ROLES = ("system", "user", "assistant", "tool")
KNOWN = ("model", "messages", "tools", "stream")
ARGUMENTS_NOT_OBJECT = ("json: cannot unmarshal string into Go struct field "
                        "ToolCallFunction.messages.tool_calls.function.arguments of type "
                        "api.ToolCallFunctionArguments")
LOAD_DURATION = 1_334_875
"""Nanoseconds reported for loading the (already loaded) model."""


class OllamaRequestError(Exception):
    """A refused body: HTTP ``status`` with ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def ndjson_line(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"


def created_at() -> str:
    """Ollama's ``created_at``: RFC 3339 UTC with fractional seconds (a wall-clock stamp)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _go_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "bool", int: "number",
            float: "number"}.get(type(value), "value")


def _unmarshal(value: Any, field: str, go_type: str) -> OllamaRequestError:
    return OllamaRequestError(f"json: cannot unmarshal {_go_type(value)} into Go struct field "
                              f"{field} of type {go_type}")


def parse_ollama_chat(body: Any, problems: list[str]) -> ChatRequest:
    """Check an ``/api/chat`` body as Ollama decodes it. A tool result naming no earlier call
    is only recorded in ``problems`` (Ollama does not check). Raises OllamaRequestError."""
    if not isinstance(body, dict):
        raise OllamaRequestError("missing request body" if body is None
                                 else f"json: cannot unmarshal {_go_type(body)} into Go value "
                                      "of type api.ChatRequest")
    model = body.get("model")
    if not model:
        raise OllamaRequestError("model is required")
    if not isinstance(model, str):
        raise _unmarshal(model, "ChatRequest.model", "string")
    messages = body.get("messages") or []
    if not isinstance(messages, list):
        raise _unmarshal(messages, "ChatRequest.messages", "[]api.Message")
    call_names: dict[str, str] = {}
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _unmarshal(message, "ChatRequest.messages", "api.Message")
        role, content = message.get("role"), message.get("content", "")
        if role not in ROLES:
            raise OllamaRequestError(f"messages[{i}]: invalid role {role!r}")
        if not isinstance(content, str):
            raise _unmarshal(content, "Message.messages.content", "string")
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise OllamaRequestError(f"messages[{i}]: tool call without function.name")
            if not isinstance(function.get("arguments", {}), dict):
                raise OllamaRequestError(ARGUMENTS_NOT_OBJECT)
            call_names[str(call.get("id", function["name"]))] = function["name"]
        if role == "tool" and message.get("tool_name") not in call_names.values() \
                and message.get("tool_call_id") not in call_names:
            problems.append(f"tool message messages[{i}] names no earlier tool call "
                            f"(tool_name {message.get('tool_name')!r}, tool_call_id "
                            f"{message.get('tool_call_id')!r})")
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise _unmarshal(tools, "ChatRequest.tools", "api.Tools")
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise OllamaRequestError(f"tools[{i}]: a tool needs type function and function.name")
        if tool.get("type", "function") != "function":
            problems.append(f"tools[{i}] has type {tool.get('type')!r}, not function")
    stream = body.get("stream", True)
    if not isinstance(stream, bool):
        raise _unmarshal(stream, "ChatRequest.stream", "bool")
    params = {k: v for k, v in body.items() if k not in KNOWN}
    return ChatRequest(model, messages, tools, stream, None, params, call_names)


def _messages(reply: Reply, call_ids: list[str]) -> list[dict[str, Any]]:
    """The ``message`` of each streamed line: one per word, then one per whole tool call."""
    lines: list[dict[str, Any]] = [{"role": "assistant", "content": w}
                                   for w in split_words(reply.text)]
    for index, (call, call_id) in enumerate(zip(reply.tool_calls, call_ids, strict=True)):
        lines.append({"role": "assistant", "content": "", "tool_calls": [
            {"id": call_id, "function": {"index": index, "name": call.name,
                                         "arguments": dict(call.arguments)}}]})
    return lines


def _done(server: ChatServer, log: ChatLog, chat: ChatRequest, message: dict[str, Any],
          evals: int) -> dict[str, Any]:
    """The final object, with Ollama's metrics (nanoseconds, from the runtime clock)."""
    now = trio.current_time()
    first = log.first_token_at if log.first_token_at is not None else now
    ns = 1_000_000_000
    return {"model": chat.model, "created_at": created_at(), "message": message, "done": True,
            "done_reason": "stop", "total_duration": int((now - log.started_at) * ns),
            "load_duration": LOAD_DURATION, "prompt_eval_count": prompt_tokens(chat.messages),
            "prompt_eval_duration": int(server.script.first_token_delay * ns),
            "eval_count": evals, "eval_duration": int((now - first) * ns)}


async def answer_chat(server: ChatServer, log: ChatLog, chat: ChatRequest) -> HttpResponse:
    """The answer to a checked request: NDJSON stream, single object, or (no messages) the
    ``done_reason: "load"`` object. A scripted disconnect raises Disconnect."""
    if not chat.messages:
        return json_response(200, {"model": chat.model, "created_at": created_at(),
                                   "message": {"role": "assistant", "content": ""},
                                   "done_reason": "load", "done": True})
    reply = server.choose(log, chat.messages, chat.last_tool_name(), chat.tool_names)
    lines = _messages(reply, log.tool_call_ids)
    if chat.stream:
        return HttpResponse(200, [("Content-Type", NDJSON)], _stream(server, log, chat, lines))
    point = server.fault_point(log)
    if point is not None:
        await trio.sleep_until(server.due(log, min(point[1], len(lines))))
        if server.fault(log, point[1]) == "disconnect":
            raise Disconnect
        log.status = 500
        return json_response(500, {"error": log.error})
    end = server.due(log, max(len(lines) - 1, 0))
    await trio.sleep_until(end)
    log.first_token_at, log.deltas_sent = end, len(lines)
    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
    calls = [c for line in lines for c in line.get("tool_calls", [])]
    if calls:
        message["tool_calls"] = calls
    return json_response(200, _done(server, log, chat, message, len(lines)))


async def _stream(server: ChatServer, log: ChatLog, chat: ChatRequest,
                  lines: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    for i, message in enumerate([*lines, None]):
        if message is not None:
            await trio.sleep_until(server.due(log, i))
        fault = server.fault(log, i)
        if fault == "disconnect":
            raise Disconnect
        if fault == "error":
            yield ndjson_line({"error": log.error})
            return
        if message is None:
            break
        sent_at = trio.current_time()
        yield ndjson_line({"model": chat.model, "created_at": created_at(), "message": message,
                           "done": False})
        log.deltas_sent += 1
        if log.first_token_at is None:
            log.first_token_at = sent_at
    yield ndjson_line(_done(server, log, chat, {"role": "assistant", "content": ""}, len(lines)))
