"""The Asterisk side of FastAGI, in trio: a channel running ``AGI(agi://host:port/script,...)``.

It connects to a FastAGI server, sends the request block byte for byte as Asterisk 22.10.1 does
(``agi_A1.txt``), then serves one command per line the way ``res_agi.c`` ``run_agi`` does:

* tokenising by ``parse_args`` rules (space/tab, ``"`` toggles quoting, ``\\`` escapes the next
  character, no newline escape, a trailing ``\\r`` stays in the last argument);
* ``510`` for an unknown command, ``520`` usage blocks, ``511`` after a hangup or redirect for
  every command not allowed on a dead channel;
* the unsolicited ``HANGUP`` line at the next loop iteration after a hangup or an AMI redirect
  (idle: at once; during a command: after that command's own result), never with
  ``AGISIGHUP=no``; ``AGIEXITONHANGUP=yes`` sends it twice and closes; when the server closes,
  the post-loop ``HANGUP`` (A5);
* ``EXEC AudioSocket "uuid,host:port"`` blocks for the whole AudioSocket session
  (:mod:`.audiosocket_side`) and answers with the app's return value;
* ``EXEC Dial "AudioSocket/host:port/uuid/c(codec),timeout,g"`` bridges the caller to an
  AudioSocket channel (chan_audiosocket): the caller's frames in that codec, ``DIALSTATUS``
  set, ``CHANUNAVAIL`` when the channel cannot connect (see :meth:`AgiSession._dial`).

The channel is an :class:`EmulatedChannel` built from a :class:`ChannelSpec`; AMI glue drives it
with :meth:`EmulatedChannel.hangup`, :meth:`~EmulatedChannel.redirect` and
:meth:`~EmulatedChannel.play_dtmf`, and receives its events through ``event_sink``. As in the
captures, the ``SoftHangupRequest``/``Hangup`` events of a hangup, and the ``Newexten`` of a
redirect, come only after the AGI connection closed (A1, A2, A3).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from fastagi_server.emulator.audiosocket_side import (
    AudioSocketConfig,
    AudioSocketResult,
    AudioSocketSession,
    CallerCodec,
)
from fastagi_server.emulator.caller import CallerPlayer
from fastagi_server.emulator.channel import (
    STATE_UP,
    ChannelSpec,
    EmulatedChannel,
    EventSink,
    ast_false,
    ast_true,
    env_block,
    is_libuuid,
    parse_args,
    parse_hostport,
)

AGI_PORT = 4573
AGI_BUF_LEN = 8192  # fgets buffer: a longer line is cut at 8191 bytes, the rest is a new command
AGI_CONNECT_TIMEOUT = 2.0  # MAX_AGI_CONNECT
AUDIOSOCKET_CONNECT_TIMEOUT = 2.0  # MAX_CONNECT_TIMEOUT_MSEC in res_audiosocket.c

R_OK0 = "200 result=0\n"
R_OK1 = "200 result=1\n"
R_MINUS1 = "200 result=-1\n"
R_510 = "510 Invalid or unknown command\n"
R_511 = "511 Command Not Permitted on a dead channel or intercept routine\n"
R_520 = "520 Invalid command syntax.  Proper usage not available.\n"

# Usage texts seen on 22.10.1; commands without one here answer with the one-line 520 form.
USAGE: dict[tuple[str, ...], str] = {("set", "variable"): "Sets a variable to the current channel."}

Connector = Callable[[str, int], Awaitable[trio.abc.Stream]]
AudioRunner = Callable[[trio.abc.Stream, str, EmulatedChannel], Awaitable[AudioSocketResult]]
"""Runs the AudioSocket side of an answered call on ``stream`` (uuid and channel given) in place
of :class:`AudioSocketSession`: the load generator (:mod:`.loadgen`) plugs in here."""


@dataclass(frozen=True, slots=True)
class TranscriptLine:
    """One line on the AGI socket: ``<<`` Asterisk wrote it, ``>>`` the server did (as the
    captures label them); ``data`` is the exact bytes, newline included."""

    t: float
    direction: str
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "surrogateescape").rstrip("\n")


@dataclass(slots=True)
class AgiResult:
    """Everything one AGI session did. ``variables`` is the final channel state (with AGISTATUS)."""

    agi_status: str = "SUCCESS"
    transcript: list[TranscriptLine] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    audiosocket: list[AudioSocketResult] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    connect_error: str | None = None
    started_at: float = 0.0
    ended_at: float = 0.0

    def lines(self, direction: str) -> list[str]:
        """The text of every line sent in one direction (``"<<"`` or ``">>"``)."""
        return [x.text for x in self.transcript if x.direction == direction]


class _LineReader:
    """``fgets`` on the AGI socket. Cancel-safe: bytes read are kept in the buffer."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._buf = bytearray()
        self._eof = False

    async def readline(self) -> bytes | None:
        """A line with its LF, an 8191-byte cut, the last partial line at EOF, or None at EOF."""
        limit = AGI_BUF_LEN - 1
        while True:
            nl = self._buf.find(b"\n", 0, limit)
            if nl >= 0 or len(self._buf) >= limit or (self._eof and self._buf):
                end = nl + 1 if nl >= 0 else min(limit, len(self._buf))
                line = bytes(self._buf[:end])
                del self._buf[:end]
                return line
            if self._eof:
                return None
            try:
                data = await self._stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if data:
                self._buf += data
            else:
                self._eof = True


