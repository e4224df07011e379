"""The emulated Asterisk channel: request block, argument parsing, state, variables, AMI events.

Shared by the FastAGI side (:mod:`.agi_side`), the AudioSocket side (through
:meth:`EmulatedChannel.attach_audio`) and the AMI glue. Everything here is synchronous; the
trio events only wake the AGI loop and the call runner.

AMI glue: ``FakeAmiServer``'s ``on_hangup(channel)`` calls :meth:`EmulatedChannel.hangup`
(``cause=0`` reproduces the captures' ``Hangup`` event, ``Cause: 0``), ``on_redirect`` calls
:meth:`EmulatedChannel.redirect`, a ``PlayDTMF`` action calls :meth:`EmulatedChannel.play_dtmf`,
and ``event_sink=ami.emit`` receives ``Newstate``, ``VarSet``, ``UserEvent``, ``DTMFBegin``,
``DTMFEnd``, ``Newexten``, ``SoftHangupRequest`` and ``Hangup`` with the channel's standard
fields (``Channel``, ``ChannelState``, ``ChannelStateDesc``, ``CallerIDNum``, ..., ``Uniqueid``,
``Linkedid``).
"""

from __future__ import annotations

import base64
import uuid as uuid_mod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from fastagi_server.emulator.ami_server import STATE_DESC
from fastagi_server.emulator.caller import CallerAction, Dtmf, Hangup, Redirect

if TYPE_CHECKING:
    from fastagi_server.emulator.audiosocket_side import AudioSocketSession, ClosedBy

# -- the request block ---------------------------------------------------------------------------
AGI_VERSION = "22.10.1"
STATE_DOWN, STATE_RING, STATE_RINGING, STATE_UP = 0, 4, 5, 6
CAUSE_TEXT = {
    0: "Unknown",
    16: "Normal Clearing",
    17: "User busy",
    19: "No answer",
    21: "Call Rejected",
    34: "Circuit/channel congestion",
}


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """The channel a call starts with. Defaults reproduce the A1 capture's channel.

    ``script`` is the URL path after ``host:port/`` (query included, not parsed, as Asterisk
    does); ``None`` omits ``agi_network_script``. ``request`` overrides the whole
    ``agi_request`` URL (by default built from the address connected to). ``callingpres``
    defaults to 67 for an unknown caller id and 0 otherwise, as captured.

    ``callerid``, ``calleridname``, ``dnid`` and ``rdnis`` come from the far end and may hold
    CR and LF: the request block carries them raw, as Asterisk writes them (a line break forges
    further ``agi_*`` lines). A lone surrogate (``b.decode("utf-8", "surrogateescape")``)
    stands for a byte that is not UTF-8 and is sent as that byte. No field may hold NUL
    (Asterisk's strings are C strings); the other fields refuse CR and LF too.
    """

    channel: str = "Local/100@test-00000000;2"
    uniqueid: str = "1795267856.1"
    linkedid: str | None = None
    callerid: str = "5551234"
    calleridname: str = "Probe"
    callingpres: int | None = None
    dnid: str = "unknown"
    rdnis: str = "unknown"
    context: str = "test"
    extension: str = "100"
    priority: int = 1
    language: str = "en"
    accountcode: str = ""
    threadid: int = 140272405411520
    script: str | None = "pick?assistant=sales"
    request: str | None = None
    args: tuple[str, ...] = ("arg1", "arg2")
    variables: Mapping[str, str] = field(default_factory=dict)
    answered: bool = False
    version: str = AGI_VERSION
    """``agi_version``: the Asterisk release the channel claims (behaviour stays 22.10.1's)."""

    def __post_init__(self) -> None:
        for v in (self.callerid, self.calleridname, self.dnid, self.rdnis):
            if "\0" in v:
                raise ValueError(f"caller field {v!r} contains NUL (a C string cannot)")
        values = [
            self.channel,
            self.uniqueid,
            self.context,
            self.extension,
            self.language,
            self.accountcode,
            self.script or "",
            self.request or "",
            *self.args,
        ]
        for v in values:
            if any(c in v for c in "\r\n\0"):
                raise ValueError(f"channel field {v!r} contains CR, LF or NUL")


