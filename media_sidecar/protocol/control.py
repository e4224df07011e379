"""The control link between the FastAGI server and the sidecar: versioned JSON messages.

One WebSocket connection (text frames, one JSON object each) carries every call's messages;
every message except ``hello`` names its call by ``uuid``. This module is pure: it turns
messages into JSON text and back and rejects anything malformed with :class:`ControlError`.

FastAGI server -> sidecar: ``hello``, ``offer``, ``dtmf``, ``hangup``, ``transfer_result``,
``outcome``, ``stats``, ``watch_load``, ``withdraw``.
Sidecar -> FastAGI server: ``hello``, ``accept``, ``refuse``, ``transfer_request``, ``ended``,
``load``.

Versioning: ``hello`` carries :data:`PROTOCOL_VERSION` and each side refuses another version.
A new message type is a compatible addition and keeps the version: a peer that does not know
it fails to decode it, logs it and ignores it, and the link stays up (both ends already do
this). A new field in an existing message is not compatible (unknown fields are refused), nor
is a changed meaning; those bump the version. One exception keeps old peers working: a field
listed in :data:`OPTIONAL_FIELDS` is left out of the JSON while it holds its default, and a
sender sets it only for a peer that has shown it knows it.

Load (placement across media workers): after ``hello`` the FastAGI side sends ``watch_load``;
a sidecar that knows it answers with a ``load`` report at once, right after every ``accept``,
and within :data:`LOAD_REPORT_SECONDS` of any other change (a call over, an offer claimed or
expired, the drain). An old sidecar logs and ignores ``watch_load``, sends no ``load``, and the
FastAGI side then counts that worker's load itself (the calls it placed there). A sidecar
that has sent ``load`` knows ``offer.worker`` (added with ``load``).

Withdrawal: an accepted offer holds one of the worker's ``sidecar.max_calls`` slots until its
AudioSocket connection claims it or ``sidecar.offer_ttl`` passes. When the FastAGI side knows
the connection will never come (``EXEC AudioSocket`` or ``Dial`` returned without the worker's
``ended``, or the AGI session ended before that), it sends ``withdraw`` at once and the worker
frees the slot (a call already connected is left alone: ``withdraw`` only drops a pending
offer). Without it a burst of failed connects (more than ``max_calls`` within ``offer_ttl``)
made the worker refuse every call. An older sidecar logs and ignores ``withdraw``; it still
drops the offer on the later ``outcome`` (or ``hangup``), as it always did.

Either side that restarts loses only its own calls: offers live in the sidecar, the AGI
connections in the FastAGI server, and the link is re-established by the FastAGI side.
"""

from __future__ import annotations

import json
import typing
import uuid as uuidlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

PROTOCOL_VERSION = 1
"""1 since the first release; ``outcome`` was added without a bump (see above)."""
MAX_MESSAGE_BYTES = 64 * 1024

LOAD_REPORT_SECONDS = 1.0
"""A sidecar reports a changed load (other than an accepted offer) at most this late."""

OUTCOME_WAIT_SECONDS = 6.0
"""How long the sidecar holds a finished call's record for the control plane's ``outcome``.

It must exceed the FastAGI side's own worst case from the end of the media session to the
``outcome`` it sends: up to 1 s waiting for the sidecar's ``ended`` (handler
``VERDICT_WAIT_SECONDS``), the outcome variables written over AGI, then, when AGI saw
``HANGUP``, up to 3 s for AMI to tell a hangup from a redirect (calls
``DISPOSITION_WAIT_SECONDS``), which Asterisk reports only after the AGI socket closed. That is
about 4 s; 2 s of margin covers a loaded host. A unit test keeps the two sides in step."""


class ControlError(ValueError):
    """A malformed or unsupported control-link message."""


@dataclass(frozen=True, slots=True)
class CallContext:
    """What the control plane knows about the call, offered to the sidecar."""

    channel: str = ""
    uniqueid: str = ""
    linkedid: str = ""
    callerid: str = ""
    calleridname: str = ""
    dnid: str = ""
    extension: str = ""
    context: str = ""
    language: str = ""
    script: str = ""
    query: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    """AI_VAR_* channel variables (prefix removed) and other AI_* inputs."""


