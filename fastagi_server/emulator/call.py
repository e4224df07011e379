"""One emulated call end to end: the AGI session, its AudioSocket sessions, the scripted caller.

:func:`run_call` is what the test-suite and ``agi-voice call`` use: it dials the FastAGI server
like ``AGI(agi://host:port/...)``; the server's ``EXEC AudioSocket "uuid,host:port"`` (or
``EXEC Dial "AudioSocket/host:port/uuid/c(codec),..."``) makes the emulator connect to the
sidecar it named and play the :class:`CallerScript` there. While no
AudioSocket is up, the runner still fires the script's timed hangup, redirect and AMI DTMF.

With ``ami=`` (a :class:`~fastagi_server.emulator.ami_server.FakeAmiServer`) the channel is
registered on the fake AMI for the call: its events go out as AMI events, and AMI ``Hangup``,
``Redirect`` reach the emulated channel (see :class:`AmiBridge`).

Also: :func:`load_wav` / :func:`write_wav` (stdlib ``wave``) and :func:`mix_conversation`, both
sides of the call aligned on time at 8 kHz, for ``agi-voice call --out``.
"""

from __future__ import annotations

import math
import wave
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import trio

from fastagi_server.emulator.agi_side import (
    AgiResult,
    AudioRunner,
    Connector,
    TranscriptLine,
    run_agi,
)
from fastagi_server.emulator.audiosocket_side import (
    AudioSocketConfig,
    AudioSocketResult,
    Frame,
    agent_samples,
)
from fastagi_server.emulator.caller import CallerPlayer, CallerScript, FiredStep
from fastagi_server.emulator.channel import ChannelSpec, EmulatedChannel, EventSink
from media_sidecar.constants import FRAME_SECONDS, SAMPLE_RATE
from media_sidecar.protocol.audiosocket import Kind


@dataclass(slots=True)
class CallResult:
    """Everything one emulated call produced."""

    agi: AgiResult
    channel: EmulatedChannel
    caller_log: list[FiredStep]
    started_at: float
    ended_at: float

    @property
    def transcript(self) -> list[TranscriptLine]:
        return self.agi.transcript

    @property
    def variables(self) -> dict[str, str]:
        return self.agi.variables

    @property
    def agi_status(self) -> str:
        return self.agi.agi_status

    @property
    def audiosocket(self) -> list[AudioSocketResult]:
        return self.agi.audiosocket

    @property
    def events(self) -> list[tuple[float, str, dict[str, str]]]:
        return self.channel.events

    def event_names(self) -> list[str]:
        return [name for _, name, _ in self.channel.events]

    def timings(self) -> dict[str, float]:
        """Seconds from the call start: AGI end, AudioSocket start/end, first agent audio."""
        t0 = self.started_at
        out = {"agi_closed": self.agi.ended_at - t0, "call_end": self.ended_at - t0}
        sessions = [s for s in self.audiosocket if s.closed_by != "not_answered"]
        if sessions:
            out["audiosocket_start"] = sessions[0].started_at - t0
            out["audiosocket_end"] = sessions[-1].ended_at - t0
            audio = [f for s in sessions for f in s.audio_frames()]
            if audio:
                out["first_agent_audio"] = audio[0].t - t0
        return out


class AmiBridge:
    """Joins emulated channels to one ``FakeAmiServer``: one bridge per server, many calls.

    It takes the server's ``on_hangup`` / ``on_redirect`` hooks and routes them by channel
    name; channel events go to ``server.emit`` and keep the server's ``FakeChannel`` in step.
    """

    _bridges: weakref.WeakKeyDictionary[Any, AmiBridge] = weakref.WeakKeyDictionary()

    def __init__(self, ami: Any) -> None:
        self.ami = ami
        self.channels: dict[str, EmulatedChannel] = {}
        ami.on_hangup = self._on_hangup
        ami.on_redirect = self._on_redirect

    @classmethod
    def for_server(cls, ami: Any) -> AmiBridge:
        bridge = cls._bridges.get(ami)
        if bridge is None:
            bridge = cls._bridges[ami] = cls(ami)
        return bridge

    def attach(self, ch: EmulatedChannel) -> None:
        spec = ch.spec
        self.ami.add_channel(
            ch.name, ch.uniqueid, linkedid=ch.linkedid, state=ch.state,
            callerid_num=spec.callerid if spec.callerid != "unknown" else "<unknown>",
            callerid_name=spec.calleridname if spec.calleridname != "unknown" else "<unknown>",
            language=spec.language, accountcode=spec.accountcode, context=ch.context,
            exten=ch.exten, priority=str(ch.priority), variables=dict(ch.variables),
        )  # fmt: skip
        self.channels[ch.name] = ch
        ch.event_sink = _chain(ch.event_sink, lambda event, fields: self._emit(ch, event, fields))

    def detach(self, ch: EmulatedChannel) -> None:
        self.channels.pop(ch.name, None)
        self.ami.channels.pop(ch.name, None)

    def _emit(self, ch: EmulatedChannel, event: str, fields: dict[str, str]) -> None:
        fake = self.ami.channels.get(ch.name)
        if fake is not None:
            fake.state, fake.context, fake.exten = ch.state, ch.context, ch.exten
            fake.priority = str(ch.priority)
            if event == "VarSet":
                fake.variables[fields["Variable"]] = fields["Value"]
        self.ami.emit(event, fields)
        if event == "Hangup":
            self.ami.channels.pop(ch.name, None)

    def _on_hangup(self, fake: Any) -> None:
        ch = self.channels.get(fake.name)
        if ch is not None:
            ch.hangup(fake.hangup_cause or 0)  # AMI Hangup without Cause: "Cause: 0" (A1)

    def _on_redirect(self, fake: Any, context: str, exten: str, priority: str) -> None:
        ch = self.channels.get(fake.name)
        if ch is not None:
            ch.redirect(context, exten, int(priority))


