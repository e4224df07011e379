"""The emulator's FastAGI side against a tiny in-test FastAGI server, checked against the 22.10.1
captures (``agi_A1`` .. ``agi_A8``). Virtual time (autojump clock) over memory streams, plus one
call over real loopback sockets through :func:`run_call`."""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import numpy as np
import pytest
import trio
import trio.testing

from fastagi_server.emulator.agi_side import AgiResult, AgiSession, find_command
from fastagi_server.emulator.call import load_wav, mix_conversation, run_call, write_wav
from fastagi_server.emulator.caller import CallerScript
from fastagi_server.emulator.channel import (
    ChannelSpec,
    EmulatedChannel,
    env_block,
    is_libuuid,
    parse_args,
    parse_hostport,
)
from media_sidecar.protocol.audiosocket import encode_audio, encode_hangup

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "asterisk-22.10.1"
if not FIXTURES.is_dir():  # the repository checked out on its own
    FIXTURES = Path("/work/shared/fixtures/asterisk-22.10.1")
REQUEST = "agi://127.0.0.1:4573/pick?assistant=sales"
ASID = "a4448b76-109e-464d-9398-6bacec55b641"
R511 = b"511 Command Not Permitted on a dead channel or intercept routine\n"


def capture(name: str) -> str:
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"capture {path} not available")
    return path.read_text()


def raw_env(name: str) -> bytes:
    text = capture(name)
    line = text.split("==== raw env block (exact bytes) ====\n", 1)[1].splitlines()[0]
    return ast.literal_eval(line)


def captured_commands(name: str) -> list[tuple[str, bytes]]:
    out = []
    for m in re.finditer(r"^CMD ('.*?')\s+-> (b'.*?')\s+\(", capture(name), re.M):
        out.append((ast.literal_eval(m.group(1)), ast.literal_eval(m.group(2))))
    return out