_WOKEN = object()  # _next_line: the channel hung up while we waited for a command


@dataclass(frozen=True, slots=True)
class _Command:
    words: tuple[str, ...]
    handler: str | None  # method name; None: a real Asterisk command the emulator lacks
    dead_ok: bool = False


def _table() -> list[_Command]:
    live = (
        "get data|get option|receive char|receive text|record file|say alpha|say date|"
        "say datetime|say digits|say number|say phonetic|say time|send image|send text|"
        "set autohangup|set callerid|set music|stream file|control stream file|tdd mode|"
        "wait for digit|speech create|speech set|speech load grammar|speech activate grammar|"
        "speech deactivate grammar|speech recognize|gosub"
    )
    cmds = [_Command(tuple(w.split()), None) for w in live.split("|")]
    cmds += [
        _Command(("answer",), "_answer"),
        _Command(("channel", "status"), "_channel_status"),
        _Command(("hangup",), "_hangup"),
        _Command(("set", "context"), "_set_location"),
        _Command(("set", "extension"), "_set_location"),
        _Command(("set", "priority"), "_set_location"),
        _Command(("asyncagi", "break"), None, True),
        _Command(("speech", "destroy"), None, True),
        _Command(("speech", "unload", "grammar"), None, True),
        _Command(("database", "del"), "_database", True),
        _Command(("database", "deltree"), "_database", True),
        _Command(("database", "get"), "_database", True),
        _Command(("database", "put"), "_database", True),
        _Command(("exec",), "_exec", True),
        _Command(("get", "full", "variable"), "_get_full_variable", True),
        _Command(("get", "variable"), "_get_variable", True),
        _Command(("noop",), "_noop", True),
        _Command(("set", "variable"), "_set_variable", True),
        _Command(("verbose",), "_verbose", True),
    ]
    return cmds


COMMANDS = _table()


def find_command(argv: list[str]) -> _Command | None:
    """``find_command(argv, 0)``: every word of the command matches, case-insensitively."""
    for cmd in COMMANDS:
        n = len(cmd.words)
        if len(argv) >= n and all(a.lower() == w for a, w in zip(argv, cmd.words, strict=False)):
            return cmd
    return None


