"""Foundation benchmark: turn latency, CPU per call, and calls per core of the local assistant.

    python bench/bench_foundation.py [--quick] [--out bench/results/foundation-<date>.json]

The whole product runs on loopback in a server process (``foundation_server.py``: the trio
sidecar with the REAL Moonshine STT and Piper TTS, and the asyncio FastAGI server in a thread),
pinned to one core; this process is the load generator (the product's Asterisk emulator, on the
other core) and reads the server's CPU time from /proc. Three phases:

1. latency: calls one after another on the default ``receptionist`` assistant; the caller's
   questions are Piper speech resampled to 8 kHz; per-turn timings come from the call records.
2. cpu: K calls at once on the ``bench`` assistant; the server's CPU time is read over three
   windows where every call is in the same state: listening to a silent caller, listening to
   a talking caller, and playing a long reply.
3. concurrency: K = 1, 2, 4, 8, ... calls (greeting, one question, a long reply); per step the
   playout's late frames (call records), the frame intervals the emulator received, failures.
   The ramp stops at the first step with a late frame, p99 deviation > 5 ms or a failed call.

Figures are printed as a table and written as JSON. Nothing here is asserted: benchmarks are
not tests (see ../shared/STYLE.md); ``bench/README.md`` explains every figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(ROOT), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)

import numpy as np  # noqa: E402
import trio  # noqa: E402

from foundation_load import (  # noqa: E402
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
    summary,
    synth_caller,
    thread_affinity,
)
from foundation_server import BENCH_ASSISTANT, LONG_REPLY, bench_config  # noqa: E402

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

    @staticmethod
    def make(quick: bool) -> Plan:
        if quick:
            return Plan("quick", latency_calls=1, turns_per_call=3, cpu_calls=2,
                        cpu_silence_ms=3500, monologue_sentences=2, ks=(1, 2, 4, 8),
                        stagger_s=0.25, budget_s=115)
        return Plan("full", latency_calls=4, turns_per_call=5, cpu_calls=4, cpu_silence_ms=6000,
                    monologue_sentences=4, ks=(1, 2, 4, 8, 16, 32, 64, 128), stagger_s=0.25,
                    budget_s=560)


# -- server process ------------------------------------------------------------------------------------
class Server:
    """The product in its own process; stopped by closing its stdin (killed if it hangs)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.records = workdir / "records.jsonl"
        self.engine_log = workdir / "engine.jsonl"
        self.ready = workdir / "ready.json"
        self.log = workdir / "server.log"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env.pop("AGI_VOICE_RECORDS", None)
        self._log_f = open(self.log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / "foundation_server.py"), "--records", str(self.records),
             "--engine-log", str(self.engine_log), "--ready", str(self.ready)],
            stdin=subprocess.PIPE, stdout=self._log_f, stderr=subprocess.STDOUT, env=env,
            cwd=str(ROOT))
        self.pid = self.proc.pid
        self.agi_port = 0

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start; its log:\n{self.log_tail()}")
            time.sleep(0.05)
        info = json.loads(self.ready.read_text())
        self.agi_port = int(info["agi_port"])

    def log_tail(self, n: int = 40) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # our own child, by its handle
            self.proc.wait(5)
        self._log_f.close()


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

    async def wait_new(self, n: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with trio.move_on_after(timeout):
            while True:
                out += self.read_new()
                if len(out) >= n:
                    break
                await trio.sleep(0.05)
        return out


@dataclass
class Ctx:
    server: Server
    plan: Plan
    audio: dict[str, np.ndarray]
    sampler: CpuSampler
    clock: Clock
    records: JsonLines
    engines: JsonLines
    pin: bool
    server_cpus: set[int]
    t_start: float

    def repin(self) -> None:
        if self.pin:
            pin_process(self.server.pid, self.server_cpus)

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
        asks = [ASKS[(i * (plan.turns_per_call - 1) + j) % len(ASKS)]
                for j in range(plan.turns_per_call - 1)]
        asks.append(ENDINGS[i % len(ENDINGS)])
        expected.append([intent for _, intent in asks])
        script = question_script([ctx.audio[text] for text, _ in asks], quiet_ms=800)
        await place_call(ctx.server.agi_port, f"lat{i}", script, assistant="receptionist",
                         seconds=40 + 15 * len(asks), out=placed)
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
    return {
        "calls": len(placed), "records": len(recs), "failed_calls": failed,
        "turns": len(lat), "intent_correct": f"{right}/{total}",
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
            "cpu_ms_per_audio_s": _r(sum(e["cpu_ms"] for e in stt_log)
                                     / max(1e-9, sum(e["audio_s"] for e in stt_log))),
        },
        "engine_tts": {
            "n": len(tts_log),
            "wall_ms": summary([e["wall_ms"] for e in tts_log]),
            "cpu_ms": summary([e["cpu_ms"] for e in tts_log]),
            "audio_s": summary([e["audio_s"] for e in tts_log], 2),
            "cpu_ms_per_audio_s": _r(sum(e["cpu_ms"] for e in tts_log)
                                     / max(1e-9, sum(e["audio_s"] for e in tts_log))),
        },
        "seconds": round(time.monotonic() - t0, 1),
    }


