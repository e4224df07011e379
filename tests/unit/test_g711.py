"""G.711 codec tables against the ITU-T reference values and the quantiser's properties."""

from __future__ import annotations

import numpy as np
import pytest

from media_sidecar.dsp.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

ALL_CODES = bytes(range(256))
ALL_SAMPLES = np.arange(-32768, 32768).astype(np.int16)

# The first entries of the classic G.711 expansion tables (codes 0x00, 0x01, ...).
ULAW_HEAD = [-32124, -31100, -30076, -29052, -28028, -27004, -25980, -24956,
             -23932, -22908, -21884, -20860, -19836, -18812, -17788, -16764,
             -15996, -15484]  # fmt: skip
ALAW_HEAD = [-5504, -5248, -6016, -5760, -4480, -4224, -4992, -4736,
             -7552, -7296, -8064, -7808, -6528, -6272, -7040, -6784,
             -2752, -2624, -3008, -2880]  # fmt: skip

CODECS = {
    "ulaw": (ulaw_encode, ulaw_decode, 32124),
    "alaw": (alaw_encode, alaw_decode, 32256),
}


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xFF, 0), (0x7F, 0), (0x80, 32124), (0x00, -32124), (0xFE, 8), (0x7E, -8),
     (0x8F, 16764), (0xF0, 120)],
)  # fmt: skip
def test_ulaw_reference_values(code: int, value: int) -> None:
    assert ulaw_decode(bytes([code])).tolist() == [value]


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256), (0xD4, 24), (0xD0, 88)],
)
def test_alaw_reference_values(code: int, value: int) -> None:
    assert alaw_decode(bytes([code])).tolist() == [value]


def test_decode_tables_match_the_classic_tables() -> None:
    assert ulaw_decode(ALL_CODES)[: len(ULAW_HEAD)].tolist() == ULAW_HEAD
    assert alaw_decode(ALL_CODES)[: len(ALAW_HEAD)].tolist() == ALAW_HEAD


@pytest.mark.parametrize("codec", CODECS)
def test_decoding_is_symmetric_in_the_sign_bit(codec: str) -> None:
    _, decode, _ = CODECS[codec]
    values = decode(ALL_CODES).astype(int)
    flipped = decode(bytes(c ^ 0x80 for c in range(256))).astype(int)
    assert (values == -flipped).all()


@pytest.mark.parametrize(
    ("encode", "samples", "expected"),
    [
        (ulaw_encode, [0, -1, 32767, -32768, 8, -8], "ff7f8000fe7e"),
        (alaw_encode, [0, -1, 8, -8, 32767, -32768], "d555d555aa2a"),
    ],
)
def test_encode_reference_values(encode, samples: list[int], expected: str) -> None:
    assert encode(np.array(samples, dtype=np.int16)).hex() == expected


@pytest.mark.parametrize("codec", CODECS)
def test_every_code_survives_decode_then_encode(codec: str) -> None:
    encode, decode, _ = CODECS[codec]
    back = encode(decode(ALL_CODES))
    changed = {c for c in range(256) if back[c] != c}
    # mu-law has two zeros; negative zero (0x7F) re-encodes as positive zero (0xFF).
    assert changed == ({0x7F} if codec == "ulaw" else set())
    if codec == "ulaw":
        assert back[0x7F] == 0xFF


@pytest.mark.parametrize("codec", CODECS)
def test_encoding_quantises_into_the_code_whose_cell_holds_the_sample(codec: str) -> None:
    encode, decode, top = CODECS[codec]
    decoded = decode(encode(ALL_SAMPLES)).astype(np.int64)
    x = ALL_SAMPLES.astype(np.int64)
    levels = np.unique(decode(ALL_CODES).astype(np.int64))
    gaps = np.diff(levels)
    cell = np.maximum(np.concatenate(([gaps[0]], gaps)), np.concatenate((gaps, [gaps[-1]])))
    cell_of = cell[np.searchsorted(levels, decoded)]
    inside = np.abs(x) <= top
    assert (np.abs(decoded - x)[inside] * 2 <= cell_of[inside]).all()
    # Beyond the largest level everything clips to it.
    assert set(decoded[x > top].tolist()) == {top}
    assert set(decoded[x < -top].tolist()) == {-top}
    # A quantiser never reorders: louder in, never quieter out.
    assert (np.diff(decoded) >= 0).all()


@pytest.mark.parametrize("codec", CODECS)
def test_encode_accepts_slin_bytes_and_any_byte_order(codec: str) -> None:
    encode, _, _ = CODECS[codec]
    pcm = np.array([0, 1, -1, 1000, -1000, 32767, -32768, 12345], dtype=np.int16)
    expected = encode(pcm)
    assert len(expected) == len(pcm)
    assert encode(pcm.astype("<i2").tobytes()) == expected
    assert encode(pcm.astype(">i2")) == expected


@pytest.mark.parametrize("codec", CODECS)
def test_encode_refuses_what_is_not_16_bit(codec: str) -> None:
    encode, _, _ = CODECS[codec]
    with pytest.raises(ValueError, match="int16"):
        encode(np.zeros(4, dtype=np.int32))
    with pytest.raises(ValueError, match="even number of bytes"):
        encode(b"\x00\x01\x02")


def test_decode_of_a_frame_is_int16_and_one_sample_per_byte() -> None:
    out = ulaw_decode(bytes(160))
    assert out.dtype == np.int16 and out.shape == (160,)
    assert alaw_decode(b"").shape == (0,)
