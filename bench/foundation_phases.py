"""The three phases of bench_foundation, run in the load generator's trio loop.

Each phase places calls through the emulator (:mod:`foundation_load`), then reads the server's
call records and engine log (JSON lines) and the server's CPU samples, and returns a dict of
figures (the JSON result). See ``bench/README.md`` for what every figure means.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import trio
from foundation_load import (
    AGENT_LEVEL,
    Clock,
    CpuSampler,
    Placed,
    StepFrames,
    caller_speech,
    first_after,
    join_speech,
    loud_frame_times,
    pin_process,
    place_call,
    question_script,
    renice_threads,
    stalls,
    summary,
    synth_caller,
)
from foundation_server import BENCH_ASSISTANT, BENCH_DIGIT, LATENCY_ASSISTANT, bench_config

from fastagi_server.emulator.caller import AgentQuiet, CallerScript

# Latency phase: (utterance, intent the default receptionist should pick).
ASKS = [
    ("what are your opening hours", "hours"),
    ("do you have parking near the office", "fallback"),
    ("when do you close on friday", "hours"),
    ("I have a question about my account", "fallback"),
    ("are you open on saturday", "hours"),
    ("can I bring my dog to the office", "fallback"),
    ("what time do you open in the morning", "hours"),
    ("I would like some more information", "fallback"),
]
ENDINGS = [  # the last question of each latency call ends it
    ("please transfer me to the billing department", "billing"),
    ("I want to talk to someone in sales", "sales"),
    ("my internet is broken and I need technical support", "support"),
    ("that's all, goodbye", "goodbye"),
]
QUESTION = "could you tell me about the services you offer"
MONOLOGUE = [
    "hi, I am calling because I would like to know a little more about your company",
    "a friend of mine who works nearby told me good things about you",
    "we are a small office with twelve people and our phones are getting old",
    "so could you tell me about the services you offer",
]
STOP_P99_MS = 5.0
TURN_BAR_MS = 400.0
"""With ``Plan.turn_bar``: the most a p95 turn may take beyond the VAD hang-over."""


@dataclass(frozen=True)
class Plan:
    mode: str
    latency_calls: int
    turns_per_call: int
    cpu_calls: int
    cpu_silence_ms: float
    monologue_sentences: int
    ks: tuple[int, ...]
    stagger_s: float
    budget_s: float
    min_step_calls: int = 1
    """A ramp step with fewer calls than this is repeated in waves (steadier p99 at small K)."""
    stop_on_failure: bool = True
    turn_bar: bool = False
    """Also end the ramp at a step whose p95 question latency (end of speech to the first
    agent frame) passes the VAD hang-over + TURN_BAR_MS (issue 13's local-assistant target)."""
    ramp_input: str = "speech"
    phases: tuple[str, ...] = ("latency", "cpu", "ramp")

    @staticmethod
    def make(quick: bool) -> Plan:
        if quick:
            return Plan(
                "quick",
                latency_calls=1,
                turns_per_call=3,
                cpu_calls=2,
                cpu_silence_ms=2500,
                monologue_sentences=1,
                ks=(2, 4, 8),
                stagger_s=0.253,
                budget_s=118,
            )
        return Plan(
            "full",
            latency_calls=4,
            turns_per_call=5,
            cpu_calls=4,
            cpu_silence_ms=6000,
            monologue_sentences=4,
            ks=(1, 2, 4, 8, 16, 32, 64, 128),
            stagger_s=0.253,
            budget_s=560,
            min_step_calls=4,
        )


class JsonLines:
    """Reads a JSON-lines file written by the server, a batch of new lines at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pos = 0

    def read_new(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.pos += end
        return [json.loads(line) for line in data[:end].splitlines() if line.strip()]

    async def wait_new(self, n: int, seconds: float = 15.0) -> list[dict[str, Any]]:
        """Wait up to ``seconds`` for ``n`` new lines; returns what came (maybe fewer)."""
        out: list[dict[str, Any]] = []
        with trio.move_on_after(seconds):
            while True:
                out += self.read_new()
                if len(out) >= n:
                    break
                await trio.sleep(0.05)
        return out


@dataclass
class Ctx:
    """What every phase needs: the server's AGI port and pid, the plan, the caller audio, the
    CPU sampler, the clock conversion and the readers of the server's JSON-lines files."""

    agi_port: int
    server_pid: int
    plan: Plan
    audio: dict[str, np.ndarray]
    sampler: CpuSampler
    records: JsonLines
    engines: JsonLines
    pin: bool
    server_cpus: set[int]
    t_start: float
    nice_workers: int | None = None
    clock_: Clock | None = None

    @property
    def clock(self) -> Clock:
        assert self.clock_ is not None, "set by run_phases"
        return self.clock_

    async def renice_workers(self) -> None:
        """Experiment: keep every server thread except the trio one at a lower priority."""
        assert self.nice_workers is not None
        while True:
            renice_threads(self.server_pid, self.nice_workers)
            await trio.sleep(0.1)

    def repin(self) -> None:
        if self.pin:
            pin_process(self.server_pid, self.server_cpus)

    @property
    def hangover_ms(self) -> float:
        a = bench_config().assistant("receptionist")
        assert a is not None
        return float(a.vad.end_ms)


def _r(x: float | None, d: int = 1) -> float | None:
    return None if x is None else round(x, d)


# -- phase 1: turn latency ---------------------------------------------------------------------------------
async def phase_latency(ctx: Ctx) -> dict[str, Any]:
    plan = ctx.plan
    ctx.repin()
    ctx.engines.read_new()
    placed: list[Placed] = []
    expected: list[list[str]] = []
    t0 = time.monotonic()
    for i in range(plan.latency_calls):
        asks = [
            ASKS[(i * (plan.turns_per_call - 1) + j) % len(ASKS)]
            for j in range(plan.turns_per_call - 1)
        ]
        asks.append(ENDINGS[i % len(ENDINGS)])
        expected.append([intent for _, intent in asks])
        script = question_script([ctx.audio[text] for text, _ in asks], quiet_ms=800)
        await place_call(
            ctx.agi_port,
            f"lat{i}",
            script,
            assistant=LATENCY_ASSISTANT,
            seconds=40 + 15 * len(asks),
            out=placed,
        )
    recs = await ctx.records.wait_new(len(placed))
    engines = ctx.engines.read_new()
    hang = ctx.hangover_ms

    lat, proc, stt, tts_first, tick = [], [], [], [], []
    right = total = 0
    by_uuid_order = recs  # sequential calls: records arrive in call order
    for rec, exp in zip(by_uuid_order, expected, strict=False):
        speech_turns = [t for t in rec["turns"] if t["trigger"] == "speech"]
        for turn, want in zip(speech_turns, exp, strict=False):
            total += 1
            right += turn["intent"] == want
        for t in speech_turns:
            if t.get("latency_ms") is None:
                continue
            lat.append(t["latency_ms"])
            proc.append(t["latency_ms"] - hang)
            st = t["stage_ms"]
            if "stt" in st:
                stt.append(st["stt"] - hang)
            if "stt" in st and "first_audio_ready" in st:
                tts_first.append(st["first_audio_ready"] - st["stt"])
            if "first_audio_ready" in st:
                tick.append(t["latency_ms"] - st["first_audio_ready"])
    perceived = []
    for p in placed:
        s = p.session
        if p.result is None or s is None:
            continue
        loud = loud_frame_times(s)
        for _, end in caller_speech(p.result, s):
            first = first_after(loud, end)
            if first is not None:
                perceived.append((first - end) * 1000)
    stt_log = [e for e in engines if e["engine"] == "stt" and e["audio_s"] > 0]
    tts_log = [e for e in engines if e["engine"] == "tts"]
    failed = [p.name for p in placed if p.error or p.result is None]
    frames = StepFrames()
    for p in placed:
        if p.session is not None:
            frames.add(p.session)
    playout = [r.get("playout", {}) for r in recs]
    return {
        "calls": len(placed),
        "records": len(recs),
        "failed_calls": failed,
        "turns": len(lat),
        "intent_correct": f"{right}/{total}",
        "vad_end_ms": hang,
        "latency_ms": summary(lat),
        "processing_ms": summary(proc),
        "stt_stage_ms": summary(stt),
        "tts_first_sentence_ms": summary(tts_first),
        "playout_pickup_ms": summary(tick),
        "caller_perceived_ms": summary(perceived),
        "engine_stt": {
            "n": len(stt_log),
            "wall_ms": summary([e["wall_ms"] for e in stt_log]),
            "cpu_ms": summary([e["cpu_ms"] for e in stt_log]),
            "audio_s": summary([e["audio_s"] for e in stt_log], 2),
            "cpu_ms_per_audio_s": _r(
                sum(e["cpu_ms"] for e in stt_log) / max(1e-9, sum(e["audio_s"] for e in stt_log))
            ),
        },
        "engine_tts": {
            "n": len(tts_log),
            "wall_ms": summary([e["wall_ms"] for e in tts_log]),
            "cpu_ms": summary([e["cpu_ms"] for e in tts_log]),
            "audio_s": summary([e["audio_s"] for e in tts_log], 2),
            "cpu_ms_per_audio_s": _r(
                sum(e["cpu_ms"] for e in tts_log) / max(1e-9, sum(e["audio_s"] for e in tts_log))
            ),
        },
        "one_call_frames": {
            **frames.report(),
            "late_frames": sum(p.get("late_frames", 0) for p in playout),
            "max_lateness_ms": max((p.get("max_lateness_ms", 0.0) for p in playout), default=0.0),
            "gc_full_ms": [e["wall_ms"] for e in engines if e["engine"] == "gc" and e["gen"] == 2],
            "stalls": stalls(placed, engines, ctx.clock),
        },
        "seconds": round(time.monotonic() - t0, 1),
    }


async def timer_lateness(seconds: float) -> dict[str, Any]:
    """How late ``trio.sleep_until`` on a 20 ms grid wakes up here with nothing else to do:
    the floor under every frame-timing figure (epoll has 1 ms resolution; VMs add more)."""
    late = []
    t = trio.current_time()
    for _ in range(int(seconds / 0.02)):
        t += 0.02
        await trio.sleep_until(t)
        late.append((trio.current_time() - t) * 1000)
    return summary(late, 2)


# -- phase 2: CPU per call by state ---------------------------------------------------------------------
async def phase_cpu(ctx: Ctx) -> dict[str, Any]:
    plan = ctx.plan
    ctx.repin()
    sampler = ctx.sampler
    # The server with no call: its fixed cost (FastAGI loop, control link, timers). Meanwhile,
    # the timer floor of this machine: a bare trio loop on the generator's core.
    i0 = time.monotonic()
    timer_floor = await timer_lateness(2.0)
    i1 = time.monotonic()
    idle_rate = sampler.used(i0, i1) / (i1 - i0)
    ctx.engines.read_new()
    monologue = join_speech([ctx.audio[s] for s in MONOLOGUE[-plan.monologue_sentences :]], 0.3)
    placed: list[Placed] = []
    t0 = time.monotonic()

    async def delayed(i: int) -> None:
        # Staggered like the ramp, so the calls' 20 ms grids do not line up (an aligned grid
        # serves every call from one wake-up and under-reports the per-call cost).
        await trio.sleep(i * plan.stagger_s)
        script = question_script([monologue], first_quiet_ms=plan.cpu_silence_ms)
        await place_call(
            ctx.agi_port, f"cpu{i}", script, assistant=BENCH_ASSISTANT, seconds=120, out=placed
        )

    async with trio.open_nursery() as nursery:
        for i in range(plan.cpu_calls):
            nursery.start_soon(delayed, i)
    t1 = time.monotonic()
    recs = await ctx.records.wait_new(len(placed))
    engines = ctx.engines.read_new()
    m = ctx.clock.mono
    greet_end, sp_start, sp_end, rep_first, rep_last = [], [], [], [], []
    for p in placed:
        s = p.session
        if p.result is None or s is None:
            continue
        speech = caller_speech(p.result, s)
        if not speech:
            continue
        a, b = speech[0]
        loud = loud_frame_times(s)
        before = [t for t in loud if t < a]
        after = [t for t in loud if t > b]
        if not before or not after:
            continue
        greet_end.append(m(before[-1]))
        sp_start.append(m(a))
        sp_end.append(m(b))
        rep_first.append(m(after[0]))
        rep_last.append(m(after[-1]))
    out: dict[str, Any] = {
        "calls": len(placed),
        "records": len(recs),
        "failed_calls": [p.name for p in placed if p.error],
        "idle_server_cpu_pct": round(idle_rate * 100, 2),
        "timer_floor_late_ms": timer_floor,
    }
    n = len(greet_end)
    if n < len(placed) or n == 0:
        out["error"] = "could not find the state windows in every call"
        return out
    synth_end = max(
        (e["end"] for e in engines if e["engine"] == "tts" and e["start"] >= min(sp_end) - 1.0),
        default=0.0,
    )
    windows = {
        "listening_caller_silent": (max(greet_end) + 0.3, min(sp_start) - 0.1),
        "listening_caller_talking": (max(sp_start) + 0.5, min(sp_end) - 0.1),
        "speaking_reply_playout": (max(max(rep_first), synth_end) + 0.3, min(rep_last) - 0.3),
    }
    for name, (w0, w1) in windows.items():
        dur = w1 - w0
        if dur < 0.5:
            out[name] = {"error": f"window too short ({dur:.2f} s)"}
            continue
        used = sampler.used(w0, w1)
        net = max(0.0, used - idle_rate * dur)
        out[name] = {
            "window_s": round(dur, 2),
            "server_cpu_pct": round(used / dur * 100, 2),
            "cpu_ms_per_call_s": round(net / (n * dur) * 1000, 2),
            "cpu_ms_per_call_s_raw": round(used / (n * dur) * 1000, 2),
        }
    # Whole calls, inference included: server CPU over the calls / call-seconds placed.
    call_s = sum(p.ended - p.started for p in placed)
    used = sampler.used(t0, t1)
    out["whole_call"] = {
        "call_s": round(call_s, 1),
        "cpu_ms_per_call_s": round(max(0.0, used - idle_rate * (t1 - t0)) / call_s * 1000, 2),
        "turn_audio_s": {
            "caller": round(len(monologue) / 8000, 2),
            "reply": round(
                sum(
                    e["audio_s"]
                    for e in engines
                    if e["engine"] == "tts" and e["start"] >= min(sp_end) - 1.0
                )
                / n,
                2,
            ),
        },
    }
    out["seconds"] = round(time.monotonic() - t0, 1)
    return out


# -- phase 3: concurrency ramp ----------------------------------------------------------------------------
async def ramp_step(ctx: Ctx, k: int) -> dict[str, Any]:
    ctx.repin()
    ctx.engines.read_new()
    placed: list[Placed] = []
    stagger = ctx.plan.stagger_s
    question = ctx.audio[QUESTION]

    def script() -> CallerScript:
        if ctx.plan.ramp_input == "dtmf":
            return (
                CallerScript(agent_level=AGENT_LEVEL)
                .dtmf(BENCH_DIGIT, at=AgentQuiet(800))
                .hangup(at=AgentQuiet(3000))
            )
        return question_script([question])

    async def delayed(wave: int, i: int) -> None:
        await trio.sleep(i * stagger)
        await place_call(
            ctx.agi_port,
            f"k{k}w{wave}c{i}",
            script(),
            assistant=BENCH_ASSISTANT,
            seconds=90 + k * stagger,
            out=placed,
        )

    # Small K: repeat the step in waves so the p99 rests on enough frames.
    waves = max(1, -(-ctx.plan.min_step_calls // k))
    t0, g0 = time.monotonic(), time.process_time()
    for wave in range(waves):
        async with trio.open_nursery() as nursery:
            for i in range(k):
                nursery.start_soon(delayed, wave, i)
    t1, g1 = time.monotonic(), time.process_time()
    recs = await ctx.records.wait_new(k * waves)
    engines = ctx.engines.read_new()
    frames = StepFrames()
    failures: list[str] = []
    for p in placed:
        if p.error or p.result is None:
            failures.append(f"{p.name}: {p.error or 'no result'}")
            continue
        status = p.result.variables.get("AI_STATUS", "")
        if status != "COMPLETED":
            failures.append(
                f"{p.name}: AI_STATUS={status or '(unset)'} "
                f"{p.result.variables.get('AI_REASON', '')}"
            )
        s = p.session
        if s is not None:
            frames.add(s)
    late = [r["playout"].get("late_frames", 0) for r in recs]
    max_late = [r["playout"].get("max_lateness_ms", 0.0) for r in recs]
    q_lat, greet, wrong = [], [], 0
    for r in recs:
        speech = [t for t in r["turns"] if t["trigger"] == "speech"]
        if speech and speech[0]["intent"] != "services":
            wrong += 1
        q_lat += [t["latency_ms"] for t in speech[:1] if t.get("latency_ms") is not None]
        greet += [
            t["first_frame_sent"] * 1000
            for t in r["turns"][:1]
            if t.get("first_frame_sent") is not None
        ]
    if wrong:
        failures.append(f"{wrong} call(s) misheard the question")
    if len(recs) < len(placed):
        failures.append(f"{len(placed) - len(recs)} call record(s) missing")
    pool = {kind: [e for e in engines if e["engine"] == f"pool_{kind}"]
            for kind in ("stt", "tts")}
    stt = [e for e in engines if e["engine"] == "stt" and e["audio_s"] > 0]
    tts = [e for e in engines if e["engine"] == "tts"]
    gc2 = [e["wall_ms"] for e in engines if e["engine"] == "gc" and e["gen"] == 2]
    fr = frames.report()
    return {
        "k": k,
        "waves": waves,
        "calls": len(placed),
        "failed": len(failures),
        "failures": failures[:10],
        "late_frames": int(sum(late)),
        "calls_with_late_frames": sum(1 for x in late if x),
        "max_lateness_ms": round(max(max_late, default=0.0), 1),
        "caller_frames_dropped": sum(r.get("caller_frames_dropped", 0) for r in recs),
        **fr,
        "question_latency_ms": summary(q_lat),
        "greeting_first_frame_ms": summary(greet),
        "stt_wall_ms": summary([e["wall_ms"] for e in stt]),
        "tts_wall_ms": summary([e["wall_ms"] for e in tts]),
        "pool": {  # per stage: queue wait, then time to the first answer, of which inference
            kind: {"requests": len(es),
                   "queue_ms": summary([e["wait_ms"] for e in es]),
                   "first_answer_ms": summary([e["first_ms"] for e in es]),
                   "inference_ms": summary([e["compute_ms"] for e in es])}
            for kind, es in pool.items() if es},
        "turn_bar_ms": ctx.hangover_ms + TURN_BAR_MS if ctx.plan.turn_bar else None,
        "stalls": stalls(placed, engines, ctx.clock),
        "gc_full_collections": len(gc2),
        "gc_full_max_ms": round(max(gc2, default=0.0), 1),
        "server_cpu_pct": round(ctx.sampler.used(t0, t1) / (t1 - t0) * 100, 1),
        "server_cpu_ms_per_call_s": round(
            ctx.sampler.used(t0, t1) * 1000 / max(1e-9, sum(p.ended - p.started for p in placed)),
            1,
        ),
        "generator_cpu_pct": round((g1 - g0) / (t1 - t0) * 100, 1),
        "seconds": round(t1 - t0, 1),
    }


def step_verdict(step: dict[str, Any]) -> str:
    """Why this step ends the ramp ("" if it passed)."""
    why = []
    if step["late_frames"]:
        why.append(f"{step['late_frames']} late frame(s)")
    p99 = step["interval_dev_ms"].get("p99")
    if p99 is not None and p99 > STOP_P99_MS:
        why.append(f"p99 interval deviation {p99} ms > {STOP_P99_MS} ms")
    if step["failed"]:
        why.append(f"{step['failed']} failed call(s)")
    bar, p95 = step.get("turn_bar_ms"), step["question_latency_ms"].get("p95")
    if bar is not None and p95 is not None and p95 > bar:
        why.append(f"p95 turn latency {p95} ms > {bar:g} ms")
    return "; ".join(why)


async def phase_ramp(ctx: Ctx) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    stop = ""
    sustained = 0
    wave_s = 0.0
    for k in ctx.plan.ks:
        elapsed = time.monotonic() - ctx.t_start
        waves = max(1, -(-ctx.plan.min_step_calls // k))
        # One wave lasts about a call plus the stagger; calls get slower as K grows.
        estimate = waves * (wave_s * 1.2 + k * ctx.plan.stagger_s) if wave_s else 25.0 * waves
        if elapsed + estimate > ctx.plan.budget_s:
            stop = stop or f"time budget: K={k} would end after {elapsed + estimate:.0f} s"
            break
        step = await ramp_step(ctx, k)
        step["verdict"] = step_verdict(step) or "ok"
        steps.append(step)
        wave_s = step["seconds"] / step["waves"] - k * ctx.plan.stagger_s
        print(
            f"  K={k:<3} x{step['waves']} late={step['late_frames']} p99dev={step['interval_dev_ms'].get('p99')}"
            f" ms failed={step['failed']} cpu={step['server_cpu_pct']}% "
            f"({step['seconds']} s)",
            flush=True,
        )
        if step["verdict"] != "ok":
            stop = stop or f"K={k}: {step['verdict']}"
            if ctx.plan.stop_on_failure:
                break
        elif not stop:
            sustained = k
    else:
        stop = stop or "reached the largest K planned"
    return {
        "stagger_s": ctx.plan.stagger_s,
        "input": ctx.plan.ramp_input,
        "stop_p99_ms": STOP_P99_MS,
        "steps": steps,
        "sustained_calls_per_core": sustained,
        "stopped_because": stop,
    }


# -- driver ---------------------------------------------------------------------------------------------
async def run_phases(ctx: Ctx) -> dict[str, Any]:
    ctx.clock_ = Clock()  # trio time exists only inside trio.run
    out: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ctx.sampler.run)
        if ctx.nice_workers is not None:
            nursery.start_soon(ctx.renice_workers)
        if "latency" in ctx.plan.phases:
            print("phase 1/3: turn latency (sequential calls)", flush=True)
            out["latency"] = await phase_latency(ctx)
        if "cpu" in ctx.plan.phases:
            print("phase 2/3: CPU per call by state", flush=True)
            out["cpu"] = await phase_cpu(ctx)
        if "ramp" in ctx.plan.phases:
            print("phase 3/3: concurrency ramp", flush=True)
            out["concurrency"] = await phase_ramp(ctx)
        nursery.cancel_scope.cancel()
    return out


def synth_audio(plan: Plan) -> dict[str, np.ndarray]:
    """Every caller utterance the plan needs, Piper speech at 8 kHz."""
    from media_sidecar.config.schema import TtsConfig
    from media_sidecar.speech import make_tts

    tts = make_tts(TtsConfig())
    texts = {t for t, _ in ASKS} | {t for t, _ in ENDINGS} | {QUESTION} | set(MONOLOGUE)
    return {t: synth_caller(tts, t) for t in sorted(texts)}
