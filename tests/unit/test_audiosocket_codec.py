"""The sans-I/O AudioSocket codec against golden bytes from Asterisk 22.10.1."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media_sidecar.protocol.audiosocket import (
    AudioFormat,
    AudioMessage,
    AudioSocketDecoder,
    BadPayload,
    Codec,
    DtmfMessage,
    ErrorMessage,
    HangupMessage,
    PayloadTooLarge,
    UnknownKind,
    UuidMessage,
    encode_audio,
    encode_dtmf,
    encode_error,
    encode_hangup,
    encode_uuid,
)

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared/fixtures/asterisk-22.10.1"
# as_B6.txt, "first 40 raw bytes" (embedded so the test never depends on the fixture path)
B6_FIRST_40 = bytes.fromhex(
    "01001092 59199c49 3c44208f a423ba9b 43503410 01400000 00000000 00000000 00000000 00000000"
    .replace(" ", ""))
# as_C4.txt: Dial(AudioSocket/...,c(ulaw)) -> kind 0x10 carrying 160 bytes of mu-law
C4_FIRST_40 = bytes.fromhex(
    "010010ff1f9b57466547b6bb8beaebe651a81410 00a0ffffffff7fffffffffffffffffffffffff7f"
    .replace(" ", ""))


def decode_all(data: bytes, chunks: list[int] | None = None, **kw) -> list:
    d = AudioSocketDecoder(**kw)
    if chunks is None:
        d.receive_data(data)
    else:
        pos = 0
        for n in chunks:
            d.receive_data(data[pos:pos + n])
            pos += n
        d.receive_data(data[pos:])
    return d.events()


def test_golden_uuid_then_audio_header():
    d = AudioSocketDecoder()
    d.receive_data(B6_FIRST_40)
    (msg,) = d.events()
    assert msg == UuidMessage(uuid.UUID("9259199c-493c-4420-8fa4-23ba9b435034"))
    assert d.buffered == len(B6_FIRST_40) - 19  # an audio frame is still arriving


def test_golden_fixture_file_matches_embedded_bytes():
    path = FIXTURES / "as_B6.txt"
    if not path.exists():
        pytest.skip("shared fixtures not beside the repo")
    line = re.search(r"first 40 raw bytes: ([0-9a-f ]+)", path.read_text()).group(1)
    assert bytes.fromhex(line.replace(" ", "")) == B6_FIRST_40


@pytest.mark.parametrize("digit,raw", [("1", "03000131"), ("2", "03000132"), ("#", "03000123")])
def test_golden_dtmf_frames(digit, raw):
    assert encode_dtmf(digit) == bytes.fromhex(raw)
    assert decode_all(bytes.fromhex(raw)) == [DtmfMessage(digit)]


def test_ulaw_leg_is_kind_0x10_and_the_codec_comes_from_the_call():
    msgs = decode_all(C4_FIRST_40 + bytes(142))  # 18 payload bytes are in the capture
    assert isinstance(msgs[1], AudioMessage) and msgs[1].kind == 0x10 and len(msgs[1].payload) == 160
    # the decoder does not guess: the call's format says mu-law
    fmt = AudioFormat.parse("ulaw")
    assert fmt == AudioFormat(Codec.ULAW, 8000) and fmt.frame_bytes == 160 and fmt.wire_kind == 0x10


def test_formats():
    assert AudioFormat.parse("slin").frame_bytes == 320
    assert AudioFormat.parse("slin16").wire_kind == 0x12
    assert AudioFormat.parse("slin44").rate == 44100
    with pytest.raises(ValueError, match="unknown audio format"):
        AudioFormat.parse("g729")


def test_all_kinds_round_trip():
    u = uuid.uuid4()
    data = (encode_uuid(u) + encode_audio(b"\x01\x02" * 160) + encode_audio(b"\0\0" * 320, 0x12)
            + encode_dtmf("*") + encode_error(0x02) + encode_hangup())
    assert decode_all(data) == [
        UuidMessage(u), AudioMessage(0x10, b"\x01\x02" * 160), AudioMessage(0x12, b"\0\0" * 320),
        DtmfMessage("*"), ErrorMessage(2), HangupMessage(),
    ]


def test_header_and_payload_are_one_bytes_object():
    frame = encode_audio(b"\x00\x01" * 160)
    assert frame[:3] == b"\x10\x01\x40" and len(frame) == 323


@pytest.mark.parametrize("data,error,text", [
    (b"\x42\x00\x00", UnknownKind, "kind 0x42"),
    (b"\x10\x11\x70", PayloadTooLarge, "AudioSocket payload 4464 > 4096 bytes"),
    (b"\x10\x00\x00", BadPayload, "empty payload"),
    (b"\x01\x00\x04abcd", BadPayload, "UUID payload must be 16 bytes"),
    (b"\x03\x00\x01x", BadPayload, "not a DTMF digit"),
    (b"\x00\x00\x01x", BadPayload, "hangup with a 1-byte payload"),
])
def test_malformed_input_raises_precise_errors(data, error, text):
    d = AudioSocketDecoder()
    with pytest.raises(error, match=re.escape(text)):
        d.receive_data(data)
    with pytest.raises(error):  # broken for good: the connection must be closed
        d.receive_data(encode_hangup())


def test_max_payload_is_configurable():
    big = encode_audio(bytes(7680), 0x18)
    with pytest.raises(PayloadTooLarge):
        decode_all(big)
    assert len(decode_all(big, max_payload=8000)) == 1


def test_encoders_refuse_what_asterisk_would_hang_up_on():
    with pytest.raises(ValueError, match="must not be empty"):
        encode_audio(b"")
    with pytest.raises(ValueError, match="not an audio kind"):
        encode_audio(b"\0\0", 0x03)


frames = st.one_of(
    st.uuids().map(encode_uuid),
    st.sampled_from("0123456789*#ABCD").map(encode_dtmf),
    st.binary(min_size=1, max_size=700).map(lambda b: encode_audio(b, 0x10)),
    st.binary(min_size=2, max_size=700).map(lambda b: encode_audio(b, 0x12)),
    st.just(encode_hangup()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(frames, min_size=1, max_size=20), st.lists(st.integers(1, 50), max_size=60))
def test_any_split_of_the_stream_yields_the_same_messages(stream, cuts):
    data = b"".join(stream)
    assert decode_all(data, cuts) == decode_all(data)
    assert len(decode_all(data)) == len(stream)