@dataclass(frozen=True, slots=True)
class Hello:
    TYPE: ClassVar[str] = "hello"
    role: str
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class Offer:
    TYPE: ClassVar[str] = "offer"
    uuid: str
    assistant: str
    context: CallContext = CallContext()
    ami: bool = False
    """Whether the control plane has a live AMI connection (transfers by Redirect)."""
    worker: str = ""
    """The media worker the call is placed on (its index for ``serve``'s local workers); a
    sidecar started as another worker refuses it. Optional (:data:`OPTIONAL_FIELDS`): sent
    only to a sidecar that reports ``load``."""


@dataclass(frozen=True, slots=True)
class Accept:
    TYPE: ClassVar[str] = "accept"
    uuid: str


@dataclass(frozen=True, slots=True)
class Refuse:
    TYPE: ClassVar[str] = "refuse"
    uuid: str
    reason: str


DRAINING = "draining"
"""The reason of a call refused because the product is stopping: a ``refuse`` from a draining
sidecar, and the ``AI_REASON`` the FastAGI side sets (so the dialplan can tell it apart)."""

BUSY = "busy"
"""A ``refuse`` reason starts with this when the worker is at ``sidecar.max_calls`` (``busy:
at the limit of N calls``; before it, ``sidecar is at its limit of N calls``). The FastAGI side
tries the next worker; when every worker is full it sets ``AI_REASON=busy``."""


@dataclass(frozen=True, slots=True)
class Dtmf:
    TYPE: ClassVar[str] = "dtmf"
    uuid: str
    digit: str
    source: str = "ami"


@dataclass(frozen=True, slots=True)
class Hangup:
    """The channel hung up (AMI Hangup event): end the media session now."""

    TYPE: ClassVar[str] = "hangup"
    uuid: str
    cause: str = ""


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """The assistant asks for a transfer; the control plane performs it (AMI Redirect)."""

    TYPE: ClassVar[str] = "transfer_request"
    uuid: str
    destination: str
    context: str
    exten: str
    priority: str


@dataclass(frozen=True, slots=True)
class TransferResult:
    TYPE: ClassVar[str] = "transfer_result"
    uuid: str
    ok: bool
    method: str = "redirect"
    """goto (hand the call back; the control plane sends the channel to the destination),
    redirect (AMI did it), dialplan (hand back with AI_STATUS=TRANSFERRED for the dialplan to
    route) or refused."""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Ended:
    """The sidecar's verdict when a call's media session ends."""

    TYPE: ClassVar[str] = "ended"
    uuid: str
    status: str
    """COMPLETED, TRANSFERRED, CALLER_HANGUP or FAILED."""
    transfer_to: str = ""
    transfer_method: str = ""
    reason: str = ""
    summary: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the control plane finally set on the channel: exactly the ``AI_STATUS``,
    ``AI_REASON`` and ``AI_TRANSFER_TO`` values, including its own late verdict (an AMI
    Redirect by a third party is told from a hangup only after the AGI socket closed). Sent
    once per offered call; the sidecar writes the call record with it."""

    TYPE: ClassVar[str] = "outcome"
    uuid: str
    status: str
    reason: str = ""
    transfer_to: str = ""


@dataclass(frozen=True, slots=True)
class Withdraw:
    """FastAGI -> sidecar: the call's AudioSocket connection will never come (``EXEC
    AudioSocket`` failed, or the AGI session ended first): forget the pending offer and free
    its slot. A no-op for a call that already connected, or an offer already gone."""

    TYPE: ClassVar[str] = "withdraw"
    uuid: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Stats:
    """The control plane's own state and counters, for the sidecar's ``/health`` and
    ``/metrics`` (sent when the link comes up, then every few seconds). Counters are
    cumulative since the FastAGI process started; the only message without a ``uuid``
    besides ``hello``. The receiver checks the types of the values it uses."""

    TYPE: ClassVar[str] = "stats"
    version: str = ""
    uptime: float = 0.0
    ami: str = "off"
    """off (not configured: degraded mode), up or down."""
    ami_reconnects: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    """Offers that ended at the control plane without the sidecar's answer, by reason."""
    agi_connections: int = 0
    draining: bool = False


@dataclass(frozen=True, slots=True)
class WatchLoad:
    """FastAGI -> sidecar: send ``load`` reports on this link (see the module doc)."""

    TYPE: ClassVar[str] = "watch_load"


@dataclass(frozen=True, slots=True)
class Load:
    """Sidecar -> FastAGI: how busy this media worker is, for placing calls. The load a
    placement compares is ``calls + offers``."""

    TYPE: ClassVar[str] = "load"
    worker: str = ""
    """The worker's own name (``--worker``; its index under ``serve``)."""
    calls: int = 0
    """Calls whose media session is running."""
    offers: int = 0
    """Offers accepted whose AudioSocket has not connected yet."""
    max_calls: int = 0
    """``sidecar.max_calls``: offers past it are refused."""
    draining: bool = False