# -- phase 2: CPU per call by state ---------------------------------------------------------------------
async def phase_cpu(ctx: Ctx) -> dict[str, Any]:
    plan = ctx.plan
    ctx.repin()
    sampler = ctx.sampler
    # The server with no call: its fixed cost (FastAGI loop, control link, timers).
    i0 = time.monotonic()
    await trio.sleep(2.0)
    i1 = time.monotonic()
    idle_rate = sampler.used(i0, i1) / (i1 - i0)
    ctx.engines.read_new()
    monologue = join_speech([ctx.audio[s] for s in MONOLOGUE[-plan.monologue_sentences:]], 0.3)
    placed: list[Placed] = []
    t0 = time.monotonic()
    async with trio.open_nursery() as nursery:
        for i in range(plan.cpu_calls):
            script = question_script([monologue], first_quiet_ms=plan.cpu_silence_ms)
            nursery.start_soon(lambda i=i, s=script: place_call(
                ctx.server.agi_port, f"cpu{i}", s, assistant=BENCH_ASSISTANT, seconds=120,
                out=placed))
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
    out: dict[str, Any] = {"calls": len(placed), "records": len(recs),
                           "failed_calls": [p.name for p in placed if p.error],
                           "idle_server_cpu_pct": round(idle_rate * 100, 2)}
    n = len(greet_end)
    if n < len(placed) or n == 0:
        out["error"] = "could not find the state windows in every call"
        return out
    synth_end = max((e["end"] for e in engines
                     if e["engine"] == "tts" and e["start"] >= min(sp_end) - 1.0), default=0.0)
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
        "turn_audio_s": {"caller": round(len(monologue) / 8000, 2),
                         "reply": round(sum(e["audio_s"] for e in engines
                                            if e["engine"] == "tts") / n, 2)},
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

    async def delayed(i: int) -> None:
        await trio.sleep(i * stagger)
        await place_call(ctx.server.agi_port, f"k{k}c{i}", question_script([question]),
                         assistant=BENCH_ASSISTANT, seconds=90 + k * stagger, out=placed)

    t0, g0 = time.monotonic(), time.process_time()
    async with trio.open_nursery() as nursery:
        for i in range(k):
            nursery.start_soon(delayed, i)
    t1, g1 = time.monotonic(), time.process_time()
    recs = await ctx.records.wait_new(k)
    engines = ctx.engines.read_new()
    frames = StepFrames()
    failures: list[str] = []
    for p in placed:
        if p.error or p.result is None:
            failures.append(f"{p.name}: {p.error or 'no result'}")
            continue
        status = p.result.variables.get("AI_STATUS", "")
        if status != "COMPLETED":
            failures.append(f"{p.name}: AI_STATUS={status or '(unset)'} "
                            f"{p.result.variables.get('AI_REASON', '')}")
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
        greet += [t["first_frame_sent"] * 1000 for t in r["turns"][:1]
                  if t.get("first_frame_sent") is not None]
    if wrong:
        failures.append(f"{wrong} call(s) misheard the question")
    if len(recs) < k:
        failures.append(f"{k - len(recs)} call record(s) missing")
    stt = [e for e in engines if e["engine"] == "stt" and e["audio_s"] > 0]
    tts = [e for e in engines if e["engine"] == "tts"]
    fr = frames.report()
    return {
        "k": k,
        "failed": len(failures), "failures": failures[:10],
        "late_frames": int(sum(late)), "calls_with_late_frames": sum(1 for x in late if x),
        "max_lateness_ms": round(max(max_late, default=0.0), 1),
        "caller_frames_dropped": sum(r.get("caller_frames_dropped", 0) for r in recs),
        **fr,
        "question_latency_ms": summary(q_lat),
        "greeting_first_frame_ms": summary(greet),
        "stt_wall_ms": summary([e["wall_ms"] for e in stt]),
        "tts_wall_ms": summary([e["wall_ms"] for e in tts]),
        "server_cpu_pct": round(ctx.sampler.used(t0, t1) / (t1 - t0) * 100, 1),
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
    return "; ".join(why)


async def phase_ramp(ctx: Ctx) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    stop = ""
    sustained = 0
    last_s = 0.0
    for k in ctx.plan.ks:
        elapsed = time.monotonic() - ctx.t_start
        estimate = (last_s - (k // 2) * ctx.plan.stagger_s) * 1.15 + k * ctx.plan.stagger_s \
            if last_s else 25.0
        if elapsed + estimate > ctx.plan.budget_s:
            stop = f"time budget: K={k} would end after {elapsed + estimate:.0f} s"
            break
        step = await ramp_step(ctx, k)
        step["verdict"] = step_verdict(step) or "ok"
        steps.append(step)
        last_s = step["seconds"]
        print(f"  K={k:<3} late={step['late_frames']} p99dev={step['interval_dev_ms'].get('p99')}"
              f" ms failed={step['failed']} cpu={step['server_cpu_pct']}% "
              f"({step['seconds']} s)", flush=True)
        if step["verdict"] != "ok":
            stop = f"K={k}: {step['verdict']}"
            break
        sustained = k
    else:
        stop = stop or "reached the largest K planned"
    return {"stagger_s": ctx.plan.stagger_s, "stop_p99_ms": STOP_P99_MS, "steps": steps,
            "sustained_calls_per_core": sustained, "stopped_because": stop}


# -- driver ---------------------------------------------------------------------------------------------
async def run_phases(ctx: Ctx) -> dict[str, Any]:
    ctx.clock = Clock()
    out: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ctx.sampler.run)
        print("phase 1/3: turn latency (sequential calls, receptionist)", flush=True)
        out["latency"] = await phase_latency(ctx)
        print("phase 2/3: CPU per call by state", flush=True)
        out["cpu"] = await phase_cpu(ctx)
        print("phase 3/3: concurrency ramp", flush=True)
        out["concurrency"] = await phase_ramp(ctx)
        nursery.cancel_scope.cancel()
    return out


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mhz = [float(x.split(":")[1]) for x in Path("/proc/cpuinfo").read_text().splitlines()
           if x.startswith("cpu MHz")]
    return {"nproc": os.cpu_count(), "cpu_model": model,
            "cpu_mhz": round(mhz[0]) if mhz else None,
            "python": platform.python_version(), "kernel": platform.release(),
            "machine": platform.machine()}


def synth_audio(plan: Plan) -> dict[str, np.ndarray]:
    """Every caller utterance the plan needs, Piper speech at 8 kHz."""
    from media_sidecar.config.schema import TtsConfig
    from media_sidecar.speech import make_tts

    tts = make_tts(TtsConfig())
    texts = {t for t, _ in ASKS} | {t for t, _ in ENDINGS} | {QUESTION} | set(MONOLOGUE)
    return {t: synth_caller(tts, t) for t in sorted(texts)}


# -- report ---------------------------------------------------------------------------------------------
def table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [[("" if c is None else str(c)) for c in r] for r in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for j, r in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w)
                               in enumerate(zip(r, widths, strict=True))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render(res: dict[str, Any]) -> str:
    m = res["machine"]
    out = [f"agi-voice foundation benchmark ({res['mode']}, {res['date']}): "
           f"{m['nproc']} x {m['cpu_model']}, Python {m['python']}; server pinned to CPU "
           f"{res['pinning']['server_cpus']}, generator to {res['pinning']['generator_cpus']}"]
    lat = res["latency"]
    out.append(f"\n1. Turn latency, local assistant ({lat['turns']} turns in {lat['calls']} "
               f"sequential calls, intents right {lat['intent_correct']}), ms")
    rows = []
    for key, label in (("latency_ms", "end of speech -> first agent frame sent"),
                       ("processing_ms", f"  minus VAD hangover ({lat['vad_end_ms']:.0f} ms)"),
                       ("stt_stage_ms", "  STT (after hangover)"),
                       ("tts_first_sentence_ms", "  brain + TTS of first sentence"),
                       ("playout_pickup_ms", "  wait for the next 20 ms tick"),
                       ("caller_perceived_ms", "caller-side: end of speech -> agent heard")):
        s = lat[key]
        rows.append([label, s.get("p50"), s.get("p95"), s.get("max")])
    out.append(table(rows, ["", "p50", "p95", "max"]))
    es, et = lat["engine_stt"], lat["engine_tts"]
    out.append(f"   engines, one call at a time: Moonshine {es['cpu_ms_per_audio_s']} CPU-ms per "
               f"audio s (p50 {es['wall_ms'].get('p50')} ms wall for "
               f"{es['audio_s'].get('p50')} s); Piper {et['cpu_ms_per_audio_s']} CPU-ms per "
               f"audio s (p50 {et['wall_ms'].get('p50')} ms wall per sentence)")
    cpu = res["cpu"]
    out.append(f"\n2. Server CPU per call ({cpu['calls']} calls at once; idle server "
               f"{cpu['idle_server_cpu_pct']}% of a core)")
    rows = []
    for key, label in (("listening_caller_silent", "listening, caller silent"),
                       ("listening_caller_talking", "listening, caller talking (VAD)"),
                       ("speaking_reply_playout", "speaking (reply playout)")):
        w = cpu.get(key, {})
        rows.append([label, w.get("cpu_ms_per_call_s"),
                     None if "cpu_ms_per_call_s" not in w else round(w["cpu_ms_per_call_s"] / 10, 2),
                     w.get("window_s"), w.get("error")])
    wc = cpu.get("whole_call", {})
    if wc:
        rows.append(["whole call incl. STT+TTS", wc["cpu_ms_per_call_s"],
                     round(wc["cpu_ms_per_call_s"] / 10, 2), wc["call_s"], ""])
    out.append(table(rows, ["state", "CPU ms/call-s", "% core/call", "window s", ""]))
    con = res["concurrency"]
    out.append(f"\n3. Concurrency on one core (calls staggered {con['stagger_s']} s; greeting, "
               f"one question, {len(LONG_REPLY)} chars of reply)")
    rows = []
    for st in con["steps"]:
        dev = st["interval_dev_ms"]
        rows.append([st["k"], st["failed"], st["late_frames"], st["max_lateness_ms"],
                     dev.get("p50"), dev.get("p99"), dev.get("max"),
                     st["generator_send_late_ms"].get("p99"),
                     st["question_latency_ms"].get("p50"), st["question_latency_ms"].get("max"),
                     st["stt_wall_ms"].get("max"), st["server_cpu_pct"], st["verdict"]])
    out.append(table(rows, ["K", "failed", "late", "max late ms", "dev p50", "dev p99",
                            "dev max", "gen late p99", "turn p50", "turn max", "stt max",
                            "cpu %", "verdict"]))
    out.append(f"   sustained without a late frame: {con['sustained_calls_per_core']} calls per "
               f"core (stopped: {con['stopped_because']})")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer calls, K up to 8 (< 2 min)")
    ap.add_argument("--out", help="JSON output (default bench/results/foundation-<date>.json)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin server and generator")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--generator-cpu", type=int, default=1)
    args = ap.parse_args()
    plan = Plan.make(args.quick)
    date = dt.date.today().isoformat()
    out_path = Path(args.out) if args.out else (
        BENCH / "results" / f"foundation-{date}{'-quick' if args.quick else ''}.json")
    pin = not args.no_pin and (os.cpu_count() or 1) > 1
    t_start = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="agi-voice-bench-"))
    server = Server(workdir)
    try:
        print(f"synthesising caller speech; server pid {server.pid} loading engines", flush=True)
        audio = synth_audio(plan)
        server.wait_ready()
        gen_cpus = {args.generator_cpu}
        server_cpus = {args.server_cpu}
        if pin:
            pin_process(os.getpid(), gen_cpus)
            pin_process(server.pid, server_cpus)
        ctx = Ctx(server=server, plan=plan, audio=audio, sampler=CpuSampler(server.pid),
                  clock=None, records=JsonLines(server.records),  # type: ignore[arg-type]
                  engines=JsonLines(server.engine_log), pin=pin, server_cpus=server_cpus,
                  t_start=t_start)
        phases = trio.run(run_phases, ctx)
        affinity = thread_affinity(server.pid)
        threads = sum(affinity.values())
    finally:
        server.stop()
    res: dict[str, Any] = {
        "benchmark": "foundation", "mode": plan.mode, "date": date,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "pinning": {"enabled": pin, "server_cpus": sorted(server_cpus) if pin else "all",
                    "generator_cpus": sorted(gen_cpus) if pin else "all",
                    "server_threads": threads, "server_thread_affinity_at_end": affinity},
        "plan": plan.__dict__,
        **phases,
        "duration_s": round(time.monotonic() - t_start, 1),
    }
    print()
    print(render(res))
    print(f"\ntotal {res['duration_s']} s; JSON: {out_path}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
