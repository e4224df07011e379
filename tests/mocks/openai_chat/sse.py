"""Chat Completions wire shapes (pure): the SSE framing, ``chat.completion.chunk`` objects, and
the plan of deltas a scripted reply becomes (reference/providers.md 5.1, and 6.2 for the
"whole call in one delta" style)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .script import Reply, arguments_json, split_arguments, split_words

__all__ = ["DONE", "ChunkFactory", "Plan", "error_body", "plan_reply", "sse_event", "usage"]

DONE = b"data: [DONE]\n\n"


def sse_event(payload: Any) -> bytes:
    """One SSE event: ``data: <compact json>`` and a blank line."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def error_body(message: str, type_: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object (HTTP error bodies and the mid-stream error event)."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


@dataclass(frozen=True)
class Plan:
    """What a reply becomes on the wire."""

    role_delta: dict[str, Any] | None
    """Sent at once (before the first-token delay); None when the first tool-call delta
    carries the role (a turn with no text, as OpenAI sends it)."""
    deltas: list[dict[str, Any]] = field(default_factory=list)
    """Paced deltas: the words, then the tool calls."""
    finish_reason: str = "stop"
    message: dict[str, Any] = field(default_factory=dict)
    """The whole message, for ``stream: false``."""


def plan_reply(reply: Reply, call_ids: list[str], style: str) -> Plan:
    """Deltas for ``reply``; ``call_ids`` name its tool calls; ``style`` is ``fragments``
    (header delta with ``arguments: ""`` then argument pieces) or ``whole`` (one delta per
    call with the complete arguments string)."""
    deltas: list[dict[str, Any]] = [{"content": w} for w in split_words(reply.text)]
    calls = []
    for index, (call, call_id) in enumerate(zip(reply.tool_calls, call_ids, strict=True)):
        arguments = arguments_json(call.arguments)
        calls.append({"id": call_id, "type": "function",
                      "function": {"name": call.name, "arguments": arguments}})
        if style == "whole":
            deltas.append({"tool_calls": [{"index": index, **calls[-1]}]})
            continue
        deltas.append({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                       "function": {"name": call.name, "arguments": ""}}]})
        deltas += [{"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                   for piece in split_arguments(arguments)]
    role_delta: dict[str, Any] | None = {"role": "assistant", "content": "", "refusal": None}
    if not reply.text and calls:
        role_delta = None
        deltas[0] = {"role": "assistant", "content": None, **deltas[0]}
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None,
                               "refusal": None}
    if calls:
        message["tool_calls"] = calls
    return Plan(role_delta, deltas, "tool_calls" if calls else "stop", message)


@dataclass(frozen=True)
class ChunkFactory:
    """Builds the chunks of one completion (same id, created and model on each)."""

    id: str
    created: int
    model: str
    system_fingerprint: str | None

    def _head(self, object_: str) -> dict[str, Any]:
        head: dict[str, Any] = {"id": self.id, "object": object_, "created": self.created,
                                "model": self.model}
        if self.system_fingerprint is not None:
            head["system_fingerprint"] = self.system_fingerprint
        return head

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {**self._head("chat.completion.chunk"), "choices": [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}

    def usage_chunk(self, usage: dict[str, int]) -> dict[str, Any]:
        return {**self._head("chat.completion.chunk"), "choices": [], "usage": usage}

    def completion(self, plan: Plan, usage: dict[str, int]) -> dict[str, Any]:
        """The ``stream: false`` answer."""
        return {**self._head("chat.completion"), "choices": [
            {"index": 0, "message": plan.message, "logprobs": None,
             "finish_reason": plan.finish_reason}], "usage": usage}


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}
