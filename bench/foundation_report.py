"""Text report of a bench_foundation result (the same dict that is written as JSON)."""

from __future__ import annotations

from typing import Any

from foundation_server import LONG_REPLY


def table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [[("" if c is None else str(c)) for c in r] for r in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for j, r in enumerate(cells):
        lines.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render(res: dict[str, Any]) -> str:
    """The whole report as text: a header, then one section per phase that ran."""
    m = res["machine"]
    out = [
        f"agi-voice foundation benchmark ({res['mode']}, {res['date']}): "
        f"{m['nproc']} x {m['cpu_model']}, Python {m['python']}; server pinned to CPU "
        f"{res['pinning']['server_cpus']}, generator to {res['pinning']['generator_cpus']}"
    ]
    exp = {k: v for k, v in res.get("experiments", {}).items() if v}
    if exp:
        out.append(f"EXPERIMENT (not the product as shipped): {exp}")
    for key, fn in (("latency", _latency), ("cpu", _cpu), ("concurrency", _ramp)):
        if key in res:
            out += fn(res[key])
    return "\n".join(out)


def _latency(lat: dict[str, Any]) -> list[str]:
    out = []
    out.append(
        f"\n1. Turn latency, local assistant ({lat['turns']} turns in {lat['calls']} "
        f"sequential calls, intents right {lat['intent_correct']}), ms"
    )
    rows = []
    for key, label in (
        ("latency_ms", "end of speech -> first agent frame sent"),
        ("processing_ms", f"  minus VAD hangover ({lat['vad_end_ms']:.0f} ms)"),
        ("stt_stage_ms", "  STT (after hangover)"),
        ("tts_first_sentence_ms", "  brain + TTS of first sentence"),
        ("playout_pickup_ms", "  wait for the next 20 ms tick"),
        ("caller_perceived_ms", "caller-side: end of speech -> agent heard"),
    ):
        s = lat[key]
        rows.append([label, s.get("p50"), s.get("p95"), s.get("max")])
    out.append(table(rows, ["", "p50", "p95", "max"]))
    f1 = lat["one_call_frames"]
    out.append(
        f"   one call at a time: {f1['late_frames']} late frames, playout max lateness "
        f"{f1['max_lateness_ms']} ms; received interval deviation p50/p99/max "
        f"{f1['interval_dev_ms'].get('p50')}/{f1['interval_dev_ms'].get('p99')}/"
        f"{f1['interval_dev_ms'].get('max')} ms; full GC pauses {f1['gc_full_ms']} ms"
    )
    if f1.get("stalls"):
        out.append("   longest receive gaps: " + _stalls(f1["stalls"][:4]))
    es, et = lat["engine_stt"], lat["engine_tts"]
    out.append(
        f"   engines, one call at a time: Moonshine {es['cpu_ms_per_audio_s']} CPU-ms per "
        f"audio s (p50 {es['wall_ms'].get('p50')} ms wall for "
        f"{es['audio_s'].get('p50')} s); Piper {et['cpu_ms_per_audio_s']} CPU-ms per "
        f"audio s (p50 {et['wall_ms'].get('p50')} ms wall per sentence)"
    )
    return out


def _cpu(cpu: dict[str, Any]) -> list[str]:
    out = []
    if "error" in cpu:
        return [f"\n2. Server CPU per call: {cpu['error']}"]
    tf = cpu.get("timer_floor_late_ms", {})
    out.append(
        f"\n2. Server CPU per call ({cpu['calls']} calls at once; idle server "
        f"{cpu['idle_server_cpu_pct']}% of a core; a bare trio 20 ms timer wakes "
        f"p50/p99/max {tf.get('p50')}/{tf.get('p99')}/{tf.get('max')} ms late here)"
    )
    rows = []
    for key, label in (
        ("listening_caller_silent", "listening, caller silent"),
        ("listening_caller_talking", "listening, caller talking (VAD)"),
        ("speaking_reply_playout", "speaking (reply playout)"),
    ):
        w = cpu.get(key, {})
        rows.append(
            [
                label,
                w.get("cpu_ms_per_call_s"),
                None if "cpu_ms_per_call_s" not in w else round(w["cpu_ms_per_call_s"] / 10, 2),
                w.get("window_s"),
                w.get("error"),
            ]
        )
    wc = cpu.get("whole_call", {})
    if wc:
        rows.append(
            [
                "whole call incl. STT+TTS",
                wc["cpu_ms_per_call_s"],
                round(wc["cpu_ms_per_call_s"] / 10, 2),
                wc["call_s"],
                "",
            ]
        )
    out.append(table(rows, ["state", "CPU ms/call-s", "% core/call", "window s", ""]))
    return out


def _ramp(con: dict[str, Any]) -> list[str]:
    out = []
    out.append(
        f"\n3. Concurrency on one core (calls staggered {con['stagger_s']} s; greeting, "
        f"one question by {con.get('input', 'speech')}, {len(LONG_REPLY)} chars of reply)"
    )
    rows = []
    for st in con["steps"]:
        dev = st["interval_dev_ms"]
        rows.append(
            [
                st["k"] if st.get("waves", 1) == 1 else f"{st['k']} x{st['waves']}",
                st["failed"],
                st["late_frames"],
                st["max_lateness_ms"],
                dev.get("p50"),
                dev.get("p99"),
                dev.get("max"),
                st["generator_send_late_ms"].get("p99"),
                st["question_latency_ms"].get("p50"),
                st["question_latency_ms"].get("max"),
                st["stt_wall_ms"].get("max"),
                f"{st['gc_full_max_ms']} ({st['gc_full_collections']})"
                if st["gc_full_collections"]
                else "-",
                st["server_cpu_pct"],
                st.get("server_cpu_ms_per_call_s"),
                st["verdict"],
            ]
        )
    out.append(
        table(
            rows,
            [
                "K",
                "failed",
                "late",
                "max late ms",
                "dev p50",
                "dev p99",
                "dev max",
                "gen late p99",
                "turn p50",
                "turn max",
                "stt max",
                "gc2 max",
                "cpu %",
                "cpu ms/call-s",
                "verdict",
            ],
        )
    )
    for st in con["steps"][-2:]:
        if st.get("stalls"):
            out.append(f"   K={st['k']} longest receive gaps: " + _stalls(st["stalls"][:4]))
    for st in con["steps"]:
        if st.get("pool"):
            out.append(f"   K={st['k']} inference pool (p50/p95 ms): " + _pool(st["pool"])
                       + (f"; turn p95 {st['question_latency_ms'].get('p95')} ms, bar "
                          f"{st['turn_bar_ms']:g} ms" if st.get("turn_bar_ms") else ""))
    ks = [st["k"] for st in con["steps"]]
    sus = con["sustained_calls_per_core"]
    sus_txt = str(sus) if sus or not ks else f"fewer than {min(ks)} (the smallest K tried)"
    out.append(
        f"   sustained on one core (no late frame, p99 deviation <= {con['stop_p99_ms']} ms,"
        f" no failure): {sus_txt} (stopped: {con['stopped_because']})"
    )
    return out


def _pool(pool: dict[str, Any]) -> str:
    """Per stage: requests, queue wait, time to the first answer and inference time."""
    def pq(x: dict[str, Any]) -> str:
        return f"{x.get('p50')}/{x.get('p95')}"

    return "; ".join(
        f"{kind} x{v['requests']}: queued {pq(v['queue_ms'])}, first answer "
        f"{pq(v['first_answer_ms'])}, inference {pq(v['inference_ms'])}"
        for kind, v in pool.items())


def _stalls(stalls: list[dict[str, Any]]) -> str:
    """ "63 ms (stt)" items: a gap between received frames and the engine work during it."""
    return ", ".join(
        f"{g['gap_ms']:.0f} ms ({'+'.join(g['during']) or 'no engine'})" for g in stalls
    )
