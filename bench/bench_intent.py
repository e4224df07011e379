"""Intent accuracy of the embedded default assistant on synthetic phone callers.

Every intent of the default config (and its spoken menu keys and extensions, and requests it
must *not* understand) in many phrasings: short ("sales please", "billing", "operator"), long,
with hesitations ("um", "uh, I'd like..."). Each is spoken by several synthetic voices: the
bundled Piper voice at three speeds and, when the ``espeak-ng`` program is installed, espeak-ng
voices (``apt-get install espeak-ng``: GPL-3, used by this benchmark only, never by the
product; without it those voices are skipped and the report says so). The audio goes through a
phone line: 8 kHz, G.711 mu-law both ways (the product's own codec), line noise at a fixed SNR.
Then the product's real path: Moonshine STT, the vocabulary re-scoring, the rule brain.

Reported: intent accuracy (and the same STT text through the exact-only matcher of before, as
the baseline), word error rate of the STT (on match tokens: lowercase, numbers as digits), the
confusion table, accuracy per voice, and STT time per utterance. Nothing is asserted.

    .venv/bin/python bench/bench_intent.py            # full set (about 4 minutes on 2 cores)
    .venv/bin/python bench/bench_intent.py --quick    # a few phrasings, Piper only
    .venv/bin/python bench/bench_intent.py --stt pocketsphinx   # the other registry model

``--stt pocketsphinx``: the only other offline English recogniser found whose model ships
inside its registry package (``pip install pocketsphinx``: CMU's en-us acoustic model and a
general language model in the wheel; whisper, sherpa-onnx, vosk and Moonshine's larger models
download their weights at run time). Its model is for 16 kHz, so the line audio is upsampled.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from rapidfuzz.distance import Levenshtein

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from media_sidecar.brain.rules import RulesBrain  # noqa: E402
from media_sidecar.brain.text import words  # noqa: E402
from media_sidecar.brain.vocabulary import AcousticRescorer, Rescorer  # noqa: E402
from media_sidecar.config.loader import load_config  # noqa: E402
from media_sidecar.dsp.g711 import ulaw_decode, ulaw_encode  # noqa: E402
from media_sidecar.dsp.resample import Resampler  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SNR_DB = 35.0
"""Line noise: white noise this far below the speech's RMS (a fair line; G.711's own
quantisation noise is about 38 dB below speech). ``--snr 20`` is a poor line."""
SEED = 16

# (phrase, expected intent). "dtmf" is a menu key said aloud, "extension" a destination's
# extension, "fallback" a request the default assistant cannot serve (must not be matched).
PHRASES: list[tuple[str, str]] = [
    ("Sales, please.", "sales"),
    ("Sales.", "sales"),
    ("I'd like to buy something.", "sales"),
    ("Um, I want to talk to someone about pricing.", "sales"),
    ("Uh, I'd like, um, sales please.", "sales"),
    ("Could you put me through to your sales team, please?", "sales"),
    ("How much does it cost? I need a price.", "sales"),
    ("I want to make a purchase.", "sales"),
    ("Billing.", "billing"),
    ("Billing, please.", "billing"),
    ("Please transfer me to the billing department.", "billing"),
    ("I have a question about my invoice.", "billing"),
    ("Uh, it's about a payment I made last week.", "billing"),
    ("Um, I think my bill is wrong.", "billing"),
    ("Support.", "support"),
    ("Technical support, please.", "support"),
    ("My internet is broken and I need help.", "support"),
    ("Can I get the help desk?", "support"),
    ("Er, I have a technical problem with my router.", "support"),
    ("Operator.", "operator"),
    ("Can I speak to a human?", "operator"),
    ("I'd like to talk to a real person, please.", "operator"),
    ("Uh, get me an agent.", "operator"),
    ("Representative.", "operator"),
    ("Goodbye.", "goodbye"),
    ("Thanks, that's all. Bye.", "goodbye"),
    ("No, nothing else, thank you. Goodbye.", "goodbye"),
    ("What are your opening hours?", "hours"),
    ("When are you open?", "hours"),
    ("Um, what time do you close today?", "hours"),
    ("One.", "dtmf"),
    ("Option two, please.", "dtmf"),
    ("Extension two oh oh three, please.", "extension"),
    ("I'd like to order a pizza.", "fallback"),
    ("What's the weather like tomorrow?", "fallback"),
    ("My name is Ada Lovelace.", "fallback"),
    ("Can you tell me a joke?", "fallback"),
]
QUICK = [0, 4, 8, 10, 19, 25, 30, 32, 33]


@dataclasses.dataclass(frozen=True)
class Voice:
    name: str
    engine: str
    """``piper`` or ``espeak``."""
    param: str
    """Piper: speed; espeak-ng: voice name."""


PIPER_VOICES = [Voice("piper joe-us x0.8", "piper", "0.8"),
                Voice("piper joe-us x1.0", "piper", "1.0"),
                Voice("piper joe-us x1.25", "piper", "1.25")]
ESPEAK_VOICES = [Voice("espeak-ng en-us", "espeak", "en-us"),
                 Voice("espeak-ng en-gb", "espeak", "en-gb"),
                 Voice("espeak-ng en-us+f3", "espeak", "en-us+f3")]


def to_8k(pcm: np.ndarray, rate: int) -> np.ndarray:
    if rate == 8000:
        return pcm.astype(np.int16)
    r = Resampler(rate, 8000)
    return np.concatenate([r.process(pcm.astype(np.int16)), r.flush()]).astype(np.int16)


def speak_piper(text: str, speed: float) -> np.ndarray:
    from media_sidecar.speech.piper_tts import PiperTts

    tts = PiperTts("joe-us", speed=speed)
    audio = np.concatenate([np.asarray(c, dtype=np.int16) for c in tts.synthesize(text)])
    return to_8k(audio, tts.rate)


def speak_espeak(text: str, voice: str, exe: str) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run([exe, "-v", voice, "-s", "165", "-w", f.name, text], check=True,
                       capture_output=True, timeout=30)
        with wave.open(f.name, "rb") as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return to_8k(pcm, rate)


def phone_line(pcm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A caller on a phone line: 0.2 s of line noise either side (the VAD keeps that much),
    white noise at SNR_DB below the speech, then G.711 mu-law encoded and decoded (as
    Asterisk passes it on)."""
    x = pcm.astype(np.float32)
    voiced = x[np.abs(x) > 0.02 * (np.abs(x).max() or 1)]
    rms = float(np.sqrt(np.mean(voiced ** 2))) if voiced.size else 1000.0
    pad = np.zeros(1600, dtype=np.float32)
    x = np.concatenate([pad, x, pad])
    x += rng.normal(0.0, rms / 10 ** (SNR_DB / 20), x.size).astype(np.float32)
    line = np.clip(x, -32768, 32767).astype("<i2")
    return ulaw_decode(ulaw_encode(line)).astype(np.int16)


