"""Checking a Chat Completions request body the way the API does (pure: JSON in, a
:class:`ChatRequest` or a :class:`ChatRequestError` out). Messages as OpenAI words them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ChatRequest", "ChatRequestError", "check_reasoning_params", "parse_chat_body"]

ROLES = ("system", "developer", "user", "assistant", "tool")
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
KNOWN = ("model", "messages", "tools", "stream", "stream_options")
REASONING = re.compile(r"(?:o\d|gpt-5)(?:[.\-:]|$)")
"""Model families that refuse ``max_tokens`` and a non-default ``temperature`` (o-series,
gpt-5...)."""


class ChatRequestError(Exception):
    """A refused body: HTTP ``status`` with OpenAI's error fields."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None,
                 status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status


@dataclass
class ChatRequest:
    """A request body that passed the checks."""

    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    call_names: dict[str, str] = field(default_factory=dict)
    """Every assistant tool call id in the history -> its function name."""

    @property
    def tool_names(self) -> list[str]:
        return [t["function"]["name"] for t in self.tools]

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))

    def last_tool_name(self) -> str | None:
        """The tool whose result is the last message, or None."""
        last = self.messages[-1] if self.messages else {}
        if last.get("role") != "tool":
            return None
        name = last.get("tool_name") or last.get("name")
        if isinstance(name, str):
            return name
        return self.call_names.get(str(last.get("tool_call_id")))


def _missing(param: str) -> ChatRequestError:
    return ChatRequestError(f"Missing required parameter: '{param}'.", param,
                            "missing_required_parameter")


def _bad_type(param: str, expected: str, value: Any) -> ChatRequestError:
    got = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
           int: "an integer", float: "a number", type(None): "null"}.get(type(value), "a value")
    return ChatRequestError(f"Invalid type for '{param}': expected {expected}, but got {got} "
                            "instead.", param, "invalid_type")


def parse_chat_body(body: Any, *, strict_tool_ids: bool, problems: list[str]) -> ChatRequest:
    """Check a Chat Completions body. With ``strict_tool_ids`` (OpenAI) a tool message that
    answers no pending assistant tool call, or a tool call left unanswered, is a 400; without
    (Ollama ``/v1``) it is only recorded in ``problems``. Raises ChatRequestError."""
    if not isinstance(body, dict):
        raise ChatRequestError("We could not parse the JSON body of your request. (HINT: This "
                               "likely means you aren't using your HTTP library correctly. The "
                               "OpenAI API expects a JSON payload.)")
    model = body.get("model")
    if model is None:
        raise ChatRequestError("you must provide a model parameter", "model")
    if not isinstance(model, str):
        raise _bad_type("model", "a string", model)
    messages = body.get("messages")
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list):
        raise _bad_type("messages", "an array", messages)
    if not messages:
        raise ChatRequestError("Invalid 'messages': empty array. Expected an array with minimum "
                               "length 1, but got an empty array instead.", "messages",
                               "empty_array")
    call_names = _check_messages(messages, strict_tool_ids, problems)
    tools = body.get("tools", [])
    if tools is None:
        tools = []
    if not isinstance(tools, list):
        raise _bad_type("tools", "an array", tools)
    for i, tool in enumerate(tools):
        _check_tool(tool, f"tools[{i}]")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad_type("stream", "a boolean", stream)
    stream_options = body.get("stream_options")
    if stream_options is not None:
        if not isinstance(stream_options, dict):
            raise _bad_type("stream_options", "an object", stream_options)
        if not stream:
            raise ChatRequestError("The 'stream_options' parameter is only allowed when 'stream' "
                                   "is enabled.", "stream_options", "invalid_value")
    params = {k: v for k, v in body.items() if k not in KNOWN}
    return ChatRequest(model, messages, tools, stream, stream_options, params, call_names)


