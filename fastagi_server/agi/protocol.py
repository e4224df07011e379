"""Sans-I/O FastAGI codec: the request block, command encoding, response parsing.

Bytes go in (:meth:`EnvParser.feed`, :meth:`ResponseReader.feed`), typed values come out
(``dict`` / :class:`AgiRequest`, :class:`Response`, :class:`HangupNotice`). Commands are built
by :func:`build_command` and the ``cmd_*`` helpers, which pass every argument through the one
escaping function, :func:`quote_arg`. Nothing here touches a socket, a clock or an event loop;
:mod:`fastagi_server.agi.connection` is the asyncio shell that moves the bytes.

Wire facts this module relies on (telephony.md B, verified on Asterisk 22.10.1):

* The request block is ``agi_<name>: <value>\\n`` lines ended by an empty line, LF only. A value
  may be empty (``agi_accountcode: \\n``). Missing caller id / dnid / rdnis are the literal
  ``unknown``.
* Asterisk writes caller ID (number and name), dnid and rdnis raw: a line break in them forges
  further ``agi_*`` lines. So a repeated key keeps its first value, a line that is not
  ``agi_<name>: <value>`` is recorded, not fatal, and the arguments are only the
  ``agi_arg_1..N`` run after the last ``agi_threadid`` (every caller-controlled field comes
  before it). What was not believed is in :attr:`EnvParser.anomalies`. Identity is read from
  Asterisk afterwards (:mod:`fastagi_server.agi.identity`), never taken from this block.
* A response is one line ``<code> <text>\\n``, except the usage block
  ``520-...\\n<usage lines>\\n520 End of proper usage.\\n``. A reader loops until a line matching
  ``^\\d{3} ``.
* ``HANGUP\\n`` arrives unsolicited at any time: before the response to the next command, after a
  command's own result, twice with ``AGIEXITONHANGUP=yes``, and in the same TCP read as the end of
  the request block.
* Values in ``200 result=1 (value)`` are not escaped: the data is the text between the first
  ``(`` and the *last* ``)``; a value holding a newline continues on the next line(s).
* A command line is cut at 8191 bytes and a LF ends it: a newline in an argument runs a second
  command (remote code execution via ``EXEC System``). :func:`quote_arg` refuses CR, LF and NUL.

Exceptions reuse pyst2's vocabulary (``asterisk.agi``; only that module: ``asterisk.fastagi`` is
Python-2 only). pyst2's socket-driving ``AGI`` class is not used (telephony.md D.1).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import parse_qsl

from asterisk.agi import (
    AGIAppError,
    AGIException,
    AGIInvalidCommand,
    AGIResultHangup,
    AGIUnknownError,
    AGIUsageError,
)

__all__ = [
    "AGIAppError",
    "AGIInvalidCommand",
    "AGIResultHangup",
    "AGIUsageError",
    "MAX_COMMAND_BYTES",
    "AgiConnectionClosed",
    "AgiError",
    "AgiProtocolError",
    "AgiReplyError",
    "AgiRequest",
    "AgiTimeout",
    "Bare",
    "AgiEnv",
    "DeadChannel",
    "EnvAnomaly",
    "EnvParser",
    "HangupNotice",
    "InvalidCommand",
    "Response",
    "ResponseReader",
    "StrayLine",
    "UnexpectedReply",
    "UnsafeValueError",
    "UsageError",
    "build_command",
    "cmd_answer",
    "cmd_channel_status",
    "cmd_exec",
    "cmd_get_full_variable",
    "cmd_get_variable",
    "cmd_hangup",
    "cmd_set_variable",
    "cmd_verbose",
    "log_safe",
    "quote_arg",
    "raise_for",
]

MAX_COMMAND_BYTES = 8191
"""Longest command line, newline included. Asterisk reads commands with ``fgets`` into an
8192-byte buffer; a longer line is cut and its remainder runs as the next command."""

DEFAULT_MAX_ENV_BYTES = 16384
DEFAULT_MAX_ENV_LINE = 8192
DEFAULT_MAX_RESPONSE_LINE = 1 << 20
"""GET FULL VARIABLE has no length limit in Asterisk; 1 MiB keeps a broken peer bounded."""
MAX_USAGE_LINES = 500

_ENV_KEY = re.compile(r"agi_[A-Za-z0-9_]+")
_ARG_KEY = re.compile(r"agi_arg_[0-9]+")
_VAR_NAME = re.compile(r"[A-Za-z0-9_()]+")
_APP_NAME = re.compile(r"[A-Za-z0-9_]+")
_BARE = re.compile(r"-?[A-Za-z0-9_()]+")
_VERB = re.compile(r"[A-Za-z]+(?: [A-Za-z]+)*")
_FINAL = re.compile(r"(\d{3}) (.*)", re.DOTALL)
_CONTINUED = re.compile(r"(\d{3})-(.*)", re.DOTALL)
_RESULT = re.compile(r"result=(\S*)")


# --------------------------------------------------------------------------- errors


class UnsafeValueError(ValueError):
    """A value that must not reach Asterisk: CR, LF or NUL (command/header injection), an
    over-long line, or a name that is not a plain identifier. Raised before anything is sent."""


class AgiError(AGIException):
    """Base of this package's AGI errors (a pyst2 ``AGIException``)."""


