"""What recording a call costs the media loop, per 20 ms frame (issue 17).

    .venv/bin/python bench/bench_recording.py [--calls 20] [--seconds 30]

Runs, on this thread as the frame clock's tick does, what a recorded call adds per frame: the
agent's frame handed to :meth:`Recorder.agent` at the write phase and the caller's frame to
:meth:`Recorder.caller` at the read phase, with the real writer thread taking the full 1 s
chunks and writing them to a temporary folder. Reports the mean added time per frame (both
sides) and its p99 and maximum over ticks, for an 8 kHz call and a 16 kHz (slin16) call,
against the same loop without a recorder. A figure, not a test: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import trio

from media_sidecar.ops.recordingfile import RecordingWriter
from media_sidecar.protocol.audiosocket import AudioFormat, encode_audio
from media_sidecar.session.recording import Recorder


def run(fmt: AudioFormat, calls: int, seconds: float, root: Path, record: bool) -> np.ndarray:
    writer = RecordingWriter()
    rng = np.random.default_rng(1)
    agent = encode_audio(rng.integers(-3000, 3000, 160, dtype=np.int16).astype("<i2").tobytes())
    caller = rng.integers(-3000, 3000, fmt.rate // 50, dtype=np.int16).astype("<i2").tobytes()
    recs = [Recorder(root / f"{fmt.rate}-{i}.wav", fmt, writer=writer) for i in range(calls)]
    ticks = int(seconds / 0.02)
    per_tick = np.empty(ticks)
    for k in range(ticks):
        t = 100.0 + k * 0.02
        t0 = time.perf_counter()
        if record:
            for r in recs:
                r.agent(agent, t)
            for r in recs:
                r.caller(caller, t)
        per_tick[k] = time.perf_counter() - t0
    if record:
        async def finish() -> None:
            for r in recs:
                entry = await r.finish()
                assert "truncated" not in entry, entry
        trio.run(finish)
    return per_tick / calls  # seconds per call per tick: both sides of one frame


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=30.0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("slin", "slin16"):
            fmt = AudioFormat.parse(name)
            base = run(fmt, a.calls, a.seconds, Path(tmp), record=False)
            rec = run(fmt, a.calls, a.seconds, Path(tmp), record=True)
            us = (rec - base) * 1e6
            print(f"{name:7s} {fmt.rate} Hz, {a.calls} calls x {a.seconds:g} s: recording adds "
                  f"{us.mean():.1f} us per call per frame (both sides; p99 tick "
                  f"{np.percentile(rec * 1e6, 99):.1f} us, max {rec.max() * 1e6:.1f} us per call)")


if __name__ == "__main__":
    main()
