"""A trio instrument that logs every task step longer than a threshold, and every garbage
collection as long: what held the media loop (and so the frame clock) when frames went out late.
It found the full collections of 50-65 ms every ~1.4 s at 100 speech-to-speech calls that
:func:`media_sidecar.process.settle_heap` now avoids.

Switched on with the environment variable ``AGI_VOICE_SLOW_STEP_MS`` (milliseconds) in the
media process; off by default (it costs two clock reads per task step).
"""

from __future__ import annotations

import gc
import logging
import os
import time

import trio

log = logging.getLogger("agi_voice.slow")

ENV = "AGI_VOICE_SLOW_STEP_MS"


class SlowSteps(trio.abc.Instrument):
    def __init__(self, threshold_ms: float) -> None:
        self.threshold = threshold_ms / 1000
        self._t0 = 0.0
        self.slow = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._t0 = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        took = time.perf_counter() - self._t0
        if took >= self.threshold:
            self.slow += 1
            log.warning("slow task step: %.1f ms in %s", took * 1000, task.name)


class _GcTimer:
    """Logs garbage collections longer than the threshold (they run inside whatever task step
    allocated last)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
            return
        took = time.perf_counter() - self._t0
        if took >= self.threshold:
            log.warning("slow garbage collection: %.1f ms, generation %d, %d collected",
                        took * 1000, info.get("generation", -1), info.get("collected", 0))


def from_env() -> list[trio.abc.Instrument]:
    """The instruments the environment asks for (none by default)."""
    value = os.environ.get(ENV, "")
    try:
        ms = float(value) if value else 0.0
    except ValueError:
        log.warning("%s=%r is not a number of milliseconds: ignored", ENV, value)
        return []
    if ms <= 0:
        return []
    gc.callbacks.append(_GcTimer(ms / 1000))
    return [SlowSteps(ms)]
