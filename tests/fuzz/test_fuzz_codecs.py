"""Fuzzing the wire codecs: AudioSocket, the FastAGI request block and replies, the identity
read, AMI, and the control link. Property: bytes from a peer give typed messages or the
codec's own protocol error, never another exception; what we encode cannot carry a second
command, header or action, whatever the value."""

from __future__ import annotations

import base64
import dataclasses
import typing

from hypothesis import given
from hypothesis import strategies as st

from fastagi_server.agi import identity
from fastagi_server.agi.protocol import (
    AgiProtocolError,
    AgiReplyError,
    AgiRequest,
    EnvParser,
    HangupNotice,
    Response,
    ResponseReader,
    StrayLine,
    UnsafeValueError,
    build_command,
    cmd_set_variable,
    log_safe,
    raise_for,
)
from fastagi_server.ami.codec import AmiMessage, AmiParser, AmiProtocolError, Banner, encode_message
from fastagi_server.emulator.channel import ChannelSpec, env_block, parse_args
from media_sidecar.protocol import control as c
from media_sidecar.protocol.audiosocket import (
    AudioMessage,
    AudioSocketDecoder,
    AudioSocketError,
    DtmfMessage,
    ErrorMessage,
    HangupMessage,
    UuidMessage,
    encode_audio,
    encode_dtmf,
    encode_hangup,
    encode_uuid,
)

from .budget import fuzz
from .strategies import Deep, dumps, hostile_text, json_value


def feed_chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    out, pos = [], 0
    for cut in cuts:
        out.append(data[pos:pos + cut])
        pos += cut
    out.append(data[pos:])
    return out


# -- AudioSocket ------------------------------------------------------------------------------

frames = st.one_of(
    st.uuids().map(encode_uuid),
    st.sampled_from("0123456789*#ABCD").map(encode_dtmf),
    st.binary(min_size=1, max_size=400).map(lambda b: encode_audio(b, 0x10)),
    st.just(encode_hangup()),
    st.binary(min_size=3, max_size=8),  # a random header (any kind, any length)
)


@fuzz()
@given(st.lists(frames, max_size=12), st.lists(st.integers(0, 40), max_size=30),
       st.integers(1, 0xFFFF))
def test_audiosocket_decoder_raises_only_its_own_error(stream, cuts, max_payload):
    decoder = AudioSocketDecoder(max_payload)
    failed: AudioSocketError | None = None
    for part in feed_chunks(b"".join(stream), cuts):
        try:
            decoder.receive_data(part)
        except AudioSocketError as exc:
            failed = exc
            break
        for msg in decoder.events():
            assert isinstance(msg, UuidMessage | DtmfMessage | AudioMessage | HangupMessage
                              | ErrorMessage)
            if isinstance(msg, AudioMessage):
                assert 0 < len(msg.payload) <= max_payload
    if failed is not None:  # a broken decoder stays broken
        try:
            decoder.receive_data(b"")
        except AudioSocketError as again:
            assert again is failed
        else:
            raise AssertionError("a broken decoder accepted more bytes")


@fuzz()
@given(st.binary(max_size=2000))
def test_audiosocket_decoder_random_bytes(data):
    decoder = AudioSocketDecoder()
    try:
        decoder.receive_data(data)
    except AudioSocketError:
        return
    decoder.events()
    assert decoder.buffered < 3 + decoder.max_payload


# -- FastAGI request block and replies ---------------------------------------------------------

caller_field = st.one_of(hostile_text, st.text(max_size=300))
spec = st.builds(
    lambda num, name, dnid, rdnis: ChannelSpec(
        callerid=num.replace("\0", ""), calleridname=name.replace("\0", ""),
        dnid=dnid.replace("\0", ""), rdnis=rdnis.replace("\0", "")),
    caller_field, caller_field, caller_field, caller_field,
)


def check_env(parser: EnvParser, env: dict[str, str]) -> None:
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    req = AgiRequest.from_env(env)
    assert isinstance(req.args, tuple)
    identity.tamper_report(req, None)
    for anomaly in req.anomalies:
        anomaly.describe()


