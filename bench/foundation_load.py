"""The load-generator side of bench_foundation: caller audio, placing calls, reading results.

Runs in the parent process (its own core), never in the server's. Calls come from the
product's Asterisk emulator (``fastagi_server.emulator.call.run_call``) over loopback TCP:
FastAGI env block and replies, then AudioSocket frames every 20 ms, exactly as in the
end-to-end tests. Everything here is measurement plumbing; nothing is asserted.

Clocks: the emulator stamps frames with ``trio.current_time()``; the server's engine log and
the CPU sampler use ``time.monotonic()`` (the same CLOCK_MONOTONIC in both processes).
:class:`Clock` converts trio time of this process to monotonic time.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trio

from fastagi_server.emulator.agi_side import AudioRunner
from fastagi_server.emulator.audiosocket_side import AudioSocketResult, agent_samples
from fastagi_server.emulator.call import CallResult, run_call
from fastagi_server.emulator.caller import AgentQuiet, CallerScript
from fastagi_server.emulator.channel import ChannelSpec
from media_sidecar.constants import FRAME_SECONDS, SAMPLE_RATE
from media_sidecar.dsp.resample import Resampler
from media_sidecar.protocol.audiosocket import AUDIO_KIND_RATES, Kind

AGENT_LEVEL = 300.0
"""RMS above which an agent frame counts as speech (the emulator's CallerScript default)."""
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- numbers ---------------------------------------------------------------------------------------
def pct(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation), None for no values."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def summary(values: Sequence[float], digits: int = 1) -> dict[str, Any]:
    """n, p50, p95, p99, max and mean of ``values`` (rounded), or n=0."""
    if not values:
        return {"n": 0}
    arr = np.asarray(values, dtype=np.float64)
    out: dict[str, Any] = {"n": len(values)}
    for name, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        out[name] = round(float(np.percentile(arr, q)), digits)
    out["max"] = round(float(arr.max()), digits)
    out["mean"] = round(float(arr.mean()), digits)
    return out


# -- caller audio ------------------------------------------------------------------------------------
def synth_caller(tts: Any, text: str, threshold: int = 500) -> np.ndarray:
    """``text`` spoken by the Piper engine, resampled to 8 kHz with the product's resampler
    (one stateful resampler for the utterance), leading and trailing silence trimmed to 20 ms
    so the emulator's "end of speech" is the end of the last word."""
    pcm = np.concatenate([np.asarray(c, dtype=np.int16) for c in tts.synthesize(text)])
    rs = Resampler(tts.rate, SAMPLE_RATE)
    out = np.concatenate([rs.process(pcm), rs.flush()]).astype(np.int16)
    loud = np.flatnonzero(np.abs(out.astype(np.int32)) > threshold)
    if not len(loud):
        return out
    pad = SAMPLE_RATE // 50
    return out[max(0, loud[0] - pad) : loud[-1] + pad]


def join_speech(parts: Sequence[np.ndarray], gap_s: float) -> np.ndarray:
    """Utterances joined by ``gap_s`` of digital silence (shorter than the VAD hangover, so
    the VAD hears one long turn)."""
    gap = np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.int16)
    out: list[np.ndarray] = []
    for i, p in enumerate(parts):
        if i:
            out.append(gap)
        out.append(p)
    return np.concatenate(out)


# -- processes and CPU -------------------------------------------------------------------------------
def tasks(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return []


def pin_process(pid: int, cpus: set[int]) -> int:
    """Set the affinity of every thread of ``pid`` (not just the process: onnxruntime pins its
    own pool threads to other cores). Returns how many threads were pinned."""
    n = 0
    for tid in tasks(pid):
        try:
            os.sched_setaffinity(tid, cpus)
            n += 1
        except (ProcessLookupError, PermissionError, OSError):
            pass
    return n


def renice_threads(pid: int, nice: int) -> None:
    """Set the nice value of every thread of ``pid`` except its main thread (per-thread on
    Linux); for experiments only."""
    for tid in tasks(pid):
        if tid == pid:
            continue
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) != nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
        except (ProcessLookupError, PermissionError, OSError):
            pass


