"""Relay benchmarks: capacity, relay overhead, barge-in reaction, memory after many calls.

    python bench/bench_relay.py [--quick] [--scenario capacity|latency|memory]
        [--assistants echo,sts,sts_pcm,dg,dg_pcm] [--out FILE]

The product runs as ``agi-voice serve`` does: the media sidecar and the FastAGI server, each
in its own process, pinned to CPU 0 (:mod:`relay_product`). This process, pinned to CPU 1, is
Asterisk: the product's emulator places calls over loopback (FastAGI env block and replies,
then AudioSocket frames every 20 ms), records every frame the sidecar sends with its arrival
time, and reads the sidecar's CPU time, RSS and open descriptors from ``/proc``. The
provider's protocol mock (``tests/mocks/openai_realtime/`` or ``tests/mocks/deepgram_agent/``)
runs in a third process on CPU 1.

Assistants (``relay_product.bench_config``): ``echo`` (the caller's audio relayed back in
100 ms chunks: the relay path with no provider), and four speech-to-speech ones against the
mocks, each of which says a 2 s greeting and answers every caller utterance with 2 s of audio
sent 4x faster than real time: ``sts`` (OpenAI Realtime GA protocol, G.711 mu-law 8 kHz both
ways: no resampling, only the G.711 codec against the AudioSocket's slin), ``sts_pcm`` (OpenAI
Realtime, PCM16 24 kHz: one stateful resampler per direction per call), ``dg`` (Deepgram Voice
Agent V1, mu-law 8 kHz) and ``dg_pcm`` (Deepgram, linear16 24 kHz, resampled). End of the
caller's speech: OpenAI's server VAD with ``silence_ms: 400``; Deepgram's mock VAD, 500 ms.
Every assistant has ``apology: ""`` so the sidecar does not load Piper at start-up to render
the apology of its relay assistants (that would add the TTS model to the RSS measured).

Capacity: for each assistant, steps of N concurrent calls, until a step fails. A step passes
with outbound pacing p99 deviation <= 5 ms and no failed call (``max_calls_ok``); the stricter
figure ``max_calls_no_late`` also requires no late frame: no interval over 30 ms as the
emulator received the frames (steady window) and no frame the sidecar's playout had to skip
(its ``late_frames``, whole calls). Each ladder is preceded by one unmeasured warm-up call.
Relay overhead per step comes from the call records (``provider.relay``): provider message in
-> audio queued for playout, and -> first frame sent when the playout was idle.

Nothing is asserted: figures are reported (bench/BENCHMARKS.md explains them).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _p in (str(ROOT), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402
import trio  # noqa: E402
from foundation_load import (  # noqa: E402
    CpuSampler,
    Placed,
    pct,
    pin_process,
    place_call,
    summary,
)
from relay_product import (  # noqa: E402
    GENERATOR_CPU,
    MockProvider,
    Product,
    mock_of,
    open_fds,
    rss_kib,
)

from fastagi_server.emulator.agi_side import AudioRunner  # noqa: E402
from fastagi_server.emulator.caller import CallerScript  # noqa: E402
from fastagi_server.emulator.loadgen import LoadEngine, LoadResult  # noqa: E402

FRAME = 0.02
RATE = 8000

LABELS = {
    "echo": "Echo: the relay with no provider",
    "sts": "OpenAI Realtime, mu-law 8 kHz",
    "sts_pcm": "OpenAI Realtime, PCM16 24 kHz",
    "dg": "Deepgram Voice Agent, mu-law 8 kHz",
    "dg_pcm": "Deepgram Voice Agent, linear16 24 kHz",
}
"""What each bench assistant is, for the report."""
PROVIDERS = {"openai": ("OpenAI Realtime", "sts", "sts_pcm"),
             "deepgram": ("Deepgram Voice Agent", "dg", "dg_pcm")}
"""Provider -> (name, its mu-law assistant, its PCM 24 kHz assistant)."""


# -- caller audio ----------------------------------------------------------------------------------
def voice_like(seconds: float, seed: int, level: float = 6000.0) -> bytes:
    """A speech-like signal: a few harmonics with a slow syllable envelope (no silence gaps
    deep enough for a VAD to end the utterance)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 110 + 40 * rng.random()
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.random() * 6) / k for k in range(1, 6))
    env = 0.6 + 0.4 * np.abs(np.sin(2 * np.pi * 3.0 * t))
    y = x / np.max(np.abs(x)) * env * level
    return y.astype("<i2").tobytes()


