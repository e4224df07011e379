"""``agi-voice call``: one simulated call through the Asterisk emulator against a running serve.

The emulator dials the FastAGI server as Asterisk would, answers its commands, opens the
AudioSocket when told to and streams the caller's audio at real time. DTMF goes as AudioSocket
``0x03`` frames (a running serve talks to your real AMI, which cannot know an emulated channel).

What it prints, and where each part comes from:

* **the conversation**, turn by turn: the caller's words as the product recognised them and the
  agent's words as the product said them (its brain's or provider's text, not a transcription
  of the audio), the tool actions, and which assistant answered. All of it is the product's own
  call record for this call's uuid, read from the JSON-lines file the sidecar appends to
  (``sidecar.records_path`` of the config, or ``--records``). Why the record file and not a new
  summary on the control link: the record is already the product's complete account of the
  call, written after the final outcome is known (``outcome_confirmed``); the control link is a
  contract between the two planes that the CLI is no party to, and carrying every transcript
  through the call-control plane so that a test tool can print it would cost every call. The
  price: the serve must write records, and the CLI must be able to read that file (same host).
* **what the emulated caller did** (speech, keys, hang-up), from the emulator's own log;
* **the outcome**: the AI_* variables the product set on the channel, AGISTATUS, and how the
  AudioSocket ended;
* ``--transcribe``: the agent's audio re-transcribed by the local STT, labelled as such (a check
  of the audio itself, e.g. for a TTS voice that garbles words);
* ``--show-agi``: the AGI exchange.

On ``--max-seconds`` the emulated caller hangs up, as a person who gives up would; the product
then ends the call and writes its record, and everything gathered is printed under a line that
says the call timed out.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np
import trio

from media_sidecar.config.schema import Config
from media_sidecar.constants import SAMPLE_RATE
from media_sidecar.protocol.control import OUTCOME_WAIT_SECONDS

from .agi_side import AgiResult, run_agi
from .audiosocket_side import AudioSocketResult
from .call import _drive_idle, load_wav, mix_conversation, to_call_rate, write_wav
from .caller import AgentQuiet, CallerPlayer, CallerScript, Dtmf, Hangup, Redirect
from .channel import ChannelSpec, EmulatedChannel

DEFAULT_SAY = "Please transfer me to the billing department."
HANGUP_GRACE = 5.0
"""After a timeout: how long the AGI session gets to end once the emulated caller hung up."""
RECORD_WAIT = OUTCOME_WAIT_SECONDS + 2.0
"""How long to look for the call record after the call: the sidecar holds it until the
control plane's outcome arrives (at most ``OUTCOME_WAIT_SECONDS``), then writes it."""
RECORD_POLL = 0.1

EXIT_OK, EXIT_UNREACHABLE, EXIT_FAILED, EXIT_TIMED_OUT = 0, 1, 3, 4

_VIA = {"audiosocket": "AudioSocket DTMF frame", "ami": "AMI DTMF events",
        "both": "AudioSocket frame and AMI events"}
_KEYPAD_TEXT = re.compile(r"^\[(?:keypad|DTMF) (.+)\]$")


# -- the caller's script ----------------------------------------------------------------------------
def _split_at(item: str, what: str) -> tuple[str, float | None]:
    if "@" in item:
        value, _, at = item.rpartition("@")
        try:
            return value, float(at)
        except ValueError:
            raise SystemExit(f"agi-voice call: {what} {item!r}: expected VALUE@SECONDS") from None
    return item, None


def _synthesize(text: str) -> np.ndarray:
    try:
        from media_sidecar.config.schema import TtsConfig
        from media_sidecar.speech import make_tts
    except ImportError as exc:  # pragma: no cover - import guard
        raise SystemExit(f"agi-voice call: --say needs the local extra ({exc})") from None
    tts = make_tts(TtsConfig())
    audio = np.concatenate([np.asarray(c, dtype=np.int16) for c in tts.synthesize(text)])
    return to_call_rate(audio, tts.rate)


