"""Synthetic call records for the dashboard's screenshots and its page-time figure.

Records shaped as the media plane writes them (``dataclasses.asdict`` of a
:class:`~media_sidecar.session.records.CallRecord`), deterministic for a seed, spread over the
last ``hours`` hours: several assistants and engines, every outcome, turns with stage
timings, tool calls with arguments and results, keypresses.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import random
import struct
import uuid as uuidlib
import wave
from pathlib import Path
from typing import Any

from media_sidecar.session.records import CallRecord, ToolAction, TurnRecord

NAMES = ("Ada Lovelace", "Grace Hopper", "Alan Turing", "Katherine Johnson", "Linus Pauling",
         "Marie Curie", "", "Edsger Dijkstra", "Barbara Liskov", "Donald Knuth")
ASSISTANTS = (("front-desk", "pipeline"), ("billing", "openai_realtime"),
              ("after-hours", "local"), ("sales", "deepgram_agent"))
EXCHANGES = (
    ("I'd like to check my balance please", "Sure. I'll put you through to billing."),
    ("what are your opening hours", "We're open nine to five, Monday to Friday."),
    ("can I talk to someone in sales", "Of course, connecting you to sales now."),
    ("my internet is down again", "I'm sorry to hear that. Let me open a ticket for you."),
)
GOODBYE = ("goodbye", "Thanks for calling. Goodbye!")
STATUSES = ("COMPLETED",) * 5 + ("TRANSFERRED",) * 3 + ("CALLER_HANGUP",) * 2 + ("FAILED",)


def _turn(index: int, trigger: str, caller: str, agent: str, t: float,
          rnd: random.Random) -> TurnRecord:
    stt = rnd.uniform(120, 320)
    tok = stt + rnd.uniform(150, 600)
    sent = tok + rnd.uniform(80, 260)
    tts = sent + rnd.uniform(90, 300)
    frame = tts + rnd.uniform(15, 40)
    stages = {"stt": round(stt, 1), "llm_first_token": round(tok, 1),
              "first_sentence": round(sent, 1), "tts_first_audio": round(tts, 1),
              "first_frame": round(frame, 1)}
    if trigger != "speech":
        stages = {"tts_first_audio": round(tts - stt, 1), "first_frame": round(frame - stt, 1)}
    return TurnRecord(index=index, trigger=trigger, caller_text=caller, agent_text=agent,
                      speech_end=round(t, 3), stt_done=round(t + stt / 1000, 3),
                      first_frame_sent=round(t + stages["first_frame"] / 1000, 3),
                      latency_ms=stages["first_frame"], stage_ms=stages)


def record(i: int, *, now: dt.datetime, hours: float = 24.0, seed: int = 17) -> dict[str, Any]:
    """The ``i``-th synthetic call record (as a dict, ready for ``CallStore.save``)."""
    rnd = random.Random(seed * 100003 + i)
    assistant, engine = ASSISTANTS[i % len(ASSISTANTS)]
    started = now - dt.timedelta(seconds=rnd.uniform(0, hours * 3600))
    status = rnd.choice(STATUSES)
    rec = CallRecord(uuid=str(uuidlib.UUID(int=rnd.getrandbits(128), version=4)),
                     assistant=assistant, caller=f"555{rnd.randrange(10**7):07d}",
                     caller_name=rnd.choice(NAMES), dnid=rnd.choice(("7000", "7001", "8000")),
                     started_at=started.isoformat(timespec="milliseconds"))
    if hasattr(rec, "engine"):
        rec.engine = engine
    rec.worker = str(i % 2)
    t = 0.0
    rec.add_turn(_turn(0, "start", "", "Hello, thanks for calling. How can I help?", t, rnd))
    for n, (caller, agent) in enumerate(rnd.sample(EXCHANGES, rnd.randint(1, 3)), start=1):
        t += rnd.uniform(3.0, 7.0)
        rec.add_turn(_turn(n, "speech", caller, agent, t, rnd))
    if rnd.random() < 0.4:
        rec.actions.append(ToolAction(round(t + 0.5, 3), "tool", tool="lookup_account",
                                      arguments={"phone": rec.caller},
                                      result='{"balance": "42.50", "due": "2026-12-20"}',
                                      duration_ms=round(rnd.uniform(40, 300), 1)))
    keyed = status == "TRANSFERRED" and rnd.random() < 0.5
    if keyed:
        t += rnd.uniform(2.0, 4.0)
        rec.dtmf.append("1")
        rec.add_turn(_turn(len(rec.turns), "dtmf", "[DTMF 1]", "Connecting you to sales.", t, rnd))
    if status == "TRANSFERRED":
        rec.transfer_to = "sales" if keyed else rnd.choice(("billing", "sales"))
        rec.actions.append(ToolAction(round(t + 1.0, 3), "transfer", rec.transfer_to,
                                      reason="caller asked", result="redirected by AMI"))
        rec.reason = f"transferred to {rec.transfer_to}"
    elif status == "FAILED":
        rec.reason = "provider error: connection reset"
    elif status == "CALLER_HANGUP":
        rec.reason = "caller leg closed the AudioSocket"
    else:
        t += rnd.uniform(3.0, 5.0)
        rec.add_turn(_turn(len(rec.turns), "speech", *GOODBYE, t, rnd))
        rec.actions.append(ToolAction(round(t + 1.5, 3), "hangup", reason="caller said goodbye",
                                      result="hung up"))
        rec.reason = "hangup: caller said goodbye"
    rec.status = status
    rec.duration = round(t + rnd.uniform(2.0, 6.0), 3)
    rec.ended_at = (started + dt.timedelta(seconds=rec.duration)).isoformat(
        timespec="milliseconds")
    return dataclasses.asdict(rec)


def fill(store: Any, n: int, *, hours: float = 24.0, seed: int = 17,
         now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Save ``n`` synthetic records into ``store``; returns them."""
    now = now or dt.datetime.now(dt.UTC)
    out = [record(i, now=now, hours=hours, seed=seed) for i in range(n)]
    for rec in out:
        store.save(rec)
    return out


def write_wav(path: Path, seconds: float, rate: int = 8000) -> None:
    """A stereo 16-bit WAV: a tone on the left (caller), another on the right (agent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(seconds * rate)
    frames = b"".join(struct.pack("<hh", int(6000 * math.sin(2 * math.pi * 440 * i / rate)),
                                  int(6000 * math.sin(2 * math.pi * 660 * i / rate)))
                      for i in range(n))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
