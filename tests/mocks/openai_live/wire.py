"""GPT-Live wire rules for the mock (pure): the path, the strict ``session.start`` config
(section 1.3: unknown fields are rejected like the real service), the client events and their
fields (1.4), and the ``error`` event shape (1.5)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["CLIENT_EVENTS", "FATAL_CODES", "PATH", "WireError", "check_event", "check_session",
           "error_event", "format_codec"]

PATH = "/v1/live/sessions"
HEADERS_OF_INTEREST = ("authorization", "openai-beta", "openai-organization", "openai-project",
                       "user-agent")
FATAL_CODES = ("invalid_api_key", "insufficient_quota", "account_deactivated",
               "billing_hard_limit_reached")

_APPEND = {"event_id", "content", "delegation_id"}
CLIENT_EVENTS: dict[str, set[str]] = {
    "session.start": {"event_id", "session"},
    "session.update": {"event_id", "session"},
    "session.input_audio.append": {"event_id", "audio"},
    "session.input_audio.mute": {"event_id"},
    "session.input_audio.unmute": {"event_id"},
    "session.instructions.append": _APPEND,
    "session.thinking.append": _APPEND,
    "session.commentary.append": _APPEND,
    "session.output_audio.fixture.play": {"event_id", "audio"},
    "response.item.create": {"event_id", "item"},
    "response.create": {"event_id"},
    "decision.create": {"event_id", "decision"},
    "decision.item.create": {"event_id", "item"},
    "decision.item.delete": {"event_id", "item_id"},
    "session.close": {"event_id"},
}
"""The 15 client event types of SDK 3.63 ``types/live/client_event.py`` and their fields."""

_SESSION = {"model", "instructions", "audio", "delegation", "input", "store", "safety_identifier",
            "triggers", "client"}
_RESPONSES = {"model", "instructions", "tools", "tool_choice", "parallel_tool_calls",
              "reasoning", "text", "max_output_tokens", "service_tier"}
_FUNCTION_TOOL = {"type", "name", "description", "parameters", "strict"}
_RATES = {"audio/pcmu": (8000,), "audio/pcma": (8000,), "audio/pcm": (16000, 24000)}


class WireError(Exception):
    """A client event the service refuses: ``code`` and ``param`` as in its ``error`` event."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def error_event(event_id: str, code: str, message: str, *, param: str | None = None,
                client_event_id: str | None = None, kind: str = "invalid_request_error"
                ) -> dict[str, Any]:
    """An ``error`` server event (``error.py`` shape)."""
    err: dict[str, Any] = {"type": kind, "code": code, "message": message, "param": param}
    out: dict[str, Any] = {"type": "error", "event_id": event_id, "error": err}
    if client_event_id is not None:
        err["client_event_id"] = out["client_event_id"] = client_event_id
    return out


def _unknown(obj: Mapping[str, Any], allowed: set[str], path: str) -> None:
    for key in obj:
        if key not in allowed:
            raise WireError("unknown_parameter", f"Unknown parameter: '{path}.{key}'.",
                            f"{path}.{key}")


