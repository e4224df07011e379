"""The streaming resampler: passband level, alias and image rejection, chunking, lengths."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media_sidecar.dsp.resample import Resampler, design_filter

NEEDED = [(22050, 8000), (8000, 16000), (16000, 8000), (8000, 24000), (24000, 8000)]
"""The conversions the product uses (Piper, wideband providers), plus identity below."""


def tone(freq: float, rate: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amp * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def level_db(x: np.ndarray) -> float:
    """RMS level in dB of the middle half (clear of filter start-up and tail)."""
    mid = x[len(x) // 4 : 3 * len(x) // 4].astype(np.float64)
    return 10 * math.log10(max(float(np.mean(mid * mid)), 1e-12))


def resample_all(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    r = Resampler(in_rate, out_rate)
    return np.concatenate([r.process(x), r.flush()])


@pytest.mark.parametrize(("in_rate", "out_rate"), NEEDED)
@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
def test_passband_tones_keep_their_level(in_rate: int, out_rate: int, freq: float) -> None:
    x = tone(freq, in_rate)
    y = resample_all(x, in_rate, out_rate)
    assert abs(level_db(y) - level_db(x)) <= 0.5


def test_a_6khz_tone_from_piper_rate_does_not_alias_into_the_call() -> None:
    # 6 kHz at 22050 Hz would fold to 2 kHz at 8 kHz, right in the speech band.
    x = tone(6000.0, 22050)
    y = resample_all(x, 22050, 8000)
    assert level_db(x) - level_db(y) >= 40.0


@pytest.mark.parametrize(("in_rate", "out_rate"), [(22050, 8000), (16000, 8000), (24000, 8000)])
@pytest.mark.parametrize("freq", [4200.0, 4500.0, 6000.0, 7900.0])
def test_stopband_is_at_least_70db_down(in_rate: int, out_rate: int, freq: float) -> None:
    x = tone(freq, in_rate)
    y = resample_all(x, in_rate, out_rate)
    assert level_db(x) - level_db(y) >= 70.0


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (8000, 24000)])
def test_upsampling_leaves_no_images_above_the_original_band(in_rate: int, out_rate: int) -> None:
    x = tone(3000.0, in_rate)  # images would appear at 5 kHz, 11 kHz, ...
    y = resample_all(x, in_rate, out_rate).astype(np.float64)
    mid = y[len(y) // 4 : 3 * len(y) // 4]
    spectrum = np.abs(np.fft.rfft(mid * np.kaiser(len(mid), 14))) ** 2
    freqs = np.fft.rfftfreq(len(mid), 1 / out_rate)
    in_band = spectrum[freqs < 4000].sum()
    images = spectrum[freqs > 4400].sum()
    assert 10 * math.log10(in_band / images) >= 70.0


@pytest.mark.parametrize(("in_rate", "out_rate"), [*NEEDED, (8000, 8000)])
def test_a_whole_stream_yields_ceil_n_times_ratio_samples(in_rate: int, out_rate: int) -> None:
    n = 12345
    r = Resampler(in_rate, out_rate)
    head = r.process(np.zeros(n, dtype=np.int16))
    tail = r.flush()
    total = -(-n * out_rate // in_rate)
    assert len(head) + len(tail) == total
    assert len(head) == total - r.delay  # the filter delay is what flush() releases
    assert head.dtype == np.int16 and tail.dtype == np.int16


@pytest.mark.parametrize(("in_rate", "out_rate"), NEEDED)
def test_output_is_delay_compensated(in_rate: int, out_rate: int) -> None:
    x = np.zeros(in_rate // 10, dtype=np.int16)
    x[in_rate // 20] = 30000  # an impulse 50 ms in
    y = resample_all(x, in_rate, out_rate)
    assert abs(int(np.argmax(np.abs(y))) - out_rate // 20) <= 1


@pytest.mark.parametrize(("in_rate", "out_rate"), NEEDED)
def test_dc_gain_is_unity(in_rate: int, out_rate: int) -> None:
    y = resample_all(np.full(in_rate // 10, 10000, dtype=np.int16), in_rate, out_rate)
    steady = y[len(y) // 4 : 3 * len(y) // 4]
    assert np.abs(steady.astype(int) - 10000).max() <= 1


@pytest.mark.parametrize(("in_rate", "out_rate"), [*NEEDED, (8000, 8000), (44100, 48000)])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_any_chunking_gives_the_one_shot_output(
    in_rate: int, out_rate: int, data: st.DataObject
) -> None:
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    x = np.random.default_rng(seed).integers(-30000, 30000, in_rate // 5).astype(np.int16)
    sizes = data.draw(st.lists(st.integers(0, 700), min_size=1, max_size=40), label="chunks")
    one_shot = resample_all(x, in_rate, out_rate)
    r = Resampler(in_rate, out_rate)
    parts, pos, i = [], 0, 0
    while pos < len(x):
        n = sizes[i % len(sizes)] or 1
        parts.append(r.process(x[pos : pos + n]))
        pos, i = pos + n, i + 1
    parts.append(r.flush())
    chunked = np.concatenate(parts)
    assert len(chunked) == len(one_shot)
    assert np.abs(chunked.astype(int) - one_shot.astype(int)).max(initial=0) <= 1


def test_twenty_ms_frames_from_piper_rate_give_160_samples_each_in_steady_state() -> None:
    r = Resampler(22050, 8000)
    x = tone(440.0, 22050, seconds=0.2)
    sizes = [len(r.process(x[i : i + 441])) for i in range(0, len(x) - 440, 441)]
    assert sizes[0] == 160 - r.delay
    assert sizes[1:] == [160] * (len(sizes) - 1)


def test_identity_passes_samples_through() -> None:
    r = Resampler(8000, 8000)
    x = tone(1000.0, 8000, seconds=0.02)
    assert (r.process(x) == x).all()
    assert r.flush().size == 0
    assert r.delay == 0


@pytest.mark.parametrize(("in_rate", "out_rate"), [(22050, 8000), (8000, 8000)])
def test_float_input_is_full_scale_one(in_rate: int, out_rate: int) -> None:
    x = tone(1000.0, in_rate, seconds=0.1)
    as_int = resample_all(x, in_rate, out_rate)
    r = Resampler(in_rate, out_rate)
    as_float = np.concatenate([r.process(x.astype(np.float32) / 32768.0), r.flush()])
    assert np.abs(as_float.astype(int) - as_int.astype(int)).max() <= 1


def test_overshoot_clips_instead_of_wrapping() -> None:
    square = np.where(np.sin(2 * np.pi * 500 * np.arange(2205) / 22050) >= 0, 32767, -32768)
    y = resample_all(square.astype(np.int16), 22050, 8000)
    assert y.max() == 32767 and y.min() == -32768  # Gibbs overshoot clipped at the rails
    expected_sign = np.sign(np.sin(2 * np.pi * 500 * (np.arange(len(y)) + 0.5) / 8000))
    plateau = np.abs(np.sin(2 * np.pi * 500 * (np.arange(len(y)) + 0.5) / 8000)) > 0.5
    assert (np.sign(y[plateau]) == expected_sign[plateau]).all()


def test_reset_starts_a_fresh_stream() -> None:
    x = tone(700.0, 16000, seconds=0.05)
    r = Resampler(16000, 8000)
    r.process(tone(1500.0, 16000, seconds=0.05))
    r.reset()
    fresh = Resampler(16000, 8000)
    assert (r.process(x) == fresh.process(x)).all()


def test_flush_resets_for_the_next_stream() -> None:
    x = tone(700.0, 24000, seconds=0.05)
    r = Resampler(24000, 8000)
    first = np.concatenate([r.process(x), r.flush()])
    second = np.concatenate([r.process(x), r.flush()])
    assert (first == second).all()


def test_filters_are_designed_once_and_read_only() -> None:
    a, b = Resampler(22050, 8000), Resampler(22050, 8000)
    assert a._filter is b._filter
    f = design_filter(160, 441)
    assert f.taps_per_phase == a.taps_per_phase and f.delay == a.delay
    with pytest.raises(ValueError):
        f.branches[0, 0] = 1.0


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((0, 8000), {}, "positive"),
        ((8000, -1), {}, "positive"),
        ((22050, 8000), {"taps_per_phase": 2}, "too short"),
    ],
)
def test_bad_construction_is_refused(args: tuple[int, int], kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Resampler(*args, **kwargs)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((2, 10), dtype=np.int16), np.zeros(10, dtype=np.int32), np.zeros(4, dtype=bool)],
)
def test_bad_samples_are_refused(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="expected"):
        Resampler(16000, 8000).process(bad)
    with pytest.raises(ValueError, match="expected"):
        Resampler(8000, 8000).process(bad)


def test_a_shorter_filter_can_be_chosen() -> None:
    r = Resampler(8000, 16000, taps_per_phase=16)
    assert r.taps_per_phase == 16 and r.taps_per_phase < Resampler(8000, 16000).taps_per_phase
    x = tone(1000.0, 8000)
    y = np.concatenate([r.process(x), r.flush()])
    assert len(y) == 16000
    assert abs(level_db(y) - level_db(x)) <= 0.5
