"""Supervised asyncio AMI client on panoramisk 1.4's ``Manager``, wrapped per telephony.md D.2.

What panoramisk still does here: ``Action`` objects (ActionID, collecting list responses such as
CoreShowChannels until ``...Complete``), ``Message``, response matching by ActionID, and event
dispatch (``Manager.register_event``). What it cannot be made to do safely, and is therefore
done on top of :mod:`fastagi_server.ami.codec` in this module:

* **Framing and encoding** (:class:`_CodecProtocol`): ``AMIProtocol.data_received`` decodes each
  TCP chunk with ``errors="ignore"`` (a UTF-8 character split across reads is lost) and
  ``send`` writes values raw (CRLF in a value injects headers or a whole action). The codec's
  parser and :func:`~fastagi_server.ami.codec.encode_message` replace both.
* **Connection supervision** (:meth:`AmiClient._supervise`): ``Manager.connect`` retries at a
  fixed interval forever (bad password included) from fire-and-forget ``call_later`` callbacks,
  never checks the Pong, and parks in-flight actions to re-send them after the next
  ``FullyBooted`` (never, without the ``system`` class). Here: connect + login with exponential
  back-off, a Ping/Pong watchdog that reconnects a half-open peer, a CoreShowChannels resync
  after every login, and in-flight actions failing with :class:`AmiConnectionLost` (a parked
  Redirect or Hangup replayed minutes later is worse than an error).
* **Timeouts**: every action is bounded by ``cfg.action_timeout``.

Everything panoramisk creates (``Manager``, ``Action`` futures) is created inside the running
loop with ``loop=asyncio.get_running_loop()``. ``panoramisk.testing`` is never imported (it sets
``EOL='\\n'`` process-wide).

Events are only *queued* by the panoramisk callback (bounded queues, oldest dropped and counted
when full); consumers read ``async for ev in ami.events()`` or their own :meth:`subscribe`
queue. Besides :class:`AmiEvent`, the queues carry :class:`Resynced`, :class:`Disconnected` and
:class:`ConnectFailed`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.manager import Manager
from panoramisk.message import Message

from fastagi_server.ami.codec import (
    AmiMessage,
    AmiParser,
    AmiProtocolError,
    Banner,
    encode_message,
    sanitize_key,
    sanitize_value,
)
from media_sidecar.config.schema import AmiConfig

__all__ = [
    "EVENTS_OF_INTEREST",
    "AmiActionError",
    "AmiClient",
    "AmiConnectionLost",
    "AmiError",
    "AmiEvent",
    "AmiLoginError",
    "AmiNotConnected",
    "AmiTimeout",
    "ConnectFailed",
    "Disconnected",
    "Resynced",
]

log = logging.getLogger(__name__)

EVENTS_OF_INTEREST = frozenset(
    {
        "Hangup",
        "HangupRequest",
        "SoftHangupRequest",
        "DTMFEnd",
        "BlindTransfer",
        "AttendedTransfer",
        "Newexten",
        "VarSet",
        "Newstate",
        "Newchannel",
        "UserEvent",
        "OriginateResponse",
        "FullyBooted",
        "Shutdown",
    }
)
"""Events delivered by default (``event_names=None`` delivers everything)."""

DEFAULT_QUEUE_SIZE = 1000


# --------------------------------------------------------------------------- errors


class AmiError(Exception):
    """Base of the AMI client errors."""


class AmiActionError(AmiError):
    """Asterisk answered ``Response: Error`` (``Channel does not exist: X``, ...)."""

    def __init__(self, action: str, message: str, response: AmiMessage | None = None) -> None:
        super().__init__(f"AMI {action} failed: {message}")
        self.action = action
        self.message = message
        self.response = response


class AmiTimeout(AmiError, TimeoutError):
    """No response within the action timeout (or no Pong within ``pong_timeout``)."""


class AmiNotConnected(AmiError):
    """Not logged in to AMI, and no connection came up within the action timeout."""


class AmiConnectionLost(AmiError, ConnectionError):
    """The connection dropped while the action waited for its response. The action may or may
    not have run in Asterisk."""


class AmiLoginError(AmiError):
    """Login refused (``Authentication failed``); retried with back-off by the supervisor."""


# --------------------------------------------------------------------------- events

_ID_PREFIX = {"BlindTransfer": "Transferer", "AttendedTransfer": "OrigTransferer"}


@dataclass(frozen=True, slots=True)
class AmiEvent:
    """One AMI event. ``channel``/``uniqueid``/``linkedid`` come from the channel snapshot
    (for BlindTransfer the ``Transferer*`` snapshot, for AttendedTransfer
    ``OrigTransferer*``). ``get``/``[]`` read any header case-insensitively; ``get("Event")``
    is the name, so the object can be used where a raw event dict is expected."""

    name: str
    channel: str
    uniqueid: str
    linkedid: str
    message: AmiMessage

    @classmethod
    def from_message(cls, msg: AmiMessage) -> AmiEvent:
        name = msg.get("Event") or ""
        prefix = _ID_PREFIX.get(name, "")
        return cls(
            name=name,
            channel=msg.get(prefix + "Channel") or msg.get("Channel") or "",
            uniqueid=msg.get(prefix + "Uniqueid") or msg.get("Uniqueid") or "",
            linkedid=msg.get(prefix + "Linkedid") or msg.get("Linkedid") or "",
            message=msg,
        )

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.message.get(key, default)

    def __getitem__(self, key: str) -> str:
        return self.message[key]

    @property
    def digit(self) -> str:
        """DTMFBegin/DTMFEnd ``Digit``."""
        return self.message.get("Digit") or ""

    @property
    def direction(self) -> str:
        """DTMF ``Direction``: ``Received`` or ``Sent``."""
        return self.message.get("Direction") or ""

    @property
    def cause(self) -> int | None:
        """Hangup/HangupRequest/SoftHangupRequest Q.850 ``Cause``."""
        value = self.message.get("Cause")
        return int(value) if value is not None and value.isdigit() else None


@dataclass(frozen=True, slots=True)
class Resynced:
    """After every login: the Uniqueids of all live channels (CoreShowChannels). Events during
    the gap were not replayed; reconcile against this. ``error`` is set (and ``uniqueids``
    empty) when the list could not be read, e.g. the AMI user lacks ``reporting``/``system``."""

    uniqueids: frozenset[str]
    error: str = ""


@dataclass(frozen=True, slots=True)
class Disconnected:
    """A logged-in session ended (``reason``: EOF, no Pong, Shutdown...). Reconnecting follows."""

    reason: str


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    """A connect/login attempt failed; the next one is in ``retry_in`` seconds."""

    reason: str
    retry_in: float
    attempt: int


ClientEvent = AmiEvent | Resynced | Disconnected | ConnectFailed


class _Closed:
    """Sentinel put on the queues when the client closes: ends ``events()`` iteration."""


_CLOSED = _Closed()


# --------------------------------------------------------------------------- panoramisk glue


class _CodecProtocol(AMIProtocol):
    """``AMIProtocol`` with the codec's framing and encoding (see the module docstring), and
    in-flight actions failed instead of parked when the connection closes."""

    lost_reason = "connection closed"
    closed: bool

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.parser = AmiParser()
        self.encoding = "utf-8"

    def send(self, data: Any, as_list: bool | None = None) -> asyncio.Future[Any]:
        if self.closed:
            raise AmiConnectionLost(f"AMI connection closed ({self.lost_reason})")
        items = list(data.items())
        items.sort(key=lambda kv: kv[0].lower() != "action")  # Action first, else as given
        payload = encode_message(items)  # raises UnsafeValueError before anything is sent
        data.as_list = as_list
        self.responses[data.id] = data
        if data.action_id:
            self.responses[data.action_id] = data
        self.transport.write(payload)
        return data.future  # type: ignore[no-any-return]

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        try:
            for item in self.parser.events():
                if isinstance(item, Banner):
                    self.version = item.version
                    continue
                message = Message(item.as_dict(), "\n".join(item.content))
                message.raw = item
                if "event" not in message and "response" not in message:
                    continue
                try:
                    self.handle_message(message)
                except Exception:  # a panoramisk bug must not kill the connection
                    log.exception("AMI message handling failed for %r", item)
        except AmiProtocolError as exc:
            log.error("AMI protocol error, closing: %s", exc)
            self.lost_reason = f"protocol error: {exc}"
            self.transport.close()

    def connection_lost(self, exc: Any) -> None:
        if not self.closed and self.lost_reason == _CodecProtocol.lost_reason:
            if isinstance(exc, Message):
                self.lost_reason = "Asterisk sent Shutdown"
            elif exc is not None:
                self.lost_reason = f"connection lost: {exc!r}"
            else:
                self.lost_reason = "Asterisk closed the connection"
        super().connection_lost(exc)

    def close(self) -> None:
        pending = {id(a): a for a in self.responses.values()}
        self.responses.clear()
        for action in pending.values():
            if not action.future.done():
                action.future.set_exception(AmiConnectionLost(f"AMI {self.lost_reason}"))
        if not self.closed:
            try:
                self.transport.close()
            finally:
                self.closed = True


class _SupervisedManager(Manager):
    """panoramisk ``Manager`` with its self-driving parts off: no auto-login, no pinger, no
    reconnect timer, no re-send of parked actions on FullyBooted. It only dispatches."""

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.callbacks.clear()  # drops send_awaiting_actions on FullyBooted
        self.patterns.clear()
        self.lost = asyncio.Event()

    def attach(self, protocol: _CodecProtocol) -> None:
        protocol.factory = self
        protocol.log = log
        protocol.config = self.config
        self.protocol = protocol
        self.responses = protocol.responses
        self._connected = True

    def ping(self) -> None:  # never scheduled; the client's watchdog pings
        return None

    def connection_lost(self, exc: Any) -> None:
        self._connected = False
        self.authenticated = False
        self.lost.set()

    def close(self) -> None:
        if self.protocol is not None:
            self.protocol.close()
        self._connected = False
        self.lost.set()


class _EventIterator:
    def __init__(self, queue: asyncio.Queue[Any]) -> None:
        self._queue = queue

    def __aiter__(self) -> _EventIterator:
        return self

    async def __anext__(self) -> ClientEvent:
        item = await self._queue.get()
        if item is _CLOSED:
            self._queue.put_nowait(_CLOSED)  # let other readers of this queue stop too
            raise StopAsyncIteration
        return item  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- client


class AmiClient:
    """Supervised AMI connection. Use as ``async with AmiClient(cfg) as ami:``.

    Entering starts the supervisor task in a TaskGroup and returns at once (AMI may be down;
    actions wait up to ``cfg.action_timeout`` for a connection). Leaving cancels the
    supervisor and closes the socket; iterators from :meth:`events` then stop. If the
    supervisor crashes (a bug), the body of the ``async with`` is cancelled and the error is
    raised from the exit in an ``ExceptionGroup``; an exception of the body itself propagates
    unchanged.

    ``event_names`` selects the events queued (``None`` = all); ``queue_size`` bounds each
    queue (when full the oldest item is dropped and counted in :attr:`dropped_events`);
    ``jitter`` is the fraction by which a back-off delay is randomly shortened (0 makes it
    deterministic).
    """

    def __init__(
        self,
        cfg: AmiConfig,
        *,
        event_names: Iterable[str] | None = EVENTS_OF_INTEREST,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        jitter: float = 0.1,
        events_mask: str = "on",
    ) -> None:
        self.cfg = cfg
        self.event_names = None if event_names is None else frozenset(event_names)
        self.queue_size = queue_size
        self.jitter = jitter
        self.events_mask = events_mask
        self.dropped_events = 0
        self.live_uniqueids: frozenset[str] = frozenset()
        """Uniqueids from the last resync (CoreShowChannels after login)."""
        self.last_error = ""
        self.logins = 0
        self._manager: _SupervisedManager | None = None
        self._ready: asyncio.Event | None = None
        self._queue: asyncio.Queue[Any] | None = None
        self._subscribers: list[asyncio.Queue[Any]] = []
        self._tg: asyncio.TaskGroup | None = None
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> AmiClient:
        """Start supervising. Raises ``UnsafeValueError`` at once for credentials holding
        CR/LF/NUL (a configuration error, not something to retry)."""
        sanitize_value(self.cfg.username)
        sanitize_value(self.cfg.secret)
        sanitize_value(self.events_mask)
        self._ready = asyncio.Event()
        self._queue = asyncio.Queue(self.queue_size)
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._task = self._tg.create_task(self._supervise(), name="ami-supervisor")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None and self._task is not None
        self._task.cancel()
        try:
            if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
                # Let the TaskGroup see the cancellation (it may be its own, after a crash).
                await self._tg.__aexit__(exc_type, exc, tb)
                return None
            # The body's own exception propagates unchanged, not wrapped in an ExceptionGroup.
            await self._tg.__aexit__(None, None, None)
            return None
        finally:
            self._drop_manager("client closed")
            for q in self._queues():
                self._put(q, _CLOSED)

    @property
    def connected(self) -> bool:
        """True while logged in (and the last Ping, if any, was answered in time)."""
        return self._ready is not None and self._ready.is_set()

    async def wait_connected(self) -> None:
        """Wait until logged in. Bound it with ``asyncio.timeout``."""
        assert self._ready is not None, "use `async with AmiClient(cfg)`"
        await self._ready.wait()

    # ------------------------------------------------------------------ events

    def events(self) -> _EventIterator:
        """Iterate the main event queue (created on enter, so nothing is missed between enter
        and the first iteration). Meant for one consumer; use :meth:`subscribe` for more.
        Ends when the client closes."""
        assert self._queue is not None, "use `async with AmiClient(cfg)`"
        return _EventIterator(self._queue)

    def subscribe(self, maxsize: int | None = None) -> asyncio.Queue[Any]:
        """A new bounded queue receiving every delivered event from now on (oldest dropped
        when full). Stop with :meth:`unsubscribe`."""
        q: asyncio.Queue[Any] = asyncio.Queue(maxsize or self.queue_size)
        self._subscribers.append(q)
        return q

    def unsubscribe(self, queue: asyncio.Queue[Any]) -> None:
        if queue in self._subscribers:
            self._subscribers.remove(queue)

    def _queues(self) -> list[asyncio.Queue[Any]]:
        return ([self._queue] if self._queue is not None else []) + self._subscribers

    def _put(self, q: asyncio.Queue[Any], item: Any) -> None:
        if q.full():
            try:
                q.get_nowait()
                self.dropped_events += 1
            except asyncio.QueueEmpty:
                pass
        q.put_nowait(item)

    def _publish(self, item: ClientEvent) -> None:
        for q in self._queues():
            self._put(q, item)

    def _on_event(self, manager: Manager, message: Message) -> None:
        """panoramisk callback: build the typed event and queue it. Never blocks or awaits
        (returning a coroutine would make panoramisk schedule it fire-and-forget)."""
        raw = getattr(message, "raw", None)
        if not isinstance(raw, AmiMessage):
            return
        name = raw.get("Event") or ""
        if self.event_names is not None and name not in self.event_names:
            return
        self._publish(AmiEvent.from_message(raw))

    # ------------------------------------------------------------------ supervision

    def _backoff(self, attempt: int) -> float:
        base = min(self.cfg.reconnect_max, self.cfg.reconnect_min * (2**attempt))
        return base * (1 - self.jitter * random.random())

    async def _supervise(self) -> None:
        attempt = 0
        while True:
            try:
                manager = await self._connect_and_login()
            except (OSError, AmiError) as exc:
                self.last_error = str(exc) or type(exc).__name__
                delay = self._backoff(attempt)
                attempt += 1
                log.warning(
                    "AMI %s:%d: %s; retry %d in %.2f s",
                    self.cfg.host,
                    self.cfg.port,
                    self.last_error,
                    attempt,
                    delay,
                )
                self._publish(ConnectFailed(self.last_error, delay, attempt))
                await asyncio.sleep(delay)
                continue
            attempt = 0
            reason = await self._run_session(manager)
            self.last_error = reason
            log.warning("AMI session ended: %s; reconnecting", reason)
            self._publish(Disconnected(reason))
            await asyncio.sleep(self._backoff(0))

    async def _connect_and_login(self) -> _SupervisedManager:
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        manager = _SupervisedManager(
            loop=loop, host=cfg.host, port=cfg.port, ping_delay=0, reconnect_timeout=0
        )
        manager.register_event("*", self._on_event)
        try:
            try:
                async with asyncio.timeout(cfg.action_timeout):
                    _, protocol = await loop.create_connection(_CodecProtocol, cfg.host, cfg.port)
            except TimeoutError:
                raise AmiTimeout(
                    f"TCP connect to {cfg.host}:{cfg.port} timed out after {cfg.action_timeout:g} s"
                ) from None
            manager.attach(protocol)
            resp = await self._send(
                manager,
                "Login",
                [("Username", cfg.username), ("Secret", cfg.secret), ("Events", self.events_mask)],
                cfg.action_timeout,
                check=False,
            )
            if resp[0].get("Response") != "Success":
                raise AmiLoginError(
                    f"login as {cfg.username!r} refused: {resp[0].get('Message') or resp[0]}"
                )
        except BaseException:
            manager.close()
            raise
        manager.authenticated = True
        self.logins += 1
        log.info("AMI logged in to %s:%d as %s", cfg.host, cfg.port, cfg.username)
        return manager

    async def _run_session(self, manager: _SupervisedManager) -> str:
        """Resync, then watch the connection; return why the session ended."""
        assert self._ready is not None
        self._manager = manager
        self._ready.set()
        reason = "client closed"  # if cancelled
        try:
            try:
                await self.resync()
            except AmiTimeout as exc:
                reason = f"resync timed out: {exc}"
            except (AmiConnectionLost, AmiNotConnected) as exc:
                reason = str(exc)
            else:
                reason = await self._watchdog(manager)
            return reason
        finally:
            self._ready.clear()
            self._drop_manager(reason)

    async def _watchdog(self, manager: _SupervisedManager) -> str:
        cfg = self.cfg
        while True:
            try:
                async with asyncio.timeout(cfg.ping_interval):
                    await manager.lost.wait()
            except TimeoutError:
                pass
            else:
                return self._lost_reason(manager)
            try:
                await self._send(manager, "Ping", [], cfg.pong_timeout)
            except AmiTimeout:
                return f"no Pong within {cfg.pong_timeout:g} s (half-open connection)"
            except AmiConnectionLost:
                return self._lost_reason(manager)
            except AmiActionError as exc:  # answered, so the peer is alive
                log.warning("AMI Ping answered with an error: %s", exc)

    @staticmethod
    def _lost_reason(manager: _SupervisedManager) -> str:
        proto = manager.protocol
        return getattr(proto, "lost_reason", "connection closed")

    def _drop_manager(self, reason: str) -> None:
        manager, self._manager = self._manager, None
        if manager is not None:
            proto = manager.protocol
            if proto is not None and not proto.closed:
                proto.lost_reason = reason
            manager.close()

    # ------------------------------------------------------------------ actions

    async def _send(
        self,
        manager: _SupervisedManager,
        action: str,
        fields: Iterable[tuple[str, object]],
        time_limit: float,
        *,
        check: bool = True,
        reported_limit: float | None = None,
    ) -> list[AmiMessage]:
        grouped: dict[str, Any] = {"Action": sanitize_value(action)}
        grouped["ActionID"] = Action.action_id_generator()
        for key, value in fields:
            if value is None:
                continue
            k = sanitize_key(key)
            if k.lower() in ("action", "actionid"):
                raise ValueError(f"{k} is set by the client")
            values = [
                sanitize_value(v) for v in (value if isinstance(value, list | tuple) else [value])
            ]
            if k in grouped:
                prev = grouped[k]
                grouped[k] = (prev if isinstance(prev, list) else [prev]) + values
            else:
                grouped[k] = values if len(values) > 1 else values[0]
        act = Action(grouped)
        protocol = manager.protocol
        if protocol is None or protocol.closed:
            raise AmiConnectionLost(f"AMI {self._lost_reason(manager)}")
        future = manager.send_action(act)
        try:
            async with asyncio.timeout(time_limit):
                result = await future
        except TimeoutError:
            limit = time_limit if reported_limit is None else reported_limit
            raise AmiTimeout(f"no response to AMI {action} within {limit:g} s") from None
        finally:
            protocol.responses.pop(act.id, None)
        messages = [m.raw for m in (result if isinstance(result, list) else [result])]
        if check and messages[0].get("Response") not in ("Success", "Goodbye", "Follows"):
            raise AmiActionError(action, messages[0].get("Message") or "error", messages[0])
        return messages

    async def send_action(
        self,
        action: str,
        fields: Mapping[str, object] | Iterable[tuple[str, object]] = (),
        *,
        time_limit: float | None = None,
    ) -> list[AmiMessage]:
        """Send one action and return ``[response, *list events]`` (list actions such as
        CoreShowChannels include their events and the ``...Complete`` event).

        Every key and value goes through the codec's ``sanitize_*`` before panoramisk sees
        it; a ``None`` value omits the header, a list repeats it. Waits for a connection, then
        the response, all within ``time_limit`` seconds (default ``cfg.action_timeout``).

        Raises ``UnsafeValueError`` (CR/LF/NUL, over-long line; nothing is sent),
        :class:`AmiNotConnected`, :class:`AmiTimeout`, :class:`AmiConnectionLost`, or
        :class:`AmiActionError` for ``Response: Error``. On cancellation the action may
        already have been sent; its late response is ignored.
        """
        assert self._ready is not None, "use `async with AmiClient(cfg)`"
        timeout = self.cfg.action_timeout if time_limit is None else time_limit
        items = list(fields.items()) if isinstance(fields, Mapping) else list(fields)
        # Validate before waiting for a connection, so a bad value fails fast.
        for key, value in items:
            sanitize_key(key)
            for v in value if isinstance(value, list | tuple) else [value]:
                if v is not None:
                    sanitize_value(v)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            raise AmiNotConnected(
                f"AMI {action}: not connected to {self.cfg.host}:{self.cfg.port} within "
                f"{timeout:g} s (last error: {self.last_error or 'none'})"
            ) from None
        manager = self._manager
        if manager is None:
            raise AmiNotConnected(f"AMI {action}: connection went away")
        return await self._send(
            manager, action, items, max(0.0, deadline - loop.time()), reported_limit=timeout
        )

    async def redirect(
        self,
        channel: str,
        context: str,
        exten: str,
        priority: str | int = 1,
        *,
        extra_channel: str | None = None,
        extra_context: str | None = None,
        extra_exten: str | None = None,
        extra_priority: str | int | None = None,
    ) -> AmiMessage:
        """Redirect (async goto) ``channel`` (name or Uniqueid); with ``extra_channel`` both
        legs of a bridge. A channel inside AGI gets ``HANGUP`` then continues at the target
        once the AGI socket closes. Raises :class:`AmiActionError` (``Channel does not
        exist: X``) and the errors of :meth:`send_action`."""
        resp = await self.send_action(
            "Redirect",
            [
                ("Channel", channel),
                ("Context", context),
                ("Exten", exten),
                ("Priority", priority),
                ("ExtraChannel", extra_channel),
                ("ExtraContext", extra_context),
                ("ExtraExten", extra_exten),
                ("ExtraPriority", extra_priority),
            ],
        )
        return resp[0]

    async def hangup(self, channel: str, cause: int | None = None) -> AmiMessage:
        """Hang up ``channel`` (name or Uniqueid) with an optional Q.850 ``cause``. Raises
        :class:`AmiActionError` (``No such channel``) and the errors of :meth:`send_action`."""
        resp = await self.send_action("Hangup", [("Channel", channel), ("Cause", cause)])
        return resp[0]

    async def setvar(self, channel: str | None, variable: str, value: str) -> AmiMessage:
        """Set a channel variable (``channel=None``: a global). Raises like :meth:`send_action`."""
        resp = await self.send_action(
            "Setvar", [("Channel", channel), ("Variable", variable), ("Value", value)]
        )
        return resp[0]

    async def getvar(self, channel: str | None, variable: str) -> str | None:
        """Read a channel variable or function (``CHANNEL(state)``). Asterisk answers an empty
        ``Value`` for unset and empty variables alike: both give ``None``."""
        resp = await self.send_action("Getvar", [("Channel", channel), ("Variable", variable)])
        value = resp[0].get("Value")
        return value or None

    async def ping(self) -> float:
        """Send Ping; return the round-trip time in seconds. Raises like :meth:`send_action`."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        await self.send_action("Ping")
        return loop.time() - start

    async def resync(self) -> frozenset[str]:
        """List live channels (CoreShowChannels), store them in :attr:`live_uniqueids`,
        publish :class:`Resynced` and return the Uniqueids. An error response is published as
        ``Resynced(error=...)`` and returns the previous set; timeouts and connection loss
        raise."""
        try:
            messages = await self.send_action("CoreShowChannels")
        except AmiActionError as exc:
            log.warning("AMI resync impossible: %s", exc)
            self._publish(Resynced(frozenset(), error=str(exc)))
            return self.live_uniqueids
        ids = frozenset(
            m.get("Uniqueid") or ""
            for m in messages[1:]
            if m.get("Event") == "CoreShowChannel" and m.get("Uniqueid")
        )
        self.live_uniqueids = ids
        self._publish(Resynced(ids))
        return ids
