"""Preflight: what a valid config still needs from this machine before it can take a call.

The loader (:mod:`media_sidecar.config.loader`) proves a file is well formed; this module checks
what it refers to: the environment variables it names (API keys, webhook header secrets, the AMI
secret), the local voices and models, the dialplan destinations, webhook and provider URLs, the
network layout (a loopback address Asterisk on another host cannot reach), the records file and,
for ``serve`` only, the listening ports. It returns typed :class:`Finding` objects; it prints
nothing and never raises for what it finds. ``agi-voice check-config``, ``serve`` and ``doctor``
share it.

Everything here is quick and loads no model: a Piper voice is resolved to its files, a Moonshine
model to its directory (``doctor`` loads them for real). The only I/O is reading the config file
(for its ``${VAR}`` references), ``os.access`` on the records path, and binding each listening
port for an instant (``serve`` only).
"""

from __future__ import annotations

import dataclasses
import errno
import importlib.util
import ipaddress
import os
import re
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from media_sidecar.config.loader import default_yaml_text
from media_sidecar.config.schema import AssistantConfig, Config, Listen
from media_sidecar.config.workers import cpu_count, worker_config, worker_count

__all__ = [
    "CHECKS",
    "Finding",
    "format_finding",
    "has_errors",
    "is_loopback",
    "listeners",
    "port_in_use",
    "preflight",
    "required_keys",
]

Level = Literal["error", "warning"]

