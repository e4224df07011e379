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
from media_sidecar.config.schema import Action, Config, Intent, NoInput, RoutingConfig  # noqa: E402
from media_sidecar.session.call import CallServices  # noqa: E402
from media_sidecar.session.speaker import Speaker  # noqa: E402

BENCH_ASSISTANT = "bench"
"""The assistant the CPU and concurrency phases use (picked with the AI_ASSISTANT variable)."""
BENCH_GREETING = "Hello, thanks for calling. How can I help you today?"
LONG_REPLY = (
    "We look after telephone systems for offices of every size. "
    "We install phone lines, voicemail and call routing, and we move your numbers over "
    "without any downtime. "
    "Our plans include remote monitoring and a technician on site within one working day. "
    "Thank you for calling, goodbye."
)
"""The long spoken reply (about 17 s of audio, four sentences, then the agent hangs up)."""


def bench_config() -> Config:
    """The embedded default config plus the ``bench`` assistant.

    ``receptionist`` is the default assistant, untouched (the latency phase uses it). ``bench``
    is the same assistant with a shorter greeting, no no-input reprompt (so state windows are
    not disturbed) and, first in its intents, "services" with :data:`LONG_REPLY` and a hang-up.
    """
    base = load_config(env={})
    rec = base.assistant("receptionist")
    assert rec is not None
    services = Intent(name="services", reply=LONG_REPLY, keywords=("service", "offer"),
                      action=Action(kind="hangup", reason="bench reply done"))
    brain = dataclasses.replace(rec.brain, greeting=BENCH_GREETING,
                                intents=(services, *rec.brain.intents),
                                no_input=NoInput(after=0.0))
    bench = dataclasses.replace(rec, name=BENCH_ASSISTANT, brain=brain)
    return dataclasses.replace(
        base, assistants=(rec, bench),
        routing=RoutingConfig(default="receptionist", rules=base.routing.rules,
                              allow_channel_override=True))


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
        self.log.write(engine="stt", start=w0, end=w1, wall_ms=round((w1 - w0) * 1000, 2),
                       cpu_ms=round((c1 - c0) * 1000, 2), audio_s=round(len(pcm) / rate, 3),
                       text=text)
        return text


class TimedTts:
    """Wraps the real TTS engine; logs each utterance's synthesis time and audio length."""

    def __init__(self, inner: Any, log: EngineLog) -> None:
        self.inner = inner
        self.name = inner.name
        self.rate = inner.rate
        self.log = log

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        w0, c0 = time.monotonic(), time.process_time()
        samples = 0
        for chunk in self.inner.synthesize(text):
            samples += len(chunk)
            yield chunk
        w1, c1 = time.monotonic(), time.process_time()
        self.log.write(engine="tts", start=w0, end=w1, wall_ms=round((w1 - w0) * 1000, 2),
                       cpu_ms=round((c1 - c0) * 1000, 2), audio_s=round(samples / self.rate, 3),
                       chars=len(text))


def timed_services(cfg: Config, log: EngineLog) -> CallServices:
    """The same services ``run_sidecar`` would load, with the engines behind timing shims."""
    services, unavailable = load_local_services(cfg)
    if services is None or unavailable:
        raise SystemExit(f"local engines unavailable: {unavailable}")
    tts = services.speaker_factory(None).tts  # type: ignore[operator]
    timed_tts = TimedTts(tts, log)
    return CallServices(speaker_factory=lambda _a: Speaker(timed_tts),
                        brain_factory=rules_brain, stt=TimedStt(services.stt, log))


async def serve(cfg: Config, services: CallServices, records: str, ready: str) -> None:
    from tests.e2e.stack import open_stack

    async with open_stack(cfg, records, services=services, ami=False) as stack:
        tmp = ready + ".tmp"
        Path(tmp).write_text(json.dumps({"agi_port": stack.agi_port, "pid": os.getpid()}))
        os.replace(tmp, ready)
        # Until the parent closes our stdin (an abandoned read thread is fine at exit).
        await trio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", required=True)
    ap.add_argument("--engine-log", required=True)
    ap.add_argument("--ready", required=True)
    args = ap.parse_args()
    cfg = bench_config()
    services = timed_services(cfg, EngineLog(args.engine_log))
    trio.run(serve, cfg, services, args.records, args.ready)


if __name__ == "__main__":
    main()