class FakeAgiServer:
    """The FastAGI server end, as a test drives it: one command, then lines up to a result."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.eof = False

    async def line(self) -> bytes:
        while b"\n" not in self.buf:
            data = await self.stream.receive_some(65536)
            if not data:
                self.eof = True
                out = bytes(self.buf)
                self.buf.clear()
                return out
            self.buf += data
        end = self.buf.index(b"\n") + 1
        out = bytes(self.buf[:end])
        del self.buf[:end]
        return out

    async def env(self) -> bytes:
        block = b""
        while True:
            line = await self.line()
            block += line
            if line in (b"\n", b""):
                return block

    async def cmd(self, text: str | bytes) -> bytes:
        """Send a command line; return every line up to and including the ``NNN `` result."""
        raw = text if isinstance(text, bytes) else text.encode() + b"\n"
        await self.stream.send_all(raw)
        return await self.reply()

    async def reply(self) -> bytes:
        got = b""
        while True:
            line = await self.line()
            got += line
            if not line or re.match(rb"^\d{3} ", line):
                return got

    async def rest(self) -> bytes:
        """Everything until EOF."""
        out = b""
        while not self.eof:
            out += await self.line()
        return out


async def sidecar_close_after(stream: trio.abc.Stream, frames: int, hangup: bool) -> bytes:
    """A minimal sidecar: read the UUID frame, send ``frames`` paced 20 ms frames, end."""
    first = b""
    while len(first) < 19:
        first += await stream.receive_some(19 - len(first))
    t0 = trio.current_time()
    for k in range(frames):
        await trio.sleep_until(t0 + 0.02 * k)
        await stream.send_all(encode_audio(bytes(320)))
    if hangup:
        await stream.send_all(encode_hangup())
    else:
        await stream.aclose()
    return first


class MemoryConnector:
    """EXEC AudioSocket connects here: each port maps to a sidecar coroutine, others refuse."""

    def __init__(
        self, nursery: trio.Nursery, sidecars: Mapping[int, Callable[..., Awaitable[object]]]
    ) -> None:
        self.nursery = nursery
        self.sidecars = sidecars
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> trio.abc.Stream:
        self.calls.append((host, port))
        if port not in self.sidecars:
            raise ConnectionRefusedError(111, "Connection refused")
        ours, theirs = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self.sidecars[port], theirs)
        return ours


memory_connector = MemoryConnector


async def start(
    nursery: trio.Nursery, spec: ChannelSpec | None = None, **kw: object
) -> tuple[FakeAgiServer, EmulatedChannel, dict[str, AgiResult]]:
    ours, theirs = trio.testing.memory_stream_pair()
    channel = EmulatedChannel(spec or ChannelSpec(variables={"ASID": ASID}))
    session = AgiSession(ours, channel, request=REQUEST, **kw)  # type: ignore[arg-type]
    box: dict[str, AgiResult] = {}

    async def run() -> None:
        box["result"] = await session.run()

    nursery.start_soon(run)
    server = FakeAgiServer(theirs)
    await server.env()
    return server, channel, box


# -- the request block -------------------------------------------------------------------------
def test_env_block_is_the_a1_capture_byte_for_byte() -> None:
    assert env_block(ChannelSpec(), REQUEST) == raw_env("agi_A1.txt")


def test_env_block_unknown_callerid_matches_cli_originate() -> None:
    text = capture("agi_cli_originate.txt")
    expected = ast.literal_eval(text.splitlines()[0])
    spec = ChannelSpec(
        channel="Local/100@test-00000027;2", uniqueid="1795268215.94", callerid="unknown",
        calleridname="unknown", threadid=140272406947520,
    )  # fmt: skip
    assert env_block(spec, REQUEST) == expected
    assert b"agi_callingpres: 67\n" in expected


def test_env_block_without_path_omits_network_script() -> None:
    block = env_block(ChannelSpec(script=None, args=()), "agi://10.0.0.1")
    assert block.startswith(b"agi_network: yes\nagi_request: agi://10.0.0.1\n")
    assert block.endswith(b"agi_threadid: 140272405411520\n\n")


async def test_session_sends_the_env_block_then_waits() -> None:
    async with trio.open_nursery() as nursery:
        ours, theirs = trio.testing.memory_stream_pair()
        nursery.start_soon(AgiSession(ours, EmulatedChannel(ChannelSpec()), request=REQUEST).run)
        assert await FakeAgiServer(theirs).env() == raw_env("agi_A1.txt")
        await theirs.aclose()


# -- tokenizer and small parsers --------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "argv"),
    [
        ('SET VARIABLE QUOTED "say \\"hi\\" back\\\\slash"',
         ["SET", "VARIABLE", "QUOTED", 'say "hi" back\\slash']),
        ('SET VARIABLE FOO "hello world"', ["SET", "VARIABLE", "FOO", "hello world"]),
        ('STREAM FILE beep ""', ["STREAM", "FILE", "beep", ""]),
        ("NOOP\r", ["NOOP\r"]),
        ("a\tb  c", ["a", "b", "c"]),
        ('x"y z"w', ["xy zw"]),
        ("a\\ b", ["a b"]),
        ("a \\ b", ["a", " b"]),
        ('SET VARIABLE INJ "x', ["SET", "VARIABLE", "INJ", "x"]),
        ("", []),
    ],
)  # fmt: skip
def test_parse_args(line: str, argv: list[str]) -> None:
    assert parse_args(line) == argv


def test_parse_args_caps_arguments() -> None:
    assert len(parse_args(" ".join(["x"] * 200))) == 127


def test_libuuid_and_hostport() -> None:
    assert is_libuuid(ASID) and is_libuuid(ASID.upper())
    assert not is_libuuid("1795268159.29") and not is_libuuid(ASID + "0")
    assert not is_libuuid("{" + ASID[1:-1] + "}")
    assert parse_hostport("127.0.0.1:9092") == ("127.0.0.1", 9092)
    assert parse_hostport("[::1]:9019") == ("::1", 9019)
    assert parse_hostport("127.0.0.1") is None and parse_hostport("h:0") is None


def test_find_command_is_case_insensitive_and_whole_word() -> None:
    assert find_command(["get", "Variable", "X"]) is not None
    assert find_command(["GET"]) is None
    assert find_command(["NOOP\r"]) is None
    assert find_command(["DATABASE", "DELTREE", "f"]).words == ("database", "deltree")  # type: ignore[union-attr]


# -- command replies, replayed from the A1 capture ----------------------------------------------
async def test_a1_replay_byte_for_byte(autojump_clock: trio.abc.Clock) -> None:
    cmds = captured_commands("agi_A1.txt")
    assert len(cmds) == 18
    async with trio.open_nursery() as nursery:
        sidecars = {9092: lambda s: sidecar_close_after(s, 150, hangup=False)}
        connect = memory_connector(nursery, sidecars)
        server, channel, box = await start(nursery, answer_delay=0.5, connect=connect)
        for text, expected in cmds[:14]:
            t = trio.current_time()
            assert await server.cmd(text) == expected, text
            if text == "ANSWER":
                assert trio.current_time() - t == pytest.approx(0.5)
            if text.endswith(f"{ASID},127.0.0.1:9092"):
                assert trio.current_time() - t == pytest.approx(149 * 0.02)
        assert connect.calls == [("127.0.0.1", 9092), ("127.0.0.1", 9099)]  # not-a-uuid: none
        events_before = len(channel.events)
        channel.hangup(cause=0)  # AMI Hangup without a Cause
        assert await server.line() == b"HANGUP\n"
        for text, expected in cmds[14:]:
            t = trio.current_time()
            assert await server.cmd(text) == expected, text
        assert text == "EXEC Wait 1" and trio.current_time() - t == pytest.approx(1.0)
        assert len(channel.events) == events_before  # nothing until the AGI socket closes
        await server.stream.aclose()
    result = box["result"]
    assert result.agi_status == "HANGUP"
    assert result.variables["FOO"] == "hello world"
    tail = [(n, f.get("Variable"), f.get("Cause")) for _, n, f in channel.events[-3:]]
    assert tail == [("VarSet", "AGISTATUS", None), ("SoftHangupRequest", None, "16"),
                    ("Hangup", None, "0")]  # fmt: skip
    assert channel.events[-1][2]["Cause-txt"] == "Unknown"
    assert [a.closed_by for a in result.audiosocket] == ["sidecar_eof"]


async def test_quoting_and_usage_blocks(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        server, channel, _ = await start(nursery)
        r = await server.cmd('SET VARIABLE QUOTED "say \\"hi\\" back\\\\slash"')
        assert r == b"200 result=1\n"
        assert await server.cmd("GET VARIABLE QUOTED") == b'200 result=1 (say "hi" back\\slash)\n'
        assert await server.cmd("SET VARIABLE TWO a b") == (
            b"520-Invalid command syntax.  Proper usage follows:\n"
            b"Sets a variable to the current channel.\n520 End of proper usage.\n"
        )
        assert await server.cmd(b"NOOP\r\n") == b"510 Invalid or unknown command\n"
        assert await server.cmd(b"\n") == b"510 Invalid or unknown command\n"
        assert await server.cmd("GET VARIABLE") == (
            b"520 Invalid command syntax.  Proper usage not available.\n"
        )
        assert await server.cmd("VERBOSE hi 1") == b"200 result=1\n"
        assert await server.cmd("CHANNEL STATUS") == b"200 result=4\n"
        assert await server.cmd("ANSWER") == b"200 result=0\n"
        assert await server.cmd("CHANNEL STATUS") == b"200 result=6\n"
        assert await server.cmd("GET VARIABLE CHANNEL(state)") == b"200 result=1 (Up)\n"
        r = await server.cmd('GET FULL VARIABLE "${QUOTED:4:4}|${CHANNEL(state)}|${AGISTATUS}"')
        assert r == b'200 result=1 ("hi"|Up|)\n'
        assert await server.cmd("GET FULL VARIABLE ${BASE64_ENCODE(${QUOTED})}") == (
            b"200 result=1 (c2F5ICJoaSIgYmFja1xzbGFzaA==)\n"
        )
        assert await server.cmd("DATABASE PUT fam key v1") == b"200 result=1\n"
        assert await server.cmd("DATABASE GET fam key") == b"200 result=1 (v1)\n"
        assert await server.cmd("EXEC UserEvent Done,Status: lost") == b"200 result=0\n"
        assert await server.cmd('EXEC UserEvent "Done,Status: ok"') == b"200 result=0\n"
        assert await server.cmd("STREAM FILE beep") == b"510 Invalid or unknown command\n"
        await server.stream.aclose()
    user = [f for _, n, f in channel.events if n == "UserEvent"]
    assert [u["UserEvent"] for u in user] == ["Done", "Done"]
    assert (user[0]["Status"], user[1]["Status"]) == ("", "ok")  # only argv[2] reaches the app
    assert [f["Value"] for _, n, f in channel.events if n == "VarSet"][0] == 'say "hi" back\\slash'


async def test_long_line_is_cut_at_8191_bytes(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        server, _, box = await start(nursery)
        line = b"NOOP " + b"x" * 8186 + b"NOOP\n"  # the cut leaves "NOOP\n" as a second command
        await server.stream.send_all(line)
        assert await server.reply() == b"200 result=0\n"
        assert await server.reply() == b"200 result=0\n"
        await server.stream.aclose()
    assert box["result"].lines(">>")[-1] == "NOOP"


async def test_failure_line_ends_agi(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        server, _, box = await start(nursery)
        await server.stream.send_all(b"FAILURE to run\n")
        assert await server.rest() == b"HANGUP\n"
    assert box["result"].agi_status == "FAILURE"


# -- hangup and redirect --------------------------------------------------------------------------
async def test_hangup_during_exec_audiosocket(autojump_clock: trio.abc.Clock) -> None:
    """A2: result -1, then HANGUP; the sidecar sees EOF; events only after the AGI closes."""
    seen: dict[str, float] = {}

    async def sidecar(stream: trio.abc.Stream) -> None:
        while await stream.receive_some(65536):
            pass
        seen["eof"] = trio.current_time()

    async with trio.open_nursery() as nursery:
        server, channel, box = await start(
            nursery, connect=memory_connector(nursery, {9092: sidecar})
        )
        assert await server.cmd("ANSWER") == b"200 result=0\n"
        t0 = trio.current_time()
        nursery.start_soon(_later, 2.0, channel.hangup)
        assert await server.cmd(f"EXEC AudioSocket {ASID},127.0.0.1:9092") == b"200 result=-1\n"
        assert trio.current_time() - t0 == pytest.approx(2.0)
        assert seen["eof"] - t0 == pytest.approx(2.0)
        assert await server.line() == b"HANGUP\n"
        assert [n for _, n, _ in channel.events] == ["Newstate"]
        assert await server.cmd("GET VARIABLE FOO") == b"200 result=0\n"
        assert await server.cmd("ANSWER") == R511
        await server.stream.aclose()
    assert [n for _, n, _ in channel.events][-3:] == ["VarSet", "SoftHangupRequest", "Hangup"]
    assert box["result"].audiosocket[0].closed_by == "caller_hangup"


@pytest.mark.parametrize("during_exec", [False, True])
async def test_redirect(autojump_clock: trio.abc.Clock, during_exec: bool) -> None:
    """A3 (idle) and A4 (during EXEC AudioSocket): HANGUP, 511, Newexten after the close."""

    async def sidecar(stream: trio.abc.Stream) -> None:
        while await stream.receive_some(65536):
            pass

    async with trio.open_nursery() as nursery:
        server, channel, box = await start(
            nursery, connect=memory_connector(nursery, {9092: sidecar})
        )
        assert await server.cmd("ANSWER") == b"200 result=0\n"
        nursery.start_soon(_later, 0.5, lambda: channel.redirect("test", "redir", 1))
        if during_exec:
            r = await server.cmd(f"EXEC AudioSocket {ASID},127.0.0.1:9092")
            assert r == b"200 result=-1\n"
        assert await server.line() == b"HANGUP\n"
        assert await server.cmd("ANSWER") == R511
        assert await server.cmd("NOOP still-here") == b"200 result=0\n"
        assert not channel.redirect("x", "y")  # one redirect only
        await server.stream.aclose()
    names = [n for _, n, _ in channel.events]
    assert names[-4:] == ["VarSet", "Newexten", "SoftHangupRequest", "Hangup"]
    assert channel.events[-4][2]["Value"] == "HANGUP"
    assert (channel.events[-3][2]["Context"], channel.events[-3][2]["Exten"]) == ("test", "redir")
    if during_exec:
        assert box["result"].audiosocket[0].closed_by == "redirect"


async def test_agisighup_no_sends_no_hangup_line(autojump_clock: trio.abc.Clock) -> None:
    """A6: nothing arrives; the channel is still dead for 511."""
    spec = ChannelSpec(variables={"AGISIGHUP": "no"})
    async with trio.open_nursery() as nursery:
        server, channel, _ = await start(nursery, spec)
        channel.hangup()
        await trio.sleep(1.0)
        assert await server.cmd("GET VARIABLE AGISIGHUP") == b"200 result=1 (no)\n"
        assert await server.cmd("ANSWER") == R511
        await server.stream.send_eof()  # type: ignore[attr-defined]
        assert await server.rest() == b""  # not even the post-loop HANGUP


async def test_agiexitonhangup_sends_hangup_twice_and_closes(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A7: HANGUP, HANGUP, EOF."""
    spec = ChannelSpec(variables={"AGIEXITONHANGUP": "yes"})
    async with trio.open_nursery() as nursery:
        server, channel, box = await start(nursery, spec)
        channel.hangup()
        assert await server.rest() == b"HANGUP\nHANGUP\n"
    assert box["result"].agi_status == "HANGUP"


