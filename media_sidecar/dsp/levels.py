"""Signal levels of 16-bit PCM frames: RMS and dBFS (pure numpy).

Full scale is 32768, so a full-scale square wave is 0 dBFS and a full-scale sine about
-3 dBFS. Digital silence has no finite level; it reports :data:`SILENCE_DBFS` instead, below
any threshold a configuration would use.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["FULL_SCALE", "SILENCE_DBFS", "as_samples", "dbfs", "is_silent", "rms"]

FULL_SCALE = 32768.0
"""The 0 dBFS reference amplitude of int16 PCM."""

SILENCE_DBFS = -120.0
"""The level reported for digital silence (and the floor of every reported level)."""


def as_samples(frame: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """An int16 view of ``frame``: slin little-endian bytes, or an int16 array as is.

    Raises ValueError for bytes of odd length or an array that is not 16-bit integer.
    """
    if isinstance(frame, bytes | bytearray | memoryview):
        if len(frame) % 2:
            raise ValueError(f"16-bit PCM must have an even number of bytes, got {len(frame)}")
        return np.frombuffer(frame, dtype="<i2")
    arr = np.asarray(frame)
    if arr.dtype.kind != "i" or arr.dtype.itemsize != 2:
        raise ValueError(f"expected int16 samples, got dtype {arr.dtype}")
    return arr


def rms(frame: bytes | bytearray | memoryview | np.ndarray) -> float:
    """Root-mean-square amplitude of ``frame`` in int16 units (0.0 for an empty frame).

    Raises ValueError as :func:`as_samples` does.
    """
    samples = as_samples(frame)
    if samples.size == 0:
        return 0.0
    # float64 accumulation: the square of a full-scale sample does not fit int32 sums.
    x = samples.astype(np.float64)
    return math.sqrt(float(np.dot(x, x)) / x.size)


def dbfs(frame: bytes | bytearray | memoryview | np.ndarray) -> float:
    """RMS level of ``frame`` in dB relative to full scale, floored at :data:`SILENCE_DBFS`.

    Raises ValueError as :func:`as_samples` does.
    """
    level = rms(frame)
    if level <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20.0 * math.log10(level / FULL_SCALE))


def is_silent(frame: bytes | bytearray | memoryview | np.ndarray, floor_dbfs: float) -> bool:
    """True if the RMS level of ``frame`` is below ``floor_dbfs`` (e.g. -45.0).

    Raises ValueError as :func:`as_samples` does.
    """
    return dbfs(frame) < floor_dbfs