@fuzz()
@given(spec, st.lists(st.integers(0, 200), max_size=20), st.binary(max_size=40))
def test_env_parser_on_blocks_with_hostile_caller_fields(channel, cuts, tail):
    block = env_block(channel, "agi://127.0.0.1/agent") + tail
    parser = EnvParser()
    env = None
    try:
        for part in feed_chunks(block, cuts):
            env = parser.feed(part) or env
    except AgiProtocolError:
        return
    if env is not None:
        check_env(parser, env)
        # Asterisk's own fields before the caller-controlled ones keep their values
        assert env["agi_channel"] == channel.channel
        assert env["agi_uniqueid"] == channel.uniqueid


@fuzz()
@given(st.binary(max_size=3000), st.lists(st.integers(0, 300), max_size=10))
def test_env_parser_on_random_bytes(data, cuts):
    parser = EnvParser(max_bytes=2048, max_line=512)
    try:
        for part in feed_chunks(data, cuts):
            env = parser.feed(part)
            if env is not None:
                check_env(parser, env)
    except AgiProtocolError:
        pass


reply_lines = st.one_of(
    st.sampled_from([b"200 result=1 (x)\n", b"HANGUP\n", b"510 Invalid or unknown command\n",
                     b"520-Invalid command syntax.  Proper usage follows:\n",
                     b"520 End of proper usage.\n", b"200 result=1 (open\n", b")\n",
                     b"100 Trying\n", b"200 result=-1 endpos=0\n", b"\r\n"]),
    st.binary(max_size=60),
)


@fuzz()
@given(st.lists(reply_lines, max_size=20), st.lists(st.integers(0, 30), max_size=20))
def test_response_reader_raises_only_protocol_errors(lines, cuts):
    reader = ResponseReader(max_line=256)
    try:
        for part in feed_chunks(b"".join(lines), cuts):
            reader.feed(part)
            for ev in reader.events():
                assert isinstance(ev, Response | HangupNotice | StrayLine)
                if isinstance(ev, Response):
                    ev.result_int  # noqa: B018 - must not raise
                    ev.usage  # noqa: B018
                    try:
                        raise_for(ev)
                    except AgiReplyError:
                        pass
    except AgiProtocolError:
        pass


NONCE = "n0nce1234"


@fuzz()
@given(st.lists(hostile_text, min_size=13, max_size=13))
def test_identity_values_come_back_exactly_whatever_they_hold(values):
    # Asterisk answers the identity read with base64 of value+nonce: any value is data
    encoded = [base64.b64encode((v + NONCE).encode("utf-8", "surrogatepass")).decode()
               for v in values]
    values[0] = values[0] or "Local/x"
    values[1] = values[1] or "1.1"
    encoded[0] = base64.b64encode((values[0] + NONCE).encode("utf-8", "surrogatepass")).decode()
    encoded[1] = base64.b64encode((values[1] + NONCE).encode("utf-8", "surrogatepass")).decode()
    ident = identity.parse_identity("|".join([NONCE, *encoded]), NONCE)
    expect = [v.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for v in values]
    assert ident.channel == expect[0]
    assert ident.calleridname == ("" if expect[4] == "unknown" else expect[4])
    identity.cut_short_by(ident)


@fuzz()
@given(st.one_of(st.none(), hostile_text, st.text(alphabet="ABCabc012+/=|n0ce", max_size=80)),
       st.integers(0, 40))
def test_identity_and_vars_replies_raise_only_identity_error(data, count):
    names = [f"V{i}" for i in range(count)]
    for parse in (lambda: identity.parse_identity(data, NONCE),
                  lambda: identity.parse_vars(data, NONCE, names)):
        try:
            parse()
        except identity.IdentityError:
            pass
    identity.ai_var_names(data or "")
    identity.decode_value(data or "", NONCE)


@fuzz()
@given(hostile_text)
def test_agi_command_carries_exactly_one_argument_whatever_the_value(value):
    try:
        line = cmd_set_variable("AI_REASON", value)
    except UnsafeValueError:
        assert any(ch in value for ch in "\r\n\0") or len(value.encode("utf-8", "replace")) > 8000
        return
    assert line.count(b"\n") == 1 and line.endswith(b"\n") and b"\r" not in line
    sent = value.encode("utf-8", "replace").decode()  # a lone surrogate goes as "?"
    assert parse_args(line[:-1].decode()) == ["SET", "VARIABLE", "AI_REASON", sent]
    log_safe(value)