class AgiSession:
    """One FastAGI connection, Asterisk side. ``await AgiSession(...).run()`` once.

    ``connect`` opens the AudioSocket connection for ``EXEC AudioSocket`` (default: TCP);
    tests pass a function returning one end of a memory stream pair.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        channel: EmulatedChannel,
        *,
        request: str = f"agi://127.0.0.1:{AGI_PORT}/",
        caller: CallerPlayer | None = None,
        audiosocket_config: AudioSocketConfig | None = None,
        connect: Connector | None = None,
        answer_delay: float = 0.0,
        database: dict[tuple[str, str], str] | None = None,
        audio_runner: AudioRunner | None = None,
    ) -> None:
        self._stream = stream
        self._reader = _LineReader(stream)
        self.channel = channel
        self._request = request
        self._caller = caller
        self._as_config = audiosocket_config
        self._connect = connect or _tcp_connect
        self._answer_delay = answer_delay
        self._audio_runner = audio_runner
        self._db = {} if database is None else database
        self.result = AgiResult()

    async def run(self) -> AgiResult:
        """Send the request block, serve commands until the server closes, close the socket.

        Ends the channel (events ``VarSet AGISTATUS``, then Hangup or Newexten) and returns the
        result. Does not raise for anything the server does; cancellation propagates.
        """
        res = self.result
        res.started_at = trio.current_time()
        try:
            block = env_block(self.channel.spec, self._request)
            for line in block.splitlines(keepends=True):
                res.transcript.append(TranscriptLine(res.started_at, "<<", line))
            await self._write(block, record=False)
            res.agi_status = await self._loop()
        finally:
            res.ended_at = trio.current_time()
            with trio.move_on_after(1.0) as cleanup:
                cleanup.shield = True
                await self._stream.aclose()
        self.channel.finish_agi(res.agi_status)
        res.variables = dict(self.channel.variables)
        return res

    async def _loop(self) -> str:
        sighup = not ast_false(self.channel.variables.get("AGISIGHUP", ""))
        exit_on_hangup = ast_true(self.channel.variables.get("AGIEXITONHANGUP", ""))
        dead = False
        status = "SUCCESS"
        while True:
            if not dead and self.channel.soft_hungup:
                dead = True
                status = "HANGUP" if status == "SUCCESS" else status
                if sighup:
                    await self._write(b"HANGUP\n")
                if exit_on_hangup:
                    break
            raw = await self._next_line(watch_hangup=not dead)
            if raw is _WOKEN:
                continue
            if raw is None:
                break
            assert isinstance(raw, bytes)
            self.result.transcript.append(TranscriptLine(trio.current_time(), ">>", raw))
            if raw[:7].lower() == b"failure":  # run_agi: "failure" from the script ends AGI
                status = "FAILURE"
                break
            await self._dispatch(raw, dead)
        if sighup:  # the post-loop notification, written even to a closed socket
            await self._write(b"HANGUP\n")
        return status

    async def _next_line(self, *, watch_hangup: bool) -> bytes | None | object:
        if not watch_hangup:
            return await self._reader.readline()
        got: bytes | None | object = _WOKEN
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                nonlocal got
                got = await self._reader.readline()
                nursery.cancel_scope.cancel()

            async def hangup() -> None:
                await self.channel.wait_soft_hangup()
                nursery.cancel_scope.cancel()

            nursery.start_soon(read)
            nursery.start_soon(hangup)
        return got

    async def _write(self, data: bytes | str, *, record: bool = True) -> None:
        raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
        try:
            await self._stream.send_all(raw)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the server is gone; Asterisk's write fails silently too
        if record:
            now = trio.current_time()
            for line in raw.splitlines(keepends=True):
                self.result.transcript.append(TranscriptLine(now, "<<", line))

    async def _dispatch(self, raw: bytes, dead: bool) -> None:
        text = raw.split(b"\0", 1)[0]  # a C string ends at NUL
        if text.endswith(b"\n"):
            text = text[:-1]
        line = text.decode("utf-8", "surrogateescape")
        argv = parse_args(line)
        cmd = find_command(argv)
        if cmd is None:
            await self._write(R_510)
        elif dead and not cmd.dead_ok:
            await self._write(R_511)
        elif cmd.handler is None:
            self.result.unsupported.append(line)
            await self._write(R_510)
        else:
            show_usage: bool = await getattr(self, cmd.handler)(argv)
            if show_usage:
                usage = USAGE.get(cmd.words)
                if usage is None:
                    await self._write(R_520)
                else:
                    await self._write(
                        "520-Invalid command syntax.  Proper usage follows:\n"
                        f"{usage}\n520 End of proper usage.\n"
                    )

    # -- command handlers: return True to send the usage block -----------------------------------
    async def _answer(self, argv: list[str]) -> bool:
        if self.channel.state != STATE_UP:
            await trio.sleep(self._answer_delay)
            self.channel.answer()
        await self._write(R_OK0)
        return False

    async def _channel_status(self, argv: list[str]) -> bool:
        if len(argv) > 3:
            return True
        if len(argv) == 3 and argv[2] != self.channel.name:
            await self._write(R_MINUS1)
        else:
            await self._write(f"200 result={self.channel.state}\n")
        return False

    async def _hangup(self, argv: list[str]) -> bool:
        if len(argv) > 2:
            return True
        if len(argv) == 2 and argv[1] != self.channel.name:
            await self._write(R_MINUS1)
            return False
        self.channel.hangup()
        await self._write(R_OK1)
        return False

    async def _set_location(self, argv: list[str]) -> bool:
        if len(argv) != 3:
            return True
        self.channel.set_location(argv[1].lower(), argv[2])
        await self._write(R_OK0)
        return False

    async def _database(self, argv: list[str]) -> bool:
        op, n = argv[1].lower(), len(argv)
        if op == "put" and n == 5:
            self._db[(argv[2], argv[3])] = argv[4]
            await self._write(R_OK1)
        elif op == "get" and n == 4:
            value = self._db.get((argv[2], argv[3]))
            await self._write(R_OK0 if value is None else f"200 result=1 ({value})\n")
        elif op == "del" and n == 4:
            found = self._db.pop((argv[2], argv[3]), None) is not None
            await self._write(R_OK1 if found else R_OK0)
        elif op == "deltree" and n in (3, 4):
            prefix = argv[3] if n == 4 else ""
            keys = [k for k in self._db if k[0] == argv[2] and k[1].startswith(prefix)]
            for k in keys:
                del self._db[k]
            await self._write(R_OK1 if keys else R_OK0)
        else:
            return True
        return False

    async def _get_variable(self, argv: list[str]) -> bool:
        if len(argv) != 3:
            return True
        value = self.channel.get_variable(argv[2])
        await self._write(R_OK0 if value is None else f"200 result=1 ({value[:1023]})\n")
        return False

    async def _get_full_variable(self, argv: list[str]) -> bool:
        if len(argv) not in (4, 5):
            return True
        if len(argv) == 5 and argv[4] != self.channel.name:
            await self._write(R_OK0)
        else:
            await self._write(f"200 result=1 ({self.channel.expand(argv[3])})\n")
        return False

    async def _set_variable(self, argv: list[str]) -> bool:
        if len(argv) != 4:
            return True
        self.channel.set_variable(argv[2], argv[3])
        await self._write(R_OK1)
        return False

    async def _noop(self, argv: list[str]) -> bool:
        await self._write(R_OK0)
        return False

    async def _verbose(self, argv: list[str]) -> bool:
        if len(argv) < 2:
            return True
        await self._write(R_OK1)
        return False

    async def _exec(self, argv: list[str]) -> bool:
        if len(argv) < 2:
            return True
        data = argv[2] if len(argv) >= 3 else ""  # only argv[2] reaches the app
        if ast_true(self.channel.variables.get("AGIEXECFULL", "")):
            data = self.channel.expand(data)
        code = await self._run_app(argv[1].lower(), data)
        await self._write(f"200 result={code}\n")
        return False

    # -- dialplan applications for EXEC ----------------------------------------------------------
    async def _run_app(self, app: str, data: str) -> int:
        ch = self.channel
        if app == "audiosocket":
            return await self._audiosocket(data)
        if app == "dial":
            return await self._dial(data)
        if app == "wait":
            return await self._wait(data)
        if app in ("noop", "verbose", "log"):
            return 0
        if app == "goto":
            return ch.goto(data)
        if app == "userevent":
            name, *pairs = data.split(",")
            fields = dict(p.partition(":")[::2] for p in pairs if ":" in p)
            ch.emit(
                "UserEvent", UserEvent=name, **{k.strip(): v.strip() for k, v in fields.items()}
            )
            return 0
        if app == "set":
            name, _, value = data.partition("=")
            ch.set_variable(name.strip(), value)
            return 0
        if app == "answer":
            return await self._answer_app()
        if app == "hangup":
            ch.hangup(int(data) if data.strip().isdigit() else 16)
            return -1
        return -2  # pbx_findapp failed: "Could not find application"

    async def _answer_app(self) -> int:
        if self.channel.state != STATE_UP:
            await trio.sleep(self._answer_delay)
            self.channel.answer()
        return 0

    async def _wait(self, data: str) -> int:
        try:
            seconds = max(0.0, float(data or 0))
        except ValueError:
            seconds = 0.0
        if self.channel.soft_hungup:  # seen on 22.10.1: EXEC Wait 1 on a dead channel waits
            await trio.sleep(seconds)
            return 0
        with trio.move_on_after(seconds):
            await self.channel.wait_soft_hangup()
            return -1
        return 0

    async def _audiosocket(self, data: str) -> int:
        """``AudioSocket(uuid,host:port)`` as app_audiosocket.c runs it under EXEC."""
        ident, _, server = data.partition(",")
        if not ident or not server or not is_libuuid(ident):
            return -1  # "Failed to parse UUID": no connection is attempted
        addr = parse_hostport(server)
        if addr is None:
            return -1
        try:
            with trio.fail_after(AUDIOSOCKET_CONNECT_TIMEOUT):
                stream = await self._connect(*addr)
        except (OSError, trio.TooSlowError):
            return -1
        ch = self.channel
        if ch.state != STATE_UP:  # A8: connected, closed with zero bytes, channel left alone
            await trio.aclose_forcefully(stream)
            now = trio.current_time()
            self.result.audiosocket.append(
                AudioSocketResult(ident, closed_by="not_answered", started_at=now, ended_at=now)
            )
            return -1
        if self._audio_runner is not None:
            res = await self._audio_runner(stream, ident, ch)
            self.result.audiosocket.append(res)
            return res.result_code
        return (await self._serve_audio(stream, ident, self._as_config)).result_code

    async def _serve_audio(self, stream: trio.abc.Stream, ident: str,
                           config: AudioSocketConfig | None) -> AudioSocketResult:
        """One AudioSocket session on this channel (the app's, or Dial's AudioSocket leg)."""
        ch = self.channel
        session = AudioSocketSession(
            stream, ident, caller=self._caller, config=config, on_action=ch.apply_caller_action
        )
        ch.attach_audio(session)
        try:
            result = await session.run()
        finally:
            ch.detach_audio(session)
        self.result.audiosocket.append(result)
        return result


    async def _dial(self, data: str) -> int:
        """``Dial(AudioSocket/host:port/uuid[/c(codec)],timeout,options)`` as app_dial.c and
        chan_audiosocket.c run it under EXEC, for one AudioSocket destination.

        Requesting the channel parses the UUID and codec and connects to the server (2 s), all
        before anything is dialled: any failure there is cause 38, ``DIALSTATUS=CHANUNAVAIL``,
        Dial returns 0 and the caller is left alone. Then the channel is called (it answers at
        once: the UUID frame goes out first), the caller is answered if it was not, and the two
        are bridged until one leaves (``DIALSTATUS=ANSWER`` either way):

        * the AudioSocket leg hangs up (the server sent ``00 00 00``, closed, or broke the
          protocol): with ``g`` Dial returns 0 (the AGI goes on), without it -1;
        * the caller hangs up, or an AMI Redirect takes it out of the bridge: -1, and AGI sees
          ``HANGUP`` as with the application.

        Caller frames go out in the leg's codec (``c()``, else the caller's own:
        ``audiosocket_config.caller_codec``): G.711 160 bytes as kind ``0x10``, slin16 640
        bytes as ``0x12``. What the server sends is read as Asterisk reads it, kind ``0x10`` as
        slin 8 kHz whatever the leg's codec. The channel driver has no 2 s idle timeout. Other
        channel technologies, several destinations and codecs the emulator cannot play are
        listed in ``result.unsupported`` and give ``CHANUNAVAIL``.
        """
        ch = self.channel
        args = _split_app_args(data)
        dest, options = args[0], (args[2] if len(args) > 2 else "")
        if ch.soft_hungup:  # app_dial: the caller hung up before anything was dialled
            ch.set_variable("DIALSTATUS", "CANCEL")
            return -1
        tech, _, resource = dest.partition("/")
        if tech.lower() != "audiosocket" or "&" in dest:
            self.result.unsupported.append(f"Dial({data})")
            ch.set_variable("DIALSTATUS", "CHANUNAVAIL")
            return 0
        server, _, rest = resource.partition("/")
        ident, _, chan_options = rest.partition("/")
        addr = parse_hostport(server)
        codec_opt = re.search(r"c\(([^)]*)\)", chan_options)
        name = codec_opt.group(1).lower() if codec_opt else self._caller_codec()
        codec = _DIAL_CODECS.get(name)
        if codec is None:
            self.result.unsupported.append(f"Dial({data}): codec {name!r}")
        stream = None
        if addr is not None and is_libuuid(ident) and codec is not None:
            try:
                with trio.fail_after(AUDIOSOCKET_CONNECT_TIMEOUT):
                    stream = await self._connect(*addr)
            except (OSError, trio.TooSlowError):
                stream = None
        if stream is None or codec is None:  # "Unable to create channel of type 'AudioSocket'"
            ch.set_variable("DIALSTATUS", "CHANUNAVAIL")
            return 0
        ch.answer()  # the AudioSocket channel answered; the bridge answers the caller
        base = self._as_config or AudioSocketConfig()
        config = dataclasses.replace(base, caller_codec=codec, agent_codec="slin",
                                     idle_timeout=None)
        result = await self._serve_audio(stream, ident, config)
        ch.set_variable("DIALSTATUS", "ANSWER")
        if result.closed_by in ("caller_hangup", "redirect"):
            return -1
        return 0 if "g" in re.sub(r"\([^)]*\)", "", options) else -1

    def _caller_codec(self) -> str:
        """The caller's own format: what Dial without ``c()`` gives the AudioSocket leg."""
        return self._as_config.caller_codec if self._as_config is not None else "slin"


