"""``agi-voice doctor``: connect to what the config names and say what would stop a call.

A checklist, one :class:`Check` per line (OK / WARN / FAIL / SKIP), each failure with the exact
fix. Besides :mod:`fastagi_server.preflight` (keys, destinations, URLs, network layout, records)
it talks to Asterisk over AMI, tests the ports, and loads the local models for real.

AMI is one short session of its own (the sans-I/O codec over asyncio streams, not the
supervised :class:`~fastagi_server.ami.client.AmiClient`, whose reconnect loop would hide the
very login error the doctor must show). Every action has a timeout. Nothing it sends changes
Asterisk (write permission is probed with actions on a channel that does not exist):

=====================  ===========================  ===========================================
what                   action                       permission it needs (Asterisk 22 manager.c)
=====================  ===========================  ===========================================
reachable, banner      TCP connect                  none (the banner gives the AMI version)
login                  Login (Events: system)       the user's secret; FullyBooted arrives only
                                                    with read class ``system``
transfers              Redirect of no channel       write ``call``
AI_* results           Setvar on no channel         write ``call``
channel variables      Getvar of a global           write ``call`` or ``reporting``
hangup by assistant    (not sent: it logs a         write ``call`` or ``system``, so known
                       NOTICE on the PBX)           from the two probes above and ModuleCheck
resync after reconnect CoreShowChannels             write ``reporting`` or ``system``
exact version          CoreSettings                 write ``reporting`` or ``system``
read classes           Command ``manager show       write ``command`` (agi-voice's own user
                       user NAME``                  should not have it: then a WARN)
modules loaded         ModuleCheck                  write ``system``; else Command ``module
                                                    show like``; else a WARN with the CLI line
=====================  ===========================  ===========================================
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Literal

from fastagi_server.ami.codec import (
    AmiMessage,
    AmiParser,
    AmiProtocolError,
    Banner,
    UnsafeValueError,
    encode_message,
)
from fastagi_server.preflight import (
    CHECKS,
    Finding,
    listeners,
    port_in_use,
    preflight,
    required_keys,
)
from media_sidecar.config.schema import Config

__all__ = ["AmiProbe", "Check", "keypad_over_audiosocket", "parse_version", "run_doctor"]

Status = Literal["OK", "WARN", "FAIL", "SKIP"]

PROBE_CHANNEL = "agi-voice-doctor/no-such-channel"
"""A channel name no channel has: probes on it are refused for permission or not at all."""
AMI_BRANCH = {"9": 20, "10": 21, "11": 22, "12": 23}
"""AMI major version in the banner -> Asterisk branch (telephony.md C.1)."""
KEYPAD_SINCE = {20: (20, 14), 21: (21, 9), 22: (22, 4)}
"""First release of each branch whose AudioSocket sends keypad digits (0x03 frames); every
23 and later does, 19 and earlier never."""
READ_NEEDED = {"call": "Hangup and transfer events", "dtmf": "DTMFEnd (keypad digits)",
               "dialplan": "Newexten (a transfer by someone else)"}
READ_WANTED = {"user": "UserEvent", "system": "FullyBooted and Shutdown"}
MANAGER_FIX = ("in manager.conf (FreePBX: manager_custom.conf) under [{user}] set {line}, then "
               "asterisk -rx 'manager reload' (see asterisk_conf/manager_custom.conf)")


@dataclass(frozen=True, slots=True)
class Check:
    status: Status
    name: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        """``FAIL AMI login: what is wrong. Fix: what to do``."""
        fix = ""
        if self.fix:
            fix = f"{'' if self.detail.endswith(('.', ')')) else '.'} Fix: {self.fix}"
        return f"{self.status:<4} {self.name}: {self.detail}{fix}"


def parse_version(text: str) -> tuple[int, int] | None:
    """(major, minor) of an Asterisk version string (``22.10.1``, ``certified-20.7-cert3``)."""
    m = re.search(r"(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def keypad_over_audiosocket(version: tuple[int, int]) -> bool:
    major = version[0]
    if major >= 23:
        return True
    since = KEYPAD_SINCE.get(major)
    return since is not None and version >= since


# ------------------------------------------------------------------------- the AMI session


class AmiProbe:
    """One short AMI session: actions one at a time, each bounded by ``timeout`` seconds.

    Responses are matched by ActionID; the names of other events are kept in :attr:`seen`.
    Raises ``TimeoutError``, ``ConnectionError`` (the peer closed) or
    :class:`~fastagi_server.ami.codec.AmiProtocolError`.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeout: float) -> None:
        self._reader, self._writer, self.timeout = reader, writer, timeout
        self._parser = AmiParser()
        self._pending: deque[AmiMessage | Banner] = deque()
        self._ids = itertools.count(1)
        self.banner: Banner | None = None
        self.seen: set[str] = set()

    @classmethod
    async def open(cls, host: str, port: int, action_timeout: float) -> AmiProbe:
        """Connect and read the banner, each within ``action_timeout`` seconds."""
        async with asyncio.timeout(action_timeout):
            reader, writer = await asyncio.open_connection(host, port)
        probe = cls(reader, writer, action_timeout)
        try:
            async with asyncio.timeout(action_timeout):
                first = await probe._next()
        except BaseException:
            writer.close()  # not awaited: this may be a cancellation
            raise
        if not isinstance(first, Banner):  # pragma: no cover - the parser raises first
            raise AmiProtocolError("no AMI banner")
        probe.banner = first
        return probe

    async def _next(self) -> AmiMessage | Banner:
        while not self._pending:
            data = await self._reader.read(65536)
            if not data:
                raise ConnectionResetError("Asterisk closed the AMI connection")
            self._parser.feed(data)
            self._pending.extend(self._parser.events())
        return self._pending.popleft()

    async def action(self, name: str, headers: Iterable[tuple[str, object]] = (), *,
                     until: str | None = None) -> list[AmiMessage]:
        """Send ``name`` and return its response (and, for a list, every message up to the
        ``until`` event). Raises UnsafeValueError for a header with CR/LF before sending."""
        aid = f"doctor-{next(self._ids)}"
        data = encode_message([("Action", name), ("ActionID", aid), *headers])
        out: list[AmiMessage] = []
        async with asyncio.timeout(self.timeout):
            self._writer.write(data)
            await self._writer.drain()
            while True:
                msg = await self._next()
                if isinstance(msg, Banner):
                    continue
                if msg.get("ActionID") != aid:
                    if msg.event:
                        self.seen.add(msg.event)
                    continue
                out.append(msg)
                if until is None or msg.event == until or msg.response == "Error":
                    return out

    async def aclose(self) -> None:
        """Log off (briefly; a dead peer is not waited for) and close."""
        try:
            async with asyncio.timeout(min(self.timeout, 1.0)):
                await self.action("Logoff")
        except (OSError, TimeoutError, AmiProtocolError):
            pass
        finally:
            self._writer.close()
        try:
            async with asyncio.timeout(1.0):
                await self._writer.wait_closed()
        except (OSError, TimeoutError):
            pass


