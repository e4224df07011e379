"""Any OpenAI-compatible chat-completions endpoint, streamed (Server-Sent Events).

OpenAI, Groq, vLLM, llama.cpp's server, LM Studio and Ollama's ``/v1`` speak the same SSE
framing with small differences this module tolerates: tool calls in argument fragments
(OpenAI) or whole in one delta (Ollama), ``finish_reason`` on its own empty chunk, no usage
chunk, no ids, extra fields. A ``data: {"error": ...}`` event mid-stream is a failure.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..config.schema import LlmConfig
from ..protocol.wirejson import loads, obj, objects, string, whole
from ..providers.ws import error_message
from ..tools.spec import ToolSpec
from .base import LlmDone, LlmEvent, Net, ProviderError, TextDelta, ToolCall, http_error

log = logging.getLogger("agi_voice.llm")

OPENAI_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-5.4-mini"
"""No announced shutdown in openai SDK 3.63 (gpt-4o-mini and gpt-4.1-mini: 2027-01-14)."""

_REASONING = re.compile(r"(?:.*/)?(?:o\d|gpt-5)(?:[.\-:]|$)")
"""o1, o3, o4-mini, gpt-5, gpt-5.4-mini, ... (also behind a ``vendor/`` prefix): reasoning
models, which refuse ``max_tokens`` and a non-default ``temperature``."""


def completion_token_param(cfg: LlmConfig, model: str) -> str:
    """``max_tokens`` or ``max_completion_tokens``, as ``llm.token_param`` says (``auto``: by
    the model's family)."""
    if cfg.token_param != "auto":
        return cfg.token_param
    return "max_completion_tokens" if _REASONING.match(model.lower()) else "max_tokens"


def tool_schema(tools: list[ToolSpec]) -> list[dict[str, Any]]:
    """The tools in the chat-completions ``tools`` shape (Ollama's native API takes it too)."""
    return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": t.parameters}} for t in tools]


def _wire_message(m: dict[str, Any]) -> dict[str, Any]:
    """A history message as chat completions takes it: a tool message has no ``name`` (the
    brain keeps it for Ollama's native ``tool_name``; OpenAI's ChatCompletionToolMessageParam
    is role, content, tool_call_id)."""
    if m.get("role") == "tool" and "name" in m:
        return {k: v for k, v in m.items() if k != "name"}
    return m


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class OpenAIChat:
    """Implements :class:`~media_sidecar.pipeline.base.ChatModel` for ``engine: openai``."""

    name = "openai"

    def __init__(self, cfg: LlmConfig, env: Mapping[str, str], net: Net | None = None) -> None:
        self.cfg = cfg
        self.net = net or Net()
        self.url = (cfg.url or OPENAI_URL).rstrip("/") + "/chat/completions"
        self.model = cfg.model or DEFAULT_MODEL
        self.headers = {"Content-Type": "application/json"}
        key = env.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        elif urlsplit(self.url).hostname == "api.openai.com":
            raise ProviderError(f"the environment variable {cfg.api_key_env} is not set",
                                retryable=False)

    def body(self, messages: list[dict[str, Any]], tools: list[ToolSpec]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model, "messages": [_wire_message(m) for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        param = completion_token_param(self.cfg, self.model)
        body[param] = self.cfg.max_tokens
        if param == "max_tokens":  # reasoning models refuse a non-default temperature
            body["temperature"] = self.cfg.temperature
        if tools:
            body["tools"] = tool_schema(tools)
        return body

    async def stream(self, messages: list[dict[str, Any]], tools: list[ToolSpec]
                     ) -> AsyncIterator[LlmEvent]:
        what = f"the LLM at {urlsplit(self.url).hostname}"
        try:
            async with self.net.http.stream(
                    "POST", self.url, timeout=self.cfg.timeout, json=self.body(messages, tools),
                    headers=self.headers) as resp:
                if resp.status_code != 200:
                    detail = error_message(await resp.aread())
                    raise http_error(what, status=resp.status_code, detail=detail)
                async for event in self._events(resp):
                    yield event
        except httpx.HTTPError as exc:
            raise http_error(what, exc) from None

    async def _events(self, resp: httpx.Response) -> AsyncIterator[LlmEvent]:
        calls: dict[int, _PartialCall] = {}
        finish = ""
        usage: dict[str, Any] = {}
        done = False
        failure: ProviderError | None = None
        # read to the end of the body even after [DONE] or a failure: leaving httpx's line
        # iterator early (a raise inside this loop too) leaves its generators unclosed
        async for line in resp.aiter_lines():
            if done or failure is not None or not line.startswith("data:"):
                continue  # blank separators, comments (": keep-alive"), event: lines
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                continue
            try:
                chunk = loads(data)
            except ValueError:
                failure = ProviderError("the LLM sent an unreadable event", retryable=True)
                continue
            if not isinstance(chunk, dict):
                continue
            if "error" in chunk:
                err = chunk["error"]
                msg = string(err.get("message")) if isinstance(err, dict) else str(err)
                failure = ProviderError(f"the LLM failed mid-answer: {msg[:200]}",
                                        retryable=True)
                continue
            if isinstance(chunk.get("usage"), dict):
                usage = chunk["usage"]
            for choice in objects(chunk.get("choices")):
                delta = obj(choice.get("delta"))
                content = string(delta.get("content"))
                if content:
                    yield TextDelta(content)
                for tc in objects(delta.get("tool_calls")):
                    index = whole(tc.get("index"))
                    part = calls.setdefault(len(calls) if index is None else index,
                                            _PartialCall())
                    part.id = string(tc.get("id")) or part.id
                    fn = obj(tc.get("function"))
                    part.name = string(fn.get("name")) or part.name
                    args = fn.get("arguments")
                    if isinstance(args, dict):  # some servers send an object
                        args = json.dumps(args)
                    if isinstance(args, str) and args:
                        part.arguments.append(args)
                if string(choice.get("finish_reason")):
                    finish = choice["finish_reason"]
        if failure is not None:
            raise failure
        if not done and not finish:
            raise ProviderError("the LLM stream ended without [DONE]", retryable=True)
        for i, part in sorted(calls.items()):
            if part.name:
                yield ToolCall(part.id or f"call_{i}", part.name, "".join(part.arguments) or "{}")
        yield LlmDone(finish or "stop", usage)
