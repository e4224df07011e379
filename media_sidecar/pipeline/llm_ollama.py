"""Ollama's native ``/api/chat``: newline-delimited JSON, tool arguments as objects.

The conversation is kept in the OpenAI chat format (:class:`~.base.ChatModel`); this module
converts it: assistant tool calls carry their arguments as objects, and a tool result names
its tool (``tool_name``). A line ``{"error": ...}`` mid-stream (status stays 200) is a failure.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..config.schema import LlmConfig
from ..protocol.wirejson import loads, obj, objects, string
from ..providers.ws import error_message
from ..tools.spec import ToolSpec
from .base import LlmDone, LlmEvent, Net, ProviderError, TextDelta, ToolCall, http_error
from .llm_openai import tool_schema

log = logging.getLogger("agi_voice.llm")

OLLAMA_URL = "http://127.0.0.1:11434"
DEFAULT_MODEL = "llama3.2"


def to_ollama(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-format messages in Ollama's shape."""
    out: list[dict[str, Any]] = []
    for m in messages:
        m2: dict[str, Any] = {"role": m["role"], "content": m.get("content") or ""}
        if m.get("tool_calls"):
            calls = []
            for i, tc in enumerate(m["tool_calls"]):
                fn = tc["function"]
                args = fn.get("arguments") or "{}"
                try:
                    obj = json.loads(args) if isinstance(args, str) else args
                except ValueError:
                    obj = {}
                calls.append({"id": tc.get("id", ""),
                              "function": {"index": i, "name": fn["name"], "arguments": obj}})
            m2["tool_calls"] = calls
        if m["role"] == "tool":
            m2["tool_name"] = m.get("name", "")
            if m.get("tool_call_id"):
                m2["tool_call_id"] = m["tool_call_id"]
        out.append(m2)
    return out


class OllamaChat:
    """Implements :class:`~media_sidecar.pipeline.base.ChatModel` for ``engine: ollama``."""

    name = "ollama"

    def __init__(self, cfg: LlmConfig, env: Mapping[str, str] | None = None,
                 net: Net | None = None) -> None:
        self.cfg = cfg
        self.net = net or Net()
        self.url = (cfg.url or OLLAMA_URL).rstrip("/") + "/api/chat"
        self.model = cfg.model or DEFAULT_MODEL

    def body(self, messages: list[dict[str, Any]], tools: list[ToolSpec]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model, "messages": to_ollama(messages), "stream": True,
            "think": False, "keep_alive": self.cfg.keep_alive,
            "options": {"temperature": self.cfg.temperature, "num_predict": self.cfg.max_tokens},
        }
        if tools:
            body["tools"] = tool_schema(tools)
        return body

    async def stream(self, messages: list[dict[str, Any]], tools: list[ToolSpec]
                     ) -> AsyncIterator[LlmEvent]:
        what = f"Ollama at {urlsplit(self.url).netloc}"
        try:
            async with self.net.http.stream(
                    "POST", self.url, timeout=self.cfg.timeout, json=self.body(messages, tools)) as resp:
                if resp.status_code != 200:
                    detail = error_message(await resp.aread())
                    raise http_error(what, status=resp.status_code, detail=detail)
                async for event in self._events(resp):
                    yield event
        except httpx.HTTPError as exc:
            raise http_error(what, exc) from None

    async def _events(self, resp: httpx.Response) -> AsyncIterator[LlmEvent]:
        n = 0
        final: LlmDone | None = None
        failure: ProviderError | None = None
        async for line in resp.aiter_lines():  # to the end, failures too (see llm_openai)
            if final is not None or failure is not None or not line.strip():
                continue
            try:
                chunk = loads(line)
                if not isinstance(chunk, dict):
                    raise ValueError(line)
            except ValueError:
                failure = ProviderError("Ollama sent an unreadable line", retryable=True)
                continue
            if "error" in chunk:
                failure = ProviderError(f"Ollama failed mid-answer: {str(chunk['error'])[:200]}",
                                        retryable=True)
                continue
            msg = obj(chunk.get("message"))
            if string(msg.get("content")):
                yield TextDelta(msg["content"])
            for tc in objects(msg.get("tool_calls")):
                fn = obj(tc.get("function"))
                if string(fn.get("name")):
                    n += 1
                    args = fn.get("arguments")
                    yield ToolCall(string(tc.get("id")) or f"call_{n}", fn["name"],
                                   args if isinstance(args, str | dict) else {})
            if chunk.get("done"):
                usage = {"prompt_tokens": chunk.get("prompt_eval_count", 0),
                         "completion_tokens": chunk.get("eval_count", 0)}
                final = LlmDone("tool_calls" if n else string(chunk.get("done_reason")) or "stop",
                                usage)
        if failure is not None:
            raise failure
        if final is None:
            raise ProviderError("the Ollama stream ended before done", retryable=True)
        yield final
