"""Tool declarations (name, description, JSON-schema parameters) and argument checking.

Every provider declares the same tools in its own wire shape (OpenAI ``session.tools``,
Deepgram ``think.functions``, chat-completions ``tools``): they all take the neutral
:class:`ToolSpec`. ``transfer_call`` lists only the assistant's destinations (an ``enum``), so
the model is told exactly where it may send the caller; the session still refuses anything
else, because a model may ignore its schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..config.schema import AssistantConfig
from ..protocol import wirejson

__all__ = ["ToolCallError", "ToolReply", "ToolSpec", "build_specs", "check_arguments",
           "decode_arguments", "parse_arguments"]

TRANSFER = "transfer_call"
HANGUP = "hangup_call"


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolReply:
    """What a tool call gives back: ``output`` (JSON text) goes to the model; ``respond`` says
    whether the model should be asked to speak again (not when the call is leaving)."""

    output: str
    respond: bool = True

    @classmethod
    def error(cls, message: str) -> ToolReply:
        return cls(json.dumps({"ok": False, "error": message}))


class ToolCallError(ValueError):
    """Arguments a model sent that do not fit the tool's schema (told back to the model)."""


def build_specs(assistant: AssistantConfig) -> list[ToolSpec]:
    """The tools ``assistant`` offers its model, in a stable order."""
    specs: list[ToolSpec] = []
    tools = assistant.tools
    if tools.transfer and assistant.destinations:
        names = [k for k, _ in assistant.destinations]
        where = "; ".join(f"{k}: {d.description}" if d.description else k
                          for k, d in assistant.destinations)
        specs.append(ToolSpec(TRANSFER, (
            "Transfer the caller to a person or department. Say one short sentence first "
            f"(e.g. that you are transferring them). Destinations: {where}."), {
            "type": "object",
            "properties": {
                "destination": {"type": "string", "enum": names,
                                "description": "Where to transfer the caller."},
                "reason": {"type": "string", "description": "Why, in a few words."},
            },
            "required": ["destination"],
        }))
    if tools.hangup:
        specs.append(ToolSpec(HANGUP, (
            "End the call when the conversation is finished. Say a short goodbye first; the "
            "call ends once the caller has heard it."), {
            "type": "object",
            "properties": {"reason": {"type": "string", "description": "Why, in a few words."}},
            "required": [],
        }))
    for hook in tools.webhooks:
        specs.append(ToolSpec(hook.name, hook.description or hook.name,
                              json.loads(hook.parameters or '{"type": "object"}')))
    return specs


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "number": (int, float), "integer": (int,), "boolean": (bool,),
    "array": (list,), "object": (dict,), "null": (type(None),),
}


def parse_arguments(raw: str | dict[str, Any] | None, schema: dict[str, Any]) -> dict[str, Any]:
    """The model's arguments (JSON text, or an object for providers that send one), checked
    against the top level of ``schema``: an object, required keys present, property types
    and enums. Raises ToolCallError with a message the model can act on."""
    args = decode_arguments(raw)
    check_arguments(args, schema)
    return args


def decode_arguments(raw: str | dict[str, Any] | None) -> dict[str, Any]:
    """The arguments as an object. Raises ToolCallError if they are not JSON or not an object."""
    if raw is None or raw == "":
        args: Any = {}
    elif isinstance(raw, dict):
        args = raw
    else:
        try:
            args = wirejson.loads(raw)  # no lone surrogate: the arguments go out as UTF-8
        except ValueError:
            raise ToolCallError("arguments are not valid JSON") from None
    if not isinstance(args, dict):
        raise ToolCallError("arguments must be a JSON object")
    return args


def check_arguments(args: dict[str, Any], schema: dict[str, Any]) -> None:
    """Raise ToolCallError unless ``args`` fit the top level of ``schema``."""
    props = schema.get("properties") or {}
    missing = [k for k in schema.get("required") or () if k not in args]
    if missing:
        raise ToolCallError(f"missing required argument(s): {', '.join(missing)}")
    for key, value in args.items():
        prop = props.get(key)
        if not isinstance(prop, dict):
            continue
        kind = prop.get("type")
        if isinstance(kind, str) and kind in _TYPES:
            ok = isinstance(value, _TYPES[kind]) and not (
                kind in ("number", "integer") and isinstance(value, bool))
            if not ok:
                raise ToolCallError(f"argument {key!r} must be of type {kind}")
        enum = prop.get("enum")
        if isinstance(enum, list) and value not in enum:
            raise ToolCallError(f"argument {key!r} must be one of {enum}")

