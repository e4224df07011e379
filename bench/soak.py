"""Soak (issue 14): many calls through the whole product, watching what should stay flat.

    python bench/soak.py [--sequential 2000] [--seq-seconds 0.3] [--concurrent 200]
        [--minutes 5] [--call-seconds 20] [--out FILE] [--no-md]

The product runs as ``agi-voice serve`` runs it (:class:`relay_product.Product`: the media
worker and the FastAGI server, each its own process, pinned to the server CPU) with the fake
AMI of the emulator (in this process: FastAGI logs into it over TCP, and each emulated channel's
events go through it, as Asterisk's would). Calls are echo relay calls placed through FastAGI
by the emulator; their AudioSocket side is played by the multi-process load engine
(:class:`~fastagi_server.emulator.loadgen.LoadEngine`, pinned to the generator CPU).

Two phases, on one pair of processes:

1. **Sequential**: ``--sequential`` calls one after another, each ``--seq-seconds`` of caller
   audio then a caller hang-up; a sample every 100 calls. This is the per-call growth curve.
2. **Concurrent**: ``--concurrent`` calls kept up for ``--minutes`` (each lasts
   ``--call-seconds`` plus 0-8 s, and is replaced when it ends: churn at full load); a sample
   every 5 s.

Samples, for the FastAGI process and the media worker each: RSS (``VmRSS``), open file
descriptors, sockets in CLOSE-WAIT (the process's socket inodes looked up in
``/proc/net/tcp`` and ``tcp6``, state 08) and live tasks (asyncio tasks of FastAGI, trio tasks of
the media worker, from the product's debug counters: ``AGI_VOICE_DEBUG_COUNTERS``). Before and
after each phase (after the calls ended and 3 s passed). A call fails when the emulator saw
anything but an AudioSocket session the caller hung up, or the record does not say
``CALLER_HANGUP``.

The machine must be otherwise idle: the soak refuses to start while ``/tmp/BENCH_RUNNING``
exists, and creates it while it runs (removed at the end) so other work stays quiet.

Results: ``bench/results/<date>-soak.json`` and a "Soak" section in ``bench/BENCHMARKS.md``
(marked as not part of ``bench/run.py``, which keeps it on a re-render). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _p in (str(ROOT), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import trio  # noqa: E402
from bench_relay import voice_like  # noqa: E402
from foundation_load import Placed, pin_process  # noqa: E402
from relay_product import GENERATOR_CPU, Product, open_fds, rss_kib  # noqa: E402

from fastagi_server.emulator.ami_server import FakeAmiServer  # noqa: E402
from fastagi_server.emulator.call import run_call  # noqa: E402
from fastagi_server.emulator.channel import ChannelSpec  # noqa: E402
from fastagi_server.emulator.loadgen import LoadEngine  # noqa: E402

LOCK = Path("/tmp/BENCH_RUNNING")
AMI_USER = "soak"
AMI_SECRET_ENV = "AGI_VOICE_SOAK_AMI_SECRET"
KEPT_MARKER = "Not part of `bench/run.py`"


# -- readings from /proc ---------------------------------------------------------------------------
def socket_inodes(pid: int) -> set[str]:
    out: set[str] = set()
    with contextlib.suppress(FileNotFoundError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    out.add(link[8:-1])
    return out


def close_wait(pid: int) -> int:
    """Sockets of ``pid`` in CLOSE-WAIT (the peer closed, this side has not)."""
    mine = socket_inodes(pid)
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if len(cols) > 9 and cols[3] == "08" and cols[9] in mine:
                    n += 1
    return n


def counters_of(counters: Path, pid: int) -> dict[str, Any]:
    """The process's debug counters (tasks, Python blocks, GC, heap): see
    media_sidecar/ops/debug_counters.py."""
    try:
        data = json.loads((counters / f"{pid}.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if k not in ("pid", "kind", "at")}


def tasks(counters: Path, pid: int) -> int | None:
    return counters_of(counters, pid).get("tasks")


class Sampler:
    def __init__(self, product: Product, counters: Path) -> None:
        self.pids = {"fastagi": product.fastagi_pid, "sidecar": product.sidecar_pid}
        self.counters = counters
        self.t0 = time.monotonic()

    def sample(self, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"t": round(time.monotonic() - self.t0, 1), **extra}
        for role, pid in self.pids.items():
            out[role] = {"rss_kib": rss_kib(pid), "fds": open_fds(pid),
                         "close_wait": close_wait(pid), "tasks": None,
                         **counters_of(self.counters, pid)}
        return out


# -- calls --------------------------------------------------------------------------------------------
async def place(agi_port: int, ami: FakeAmiServer, engine: LoadEngine, name: str, pcm: bytes,
                seconds: float, out: list[Placed]) -> None:
    """One echo call through FastAGI, the AMI and the media worker (errors recorded)."""
    placed = Placed(name=name, started=time.monotonic())
    out.append(placed)
    spec = ChannelSpec(channel=f"PJSIP/{name}-00000001", uniqueid=f"{name}.1", script="agent",
                       dnid="7000", variables={"AI_ASSISTANT": "echo"})
    try:
        with trio.fail_after(seconds + 30):
            placed.result = await run_call("127.0.0.1", agi_port, spec, None, ami=ami,
                                           audio_runner=engine.runner(pcm, seconds))
    except trio.TooSlowError:
        placed.error = f"did not end within {seconds + 30:.0f} s"
    except Exception as exc:  # a generator-side fault is a failed call, not a crashed soak
        placed.error = f"{type(exc).__name__}: {exc}"
    placed.ended = time.monotonic()


def failures(placed: list[Placed], records: dict[str, dict[str, Any]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in placed:
        why = p.error
        s = p.session
        if not why and s is None:
            status = p.result.variables.get("AI_STATUS", "") if p.result else ""
            why = f"no AudioSocket session (AI_STATUS={status or 'unset'})"
        elif not why and s is not None and s.closed_by != "caller_hangup":
            why = f"AudioSocket ended by {s.closed_by}"
        elif not why:
            rec = records.get(p.name)
            if rec is None:
                why = "no call record"
            elif rec.get("status") != "CALLER_HANGUP":
                why = f"record status {rec.get('status')}: {rec.get('reason')}"
        if why:
            out[p.name] = why
    return out


def records_by_name(product: Product) -> dict[str, dict[str, Any]]:
    out = {}
    for r in product.read_records():
        name = r.get("channel", "").partition("/")[2].rpartition("-")[0]
        out[name] = r
    return out


async def settle(sampler: Sampler, seconds: float = 3.0) -> dict[str, Any]:
    await trio.sleep(seconds)
    return sampler.sample()


async def sequential(product: Product, ami: FakeAmiServer, engine: LoadEngine, sampler: Sampler,
                     n: int, seconds: float) -> dict[str, Any]:
    pcm = voice_like(seconds, 1)
    before = await settle(sampler, 1.0)
    curve = [dict(before, calls=0)]
    placed: list[Placed] = []
    t0 = time.monotonic()
    for i in range(n):
        await place(product.agi_port, ami, engine, f"seq{i}", pcm, seconds, placed)
        if (i + 1) % 100 == 0:
            curve.append(sampler.sample(calls=i + 1))
            print(f"  sequential: {i + 1}/{n} calls, FastAGI RSS "
                  f"{curve[-1]['fastagi']['rss_kib'] / 1024:.1f} MiB, media worker "
                  f"{curve[-1]['sidecar']['rss_kib'] / 1024:.1f} MiB", flush=True)
    took = time.monotonic() - t0
    after = await settle(sampler)
    failed = failures(placed, records_by_name(product))
    return {"calls": n, "seconds_per_call": seconds, "took_s": round(took, 1),
            "failed_calls": len(failed), "failures": dict(list(failed.items())[:10]),
            "before": before, "after": after, "curve": curve}


async def concurrent(product: Product, ami: FakeAmiServer, engine: LoadEngine,
                     sampler: Sampler, n: int, minutes: float, call_seconds: float
                     ) -> dict[str, Any]:
    signals = [voice_like(call_seconds + 8.5, k) for k in range(8)]
    before = await settle(sampler, 1.0)
    curve: list[dict[str, Any]] = []
    placed: list[Placed] = []
    live = 0
    end = trio.current_time() + minutes * 60

    async def sample_loop() -> None:
        while True:
            curve.append(sampler.sample(live=live, placed=len(placed)))
            s = curve[-1]
            if len(curve) % 6 == 1:
                print(f"  concurrent: t={s['t']:.0f} s, {live} live, {len(placed)} placed, "
                      f"FastAGI RSS {s['fastagi']['rss_kib'] / 1024:.1f} MiB, media worker "
                      f"{s['sidecar']['rss_kib'] / 1024:.1f} MiB (Python blocks "
                      f"{s['sidecar'].get('blocks')}, heap used "
                      f"{(s['sidecar'].get('heap_used_kib') or 0) / 1024:.1f} MiB, full GCs "
                      f"{s['sidecar'].get('gc2_collections')}), CLOSE-WAIT "
                      f"{s['fastagi']['close_wait']}/{s['sidecar']['close_wait']}", flush=True)
            await trio.sleep(5.0)

    async def caller(slot: int) -> None:
        nonlocal live
        k = 0
        while trio.current_time() < end:
            seconds = call_seconds + (slot * 7 + k * 3) % 9
            live += 1
            try:
                await place(product.agi_port, ami, engine, f"c{slot}x{k}",
                            signals[(slot + k) % len(signals)], seconds, placed)
            finally:
                live -= 1
            k += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample_loop)
        async with trio.open_nursery() as callers:
            for slot in range(n):  # ramp up over ~4 s
                callers.start_soon(caller, slot)
                await trio.sleep(4.0 / n)
        nursery.cancel_scope.cancel()
    after = await settle(sampler)
    failed = failures(placed, records_by_name(product))
    return {"concurrency": n, "minutes": minutes, "call_seconds": f"{call_seconds}-"
            f"{call_seconds + 8}", "calls": len(placed), "failed_calls": len(failed),
            "failures": dict(list(failed.items())[:10]), "before": before, "after": after,
            "curve": curve}


# -- the run ------------------------------------------------------------------------------------------
AMI_BLOCK = """
ami:
  host: 127.0.0.1
  port: {port}
  username: {user}
  secret: "${{{env}}}"
