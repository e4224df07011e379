"""Sans-I/O AMI codec: bytes in, :class:`Banner` / :class:`AmiMessage` out; actions encoded
with header-injection checks.

Wire facts (telephony.md C.1, verified on Asterisk 22.10.1):

* On connect the server sends ``Asterisk Call Manager/<version>\\r\\n`` with *no* blank line
  after it; then messages of ``Key: Value\\r\\n`` lines, each ended by an empty line.
* Asterisk always sends CRLF but accepts bare LF; this parser accepts both in both directions.
* Keys repeat (``ChanVariable``, ``Variable`` on Originate, ``Output`` on Command): a message is
  an ordered list of pairs, never a plain dict.
* An input line is at most 1024 bytes in Asterisk (longer ones are discarded with a warning),
  and an action has at most 128 headers.
* A CR or LF in a value is header injection, CRLF CRLF is action injection (panoramisk writes
  values raw: telephony.md D.2). :func:`sanitize_value` refuses them.

Text is decoded as UTF-8 once per whole message, so a multi-byte character split across two
TCP reads is kept (panoramisk decodes each chunk with ``errors="ignore"`` and loses it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from fastagi_server.agi.protocol import UnsafeValueError

__all__ = [
    "MAX_ACTION_HEADERS",
    "MAX_LINE_BYTES",
    "AmiMessage",
    "AmiParser",
    "AmiProtocolError",
    "Banner",
    "UnsafeValueError",
    "encode_message",
    "sanitize_key",
    "sanitize_value",
]

MAX_LINE_BYTES = 1024
"""Longest line Asterisk accepts from a client, CRLF included (``inbuf[1025]``)."""
MAX_ACTION_HEADERS = 128
"""``AST_MAX_MANHEADERS``."""
DEFAULT_MAX_INPUT_LINE = 65536
DEFAULT_MAX_MESSAGE = 1 << 20
BANNER_PREFIX = b"Asterisk Call Manager/"

_KEY = re.compile(r"[A-Za-z0-9_\-]+")


class AmiProtocolError(Exception):
    """The peer broke the AMI framing (no banner, line or message too large). It ends that
    connection only."""


@dataclass(frozen=True, slots=True)
class Banner:
    """The greeting line; ``version`` is the AMI version (11.0.0 on Asterisk 22)."""

    version: str
    raw: str


class AmiMessage:
    """One AMI message (action, response or event): ordered ``(key, value)`` pairs plus any
    lines that are not ``Key: Value`` (legacy ``Response: Follows`` bodies) in ``content``.

    Lookup is case-insensitive like Asterisk's ``astman_get_header``: :meth:`get` returns the
    first value, :meth:`getall` every value of a repeated key, :meth:`as_dict` a dict whose
    repeated keys map to lists.
    """

    __slots__ = ("_index", "content", "pairs")

    def __init__(self, pairs: Iterable[tuple[str, str]], content: Iterable[str] = ()) -> None:
        self.pairs: tuple[tuple[str, str], ...] = tuple(pairs)
        self.content: tuple[str, ...] = tuple(content)
        index: dict[str, list[str]] = {}
        for k, v in self.pairs:
            index.setdefault(k.lower(), []).append(v)
        self._index = index

    def get(self, key: str, default: str | None = None) -> str | None:
        values = self._index.get(key.lower())
        return values[0] if values else default

    def getall(self, key: str) -> list[str]:
        return list(self._index.get(key.lower(), ()))

    def __getitem__(self, key: str) -> str:
        values = self._index.get(key.lower())
        if not values:
            raise KeyError(key)
        return values[0]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._index

    def keys(self) -> list[str]:
        seen: dict[str, None] = {}
        for k, _ in self.pairs:
            seen.setdefault(k, None)
        return list(seen)

    def as_dict(self) -> dict[str, str | list[str]]:
        out: dict[str, str | list[str]] = {}
        for k, v in self.pairs:
            if k in out:
                prev = out[k]
                if isinstance(prev, list):
                    prev.append(v)
                else:
                    out[k] = [prev, v]
            else:
                out[k] = v
        return out

    @property
    def event(self) -> str | None:
        return self.get("Event")

    @property
    def response(self) -> str | None:
        return self.get("Response")

    @property
    def action(self) -> str | None:
        return self.get("Action")

    @property
    def action_id(self) -> str | None:
        return self.get("ActionID")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AmiMessage):
            return NotImplemented
        return self.pairs == other.pairs and self.content == other.content

    def __hash__(self) -> int:
        return hash((self.pairs, self.content))

    def __repr__(self) -> str:
        return f"AmiMessage({list(self.pairs)!r})"


class AmiParser:
    """Incremental AMI stream parser.

    :meth:`feed` bytes, then iterate :meth:`events` for :class:`Banner` (first line, when
    ``expect_banner``) and :class:`AmiMessage` in arrival order. Empty messages (stray blank
    lines) are skipped. Invalid UTF-8 is replaced (U+FFFD), whole message at a time.

    :meth:`events` raises :class:`AmiProtocolError` if the first line is not the banner, a line
    exceeds ``max_line`` bytes, or a message exceeds ``max_message`` bytes.
    """

    def __init__(
        self,
        *,
        expect_banner: bool = True,
        max_line: int = DEFAULT_MAX_INPUT_LINE,
        max_message: int = DEFAULT_MAX_MESSAGE,
    ) -> None:
        self.max_line = max_line
        self.max_message = max_message
        self._need_banner = expect_banner
        self._buf = bytearray()
        self._scan = 0
        self._lines: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes | bytearray) -> None:
        self._buf += data

    def events(self) -> Iterator[AmiMessage | Banner]:
        while True:
            nl = self._buf.find(b"\n", self._scan)
            if nl < 0:
                self._scan = len(self._buf)
                if len(self._buf) > self.max_line:
                    raise AmiProtocolError(
                        f"AMI line longer than {self.max_line} bytes (no newline yet)"
                    )
                return
            raw = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            self._scan = 0
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if len(raw) > self.max_line:
                raise AmiProtocolError(f"AMI line of {len(raw)} bytes > {self.max_line}")
            if self._need_banner:
                self._need_banner = False
                if not raw.startswith(BANNER_PREFIX):
                    raise AmiProtocolError(
                        f"expected the AMI banner 'Asterisk Call Manager/<version>', got "
                        f"{raw[:80]!r}"
                    )
                text = raw.decode("utf-8", errors="replace")
                yield Banner(version=text.partition("/")[2].strip(), raw=text)
                continue
            if raw:
                self._size += len(raw) + 2
                if self._size > self.max_message:
                    raise AmiProtocolError(
                        f"AMI message larger than {self.max_message} bytes without a blank line"
                    )
                self._lines.append(raw)
                continue
            if not self._lines:
                continue
            lines, self._lines, self._size = self._lines, [], 0
            yield _decode_message(lines)


def _decode_message(lines: list[bytes]) -> AmiMessage:
    text = b"\n".join(lines).decode("utf-8", errors="replace")
    pairs: list[tuple[str, str]] = []
    content: list[str] = []
    for line in text.split("\n"):
        key, sep, value = line.partition(":")
        if sep and key and " " not in key:
            pairs.append((key, value[1:] if value.startswith(" ") else value))
        else:
            content.append(line)
    return AmiMessage(pairs, content)


# --------------------------------------------------------------------------- encoding

_UNSAFE = {"\r": "carriage return (CR)", "\n": "line feed (LF)", "\x00": "NUL byte"}


def sanitize_value(value: object) -> str:
    """Return ``value`` as an AMI header value, or raise :class:`UnsafeValueError`.

    This is the one check for every value written to AMI. ``str`` passes through, ``int`` and
    ``float`` are formatted, ``bool`` becomes ``true``/``false``. CR, LF and NUL are refused
    (header and action injection); so is a value longer than the 1024-byte line limit.
    Raises ``TypeError`` for other types (``None`` included: omit the header instead).
    """
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, int | float):
        text = str(value)
    else:
        raise TypeError(
            f"AMI header value must be str, int, float or bool, not {type(value).__name__}"
        )
    for ch, name in _UNSAFE.items():
        idx = text.find(ch)
        if idx >= 0:
            raise UnsafeValueError(
                f"AMI header value contains a {name} at index {idx}; refusing it: it would "
                "inject headers or a whole second action"
            )
    if len(text.encode("utf-8", "replace")) > MAX_LINE_BYTES:
        raise UnsafeValueError(
            f"AMI header value is over the {MAX_LINE_BYTES}-byte line limit "
            "(Asterisk discards longer lines)"
        )
    return text


def sanitize_key(key: str) -> str:
    """Return ``key`` if it is a plain header name (``[A-Za-z0-9_-]+``), else raise
    :class:`UnsafeValueError`."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise UnsafeValueError(f"AMI header name {key!r} must match ^[A-Za-z0-9_-]+$")
    return key