class AgiProtocolError(AgiError):
    """The peer broke the FastAGI protocol. It ends that connection only."""


class AgiTimeout(AgiProtocolError, TimeoutError):
    """The peer did not send what was expected in time (request block or command reply)."""


class AgiConnectionClosed(AgiError, ConnectionError):
    """Asterisk closed the connection (EOF). After ``AGIEXITONHANGUP=yes`` or when the AGI app
    ended, this is the normal end of a session."""


class AgiReplyError(AgiError):
    """A non-200 reply turned into an exception by :func:`raise_for`. ``args`` are
    ``(code, message)``; the reply is in :attr:`response`."""

    response: Response | None = None


class DeadChannel(AGIResultHangup, AgiReplyError):
    """511 Command Not Permitted on a dead channel or intercept routine (a pyst2
    ``AGIResultHangup``).

    The channel hung up (or was redirected: an AMI Redirect also produces ``HANGUP``). Only
    GET/SET VARIABLE, GET FULL VARIABLE, EXEC, NOOP, VERBOSE, DATABASE * and a few speech
    commands still work.
    """


class InvalidCommand(AGIInvalidCommand, AgiReplyError):
    """510 Invalid or unknown command (a pyst2 ``AGIInvalidCommand``)."""


class UsageError(AGIUsageError, AgiReplyError):
    """520 Invalid command syntax (a pyst2 ``AGIUsageError``); the message is the usage."""


class UnexpectedReply(AGIUnknownError, AgiReplyError):
    """Any other non-200 code (a pyst2 ``AGIUnknownError``)."""


# --------------------------------------------------------------------------- request block


def log_safe(value: str, limit: int = 60) -> str:
    """``value`` fit for a log line: ``repr`` (CR, LF, NUL, escape sequences and other
    unprintable characters become ``\\n``, ``\\x1b``, ...), cut to ``limit`` characters with
    the full length noted. Caller-controlled text never reaches a log raw."""
    if len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} chars)"
    return repr(value)


