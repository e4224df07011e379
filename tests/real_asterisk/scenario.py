"""Calls on the real Asterisk: a Local channel whose ``;1`` half runs the dialplan with
``AGI()`` (the "PBX side" of the call) and whose ``;2`` half is the caller: it plays the
caller's phrases, presses keys, waits (with or without sending frames) and records everything
it hears with ``MixMonitor``.

:class:`CallerPlan` builds the caller half's dialplan from steps; :func:`place_call` originates
the call over AMI and returns when the ``;1`` half is done (its ``AgiDone`` UserEvent, the
``Reached`` UserEvent of a transfer target, or its Hangup), with everything a test asserts on.
"""

from __future__ import annotations

import itertools
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastagi_server.ami.codec import AmiMessage

from .audio import Phrase, read_wav, speech_segments, transcribe
from .peer import AmiDriver, AsteriskPeer

_ids = itertools.count(1)

AGENT_CONTEXT = "av-agent"
"""The PBX side: Answer, AGI to agi-voice, then a UserEvent with every outcome variable and the
dialplan's own fallback for FAILED (as asterisk_conf/ does)."""


def agent_context(fastagi_port: int) -> str:
    out = ("${AI_STATUS}|${AI_TRANSFER_TO}|${AGISTATUS}")
    return f"""
exten => s,1,Answer()
 same => n,Set(AI_STATUS=)
 same => n,GotoIf($["${{AV_CNAME_B64}}" = ""]?agi)
 same => n,Set(CALLERID(name)=${{BASE64_DECODE(${{AV_CNAME_B64}})}})
 same => n(agi),AGI(agi://127.0.0.1:{fastagi_port}/${{AV_SCRIPT}})
 same => n,UserEvent(AgiDone,AvTest: ${{AV_TEST}},Outcome: {out},"Reason: ${{AI_REASON}}")
 same => n,GotoIf($["${{AI_STATUS}}" = "FAILED" | "${{AI_STATUS}}" = ""]?fallback)
 same => n,Hangup()
 same => n(fallback),UserEvent(Fallback,AvTest: ${{AV_TEST}},"Reason: ${{AI_REASON}}")
 same => n,Hangup()
exten => h,1,UserEvent(AgiHangup,AvTest: ${{AV_TEST}},Outcome: {out},"Reason: ${{AI_REASON}}")
"""


def targets_context() -> str:
    """``from-internal``: the destinations of the test assistants (and of asterisk_conf/)."""
    rows = []
    for exten, name in (("0", "operator"), ("2001", "billing"), ("2002", "sales"),
                        ("2003", "support")):
        rows.append(f"exten => {exten},1,UserEvent(Reached,AvTest: ${{AV_TEST}},Dest: {name},"
                    f"Outcome: ${{AI_STATUS}}|${{AI_TRANSFER_TO}}|${{AGISTATUS}},"
                    f"\"Reason: ${{AI_REASON}}\")\n"
                    # agi-voice marks a third-party redirect on the channel after the AGI
                    # socket closed: the Settled event shows what the channel says by then
                    f" same => n,Wait(1.5)\n"
                    f" same => n,UserEvent(Settled,AvTest: ${{AV_TEST}},Dest: {name},"
                    f"Outcome: ${{AI_STATUS}}|${{AI_TRANSFER_TO}}|${{AGISTATUS}},"
                    f"\"Reason: ${{AI_REASON}}\")\n same => n,Hangup()")
    return "\n".join(rows)


@dataclass
class CallerPlan:
    """What the caller's half does, in order. ``quiet_frames=False`` (the default) keeps a
    steady stream of silent frames between phrases (``PlayTones(0)``, like a phone that sends
    RTP all the time); ``True`` sends none while quiet (``Wait()``: a Local channel, or a phone
    with silence suppression)."""

    quiet_sends_no_frames: bool = False
    steps: list[str] = field(default_factory=list)

    def say(self, phrase: Phrase) -> CallerPlan:
        self.steps.append(f"Playback({phrase.name})")
        return self

    def wait(self, seconds: float) -> CallerPlan:
        if self.quiet_sends_no_frames:
            self.steps.append(f"Wait({seconds:g})")
        else:
            self.steps += ["PlayTones(0)", f"Wait({seconds:g})", "StopPlayTones()"]
        return self

    def dtmf(self, digits: str) -> CallerPlan:
        self.steps.append(f"SendDTMF({digits},250)")
        return self

    def dialplan(self, recording: Path, test_id: str) -> str:
        lines = ["exten => s,1,Answer()",
                 f" same => n,Set(AV_TEST={test_id})",
                 f" same => n,MixMonitor({recording}-mix.wav,r({recording}-agent.wav)"
                 f"t({recording}-caller.wav))"]
        lines += [f" same => n,{s}" for s in self.steps]
        lines.append(" same => n,Hangup()")
        # however this half ends, its recordings are closed (StopMixMonitor closes the files
        # before it returns) before the test reads them
        lines.append("exten => h,1,StopMixMonitor()")
        lines.append(" same => n,UserEvent(CallerDone,AvTest: ${AV_TEST})")
        return "\n".join(lines)


