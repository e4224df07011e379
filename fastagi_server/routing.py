"""Pick the assistant for a call, and extract the per-call variables (pure: no I/O, no clock).

The FastAGI connection handler builds a :class:`RouteInput` from the ``agi_*`` block and the
channel variables it read, calls :func:`choose_assistant`, and offers the call to the sidecar
with the chosen assistant and :func:`call_variables`. Order of precedence:

1. ``AI_ASSISTANT`` channel variable, then ``?assistant=`` in the AGI URL, when
   ``routing.allow_channel_override`` is true. A name that is not configured is an error
   (the caller sets ``AI_STATUS=FAILED`` at once and the dialplan falls through): a typo in the
   dialplan must be loud, never silently replaced by the default assistant.
2. ``routing.rules`` in order: the first rule whose every given condition matches.
3. ``routing.default``.
4. The first configured assistant.

Several inputs are caller-controlled (caller ID comes from the far end's SIP ``From``; channel
variables may be copied from SIP headers by the dialplan), so nothing here trusts a value: long
values never reach a regex, and every value that leaves this module through an error message is
shown with ``repr`` (no raw CR/LF can reach a log line, an AGI command or an AMI action).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from media_sidecar.config.schema import Config, Match

MAX_MATCH_CHARS = 512
"""Values longer than this never match a rule's regex (no real DNID, extension, caller ID,
context or script is this long; a hostile one must not cost regex time)."""

MAX_VALUE_CHARS = 1024
"""A call variable's value is cut to this many characters (AGI GET VARIABLE gives 1023)."""

MAX_CALL_VARIABLES = 32
"""At most this many AI_VAR_* variables are kept (32 x 1 KiB stays well inside one 64 KiB
control-link message)."""

VAR_PREFIX = "AI_VAR_"
LANGUAGE_VAR = "AI_LANGUAGE"
ASSISTANT_VAR = "AI_ASSISTANT"
ASSISTANT_QUERY_KEY = "assistant"

_VAR_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")
_LANGUAGE = re.compile(r"[A-Za-z]{1,8}(?:[-_][A-Za-z0-9]{1,8}){0,4}")
_SHOW_CHARS = 64

# CR and LF become spaces (keeps words apart); NUL, other C0 controls and DEL are removed.
# Tab is kept: it is ordinary text in prompts, logs and JSON.
_CLEAN = {c: None for c in range(32) if c != 9} | {13: " ", 10: " ", 127: None}


@dataclass(frozen=True, slots=True)
class RouteInput:
    """What routing may look at, usually taken from ``AgiRequest``: ``script`` is the AGI path
    without host and query (``agent`` for ``agi://host/agent?assistant=sales``), ``query`` the
    parsed query string. A rule's regex sees these strings exactly as given here."""

    script: str = ""
    query: Mapping[str, str] = field(default_factory=dict)
    dnid: str = ""
    extension: str = ""
    callerid: str = ""
    context: str = ""
    variables: Mapping[str, str] = field(default_factory=dict)
    """Channel variables the handler read: AI_ASSISTANT, AI_LANGUAGE, AI_VAR_*, ..."""


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """The outcome: an assistant name, or ``error`` (then ``assistant`` is None).

    ``matched_by`` says why, for logs and the call record: ``"channel variable AI_ASSISTANT"``,
    ``"query assistant"``, ``"rule 2"`` (counted from 1, i.e. ``routing.rules[1]``),
    ``"default"``, ``"first assistant"``. ``notes`` lists inputs that were ignored.
    """

    assistant: str | None
    matched_by: str
    error: str = ""
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.assistant is not None and not self.error