def encode_message(
    pairs: Iterable[tuple[str, object]] | Mapping[str, object],
) -> bytes:
    """Encode an action (or, for fake servers, a response/event) as CRLF lines plus a blank
    line. A list/tuple value becomes a repeated header. Every key goes through
    :func:`sanitize_key` and every value through :func:`sanitize_value`.

    Raises :class:`UnsafeValueError` for an unsafe key or value, a line over
    :data:`MAX_LINE_BYTES` bytes (CRLF included), or more than :data:`MAX_ACTION_HEADERS`
    headers; ``TypeError`` for an unsupported value type. Nothing is returned on error, so
    nothing partial can be sent.
    """
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    out: list[bytes] = []
    for key, value in items:
        values = value if isinstance(value, list | tuple) else (value,)
        k = sanitize_key(key)
        for v in values:
            line = f"{k}: {sanitize_value(v)}\r\n".encode("utf-8", "replace")  # lone surrogates
            if len(line) > MAX_LINE_BYTES:
                raise UnsafeValueError(
                    f"AMI header {k!r} line is {len(line)} bytes, over the "
                    f"{MAX_LINE_BYTES}-byte limit"
                )
            out.append(line)
    if len(out) > MAX_ACTION_HEADERS:
        raise UnsafeValueError(
            f"AMI message has {len(out)} headers, over Asterisk's {MAX_ACTION_HEADERS}"
        )
    out.append(b"\r\n")
    return b"".join(out)
