"""A fake AMI server in trio, speaking Asterisk 22's wire format (telephony.md C, and the
``*_ami.log`` captures) for tests and the Asterisk emulator.

It keeps a registry of channels (:class:`FakeChannel`) that Redirect, Hangup, Setvar, Getvar
and CoreShowChannels act on, records every action received (:attr:`FakeAmiServer.actions`),
pushes events with :meth:`FakeAmiServer.emit` in the exact header order of the captures
(:func:`channel_snapshot`), and has knobs for failure tests: stop answering Pings (a half-open
peer), drop every connection, reject logins.

Usage::

    server = FakeAmiServer(username="agent", secret="s3cret")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)

The emulator registers ``server.on_redirect(channel, context, exten, priority)`` and
``server.on_hangup(channel)`` (plain functions or async functions; async ones run in the
server's nursery) to make the AGI side see ``HANGUP``.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from fastagi_server.ami.codec import AmiMessage, AmiParser, AmiProtocolError, encode_message

__all__ = [
    "EVENT_CLASSES",
    "FakeAmiServer",
    "FakeChannel",
    "channel_snapshot",
    "open_fake_ami_server",
]

log = logging.getLogger(__name__)

Pairs = list[tuple[str, str]]
FieldsArg = Iterable[tuple[str, object]] | Mapping[str, object]

STATE_DESC = {
    0: "Down",
    1: "Rsrvd",
    2: "OffHook",
    3: "Dialing",
    4: "Ring",
    5: "Ringing",
    6: "Up",
    7: "Busy",
    8: "Dialing Offhook",
    9: "Pre-ring",
}

EVENT_CLASSES: dict[str, str] = {
    "FullyBooted": "system",
    "Shutdown": "system",
    "Reload": "system",
    "DTMFBegin": "dtmf",
    "DTMFEnd": "dtmf",
    "VarSet": "dialplan",
    "Newexten": "dialplan",
    "UserEvent": "user",
    "AGIExecStart": "agi",
    "AGIExecEnd": "agi",
    "SuccessfulAuth": "security",
}
"""Event -> class for the ``Privilege:`` header; anything else is ``call``."""

CLASS_ORDER = (
    "system call log verbose command agent user config dtmf reporting cdr dialplan originate "
    "agi cc aoc test security message".split()
)
"""Asterisk's ``perms[]`` order (how ``manager show user`` lists a user's classes)."""
ALL_CLASSES = frozenset(CLASS_ORDER)

ACTION_PRIVILEGES: dict[str, frozenset[str]] = {
    "redirect": frozenset({"call"}),
    "setvar": frozenset({"call"}),
    "playdtmf": frozenset({"call"}),
    "getvar": frozenset({"call", "reporting"}),
    "hangup": frozenset({"system", "call"}),
    "coreshowchannels": frozenset({"system", "reporting"}),
    "coresettings": frozenset({"system", "reporting"}),
    "modulecheck": frozenset({"system"}),
    "command": frozenset({"command"}),
    "userevent": frozenset({"user"}),
    "originate": frozenset({"originate"}),
}
"""Write classes that allow an action (any one of them), as ``main/manager.c`` registers them
(Asterisk 22.10.1); actions not listed need none (Login, Ping, Events, Logoff, ...)."""

AUDIOSOCKET_MODULES = frozenset({"app_audiosocket", "chan_audiosocket", "res_audiosocket"})

Q850_TEXT = {
    0: "Unknown",
    16: "Normal Clearing",
    17: "User busy",
    19: "No user responding",
    21: "Call Rejected",
    127: "Interworking, unspecified",
}


@dataclass
class FakeChannel:
    """A channel in the fake server's registry. ``linkedid`` defaults to ``uniqueid``."""

    name: str
    uniqueid: str
    linkedid: str = ""
    state: int = 6
    callerid_num: str = "<unknown>"
    callerid_name: str = "<unknown>"
    connected_num: str = "<unknown>"
    connected_name: str = "<unknown>"
    language: str = "en"
    accountcode: str = ""
    context: str = "default"
    exten: str = "s"
    priority: str = "1"
    application: str = ""
    application_data: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    hangup_cause: int | None = None

    def __post_init__(self) -> None:
        if not self.linkedid:
            self.linkedid = self.uniqueid

    @property
    def state_desc(self) -> str:
        return STATE_DESC.get(self.state, "Unknown")