def env_block(spec: ChannelSpec, request: str) -> bytes:
    """The request block exactly as 22.10.1 writes it (order, ``key: value\\n``, blank line)."""
    unknown = spec.callerid in ("", "unknown")
    pres = spec.callingpres if spec.callingpres is not None else (67 if unknown else 0)
    lines = ["agi_network: yes"]
    if spec.script is not None:
        lines.append(f"agi_network_script: {spec.script}")
    lines += [
        f"agi_request: {request}",
        f"agi_channel: {spec.channel}",
        f"agi_language: {spec.language}",
        f"agi_type: {spec.channel.split('/', 1)[0]}",
        f"agi_uniqueid: {spec.uniqueid}",
        f"agi_version: {spec.version}",
        f"agi_callerid: {spec.callerid or 'unknown'}",
        f"agi_calleridname: {spec.calleridname or 'unknown'}",
        f"agi_callingpres: {pres}",
        "agi_callingani2: 0",
        "agi_callington: 0",
        "agi_callingtns: 0",
        f"agi_dnid: {spec.dnid or 'unknown'}",
        f"agi_rdnis: {spec.rdnis or 'unknown'}",
        f"agi_context: {spec.context}",
        f"agi_extension: {spec.extension}",
        f"agi_priority: {spec.priority}",
        "agi_enhanced: 0.0",
        f"agi_accountcode: {spec.accountcode}",
        f"agi_threadid: {spec.threadid}",
    ]
    lines += [f"agi_arg_{i}: {a}" for i, a in enumerate(spec.args, 1)]
    return ("\n".join(lines) + "\n\n").encode("utf-8", "surrogateescape")


# -- small parsers Asterisk applies -----------------------------------------------------------------
MAX_ARGS = 128
_C_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
              "\v": "\\v", "\\": "\\\\", "'": "\\'", '"': '\\"', "?": "\\?"}  # fmt: skip


def escape_c(text: str) -> str:
    """``ast_escape_c``: how AMI channel snapshots carry a caller ID name (a line break in it
    cannot split the event). The emulator escapes the number the same way: the fake AMI
    server refuses CR and LF in any header."""
    return "".join(_C_ESCAPES.get(ch, ch) for ch in text)


def parse_args(line: str) -> list[str]:
    """res_agi.c ``parse_args``: space/tab separate, ``"`` toggles quoting (a quote inside a word
    does not split it), ``\\`` escapes the next character, at most 127 arguments."""
    args: list[list[str]] = []
    quoted = escaped = False
    whitespace = True
    for ch in line:
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and whitespace:
                args.append([])
                whitespace = False
            continue
        if ch in " \t" and not quoted and not escaped:
            whitespace = True
            continue
        if ch == "\\" and not escaped:
            escaped = True
            continue
        if whitespace:
            if len(args) >= MAX_ARGS - 1:
                continue  # "Too many arguments, truncating" (and escaped stays set, as in C)
            args.append([])
            whitespace = False
        args[-1].append(ch)
        escaped = False
    return ["".join(a) for a in args]


_HEX = frozenset("0123456789abcdefABCDEF")


def is_libuuid(text: str) -> bool:
    """What libuuid ``uuid_parse`` accepts: 36 characters, 8-4-4-4-12 hex digits."""
    if len(text) != 36:
        return False
    return all((c == "-") if i in (8, 13, 18, 23) else (c in _HEX) for i, c in enumerate(text))