async def test_server_half_close_gets_the_post_loop_hangup(autojump_clock: trio.abc.Clock) -> None:
    """A5: SET VARIABLE, half-close, then HANGUP and EOF; AGISTATUS=SUCCESS."""
    async with trio.open_nursery() as nursery:
        server, channel, box = await start(nursery)
        assert await server.cmd("SET VARIABLE RESULT ok") == b"200 result=1\n"
        await server.stream.send_eof()  # type: ignore[attr-defined]
        assert await server.rest() == b"HANGUP\n"
    assert box["result"].variables["AGISTATUS"] == "SUCCESS"
    assert box["result"].variables["RESULT"] == "ok"
    assert box["result"].transcript[-1].data == b"HANGUP\n"


@pytest.mark.parametrize(
    "command",
    ["GET VARIABLE FOO", "GET FULL VARIABLE x", "SET VARIABLE A b", "NOOP", "VERBOSE v",
     "EXEC NoOp", "DATABASE GET f k"],
)  # fmt: skip
async def test_dead_channel_allows_only_some_commands(
    autojump_clock: trio.abc.Clock, command: str
) -> None:
    async with trio.open_nursery() as nursery:
        server, channel, _ = await start(nursery)
        channel.hangup()
        assert await server.line() == b"HANGUP\n"
        assert (await server.cmd(command)).startswith(b"200 ")
        for other in ("ANSWER", "CHANNEL STATUS", "HANGUP", 'STREAM FILE beep ""', "SET CONTEXT x"):
            assert await server.cmd(other) == R511
        await server.stream.aclose()