_DIAL_CODECS: dict[str, CallerCodec] = {"slin": "slin", "slin16": "slin16", "ulaw": "ulaw",
                                        "alaw": "alaw"}
"""Formats the emulated AudioSocket channel can carry (``c(...)``)."""


def _split_app_args(data: str) -> list[str]:
    """``AST_STANDARD_APP_ARGS``: split on commas outside parentheses (``c(ulaw)`` is one)."""
    out: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in data:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth <= 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


async def _tcp_connect(host: str, port: int) -> trio.abc.Stream:
    return await trio.open_tcp_stream(host, port)


async def run_agi(
    host: str,
    port: int,
    channel: EmulatedChannel | ChannelSpec,
    *,
    caller: CallerPlayer | None = None,
    audiosocket_config: AudioSocketConfig | None = None,
    connect: Connector | None = None,
    answer_delay: float = 0.0,
    audio_runner: AudioRunner | None = None,
) -> AgiResult:
    """Connect to the FastAGI server at ``host:port`` and run the session to its end.

    A server that does not accept within 2 s gives ``agi_status == "FAILURE"`` and
    ``connect_error`` (as AGI() with nothing listening), not an exception.
    """
    ch = channel if isinstance(channel, EmulatedChannel) else EmulatedChannel(channel)
    script = ch.spec.script
    request = ch.spec.request or f"agi://{host}:{port}/{script or ''}"
    try:
        with trio.fail_after(AGI_CONNECT_TIMEOUT):
            stream = await trio.open_tcp_stream(host, port)
    except (OSError, trio.TooSlowError) as exc:
        ch.finish_agi("FAILURE")
        now = trio.current_time()
        return AgiResult(
            "FAILURE",
            variables=dict(ch.variables),
            connect_error=repr(exc),
            started_at=now,
            ended_at=now,
        )
    session = AgiSession(
        stream,
        ch,
        request=request,
        caller=caller,
        audiosocket_config=audiosocket_config,
        connect=connect,
        answer_delay=answer_delay,
        audio_runner=audio_runner,
    )
    return await session.run()


__all__ = [
    "AGI_PORT",
    "AudioRunner",
    "AgiResult",
    "AgiSession",
    "ChannelSpec",
    "Connector",
    "EmulatedChannel",
    "EventSink",
    "TranscriptLine",
    "env_block",
    "find_command",
    "is_libuuid",
    "parse_args",
    "run_agi",
]
