"""What the emulated caller does, on a timeline: speak, press digits, hang up, get redirected.

:class:`CallerScript` is the builder a test or the ``agi-voice call`` CLI fills in;
:meth:`CallerScript.player` returns a :class:`CallerPlayer`, the sans-I/O runtime the emulator
drives. The player never sleeps and never reads a clock: the AudioSocket side calls
:meth:`CallerPlayer.poll` and :meth:`CallerPlayer.frame` once per 20 ms tick with the tick's
time and reports every agent frame through :meth:`CallerPlayer.observe_agent`; when no
AudioSocket is up the call runner polls at :meth:`CallerPlayer.next_deadline`. So the same
script gives the same bytes at the same virtual times on every run.

Times. ``at=`` is in seconds from the start of the first AudioSocket session (the moment the
UUID frame goes out: "the caller hears the bot from t = 0"), or, with ``anchor="call"`` (hangup
and redirect only), from the moment the AGI connection opened. ``at=`` also takes a trigger:

* :class:`AgentQuiet` -- once the agent has spoken and then been quiet for ``quiet_ms``. These
  steps run in sequence: each one waits for the agent to speak *after* the previous
  ``AgentQuiet`` step finished (for speech: after the caller's utterance ended), which is what
  a scripted turn-taking conversation needs.
* :class:`AgentStarts` -- ``delay`` seconds after the agent starts its n-th utterance (1-based,
  counted from the first AudioSocket session): "barge in 0.8 s into the agent's 2nd sentence".

The agent "speaks" while the frames it sends have an RMS above ``agent_level``; a loud frame
after at least ``utterance_gap`` seconds of quiet starts a new utterance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from media_sidecar.constants import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE

Via = Literal["audiosocket", "ami", "both"]
Anchor = Literal["audio", "call"]

_EPS = 1e-9  # tick times are t0 + k * 0.02: tolerate float rounding when comparing to a due time


@dataclass(frozen=True, slots=True)
class AgentQuiet:
    """Trigger: the agent spoke (after the previous AgentQuiet step) and was then quiet."""

    quiet_ms: float = 700.0


@dataclass(frozen=True, slots=True)
class AgentStarts:
    """Trigger: ``delay`` seconds after the agent starts utterance number ``utterance`` (1-based)."""

    utterance: int
    delay: float = 0.0


When = float | AgentQuiet | AgentStarts


@dataclass(frozen=True, slots=True)
class Speak:
    pcm: np.ndarray  # int16 mono 8 kHz


@dataclass(frozen=True, slots=True)
class Dtmf:
    """One digit. ``via``: an AudioSocket ``03 00 01 <digit>`` frame, AMI DTMF events, or both."""

    digit: str
    via: Via = "audiosocket"


@dataclass(frozen=True, slots=True)
class Hangup:
    cause: int = 16


@dataclass(frozen=True, slots=True)
class Redirect:
    context: str
    exten: str
    priority: int = 1


CallerAction = Dtmf | Hangup | Redirect
"""What :meth:`CallerPlayer.poll` hands to the emulator (speech is played by the player)."""


@dataclass(frozen=True, slots=True)
class _After:
    """Internal trigger: ``gap`` seconds after another step fired (the digits of one dtmf())."""

    step: _Step
    gap: float


_When = When | _After


@dataclass(slots=True)
class _Step:
    action: Speak | CallerAction
    when: _When
    anchor: Anchor = "audio"
    fired_at: float | None = None  # absolute time the step fired
    ends_at: float | None = None  # absolute time its effect ended (speech end)


@dataclass(frozen=True, slots=True)
class FiredStep:
    """A log line: at ``t`` (seconds from the audio anchor) the caller did ``what``."""

    t: float
    what: str


def as_samples(pcm: bytes | np.ndarray) -> np.ndarray:
    """slin bytes (16-bit little-endian) or an int16 array -> an int16 array. Raises ValueError."""
    if isinstance(pcm, np.ndarray):
        if pcm.dtype != np.int16 or pcm.ndim != 1:
            raise ValueError(
                f"caller audio must be 1-D int16, got {pcm.dtype} with {pcm.ndim} dims"
            )
        return pcm
    if len(pcm) % 2:
        raise ValueError(f"slin audio must have an even number of bytes, got {len(pcm)}")
    return np.frombuffer(pcm, dtype="<i2").astype(np.int16)


class CallerScript:
    """Builder of the caller's timeline. Every method returns ``self`` so calls chain."""

    def __init__(self, *, agent_level: float = 300.0, utterance_gap: float = 0.3) -> None:
        self.agent_level = agent_level
        self.utterance_gap = utterance_gap
        self.steps: list[_Step] = []

    def speak(self, pcm: bytes | np.ndarray, at: When = 0.0) -> CallerScript:
        """Play 8 kHz slin ``pcm`` as the caller's voice from ``at``."""
        self.steps.append(_Step(Speak(as_samples(pcm)), at))
        return self

    def speak_after_agent_quiet(
        self, pcm: bytes | np.ndarray, quiet_ms: float = 700.0
    ) -> CallerScript:
        """Speak once the agent has answered and then been quiet for ``quiet_ms``."""
        return self.speak(pcm, at=AgentQuiet(quiet_ms))

    def barge_in(self, pcm: bytes | np.ndarray, utterance: int, delay: float) -> CallerScript:
        """Speak ``delay`` s after the agent starts its ``utterance``-th utterance."""
        return self.speak(pcm, at=AgentStarts(utterance, delay))

    def dtmf(
        self, digits: str, at: When, via: Via = "audiosocket", gap: float = 0.25
    ) -> CallerScript:
        """Press ``digits`` (``0-9*#A-D``): the first at ``at``, each next one ``gap`` s later."""
        prev: _Step | None = None
        for digit in digits:
            if digit not in "0123456789*#ABCD":
                raise ValueError(f"{digit!r} is not a DTMF digit")
            when: _When = at if prev is None else _After(prev, gap)
            prev = _Step(Dtmf(digit, via), when)
            self.steps.append(prev)
        return self

    def hangup(self, at: When, anchor: Anchor = "audio", cause: int = 16) -> CallerScript:
        """The caller hangs up (the channel gets a soft hangup, like an AMI ``Hangup``)."""
        self.steps.append(_Step(Hangup(cause), at, anchor))
        return self

    def redirect(
        self, context: str, exten: str, priority: int = 1, at: When = 0.0, anchor: Anchor = "audio"
    ) -> CallerScript:
        """An AMI ``Redirect`` of the channel to ``context,exten,priority``."""
        self.steps.append(_Step(Redirect(context, exten, priority), at, anchor))
        return self

    def player(self) -> CallerPlayer:
        """A fresh runtime for one call (the script itself can be reused)."""
        return CallerPlayer(self)