def _denied(resp: list[AmiMessage]) -> bool:
    return bool(resp) and resp[0].response == "Error" and resp[0].get("Message") == (
        "Permission denied")


# ------------------------------------------------------------------------- the checks


async def run_doctor(cfg: Config, *, env: Mapping[str, str] | None = None,
                     action_timeout: float | None = None,
                     report: Callable[[Check], None] | None = None) -> list[Check]:
    """Run every check and return them in order; ``report`` sees each one as it is made.

    ``action_timeout`` bounds each AMI step (default ``ami.action_timeout``). Never raises for
    what it finds (an unreachable AMI is a FAIL line). Cancellation closes the AMI connection.
    """
    env = os.environ if env is None else env
    checks: list[Check] = []

    def add(c: Check) -> None:
        checks.append(c)
        if report is not None:
            report(c)

    add(Check("OK", "config", f"{cfg.source} is valid: {len(cfg.assistants)} assistant(s)"))
    findings = preflight(cfg, env=env, speech=False)
    for c in _static_checks(cfg, findings, env):
        add(c)
    version = ""
    ami_static_error = any(f.check == "ami" and f.level == "error" for f in findings)
    if not cfg.ami.enabled:
        add(Check("WARN", "AMI", "not configured: transfers go back to the dialplan "
                  "(AI_STATUS=TRANSFERRED) and keypad digits come only over AudioSocket",
                  "set AMI_HOST, AMI_USERNAME and AMI_SECRET (asterisk_conf/manager_custom.conf)"))
    elif ami_static_error:
        add(Check("SKIP", "AMI", "not contacted: its settings are incomplete (above)"))
    else:
        state = {"version": ""}
        async for c in _ami_checks(cfg, action_timeout or cfg.ami.action_timeout, state):
            add(c)
        version = state["version"]
    add(_keypad_check(cfg, version))
    for c in _port_checks(cfg):
        add(c)
    for c in await _model_checks(cfg):
        add(c)
    return checks