@fuzz()
@given(st.text(max_size=20), st.lists(st.one_of(hostile_text, st.integers()), max_size=4))
def test_build_command_refuses_or_encodes_one_line(verb, args):
    try:
        line = build_command(verb, *args)
    except UnsafeValueError:
        return
    assert line.count(b"\n") == 1 and line.endswith(b"\n")


# -- AMI --------------------------------------------------------------------------------------

ami_lines = st.one_of(
    st.sampled_from([b"Asterisk Call Manager/11.0.0\r\n", b"Response: Success\r\n",
                     b"Event: Hangup\r\n", b"\r\n", b"\n", b"Key:\r\n", b": v\r\n",
                     b"Output: x\r\n", b"ActionID: 1\r\n"]),
    st.binary(max_size=80),
)


@fuzz()
@given(st.lists(ami_lines, max_size=30), st.lists(st.integers(0, 40), max_size=20),
       st.booleans())
def test_ami_parser_raises_only_protocol_errors(lines, cuts, banner):
    parser = AmiParser(expect_banner=banner, max_line=200, max_message=1000)
    try:
        for part in feed_chunks(b"".join(lines), cuts):
            parser.feed(part)
            for ev in parser.events():
                assert isinstance(ev, Banner | AmiMessage)
                if isinstance(ev, AmiMessage):
                    ev.as_dict()
                    ev.event, ev.action_id  # noqa: B018
    except AmiProtocolError:
        pass


@fuzz()
@given(st.lists(st.tuples(st.text(max_size=12), hostile_text), max_size=6))
def test_ami_action_is_one_message_with_exactly_the_given_headers(pairs):
    action = [("Action", "Setvar"), *pairs]
    try:
        data = encode_message(action)
    except UnsafeValueError:
        return
    parser = AmiParser(expect_banner=False)
    parser.feed(data)
    (msg,) = list(parser.events())
    assert isinstance(msg, AmiMessage)
    sent = tuple((k, v.encode("utf-8", "replace").decode()) for k, v in action)
    assert msg.pairs == sent


# -- control link -----------------------------------------------------------------------------

_FIELDS = sorted({f.name for cls in c._TYPES.values() for f in dataclasses.fields(cls)}
                 | {f.name for f in dataclasses.fields(c.CallContext)})
context_value = st.one_of(json_value, st.fixed_dictionaries(
    {}, optional={name: json_value for name in [f.name for f in dataclasses.fields(c.CallContext)]}))
control_body = st.builds(
    lambda kind, body, ctx: {"type": kind, **body, **({"context": ctx} if ctx is not None else {})},
    st.sampled_from(sorted(c._TYPES)),
    st.dictionaries(st.sampled_from(_FIELDS), json_value, max_size=6),
    st.one_of(st.none(), context_value),
)


def check_types(msg: object) -> None:
    """Every field of a decoded message holds its declared type."""
    hints = typing.get_type_hints(type(msg))
    for f in dataclasses.fields(msg):  # type: ignore[arg-type]
        value = getattr(msg, f.name)
        tp = hints[f.name]
        origin = typing.get_origin(tp) or tp
        if dataclasses.is_dataclass(tp):
            check_types(value)
            continue
        assert isinstance(value, int | float if tp is float else origin), (f.name, value)
        if tp in (int, float):
            assert not isinstance(value, bool), (f.name, value)
        if origin is dict:
            vt = typing.get_args(tp)[1]
            assert all(isinstance(k, str) and isinstance(v, vt) for k, v in value.items())
        if origin is list:
            assert all(isinstance(v, str) for v in value)


@fuzz(2)
@given(st.one_of(control_body.map(dumps), st.text(max_size=200), st.binary(max_size=200),
                 st.integers(30000, 60000).map(Deep)))
def test_control_decode_raises_only_control_error_and_types_hold(text):
    try:
        msg = c.decode(text)
    except c.ControlError:
        return
    check_types(msg)
    text = c.encode(msg)
    text.encode("utf-8")  # a WebSocket text frame is UTF-8: a lone surrogate must be escaped
    assert c.decode(text) == msg
