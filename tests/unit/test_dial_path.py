"""Assistants whose audio is not slin 8 kHz: ``EXEC Dial "AudioSocket/host:port/uuid/c(codec),5,g"``.

The command the FastAGI side builds (quoted by the one AGI quoting function), the config's
``media_path``, ``agi-voice check-config``, and the emulator answering ``EXEC Dial`` the way
app_dial + chan_audiosocket do (virtual time over memory streams).
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import trio
import trio.testing

from fastagi_server.agi.handler import DIAL_ANSWER_TIMEOUT_SECONDS, audiosocket_dial
from fastagi_server.agi.protocol import UnsafeValueError, cmd_exec
from fastagi_server.cli import main as cli_main
from fastagi_server.emulator.channel import parse_args
from media_sidecar.config.loader import load_config
from media_sidecar.protocol.audiosocket import AudioSocketDecoder, Kind, encode_audio, encode_hangup
from tests.unit.test_emulator_agi import ASID, _later, memory_connector, start

UUID_BYTES = bytes.fromhex(ASID.replace("-", ""))


# -- the command --------------------------------------------------------------------------------
def test_dial_command_line_is_one_quoted_token():
    arg = audiosocket_dial("ulaw", ASID, "127.0.0.1:9092")
    assert DIAL_ANSWER_TIMEOUT_SECONDS == 5
    assert cmd_exec("Dial", arg) == (
        f'EXEC Dial "AudioSocket/127.0.0.1:9092/{ASID}/c(ulaw),5,g"\n'.encode())
    # Asterisk's tokenizer hands exactly that string to Dial (only argv[2] reaches the app)
    assert parse_args(cmd_exec("Dial", arg).decode().rstrip("\n"))[2] == arg
    ipv6 = audiosocket_dial("slin16", ASID, "[::1]:9092")
    assert ipv6 == f"AudioSocket/[::1]:9092/{ASID}/c(slin16),5,g"


def test_dial_argument_is_escaped_and_injection_refused():
    odd = audiosocket_dial("alaw", ASID, 'host"x\\y:1')
    line = cmd_exec("Dial", odd)
    assert line == f'EXEC Dial "AudioSocket/host\\"x\\\\y:1/{ASID}/c(alaw),5,g"\n'.encode()
    assert parse_args(line.decode().rstrip("\n"))[2] == odd
    with pytest.raises(UnsafeValueError):
        cmd_exec("Dial", audiosocket_dial("ulaw", ASID, "127.0.0.1:9092\nEXEC System x"))


@pytest.mark.parametrize("bad", ["", "u law", "c(ulaw)", "ulaw,30,gL(1)", "ULAW"])
def test_dial_refuses_what_is_not_a_format_name(bad):
    with pytest.raises(ValueError):
        audiosocket_dial(bad, ASID, "127.0.0.1:9092")


def test_media_path_follows_audio_format():
    base = load_config().assistants[0]
    assert base.audio_format == "slin" and base.media_path == "app"
    for fmt in ("ulaw", "alaw", "slin16"):
        assert dataclasses.replace(base, audio_format=fmt).media_path == "dial"


def test_check_config_shows_the_path(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("assistants:\n  g711: {provider: echo, audio_format: ulaw}\n"
                    "  plain: {provider: echo}\n")
    assert cli_main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "assistant g711: provider=echo" in out and "format=ulaw path=dial" in out
    assert 'EXEC Dial "AudioSocket/127.0.0.1:9092/<uuid>/c(ulaw),..."' in out
    assert "format=slin path=app" in out


# -- the emulator answers EXEC Dial like Asterisk -----------------------------------------------
class Sidecar:
    """Reads what the AudioSocket channel sends; sends ``frames`` slin frames, then ends."""

    def __init__(self, frames: int = 10, hangup: bool = True, linger: float = 0.0) -> None:
        self.frames, self.hangup, self.linger = frames, hangup, linger
        self.received: list[tuple[int, int]] = []  # (kind, payload length)
        self.first = b""
        self.eof_at: float | None = None

    async def __call__(self, stream: trio.abc.Stream) -> None:
        dec = AudioSocketDecoder()

        async def read() -> None:
            while data := await stream.receive_some(65536):
                if not self.first:
                    self.first = bytes(data[:19])
                dec.receive_data(data)
                for m in dec.events():
                    kind = getattr(m, "kind", None)
                    if kind is not None:
                        self.received.append((kind, len(m.payload)))  # type: ignore[attr-defined]
            self.eof_at = trio.current_time()

        async with trio.open_nursery() as n:
            n.start_soon(read)
            t0 = trio.current_time()
            for k in range(self.frames):
                await trio.sleep_until(t0 + 0.02 * (k + 1))
                await stream.send_all(encode_audio(bytes(320)))
            if self.linger:
                await trio.sleep(self.linger)
                return
            if self.hangup:
                await stream.send_all(encode_hangup())
            n.cancel_scope.cancel()
        await stream.aclose()


def dial(codec: str, port: int = 9092, options: str = "g", uuid: str = ASID) -> str:
    return f'EXEC Dial "AudioSocket/127.0.0.1:{port}/{uuid}/c({codec}),5,{options}"'


@pytest.mark.parametrize(("codec", "kind", "size"), [
    ("ulaw", Kind.AUDIO, 160), ("alaw", Kind.AUDIO, 160), ("slin16", Kind.AUDIO_SLIN16, 640),
    ("slin", Kind.AUDIO, 320)])
async def test_dial_audiosocket_carries_the_codec(autojump_clock, codec, kind, size):
    sidecar = Sidecar(frames=25)
    async with trio.open_nursery() as nursery:
        connect = memory_connector(nursery, {9092: sidecar})
        server, channel, box = await start(nursery, connect=connect)
        assert channel.state != 6  # not answered: Dial answers the caller when the leg does
        assert await server.cmd(dial(codec)) == b"200 result=0\n"  # g: back to the AGI
        assert await server.cmd("GET VARIABLE DIALSTATUS") == b"200 result=1 (ANSWER)\n"
        assert await server.cmd("CHANNEL STATUS") == b"200 result=6\n"
        await server.stream.aclose()
    assert sidecar.first == b"\x01\x00\x10" + UUID_BYTES  # the UUID frame first
    assert sidecar.received and set(sidecar.received) == {(int(kind), size)}
    session = box["result"].audiosocket[0]
    assert session.closed_by == "sidecar_hangup" and session.caller_codec == codec
    assert session.agent_codec == "slin"  # kind 0x10 from the server is slin, on every leg
    assert len(session.audio_frames()) == 25


async def test_without_g_dial_returns_minus_one_when_the_leg_ends(autojump_clock):
    async with trio.open_nursery() as nursery:
        connect = memory_connector(nursery, {9092: Sidecar()})
        server, _, _ = await start(nursery, connect=connect)
        assert await server.cmd(dial("ulaw", options="")) == b"200 result=-1\n"
        assert await server.cmd("GET VARIABLE DIALSTATUS") == b"200 result=1 (ANSWER)\n"
        await server.stream.aclose()


async def test_chanunavail_when_the_leg_cannot_be_made(autojump_clock):
    async with trio.open_nursery() as nursery:
        connect = memory_connector(nursery, {9092: Sidecar()})
        server, channel, box = await start(nursery, connect=connect)
        for command in (dial("ulaw", port=9099),  # nothing listens: connect refused
                        dial("ulaw", uuid="1795268159.29"),  # not a UUID: no connect attempt
                        dial("g729"),  # a codec the emulated channel cannot carry
                        'EXEC Dial "PJSIP/alice,5,g"'):  # not an AudioSocket channel
            assert await server.cmd(command) == b"200 result=0\n", command
            assert await server.cmd("GET VARIABLE DIALSTATUS") == \
                b"200 result=1 (CHANUNAVAIL)\n", command
        assert connect.calls == [("127.0.0.1", 9099)]
        assert channel.state != 6  # the caller was left alone
        await server.stream.aclose()
    assert not box["result"].audiosocket
    assert len(box["result"].unsupported) == 2


@pytest.mark.parametrize("how", ["hangup", "redirect"])
async def test_caller_leaving_the_bridge_ends_dial_like_the_app(autojump_clock, how):
    """The caller hangs up, or an AMI Redirect takes it out of the bridge: Dial returns -1,
    the AudioSocket leg is closed, and AGI sees HANGUP (a redirect looks like a hangup)."""
    sidecar = Sidecar(frames=0, linger=10.0)
    async with trio.open_nursery() as nursery:
        server, channel, box = await start(
            nursery, connect=memory_connector(nursery, {9092: sidecar}))
        leave = channel.hangup if how == "hangup" else (lambda: channel.redirect("t", "2001", 1))
        nursery.start_soon(_later, 1.0, leave)
        t0 = trio.current_time()
        assert await server.cmd(dial("alaw")) == b"200 result=-1\n"
        assert trio.current_time() - t0 == pytest.approx(1.0)
        assert await server.line() == b"HANGUP\n"
        assert await server.cmd("GET VARIABLE DIALSTATUS") == b"200 result=1 (ANSWER)\n"
        await server.stream.aclose()
    assert sidecar.eof_at is not None and sidecar.eof_at - t0 == pytest.approx(1.0)
    assert box["result"].audiosocket[0].closed_by == ("caller_hangup" if how == "hangup"
                                                      else "redirect")
    if how == "redirect":
        assert (channel.context, channel.exten) == ("t", "2001")


# -- the outcome after EXEC returns ---------------------------------------------------------------
class FakeConn:
    """What ``_converse`` uses of an AgiConnection, scripted."""

    def __init__(self, result: int, dialstatus: str | None = None,
                 hangup_line: bool = False) -> None:
        self.result, self.dialstatus, self.hangup_line = result, dialstatus, hangup_line
        self.hung_up = False
        self.sent: list[tuple[str, ...]] = []
        self.variables: dict[str, str] = {}

    async def channel_status(self) -> int:
        return 6

    async def exec(self, app: str, options: str) -> int:
        self.sent.append(("EXEC", app, options))
        return self.result

    async def get_variable(self, name: str) -> str | None:
        self.sent.append(("GET VARIABLE", name))
        self.hung_up = self.hung_up or self.hangup_line  # HANGUP comes before the reply
        return self.dialstatus

    async def wait_hangup(self) -> None:
        if self.hangup_line:
            self.hung_up = True
            return
        await asyncio.sleep(3600)

    async def set_variable(self, name: str, value: str) -> None:
        self.variables[name] = value


class FakeControl:
    def __init__(self, verdict=None) -> None:
        self.verdict = verdict
        self.waited: list[float] = []
        self.sent: list[object] = []

    async def send(self, msg) -> bool:
        self.sent.append(msg)
        return True

    async def wait_ended(self, uuid: str, time_limit: float):
        self.waited.append(time_limit)
        return self.verdict


def converse(conn: FakeConn, audio_format: str = "slin", verdict=None):
    from fastagi_server.agi.handler import AgiCallHandler
    from fastagi_server.calls import TrackedCall

    cfg = load_config()
    assistant = dataclasses.replace(cfg.assistants[0], audio_format=audio_format)
    control = FakeControl(verdict)
    handler = AgiCallHandler(cfg, control, object())  # type: ignore[arg-type]
    tracked = TrackedCall(uuid=ASID, channel="PJSIP/a-1", uniqueid="1.1", assistant=assistant)

    async def main():
        t0 = asyncio.get_running_loop().time()
        out = await handler._converse(conn, tracked, 0.0)  # type: ignore[arg-type]
        return out, asyncio.get_running_loop().time() - t0

    out, took = asyncio.run(main())
    return out, control, took


def test_app_minus_one_then_hangup_line_is_a_caller_hangup_not_a_connect_failure():
    """EXEC AudioSocket gives -1 for a hangup too; the HANGUP line that follows the result is
    read before the call is classed (the verdict can be late: a provider closing)."""
    out, control, _ = converse(FakeConn(-1, hangup_line=True))
    assert (out.status, out.reason) == ("CALLER_HANGUP", "channel hung up")
    out, _, took = converse(FakeConn(-1, hangup_line=False))
    assert (out.status, out.reason) == ("FAILED",
                                        "AudioSocket could not connect to the media sidecar")
    assert took < 1.0


@pytest.mark.parametrize(("result", "dialstatus", "status", "reason"), [
    (0, "CHANUNAVAIL", "FAILED",
     "Dial(AudioSocket/...) could not connect to the media sidecar (DIALSTATUS=CHANUNAVAIL)"),
    (0, "CONGESTION", "FAILED",
     "Dial(AudioSocket/...) could not connect to the media sidecar (DIALSTATUS=CONGESTION)"),
    (0, "NOANSWER", "FAILED", "Dial(AudioSocket/...) ended with DIALSTATUS=NOANSWER"),
    (0, "", "FAILED", "Dial(AudioSocket/...) ended with DIALSTATUS=(unset)"),
    (0, "ANSWER", "FAILED", "the media sidecar gave no verdict"),
])
def test_dial_outcome_follows_dialstatus(result, dialstatus, status, reason):
    conn = FakeConn(result, dialstatus)
    out, control, _ = converse(conn, "ulaw")
    assert (out.status, out.reason) == (status, reason)
    assert conn.sent[0] == ("EXEC", "Dial", f"AudioSocket/127.0.0.1:9092/{ASID}/c(ulaw),5,g")
    assert conn.sent[1] == ("GET VARIABLE", "DIALSTATUS")
    assert conn.variables["AI_STATUS"] == status
    # a leg that never connected has no verdict to wait for
    assert control.waited == ([1.0] if dialstatus == "ANSWER" else [])


def test_dial_with_a_verdict_or_a_caller_hangup():
    from media_sidecar.protocol.control import Ended

    out, _, _ = converse(FakeConn(0, "ANSWER"), "alaw",
                         verdict=Ended(uuid=ASID, status="COMPLETED", reason="goodbye"))
    assert (out.status, out.reason) == ("COMPLETED", "goodbye")
    out, _, _ = converse(FakeConn(-1, "ANSWER", hangup_line=True), "slin16")
    assert (out.status, out.reason) == ("CALLER_HANGUP", "channel hung up")