def thread_affinity(pid: int) -> dict[str, int]:
    """How many threads of ``pid`` are allowed on each CPU list, e.g. {"0": 9}."""
    out: dict[str, int] = {}
    for tid in tasks(pid):
        try:
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except FileNotFoundError:
            continue
        for line in status.splitlines():
            if line.startswith("Cpus_allowed_list:"):
                key = line.split(":", 1)[1].strip()
                out[key] = out.get(key, 0) + 1
    return out


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (live and exited threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class CpuSampler:
    """Samples a process's CPU time every ``interval`` s (monotonic time, seconds of CPU)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []

    def sample(self) -> None:
        self.samples.append((time.monotonic(), process_cpu_seconds(self.pid)))

    async def run(self) -> None:
        while True:
            self.sample()
            await trio.sleep(self.interval)

    def at(self, t: float) -> float:
        """CPU seconds used up to monotonic time ``t`` (linear between samples)."""
        ts = [s[0] for s in self.samples]
        cs = [s[1] for s in self.samples]
        return float(np.interp(t, ts, cs))

    def used(self, t0: float, t1: float) -> float:
        return self.at(t1) - self.at(t0)


class Clock:
    """Converts this process's trio time to CLOCK_MONOTONIC (call inside trio.run)."""

    def __init__(self) -> None:
        self.offset = trio.current_time() - time.monotonic()

    def mono(self, t: float) -> float:
        return t - self.offset


# -- placing calls -------------------------------------------------------------------------------------
@dataclass
class Placed:
    """One call the generator placed."""

    name: str
    result: CallResult | None = None
    error: str = ""
    started: float = 0.0
    """monotonic."""
    ended: float = 0.0

    @property
    def session(self) -> AudioSocketResult | None:
        if self.result is None:
            return None
        runs = [s for s in self.result.audiosocket if s.closed_by != "not_answered"]
        return runs[0] if runs else None


def question_script(
    utterances: Sequence[np.ndarray],
    quiet_ms: float = 800.0,
    first_quiet_ms: float | None = None,
    safety_ms: float = 3000.0,
) -> CallerScript:
    """Speak each utterance once the agent has answered and been quiet; then, if the agent has
    not ended the call, hang up after ``safety_ms`` of agent quiet."""
    script = CallerScript(agent_level=AGENT_LEVEL)
    for i, pcm in enumerate(utterances):
        q = first_quiet_ms if (i == 0 and first_quiet_ms is not None) else quiet_ms
        script.speak(pcm, at=AgentQuiet(q))
    script.hangup(at=AgentQuiet(safety_ms))
    return script


async def place_call(
    agi_port: int,
    name: str,
    script: CallerScript | None,
    *,
    assistant: str,
    seconds: float,
    out: list[Placed],
    runner: AudioRunner | None = None,
) -> None:
    """Run one emulated call; append a :class:`Placed` (errors are recorded, never raised).

    ``script`` may be None when ``runner`` (the load engine's AudioSocket side) plays the
    caller."""
    placed = Placed(name=name, started=time.monotonic())
    out.append(placed)
    spec = ChannelSpec(
        channel=f"Local/{name}@bench-00000001;2",
        uniqueid=f"{name}.1",
        script="agent",
        dnid="7000",
        variables={"AI_ASSISTANT": assistant},
    )
    try:
        with trio.fail_after(seconds):
            placed.result = await run_call("127.0.0.1", agi_port, spec, script,
                                           audio_runner=runner)
    except trio.TooSlowError:
        placed.error = f"did not end within {seconds:.0f} s"
    except Exception as exc:  # a generator-side fault is a failed call, not a crashed bench
        placed.error = f"{type(exc).__name__}: {exc}"
    placed.ended = time.monotonic()


# -- what the caller saw ---------------------------------------------------------------------------------
def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x.astype(np.float32))))) if len(x) else 0.0


