"""The OpenAI-compatible endpoints (``POST /v1/chat/completions``, ``GET /v1/models``) for any
:class:`ChatServer`, in OpenAI's own flavour or an OpenAI-compatible server's (Ollama ``/v1``):
auth, scripted refusals, body checks, then the SSE stream or the single JSON completion."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import trio

from tests.mocks.http import Disconnect, HttpRequest, HttpResponse, json_response

from .base import ChatServer
from .request import ChatRequest, ChatRequestError, check_reasoning_params, parse_chat_body
from .script import ChatLog, prompt_tokens
from .sse import DONE, ChunkFactory, Plan, error_body, plan_reply, sse_event, usage

__all__ = ["OLLAMA_V1", "OPENAI", "ChatCompletions", "Flavor"]

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"


@dataclass(frozen=True)
class Flavor:
    """How one OpenAI-compatible server differs from another."""

    tool_call_style: Literal["fragments", "whole"] | None = None
    """None: the script's ``tool_call_style``."""
    system_fingerprint: str = "fp_mock"
    strict_tool_ids: bool = True
    """A tool message answering no pending tool call (or a call left unanswered) is a 400."""
    known_models_only: bool = False
    """404 for a model the script does not list."""
    server_error_type: str = "server_error"
    not_found_type: str = "invalid_request_error"
    owned_by: str = "openai"
    event_stream_type: str = "text/event-stream; charset=utf-8"


OPENAI = Flavor()
OLLAMA_V1 = Flavor(tool_call_style="whole", system_fingerprint="fp_ollama",
                   strict_tool_ids=False, known_models_only=True, server_error_type="api_error",
                   not_found_type="not_found_error", owned_by="library",
                   event_stream_type="text/event-stream")


