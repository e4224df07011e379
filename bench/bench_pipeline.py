"""Pipeline-mode benchmarks: turn latency by stage, what overlapping the stages gains, and the
all-local pipeline on this machine.

    python bench/bench_pipeline.py [--quick] [--out FILE]

Every call goes through the real AudioSocket server with the emulator's Asterisk side in this
process (:mod:`pipeline_calls`); cloud stages talk to the protocol mocks in ``tests/mocks``
over in-memory streams, so client, mocks and sidecar share one trio run and one thread.

1. **Turns** (Deepgram listen + OpenAI chat + Deepgram speak, all mocks with the scripted
   latencies of :data:`SCRIPT`), in real time: several calls at once, each caller asking a
   question once the agent has been quiet 0.4 s, answered in two sentences. Per handoff, our
   overhead is the measured gap minus the scripted one, from the mocks' logs and the stage
   probes (:class:`pipeline_calls.StageHook`, ``probed``). The same calls in virtual time
   (trio ``MockClock``) give the scripted timeline with zero processing cost.
2. **Overlap**: one question per call answered in one sentence (short) or four (long), with
   the stages as built (the first sentence goes to TTS while the LLM writes; TTS audio streams
   into the playout) and forced sequential (``sequential``: the LLM's answer held until
   complete, each sentence's audio until fully received). Real time and virtual time.
3. **Local**: Moonshine tiny-en and Piper joe-us (the real engines, worker-thread offload as
   in production), our VAD cutting utterances, the caller's questions spoken by Piper; with
   the rule brain, and with the LLM stage played by the chat mock answering at once (zero
   first-token and token delay, so only local cost is measured). Skipped when the engines are
   not installed.

Figures are reported, never asserted (``../shared/STYLE.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _p in (str(ROOT), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import trio  # noqa: E402
import trio.testing  # noqa: E402
from bench_relay import voice_like  # noqa: E402
from foundation_load import summary  # noqa: E402
from pipeline_calls import CallOut, Mocks, StageHook, run_call  # noqa: E402

from fastagi_server.emulator.caller import AgentQuiet, CallerScript  # noqa: E402
from media_sidecar.app import rules_brain  # noqa: E402
from media_sidecar.brain.text import SentenceBuffer, split_sentences  # noqa: E402
from media_sidecar.config.loader import parse_config  # noqa: E402
from media_sidecar.config.schema import Config  # noqa: E402
from media_sidecar.session.call import CallServices  # noqa: E402
from media_sidecar.session.speaker import Speaker  # noqa: E402
from tests.mocks.deepgram_listen import ListenScript, MockListenServer  # noqa: E402
from tests.mocks.deepgram_speak import MockSpeakServer, SpeakScript  # noqa: E402
from tests.mocks.openai_chat import MockChatServer  # noqa: E402
from tests.mocks.openai_chat.script import ChatScript, Reply, split_words  # noqa: E402


@dataclass(frozen=True)
class Script:
    """The mocks' scripted latencies (seconds unless named otherwise)."""

    endpointing_ms: int = 300
    """Deepgram endpointing (our config's ``stt.endpointing_ms``): quiet audio before a final."""
    stt_final_delay: float = 0.1
    llm_first_token: float = 0.35
    llm_per_token: float = 0.03
    tts_first_byte: float = 0.2
    tts_send_rate: float = 4.0
    tts_ms_per_char: int = 60

    @property
    def stt_ms(self) -> float:
        return self.endpointing_ms + 1000 * self.stt_final_delay


SCRIPT = Script()
QUIET_S = 0.4
"""The caller asks the next question once the agent has been quiet this long."""
QUESTION_S = 0.8
"""Caller speech per question (a speech-like signal; the mock STT transcribes it by script)."""

QA = (
    ("What are your opening hours?", "We open at nine. We close at five on weekdays."),
    ("Where are you located?", "We are at 12 Harbour Street. It is next to the station."),
    ("How much is delivery?", "Delivery is free over fifty euros. Otherwise it is five euros."),
    ("Do you have parking?", "Yes, there is free parking. It is behind the building."),
    ("Can I pay by card?", "Yes, we take all major cards. We also take cash."),
)
SHORT = ("What are your hours?", "We are open from nine to five on weekdays.")
LONG = ("Tell me everything about your hours.",
        "We are open from nine to five on weekdays. On Saturdays we open at ten and close at"
        " two. We are closed on Sundays and public holidays. You can also order online at any"
        " time.")