CHECKS = {
    "env": "config variables",
    "keys": "API keys",
    "ami": "AMI settings",
    "speech": "voices and models",
    "destinations": "destinations",
    "urls": "URLs",
    "network": "network layout",
    "records": "call records",
    "ports": "ports",
}
"""Every check, by the name a :class:`Finding` carries, with what it covers."""

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_CONTEXT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,78}")
_EXTEN = re.compile(r"[A-Za-z0-9*#+.-][A-Za-z0-9*#+_.-]{0,78}")
_PRIORITY = re.compile(r"[1-9][0-9]{0,8}|[A-Za-z_][A-Za-z0-9_-]{0,78}")
_KEY_FIX = "set it in agi-voice's environment (systemd: the unit's EnvironmentFile)"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: its level, the config key path it is about (as the loader names keys:
    ``assistants.desk.tts.voice``), what is wrong, the fix, and the check that found it."""

    level: Level
    path: str
    message: str
    fix: str = ""
    check: str = ""


def has_errors(findings: list[Finding]) -> bool:
    return any(f.level == "error" for f in findings)


def format_finding(f: Finding, source: str) -> str:
    """One line: ``error: FILE: KEY.PATH: what is wrong (fix: how)``."""
    fix = f" (fix: {f.fix})" if f.fix else ""
    return f"{f.level}: {source}: {f.path}: {f.message}{fix}"


def preflight(cfg: Config, *, env: Mapping[str, str] | None = None, serve: bool = False,
              strict: bool = False, text: str | None = None,
              speech: bool = True) -> list[Finding]:
    """Every finding for ``cfg`` in this environment, errors and warnings in check order.

    ``env``: where variables are looked up (default ``os.environ``). ``serve``: also check that
    the listening ports are free. ``strict``: every warning becomes an error. ``text``: the
    config's YAML (default: read from ``cfg.source``, or the embedded default) for its
    ``${VAR}`` references. ``speech=False`` skips resolving voices and models (``doctor``
    loads them instead). Never raises for what it finds.
    """
    env = os.environ if env is None else env
    raw = _raw_yaml(cfg, text)
    found: list[Finding] = [
        *check_env_refs(raw, env),
        *check_keys(cfg, env),
        *check_ami(cfg, raw),
        *(check_speech(cfg) if speech else ()),
        *check_destinations(cfg),
        *check_urls(cfg),
        *check_network(cfg),
        *check_dashboard(cfg, env),
        *check_records(cfg),
        *(check_ports(cfg) if serve else ()),
    ]
    if strict:
        found = [dataclasses.replace(f, level="error") for f in found]
    return found


# ------------------------------------------------------------------------- environment


def _raw_yaml(cfg: Config, text: str | None) -> dict[str, Any]:
    """The file as YAML before ``${VAR}`` substitution ({} if it cannot be read again)."""
    if text is None:
        try:
            text = (default_yaml_text() if cfg.source == "<embedded default>"
                    else Path(cfg.source).read_text("utf-8"))
        except OSError:
            return {}
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    return raw if isinstance(raw, dict) else {}


def _env_refs(node: Any, path: str = "") -> Iterator[tuple[str, str, str | None]]:
    """(key path, variable, default or None) for every ``${VAR}`` in the raw YAML."""
    if isinstance(node, str):
        for m in _ENV_REF.finditer(node):
            yield path, m.group(1), m.group(2)
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _env_refs(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _env_refs(v, f"{path}[{i}]")


def check_env_refs(raw: dict[str, Any], env: Mapping[str, str]) -> list[Finding]:
    """A ``${VAR}`` without a ``:-default`` whose variable is unset became an empty value.
    The ``ami`` section is left to :func:`check_ami` (AMI is optional)."""
    out = []
    for path, var, default in _env_refs(raw):
        if default is None and not env.get(var) and not path.startswith("ami."):
            out.append(Finding("warning", path, f"references ${{{var}}}, which is not set "
                               "(the value is empty)", _KEY_FIX, "env"))
    return out


def required_keys(a: AssistantConfig) -> list[tuple[str, str, bool]]:
    """(key path, variable, required) of the API keys ``a`` reads when a call starts.
    ``required=False``: the call goes on without it (a webhook header, an LLM server of
    one's own that needs no key)."""
    p = f"assistants.{a.name}"
    keys: list[tuple[str, str, bool]] = []
    if a.provider == "openai_realtime":
        keys.append((f"{p}.realtime.api_key_env", a.realtime.api_key_env, True))
    elif a.provider == "openai_live":
        keys.append((f"{p}.live.api_key_env", a.live.api_key_env, True))
    elif a.provider == "deepgram_agent":
        keys.append((f"{p}.deepgram.api_key_env", a.deepgram.api_key_env, True))
    elif a.is_pipeline:
        vendor = {"deepgram": "DEEPGRAM_API_KEY", "openai": "OPENAI_API_KEY"}
        if a.stt.engine in vendor:
            keys.append((f"{p}.stt.api_key_env", a.stt.api_key_env or vendor[a.stt.engine], True))
        if a.tts.engine in vendor:
            keys.append((f"{p}.tts.api_key_env", a.tts.api_key_env or vendor[a.tts.engine], True))
        if a.llm.engine == "openai" and a.llm.api_key_env:
            own_server = bool(a.llm.url) and urlsplit(a.llm.url).hostname != "api.openai.com"
            keys.append((f"{p}.llm.api_key_env", a.llm.api_key_env, not own_server))
    for i, hook in enumerate(a.tools.webhooks):
        for header, var in hook.headers_env:
            keys.append((f"{p}.tools.webhooks[{i}].headers_env.{header}", var, False))
    return keys


def check_keys(cfg: Config, env: Mapping[str, str]) -> list[Finding]:
    """Per-assistant keys: a warning (``--strict``: an error), since other assistants still
    work and a fallback assistant may take the calls."""
    out = []
    for a in cfg.assistants:
        for path, var, required in required_keys(a):
            if env.get(var):
                continue
            if not required and ".headers_env." in path:
                what = "the webhook is called without this header"
            elif not required:
                continue  # an own LLM server without a key: no Authorization header, by design
            elif a.fallback_assistant:
                what = f"its calls go to the fallback assistant {a.fallback_assistant!r}"
            else:
                what = "its calls are handed back at once with AI_STATUS=FAILED"
            out.append(Finding("warning", path, f"{var} is not set: {what}",
                               f"export {var}=...; {_KEY_FIX}", "keys"))
    return out


def check_ami(cfg: Config, raw: dict[str, Any]) -> list[Finding]:
    """AMI is optional, but half a login is a mistake: a host without a user silently runs
    without AMI, a user without a secret cannot log in."""
    ami = cfg.ami
    secret_var = "AMI_SECRET"
    node = raw.get("ami")
    if isinstance(node, dict) and isinstance(node.get("secret"), str):
        m = _ENV_REF.search(node["secret"])
        secret_var = m.group(1) if m else secret_var
    out = []
    if ami.host and not ami.username:
        out.append(Finding("error", "ami.username",
                           f"ami.host is {ami.host!r} but the username is empty: agi-voice "
                           "would run without AMI", "set AMI_USERNAME to the [user] of "
                           "manager.conf (e.g. agi-voice from asterisk_conf/manager_custom.conf)"
                           ", or unset AMI_HOST to run without AMI on purpose", "ami"))
    if ami.host and not ami.secret:
        out.append(Finding("error", "ami.secret",
                           f"AMI is configured (ami.host={ami.host!r}) but {secret_var} is not "
                           "set: the login will fail",
                           f"export {secret_var}=<the secret of the [{ami.username or 'user'}] "
                           "section of manager.conf>", "ami"))
    if ami.username and not ami.host:
        out.append(Finding("warning", "ami.host",
                           f"an AMI username ({ami.username!r}) is set but no host: agi-voice "
                           "runs without AMI (degraded mode)",
                           "set AMI_HOST (e.g. 127.0.0.1), or unset AMI_USERNAME", "ami"))
    return out


# ------------------------------------------------------------------------- speech


def check_speech(cfg: Config) -> list[Finding]:
    """The offline engines of pipeline assistants resolve to files, without loading them."""
    out = []
    for a in cfg.assistants:
        if not a.is_pipeline:
            continue
        p = f"assistants.{a.name}"
        if a.tts.engine == "piper":
            out += _piper(a.tts.voice or "joe-us", p)
        if a.stt.engine == "moonshine":
            out += _moonshine(a.stt.model or "tiny-en", p)
        if a.llm.engine == "llama_cpp" and importlib.util.find_spec("llama_cpp") is None:
            out.append(Finding("error", f"{p}.llm.engine", "llama-cpp-python is not installed",
                               "pip install 'agi-voice[llama]'", "speech"))
    return out


def _piper(voice: str, p: str) -> list[Finding]:
    from media_sidecar.speech.base import SpeechEngineError
    from media_sidecar.speech.piper_tts import INSTALL_HINT, voice_files

    try:
        voice_files(voice)  # the voice's package or files only: the model is not loaded
    except SpeechEngineError as exc:
        return [Finding("error", f"{p}.tts.voice", str(exc),
                        "use joe-us, or the path of a Piper .onnx voice with its .onnx.json "
                        "beside it", "speech")]
    if importlib.util.find_spec("piper") is None:
        return [Finding("error", f"{p}.tts.engine", "Piper TTS (piper-tts) is not installed",
                        INSTALL_HINT, "speech")]
    return []


def _moonshine(model: str, p: str) -> list[Finding]:
    from media_sidecar.speech.moonshine_stt import INSTALL_HINT, MODEL_ARCHES

    if model not in MODEL_ARCHES:
        return [Finding("error", f"{p}.stt.model", f"unknown Moonshine model {model!r}",
                        f"use one of {', '.join(sorted(MODEL_ARCHES))}", "speech")]
    if importlib.util.find_spec("moonshine_voice") is None:
        return [Finding("error", f"{p}.stt.engine", "Moonshine STT (moonshine-voice) is not "
                        "installed", INSTALL_HINT, "speech")]
    from moonshine_voice.utils import get_model_path

    path = Path(get_model_path(model))
    if not path.is_dir():
        return [Finding("error", f"{p}.stt.model", f"Moonshine model {model!r} not found at "
                        f"{path}", "python -m moonshine_voice.download --language en", "speech")]
    return []


# ------------------------------------------------------------------------- destinations, URLs


def check_destinations(cfg: Config) -> list[Finding]:
    """Each destination is a literal dialplan location an AMI Redirect can go to."""
    out = []
    for a in cfg.assistants:
        for key, d in a.destinations:
            p = f"assistants.{a.name}.destinations.{key}"
            for field, value, rx, expected in (
                ("context", d.context, _CONTEXT,
                 "a dialplan context name (letters, digits, _ . + -), e.g. from-internal"),
                ("exten", d.exten, _EXTEN, "an extension (digits, letters, * # + . -), e.g. 2001"),
                ("priority", d.priority, _PRIORITY, "a priority number (1) or a label"),
            ):
                if not value:
                    out.append(Finding("error", f"{p}.{field}", f"is empty: expected {expected}",
                                       "", "destinations"))
                elif field == "exten" and value.startswith("_"):
                    out.append(Finding("error", f"{p}.exten", f"{value!r} is a pattern: a "
                                       "Redirect needs a literal extension", "", "destinations"))
                elif not rx.fullmatch(value):
                    out.append(Finding("error", f"{p}.{field}", f"{value!r} is not {expected}",
                                       "", "destinations"))
            if _PRIORITY.fullmatch(d.priority) and d.priority != "1":
                out.append(Finding("warning", f"{p}.priority",
                                   f"priority {d.priority!r}: asterisk_conf/manager_custom.conf "
                                   "passes only Newexten events of priority 1, so a transfer "
                                   "made by someone else to here is seen as a hangup",
                                   "use priority 1, or widen that eventfilter line",
                                   "destinations"))
    return out


def _url_problem(url: str, schemes: tuple[str, ...]) -> str:
    """Why ``url`` is not a usable URL of ``schemes`` ("" if it is)."""
    if any(c.isspace() or ord(c) < 32 for c in url):
        return "contains whitespace or a control character"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in schemes:
        return f"expected a {' or '.join(s + '://' for s in schemes)} URL"
    if not parts.hostname:
        return "has no host name"
    return ""


def check_urls(cfg: Config) -> list[Finding]:
    """Webhook URLs are http(s) URLs with a host (and a valid port); so are the providers'."""
    web, ws = ("http", "https"), ("ws", "wss")
    out = []
    for a in cfg.assistants:
        p = f"assistants.{a.name}"
        urls: list[tuple[str, str, tuple[str, ...]]] = [
            (f"{p}.tools.webhooks[{i}].url", h.url, web) for i, h in enumerate(a.tools.webhooks)
        ]
        if a.provider == "openai_realtime":
            urls.append((f"{p}.realtime.url", a.realtime.url, ws))
        if a.provider == "openai_live":
            urls.append((f"{p}.live.url", a.live.url, ws))
        if a.provider == "deepgram_agent":
            urls.append((f"{p}.deepgram.url", a.deepgram.url, ws))
            if a.deepgram.think_url:
                urls.append((f"{p}.deepgram.think_url", a.deepgram.think_url, web))
        if a.is_pipeline:
            urls += [(f"{p}.{stage}.url", url, web + ws) for stage, url in
                     (("stt", a.stt.url), ("llm", a.llm.url), ("tts", a.tts.url)) if url]
        for path, url, schemes in urls:
            problem = _url_problem(url, schemes)
            if problem:
                out.append(Finding("error", path, f"{url!r} {problem}", "", "urls"))
    return out


# ------------------------------------------------------------------------- network layout


def _split_hostport(address: str) -> tuple[str, str]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), port


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost (a name other than localhost is not resolved)."""
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_this_host(host: str) -> bool:
    """Whether ``host`` is an address of this machine (an IP literal one can bind to)."""
    if is_loopback(host):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: not resolved here (no DNS in a preflight)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((str(ip), 0))
        except OSError:
            return False
    return True


def check_network(cfg: Config) -> list[Finding]:
    """Addresses Asterisk must reach: with AMI on another host, a loopback FastAGI listen
    address or AudioSocket address is the PBX's own loopback, not this machine."""
    out = []
    as_host, _ = _split_hostport(cfg.audiosocket_address)
    explicit = bool(cfg.fastagi.audiosocket_address)
    as_path = "fastagi.audiosocket_address" if explicit else "sidecar.audiosocket.host"
    if cfg.ami.enabled and not _is_this_host(cfg.ami.host):
        where = f"Asterisk (AMI at {cfg.ami.host}) is on another host"
        if is_loopback(as_host):
            out.append(Finding(
                "warning", as_path,
                f"{where}, but it is told to connect AudioSocket to {cfg.audiosocket_address}: "
                "its own loopback, not this machine",
                "set fastagi.audiosocket_address to this machine's address as Asterisk reaches "
                "it (e.g. 10.0.0.5:9092) and sidecar.audiosocket.host to that address or "
                "0.0.0.0", "network"))
        if is_loopback(cfg.fastagi.listen.host):
            out.append(Finding(
                "warning", "fastagi.listen.host",
                f"{where}, but FastAGI listens on {cfg.fastagi.listen.host} only: the "
                "dialplan's AGI(agi://...) there cannot reach it",
                "listen on this machine's address (or 0.0.0.0 behind a firewall that admits "
                "only the PBX)", "network"))
    if explicit and not is_loopback(as_host) and is_loopback(cfg.sidecar.audiosocket.host):
        out.append(Finding(
            "warning", "sidecar.audiosocket.host",
            f"Asterisk is told to connect AudioSocket to {cfg.audiosocket_address}, but the "
            f"sidecar listens on {cfg.sidecar.audiosocket.host} only",
            f"set sidecar.audiosocket.host to {as_host} or 0.0.0.0", "network"))
    return out