@dataclass(frozen=True, slots=True)
class EnvAnomaly:
    """A line of the request block that was not believed.

    ``kind`` is ``"duplicate"`` (a key seen before: the first value was kept),
    ``"malformed"`` (not ``agi_<name>: <value>``; ``key`` is ``""`` and ``text`` the whole
    line) or ``"misplaced_arg"`` (an ``agi_arg_N`` outside the run after the last
    ``agi_threadid``: ignored). ``line`` counts from 1. ``text`` is the value as decoded,
    raw: show it with :meth:`describe` or :func:`log_safe`, never as is.
    """

    line: int
    kind: str
    key: str
    text: str

    def describe(self, limit: int = 60) -> str:
        """One log-safe phrase, e.g. ``agi_channel repeated at line 11: 'Local/x' ignored``."""
        shown = log_safe(self.text, limit)
        if self.kind == "duplicate":
            return f"{self.key} repeated at line {self.line}: {shown} ignored"
        if self.kind == "misplaced_arg":
            return f"{self.key} at line {self.line} is not an argument Asterisk wrote: {shown}"
        return f"line {self.line} is not 'agi_<name>: <value>': {shown}"


class AgiEnv(dict[str, str]):
    """The environment :meth:`EnvParser.feed` returns: a plain ``dict`` of the believed values
    (keys in block order) that also carries the parser's :attr:`anomalies`, so that
    :meth:`AgiRequest.from_env` can keep them."""

    __slots__ = ("anomalies",)

    def __init__(self, anomalies: tuple[EnvAnomaly, ...] = ()) -> None:
        super().__init__()
        self.anomalies = anomalies