LOCAL_QA = (  # (what the caller says, rule keywords, the answer said by both brains)
    ("What are your opening hours?", ["hours", "open"], "We are open from nine to five. "
     "Is there anything else?"),
    ("Where is your office?", ["where", "office", "address"], "Our office is on Harbour "
     "Street. It is next to the station."),
    ("How much does delivery cost?", ["delivery", "cost"], "Delivery is free over fifty "
     "euros. Otherwise it is five euros."),
    ("Do you have parking?", ["parking", "park"], "Yes, there is free parking. It is behind "
     "the building."),
    ("Can I pay by card?", ["card", "pay"], "Yes, we take all major cards. We also take cash."),
)

PLANS: dict[str, dict[str, Any]] = {
    "quick": {"turn_calls": 4, "turns_per_call": 5, "turn_stagger_s": 1.0,
              "overlap_calls": 3, "overlap_stagger_s": 1.2, "local_turns": 5},
    "full": {"turn_calls": 6, "turns_per_call": 8, "turn_stagger_s": 0.9,
             "overlap_calls": 8, "overlap_stagger_s": 1.5, "local_turns": 10},
}
"""``turn_calls`` x ``turns_per_call`` run at once (started ``turn_stagger_s`` apart);
``overlap_calls`` per answer length and mode; ``local_turns`` per brain. A call's Flushes
(greeting + two per turn) stay under Deepgram's 20 per 60 s, which the speak mock enforces:
the product sends one Flush per sentence, and a Flush over the limit is never spoken."""

CLOUD_YAML = f"""
routing: {{default: bot}}
assistants:
  bot:
    provider: pipeline
    stt: {{engine: deepgram, endpointing_ms: {SCRIPT.endpointing_ms}}}
    llm: {{engine: openai}}
    tts: {{engine: deepgram}}
    greeting: "Hi."
    apology: ""
    instructions: "You answer calls for ACME."
    brain: {{no_input: {{after: 0}}}}
"""


# -- the cloud pipeline against the mocks ------------------------------------------------------------
def cloud_mocks(qa: Sequence[tuple[str, str]]) -> Mocks:
    """Mocks for one call asking ``qa``'s questions in order, with :data:`SCRIPT`'s latencies."""
    return Mocks(
        chat=MockChatServer(script=ChatScript(
            replies={q: Reply(a) for q, a in qa}, first_token_delay=SCRIPT.llm_first_token,
            token_delay=SCRIPT.llm_per_token)),
        listen=MockListenServer(script=ListenScript(
            transcripts=[q for q, _ in qa], final_delay=SCRIPT.stt_final_delay)),
        speak=MockSpeakServer(script=SpeakScript(
            first_byte_delay=SCRIPT.tts_first_byte, send_rate=SCRIPT.tts_send_rate,
            ms_per_char=SCRIPT.tts_ms_per_char)))


def cloud_services() -> CallServices:
    def no_local_tts(_a: Any) -> Speaker:
        raise RuntimeError("the cloud bench assistant has no local TTS")

    return CallServices(speaker_factory=no_local_tts, brain_factory=rules_brain, stt=None)


def release_index(answer: str) -> int:
    """0-based index of the mock's word delta whose arrival lets the brain release the first
    sentence: the first word of the second sentence, or the last delta of a one-sentence
    answer (released when the stream ends)."""
    buf = SentenceBuffer()
    words = split_words(answer)
    for i, w in enumerate(words):
        if buf.feed(w):
            return i
    return len(words) - 1


