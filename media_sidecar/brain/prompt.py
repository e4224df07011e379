"""Instruction and greeting templates filled with the call's context.

A template is plain text with ``{name}`` placeholders; ``{{`` and ``}}`` are literal braces.
Names: ``caller_id``, ``caller_name``, ``dnid``, ``extension``, ``assistant``, ``language``,
``date``, ``time``, ``weekday``, ``time_of_day`` (morning, afternoon, evening or night) and
``var.NAME`` (the ``AI_VAR_NAME`` channel variable). Unknown names are refused when the
configuration is loaded (:func:`check_template`), so a typo never reaches a caller.

Values come from the channel (the caller controls their caller ID name and, through the
dialplan, maybe some variables), so each is cleaned before it is put into a prompt: control
characters and newlines become spaces, braces are dropped and the length is capped. A missing
value reads ``unknown`` so the model is never told an empty name.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping

__all__ = ["FIELDS", "TemplateError", "check_template", "fill", "template_values"]

FIELDS = frozenset({"caller_id", "caller_name", "dnid", "extension", "assistant", "language",
                    "date", "time", "weekday", "time_of_day"})
MAX_VALUE_CHARS = 80
UNKNOWN = "unknown"

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_VAR_NAME = re.compile(r"var\.[A-Za-z0-9_]{1,64}")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f{}]+")


class TemplateError(ValueError):
    """A template with an unknown placeholder or an unbalanced brace."""


def check_template(template: str) -> None:
    """Raise TemplateError naming the first problem in ``template``."""
    for m in _TOKEN.finditer(template):
        tok = m.group(0)
        if tok in ("{{", "}}"):
            continue
        name = m.group(1)
        if name is None:
            raise TemplateError(f"unbalanced {tok!r} at character {m.start()} "
                                "(write {{ or }} for a literal brace)")
        if name not in FIELDS and not _VAR_NAME.fullmatch(name):
            raise TemplateError(f"unknown placeholder {{{name}}} (expected one of "
                                f"{sorted(FIELDS)} or var.NAME)")


def clean(value: str) -> str:
    """A channel-supplied value made safe to put into a prompt."""
    value = " ".join(_UNSAFE.sub(" ", value).split())
    return value[:MAX_VALUE_CHARS] or UNKNOWN


def _time_of_day(hour: int) -> str:
    if 5 <= hour < 12:
        return "morning"
    if 12 <= hour < 18:
        return "afternoon"
    if 18 <= hour < 22:
        return "evening"
    return "night"


def template_values(*, caller_id: str = "", caller_name: str = "", dnid: str = "",
                    extension: str = "", assistant: str = "", language: str = "",
                    variables: Mapping[str, str] | None = None,
                    now: dt.datetime) -> dict[str, str]:
    """The values a template may use, cleaned; ``now`` is already in the assistant's zone."""
    values = {
        "caller_id": clean(caller_id), "caller_name": clean(caller_name), "dnid": clean(dnid),
        "extension": clean(extension), "assistant": clean(assistant),
        "language": clean(language),
        "date": now.strftime("%Y-%m-%d"), "time": now.strftime("%H:%M"),
        "weekday": now.strftime("%A"), "time_of_day": _time_of_day(now.hour),
    }
    for name, value in (variables or {}).items():
        values[f"var.{name}"] = clean(value)
    return values


def fill(template: str, values: Mapping[str, str]) -> str:
    """``template`` with every placeholder replaced; a ``var.NAME`` not set reads unknown."""

    def repl(m: re.Match[str]) -> str:
        tok = m.group(0)
        if tok == "{{":
            return "{"
        if tok == "}}":
            return "}"
        name = m.group(1)
        if name is None:
            return tok
        return values.get(name, UNKNOWN)

    return _TOKEN.sub(repl, template)
