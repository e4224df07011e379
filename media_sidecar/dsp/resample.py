"""Stateful polyphase rational resampling of 16-bit mono PCM (pure numpy).

One :class:`Resampler` per direction per call: it keeps the filter history between chunks, so
feeding a stream in 20 ms pieces gives the same samples (within 1 LSB) as resampling it in one
go, and chunk boundaries never click.

The filter
----------
A rate change ``in_rate -> out_rate`` is reduced to ``L / M`` (upsample by L, low-pass,
keep every M-th sample; 22050 -> 8000 is 160/441). One prototype low-pass FIR runs at
``L * in_rate`` and is split into L polyphase branches of ``taps_per_phase`` taps each:

* windowed sinc, Kaiser window, beta = 7.857 (Kaiser's formula for 80 dB);
* cutoff (-6 dB) at 0.9 x the lower Nyquist, ``0.9 * min(in_rate, out_rate) / 2``
  (3.6 kHz for every conversion to or from 8 kHz);
* passband flat (ripple < 0.001 dB) to 0.8 x Nyquist (3.2 kHz at 8 kHz), stopband from
  Nyquist (4 kHz at 8 kHz) on, attenuated by >= 80 dB, so nothing aliases into the band;
* length from Kaiser's estimate for that 0.2 x Nyquist transition, rounded up so the filter is
  symmetric around a whole number of output samples: the output is delay-compensated (the
  first output sample is aligned with the first input sample) and linear-phase.

Taps per phase with the default design: 22050 -> 8000: 138; 8000 -> 16000: 51;
16000 -> 8000: 101; 8000 -> 24000: 51; 24000 -> 8000: 151. Filters are designed once per
``(L, M, taps_per_phase)`` and cached for the process; they are read-only and shared by every
call. The filter delay is ``delay`` output samples (25 at 8 kHz, about 3 ms); ``flush()`` emits
the tail so that a whole stream of n input samples yields ``ceil(n * L / M)`` output samples.

Inside everything is float32 in int16 units; the output is rounded and clipped to int16.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

__all__ = ["KAISER_BETA", "STOPBAND_DB", "PolyphaseFilter", "Resampler", "design_filter"]

STOPBAND_DB = 80.0
"""Design stopband attenuation of the default filters, in dB."""
KAISER_BETA = 0.1102 * (STOPBAND_DB - 8.7)
"""Kaiser window beta for :data:`STOPBAND_DB` (Kaiser's empirical formula): 7.857."""
CUTOFF = 0.9
"""-6 dB point as a fraction of the lower Nyquist frequency."""
TRANSITION = 0.2
"""Transition band width (passband edge to stopband edge) as a fraction of the lower Nyquist."""
_SCRATCH_BYTES = 96 * 1024
"""Most bytes of input windows one filtering step gathers. Longer inputs are filtered in
blocks: this keeps the work in cache and, below glibc's 128 KiB mmap threshold, keeps each
temporary array off fresh pages (a page-faulting 400 KiB temporary made a whole TTS sentence
8x slower than the same audio in 20 ms chunks)."""


@dataclass(frozen=True, slots=True)
class PolyphaseFilter:
    """A prototype FIR split into polyphase branches, ready for the inner product.

    ``branches[r, k]`` is ``L * h[r + (K - 1 - k) * L]``: branch r in reverse tap order, so a
    window of the K most recent inputs (oldest first) dotted with it gives one output sample.
    ``delay`` is the filter's group delay in output samples (an integer by construction).
    Outputs use the branches in a pattern that repeats every ``up`` outputs (while ``down``
    inputs arrive); ``period_rows[t]`` and ``period_branches[t]`` give, for output ``t`` of a
    period (tabulated over two periods), its newest input relative to the period's first input
    and its branch taps. They are empty for pure upsampling or decimation, which need neither.
    """

    up: int
    down: int
    taps_per_phase: int
    delay: int
    branches: np.ndarray = field(repr=False)
    period_rows: np.ndarray = field(repr=False)
    period_branches: np.ndarray = field(repr=False)


def _reduce(in_rate: int, out_rate: int) -> tuple[int, int]:
    g = math.gcd(in_rate, out_rate)
    return out_rate // g, in_rate // g


@lru_cache(maxsize=32)
def design_filter(up: int, down: int, taps_per_phase: int | None = None) -> PolyphaseFilter:
    """Design (once per process, then cached) the polyphase low-pass for a ``up/down`` change.

    ``taps_per_phase=None`` picks the length for the documented 80 dB / 0.2 x Nyquist design;
    a smaller value trades stopband attenuation and transition width for speed.
    Raises ValueError if ``taps_per_phase`` is too small to hold a filter for this ratio.
    """
    # Frequencies below are normalised to the prototype's rate (up * in_rate), in cycles/sample.
    nyquist = 0.5 / max(up, down)
    cutoff = CUTOFF * nyquist
    if taps_per_phase is None:
        transition = 2 * math.pi * TRANSITION * nyquist  # rad/sample
        length = math.ceil((STOPBAND_DB - 8.0) / (2.285 * transition)) + 1
        delay = max(1, round((length - 1) / (2 * down)))
    else:
        delay = (taps_per_phase * up - 1) // (2 * down)
        if delay < 1:
            raise ValueError(
                f"taps_per_phase={taps_per_phase} is too short for a {up}/{down} rate change;"
                f" need at least {math.ceil((2 * down + 1) / up)}"
            )
    # Symmetric around `centre`, which is a whole number of output samples (delay * down).
    centre = delay * down
    length = 2 * centre + 1
    k_taps = taps_per_phase if taps_per_phase is not None else math.ceil(length / up)
    n = np.arange(length, dtype=np.float64) - centre
    proto = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(length, KAISER_BETA)
    proto *= up / proto.sum()  # unity DC gain after zero-stuffing by `up`
    padded = np.zeros(k_taps * up, dtype=np.float64)
    padded[:length] = proto
    # padded[r + k*up] is tap k of branch r; reverse the tap order for the window dot product.
    branches = padded.reshape(k_taps, up).T[:, ::-1].astype(np.float32)
    branches = np.ascontiguousarray(branches)
    if up > 1 and down > 1:
        positions = np.arange(2 * up, dtype=np.int64) * down + centre
        period_rows = positions // up
        period_branches = np.ascontiguousarray(branches[positions % up])
    else:
        period_rows = np.zeros(0, dtype=np.int64)
        period_branches = np.zeros((0, k_taps), dtype=np.float32)
    for table in (branches, period_rows, period_branches):
        table.setflags(write=False)
    return PolyphaseFilter(up, down, k_taps, delay, branches, period_rows, period_branches)


def _block_inputs(f: PolyphaseFilter) -> int:
    """How many input samples one filtering step takes, from :data:`_SCRATCH_BYTES`."""
    rows = max(1, _SCRATCH_BYTES // (4 * f.taps_per_phase))  # windows gathered per step
    if f.down == 1:
        return rows  # one window per input
    outputs = rows if f.up == 1 else min(rows, f.up)  # one window per output
    return max(1, outputs * f.down // f.up)


def _as_float(x: np.ndarray) -> np.ndarray:
    """Samples as float32 in int16 units. int16 is taken as is; float in [-1, 1] full scale."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"expected mono 1-D samples, got shape {arr.shape}")
    if arr.dtype.kind == "i" and arr.dtype.itemsize == 2:
        return arr.astype(np.float32)
    if arr.dtype.kind == "f":
        return (arr * 32768.0).astype(np.float32)
    raise ValueError(f"expected int16 or float samples, got dtype {arr.dtype}")


def _to_int16(y: np.ndarray) -> np.ndarray:
    """Round and clip float32 samples in int16 units to int16 (``y`` is scratch, reused)."""
    np.rint(y, out=y)
    np.clip(y, -32768, 32767, out=y)
    return y.astype(np.int16)


class Resampler:
    """Streaming rational resampler ``in_rate -> out_rate`` for one direction of one call.

    ``process`` takes int16 samples (or float samples in [-1.0, 1.0]) and returns the int16
    output samples that the input so far determines; ``flush`` returns the rest at the end of a
    stream and resets. Equal rates pass samples through unchanged. Not thread-safe: one instance
    belongs to one stream.
    """

    def __init__(self, in_rate: int, out_rate: int, *, taps_per_phase: int | None = None) -> None:
        """Raises ValueError for non-positive rates or a too-short ``taps_per_phase``."""
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        up, down = _reduce(in_rate, out_rate)
        self._filter = None if up == down else design_filter(up, down, taps_per_phase)
        self._block = 0 if self._filter is None else _block_inputs(self._filter)
        self.reset()

    @property
    def delay(self) -> int:
        """Filter delay in output samples (already compensated in the output)."""
        return 0 if self._filter is None else self._filter.delay

    @property
    def taps_per_phase(self) -> int:
        """Taps per polyphase branch (0 when the rates are equal)."""
        return 0 if self._filter is None else self._filter.taps_per_phase

    def reset(self) -> None:
        """Forget all history: the next ``process`` starts a new stream."""
        k = 1 if self._filter is None else self._filter.taps_per_phase
        self._history = np.zeros(k - 1, dtype=np.float32)
        self._consumed = 0  # input samples received so far
        self._produced = 0  # output samples returned so far (delay-compensated index)

    def process(self, x: np.ndarray) -> np.ndarray:
        """Resample the next chunk of the stream; returns int16 output (possibly empty).

        Raises ValueError if ``x`` is not 1-D int16 or float.
        """
        if self._filter is None:
            arr = np.asarray(x)
            if arr.ndim == 1 and arr.dtype.kind == "i" and arr.dtype.itemsize == 2:
                out = arr.astype(np.int16)  # a copy, native byte order
            else:
                out = _to_int16(_as_float(arr))
            self._consumed += len(out)
            self._produced += len(out)
            return out
        xf = _as_float(x)
        step = self._block
        if len(xf) <= step:
            return _to_int16(self._run(xf))
        # Long inputs (a whole TTS sentence) go through in cache-sized blocks.
        blocks = [self._run(xf[i : i + step]) for i in range(0, len(xf), step)]
        return _to_int16(np.concatenate(blocks))

    def flush(self) -> np.ndarray:
        """Emit the samples still held by the filter delay, then reset for a new stream.

        After ``flush`` the stream of n input samples has produced ``ceil(n * out / in)``
        output samples in total.
        """
        f = self._filter
        if f is None:
            self.reset()
            return np.zeros(0, dtype=np.int16)
        total = -(-self._consumed * f.up // f.down)  # ceil(n * L / M)
        missing = total - self._produced
        tail = np.zeros(0, dtype=np.float32)
        if missing > 0:
            last = total - 1
            need = (last * f.down + f.delay * f.down) // f.up + 1  # inputs needed for `last`
            pad = np.zeros(max(0, need - self._consumed), dtype=np.float32)
            tail = self._run(pad)[:missing]
        self.reset()
        return _to_int16(tail)

    def _run(self, xf: np.ndarray) -> np.ndarray:
        """Filter new float samples; returns every output they complete (float32)."""
        f = self._filter
        assert f is not None
        up, down, k_taps = f.up, f.down, f.taps_per_phase
        base = self._consumed  # global index of xf[0]
        self._consumed += len(xf)
        buf = np.concatenate((self._history, xf))
        self._history = buf[len(buf) - (k_taps - 1) :].copy()
        # Output n uses prototype position p = (n + delay) * down; its newest input is p // up
        # and its branch is p % up. It can be computed once that input has arrived.
        centre = f.delay * down
        n0 = self._produced
        n1 = (self._consumed * up - 1 - centre) // down + 1
        if n1 <= n0:
            return np.zeros(0, dtype=np.float32)
        self._produced = n1
        # windows[j] holds inputs base+j-K+1 .. base+j, oldest first (a strided view of buf).
        windows = np.ndarray((len(buf) - k_taps + 1, k_taps), np.float32, buf, 0, (4, 4))
        if down == 1:
            # Integer upsampling: every input yields `up` consecutive outputs, one per branch.
            p0 = n0 + centre
            first = p0 // up - base
            last = (n1 - 1 + centre) // up - base
            block = windows[first : last + 1] @ f.branches.T
            return block.ravel()[p0 % up : p0 % up + (n1 - n0)]
        if up == 1:
            # Integer decimation: one branch, windows taken every `down` inputs.
            first = n0 * down + centre - base
            return windows[first : first + (n1 - n0 - 1) * down + 1 : down] @ f.branches[0]
        count = n1 - n0
        period, t0 = divmod(n0, up)  # outputs repeat their branch pattern every `up` outputs
        if count <= up:
            # The common streaming case: slices of the precomputed one-period tables, no gather
            # of filter taps.
            rows = f.period_rows[t0 : t0 + count] + (period * down - base)
            taps = f.period_branches[t0 : t0 + count]
        else:
            positions = np.arange(n0 * down + centre, n1 * down + centre, down, dtype=np.int64)
            rows = positions // up - base
            taps = f.branches[positions % up]
        return np.einsum("ij,ij->i", windows[rows], taps)
