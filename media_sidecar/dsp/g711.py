"""ITU-T G.711 mu-law and A-law codecs as table lookups (pure numpy, no ``audioop``).

Calls bridged with ``Dial(AudioSocket/...,c(ulaw))`` or ``c(alaw)`` carry G.711 bytes inside
AudioSocket audio frames; this module turns them into 16-bit linear PCM and back.

The tables are built once at import with the reference algorithm of the ITU-T G.191 Software
Tool Library (``g711.c``: ``ulaw_compress`` / ``ulaw_expand`` / ``alaw_compress`` /
``alaw_expand``), vectorised over every possible input:

* decode tables: 256 ``int16`` values, one per code byte;
* encode tables: 65536 code bytes indexed by the ``uint16`` view of the ``int16`` sample, so
  encoding a frame is one fancy-indexing operation.

The linear side is 16-bit PCM with the 14-bit (mu-law) or 13-bit (A-law) G.711 sample
left-justified, as Asterisk's slin and the STL use it. Negative samples are reduced with the
one's complement as the STL does, so codes are symmetric around zero. Reference points:
mu-law ``0xFF`` -> 0, ``0x7F`` -> 0 (negative zero), ``0x80`` -> 32124, ``0x00`` -> -32124;
A-law ``0xD5`` -> 8, ``0x55`` -> -8, ``0xAA`` -> 32256, ``0x2A`` -> -32256.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "alaw_decode",
    "alaw_encode",
    "ulaw_decode",
    "ulaw_encode",
]

_ULAW_BIAS = 33
"""mu-law bias in 14-bit units (0x84 in 16-bit units)."""
_ULAW_CLIP = 0x1FFF
"""Largest biased 14-bit magnitude mu-law can represent."""


def _all_int16() -> np.ndarray:
    """Every int16 value, ordered so that index ``i`` holds the int16 whose uint16 view is i."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


def _build_ulaw_decode() -> np.ndarray:
    """The 256-entry mu-law expansion table (G.191 ``ulaw_expand``)."""
    code = np.arange(256, dtype=np.int32)
    sign = np.where(code < 0x80, -1, 1)
    inverted = ~code & 0xFF
    exponent = (inverted >> 4) & 0x07
    mantissa = inverted & 0x0F
    step = 4 << (exponent + 1)
    magnitude = (0x80 << exponent) + step * mantissa + step // 2 - 4 * _ULAW_BIAS
    table = (sign * magnitude).astype(np.int16)
    table.setflags(write=False)
    return table


def _build_ulaw_encode() -> np.ndarray:
    """The 65536-entry mu-law compression table (G.191 ``ulaw_compress``)."""
    x = _all_int16()
    # One's complement for negatives: -1..-4 share the magnitude of 0..3 (negative zero).
    absno = np.where(x < 0, (~x) >> 2, x >> 2) + _ULAW_BIAS
    absno = np.minimum(absno, _ULAW_CLIP)
    # segno = 1 + number of significant bits of (absno >> 6).
    segno = np.ones_like(absno)
    i = absno >> 6
    while np.any(i):
        segno += i != 0
        i >>= 1
    high_nibble = 0x08 - segno
    low_nibble = 0x0F - ((absno >> segno) & 0x0F)
    code = (high_nibble << 4) | low_nibble
    code = np.where(x >= 0, code | 0x80, code)
    table = code.astype(np.uint8)
    table.setflags(write=False)
    return table


def _build_alaw_decode() -> np.ndarray:
    """The 256-entry A-law expansion table (G.191 ``alaw_expand``)."""
    code = np.arange(256, dtype=np.int32)
    ix = (code ^ 0x55) & 0x7F
    exponent = ix >> 4
    mantissa = ix & 0x0F
    mantissa = np.where(exponent > 0, mantissa + 16, mantissa)
    mantissa = (mantissa << 4) + 0x08
    mantissa = np.where(exponent > 1, mantissa << np.maximum(exponent - 1, 0), mantissa)
    table = np.where(code > 127, mantissa, -mantissa).astype(np.int16)
    table.setflags(write=False)
    return table


def _build_alaw_encode() -> np.ndarray:
    """The 65536-entry A-law compression table (G.191 ``alaw_compress``)."""
    x = _all_int16()
    ix = np.where(x < 0, (~x) >> 4, x >> 4)  # 12-bit magnitude, one's complement for negatives
    # Segment 0 holds magnitudes 0..15 linearly; above, each segment doubles the step.
    exponent = np.zeros_like(ix)
    mag = ix.copy()
    big = ix > 15
    exponent[big] = 1
    while True:
        shift = mag > 16 + 15
        if not np.any(shift):
            break
        mag = np.where(shift, mag >> 1, mag)
        exponent += shift
    code = np.where(big, (mag - 16) + (exponent << 4), ix)
    code = np.where(x >= 0, code | 0x80, code)
    table = (code ^ 0x55).astype(np.uint8)
    table.setflags(write=False)
    return table


_ULAW_DECODE = _build_ulaw_decode()
_ULAW_ENCODE = _build_ulaw_encode()
_ALAW_DECODE = _build_alaw_decode()
_ALAW_ENCODE = _build_alaw_encode()


def _codes(data: bytes | bytearray | memoryview) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8)


def _indices(pcm: np.ndarray | bytes | bytearray | memoryview) -> np.ndarray:
    """The uint16 table indices of 16-bit samples given as an int16 array or slin bytes.

    Raises ValueError for an array that is not int16 or bytes of odd length.
    """
    if isinstance(pcm, bytes | bytearray | memoryview):
        if len(pcm) % 2:
            raise ValueError(f"16-bit PCM must have an even number of bytes, got {len(pcm)}")
        return np.frombuffer(pcm, dtype="<u2")
    arr = np.asarray(pcm)
    if arr.dtype.kind != "i" or arr.dtype.itemsize != 2:
        raise ValueError(f"G.711 encoding expects int16 samples, got dtype {arr.dtype}")
    return arr.astype("<i2", copy=False).view("<u2")


def ulaw_decode(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode mu-law bytes into int16 samples (one sample per byte)."""
    return _ULAW_DECODE[_codes(data)]


def ulaw_encode(pcm: np.ndarray | bytes | bytearray | memoryview) -> bytes:
    """Encode int16 samples (an array, or slin little-endian bytes) into mu-law bytes.

    Raises ValueError if the samples are not 16-bit.
    """
    return _ULAW_ENCODE[_indices(pcm)].tobytes()


def alaw_decode(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode A-law bytes into int16 samples (one sample per byte)."""
    return _ALAW_DECODE[_codes(data)]


def alaw_encode(pcm: np.ndarray | bytes | bytearray | memoryview) -> bytes:
    """Encode int16 samples (an array, or slin little-endian bytes) into A-law bytes.

    Raises ValueError if the samples are not 16-bit.
    """
    return _ALAW_ENCODE[_indices(pcm)].tobytes()
