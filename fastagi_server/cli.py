"""The ``agi-voice`` command.

- ``agi-voice serve``: a small supervisor that runs the two planes as two processes (the asyncio
  FastAGI server and the trio media sidecar): it restarts a plane that dies after it was
  ready, stops with one line and exit status 1 when a plane cannot start, drains both on
  SIGINT/SIGTERM and reloads both on SIGHUP (:mod:`fastagi_server.supervisor`). Two
  processes, not threads: model inference in the sidecar never competes with the control
  plane's event loop, and a restart of one loses only its own calls.
- ``agi-voice fastagi`` / ``agi-voice sidecar``: one plane alone (what ``serve`` starts; the
  same signals: :mod:`fastagi_server.process`, :mod:`media_sidecar.process`).
- ``agi-voice reload [--config FILE]``: validate the config, then send SIGHUP to the running
  serve found by its pid file (``service.runtime_dir``).
- ``agi-voice call``: a simulated call through the Asterisk emulator against a running serve.
- ``agi-voice check-config [FILE] [--strict]``: validate a config file, run the preflight
  (:mod:`fastagi_server.preflight`) and print what it sets up. Exit status 0: usable (warnings
  are printed); 1: preflight errors (``--strict``: warnings too); 2: not a valid config.
- ``agi-voice doctor [--config FILE]``: connect to what the config names (AMI, ports, models)
  and print a checklist with the fix for each failure (:mod:`fastagi_server.doctor`). Exit
  status 0: no FAIL; 1: at least one FAIL; 2: not a valid config.
- ``agi-voice --version``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from media_sidecar.config.loader import ConfigError, load_config
from media_sidecar.config.schema import AssistantConfig, Config

from . import __version__

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


def _assistant_engines(a: AssistantConfig) -> str:
    """What serves an assistant, as fits its provider (a speech-to-speech provider has no
    separate STT or TTS: its model and voice instead)."""
    if a.provider == "openai_realtime":
        r = a.realtime
        return f"model={r.model} voice={r.voice} audio={r.audio} turns={r.turn_detection}"
    if a.provider == "openai_live":
        lv = a.live
        return (f"model={lv.model} voice={lv.voice} audio={lv.audio} "
                f"delegate={lv.delegate_model}")
    if a.provider == "deepgram_agent":
        d = a.deepgram
        return (f"listen={d.listen_model} think={d.think_provider}/{d.think_model} "
                f"speak={d.speak_model} audio={d.audio}")
    if not a.is_pipeline:
        return ""
    stt = a.stt.engine + (f":{a.stt.model}" if a.stt.model else "")
    tts = a.tts.engine + (f":{a.tts.voice}" if a.tts.voice else "")
    llm = a.llm.engine + (f":{a.llm.model}" if a.llm.model else "")
    rules = (f" intents={len(a.brain.intents)} dtmf={len(a.brain.dtmf)}"
             if not a.uses_llm or a.llm.rules_first else "")
    return f"stt={stt} llm={llm} tts={tts}{rules}"


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate, run the preflight (never the port check: serve does that), print a summary.
    Exit status: 0 usable, 1 preflight errors (--strict: warnings too), 2 invalid config."""
    from .preflight import format_finding, has_errors, preflight

    cfg = _load(args.file)
    findings = preflight(cfg, strict=args.strict)
    errors = sum(f.level == "error" for f in findings)
    warnings = len(findings) - errors
    status = f"{errors} error(s)" if errors else "OK"
    print(f"{cfg.source}: {status}" + (f", {warnings} warning(s)" if warnings else ""))
    print(f"  FastAGI      {cfg.fastagi.listen.host}:{cfg.fastagi.listen.port}")
    print(f"  AudioSocket  {cfg.sidecar.audiosocket.host}:{cfg.sidecar.audiosocket.port} "
          f"(Asterisk connects to {cfg.audiosocket_address})")
    print(f"  control link {cfg.control_url}")
    from media_sidecar.config.workers import media_targets, worker_count

    n, step = worker_count(cfg), cfg.sidecar.worker_port_step
    print(f"  media workers {n} local" + (f" (worker I: each port + I*{step}; the last on "
                                          f"AudioSocket {cfg.sidecar.audiosocket.port + (n - 1) * step})"
                                          if n > 1 else "")
          + (f", {len(cfg.fastagi.media)} in fastagi.media: "
             + ", ".join(t.name for t in media_targets(cfg) if not t.local)
             if cfg.fastagi.media else ""))
    ami = cfg.ami
    print(f"  AMI          {f'{ami.username}@{ami.host}:{ami.port}' if ami.enabled else 'not configured (degraded mode)'}")
    print(f"  routing      default={cfg.routing.default or cfg.assistants[0].name}, "
          f"{len(cfg.routing.rules)} rule(s)")
    for a in cfg.assistants:
        dests = ", ".join(f"{k}={d.context},{d.exten},{d.priority}" for k, d in a.destinations)
        engines = _assistant_engines(a)
        print(f"  assistant {a.name}: provider={a.provider} {engines + ' ' if engines else ''}"
              f"format={a.audio_format} path={a.media_path}")
        if a.media_path == "dial":
            print(f"    media: EXEC Dial \"AudioSocket/{cfg.audiosocket_address}/<uuid>/"
                  f"c({a.audio_format}),...\" (caller audio arrives as {a.audio_format})")
        else:
            print(f"    media: EXEC AudioSocket \"<uuid>,{cfg.audiosocket_address}\" (slin 8 kHz)")
        print(f"    destinations: {dests or '(none)'}")
    for f in findings:
        print(format_finding(f, cfg.source))
    return 1 if has_errors(findings) else 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Print the doctor's checklist as it goes. Exit status: 0 no FAIL, 1 a FAIL, 2 invalid
    config."""
    import asyncio

    from .doctor import run_doctor

    cfg = _load(args.config)
    checks = asyncio.run(run_doctor(cfg, action_timeout=args.timeout,
                                    report=lambda c: print(c.line(), flush=True)))
    fails = sum(c.status == "FAIL" for c in checks)
    warns = sum(c.status == "WARN" for c in checks)
    print(f"{fails} failure(s), {warns} warning(s)")
    return 1 if fails else 0


def cmd_fastagi(args: argparse.Namespace) -> int:
    from .process import main as run_fastagi_process

    cfg = _load(args.config)
    return run_fastagi_process(cfg, args.config, args.status_fd)


def cmd_sidecar(args: argparse.Namespace) -> int:
    from media_sidecar.process import main as run_sidecar_process

    cfg = _load(args.config)
    return run_sidecar_process(cfg, args.config, args.status_fd, args.worker)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from .dashboard.server import run as run_dashboard

    cfg = _load(args.config)
    return run_dashboard(cfg, args.status_fd)


def _preflight_serve(cfg: Config) -> None:
    """The preflight with the port check: each finding as one line on stderr; exit 2 on an
    error (a port in use, an unknown voice, the AMI secret missing ...)."""
    from .preflight import format_finding, has_errors, preflight

    findings = preflight(cfg, serve=True)
    for f in findings:
        print(f"agi-voice: {format_finding(f, cfg.source)}", file=sys.stderr)
    if has_errors(findings):
        raise SystemExit(2)


def cmd_serve(args: argparse.Namespace) -> int:
    """Supervise the two planes until SIGINT/SIGTERM (:mod:`.supervisor`). Exit status 0
    after a drain; 1 when a plane could not start (its one line is printed) or had to be
    killed at the stop deadline; 2 when the preflight fails."""
    import asyncio

    from .supervisor import Supervisor, pid_file

    cfg = _load(args.config)
    _preflight_serve(cfg)  # fail fast, before starting anything
    supervisor = Supervisor(cfg, args.config, verbose=args.verbose, pid_path=pid_file(cfg))
    return asyncio.run(supervisor.run())


def cmd_reload(args: argparse.Namespace) -> int:
    """Validate the config, then SIGHUP the running serve its pid file names. Exit status 0:
    sent (the serve logs whether both planes took it); 1: no running serve, or the new config
    would not pass check-config (nothing sent); 2: not a valid config (nothing sent)."""
    from .preflight import format_finding, has_errors, preflight
    from .supervisor import pid_file

    cfg = _load(args.config)
    findings = preflight(cfg)
    for f in findings:
        print(f"agi-voice reload: {format_finding(f, cfg.source)}", file=sys.stderr)
    if has_errors(findings):
        print("agi-voice reload: nothing sent; the running config stays", file=sys.stderr)
        return 1
    path = Path(args.pid_file) if args.pid_file else pid_file(cfg)
    try:
        pid = args.pid or int(path.read_text().strip())
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not a pid"
        print(f"agi-voice reload: no running serve found: {path}: {why} (is serve running "
              "with this --config? or send SIGHUP to it: systemctl reload agi-voice)",
              file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        print(f"agi-voice reload: no running serve found: pid {pid} is gone",
              file=sys.stderr)
        return 1
    except PermissionError:
        print(f"agi-voice reload: not allowed to signal pid {pid}: run it as the service's "
              "user or root (or: systemctl reload agi-voice)", file=sys.stderr)
        return 1
    print(f"agi-voice reload: SIGHUP sent to serve (pid {pid}); it logs the result "
          "(new calls use the new config; live calls keep theirs)")
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
    p.add_argument("--version", action="version", version=f"agi-voice {__version__}")
    log_format = {"choices": ("text", "kv", "json"),
                  "help": "log line format: text (default), kv (key=value) or json; "
                          "overrides logging.format in the config"}
    p.add_argument("--log-format", **log_format)  # type: ignore[arg-type]
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "serve", help="run the FastAGI server and the media sidecar",
        description="Run both planes under a small supervisor. SIGTERM or SIGINT drains: new "
                    "calls are refused (AI_REASON=draining), live calls get "
                    "drain.deadline_seconds, then each is handed to its fallback; a second "
                    "signal stops at once. SIGHUP (agi-voice reload) reloads the config for "
                    "new calls.",
        epilog="Exit status: 0 stopped after a drain; 1 a plane could not start (its one "
               "line is printed) or had to be killed; 2 the config or the preflight failed.")
    s.add_argument("--config", help="YAML config (default: the embedded offline config)")
    s.set_defaults(func=cmd_serve)

    for name, func, text in (("fastagi", cmd_fastagi, "run only the FastAGI control plane"),
                             ("sidecar", cmd_sidecar, "run only the media sidecar")):
        sp = sub.add_parser(name, help=text, description=f"{text[0].upper()}{text[1:]}, as "
                            "serve starts it: SIGTERM/SIGINT drain, SIGHUP reloads the config.")
        sp.add_argument("--config", help="YAML config (default: the embedded one)")
        sp.add_argument("--status-fd", type=int, default=None, help=argparse.SUPPRESS)
        if name == "sidecar":
            sp.add_argument("--worker", type=int, default=0, metavar="I",
                            help="run media worker I: each configured sidecar and health port "
                                 "+ I * sidecar.worker_port_step (default: 0, the ports as "
                                 "configured)")
        sp.set_defaults(func=func)

    dash = sub.add_parser(
        "dashboard", help="run only the web dashboard (serve runs it too)",
        description="Serve the web dashboard on dashboard.listen (default 127.0.0.1:9095): "
                    "live calls, call history with transcripts and recordings, charts. On an "
                    "address other than loopback a login is required: the password comes from "
                    "$AGI_VOICE_DASHBOARD_PASSWORD (it refuses to start without one there); "
                    "$AGI_VOICE_DASHBOARD_SECRET keeps sessions across restarts.",
        epilog="Exit status: 0 stopped; 1 could not start (port, store); 2 off, or a "
               "non-loopback address without a password.")
    dash.add_argument("--config", help="YAML config (default: the embedded one)")
    dash.add_argument("--status-fd", type=int, default=None, help=argparse.SUPPRESS)
    dash.set_defaults(func=cmd_dashboard)

    r = sub.add_parser(
        "reload", help="reload the config of a running serve (SIGHUP) for new calls",
        description="Validate the config, then send SIGHUP to the running 'agi-voice serve', "
                    "found by its pid file <service.runtime_dir>/agi-voice-<FastAGI "
                    "port>.pid. New calls use the new config; live calls keep theirs; an "
                    "invalid config is refused and the running one stays. Under systemd, "
                    "'systemctl reload agi-voice' does the same.",
        epilog="Exit status: 0 sent; 1 no running serve found, or the config fails "
               "check-config (nothing sent); 2 not a valid config (nothing sent).")
    r.add_argument("--config", help="the config file the running serve was started with "
                                    "(default: the embedded one)")
    r.add_argument("--pid-file", metavar="FILE",
                   help="the serve's pid file (default: from service.runtime_dir)")
    r.add_argument("--pid", type=int, default=0,
                   help="signal this pid instead of reading the pid file (systemd: $MAINPID)")
    r.set_defaults(func=cmd_reload)

    c = sub.add_parser("check-config", help="validate a config file")
    c.add_argument("file", nargs="?", help="YAML config (default: the embedded one)")
    c.add_argument("--strict", action="store_true",
                   help="treat warnings (an unset API key, ...) as errors (exit status 1)")
    c.set_defaults(func=cmd_check_config)

    d = sub.add_parser("doctor", help="check what the config names: AMI login and classes, "
                                      "Asterisk modules and version, ports, keys, models",
                       epilog="Exit status: 0 no FAIL; 1 at least one FAIL; 2 invalid config.")
    d.add_argument("--config", help="YAML config (default: the embedded one)")
    d.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="for each AMI step (default: ami.action_timeout)")
    d.set_defaults(func=cmd_doctor)

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