def channel_snapshot(channel: FakeChannel, prefix: str = "") -> Pairs:
    """The channel snapshot headers in Asterisk's order (``ast_manager_build_channel_state_
    string_prefix``): Channel, ChannelState, ChannelStateDesc, CallerIDNum, CallerIDName,
    ConnectedLineNum, ConnectedLineName, Language, AccountCode, Context, Exten, Priority,
    Uniqueid, Linkedid -- each with ``prefix`` (``Transferer``, ``LocalOne``, ...)."""
    c = channel
    return [
        (prefix + "Channel", c.name),
        (prefix + "ChannelState", str(c.state)),
        (prefix + "ChannelStateDesc", c.state_desc),
        (prefix + "CallerIDNum", c.callerid_num),
        (prefix + "CallerIDName", c.callerid_name),
        (prefix + "ConnectedLineNum", c.connected_num),
        (prefix + "ConnectedLineName", c.connected_name),
        (prefix + "Language", c.language),
        (prefix + "AccountCode", c.accountcode),
        (prefix + "Context", c.context),
        (prefix + "Exten", c.exten),
        (prefix + "Priority", str(c.priority)),
        (prefix + "Uniqueid", c.uniqueid),
        (prefix + "Linkedid", c.linkedid),
    ]


def _pairs(fields: FieldsArg | None) -> Pairs:
    if fields is None:
        return []
    items = fields.items() if isinstance(fields, Mapping) else fields
    return [(k, str(v)) for k, v in items]