def build_script(args: argparse.Namespace) -> CallerScript:
    """The caller's timeline from ``--wav``, ``--say``, ``--dtmf`` and ``--hangup-at``: speech
    first, then keys, each (without ``@``) once the agent has been quiet for a moment. With none
    of them the caller says :data:`DEFAULT_SAY`. Raises SystemExit for a bad item."""
    script = CallerScript()
    items: list[tuple[np.ndarray, float | None]] = []
    for item in args.wav:
        path, at = _split_at(item, "--wav")
        try:
            pcm, rate = load_wav(path)
        except (OSError, ValueError, EOFError) as exc:
            raise SystemExit(f"agi-voice call: --wav {path}: {exc}") from None
        items.append((to_call_rate(pcm, rate), at))
    for text in args.say:
        items.append((_synthesize(text), None))
    if not items and not args.dtmf and args.hangup_at is None:
        items.append((_synthesize(DEFAULT_SAY), None))
    for pcm, at in items:
        script.speak(pcm, at=AgentQuiet(700) if at is None else at)
    for item in args.dtmf:
        digits, at = _split_at(item, "--dtmf")
        try:
            script.dtmf(digits, at=AgentQuiet(500) if at is None else at, via="audiosocket")
        except ValueError as exc:
            raise SystemExit(f"agi-voice call: --dtmf {item!r}: {exc}") from None
    if args.hangup_at is not None:
        script.hangup(at=args.hangup_at)
    return script


def channel_spec(args: argparse.Namespace) -> ChannelSpec:
    """The emulated channel: ``--assistant`` becomes the AI_ASSISTANT channel variable, as a
    dialplan's ``Set(AI_ASSISTANT=...)`` before ``AGI()`` would set it."""
    variables = {"AI_ASSISTANT": args.assistant} if args.assistant else {}
    try:
        return ChannelSpec(channel="PJSIP/emulator-00000001", script=args.script,
                           callerid=args.callerid, dnid=args.dnid, context="from-pstn",
                           extension=args.dnid, args=(), variables=variables)
    except ValueError as exc:
        raise SystemExit(f"agi-voice call: {exc}") from None


# -- placing the call -------------------------------------------------------------------------------
@dataclass
class PlacedCall:
    """Everything one ``agi-voice call`` gathered, complete or cut short by the timeout."""

    request: str
    channel: EmulatedChannel
    player: CallerPlayer
    script: CallerScript
    max_seconds: float
    agi: AgiResult | None = None
    """None when the AGI session had not ended even after the timeout's hang-up."""
    sessions: list[AudioSocketResult] = field(default_factory=list)
    timed_out: bool = False
    hangup_grace: float = HANGUP_GRACE
    ended_after_hangup: float | None = None
    """After a timeout: seconds from the caller's hang-up to the end of the AGI session."""
    records_path: str = ""
    record: dict[str, Any] | None = None
    record_note: str = ""
    """Why there is no record, when there is none."""

    @property
    def variables(self) -> dict[str, str]:
        return self.agi.variables if self.agi is not None else dict(self.channel.variables)

    @property
    def uuid(self) -> str | None:
        return self.sessions[0].uuid if self.sessions else None


async def place_call(host: str, port: int, spec: ChannelSpec, script: CallerScript, *,
                     max_seconds: float, records_path: str = "",
                     hangup_grace: float = HANGUP_GRACE,
                     record_wait: float = RECORD_WAIT) -> PlacedCall:
    """Place one call and gather what it produced, then the product's record of it.

    At ``max_seconds`` the emulated caller hangs up; the AGI session then gets
    ``hangup_grace`` seconds to end before it is abandoned (``agi`` stays None). Never raises
    for what the servers do; cancellation propagates.
    """
    offset = _file_size(records_path)
    channel = EmulatedChannel(spec)
    player = script.player()
    placed = PlacedCall(f"agi://{host}:{port}/{spec.script or ''}", channel, player, script,
                        max_seconds, hangup_grace=hangup_grace, records_path=records_path)
    done = trio.Event()

    async def agi() -> None:
        placed.agi = await run_agi(host, port, channel, caller=player)
        done.set()

    async with trio.open_nursery() as nursery:
        player.start_call(trio.current_time())
        nursery.start_soon(_drive_idle, channel, player)
        nursery.start_soon(_watch_audio, channel, placed.sessions)
        nursery.start_soon(agi)
        with trio.move_on_after(max_seconds):
            await done.wait()
        if not done.is_set():
            placed.timed_out = True
            hung_up = trio.current_time()
            channel.hangup()
            with trio.move_on_after(hangup_grace):
                await done.wait()
                placed.ended_after_hangup = trio.current_time() - hung_up
        nursery.cancel_scope.cancel()
    if placed.agi is not None:
        placed.sessions = list(placed.agi.audiosocket)
    await _find_record(placed, offset, record_wait)
    return placed


