"""Sans-I/O FastAGI codec against the Asterisk 22.10.1 golden captures (fixtures agi_A*.txt)."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastagi_server.agi.connection import AgiConnection
from fastagi_server.agi.protocol import (
    AgiConnectionClosed,
    AgiError,
    AGIInvalidCommand,
    AgiProtocolError,
    AgiRequest,
    AGIResultHangup,
    AgiTimeout,
    AGIUsageError,
    Bare,
    DeadChannel,
    EnvParser,
    HangupNotice,
    Response,
    ResponseReader,
    StrayLine,
    UnsafeValueError,
    build_command,
    cmd_answer,
    cmd_channel_status,
    cmd_exec,
    cmd_get_full_variable,
    cmd_get_variable,
    cmd_hangup,
    cmd_set_variable,
    cmd_verbose,
    quote_arg,
    raise_for,
)

_HERE = Path(__file__).resolve()
FIXTURE_DIRS = (
    _HERE.parents[1] / "fixtures" / "asterisk-22.10.1",
    _HERE.parents[3] / "shared" / "fixtures" / "asterisk-22.10.1",
)

# agi_A1.txt, copied byte for byte so the core golden tests never skip (checked against the
# file by test_embedded_a1_matches_fixture when the fixtures are present).
A1_RAW_ENV = (
    b"agi_network: yes\nagi_network_script: pick?assistant=sales\n"
    b"agi_request: agi://127.0.0.1:4573/pick?assistant=sales\n"
    b"agi_channel: Local/100@test-00000000;2\nagi_language: en\nagi_type: Local\n"
    b"agi_uniqueid: 1795267856.1\nagi_version: 22.10.1\nagi_callerid: 5551234\n"
    b"agi_calleridname: Probe\nagi_callingpres: 0\nagi_callingani2: 0\nagi_callington: 0\n"
    b"agi_callingtns: 0\nagi_dnid: unknown\nagi_rdnis: unknown\nagi_context: test\n"
    b"agi_extension: 100\nagi_priority: 1\nagi_enhanced: 0.0\nagi_accountcode: \n"
    b"agi_threadid: 140272405411520\nagi_arg_1: arg1\nagi_arg_2: arg2\n\n"
)
A1_REPLIES = (
    b"200 result=0\n200 result=1\n200 result=1 (hello world)\n"
    b"200 result=1 (Local/100@test-00000000;2|hello world)\n"
    b"200 result=1 (a4448b76-109e-464d-9398-6bacec55b641)\n200 result=0\n200 result=0\n"
    b"510 Invalid or unknown command\n"
    b"520-Invalid command syntax.  Proper usage follows:\n"
    b"Sets a variable to the current channel.\n520 End of proper usage.\n"
    b"200 result=0\n200 result=-1\n200 result=-1\n200 result=-2\n200 result=0\nHANGUP\n"
    b"200 result=1 (hello world)\n"
    b"511 Command Not Permitted on a dead channel or intercept routine\n"
    b"511 Command Not Permitted on a dead channel or intercept routine\n200 result=0\n"
)


def _fixture_text(name: str) -> str:
    for directory in FIXTURE_DIRS:
        path = directory / name
        if path.is_file():
            return path.read_text()
    pytest.skip(f"golden fixture {name} not found in {[str(d) for d in FIXTURE_DIRS]}")


def raw_env(name: str) -> bytes:
    """The 'raw env block (exact bytes)' section of a capture."""
    text = _fixture_text(name)
    line = text.split("==== raw env block (exact bytes) ====\n", 1)[1].split("\n", 1)[0]
    value = ast.literal_eval(line)
    assert isinstance(value, bytes)
    return value


def transcript_in(name: str) -> bytes:
    """Everything Asterisk sent after the env block ('<<' lines of the full transcript)."""
    text = _fixture_text(name)
    body = text.split("==== full AGI transcript ====\n", 1)[1].split("\n====", 1)[0]
    out = []
    for line in body.splitlines():
        _, sep, rest = line.partition("] << ")
        if sep and rest != "b'<EOF>'":
            out.append(ast.literal_eval(rest))
    data = b"".join(out)
    env = raw_env(name)
    assert data.startswith(env)
    return data[len(env) :]


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, prev = [], 0
    for p in points:
        chunks.append(data[prev:p])
        prev = p
    chunks.append(data[prev:])
    return chunks


def read_all(chunks: list[bytes]) -> list[object]:
    reader = ResponseReader()
    out: list[object] = []
    for chunk in chunks:
        reader.feed(chunk)
        out.extend(reader.events())
    return out


# --------------------------------------------------------------------------- env block

A1_ENV = {
    "agi_network": "yes",
    "agi_network_script": "pick?assistant=sales",
    "agi_request": "agi://127.0.0.1:4573/pick?assistant=sales",
    "agi_channel": "Local/100@test-00000000;2",
    "agi_language": "en",
    "agi_type": "Local",
    "agi_uniqueid": "1795267856.1",
    "agi_version": "22.10.1",
    "agi_callerid": "5551234",
    "agi_calleridname": "Probe",
    "agi_callingpres": "0",
    "agi_callingani2": "0",
    "agi_callington": "0",
    "agi_callingtns": "0",
    "agi_dnid": "unknown",
    "agi_rdnis": "unknown",
    "agi_context": "test",
    "agi_extension": "100",
    "agi_priority": "1",
    "agi_enhanced": "0.0",
    "agi_accountcode": "",
    "agi_threadid": "140272405411520",
    "agi_arg_1": "arg1",
    "agi_arg_2": "arg2",
}


def test_embedded_a1_matches_fixture() -> None:
    assert raw_env("agi_A1.txt") == A1_RAW_ENV
    assert transcript_in("agi_A1.txt") == A1_REPLIES


def test_env_golden_a1() -> None:
    parser = EnvParser()
    env = parser.feed(A1_RAW_ENV)
    assert env == A1_ENV
    assert list(env) == list(A1_ENV)  # order kept
    assert parser.leftover == b""
    req = AgiRequest.from_env(env)
    assert req.script == "pick"
    assert dict(req.query) == {"assistant": "sales"}
    assert req.args == ("arg1", "arg2")
    assert req.channel == "Local/100@test-00000000;2"
    assert req.uniqueid == "1795267856.1"
    assert (req.callerid, req.calleridname) == ("5551234", "Probe")
    assert req.dnid == "" and req.rdnis == ""
    assert req.env["agi_dnid"] == "unknown"
    assert (req.context, req.extension, req.language, req.version) == (
        "test",
        "100",
        "en",
        "22.10.1",
    )
    assert req.accountcode == ""


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_env_any_split_same_result(cuts: list[int]) -> None:
    data = A1_RAW_ENV + b"HANGUP\n200 result=0\n"
    parser = EnvParser()
    results = [parser.feed(chunk) for chunk in split_at(data, cuts)]
    done = [r for r in results if r is not None]
    assert done and done[0] == A1_ENV
    assert parser.leftover == b"HANGUP\n200 result=0\n"


def test_env_with_hangup_in_same_read_is_kept() -> None:
    parser = EnvParser()
    env = parser.feed(raw_env("agi_A2.txt") + b"HANGUP\n")
    assert env is not None
    assert parser.leftover == b"HANGUP\n"
    reader = ResponseReader()
    reader.feed(parser.leftover)
    assert list(reader.events()) == [HangupNotice()]


def test_env_query_and_unknown_callerid() -> None:
    block = (
        b"agi_network: yes\nagi_network_script: bot?lang=en&lang=de&x=\n"
        b"agi_channel: Local/s@agi-00000011;2\nagi_callerid: unknown\nagi_calleridname: unknown\n"
        b"agi_dnid: unknown\nagi_accountcode: \nagi_arg_1: arg1\nagi_arg_2: arg two\n"
        b"agi_arg_4: skipped\n\n"
    )
    env = EnvParser().feed(block)
    assert env is not None
    req = AgiRequest.from_env(env)
    assert req.script == "bot"
    assert dict(req.query) == {"lang": "de", "x": ""}
    assert req.callerid == "" and req.calleridname == "" and req.dnid == ""
    assert req.env["agi_callerid"] == "unknown"
    assert req.args == ("arg1", "arg two")


def test_env_script_absent_when_url_has_no_path() -> None:
    env = EnvParser().feed(b"agi_network: yes\nagi_channel: X\n\n")
    assert env is not None
    req = AgiRequest.from_env(env)
    assert req.script == "" and dict(req.query) == {}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "malformed AGI environment line 1"),
        (b"agi_network yes\n\n", "malformed AGI environment line 1"),
        (b"\n", "empty AGI environment"),
        (b"agi_x: " + b"a" * 9000 + b"\n", "longer than 8192 bytes"),
        (b"agi_x: " + b"a" * 9000, "longer than 8192 bytes"),
        (b"".join(b"agi_v%d: %s\n" % (i, b"x" * 100) for i in range(200)), "exceeds 16384 bytes"),
    ],
)
def test_env_errors(data: bytes, message: str) -> None:
    with pytest.raises(AgiProtocolError, match=message):
        EnvParser().feed(data)


def test_env_non_utf8_value_replaced_and_reported() -> None:
    parser = EnvParser()
    env = parser.feed(b"agi_network: yes\nagi_calleridname: Zo\xeb\n\n")
    assert env is not None
    assert env["agi_calleridname"] == "Zo\ufffd"
    assert parser.replaced == ["agi_calleridname"]


# --------------------------------------------------------------------------- responses


def test_golden_a1_response_stream() -> None:
    events = read_all([A1_REPLIES])
    responses = [e for e in events if isinstance(e, Response)]
    codes = [r.code for r in responses]
    assert codes == [200] * 7 + [510, 520] + [200] * 5 + [200, 511, 511, 200]
    assert responses[2].data == "hello world"
    assert responses[3].data == "Local/100@test-00000000;2|hello world"
    assert responses[0].result == "0" and responses[0].data is None
    usage = responses[8]
    assert usage.lines == (
        "520-Invalid command syntax.  Proper usage follows:",
        "Sets a variable to the current channel.",
        "520 End of proper usage.",
    )
    assert usage.usage == "Sets a variable to the current channel."
    assert [r.result_int for r in responses[9:13]] == [0, -1, -1, -2]
    # the unsolicited HANGUP comes between GET VARIABLE AGISTATUS and the next command
    idx = events.index(HangupNotice())
    assert isinstance(events[idx - 1], Response) and isinstance(events[idx + 1], Response)
    assert events[idx + 1].data == "hello world"  # type: ignore[attr-defined]
    assert responses[-3].extra == "Command Not Permitted on a dead channel or intercept routine"


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=100_000), max_size=20))
def test_response_any_split_same_result(cuts: list[int]) -> None:
    data = A1_REPLIES + b"200 result=1 (multi\nline) endpos=7\nHANGUP\n"
    expected = read_all([data])
    assert read_all(split_at(data, cuts)) == expected


def test_golden_a7_double_hangup_then_eof() -> None:
    events = read_all([transcript_in("agi_A7.txt")])
    assert events[-2:] == [HangupNotice(), HangupNotice()]


def test_golden_a2_hangup_after_exec_result() -> None:
    events = read_all([transcript_in("agi_A2.txt")])
    exec_idx = next(i for i, e in enumerate(events) if isinstance(e, Response) and e.result == "-1")
    assert events[exec_idx + 1] == HangupNotice()


@pytest.mark.parametrize(
    ("line", "result", "data", "extra"),
    [
        (b"200 result=0\n", "0", None, ""),
        (b"200 result=1 (value)\n", "1", "value", ""),
        (b"200 result=1 (a (b) c)\n", "1", "a (b) c", ""),
        (b"200 result=0 endpos=24000\n", "0", None, "endpos=24000"),
        (b"200 result=-1 endpos=0\n", "-1", None, "endpos=0"),
        (b"200 result=0 (timeout)\n", "0", "timeout", ""),
        (b"200 result=1 (speech) endpos=12 results=1\n", "1", "speech", "endpos=12 results=1"),
        (b"200 result= (timeout)\n", "", "timeout", ""),
        (b"200 result=1 ()\n", "1", "", ""),
    ],
)
def test_parse_200(line: bytes, result: str, data: str | None, extra: str) -> None:
    (resp,) = read_all([line])
    assert isinstance(resp, Response)
    assert (resp.code, resp.result, resp.data, resp.extra) == (200, result, data, extra)


def test_value_with_newline_continues_until_paren() -> None:
    # GET VARIABLE of a value "foo\n200 result=0": Asterisk does not escape it.
    events = read_all([b"200 result=1 (foo\n200 result=0)\nHANGUP\n"])
    assert events[0] == Response(
        200, "1", "foo\n200 result=0", "", ("200 result=1 (foo", "200 result=0)")
    )
    assert events[1] == HangupNotice()


def test_stray_lines_are_reported_not_raised() -> None:
    events = read_all([b"100 Trying...\ngarbage\n200 result=0\n"])
    assert events == [
        StrayLine("100 Trying..."),
        StrayLine("garbage"),
        Response(200, "0", None, "", ("200 result=0",)),
    ]


def test_reader_limits() -> None:
    reader = ResponseReader(max_line=100)
    reader.feed(b"2" * 101)
    with pytest.raises(AgiProtocolError, match="longer than 100 bytes"):
        list(reader.events())
    reader = ResponseReader()
    reader.feed(b"520-start\n" + b"usage\n" * 600)
    with pytest.raises(AgiProtocolError, match="usage block longer"):
        list(reader.events())


def test_raise_for_maps_codes() -> None:
    def one(line: bytes) -> Response:
        (r,) = read_all([line])
        assert isinstance(r, Response)
        return r

    ok = one(b"200 result=-1 endpos=0\n")
    assert raise_for(ok) is ok  # -1 is the app's result, not an exception
    with pytest.raises(AGIInvalidCommand):
        raise_for(one(b"510 Invalid or unknown command\n"))
    with pytest.raises(DeadChannel) as exc:
        raise_for(one(b"511 Command Not Permitted on a dead channel or intercept routine\n"))
    assert isinstance(exc.value, AGIResultHangup) and isinstance(exc.value, AgiError)
    assert exc.value.args[0] == 511
    assert exc.value.response is not None and exc.value.response.code == 511
    with pytest.raises(AGIUsageError, match="Sets a variable"):
        raise_for(read_all([b"520-Invalid\nSets a variable\n520 End of proper usage.\n"])[0])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- commands


def test_command_helpers_match_captures() -> None:
    assert cmd_answer() == b"ANSWER\n"
    assert cmd_hangup() == b"HANGUP\n"
    assert cmd_channel_status() == b"CHANNEL STATUS\n"
    assert cmd_get_variable("FOO") == b"GET VARIABLE FOO\n"
    assert cmd_get_variable("CALLERID(num)") == b"GET VARIABLE CALLERID(num)\n"
    assert cmd_set_variable("FOO", "hello world") == b'SET VARIABLE FOO "hello world"\n'
    assert cmd_set_variable("QUOTED", 'say "hi" back\\slash') == (
        b'SET VARIABLE QUOTED "say \\"hi\\" back\\\\slash"\n'
    )
    assert cmd_get_full_variable("${CHANNEL}|${FOO}") == b'GET FULL VARIABLE "${CHANNEL}|${FOO}"\n'
    assert cmd_exec("AudioSocket", "a4448b76-109e-464d-9398-6bacec55b641,127.0.0.1:9092") == (
        b'EXEC AudioSocket "a4448b76-109e-464d-9398-6bacec55b641,127.0.0.1:9092"\n'
    )
    assert cmd_exec("Wait", "1") == b'EXEC Wait "1"\n'
    assert cmd_exec("Answer") == b"EXEC Answer\n"
    assert cmd_verbose("hello world", 3) == b'VERBOSE "hello world" 3\n'
    assert build_command("STREAM FILE", "beep", "") == b'STREAM FILE "beep" ""\n'
    assert build_command("WAIT FOR DIGIT", -1) == b"WAIT FOR DIGIT -1\n"
    assert build_command("GET VARIABLE", Bare("FOO")) == b"GET VARIABLE FOO\n"


def test_quote_arg_escapes() -> None:
    assert quote_arg("") == '""'
    assert quote_arg('a"b\\c d') == '"a\\"b\\\\c d"'
    assert quote_arg("Zoë") == '"Zoë"'


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ('x\nEXEC UserEvent "Injected"', "line feed"),
        ("x\r", "carriage return"),
        ("x\x00y", "NUL"),
        ('say "hi"\nEXEC Dial PJSIP/evil', "line feed"),
    ],
)
def test_injection_refused(value: str, what: str) -> None:
    with pytest.raises(UnsafeValueError, match=what):
        quote_arg(value)
    with pytest.raises(UnsafeValueError):
        cmd_set_variable("GREETING", value)
    with pytest.raises(UnsafeValueError):
        cmd_exec("AudioSocket", value)
    with pytest.raises(UnsafeValueError):
        cmd_get_full_variable(value)
    with pytest.raises(UnsafeValueError):
        cmd_verbose(value)
    assert issubclass(UnsafeValueError, ValueError)


@pytest.mark.parametrize("name", ["FOO BAR", "FOO\nEXEC", 'A"B', "", "X;Y", "${FOO}"])
def test_bad_variable_names_refused(name: str) -> None:
    with pytest.raises(UnsafeValueError, match="variable name"):
        cmd_get_variable(name)
    with pytest.raises(UnsafeValueError, match="variable name"):
        cmd_set_variable(name, "v")


def test_bad_tokens_refused() -> None:
    with pytest.raises(UnsafeValueError, match="application name"):
        cmd_exec("System rm", "x")
    with pytest.raises(UnsafeValueError, match="verb"):
        build_command("NOOP\nEXEC")
    with pytest.raises(UnsafeValueError, match="bare"):
        build_command("EXEC", Bare("a b"))
    with pytest.raises(UnsafeValueError, match="8191-byte"):
        cmd_set_variable("BIG", "x" * 8200)
    assert len(cmd_set_variable("BIG", "x" * (8191 - len('SET VARIABLE BIG ""\n')))) == 8191


# --------------------------------------------------------------------------- asyncio shell


class ScriptedAsterisk:
    """The Asterisk side of an AgiConnection: each command written gets the next scripted
    reply bytes fed to the reader (replies are never available before their command)."""

    def __init__(self, env: bytes, replies: list[bytes], eof_at_end: bool = True) -> None:
        self.reader = asyncio.StreamReader()
        self.reader.feed_data(env)
        self.replies = list(replies)
        self.eof_at_end = eof_at_end
        self.written: list[bytes] = []
        if not self.replies and eof_at_end:
            self.reader.feed_eof()

    def write(self, data: bytes) -> None:
        self.written.append(data)
        if self.replies:
            self.reader.feed_data(self.replies.pop(0))
            if not self.replies and self.eof_at_end:
                self.reader.feed_eof()

    async def drain(self) -> None:
        return None

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        return None

    async def wait_closed(self) -> None:
        return None


def _conn(
    env: bytes, replies: list[bytes] | None = None, eof: bool = True
) -> tuple[AgiConnection, list[bytes]]:
    peer = ScriptedAsterisk(env, replies or [], eof)
    return AgiConnection(peer.reader, peer), peer.written  # type: ignore[arg-type]


def test_connection_env_then_commands_with_hangups() -> None:
    async def main() -> None:
        conn, written = _conn(
            A1_RAW_ENV + b"HANGUP\n",  # HANGUP in the same read as the env block (A1 idle case)
            [
                b"200 result=1 (hello world)\n",
                b"511 Command Not Permitted on a dead channel or intercept routine\n",
                b"200 result=1\n",
                b"200 result=-2\nHANGUP\n",  # result first, then HANGUP (B.4 ordering)
                b"520-Invalid command syntax.  Proper usage follows:\n",
            ],
        )
        req = await conn.read_env(1.0)
        assert req.script == "pick"
        assert conn.hung_up  # the HANGUP that arrived with the env block
        assert await conn.get_variable("FOO") == "hello world"
        with pytest.raises(DeadChannel):
            await conn.answer()
        await conn.set_variable("AI_STATUS", "DONE")
        assert await conn.exec("NoSuchApp", "foo") == -2
        with pytest.raises(AgiConnectionClosed):  # EOF in the middle of the usage block
            await conn.command(b"SET VARIABLE\n")
        with pytest.raises(AgiConnectionClosed):
            await conn.command(b"NOOP\n")
        assert written == [
            b"GET VARIABLE FOO\n",
            b"ANSWER\n",
            b'SET VARIABLE AI_STATUS "DONE"\n',
            b'EXEC NoSuchApp "foo"\n',
            b"SET VARIABLE\n",
        ]
        assert conn.closed

    asyncio.run(main())


def test_connection_a7_exit_on_hangup_then_eof() -> None:
    async def main() -> None:
        conn, _ = _conn(A1_RAW_ENV, [b"200 result=0\nHANGUP\nHANGUP\n"])
        await conn.read_env(1.0)
        await conn.answer()
        with pytest.raises(AgiConnectionClosed, match="after HANGUP"):
            await conn.get_variable("FOO")
        assert conn.hung_up

    asyncio.run(main())


def test_connection_eof_before_blank_line_is_clean_error() -> None:
    async def main() -> None:
        conn, _ = _conn(b"agi_network: yes\n")
        with pytest.raises(AgiConnectionClosed, match="before the blank line"):
            await conn.read_env(1.0)

    asyncio.run(main())


def test_connection_env_timeout() -> None:
    async def main() -> None:
        conn, _ = _conn(b"agi_network: yes\n", eof=False)
        with pytest.raises(AgiTimeout, match="no complete AGI environment within 0.05 s"):
            await conn.read_env(0.05)

    asyncio.run(main())


def test_connection_command_timeout_desynchronises() -> None:
    async def main() -> None:
        conn, _ = _conn(A1_RAW_ENV, [b""], eof=False)
        await conn.read_env(1.0)
        with pytest.raises(AgiTimeout, match="no reply to 'ANSWER'"):
            await conn.command(cmd_answer(), timeout=0.05)
        with pytest.raises(AgiProtocolError, match="unusable"):
            await conn.command(cmd_answer())

    asyncio.run(main())


def test_connection_refuses_multi_line_command() -> None:
    async def main() -> None:
        conn, written = _conn(A1_RAW_ENV)
        await conn.read_env(1.0)
        with pytest.raises(AgiProtocolError, match="one LF-terminated line"):
            await conn.command(b'SET VARIABLE INJ "x\nEXEC UserEvent "Injected"\n')
        assert written == []

    asyncio.run(main())


def test_connection_wait_hangup() -> None:
    async def main() -> None:
        conn, _ = _conn(A1_RAW_ENV + b"HANGUP\nHANGUP\n", eof=False)
        await conn.read_env(1.0)
        await conn.wait_hangup()
        assert conn.hung_up

    asyncio.run(main())