class _Session:
    def __init__(self, server: FakeAmiServer, stream: trio.abc.Stream) -> None:
        self.server = server
        self.stream = stream
        self.send, self.recv = trio.open_memory_channel[bytes | None](1000)
        self.authenticated = False
        self.username = ""
        self.classes: frozenset[str] = ALL_CLASSES
        self.challenge = ""
        self.closing = False
        self.cancel_scope = trio.CancelScope()
        self.dropped = 0

    def queue(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.send.send_nowait(data)
        except trio.WouldBlock:
            # Asterisk disconnects a client that stops reading (writetimeout); we count.
            self.dropped += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def message(self, pairs: Pairs) -> None:
        self.queue(encode_message(pairs))

    def close_after_flush(self) -> None:
        if not self.closing:
            try:
                self.send.send_nowait(None)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self.cancel_scope.cancel()
            self.closing = True


Hook = Callable[..., Any]


class FakeAmiServer:
    """A protocol-faithful fake AMI (Asterisk 22, AMI 11.0.0) on 127.0.0.1.

    Knobs (plain attributes, safe to flip at any time): ``answer_pings`` (False = half-open
    peer: TCP stays up, Pings get no reply), ``reject_logins`` (every login fails like a bad
    secret), ``bad_login_delay`` (Asterisk sleeps 1 s before "Authentication failed").
    Call :meth:`drop_connections` to cut every client at once.

    The user's classes: ``read_classes`` (events it receives, ANDed with its event mask) and
    ``write_classes`` (actions it may run, per :data:`ACTION_PRIVILEGES`; any other gets
    ``Permission denied`` as from Asterisk). ``modules`` are the loaded modules ``ModuleCheck``
    and ``module show like`` report; ``asterisk_version`` is what ``CoreSettings`` says.

    Records: ``actions`` (every action as ``AmiMessage.as_dict()``), ``received``
    (the :class:`AmiMessage` objects), ``connections``, ``login_attempts``, ``logins``.

    Hooks: ``on_redirect(channel, context, exten, priority)`` runs after a successful Redirect
    (per leg); ``on_hangup(channel)`` runs after the Hangup action instead of the default, which
    removes the channel and emits ``Hangup`` at once (call :meth:`hangup_channel` from the hook
    when the emulated channel really ends: for a channel in AGI, Asterisk emits the events only
    after the AGI socket closes). ``channel`` is the :class:`FakeChannel`.

    Not thread-safe: from another thread, call methods through ``trio.from_thread.run_sync``.
    """

    def __init__(
        self,
        *,
        username: str = "agent",
        secret: str = "agentsecret",
        host: str = "127.0.0.1",
        port: int = 0,
        version: str = "11.0.0",
        bad_login_delay: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.username = username
        self.secret = secret
        self.host = host
        self.port = port
        self.version = version
        self.bad_login_delay = bad_login_delay
        self.clock = clock
        self.answer_pings = True
        self.reject_logins = False
        self.read_classes: frozenset[str] = ALL_CLASSES
        self.write_classes: frozenset[str] = ALL_CLASSES
        self.modules: set[str] = set(AUDIOSOCKET_MODULES | {"res_agi"})
        self.asterisk_version = "22.10.1"
        self.channels: dict[str, FakeChannel] = {}
        self.global_vars: dict[str, str] = {}
        self.actions: list[dict[str, str | list[str]]] = []
        self.received: list[AmiMessage] = []
        self.connections = 0
        self.login_attempts = 0
        self.logins = 0
        self.on_redirect: Hook | None = None
        self.on_hangup: Hook | None = None
        self._sessions: set[_Session] = set()
        self._action_seen = trio.Event()
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------------ running

    async def serve(self, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled; ``task_status.started(port)`` with the bound port.

        Cancellation closes every client connection.
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, self.handle_stream, self.port, host=self.host)
            )
            self.port = listeners[0].socket.getsockname()[1]
            task_status.started(self.port)

    async def wait_for_action(self, name: str, **fields: str) -> dict[str, str | list[str]]:
        """Wait until an action ``name`` whose fields include ``fields`` has been received
        (already received counts); returns it. Bound it with ``trio.fail_after``."""
        while True:
            for a in self.actions:
                if a.get("Action") == name and all(a.get(k) == v for k, v in fields.items()):
                    return a
            await self._action_seen.wait()

    @property
    def sessions(self) -> int:
        """Connected clients (authenticated or not)."""
        return len(self._sessions)

    def drop_connections(self) -> int:
        """Close every client connection now (as a restart or TCP reset would); return how many."""
        n = len(self._sessions)
        for s in list(self._sessions):
            s.cancel_scope.cancel()
        return n

    # ------------------------------------------------------------------ registry

    def add_channel(self, name: str, uniqueid: str, **kw: Any) -> FakeChannel:
        """Register a channel (see :class:`FakeChannel` for the fields) and return it."""
        ch = FakeChannel(name=name, uniqueid=uniqueid, **kw)
        self.channels[name] = ch
        return ch

    def find_channel(self, name_or_uniqueid: str) -> FakeChannel | None:
        """Like ``ast_channel_get_by_name``: a channel name or a Uniqueid."""
        ch = self.channels.get(name_or_uniqueid)
        if ch is not None:
            return ch
        for c in self.channels.values():
            if c.uniqueid == name_or_uniqueid:
                return c
        return None

    def hangup_channel(
        self, name: str, cause: int = 16, cause_txt: str | None = None
    ) -> FakeChannel | None:
        """Remove the channel and emit its ``Hangup`` event (Cause, Cause-txt)."""
        ch = self.find_channel(name)
        if ch is None:
            return None
        del self.channels[ch.name]
        text = cause_txt if cause_txt is not None else Q850_TEXT.get(cause, "Unknown")
        self.emit("Hangup", [*channel_snapshot(ch), ("Cause", str(cause)), ("Cause-txt", text)])
        return ch

    # ------------------------------------------------------------------ events

    def emit(
        self, event: str, fields: FieldsArg | None = None, *, privilege: str | None = None
    ) -> int:
        """Send ``Event: <event>`` / ``Privilege: <class>,all`` then ``fields`` in the given
        order to every logged-in client whose event mask has the class; return how many.

        Build channel events as ``[*channel_snapshot(ch), ("Digit", "5"), ...]``.
        """
        cls = privilege or EVENT_CLASSES.get(event, "call")
        data = encode_message([("Event", event), ("Privilege", f"{cls},all"), *_pairs(fields)])
        n = 0
        for s in list(self._sessions):
            if s.authenticated and cls in s.classes and cls in self.read_classes:
                s.queue(data)
                n += 1
        return n

    # ------------------------------------------------------------------ connection

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one client on ``stream`` until it leaves, logs off, fails login, or
        :meth:`drop_connections` is called; then close the stream. :meth:`serve` calls this for
        each TCP connection; tests may call it with ``trio.testing.memory_stream_pair()``."""
        session = _Session(self, stream)
        self._sessions.add(session)
        self.connections += 1
        try:
            with session.cancel_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, session)
                    session.queue(f"Asterisk Call Manager/{self.version}\r\n".encode())
                    await self._reader(session)
                    session.close_after_flush()
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away mid-write; nothing to tell it
        finally:
            self._sessions.discard(session)
            await trio.aclose_forcefully(stream)

    async def _writer(self, session: _Session) -> None:
        async with session.recv:
            async for data in session.recv:
                if data is None:
                    session.cancel_scope.cancel()
                    return
                await session.stream.send_all(data)

    async def _reader(self, session: _Session) -> None:
        parser = AmiParser(expect_banner=False)
        while not session.closing:
            data = await session.stream.receive_some(65536)
            if not data:
                return
            parser.feed(data)
            try:
                messages = [m for m in parser.events() if isinstance(m, AmiMessage)]
            except AmiProtocolError as exc:
                log.warning("fake AMI: closing client: %s", exc)
                return
            for msg in messages:
                await self._dispatch(session, msg)
                if session.closing:
                    return

    # ------------------------------------------------------------------ actions

    @staticmethod
    def _response(
        msg: AmiMessage,
        status: str,
        message: str | None = None,
        extra: Pairs | None = None,
        *,
        eventlist: str | None = None,
    ) -> Pairs:
        pairs: Pairs = [("Response", status)]
        aid = msg.get("ActionID")
        if aid:
            pairs.append(("ActionID", aid))
        if eventlist:
            pairs.append(("EventList", eventlist))
        if message is not None:
            pairs.append(("Message", message))
        pairs.extend(extra or [])
        return pairs

    def _ack(
        self, s: _Session, msg: AmiMessage, message: str | None, extra: Pairs | None = None
    ) -> None:
        s.message(self._response(msg, "Success", message, extra))

    def _error(self, s: _Session, msg: AmiMessage, message: str) -> None:
        s.message(self._response(msg, "Error", message))

    async def _dispatch(self, s: _Session, msg: AmiMessage) -> None:
        self.received.append(msg)
        self.actions.append(msg.as_dict())
        self._action_seen.set()
        self._action_seen = trio.Event()
        action = (msg.get("Action") or "").strip()
        key = action.lower()
        if key not in ("login", "logoff", "challenge") and not s.authenticated:
            self._error(s, msg, "Permission denied")
            return
        handler = getattr(self, f"_action_{key}", None) if key.isalpha() else None
        needs = ACTION_PRIVILEGES.get(key)
        if handler is not None and needs is not None and not needs & self.write_classes:
            self._error(s, msg, "Permission denied")
            return
        if handler is None:
            self._error(
                s,
                msg,
                f"Invalid/unknown command: {action}. Use Action: ListCommands to show "
                "available commands.",
            )
            return
        await handler(s, msg)

    async def _action_login(self, s: _Session, msg: AmiMessage) -> None:
        self.login_attempts += 1
        user = msg.get("Username") or ""
        if (msg.get("AuthType") or "").lower() == "md5":
            expected = hashlib.md5((s.challenge + self.secret).encode()).hexdigest()
            good = bool(s.challenge) and (msg.get("Key") or "").lower() == expected
        else:
            good = (msg.get("Secret") or "") == self.secret
        if self.reject_logins or user != self.username or not good:
            await trio.sleep(self.bad_login_delay)
            self._error(s, msg, "Authentication failed")
            s.close_after_flush()
            return
        s.authenticated = True
        s.username = user
        s.classes = _event_mask(msg.get("Events"))
        self.logins += 1
        self._ack(s, msg, "Authentication accepted")
        if "system" in s.classes and "system" in self.read_classes:
            s.message(
                [
                    ("Event", "FullyBooted"),
                    ("Privilege", "system,all"),
                    ("Uptime", "143"),
                    ("LastReload", "143"),
                    ("Status", "Fully Booted"),
                ]
            )

    async def _action_challenge(self, s: _Session, msg: AmiMessage) -> None:
        if (msg.get("AuthType") or "").lower() != "md5":
            self._error(s, msg, "Must specify AuthType")
            return
        if not s.challenge:
            s.challenge = str(random.randrange(10**7, 10**9))
        self._ack(s, msg, None, [("Challenge", s.challenge)])

    async def _action_logoff(self, s: _Session, msg: AmiMessage) -> None:
        s.message(self._response(msg, "Goodbye", "Thanks for all the fish."))
        s.close_after_flush()

    async def _action_ping(self, s: _Session, msg: AmiMessage) -> None:
        if not self.answer_pings:
            return
        self._ack(s, msg, None, [("Ping", "Pong"), ("Timestamp", f"{self.clock():.6f}")])

    async def _action_events(self, s: _Session, msg: AmiMessage) -> None:
        s.classes = _event_mask(msg.get("EventMask"))
        self._ack(s, msg, None, [("Events", "On" if s.classes else "Off")])

    async def _action_redirect(self, s: _Session, msg: AmiMessage) -> None:
        name = msg.get("Channel") or ""
        context = msg.get("Context") or ""
        exten = msg.get("Exten") or ""
        priority = msg.get("Priority") or ""
        for value, what in (
            (name, "Channel"),
            (context, "Context"),
            (exten, "Exten"),
            (priority, "Priority"),
        ):
            if not value:
                self._error(s, msg, f"{what} not specified")
                return
        if not re.fullmatch(r"\d+", priority) or int(priority) < 1:
            self._error(s, msg, "Priority is invalid")
            return
        ch = self.find_channel(name)
        if ch is None:
            self._error(s, msg, f"Channel does not exist: {name}")
            return
        targets = [(ch, context, exten, priority)]
        extra_name = msg.get("ExtraChannel") or ""
        if extra_name:
            ch2 = self.find_channel(extra_name)
            if ch2 is None:
                self._error(s, msg, f"ExtraChannel does not exist: {extra_name}")
                return
            targets.append(
                (
                    ch2,
                    msg.get("ExtraContext") or context,
                    msg.get("ExtraExten") or exten,
                    msg.get("ExtraPriority") or priority,
                )
            )
        self._ack(s, msg, "Dual Redirect successful" if extra_name else "Redirect successful")
        for target, ctx, ext, pri in targets:
            target.context, target.exten, target.priority = ctx, ext, pri
            self._call_hook(self.on_redirect, target, ctx, ext, pri)

    async def _action_hangup(self, s: _Session, msg: AmiMessage) -> None:
        name = msg.get("Channel") or ""
        if not name:
            self._error(s, msg, "No channel specified")
            return
        cause_s = msg.get("Cause") or ""
        cause = int(cause_s) if cause_s.isdigit() and int(cause_s) <= 127 else 0
        if name.startswith("/") and name.endswith("/") and len(name) >= 2:
            try:
                rx = re.compile(name[1:-1])
            except re.error:
                self._error(s, msg, f"Regex compile failed on: {name}")
                return
            s.message(
                self._response(msg, "Success", "Channels hung up will follow", eventlist="start")
            )
            matched = [c for c in list(self.channels.values()) if rx.search(c.name)]
            aid = [("ActionID", msg["ActionID"])] if msg.get("ActionID") else []
            for c in matched:
                s.message([("Event", "ChannelHungup"), ("Channel", c.name), *aid])
            s.message(
                [
                    ("Event", "ChannelsHungupListComplete"),
                    *aid,
                    ("EventList", "Complete"),
                    ("ListItems", str(len(matched))),
                ]
            )
            for c in matched:
                self._hang(c, cause)
            return
        ch = self.find_channel(name)
        if ch is None:
            self._error(s, msg, "No such channel")
            return
        self._ack(s, msg, "Channel Hungup")
        self._hang(ch, cause)

    def _hang(self, ch: FakeChannel, cause: int) -> None:
        ch.hangup_cause = cause or None
        if self.on_hangup is not None:
            self._call_hook(self.on_hangup, ch)
        else:
            self.hangup_channel(ch.name, cause or 16)

    async def _action_setvar(self, s: _Session, msg: AmiMessage) -> None:
        name = msg.get("Channel") or ""
        var = msg.get("Variable") or ""
        if not var:
            self._error(s, msg, "No variable specified")
            return
        if name:
            ch = self.find_channel(name)
            if ch is None:
                self._error(s, msg, "No such channel")
                return
            ch.variables[var] = msg.get("Value") or ""
        else:
            self.global_vars[var] = msg.get("Value") or ""
        self._ack(s, msg, "Variable Set")

    async def _action_getvar(self, s: _Session, msg: AmiMessage) -> None:
        name = msg.get("Channel") or ""
        var = msg.get("Variable") or ""
        if not var:
            self._error(s, msg, "No variable specified")
            return
        ch = None
        if name:
            ch = self.find_channel(name)
            if ch is None:
                self._error(s, msg, "No such channel")
                return
        value = self._read_var(ch, var)
        s.message(self._response(msg, "Success", None, [("Variable", var), ("Value", value)]))

    def _read_var(self, ch: FakeChannel | None, var: str) -> str:
        if var.endswith(")") and ch is not None:
            func = var.upper()
            return {
                "CHANNEL(STATE)": ch.state_desc,
                "CHANNEL(NAME)": ch.name,
                "CHANNEL(UNIQUEID)": ch.uniqueid,
                "CHANNEL(LINKEDID)": ch.linkedid,
                "CALLERID(NUM)": "" if ch.callerid_num == "<unknown>" else ch.callerid_num,
                "CALLERID(NAME)": "" if ch.callerid_name == "<unknown>" else ch.callerid_name,
            }.get(func, "")
        if ch is not None and var in ch.variables:
            return ch.variables[var]
        return self.global_vars.get(var, "")

    async def _action_coreshowchannels(self, s: _Session, msg: AmiMessage) -> None:
        s.message(self._response(msg, "Success", "Channels will follow", eventlist="start"))
        aid = [("ActionID", msg["ActionID"])] if msg.get("ActionID") else []
        chans = list(self.channels.values())
        for c in chans:
            s.message(
                [
                    ("Event", "CoreShowChannel"),
                    *aid,
                    *channel_snapshot(c),
                    ("Application", c.application),
                    ("ApplicationData", c.application_data),
                    ("Duration", "00:00:01"),
                    ("BridgeId", ""),
                ]
            )
        s.message(
            [
                ("Event", "CoreShowChannelsComplete"),
                *aid,
                ("EventList", "Complete"),
                ("ListItems", str(len(chans))),
            ]
        )

    async def _action_userevent(self, s: _Session, msg: AmiMessage) -> None:
        name = msg.get("UserEvent") or ""
        if not name:
            self._error(s, msg, "UserEvent needs a name")
            return
        self._ack(s, msg, "Event Sent")
        extra = [(k, v) for k, v in msg.pairs if k.lower() not in ("action", "userevent")]
        self.emit("UserEvent", [("UserEvent", name), *extra])

    async def _action_modulecheck(self, s: _Session, msg: AmiMessage) -> None:
        module = (msg.get("Module") or "").removesuffix(".so")
        if module not in self.modules:
            self._error(s, msg, "Module not loaded")
            return
        self._ack(s, msg, None, [("Version", "")])

    async def _action_coresettings(self, s: _Session, msg: AmiMessage) -> None:
        self._ack(s, msg, None, [("AMIversion", self.version),
                                 ("AsteriskVersion", self.asterisk_version),
                                 ("SystemName", ""), ("CoreMaxCalls", "0")])

    async def _action_command(self, s: _Session, msg: AmiMessage) -> None:
        """CLI commands over AMI: ``manager show user NAME`` and ``module show like TEXT``."""
        words = (msg.get("Command") or "").split()
        if words[:3] == ["manager", "show", "user"] and len(words) == 4:
            if words[3] != self.username:
                lines = [f"There is no manager called {words[3]}"]
            else:
                lines = ["", f"          username: {self.username}", "            secret: <Set>",
                         f"         read perm: {_perm_text(self.read_classes)}",
                         f"        write perm: {_perm_text(self.write_classes)}"]
        elif words[:3] == ["module", "show", "like"] and len(words) == 4:
            found = sorted(m for m in self.modules if words[3] in m)
            lines = [f"{'Module':<31}{'Description':<41}Use Count  Status      Support Level",
                     *(f"{m + '.so':<31}{'(fake)':<41}{0:<11}Running          extended"
                       for m in found), f"{len(found)} modules loaded"]
        else:
            s.message(self._response(msg, "Error", "Command output follows", [
                ("Output", f"No such command '{' '.join(words)}' (type 'core show help' for "
                 "other possible commands)")]))
            return
        self._ack(s, msg, "Command output follows", [("Output", ln) for ln in lines])

    # ------------------------------------------------------------------ hooks

    def _call_hook(self, hook: Hook | None, *args: Any) -> None:
        if hook is None:
            return
        result = hook(*args)
        if inspect.isawaitable(result):
            if self._nursery is None:
                raise RuntimeError("async on_redirect/on_hangup hooks need FakeAmiServer.serve()")
            self._nursery.start_soon(_await, result)


async def _await(aw: Awaitable[Any]) -> None:
    await aw


def _perm_text(classes: frozenset[str]) -> str:
    """Classes as ``manager show user`` prints them: Asterisk's order, ``all`` if all."""
    names = [c for c in CLASS_ORDER if c in classes]
    if classes >= ALL_CLASSES:
        names.append("all")
    return ",".join(names) or "<none>"


def _event_mask(value: str | None) -> frozenset[str]:
    """``Events:`` at login / ``EventMask:``: on/yes/all (or absent) -> every class; off/no ->
    none; otherwise a comma list of classes."""
    if value is None:
        return ALL_CLASSES
    v = value.strip().lower()
    if v in ("on", "yes", "true", "all", ""):
        return ALL_CLASSES
    if v in ("off", "no", "false", "0"):
        return frozenset()
    classes = {c.strip() for c in v.split(",") if c.strip()}
    return ALL_CLASSES if "all" in classes else frozenset(classes & ALL_CLASSES)


@asynccontextmanager
async def open_fake_ami_server(**kwargs: Any) -> AsyncIterator[FakeAmiServer]:
    """Run a :class:`FakeAmiServer` in a nursery for the block; ``server.port`` is bound."""
    server = FakeAmiServer(**kwargs)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()