def check_dashboard(cfg: Config, env: Mapping[str, str]) -> list[Finding]:
    """The dashboard bound beyond loopback needs its password (it refuses to start without):
    a warning, since calls are served without it."""
    d = cfg.dashboard
    if not d.enabled or d.listen.port == 0 or is_loopback(d.listen.host):
        return []
    if env.get("AGI_VOICE_DASHBOARD_PASSWORD"):
        return []
    return [Finding("warning", "dashboard.listen.host",
                    f"the dashboard listens on {d.listen.host}, beyond loopback, and "
                    "AGI_VOICE_DASHBOARD_PASSWORD is not set: it will not start (a login is "
                    "required there)",
                    "set AGI_VOICE_DASHBOARD_PASSWORD in the service's environment, or keep "
                    "dashboard.listen on 127.0.0.1 and reach it through an SSH tunnel or a "
                    "TLS reverse proxy", "dashboard")]


def check_records(cfg: Config) -> list[Finding]:
    """The records file (or the first existing directory above it, which the sidecar creates
    the rest of) must be writable: the sidecar cannot start otherwise."""
    path = cfg.sidecar.records_path
    if not path:
        return []
    target = Path(path).absolute()
    if target.is_dir():
        return [Finding("error", "sidecar.records_path", f"{path} is a directory",
                        "give a file name, e.g. /var/lib/agi-voice/calls.jsonl", "records")]
    probe = target if target.exists() else next(
        (d for d in target.parents if d.exists()), Path("/"))
    if not target.exists() and not probe.is_dir():
        return [Finding("error", "sidecar.records_path", f"{probe} is not a directory",
                        "give a path under a directory", "records")]
    if not os.access(probe, os.W_OK if target.exists() else os.W_OK | os.X_OK):
        return [Finding("error", "sidecar.records_path", f"{probe} is not writable by this user",
                        "chown the directory to agi-voice's service user, or choose another "
                        "path", "records")]
    return []