def _static_checks(cfg: Config, findings: list[Finding],
                   env: Mapping[str, str]) -> Iterable[Check]:
    """Preflight's checks: one OK line per clean check, a WARN/FAIL line per finding."""
    ok = {
        "env": "every ${VAR} without a default is set",
        "keys": _keys_ok(cfg, env),
        "ami": "login settings complete" if cfg.ami.enabled else "",
        "destinations": "every destination is a literal context, extension and priority",
        "urls": "webhook and provider URLs are valid",
        "network": f"Asterisk connects AudioSocket to {cfg.audiosocket_address}",
        "records": (f"{cfg.sidecar.records_path} is writable" if cfg.sidecar.records_path
                    else "not kept (sidecar.records_path is empty): outcomes are only logged"),
    }
    for name, text in ok.items():
        mine = [f for f in findings if f.check == name]
        for f in mine:
            yield Check("FAIL" if f.level == "error" else "WARN", CHECKS[name],
                        f"{f.path}: {f.message}", f.fix)
        if not mine and text:
            yield Check("OK", CHECKS[name], text)


def _keys_ok(cfg: Config, env: Mapping[str, str]) -> str:
    names = sorted({var for a in cfg.assistants for _, var, _ in required_keys(a)
                    if env.get(var)})
    return f"set: {', '.join(names)}" if names else "no assistant needs one"


async def _ami_checks(cfg: Config, action_timeout: float,
                      state: dict[str, str]) -> AsyncIterator[Check]:
    """The live AMI checks; the exact Asterisk version, when learnt, goes in ``state``."""
    ami = cfg.ami
    addr = f"{ami.host}:{ami.port}"
    try:
        probe = await AmiProbe.open(ami.host, ami.port, action_timeout)
    except (OSError, TimeoutError) as exc:
        reason = ("timed out" if isinstance(exc, TimeoutError) else "connection refused"
                  if isinstance(exc, ConnectionRefusedError) else exc.strerror or str(exc))
        yield Check("FAIL", "AMI reachable", f"cannot connect to {addr}: {reason}",
                    "in manager.conf [general] set enabled = yes, port and bindaddr to where "
                    "agi-voice connects (asterisk -rx 'manager show settings'); open the port "
                    "between the two hosts; check AMI_HOST and AMI_PORT")
        return
    except AmiProtocolError as exc:
        yield Check("FAIL", "AMI reachable", f"{addr} is not AMI: {exc}",
                    "point AMI_PORT at Asterisk's manager port (5038 by default)")
        return
    try:
        async for c in _ami_session(probe, cfg, state):
            yield c
    except (OSError, TimeoutError, AmiProtocolError) as exc:
        reason = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
        yield Check("FAIL", "AMI session", f"{reason}; later AMI checks not made",
                    f"check Asterisk's log for manager errors; raise ami.action_timeout "
                    f"(now {action_timeout} s) on a slow link")
    finally:
        await probe.aclose()


