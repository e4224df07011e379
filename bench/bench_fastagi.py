"""FastAGI call setup benchmark: setups per second and setup latency, excluding Asterisk.

    python bench/bench_fastagi.py [--quick] [--out FILE.json] [--profile DIR]

Setup latency is measured by the Asterisk side, from the start of its TCP connect to the
FastAGI port to the moment it reads ``EXEC AudioSocket ...`` from the server: the env block,
the three channel-variable reads (``GET FULL VARIABLE`` through ``BASE64_ENCODE``), routing,
the offer to the media sidecar, ``CHANNEL STATUS`` and ``ANSWER``. Two variants:

* ``control``: the product as shipped, two processes like ``agi-voice serve``: the asyncio
  FastAGI server (``FastAgiServer``) and the trio media sidecar (``run_sidecar`` with the fake
  engines of the end-to-end tests; the offer only needs the assistant to exist), joined by the
  websocket control link. Every setup includes the offer/accept round trip.
* ``direct``: the FastAGI server alone; ``ControlClient.offer`` answers ``Accept`` at once in
  the FastAGI process and the link keeper never connects. This isolates FastAGI parsing,
  variable reads and routing.

The server processes are pinned to CPU 0; this process (the load generator: the product's
emulator AGI side, ``fastagi_server.emulator.agi_side.AgiSession``, speaking Asterisk 22's env
block and replies) to CPU 1. The emulated channel answers ``EXEC AudioSocket`` at once with
``200 result=-1`` (AudioSocket could not connect), so no media session starts. The FastAGI
handler then waits up to 0.3 s for a verdict the sidecar never sends, sets ``AI_STATUS`` and
closes; that tail runs on in the background while the next setup starts, so C is the number of
setups in flight, not of open AGI sessions.

Figures are printed as markdown and written as JSON; nothing is asserted (benchmarks are not
tests, ../shared/STYLE.md). ``--serve`` is the server-process mode this script starts itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _p in (str(ROOT), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import trio  # noqa: E402
from foundation_load import process_cpu_seconds, summary, thread_affinity  # noqa: E402

from fastagi_server.emulator.agi_side import AgiSession  # noqa: E402
from fastagi_server.emulator.channel import ChannelSpec, EmulatedChannel  # noqa: E402

VARIANTS = ("control", "direct")
CONCURRENCY = (1, 16)
SERVER_CPU = 0
GENERATOR_CPU = 1
WARMUP = 60
OFFER_TTL = 1.0
"""Bench setting of ``sidecar.offer_ttl`` (product default 30 s): the emulator never connects
AudioSocket, so every accepted offer stays pending until it expires."""
MAX_CALLS = 1_000_000
"""Bench setting of ``sidecar.max_calls`` (product default 100), for the same reason: pending
offers count against the limit."""
SESSION_LIMIT = 10.0


# -- server processes (``--serve``) -------------------------------------------------------------------
def _write_ready(path: str, info: dict[str, Any]) -> None:
    Path(path + ".tmp").write_text(json.dumps(info))
    os.replace(path + ".tmp", path)


def _base_config() -> Any:
    from media_sidecar.config.loader import load_config
    from media_sidecar.config.schema import AmiConfig, Listen

    base = load_config(env={})
    sidecar = dataclasses.replace(
        base.sidecar,
        audiosocket=Listen("127.0.0.1", 0),
        control=Listen("127.0.0.1", 0),
        records_path="",
        offer_ttl=OFFER_TTL,
        max_calls=MAX_CALLS,
    )
    return dataclasses.replace(base, sidecar=sidecar, ami=AmiConfig())


def _serve_sidecar(ready: str) -> None:
    """The media sidecar with the end-to-end tests' fake engines until stdin closes."""
    from media_sidecar.app import run_sidecar
    from tests.e2e.stack import fake_services

    cfg = _base_config()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(run_sidecar, cfg, fake_services(), {})
            _write_ready(
                ready,
                {"control": ports.control, "audiosocket": ports.audiosocket, "pid": os.getpid()},
            )
            await trio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)
            nursery.cancel_scope.cancel()

    trio.run(main)


def _direct_control() -> Any:
    """A ControlClient whose offers are accepted at once, in process (variant ``direct``)."""
    from fastagi_server.control_client import ControlClient
    from media_sidecar.protocol import control as c

    class DirectControl(ControlClient):
        async def run(self) -> None:
            await asyncio.Event().wait()  # no link: nothing to keep up

        async def offer(self, offer: c.Offer, time_limit: float) -> c.Accept | c.Refuse:
            self._verdict(offer.uuid)  # as the real offer does: wait_ended looks it up
            return c.Accept(uuid=offer.uuid)

    return DirectControl