def turn_figures(out: CallOut) -> list[dict[str, Any]]:
    """Per caller turn of a ``probed`` call: stage times from the record, and each handoff's
    measured gap minus the scripted one (ms), from the mocks' logs and the probes."""
    rows: list[dict[str, Any]] = []
    rec, m = out.record, out.mocks
    if rec is None or m.chat is None or m.listen is None or m.speak is None:
        return rows
    finals = [u for s in m.listen.sessions for u in s.utterances if u.final_sent_at is not None]
    flushes = [f for s in m.speak.sessions for f in s.flushes]
    turns = [t for t in rec.turns if t.trigger == "speech"]
    for i, turn in enumerate(turns):
        if i >= len(finals) or i >= len(m.chat.chats) or turn.latency_ms is None:
            continue
        utt, chat = finals[i], m.chat.chats[i]
        answer = chat.reply.text if chat.reply else ""
        first = split_sentences(answer)[0] if answer else ""
        flush = next((f for f in flushes if f.text == first and f.queued_at >= chat.started_at),
                     None)
        req = out.probe.requests[i] if i < len(out.probe.requests) else None
        sent = next((s for s in out.probe.sentences
                     if s.text == first and s.called >= chat.started_at), None)
        if (flush is None or flush.first_audio_at is None or req is None or sent is None
                or req.first_delta is None or sent.first_chunk is None
                or chat.first_token_at is None or utt.transcript != turn.caller_text):
            continue
        k = release_index(answer)
        released = chat.started_at + SCRIPT.llm_first_token + k * SCRIPT.llm_per_token
        s = turn.stage_ms
        floor = SCRIPT.stt_ms + 1000 * (SCRIPT.llm_first_token + k * SCRIPT.llm_per_token
                                        + SCRIPT.tts_first_byte)
        rows.append({
            "stage_ms": dict(s), "latency_ms": turn.latency_ms, "scripted_floor_ms": floor,
            "handoffs_ms": {
                "stt": s["stt"] - SCRIPT.stt_ms,
                "stt_to_llm": 1000 * (chat.started_at - utt.final_sent_at),
                "llm_token": 1000 * (req.first_delta - chat.first_token_at),
                "sentence_to_tts": 1000 * (flush.queued_at - released),
                "tts_audio": 1000 * (sent.first_chunk - flush.first_audio_at),
                "first_frame": s["first_frame"] - s["tts_first_audio"],
                "before_tick": s["tts_first_audio"] - floor,
                "total": turn.latency_ms - floor,
            },
            "mock_late_ms": {
                "llm_first_token": 1000 * (chat.first_token_at - chat.started_at
                                           - SCRIPT.llm_first_token),
                "tts_first_audio": 1000 * (flush.first_audio_at - flush.queued_at
                                           - SCRIPT.tts_first_byte)},
        })
    return rows


async def _staggered(jobs: Sequence[Callable[[], Any]], stagger: float) -> list[CallOut]:
    """Run every job (an async call) at once, the k-th started ``k * stagger`` s in."""
    outs: list[CallOut] = []

    async def one(job: Callable[[], Any]) -> None:
        outs.append(await job())

    async with trio.open_nursery() as nursery:
        for k, job in enumerate(jobs):
            if k:
                await trio.sleep(stagger)
            nursery.start_soon(one, job)
    return outs


async def turns_run(cfg: Config, hook: StageHook, calls: int, turns: int, stagger: float
                    ) -> list[CallOut]:
    """``calls`` conversations at once, each of ``turns`` questions from :data:`QA`."""
    jobs = []
    for j in range(calls):
        qa = [QA[(j + t) % len(QA)] for t in range(turns)]
        script = CallerScript()
        for t in range(turns):
            script.speak(voice_like(QUESTION_S, 100 * j + t), at=AgentQuiet(QUIET_S * 1000))
        script.hangup(at=AgentQuiet(QUIET_S * 1000))

        def job(j: int = j, qa: list[tuple[str, str]] = qa, script: CallerScript = script
                ) -> Any:
            return run_call(cfg, "bot", f"turns-{j}", script, services=cloud_services(),
                            mocks=cloud_mocks(qa), hook=hook, mode="probed",
                            max_seconds=30.0 + 8.0 * turns)
        jobs.append(job)
    return await _staggered(jobs, stagger)


async def overlap_run(cfg: Config, hook: StageHook, calls: int, stagger: float
                      ) -> list[CallOut]:
    """One question per call: short and long answers, overlapped and sequential, interleaved."""
    jobs = []
    for i in range(calls):
        for length, qa in (("short", SHORT), ("long", LONG)):
            for mode in ("overlapped", "sequential"):
                script = (CallerScript().speak(voice_like(QUESTION_S, 900 + i), at=1.0)
                          .hangup(at=1.0 + QUESTION_S + 3.5))

                def job(name: str = f"{length}-{mode}-{i}", qa: tuple[str, str] = qa,
                        mode: str = mode, script: CallerScript = script) -> Any:
                    return run_call(cfg, "bot", name, script, services=cloud_services(),
                                    mocks=cloud_mocks([qa]), hook=hook, mode=mode,
                                    max_seconds=20.0)
                jobs.append(job)
    return await _staggered(jobs, stagger)


