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
import dataclasses
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(ROOT), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)

import numpy as np  # noqa: E402
import trio  # noqa: E402
from foundation_load import CpuSampler, pin_process, thread_affinity  # noqa: E402
from foundation_phases import Ctx, JsonLines, Plan, run_phases, synth_audio  # noqa: E402
from foundation_report import render  # noqa: E402


# -- server process ------------------------------------------------------------------------------------
class Server:
    """The product in its own process; stopped by closing its stdin (killed if it hangs)."""

    def __init__(
        self,
        workdir: Path,
        profile: str | None = None,
        switch_interval: float | None = None,
        tts_cache: bool = False,
        pool: tuple[int, int, int] = (0, 1, 5),
    ) -> None:
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
            [
                sys.executable,
                str(BENCH / "foundation_server.py"),
                "--records",
                str(self.records),
                "--engine-log",
                str(self.engine_log),
                "--ready",
                str(self.ready),
                *(["--profile", profile] if profile else []),
                *(["--switch-interval", str(switch_interval)] if switch_interval else []),
                *(["--tts-cache"] if tts_cache else []),
                *(["--pool", str(pool[0]), "--pool-threads", str(pool[1]),
                   "--pool-nice", str(pool[2])] if pool[0] else []),
            ],
            stdin=subprocess.PIPE,
            stdout=self._log_f,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(ROOT),
        )
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


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mhz = [
        float(x.split(":")[1])
        for x in Path("/proc/cpuinfo").read_text().splitlines()
        if x.startswith("cpu MHz")
    ]
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "cpu_mhz": round(mhz[0]) if mhz else None,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "machine": platform.machine(),
    }