def _serve_fastagi(args: argparse.Namespace) -> None:
    """The FastAGI server (as ``agi-voice fastagi`` runs it) until stdin closes."""
    from media_sidecar.config.schema import Listen

    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    base = _base_config()
    cfg = dataclasses.replace(
        base,
        fastagi=dataclasses.replace(
            base.fastagi,
            listen=Listen("127.0.0.1", 0),
            audiosocket_address=args.audiosocket_address,
            control_url=args.control_url,
        ),
    )
    import fastagi_server.server as server_mod

    if args.variant == "direct":
        server_mod.ControlClient = _direct_control()  # type: ignore[misc]

    async def main() -> None:
        server = server_mod.FastAgiServer(cfg)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(server.run())
            await asyncio.wait_for(server.ready.wait(), 10)
            if args.variant == "control" and not await server.control.wait_connected(10):
                raise SystemExit("control link did not come up")
            _write_ready(args.ready, {"agi_port": server.port, "pid": os.getpid()})
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)
            task.cancel()

    if not args.profile:
        asyncio.run(main())
        return
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0002, async_mode="disabled")
    profiler.start()
    try:
        asyncio.run(main())
    finally:
        profiler.stop()
        opts = {"filter_threshold": 0.0005}
        flat = profiler.output_text(flat=True, processor_options=opts)
        tree = profiler.output_text(processor_options=opts)
        Path(args.profile).write_text(f"{flat}\n\n{tree}")


class ServerProc:
    """A ``--serve`` child pinned to ``cpu`` from its first instruction; stopped by closing its
    stdin (killed, by its own handle, if it hangs)."""

    def __init__(
        self, workdir: Path, role: str, name: str, extra: list[str], cpu: int | None
    ) -> None:
        self.ready = workdir / f"{name}.ready.json"
        self.log = workdir / f"{name}.log"
        self._log_f = open(self.log, "wb")  # noqa: SIM115
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        pin = None if cpu is None else (lambda: os.sched_setaffinity(0, {cpu}))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--serve",
                role,
                "--ready",
                str(self.ready),
                *extra,
            ],
            stdin=subprocess.PIPE,
            stdout=self._log_f,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(ROOT),
            preexec_fn=pin,  # affinity before exec: every thread the child makes inherits it
        )
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
                raise RuntimeError(f"{self.log.name}: server did not start:\n{tail}")
            time.sleep(0.02)
        info: dict[str, Any] = json.loads(self.ready.read_text())
        return info

    def cpu_s(self) -> float:
        return process_cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log_f.close()


@contextlib.contextmanager
def pinned(cpus: set[int] | None) -> Iterator[None]:
    """Pin every thread of this process to ``cpus`` for the block, then restore (``run`` is
    imported by bench/run.py, whose later benchmarks must not inherit the pinning)."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    tids = [int(t) for t in os.listdir("/proc/self/task")]
    for tid in tids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cpus)
    try:
        yield
    finally:
        for tid in [int(t) for t in os.listdir("/proc/self/task")]:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, before)


def cpu_jiffies() -> dict[str, tuple[int, int]]:
    """Per CPU (busy, total) jiffies from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *vals = line.split()
        if name.startswith("cpu") and name != "cpu":
            v = [int(x) for x in vals[:8]]
            out[name] = (sum(v) - v[3] - v[4], sum(v))
    return out


def busy_pct(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
) -> dict[str, float]:
    """% busy of each CPU between two :func:`cpu_jiffies` readings (anyone's work, ours too)."""
    out = {}
    for cpu, (b1, t1) in after.items():
        b0, t0 = before.get(cpu, (b1, t1))
        out[cpu] = round(100 * (b1 - b0) / max(1, t1 - t0), 1)
    return out


# -- the load generator -----------------------------------------------------------------------------
@dataclasses.dataclass
class Setup:
    """One emulated call; times are this process's trio clock."""

    i: int
    t_connect: float = 0.0
    t_exec: float | None = None
    t_end: float | None = None
    status: str = ""
    error: str = ""
    commands_before_exec: int = 0


