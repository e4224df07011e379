"""The asyncio AMI client against the trio fake AMI server (run in a background thread).

Waiting is always on the client's event queue or a response, never a sleep: the fake server
answers in order, so once a response arrives every earlier action and event has been handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, TypeVar

import pytest
import trio
import trio.testing

from fastagi_server.ami.client import (
    AmiActionError,
    AmiClient,
    AmiEvent,
    AmiNotConnected,
    AmiTimeout,
    ConnectFailed,
    Disconnected,
    Resynced,
)
from fastagi_server.ami.codec import AmiMessage, AmiParser, Banner, UnsafeValueError, encode_message
from fastagi_server.emulator.ami_server import FakeAmiServer, FakeChannel, channel_snapshot
from media_sidecar.config.schema import AmiConfig

T = TypeVar("T")
TEST_DEADLINE = 4.0

CALLER: dict[str, Any] = dict(
    callerid_num="5551234",
    callerid_name="Probe",
    connected_num="5551234",
    connected_name="Probe",
    context="test",
    exten="200",
    priority="3",
)


class ServerThread:
    """A FakeAmiServer running under ``trio.run`` in a thread; ``call`` runs a function in it."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("bad_login_delay", 0.0)
        self.server = FakeAmiServer(**kwargs)
        self.port = 0
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self._thread = threading.Thread(target=self._run, name="fake-ami", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                self._cancel = nursery.cancel_scope
                self.port = await nursery.start(self.server.serve)
                self._ready.set()

        try:
            trio.run(main)
        except BaseException as exc:  # reported by stop(); the thread must not die silently
            self.error = exc
            self._ready.set()

    def start(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(5), "fake AMI server did not start"
        assert self.error is None, self.error
        return self

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def stop(self) -> None:
        if self._cancel is not None and self._thread.is_alive():
            self.call(self._cancel.cancel)
        self._thread.join(5)
        assert not self._thread.is_alive()
        if self.error is not None:
            raise self.error


@contextmanager
def fake_ami(**kwargs: Any) -> Iterator[ServerThread]:
    st = ServerThread(**kwargs).start()
    try:
        yield st
    finally:
        st.stop()


def config(port: int, **kw: Any) -> AmiConfig:
    base = AmiConfig(
        host="127.0.0.1",
        port=port,
        username="agent",
        secret="agentsecret",
        action_timeout=2.0,
        ping_interval=30.0,
        pong_timeout=2.0,
        reconnect_min=0.01,
        reconnect_max=0.04,
    )
    return replace(base, **kw)


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        async with asyncio.timeout(TEST_DEADLINE):
            await coro_fn()

    asyncio.run(main())


async def next_of(ami: AmiClient, kind: type[T], skip: tuple[type, ...] = (AmiEvent,)) -> T:
    """The next queued item of ``kind``; items of the ``skip`` types are passed over."""
    async for item in ami.events():
        if isinstance(item, kind):
            return item
        assert isinstance(item, skip), f"unexpected {item!r} while waiting for {kind.__name__}"
    raise AssertionError("event stream ended")


# --------------------------------------------------------------------------- tests


def test_login_resync_and_wire_format() -> None:
    with fake_ami() as st:
        st.call(st.server.add_channel, "Local/200@test-0000000c;1", "1795267995.24")
        st.call(st.server.add_channel, "Local/200@test-0000000c;2", "1795267995.25")

        async def body() -> None:
            async with AmiClient(config(st.port), jitter=0) as ami:
                resynced = await next_of(ami, Resynced)
                assert resynced == Resynced(frozenset({"1795267995.24", "1795267995.25"}))
                assert ami.connected and ami.live_uniqueids == resynced.uniqueids
                assert await ami.getvar("1795267995.25", "CHANNEL(state)") == "Up"
                assert await ami.ping() >= 0

        run(body)
        login = st.server.received[0]
        assert [k for k, _ in login.pairs] == ["Action", "ActionID", "Username", "Secret", "Events"]
        assert login.as_dict() | {"ActionID": ""} == {
            "Action": "Login",
            "ActionID": "",
            "Username": "agent",
            "Secret": "agentsecret",
            "Events": "on",
        }
        assert [a["Action"] for a in st.server.actions] == [
            "Login",
            "CoreShowChannels",
            "Getvar",
            "Ping",
        ]


def test_redirect_reaches_server_and_hook() -> None:
    with fake_ami() as st:
        seen: list[tuple[str, str, str, str]] = []

        def on_redirect(ch: FakeChannel, context: str, exten: str, priority: str) -> None:
            seen.append((ch.name, context, exten, priority))

        st.server.on_redirect = on_redirect
        st.call(st.server.add_channel, "Local/100@test-00000002;2", "1795.5")

        async def body() -> None:
            async with AmiClient(config(st.port)) as ami:
                resp = await ami.redirect("Local/100@test-00000002;2", "test", "redir", 1)
                assert resp.get("Message") == "Redirect successful"
                with pytest.raises(AmiActionError, match="Channel does not exist: Local/nope"):
                    await ami.redirect("Local/nope", "test", "redir", "1")
                await ami.setvar("1795.5", "AI_STATUS", 'say "hi" Zoë')
                assert await ami.getvar("1795.5", "AI_STATUS") == 'say "hi" Zoë'
                assert await ami.getvar("1795.5", "UNSET") is None

        run(body)
        redirect = next(a for a in st.server.actions if a["Action"] == "Redirect")
        assert {k: v for k, v in redirect.items() if k != "ActionID"} == {
            "Action": "Redirect",
            "Channel": "Local/100@test-00000002;2",
            "Context": "test",
            "Exten": "redir",
            "Priority": "1",
        }
        assert seen == [("Local/100@test-00000002;2", "test", "redir", "1")]


def test_injection_refused_before_anything_is_sent() -> None:
    with fake_ami() as st:
        st.call(st.server.add_channel, "Local/100@test-00000002;2", "1795.5")

        async def body() -> None:
            async with AmiClient(config(st.port)) as ami:
                await next_of(ami, Resynced)
                before = len(st.server.actions)
                evil = "x\r\n\r\nAction: Hangup\r\nChannel: Local/100@test-00000002;2"
                with pytest.raises(UnsafeValueError, match="carriage return"):
                    await ami.setvar("Local/100@test-00000002;2", "GREETING", evil)
                with pytest.raises(UnsafeValueError, match="line feed"):
                    await ami.redirect("Local/100@test-00000002;2\nVariable: X", "t", "s", 1)
                with pytest.raises(UnsafeValueError):
                    await ami.send_action("Setvar", [("Bad\r\nKey", "v")])
                await ami.ping()  # the server has handled everything sent before this
                assert [a["Action"] for a in st.server.actions[before:]] == ["Ping"]

        run(body)
        assert not any(a["Action"] == "Hangup" for a in st.server.actions)
        assert "Local/100@test-00000002;2" in st.server.channels


def test_events_delivered_typed_and_filtered() -> None:
    with fake_ami() as st:
        caller = FakeChannel(
            "Local/200@test-0000000c;2", "1795267995.25", "1795267995.24", **CALLER
        )

        async def body() -> None:
            async with AmiClient(config(st.port)) as ami:
                await next_of(ami, Resynced)
                snap = channel_snapshot(caller)
                st.call(st.server.emit, "AGIExecStart", [*snap, ("Command", "NOOP")])  # filtered
                st.call(
                    st.server.emit,
                    "DTMFEnd",
                    [*snap, ("Digit", "1"), ("DurationMs", "100"), ("Direction", "Received")],
                )
                name_snap = [(k, "Zoë Müller" if k == "CallerIDName" else v) for k, v in snap]
                st.call(st.server.emit, "Newstate", name_snap)
                dtmf = await next_of(ami, AmiEvent, skip=())
                assert (dtmf.name, dtmf.digit, dtmf.direction) == ("DTMFEnd", "1", "Received")
                assert (dtmf.uniqueid, dtmf.linkedid, dtmf.channel) == (
                    "1795267995.25",
                    "1795267995.24",
                    "Local/200@test-0000000c;2",
                )
                assert dtmf.get("Event") == "DTMFEnd" and dtmf["Privilege"] == "dtmf,all"
                newstate = await next_of(ami, AmiEvent, skip=())
                assert newstate.name == "Newstate"
                assert newstate.get("CallerIDName") == "Zoë Müller"

                transferer = channel_snapshot(caller, "Transferer")
                st.call(st.server.emit, "BlindTransfer", [("Result", "Success"), *transferer])
                blind = await next_of(ami, AmiEvent, skip=())
                assert (blind.name, blind.uniqueid) == ("BlindTransfer", "1795267995.25")

        run(body)


def test_hangup_action_and_hangup_event() -> None:
    with fake_ami() as st:
        st.call(st.server.add_channel, "Local/100@test-00000002;2", "1795.5")

        async def body() -> None:
            async with AmiClient(config(st.port)) as ami:
                await next_of(ami, Resynced)
                sub = ami.subscribe()
                resp = await ami.hangup("1795.5", cause=16)
                assert resp.get("Message") == "Channel Hungup"
                with pytest.raises(AmiActionError, match="No such channel"):
                    await ami.hangup("1795.5")
                for queue_item in (await next_of(ami, AmiEvent, skip=()), await sub.get()):
                    assert isinstance(queue_item, AmiEvent)
                    assert (queue_item.name, queue_item.uniqueid, queue_item.cause) == (
                        "Hangup",
                        "1795.5",
                        16,
                    )
                ami.unsubscribe(sub)

        run(body)
        hangup = next(a for a in st.server.actions if a["Action"] == "Hangup")
        assert hangup["Cause"] == "16"


def test_full_queue_drops_oldest_and_counts() -> None:
    with fake_ami() as st:
        ch = FakeChannel("Local/1@t-1;2", "9.1")

        async def body() -> None:
            async with AmiClient(config(st.port), queue_size=2) as ami:
                await next_of(ami, Resynced)
                for digit in "12345":
                    st.call(st.server.emit, "DTMFEnd", [*channel_snapshot(ch), ("Digit", digit)])
                await ami.ping()  # all five events were dispatched before the Pong
                assert ami.dropped_events == 3
                got = [await next_of(ami, AmiEvent, skip=()) for _ in range(2)]
                assert [e.digit for e in got] == ["4", "5"]

        run(body)


def test_ping_watchdog_reconnects_half_open_server() -> None:
    with fake_ami() as st:

        async def body() -> None:
            cfg = config(st.port, ping_interval=0.05, pong_timeout=0.2)
            async with AmiClient(cfg) as ami:
                await next_of(ami, Resynced)
                st.server.answer_pings = False  # TCP stays up, Pongs stop
                lost = await next_of(ami, Disconnected)
                assert "no Pong within 0.2 s" in lost.reason
                st.server.answer_pings = True
                await next_of(ami, Resynced)
                assert ami.connected
                assert ami.logins == 2

        run(body)
        assert st.server.logins == 2


def test_backoff_grows_on_bad_password_then_recovers() -> None:
    with fake_ami() as st:
        st.server.reject_logins = True

        async def body() -> None:
            async with AmiClient(config(st.port), jitter=0) as ami:
                failures = [await next_of(ami, ConnectFailed) for _ in range(5)]
                assert [f.retry_in for f in failures] == pytest.approx(
                    [0.01, 0.02, 0.04, 0.04, 0.04]
                )
                assert [f.attempt for f in failures] == [1, 2, 3, 4, 5]
                assert "Authentication failed" in failures[0].reason
                assert not ami.connected
                st.server.reject_logins = False
                await next_of(ami, Resynced, skip=(AmiEvent, ConnectFailed))
                assert ami.connected

        run(body)
        assert st.server.login_attempts >= 6 and st.server.logins == 1


def test_resync_after_dropped_connection() -> None:
    with fake_ami() as st:
        st.call(st.server.add_channel, "Local/a;2", "1.1")

        async def body() -> None:
            async with AmiClient(config(st.port)) as ami:
                assert (await next_of(ami, Resynced)).uniqueids == {"1.1"}

                def change_and_drop() -> None:
                    st.server.add_channel("Local/b;2", "1.2")
                    del st.server.channels["Local/a;2"]
                    st.server.drop_connections()

                st.call(change_and_drop)
                lost = await next_of(ami, Disconnected)
                assert "closed" in lost.reason or "lost" in lost.reason
                assert (await next_of(ami, Resynced)).uniqueids == {"1.2"}
                assert ami.live_uniqueids == {"1.2"}

        run(body)


def test_action_timeout_and_not_connected() -> None:
    with fake_ami() as st:

        async def body() -> None:
            async with AmiClient(config(st.port, action_timeout=0.2)) as ami:
                await next_of(ami, Resynced)
                st.server.answer_pings = False
                with pytest.raises(AmiTimeout, match="no response to AMI Ping within 0.2 s"):
                    await ami.ping()
                st.server.answer_pings = True
                await ami.ping()  # the late reply of the timed-out Ping is ignored

        run(body)

    async def nobody_listening() -> None:
        with _closed_port() as port:
            async with AmiClient(config(port, action_timeout=0.1)) as ami:
                with pytest.raises(AmiNotConnected, match="not connected"):
                    await ami.ping()
                failed = await next_of(ami, ConnectFailed)
                assert failed.reason

    run(nobody_listening)


@contextmanager
def _closed_port() -> Iterator[int]:
    """A loopback port with nothing listening (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    yield port


def test_body_exception_propagates_unwrapped() -> None:
    with fake_ami() as st:

        async def body() -> None:
            with pytest.raises(KeyError, match="boom"):
                async with AmiClient(config(st.port)) as ami:
                    await next_of(ami, Resynced)
                    raise KeyError("boom")
            assert not ami.connected
            assert [item async for item in ami.events()] == []  # iteration ends after close

        run(body)


# --------------------------------------------------------------------------- the fake server
# Protocol faithfulness of the fake itself, over in-memory streams in trio virtual time.


class Peer:
    """A raw AMI client on an in-memory stream to ``FakeAmiServer.handle_stream``."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.parser = AmiParser()
        self.items: list[AmiMessage | Banner] = []

    async def send(self, *pairs: tuple[str, object]) -> None:
        await self.stream.send_all(encode_message(list(pairs)))

    async def next(self) -> AmiMessage | Banner:
        while not self.items:
            data = await self.stream.receive_some(65536)
            assert data, "server closed the connection"
            self.parser.feed(data)
            self.items.extend(self.parser.events())
        return self.items.pop(0)

    async def msg(self) -> AmiMessage:
        item = await self.next()
        assert isinstance(item, AmiMessage)
        return item

    async def eof(self) -> bool:
        return not self.items and await self.stream.receive_some(65536) == b""


@contextlib.asynccontextmanager
async def peer_of(server: FakeAmiServer) -> AsyncIterator[Peer]:
    client, srv = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_stream, srv)
        yield Peer(client)
        await client.aclose()


async def test_fake_server_wire_texts() -> None:
    server = FakeAmiServer()
    async with peer_of(server) as peer:
        assert await peer.next() == Banner("11.0.0", "Asterisk Call Manager/11.0.0")
        await peer.send(("Action", "Ping"), ("ActionID", "a1"))
        denied = await peer.msg()
        assert denied.pairs == (
            ("Response", "Error"),
            ("ActionID", "a1"),
            ("Message", "Permission denied"),
        )
        await peer.send(("Action", "Login"), ("ActionID", "p1"), ("Username", "agent"),
                        ("Secret", "agentsecret"), ("Events", "on"))  # fmt: skip
        assert (await peer.msg()).pairs == (
            ("Response", "Success"),
            ("ActionID", "p1"),
            ("Message", "Authentication accepted"),
        )
        booted = await peer.msg()
        assert [k for k, _ in booted.pairs] == [
            "Event", "Privilege", "Uptime", "LastReload", "Status",
        ]  # fmt: skip
        assert booted["Privilege"] == "system,all" and booted["Status"] == "Fully Booted"
        await peer.send(("Action", "Frobnicate"), ("ActionID", "u1"))
        assert (await peer.msg())["Message"] == (
            "Invalid/unknown command: Frobnicate. Use Action: ListCommands to show available "
            "commands."
        )
        await peer.send(("Action", "Ping"), ("ActionID", "g1"))
        pong = await peer.msg()
        assert [k for k, _ in pong.pairs] == ["Response", "ActionID", "Ping", "Timestamp"]
        assert pong["Ping"] == "Pong"
        await peer.send(("Action", "Logoff"), ("ActionID", "p4"))
        assert (await peer.msg()).pairs == (
            ("Response", "Goodbye"),
            ("ActionID", "p4"),
            ("Message", "Thanks for all the fish."),
        )
        assert await peer.eof()
    assert [a["Action"] for a in server.actions] == [
        "Ping",
        "Login",
        "Frobnicate",
        "Ping",
        "Logoff",
    ]


async def test_fake_server_bad_login_sleeps_then_closes(autojump_clock: object) -> None:
    server = FakeAmiServer()  # bad_login_delay=1.0, as Asterisk's sleep(1)
    async with peer_of(server) as peer:
        await peer.next()
        start = trio.current_time()
        await peer.send(("Action", "Login"), ("ActionID", "x1"), ("Username", "agent"),
                        ("Secret", "wrong"))  # fmt: skip
        reply = await peer.msg()
        assert trio.current_time() - start == pytest.approx(1.0)
        assert reply.pairs == (
            ("Response", "Error"),
            ("ActionID", "x1"),
            ("Message", "Authentication failed"),
        )
        assert await peer.eof()


async def test_fake_server_md5_login_and_event_mask() -> None:
    server = FakeAmiServer(secret="s3cret")
    async with peer_of(server) as peer:
        await peer.next()
        await peer.send(("Action", "Challenge"), ("AuthType", "MD5"))
        challenge = (await peer.msg())["Challenge"]
        key = hashlib.md5((challenge + "s3cret").encode()).hexdigest()
        await peer.send(("Action", "Login"), ("Username", "agent"), ("AuthType", "MD5"),
                        ("Key", key), ("Events", "off"))  # fmt: skip
        assert (await peer.msg())["Message"] == "Authentication accepted"
        assert server.emit("Hangup", []) == 0  # Events: off
        await peer.send(("Action", "Events"), ("EventMask", "call"))
        assert (await peer.msg())["Events"] == "On"
        assert server.emit("DTMFEnd", []) == 0  # dtmf class not in the mask
        assert server.emit("Hangup", [("Cause", "16")]) == 1
        hangup = await peer.msg()
        assert hangup.pairs == (("Event", "Hangup"), ("Privilege", "call,all"), ("Cause", "16"))


async def test_fake_server_channel_actions() -> None:
    server = FakeAmiServer()
    server.add_channel("Local/100@test-00000000;1", "1795.1", context="test", exten="100")
    server.add_channel("Local/100@test-00000000;2", "1795.2", linkedid="1795.1", state=4)
    hung: list[str] = []
    server.on_hangup = lambda ch: hung.append(ch.name)
    async with peer_of(server) as peer:
        await peer.next()
        await peer.send(("Action", "Login"), ("Username", "agent"), ("Secret", "agentsecret"))
        await peer.msg()
        await peer.msg()  # FullyBooted
        await peer.send(("Action", "CoreShowChannels"), ("ActionID", "c1"))
        start = await peer.msg()
        assert start.pairs == (
            ("Response", "Success"),
            ("ActionID", "c1"),
            ("EventList", "start"),
            ("Message", "Channels will follow"),
        )
        first = await peer.msg()
        assert [k for k, _ in first.pairs][:16] == [
            "Event", "ActionID", "Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum",
            "CallerIDName", "ConnectedLineNum", "ConnectedLineName", "Language", "AccountCode",
            "Context", "Exten", "Priority", "Uniqueid", "Linkedid",
        ]  # fmt: skip
        second = await peer.msg()
        assert (second["ChannelStateDesc"], second["Linkedid"]) == ("Ring", "1795.1")
        done = await peer.msg()
        assert (done.event, done["EventList"], done["ListItems"]) == (
            "CoreShowChannelsComplete",
            "Complete",
            "2",
        )
        await peer.send(("Action", "Getvar"), ("Channel", "nope"), ("Variable", "X"))
        assert (await peer.msg())["Message"] == "No such channel"
        await peer.send(("Action", "Redirect"), ("Channel", "Local/x"), ("Context", "c"),
                        ("Exten", "s"), ("Priority", "1"))  # fmt: skip
        assert (await peer.msg())["Message"] == "Channel does not exist: Local/x"
        await peer.send(("Action", "Hangup"), ("Channel", "/Local/100@test-.*/"))
        assert (await peer.msg())["Message"] == "Channels hung up will follow"
        assert (await peer.msg()).event == "ChannelHungup"
        assert (await peer.msg()).event == "ChannelHungup"
        assert (await peer.msg())["ListItems"] == "2"
    assert hung == ["Local/100@test-00000000;1", "Local/100@test-00000000;2"]


def test_shutdown_event_reconnects() -> None:
    with fake_ami() as st:

        async def body() -> None:
            async with AmiClient(config(st.port)) as ami:
                await next_of(ami, Resynced)
                st.call(st.server.emit, "Shutdown", [("Shutdown", "Cleanly"), ("Restart", "True")])
                shutdown = await next_of(ami, AmiEvent, skip=())
                assert shutdown.name == "Shutdown"
                lost = await next_of(ami, Disconnected, skip=())
                assert lost.reason == "Asterisk sent Shutdown"
                await next_of(ami, Resynced)

        run(body)


def test_unsafe_credentials_fail_at_enter() -> None:
    async def body() -> None:
        with pytest.raises(UnsafeValueError, match="line feed"):
            async with AmiClient(config(1, secret="x\nAction: Originate")):
                pass

    run(body)