def echo_script(seconds: float, seed: int) -> CallerScript:
    """The caller talks the whole call, then hangs up (echo: agent audio flows all along)."""
    return CallerScript().speak(voice_like(seconds - 0.5, seed), at=0.2).hangup(at=seconds)


def sts_script(seconds: float, seed: int, *, talk: float = 1.5, gap: float = 3.5) -> CallerScript:
    """The caller asks something every ``talk + gap`` seconds; the mock answers each time."""
    s = CallerScript()
    t = 1.0
    k = 0
    while t + talk < seconds - 0.5:
        s.speak(voice_like(talk, seed * 100 + k), at=t)
        t += talk + gap
        k += 1
    return s.hangup(at=seconds)


# -- placing calls ---------------------------------------------------------------------------------
def place(agi_port: int, name: str, assistant: str, script: CallerScript | None, limit: float,
          out: list[Placed], runner: AudioRunner | None = None) -> Callable[[], Awaitable[None]]:
    """One call for a nursery: foundation_load.place_call with this module's arguments."""
    return functools.partial(place_call, agi_port, name, script, assistant=assistant,
                             seconds=limit, out=out, runner=runner)


def _call_name(record: dict[str, Any]) -> str:
    """The generator's call name from the record's channel ``Local/<name>@bench-...``."""
    return record.get("channel", "").partition("/")[2].partition("@")[0]


async def wait_records(product: Product, names: Sequence[str], before: int = 0,
                       within: float = 5.0) -> dict[str, dict[str, Any]]:
    """The call records written after the first ``before`` ones, by call name, once every call
    in ``names`` has one or after ``within`` s (the sidecar writes a record when it has
    finished the call, which can be a little after the emulator saw the end)."""
    deadline = trio.current_time() + within
    while True:
        records = {_call_name(r): r for r in product.read_records()[before:]}
        if all(n in records for n in names) or trio.current_time() > deadline:
            return records
        await trio.sleep(0.1)


def call_failed(p: Placed, record: dict[str, Any] | None) -> str:
    """Why the call counts as failed ('' if it did what the caller wanted)."""
    if p.error:
        return p.error
    s = p.session
    if s is None:
        status = p.result.variables.get("AI_STATUS", "") if p.result else ""
        return f"no AudioSocket session (AI_STATUS={status or 'unset'})"
    if s.closed_by != "caller_hangup":
        return f"AudioSocket ended by {s.closed_by}: {s.error or ''}".strip()
    if record is None:
        return "no call record"
    if record.get("status") != "CALLER_HANGUP":
        return f"status {record.get('status')}: {record.get('reason')}"
    return ""


# -- capacity --------------------------------------------------------------------------------------
def caller_signal(assistant: str, seconds: float, seed: int) -> bytes:
    """The caller's whole audio for a capacity call: talking all along (echo) or a 1.5 s
    question every 5 s with silence between (the mock answers each)."""
    if assistant == "echo":
        return bytes(int(0.2 * RATE) * 2) + voice_like(seconds - 0.2, seed)
    out = bytearray(int(1.0 * RATE) * 2)
    k = 0
    while len(out) / 2 / RATE + 1.5 < seconds:
        out += voice_like(1.5, seed * 100 + k) + bytes(int(3.5 * RATE) * 2)
        k += 1
    return bytes(out)