async def _one_call(port: int, i: int, out: list[Setup], released: trio.Event) -> None:
    """Place call ``i``; ``released`` is set when the server sends EXEC AudioSocket (or the
    call ends without it). Errors are recorded, never raised."""
    s = Setup(i)
    out.append(s)
    spec = ChannelSpec(
        channel=f"PJSIP/bench-{i:08x}",
        uniqueid=f"1795267856.{i}",
        script="agent",
        dnid="7000",
        args=(),
    )

    async def could_not_connect(host: str, port_: int) -> trio.abc.Stream:
        released.set()
        raise ConnectionRefusedError(111, "Connection refused (bench: AudioSocket not reached)")

    s.t_connect = trio.current_time()
    try:
        with trio.fail_after(SESSION_LIMIT):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            session = AgiSession(
                stream,
                EmulatedChannel(spec),
                request=f"agi://127.0.0.1:{port}/agent",
                connect=could_not_connect,
            )
            res = await session.run()
    except (OSError, trio.TooSlowError) as exc:
        s.error = f"{type(exc).__name__}: {exc}"
        return
    finally:
        released.set()
    s.t_end = res.ended_at
    s.status = res.variables.get("AI_STATUS", "")
    cmds = 0
    for line in res.transcript:
        if line.direction != ">>":
            continue
        if line.text.upper().startswith("EXEC AUDIOSOCKET"):
            s.t_exec = line.t
            break
        cmds += 1
    s.commands_before_exec = cmds
    if s.t_exec is None:
        s.error = f"no EXEC AudioSocket (AI_STATUS={s.status} {res.variables.get('AI_REASON')!r})"


async def drive(
    port: int, n: int, concurrency: int, first: int, alone: bool = False
) -> tuple[list[Setup], float]:
    """``n`` setups with ``concurrency`` in flight; returns them and the seconds until the last
    one reached EXEC. The sessions' tails are awaited too, but not timed. ``alone``: each
    worker waits for the whole AGI session before the next call (no tail overlaps a setup)."""
    out: list[Setup] = []
    ids = iter(range(first, first + n))
    async with trio.open_nursery() as calls:
        t0 = trio.current_time()

        async def worker() -> None:
            for i in ids:  # shared: each worker takes the next id
                released = trio.Event()
                if alone:
                    await _one_call(port, i, out, released)
                else:
                    calls.start_soon(_one_call, port, i, out, released)
                    await released.wait()

        async with trio.open_nursery() as workers:
            for _ in range(concurrency):
                workers.start_soon(worker)
        elapsed = trio.current_time() - t0
    return out, elapsed


def _measure(
    port: int, n: int, c: int, first: int, servers: list[ServerProc], alone: bool = False
) -> dict[str, Any]:
    cpu0 = [s.cpu_s() for s in servers]
    gen0, w0, j0 = time.process_time(), time.monotonic(), cpu_jiffies()
    setups, elapsed = trio.run(drive, port, n, c, first, alone)
    gen_cpu, wall = time.process_time() - gen0, time.monotonic() - w0
    machine_busy = busy_pct(j0, cpu_jiffies())
    cpu = [s.cpu_s() - c0 for s, c0 in zip(servers, cpu0, strict=True)]
    ok = [s for s in setups if s.t_exec is not None]
    lat = [(s.t_exec - s.t_connect) * 1000 for s in ok if s.t_exec is not None]
    dur = [(s.t_end - s.t_connect) * 1000 for s in ok if s.t_end is not None]
    errors = Counter(s.error for s in setups if s.error)
    per_call = 1000 * sum(cpu) / max(1, len(ok))
    return {
        "concurrency": c,
        "alone": alone,
        "setups": n,
        "reached_exec": len(ok),
        "failed": n - len(ok),
        "errors": dict(errors.most_common(5)),
        "ai_status": dict(Counter(s.status for s in setups)),
        "agi_commands_before_exec": sorted({s.commands_before_exec for s in ok}),
        "seconds_to_last_exec": round(elapsed, 3),
        "seconds_with_tails": round(wall, 3),
        "setups_per_s": round(len(ok) / elapsed, 1) if elapsed > 0 and not alone else None,
        "setup_latency_ms": summary(lat, 3),
        "agi_session_ms": summary(dur, 1),
        "server_cpu_ms_per_call": round(per_call, 3),
        "server_cpu_ms_per_call_by_process": [round(1000 * x / max(1, len(ok)), 3) for x in cpu],
        "server_cpu_pct_of_core": round(100 * sum(cpu) / wall, 1),
        "server_capacity_per_core_est": round(1000 / per_call) if per_call > 0 else None,
        "generator_cpu_ms_per_call": round(1000 * gen_cpu / max(1, len(setups)), 3),
        "generator_cpu_pct_of_core": round(100 * gen_cpu / wall, 1),
        "machine_cpu_busy_pct": machine_busy,
        "latencies_ms": [round(x, 3) for x in lat],
    }