class EnvParser:
    """Incremental parser of the ``agi_*`` request block.

    :meth:`feed` returns ``None`` until the blank line arrives, then the environment as an
    :class:`AgiEnv` (a ``dict``) with the keys as sent (``"agi_network_script"``, ...). Bytes
    after the blank line (typically an unsolicited ``HANGUP\\n``) are kept in :attr:`leftover`
    for the response reader. Feeding more bytes after completion appends them to
    :attr:`leftover`.

    Asterisk writes caller-controlled values raw, so a caller ID holding a line break forges
    lines. Hence: a repeated key keeps its **first** value (every identity field Asterisk
    writes before the caller-controlled ones stays as Asterisk wrote it); a line after the first
    that is not ``agi_<name>: <value>`` is recorded, not fatal; the arguments ``agi_arg_1..N``
    are only the run that directly follows the **last** ``agi_threadid`` line (Asterisk writes
    them there, after every caller-controlled field), or, in a block without ``agi_threadid``,
    the run that ends the block; any other ``agi_arg_N`` line is ignored. Each of these is an
    :class:`EnvAnomaly` in :attr:`anomalies` (and in the returned ``AgiEnv.anomalies``).
    Fields written after the caller-controlled ones (``agi_context``, ``agi_extension``, ...)
    can still carry a forged first value: read them from Asterisk.

    Values that are not valid UTF-8 (a caller-id name from a SIP header can be anything) are
    decoded with ``errors="replace"`` (U+FFFD) instead of failing the call; their keys are
    listed in :attr:`replaced`. Keys must be ASCII ``agi_[A-Za-z0-9_]+``.

    Raises :class:`AgiProtocolError` (from :meth:`feed`) for a first line that is not
    ``agi_<name>: <value>`` (an HTTP health check, a port scan), a line longer than
    ``max_line`` bytes, a block larger than ``max_bytes``, or an empty block.
    """

    def __init__(
        self, max_bytes: int = DEFAULT_MAX_ENV_BYTES, max_line: int = DEFAULT_MAX_ENV_LINE
    ) -> None:
        self.max_bytes = max_bytes
        self.max_line = min(max_line, max_bytes)
        self.leftover = b""
        self.replaced: list[str] = []
        self.anomalies: list[EnvAnomaly] = []
        self._buf = bytearray()
        self._scan = 0
        self._consumed = 0
        self._lineno = 0
        self._lines: list[tuple[int, str, str]] = []
        self._env: AgiEnv | None = None

    @property
    def complete(self) -> bool:
        return self._env is not None

    @property
    def bytes_received(self) -> int:
        return self._consumed + len(self._buf)

    def feed(self, data: bytes | bytearray) -> AgiEnv | None:
        """Consume ``data``; return the environment once the blank line has been seen."""
        if self._env is not None:
            self.leftover += bytes(data)
            return self._env
        self._buf += data
        while True:
            nl = self._buf.find(b"\n", self._scan)
            if nl < 0:
                self._scan = len(self._buf)
                if len(self._buf) > self.max_line:
                    raise AgiProtocolError(
                        f"AGI environment line {self._lineno + 1} is longer than "
                        f"{self.max_line} bytes (no newline in {len(self._buf)} bytes)"
                    )
                if self.bytes_received > self.max_bytes:
                    raise AgiProtocolError(
                        f"AGI environment block exceeds {self.max_bytes} bytes "
                        "without the terminating blank line"
                    )
                return None
            raw = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            self._scan = 0
            self._consumed += nl + 1
            self._lineno += 1
            if len(raw) > self.max_line:
                raise AgiProtocolError(
                    f"AGI environment line {self._lineno} is {len(raw)} bytes, longer than "
                    f"{self.max_line} bytes"
                )
            if self._consumed > self.max_bytes:
                raise AgiProtocolError(
                    f"AGI environment block exceeds {self.max_bytes} bytes (at line {self._lineno})"
                )
            if raw.endswith(b"\r"):  # Asterisk sends LF only; tolerate hand-written CRLF
                raw = raw[:-1]
            if not raw:
                if self._lineno == 1:
                    raise AgiProtocolError(
                        "empty AGI environment: blank line before any agi_ variable"
                    )
                self._env = self._resolve()
                self.leftover = bytes(self._buf)
                self._buf.clear()
                return self._env
            self._parse_line(raw)

    def _parse_line(self, raw: bytes) -> None:
        key_b, sep, value_b = raw.partition(b":")
        try:
            key = key_b.decode("ascii")
        except UnicodeDecodeError:
            key = ""
        if not sep or not _ENV_KEY.fullmatch(key):
            if self._lineno == 1:  # not Asterisk at all: an HTTP health check, a port scan
                raise AgiProtocolError(
                    f"malformed AGI environment line 1: {raw[:80]!r} "
                    "(expected 'agi_<name>: <value>')"
                )
            # A line break inside a caller-controlled value: the rest of that value.
            text = raw.decode("utf-8", errors="replace")
            self.anomalies.append(EnvAnomaly(self._lineno, "malformed", "", text))
            return
        if value_b.startswith(b" "):
            value_b = value_b[1:]
        try:
            value = value_b.decode("utf-8")
        except UnicodeDecodeError:
            value = value_b.decode("utf-8", errors="replace")
            if key not in self.replaced:
                self.replaced.append(key)
        self._lines.append((self._lineno, key, value))

    def _resolve(self) -> AgiEnv:
        """The believed environment from the lines in block order (see the class docstring)."""
        lines = self._lines
        threadids = [i for i, (_, key, _) in enumerate(lines) if key == "agi_threadid"]
        if threadids:
            start = threadids[-1] + 1
        else:  # not written by res_agi's setup_env: the agi_arg run that ends the block
            start = len(lines)
            while start > 0 and _ARG_KEY.fullmatch(lines[start - 1][1]):
                start -= 1
        real_args: set[int] = set()
        for i in range(start, len(lines)):
            if lines[i][1] != f"agi_arg_{len(real_args) + 1}":
                break
            real_args.add(i)
        env = AgiEnv()
        for i, (lineno, key, value) in enumerate(lines):
            if _ARG_KEY.fullmatch(key) and i not in real_args:
                self.anomalies.append(EnvAnomaly(lineno, "misplaced_arg", key, value))
            elif key in env:
                self.anomalies.append(EnvAnomaly(lineno, "duplicate", key, value))
            else:
                env[key] = value
        self.anomalies.sort(key=lambda a: a.line)
        env.anomalies = tuple(self.anomalies)
        return env


def _known(value: str) -> str:
    return "" if value == "unknown" else value


