"""DSP benchmark: resampler and G.711 throughput on one core, and their quality.

    python bench/bench_dsp.py [--quick] [--out FILE.json]

Throughput, in this process pinned to one core (CPU 1 by default):

* ``media_sidecar.dsp.resample.Resampler`` for each rate pair, fed 20 ms chunks as the sidecar
  feeds it (one stateful resampler per stream), and fed 1 s blocks;
* ``media_sidecar.dsp.g711`` mu-law and A-law encode and decode of 20 ms frames (160 samples).

Figures: "x real time per core" = seconds of audio processed per second of process CPU time,
and microseconds (wall) per 20 ms frame. Quality, per rate pair: SNR of a passband tone (1 kHz
and 0.8 x the lower Nyquist) against the ideal tone at the output rate (the resampler's output
is delay-compensated: output sample 0 is aligned with input sample 0, so no shift is needed),
the passband gain, and, when downsampling, the residual of tones above the output Nyquist
(aliasing) relative to the input level. G.711 round-trip SNR of a 1 kHz tone at several levels.

Nothing is asserted: benchmarks are not tests (../shared/STYLE.md).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _p in (str(ROOT), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402

from media_sidecar.constants import FRAME_MS, SAMPLE_RATE  # noqa: E402
from media_sidecar.dsp import g711  # noqa: E402
from media_sidecar.dsp.resample import Resampler  # noqa: E402

PAIRS: tuple[tuple[int, int], ...] = (
    (8000, 16000),
    (16000, 8000),
    (8000, 24000),
    (24000, 8000),
    (8000, 48000),
    (48000, 8000),
    (22050, 8000),
)
"""Rate pairs measured; 22050 -> 8000 is Piper's output rate to the call leg."""
BENCH_CPU = 1
AMPLITUDE = 16384.0
"""Test tones at -6 dBFS."""
ALIAS_TONES = (4400.0, 5000.0)
"""Tones above the 8 kHz Nyquist fed to every downsampler toward 8 kHz."""
G711_LEVELS_DBFS = (-10.0, -20.0, -30.0, -40.0)


