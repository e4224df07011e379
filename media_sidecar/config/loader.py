"""Load and validate the YAML configuration into :mod:`schema` objects.

``yaml.safe_load`` once, ``${VAR}`` / ``${VAR:-default}`` substituted from the environment,
then a strict structural conversion: unknown keys, wrong types and dangling references are
errors that name the file, the key path and what was expected. Secrets (``ami.secret``) must come
from the environment; a literal secret in the file is refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import types
import typing
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from . import schema as s
from .addresses import parse_allow

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_PATHS = {"ami.secret"}


class ConfigError(ValueError):
    """A configuration problem: names the file, the key path and what was expected."""

    def __init__(self, source: str, path: str, message: str) -> None:
        super().__init__(f"{source}: {path or '<top>'}: {message}")
        self.source = source
        self.path = path


def default_yaml_text() -> str:
    return resources.files("media_sidecar.config").joinpath("default.yaml").read_text("utf-8")


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> s.Config:
    """Load ``path`` (or the embedded default) and validate it. Raises ConfigError."""
    if path is None:
        return parse_config(default_yaml_text(), "<embedded default>", env)
    p = Path(path)
    try:
        text = p.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(str(p), "", f"cannot read file: {exc.strerror}") from None
    return parse_config(text, str(p), env)


MAX_EXPANDED_NODES = 200_000
"""Values a config may hold once its YAML aliases are expanded (the default has about 700).
Aliases are shared on load but walked one copy at a time afterwards, so nine levels of nine
aliases ("billion laughs") in a few hundred bytes would hold the process for hours."""


def _safe_load(text: str, source: str) -> Any:
    """``yaml.safe_load``, refusing a document whose aliases expand past the bound."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if (n := _expanded_size(node)) > MAX_EXPANDED_NODES:
            raise ConfigError(source, "", f"its YAML aliases expand to more than "
                              f"{MAX_EXPANDED_NODES:,} values ({n:,}): refused")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(root: yaml.Node) -> int:
    """How many nodes the document holds with every alias expanded (each shared node counted
    once per reference), in time linear in the composed graph; stops counting once past the
    bound."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        if not done and id(node) in open_:  # an alias inside itself: infinite, caught later
            sizes[id(node)] = 1
            continue
        kids: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            kids = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            kids = [n for pair in node.value for n in pair]
        if done:
            sizes[id(node)] = min(1 + sum(sizes.get(id(k), 0) for k in kids),
                                  MAX_EXPANDED_NODES + 1)
            continue
        sizes_pending = [k for k in kids if id(k) not in sizes]
        open_.add(id(node))
        stack.append((node, True))
        stack.extend((k, False) for k in sizes_pending)
    return sizes[id(root)]


def parse_config(text: str, source: str, env: Mapping[str, str] | None = None) -> s.Config:
    env = os.environ if env is None else env
    try:
        raw = _safe_load(text, source)
    except ConfigError:
        raise
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"not valid YAML: {exc}") from None
    except (ValueError, RecursionError) as exc:  # 2001-13-45, a 5000-digit int, deep nesting
        raise ConfigError(source, "", f"not valid YAML: {type(exc).__name__}: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, "", "expected a mapping at the top level")
    _check_secrets(raw, source)
    try:
        raw = _substitute(raw, env, source, "")
    except RecursionError:  # "a: &x [*x]": an alias inside itself
        raise ConfigError(source, "", "an alias refers to itself (or nesting is too deep)") from None
    b = _Builder(source)
    cfg = b.build_config(raw)
    _validate(cfg, source)
    return cfg


def _check_secrets(raw: dict[str, Any], source: str) -> None:
    for dotted in _SECRET_PATHS:
        node: Any = raw
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        ref = _ENV_REF.fullmatch(node) if isinstance(node, str) else None
        if node not in (None, "") and (ref is None or ref.group(2) not in (None, "")):
            raise ConfigError(
                source, dotted, "secrets must come from the environment, e.g. ${AMI_SECRET}"
            )


def _substitute(node: Any, env: Mapping[str, str], source: str, path: str) -> Any:
    if isinstance(node, str):

        def repl(m: re.Match[str]) -> str:
            value = env.get(m.group(1))
            if value is None or value == "":
                if m.group(2) is not None:
                    return m.group(2)
                return ""
            return value

        return _ENV_REF.sub(repl, node)
    if isinstance(node, dict):
        return {k: _substitute(v, env, source, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, env, source, f"{path}[{i}]") for i, v in enumerate(node)]
    return node


class _Builder:
    def __init__(self, source: str) -> None:
        self.source = source

    def err(self, path: str, msg: str) -> ConfigError:
        return ConfigError(self.source, path, msg)

    def build_config(self, raw: dict[str, Any]) -> s.Config:
        allowed = {"fastagi", "sidecar", "ami", "routing", "assistants", "health", "logging",
                   "drain", "service", "recordings", "store", "dashboard"}
        for key in raw:
            if key not in allowed:
                raise self.err(str(key), f"unknown section (expected one of {sorted(allowed)})")
        assistants_raw = raw.get("assistants") or {}
        if not isinstance(assistants_raw, dict):
            raise self.err("assistants", "expected a mapping of assistant name to settings")
        assistants = tuple(
            self.build_assistant(str(name), body, f"assistants.{name}")
            for name, body in assistants_raw.items()
        )
        return s.Config(
            fastagi=self.build(s.FastAgiConfig, raw.get("fastagi"), "fastagi"),
            sidecar=self.build(s.SidecarConfig, raw.get("sidecar"), "sidecar"),
            ami=self.build(s.AmiConfig, raw.get("ami"), "ami"),
            routing=self.build_routing(raw.get("routing"), "routing"),
            assistants=assistants,
            source=self.source,
            health=self.build(s.HealthConfig, raw.get("health"), "health"),
            dashboard=self.build(s.DashboardConfig, raw.get("dashboard"), "dashboard"),
            recordings=self.build(s.RecordingsConfig, raw.get("recordings"), "recordings"),
            logging=self.build_logging(raw.get("logging"), "logging"),
            drain=self.build(s.DrainConfig, raw.get("drain"), "drain"),
            service=self.build(s.ServiceConfig, raw.get("service"), "service"),
            store=self.build(s.StoreConfig, raw.get("store"), "store"),
        )

    def build_logging(self, raw: Any, path: str) -> s.LoggingConfig:
        raw = self.mapping(raw, path)
        levels = self.pairs(raw.pop("levels"), f"{path}.levels") if "levels" in raw else ()
        return dataclasses.replace(self.build(s.LoggingConfig, raw, path), levels=levels)

    def build_routing(self, raw: Any, path: str) -> s.RoutingConfig:
        raw = self.mapping(raw, path)
        rules = []
        rules_raw = raw.pop("rules", None) or []
        if not isinstance(rules_raw, list):
            raise self.err(f"{path}.rules", f"expected a list of rules, got {type(rules_raw).__name__}")
        for i, r in enumerate(rules_raw):
            rp = f"{path}.rules[{i}]"
            r = self.mapping(r, rp)
            if "assistant" not in r:
                raise self.err(rp, "a rule needs 'assistant'")
            match = self.mapping(r.pop("match", None), f"{rp}.match")
            pairs = {k: self.pairs(match.pop(k), f"{rp}.match.{k}")
                     for k in ("query", "variables") if k in match}
            m = dataclasses.replace(self.build(s.Match, match, f"{rp}.match"), **pairs)
            assistant = self.scalar(str, r.pop("assistant"), f"{rp}.assistant")
            if r:
                raise self.err(f"{rp}.{next(iter(r))}", "unknown key (expected match, assistant)")
            rules.append(s.Rule(m, assistant))
        cfg = self.build(s.RoutingConfig, raw, path)
        return dataclasses.replace(cfg, rules=tuple(rules))

    def build_assistant(self, name: str, raw: Any, path: str) -> s.AssistantConfig:
        raw = dict(self.mapping(raw, path))
        if "name" in raw:
            raise self.err(f"{path}.name", "unknown key (the assistant's name is its mapping key)")
        dests = raw.pop("destinations", None) or {}
        dests = self.mapping(dests, f"{path}.destinations")
        destinations = tuple(
            (str(k), self.build(s.Destination, v, f"{path}.destinations.{k}"))
            for k, v in dests.items()
        )
        brain = dict(self.mapping(raw.pop("brain", None), f"{path}.brain"))
        dtmf_raw = self.mapping(brain.pop("dtmf", None), f"{path}.brain.dtmf")
        dtmf = tuple(self._dtmf(str(k), v, f"{path}.brain.dtmf.{k}") for k, v in dtmf_raw.items())
        brain_cfg = self.build(s.RulesBrainConfig, brain, f"{path}.brain")
        brain_cfg = dataclasses.replace(brain_cfg, dtmf=dtmf)
        tools = dict(self.mapping(raw.pop("tools", None), f"{path}.tools"))
        hooks_raw = tools.pop("webhooks", None) or []
        if not isinstance(hooks_raw, list):
            raise self.err(f"{path}.tools.webhooks", "expected a list of webhook tools")
        webhooks = tuple(self._webhook(h, f"{path}.tools.webhooks[{i}]")
                         for i, h in enumerate(hooks_raw))
        tools_cfg = dataclasses.replace(self.build(s.ToolsConfig, tools, f"{path}.tools"),
                                        webhooks=webhooks)
        if "deepgram" in raw:
            raw["deepgram"] = self._deepgram(raw["deepgram"], f"{path}.deepgram")
        cfg = self.build(s.AssistantConfig, {"name": name, **raw}, path)
        return _with_derived_defaults(dataclasses.replace(
            cfg, destinations=destinations, brain=brain_cfg, tools=tools_cfg))

    def _deepgram(self, raw: Any, path: str) -> s.DeepgramAgentConfig:
        """``deepgram:``, whose ``speak`` and ``think`` are lists of providers in fallback
        order with ``headers_env`` written as mappings."""
        body = dict(self.mapping(raw, path))
        lists: dict[str, Any] = {}
        for key, cls in (("speak", s.DeepgramSpeakEntry), ("think", s.DeepgramThinkEntry)):
            items = body.pop(key, None)
            if items is None:
                continue
            if not isinstance(items, list):
                raise self.err(f"{path}.{key}", "expected a list of providers in fallback order")
            entries = []
            for i, item in enumerate(items):
                ip = f"{path}.{key}[{i}]"
                entry = dict(self.mapping(item, ip))
                pairs = ({"headers_env": self.pairs(entry.pop("headers_env"), f"{ip}.headers_env")}
                         if "headers_env" in entry else {})
                entries.append(dataclasses.replace(self.build(cls, entry, ip), **pairs))
            lists[key] = tuple(entries)
        return dataclasses.replace(self.build(s.DeepgramAgentConfig, body, path), **lists)

    def _webhook(self, raw: Any, path: str) -> s.WebhookTool:
        body = dict(self.mapping(raw, path))
        params = body.pop("parameters", None)
        if params is None:
            params = {"type": "object", "properties": {}}
        if not isinstance(params, dict) or params.get("type", "object") != "object":
            raise self.err(f"{path}.parameters",
                           "expected a JSON schema mapping of type object")
        pairs = {k: self.pairs(body.pop(k), f"{path}.{k}")
                 for k in ("headers", "headers_env") if k in body}
        hook = self.build(s.WebhookTool, body, path)
        return dataclasses.replace(hook, parameters=json.dumps(params, sort_keys=True), **pairs)

    def _dtmf(self, digit: str, raw: Any, path: str) -> s.DtmfMapping:
        body = self.mapping(raw, path)
        if "digit" in body:
            raise self.err(f"{path}.digit", "unknown key (the digit is the mapping key)")
        return self.build(s.DtmfMapping, {**body, "digit": digit}, path)

    # -- generic structural conversion -----------------------------------------------------------

    def mapping(self, raw: Any, path: str) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise self.err(path, f"expected a mapping, got {type(raw).__name__}")
        return dict(raw)

    def pairs(self, raw: Any, path: str) -> tuple[tuple[str, str], ...]:
        m = self.mapping(raw, path)
        return tuple((str(k), self.scalar(str, v, f"{path}.{k}")) for k, v in m.items())

    def build(self, cls: type[Any], raw: Any, path: str) -> Any:
        if isinstance(raw, cls):
            return raw
        data = self.mapping(raw, path)
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            key = str(key)
            if key not in fields:
                raise self.err(
                    f"{path}.{key}" if path else key,
                    f"unknown key (expected one of {sorted(fields)})",
                )
            kwargs[key] = self.convert(hints[key], value, f"{path}.{key}" if path else key)
        for fname, f in fields.items():
            if fname not in kwargs and f.default is dataclasses.MISSING and (
                f.default_factory is dataclasses.MISSING
            ):
                raise self.err(f"{path}.{fname}", "required key is missing")
        return cls(**kwargs)

    def convert(self, tp: Any, value: Any, path: str) -> Any:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):
            if (value is None or value == "") and type(None) in args:
                return None  # "" too: an optional setting from an unset "${VAR:-}"
            inner = [a for a in args if a is not type(None)]
            return self.convert(inner[0], value, path)
        if origin is Literal:
            if value not in args:
                raise self.err(path, f"expected one of {list(args)}, got {value!r}")
            return value
        if origin is tuple:
            if not isinstance(value, list):
                raise self.err(path, f"expected a list, got {type(value).__name__}")
            return tuple(self.convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if dataclasses.is_dataclass(tp):
            return self.build(typing.cast(type[Any], tp), value, path)
        return self.scalar(tp, value, path)

    def scalar(self, tp: Any, value: Any, path: str) -> Any:
        if tp is str:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise self.err(path, f"expected a string, got {type(value).__name__}")
            if isinstance(value, int) and not isinstance(value, bool):
                # YAML turns 012 into 10: phone numbers and extensions must be quoted.
                if path.endswith(("exten", "dnid", "extension", "callerid", "digit")):
                    raise self.err(path, f"expected a quoted string (got the number {value}); "
                                   "quote phone numbers and extensions")
            return str(value)
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
                return value.lower() in ("true", "yes", "on", "1")
            raise self.err(path, f"expected true or false, got {value!r}")
        if tp is int:
            if isinstance(value, bool):
                raise self.err(path, f"expected an integer, got {value!r}")
            try:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                return int(value)
            except (TypeError, ValueError):
                raise self.err(path, f"expected an integer, got {value!r}") from None
        if tp is float:
            if isinstance(value, bool):
                raise self.err(path, f"expected a number, got {value!r}")
            try:
                return float(value)
            except (TypeError, ValueError, OverflowError):  # OverflowError: an int over 1e308
                raise self.err(path, f"expected a number, got {value!r:.40}") from None
        raise self.err(path, f"unsupported type {tp!r}")  # pragma: no cover - schema bug


_DTMF_KEYS = set("0123456789*#ABCD")
_PROVIDERS = {"local", "pipeline", "echo", "openai_realtime", "openai_live", "deepgram_agent"}
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_RESERVED_TOOLS = {"transfer_call", "hangup_call"}
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_DEEPGRAM_RATES = {8000, 16000, 24000, 48000}
_AUDIO_FORMATS = {"slin", "slin16", "ulaw", "alaw"}


def _validate(cfg: s.Config, source: str) -> None:
    names = [a.name for a in cfg.assistants]
    if not names:
        raise ConfigError(source, "assistants", "at least one assistant is required")
    if cfg.routing.default and cfg.routing.default not in names:
        raise ConfigError(source, "routing.default",
                          f"unknown assistant {cfg.routing.default!r} (have {names})")
    for i, rule in enumerate(cfg.routing.rules):
        if rule.assistant not in names:
            raise ConfigError(source, f"routing.rules[{i}].assistant",
                              f"unknown assistant {rule.assistant!r} (have {names})")
        for fname in ("script", "dnid", "extension", "callerid", "context"):
            pattern = getattr(rule.match, fname)
            if pattern is not None:
                try:
                    re.compile(pattern)
                except (re.error, OverflowError, RecursionError) as exc:  # a{4294967296}
                    raise ConfigError(source, f"routing.rules[{i}].match.{fname}",
                                      f"not a valid regular expression: {exc}") from None
    for port_path, port in (("fastagi.listen.port", cfg.fastagi.listen.port),
                            ("sidecar.audiosocket.port", cfg.sidecar.audiosocket.port),
                            ("sidecar.control.port", cfg.sidecar.control.port),
                            ("health.listen.port", cfg.health.listen.port)):
        if not 0 <= port <= 65535:
            raise ConfigError(source, port_path, f"expected a TCP port 0..65535, got {port}")
    _validate_ops(cfg, source)
    _validate_workers(cfg, source)
    if not 0 <= cfg.sidecar.playout.lead_frames <= 5:
        raise ConfigError(source, "sidecar.playout.lead_frames",
                          "expected 0..5 frames (Asterisk drops a burst toward a real channel)")
    if cfg.fastagi.transfer not in ("auto", "goto", "redirect"):
        raise ConfigError(source, "fastagi.transfer",
                          f"expected auto, goto or redirect, got {cfg.fastagi.transfer!r}")
    if not 0 < cfg.fastagi.offer_timeout < 1.0:
        raise ConfigError(source, "fastagi.offer_timeout",
                          "expected seconds above 0 and below 1 (a caller must never wait longer)")
    if cfg.fastagi.caller_rate_limit < 0:
        raise ConfigError(source, "fastagi.caller_rate_limit",
                          "expected a number of calls, 0 for no limit")
    if not cfg.fastagi.caller_rate_window > 0:
        raise ConfigError(source, "fastagi.caller_rate_window", "expected seconds above 0")
    for a in cfg.assistants:
        p = f"assistants.{a.name}"
        if a.provider not in _PROVIDERS:
            raise ConfigError(source, f"{p}.provider",
                              f"unknown provider {a.provider!r} (expected one of {sorted(_PROVIDERS)})")
        if a.audio_format not in _AUDIO_FORMATS:
            raise ConfigError(source, f"{p}.audio_format",
                              f"expected one of {sorted(_AUDIO_FORMATS)}, got {a.audio_format!r}")
        if not 0 <= a.vad.aggressiveness <= 3:
            raise ConfigError(source, f"{p}.vad.aggressiveness", "expected 0..3")
        dest_names = {k for k, _ in a.destinations}
        actions: list[tuple[str, s.Action]] = [
            (f"{p}.brain.intents[{i}].action", it.action) for i, it in enumerate(a.brain.intents)
        ]
        actions += [(f"{p}.brain.dtmf.{m.digit}.action", m.action) for m in a.brain.dtmf]
        actions.append((f"{p}.brain.no_input.action", a.brain.no_input.action))
        nu = a.brain.not_understood
        if nu.destination and nu.destination != a.fallback_destination:  # that is checked below
            actions.append((f"{p}.brain.not_understood",
                            s.Action("transfer", destination=nu.destination)))
        _validate_understanding(a, source, p)
        for apath, act in actions:
            if act.kind == "transfer" and act.destination not in dest_names:
                raise ConfigError(source, f"{apath}.destination",
                                  f"unknown destination {act.destination!r} "
                                  f"(the assistant allows {sorted(dest_names)})")
        for i, it in enumerate(a.brain.intents):
            if not it.phrases and not it.keywords:
                raise ConfigError(source, f"{p}.brain.intents[{i}]",
                                  "an intent needs phrases or keywords")
        for m in a.brain.dtmf:
            if m.digit not in _DTMF_KEYS:
                raise ConfigError(source, f"{p}.brain.dtmf.{m.digit}",
                                  "expected a DTMF key (0-9, *, #, A-D)")
        if a.fallback_destination and a.fallback_destination not in dest_names:
            raise ConfigError(source, f"{p}.fallback_destination",
                              f"unknown destination {a.fallback_destination!r}")
        _validate_model_assistant(a, names, source, p)


def _with_derived_defaults(a: s.AssistantConfig) -> s.AssistantConfig:
    """Defaults that come from the rest of the assistant: a misunderstood caller goes to the
    ``fallback_destination`` unless ``not_understood.destination`` says otherwise, and a
    Deepgram STT without ``keyterms`` is sent the assistant's vocabulary (nova-3 and Flux)."""
    from ..brain.vocabulary import default_keyterms

    nu = a.brain.not_understood
    if not nu.destination and a.fallback_destination:
        a = dataclasses.replace(a, brain=dataclasses.replace(a.brain, not_understood=(
            dataclasses.replace(nu, destination=a.fallback_destination))))
    if a.stt.engine == "deepgram" and not a.stt.keyterms:
        terms = default_keyterms(a)
        if terms:
            a = dataclasses.replace(a, stt=dataclasses.replace(a.stt, keyterms=terms))
    return a