class CallerPlayer:
    """The sans-I/O runtime of one :class:`CallerScript` (see the module docstring)."""

    def __init__(self, script: CallerScript) -> None:
        clones = {id(s): _Step(s.action, s.when, s.anchor) for s in script.steps}
        for s in clones.values():
            if isinstance(s.when, _After):
                s.when = _After(clones[id(s.when.step)], s.when.gap)
        self._steps = list(clones.values())
        self._level = script.agent_level
        self._gap = script.utterance_gap
        self.call_t0: float | None = None
        self.audio_t0: float | None = None
        self.in_audio = False
        self.agent_utterances: list[float] = []  # absolute start times
        self._last_loud_end: float | None = None
        self._playing: list[tuple[int, np.ndarray]] = []  # (start sample from audio_t0, samples)
        self.log: list[FiredStep] = []

    # -- anchors --------------------------------------------------------------------------------
    def start_call(self, now: float) -> None:
        """The AGI connection opened: the anchor of ``anchor="call"`` steps."""
        if self.call_t0 is None:
            self.call_t0 = now

    def begin_audio(self, now: float) -> None:
        """An AudioSocket session started (the first one sets the audio anchor)."""
        if self.audio_t0 is None:
            self.audio_t0 = now
        self.in_audio = True

    def end_audio(self) -> None:
        self.in_audio = False

    @property
    def done(self) -> bool:
        """Every step has fired."""
        return all(s.fired_at is not None for s in self._steps)

    # -- agent side -----------------------------------------------------------------------------
    def observe_agent(self, now: float, samples: np.ndarray, rate: int = SAMPLE_RATE) -> None:
        """Report one agent frame that arrived at ``now`` (int16 samples at ``rate`` Hz)."""
        if not len(samples):
            return
        rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float32)))))
        if rms < self._level:
            return
        last = self._last_loud_end
        if last is None or now - last >= self._gap - _EPS:
            self.agent_utterances.append(now)
        end = now + len(samples) / rate
        self._last_loud_end = end if last is None else max(last, end)

    # -- timeline -------------------------------------------------------------------------------
    def _due(self, step: _Step) -> float | None:
        """Absolute time the step is due, or None while that is not yet known."""
        w = step.when
        if isinstance(w, float | int):
            t0 = self.call_t0 if step.anchor == "call" else self.audio_t0
            return None if t0 is None else t0 + float(w)
        if isinstance(w, _After):
            return None if w.step.fired_at is None else w.step.fired_at + w.gap
        if isinstance(w, AgentStarts):
            if len(self.agent_utterances) < w.utterance:
                return None
            return self.agent_utterances[w.utterance - 1] + w.delay
        # AgentQuiet: armed when the previous AgentQuiet step ended (or at the audio anchor).
        if self.audio_t0 is None:
            return None
        armed = self.audio_t0
        for s in self._steps:
            if s is step:
                break
            if isinstance(s.when, AgentQuiet):
                if s.fired_at is None or s.ends_at is None:
                    return None
                armed = s.ends_at
        last = self._last_loud_end
        if last is None or last <= armed + _EPS:
            return None
        return last + w.quiet_ms / 1000.0

    def next_deadline(self) -> float | None:
        """The earliest absolute time a pending step is due, if any is known yet."""
        dues = [d for s in self._steps if s.fired_at is None and (d := self._due(s)) is not None]
        return min(dues, default=None)

    def poll(self, now: float) -> list[CallerAction]:
        """Fire every step due at ``now``; return the actions the emulator must carry out.

        Speech is not returned: it starts playing in the next :meth:`frame` (from its due time,
        or from the start of the current 20 ms slot if the due time is older than that).
        """
        out: list[CallerAction] = []
        progress = True
        while progress:  # a step firing can make another due now (multi-digit DTMF, gap 0)
            progress = False
            for step in self._steps:
                if step.fired_at is not None:
                    continue
                due = self._due(step)
                if due is None or now < due - _EPS:
                    continue
                progress = True
                step.fired_at = max(due, now - FRAME_SECONDS)
                step.ends_at = step.fired_at
                act = step.action
                if isinstance(act, Speak):
                    self._start_speech(step, act)
                else:
                    out.append(act)
                    self._log(step.fired_at, repr(act))
        return out

    def _start_speech(self, step: _Step, act: Speak) -> None:
        assert step.fired_at is not None
        duration = len(act.pcm) / SAMPLE_RATE
        step.ends_at = step.fired_at + duration
        if self.audio_t0 is None or not self.in_audio:
            self._log(step.fired_at, f"speech of {duration:.2f} s lost (no AudioSocket)")
            return
        start = round((step.fired_at - self.audio_t0) * SAMPLE_RATE)
        self._playing.append((start, act.pcm))
        self._log(step.fired_at, f"speak {duration:.2f} s")

    def frame(self, now: float) -> bytes | None:
        """The caller's slin for the 20 ms ending at ``now``, or None when the caller is silent."""
        if self.audio_t0 is None or not self._playing:
            return None
        end = round((now - self.audio_t0) * SAMPLE_RATE)
        start = end - FRAME_SAMPLES
        mix: np.ndarray | None = None
        for s0, pcm in self._playing:
            lo, hi = max(start, s0), min(end, s0 + len(pcm))
            if lo >= hi:
                continue
            if mix is None:
                mix = np.zeros(FRAME_SAMPLES, dtype=np.int32)
            mix[lo - start : hi - start] += pcm[lo - s0 : hi - s0]
        self._playing = [(s0, p) for s0, p in self._playing if s0 + len(p) > end]
        if mix is None:
            return None
        return np.clip(mix, -32768, 32767).astype("<i2").tobytes()

    def _log(self, t: float, what: str) -> None:
        ref = self.audio_t0 if self.audio_t0 is not None else (self.call_t0 or 0.0)
        self.log.append(FiredStep(round(t - ref, 6), what))


__all__ = [
    "AgentQuiet",
    "AgentStarts",
    "CallerAction",
    "CallerPlayer",
    "CallerScript",
    "Dtmf",
    "FiredStep",
    "Hangup",
    "Redirect",
    "Speak",
    "Via",
    "as_samples",
]