async def _ami_session(probe: AmiProbe, cfg: Config,
                       state: dict[str, str]) -> AsyncIterator[Check]:
    ami = cfg.ami
    assert probe.banner is not None
    ami_version = probe.banner.version
    branch = AMI_BRANCH.get(ami_version.split(".")[0])
    yield Check("OK", "AMI reachable", f"{ami.host}:{ami.port} answers as AMI {ami_version}"
                + (f" (Asterisk {branch})" if branch else ""))
    try:
        login = await probe.action("Login", [("Username", ami.username),
                                             ("Secret", ami.secret), ("Events", "system")])
    except UnsafeValueError:
        yield Check("FAIL", "AMI login", "the secret contains a line break",
                    "set AMI_SECRET without CR or LF")
        return
    if login[0].response != "Success":
        yield Check("FAIL", "AMI login", f"{ami.username}@{ami.host}: "
                    f"{login[0].get('Message') or 'refused'}",
                    f"AMI_USERNAME and AMI_SECRET must match a [{ami.username}] section with "
                    "that secret in manager.conf (FreePBX: manager_custom.conf), and its "
                    "permit= must admit this host; then asterisk -rx 'manager reload'")
        return
    yield Check("OK", "AMI login", f"logged in as {ami.username}")
    fix = MANAGER_FIX.format(user=ami.username, line="write = call,reporting")

    # Write classes, probed on a channel that does not exist (nothing changes on the PBX).
    denied = {}
    for action, headers in (
        ("Redirect", [("Channel", PROBE_CHANNEL), ("Context", "agi-voice-doctor"),
                      ("Exten", "s"), ("Priority", "1")]),
        ("Setvar", [("Channel", PROBE_CHANNEL), ("Variable", "AGI_VOICE_DOCTOR"),
                    ("Value", "1")]),
        ("Getvar", [("Variable", "AGI_VOICE_DOCTOR")]),
    ):
        denied[action] = _denied(await probe.action(action, headers))
    system = not _denied(await probe.action("ModuleCheck", [("Module", "res_agi.so")]))
    hangup_ok = not denied["Redirect"] or system  # Hangup: call or system (see the docstring)
    uses = {"Redirect": "transfers", "Setvar": "AI_* results", "Getvar": "channel variables",
            "Hangup": "hangup by the assistant"}
    refused = [a for a in ("Redirect", "Setvar", "Getvar") if denied[a]]
    refused += [] if hangup_ok else ["Hangup"]
    if refused:
        yield Check("FAIL", "AMI write classes",
                    f"{', '.join(refused)} refused (Permission denied): "
                    f"{', '.join(uses[a] for a in refused)} would fail", fix)
    else:
        yield Check("OK", "AMI write classes", "Redirect, Setvar, Getvar and Hangup allowed "
                    "(class call)")
    channels = await probe.action("CoreShowChannels", until="CoreShowChannelsComplete")
    if _denied(channels):
        yield Check("WARN", "AMI CoreShowChannels", "refused: after an AMI reconnect agi-voice "
                    "cannot find the calls that ended while it was away", fix)
    else:
        live = sum(1 for m in channels if m.event == "CoreShowChannel")
        yield Check("OK", "AMI CoreShowChannels", f"allowed ({live} live channel(s))")

    # Read classes: exact only through the CLI (class command).
    user = await probe.action("Command", [("Command", f"manager show user {ami.username}")])
    command = not _denied(user)
    perms = _user_perms(user) if command else None
    if system or command:
        extra = [c for c, ok in (("system", system), ("command", command)) if ok]
        yield Check("WARN", "AMI least privilege", f"the user also has write class "
                    f"{' and '.join(extra)} (module load, reload, CLI commands): more than "
                    "agi-voice needs", fix)
    yield _read_check(ami.username, perms, "FullyBooted" in probe.seen)

    # Version and modules.
    settings = await probe.action("CoreSettings")
    exact = "" if _denied(settings) else settings[0].get("AsteriskVersion") or ""
    state["version"] = exact
    if exact:
        yield Check("OK", "Asterisk version", f"{exact} (AMI {ami_version})")
    else:
        yield Check("WARN", "Asterisk version",
                    f"{'Asterisk ' + str(branch) if branch else 'unknown'} from the AMI "
                    f"{ami_version} banner; CoreSettings was refused (write class reporting "
                    "or system gives the exact version)", fix)
    async for c in _module_checks(probe, cfg, system, command):
        yield c