@dataclass(frozen=True, slots=True)
class AgiRequest:
    """The FastAGI request, built from the environment with :meth:`from_env`.

    ``script`` is ``agi_network_script`` without its query (``"bot?lang=en"`` -> ``"bot"``);
    ``query`` is the parsed query string (last value wins; Asterisk itself does not parse it).
    ``args`` are ``agi_arg_1..N`` verbatim. Caller id, caller-id name, dnid and rdnis are ``""``
    when Asterisk sent the literal ``unknown`` (``env`` keeps the literal).

    Only ``script``, ``query``, ``request``, ``channel``, ``uniqueid``, ``language`` and ``type``
    come before the caller-controlled fields, and ``args`` after ``agi_threadid`` (see
    :class:`EnvParser`). The other fields may be forged by a caller: the call handler reads
    them from Asterisk. ``anomalies`` are the lines the parser did not believe.
    """

    script: str
    query: Mapping[str, str]
    args: tuple[str, ...]
    channel: str
    uniqueid: str
    callerid: str
    calleridname: str
    dnid: str
    rdnis: str
    extension: str
    context: str
    priority: str
    language: str
    version: str
    type: str
    request: str
    accountcode: str
    env: Mapping[str, str] = field(repr=False)
    anomalies: tuple[EnvAnomaly, ...] = field(default=(), repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AgiRequest:
        """Build the request; an :class:`AgiEnv` from :class:`EnvParser` brings its anomalies."""
        script_full = env.get("agi_network_script", "")
        script, _, qs = script_full.partition("?")
        query = dict(parse_qsl(qs, keep_blank_values=True))
        args: list[str] = []
        while (arg := env.get(f"agi_arg_{len(args) + 1}")) is not None:
            args.append(arg)
        return cls(
            script=script,
            query=MappingProxyType(query),
            args=tuple(args),
            channel=env.get("agi_channel", ""),
            uniqueid=env.get("agi_uniqueid", ""),
            callerid=_known(env.get("agi_callerid", "")),
            calleridname=_known(env.get("agi_calleridname", "")),
            dnid=_known(env.get("agi_dnid", "")),
            rdnis=_known(env.get("agi_rdnis", "")),
            extension=env.get("agi_extension", ""),
            context=env.get("agi_context", ""),
            priority=env.get("agi_priority", ""),
            language=env.get("agi_language", ""),
            version=env.get("agi_version", ""),
            type=env.get("agi_type", ""),
            request=env.get("agi_request", ""),
            accountcode=env.get("agi_accountcode", ""),
            env=MappingProxyType(dict(env)),
            anomalies=env.anomalies if isinstance(env, AgiEnv) else (),
        )

    @property
    def tampered(self) -> bool:
        """True when the block held lines that were not believed (see ``anomalies``)."""
        return bool(self.anomalies)


# --------------------------------------------------------------------------- responses


@dataclass(frozen=True, slots=True)
class Response:
    """One command reply.

    ``code`` is 200, 510, 511, 520, ...; for 200, ``result`` is the text after ``result=``
    (``"1"``, ``"-1"``, ``""``), ``data`` the text in parentheses or ``None``, and ``extra`` what
    follows (``"endpos=24000"``). For other codes ``result``/``data`` are ``None`` and ``extra``
    is the message (``"Invalid or unknown command"``). ``lines`` are the raw lines (several for
    a 520 usage block or a value holding newlines).
    """

    code: int
    result: str | None
    data: str | None
    extra: str
    lines: tuple[str, ...]

    @property
    def result_int(self) -> int | None:
        """``result`` as an int, or ``None`` when absent or not a number."""
        if self.result is None:
            return None
        try:
            return int(self.result)
        except ValueError:
            return None

    @property
    def usage(self) -> str:
        """The usage text of a multi-line 520 reply (lines between the first and last)."""
        return "\n".join(self.lines[1:-1])

    @property
    def ok(self) -> bool:
        return self.code == 200


@dataclass(frozen=True, slots=True)
class HangupNotice:
    """The unsolicited ``HANGUP`` line: the channel hung up *or was redirected* (AMI Redirect
    also sends it). Correlate with the AMI ``Hangup`` event for the real cause."""


@dataclass(frozen=True, slots=True)
class StrayLine:
    """A line outside any reply (a ``1xx`` line, or the tail of an unescaped value after a
    ``)`` and a newline). The shell logs and ignores it."""

    text: str


ReaderEvent = Response | HangupNotice | StrayLine


def _parse_final(code: int, text: str, lines: tuple[str, ...]) -> Response:
    if code != 200:
        return Response(code, None, None, text, lines)
    m = _RESULT.match(text)
    if m is None:
        return Response(code, None, None, text, lines)
    result = m.group(1)
    rest = text[m.end() :]
    stripped = rest.lstrip(" ")
    if stripped.startswith("("):
        close = stripped.rfind(")")
        if close < 0:  # only reachable when a continuation never closed (bounded by caller)
            return Response(code, result, stripped[1:], "", lines)
        return Response(code, result, stripped[1:close], stripped[close + 1 :].strip(), lines)
    return Response(code, result, None, rest.strip(), lines)


class ResponseReader:
    """Incremental reader of everything Asterisk writes after the request block.

    :meth:`feed` bytes, then iterate :meth:`events` for :class:`Response`,
    :class:`HangupNotice` and :class:`StrayLine` in arrival order. A multi-line ``520-`` block
    becomes one :class:`Response` (``HANGUP`` cannot interleave inside it: Asterisk writes the
    block from the same thread that writes ``HANGUP``). A ``200`` line whose ``(`` is not closed
    on the same line continues on the following lines until one holds a ``)``: that is an
    unescaped value containing a newline (telephony.md B.6).

    A line that is neither a reply nor ``HANGUP`` is yielded as :class:`StrayLine`, never
    raised: it can be the tail of a caller-controlled value, which must not kill the
    connection. Non-UTF-8 bytes are replaced (U+FFFD).

    :meth:`events` raises :class:`AgiProtocolError` for a line longer than ``max_line`` bytes,
    a usage block over ``MAX_USAGE_LINES`` lines, or an unclosed value over ``max_line``.
    """

    def __init__(self, max_line: int = DEFAULT_MAX_RESPONSE_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._scan = 0
        self._block: list[str] | None = None
        self._open_value: list[str] | None = None

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)

    @property
    def in_reply(self) -> bool:
        """True while a multi-line reply has started but not ended."""
        return self._block is not None or self._open_value is not None

    def feed(self, data: bytes | bytearray) -> None:
        self._buf += data

    def events(self) -> Iterator[ReaderEvent]:
        """Yield the events complete in the buffered bytes (a partial line stays buffered)."""
        while True:
            nl = self._buf.find(b"\n", self._scan)
            if nl < 0:
                self._scan = len(self._buf)
                if len(self._buf) > self.max_line:
                    raise AgiProtocolError(
                        f"AGI reply line longer than {self.max_line} bytes (no newline)"
                    )
                return
            raw = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            self._scan = 0
            if len(raw) > self.max_line:
                raise AgiProtocolError(f"AGI reply line of {len(raw)} bytes > {self.max_line}")
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            ev = self._line(raw.decode("utf-8", errors="replace"))
            if ev is not None:
                yield ev

    def _line(self, line: str) -> ReaderEvent | None:
        if self._open_value is not None:
            self._open_value.append(line)
            if ")" in line:
                lines = tuple(self._open_value)
                self._open_value = None
                first = _FINAL.fullmatch(lines[0])
                assert first is not None
                return _parse_final(200, "\n".join([first.group(2), *lines[1:]]), lines)
            if sum(len(x) for x in self._open_value) > self.max_line:
                raise AgiProtocolError(
                    f"AGI reply value spans more than {self.max_line} bytes without ')'"
                )
            return None
        if self._block is not None:
            self._block.append(line)
            final = _FINAL.fullmatch(line)
            if final is not None:
                lines = tuple(self._block)
                self._block = None
                first = _CONTINUED.fullmatch(lines[0])
                assert first is not None
                return Response(int(final.group(1)), None, None, first.group(2), lines)
            if len(self._block) > MAX_USAGE_LINES:
                raise AgiProtocolError(
                    f"AGI usage block longer than {MAX_USAGE_LINES} lines without a final "
                    "'NNN ' line"
                )
            return None
        if line == "HANGUP":
            return HangupNotice()
        final = _FINAL.fullmatch(line)
        if final is not None:
            code, text = int(final.group(1)), final.group(2)
            if code < 200:  # Asterisk never sends 100 Trying; tolerate it anyway
                return StrayLine(line)
            if code == 200 and self._unclosed_value(text):
                self._open_value = [line]
                return None
            return _parse_final(code, text, (line,))
        if _CONTINUED.fullmatch(line) is not None:
            self._block = [line]
            return None
        return StrayLine(line)

    @staticmethod
    def _unclosed_value(text: str) -> bool:
        m = _RESULT.match(text)
        if m is None:
            return False
        rest = text[m.end() :].lstrip(" ")
        return rest.startswith("(") and ")" not in rest


def raise_for(response: Response) -> Response:
    """Return ``response`` if its code is 200, else raise the matching pyst2 exception.

    510 -> :class:`InvalidCommand` (``AGIInvalidCommand``); 511 -> :class:`DeadChannel`
    (``AGIResultHangup``); 520 -> :class:`UsageError` (``AGIUsageError``); any other code ->
    :class:`UnexpectedReply` (``AGIUnknownError``). All are :class:`AgiReplyError` (so
    :class:`AgiError`) as well as the pyst2 class. ``args`` are ``(code, message)``. A 200 with
    ``result=-1`` is *not* raised (unlike pyst2): for EXEC it is the application's own result
    and the caller decides.
    """
    if response.code == 200:
        return response
    text = response.extra if response.code != 520 else (response.usage or response.extra)
    exc: type[AgiReplyError]
    if response.code == 510:
        exc = InvalidCommand
    elif response.code == 511:
        exc = DeadChannel
    elif response.code == 520:
        exc = UsageError
    else:
        exc = UnexpectedReply
    err = exc(response.code, text)
    err.response = response
    raise err


# --------------------------------------------------------------------------- commands


_UNSAFE_NAMES = {"\r": "carriage return (CR)", "\n": "line feed (LF)", "\x00": "NUL byte"}


def _refuse_controls(value: str, what: str) -> None:
    for ch, name in _UNSAFE_NAMES.items():
        idx = value.find(ch)
        if idx >= 0:
            raise UnsafeValueError(
                f"{what} contains a {name} at index {idx}; refusing it: it would end the "
                "line and inject whatever follows"
            )


def quote_arg(value: str) -> str:
    """Return ``value`` as one AGI argument token: ``\\`` and ``"`` escaped, wrapped in quotes.

    This is the one escaping function for everything written to AGI. Raises
    :class:`UnsafeValueError` for CR, LF or NUL (Asterisk has no escape for a newline: it ends
    the command and the rest runs as a new one). Raises ``TypeError`` for a non-str.
    """
    if not isinstance(value, str):
        raise TypeError(f"AGI argument must be str, not {type(value).__name__}")
    _refuse_controls(value, "AGI argument")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Bare(str):
    """An argument written without quotes: an identifier, application name or integer
    (``[A-Za-z0-9_()]+``, optionally negative). Checked by :func:`build_command`."""

    __slots__ = ()


def build_command(verb: str, *args: str | int | Bare) -> bytes:
    """Encode one command line: ``verb`` words, then each argument, then ``\\n``.

    ``verb`` is the command name (``"GET VARIABLE"``; letters and single spaces). A ``str``
    argument goes through :func:`quote_arg`; an ``int`` is written in decimal; a :class:`Bare`
    is written as is after checking it is ``-?[A-Za-z0-9_()]+``.

    Raises :class:`UnsafeValueError` for a bad verb or bare token, a CR/LF/NUL in an argument,
    or a line longer than :data:`MAX_COMMAND_BYTES` (Asterisk would run the remainder as the
    next command).
    """
    if not _VERB.fullmatch(verb):
        raise UnsafeValueError(f"AGI command verb {verb!r} is not plain words")
    tokens = [verb]
    for arg in args:
        if isinstance(arg, bool):
            raise TypeError("AGI argument must be str, int or Bare, not bool")
        if isinstance(arg, Bare):
            if not _BARE.fullmatch(arg):
                raise UnsafeValueError(f"bare AGI token {str(arg)!r} is not [A-Za-z0-9_()]+")
            tokens.append(str(arg))
        elif isinstance(arg, int):
            tokens.append(str(arg))
        else:
            tokens.append(quote_arg(arg))
    # "replace": a lone surrogate (half an emoji that came through JSON) becomes "?" instead
    # of failing the command that reports the call's outcome
    line = (" ".join(tokens) + "\n").encode("utf-8", "replace")
    if len(line) > MAX_COMMAND_BYTES:
        raise UnsafeValueError(
            f"AGI command is {len(line)} bytes, over the {MAX_COMMAND_BYTES}-byte line limit "
            "(Asterisk would cut it and run the rest as another command)"
        )
    return line


def _var_name(name: str) -> Bare:
    if not isinstance(name, str) or not _VAR_NAME.fullmatch(name):
        raise UnsafeValueError(f"AGI variable name {name!r} must match ^[A-Za-z0-9_()]+$")
    return Bare(name)


def cmd_answer() -> bytes:
    return build_command("ANSWER")


def cmd_hangup() -> bytes:
    return build_command("HANGUP")


def cmd_channel_status() -> bytes:
    """``CHANNEL STATUS``: result 6 is Up, 4 Ring, 0 Down (see Asterisk's AST_STATE_*)."""
    return build_command("CHANNEL STATUS")


def cmd_get_variable(name: str) -> bytes:
    """``GET VARIABLE NAME``; a dialplan function is allowed (``CALLERID(num)``)."""
    return build_command("GET VARIABLE", _var_name(name))


def cmd_get_full_variable(expr: str) -> bytes:
    """``GET FULL VARIABLE "<expr>"``: evaluates a ``${...}`` expression (no length limit).

    For untrusted values read ``${BASE64_ENCODE(${VAR})}``: replies are not escaped.
    """
    return build_command("GET FULL VARIABLE", expr)


def cmd_set_variable(name: str, value: str) -> bytes:
    """``SET VARIABLE NAME "value"`` (Asterisk unescapes ``\\"`` and ``\\\\``)."""
    return build_command("SET VARIABLE", _var_name(name), value)


def cmd_exec(app: str, options: str | None = None) -> bytes:
    """``EXEC App "options"``: the options are ONE quoted token (only ``argv[2]`` reaches the
    application), e.g. ``EXEC AudioSocket "uuid,127.0.0.1:9092"``. ``${}`` is not expanded
    unless ``AGIEXECFULL=yes``. ``options=None`` sends no options."""
    if not isinstance(app, str) or not _APP_NAME.fullmatch(app):
        raise UnsafeValueError(f"application name {app!r} must match ^[A-Za-z0-9_]+$")
    if options is None:
        return build_command("EXEC", Bare(app))
    return build_command("EXEC", Bare(app), options)


def cmd_verbose(msg: str, level: int = 1) -> bytes:
    """``VERBOSE "msg" level`` (level 1-4)."""
    if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 4:
        raise UnsafeValueError(f"VERBOSE level must be an int 1..4, not {level!r}")
    return build_command("VERBOSE", msg, level)