def _validate_understanding(a: s.AssistantConfig, source: str, p: str) -> None:
    """The rule brain's matching threshold, misunderstanding limit and the filler."""
    checks: list[tuple[str, bool, str]] = [
        ("brain.min_confidence", 0.5 <= a.brain.min_confidence <= 1.0,
         "expected 0.5..1.0 (1.0: exact matches only)"),
        ("brain.not_understood.after", 0 <= a.brain.not_understood.after <= 10,
         "expected 0..10 misunderstandings (0: never transfer)"),
        ("filler.after", 0 <= a.filler.after <= 10, "expected 0..10 s (0: no filler)"),
        ("filler.text", len(a.filler.text) <= 100, "expected at most 100 characters"),
    ]
    for key, ok, msg in checks:
        if not ok:
            raise ConfigError(source, f"{p}.{key}", msg)


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):([0-9]{1,5})")


def _validate_workers(cfg: s.Config, source: str) -> None:
    """The media workers (``sidecar.workers``, ``worker_port_step``) and ``fastagi.media``
    (see :mod:`.workers` for the port scheme)."""
    sc = cfg.sidecar
    if sc.workers is not None and not 0 <= sc.workers <= 1024:
        raise ConfigError(source, "sidecar.workers",
                          "expected 0..1024 (leave it out for one per CPU)")
    if not 1 <= sc.worker_port_step <= 10000:
        raise ConfigError(source, "sidecar.worker_port_step", "expected 1..10000")
    if sc.workers == 0 and not cfg.fastagi.media:
        raise ConfigError(source, "sidecar.workers",
                          "0 local media workers and no fastagi.media: no call could be served")
    last = (sc.workers or 1) - 1
    for path, port in (("sidecar.audiosocket.port", sc.audiosocket.port),
                       ("sidecar.control.port", sc.control.port),
                       ("health.listen.port", cfg.health.listen.port)):
        if port and port + last * sc.worker_port_step > 65535:
            raise ConfigError(source, path, f"worker {last} would listen on port "
                              f"{port + last * sc.worker_port_step} (> 65535): lower the port, "
                              "sidecar.workers or sidecar.worker_port_step")
    names: set[str] = set()
    for i, host in enumerate(cfg.fastagi.media):
        p = f"fastagi.media[{i}]"
        if not re.fullmatch(r"wss?://[^/\s]+:[0-9]{1,5}(/\S*)?", host.control_url):
            raise ConfigError(source, f"{p}.control_url",
                              "expected ws://HOST:PORT/control (the worker's control link)")
        m = _HOST_PORT.fullmatch(host.audiosocket_address)
        if m is None or not 0 < int(m.group(2)) <= 65535:
            raise ConfigError(source, f"{p}.audiosocket_address",
                              "expected HOST:PORT (where Asterisk reaches the worker's AudioSocket)")
        key = host.name or host.control_url
        if key in names:
            raise ConfigError(source, p, f"{key!r} is listed twice")
        names.add(key)