def failures(outs: Sequence[CallOut]) -> dict[str, str]:
    return {o.name: o.error for o in outs if o.error}


def turns_summary(real: Sequence[CallOut], virtual: Sequence[CallOut], calls: int
                  ) -> dict[str, Any]:
    rows = [r for o in real for r in turn_figures(o)]
    vrows = [r for o in virtual for r in turn_figures(o)]
    stages = ("stt", "llm_first_token", "first_sentence", "tts_first_audio", "first_frame",
              "llm_done")
    asked = sum(1 for o in real if o.record for t in o.record.turns if t.trigger == "speech")
    return {
        "calls_at_once": calls, "turns": len(rows), "failed_calls": failures(real),
        "turns_unmatched": asked - len(rows),  # logs and probes not paired (none expected)
        "handoff_overhead_ms": {h: summary([r["handoffs_ms"][h] for r in rows], 2)
                                for h in rows[0]["handoffs_ms"]} if rows else {},
        "mock_late_ms": {h: summary([r["mock_late_ms"][h] for r in rows], 2)
                         for h in ("llm_first_token", "tts_first_audio")} if rows else {},
        "latency_ms": summary([r["latency_ms"] for r in rows], 1),
        "scripted_floor_ms": summary([r["scripted_floor_ms"] for r in rows], 1),
        "stage_ms": {k: summary([r["stage_ms"][k] for r in rows if k in r["stage_ms"]], 1)
                     for k in stages},
        "virtual": {"turns": len(vrows),
                    "latency_ms": summary([r["latency_ms"] for r in vrows], 1),
                    "stage_ms": {k: summary([r["stage_ms"][k] for r in vrows
                                             if k in r["stage_ms"]], 1) for k in stages}},
    }


def overlap_summary(real: Sequence[CallOut], virtual: Sequence[CallOut]) -> dict[str, Any]:
    def lat(outs: Sequence[CallOut], name: str) -> list[float]:
        return [t.latency_ms for o in outs if o.name.startswith(name + "-") and o.record
                for t in o.record.turns if t.trigger == "speech" and t.latency_ms is not None]

    res: dict[str, Any] = {"failed_calls": failures(real)}
    for length, qa in (("short", SHORT), ("long", LONG)):
        d: dict[str, Any] = {"sentences": len(split_sentences(qa[1])),
                             "words": len(qa[1].split()), "chars": len(qa[1])}
        for mode in ("overlapped", "sequential"):
            d[mode] = {"latency_ms": summary(lat(real, f"{length}-{mode}"), 1),
                       "virtual_latency_ms": summary(lat(virtual, f"{length}-{mode}"), 1)}
        o, s = d["overlapped"]["latency_ms"].get("p50"), d["sequential"]["latency_ms"].get("p50")
        if o is not None and s:
            d["gain_ms"] = round(s - o, 1)
            d["gain_pct"] = round(100 * (s - o) / s, 1)
        res[length] = d
    return res


async def cloud_all(plan: dict[str, Any], virtual: bool) -> dict[str, list[CallOut]]:
    cfg = parse_config(CLOUD_YAML, "bench-pipeline.yaml")
    hook = StageHook()
    with hook.installed():
        calls = 1 if virtual else plan["turn_calls"]
        turns = len(QA) if virtual else plan["turns_per_call"]
        t = await turns_run(cfg, hook, calls, turns, plan["turn_stagger_s"])
        o = await overlap_run(cfg, hook, 1 if virtual else plan["overlap_calls"],
                              plan["overlap_stagger_s"])
    return {"turns": t, "overlap": o}