async def capacity_step(product: Product, engine: LoadEngine, assistant: str, n: int,
                        seconds: float) -> dict[str, Any]:
    """N concurrent calls of ``seconds`` each; figures over the window where all are up."""
    sampler = CpuSampler(product.sidecar_pid, 0.1)
    placed: list[Placed] = []
    rss: list[tuple[float, int]] = []
    stagger = min(4.0, n * 0.01)
    before = len(product.read_records())
    rss_idle = rss_kib(product.sidecar_pid)
    signals = [caller_signal(assistant, seconds, k) for k in range(8)]
    engine.stats(reset=True)

    async def sample_rss() -> None:
        while True:
            rss.append((time.monotonic(), rss_kib(product.sidecar_pid)))
            await trio.sleep(0.5)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sampler.run)
        nursery.start_soon(sample_rss)
        async with trio.open_nursery() as calls:
            for i in range(n):
                runner = engine.runner(signals[i % len(signals)], seconds)
                calls.start_soon(place(product.agi_port, f"{assistant}{n}-{i}", assistant,
                                       None, seconds + 30, placed, runner))
                await trio.sleep(stagger / n)
        nursery.cancel_scope.cancel()
    gen = engine.stats(reset=True)
    records = await wait_records(product, [p.name for p in placed if p.session], before)
    sessions = [s for p in placed if isinstance(s := p.session, LoadResult)]
    # the steady window: every call up (after the last one started and settled) until the
    # first one began to hang up
    w0 = max((s.mono_started for s in sessions), default=0.0) + 1.0
    w1 = min((s.mono_ended for s in sessions), default=0.0) - 1.0
    ivals: list[float] = []
    for s in sessions:
        arr = np.asarray(s.arrivals)
        arr = arr[(arr >= w0) & (arr <= w1)]
        ivals += list(np.diff(arr) * 1000)
    gen_late: list[float] = []  # the last frame of each generator tick in the window
    for g in gen:
        d = np.frombuffer(g["tick_deadline"], dtype=np.float64)
        span = np.frombuffer(g["tick_span_ms"], dtype=np.float32)
        gen_late += span[(d >= w0) & (d <= w1)].tolist()
    devs = [abs(x - 20.0) for x in ivals]
    failed = {p.name: call_failed(p, records.get(p.name)) for p in placed}
    failures = {k: v for k, v in failed.items() if v}
    recs = [records[p.name] for p in placed if p.name in records]
    window = max(0.0, w1 - w0)
    cpu = sampler.used(w0, w1) if window > 0 else 0.0
    rss_window = [r for t, r in rss if w0 <= t <= w1]
    relays = [r.get("provider", {}).get("relay", {}) for r in recs]
    hist = np.zeros(8, dtype=np.int64)
    for r in recs:
        hist += np.array(list(r["playout"].get("lateness_hist", {}).values()) or [0] * 8)
    return {
        "assistant": assistant, "calls": n, "seconds_per_call": seconds,
        "window_s": round(window, 1),
        "failed_calls": len(failures),
        "failures": dict(list(failures.items())[:5]),
        "sidecar_cpu_pct": round(100 * cpu / window, 1) if window else None,
        "cpu_ms_per_call_s": round(1000 * cpu / window / n, 2) if window else None,
        "rss_mib": round(max(rss_window) / 1024, 1) if rss_window else None,
        "rss_idle_mib": round(rss_idle / 1024, 1),
        "rss_kib_per_call": round((max(rss_window) - rss_idle) / n, 1) if rss_window else None,
        "pacing_dev_ms": summary(devs, 2),
        "intervals_over_30ms": sum(1 for x in ivals if x > 30.0),
        "late_frames": sum(r["playout"]["late_frames"] for r in recs),
        "server_lateness_hist": dict(zip(
            ["<=0.5", "<=1", "<=2", "<=5", "<=10", "<=20", "<=40", ">40"], hist.tolist(),
            strict=True)),
        "server_max_lateness_ms": max((r["playout"]["max_lateness_ms"] for r in recs), default=None),
        "caller_frames_dropped": sum(r.get("caller_frames_dropped", 0) for r in recs),
        "agent_audio_dropped_bytes": sum(r.get("provider", {}).get("audio_dropped_bytes", 0)
                                         for r in recs),
        "agent_frames_received": sum(s.loud_frames for s in sessions),
        "generator_late_ms": summary(gen_late, 2),
        "relay_queue_ms": relay_summary(relays, "queue_ms", 3),
        "relay_first_frame_ms": relay_summary(relays, "first_frame_ms", 2),
        "dev_samples_ms": [round(x, 3) for x in devs[:: max(1, len(devs) // 20000)]],
    }


def relay_summary(relays: Sequence[dict[str, Any]], name: str, digits: int) -> dict[str, Any]:
    """One relay timing over a step's calls from their records' ``provider.relay``: the
    median of the per-call p50s, the median and the largest of the per-call p99s."""
    p50 = [r[f"{name}_p50"] for r in relays if f"{name}_p50" in r]
    p99 = [r[f"{name}_p99"] for r in relays if f"{name}_p99" in r]
    return {"calls": len(p50), "p50_median": _r(pct(p50, 50), digits),
            "p99_median": _r(pct(p99, 50), digits), "p99_max": _r(max(p99, default=None), digits)}


def step_ok(step: dict[str, Any]) -> bool:
    """The issue 3 rule: outbound pacing p99 deviation <= 5 ms and no failed call."""
    p99 = step["pacing_dev_ms"].get("p99")
    return step["failed_calls"] == 0 and p99 is not None and p99 <= 5.0


def step_no_late(step: dict[str, Any]) -> bool:
    """:func:`step_ok` and no late frame: no interval over 30 ms as received (steady window),
    no frame skipped by the sidecar's playout (whole calls)."""
    return step_ok(step) and step["intervals_over_30ms"] == 0 and step["late_frames"] == 0


def generator_bound(step: dict[str, Any]) -> bool:
    g = step["generator_late_ms"].get("p99")
    return g is not None and g > 5.0


async def capacity(workdir: Path, assistant: str, ns: Sequence[int], seconds: float,
                   warmup_s: float = 5.0, stop_after_fail: bool = True) -> dict[str, Any]:
    """The ladder of steps for one assistant (its mock, if any, started alongside), after one
    unmeasured warm-up call (first-call costs: imports, connection set-up paths)."""
    steps = []
    kind = mock_of(assistant)
    mock = MockProvider(workdir, kind) if kind is not None else None
    with mock if mock is not None else _null():
        mocks = {kind: mock.port} if kind is not None and mock is not None else None
        with Product(workdir, mocks=mocks) as product, \
                LoadEngine(procs=1, cpus=sorted(GENERATOR_CPU)) as engine:
            if warmup_s > 0:
                await capacity_step(product, engine, assistant, 1, warmup_s)
            for n in ns:
                print(f"capacity {assistant}: {n} calls x {seconds:.0f} s ...", flush=True)
                product.repin()
                step = await capacity_step(product, engine, assistant, n, seconds)
                steps.append(step)
                print(f"  cpu {step['sidecar_cpu_pct']}% ({step['cpu_ms_per_call_s']} ms per "
                      f"call-s) p99 dev {step['pacing_dev_ms'].get('p99')} ms late "
                      f"{step['intervals_over_30ms']}/{step['late_frames']} failed "
                      f"{step['failed_calls']} gen p99 {step['generator_late_ms'].get('p99')} ms"
                      f" relay queue p99 {step['relay_queue_ms']['p99_max']} ms", flush=True)
                if stop_after_fail and not step_ok(step):
                    break
    good = [s["calls"] for s in steps if step_ok(s)]
    no_late = 0  # the largest N before the first step with a late frame (or failing)
    for s in steps:
        if not step_no_late(s):
            break
        no_late = s["calls"]
    return {"assistant": assistant, "label": LABELS.get(assistant, assistant), "steps": steps,
            "max_calls_ok": max(good, default=0), "max_calls_no_late": no_late}


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# -- latency: relay overhead and barge-in ------------------------------------------------------------
async def latency(workdir: Path, calls: int, assistant: str = "sts") -> dict[str, Any]:
    """STS calls with barge-ins: relay overhead from the records, barge-in reaction from what
    the emulator received."""
    kind = mock_of(assistant)
    if kind is None:
        raise ValueError(f"{assistant!r} is not a speech-to-speech bench assistant")
    with MockProvider(workdir, kind, reply_ms=4000) as mock, \
            Product(workdir, mocks={kind: mock.port}) as product:
        placed: list[Placed] = []
        async with trio.open_nursery() as nursery:
            for i in range(calls):
                ask = voice_like(1.2, 900 + i)
                cut = voice_like(1.0, 950 + i)
                # the greeting (utterance 1) lasts 4 s; the caller asks after it and barges
                # into the answer (utterance 2) one second in
                script = (CallerScript().speak(ask, at=5.0).barge_in(cut, utterance=2, delay=1.0)
                          .hangup(at=14.0))
                nursery.start_soon(place(product.agi_port, f"lat{i}", assistant, script, 40.0,
                                         placed))
                await trio.sleep(0.3)
        records = await wait_records(product, [p.name for p in placed if p.session])
    queue_p50, queue_p99, first_p50, first_p99 = [], [], [], []
    reaction, after_decision, turn_latency = [], [], []
    failures = {}
    for p in placed:
        rec = records.get(p.name)
        why = call_failed(p, rec)
        if why:
            failures[p.name] = why
        if rec is None or p.session is None:
            continue
        relay = rec.get("provider", {}).get("relay", {})
        for src, dst in (("queue_ms_p50", queue_p50), ("queue_ms_p99", queue_p99),
                         ("first_frame_ms_p50", first_p50), ("first_frame_ms_p99", first_p99)):
            if src in relay:
                dst.append(relay[src])
        turn_latency += [t["latency_ms"] for t in rec["turns"] if t.get("latency_ms") is not None]
        s = p.session
        loud = [f.t for f in s.audio_frames() if _loud(f.payload)]
        speaks = [st for st in p.result.caller_log if st.what.startswith("speak")] if p.result else []
        if len(speaks) >= 2 and rec.get("barge_in_at"):
            onset = s.started_at + speaks[-1].t
            decision = s.started_at + rec["barge_in_at"][-1]
            last = end_of_run([t for t in loud if t >= onset - FRAME])
            if last is not None:
                reaction.append(max(0.0, last - onset) * 1000)
                after_decision.append((last - decision) * 1000)
    return {
        "assistant": assistant, "label": LABELS[assistant],
        "calls": calls, "failed_calls": len(failures), "failures": failures,
        "relay_queue_ms": {"p50_median": _r(pct(queue_p50, 50), 3),
                           "p99_max": _r(max(queue_p99, default=None), 3)},
        "relay_first_frame_ms": {"p50_median": _r(pct(first_p50, 50), 2),
                                 "p99_max": _r(max(first_p99, default=None), 2)},
        "barge_in_onset_to_last_frame_ms": summary(reaction, 1),
        "barge_in_decision_to_last_frame_ms": summary(after_decision, 1),
        "turn_latency_ms": summary(turn_latency, 1),
    }


def end_of_run(times: list[float], gap: float = 0.03) -> float | None:
    """The last time of the first run of frames no more than ``gap`` apart."""
    if not times:
        return None
    last = times[0]
    for t in times[1:]:
        if t - last > gap:
            break
        last = t
    return last


def _loud(payload: bytes) -> bool:
    x = np.frombuffer(payload, dtype="<i2").astype(np.float64)
    return bool(x.size) and float(np.sqrt(np.mean(x * x))) > 300.0


def _r(x: float | None, d: int) -> float | None:
    return None if x is None else round(x, d)


# -- memory after many calls -----------------------------------------------------------------------
async def memory(workdir: Path, total: int, concurrency: int, seconds: float) -> dict[str, Any]:
    with Product(workdir) as product:
        pid = product.sidecar_pid
        curve: list[dict[str, Any]] = [{"calls": 0, "rss_mib": round(rss_kib(pid) / 1024, 2),
                                        "fds": open_fds(pid)}]
        placed: list[Placed] = []
        done = 0
        sem = trio.Semaphore(concurrency)

        async def one(i: int) -> None:
            nonlocal done
            async with sem:
                await place(product.agi_port, f"mem{i}", "echo", echo_script(seconds, i),
                            seconds + 30, placed)()
            done += 1
            if done % max(1, total // 20) == 0:
                curve.append({"calls": done, "rss_mib": round(rss_kib(pid) / 1024, 2),
                              "fds": open_fds(pid), "fastagi_rss_mib":
                              round(rss_kib(product.fastagi_pid) / 1024, 2)})

        async with trio.open_nursery() as nursery:
            for i in range(total):
                await sem.acquire()  # do not create 1000 waiting tasks at once
                sem.release()
                nursery.start_soon(one, i)
                await trio.sleep(0.005)
        await trio.sleep(1.0)
        curve.append({"calls": total, "rss_mib": round(rss_kib(pid) / 1024, 2),
                      "fds": open_fds(pid), "fastagi_rss_mib":
                      round(rss_kib(product.fastagi_pid) / 1024, 2), "settled": True})
        failed = sum(1 for p in placed if call_failed(p, {"status": "CALLER_HANGUP"}))
    tenth = next((c for c in curve if c["calls"] >= total // 10), curve[0])
    return {"calls": total, "concurrency": concurrency, "seconds_per_call": seconds,
            "failed_calls": failed, "curve": curve,
            "rss_growth_mib_after_first_10pct": round(curve[-1]["rss_mib"] - tenth["rss_mib"], 2),
            "fd_growth": curve[-1]["fds"] - curve[0]["fds"]}


# -- entry ---------------------------------------------------------------------------------------------
PLANS = {
    "quick": {"capacity_assistants": ["echo", "sts", "sts_pcm", "dg", "dg_pcm"],
              "capacity_ns": [10, 50], "sts_ns": [10, 40], "capacity_s": 10.0,
              "warmup_s": 3.0, "latency_assistants": ["sts", "dg"], "latency_calls": 4,
              "memory_calls": 200, "memory_conc": 20, "memory_s": 1.5},
    "full": {"capacity_assistants": ["echo", "sts", "sts_pcm", "dg", "dg_pcm"],
             "capacity_ns": [10, 25, 50, 75, 100, 150, 200, 300, 400],
             "sts_ns": [10, 25, 50, 75, 100, 150, 200], "capacity_s": 25.0, "warmup_s": 5.0,
             "latency_assistants": ["sts", "dg"], "latency_calls": 12,
             "memory_calls": 1000, "memory_conc": 25, "memory_s": 1.5},
}
"""``capacity_ns`` is the echo ladder, ``sts_ns`` the speech-to-speech ones; a ladder stops at
its first failing step."""


async def run_all(plan: dict[str, Any], scenarios: Sequence[str], workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    took: dict[str, float] = {}
    if "capacity" in scenarios:
        out["capacity"] = {}
        for assistant in plan["capacity_assistants"]:
            t = trio.current_time()
            d = workdir / f"cap-{assistant}"
            d.mkdir(exist_ok=True)
            ns = plan["capacity_ns"] if assistant == "echo" else plan["sts_ns"]
            out["capacity"][assistant] = await capacity(d, assistant, ns, plan["capacity_s"],
                                                        plan["warmup_s"])
            took[f"capacity-{assistant}"] = round(trio.current_time() - t, 1)
    if "latency" in scenarios:
        out["latency"] = {}
        for assistant in plan["latency_assistants"]:
            t = trio.current_time()
            d = workdir / f"latency-{assistant}"
            d.mkdir(exist_ok=True)
            print(f"latency: {LABELS[assistant]}, calls with barge-in ...", flush=True)
            out["latency"][assistant] = await latency(d, plan["latency_calls"], assistant)
            took[f"latency-{assistant}"] = round(trio.current_time() - t, 1)
    if "memory" in scenarios:
        t = trio.current_time()
        d = workdir / "memory"
        d.mkdir(exist_ok=True)
        print(f"memory: {plan['memory_calls']} echo calls ...", flush=True)
        out["memory"] = await memory(d, plan["memory_calls"], plan["memory_conc"],
                                     plan["memory_s"])
        took["memory"] = round(trio.current_time() - t, 1)
    out["durations_s"] = took
    return out


def run(quick: bool = False, scenarios: Sequence[str] = ("capacity", "latency", "memory"),
        pin: bool = True, assistants: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the plan; ``assistants`` narrows the capacity and latency assistants."""
    if pin:
        pin_process(os.getpid(), GENERATOR_CPU)
    plan = dict(PLANS["quick" if quick else "full"])
    if assistants:
        for key in ("capacity_assistants", "latency_assistants"):
            plan[key] = [a for a in plan[key] if a in assistants]
    with tempfile.TemporaryDirectory(prefix="agi-voice-bench-") as tmp:
        result = trio.run(run_all, plan, scenarios, Path(tmp))
    result["plan"] = plan
    return result


def _ints(text: str | None) -> list[int] | None:
    return [int(x) for x in text.split(",")] if text else None


def add_scale_args(ap: argparse.ArgumentParser) -> None:
    """The scale scenario's options (bench_scale.run), shared with bench/run.py."""
    g = ap.add_argument_group("scale (issue 13; see bench/bench_scale.py)")
    g.add_argument("--ns", help="comma list: the N of every ladder (a smoke run: --ns 20)")
    g.add_argument("--window", type=float, help="seconds all calls of a step are up together")
    g.add_argument("--gen-procs", type=int, default=2, help="generator processes (default 2)")
    g.add_argument("--gen-cpus", help="comma list of CPUs for them (default: the generator CPU)")
    g.add_argument("--ramp", type=float, default=100.0,
                   help="calls placed per second (default 100)")
    g.add_argument("--workers", type=int,
                   help="sidecar.workers for agi-voice (default 1: one sidecar on the server CPU)")
    g.add_argument("--profile-n", type=int, metavar="N",
                   help="py-spy the sidecar during the echo step with N calls")
    g.add_argument("--no-stop", action="store_true", help="go on past a step below the bar")
    g.add_argument("--targets", help="comma list: echo,sts,floor,aava (default all)")


def scale_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"ns": _ints(args.ns), "window_s": args.window, "gen_procs": args.gen_procs,
            "gen_cpus": _ints(args.gen_cpus), "ramp": args.ramp, "workers": args.workers,
            "profile_n": args.profile_n, "no_stop": args.no_stop,
            "targets": args.targets.split(",") if args.targets else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--scenario", action="append",
                    choices=["capacity", "latency", "memory", "scale"])
    ap.add_argument("--assistants", help=f"comma list, a subset of {', '.join(LABELS)}")
    ap.add_argument("--out", type=Path)
    add_scale_args(ap)
    args = ap.parse_args()
    scenarios = args.scenario or ["capacity", "latency", "memory"]
    res: dict[str, Any] = {}
    if "scale" in scenarios:
        import bench_scale

        res["scale"] = bench_scale.run(args.quick, **scale_kwargs(args))
        scenarios = [x for x in scenarios if x != "scale"]
    if scenarios:
        res.update(run(args.quick, scenarios,
                       assistants=args.assistants.split(",") if args.assistants else None))
    text = json.dumps(res, indent=1)
    if args.out:
        args.out.write_text(text)
    print(json.dumps({k: v for k, v in res.items() if k != "capacity"}, indent=1)[:4000])


if __name__ == "__main__":
    main()

