"""Relay benchmarks: capacity, relay overhead, barge-in reaction, memory after many calls.

    python bench/bench_relay.py [--quick] [--scenario capacity|latency|memory] [--out FILE]

The product runs as ``agi-voice serve`` does: the media sidecar and the FastAGI server, each
in its own process, pinned to CPU 0 (:mod:`relay_product`). This process, pinned to CPU 1, is
Asterisk: the product's emulator places calls over loopback (FastAGI env block and replies,
then AudioSocket frames every 20 ms), records every frame the sidecar sends with its arrival
time, and reads the sidecar's CPU time, RSS and open descriptors from ``/proc``. The mock
OpenAI Realtime server (``tests/mocks/openai_realtime/``) runs in a third process on CPU 1.

Assistants: ``echo`` (the caller's audio relayed back in 100 ms chunks: the relay path with
no provider) and ``sts`` (OpenAI Realtime GA protocol against the mock, mu-law 8 kHz both
ways; the mock answers each caller utterance with 2 s of audio sent 4x faster than real time).

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
    open_fds,
    rss_kib,
)

from fastagi_server.emulator.agi_side import AudioRunner  # noqa: E402
from fastagi_server.emulator.caller import CallerScript  # noqa: E402
from fastagi_server.emulator.loadgen import LoadEngine, LoadResult  # noqa: E402

FRAME = 0.02
RATE = 8000


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
    engine.tick_late.clear()

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
    await trio.sleep(0.5)  # records are written after each call
    records = {_call_name(r): r for r in product.read_records()[before:]}
    sessions = [s for p in placed if isinstance(s := p.session, LoadResult)]
    # the steady window: every call up (after the last one started and settled) until the
    # first one began to hang up
    w0 = max((s.mono_started for s in sessions), default=0.0) + 1.0
    w1 = min((s.mono_ended for s in sessions), default=0.0) - 1.0
    ivals: list[float] = []
    gen_late: list[float] = []
    for s in sessions:
        arr = np.asarray(s.arrivals)
        arr = arr[(arr >= w0) & (arr <= w1)]
        ivals += list(np.diff(arr) * 1000)
        k0 = s.mono_started
        gen_late += [x * 1000 for i, x in enumerate(s.send_late) if w0 <= k0 + i * FRAME <= w1]
    devs = [abs(x - 20.0) for x in ivals]
    failed = {p.name: call_failed(p, records.get(p.name)) for p in placed}
    failures = {k: v for k, v in failed.items() if v}
    recs = [records[p.name] for p in placed if p.name in records]
    window = max(0.0, w1 - w0)
    cpu = sampler.used(w0, w1) if window > 0 else 0.0
    rss_window = [r for t, r in rss if w0 <= t <= w1]
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
        "agent_frames_received": sum(sum(s.loud) for s in sessions),
        "generator_late_ms": summary(gen_late, 2),
        "dev_samples_ms": [round(x, 3) for x in devs[:: max(1, len(devs) // 20000)]],
    }


def step_ok(step: dict[str, Any]) -> bool:
    p99 = step["pacing_dev_ms"].get("p99")
    return step["failed_calls"] == 0 and p99 is not None and p99 <= 5.0


def generator_bound(step: dict[str, Any]) -> bool:
    g = step["generator_late_ms"].get("p99")
    return g is not None and g > 5.0


async def capacity(workdir: Path, assistant: str, ns: Sequence[int], seconds: float,
                   stop_after_fail: bool = True) -> dict[str, Any]:
    steps = []
    mock = MockProvider(workdir) if assistant == "sts" else None
    with mock if mock is not None else _null():
        with Product(workdir, mock_port=mock.port if mock else None) as product, \
                LoadEngine() as engine:
            for n in ns:
                print(f"capacity {assistant}: {n} calls x {seconds:.0f} s ...", flush=True)
                product.repin()
                step = await capacity_step(product, engine, assistant, n, seconds)
                steps.append(step)
                print(f"  cpu {step['sidecar_cpu_pct']}% p99 dev "
                      f"{step['pacing_dev_ms'].get('p99')} ms failed {step['failed_calls']} "
                      f"gen p99 {step['generator_late_ms'].get('p99')} ms", flush=True)
                if stop_after_fail and not step_ok(step):
                    break
    good = [s["calls"] for s in steps if step_ok(s)]
    return {"assistant": assistant, "steps": steps, "max_calls_ok": max(good, default=0)}


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# -- latency: relay overhead and barge-in ------------------------------------------------------------
async def latency(workdir: Path, calls: int) -> dict[str, Any]:
    """STS calls with barge-ins: relay overhead from the records, barge-in reaction from what
    the emulator received."""
    with MockProvider(workdir, reply_ms=4000) as mock, Product(workdir, mock_port=mock.port) as product:
        placed: list[Placed] = []
        async with trio.open_nursery() as nursery:
            for i in range(calls):
                ask = voice_like(1.2, 900 + i)
                cut = voice_like(1.0, 950 + i)
                # the greeting (utterance 1) lasts 4 s; the caller asks after it and barges
                # into the answer (utterance 2) one second in
                script = (CallerScript().speak(ask, at=5.0).barge_in(cut, utterance=2, delay=1.0)
                          .hangup(at=14.0))
                nursery.start_soon(place(product.agi_port, f"lat{i}", "sts", script, 40.0, placed))
                await trio.sleep(0.3)
        await trio.sleep(0.5)
        records = {_call_name(r): r for r in product.read_records()}
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
    "quick": {"capacity_ns": [10, 50, 100], "capacity_s": 12.0, "latency_calls": 4,
              "memory_calls": 200, "memory_conc": 20, "memory_s": 1.5},
    "full": {"capacity_ns": [10, 25, 50, 75, 100, 150, 200, 300, 400], "capacity_s": 30.0,
             "latency_calls": 12, "memory_calls": 1000, "memory_conc": 25, "memory_s": 1.5},
}


async def run_all(plan: dict[str, Any], scenarios: Sequence[str], workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "capacity" in scenarios:
        out["capacity"] = {}
        for assistant in ("echo", "sts"):
            d = workdir / f"cap-{assistant}"
            d.mkdir(exist_ok=True)
            out["capacity"][assistant] = await capacity(d, assistant, plan["capacity_ns"],
                                                        plan["capacity_s"])
    if "latency" in scenarios:
        d = workdir / "latency"
        d.mkdir(exist_ok=True)
        print("latency: STS calls with barge-in ...", flush=True)
        out["latency"] = await latency(d, plan["latency_calls"])
    if "memory" in scenarios:
        d = workdir / "memory"
        d.mkdir(exist_ok=True)
        print(f"memory: {plan['memory_calls']} echo calls ...", flush=True)
        out["memory"] = await memory(d, plan["memory_calls"], plan["memory_conc"],
                                     plan["memory_s"])
    return out


def run(quick: bool = False, scenarios: Sequence[str] = ("capacity", "latency", "memory"),
        pin: bool = True) -> dict[str, Any]:
    if pin:
        pin_process(os.getpid(), GENERATOR_CPU)
    plan = PLANS["quick" if quick else "full"]
    with tempfile.TemporaryDirectory(prefix="agi-voice-bench-") as tmp:
        result = trio.run(run_all, plan, scenarios, Path(tmp))
    result["plan"] = plan
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--scenario", action="append", choices=["capacity", "latency", "memory"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    res = run(args.quick, args.scenario or ["capacity", "latency", "memory"])
    text = json.dumps(res, indent=1)
    if args.out:
        args.out.write_text(text)
    print(json.dumps({k: v for k, v in res.items() if k != "capacity"}, indent=1)[:4000])


if __name__ == "__main__":
    main()