# -- the local pipeline -------------------------------------------------------------------------------
def local_yaml(turns: Sequence[tuple[str, list[str], str]]) -> str:
    intents = "\n".join(
        f"        - {{name: i{k}, keywords: {json.dumps(kw)}, reply: {json.dumps(a)}}}"
        for k, (_, kw, a) in enumerate(turns))
    common = """    provider: pipeline
    stt: {engine: moonshine, model: tiny-en}
    tts: {engine: piper, voice: joe-us}
    apology: \"\""""
    return f"""
routing: {{default: local_rules}}
assistants:
  local_rules:
{common}
    brain:
      greeting: "Hello."
      fallback: "Sorry, could you say that another way?"
      no_input: {{after: 0}}
      intents:
{intents}
  local_llm:
{common}
    llm: {{engine: openai}}
    greeting: "Hello."
    instructions: "You answer calls for ACME."
    brain: {{no_input: {{after: 0}}}}
"""


def cpu_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu_count": os.cpu_count(), "cpu_model": model, "platform": platform.platform(),
            "python": platform.python_version()}


def local_run(turns: int) -> dict[str, Any]:
    """The all-local pipeline: rule brain, then the chat mock as an instant LLM."""
    info: dict[str, Any] = {"cpu": cpu_info()}
    try:
        from media_sidecar.config.schema import SttConfig, TtsConfig
        from media_sidecar.speech import make_stt, make_tts
        from media_sidecar.speech.prompts import synthesize

        t = time.monotonic()
        stt = make_stt(SttConfig(engine="moonshine", model="tiny-en"))
        tts = make_tts(TtsConfig(engine="piper", voice="joe-us"))
        info["engines_load_s"] = round(time.monotonic() - t, 2)
    except Exception as exc:  # any import or model error means: not installed
        return {**info, "skipped": f"{type(exc).__name__}: {exc}"}
    asked = [LOCAL_QA[k % len(LOCAL_QA)] for k in range(turns)]
    speech = {q: synthesize(tts, q) for q, _, _ in LOCAL_QA}
    cfg = parse_config(local_yaml(LOCAL_QA), "bench-pipeline-local.yaml")
    services = CallServices(speaker_factory=lambda _a: Speaker(tts), brain_factory=rules_brain,
                            stt=stt)  # production defaults: our VAD, worker-thread offload
    chat = ChatScript(replies={kw[0]: Reply(a) for _, kw, a in LOCAL_QA} | {"": Reply(
        "Sorry, could you say that another way?")}, first_token_delay=0.0, token_delay=0.0)

    async def both() -> list[CallOut]:
        hook = StageHook()
        outs = []
        with hook.installed():
            for assistant in ("local_rules", "local_llm"):
                script = CallerScript()
                for q, _, _ in asked:
                    script.speak(speech[q], at=AgentQuiet(QUIET_S * 1000))
                script.hangup(at=AgentQuiet(QUIET_S * 1000))
                mocks = Mocks(chat=MockChatServer(script=chat)) if assistant == "local_llm" \
                    else Mocks()
                outs.append(await run_call(cfg, assistant, assistant, script, services=services,
                                           mocks=mocks, hook=hook, mode="overlapped",
                                           max_seconds=30.0 + 12.0 * turns))
        return outs

    rules = cfg.assistant("local_rules")
    hangover = rules.vad.end_ms if rules is not None else 0
    for out in trio.run(both):
        turns_ = [t for t in out.record.turns if t.trigger == "speech"] if out.record else []
        stage = {k: summary([t.stage_ms[k] for t in turns_ if k in t.stage_ms], 1)
                 for k in ("stt", "first_sentence", "tts_first_audio", "first_frame")}
        stage["stt_minus_vad_hangover"] = summary(
            [t.stage_ms["stt"] - hangover for t in turns_ if "stt" in t.stage_ms], 1)
        info[out.name] = {
            "turns": len(turns_), "error": out.error, "vad_hangover_ms": hangover,
            "latency_ms": summary([t.latency_ms for t in turns_ if t.latency_ms is not None], 1),
            "stage_ms": stage,
            "transcripts": [{"spoken": q, "heard": t.caller_text, "said": t.agent_text}
                            for (q, _, _), t in zip(asked, turns_, strict=False)],
        }
    return info


