"""Sans-I/O AMI codec against the Asterisk 22.10.1 captures (as_B6_ami.log, misc.txt)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastagi_server.ami.codec import (
    MAX_LINE_BYTES,
    AmiMessage,
    AmiParser,
    AmiProtocolError,
    Banner,
    UnsafeValueError,
    encode_message,
    sanitize_key,
    sanitize_value,
)

BANNER = b"Asterisk Call Manager/11.0.0\r\n"  # misc.txt: no blank line after it

# as_B6_ami.log, "[   1.202] Event: DTMFEnd" (CRLF restored, as on the wire)
DTMF_END = (
    b"Event: DTMFEnd\r\n"
    b"Privilege: dtmf,all\r\n"
    b"Channel: Local/200@test-0000000c;2\r\n"
    b"ChannelState: 6\r\n"
    b"ChannelStateDesc: Up\r\n"
    b"CallerIDNum: 5551234\r\n"
    b"CallerIDName: Probe\r\n"
    b"ConnectedLineNum: 5551234\r\n"
    b"ConnectedLineName: Probe\r\n"
    b"Language: en\r\n"
    b"AccountCode: \r\n"
    b"Context: test\r\n"
    b"Exten: 200\r\n"
    b"Priority: 3\r\n"
    b"Uniqueid: 1795267995.25\r\n"
    b"Linkedid: 1795267995.24\r\n"
    b"Digit: 1\r\n"
    b"DurationMs: 100\r\n"
    b"Direction: Received\r\n"
    b"\r\n"
)
LOGIN_OK = b"Response: Success\r\nActionID: p1\r\nMessage: Authentication accepted\r\n\r\n"
BAD_LOGIN = b"Response: Error\r\nActionID: x1\r\nMessage: Authentication failed\r\n\r\n"
UTF8_EVENT = (
    "Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/zoe-00000001\r\n"
    "CallerIDName: Zoë Müller\r\nChanVariable: A=1\r\nChanVariable: B=2\r\n\r\n"
).encode()

STREAM = BANNER + LOGIN_OK + DTMF_END + UTF8_EVENT + BAD_LOGIN


def parse(chunks: list[bytes], **kw: object) -> list[object]:
    parser = AmiParser(**kw)  # type: ignore[arg-type]
    out: list[object] = []
    for chunk in chunks:
        parser.feed(chunk)
        out.extend(parser.events())
    return out


def test_banner_then_messages() -> None:
    items = parse([STREAM])
    assert items[0] == Banner(version="11.0.0", raw="Asterisk Call Manager/11.0.0")
    login = items[1]
    assert isinstance(login, AmiMessage)
    assert login.response == "Success" and login.action_id == "p1"
    assert login["message"] == "Authentication accepted"  # case-insensitive like Asterisk
    assert len(items) == 5


def test_dtmf_end_golden() -> None:
    (_, _, dtmf, *_) = parse([STREAM])
    assert isinstance(dtmf, AmiMessage)
    assert dtmf.event == "DTMFEnd"
    assert [k for k, _ in dtmf.pairs] == [
        "Event", "Privilege", "Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum",
        "CallerIDName", "ConnectedLineNum", "ConnectedLineName", "Language", "AccountCode",
        "Context", "Exten", "Priority", "Uniqueid", "Linkedid", "Digit", "DurationMs",
        "Direction",
    ]  # fmt: skip
    assert dtmf["AccountCode"] == ""  # empty value after ": "
    assert (dtmf["Digit"], dtmf["Direction"], dtmf["Uniqueid"]) == (
        "1",
        "Received",
        "1795267995.25",
    )
    assert dtmf.get("Missing") is None


def test_repeated_keys_kept() -> None:
    (_, _, _, ev, _) = parse([STREAM])
    assert isinstance(ev, AmiMessage)
    assert ev.getall("ChanVariable") == ["A=1", "B=2"]
    assert ev.get("ChanVariable") == "A=1"
    assert ev.as_dict()["ChanVariable"] == ["A=1", "B=2"]


def test_split_utf8_is_not_lost() -> None:
    # panoramisk decodes each chunk with errors="ignore": "Zoë" arrived as "Zo".
    cut = UTF8_EVENT.index("ë".encode()) + 1  # between the two bytes of ë
    (ev,) = parse([UTF8_EVENT[:cut], UTF8_EVENT[cut:]], expect_banner=False)
    assert isinstance(ev, AmiMessage)
    assert ev["CallerIDName"] == "Zoë Müller"


@settings(max_examples=300, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=25))
def test_any_split_same_result(cuts: list[int]) -> None:
    points = sorted({c % (len(STREAM) + 1) for c in cuts})
    chunks, prev = [], 0
    for p in points:
        chunks.append(STREAM[prev:p])
        prev = p
    chunks.append(STREAM[prev:])
    assert parse(chunks) == parse([STREAM])


def test_bare_lf_accepted_and_blank_lines_skipped() -> None:
    items = parse([b"\n\nAction: Ping\nActionID: 1\n\n\r\n"], expect_banner=False)
    assert items == [AmiMessage([("Action", "Ping"), ("ActionID", "1")])]


def test_legacy_body_lines_go_to_content() -> None:
    (msg,) = parse(
        [b"Response: Follows\r\nPrivilege: Command\r\nsome output\r\n--END COMMAND--\r\n\r\n"],
        expect_banner=False,
    )
    assert isinstance(msg, AmiMessage)
    assert msg.content == ("some output", "--END COMMAND--")


def test_parser_errors() -> None:
    with pytest.raises(AmiProtocolError, match="expected the AMI banner"):
        parse([b"HTTP/1.1 400 Bad Request\r\n"])
    with pytest.raises(AmiProtocolError, match="longer than 100 bytes"):
        parse([b"X" * 200], expect_banner=False, max_line=100)
    with pytest.raises(AmiProtocolError, match="larger than 1000 bytes"):
        parse([b"Key: value\r\n" * 200], expect_banner=False, max_message=1000)


def test_encode_matches_capture_format() -> None:
    data = encode_message(
        [("Action", "Login"), ("ActionID", "p1"), ("Username", "agent"), ("Secret", "s"),
         ("Events", "on")]
    )  # fmt: skip
    assert data == (
        b"Action: Login\r\nActionID: p1\r\nUsername: agent\r\nSecret: s\r\nEvents: on\r\n\r\n"
    )
    assert encode_message({"Action": "Originate", "Variable": ["A=1", "B=2"], "Async": True}) == (
        b"Action: Originate\r\nVariable: A=1\r\nVariable: B=2\r\nAsync: true\r\n\r\n"
    )
    assert encode_message([("Action", "Hangup"), ("Cause", 16)]).endswith(b"Cause: 16\r\n\r\n")
    # round trip
    (msg,) = parse([encode_message([("Value", "Zoë Müller")])], expect_banner=False)
    assert msg == AmiMessage([("Value", "Zoë Müller")])


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("x\r\n\r\nAction: Hangup\r\nChannel: PJSIP/victim", "carriage return"),
        ("x\nVariable: EVIL", "line feed"),
        ("x\x00", "NUL"),
    ],
)
def test_injection_refused(value: str, what: str) -> None:
    with pytest.raises(UnsafeValueError, match=what):
        sanitize_value(value)
    with pytest.raises(UnsafeValueError):
        encode_message([("Action", "Setvar"), ("Value", value)])
    with pytest.raises(UnsafeValueError):
        encode_message([("Action", "Setvar"), ("Variable", ["ok", value])])


@pytest.mark.parametrize("key", ["Bad Key", "Key:", "Key\r\nAction", "", "Ke\x00y"])
def test_bad_keys_refused(key: str) -> None:
    with pytest.raises(UnsafeValueError, match="header name"):
        sanitize_key(key)
    with pytest.raises(UnsafeValueError):
        encode_message([(key, "v")])


def test_line_and_header_limits() -> None:
    longest = "x" * (MAX_LINE_BYTES - len("Value: \r\n"))
    assert len(encode_message([("Value", longest)])) == MAX_LINE_BYTES + 2
    with pytest.raises(UnsafeValueError, match="1024-byte"):
        encode_message([("Value", longest + "x")])
    with pytest.raises(UnsafeValueError, match="line limit"):
        sanitize_value("é" * 600)  # 1200 bytes in UTF-8
    with pytest.raises(UnsafeValueError, match="over Asterisk's 128"):
        encode_message([("Variable", [f"V{i}=1" for i in range(129)])])
    with pytest.raises(TypeError):
        sanitize_value(None)
