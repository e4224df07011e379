"""Hypothesis strategies shared by the fuzz tests: hostile text, JSON values, byte streams."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

HOSTILE_PIECES = [
    "\r", "\n", "\r\n", "\n\n", "\r\n\r\n", "\x00", '"', "'", "\\", "${CHANNEL}", "${SHELL(id)}",
    "$[1+1]", "(", ")", ":", "|", ",", ";", "agi_arg_1: x", "200 result=1 (x)", "HANGUP",
    "Action: Hangup", "\ufffd", "\udc80", "\u202e", "\x1b[2J", "{caller_name}", "{", "}",
]
"""Fragments that have broken line protocols, shells, templates and expression parsers."""

hostile_text = st.lists(
    st.one_of(st.sampled_from(HOSTILE_PIECES), st.text(max_size=20)), max_size=12,
).map("".join)
"""Text made of hostile fragments and arbitrary characters (lone surrogates included)."""

json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40), hostile_text,
)

json_value: st.SearchStrategy[Any] = st.recursive(
    json_scalar,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=12), children, max_size=4),
    ),
    max_leaves=12,
)


def deep_json(depth: int) -> str:
    """JSON nested deeper than the interpreter's recursion limit."""
    return "[" * depth + "]" * depth


class Deep(str):
    """Over-deep JSON (as text) with a short repr, so Hypothesis reports stay readable."""

    depth: int

    def __new__(cls, depth: int, prefix: str = "", suffix: str = "") -> Deep:
        self = super().__new__(cls, prefix + deep_json(depth) + suffix)
        self.depth = depth
        return self

    def __repr__(self) -> str:
        return f"Deep({self.depth})"


deep = st.integers(min_value=1000, max_value=40000).map(Deep)


def dumps(value: Any) -> str:
    """JSON text as a careless or hostile peer may send it (NaN and Infinity included)."""
    return json.dumps(value, allow_nan=True)


def json_text(event_types: list[str], fields: list[str]) -> st.SearchStrategy[str]:
    """Messages for a JSON event parser: mostly objects with a known ``type`` and known field
    names holding any JSON value; some raw text, non-objects and over-deep nesting."""
    known = st.fixed_dictionaries(
        {"type": st.sampled_from(event_types)},
        optional={name: json_value for name in fields},
    )
    nested = st.builds(
        lambda t, k, v: {"type": t, k: v},
        st.sampled_from(event_types), st.sampled_from(fields),
        st.dictionaries(st.sampled_from(fields), json_value, max_size=4),
    )
    return st.one_of(
        known.map(dumps), nested.map(dumps), json_value.map(dumps), st.text(max_size=60),
        deep,
        st.sampled_from(event_types).map(lambda t: Deep(3000, f'{{"type": "{t}", "x": ', "}")),
    )


chunks = st.lists(st.binary(max_size=64), max_size=20)