# -- entry ----------------------------------------------------------------------------------------------
def run(quick: bool = False) -> dict[str, Any]:
    """All three parts; JSON-serialisable results."""
    plan = PLANS["quick" if quick else "full"]
    took: dict[str, float] = {}
    t = time.monotonic()
    virtual = trio.run(cloud_all, plan, True, clock=trio.testing.MockClock(autojump_threshold=0))
    took["virtual"] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    real = trio.run(cloud_all, plan, False)
    took["real"] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    local = local_run(plan["local_turns"])
    took["local"] = round(time.monotonic() - t, 1)
    return {
        "benchmark": "pipeline", "mode": "quick" if quick else "full", "plan": plan,
        "script": {**SCRIPT.__dict__, "tts_chunk_ms": SpeakScript().chunk_ms,
                   "quiet_before_question_s": QUIET_S, "question_s": QUESTION_S},
        "turns": turns_summary(real["turns"], virtual["turns"], plan["turn_calls"]),
        "overlap": overlap_summary(real["overlap"], virtual["overlap"]),
        "local": local, "durations_s": took,
    }


# -- report -------------------------------------------------------------------------------------------
def _s(d: dict[str, Any] | None, *keys: str) -> str:
    d = d or {}
    return " / ".join("–" if d.get(k) is None else f"{d[k]:g}" for k in keys)


HANDOFFS = (
    ("stt", f"caller audio end -> STT final received by us (stage `stt` minus the scripted"
     f" {SCRIPT.stt_ms:g}: endpointing {SCRIPT.endpointing_ms} + final delay"
     f" {1000 * SCRIPT.stt_final_delay:g}; audio reaches the mock frame by frame)"),
    ("stt_to_llm", "STT final sent by the mock -> LLM request received by the mock"),
    ("llm_token", "LLM first delta sent by the mock -> parsed and handed to the brain"),
    ("sentence_to_tts", "first sentence complete (the delta that ends it due at the mock) ->"
     " TTS Speak + Flush received by the mock"),
    ("tts_audio", "TTS first audio sent by the mock -> reached the speaking task"),
    ("first_frame", "TTS first audio -> first frame sent (stage_ms; includes the wait for the"
     " next 20 ms tick, 0-20 ms)"),
    ("before_tick", "**end of speech -> first TTS audio in hand, minus the scripted floor: all"
     " our overhead before the frame grid**"),
    ("total", "end of speech -> first frame, minus the scripted floor (includes the tick wait)"),
)