ControlMessage = (
    Hello | Offer | Accept | Refuse | Dtmf | Hangup | TransferRequest | TransferResult | Ended
    | Outcome | Stats | WatchLoad | Load | Withdraw
)
_TYPES: dict[str, type[Any]] = {
    cls.TYPE: cls
    for cls in (Hello, Offer, Accept, Refuse, Dtmf, Hangup, TransferRequest, TransferResult, Ended,
                Outcome, Stats, WatchLoad, Load, Withdraw)
}

OPTIONAL_FIELDS: dict[str, tuple[str, ...]] = {"offer": ("worker",)}
"""Fields added to an existing message after version 1: left out of the JSON while they hold
their default, so a peer that predates them still decodes the message."""


def encode(msg: ControlMessage) -> str:
    """JSON text for one message."""
    body = asdict(msg)
    for name in OPTIONAL_FIELDS.get(msg.TYPE, ()):
        if body.get(name) in ("", None):
            body.pop(name, None)
    body["type"] = msg.TYPE
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: a text frame could not carry it raw
            text = json.dumps(body, separators=(",", ":"))
    return text


def decode(text: str | bytes) -> ControlMessage:
    """Parse one message. Raises ControlError for anything malformed or unknown."""
    if len(text) > MAX_MESSAGE_BYTES:
        raise ControlError(f"control message of {len(text)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        body = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ControlError(f"control message is not JSON: {exc}") from None
    except RecursionError:  # 64 KiB of "[" nests deeper than the interpreter allows
        raise ControlError("control message is nested too deeply") from None
    if not isinstance(body, dict):
        raise ControlError("control message must be a JSON object")
    kind = body.pop("type", None)
    cls = _TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ControlError(f"unknown control message type {kind!r}")
    names = {f.name: f for f in fields(cls)}
    unknown = set(body) - set(names)
    if unknown:
        raise ControlError(f"{kind}: unknown fields {sorted(unknown)}")
    if "context" in body and cls is Offer:
        ctx = body["context"]
        if not isinstance(ctx, dict):
            raise ControlError("offer.context must be an object")
        cnames = {f.name for f in fields(CallContext)}
        if set(ctx) - cnames:
            raise ControlError(f"offer.context: unknown fields {sorted(set(ctx) - cnames)}")
        body["context"] = CallContext(**ctx)
    try:
        msg = cls(**body)
    except TypeError as exc:
        raise ControlError(f"{kind}: {exc}") from None
    _check(msg)
    return msg


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _type_ok(value: Any, tp: Any) -> bool:
    """Whether a decoded JSON value holds the field's declared type (an int is a float; a
    bool is not a number)."""
    origin = typing.get_origin(tp)
    if origin is dict:
        kt, vt = typing.get_args(tp)
        return isinstance(value, dict) and all(
            _type_ok(k, kt) and _type_ok(v, vt) for k, v in value.items())
    if origin is list:
        (vt,) = typing.get_args(tp)
        return isinstance(value, list) and all(_type_ok(v, vt) for v in value)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return not isinstance(tp, type) or isinstance(value, tp)


def _check_types(obj: Any, where: str) -> None:
    hints = _hints(type(obj))
    for f in fields(obj):
        v = getattr(obj, f.name)
        if not _type_ok(v, hints[f.name]):
            raise ControlError(f"{where}.{f.name} is not of type {hints[f.name]}: {v!r:.80}")


def _check(msg: Any) -> None:
    hints = _hints(type(msg))
    for f in fields(msg):
        v = getattr(msg, f.name)
        if isinstance(v, CallContext):
            _check_types(v, f"{msg.TYPE}.{f.name}")
        elif not _type_ok(v, hints[f.name]):
            raise ControlError(f"{msg.TYPE}: {f.name} is not of type {hints[f.name]}: {v!r:.80}")
        if f.name == "uuid":
            try:
                uuidlib.UUID(v)
            except (TypeError, ValueError, AttributeError):
                raise ControlError(f"{msg.TYPE}: uuid {v!r} is not a UUID") from None
    if isinstance(msg, Hello) and msg.version != PROTOCOL_VERSION:
        raise ControlError(
            f"control link version {msg.version} is not supported (this side speaks "
            f"{PROTOCOL_VERSION})"
        )
