"""The ``agi-voice`` command.

- ``agi-voice serve``: a small supervisor that runs the two planes as two processes (the asyncio
  FastAGI server and the trio media sidecar), restarts either one if it dies (with backoff), and
  stops both on SIGINT/SIGTERM. Two processes, not threads: model inference in the sidecar never
  competes with the control plane's event loop, and a restart of one loses only its own calls.
- ``agi-voice fastagi`` / ``agi-voice sidecar``: one plane alone (what ``serve`` starts).
- ``agi-voice call``: a simulated call through the Asterisk emulator against a running serve.
- ``agi-voice check-config [FILE]``: validate a config file and print what it sets up.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time

from media_sidecar.config.loader import ConfigError, load_config
from media_sidecar.config.schema import Config

log = logging.getLogger("agi_voice")
_VERBOSE = [False]
"""Whether -v was given (read when the config is loaded and logging is set up again)."""


def _setup_logging(verbose: bool, fmt: str | None = None, cfg: Config | None = None) -> None:
    """Log to stderr in ``fmt`` (text, kv or json), with ``cfg``'s levels once it is loaded.

    A format given on the command line is put in the environment, so the two planes that
    ``serve`` starts log the same way. Secrets the config names are redacted from every line.
    """
    from media_sidecar.ops.logs import FORMAT_ENV, secret_values, setup_logging

    if fmt:
        os.environ[FORMAT_ENV] = fmt
    setup_logging(fmt, verbose=verbose, config=cfg.logging if cfg else None,
                  secrets=secret_values(cfg))


def _load(path: str | None) -> Config:
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(f"agi-voice: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    _setup_logging(_VERBOSE[0], None, cfg)  # the config's format and levels, its secrets
    return cfg


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load(args.file)
    print(f"{cfg.source}: OK")
    print(f"  FastAGI      {cfg.fastagi.listen.host}:{cfg.fastagi.listen.port}")
    print(f"  AudioSocket  {cfg.sidecar.audiosocket.host}:{cfg.sidecar.audiosocket.port} "
          f"(Asterisk connects to {cfg.audiosocket_address})")
    print(f"  control link {cfg.control_url}")
    ami = cfg.ami
    print(f"  AMI          {f'{ami.username}@{ami.host}:{ami.port}' if ami.enabled else 'not configured (degraded mode)'}")
    print(f"  routing      default={cfg.routing.default or cfg.assistants[0].name}, "
          f"{len(cfg.routing.rules)} rule(s)")
    for a in cfg.assistants:
        dests = ", ".join(f"{k}={d.context},{d.exten},{d.priority}" for k, d in a.destinations)
        print(f"  assistant {a.name}: provider={a.provider} stt={a.stt.engine} tts={a.tts.engine} "
              f"format={a.audio_format} path={a.media_path} intents={len(a.brain.intents)} "
              f"dtmf={len(a.brain.dtmf)}")
        if a.media_path == "dial":
            print(f"    media: EXEC Dial \"AudioSocket/{cfg.audiosocket_address}/<uuid>/"
                  f"c({a.audio_format}),...\" (caller audio arrives as {a.audio_format})")
        else:
            print(f"    media: EXEC AudioSocket \"<uuid>,{cfg.audiosocket_address}\" (slin 8 kHz)")
        print(f"    destinations: {dests or '(none)'}")
    return 0


def cmd_fastagi(args: argparse.Namespace) -> int:
    import asyncio

    from .server import run_fastagi

    cfg = _load(args.config)
    try:
        asyncio.run(run_fastagi(cfg))
    except KeyboardInterrupt:
        pass
    return 0


def cmd_sidecar(args: argparse.Namespace) -> int:
    import trio

    from media_sidecar.app import run_sidecar

    cfg = _load(args.config)
    try:
        trio.run(run_sidecar, cfg)
    except KeyboardInterrupt:
        pass
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Supervise the two planes until SIGINT/SIGTERM."""
    _load(args.config)  # fail fast, before starting anything
    base = [sys.executable, "-m", "fastagi_server.cli"]
    extra = ["--config", args.config] if args.config else []
    if args.verbose:
        base.append("-v")
    roles = {"sidecar": base + ["sidecar", *extra], "fastagi": base + ["fastagi", *extra]}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    backoff = {r: 0.5 for r in roles}
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for role, argv in roles.items():
        procs[role] = subprocess.Popen(argv)
        log.info("started %s (pid %d)", role, procs[role].pid)
    started = {r: time.monotonic() for r in roles}
    while not stopping:
        time.sleep(0.2)
        for role, proc in procs.items():
            if proc.poll() is None or stopping:
                continue
            if time.monotonic() - started[role] > 30:
                backoff[role] = 0.5
            log.error("%s exited with %s; restarting in %.1f s", role, proc.returncode,
                      backoff[role])
            time.sleep(backoff[role])
            backoff[role] = min(backoff[role] * 2, 30.0)
            procs[role] = subprocess.Popen(roles[role])
            started[role] = time.monotonic()
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