@dataclass
class CallResult:
    test_id: str
    channel: str
    """The ``;1`` half's channel name: the channel agi-voice serves."""
    uniqueid: str
    events: list[AmiMessage]
    done: AmiMessage | None
    recording: Path

    @property
    def outcome(self) -> tuple[str, str, str]:
        """(AI_STATUS, AI_TRANSFER_TO, AGISTATUS) as the dialplan saw them."""
        if self.done is None:
            return ("", "", "")
        a, b, c = (self.done.get("Outcome") or "||").split("|")
        return a, b, c

    @property
    def reason(self) -> str:
        return (self.done.get("Reason") or "") if self.done is not None else ""

    def named(self, kind: str) -> list[AmiMessage]:
        """This call's own UserEvents ``kind`` (other calls' events are in ``events`` too)."""
        return [e for e in self.events
                if e.event == "UserEvent" and e.get("UserEvent") == kind
                and e.get("AvTest") == self.test_id]

    def agent_audio(self) -> np.ndarray:
        return read_wav(Path(f"{self.recording}-agent.wav"))

    def caller_audio(self) -> np.ndarray:
        return read_wav(Path(f"{self.recording}-caller.wav"))

    def answer_gaps(self) -> list[float]:
        """For each utterance of the caller (in the caller's own recording), seconds from its
        end to the start of the agent's next utterance, as recorded on the caller's leg: what
        the caller experiences as the agent's reaction time (it includes the 700 ms
        end-of-speech hangover). Both recordings share MixMonitor's timeline."""
        agent = speech_segments(self.agent_audio())
        gaps = []
        for _start, end in speech_segments(self.caller_audio()):
            nxt = next((a for a, _ in agent if a >= end), None)
            if nxt is not None:
                gaps.append(round(nxt - end, 3))
        return gaps

    def agent_said(self) -> list[str]:
        """The agent's utterances as recorded on the caller's leg, transcribed."""
        pcm = self.agent_audio()
        # 0.2 s either side: the energy floor cuts the soft ends of words ("billi(ng)")
        return [transcribe(pcm[max(0, int((a - 0.2) * 8000)):int((b + 0.2) * 8000)])
                for a, b in speech_segments(pcm)]


@dataclass
class PlacedCall:
    """A call originated and not yet waited for (see :func:`originate`)."""

    test_id: str
    uniqueid: str
    recording: Path
    since: int

    async def channel(self, ami: AmiDriver, timeout: float = 10.0) -> str:  # noqa: ASYNC109
        """The ``;1`` half's channel name, once Asterisk created it."""
        ev = await ami.wait_event(lambda e: e.event == "Newchannel"
                                  and e.get("Uniqueid") == self.uniqueid,
                                  since=self.since, timeout=timeout)
        return ev.get("Channel") or ""

    async def finish(self, ami: AmiDriver, timeout: float = 90.0) -> CallResult:  # noqa: ASYNC109
        """Wait for the ``;1`` half's Hangup and gather what the test asserts on."""
        hangup = await ami.wait_event(lambda e: e.event == "Hangup"
                                      and e.get("Uniqueid") == self.uniqueid,
                                      since=self.since, timeout=timeout)
        await ami.wait_event(lambda e: e.event == "UserEvent"
                             and e.get("UserEvent") == "CallerDone"
                             and e.get("AvTest") == self.test_id,
                             since=self.since, timeout=timeout)
        events = list(ami.events[self.since:])
        done = next((e for e in events if e.event == "UserEvent"
                     and e.get("UserEvent") in ("AgiDone", "Settled", "AgiHangup")
                     and e.get("AvTest") == self.test_id), None)
        return CallResult(self.test_id, hangup.get("Channel") or "", self.uniqueid, events, done,
                          self.recording)


async def originate(peer: AsteriskPeer, ami: AmiDriver, plan: CallerPlan, *, script: str,
                    workdir: Path, name: str = "call", caller_name: str = "",
                    caller_num: str = "5551234", variables: dict[str, str] | None = None,
                    context: str = AGENT_CONTEXT, exten: str = "s") -> PlacedCall:
    """Originate a call: the ``;2`` half runs ``plan``, the ``;1`` half ``context,exten,1``
    (by default the agent context, which runs ``AGI(agi://.../<script>)``). ``variables`` are
    set on the ``;1`` half before its dialplan runs."""
    test_id = f"{name}-{next(_ids)}"
    ctx = f"av-caller-{test_id}"
    recording = workdir / f"rec-{test_id}"
    peer.set_context(ctx, plan.dialplan(recording, test_id))
    since = len(ami.events)
    chan_id = str(uuidlib.uuid4())
    headers: dict[str, object] = {
        "Channel": f"Local/s@{ctx}/n", "Context": context, "Exten": exten,
        "Priority": 1, "Async": "true", "ChannelId": chan_id,
        "OtherChannelId": str(uuidlib.uuid4()),
        "Variable": [f"AV_TEST={test_id}", f"AV_SCRIPT={script}",
                     *(f"{k}={v}" for k, v in (variables or {}).items())],
    }
    if caller_name or caller_num:
        headers["CallerID"] = f'"{caller_name}" <{caller_num}>' if caller_name else caller_num
    resp = await ami.action("Originate", **headers)
    assert resp.get("Response") == "Success", resp.as_dict()
    return PlacedCall(test_id, chan_id, recording, since)


async def place_call(peer: AsteriskPeer, ami: AmiDriver, plan: CallerPlan, *,
                     timeout: float = 90.0, **kwargs: object) -> CallResult:  # noqa: ASYNC109
    """Originate a call (see :func:`originate`) and wait until the PBX side is done."""
    placed = await originate(peer, ami, plan, **kwargs)  # type: ignore[arg-type]
    return await placed.finish(ami, timeout)