async def _watch_audio(channel: EmulatedChannel, seen: list[AudioSocketResult]) -> None:
    """Keep every AudioSocket session's result as it starts (for a call cut short)."""
    while True:
        await channel.wait_audio_change()
        session = channel.audio_session
        if session is not None and all(r is not session.result for r in seen):
            seen.append(session.result)


async def _find_record(placed: PlacedCall, offset: int, within: float) -> None:
    uuid = placed.uuid
    if uuid is None or not any(s.closed_by != "not_answered" for s in placed.sessions):
        placed.record_note = "the call never reached the media sidecar: no conversation"
        return
    if not placed.records_path:
        placed.record_note = (
            "the config names no records file (sidecar.records_path; the default config reads "
            "AGI_VOICE_RECORDS): run serve with one, or pass --records FILE, to see the turns "
            "(--transcribe re-transcribes the agent's audio instead)")
        return
    path = Path(placed.records_path)
    deadline = trio.current_time() + within
    while True:
        records, offset = await trio.to_thread.run_sync(read_new_records, path, offset)
        for rec in records:
            if rec.get("uuid") == uuid:
                placed.record = rec
                return
        if trio.current_time() >= deadline:
            break
        await trio.sleep(RECORD_POLL)  # a file has no change event to wait on portably
    placed.record_note = (f"no record of call {uuid} appeared in {path} within {within:.0f} s "
                          f"(is it the file this serve writes, and readable by you?)")


def _file_size(path: str) -> int:
    try:
        return Path(path).stat().st_size if path else 0
    except OSError:
        return 0