def _start_variant(
    variant: str, workdir: Path, cpu: int | None, profile: Path | None
) -> tuple[list[ServerProc], int]:
    servers: list[ServerProc] = []
    try:
        if variant == "control":
            side = ServerProc(workdir, "sidecar", "sidecar", [], cpu)
            servers.append(side)
            ports = side.wait_ready()
            control_url = f"ws://127.0.0.1:{ports['control']}/control"
            as_addr = f"127.0.0.1:{ports['audiosocket']}"
        else:
            control_url, as_addr = "ws://127.0.0.1:9/control", "127.0.0.1:9"
        extra = [
            "--variant",
            variant,
            "--control-url",
            control_url,
            "--audiosocket-address",
            as_addr,
        ]
        if profile is not None:
            extra += ["--profile", str(profile / f"fastagi-{variant}.txt")]
        agi = ServerProc(workdir, "fastagi", f"fastagi-{variant}", extra, cpu)
        servers.insert(0, agi)
        info = agi.wait_ready()
    except BaseException:
        for s in servers:
            s.stop()
        raise
    return servers, int(info["agi_port"])


def run(
    quick: bool = False,
    *,
    pin: bool = True,
    concurrency: tuple[int, ...] = CONCURRENCY,
    profile_dir: str | None = None,
) -> dict[str, Any]:
    """Run both variants at each concurrency; returns JSON-serialisable results."""
    n = 300 if quick else 2000
    n_alone = 20 if quick else 60
    pin = pin and (os.cpu_count() or 1) > 1
    server_cpu = SERVER_CPU if pin else None
    profile = Path(profile_dir).resolve() if profile_dir else None
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="agi-voice-bench-fastagi-"))
    t_start = time.monotonic()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    results: list[dict[str, Any]] = []
    affinity: dict[str, Any] = {}
    with pinned({GENERATOR_CPU} if pin else None):
        for variant in VARIANTS:
            servers, port = _start_variant(variant, workdir, server_cpu, profile)
            try:
                trio.run(drive, port, WARMUP, 4, 0)
                first = WARMUP
                row = _measure(port, n_alone, 1, first, servers, alone=True)
                first += n_alone
                results.append({"variant": variant, **row})
                for c in concurrency:
                    row = _measure(port, n, c, first, servers)
                    first += n
                    results.append({"variant": variant, **row})
                affinity[variant] = {
                    ("fastagi" if i == 0 else "sidecar"): thread_affinity(s.pid)
                    for i, s in enumerate(servers)
                }
            finally:
                for s in servers:
                    s.stop()
    return {
        "benchmark": "fastagi_setup",
        "mode": "quick" if quick else "full",
        "date": dt.date.today().isoformat(),
        "setups_per_step": n,
        "warmup_setups": WARMUP,
        "pinning": {
            "enabled": pin,
            "server_cpu": server_cpu,
            "generator_cpu": GENERATOR_CPU if pin else None,
            "server_thread_affinity": affinity,
        },
        "bench_config": {
            "sidecar.offer_ttl": OFFER_TTL,
            "sidecar.max_calls": MAX_CALLS,
            "fastagi.answer": True,
            "ami": "off (degraded mode)",
            "fastagi log level": "INFO",
        },
        "results": results,
        "loadavg_before": load_before,
        "duration_s": round(time.monotonic() - t_start, 1),
        "workdir": str(workdir),
    }


