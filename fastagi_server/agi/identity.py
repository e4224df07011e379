"""Who the call is, read from Asterisk itself: never from the request block (pure, no I/O).

Asterisk writes caller ID (number and name), dnid and rdnis raw into the FastAGI request block,
so a caller can forge ``agi_*`` lines there (telephony.md B.2, ARCHITECTURE "Facts"). The call
handler therefore asks Asterisk, in ONE ``GET FULL VARIABLE`` round trip, for the channel, its
uniqueid and linkedid, caller ID, DNID, RDNIS, context, extension, account code and the
``AI_ASSISTANT`` / ``AI_LANGUAGE`` / ``AI_VARS`` inputs, and uses those values for everything
(AMI correlation and redirects, routing, the offer). This module builds that expression and
decodes the reply; :mod:`fastagi_server.agi.handler` does the round trip.

How one value is read: ``${BASE64_ENCODE(${CHANNEL}<nonce>)}``, ``|``-separated, the whole
reply led by the same nonce (a fresh random token per read).

* Replies are not escaped (B.6): base64 keeps ``)``, CR, LF and NUL out of the reply line.
* The nonce after the value keeps the argument non-empty: ``BASE64_ENCODE`` of an empty string
  logs ``func_base64.c: Syntax: BASE64_ENCODE(<data>) - missing argument!`` on every call.
  Decoding strips it; an unset variable reads as ``""``.
* ``|`` is outside the base64 alphabet. A caller value holding a blank line ends the request
  block early and can carry forged reply lines (``200 result=1 (...)``): they cannot know the
  nonce, so they are never taken for Asterisk's answer.
* Asterisk does not re-evaluate a substituted value, so ``${...}`` or ``$[...]`` in a caller
  name stays text. But it does cut a ``${...}`` expression at a ``:`` outside parentheses
  (``parse_variable_name``) *after* substituting the value, and takes the function argument up
  to the last ``)``: a value holding an unmatched ``)`` and then ``:`` (``"Bob :) : hi"``)
  comes back cut, and a caller could use that to show us only a harmless prefix of its name.
  The cut drops the nonce that follows the value, so a value that does not end with the nonce
  is known to be incomplete: :func:`parse_identity` then raises :class:`IdentityError`.

A caller value that would have written a blank line into the block (``"\\n\\n"``, or a final
``"\\n"``) means the block Asterisk sent ended early and what followed, the real arguments
included, was not part of it: :func:`cut_short_by` names such fields. In both cases the handler
ends the call cleanly (``AI_STATUS=FAILED``) rather than trust the arguments.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from .protocol import AgiProtocolError, AgiRequest, log_safe

__all__ = [
    "IDENTITY_FIELDS",
    "INPUT_VARIABLES",
    "MAX_AI_VARS",
    "CallIdentity",
    "IdentityError",
    "ai_var_names",
    "cut_short_by",
    "decode_value",
    "disagreements",
    "encoded",
    "identity_expression",
    "parse_identity",
    "parse_vars",
    "tamper_report",
    "vars_expression",
]

SEP = "|"
MAX_AI_VARS = 32
"""At most this many names from ``AI_VARS`` are read (the second round trip)."""

IDENTITY_FIELDS: tuple[tuple[str, str], ...] = (
    ("channel", "CHANNEL"),
    ("uniqueid", "UNIQUEID"),
    ("linkedid", "CHANNEL(linkedid)"),
    ("callerid", "CALLERID(num)"),
    ("calleridname", "CALLERID(name)"),
    ("dnid", "CALLERID(dnid)"),
    ("rdnis", "CALLERID(rdnis)"),
    ("context", "CONTEXT"),
    ("extension", "EXTEN"),
    ("accountcode", "CHANNEL(accountcode)"),
)
"""``CallIdentity`` field -> the variable or function Asterisk evaluates for it."""

INPUT_VARIABLES = ("AI_ASSISTANT", "AI_LANGUAGE", "AI_VARS")

_ENV_KEYS = {
    "channel": "agi_channel",
    "uniqueid": "agi_uniqueid",
    "callerid": "agi_callerid",
    "calleridname": "agi_calleridname",
    "dnid": "agi_dnid",
    "rdnis": "agi_rdnis",
    "context": "agi_context",
    "extension": "agi_extension",
    "accountcode": "agi_accountcode",
}
"""Fields the request block also carries (linkedid it does not), for :func:`disagreements`."""

_UNKNOWN_AS_EMPTY = frozenset({"callerid", "calleridname", "dnid", "rdnis"})
_BEFORE_THREADID = (
    "callerid",
    "calleridname",
    "dnid",
    "rdnis",
    "context",
    "extension",
    "accountcode",
)
"""Fields Asterisk writes after the identity fields and before ``agi_threadid``."""

_VAR_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")
_NONCE = re.compile(r"[A-Za-z0-9]{8,64}")
_EXPR = re.compile(r"[A-Za-z0-9_]+(?:\([A-Za-z0-9_]*\))?")


class IdentityError(AgiProtocolError):
    """Asterisk's identity reply cannot be trusted or the request block was cut short: the
    handler ends the call cleanly with ``AI_STATUS=FAILED``. Only that call is affected."""


@dataclass(frozen=True, slots=True)
class CallIdentity:
    """The call as Asterisk itself describes it. ``callerid``, ``calleridname``, ``dnid`` and
    ``rdnis`` are ``""`` when unset or the literal ``unknown`` (as in :class:`AgiRequest`).
    ``inputs`` holds ``AI_ASSISTANT``, ``AI_LANGUAGE``, ``AI_VARS`` when set and non-empty."""

    channel: str
    uniqueid: str
    linkedid: str = ""
    callerid: str = ""
    calleridname: str = ""
    dnid: str = ""
    rdnis: str = ""
    context: str = ""
    extension: str = ""
    accountcode: str = ""
    inputs: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def encoded(expr: str, nonce: str) -> str:
    """``${BASE64_ENCODE(${<expr>}<nonce>)}``: ``expr`` read safely, never as an empty argument.
    ``expr`` must be a plain variable or function name; raises ``ValueError`` otherwise (it is
    spliced into an expression Asterisk evaluates)."""
    if not _EXPR.fullmatch(expr):
        raise ValueError(f"not a plain variable or function name: {expr!r}")
    _check_nonce(nonce)
    return f"${{BASE64_ENCODE(${{{expr}}}{nonce})}}"


def decode_value(part: str, nonce: str) -> str | None:
    """One :func:`encoded` value as Asterisk returned it: the text (``""`` for an unset
    variable), or ``None`` when it is not base64 of ``<value><nonce>`` (a value Asterisk cut,
    see the module doc, or not Asterisk's reply). Invalid UTF-8 becomes U+FFFD, as in the
    request block."""
    try:
        raw = base64.b64decode(part, validate=True)
    except (binascii.Error, ValueError):
        return None
    tail = nonce.encode("ascii")
    if not raw.endswith(tail):
        return None
    return raw[: -len(tail)].decode("utf-8", "replace")


def _check_nonce(nonce: str) -> None:
    if not _NONCE.fullmatch(nonce):
        raise ValueError(f"nonce must be 8-64 letters or digits, not {nonce!r}")


def _split_reply(data: str | None, nonce: str, count: int, what: str) -> list[str]:
    _check_nonce(nonce)
    if data is None:
        raise IdentityError(f"Asterisk gave no value for the {what} read")
    parts = data.split(SEP)
    if parts[0] != nonce or len(parts) != count + 1:
        raise IdentityError(
            f"the reply to the {what} read is not Asterisk's (nonce or field count differs: "
            f"{log_safe(data, 40)}); a forged reply line in the request block?"
        )
    return parts[1:]


def identity_expression(nonce: str) -> str:
    """The ``GET FULL VARIABLE`` expression for :func:`parse_identity`: ``nonce``, then every
    :data:`IDENTITY_FIELDS` and :data:`INPUT_VARIABLES` value, ``|``-separated."""
    exprs = [e for _, e in IDENTITY_FIELDS] + list(INPUT_VARIABLES)
    return SEP.join([nonce, *(encoded(e, nonce) for e in exprs)])


def _decode_all(parts: list[str], names: Sequence[str], nonce: str, what: str) -> list[str]:
    values: list[str] = []
    cut: list[str] = []
    for name, part in zip(names, parts, strict=True):
        value = decode_value(part, nonce)
        if value is None:
            cut.append(name)
        values.append(value or "")
    if cut:
        raise IdentityError(
            f"Asterisk returned {', '.join(cut)} incomplete in the {what} read (a value with an "
            "unmatched ')' before a ':' is cut by Asterisk's expression parser), so the request "
            "block cannot be checked"
        )
    return values


def parse_identity(data: str | None, nonce: str) -> CallIdentity:
    """Decode the reply to :func:`identity_expression` (``data`` is the text in parentheses).

    Raises :class:`IdentityError` when the reply does not start with ``nonce`` or has the
    wrong number of fields (not Asterisk's reply to this read), when any value came back cut
    (see the module doc), or when the channel name or uniqueid is empty (the call cannot be
    tracked).
    """
    names = [n for n, _ in IDENTITY_FIELDS] + list(INPUT_VARIABLES)
    parts = _split_reply(data, nonce, len(names), "identity")
    values = dict(zip(names, _decode_all(parts, names, nonce, "identity"), strict=True))
    inputs = {name: values.pop(name) for name in INPUT_VARIABLES}
    for name in _UNKNOWN_AS_EMPTY:
        if values[name] == "unknown":
            values[name] = ""
    if not values["channel"] or not values["uniqueid"]:
        raise IdentityError(
            "Asterisk did not give a channel name and uniqueid "
            f"(channel {log_safe(values['channel'])}, uniqueid {log_safe(values['uniqueid'])})"
        )
    return CallIdentity(**values, inputs=MappingProxyType({k: v for k, v in inputs.items() if v}))


def ai_var_names(ai_vars: str) -> list[str]:
    """The names listed in ``AI_VARS`` (comma-separated) that are ``[A-Za-z0-9_]{1,64}``, in
    order, without repeats, at most :data:`MAX_AI_VARS`."""
    names: list[str] = []
    for item in ai_vars.split(","):
        name = item.strip()
        if _VAR_NAME.fullmatch(name) and name not in names:
            names.append(name)
            if len(names) == MAX_AI_VARS:
                break
    return names


def vars_expression(nonce: str, names: Sequence[str]) -> str:
    """The ``GET FULL VARIABLE`` expression reading ``AI_VAR_<name>`` for each of ``names``
    (from :func:`ai_var_names`)."""
    return SEP.join([nonce, *(encoded(f"AI_VAR_{n}", nonce) for n in names)])


def parse_vars(data: str | None, nonce: str, names: Sequence[str]) -> dict[str, str]:
    """Decode the reply to :func:`vars_expression`: ``{"AI_VAR_<name>": value}`` for each
    variable set to a non-empty value. Raises :class:`IdentityError` as
    :func:`parse_identity` does for a reply that is not Asterisk's or a value that came back
    cut."""
    parts = _split_reply(data, nonce, len(names), "AI_VAR")
    values = _decode_all(parts, [f"AI_VAR_{n}" for n in names], nonce, "AI_VAR")
    return {f"AI_VAR_{n}": v for n, v in zip(names, values, strict=True) if v}


def _would_end_block(value: str) -> bool:
    """Whether ``agi_x: <value>\\n`` holds an empty line (``\\r`` alone counts: the parser
    tolerates CRLF), which ends the request block."""
    return any(seg in ("", "\r") for seg in value.split("\n")[1:])


def cut_short_by(ident: CallIdentity) -> list[str]:
    """Fields whose Asterisk value wrote a blank line into the request block, so the block
    ended inside it and its arguments are not the ones the dialplan gave."""
    return [name for name in _BEFORE_THREADID if _would_end_block(getattr(ident, name))]


def disagreements(req: AgiRequest, ident: CallIdentity) -> list[tuple[str, str, str]]:
    """``(field, request block value, Asterisk value)`` for each field the two disagree on."""
    out: list[tuple[str, str, str]] = []
    for name, key in _ENV_KEYS.items():
        env_value = req.env.get(key)
        if env_value is None:
            continue
        if name in _UNKNOWN_AS_EMPTY and env_value == "unknown":
            env_value = ""
        ast_value = getattr(ident, name)
        if env_value != ast_value:
            out.append((name, env_value, ast_value))
    return out


def tamper_report(req: AgiRequest, ident: CallIdentity | None, limit: int = 8) -> str | None:
    """One log-safe line describing what was not believed in this request, or ``None`` when
    nothing was: the parser's anomalies, then the fields where the request block and Asterisk
    (``ident``; ``None`` when the read failed) disagree. At most ``limit`` items of each kind
    are shown; every value is escaped and truncated (:func:`log_safe`)."""
    items = [a.describe() for a in req.anomalies[:limit]]
    if len(req.anomalies) > limit:
        items.append(f"{len(req.anomalies) - limit} more suspicious lines")
    if ident is not None:
        diffs = disagreements(req, ident)
        items += [
            f"{name}: block says {log_safe(env_value)}, Asterisk says {log_safe(ast_value)}"
            for name, env_value, ast_value in diffs[:limit]
        ]
    if not items:
        return None
    channel = ident.channel if ident is not None else req.channel
    uniqueid = ident.uniqueid if ident is not None else req.uniqueid
    trusted = "trusting Asterisk" if ident is not None else "identity not read"
    return (
        f"AGI request for {log_safe(channel)} ({log_safe(uniqueid)}) was tampered with "
        f"({trusted}): " + "; ".join(items)
    )