def _user_perms(resp: list[AmiMessage]) -> dict[str, set[str]] | None:
    perms: dict[str, set[str]] = {}
    for line in resp[0].getall("Output") if resp else ():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("read perm", "write perm"):
            perms[key.strip().split()[0]] = {c.strip() for c in value.split(",")}
    return perms if "read" in perms else None


def _read_check(user: str, perms: dict[str, set[str]] | None, booted: bool) -> Check:
    line = "read = call,dtmf,dialplan,user,system"
    fix = MANAGER_FIX.format(user=user, line=line)
    if perms is None:
        known = "system is granted (FullyBooted arrived)" if booted else (
            "FullyBooted did not arrive, so system is not granted")
        return Check("WARN", "AMI read classes",
                     "cannot be read over AMI without write class command (which agi-voice's "
                     f"user should not have); {known}; call, dtmf and dialplan are needed for "
                     "Hangup, DTMFEnd and Newexten events",
                     f"check in manager.conf under [{user}]: {line}")
    read = perms["read"]
    have = read | (set(READ_NEEDED) | set(READ_WANTED) if "all" in read else set())
    missing = [c for c in READ_NEEDED if c not in have]
    if missing:
        return Check("FAIL", "AMI read classes", "missing " + ", ".join(
            f"{c} ({READ_NEEDED[c]})" for c in missing), fix)
    wanted = [c for c in READ_WANTED if c not in have]
    if wanted:
        return Check("WARN", "AMI read classes", "missing " + ", ".join(
            f"{c} ({READ_WANTED[c]})" for c in wanted), fix)
    return Check("OK", "AMI read classes", "call, dtmf, dialplan, user and system granted")


async def _module_checks(probe: AmiProbe, cfg: Config, system: bool,
                         command: bool) -> AsyncIterator[Check]:
    app = [a.name for a in cfg.assistants if a.media_path == "app"]
    dial = [a.name for a in cfg.assistants if a.media_path == "dial"]
    modules = {
        "res_agi": (True, "needed for AGI(agi://...) in the dialplan"),
        "res_audiosocket": (True, "needed by the AudioSocket app and channel"),
        "app_audiosocket": (bool(app), f"the AudioSocket() app, needed for {', '.join(app)}"
                            if app else "not needed: no assistant uses slin"),
        "chan_audiosocket": (bool(dial), f"Dial(AudioSocket/...), needed for {', '.join(dial)}"
                             if dial else "not needed: no assistant uses ulaw, alaw or slin16"),
    }
    loaded: dict[str, bool] = {}
    if system:
        for name in modules:
            resp = await probe.action("ModuleCheck", [("Module", f"{name}.so")])
            loaded[name] = resp[0].response == "Success"
    elif command:
        for like in ("audiosocket", "res_agi"):
            resp = await probe.action("Command", [("Command", f"module show like {like}")])
            for line in resp[0].getall("Output"):
                parts = line.split()
                if parts and parts[0].endswith(".so") and "Running" in parts:
                    loaded[parts[0].removesuffix(".so")] = True
        loaded = {name: loaded.get(name, False) for name in modules}
    else:
        yield Check("WARN", "Asterisk modules",
                    "cannot tell whether res_agi, res_audiosocket, app_audiosocket and "
                    "chan_audiosocket are loaded: ModuleCheck needs write class system (which "
                    "agi-voice's user should not have)",
                    "on the PBX run: asterisk -rx 'module show like audiosocket' and "
                    "asterisk -rx 'module show like res_agi' (each should say Running)")
        return
    for name, (needed, why) in modules.items():
        if loaded[name]:
            yield Check("OK", f"module {name}", f"loaded; {why}")
        elif not needed:
            yield Check("OK", f"module {name}", f"not loaded; {why}")
        else:
            yield Check("FAIL", f"module {name}", f"not loaded; {why}",
                        f"asterisk -rx 'module load {name}.so'; if that fails, it is not "
                        f"installed (build Asterisk with it) or modules.conf has "
                        f"noload => {name}.so")