async def test_agi_hangup_command_then_hangup_line(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        server, _, box = await start(nursery)
        assert await server.cmd("HANGUP") == b"200 result=1\n"
        assert await server.line() == b"HANGUP\n"
        await server.stream.aclose()
    assert box["result"].agi_status == "HANGUP"


# -- EXEC AudioSocket ---------------------------------------------------------------------------
async def test_exec_audiosocket_result_codes(autojump_clock: trio.abc.Clock) -> None:
    first: list[bytes] = []

    async def sidecar(stream: trio.abc.Stream) -> None:
        first.append(await sidecar_close_after(stream, 10, hangup=True))

    async with trio.open_nursery() as nursery:
        connect = memory_connector(nursery, {9092: sidecar})
        server, _, box = await start(nursery, connect=connect)
        assert await server.cmd("ANSWER") == b"200 result=0\n"
        assert await server.cmd(f'EXEC AudioSocket "{ASID},127.0.0.1:9092"') == b"200 result=0\n"
        assert await server.cmd(f"EXEC AudioSocket {ASID},127.0.0.1:9099") == b"200 result=-1\n"
        assert (
            await server.cmd("EXEC AudioSocket 1795268159.29,127.0.0.1:9092") == b"200 result=-1\n"
        )
        assert await server.cmd(f"EXEC AudioSocket {ASID}") == b"200 result=-1\n"
        assert await server.cmd(f"EXEC AudioSocket {ASID},127.0.0.1") == b"200 result=-1\n"
        assert await server.cmd("EXEC NoSuchApp foo") == b"200 result=-2\n"
        assert connect.calls == [("127.0.0.1", 9092), ("127.0.0.1", 9099)]
        await server.stream.aclose()
    assert first[0] == b"\x01\x00\x10" + bytes.fromhex(ASID.replace("-", ""))
    session = box["result"].audiosocket[0]
    assert session.hangup_sent_by_sidecar and session.closed_by == "sidecar_hangup"


async def test_exec_audiosocket_unanswered(autojump_clock: trio.abc.Clock) -> None:
    """A8: connect, close with zero bytes, -1; the channel stays up in AGI (status 4)."""
    got: list[bytes] = []

    async def sidecar(stream: trio.abc.Stream) -> None:
        got.append(bytes(await stream.receive_some(65536)))

    async with trio.open_nursery() as nursery:
        server, channel, box = await start(
            nursery, connect=memory_connector(nursery, {9092: sidecar})
        )
        assert await server.cmd(f"EXEC AudioSocket {ASID},127.0.0.1:9092") == b"200 result=-1\n"
        assert await server.cmd("CHANNEL STATUS") == b"200 result=4\n"
        await server.stream.send_eof()  # type: ignore[attr-defined]
        assert await server.rest() == b"HANGUP\n"  # only the post-loop one
    assert got == [b""]
    assert box["result"].audiosocket[0].closed_by == "not_answered"
    assert box["result"].agi_status == "SUCCESS"


async def _later(delay: float, fn: Callable[[], object]) -> None:
    await trio.sleep(delay)
    fn()


# -- a whole call over loopback TCP (real clock) ------------------------------------------------
async def test_run_call_over_loopback(tmp_path: Path) -> None:
    """FastAGI server answers, EXECs AudioSocket to a sidecar that plays 10 frames of tone, sets
    AI_STATUS, hangs up the AudioSocket; the caller speaks meanwhile; --out style mix."""
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(160) / 8000)).astype("<i2").tobytes()

    async def sidecar(stream: trio.SocketStream) -> None:
        await stream.receive_some(19)
        for _ in range(10):
            await stream.send_all(encode_audio(tone))
            await trio.sleep(0.02)
        await stream.send_all(encode_hangup())
        while await stream.receive_some(65536):
            pass

    async def fastagi(stream: trio.SocketStream) -> None:
        server = FakeAgiServer(stream)
        env = await server.env()
        assert b"agi_network_script: pick?assistant=sales\n" in env
        assert await server.cmd("ANSWER") == b"200 result=0\n"
        assert await server.cmd(f'EXEC AudioSocket "{ASID},127.0.0.1:{as_port}"') == (
            b"200 result=0\n"
        )
        assert await server.cmd("SET VARIABLE AI_STATUS done") == b"200 result=1\n"
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        agi_l = await nursery.start(functools.partial(trio.serve_tcp, fastagi, 0, host="127.0.0.1"))
        as_l = await nursery.start(functools.partial(trio.serve_tcp, sidecar, 0, host="127.0.0.1"))
        agi_port = agi_l[0].socket.getsockname()[1]
        as_port = as_l[0].socket.getsockname()[1]
        script = CallerScript().speak(tone * 5, at=0.0)
        with trio.fail_after(10):
            result = await run_call("127.0.0.1", agi_port, ChannelSpec(), script)
        nursery.cancel_scope.cancel()
    assert result.agi_status == "SUCCESS" and result.variables["AI_STATUS"] == "done"
    assert result.transcript[0].data == b"agi_network: yes\n"
    (session,) = result.audiosocket
    assert session.closed_by == "sidecar_hangup" and len(session.audio_frames()) == 10
    assert session.agent_audio_pcm() == tone * 10
    assert {"audiosocket_start", "first_agent_audio"} <= result.timings().keys()
    mix = mix_conversation(result)
    assert mix.shape[1] == 2 and np.abs(mix[:, 1]).max() > 7000
    out = tmp_path / "call.wav"
    write_wav(out, mix)
    again, rate = load_wav(out)
    assert rate == 8000 and len(again) == len(mix)