class ChatCompletions:
    """Serves the OpenAI-compatible routes of ``server``; ``api_key`` None disables auth."""

    def __init__(self, server: ChatServer, flavor: Flavor = OPENAI,
                 api_key: str | None = "test-key") -> None:
        self.server = server
        self.flavor = flavor
        self.api_key = api_key

    def handles(self, request: HttpRequest) -> bool:
        return request.path.rstrip("/") in (CHAT_PATH, MODELS_PATH)

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer a request for one of its routes (others: 404 ``Invalid URL``)."""
        path = request.path.rstrip("/")
        if request.method == "POST" and path == CHAT_PATH:
            return await self._chat(request)
        refused = self._refusal(request)
        if refused is not None:
            return self._error(*refused)
        if request.method == "GET" and path == MODELS_PATH:
            script = self.server.script
            models = [{"id": m, "object": "model", "created": 1686935002,
                       "owned_by": self.flavor.owned_by} for m in (script.model, *script.models)]
            return json_response(200, {"object": "list", "data": models})
        return self._error(404, f"Invalid URL ({request.method} {request.path})")

    def _refusal(self, request: HttpRequest) -> tuple[int, str, str | None, str | None] | None:
        """(status, message, param, code) of a scripted refusal or failed auth, or None."""
        status = self.server.script.reject_status
        if status is not None:
            return status, f"Scripted refusal with HTTP {status}.", None, None
        if self.api_key is None:
            return None
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme == "Bearer" and key == self.api_key:
            return None
        if not key:
            return 401, ("You didn't provide an API key. You need to provide your API key in an "
                         "Authorization header using Bearer auth (i.e. Authorization: Bearer "
                         "YOUR_KEY)."), None, "invalid_api_key"
        return 401, (f"Incorrect API key provided: {key[:3]}***. You can find your API key at "
                     "https://platform.openai.com/account/api-keys."), None, "invalid_api_key"

    def _error(self, status: int, message: str, param: str | None = None,
               code: str | None = None, log: ChatLog | None = None) -> HttpResponse:
        body = error_body(message, "", param, code)
        if log is not None:
            log.status, log.error = status, message
        if status >= 500:
            type_ = self.flavor.server_error_type
        elif status == 404:
            type_ = self.flavor.not_found_type
        elif status == 429 and self.flavor is OPENAI:
            type_ = "requests"
        else:
            type_ = "invalid_request_error"
        body["error"]["type"] = type_
        if log is not None:
            log.sent.append(body)
        return json_response(status, body)

    async def _chat(self, request: HttpRequest) -> HttpResponse:
        server, script = self.server, self.server.script
        log = server.new_chat(request)
        refused = self._refusal(request)
        if refused is not None:
            return self._error(*refused, log=log)
        if script.fail_request == log.n:
            return self._error(500, "The server had an error while processing your request. "
                               "Sorry about that! (scripted)", log=log)
        try:
            try:
                body = request.json()
            except ValueError:
                body = None
            log.body = body
            chat = parse_chat_body(body, strict_tool_ids=self.flavor.strict_tool_ids,
                                   problems=log.problems)
            if self.flavor is OPENAI:
                check_reasoning_params(body)
        except ChatRequestError as exc:
            log.problems.append(f"refused: {exc.message}")
            return self._error(exc.status, exc.message, exc.param, exc.code, log=log)
        log.model, log.messages, log.tools = chat.model, chat.messages, chat.tools
        log.stream, log.stream_options, log.params = chat.stream, chat.stream_options, chat.params
        if self.flavor.known_models_only and chat.model not in _known(server):
            return self._error(404, f'model "{chat.model}" not found, try pulling it first',
                               "model", log=log)
        reply = server.choose(log, chat.messages, chat.last_tool_name(), chat.tool_names)
        style = self.flavor.tool_call_style or script.tool_call_style
        plan = plan_reply(reply, log.tool_call_ids, style)
        factory = ChunkFactory(f"chatcmpl-{log.n}", int(time.time()), chat.model,
                               self.flavor.system_fingerprint)
        if chat.stream:
            return HttpResponse(200, [("Content-Type", self.flavor.event_stream_type),
                                      ("x-request-id", f"req_{request.n}")],
                                self._stream(log, chat, plan, factory))
        return await self._complete(log, chat, plan, factory)

    async def _stream(self, log: ChatLog, chat: ChatRequest, plan: Plan,
                      factory: ChunkFactory) -> AsyncIterator[bytes]:
        """The SSE body: role chunk at once, paced deltas, finish chunk, usage (if asked for),
        ``[DONE]``; a scripted fault replaces the rest by an error event or a dropped
        connection (raises Disconnect)."""
        server = self.server
        if plan.role_delta is not None:
            yield _sent(log, factory.chunk(plan.role_delta))
        for i, delta in enumerate(plan.deltas):
            await trio.sleep_until(server.due(log, i))
            fault = server.fault(log, i)
            if fault is not None:
                async for event in self._fault(fault, log):
                    yield event
                return
            sent_at = trio.current_time()
            yield _sent(log, factory.chunk(delta))
            log.deltas_sent += 1
            if log.first_token_at is None:
                log.first_token_at = sent_at
        fault = server.fault(log, len(plan.deltas))
        if fault is not None:
            async for event in self._fault(fault, log):
                yield event
            return
        yield _sent(log, factory.chunk({}, plan.finish_reason))
        if chat.include_usage:
            yield _sent(log, factory.usage_chunk(usage(prompt_tokens(chat.messages),
                                                      len(plan.deltas))))
        yield DONE

    async def _fault(self, fault: str, log: ChatLog) -> AsyncIterator[bytes]:
        if fault == "disconnect":
            raise Disconnect
        yield _sent(log, error_body(log.error or "", "server_error"))

    async def _complete(self, log: ChatLog, chat: ChatRequest, plan: Plan,
                        factory: ChunkFactory) -> HttpResponse:
        """``stream: false``: the whole completion when the last delta would have gone out; a
        scripted disconnect drops the connection with no answer, an error event becomes a 500."""
        server = self.server
        point = server.fault_point(log)
        if point is not None:
            await trio.sleep_until(server.due(log, min(point[1], len(plan.deltas))))
            if server.fault(log, point[1]) == "disconnect":
                raise Disconnect
            return self._error(500, log.error or "", log=log)
        end = server.due(log, max(len(plan.deltas) - 1, 0))
        await trio.sleep_until(end)
        log.first_token_at, log.deltas_sent = end, len(plan.deltas)
        body = factory.completion(plan, usage(prompt_tokens(chat.messages), len(plan.deltas)))
        log.sent.append(body)
        return json_response(200, body, [("x-request-id", f"req_{log.record.request.n}")])


def _sent(log: ChatLog, payload: dict[str, Any]) -> bytes:
    log.sent.append(payload)
    return sse_event(payload)


def _known(server: ChatServer) -> set[str]:
    names = {server.script.model, *server.script.models}
    return names | {f"{n}:latest" for n in names if ":" not in n}