# ------------------------------------------------------------------------- ports (serve)


def listeners(cfg: Config) -> list[tuple[str, str, Listen]]:
    """(key path, what, address) of everything ``serve`` listens on: FastAGI, then each media
    worker's AudioSocket, control link and health ports (worker ``i``: each port +
    ``i * sidecar.worker_port_step``; the key path is the configured port's)."""
    found = [("fastagi.listen", "FastAGI", cfg.fastagi.listen)]
    for i in range(worker_count(cfg)):
        w = worker_config(cfg, i)
        of = f" of media worker {i}" if i else ""
        found += [("sidecar.audiosocket", f"AudioSocket{of}", w.sidecar.audiosocket),
                  ("sidecar.control", f"control link{of}", w.sidecar.control)]
        if cfg.health.enabled:
            found.append(("health.listen", f"health{of}", w.health.listen))
    if cfg.dashboard.enabled:
        found.append(("dashboard.listen", "dashboard", cfg.dashboard.listen))
    return found


def port_in_use(listen: Listen) -> OSError | None:
    """Bind ``listen`` for an instant the way the servers do (SO_REUSEADDR); the error, or
    None if it is free. Nothing connects to it (a probe of a live FastAGI port is noise)."""
    try:
        infos = socket.getaddrinfo(listen.host or None, listen.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV)
    except socket.gaierror as exc:
        return OSError(errno.EADDRNOTAVAIL, f"cannot resolve {listen.host!r}: {exc}")
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            return exc
    return None