async def test_run_call_without_a_fastagi_server() -> None:
    with trio.socket.socket() as probe:  # a free port with nothing listening
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = await run_call("127.0.0.1", port, ChannelSpec())
    assert result.agi_status == "FAILURE" and result.agi.connect_error
    assert result.event_names()[-3:] == ["VarSet", "SoftHangupRequest", "Hangup"]


async def test_run_call_scripted_hangup_before_audio(autojump_clock: trio.abc.Clock) -> None:
    """A call-anchored hangup reaches an idle AGI: HANGUP line, then 511."""
    lines: list[bytes] = []

    async def fastagi(stream: trio.abc.Stream) -> None:
        server = FakeAgiServer(stream)
        await server.env()
        lines.append(await server.line())
        lines.append(await server.cmd("ANSWER"))
        await stream.aclose()

    ours, theirs = trio.testing.memory_stream_pair()
    channel = EmulatedChannel(ChannelSpec())
    player = CallerScript().hangup(at=1.5, anchor="call").player()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fastagi, theirs)
        player.start_call(trio.current_time())
        from fastagi_server.emulator.call import _drive_idle

        nursery.start_soon(_drive_idle, channel, player)
        result = await AgiSession(ours, channel, caller=player).run()
        nursery.cancel_scope.cancel()
    assert lines == [b"HANGUP\n", R511]
    assert result.transcript[-3].t == pytest.approx(1.5)
    assert player.log[0].what == "Hangup(cause=16)"