def _f(x: Any, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def _busy(b: dict[str, float]) -> str:
    return " / ".join(_f(b.get(k), "{:.0f}") for k in ("cpu0", "cpu1"))


def render_md(result: dict[str, Any]) -> str:
    """A markdown section: what it measures and one row per variant and concurrency."""
    lines = [
        "### FastAGI call setup (excluding Asterisk)",
        "",
        "What it measures: emulated Asterisk 22 channels (the product's emulator AGI side, on "
        "CPU 1) call the FastAGI server (pinned to CPU 0); setup latency runs from the start of "
        "the AGI TCP connect to the moment the channel reads `EXEC AudioSocket ...` (env block, "
        "3 variable reads, routing, the offer, CHANNEL STATUS, ANSWER). The channel answers the "
        "EXEC at once with `result=-1` (AudioSocket could not connect), so no media starts. "
        "**control**: the shipped two processes (FastAGI + media sidecar, fake engines), each "
        "setup includes the offer/accept round trip on the websocket control link. **direct**: "
        "the offer is accepted at once inside the FastAGI process: this isolates FastAGI "
        "parsing, variable reads and routing. C = setups in flight.",
        "",
        "| variant | C | setups | setups/s | latency p50 / p99 / max ms | AGI session p50 / p99 ms"
        " | server CPU ms/call | server CPU % | est. setups/s per server core"
        " | generator CPU ms/call (%) | CPU0 / CPU1 busy % | failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["results"]:
        lat, ses = r["setup_latency_ms"], r["agi_session_ms"]
        by = r["server_cpu_ms_per_call_by_process"]
        cpu = _f(r["server_cpu_ms_per_call"])
        if len(by) > 1:
            cpu += f" ({by[0]:.2f} + {by[1]:.2f})"
        c = "1 (alone)" if r.get("alone") else str(r["concurrency"])
        lines.append(
            f"| {r['variant']} | {c} | {r['setups']} | {_f(r['setups_per_s'], '{:.0f}')}"
            f" | {_f(lat.get('p50'))} / {_f(lat.get('p99'))} / {_f(lat.get('max'))}"
            f" | {_f(ses.get('p50'), '{:.0f}')} / {_f(ses.get('p99'), '{:.0f}')}"
            f" | {cpu} | {_f(r['server_cpu_pct_of_core'], '{:.0f}')}"
            f" | {_f(r['server_capacity_per_core_est'], '{:.0f}')}"
            f" | {_f(r['generator_cpu_ms_per_call'])} ({_f(r['generator_cpu_pct_of_core'], '{:.0f}')})"
            f" | {_busy(r.get('machine_cpu_busy_pct', {}))} | {r['failed']} |"
        )
    cfg = result.get("bench_config", {})
    lines += [
        "",
        f"{result['setups_per_step']} setups per row after {result['warmup_setups']} warm-up "
        f"setups ({result['mode']} run). Server CPU is utime+stime from /proc over the whole "
        "run including the session tails (control: FastAGI + sidecar); "
        "est. setups/s per server core = 1000 / server CPU ms per call. The AGI session lasts "
        "~300 ms because after `result=-1` the handler waits 0.3 s for a sidecar verdict; that "
        'tail runs in the background while further setups start ("1 (alone)": one whole '
        "session at a time, nothing overlaps). Bench config: "
        f"sidecar.offer_ttl={cfg.get('sidecar.offer_ttl')} s and "
        f"sidecar.max_calls={cfg.get('sidecar.max_calls')} (offers are never claimed here), "
        "AMI off, INFO logging to a file. A generator CPU near 100 % means the emulator, not "
        "the server, set the pace (and its queueing is in the latency); every round trip's "
        "latency also holds the emulator's own processing of that command. CPU0 / CPU1 busy: "
        "the whole machine's load on each core during the row (server + generator + anything "
        "else: a busy core well above server or generator % means other work interfered).",
    ]
    return "\n".join(lines)


def _main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="300 setups per step instead of 2000")
    ap.add_argument("--out", help="write the JSON here")
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    ap.add_argument("--profile", metavar="DIR", help="pyinstrument profile of each FastAGI process")
    # server-process mode (started by run(), not by hand)
    ap.add_argument("--serve", choices=("sidecar", "fastagi"), help=argparse.SUPPRESS)
    ap.add_argument("--ready", help=argparse.SUPPRESS)
    ap.add_argument("--variant", choices=VARIANTS, default="control", help=argparse.SUPPRESS)
    ap.add_argument("--control-url", default="", help=argparse.SUPPRESS)
    ap.add_argument("--audiosocket-address", default="", help=argparse.SUPPRESS)
    ap.add_argument("--log-level", default="INFO", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve == "sidecar":
        _serve_sidecar(args.ready)
        return
    if args.serve == "fastagi":
        _serve_fastagi(args)
        return
    res = run(
        args.quick,
        pin=not args.no_pin,
        concurrency=tuple(int(x) for x in args.concurrency.split(",")),
        profile_dir=args.profile,
    )
    print(render_md(res))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    _main()
