"""``agi-voice call``: one simulated call through the Asterisk emulator against a running serve.

The emulator connects to the FastAGI server as Asterisk would, answers its commands, opens the
AudioSocket when told to and streams the caller's audio at real time. DTMF goes as AudioSocket
``0x03`` frames (a running serve talks to your real AMI, which the emulator cannot feed). It
prints the AGI exchange, what the caller did, what the agent said (transcribed with the local
STT when the ``local`` extra is installed) and the outcome variables.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import trio

from media_sidecar.config.schema import Config

from .call import CallResult, load_wav, mix_conversation, run_call, to_call_rate, write_wav
from .caller import AgentQuiet, CallerScript
from .channel import ChannelSpec

DEFAULT_SAY = "Please transfer me to the billing department."


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
    script = CallerScript()
    items: list[tuple[np.ndarray, float | None]] = []
    for item in args.wav:
        path, at = _split_at(item, "--wav")
        pcm, rate = load_wav(path)
        items.append((to_call_rate(pcm, rate), at))
    for text in args.say:
        items.append((_synthesize(text), None))
    if not items and not args.dtmf and args.hangup_at is None:
        items.append((_synthesize(DEFAULT_SAY), None))
    for pcm, at in items:
        script.speak(pcm, at=AgentQuiet(700) if at is None else at)
    for item in args.dtmf:
        digits, at = _split_at(item, "--dtmf")
        script.dtmf(digits, at=AgentQuiet(500) if at is None else at, via="audiosocket")
    if args.hangup_at is not None:
        script.hangup(at=args.hangup_at)
    return script


def _agent_text(result: CallResult) -> str:
    try:
        from media_sidecar.config.schema import SttConfig
        from media_sidecar.speech import make_stt

        stt = make_stt(SttConfig())
    except Exception as exc:  # the local extra is optional here: say why there is no text
        return f"(no transcript: {exc})"
    pcm = np.frombuffer(b"".join(s.agent_audio_pcm() for s in result.audiosocket), dtype="<i2")
    return stt.transcribe(pcm, 8000) if pcm.size else "(the agent sent no audio)"


def report(result: CallResult, out=sys.stdout) -> None:
    print("== AGI exchange (<< Asterisk, >> agi-voice)", file=out)
    for line in result.transcript:
        text = line.data.decode("utf-8", "replace").rstrip("\n")
        if line.direction == "<<" and text.startswith("agi_"):
            continue
        print(f"  {line.direction} {text}", file=out)
    print("== caller", file=out)
    for step in result.caller_log:
        print(f"  {step.t:6.2f} s  {step.what}", file=out)
    print("== agent said", file=out)
    print(f"  {_agent_text(result)}", file=out)
    print("== outcome", file=out)
    for name in ("AI_STATUS", "AI_TRANSFER_TO", "AI_REASON", "AI_SUMMARY", "AGISTATUS"):
        if name in result.variables:
            print(f"  {name}={result.variables[name]}", file=out)
    for s in result.audiosocket:
        print(f"  AudioSocket: {s.closed_by} (result {s.result_code}), "
              f"{len(s.audio_frames())} agent frames", file=out)


def run_cli_call(cfg: Config, args: argparse.Namespace) -> int:
    host, port = cfg.fastagi.listen.host, cfg.fastagi.listen.port
    if args.agi:
        host, _, p = args.agi.rpartition(":")
        port = int(p)
    script = build_script(args)
    spec = ChannelSpec(channel="PJSIP/emulator-00000001", script=args.script,
                       callerid=args.callerid, dnid=args.dnid, context="from-pstn",
                       extension=args.dnid, args=())

    async def main() -> CallResult:
        with trio.fail_after(args.max_seconds):
            return await run_call(host, port, spec, script)

    try:
        result = trio.run(main)
    except trio.TooSlowError:
        print(f"agi-voice call: no outcome within {args.max_seconds} s", file=sys.stderr)
        return 1
    if result.agi.connect_error:
        print(f"agi-voice call: cannot reach the FastAGI server at {host}:{port}: "
              f"{result.agi.connect_error} (is `agi-voice serve` running?)", file=sys.stderr)
        return 1
    report(result)
    if args.out:
        mixed = mix_conversation(result, stereo=args.out_side == "both")
        if args.out_side == "agent":
            mixed = np.frombuffer(b"".join(s.agent_audio_pcm() for s in result.audiosocket),
                                  dtype="<i2")
        write_wav(Path(args.out), mixed)
        print(f"== wrote {args.out}")
    return 0 if result.variables.get("AI_STATUS") not in (None, "FAILED") else 3
