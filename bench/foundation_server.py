"""The server side of bench_foundation: the whole product on loopback in its own process.

Started by ``bench_foundation.py`` (never on its own). It loads the real engines once
(``media_sidecar.app.load_local_services`` on the bench config), wraps them in timing shims
that only observe (every STT call and every TTS sentence is logged with its wall time,
process CPU time and audio length), then runs ``tests.e2e.stack.open_stack`` with those
services: the trio sidecar in this process's main thread and the asyncio FastAGI server in a
thread of the same process, exactly as the end-to-end tests do. AMI is off (degraded mode):
the fake AMI server would have to live in the load generator's process.

Protocol with the parent: once the stack is up it writes ``{"agi_port": ..., "pid": ...}`` to
the ``--ready`` file (stdout and stderr go to a log file, so nothing can block on a full pipe);
the process ends when its stdin closes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import trio  # noqa: E402

from media_sidecar.app import load_local_services, rules_brain  # noqa: E402
from media_sidecar.config.loader import load_config  # noqa: E402
from media_sidecar.config.schema import (  # noqa: E402
    Action,
    Config,
    DtmfMapping,
    InferenceConfig,
    Intent,
    NoInput,
    RoutingConfig,
)
from media_sidecar.session.call import CallServices  # noqa: E402
from media_sidecar.session.speaker import Speaker  # noqa: E402

BENCH_ASSISTANT = "bench"
"""The assistant the CPU and concurrency phases use (picked with the AI_ASSISTANT variable)."""
LATENCY_ASSISTANT = "receptionist-short"
"""The default receptionist with only a shorter greeting (the latency phase uses it: the greeting
does not take part in a turn, and the default one is 7 s of every call)."""
BENCH_GREETING = "Hello, how can I help you?"
LONG_REPLY = (
    "We look after telephone systems for offices of every size. "
    "We install phone lines, voicemail and call routing, and move your numbers without any "
    "downtime. "
    "Thank you for calling, goodbye."
)
"""The long spoken reply (about 10 s of audio, three sentences, then the agent hangs up)."""
BENCH_DIGIT = "5"
"""On the bench assistant this key gets the same long reply (a turn without STT)."""


def bench_config() -> Config:
    """The embedded default config plus the ``bench`` assistant.

    ``receptionist`` is the default assistant, untouched. :data:`LATENCY_ASSISTANT` is it with
    the shorter :data:`BENCH_GREETING`. :data:`BENCH_ASSISTANT` also has no no-input reprompt
    (so state windows are not disturbed) and, first in its intents, "services" with
    :data:`LONG_REPLY` and a hang-up; key :data:`BENCH_DIGIT` does the same.
    """
    base = load_config(env={})
    rec = base.assistant("receptionist")
    assert rec is not None
    services = Intent(
        name="services",
        reply=LONG_REPLY,
        keywords=("service", "offer"),
        action=Action(kind="hangup", reason="bench reply done"),
    )
    key5 = DtmfMapping(digit=BENCH_DIGIT, reply=LONG_REPLY, action=services.action)
    brain = dataclasses.replace(
        rec.brain,
        greeting=BENCH_GREETING,
        intents=(services, *rec.brain.intents),
        dtmf=(*rec.brain.dtmf, key5),
        no_input=NoInput(after=0.0),
    )
    bench = dataclasses.replace(rec, name=BENCH_ASSISTANT, brain=brain)
    short = dataclasses.replace(
        rec, name=LATENCY_ASSISTANT, brain=dataclasses.replace(rec.brain, greeting=BENCH_GREETING)
    )
    return dataclasses.replace(
        base,
        assistants=(rec, short, bench),
        routing=RoutingConfig(
            default="receptionist", rules=base.routing.rules, allow_channel_override=True
        ),
    )


class EngineLog:
    """Appends one JSON line per engine call; thread-safe (engines run in worker threads)."""

    def __init__(self, path: str) -> None:
        self._f = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        self._lock = threading.Lock()

    def write(self, **fields: Any) -> None:
        line = json.dumps(fields, separators=(",", ":"))
        with self._lock:
            self._f.write(line + "\n")


class TimedStt:
    """Wraps the real STT engine; logs wall and process CPU time of each transcription.

    Wall time includes the wait for Moonshine's per-model lock (concurrent utterances queue).
    """

    def __init__(self, inner: Any, log: EngineLog) -> None:
        self.inner = inner
        self.name = inner.name
        self.log = log

    def transcribe(self, pcm: np.ndarray, rate: int) -> str:
        w0, c0 = time.monotonic(), time.process_time()
        text = self.inner.transcribe(pcm, rate)
        w1, c1 = time.monotonic(), time.process_time()
        dump = os.environ.get("BENCH_DUMP_STT")
        if dump:  # debugging aid: the exact audio each transcription got, as .npy
            np.save(Path(dump) / f"stt-{w0:.3f}.npy", np.asarray(pcm))
        self.log.write(
            engine="stt",
            start=w0,
            end=w1,
            wall_ms=round((w1 - w0) * 1000, 2),
            cpu_ms=round((c1 - c0) * 1000, 2),
            audio_s=round(len(pcm) / rate, 3),
            text=text,
        )
        return text


class TimedTts:
    """Wraps the real TTS engine; logs each utterance's synthesis time and audio length.

    ``cache=True`` is an experiment, not the product: a text synthesised once is replayed from
    memory afterwards (what pre-synthesising the rule brain's fixed sentences would give).
    """

    def __init__(self, inner: Any, log: EngineLog, cache: bool = False) -> None:
        self.inner = inner
        self.name = inner.name
        self.rate = inner.rate
        self.log = log
        self.cache: dict[str, list[np.ndarray]] | None = {} if cache else None

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        w0, c0 = time.monotonic(), time.process_time()
        samples = 0
        cached = self.cache.get(text) if self.cache is not None else None
        made: list[np.ndarray] = []
        for chunk in cached if cached is not None else self.inner.synthesize(text):
            samples += len(chunk)
            made.append(chunk)
            yield chunk
        if self.cache is not None and cached is None:
            self.cache[text] = made
        w1, c1 = time.monotonic(), time.process_time()
        self.log.write(
            engine="tts",
            start=w0,
            end=w1,
            wall_ms=round((w1 - w0) * 1000, 2),
            cpu_ms=round((c1 - c0) * 1000, 2),
            audio_s=round(samples / self.rate, 3),
            chars=len(text),
            cached=cached is not None,
        )


class GcLog:
    """Logs every collection of generation 1 or 2 with its pause (a gc callback: observes only;
    the collector holds the GIL, so a pause here stalls the trio thread too)."""

    def __init__(self, log: EngineLog) -> None:
        self.log = log
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.monotonic()
        elif info.get("generation", 0) >= 1:
            t1 = time.monotonic()
            self.log.write(
                engine="gc",
                start=self._t0,
                end=t1,
                gen=info["generation"],
                wall_ms=round((t1 - self._t0) * 1000, 2),
                collected=info.get("collected", 0),
            )


def timed_services(cfg: Config, log: EngineLog, tts_cache: bool = False) -> CallServices:
    """The same services ``run_sidecar`` would load, with the engines behind timing shims."""
    services, unavailable = load_local_services(cfg)
    if services is None or unavailable:
        raise SystemExit(f"local engines unavailable: {unavailable}")
    tts = services.speaker_factory(None).tts  # type: ignore[operator]
    timed_tts = TimedTts(tts, log, cache=tts_cache)
    return CallServices(
        speaker_factory=lambda _a: Speaker(timed_tts),
        brain_factory=rules_brain,
        stt=TimedStt(services.stt, log),
    )


def _write_ready(path: str, info: dict[str, Any]) -> None:
    """Atomically (the parent polls for the file)."""
    Path(path + ".tmp").write_text(json.dumps(info))
    os.replace(path + ".tmp", path)


def pooled_services(cfg: Config, processes: int, threads: int = 1, nice: int = 5
                    ) -> CallServices:
    """The services as ``run_sidecar`` loads them with an inference pool of ``processes``
    (no timing shims: the pool's own samples say what each request waited and took). The
    pool's processes may run on every CPU, whatever this process is pinned to."""
    cfg = dataclasses.replace(cfg, sidecar=dataclasses.replace(
        cfg.sidecar, inference=InferenceConfig(enabled=True, processes=processes,
                                               threads=threads, nice=nice)))
    services, unavailable = load_local_services(cfg)
    if services is None or unavailable or services.speech is None:
        raise SystemExit(f"local engines unavailable: {unavailable}")
    pool = services.speech.pool
    assert pool is not None
    cpus = set(range(os.cpu_count() or 1))
    for pid in pool.pids:
        if pid is not None:
            os.sched_setaffinity(pid, cpus)
    pool.stats.samples.clear()  # the sentence cache rendered at load: not a call's requests
    return services


async def log_pool(services: CallServices, log: EngineLog) -> None:
    """Write each finished pool request to the engine log (``engine``: ``pool_stt`` or
    ``pool_tts``; ``start``/``end`` on time.monotonic; queue wait, time to its first answer,
    inference time in the process). Runs until cancelled."""
    pool = services.speech.pool if services.speech is not None else None
    if pool is None:
        return
    while True:
        await trio.sleep(0.25)
        offset = time.monotonic() - trio.current_time()
        while pool.stats.samples:
            kind, wait, first, compute, done = pool.stats.samples.popleft()
            end = done + offset
            log.write(engine=f"pool_{kind}", start=end - wait - first, end=end,
                      wait_ms=round(wait * 1000, 2), first_ms=round(first * 1000, 2),
                      compute_ms=round(compute * 1000, 2),
                      wall_ms=round((wait + first) * 1000, 2))


async def serve(cfg: Config, services: CallServices, records: str, ready: str,
                log: EngineLog | None = None) -> None:
    from tests.e2e.stack import open_stack

    async with open_stack(cfg, records, services=services, ami=False) as stack, \
            trio.open_nursery() as nursery:
        if log is not None:
            nursery.start_soon(log_pool, services, log)
        _write_ready(ready, {"agi_port": stack.agi_port, "pid": os.getpid()})
        # Until the parent closes our stdin (an abandoned read thread is fine at exit).
        await trio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)
        nursery.cancel_scope.cancel()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", required=True)
    ap.add_argument("--engine-log", required=True)
    ap.add_argument("--ready", required=True)
    ap.add_argument("--profile", help="write a pyinstrument profile of the trio thread here")
    ap.add_argument(
        "--switch-interval",
        type=float,
        help="experiment: sys.setswitchinterval (the GIL hand-over period)",
    )
    ap.add_argument(
        "--tts-cache",
        action="store_true",
        help="experiment: replay a sentence synthesised before from memory",
    )
    ap.add_argument(
        "--pool",
        type=int,
        default=0,
        help="run STT and TTS in an inference pool of this many processes (0: worker threads "
        "of this process behind timing shims, as before the pool)",
    )
    ap.add_argument("--pool-threads", type=int, default=1, help="sidecar.inference.threads")
    ap.add_argument("--pool-nice", type=int, default=5, help="sidecar.inference.nice")
    args = ap.parse_args()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    cfg = bench_config()
    log = EngineLog(args.engine_log)
    if args.pool:
        services = pooled_services(cfg, args.pool, args.pool_threads, args.pool_nice)
    else:
        cfg = dataclasses.replace(cfg, sidecar=dataclasses.replace(
            cfg.sidecar, inference=InferenceConfig(enabled=False)))
        services = timed_services(cfg, log, args.tts_cache)
    import gc

    gc.callbacks.append(GcLog(log))
    if not args.profile:
        trio.run(serve, cfg, services, args.records, args.ready, log)
        return
    from pyinstrument import Profiler  # only for --profile (pip install pyinstrument)

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    try:
        trio.run(serve, cfg, services, args.records, args.ready, log)
    finally:
        profiler.stop()
        # The loop idles in epoll most of the time: list what it does besides (self time).
        opts = {"filter_threshold": 0.0005}
        flat = profiler.output_text(flat=True, processor_options=opts)
        tree = profiler.output_text(processor_options=opts)
        Path(args.profile).write_text(f"{flat}\n\n{tree}")


if __name__ == "__main__":
    main()