# -- AMI glue ---------------------------------------------------------------------------------------
async def test_ami_bridge_routes_hooks_and_events(autojump_clock: trio.abc.Clock) -> None:
    ami_server = pytest.importorskip("fastagi_server.emulator.ami_server")
    from fastagi_server.emulator.call import AmiBridge

    server = ami_server.FakeAmiServer()
    sent: list[tuple[str, dict[str, str]]] = []
    server.emit = lambda event, fields=None, **kw: sent.append((event, dict(fields or {})))
    bridge = AmiBridge.for_server(server)
    assert AmiBridge.for_server(server) is bridge
    got: list[bytes] = []

    async def sidecar(stream: trio.abc.Stream) -> None:
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
        got.append(data)

    async with trio.open_nursery() as nursery:
        ours, theirs = trio.testing.memory_stream_pair()
        channel = EmulatedChannel(ChannelSpec())
        bridge.attach(channel)
        connect = MemoryConnector(nursery, {9092: sidecar})
        session = AgiSession(ours, channel, connect=connect)
        nursery.start_soon(session.run)
        server_side = FakeAgiServer(theirs)
        await server_side.env()
        fake = server.channels[channel.name]
        assert (fake.uniqueid, fake.state, fake.callerid_num) == ("1795267856.1", 4, "5551234")
        assert await server_side.cmd("ANSWER") == b"200 result=0\n"
        assert await server_side.cmd("SET VARIABLE AI_STATUS done") == b"200 result=1\n"
        assert (fake.state, fake.variables["AI_STATUS"]) == (6, "done")
        nursery.start_soon(_later, 0.1, lambda: channel.play_dtmf("5"))
        nursery.start_soon(_later, 0.5, lambda: server.on_hangup(server.channels[channel.name]))
        r = await server_side.cmd(f"EXEC AudioSocket {ASID},127.0.0.1:9092")
        assert r == b"200 result=-1\n"
        assert await server_side.line() == b"HANGUP\n"
        await theirs.aclose()
    assert b"\x03\x00\x01\x35" in got[0]
    names = [e for e, _ in sent]
    assert names == ["Newstate", "VarSet", "DTMFEnd", "VarSet", "SoftHangupRequest", "Hangup"]
    assert sent[2][1]["DurationMs"] == "0" and sent[-1][1]["Cause"] == "0"
    assert channel.name not in server.channels