"""


async def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    counters = workdir / "counters"
    counters.mkdir()
    secret = os.urandom(12).hex()
    os.environ[AMI_SECRET_ENV] = secret
    os.environ["AGI_VOICE_DEBUG_COUNTERS"] = str(counters)
    pin_process(os.getpid(), GENERATOR_CPU)
    fake = FakeAmiServer(username=AMI_USER, secret=secret)
    out: dict[str, Any] = {"started_at": dt.datetime.now().isoformat(timespec="seconds"),
                           "command": "python " + " ".join(sys.argv)}
    async with trio.open_nursery() as nursery:
        ami_port = await nursery.start(fake.serve)
        product = Product(workdir)
        product.config.write_text(product.config.read_text() + AMI_BLOCK.format(
            port=ami_port, user=AMI_USER, env=AMI_SECRET_ENV))
        with product, LoadEngine(procs=1, cpus=sorted(GENERATOR_CPU)) as engine:
            sampler = Sampler(product, counters)
            await trio.sleep(2.0)  # the AMI login and the first counters
            out["start"] = sampler.sample()
            if args.sequential:
                print(f"sequential: {args.sequential} calls ...", flush=True)
                out["sequential"] = await sequential(product, fake, engine, sampler,
                                                     args.sequential, args.seq_seconds)
            if args.concurrent:
                print(f"concurrent: {args.concurrent} calls for {args.minutes} min ...",
                      flush=True)
                out["concurrent"] = await concurrent(product, fake, engine, sampler,
                                                     args.concurrent, args.minutes,
                                                     args.call_seconds)
            out["ami_logins"] = fake.logins
        nursery.cancel_scope.cancel()
    return out


# -- the report ------------------------------------------------------------------------------------
def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def per_call_growth(curve: list[dict[str, Any]], role: str, start_calls: int
                    ) -> float | None:
    """Least-squares RSS slope (bytes per call) over the samples at or after ``start_calls``."""
    pts = [(s["calls"], s[role]["rss_kib"] * 1024) for s in curve if s["calls"] >= start_calls]
    if len(pts) < 3:
        return None
    n = len(pts)
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    den = sum((x - mx) ** 2 for x, _ in pts)
    return round(sum((x - mx) * (y - my) for x, y in pts) / den, 1) if den else None


def render(res: dict[str, Any], json_path: Path) -> str:
    lines = ["## Soak", "",
             f"{KEPT_MARKER}: `{res['command']}` on its own ({res['started_at']}; JSON "
             f"`{os.path.relpath(json_path, ROOT)}`). Echo relay calls through FastAGI, the "
             "media worker and the fake AMI (`bench/soak.py` says how); the product's two "
             "processes on one CPU, the generator on the other.", ""]
    rows = ["| phase | calls | failed | FastAGI RSS MiB before -> after | worker RSS MiB "
            "before -> after | fds FastAGI / worker before -> after | CLOSE-WAIT after | "
            "tasks FastAGI / worker before -> after |",
            "|---|---|---|---|---|---|---|---|"]
    for key in ("sequential", "concurrent"):
        ph = res.get(key)
        if not ph:
            continue
        b, a = ph["before"], ph["after"]
        label = (f"sequential ({ph['seconds_per_call']} s each)" if key == "sequential" else
                 f"{ph['concurrency']} concurrent for {ph['minutes']} min "
                 f"({ph['call_seconds']} s each)")
        rows.append(
            f"| {label} | {ph['calls']} | {ph['failed_calls']} | "
            f"{_mib(b['fastagi']['rss_kib'])} -> {_mib(a['fastagi']['rss_kib'])} | "
            f"{_mib(b['sidecar']['rss_kib'])} -> {_mib(a['sidecar']['rss_kib'])} | "
            f"{b['fastagi']['fds']} / {b['sidecar']['fds']} -> "
            f"{a['fastagi']['fds']} / {a['sidecar']['fds']} | "
            f"{a['fastagi']['close_wait']} / {a['sidecar']['close_wait']} | "
            f"{b['fastagi']['tasks']} / {b['sidecar']['tasks']} -> "
            f"{a['fastagi']['tasks']} / {a['sidecar']['tasks']} |")
    lines += rows + [""]
    seq = res.get("sequential")
    if seq:
        f0 = per_call_growth(seq["curve"], "fastagi", 300)
        s_all = per_call_growth(seq["curve"], "sidecar", 0)
        s700 = per_call_growth(seq["curve"], "sidecar", 700)
        lines += [f"- Sequential RSS slope after 300 calls: FastAGI {f0} B/call; media worker "
                  f"{s_all} B/call over all calls, {s700} B/call after 700.", ""]
        lines += ["- Curve (calls: FastAGI / worker RSS MiB): " + ", ".join(
            f"{s['calls']}: {_mib(s['fastagi']['rss_kib'])} / {_mib(s['sidecar']['rss_kib'])}"
            for s in seq["curve"][:: max(1, len(seq["curve"]) // 10)]), ""]
    con = res.get("concurrent")
    if con and con["curve"]:
        peak = max(con["curve"], key=lambda s: s["sidecar"]["rss_kib"])
        cw = max(max(s["fastagi"]["close_wait"], s["sidecar"]["close_wait"])
                 for s in con["curve"])
        lines += [f"- Concurrent: peak worker RSS {_mib(peak['sidecar']['rss_kib'])} MiB at "
                  f"{peak.get('live')} live calls; most CLOSE-WAIT sockets seen in any sample: "
                  f"{cw}.", ""]
    for note in res.get("notes", []):
        lines += [f"- {note}"]
    if res.get("notes"):
        lines.append("")
    return "\n".join(lines)


def write_section(md: Path, section: str) -> None:
    """Replace the "## Soak" section of ``md`` (or add it before "## Plots", else at the end)."""
    text = md.read_text() if md.exists() else "# agi-voice benchmarks\n"
    parts = re.split(r"(?m)^(?=## )", text)
    parts = [p for p in parts if not p.startswith("## Soak")]
    at = next((i for i, p in enumerate(parts) if p.startswith("## Plots")), len(parts))
    parts.insert(at, section.rstrip("\n") + "\n\n")
    if at > 0 and not parts[at - 1].endswith("\n\n"):
        parts[at - 1] = parts[at - 1].rstrip("\n") + "\n\n"
    md.write_text("".join(parts).rstrip("\n") + "\n")


@contextlib.contextmanager
def machine_alone() -> Iterator[None]:
    """Refuse while another benchmark runs; hold /tmp/BENCH_RUNNING while this one does."""
    try:
        fd = os.open(LOCK, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        sys.exit(f"{LOCK} exists: another benchmark is running; try again when it is gone")
    os.write(fd, f"soak.py pid {os.getpid()}\n".encode())
    os.close(fd)
    try:
        yield
    finally:
        LOCK.unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sequential", type=int, default=2000)
    ap.add_argument("--seq-seconds", type=float, default=0.3)
    ap.add_argument("--concurrent", type=int, default=200)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--call-seconds", type=float, default=20.0)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--no-md", action="store_true", help="do not touch BENCHMARKS.md")
    ap.add_argument("--note", action="append", default=[],
                    help="a line for the BENCHMARKS.md section (what the figures mean)")
    ap.add_argument("--shared", action="store_true",
                    help="run beside other work (no /tmp/BENCH_RUNNING): memory, fds, sockets "
                         "and failed calls stay meaningful; the frame clock's timing does not")
    args = ap.parse_args()
    if args.shared:
        args.note.append("run with --shared: the machine's 2 cores were shared with test runs "
                         "(memory, fds, sockets and failures are this run's; timing is not)")
    out = args.out or BENCH / "results" / f"{dt.date.today().isoformat()}-soak.json"
    alone = contextlib.nullcontext() if args.shared else machine_alone()
    with alone, tempfile.TemporaryDirectory(prefix="agi-voice-soak-") as tmp:
        res = trio.run(soak, args, Path(tmp))
    res["notes"] = args.note
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    section = render(res, out)
    print(section)
    if not args.no_md:
        write_section(BENCH / "BENCHMARKS.md", section)


if __name__ == "__main__":
    main()