def cmd_call(args: argparse.Namespace) -> int:
    from .emulator.cli_call import run_cli_call

    cfg = _load(args.config)
    return run_cli_call(cfg, args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agi-voice", description=(
        "An AI voice agent for Asterisk and FreePBX: the dialplan hands a call to it with "
        "AGI(agi://host:4573/agent), and the caller talks with an assistant that can be "
        "interrupted, hears keypad digits, and transfers or hangs up. 'serve' runs it; "
        "'check-config' validates a config; 'call' places a simulated call against a running "
        "serve."))
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    log_format = {"choices": ("text", "kv", "json"),
                  "help": "log line format: text (default), kv (key=value) or json; "
                          "overrides logging.format in the config"}
    p.add_argument("--log-format", **log_format)  # type: ignore[arg-type]
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the FastAGI server and the media sidecar")
    s.add_argument("--config", help="YAML config (default: the embedded offline config)")
    s.set_defaults(func=cmd_serve)

    for name, func, text in (("fastagi", cmd_fastagi, "run only the FastAGI control plane"),
                             ("sidecar", cmd_sidecar, "run only the media sidecar")):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("--config")
        sp.set_defaults(func=func)

    c = sub.add_parser("check-config", help="validate a config file")
    c.add_argument("file", nargs="?", help="YAML config (default: the embedded one)")
    c.set_defaults(func=cmd_check_config)

    k = sub.add_parser(
        "call", help="simulate a call through the Asterisk emulator against a running serve",
        description="Place one simulated call through the built-in Asterisk emulator against a "
                    "running 'agi-voice serve' and print it: the conversation as the product "
                    "recognised and said it (from its call record), what the emulated caller "
                    "did, and the outcome variables.",
        epilog="Exit status: 0 the call got an outcome other than FAILED; 1 the FastAGI server "
               "is unreachable; 3 AI_STATUS=FAILED or unset; 4 timed out (--max-seconds).")
    k.add_argument("--config", help="the config the running serve uses: its FastAGI address, "
                                    "its records file, its assistants (default: the embedded one)")
    k.add_argument("--agi", default="", metavar="HOST:PORT",
                   help="FastAGI address to call (default: fastagi.listen of the config)")
    k.add_argument("--script", default="agent", metavar="PATH[?QUERY]",
                   help="AGI script path and query, as in AGI(agi://host:port/PATH?QUERY) "
                        "(default: agent)")
    k.add_argument("--assistant", metavar="NAME",
                   help="ask for this assistant, as the dialplan's Set(AI_ASSISTANT=NAME) does "
                        "(the serve's routing decides; see routing.allow_channel_override)")
    k.add_argument("--wav", action="append", default=[], metavar="FILE[@SECONDS]",
                   help="what the caller says: a 16-bit PCM WAV file, at SECONDS from the start "
                        "of the audio or, without @, once the agent has been quiet for 0.7 s "
                        "(repeatable)")
    k.add_argument("--say", action="append", default=[], metavar="TEXT",
                   help="text the caller says, spoken by the local Piper voice (needs the "
                        "local extra; repeatable). With no --wav, --say, --dtmf or --hangup-at "
                        "the caller asks for billing")
    k.add_argument("--dtmf", action="append", default=[], metavar="DIGITS[@SECONDS]",
                   help="keys the caller presses (0-9, *, #, A-D), sent as AudioSocket DTMF "
                        "frames, at SECONDS or, without @, once the agent has been quiet for "
                        "0.5 s (repeatable)")
    k.add_argument("--hangup-at", type=float, default=None, metavar="SECONDS",
                   help="the caller hangs up at SECONDS from the start of the audio")
    k.add_argument("--max-seconds", type=float, default=60.0, metavar="SECONDS",
                   help="give up after SECONDS: the caller hangs up and what was gathered is "
                        "printed, marked as timed out (default: 60)")
    k.add_argument("--callerid", default="5551234", metavar="NUMBER",
                   help="the caller's number (default: 5551234)")
    k.add_argument("--dnid", default="7000", metavar="NUMBER",
                   help="the number dialled, also the extension (default: 7000)")
    k.add_argument("--records", default=None, metavar="FILE",
                   help="the call records file the serve writes, where the conversation is "
                        "read from (default: sidecar.records_path of the config)")
    k.add_argument("--transcribe", action="store_true",
                   help="also re-transcribe the agent's audio with the local STT, printed as "
                        "such (a check of the audio, not the product's own text)")
    k.add_argument("--show-agi", action="store_true",
                   help="also print the AGI exchange between the emulator and the server")
    k.add_argument("--out", metavar="FILE.wav", help="write the conversation to this WAV file")
    k.add_argument("--out-side", choices=("both", "agent"), default="both",
                   help="--out holds both sides as stereo (left caller, right agent), or only "
                        "the agent (default: both)")
    k.set_defaults(func=cmd_call)
    for command in sub.choices.values():  # also after the command: agi-voice serve --log-format
        command.add_argument("--log-format", default=argparse.SUPPRESS,
                             **log_format)  # type: ignore[arg-type]
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _VERBOSE[0] = args.verbose or bool(os.environ.get("AGI_VOICE_DEBUG"))
    _setup_logging(_VERBOSE[0], getattr(args, "log_format", None))
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