def _obj(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise WireError("invalid_type", f"Invalid type for '{path}': expected an object.", path)
    return value


def check_event(event: Mapping[str, Any]) -> None:
    """Raises WireError for an unknown type or field, or a malformed append."""
    kind = event.get("type")
    if kind not in CLIENT_EVENTS:
        raise WireError("invalid_value", f"Invalid value: '{kind}'. Unknown event type.", "type")
    _unknown({k: v for k, v in event.items() if k != "type"}, CLIENT_EVENTS[kind], kind)
    if kind.endswith(".append") and kind != "session.input_audio.append":
        if not isinstance(event.get("content"), str):
            raise WireError("missing_required_parameter",
                            "Missing required parameter: 'content'.", "content")
        if "delegation_id" not in event:
            raise WireError("missing_required_parameter",
                            "Missing required parameter: 'delegation_id'.", "delegation_id")


def check_session(session: object) -> dict[str, Any]:
    """The ``session`` of a ``session.start`` checked (strict), returned with the service's
    defaults filled in (as ``session.started`` echoes it, minus ids)."""
    s = _obj(session, "session")
    _unknown(s, _SESSION, "session")
    if not isinstance(s.get("model"), str) or not s["model"]:
        raise WireError("missing_required_parameter", "Missing required parameter: "
                        "'session.model'.", "session.model")
    if "instructions" in s and not isinstance(s["instructions"], str):
        raise WireError("invalid_type", "Invalid type for 'session.instructions'.",
                        "session.instructions")
    audio = _obj(s.get("audio", {}), "session.audio")
    _unknown(audio, {"format", "output"}, "session.audio")
    fmt = dict(_obj(audio.get("format", {"type": "audio/pcm", "rate": 24000}),
                    "session.audio.format"))
    _unknown(fmt, {"type", "rate"}, "session.audio.format")
    if fmt.get("type") not in _RATES:
        raise WireError("invalid_value", f"Invalid value: '{fmt.get('type')}'.",
                        "session.audio.format.type")
    if "rate" not in fmt:
        raise WireError("missing_required_parameter", "Missing required parameter: "
                        "'session.audio.format.rate'.", "session.audio.format.rate")
    if fmt["rate"] not in _RATES[fmt["type"]]:
        raise WireError("invalid_value", f"Invalid value: {fmt['rate']}. Supported rates for "
                        f"{fmt['type']}: {list(_RATES[fmt['type']])}.", "session.audio.format.rate")
    output = _obj(audio.get("output", {}), "session.audio.output")
    _unknown(output, {"voice"}, "session.audio.output")
    voice = output.get("voice", "marin")
    if not isinstance(voice, (str, Mapping)):
        raise WireError("invalid_type", "Invalid type for 'session.audio.output.voice'.",
                        "session.audio.output.voice")
    delegation = _check_delegation(s.get("delegation"))
    inp = s.get("input", [])
    if not isinstance(inp, list) or len(inp) > 128:
        raise WireError("invalid_value", "'session.input' takes at most 128 messages.",
                        "session.input")
    return {"model": s["model"], "instructions": s.get("instructions", ""),
            "audio": {"format": fmt, "output": {"voice": voice}}, "delegation": delegation,
            "store": bool(s.get("store", False))}


def _check_delegation(raw: object) -> dict[str, Any]:
    if raw is None:
        return {"type": "client", "acknowledgement_delay_ms": 0}
    d = _obj(raw, "session.delegation")
    kind = d.get("type")
    if kind not in ("client", "responses", "decisions"):
        raise WireError("invalid_value", f"Invalid value: '{kind}'.", "session.delegation.type")
    _unknown(d, {"type", "acknowledgement_delay_ms", kind}, "session.delegation")
    out = {"type": kind, "acknowledgement_delay_ms": d.get(
        "acknowledgement_delay_ms", 400 if kind == "decisions" else 0)}
    if kind == "responses":
        r = _obj(d.get("responses"), "session.delegation.responses")
        _unknown(r, _RESPONSES, "session.delegation.responses")
        if not isinstance(r.get("model"), str) or not r["model"]:
            raise WireError("missing_required_parameter", "Missing required parameter: "
                            "'session.delegation.responses.model'.",
                            "session.delegation.responses.model")
        for i, tool in enumerate(r.get("tools") or []):
            path = f"session.delegation.responses.tools[{i}]"
            t = _obj(tool, path)
            if t.get("type") == "function":
                _unknown(t, _FUNCTION_TOOL, path)
                if not isinstance(t.get("name"), str):
                    raise WireError("missing_required_parameter",
                                    f"Missing required parameter: '{path}.name'.", f"{path}.name")
        out["responses"] = dict(r)
    return out


def format_codec(fmt: Mapping[str, Any]) -> tuple[str, int]:
    """(encoding name of tests/mocks/deepgram_agent/audio.py, rate) for a session format."""
    enc = {"audio/pcmu": "mulaw", "audio/pcma": "alaw", "audio/pcm": "linear16"}[fmt["type"]]
    return enc, int(fmt["rate"])
