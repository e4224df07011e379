"""Reading vendor JSON defensively: what a provider sends is parsed, never trusted.

A provider (or anything pretending to be one; a model's tool arguments too) may send any
JSON: an array where an object is documented, a string where a number is, ``1e999`` or a 400-digit integer, or an array nested
deeper than the interpreter's recursion limit, or a lone UTF-16 surrogate escape
(``"\\ud83d"``: half an emoji) that Python decodes into a string no UTF-8 file, socket or
AGI line can carry. The vendor modules read their messages through these helpers, so a
malformed field is a missing field, a lone surrogate is U+FFFD, and the call goes on; only
their own :class:`~media_sidecar.providers.base.ProviderError` ever ends a session. Pure.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["loads", "loads_object", "number", "obj", "objects", "string", "whole"]

_EMPTY: Mapping[str, Any] = {}
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def loads(raw: str | bytes) -> Any:
    """``json.loads``, with every lone surrogate in a string (or key) replaced by U+FFFD.
    Raises ValueError for anything that is not JSON, including JSON nested too deeply to
    parse (which ``json`` reports as RecursionError)."""
    if isinstance(raw, bytes):
        suspect = b"\\u" in raw or not raw.isascii()
    else:
        suspect = "\\u" in raw or not raw.isascii()
    try:
        value = json.loads(raw)
        return _no_surrogates(value) if suspect else value  # only escapes or non-ASCII can
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _no_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_no_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_no_surrogates(k): _no_surrogates(v) for k, v in value.items()}
    return value


def loads_object(raw: str | bytes) -> dict[str, Any] | None:
    """The JSON object in ``raw``, or None when it is not JSON or not an object."""
    try:
        value = loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def obj(value: object) -> Mapping[str, Any]:
    """``value`` if it is an object, else an empty one."""
    return value if isinstance(value, Mapping) else _EMPTY


def objects(value: object) -> list[Mapping[str, Any]]:
    """The objects in ``value`` if it is an array (other items skipped), else none."""
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def string(value: object) -> str:
    """``value`` if it is a string, else ``""``."""
    return value if isinstance(value, str) else ""


def number(value: object) -> float | None:
    """``value`` as a finite float if it is a JSON number (not a bool), else None (an integer
    too large for a float, NaN and infinities included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        f = float(value)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def whole(value: object) -> int | None:
    """``value`` as an int if it is a finite JSON number (truncated), else None."""
    f = number(value)
    return None if f is None else int(f)