def _validate_ops(cfg: s.Config, source: str) -> None:
    """Logging levels, the drain, the service's runtime directory, the call-record policy."""
    lc = cfg.logging
    for key, level in (("logging.level", lc.level),
                       *((f"logging.levels.{name}", lv) for name, lv in lc.levels)):
        if level.upper() not in _LOG_LEVELS:
            raise ConfigError(source, key, f"expected one of {list(_LOG_LEVELS)}, got {level!r}")
    d = cfg.drain
    if not 0 <= d.deadline_seconds <= 3600:
        raise ConfigError(source, "drain.deadline_seconds",
                          "expected seconds 0..3600 (0: hand every live call on at once)")
    if len(d.announcement) > 500:
        raise ConfigError(source, "drain.announcement", "expected at most 500 characters")
    if cfg.service.runtime_dir and not os.path.isabs(cfg.service.runtime_dir):
        raise ConfigError(source, "service.runtime_dir",
                          f"expected an absolute directory, got {cfg.service.runtime_dir!r}")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", cfg.service.control_secret_env):
        raise ConfigError(source, "service.control_secret_env",
                          "expected the name of an environment variable, e.g. "
                          "AGI_VOICE_CONTROL_SECRET")
    try:
        parse_allow(cfg.fastagi.allow)
    except ValueError as exc:
        raise ConfigError(source, f"fastagi.allow{str(exc).split(':', 1)[0]}",
                          str(exc).split(": ", 1)[1]) from None
    r = cfg.sidecar.records
    if r.max_bytes != 0 and r.max_bytes < 4096:
        raise ConfigError(source, "sidecar.records.max_bytes",
                          "expected 0 (no size limit) or at least 4096 bytes")
    inf = cfg.sidecar.inference
    if not 0 <= inf.processes <= 64:
        raise ConfigError(source, "sidecar.inference.processes",
                          "expected 0..64 processes (0: one per CPU core)")
    if not 0 <= inf.threads <= 64:
        raise ConfigError(source, "sidecar.inference.threads",
                          "expected 0..64 threads (0: onnxruntime's default)")
    if not 0 <= inf.nice <= 19:
        raise ConfigError(source, "sidecar.inference.nice", "expected 0..19")
    if not 0 <= r.backups <= 1000:
        raise ConfigError(source, "sidecar.records.backups", "expected 0..1000 rotated files")
    if r.max_age_days < 0:
        raise ConfigError(source, "sidecar.records.max_age_days",
                          "expected days >= 0 (0: no age limit)")
    if cfg.recordings.max_age_days < 0:
        raise ConfigError(source, "recordings.max_age_days",
                          "expected days >= 0 (0: recordings are kept)")
    st = cfg.store
    if st.url and not re.match(r"(sqlite:///.|postgres(ql)?://)", st.url):
        raise ConfigError(source, "store.url", "expected sqlite:///relative.db, "
                          "sqlite:////absolute/path.db or postgresql://user@host/db")
    if st.max_age_days < 0:
        raise ConfigError(source, "store.max_age_days", "expected days >= 0 (0: no age limit)")
    if not 1 <= st.queue <= 1_000_000:
        raise ConfigError(source, "store.queue", "expected 1..1000000 records")