def render_md(res: dict[str, Any]) -> str:
    """A markdown section: handoff overheads, overlap gain, the local pipeline."""
    sc, tu, ov, lo = res["script"], res["turns"], res["overlap"], res["local"]
    out = [
        "## Pipeline mode: turn latency by stage (mock services)", "",
        f"Scripted: Deepgram STT final {sc['stt_final_delay'] * 1000:g} ms after"
        f" {sc['endpointing_ms']} ms endpointing; LLM first token {sc['llm_first_token'] * 1000:g}"
        f" ms, then one word per {sc['llm_per_token'] * 1000:g} ms; TTS first byte"
        f" {sc['tts_first_byte'] * 1000:g} ms, {sc['tts_ms_per_char']} ms of audio per character"
        f" sent {sc['tts_send_rate']:g}x real time in {sc['tts_chunk_ms']} ms chunks. Real time,"
        f" {tu['calls_at_once']} calls at once in one process (sidecar, emulator and mocks share"
        f" one trio thread over in-memory streams), {tu['turns']} turns answered in two"
        f" sentences. Overhead = measured gap - scripted gap, so it includes the mock's side of"
        f" each exchange (HTTP/WebSocket framing, its timer lateness); failed calls:"
        f" {len(tu['failed_calls'])}, turns not paired with the mocks' logs:"
        f" {tu.get('turns_unmatched', '–')}.", "",
        "| handoff | our overhead p50 / p95 / max ms |", "|---|---|",
    ]
    for key, label in HANDOFFS:
        out.append(f"| {label} | {_s(tu['handoff_overhead_ms'].get(key), 'p50', 'p95', 'max')} |")
    v = tu["virtual"]
    out += ["", f"End of speech -> first frame: **p50 {_s(tu['latency_ms'], 'p50')} ms, p95"
            f" {_s(tu['latency_ms'], 'p95')} ms** against a scripted floor of"
            f" {_s(tu['scripted_floor_ms'], 'p50')} ms (p50; STT + LLM to the first sentence +"
            f" TTS first byte, without the tick wait); virtual time (zero processing cost,"
            f" {v['turns']} turns): p50 {_s(v['latency_ms'], 'p50')} ms. Mock timer lateness"
            f" p50 / max: LLM {_s(tu['mock_late_ms'].get('llm_first_token'), 'p50', 'max')} ms,"
            f" TTS {_s(tu['mock_late_ms'].get('tts_first_audio'), 'p50', 'max')} ms.", "",
            "| stage from end of speech (ms) | real p50 / p95 | virtual p50 |", "|---|---|---|"]
    for k, d in tu["stage_ms"].items():
        out.append(f"| {k} | {_s(d, 'p50', 'p95')} | {_s(v['stage_ms'].get(k), 'p50')} |")
    out += ["", "### Overlapped vs sequential stages", "",
            "One question per call; the same mocks. Sequential: the LLM's answer is held until"
            " complete and each sentence's TTS audio until fully received (bench-only wrappers"
            f" around the call's stages). {len(ov['failed_calls'])} failed calls. A one-sentence"
            " answer is released to TTS only when the LLM stream ends in both modes, so its gain"
            " is TTS streaming alone (the sentence's audio takes"
            f" {sc['tts_ms_per_char']} ms per character / {sc['tts_send_rate']:g} to arrive);"
            " the long answer adds the LLM writing sentences 2-4.", "",
            "| answer | overlapped p50 ms (n) | sequential p50 ms (n) | gain ms | gain % |"
            " virtual: overlapped / sequential ms |", "|---|---|---|---|---|---|"]
    for length in ("short", "long"):
        d = ov[length]
        o, s = d["overlapped"], d["sequential"]
        out.append(
            f"| {length}: {d['sentences']} sentence(s), {d['words']} words |"
            f" {_s(o['latency_ms'], 'p50')} ({o['latency_ms']['n']}) |"
            f" {_s(s['latency_ms'], 'p50')} ({s['latency_ms']['n']}) |"
            f" {d.get('gain_ms', '–')} | {d.get('gain_pct', '–')} |"
            f" {_s(o['virtual_latency_ms'], 'p50')} / {_s(s['virtual_latency_ms'], 'p50')} |")
    out += ["", "### Local pipeline on this machine (Moonshine tiny-en + Piper joe-us)", ""]
    cpu = lo["cpu"]
    if "skipped" in lo:
        return "\n".join([*out, f"skipped: {lo['skipped']}", ""])
    out += [f"{cpu['cpu_count']} CPUs ({cpu['cpu_model']}), {cpu['platform']}; engines loaded"
            f" in {lo.get('engines_load_s')} s. The caller's questions are Piper speech; our VAD"
            " ends the utterance after its hangover, Moonshine transcribes it in a worker"
            " thread, Piper says each sentence whole (no streaming). The LLM arm's model is the"
            " chat mock answering at once (zero first-token and token delay): only local cost.",
            "", "| brain | turns | stt | stt - VAD hangover | first sentence | TTS first audio |"
            " first frame |", "|---|---|---|---|---|---|---|"]
    for arm, label in (("local_rules", "rules"), ("local_llm", "LLM (mock, instant)")):
        d = lo.get(arm, {})
        st = d.get("stage_ms", {})
        out.append(f"| {label} | {d.get('turns')} | "
                   + " | ".join(_s(st.get(k), "p50", "p95") for k in (
                       "stt", "stt_minus_vad_hangover", "first_sentence", "tts_first_audio",
                       "first_frame")) + " |")
    out += ["", "(ms from the end of the caller's speech, p50 / p95; VAD hangover"
            f" {lo.get('local_rules', {}).get('vad_hangover_ms')} ms; the rule brain does not"
            " stamp its first sentence. The arms ran one after the other and n is small: a"
            " difference of up to about 150 ms between them was run-to-run noise on this VM, in"
            " either direction. Transcripts also vary from run to run: the caller starts each"
            " question when the agent's audio has stopped, at a sub-frame offset, so the 20 ms"
            " framing of the same speech differs.)", "",
            "| spoken by the caller | Moonshine heard (rules arm) | (LLM arm) |", "|---|---|---|"]
    a = lo.get("local_rules", {}).get("transcripts", [])
    b = lo.get("local_llm", {}).get("transcripts", [])
    for k, t in enumerate(a):
        other = b[k]["heard"] if k < len(b) else "–"
        out.append(f"| {t['spoken']} | {t['heard']} | {other} |")
    out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    res = run(args.quick)
    if args.out:
        args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(render_md(res))


if __name__ == "__main__":
    main()