def read_new_records(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """The complete JSON lines appended to ``path`` after byte ``offset``, and the offset after
    the last of them. A file shorter than ``offset`` was rotated or truncated: read it from the
    start. A missing file gives nothing; an unparsable line is skipped."""
    try:
        with path.open("rb") as f:
            if f.seek(0, 2) < offset:
                offset = 0
            f.seek(offset)
            data = f.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
    out: list[dict[str, Any]] = []
    for line in data[:end].splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out, offset + end


# -- the report -------------------------------------------------------------------------------------
def _seconds(value: object) -> str:
    return f"{value:7.2f}" if isinstance(value, int | float) else " " * 7


def _caller_said(turn: dict[str, Any]) -> str:
    text = str(turn.get("caller_text") or "")
    keys = _KEYPAD_TEXT.match(text)
    if turn.get("trigger") == "dtmf" and keys:
        return f"pressed {keys.group(1)}"
    return text


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def conversation_lines(rec: dict[str, Any]) -> list[str]:
    """The record's turns and tool actions in time order, one line per utterance or action.

    A caller line is at the end of the caller's speech; for a key, the turn's start (its first
    frame less ``stage_ms.first_frame``); with neither (no input) it is not timed and stands
    just before the agent's answer. An agent line is at the turn's first frame sent."""
    events: list[tuple[float, int, str]] = []
    last_t = 0.0
    kept = rec.get("transcripts") is not False  # sidecar.records.transcripts: false empties them
    for turn in rec.get("turns", []):
        agent_t = _number(turn.get("first_frame_sent"))
        trigger = turn.get("trigger")
        caller = _caller_said(turn) or ("(said nothing)" if trigger == "no-input" else
                                        "(words not kept)" if not kept and trigger in
                                        ("speech", "dtmf") else "")
        if caller:
            t = _number(turn.get("speech_end"))
            start = _number((turn.get("stage_ms") or {}).get("first_frame"))
            if t is None and start is not None and agent_t is not None:
                t = round(agent_t - start / 1000.0, 3)
            key = t if t is not None else (agent_t if agent_t is not None else last_t)
            last_t = max(last_t, key)
            events.append((key, len(events), f"{_seconds(t)}  caller  {caller}"))
        agent = str(turn.get("agent_text") or "")
        if not agent and not kept and agent_t is not None:
            agent = "(words not kept)"
        if agent:
            last_t = agent_t if agent_t is not None else last_t
            notes = []
            if turn.get("intent"):
                notes.append(f"intent {turn['intent']}")
            if turn.get("latency_ms") is not None:
                notes.append(f"{turn['latency_ms']:.0f} ms after the caller stopped")
            if turn.get("interrupted"):
                notes.append(f"interrupted; the caller heard: {turn.get('heard_text') or '-'!r}")
            extra = f"  [{'; '.join(notes)}]" if notes else ""
            events.append((last_t, len(events), f"{_seconds(agent_t)}  agent   {agent}{extra}"))
    for act in rec.get("actions", []):
        what = str(act.get("kind", "action"))
        if act.get("tool"):
            what = f"tool {act['tool']}({json.dumps(act.get('arguments', {}), sort_keys=True)})"
        if act.get("destination"):
            what += f" to {act['destination']}"
        details = [str(act[k]) for k in ("reason", "result") if act.get(k)]
        if details:
            what += f" ({'; '.join(details)})"
        t = _number(act.get("t"))
        events.append((t if t is not None else last_t, len(events),
                       f"{_seconds(t)}  action  {what}"))
    events.sort(key=lambda e: (e[0], e[1]))
    return [line for _, _, line in events]


def _plain_steps(script: CallerScript) -> dict[str, str]:
    """The emulator logs a key or hang-up as the action's repr: say it in words instead."""
    out: dict[str, str] = {}
    for step in script.steps:
        act = step.action
        if isinstance(act, Dtmf):
            out[repr(act)] = f"presses {act.digit} ({_VIA[act.via]})"
        elif isinstance(act, Hangup):
            out[repr(act)] = "hangs up"
        elif isinstance(act, Redirect):
            out[repr(act)] = f"is redirected to {act.context},{act.exten},{act.priority}"
    return out


def _caller_step(what: str, plain: dict[str, str]) -> str:
    if what in plain:
        return plain[what]
    if what.startswith("speak "):
        return f"speaks ({what.removeprefix('speak ')} of audio)"
    return what


def report(placed: PlacedCall, out: IO[str] = sys.stdout, *, show_agi: bool = False,
           transcribe: bool = False,
           transcriber: Callable[[np.ndarray], str] | None = None) -> None:
    """Print the call for a person: header, conversation, caller, outcome (see the module
    docstring for where each part comes from). ``transcriber`` replaces the local STT of
    ``--transcribe`` (tests)."""

    def say(line: str = "") -> None:
        print(line, file=out)

    spec = placed.channel.spec
    asked = placed.channel.spec.variables.get("AI_ASSISTANT")
    say(f"call {placed.request} from {spec.callerid} to {spec.dnid}"
        + (f", asking for assistant {asked} (AI_ASSISTANT)" if asked else ""))
    if show_agi:
        say("== AGI exchange (<< Asterisk, >> agi-voice)")
        if placed.agi is None:
            say("  (the AGI session had not ended: no exchange to show)")
        for line in placed.agi.transcript if placed.agi is not None else []:
            text = line.data.decode("utf-8", "replace").rstrip("\n")
            if not (line.direction == "<<" and (text.startswith("agi_") or not text)):
                say(f"  {line.direction} {text}")
    rec = placed.record
    if rec is not None:
        say(f"== conversation (the product's call record {rec.get('uuid')}: assistant "
            f"{rec.get('assistant')}; seconds from the AudioSocket start)")
        if rec.get("transcripts") is False:
            say("  (this serve keeps records without what was said: sidecar.records.transcripts "
                "is false; --transcribe re-transcribes the agent's audio)")
        for said in conversation_lines(rec) or ["(no turns)"]:
            say(f"  {said}")
    else:
        say("== conversation")
        say(f"  ({placed.record_note})")
    say("== the emulated caller (seconds from the AudioSocket start)")
    plain = _plain_steps(placed.script)
    for step in placed.player.log:
        say(f"  {step.t:7.2f}  {_caller_step(step.what, plain)}")
    if not placed.player.log:
        say("  (did nothing)")
    if transcribe:
        say("== agent audio re-transcribed by the local STT (a check of the audio; not the "
            "product's text)")
        say(f"  {_transcribe(placed.sessions, transcriber)}")
    if placed.timed_out:
        how = (f"the AGI session had not ended {placed.hangup_grace:g} s after that: the values "
               "below are what was set so far" if placed.ended_after_hangup is None else
               f"the AGI session ended {placed.ended_after_hangup:.1f} s later")
        say(f"== TIMED OUT after {placed.max_seconds:g} s: the emulated caller hung up; {how}")
    say("== outcome")
    variables = placed.variables
    for name in ("AI_STATUS", "AI_TRANSFER_TO", "AI_REASON", "AI_SUMMARY", "AGISTATUS"):
        if name in variables:
            say(f"  {name}={variables[name]}")
    if "AI_STATUS" not in variables:
        say("  AI_STATUS is not set")
    for s in placed.sessions:
        frames = s.audio_frames()
        seconds = len(s.agent_audio_pcm()) / 2 / SAMPLE_RATE
        say(f"  media: AudioSocket {s.uuid} ended by {s.closed_by or 'nothing yet'} (result "
            f"{s.result_code}); the agent sent {len(frames)} audio frames ({seconds:.2f} s)")


def _transcribe(sessions: list[AudioSocketResult],
                transcriber: Callable[[np.ndarray], str] | None) -> str:
    pcm = np.frombuffer(b"".join(s.agent_audio_pcm() for s in sessions), dtype="<i2")
    if not pcm.size:
        return "(the agent sent no audio)"
    if transcriber is None:
        try:
            from media_sidecar.config.schema import SttConfig
            from media_sidecar.speech import make_stt

            stt = make_stt(SttConfig())
        except Exception as exc:  # the local extra is optional here: say why there is no text
            return f"(cannot transcribe: {exc})"
        return stt.transcribe(pcm, 8000) or "(nothing recognised)"
    return transcriber(pcm) or "(nothing recognised)"


def exit_code(placed: PlacedCall) -> int:
    """0: an outcome other than FAILED; 3: FAILED or none; 4: timed out."""
    if placed.timed_out:
        return EXIT_TIMED_OUT
    return EXIT_OK if placed.variables.get("AI_STATUS") not in (None, "", "FAILED") else EXIT_FAILED


# -- the command ------------------------------------------------------------------------------------
def run_cli_call(cfg: Config, args: argparse.Namespace) -> int:
    host, port = cfg.fastagi.listen.host, cfg.fastagi.listen.port
    if args.agi:
        host, _, p = args.agi.rpartition(":")
        if not host or not p.isdigit():
            raise SystemExit(f"agi-voice call: --agi {args.agi!r}: expected HOST:PORT")
        port = int(p)
    if args.assistant and cfg.assistant(args.assistant) is None:
        names = ", ".join(a.name for a in cfg.assistants)
        print(f"agi-voice call: note: {cfg.source} has no assistant {args.assistant!r} "
              f"(it has {names}); the running serve decides", file=sys.stderr)
    script = build_script(args)
    spec = channel_spec(args)
    records = cfg.sidecar.records_path if args.records is None else args.records
    placed = trio.run(partial(place_call, host, port, spec, script,
                              max_seconds=args.max_seconds, records_path=records))
    if placed.agi is not None and placed.agi.connect_error:
        print(f"agi-voice call: cannot reach the FastAGI server at {host}:{port}: "
              f"{placed.agi.connect_error} (is `agi-voice serve` running?)", file=sys.stderr)
        return EXIT_UNREACHABLE
    report(placed, show_agi=args.show_agi, transcribe=args.transcribe)
    if args.out:
        mixed = mix_conversation(placed.sessions, stereo=args.out_side == "both")
        if args.out_side == "agent":
            mixed = np.frombuffer(b"".join(s.agent_audio_pcm() for s in placed.sessions),
                                  dtype="<i2")
        write_wav(Path(args.out), mixed)
        print(f"== wrote {args.out}")
    if placed.timed_out:
        print(f"agi-voice call: timed out after {args.max_seconds:g} s", file=sys.stderr)
    return exit_code(placed)