def loud_frame_times(s: AudioSocketResult) -> list[float]:
    """Arrival times (trio) of agent frames loud enough to be speech."""
    return [f.t for f in s.audio_frames() if _rms(agent_samples(f, s.agent_codec)) >= AGENT_LEVEL]


def caller_speech(result: CallResult, s: AudioSocketResult) -> list[tuple[float, float]]:
    """(start, end) trio times of each utterance the caller played in this session."""
    out = []
    for step in result.caller_log:
        if step.what.startswith("speak "):
            dur = float(step.what.split()[1])
            start = s.started_at + step.t
            out.append((start, start + dur))
    return out


def received_interval_devs_ms(s: AudioSocketResult) -> list[float]:
    """|arrival interval - 20 ms| of consecutive frames from the sidecar (hang-up excluded)."""
    times = [f.t for f in s.frames_received if f.kind in AUDIO_KIND_RATES]
    return [abs((b - a) - FRAME_SECONDS) * 1000 for a, b in zip(times, times[1:], strict=False)]


def send_lateness_ms(s: AudioSocketResult) -> list[float]:
    """How late the generator sent its own caller frames against its 20 ms grid (a check that
    the load generator kept up; large values make the receive figures suspect)."""
    times = [f.t for f in s.frames_sent if f.kind == Kind.AUDIO]
    return [(t - (s.started_at + (k + 1) * FRAME_SECONDS)) * 1000 for k, t in enumerate(times)]


@dataclass
class StepFrames:
    """Frame-timing figures over many calls."""

    devs_ms: list[float] = field(default_factory=list)
    send_late_ms: list[float] = field(default_factory=list)
    early_frames: int = 0
    max_lead_ms: float = 0.0
    gaps_over_40ms: int = 0

    def add(self, s: AudioSocketResult) -> None:
        devs = received_interval_devs_ms(s)
        self.devs_ms += devs
        self.gaps_over_40ms += sum(1 for d in devs if d > 20.0)
        self.send_late_ms += send_lateness_ms(s)
        self.early_frames += s.early_frames
        self.max_lead_ms = max(self.max_lead_ms, s.max_lead * 1000)

    def report(self) -> dict[str, Any]:
        return {
            "frames": len(self.devs_ms),
            "interval_dev_ms": summary(self.devs_ms, 2),
            "intervals_over_40ms": self.gaps_over_40ms,
            "early_frames": self.early_frames,
            "max_lead_ms": round(self.max_lead_ms, 1),
            "generator_send_late_ms": summary(self.send_late_ms, 2),
        }


def stalls(
    placed: Sequence[Placed], engines: Sequence[dict[str, Any]], clock: Clock, n: int = 8
) -> list[dict[str, Any]]:
    """The ``n`` longest gaps between frames the emulator received (over 30 ms), each with the
    engine work (STT, TTS sentences, GC) the server was doing during it: where stalls come
    from."""
    gaps = []
    for p in placed:
        s = p.session
        if s is None:
            continue
        times = [f.t for f in s.frames_received if f.kind in AUDIO_KIND_RATES]
        for a, b in zip(times, times[1:], strict=False):
            if b - a > 0.030:
                gaps.append((b - a, p.name, clock.mono(a), clock.mono(b), a - s.started_at))
    gaps.sort(reverse=True)
    out = []
    for gap, name, a, b, rel in gaps[:n]:
        busy = sorted(
            {e["engine"] for e in engines if e["start"] < b and e["end"] > a - FRAME_SECONDS}
        )
        out.append(
            {"call": name, "at_s": round(rel, 2), "gap_ms": round(gap * 1000, 1), "during": busy}
        )
    return out


def first_after(times: Sequence[float], t: float) -> float | None:
    return next((x for x in times if x > t), None)


def finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x