def _check_messages(messages: list[Any], strict: bool, problems: list[str]) -> dict[str, str]:
    call_names: dict[str, str] = {}
    pending: dict[str, str] = {}
    pending_at = -1
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _bad_type(where, "an object", message)
        role = message.get("role")
        if role is None:
            raise _missing(f"{where}.role")
        if role not in ROLES:
            raise ChatRequestError(f"Invalid value: '{role}'. Supported values are: 'system', "
                                   "'assistant', 'user', 'tool', and 'developer'.",
                                   f"{where}.role", "invalid_value")
        if pending and role != "tool":
            _unanswered(pending, pending_at, strict, problems)
            pending = {}
        content = message.get("content")
        if role == "assistant":
            calls = message.get("tool_calls")
            if calls is not None:
                pending = _check_tool_calls(calls, f"{where}.tool_calls")
                pending_at = i
                call_names.update(pending)
            elif content is None:
                raise _missing(f"{where}.content")
        elif "content" not in message:
            raise _missing(f"{where}.content")
        if content is not None and not isinstance(content, str | list):
            raise _bad_type(f"{where}.content", "one of a string or array of objects", content)
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id is None:
                raise _missing(f"{where}.tool_call_id")
            if not isinstance(call_id, str):
                raise _bad_type(f"{where}.tool_call_id", "a string", call_id)
            if pending.pop(call_id, None) is None:
                text = (f"tool message {where} answers {call_id!r}, which is no pending tool "
                        "call of the preceding assistant message")
                problems.append(text)
                if strict:
                    raise ChatRequestError(
                        "Invalid parameter: messages with role 'tool' must be a response to a "
                        "preceeding message with 'tool_calls'.", f"messages.[{i}].role")
    if pending:
        _unanswered(pending, pending_at, strict, problems)
    return call_names


def _unanswered(pending: dict[str, str], at: int, strict: bool, problems: list[str]) -> None:
    ids = ", ".join(pending)
    problems.append(f"assistant tool calls in messages[{at}] without tool results: {ids}")
    if strict:
        raise ChatRequestError(
            "An assistant message with 'tool_calls' must be followed by tool messages responding "
            "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
            f"{ids}", f"messages.[{at}].role")


def _check_tool_calls(calls: Any, where: str) -> dict[str, str]:
    if not isinstance(calls, list):
        raise _bad_type(where, "an array", calls)
    names: dict[str, str] = {}
    for j, call in enumerate(calls):
        at = f"{where}[{j}]"
        if not isinstance(call, dict):
            raise _bad_type(at, "an object", call)
        for key in ("id", "type", "function"):
            if key not in call:
                raise _missing(f"{at}.{key}")
        if call["type"] != "function":
            raise ChatRequestError(f"Invalid value: '{call['type']}'. Supported values are: "
                                   "'function'.", f"{at}.type", "invalid_value")
        function = call["function"]
        if not isinstance(function, dict):
            raise _bad_type(f"{at}.function", "an object", function)
        for key in ("name", "arguments"):
            if key not in function:
                raise _missing(f"{at}.function.{key}")
            if not isinstance(function[key], str):
                raise _bad_type(f"{at}.function.{key}", "a string", function[key])
        if not isinstance(call["id"], str):
            raise _bad_type(f"{at}.id", "a string", call["id"])
        names[call["id"]] = function["name"]
    return names


def _check_tool(tool: Any, where: str) -> None:
    if not isinstance(tool, dict):
        raise _bad_type(where, "an object", tool)
    if "type" not in tool:
        raise _missing(f"{where}.type")
    if tool["type"] != "function":
        raise ChatRequestError(f"Invalid value: '{tool['type']}'. Supported values are: "
                               "'function' and 'custom'.", f"{where}.type", "invalid_value")
    function = tool.get("function")
    if function is None:
        raise _missing(f"{where}.function")
    if not isinstance(function, dict):
        raise _bad_type(f"{where}.function", "an object", function)
    name = function.get("name")
    if name is None:
        raise _missing(f"{where}.function.name")
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise ChatRequestError(f"Invalid '{where}.function.name': string does not match pattern. "
                               "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                               f"{where}.function.name", "invalid_value")
    if "description" in function and not isinstance(function["description"], str):
        raise _bad_type(f"{where}.function.description", "a string", function["description"])
    if "parameters" in function and not isinstance(function["parameters"], dict):
        raise _bad_type(f"{where}.function.parameters", "an object", function["parameters"])


def check_reasoning_params(body: dict[str, Any]) -> None:
    """OpenAI's refusals of the parameters reasoning models do not take, in its words.
    Raises ChatRequestError."""
    if not REASONING.match(str(body.get("model", ""))):
        return
    if "max_tokens" in body:
        raise ChatRequestError("Unsupported parameter: 'max_tokens' is not supported with this "
                               "model. Use 'max_completion_tokens' instead.", "max_tokens",
                               "unsupported_parameter")
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        raise ChatRequestError(f"Unsupported value: 'temperature' does not support {temperature} "
                               "with this model. Only the default (1) value is supported.",
                               "temperature", "unsupported_value")
