"""Scale (issue 13): the curve of N concurrent calls up to where it breaks, and the same load
against the alternatives, in one run.

    python bench/bench_relay.py --scenario scale [--quick] [--ns 20] [--window 5]
        [--gen-procs 2] [--gen-cpus 1] [--ramp 100] [--workers N] [--profile-n 400]

Targets, each driven by the same load (:class:`~fastagi_server.emulator.loadgen.LoadEngine`:
``--gen-procs`` generator processes pinned round robin to ``--gen-cpus``, one epoll loop each):

- ``echo``: agi-voice, the echo assistant (the relay with no provider), placed through FastAGI
  as Asterisk would (:func:`bench_relay.place`, the emulator's AGI side in this process);
- ``sts``: agi-voice, OpenAI Realtime speech-to-speech against its mock, G.711 mu-law 8 kHz
  both ways (passthrough: no resampling);
- ``floor``: ``floor_echo.py``, a minimal asyncio AudioSocket echo (what any Python server must
  at least do); no FastAGI: connect, UUID, frames;
- ``aava``: the ``asterisk-ai-voice-agent`` package's AudioSocket server as an echo
  (``aava_echo.py``), installed from PyPI into its own venv under /tmp (never into .venv); when
  it does not install, the result says so with pip's error line.

Servers run pinned to ``SERVER_CPU`` (agi-voice: the sidecar and the FastAGI server, as ``serve``
runs them; ``--workers N`` sets ``sidecar.workers`` and starts N media workers). Each step
places N calls at ``--ramp`` calls per second; every call lasts until all are up, then
``--window`` seconds together, then ends (a caller hang-up). Figures are taken over that
window: frame arrivals are the kernel's receive stamps, so the generator's own delay is not in
them; the generator processes report how late their ticks were, and a step where they were
behind says so (``generator_behind``). The bar (issue 13): p99 deviation from the 20 ms grid
<= 2 ms, no late frame (no received interval over 30 ms, none skipped by the sidecar's
playout), no failed call. A ladder stops at its first step below the bar (``--no-stop``: go on).
Nothing is asserted; figures are reported.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import trio
from foundation_load import Placed, pin_process, process_cpu_seconds, summary, tasks
from relay_product import GENERATOR_CPU, SERVER_CPU, MockProvider, Product, rss_kib

from fastagi_server.emulator.loadgen import LoadEngine, LoadResult

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BAR_P99_MS = 2.0
AAVA_PACKAGE = "asterisk-ai-voice-agent"
AAVA_VENV = Path("/tmp/agi-voice-bench-aava-venv")
SETTLE_S = 1.0
"""After the last call is up, before the window: its first frames and the server settle."""

PLANS: dict[str, dict[str, Any]] = {
    "quick": {"ns": [20, 50], "sts_ns": [20], "alt_ns": [20, 50], "window_s": 3.0},
    "full": {"ns": [50, 100, 200, 300, 400, 500, 600, 800, 1000],
             "sts_ns": [50, 100, 200, 300, 400], "alt_ns": [50, 100, 200, 300, 400, 600, 800],
             "window_s": 10.0},
}
LABELS = {"echo": "agi-voice, echo assistant (via FastAGI)",
          "sts": "agi-voice, OpenAI Realtime mock, mu-law passthrough (via FastAGI)",
          "floor": "floor: minimal asyncio AudioSocket echo (bench/floor_echo.py)",
          "aava": f"{AAVA_PACKAGE} AudioSocket transport as an echo (bench/aava_echo.py)"}


# -- processes ---------------------------------------------------------------------------------------
def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (media workers may start children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for tid in tasks(p):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in
                         Path(f"/proc/{p}/task/{tid}/children").read_text().split()]
    return out


class TreeSampler:
    """CPU seconds and RSS (KiB) of some process trees, every ``interval`` s."""

    def __init__(self, roots: Sequence[int], interval: float = 0.1) -> None:
        self.roots = list(roots)
        self.interval = interval
        self.samples: list[tuple[float, float, int]] = []

    def sample(self) -> None:
        cpu, rss = 0.0, 0
        for root in self.roots:
            for p in tree(root):
                with contextlib.suppress(OSError, IndexError, ValueError):
                    cpu += process_cpu_seconds(p)
                    rss += rss_kib(p)
        self.samples.append((time.monotonic(), cpu, rss))

    async def run(self) -> None:
        while True:
            self.sample()
            await trio.sleep(self.interval)

    def cpu(self, t0: float, t1: float) -> float:
        ts = [s[0] for s in self.samples]
        cs = [s[1] for s in self.samples]
        return float(np.interp(t1, ts, cs) - np.interp(t0, ts, cs))

    def rss_max(self, t0: float, t1: float) -> int:
        return max((r for t, _c, r in self.samples if t0 <= t <= t1), default=0)


class ServerProcess:
    """A comparison server (``floor_echo.py``, ``aava_echo.py``) in its own process on the
    server CPU; it writes its port to a ready file."""

    def __init__(self, workdir: Path, name: str, argv: list[str], pin: bool = True) -> None:
        self.workdir, self.name, self.argv, self.pin = workdir, name, argv, pin
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}

    def __enter__(self) -> ServerProcess:
        ready = self.workdir / f"{self.name}.ready"
        ready.unlink(missing_ok=True)
        log = open(self.workdir / f"{self.name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen([*self.argv, "--port", "0", "--ready", str(ready)],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=ROOT)
        deadline = time.monotonic() + 60
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start; see {self.name}.log")
            time.sleep(0.05)
        self.info = json.loads(ready.read_text())
        if self.pin:
            pin_process(self.proc.pid, SERVER_CPU)
        return self

    @property
    def port(self) -> int:
        return int(self.info["port"])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def ensure_aava(venv: Path = AAVA_VENV) -> tuple[Path | None, str]:
    """The Python of a venv under /tmp with ``asterisk-ai-voice-agent`` installed from PyPI
    (made on first use, with .venv's Python), or None and pip's error line."""
    py = venv / "bin" / "python"
    check = [str(py), "-c", "import asterisk_ai_voice_agent.transport"]
    if py.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return py, ""
    shutil.rmtree(venv, ignore_errors=True)
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True,
                          text=True)
    if made.returncode != 0:
        return None, _error_line(made.stderr) or "python -m venv failed"
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q",
                          "--disable-pip-version-check", AAVA_PACKAGE],
                         capture_output=True, text=True, timeout=900)
    if pip.returncode != 0:
        return None, _error_line(pip.stderr) or f"pip exited with {pip.returncode}"
    if subprocess.run(check, capture_output=True).returncode != 0:
        return None, f"{AAVA_PACKAGE} installed but asterisk_ai_voice_agent.transport does not import"
    return py, ""


def _error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (errors or lines or [""])[-1]


# -- targets -------------------------------------------------------------------------------------------
class Target:
    """What a step places calls on: ``start(i, seconds, out)`` runs call ``i`` to its end."""

    name = ""
    pids: list[int]
    via_fastagi = False

    async def call(self, engine: LoadEngine, i: int, n: int, pcm: bytes, seconds: float,
                   out: list[Placed]) -> None:
        raise NotImplementedError

    async def records(self, names: Sequence[str], before: int) -> dict[str, dict[str, Any]]:
        return {}

    def failed(self, p: Placed, records: dict[str, dict[str, Any]]) -> str:
        s = session_of(p)
        if p.error:
            return p.error
        if s is None:
            return "no AudioSocket session"
        if s.closed_by != "caller_hangup":
            return f"AudioSocket ended by {s.closed_by}: {s.error or ''}".strip()
        return ""


class AgiVoice(Target):
    via_fastagi = True

    def __init__(self, name: str, product: Product, assistant: str) -> None:
        self.name, self.product, self.assistant = name, product, assistant
        self.pids = [*product.sidecar_pids]

    async def call(self, engine: LoadEngine, i: int, n: int, pcm: bytes, seconds: float,
                   out: list[Placed]) -> None:
        from bench_relay import place

        await place(self.product.agi_port, f"{self.name}{n}-{i}", self.assistant, None,
                    seconds + 30, out, engine.runner(pcm, seconds))()

    async def records(self, names: Sequence[str], before: int) -> dict[str, dict[str, Any]]:
        from bench_relay import wait_records

        return await wait_records(self.product, names, before)

    def failed(self, p: Placed, records: dict[str, dict[str, Any]]) -> str:
        from bench_relay import call_failed

        return call_failed(p, records.get(p.name))


class Direct(Target):
    def __init__(self, name: str, server: ServerProcess) -> None:
        self.name, self.server = name, server
        self.pids = [server.pid]

    async def call(self, engine: LoadEngine, i: int, n: int, pcm: bytes, seconds: float,
                   out: list[Placed]) -> None:
        placed = Placed(name=f"{self.name}{n}-{i}", started=time.monotonic())
        out.append(placed)
        res = await engine.run_direct("127.0.0.1", self.server.port, pcm, seconds)
        placed.ended = time.monotonic()
        placed.direct = res  # type: ignore[attr-defined]


def session_of(p: Placed) -> LoadResult | None:
    s = getattr(p, "direct", None) or p.session
    return s if isinstance(s, LoadResult) else None


# -- one step ------------------------------------------------------------------------------------------
async def scale_step(target: Target, engine: LoadEngine, n: int, signals: Sequence[bytes], *,
                     ramp: float, window_s: float, profile: Path | None = None
                     ) -> dict[str, Any]:
    """N calls placed at ``ramp`` per second, all up together for ``window_s``."""
    seconds = n / ramp + SETTLE_S + window_s + 1.0
    sampler = TreeSampler(target.pids)
    sampler.sample()
    rss_before = sampler.samples[-1][2]
    product = getattr(target, "product", None)
    before = len(product.read_records()) if product is not None else 0
    engine.stats(reset=True)
    placed: list[Placed] = []
    prof: dict[str, Any] | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sampler.run)
        async with trio.open_nursery() as calls:
            t0 = trio.current_time()
            for i in range(n):
                await trio.sleep_until(t0 + i / ramp)
                calls.start_soon(target.call, engine, i, n, signals[i % len(signals)], seconds,
                                 placed)
            if profile is not None:
                await trio.sleep(SETTLE_S + 0.5)
                prof = await trio.to_thread.run_sync(
                    functools.partial(profile_sidecar, target.pids, window_s - 1.0, profile))
        nursery.cancel_scope.cancel()
    gen = engine.stats(reset=True)
    records = await target.records([p.name for p in placed if p.session], before)
    sessions = [s for p in placed if (s := session_of(p)) is not None]
    ok_sessions = [s for s in sessions if s.mono_started]
    w0 = max((s.mono_started for s in ok_sessions), default=0.0) + SETTLE_S
    w1 = min((s.mono_ended for s in ok_sessions), default=0.0) - 0.5
    window = max(0.0, w1 - w0)
    ivals = []
    for s in ok_sessions:
        a = s.arrivals[(s.arrivals >= w0) & (s.arrivals <= w1)]
        ivals.append(np.diff(a) * 1000.0)
    iv = np.concatenate(ivals) if ivals else np.zeros(0)
    devs = np.abs(iv - 20.0)
    failures = {p.name: why for p in placed if (why := target.failed(p, records))}
    recs = [records[p.name] for p in placed if p.name in records]
    cpu = sampler.cpu(w0, w1) if window > 0 else 0.0
    rss_peak = sampler.rss_max(w0, w1)
    starts = sorted(s.mono_started for s in ok_sessions)
    setup_ms = [(s.mono_started - p.started) * 1000 for p in placed
                if (s := session_of(p)) is not None and s.mono_started]
    step: dict[str, Any] = {
        "target": target.name, "calls": n, "seconds_per_call": round(seconds, 1),
        "window_s": round(window, 2), "ramp_calls_per_s": ramp,
        "placed_calls_per_s": round((len(starts) - 1) / (starts[-1] - starts[0]), 1)
        if len(starts) > 1 and starts[-1] > starts[0] else None,
        "setup_under_load_ms": summary(setup_ms, 1),
        "failed_calls": len(failures), "failures": dict(list(failures.items())[:5]),
        "failure_kinds": dict(Counter(v.split(":")[0] for v in failures.values()).most_common(5)),
        "pacing_dev_ms": summary(devs.tolist(), 3),
        "intervals": int(iv.size),
        "intervals_over_30ms": int((iv > 30.0).sum()),
        "late_frames": sum(r["playout"]["late_frames"] for r in recs) if recs else None,
        "server_cpu_pct": round(100 * cpu / window, 1) if window else None,
        "cpu_ms_per_call_s": round(1000 * cpu / window / n, 3) if window else None,
        "rss_before_mib": round(rss_before / 1024, 1),
        "rss_peak_mib": round(rss_peak / 1024, 1) if rss_peak else None,
        "rss_kib_per_call": round((rss_peak - rss_before) / n, 1) if rss_peak else None,
        "agent_frames_loud": sum(s.loud_frames for s in sessions),
        "generator": generator_figures(gen, w0, w1),
    }
    step["generator_behind"] = generator_behind(step["generator"])
    step["meets_bar"] = meets_bar(step)
    if prof is not None:
        step["profile"] = prof
    return step


def generator_figures(stats: list[dict[str, Any]], w0: float, w1: float) -> list[dict[str, Any]]:
    """Per generator process, over the window: how late it woke for its ticks and how late the
    last frame of each tick left (ms), its CPU, and its counters."""
    out = []
    for s in stats:
        d = np.frombuffer(s["tick_deadline"], dtype=np.float64)
        keep = (d >= w0) & (d <= w1)
        late = np.frombuffer(s["tick_late_ms"], dtype=np.float32)[keep]
        span = np.frombuffer(s["tick_span_ms"], dtype=np.float32)[keep]
        out.append({
            "index": s["index"], "cpus": s["cpus"], "phase_ms": s["phase_ms"],
            "peak_calls": s["peak_calls"],
            "cpu_pct": round(100 * s["cpu_s"] / s["wall_s"], 1) if s["wall_s"] else None,
            "tick_late_ms": summary(late.tolist(), 3),
            "last_frame_late_ms": summary(span.tolist(), 3),
            **{k: s[k] for k in ("frames_sent", "frames_dropped", "short_writes",
                                 "frames_received", "reads", "coalesced_reads", "ticks_skipped",
                                 "kernel_stamps")},
        })
    return out


def generator_behind(gen: Sequence[dict[str, Any]]) -> list[str]:
    """Why the generator was behind in a step (empty: it kept up): a process over 90 % CPU,
    its ticks p99 more than 2 ms late or its last frame p99 more than 5 ms late, skipped
    ticks, or more than 1 % of reads holding several frames (their stamps are then the
    later frame's)."""
    why = []
    for g in gen:
        k = g["index"]
        if (g["cpu_pct"] or 0) > 90:
            why.append(f"generator {k} at {g['cpu_pct']} % CPU")
        if g["tick_late_ms"].get("p99", 0) > 2.0:
            why.append(f"generator {k} ticks p99 {g['tick_late_ms']['p99']} ms late")
        if g["last_frame_late_ms"].get("p99", 0) > 5.0:
            why.append(f"generator {k} last frame of a tick p99 "
                       f"{g['last_frame_late_ms']['p99']} ms late")
        if g["ticks_skipped"]:
            why.append(f"generator {k} skipped {g['ticks_skipped']} ticks")
        if g["reads"] and g["coalesced_reads"] > 0.01 * g["reads"]:
            why.append(f"generator {k}: {g['coalesced_reads']} of {g['reads']} reads held"
                       " several frames")
    return why


def meets_bar(step: dict[str, Any]) -> bool:
    """Issue 13's bar: p99 deviation <= 2 ms, no late frame, no failed call."""
    p99 = step["pacing_dev_ms"].get("p99")
    return (p99 is not None and p99 <= BAR_P99_MS and step["failed_calls"] == 0
            and step["intervals_over_30ms"] == 0 and not step["late_frames"])


# -- profile -----------------------------------------------------------------------------------------
IDLE_FRAMES = ("EpollIOManager.get_events", "select.epoll.poll", "_run_once")
"""A sample whose innermost frame is one of these is the server waiting in epoll (py-spy
counts it with ``--nonblocking``): left out of the percentages, counted as ``idle_samples``."""

def profile_sidecar(pids: Sequence[int], seconds: float, out: Path, top: int = 25
                    ) -> dict[str, Any]:
    """py-spy on the server processes for ``seconds`` (its own process on the generator CPU),
    collapsed stacks written to ``out``; returns the top functions by own and by total samples
    of the busy samples (waiting in epoll left out).
    py-spy samples another process from outside (no code in the server, no restart, children
    with --subprocesses), which cProfile cannot."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return {"error": "py-spy not installed (pip install py-spy: the bench extra)"}
    stacks: Counter[str] = Counter()
    errors = []
    for pid in pids:
        path = out.with_name(f"{out.stem}-{pid}.txt")
        cmd = [spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
               "--rate", "250", "--format", "raw", "--output", str(path), "--nonblocking",
               "--subprocesses"]
        r = subprocess.run(cmd, capture_output=True, text=True,
                           preexec_fn=lambda: os.sched_setaffinity(0, GENERATOR_CPU))
        if r.returncode != 0 or not path.exists():
            errors.append(_error_line(r.stderr) or f"py-spy exited with {r.returncode}")
            continue
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                stacks[stack] += int(count)
    idle = sum(c for st, c in stacks.items() if st.rsplit(";", 1)[-1].startswith(IDLE_FRAMES))
    stacks = Counter({st: c for st, c in stacks.items()
                      if not st.rsplit(";", 1)[-1].startswith(IDLE_FRAMES)})
    total = sum(stacks.values())
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for stack, c in stacks.items():
        frames = stack.split(";")
        own[frames[-1]] += c
        for f in set(frames):
            incl[f] += c
    out.write_text("".join(f"{s} {c}\n" for s, c in stacks.most_common()))
    pct = (lambda c: round(100 * c / total, 1)) if total else (lambda c: 0.0)
    return {"tool": "py-spy", "samples": total, "idle_samples": idle, "seconds": seconds,
            "stacks": str(out),
            "errors": errors,
            "top_own": [[f, pct(c)] for f, c in own.most_common(top)],
            "top_total": [[f, pct(c)] for f, c in incl.most_common(top)]}


# -- ladders and the scenario ------------------------------------------------------------------------
async def ladder(target: Target, engine: LoadEngine, ns: Sequence[int], signals: Sequence[bytes],
                 opts: dict[str, Any], workdir: Path) -> dict[str, Any]:
    steps = []
    for n in ns:
        print(f"scale {target.name}: {n} calls ...", flush=True)
        with contextlib.suppress(AttributeError):
            target.product.repin()  # type: ignore[attr-defined]
        prof = (workdir / f"profile-{target.name}-{n}.txt"
                if opts.get("profile_n") == n and target.name == "echo" else None)
        step = await scale_step(target, engine, n, signals, ramp=opts["ramp"],
                                window_s=opts["window_s"], profile=prof)
        steps.append(step)
        g = step["generator"]
        print(f"  p50/p99 {step['pacing_dev_ms'].get('p50')}/{step['pacing_dev_ms'].get('p99')}"
              f" ms, >30 ms {step['intervals_over_30ms']}, late {step['late_frames']}, failed"
              f" {step['failed_calls']}, cpu {step['cpu_ms_per_call_s']} ms/call-s, rss"
              f" {step['rss_kib_per_call']} KiB/call, gen cpu"
              f" {[x['cpu_pct'] for x in g]} % late p99"
              f" {[x['tick_late_ms'].get('p99') for x in g]} ms, placed"
              f" {step['placed_calls_per_s']}/s"
              + (f"; GENERATOR BEHIND: {'; '.join(step['generator_behind'])}"
                 if step["generator_behind"] else ""), flush=True)
        if not step["meets_bar"] and not opts.get("no_stop"):
            break
    passing = 0
    for s in steps:
        if not s["meets_bar"]:
            break
        passing = s["calls"]
    return {"target": target.name, "label": LABELS[target.name], "steps": steps,
            "max_calls_at_bar": passing,
            "broke_at": next((s["calls"] for s in steps if not s["meets_bar"]), None)}


async def run_scale(plan: dict[str, Any], workdir: Path, opts: dict[str, Any]) -> dict[str, Any]:
    from bench_relay import caller_signal

    targets = opts.get("targets") or ["echo", "sts", "floor", "aava"]
    out: dict[str, Any] = {"targets": {}, "bar_p99_ms": BAR_P99_MS}
    longest = (max(plan["ns"] + plan["alt_ns"]) / opts["ramp"] + SETTLE_S
               + opts["window_s"] + 2.0)
    echo_pcm = [caller_signal("echo", longest, k) for k in range(8)]
    sts_pcm = [caller_signal("sts", longest, k) for k in range(8)]
    with LoadEngine(procs=opts["gen_procs"], cpus=opts["gen_cpus"]) as engine:
        out["generator"] = {"procs": opts["gen_procs"], "cpus": opts["gen_cpus"],
                            "pids": engine.pids}
        for name in targets:
            d = workdir / f"scale-{name}"
            d.mkdir(exist_ok=True)
            t = time.monotonic()
            if name in ("echo", "sts"):
                mock = MockProvider(d, "openai") if name == "sts" else None
                with mock if mock is not None else contextlib.nullcontext():
                    mocks = {"openai": mock.port} if mock is not None else None
                    with Product(d, mocks=mocks, workers=opts.get("workers") or 1) as product:
                        target: Target = AgiVoice(name, product, name)
                        res = await ladder(target, engine,
                                           plan["ns"] if name == "echo" else plan["sts_ns"],
                                           echo_pcm if name == "echo" else sts_pcm, opts, d)
                        res["workers"] = opts.get("workers") or 1
            else:
                res = await _alternative(name, engine, plan, echo_pcm, opts, d)
            res["duration_s"] = round(time.monotonic() - t, 1)
            out["targets"][name] = res
    out["comparison"] = compare(out["targets"])
    return out


async def _alternative(name: str, engine: LoadEngine, plan: dict[str, Any],
                       signals: Sequence[bytes], opts: dict[str, Any], d: Path
                       ) -> dict[str, Any]:
    if name == "floor":
        argv = [sys.executable, str(BENCH / "floor_echo.py")]
        extra: dict[str, Any] = {}
    else:
        print(f"scale aava: installing {AAVA_PACKAGE} into {AAVA_VENV} ...", flush=True)
        py, error = await trio.to_thread.run_sync(ensure_aava)
        if py is None:
            print(f"  {AAVA_PACKAGE} does not install: {error}", flush=True)
            return {"target": name, "label": LABELS[name], "steps": [],
                    "max_calls_at_bar": None, "error": f"does not install: {error}"}
        argv = [str(py), str(BENCH / "aava_echo.py")]
        extra = {}
    with ServerProcess(d, name, argv) as server:
        if "version" in server.info:
            extra["version"] = server.info["version"]
        res = await ladder(Direct(name, server), engine, plan["alt_ns"], signals, opts, d)
    res.update(extra)
    return res


def compare(targets: dict[str, Any]) -> dict[str, Any]:
    """Each alternative as a ratio to agi-voice's echo: calls at the bar (theirs / ours) and
    CPU per call-second at the largest N both ran (theirs / ours: above 1, they spend more)."""
    ours = targets.get("echo")
    if not ours:
        return {}
    ours_steps = {s["calls"]: s for s in ours["steps"]}
    out = {}
    for name in ("floor", "aava"):
        alt = targets.get(name)
        if not alt or not alt.get("steps"):
            if alt:
                out[name] = {"error": alt.get("error")}
            continue
        common = sorted(set(ours_steps) & {s["calls"] for s in alt["steps"]})
        row: dict[str, Any] = {"calls_at_bar": alt["max_calls_at_bar"],
                               "ours_calls_at_bar": ours["max_calls_at_bar"]}
        row["calls_ratio"] = (round(alt["max_calls_at_bar"] / ours["max_calls_at_bar"], 2)
                              if ours["max_calls_at_bar"] else None)
        if common:
            n = common[-1]
            a = next(s for s in alt["steps"] if s["calls"] == n)["cpu_ms_per_call_s"]
            b = ours_steps[n]["cpu_ms_per_call_s"]
            row.update({"cpu_at_n": n, "cpu_ms_per_call_s": a, "ours_cpu_ms_per_call_s": b,
                        "cpu_ratio": round(a / b, 2) if a and b else None})
        out[name] = row
    return out


def run(quick: bool = False, *, ns: Sequence[int] | None = None, window_s: float | None = None,
        gen_procs: int = 2, gen_cpus: Sequence[int] | None = None, ramp: float = 100.0,
        workers: int | None = None, profile_n: int | None = None, no_stop: bool = False,
        targets: Sequence[str] | None = None, pin: bool = True,
        fastagi: Callable[[], dict[str, Any]] | None = None,
        workdir: Path | None = None) -> dict[str, Any]:
    """The scale scenario; ``ns`` overrides every ladder (a smoke run: ``ns=[20]``);
    ``fastagi`` gives the FastAGI setup figures (default: bench_fastagi's one-at-a-time rows)."""
    plan = dict(PLANS["quick" if quick else "full"])
    if ns:
        plan.update(ns=list(ns), sts_ns=list(ns), alt_ns=list(ns))
    opts = {"window_s": window_s or plan["window_s"], "gen_procs": gen_procs,
            "gen_cpus": list(gen_cpus) if gen_cpus else sorted(GENERATOR_CPU), "ramp": ramp,
            "workers": workers, "profile_n": profile_n, "no_stop": no_stop,
            "targets": list(targets) if targets else None}
    if pin:
        pin_process(os.getpid(), set(opts["gen_cpus"]))
    work = workdir or Path(os.environ.get("TMPDIR", "/tmp"))
    import tempfile

    with tempfile.TemporaryDirectory(prefix="agi-voice-scale-", dir=work) as tmp:
        res = trio.run(run_scale, plan, Path(tmp), opts)
        for t in res["targets"].values():  # keep the profiles: the temp dir goes
            for s in t.get("steps", []):
                if "profile" in s:
                    s["profile"].pop("stacks", None)
    res["plan"] = plan
    res["options"] = {k: v for k, v in opts.items() if k != "targets"}
    if fastagi is None:
        import bench_fastagi

        def fastagi() -> dict[str, Any]:
            return bench_fastagi.run(True, concurrency=())

    res["fastagi_setup"] = fastagi_alone(fastagi())
    return res


def fastagi_alone(fa: dict[str, Any]) -> dict[str, Any]:
    """The one-at-a-time FastAGI setup rows of a bench_fastagi result, by variant."""
    return {r["variant"]: {"setups": r["setups"], "setup_latency_ms": r["setup_latency_ms"]}
            for r in fa.get("results", []) if r.get("alone")}