def cpu_times() -> dict[str, list[int]]:
    """Per-CPU jiffies from /proc/stat (user nice system idle iowait irq softirq steal ...)."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *vals = line.split()
        if name.startswith("cpu") and name != "cpu":
            out[name] = [int(v) for v in vals]
    return out


def busy_and_steal(before: dict[str, list[int]], after: dict[str, list[int]]) -> dict[str, Any]:
    """Per CPU over the run: % busy and % stolen by the hypervisor (a VM's neighbours)."""
    out = {}
    for cpu, a in after.items():
        d = [x - y for x, y in zip(a, before.get(cpu, a), strict=False)]
        total = sum(d[:8]) or 1
        out[cpu] = {
            "busy_pct": round(100 * (total - d[3] - d[4]) / total, 1),
            "steal_pct": round(100 * d[7] / total, 2),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer calls, K up to 8 (< 2 min)")
    ap.add_argument("--out", help="JSON output (default bench/results/foundation-<date>.json)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin server and generator")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--generator-cpu", type=int, default=1)
    ap.add_argument(
        "--no-stop",
        action="store_true",
        help="exploration: keep ramping past a failing step (within the time budget)",
    )
    ap.add_argument("--ks", help="exploration: comma list of K for the ramp")
    ap.add_argument(
        "--nice-workers",
        type=int,
        metavar="N",
        help="experiment: renice every server thread but the trio one to N",
    )
    ap.add_argument(
        "--switch-interval",
        type=float,
        metavar="S",
        help="experiment: sys.setswitchinterval(S) in the server",
    )
    ap.add_argument(
        "--tts-cache",
        action="store_true",
        help="experiment: the server replays sentences it synthesised before",
    )
    ap.add_argument(
        "--pool",
        type=int,
        default=0,
        metavar="N",
        help="the local assistant as shipped: STT and TTS in an inference pool of N processes "
        "(on every CPU; fixed sentences from the sentence cache); the ramp then also stops "
        "when p95 turn latency passes the VAD hang-over + 400 ms. 0: worker threads of the "
        "server behind timing shims (the foundation figures)",
    )
    ap.add_argument("--pool-threads", type=int, default=1, metavar="T",
                    help="with --pool: onnxruntime threads per process")
    ap.add_argument("--pool-nice", type=int, default=5, metavar="N",
                    help="with --pool: the processes' nice value")
    ap.add_argument(
        "--ramp-input",
        choices=("speech", "dtmf"),
        default="speech",
        help="experiment: ask the ramp's question by key press (no STT)",
    )
    ap.add_argument(
        "--phases", default="latency,cpu,ramp", help="exploration: which phases to run (comma list)"
    )
    ap.add_argument(
        "--profile",
        metavar="TXT",
        help="profile the server's trio thread with pyinstrument into TXT",
    )
    args = ap.parse_args()
    plan = Plan.make(args.quick)
    if args.ks:
        plan = dataclasses.replace(plan, ks=tuple(int(k) for k in args.ks.split(",")))
    if args.no_stop:
        plan = dataclasses.replace(plan, stop_on_failure=False)
    plan = dataclasses.replace(
        plan, ramp_input=args.ramp_input, phases=tuple(args.phases.split(",")),
        turn_bar=args.pool > 0,
    )
    date = dt.date.today().isoformat()
    out_path = (
        Path(args.out)
        if args.out
        else (BENCH / "results" / f"foundation-{date}{'-quick' if args.quick else ''}.json")
    )
    pin = not args.no_pin and (os.cpu_count() or 1) > 1
    t_start = time.monotonic()
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    cpu_before = cpu_times()
    workdir = Path(tempfile.mkdtemp(prefix="agi-voice-bench-"))
    server = Server(
        workdir,
        str(Path(args.profile).resolve()) if args.profile else None,
        args.switch_interval,
        args.tts_cache,
        (args.pool, args.pool_threads, args.pool_nice),
    )
    try:
        print(f"synthesising caller speech; server pid {server.pid} loading engines", flush=True)
        audio = synth_audio(plan)
        # Piper samples noise, so every run's caller audio differs: keep this run's (debugging).
        np.savez(workdir / "caller_audio.npz", *audio.values(), names=list(audio))
        server.wait_ready()
        gen_cpus = {args.generator_cpu}
        server_cpus = {args.server_cpu}
        if pin:
            pin_process(os.getpid(), gen_cpus)
            pin_process(server.pid, server_cpus)
        ctx = Ctx(
            agi_port=server.agi_port,
            server_pid=server.pid,
            plan=plan,
            audio=audio,
            sampler=CpuSampler(server.pid),
            records=JsonLines(server.records),
            engines=JsonLines(server.engine_log),
            pin=pin,
            server_cpus=server_cpus,
            t_start=t_start,
            nice_workers=args.nice_workers,
        )
        phases = trio.run(run_phases, ctx)
        affinity = thread_affinity(server.pid)
        threads = sum(affinity.values())
    finally:
        server.stop()
    res: dict[str, Any] = {
        "benchmark": "foundation",
        "mode": plan.mode,
        "date": date,
        "started_at": started_at,
        "machine": {
            **machine(),
            "loadavg_before": load_before,
            "cpu_during_run": busy_and_steal(cpu_before, cpu_times()),
        },
        "pinning": {
            "enabled": pin,
            "server_cpus": sorted(server_cpus) if pin else "all",
            "generator_cpus": sorted(gen_cpus) if pin else "all",
            "server_threads": threads,
            "server_thread_affinity_at_end": affinity,
        },
        "plan": plan.__dict__,
        "experiments": {
            "nice_workers": args.nice_workers,
            "switch_interval": args.switch_interval,
            "tts_cache": args.tts_cache,
            "inference_pool": (
                {"processes": args.pool, "threads": args.pool_threads, "nice": args.pool_nice}
                if args.pool else None),
            "ramp_input": args.ramp_input if args.ramp_input != "speech" else None,
            "phases": args.phases if args.phases != "latency,cpu,ramp" else None,
            "profiled": bool(args.profile),
        },
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
