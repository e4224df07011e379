"""Diagnosis: how late a trio 20 ms timer wakes while a worker thread runs an engine, on one core.

    python bench/diag_timer_jitter.py [--nice 19] [--switch-interval 0.001] [--seconds 4]

The sidecar's playout is a trio task on a 20 ms absolute grid; STT and TTS run in worker
threads of the same process (``trio.to_thread``). This pins the whole process (every thread:
onnxruntime pins its own pool threads) to CPU 0 and measures ``trio.sleep_until`` lateness with
nothing else running, then with one worker thread looping over: Piper synthesis, Moonshine
transcription, pure Python (holds the GIL), numpy matmul (releases the GIL). ``--nice`` lowers
the worker threads' priority; ``--switch-interval`` sets ``sys.setswitchinterval``. A figure,
not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import trio  # noqa: E402

from media_sidecar.app import load_local_services  # noqa: E402
from media_sidecar.config.loader import load_config  # noqa: E402
from media_sidecar.dsp.resample import Resampler  # noqa: E402


def pin_all(cpu: int, nice: int, keep: int) -> None:
    """Pin every thread to ``cpu``; renice every thread but ``keep`` (the trio thread)."""
    for t in os.listdir(f"/proc/{os.getpid()}/task"):
        tid = int(t)
        os.sched_setaffinity(tid, {cpu})
        if nice and tid != keep:
            os.setpriority(os.PRIO_PROCESS, tid, nice)


def repeat(work: Callable[[], object], stop: threading.Event) -> None:
    while not stop.is_set():
        work()


async def grid(seconds: float) -> np.ndarray:
    late, t = [], trio.current_time()
    for _ in range(int(seconds / 0.02)):
        t += 0.02
        await trio.sleep_until(t)
        late.append((trio.current_time() - t) * 1000)
    return np.array(late)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nice", type=int, default=0)
    ap.add_argument("--switch-interval", type=float)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--cpu", type=int, default=0)
    args = ap.parse_args()
    services, _ = load_local_services(load_config(env={}))
    assert services is not None
    tts = services.speaker_factory(None).tts  # type: ignore[operator]
    stt: Any = services.stt
    pcm = np.concatenate(list(tts.synthesize("please transfer me to the billing department")))
    rs = Resampler(tts.rate, 8000)
    speech = np.concatenate([rs.process(pcm), rs.flush()]).astype(np.int16)
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    sentence = "We install phone lines, voicemail and call routing, and move your numbers."
    a = np.random.rand(400, 400)

    def python_loop() -> None:
        x = 0
        for i in range(100_000):
            x += i

    loads: list[tuple[str, Callable[[], object] | None]] = [
        ("nothing", None),
        ("Piper synthesis", lambda: list(tts.synthesize(sentence))),
        ("Moonshine transcription", lambda: stt.transcribe(speech, 8000)),
        ("pure Python (holds GIL)", python_loop),
        ("numpy matmul (no GIL)", lambda: a @ a),
    ]

    async def run() -> None:
        print(
            f"trio 20 ms timer lateness on CPU {args.cpu}, ms (worker nice {args.nice}, "
            f"switch interval {sys.getswitchinterval() * 1000:.1f} ms)"
        )
        print(f"{'worker thread':26} {'p50':>6} {'p99':>6} {'max':>6} {'>5 ms':>6}")
        for name, work in loads:
            stop = threading.Event()
            th = None
            if work is not None:
                th = threading.Thread(target=repeat, args=(work, stop))
                th.start()
            await trio.sleep(0.3)
            pin_all(args.cpu, args.nice, keep=threading.get_native_id())
            late = await grid(args.seconds)
            stop.set()
            if th is not None:
                th.join()
            print(
                f"{name:26} {np.percentile(late, 50):6.2f} {np.percentile(late, 99):6.2f} "
                f"{late.max():6.2f} {np.mean(late > 5) * 100:5.1f}%"
            )

    trio.run(run)


if __name__ == "__main__":
    main()