def decide(brain: RulesBrain, text: str) -> tuple[str, float]:
    """The intent the rule brain gives ``text`` as a session would, and the match score."""
    for find in (brain.spoken_key, brain.match, brain.extension):
        m = find(text)
        if m is not None:
            name = m.intent.name if m.intent is not None else (
                "dtmf" if m.how == "spoken_key" else m.how)
            return name, m.score
    return "fallback", 0.0


def wer(ref: str, hyp: str) -> tuple[int, int]:
    r, h = words(ref), words(hyp)
    return Levenshtein.distance(r, h), len(r)


class PocketSphinx:
    """pocketsphinx 5 with its bundled en-us model and general language model."""

    def __init__(self) -> None:
        from pocketsphinx import Decoder

        self.decoder = Decoder(samprate=16000, loglevel="FATAL")

    def transcribe(self, pcm: np.ndarray, rate: int) -> str:
        r = Resampler(rate, 16000)
        audio = np.concatenate([r.process(pcm), r.flush()]).astype("<i2")
        self.decoder.start_utt()
        self.decoder.process_raw(audio.tobytes(), full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


def acoustic_row(acoustic: AcousticRescorer, stt: object, line: np.ndarray, heard: str,
                 rescored: str) -> dict:
    """The acoustic re-scoring of one utterance as the session runs it (when the text is not
    understood, or only fuzzily, or was changed by the text re-scoring): the best candidate
    the brain understands, its score and the free transcript's, whatever the margin (so a
    run can be re-rendered at another margin), and the time it took."""
    if not acoustic.needed(heard, rescored):
        return {"acoustic_ms": 0.0}
    candidates = acoustic.candidates(heard)
    t0 = time.perf_counter()
    scores = stt.score(line, 8000, [heard, *(c.text for c in candidates)])  # type: ignore[attr-defined]
    ms = (time.perf_counter() - t0) * 1000
    best = acoustic.best(candidates, scores)
    return {"acoustic_ms": round(ms, 1), "candidates": len(candidates),
            "free_score": round(max(scores[0], scores[-1]), 4),
            "heard_score": round(scores[0], 4), "own_score": round(scores[-1], 4),
            "best": best.text if best else "", "best_score": round(best.score, 4) if best else None}


def decide_acoustic(brain: RulesBrain, row: dict, margin: float | None) -> tuple[str, float]:
    """The decision with the acoustic re-scoring at ``margin`` (None: without it)."""
    text = row["rescored"] or row["heard"]
    best = row.get("best_score")
    if margin is not None and best is not None and best >= row["free_score"] - margin:
        text = row["best"]
    return decide(brain, text)


def run(voices: list[Voice], phrases: list[tuple[str, str]], espeak: str | None,
        engine: str = "moonshine", margin: float | None = None) -> dict:
    from media_sidecar.speech.moonshine_stt import MoonshineStt

    a = load_config().assistants[0]
    brain = RulesBrain(a.brain, a.destinations)
    exact = RulesBrain(dataclasses.replace(a.brain, min_confidence=1.0), a.destinations)
    rescorer = Rescorer.for_assistant(a)
    acoustic = AcousticRescorer.for_assistant(a) if engine == "moonshine" else None
    stt: MoonshineStt | PocketSphinx
    if engine == "pocketsphinx":
        stt = PocketSphinx()
    else:
        stt = MoonshineStt(a.stt.model or "tiny-en")
        stt.load()
    rng = np.random.default_rng(SEED)
    rows = []
    for voice in voices:
        for text, expected in phrases:
            if voice.engine == "piper":
                clean = speak_piper(text, float(voice.param))
            else:
                assert espeak is not None
                clean = speak_espeak(text, voice.param, espeak)
            line = phone_line(clean, rng)
            t0 = time.perf_counter()
            heard = stt.transcribe(line, 8000)
            stt_ms = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            rescored = rescorer.rescore(heard).text
            got, score = decide(brain, rescored)
            match_ms = (time.perf_counter() - t0) * 1000
            base, _ = decide(exact, heard)
            errors, n = wer(text, heard)
            row = {"voice": voice.name, "text": text, "expected": expected,
                   "heard": heard, "rescored": rescored if rescored != heard else "",
                   "got": got, "score": round(score, 3), "baseline": base, "text_only": got,
                   "errors": errors, "words": n, "stt_ms": round(stt_ms, 1),
                   "match_ms": round(match_ms, 3),
                   "seconds": round(len(clean) / 8000, 2)}
            if acoustic is not None and margin is not None:
                row.update(acoustic_row(acoustic, stt, line, heard, rescored))
                row["got"], row["score"] = decide_acoustic(brain, row, margin)
                got = row["got"]
            rows.append(row)
            mark = "ok " if got == expected else "BAD"
            print(f"{mark} {voice.name:20} {text[:44]:44} -> {heard[:44]!r:46} {got}"
                  + (f" [{row['best']!r} {row['best_score'] - row['free_score']:+.2f}]"
                     if row.get("best") else ""), flush=True)
    return {"rows": rows}


def summarise(rows: list[dict]) -> dict:
    n = len(rows)
    ok = sum(r["got"] == r["expected"] for r in rows)
    base = sum(r["baseline"] == r["expected"] for r in rows)
    errors = sum(r["errors"] for r in rows)
    ref_words = sum(r["words"] for r in rows)
    by_voice: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for r in rows:
        v = by_voice[r["voice"]]
        v[0] += r["got"] == r["expected"]
        v[1] += 1
        v[2] += r["errors"]
        v[3] += r["words"]
    stt = sorted(r["stt_ms"] for r in rows)
    return {
        "utterances": n, "accuracy": round(ok / n, 4), "baseline_accuracy": round(base / n, 4),
        "wer": round(errors / ref_words, 4),
        "false_accepts": sum(r["expected"] == "fallback" and r["got"] != "fallback"
                             for r in rows),
        "missed": sum(r["expected"] != "fallback" and r["got"] == "fallback" for r in rows),
        "misrouted": sum(r["expected"] != "fallback" and r["got"] not in ("fallback",
                                                                          r["expected"])
                         for r in rows),
        "by_voice": {k: {"accuracy": round(v[0] / v[1], 4), "wer": round(v[2] / v[3], 4),
                         "n": v[1]} for k, v in by_voice.items()},
        "confusion": {f"{e} -> {g}": c for (e, g), c in sorted(Counter(
            (r["expected"], r["got"]) for r in rows).items())},
        "text_only_accuracy": round(sum(r.get("text_only", r["got"]) == r["expected"]
                                        for r in rows) / n, 4),
        "text_only_false_accepts": sum(r["expected"] == "fallback"
                                       and r.get("text_only", r["got"]) != "fallback"
                                       for r in rows),
        "acoustic_scored": len(scored := [r["acoustic_ms"] for r in rows
                                          if r.get("acoustic_ms")]),
        "acoustic_ms_mean": round(float(np.mean(scored)), 1) if scored else 0.0,
        "acoustic_ms_p95": round(float(sorted(scored)[int(0.95 * (len(scored) - 1))]), 1)
        if scored else 0.0,
        "stt_ms_mean": round(float(np.mean(stt)), 1),
        "stt_ms_p95": round(float(stt[int(0.95 * (len(stt) - 1))]), 1),
        "match_ms_max": max(r["match_ms"] for r in rows),
    }


def markdown(summary: dict, rows: list[dict], meta: dict) -> str:
    s = summary
    labels = sorted({r["expected"] for r in rows} | {r["got"] for r in rows})
    lines = [
        f"# Intent accuracy on synthetic phone callers ({meta['date']})", "",
        f"`{meta['command']}` on {meta['machine']}; voices: {', '.join(meta['voices'])}"
        + (f"; skipped: {meta['skipped']}" if meta["skipped"] else "") + ".",
        f"Channel: 8 kHz, G.711 mu-law, white line noise at {SNR_DB:g} dB SNR. STT: "
        + ("Moonshine tiny-en (the product's)" if meta["stt"] == "moonshine" else meta["stt"])
        + "; then the vocabulary re-scoring"
        + (", the acoustic re-scoring" if meta.get("margin") is not None else "")
        + " and the rule brain.", "",
        "| figure | value |", "|---|---|",
        f"| utterances | {s['utterances']} |",
        f"| intent accuracy | **{s['accuracy']:.1%}** |",
        f"| intent accuracy of the exact-only matcher (before) on the same transcripts | "
        f"{s['baseline_accuracy']:.1%} |",
        *([f"| intent accuracy without the acoustic re-scoring (text matching only) | "
           f"{s['text_only_accuracy']:.1%} ({s['text_only_false_accepts']} false accepts) |",
           f"| acoustic re-scoring: margin {meta['margin']:g}; utterances scored | "
           f"{s['acoustic_scored']} of {s['utterances']} |",
           f"| acoustic re-scoring time per scored utterance, mean / p95 | "
           f"{s['acoustic_ms_mean']} / {s['acoustic_ms_p95']} ms |"]
          if meta.get("margin") is not None else []),
        f"| word error rate of the STT | {s['wer']:.1%} |",
        f"| out-of-scope requests matched to an intent (false accepts) | {s['false_accepts']} |",
        f"| requests not understood (missed: the caller is asked again, then passed to a "
        f"person) | {s['missed']} |",
        f"| requests sent to another intent (misrouted) | {s['misrouted']} |",
        f"| STT time per utterance, mean / p95 | {s['stt_ms_mean']} / {s['stt_ms_p95']} ms |",
        f"| re-scoring + matching, slowest | {s['match_ms_max']} ms |", "",
        "Per voice:", "", "| voice | n | intent accuracy | WER |", "|---|---|---|---|",
        *[f"| {k} | {v['n']} | {v['accuracy']:.1%} | {v['wer']:.1%} |"
          for k, v in s["by_voice"].items()], "",
        "Confusion (rows: expected, columns: decided):", "",
        "| expected \\ decided | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for e in labels:
        counts = Counter(r["got"] for r in rows if r["expected"] == e)
        if counts:
            lines.append(f"| {e} | " + " | ".join(str(counts.get(g, "")) for g in labels)
                         + " |")
    wrong = [r for r in rows if r["got"] != r["expected"]]
    lines += ["", f"Errors ({len(wrong)}):", ""]
    lines += [f"- {r['voice']}: \"{r['text']}\" heard \"{r['heard']}\""
              + (f" (re-scored \"{r['rescored']}\")" if r["rescored"] else "")
              + (f" (best phrase \"{r['best']}\" {r['best_score'] - r['free_score']:+.2f})"
                 if r.get("best") else "")
              + f" -> {r['got']} (expected {r['expected']})" for r in wrong] or ["- none"]
    acoustic = [r for r in rows if r.get("text_only", r["got"]) != r["got"]]
    if acoustic:
        lines += ["", f"Changed by the acoustic re-scoring ({len(acoustic)}):", ""]
        lines += [f"- {r['voice']}: \"{r['heard']}\" -> \"{r['best']}\" "
                  f"({r['best_score'] - r['free_score']:+.2f}): {r['text_only']} -> {r['got']}"
                  + ("" if r["got"] == r["expected"] else f" (expected {r['expected']})")
                  for r in acoustic]
    fixed = [r for r in rows if r["baseline"] != r["expected"] and r["got"] == r["expected"]]
    lines += ["", f"Reached by fuzzy/phonetic matching or re-scoring only ({len(fixed)}):", ""]
    lines += [f"- \"{r['heard']}\" -> {r['got']}" for r in fixed[:40]] or ["- none"]
    return "\n".join(lines) + "\n"


def main() -> None:
    global SNR_DB
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few phrasings, Piper x1.0 only")
    ap.add_argument("--no-espeak", action="store_true", help="Piper voices only")
    ap.add_argument("--stt", choices=["moonshine", "pocketsphinx"], default="moonshine")
    ap.add_argument("--snr", type=float, default=SNR_DB, help="line noise, dB below speech")
    ap.add_argument("--render", type=Path, metavar="JSON",
                    help="only re-render the summary and .md of an earlier run's JSON")
    ap.add_argument("--out", type=Path, help="results stem (default bench/results/<date>-intent)")
    ap.add_argument("--no-acoustic", action="store_true",
                    help="without the acoustic re-scoring (stt.acoustic: false)")
    ap.add_argument("--margin", type=float,
                    help="acoustic re-scoring margin (default: the config's stt.acoustic_margin); "
                         "with --render: re-decide an earlier run at this margin")
    ap.add_argument("--sweep", action="store_true",
                    help="with --render: accuracy and false accepts at a range of margins")
    args = ap.parse_args()
    SNR_DB = args.snr
    if args.render:
        data = json.loads(args.render.read_text())
        SNR_DB = data["meta"]["snr_db"]
        a = load_config().assistants[0]
        brain = RulesBrain(a.brain, a.destinations)
        if args.sweep:
            for m in (None, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0):
                got = [decide_acoustic(brain, r, m)[0] for r in data["rows"]]
                ok = sum(g == r["expected"] for g, r in zip(got, data["rows"], strict=True))
                fa = sum(g != "fallback" and r["expected"] == "fallback"
                         for g, r in zip(got, data["rows"], strict=True))
                mis = sum(g not in ("fallback", r["expected"]) and r["expected"] != "fallback"
                          for g, r in zip(got, data["rows"], strict=True))
                print(f"margin {m}: accuracy {ok / len(got):.1%}, false accepts {fa}, "
                      f"misrouted {mis}")
            return
        if args.margin is not None and data["meta"].get("margin") is not None:
            data["meta"]["margin"] = args.margin
            for r in data["rows"]:
                r["got"], r["score"] = decide_acoustic(brain, r, args.margin)
        data["summary"] = summarise(data["rows"])
        args.render.write_text(json.dumps(data, indent=1) + "\n")
        md = markdown(data["summary"], data["rows"], data["meta"])
        args.render.with_suffix(".md").write_text(md)
        print(md)
        return
    espeak = None if args.no_espeak or args.quick else shutil.which("espeak-ng")
    voices = [PIPER_VOICES[1]] if args.quick else list(PIPER_VOICES)
    skipped = ""
    if espeak:
        voices += ESPEAK_VOICES
    elif not args.quick and not args.no_espeak:
        skipped = "espeak-ng voices (the espeak-ng program is not installed)"
    phrases = [PHRASES[i] for i in QUICK] if args.quick else PHRASES
    margin = None
    if args.stt == "moonshine" and not args.no_acoustic:
        margin = (args.margin if args.margin is not None
                  else load_config().assistants[0].stt.acoustic_margin)
    result = run(voices, phrases, espeak, args.stt, margin)
    rows = result["rows"]
    summary = summarise(rows)
    date = dt.date.today().isoformat()
    meta = {"date": date, "command": "bench/bench_intent.py" + (" --quick" if args.quick else ""),
            "machine": f"{platform.machine()} {platform.processor() or ''} "
                       f"{__import__('os').cpu_count()} cores".replace("  ", " "),
            "voices": [v.name for v in voices], "skipped": skipped, "snr_db": SNR_DB}
    if args.snr != 35.0:
        meta["command"] += f" --snr {args.snr:g}"
    meta["stt"] = args.stt
    meta["margin"] = margin
    if args.no_acoustic:
        meta["command"] += " --no-acoustic"
    elif args.margin is not None:
        meta["command"] += f" --margin {args.margin:g}"
    suffix = ("-quick" if args.quick else "") + ("" if args.stt == "moonshine" else f"-{args.stt}")
    suffix += "-text-only" if args.no_acoustic and args.stt == "moonshine" else ""
    if args.stt != "moonshine":
        meta["command"] += f" --stt {args.stt}"
    stem = args.out or RESULTS / f"{date}-intent{suffix}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.json").write_text(json.dumps({"meta": meta, "summary": summary,
                                                "rows": rows}, indent=1) + "\n")
    md = markdown(summary, rows, meta)
    Path(f"{stem}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