@contextlib.contextmanager
def pinned(cpus: set[int] | None) -> Iterator[None]:
    """Pin every thread of this process (numpy's BLAS pool too) for the block, then restore."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), cpus)
    try:
        yield
    finally:
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(tid), before)


def tone(freq: float, rate: int, n: int, amp: float = AMPLITUDE) -> np.ndarray:
    """``amp * sin(2 pi f t)``, float64, t = k / rate."""
    return amp * np.sin(2 * np.pi * freq * np.arange(n, dtype=np.float64) / rate)


def _i16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def _db(x: float) -> float | None:
    """10 log10(x); None for 0 (e.g. an all-zero output: below int16 resolution)."""
    return round(10 * math.log10(x), 2) if x > 0 else None


def _resample_stream(rs: Resampler, x: np.ndarray, chunk: int) -> np.ndarray:
    parts = [rs.process(x[i : i + chunk]) for i in range(0, len(x), chunk)]
    parts.append(rs.flush())
    return np.concatenate(parts)


# -- throughput ---------------------------------------------------------------------------------------
def _time_loop(fn: Callable[[], object], reps: int) -> tuple[float, float]:
    """(wall, cpu) seconds for ``reps`` calls of ``fn``, best of three rounds (by wall)."""
    best = (math.inf, math.inf)
    for _ in range(3):
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(reps):
            fn()
        w, c = time.perf_counter() - w0, time.process_time() - c0
        if w < best[0]:
            best = (w, c)
    return best


def resampler_speed(in_rate: int, out_rate: int, seconds: float) -> dict[str, Any]:
    """20 ms chunks and 1 s blocks through one stateful resampler."""
    rng = np.random.default_rng(1)
    audio = _i16(rng.normal(0, 3000, int(in_rate * seconds)))
    out: dict[str, Any] = {}
    for label, chunk in (("20ms", in_rate * FRAME_MS // 1000), ("1s", in_rate)):
        rs = Resampler(in_rate, out_rate)
        chunks = [audio[i : i + chunk] for i in range(0, len(audio) - chunk + 1, chunk)]
        k = 0

        def step(rs: Resampler = rs, chunks: list[np.ndarray] = chunks) -> None:
            nonlocal k
            rs.process(chunks[k])
            k = (k + 1) % len(chunks)

        rs.process(chunks[0])  # warm: filter designed, caches filled
        reps = len(chunks)
        wall, cpu = _time_loop(step, reps)
        audio_s = reps * chunk / in_rate
        frames = audio_s * 1000 / FRAME_MS
        out[label] = {
            "chunk_samples": chunk,
            "x_realtime_per_core": round(audio_s / cpu, 1) if cpu > 0 else None,
            "us_per_20ms_frame": round(1e6 * wall / frames, 2),
        }
    return out


def g711_speed(seconds: float) -> dict[str, Any]:
    rng = np.random.default_rng(2)
    pcm = _i16(rng.normal(0, 3000, int(SAMPLE_RATE * seconds)))
    n = SAMPLE_RATE * FRAME_MS // 1000
    frames = [pcm[i : i + n] for i in range(0, len(pcm) - n + 1, n)]
    ulaw = [g711.ulaw_encode(f) for f in frames]
    alaw = [g711.alaw_encode(f) for f in frames]
    ops: dict[str, tuple[Callable[[Any], object], list[Any]]] = {
        "ulaw_encode": (g711.ulaw_encode, frames),
        "ulaw_decode": (g711.ulaw_decode, ulaw),
        "alaw_encode": (g711.alaw_encode, frames),
        "alaw_decode": (g711.alaw_decode, alaw),
    }
    out: dict[str, Any] = {}
    for name, (fn, items) in ops.items():
        k = 0

        def step(fn: Callable[[Any], object] = fn, items: list[Any] = items) -> None:
            nonlocal k
            fn(items[k])
            k = (k + 1) % len(items)

        wall, cpu = _time_loop(step, len(items))
        audio_s = len(items) * FRAME_MS / 1000
        out[name] = {
            "x_realtime_per_core": round(audio_s / cpu) if cpu > 0 else None,
            "us_per_20ms_frame": round(1e6 * wall / len(items), 2),
        }
    return out


# -- quality ------------------------------------------------------------------------------------------
def _fit(y: np.ndarray, freq: float, rate: int) -> tuple[np.ndarray, float]:
    """Least-squares fit of a sine and cosine at ``freq``; returns (fit, amplitude)."""
    t = np.arange(len(y), dtype=np.float64) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    return basis @ coef, float(np.hypot(*coef))


def tone_quality(in_rate: int, out_rate: int, freq: float, seconds: float = 1.0) -> dict[str, Any]:
    """Resample a -6 dBFS tone in 20 ms chunks; compare with the ideal tone at the output rate.

    ``snr_db``: ideal power / power of (output - ideal), the filter's passband gain and phase
    errors included; ``snr_fit_db``: against the best-fitting sine (noise and distortion only);
    ``gain_db``: fitted amplitude / input amplitude. The first and last 50 ms are left out (the
    stream's start and the flush tail).
    """
    n = int(in_rate * seconds)
    x = _i16(tone(freq, in_rate, n))
    rs = Resampler(in_rate, out_rate)
    y = _resample_stream(rs, x, in_rate * FRAME_MS // 1000).astype(np.float64)
    ideal = tone(freq, out_rate, len(y))
    edge = out_rate // 20
    y, ideal = y[edge:-edge], ideal[edge:-edge]
    err = y - ideal
    fitted, amp = _fit(y, freq, out_rate)
    noise = y - fitted
    return {
        "freq_hz": freq,
        "snr_db": _db(float(np.mean(ideal**2) / np.mean(err**2))),
        "snr_fit_db": _db(float(np.mean(fitted**2) / np.mean(noise**2))),
        "gain_db": round(20 * math.log10(amp / AMPLITUDE), 4),
    }


def alias_residual(in_rate: int, out_rate: int, freq: float, seconds: float = 1.0) -> float | None:
    """Output RMS relative to input RMS, dB, for a tone above the output Nyquist."""
    n = int(in_rate * seconds)
    x = _i16(tone(freq, in_rate, n))
    y = _resample_stream(Resampler(in_rate, out_rate), x, in_rate * FRAME_MS // 1000)
    edge = out_rate // 20
    y = y[edge:-edge].astype(np.float64)
    return _db(float(np.mean(y**2) / np.mean(x.astype(np.float64) ** 2)))


def g711_quality() -> list[dict[str, Any]]:
    """Round-trip SNR (encode then decode) of a 1 kHz tone at several levels (dBFS, sine peak
    re full scale)."""
    out = []
    for level in G711_LEVELS_DBFS:
        x = _i16(tone(1000.0, SAMPLE_RATE, SAMPLE_RATE, 32767 * 10 ** (level / 20)))
        xf = x.astype(np.float64)
        row: dict[str, Any] = {"level_dbfs": level}
        for law, enc, dec in (
            ("ulaw", g711.ulaw_encode, g711.ulaw_decode),
            ("alaw", g711.alaw_encode, g711.alaw_decode),
        ):
            y = dec(enc(x)).astype(np.float64)
            row[f"{law}_snr_db"] = _db(float(np.mean(xf**2) / np.mean((y - xf) ** 2)))
        out.append(row)
    return out


def resampler_quality(in_rate: int, out_rate: int) -> dict[str, Any]:
    low_nyquist = min(in_rate, out_rate) / 2
    tones = [tone_quality(in_rate, out_rate, f) for f in (1000.0, 0.8 * low_nyquist)]
    out: dict[str, Any] = {"tones": tones}
    if out_rate < in_rate:
        out["alias_residual_db"] = {
            str(int(f)): alias_residual(in_rate, out_rate, f)
            for f in ALIAS_TONES
            if out_rate / 2 < f < in_rate / 2
        }
    return out


# -- entry points -------------------------------------------------------------------------------------
def run(quick: bool = False, *, pin: bool = True) -> dict[str, Any]:
    """Throughput and quality of the resamplers and G.711; JSON-serialisable results."""
    seconds = 5.0 if quick else 30.0
    pin = pin and (os.cpu_count() or 1) > 1
    t0 = time.monotonic()
    resamplers = []
    with pinned({BENCH_CPU} if pin else None):
        for a, b in PAIRS:
            rs = Resampler(a, b)
            resamplers.append(
                {
                    "in_rate": a,
                    "out_rate": b,
                    "taps_per_phase": rs.taps_per_phase,
                    "delay_out_samples": rs.delay,
                    "speed": resampler_speed(a, b, seconds),
                    "quality": resampler_quality(a, b),
                }
            )
        g = g711_speed(seconds * 5)
        gq = g711_quality()
    return {
        "benchmark": "dsp",
        "mode": "quick" if quick else "full",
        "date": dt.date.today().isoformat(),
        "audio_seconds_per_measure": seconds,
        "pinning": {"enabled": pin, "cpu": BENCH_CPU if pin else None},
        "numpy": np.__version__,
        "tone_amplitude_dbfs": round(20 * math.log10(AMPLITUDE / 32768), 1),
        "resamplers": resamplers,
        "g711_speed": g,
        "g711_quality": gq,
        "duration_s": round(time.monotonic() - t0, 1),
    }


def _f(x: Any, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def render_md(result: dict[str, Any]) -> str:
    """A markdown section: resampler speed and quality, G.711 speed and round-trip SNR."""
    lines = [
        "### DSP: resampler and G.711 on one core",
        "",
        "What it measures: `media_sidecar.dsp.resample.Resampler` (one stateful polyphase "
        "resampler per stream) fed 20 ms chunks as the sidecar does and 1 s blocks, and G.711 "
        "on 20 ms frames, in one process pinned to one core. x RT = seconds of audio per second "
        "of CPU; us/frame = wall microseconds per 20 ms of audio. Quality with a "
        f"{result['tone_amplitude_dbfs']} dBFS tone in 20 ms chunks: SNR against the ideal tone "
        "at the output rate (no alignment needed: the output is delay-compensated), SNR "
        "against the best-fitting sine (noise and distortion only), passband gain; alias = "
        "output level of a tone above the output Nyquist, relative to the input (silent: every "
        "output sample rounds to 0, i.e. below -96 dB of a -6 dBFS input).",
        "",
        "| rate | taps/phase | 20 ms: x RT / us per frame | 1 s: x RT / us per frame "
        "| SNR 1 kHz (fit) dB | tone at 0.8 Nyq: SNR (fit) dB, gain dB | alias 4.4 / 5 kHz dB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["resamplers"]:
        s20, s1 = r["speed"]["20ms"], r["speed"]["1s"]
        t1, t2 = r["quality"]["tones"]
        alias = r["quality"].get("alias_residual_db")
        alias_s = (
            " / ".join(
                ("silent" if alias[k] is None else f"{alias[k]:.1f}") if k in alias else "-"
                for k in ("4400", "5000")
            )
            if alias is not None
            else "-"
        )
        lines.append(
            f"| {r['in_rate']} -> {r['out_rate']} | {r['taps_per_phase']}"
            f" | {_f(s20['x_realtime_per_core'], '{:.0f}')} / {_f(s20['us_per_20ms_frame'])}"
            f" | {_f(s1['x_realtime_per_core'], '{:.0f}')} / {_f(s1['us_per_20ms_frame'])}"
            f" | {_f(t1['snr_db'])} ({_f(t1['snr_fit_db'])})"
            f" | {t2['freq_hz']:.0f} Hz: {_f(t2['snr_db'])} ({_f(t2['snr_fit_db'])}),"
            f" {t2['gain_db']:+.4f} | {alias_s} |"
        )
    lines += [
        "",
        "| G.711 op (160 samples) | x RT per core | us per 20 ms frame |",
        "|---|---|---|",
    ]
    for name, v in result["g711_speed"].items():
        lines.append(
            f"| {name} | {_f(v['x_realtime_per_core'], '{:.0f}')} | {_f(v['us_per_20ms_frame'], '{:.2f}')} |"
        )
    lines += [
        "",
        "| 1 kHz tone level dBFS | mu-law round-trip SNR dB | A-law round-trip SNR dB |",
        "|---|---|---|",
    ]
    for q in result["g711_quality"]:
        lines.append(f"| {q['level_dbfs']:.0f} | {_f(q['ulaw_snr_db'])} | {_f(q['alaw_snr_db'])} |")
    return "\n".join(lines)


def _main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 s of audio per measure instead of 30")
    ap.add_argument("--out", help="write the JSON here")
    ap.add_argument("--no-pin", action="store_true")
    args = ap.parse_args()
    res = run(args.quick, pin=not args.no_pin)
    print(render_md(res))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    _main()