def _keypad_check(cfg: Config, text: str) -> Check:
    """From the exact version (CoreSettings): do keypad digits come over AudioSocket?"""
    name = "keypad over AudioSocket"
    needs = "needs Asterisk 20.14, 21.9, 22.4, 23.0 or later"
    version = parse_version(text) if text else None
    if version is None:
        return Check("WARN", name, f"cannot tell without the exact Asterisk version ({needs})"
                     + ("" if cfg.ami.enabled else "; without AMI it is the only way digits "
                        "arrive"))
    if keypad_over_audiosocket(version):
        return Check("OK", name, f"digits arrive as AudioSocket frames on {text}"
                     + (" and as AMI DTMFEnd events" if cfg.ami.enabled else ""))
    return Check("WARN", name, f"{text} sends no digits over AudioSocket ({needs}): they "
                 "arrive only as AMI DTMFEnd events (read class dtmf)",
                 "upgrade Asterisk for keypad input without AMI")


def _port_checks(cfg: Config) -> list[Check]:
    """Each listening address, bound for an instant: all free (agi-voice is not running), all
    in use (it is), or some in use while others are free (another program holds those, and
    serve would not start: WARN). An address that cannot be bound at all is a FAIL."""
    results = [(what, listen, port_in_use(listen)) for _, what, listen in listeners(cfg)
               if listen.port]
    busy = [r for r in results if r[2] is not None and r[2].errno == errno.EADDRINUSE]
    free = [what for what, _, exc in results if exc is None]
    checks = []
    for what, listen, exc in results:
        addr = f"{listen.host}:{listen.port}"
        if exc is None:
            checks.append(Check("OK", f"{what} port", f"{addr} is free"
                                + ("" if busy else " (agi-voice is not running)")))
        elif exc.errno != errno.EADDRINUSE:
            checks.append(Check("FAIL", f"{what} port", f"cannot listen on {addr}: "
                                f"{exc.strerror or exc}",
                                "use an address of this machine (or 0.0.0.0)"))
        elif not free:
            checks.append(Check("OK", f"{what} port", f"{addr} is in use: agi-voice serve is "
                                f"running (if not: ss -ltnp 'sport = :{listen.port}')"))
        else:
            checks.append(Check("WARN", f"{what} port", f"{addr} is in use while "
                                f"{', '.join(free)} {'is' if len(free) == 1 else 'are'} free: "
                                "another program holds it and serve would not start",
                                f"see what listens there: ss -ltnp 'sport = :{listen.port}'; "
                                "stop it or choose another port"))
    return checks


async def _model_checks(cfg: Config) -> list[Check]:
    """Load the offline models the pipeline assistants name (in a worker thread)."""
    from media_sidecar.speech import make_stt, make_tts
    from media_sidecar.speech.base import SpeechEngineError

    loop = asyncio.get_running_loop()
    checks: list[Check] = []
    done: set[tuple[str, str]] = set()
    for a in cfg.assistants:
        if not a.is_pipeline:
            continue
        p = f"assistants.{a.name}"
        stages: list[tuple[str, str, Callable[[], object], str]] = []
        if a.stt.engine == "moonshine":
            model = a.stt.model or "tiny-en"
            stages.append(("stt", f"Moonshine {model}", partial(make_stt, a.stt),
                           f"{p}.stt.model"))
        if a.tts.engine == "piper":
            voice = a.tts.voice or "joe-us"
            stages.append(("tts", f"Piper voice {voice}", partial(make_tts, a.tts),
                           f"{p}.tts.voice"))
        for kind, what, load, path in stages:
            if (kind, what) in done:
                continue
            done.add((kind, what))
            start = loop.time()
            try:
                await asyncio.to_thread(load)
            except (SpeechEngineError, ValueError) as exc:
                checks.append(Check("FAIL", "model loads", f"{path}: {exc}",
                                    "pip install 'agi-voice[local]', or name a voice/model "
                                    "that exists"))
                continue
            checks.append(Check("OK", "model loads",
                                f"{what} loaded in {loop.time() - start:.1f} s"))
    return checks