def _validate_model_assistant(a: s.AssistantConfig, names: list[str], source: str,
                              p: str) -> None:
    """The settings of model-driven assistants: templates, tools, fallback, provider fields."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from ..brain.prompt import TemplateError, check_template

    for key in ("instructions", "greeting"):
        try:
            check_template(getattr(a, key))
        except TemplateError as exc:
            raise ConfigError(source, f"{p}.{key}", str(exc)) from None
    if a.timezone:
        try:
            ZoneInfo(a.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(source, f"{p}.timezone",
                              f"unknown time zone {a.timezone!r} (e.g. Europe/London)") from None
    if a.fallback_assistant:
        if a.fallback_assistant not in names or a.fallback_assistant == a.name:
            raise ConfigError(source, f"{p}.fallback_assistant",
                              f"expected another assistant (have {names})")
    if a.start_timeout <= 0:
        raise ConfigError(source, f"{p}.start_timeout", "expected seconds above 0")
    if a.apology_file and not os.path.isfile(a.apology_file):
        raise ConfigError(source, f"{p}.apology_file", f"no such file: {a.apology_file}")
    d = a.dtmf_input
    if d.terminator and d.terminator not in _DTMF_KEYS:
        raise ConfigError(source, f"{p}.dtmf_input.terminator",
                          "expected a DTMF key (0-9, *, #, A-D) or empty")
    if not 100 <= d.inter_digit_ms <= 10_000 or not 1 <= d.max_digits <= 64:
        raise ConfigError(source, f"{p}.dtmf_input",
                          "expected inter_digit_ms 100..10000 and max_digits 1..64")
    seen: set[str] = set()
    for i, hook in enumerate(a.tools.webhooks):
        hp = f"{p}.tools.webhooks[{i}]"
        if not _TOOL_NAME.fullmatch(hook.name) or hook.name in _RESERVED_TOOLS:
            raise ConfigError(source, f"{hp}.name", "expected letters, digits, _ or - (at most "
                              "64), not transfer_call or hangup_call")
        if hook.name in seen:
            raise ConfigError(source, f"{hp}.name", f"duplicate tool name {hook.name!r}")
        seen.add(hook.name)
        if not re.match(r"https?://[^/\s]+", hook.url):
            raise ConfigError(source, f"{hp}.url", "expected an http:// or https:// URL")
        if hook.url.lower().startswith("http://") and not hook.allow_http:
            raise ConfigError(source, f"{hp}.url", "expected an https:// URL (a plain http:// "
                              "one needs allow_http: true on the tool)")
        if not 0 < hook.timeout <= 30:
            raise ConfigError(source, f"{hp}.timeout", "expected seconds above 0, at most 30")
        for name, _ in hook.headers + hook.headers_env:
            if not _HEADER_NAME.fullmatch(name):
                raise ConfigError(source, f"{hp}.headers", f"not a header name: {name!r}")
    if a.is_pipeline:
        _validate_pipeline(a, source, p)
    if a.deepgram.sample_rate not in _DEEPGRAM_RATES:
        raise ConfigError(source, f"{p}.deepgram.sample_rate",
                          f"expected one of {sorted(_DEEPGRAM_RATES)}")
    _validate_deepgram(a.deepgram, source, f"{p}.deepgram")
    _validate_live(a.live, source, f"{p}.live")


_FLUX_ONLY = ("eot_threshold", "eager_eot_threshold", "eot_timeout_ms", "language_hints")
_SPEAK_NEEDS = {"deepgram": ("model",), "open_ai": ("model", "voice", "url"),
                "eleven_labs": ("model", "url"), "cartesia": ("model", "voice", "url")}


def _validate_deepgram(d: s.DeepgramAgentConfig, source: str, p: str) -> None:
    """Flux (listen v2) and its end-of-turn settings (providers-2026-update.md 3.2), and the
    speak/think fallback lists (3.7; SDK 7.17 provider shapes)."""
    flux = d.listen_version == "v2"
    if flux != d.listen_model.startswith("flux-"):
        raise ConfigError(source, f"{p}.listen_model", (
            f"Flux (listen_version: v2) takes flux-general-en or flux-general-multi, got "
            f"{d.listen_model!r}" if flux else
            f"{d.listen_model!r} is a Flux model: set listen_version: v2"))
    for key in _FLUX_ONLY if not flux else ():
        if getattr(d, key) not in (None, ()):
            raise ConfigError(source, f"{p}.{key}", "only with listen_version: v2 (Flux)")
    checks = [
        ("eot_threshold", d.eot_threshold is None or 0.5 <= d.eot_threshold <= 1.0,
         "expected 0.5..1.0 (1.0: no confidence-based end of turn)"),
        ("eager_eot_threshold", d.eager_eot_threshold is None or
         0.3 <= d.eager_eot_threshold <= 0.9, "expected 0.3..0.9"),
        ("eot_timeout_ms", d.eot_timeout_ms is None or 500 <= d.eot_timeout_ms <= 60000,
         "expected 500..60000 ms"),
        ("language_hints", not d.language_hints or d.listen_model == "flux-general-multi",
         "only with listen_model: flux-general-multi"),
    ]
    for key, ok, expected in checks:
        if not ok:
            raise ConfigError(source, f"{p}.{key}", expected)
    default = s.DeepgramAgentConfig()
    flat = {"speak": ("speak_model",),
            "think": ("think_provider", "think_model", "temperature", "think_url")}
    for key, names in flat.items():
        for name in names if getattr(d, key) else ():
            if getattr(d, name) != getattr(default, name):
                raise ConfigError(source, f"{p}.{name}",
                                  f"set either {name} or the {key} list, not both")
    for i, sp in enumerate(d.speak):
        ip = f"{p}.speak[{i}]"
        for key in _SPEAK_NEEDS[sp.provider]:
            if not getattr(sp, key):
                raise ConfigError(source, f"{ip}.{key}", f"required for provider {sp.provider}")
        schemes = ("https://", "wss://") if sp.provider == "eleven_labs" else ("https://",)
        if sp.url and not sp.url.startswith(schemes):
            raise ConfigError(source, f"{ip}.url", f"expected a {' or '.join(schemes)} URL "
                              "(wss only for eleven_labs)")
    for i, th in enumerate(d.think):
        ip = f"{p}.think[{i}]"
        if not th.model:
            raise ConfigError(source, f"{ip}.model", "required")
        if th.url and not th.url.startswith(("https://", "http://")):
            raise ConfigError(source, f"{ip}.url", "expected an http(s):// URL")
    endpoints: list[tuple[str, s.DeepgramSpeakEntry | s.DeepgramThinkEntry]] = [
        *((f"speak[{i}]", e) for i, e in enumerate(d.speak)),
        *((f"think[{i}]", e) for i, e in enumerate(d.think))]
    for where, e in endpoints:
        for name, var in e.headers_env:
            if not _ENV_NAME.fullmatch(var):
                raise ConfigError(source, f"{p}.{where}.headers_env.{name}",
                                  f"expected an environment variable name, got {var!r}")


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _validate_live(lv: s.LiveConfig, source: str, p: str) -> None:
    """An assistant's ``live:`` (GPT-Live) settings."""
    checks: list[tuple[str, bool, str]] = [
        ("url", lv.url.startswith(("ws://", "wss://")), "expected a ws:// or wss:// URL"),
        ("url", "?" not in lv.url, "expected no query (the model goes in session.start)"),
        ("pcm_rate", lv.pcm_rate in (16000, 24000), "expected 16000 or 24000"),
        ("acknowledgement_delay_ms", 0 <= lv.acknowledgement_delay_ms <= 10000,
         "expected 0..10000 ms"),
        ("jitter_ms", 0 <= lv.jitter_ms <= 500, "expected 0..500 ms"),
        ("end_silence_ms", 60 <= lv.end_silence_ms <= 3000, "expected 60..3000 ms"),
        ("ping_seconds", 0 <= lv.ping_seconds <= 600, "expected 0..600 s (0: no pings)"),
        ("model", bool(lv.model), "expected a model name"),
        ("delegate_model", bool(lv.delegate_model), "expected a model name"),
    ]
    for key, ok, expected in checks:
        if not ok:
            raise ConfigError(source, f"{p}.{key}", expected)