def choose_assistant(cfg: Config, req: RouteInput) -> RouteDecision:
    """Return the assistant for this call. Never raises on any input values.

    An override naming an unconfigured assistant, a config without assistants, or (for a
    Config built without the loader) a rule naming an unknown assistant or holding an invalid
    regex gives a decision with ``error`` set and no assistant.
    """
    notes: list[str] = []
    overrides = (
        ("channel variable " + ASSISTANT_VAR, req.variables.get(ASSISTANT_VAR)),
        ("query " + ASSISTANT_QUERY_KEY, req.query.get(ASSISTANT_QUERY_KEY)),
    )
    for source, raw in overrides:
        value = raw.strip() if isinstance(raw, str) else ""
        if not value:
            continue
        if not cfg.routing.allow_channel_override:
            notes.append(f"{source} {_show(value)} ignored: routing.allow_channel_override is off")
            continue
        return _decide(cfg, value, source, notes)

    for index, rule in enumerate(cfg.routing.rules):
        label = f"rule {index + 1}"
        try:
            matched = rule_matches(rule.match, req)
        except re.error as exc:
            return RouteDecision(None, label, f"{label}: invalid regular expression: {exc}")
        if matched:
            return _decide(cfg, rule.assistant, label, notes)

    if cfg.routing.default:
        return _decide(cfg, cfg.routing.default, "default", notes)
    if cfg.assistants:
        return RouteDecision(cfg.assistants[0].name, "first assistant", notes=tuple(notes))
    return RouteDecision(None, "", "no assistants configured", tuple(notes))


def rule_matches(match: Match, req: RouteInput) -> bool:
    """True when every condition ``match`` gives holds for ``req`` (no condition: always).

    Regex conditions are full matches; query and variable conditions are exact string
    equality. Raises ``re.error`` only for an invalid pattern (the loader refuses those).
    """
    regexes = (
        (match.script, req.script),
        (match.dnid, req.dnid),
        (match.extension, req.extension),
        (match.callerid, req.callerid),
        (match.context, req.context),
    )
    for pattern, value in regexes:
        if pattern is None:
            continue
        if len(value) > MAX_MATCH_CHARS or re.fullmatch(pattern, value) is None:
            return False
    for key, want in match.query:
        if req.query.get(key) != want:
            return False
    for key, want in match.variables:
        if req.variables.get(key) != want:
            return False
    return True


def call_variables(variables: Mapping[str, str]) -> dict[str, str]:
    """The per-call variables offered to the sidecar (prompts, webhooks, the call record).

    ``AI_VAR_<NAME>`` becomes ``<NAME>`` when NAME matches ``[A-Za-z0-9_]{1,64}``; other names
    are dropped. Values lose NUL and control characters (CR and LF become spaces) and are cut
    to :data:`MAX_VALUE_CHARS`; at most :data:`MAX_CALL_VARIABLES` are kept, in input order.
    ``AI_LANGUAGE`` is kept under its own name when it looks like a language tag (``en``,
    ``de-DE``, ``pt_BR``); it wins over an ``AI_VAR_AI_LANGUAGE``. Never raises.
    """
    out: dict[str, str] = {}
    for name, value in variables.items():
        if len(out) >= MAX_CALL_VARIABLES:
            break
        if not (isinstance(name, str) and isinstance(value, str)):
            continue
        if not name.startswith(VAR_PREFIX):
            continue
        short = name[len(VAR_PREFIX) :]
        if _VAR_NAME.fullmatch(short) is None:
            continue
        out[short] = clean_value(value)
    language = variables.get(LANGUAGE_VAR)
    if isinstance(language, str):
        language = language.strip()
        if _LANGUAGE.fullmatch(language):
            out[LANGUAGE_VAR] = language
    return out


def clean_value(value: str, limit: int = MAX_VALUE_CHARS) -> str:
    """``value`` without NUL/control characters (CR, LF -> space), cut to ``limit`` chars."""
    # Cut before translating too, so a megabyte of input costs only ``limit`` work.
    return value[: limit * 2].translate(_CLEAN)[:limit]


def _decide(cfg: Config, name: str, source: str, notes: list[str]) -> RouteDecision:
    if cfg.assistant(name) is None:
        return RouteDecision(None, source, f"unknown assistant {_show(name)}", tuple(notes))
    return RouteDecision(name, source, notes=tuple(notes))


def _show(value: str) -> str:
    """A safe, short rendering of an untrusted value for messages: repr escapes CR/LF/NUL."""
    if len(value) > _SHOW_CHARS:
        return repr(value[:_SHOW_CHARS]) + f"... ({len(value)} chars)"
    return repr(value)