def check_ports(cfg: Config) -> list[Finding]:
    """Every listening port is free (0 means any free port) and used once. The health
    listener's port is a warning only: the sidecar serves calls without it."""
    out = []
    seen: dict[tuple[str, int], str] = {}
    for path, what, listen in listeners(cfg):
        if listen.port == 0:
            continue
        addr = f"{listen.host}:{listen.port}"
        other = seen.get((listen.host, listen.port))
        if other is not None:
            out.append(Finding("error", f"{path}.port", f"{addr} is also {other}'s address",
                               "give each listener its own port (media worker I uses each "
                               "port + I * sidecar.worker_port_step)", "ports"))
            continue
        seen[(listen.host, listen.port)] = what
        exc = port_in_use(listen)
        if exc is None:
            continue
        level: Level = "warning" if what.startswith(("health", "dashboard")) else "error"
        if exc.errno == errno.EADDRINUSE:
            message = f"{what} address {addr} is already in use"
            fix = (f"stop what listens there (see: ss -ltnp 'sport = :{listen.port}'; "
                   f"another agi-voice?) or choose another {path}.port")
        else:
            message = f"cannot listen on {addr}: {exc.strerror or exc}"
            fix = f"use an address of this machine in {path}.host (or 0.0.0.0)"
        if what == "dashboard":
            message += " (calls are served without the dashboard)"
        elif level == "warning":
            message += " (calls are served without /live, /ready, /health and /metrics)"
        out.append(Finding(level, f"{path}.port" if exc.errno == errno.EADDRINUSE
                           else f"{path}.host", message, fix, "ports"))
    first = {f.path: f for f in reversed(out)}  # one finding per key: the lowest worker's
    return [f for f in out if first[f.path] is f] + check_workers(cfg)


def check_workers(cfg: Config) -> list[Finding]:
    """More media workers than CPUs makes them share cores (each one's frame clock then waits
    for the others): a warning."""
    n, cpus = worker_count(cfg), cpu_count()
    if n > cpus:
        return [Finding("warning", "sidecar.workers", f"{n} media workers on {cpus} CPU(s): "
                        "workers share cores and their 20 ms frame clocks wait on each other",
                        "leave sidecar.workers out (one per CPU)", "ports")]
    return []
