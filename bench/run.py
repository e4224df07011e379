"""Every benchmark in one command: JSON results, BENCHMARKS.md and plots.

    python bench/run.py            # about 18 minutes on 2 cores (pipeline: 3.5)
    python bench/run.py --quick    # about 6 minutes, fewer and shorter steps
    python bench/run.py --only relay,dsp

Writes ``bench/results/<date>.json`` (``<date>-quick.json`` with --quick), the plots
``bench/results/<date>-*.svg`` and ``bench/BENCHMARKS.md`` (machine, versions, the command,
a table per scenario; with --quick ``bench/results/<date>-quick.md`` instead, so the committed
summary is always a full run's). ``--out``/``--md`` put them elsewhere (plots go next to the
JSON). Each scenario starts its own server processes pinned to CPU 0 and
generates load from this process (or a child) pinned to CPU 1; see each module's docstring.
Nothing is asserted: figures are reported.

Scenarios: ``relay`` (bench_relay: capacity with the echo assistant and the speech-to-speech
ones against the OpenAI Realtime and Deepgram Voice Agent mocks, mu-law 8 kHz and PCM16 24 kHz;
relay overhead, barge-in and turn latency per provider; memory after many calls), ``fastagi`` (bench_fastagi:
call setups), ``dsp`` (bench_dsp: resampler and G.711), ``local`` (bench_foundation's turn
latency phase with the real local models), ``pipeline`` (bench_pipeline: the pipeline mode's
turn latency by stage against the mocks, overlapped vs sequential stages, the all-local
pipeline with the real models), ``scale`` (bench_scale, issue 13: the curve of concurrent echo
and mu-law speech-to-speech calls up to where they break, from several pinned generator
processes, and the same load against a minimal asyncio echo and the asterisk-ai-voice-agent
package's AudioSocket server, as ratios; ``--ns``, ``--gen-procs``, ``--workers``,
``--profile-n`` ... as in bench_relay.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _p in (str(ROOT), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import bench_dsp  # noqa: E402
import bench_fastagi  # noqa: E402
import bench_pipeline  # noqa: E402
import bench_relay  # noqa: E402
import bench_scale  # noqa: E402
import svg  # noqa: E402
from bench_foundation import busy_and_steal, cpu_times, machine  # noqa: E402

SCENARIOS = ("relay", "fastagi", "dsp", "local", "pipeline", "scale")


def run_local(quick: bool) -> dict[str, Any]:
    """The local assistant as shipped (STT and TTS in an inference pool, fixed sentences from
    the sentence cache): turn latency by stage, then the concurrency ramp (bench_foundation)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "local.json"
        cmd = [sys.executable, str(BENCH / "bench_foundation.py"), "--phases", "latency,ramp",
               "--pool", "1", "--out", str(out)] + (["--quick"] if quick else [])
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        res = json.loads(out.read_text())
    lat = res.get("latency", {})
    keep = ("calls", "turns", "intent_correct", "vad_end_ms", "latency_ms", "processing_ms",
            "stt_stage_ms", "tts_first_sentence_ms", "playout_pickup_ms", "caller_perceived_ms")
    got: dict[str, Any] = {k: lat[k] for k in keep if k in lat}
    con = res.get("concurrency")
    if con:
        got["concurrency"] = {k: con.get(k) for k in ("stagger_s", "steps",
                                                       "sustained_calls_per_core",
                                                       "stopped_because")}
    got["pool"] = res.get("experiments", {}).get("inference_pool")
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", help=f"comma list of scenarios ({', '.join(SCENARIOS)})")
    ap.add_argument("--out", type=Path, help="JSON path (default bench/results/<date>.json)")
    ap.add_argument("--md", type=Path, help="summary path (default bench/BENCHMARKS.md; with"
                    " --quick bench/results/<date>-quick.md: BENCHMARKS.md is a full run's)")
    ap.add_argument("--render", type=Path, metavar="JSON",
                    help="only re-render BENCHMARKS.md (and the plots) from an earlier run's JSON")
    bench_relay.add_scale_args(ap)
    args = ap.parse_args()
    if args.render:
        res = json.loads(args.render.read_text())
        stem = args.render.stem
        args.md = args.md or BENCH / "BENCHMARKS.md"
        args.md.write_text(render(res, args.render.resolve(),
                                  write_plots(res, args.render.parent, stem), args.md))
        print(f"summary: {args.md}")
        return
    only = args.only.split(",") if args.only else list(SCENARIOS)
    date = dt.date.today().isoformat()
    stem = f"{date}{'-quick' if args.quick else ''}"
    out = args.out or BENCH / "results" / f"{stem}.json"
    args.md = args.md or (BENCH / "results" / f"{stem}.md" if args.quick else BENCH / "BENCHMARKS.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    cpu_before = cpu_times()
    affinity = os.sched_getaffinity(0)
    res: dict[str, Any] = {"date": date, "quick": args.quick,
                           "command": "python bench/run.py" + (" --quick" if args.quick else ""),
                           "machine": machine(),
                           "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    for name in only:
        print(f"== {name}", flush=True)
        t = time.monotonic()
        if name == "relay":
            res["relay"] = bench_relay.run(args.quick)
        elif name == "fastagi":
            res["fastagi"] = bench_fastagi.run(args.quick)
        elif name == "dsp":
            res["dsp"] = bench_dsp.run(args.quick)
        elif name == "local":
            res["local"] = run_local(args.quick)
        elif name == "pipeline":
            res["pipeline"] = bench_pipeline.run(args.quick)
        elif name == "scale":
            fa = res.get("fastagi")  # its one-at-a-time rows, when it ran in this run
            res["scale"] = bench_scale.run(args.quick, **bench_relay.scale_kwargs(args),
                                           fastagi=(lambda fa=fa: fa) if fa else None)
        os.sched_setaffinity(0, affinity)  # a scenario may pin this process
        res.setdefault("durations_s", {})[name] = round(time.monotonic() - t, 1)
    res["cpu_during_run"] = busy_and_steal(cpu_before, cpu_times())
    res["duration_s"] = round(time.monotonic() - t0, 1)
    plots = write_plots(res, out.parent, stem)
    out.write_text(json.dumps(res, indent=1) + "\n")
    args.md.write_text(render(res, out, plots, args.md))
    print(f"\nJSON: {out}\nsummary: {args.md}\ntotal {res['duration_s']} s")


# -- plots -----------------------------------------------------------------------------------------
def write_plots(res: dict[str, Any], folder: Path, stem: str) -> list[Path]:
    paths: list[Path] = []
    cap = res.get("relay", {}).get("capacity", {})
    if not cap:
        return paths
    cpu_series = {}
    p99_series = {}
    for assistant, c in cap.items():
        steps = c["steps"]
        cpu_series[assistant] = [(s["calls"], s["sidecar_cpu_pct"] or 0.0) for s in steps]
        p99_series[assistant] = [(s["calls"], s["pacing_dev_ms"].get("p99", 0.0)) for s in steps]
    paths.append(svg.write(folder / f"{stem}-cpu.svg", svg.line_chart(
        cpu_series, title="Sidecar CPU versus concurrent calls (one core = 100 %)",
        x_label="concurrent calls", y_label="sidecar CPU %", hlines={"one core": 100.0})))
    paths.append(svg.write(folder / f"{stem}-pacing-p99.svg", svg.line_chart(
        p99_series, title="Outbound pacing: p99 deviation from the 20 ms grid",
        x_label="concurrent calls", y_label="p99 |interval - 20 ms| (ms)",
        hlines={"target 5 ms": 5.0})))
    hist = {}
    for assistant, c in cap.items():
        for s in c["steps"]:
            if s["calls"] in (10, 100, 200) and s.get("dev_samples_ms"):
                hist[f"{assistant} N={s['calls']}"] = [min(x, 60.0) for x in s["dev_samples_ms"]]
    if hist:
        paths.append(svg.write(folder / f"{stem}-jitter.svg", svg.histogram(
            hist, bins=[0, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 40, 60.01],
            title="Frame interval deviation as the emulator received it",
            x_label="|interval - 20 ms| (ms, capped at 60)", y_label="frames", log_y=True)))
    mem = res.get("relay", {}).get("memory")
    if mem:
        paths.append(svg.write(folder / f"{stem}-memory.svg", svg.line_chart(
            {"sidecar RSS (MiB)": [(c["calls"], c["rss_mib"]) for c in mem["curve"]]},
            title="Sidecar RSS over sequential calls", x_label="calls completed",
            y_label="RSS (MiB)")))
    return paths


# -- the summary -------------------------------------------------------------------------------------
def _g(d: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return "–"
        d = d[k]
    return d


def _shown(path: Path, base: Path = ROOT) -> str:
    """``path`` relative to ``base`` when under it, else absolute."""
    path = path.resolve()
    try:
        return str(path.relative_to(base.resolve()))
    except ValueError:
        return str(path)


def render(res: dict[str, Any], out: Path, plots: list[Path],
           md: Path = BENCH / "BENCHMARKS.md") -> str:
    m = res["machine"]
    lines = [
        "# agi-voice benchmarks",
        "",
        "Generated by `bench/run.py`; do not edit by hand (re-run it). Figures are measured, never",
        "asserted in CI. Methods: each module's docstring and `bench/README.md`.",
        "",
        f"- **Reproduce**: `{res['command']}` (after the README's set-up, from the repo root;"
        " the `local` scenario needs the `local` extra)",
        f"- **Run**: {res['started_at']}, {res['duration_s']} s; JSON: `{_shown(out)}`",
        f"- **Machine**: {json.dumps(m)}",
        f"- **CPU during the run** (busy/steal per CPU): {json.dumps(res.get('cpu_during_run'))}",
        "",
    ]
    relay = res.get("relay")
    if relay:
        lines += render_headline(relay)
        lines += render_relay(relay)
    if "fastagi" in res:
        lines += [bench_fastagi.render_md(res["fastagi"]), ""]
    if "dsp" in res:
        lines += [bench_dsp.render_md(res["dsp"]), ""]
    if "local" in res:
        lines += render_local(res["local"])
    if "pipeline" in res:
        lines += [bench_pipeline.render_md(res["pipeline"]), ""]
    if "scale" in res:
        lines += render_scale(res["scale"], relay)
    lines += kept_sections(md)
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{p.stem}]({os.path.relpath(p.resolve(), md.resolve().parent)})"
                  for p in plots]
        lines.append("")
    return "\n".join(lines)


KEPT_MARKER = "Not part of `bench/run.py`"
"""A BENCHMARKS.md section whose text has this was written by a benchmark run on its own
(``bench_intent.py``, ``soak.py``): a re-render keeps it as it is."""


def kept_sections(md: Path) -> list[str]:
    """The sections of the current ``md`` that other benchmarks keep by hand, in order."""
    if not md.exists():
        return []
    kept: list[str] = []
    for part in re.split(r"(?m)^(?=## )", md.read_text()):
        if part.startswith("## ") and KEPT_MARKER in part and not part.startswith("## Plots"):
            kept += [part.rstrip("\n"), ""]
    return kept


def _latencies(relay: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The latency scenario per assistant (runs before issue 4 had one, for OpenAI: ``sts``)."""
    lat = relay.get("latency") or {}
    return {"sts": lat} if "calls" in lat else lat


def _num(x: Any) -> bool:
    return isinstance(x, (int, float))


def render_headline(relay: dict[str, Any]) -> list[str]:
    cap = relay.get("capacity", {})
    lats = _latencies(relay)
    mem = relay.get("memory", {})
    echo = cap.get("echo", {})
    out = ["## Headline and what limits it", "",
           "| target | measured | verdict |", "|---|---|---|"]
    ok_echo = echo.get("max_calls_ok", 0)
    sts_ok = ", ".join(f"{a} {c.get('max_calls_ok', 0)}" for a, c in cap.items() if a != "echo")
    out.append(f"| >= 200 relay calls per core, p99 pacing <= 5 ms (issue 3) | echo {ok_echo},"
               f" speech-to-speech: {sts_ok or '–'} | {'met' if ok_echo >= 200 else 'missed'} |")
    for name, mulaw, pcm in bench_relay.PROVIDERS.values():
        parts = [f"{fmt} **{cap[a].get('max_calls_ok', 0)}** (without a late frame:"
                 f" {cap[a].get('max_calls_no_late', '–')})"
                 for fmt, a in (("mu-law 8 kHz", mulaw), ("PCM16 24 kHz", pcm)) if a in cap]
        if parts:
            best = max(cap[a].get("max_calls_ok", 0) for a in (mulaw, pcm) if a in cap)
            out.append(f"| STS calls/core, {name} (mock; p99 pacing <= 5 ms) | {'; '.join(parts)}"
                       f" | {'met' if best >= 200 else 'below the 200 relay target'} |")
    q = {a: _g(lat, "relay_queue_ms", "p99_max") for a, lat in lats.items()}
    ff = {a: _g(lat, "relay_first_frame_ms", "p50_median") for a, lat in lats.items()}
    if lats:
        qs = "; ".join(f"{_short(a)} p99 {q[a]} ms" for a in lats)
        ffs = ", ".join(f"{_short(a)} {ff[a]} ms" for a in lats)
        met = all(_num(v) and v <= 2 for v in q.values())
        out.append(f"| relay overhead p99 <= 2 ms | provider message in -> audio queued: {qs}"
                   f" (the first frame then waits for the next 20 ms tick: p50 {ffs}) |"
                   f" {'met' if met else 'see table'} |")
        b = {a: _g(lat, "barge_in_decision_to_last_frame_ms", "max") for a, lat in lats.items()}
        met = all(_num(v) and v <= 20 for v in b.values())
        out.append("| barge-in flush within one frame of the decision | last agent frame at most "
                   + "; ".join(f"{_short(a)} {b[a]} ms" for a in lats)
                   + f" after the decision | {'met' if met else 'missed'} |")
    if mem:
        curve = mem["curve"]
        fa = [c.get("fastagi_rss_mib") for c in curve if c.get("fastagi_rss_mib")]
        out.append(f"| no growth after {mem['calls']:,} calls | sidecar RSS {curve[0]['rss_mib']} ->"
                   f" {curve[-1]['rss_mib']} MiB; open fds {curve[0]['fds']} -> {curve[-1]['fds']};"
                   f" FastAGI RSS {fa[0] if fa else '–'} -> {fa[-1] if fa else '–'} MiB"
                   " | see below |")
    out += ["",
            "**What limits relay capacity** (since issue 13's frame clock; py-spy of the sidecar"
            " at 300 echo calls, `bench_scale.py --profile-n`): one task per process writes every"
            " call's frame and reads every call's bytes each 20 ms, so the per-frame cost is the"
            " two system calls per call (`os.write`, `os.read`: about a quarter of the sidecar's"
            " CPU), the AudioSocket decoder and the relay's own work; no task wakes per call per"
            " frame. Echo calls cost about 1.3-1.5 CPU-ms per call-second (before: 7-9), so a core"
            " carries 400 with p99 pacing under 2 ms. What still breaks a step is a stall, not the"
            " core: one held event loop is a late frame for every call at once (the frame clock"
            " re-clamps its grid). Found so far: full garbage collections (50-65 ms every ~1.4 s"
            " at 100 speech-to-speech calls, before the media process froze its start-up heap and"
            " raised the collector's thresholds) and bursts of call set-ups during a ramp;"
            " `AGI_VOICE_SLOW_STEP_MS` names what held the loop. Speech-to-speech calls cost 4-6"
            " CPU-ms per call-second: the provider's WebSocket (JSON, base64, one message per 20 ms"
            " each way), which is the limit at about 100-150 per core.", ""]
    return out


def _short(assistant: str) -> str:
    """OpenAI / Deepgram for a speech-to-speech bench assistant."""
    return "Deepgram" if assistant.startswith("dg") else "OpenAI" if assistant != "echo" else "echo"


def _pair(d: Any, a: str, b: str) -> str:
    return f"{_g(d, a)} / {_g(d, b)}" if isinstance(d, dict) else "–"


def render_relay(relay: dict[str, Any]) -> list[str]:
    cap = relay.get("capacity", {})
    out = ["## Capacity: concurrent relay calls on one core", "",
           "Sidecar and FastAGI server pinned to CPU 0; the emulator's load engine (one thread,"
           " epoll; FastAGI per call, then AudioSocket frames every 20 ms) and the provider's"
           " mock on CPU 1. Pacing is the interval between consecutive frames as the emulator"
           " received them, over the window where every call was up. A step passes with p99"
           " deviation <= 5 ms and no failed call; *without a late frame* also needs no interval"
           " over 30 ms as received and no frame skipped by the sidecar's playout (late frames,"
           " whole calls). Speech-to-speech calls: a 2 s greeting, then a 1.5 s question every"
           " 5 s, each answered with 2 s of audio (sent 4x faster than real time). Relay queue:"
           " provider message in -> audio queued for playout; first frame: -> first frame sent"
           " when the playout was idle (includes the wait for the 20 ms tick); both from the call"
           " records, median of the per-call p50s / largest per-call p99.", ""]
    for assistant, c in cap.items():
        label = c.get("label", bench_relay.LABELS.get(assistant, assistant))
        no_late = c.get("max_calls_no_late")
        out += [f"### {label} (`{assistant}`; largest passing N: **{c['max_calls_ok']}**"
                + (f"; without a late frame: **{no_late}**" if no_late is not None else "") + ")",
                "",
                "| N | sidecar CPU % | CPU ms per call-s | RSS MiB | RSS KiB/call | pacing p50 / p99 / max ms"
                " | intervals > 30 ms | late frames (server) | dropped caller frames | failed calls"
                " | generator p99 late ms | relay queue p50 / p99 ms | first frame p50 / p99 ms |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in c["steps"]:
            d = s["pacing_dev_ms"]
            out.append(
                f"| {s['calls']} | {s['sidecar_cpu_pct']} | {s['cpu_ms_per_call_s']} | {s['rss_mib']}"
                f" | {s['rss_kib_per_call']} | {d.get('p50')} / {d.get('p99')} / {d.get('max')}"
                f" | {s['intervals_over_30ms']} | {s['late_frames']} | {s['caller_frames_dropped']}"
                f" | {s['failed_calls']} | {_g(s, 'generator_late_ms', 'p99')}"
                f" | {_pair(s.get('relay_queue_ms'), 'p50_median', 'p99_max')}"
                f" | {_pair(s.get('relay_first_frame_ms'), 'p50_median', 'p99_max')} |")
        out.append("")
    out += render_format_cpu(cap)
    out += render_latency(_latencies(relay))
    mem = relay.get("memory")
    if mem:
        first, last = mem["curve"][0], mem["curve"][-1]
        marks = [c for c in mem["curve"][1:-1]
                 if c["calls"] in {round(mem["calls"] * f) for f in (0.1, 0.3, 0.5, 0.7, 0.9)}]
        out += ["## Memory after many calls", "",
                f"{mem['calls']} echo calls of {mem['seconds_per_call']} s, {mem['concurrency']} at a"
                f" time, through one sidecar process. Failed calls: {mem['failed_calls']}.", "",
                "| | sidecar RSS MiB | sidecar open fds | FastAGI RSS MiB |", "|---|---|---|---|",
                f"| before | {first['rss_mib']} | {first['fds']} | – |",
                *[f"| after {c['calls']} calls | {c['rss_mib']} | {c['fds']} |"
                  f" {c.get('fastagi_rss_mib', '–')} |" for c in marks],
                f"| after {last['calls']} calls | {last['rss_mib']} | {last['fds']} |"
                f" {last.get('fastagi_rss_mib', '–')} |",
                "", f"RSS growth after the first 10 % of calls: "
                f"{mem['rss_growth_mib_after_first_10pct']} MiB; descriptor growth: {mem['fd_growth']}.",
                ""]
    return out


def render_format_cpu(cap: dict[str, Any]) -> list[str]:
    """mu-law passthrough versus PCM16 24 kHz (resampled both ways): CPU per call-second at the
    N both ladders ran."""
    rows = []
    echo = {s["calls"]: s for s in cap.get("echo", {}).get("steps", [])}
    for name, mulaw, pcm in bench_relay.PROVIDERS.values():
        if mulaw not in cap or pcm not in cap:
            continue
        m = {s["calls"]: s for s in cap[mulaw]["steps"]}
        p = {s["calls"]: s for s in cap[pcm]["steps"]}
        for n in sorted(set(m) & set(p)):
            a, b = m[n]["cpu_ms_per_call_s"], p[n]["cpu_ms_per_call_s"]
            extra = f"{100 * (b - a) / a:+.0f} %" if _num(a) and _num(b) and a else "–"
            rows.append(f"| {name} | {n} | {a} | {b} | {extra}"
                        f" | {m[n]['sidecar_cpu_pct']} / {p[n]['sidecar_cpu_pct']}"
                        f" | {_g(echo.get(n, {}), 'cpu_ms_per_call_s')} |")
    if not rows:
        return []
    return ["### mu-law vs PCM24 CPU per call-second", "",
            "Sidecar CPU milliseconds per second of call at the same N: mu-law 8 kHz both ways"
            " (G.711 against the AudioSocket's slin, no resampling) versus PCM16 24 kHz (one"
            " stateful 8 <-> 24 kHz resampler per direction per call, and three times the bytes"
            " on the provider's WebSocket). The echo assistant (the relay with no provider) at"
            " the same N, for scale.", "",
            "| provider | N | mu-law CPU ms per call-s | PCM24 CPU ms per call-s | PCM24 extra"
            " | sidecar CPU % mu-law / PCM24 | echo CPU ms per call-s |",
            "|---|---|---|---|---|---|---|", *rows, ""]


def render_latency(lats: dict[str, dict[str, Any]]) -> list[str]:
    if not lats:
        return []
    rows = [("relay: provider message in -> audio queued for playout (ms)",
             "relay_queue_ms", "p50_median", "p99_max"),
            ("relay: provider message in -> first frame sent, playout idle (ms; includes the"
             " wait for the 20 ms tick)", "relay_first_frame_ms", "p50_median", "p99_max"),
            ("barge-in: caller speech onset -> last agent frame (ms; includes the mock's VAD)",
             "barge_in_onset_to_last_frame_ms", "p50", "max"),
            ("barge-in: flush decision -> last agent frame (ms)",
             "barge_in_decision_to_last_frame_ms", "p50", "max"),
            ("turn: caller end of speech -> first agent frame (ms; the mock answers at once"
             " after its end-of-speech silence)", "turn_latency_ms", "p50", "max")]
    names = [lat.get("label", bench_relay.LABELS.get(a, a)) for a, lat in lats.items()]
    calls = " / ".join(str(lat["calls"]) for lat in lats.values())
    out = ["## Latency: relay overhead, barge-in, provider turns", "",
           f"{calls} calls to the mock {' / '.join(_short(a) for a in lats)} speech-to-speech"
           " provider, started 0.3 s apart, each with a question and a"
           " barge-in one second into the answer, nothing else running. End of the caller's"
           " speech: OpenAI's server VAD, 400 ms of silence; Deepgram's mock, 500 ms.", "",
           "| figure | " + " | ".join(f"{n}: p50 | p99 / max" for n in names) + " |",
           "|---|" + "---|---|" * len(names)]
    for label, key, lo, hi in rows:
        out.append(f"| {label} | " + " | ".join(f"{_g(lat, key, lo)} | {_g(lat, key, hi)}"
                                                 for lat in lats.values()) + " |")
    out += ["", "Failed calls: " + ", ".join(f"{lat['failed_calls']} ({_short(a)})"
                                             for a, lat in lats.items()) + ".", ""]
    return out


def render_local(loc: dict[str, Any]) -> list[str]:
    rows = [("end of speech -> first agent frame", "latency_ms"),
            ("our processing (minus the VAD hangover)", "processing_ms"),
            ("STT (Moonshine)", "stt_stage_ms"), ("brain + TTS first sentence (Piper)",
                                                   "tts_first_sentence_ms"),
            ("wait for the 20 ms tick", "playout_pickup_ms"),
            ("caller-perceived (until audible)", "caller_perceived_ms")]
    out = ["## Local assistant: turn latency by stage (real models)", "",
           f"{loc.get('calls')} calls, {loc.get('turns')} turns; VAD end-of-speech hangover "
           f"{loc.get('vad_end_ms')} ms; intents right {loc.get('intent_correct')}.", "",
           "| stage | p50 ms | p95 ms | max ms |", "|---|---|---|---|"]
    for label, key in rows:
        d = loc.get(key, {})
        out.append(f"| {label} | {d.get('p50')} | {d.get('p95')} | {d.get('max')} |")
    out.append("")
    con = loc.get("concurrency")
    if con:
        bar = (loc.get("vad_end_ms") or 700) + 400
        out += [f"Concurrency on one core (the inference pool: {loc.get('pool')}; calls started "
                f"{con.get('stagger_s')} s apart, a greeting then one question each). Issue 13's "
                f"bar: p95 turn latency <= VAD hang-over + 400 ms ({bar:.0f} ms) and no late "
                f"frame. Sustained: **{con.get('sustained_calls_per_core')}** "
                f"({con.get('stopped_because')}).", "",
                "| K | failed | late frames | p99 dev ms | turn p50 / max ms | STT wall max ms | "
                "TTS wall max ms | pool queue wait | CPU % | verdict |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for st in con.get("steps") or []:
            q, stt, tts = (st.get("question_latency_ms") or {}, st.get("stt_wall_ms") or {},
                           st.get("tts_wall_ms") or {})
            pool = st.get("pool") or {}
            out.append(f"| {st.get('k')} | {st.get('failed')} | {st.get('late_frames')} | "
                       f"{(st.get('interval_dev_ms') or {}).get('p99')} | {q.get('p50')} / "
                       f"{q.get('max')} | {stt.get('max')} | {tts.get('max')} | "
                       f"{json.dumps(pool.get('queue_wait_ms', pool)) if pool else '-'} | "
                       f"{st.get('server_cpu_pct')} | {st.get('verdict')} |")
        out.append("")
    return out


def render_scale(sc: dict[str, Any], relay: dict[str, Any] | None = None) -> list[str]:
    """Issue 13: one line per target (met or missed and by how much), the curve per target,
    the comparison as ratios, the generator's own lateness, the profile's top functions."""
    t = sc.get("targets", {})
    bar = sc.get("bar_p99_ms", 2.0)
    out = ["## Scale (issue 13): targets", "",
           f"Bar for a step: p99 deviation from the 20 ms grid <= {bar} ms, no late frame (no"
           " received interval over 30 ms, none skipped by the sidecar's playout), no failed"
           " call. Calls per core: the sidecar runs on one core (`--workers`"
           f" {_g(t, 'echo', 'workers')}).", "",
           "| target | measured | verdict |", "|---|---|---|"]

    def calls_line(name: str, goal: int, what: str) -> None:
        r = t.get(name)
        if not r:
            out.append(f"| {what} | not run | – |")
            return
        workers = r.get("workers") or 1
        got = r["max_calls_at_bar"] / workers
        broke = r.get("broke_at")
        last = r["steps"][-1] if r["steps"] else {}
        limit = "" if broke is None else (
            f"; broke at {broke} (p99 {_g(last, 'pacing_dev_ms', 'p99')} ms, >30 ms"
            f" {last.get('intervals_over_30ms')}, late {last.get('late_frames')}, failed"
            f" {last.get('failed_calls')}"
            + (f"; generator behind: {'; '.join(last['generator_behind'])}"
               if last.get("generator_behind") else "") + ")")
        verdict = "met" if got >= goal else f"missed by {goal - got:.0f} calls per core"
        if broke is None and got < goal:
            verdict += " (ladder ended before it broke)"
        out.append(f"| {what} | {got:.0f} calls per core at the bar{limit} | {verdict} |")

    calls_line("echo", 400, "echo relay >= 400 calls per core")
    calls_line("sts", 200, "speech-to-speech, mock provider, mu-law passthrough >= 200 per core")
    fa = sc.get("fastagi_setup", {}).get("control", {})
    p99 = _g(fa, "setup_latency_ms", "p99")
    out.append(f"| FastAGI setup p99 <= 5 ms one at a time | p99 {p99} ms over"
               f" {fa.get('setups', '–')} setups (with the control-link offer) | "
               + (("met" if p99 <= 5 else f"missed by {p99 - 5:.2f} ms") if _num(p99) else "–")
               + " |")
    idle = [s["rss_kib_per_call"] for s in t.get("echo", {}).get("steps", [])
            if _num(s.get("rss_kib_per_call")) and s["calls"] >= 50]
    if idle:
        kib = min(idle)
        out.append(f"| RSS per relay call <= 0.5 MiB | {kib / 1024:.2f} MiB per echo call (least"
                   " over the echo steps with >= 50 calls; calls are talking, not idle) | "
                   + ("met" if kib <= 512 else f"missed by {(kib - 512) / 1024:.2f} MiB") + " |")
    comp = sc.get("comparison", {})
    for name in ("floor", "aava"):
        c = comp.get(name)
        if c is None:
            continue
        if c.get("error"):
            out.append(f"| same load against {LABEL_ALT[name]} | {c['error']} | not measured |")
            continue
        out.append(f"| same load against {LABEL_ALT[name]} | calls at the bar"
                   f" {c['calls_at_bar']} vs ours {c['ours_calls_at_bar']} (ratio"
                   f" {c.get('calls_ratio')}); CPU per call-second at N={c.get('cpu_at_n')}:"
                   f" {c.get('cpu_ms_per_call_s')} vs ours {c.get('ours_cpu_ms_per_call_s')} ms"
                   f" (ratio {c.get('cpu_ratio')}) | reported |")
    out.append("")
    g = sc.get("generator", {})
    out += [f"Load: {g.get('procs')} generator processes pinned to CPUs {g.get('cpus')} (one epoll"
            " loop each, grids offset by a fraction of a frame), calls placed at"
            f" {_g(sc, 'options', 'ramp')} per second; arrival times are the kernel's receive"
            " stamps. agi-voice calls are placed through FastAGI; the floor and"
            " asterisk-ai-voice-agent have no FastAGI (connect, UUID, frames).", ""]
    for name, r in t.items():
        head = f"### {r.get('label', name)}"
        if r.get("version"):
            head += f" {r['version']}"
        out += [head + f" (at the bar: **{r.get('max_calls_at_bar')}**)", ""]
        if r.get("error"):
            out += [r["error"], ""]
            continue
        out += ["| N | p50 / p99 / max dev ms | > 30 ms | late (server) | failed | server CPU %"
                " | CPU ms per call-s | RSS KiB/call | placed/s | setup p99 ms under load"
                " | generator CPU % | generator tick late p99 ms | generator behind |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in r["steps"]:
            d = s["pacing_dev_ms"]
            gen = s["generator"]
            out.append(
                f"| {s['calls']} | {d.get('p50')} / {d.get('p99')} / {d.get('max')}"
                f" | {s['intervals_over_30ms']} | {s['late_frames'] if s['late_frames'] is not None else '–'}"
                f" | {s['failed_calls']} | {s['server_cpu_pct']} | {s['cpu_ms_per_call_s']}"
                f" | {s['rss_kib_per_call']} | {s['placed_calls_per_s']}"
                f" | {_g(s, 'setup_under_load_ms', 'p99')}"
                f" | {' / '.join(str(x['cpu_pct']) for x in gen)}"
                f" | {' / '.join(str(x['tick_late_ms'].get('p99')) for x in gen)}"
                f" | {'; '.join(s['generator_behind']) or 'no'} |")
        out.append("")
        for s in r["steps"]:
            prof = s.get("profile")
            if prof and prof.get("top_own"):
                out += [f"Profile of the sidecar at N={s['calls']} (py-spy, {prof['samples']}"
                        f" busy samples, {prof.get('idle_samples', '–')} waiting in epoll left"
                        " out; % of busy samples with the function on top / anywhere on the"
                        " stack):", "", "| function | own % | | function | total % |",
                        "|---|---|---|---|---|"]
                for (f1, p1), (f2, p2) in zip(prof["top_own"][:15], prof["top_total"][:15],
                                              strict=False):
                    out.append(f"| `{f1}` | {p1} | | `{f2}` | {p2} |")
                out.append("")
            elif prof:
                out += [f"Profile at N={s['calls']}: {prof.get('error') or prof.get('errors')}",
                        ""]
    return out


LABEL_ALT = {"floor": "the floor (minimal asyncio echo)",
             "aava": "asterisk-ai-voice-agent (its AudioSocket transport as an echo)"}


if __name__ == "__main__":
    main()