def _validate_pipeline(a: s.AssistantConfig, source: str, p: str) -> None:
    """The stages of a pipeline assistant."""
    checks: list[tuple[str, bool, str]] = [
        ("stt.endpointing_ms", 10 <= a.stt.endpointing_ms <= 5000, "expected 10..5000 ms"),
        ("stt.utterance_end_ms", 1000 <= a.stt.utterance_end_ms <= 5000,
         "expected 1000..5000 ms (Deepgram's minimum is 1000)"),
        ("stt.timeout", 0 < a.stt.timeout <= 60, "expected seconds above 0, at most 60"),
        ("tts.speed", 0.25 <= a.tts.speed <= 4.0, "expected 0.25..4"),
        ("tts.timeout", 0 < a.tts.timeout <= 60, "expected seconds above 0, at most 60"),
        ("llm.timeout", 0 < a.llm.timeout <= 120, "expected seconds above 0, at most 120"),
        ("llm.history_messages", 2 <= a.llm.history_messages <= 1000, "expected 2..1000"),
        ("llm.max_tool_rounds", 1 <= a.llm.max_tool_rounds <= 10, "expected 1..10"),
        ("llm.max_tokens", 1 <= a.llm.max_tokens <= 32768, "expected 1..32768"),
        ("llm.temperature", 0 <= a.llm.temperature <= 2, "expected 0..2"),
    ]
    for key, ok, msg in checks:
        if not ok:
            raise ConfigError(source, f"{p}.{key}", msg)
    for key, url in (("stt.url", a.stt.url), ("llm.url", a.llm.url)):
        if url and not re.match(r"(https?|wss?)://[^/\s]+", url):
            raise ConfigError(source, f"{p}.{key}", "expected an http(s):// or ws(s):// URL")
    if a.tts.url and not re.match(r"(https?|wss?)://[^/\s]+", a.tts.url):
        raise ConfigError(source, f"{p}.tts.url", "expected an http(s):// or ws(s):// URL")
    if a.stt.engine == "deepgram" and a.stt.url and not a.stt.url.startswith(("ws://", "wss://")):
        raise ConfigError(source, f"{p}.stt.url", "Deepgram streaming STT needs a ws(s):// URL")
    if a.tts.engine == "deepgram" and a.tts.url and not a.tts.url.startswith(("ws://", "wss://")):
        raise ConfigError(source, f"{p}.tts.url",
                          "expected Deepgram's ws(s):// speak URL (REST is derived from it)")
    if a.llm.engine == "llama_cpp" and not (a.llm.model_path and os.path.isfile(a.llm.model_path)):
        raise ConfigError(source, f"{p}.llm.model_path",
                          f"no such GGUF file: {a.llm.model_path or '(empty)'}")
    if a.llm.rules_first and a.llm.engine == "none":
        raise ConfigError(source, f"{p}.llm.rules_first", "needs an llm engine")