def _chain(first: EventSink | None, second: EventSink) -> EventSink:
    if first is None:
        return second

    def both(event: str, fields: dict[str, str]) -> None:
        first(event, fields)
        second(event, dict(fields))

    return both


async def run_call(
    agi_host: str,
    agi_port: int,
    spec: ChannelSpec,
    script: CallerScript | None = None,
    *,
    ami: Any = None,
    event_sink: EventSink | None = None,
    audiosocket_config: AudioSocketConfig | None = None,
    connect_audiosocket: Connector | None = None,
    answer_delay: float = 0.0,
    audio_runner: AudioRunner | None = None,
) -> CallResult:
    """Run one call against the FastAGI server at ``agi_host:agi_port`` until the AGI ends.

    Raises nothing for what the servers do (a refused AGI connection gives
    ``agi_status == "FAILURE"``); wrap it in ``trio.fail_after`` to bound a test.
    """
    channel = EmulatedChannel(spec, event_sink=event_sink)
    player = script.player() if script is not None else None
    bridge = AmiBridge.for_server(ami) if ami is not None else None
    if bridge is not None:
        bridge.attach(channel)
    started = trio.current_time()
    try:
        async with trio.open_nursery() as nursery:
            if player is not None:
                player.start_call(started)
                nursery.start_soon(_drive_idle, channel, player)
            agi = await run_agi(
                agi_host, agi_port, channel, caller=player,
                audiosocket_config=audiosocket_config, connect=connect_audiosocket,
                answer_delay=answer_delay, audio_runner=audio_runner,
            )  # fmt: skip
            nursery.cancel_scope.cancel()
    finally:
        if bridge is not None:
            bridge.detach(channel)
    log = player.log if player is not None else []
    return CallResult(agi, channel, log, started, trio.current_time())


async def _drive_idle(channel: EmulatedChannel, player: CallerPlayer) -> None:
    """Fire timed script steps while no AudioSocket is up (a session polls its own ticks)."""
    while True:
        if channel.audio_session is not None:
            await channel.wait_audio_change()
            continue
        deadline = player.next_deadline()
        with trio.move_on_at(math.inf if deadline is None else deadline):
            await channel.wait_audio_change()
            continue
        if channel.audio_session is None:
            for action in player.poll(trio.current_time()):
                channel.apply_caller_action(action)


# -- audio files ----------------------------------------------------------------------------------
def load_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a 16-bit PCM wav as int16 mono (channels averaged) and its rate. Raises ValueError."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: need 16-bit PCM, got {8 * w.getsampwidth()}-bit")
        channels, rate = w.getnchannels(), w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).round()
    return data.astype(np.int16), rate


def to_call_rate(pcm: np.ndarray, rate: int) -> np.ndarray:
    """Resample int16 mono ``pcm`` to the 8 kHz the caller script plays."""
    if rate == SAMPLE_RATE:
        return pcm
    from media_sidecar.dsp.resample import Resampler

    rs = Resampler(rate, SAMPLE_RATE)
    return np.concatenate([rs.process(pcm), rs.flush()])


def write_wav(path: str | Path, pcm: np.ndarray | bytes, rate: int = SAMPLE_RATE) -> None:
    """Write int16 samples, shape ``(n,)`` or ``(n, channels)``, as a 16-bit PCM wav."""
    arr = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, bytes) else np.asarray(pcm)
    channels = 1 if arr.ndim == 1 else arr.shape[1]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(arr.astype("<i2").tobytes())


def mix_conversation(
    sessions: CallResult | Sequence[AudioSocketResult], *, stereo: bool = True
) -> np.ndarray:
    """Both sides of the call on one 8 kHz timeline from the first AudioSocket start.

    The caller frame sent at ``t`` covers ``[t - 20 ms, t)``. Agent frames play from their
    arrival, queued behind the previous one (Asterisk plays what it gets, when it gets it).
    Returns int16 ``(n, 2)`` (left caller, right agent) or ``(n,)`` mixed.
    """
    if isinstance(sessions, CallResult):
        sessions = sessions.audiosocket
    runs = [s for s in sessions if s.closed_by != "not_answered"]
    if not runs:
        return np.zeros((0, 2) if stereo else 0, dtype=np.int16)
    origin = runs[0].started_at
    caller: list[tuple[int, np.ndarray]] = []
    agent: list[tuple[int, np.ndarray]] = []
    for s in runs:
        for f in s.frames_sent:
            if f.kind == Kind.AUDIO:
                pcm = agent_samples(Frame(f.t, f.kind, f.payload), s.caller_codec)
                caller.append((round((f.t - FRAME_SECONDS - origin) * SAMPLE_RATE), pcm))
        end = -1
        for f in s.audio_frames():
            pcm = agent_samples(f, s.agent_codec)
            start = max(round((f.t - origin) * SAMPLE_RATE), end)
            agent.append((start, pcm))
            end = start + len(pcm)
    n = max((k + len(v) for track in (caller, agent) for k, v in track), default=0)
    out = np.zeros((n, 2), dtype=np.int32)
    for col, track in enumerate((caller, agent)):
        for k, v in track:
            out[max(k, 0) : k + len(v), col] += v[max(-k, 0) :]
    if not stereo:
        return np.clip(out.sum(axis=1), -32768, 32767).astype(np.int16)
    return np.clip(out, -32768, 32767).astype(np.int16)


__all__ = [
    "AmiBridge",
    "CallResult",
    "load_wav",
    "mix_conversation",
    "run_call",
    "to_call_rate",
    "write_wav",
]