def parse_hostport(text: str) -> tuple[str, int] | None:
    """``host:port`` or ``[v6]:port`` with the port required (PARSE_PORT_REQUIRE)."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            return None
        port = rest[1:]
    else:
        host, sep, port = text.rpartition(":")
        if not sep or ":" in host:
            return None
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def ast_true(value: str) -> bool:
    return value.strip().lower() in ("yes", "true", "y", "t", "1", "on")


def ast_false(value: str) -> bool:
    return value.strip().lower() in ("no", "false", "n", "f", "0", "off")


# -- the channel -------------------------------------------------------------------------------
EventSink = Callable[[str, dict[str, str]], None]


class EmulatedChannel:
    """One emulated Asterisk channel: state, variables, soft hangup, AMI events.

    The AMI glue calls :meth:`hangup`, :meth:`redirect` and :meth:`play_dtmf` (plain methods,
    callable from any trio task) and receives events through ``event_sink(name, fields)``;
    every event is also kept in :attr:`events` as ``(t, name, fields)``.
    """

    def __init__(self, spec: ChannelSpec, *, event_sink: EventSink | None = None) -> None:
        self.spec = spec
        self.name = spec.channel
        self.uniqueid = spec.uniqueid
        self.linkedid = spec.linkedid or spec.uniqueid
        self.context, self.exten, self.priority = spec.context, spec.extension, spec.priority
        self.state = STATE_UP if spec.answered else STATE_RING
        self.variables: dict[str, str] = dict(spec.variables)
        self.event_sink = event_sink
        self.events: list[tuple[float, str, dict[str, str]]] = []
        self.warnings: list[str] = []
        """What Asterisk would log at WARNING for this channel's dialplan functions, e.g.
        ``func_base64.c: Syntax: BASE64_ENCODE(<data>) - missing argument!``."""
        self.softhangup: str | None = None  # "hangup" | "redirect"
        self.hangup_cause = 0
        self.redirect_target: tuple[str, str, int] | None = None
        self.goto_target: tuple[str, str, int] | None = None
        """Set by ``EXEC Goto``: where the dialplan went on after the AGI."""
        self.finished = False
        self.audio_session: AudioSocketSession | None = None
        self._hup = trio.Event()
        self._audio_changed = trio.Event()

    # -- AMI-facing controls ---------------------------------------------------------------------
    @property
    def soft_hungup(self) -> bool:
        return self.softhangup is not None

    def hangup(self, cause: int = 16) -> bool:
        """Soft-hang-up the channel (AMI ``Hangup``: the captures show Cause 0). False if gone."""
        if self.finished or self.softhangup is not None:
            return False
        self.softhangup, self.hangup_cause = "hangup", cause
        self._wake("caller_hangup")
        return True

    def redirect(self, context: str, exten: str, priority: int = 1) -> bool:
        """AMI ``Redirect`` (async goto): AGI sees HANGUP, an AudioSocket closes. False if gone."""
        if self.finished or self.softhangup is not None:
            return False
        self.softhangup, self.redirect_target = "redirect", (context, exten, int(priority))
        self._wake("redirect")
        return True

    def goto(self, data: str) -> int:
        """The ``Goto([[context,]exten,]priority)`` application (from ``EXEC Goto``): where the
        dialplan goes on once the AGI ends. Returns the app's result (-1 for bad arguments)."""
        parts = [p.strip() for p in data.split(",")]
        if not 1 <= len(parts) <= 3 or not all(parts) or not parts[-1].isdigit():
            self.warnings.append(f"pbx.c: Goto ({data}) rejected")
            return -1
        context, exten, priority = ([self.context, self.exten] + parts)[-3:]
        self.goto_target = (context, exten, int(priority))
        return 0

    def play_dtmf(self, digit: str, duration_ms: int = 0) -> None:
        """AMI ``PlayDTMF ... Receive: yes``: a ``DTMFEnd`` event (B6: no DTMFBegin, DurationMs
        0) and a ``03 00 01 <digit>`` frame on a running AudioSocket."""
        self.emit("DTMFEnd", Digit=digit, Direction="Received", DurationMs=str(duration_ms))
        if self.audio_session is not None and self.audio_session.running:
            self.audio_session.queue_dtmf(digit)

    def apply_caller_action(self, action: CallerAction) -> None:
        """Carry out a scripted caller action (the DTMF frame itself is the session's job)."""
        if isinstance(action, Hangup):
            self.hangup(action.cause)
        elif isinstance(action, Redirect):
            self.redirect(action.context, action.exten, action.priority)
        elif isinstance(action, Dtmf) and action.via in ("ami", "both"):
            self._dtmf_events(action.digit, 100)

    def _wake(self, reason: ClosedBy) -> None:
        self._hup.set()
        if self.audio_session is not None:
            self.audio_session.stop(reason)

    async def wait_soft_hangup(self) -> None:
        await self._hup.wait()

    # -- AudioSocket bookkeeping -----------------------------------------------------------------
    def attach_audio(self, session: AudioSocketSession) -> None:
        self.audio_session = session
        if self.softhangup is not None:  # a dead channel: the app ends right after the UUID
            session.stop("redirect" if self.softhangup == "redirect" else "caller_hangup")
        self._audio_event()

    def detach_audio(self, session: AudioSocketSession) -> None:
        if self.audio_session is session:
            self.audio_session = None
        self._audio_event()

    def _audio_event(self) -> None:
        self._audio_changed.set()
        self._audio_changed = trio.Event()

    async def wait_audio_change(self) -> None:
        """Return when an AudioSocket session starts or ends."""
        await self._audio_changed.wait()

    # -- dialplan state ----------------------------------------------------------------------------
    def answer(self) -> None:
        if self.state != STATE_UP:
            self.state = STATE_UP
            self.emit("Newstate")

    def set_location(self, what: str, value: str) -> None:
        if what == "context":
            self.context = value
        elif what == "extension":
            self.exten = value
        elif value.isdigit():
            self.priority = int(value)

    def set_variable(self, name: str, value: str) -> None:
        self.variables[name] = value
        self.emit("VarSet", Variable=name, Value=value)

    def get_variable(self, name: str) -> str | None:
        """``pbx_retrieve_variable``: builtins first, then channel variables; ``NAME(...)`` is a
        dialplan function (CHANNEL, CALLERID, UUID, LEN, BASE64_ENCODE/DECODE).

        As in Asterisk, CALLERID(num/name/dnid/rdnis) of an unset caller ID is ``""`` (the
        request block says ``unknown``), and BASE64_ENCODE/DECODE of an empty argument fail
        and log ``Syntax: BASE64_ENCODE(<data>) - missing argument!`` (:attr:`warnings`)."""
        if "(" in name:  # parse_variable_name: any '(' makes it a function call
            return self._function(name)
        builtin = {
            "CHANNEL": self.name,
            "UNIQUEID": self.uniqueid,
            "CONTEXT": self.context,
            "EXTEN": self.exten,
            "PRIORITY": str(self.priority),
            "HANGUPCAUSE": str(self.hangup_cause),
        }
        return builtin.get(name, self.variables.get(name))

    def _function(self, expr: str) -> str | None:
        # func_args: the argument runs from the first '(' to the last ')' (or to the end)
        fname, _, arg = expr.partition("(")
        if ")" in arg:
            arg = arg[: arg.rindex(")")]
        fname, key = fname.strip().upper(), arg.strip().lower()
        if fname == "CHANNEL":
            return {
                "state": STATE_DESC.get(self.state, "Unknown"),
                "name": self.name,
                "uniqueid": self.uniqueid,
                "linkedid": self.linkedid,
                "language": self.spec.language,
                "accountcode": self.spec.accountcode,
                "context": self.context,
                "exten": self.exten,
            }.get(key)
        if fname == "CALLERID":
            spec = self.spec
            num, nm, dnid, rdnis = (
                "" if v == "unknown" else v
                for v in (spec.callerid, spec.calleridname, spec.dnid, spec.rdnis)
            )
            return {
                "num": num, "name": nm, "all": f'"{nm}" <{num}>', "dnid": dnid, "rdnis": rdnis,
            }.get(key)  # fmt: skip
        if fname == "UUID":
            return str(uuid_mod.uuid4())
        if fname == "LEN":
            return str(len(arg))
        if fname in ("BASE64_ENCODE", "BASE64_DECODE") and not arg:
            # func_base64.c base64_helper: ast_strlen_zero(data) -> LOG_WARNING, return -1
            self.warnings.append(f"func_base64.c: Syntax: {fname}(<data>) - missing argument!")
            return None
        if fname == "BASE64_ENCODE":
            return base64.b64encode(arg.encode("utf-8", "surrogateescape")).decode()
        if fname == "BASE64_DECODE":
            return base64.b64decode(arg.encode() + b"==").decode("utf-8", "replace")
        return None

    def expand(self, text: str) -> str:
        """``${...}`` substitution (nested; unset -> empty; ``${VAR:offset:length}``)."""
        out: list[str] = []
        i = 0
        while i < len(text):
            if not text.startswith("${", i):
                out.append(text[i])
                i += 1
                continue
            depth, j = 1, i + 2
            while j < len(text) and depth:
                if text.startswith("${", j):
                    depth, j = depth + 1, j + 2
                    continue
                depth -= text[j] == "}"
                j += 1
            if depth:  # unterminated: literal
                out.append(text[i:])
                break
            out.append(self._lookup(self.expand(text[i + 2 : j - 1])))
            i = j
        return "".join(out)

    def _lookup(self, inner: str) -> str:
        depth, cut = 0, -1
        for k, c in enumerate(inner):
            depth += (c == "(") - (c == ")")
            if c == ":" and depth == 0:
                cut = k
                break
        name, spec = (inner, "") if cut < 0 else (inner[:cut], inner[cut + 1 :])
        value = self.get_variable(name) or ""
        if spec:
            off_s, _, len_s = spec.partition(":")
            off = int(off_s) if off_s.lstrip("-").isdigit() else 0
            value = value[off:] if off >= 0 else value[len(value) + off :]
            if len_s.lstrip("-").isdigit():
                n = int(len_s)
                value = value[:n] if n >= 0 else value[:n]
        return value

    # -- AMI events ------------------------------------------------------------------------------
    def emit(self, event: str, **extra: str) -> None:
        """Record an AMI event with the channel's standard fields and hand it to the sink."""
        num, name = self.spec.callerid, self.spec.calleridname
        fields = {
            "Channel": self.name,
            "ChannelState": str(self.state),
            "ChannelStateDesc": STATE_DESC.get(self.state, "Unknown"),
            "CallerIDNum": escape_c(num) if num not in ("", "unknown") else "<unknown>",
            "CallerIDName": escape_c(name) if name not in ("", "unknown") else "<unknown>",
            "ConnectedLineNum": "<unknown>",
            "ConnectedLineName": "<unknown>",
            "Language": self.spec.language,
            "AccountCode": self.spec.accountcode,
            "Context": self.context,
            "Exten": self.exten,
            "Priority": str(self.priority),
            "Uniqueid": self.uniqueid,
            "Linkedid": self.linkedid,
        }
        fields.update(extra)
        try:
            now = trio.current_time()
        except RuntimeError:  # outside trio.run
            now = 0.0
        self.events.append((now, event, fields))
        if self.event_sink is not None:
            self.event_sink(event, dict(fields))

    def _dtmf_events(self, digit: str, duration_ms: int) -> None:
        """A key pressed on the caller's phone: DTMFBegin and DTMFEnd (emitted together)."""
        self.emit("DTMFBegin", Digit=digit, Direction="Received")
        self.emit("DTMFEnd", Digit=digit, Direction="Received", DurationMs=str(duration_ms))

    def finish_agi(self, status: str) -> None:
        """The AGI app returned: AGISTATUS, then what the captures show after the socket closed.

        Hangup: SoftHangupRequest and Hangup. Redirect: Newexten at the target (the emulator
        runs no dialplan there, so the call then ends with Hangup, cause 16). A normal end: the
        next priority hangs up (SoftHangupRequest and Hangup, cause 16).
        """
        if self.finished:
            return
        self.set_variable("AGISTATUS", status)
        cause = 16
        if self.softhangup == "redirect" and self.redirect_target is not None:
            self.context, self.exten, self.priority = self.redirect_target
            self.emit("Newexten", Application="", AppData="")
        elif self.softhangup == "hangup":
            cause = self.hangup_cause
        elif self.goto_target is not None:
            self.context, self.exten, self.priority = self.goto_target
            self.emit("Newexten", Application="", AppData="")
        self.finished = True
        self.emit("SoftHangupRequest", Cause="16")
        self.emit("Hangup", Cause=str(cause), **{"Cause-txt": CAUSE_TEXT.get(cause, "Unknown")})
        self._hup.set()


__all__ = [
    "AGI_VERSION",
    "CAUSE_TEXT",
    "STATE_DESC",
    "ChannelSpec",
    "EmulatedChannel",
    "EventSink",
    "ast_false",
    "ast_true",
    "env_block",
    "escape_c",
    "is_libuuid",
    "parse_args",
    "parse_hostport",
]
