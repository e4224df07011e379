"""What a chat mock answers (:class:`ChatScript`, :class:`Reply`, :class:`ToolCall`), what
happened per request (:class:`ChatLog`), and the pure rules that pick a reply. Shared by the
OpenAI Chat Completions mock and the Ollama mock (native and ``/v1``)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.mocks.http import RequestRecord

__all__ = [
    "ChatLog",
    "ChatScript",
    "Reply",
    "ToolCall",
    "arguments_json",
    "choose_reply",
    "last_user_text",
    "prompt_tokens",
    "split_arguments",
    "split_words",
    "text_of",
]


@dataclass(frozen=True)
class ToolCall:
    """A function call the model makes."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """One assistant turn: ``text`` is streamed first (one delta per word), then the calls."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class ChatScript:
    """What the mock does. Requests are numbered from 1 per server (every POST to a chat
    endpoint counts, refused or not); ``n`` below is that number."""

    replies: Mapping[str, Reply] = field(default_factory=dict)
    """Case-insensitive substring of the last user message -> reply; the first match in
    insertion order wins; no match: ``Reply(text=f"reply {n}")``."""
    after_tool: Mapping[str, Reply] = field(default_factory=dict)
    """When the last message is a tool result: tool name -> reply; default ``Reply("done")``."""
    first_token_delay: float = 0.3
    """Seconds from the request received to the first content or tool-call delta (an OpenAI
    role-only chunk goes out at once)."""
    token_delay: float = 0.05
    """Seconds between deltas."""
    reject_status: int | None = None
    """Every request is refused with this status and the API's error JSON (a provider down)."""
    fail_request: int | None = None
    """Request n gets HTTP 500 with the API's error JSON."""
    disconnect_request: tuple[int, int] | None = None
    """(n, k): request n's connection is dropped after k deltas (no terminator)."""
    error_event_request: tuple[int, int] | None = None
    """(n, k): after k deltas request n's stream carries an error event, then ends."""
    model: str = "gpt-4o-mini"
    models: tuple[str, ...] = ()
    """More model names the server lists; the Ollama mock answers 404 for any other than
    ``model`` and these (the OpenAI mock accepts any model)."""
    tool_call_style: Literal["fragments", "whole"] = "fragments"
    """``fragments``: OpenAI (a header delta, then the arguments in a few pieces); ``whole``:
    each call complete in one delta (Ollama ``/v1`` and other compatible servers)."""


@dataclass(eq=False)
class ChatLog:
    """One chat request and how its answer went. ``messages`` etc. are as received (None /
    empty if the body was refused before they were read)."""

    n: int
    path: str
    record: RequestRecord
    started_at: float
    model: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    """The other body fields (temperature, tool_choice, options, keep_alive, ...)."""
    status: int = 200
    error: str | None = None
    """The message of an error answer (HTTP or in-stream)."""
    reply: Reply | None = None
    """The scripted reply chosen (tool calls not declared in the request are dropped)."""
    tool_call_ids: list[str] = field(default_factory=list)
    deltas_sent: int = 0
    """Content and tool-call deltas (SSE chunks or NDJSON lines) written."""
    first_token_at: float | None = None
    problems: list[str] = field(default_factory=list)
    """Client deviations the mock tolerated or refused, and script entries it could not follow."""
    body: Any = field(default=None, repr=False)
    """The request JSON as received (None if it was not JSON), for the contract tests."""
    sent: list[dict[str, Any]] = field(default_factory=list, repr=False)
    """The JSON objects the response carried (SSE chunks, the completion, the error body)."""

    @property
    def completed(self) -> bool:
        return self.record.completed

    @property
    def client_closed(self) -> bool:
        return self.record.client_closed

    @property
    def disconnected(self) -> bool:
        return self.record.disconnected

    @property
    def finished_at(self) -> float | None:
        return self.record.finished_at

    @property
    def text_sent(self) -> str:
        """The reply text the deltas sent so far add up to."""
        if self.reply is None:
            return ""
        return "".join(split_words(self.reply.text)[: self.deltas_sent])


# -- pure rules --------------------------------------------------------------------------------

def text_of(content: Any) -> str:
    """The text of a message ``content``: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content
                       if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return text_of(message.get("content"))
    return ""


def choose_reply(script: ChatScript, messages: list[dict[str, Any]], n: int,
                 tool_name: str | None) -> Reply:
    """The scripted reply to a conversation. ``tool_name``: the tool whose result is the last
    message (None if the last message is not a tool result); ``n``: the request number."""
    if messages and messages[-1].get("role") == "tool":
        return script.after_tool.get(tool_name or "", Reply(text="done"))
    text = last_user_text(messages).lower()
    for key, reply in script.replies.items():
        if key.lower() in text:
            return reply
    return Reply(text=f"reply {n}")


def split_words(text: str) -> list[str]:
    """One piece per word, each with its leading spaces (OpenAI's token style: "We", " open");
    trailing spaces go with the last word. ``"".join`` gives ``text`` back exactly."""
    pieces = re.findall(r"\s*\S+", text)
    if not pieces:
        return [text] if text else []
    pieces[-1] += text[len("".join(pieces)):]
    return pieces


def arguments_json(arguments: Mapping[str, Any]) -> str:
    """Arguments as the compact JSON string OpenAI sends (``{"extension":"200"}``)."""
    return json.dumps(dict(arguments), separators=(",", ":"), ensure_ascii=False)


def split_arguments(arguments: str, pieces: int = 3) -> list[str]:
    """``arguments`` in up to ``pieces`` non-empty fragments of about equal length."""
    size = max(1, -(-len(arguments) // pieces))
    return [arguments[i:i + size] for i in range(0, len(arguments), size)] or [""]


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """A deterministic stand-in for the prompt's token count: words plus 3 per message."""
    return sum(len(text_of(m.get("content")).split()) + 3 for m in messages)
