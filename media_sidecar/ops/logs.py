"""Log set-up for both planes: three formats, levels per logger, structured fields, no secrets.

Formats (``--log-format`` or ``logging.format``):

- ``text``: ``2026-01-02 10:11:12,345 INFO agi_voice.calls: call ended uuid=... outcome=...``
- ``kv``:   ``ts=2026-01-02T10:11:12.345Z level=INFO logger=agi_voice.calls msg="call ended"
  uuid=... outcome=...`` (one line; values with spaces, quotes or ``=`` are quoted)
- ``json``: one JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, the fields,
  ``exc`` for a traceback.

Structured fields ride on the standard ``extra`` mechanism: ``log.info("call ended",
extra=fields(uuid=..., outcome=...))``; the text format appends them as ``key=value``.

Secrets: every formatted line (traceback included) has the values of the secrets the
configuration names, and of secret-looking environment variables (``*_API_KEY``, ``*_SECRET``,
``*_TOKEN``, ``*_PASSWORD``, ``AMI_SECRET``), replaced by ``***``. This is the last line of
defence (third-party libraries log request headers at DEBUG); product code never logs a secret
in the first place.

The module is shared by both planes (``fastagi_server`` imports it; it imports nothing of
``fastagi_server``). Each process configures logging once, from ``main``; the FastAGI and
sidecar processes started by ``agi-voice serve`` get the format through the environment
(``AGI_VOICE_LOG_FORMAT``), like any other setting they inherit.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from ..config.schema import Config, LoggingConfig

FORMATS = ("text", "kv", "json")
FORMAT_ENV = "AGI_VOICE_LOG_FORMAT"
FIELDS_ATTR = "agi_voice_fields"
_SECRET_ENV = re.compile(r"(^AMI_SECRET$|_API_KEY$|_SECRET$|_TOKEN$|_PASSWORD$)")
MIN_SECRET_LEN = 4
"""Shorter values are not redacted (a one-character "secret" would blank every line)."""
REDACTED = "***"
_KV_PLAIN = re.compile(r"[^\s\"=\\]+")


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a structured log line: ``log.info("call ended", extra=fields(...))``."""
    return {FIELDS_ATTR: values}


def record_fields(record: logging.LogRecord) -> Mapping[str, Any]:
    value = getattr(record, FIELDS_ATTR, None)
    return value if isinstance(value, Mapping) else {}


def secret_values(cfg: Config | None = None,
                  env: Mapping[str, str] | None = None) -> set[str]:
    """The secret strings to keep out of logs: the AMI secret, the values of every environment
    variable an assistant or a webhook reads a key from, and secret-looking variables."""
    env = os.environ if env is None else env
    names = {k for k in env if _SECRET_ENV.search(k)}
    values: set[str] = set()
    if cfg is not None:
        values.add(cfg.ami.secret)
        names.add(cfg.service.control_secret_env)  # the control link's shared secret
        for a in cfg.assistants:
            names.update((a.stt.api_key_env, a.tts.api_key_env, a.llm.api_key_env,
                          a.realtime.api_key_env, a.deepgram.api_key_env))
            for hook in a.tools.webhooks:
                names.update(var for _, var in hook.headers_env)
    values.update(env.get(n, "") for n in names if n)
    return {v for v in values if len(v) >= MIN_SECRET_LEN}


class _Redacting(logging.Formatter):
    """Base of the three formats: replaces secret values in the finished line."""

    def __init__(self, secrets: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.set_secrets(secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        # JSON lines escape some characters: redact the escaped spelling too.
        forms = {s for v in secrets for s in (v, json.dumps(v)[1:-1])}
        self._secrets = sorted(forms, key=len, reverse=True)

    def redact(self, line: str) -> str:
        for s in self._secrets:
            if s in line:
                line = line.replace(s, REDACTED)
        return line

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(self.render(record))

    def render(self, record: logging.LogRecord) -> str:
        raise NotImplementedError

    def exception_text(self, record: logging.LogRecord) -> str:
        text = ""
        if record.exc_info:
            text = self.formatException(record.exc_info)
        if record.stack_info:
            text = f"{text}\n{self.formatStack(record.stack_info)}".strip("\n")
        return text


def _kv_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                           default=str)
    if text and _KV_PLAIN.fullmatch(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def _iso(record: logging.LogRecord) -> str:
    stamp = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(_Redacting):
    """The classic line, with structured fields appended as ``key=value``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__(secrets, fmt="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def render(self, record: logging.LogRecord) -> str:
        line = logging.Formatter.format(self, record)
        extra = " ".join(f"{k}={_kv_value(v)}" for k, v in record_fields(record).items())
        if not extra:
            return line
        head, sep, tail = line.partition("\n")  # fields before a traceback, on the first line
        return f"{head} {extra}{sep}{tail}"


class KvFormatter(_Redacting):
    """``key=value`` pairs on one line (logfmt); a traceback goes into ``exc=`` as one value."""

    def render(self, record: logging.LogRecord) -> str:
        pairs: list[tuple[str, Any]] = [("ts", _iso(record)), ("level", record.levelname),
                                        ("logger", record.name), ("msg", record.getMessage())]
        pairs += list(record_fields(record).items())
        if exc := self.exception_text(record):
            pairs.append(("exc", exc))
        return " ".join(f"{k}={_kv_value(v)}" for k, v in pairs)


class JsonFormatter(_Redacting):
    """One JSON object per line."""

    def render(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {"ts": _iso(record), "level": record.levelname,
                                "logger": record.name, "msg": record.getMessage()}
        for k, v in record_fields(record).items():
            body.setdefault(k, v)
        if exc := self.exception_text(record):
            body["exc"] = exc
        return json.dumps(body, ensure_ascii=False, default=str)


def make_formatter(fmt: str, secrets: Iterable[str] = ()) -> _Redacting:
    """The formatter for ``text``, ``kv`` or ``json``. Raises ValueError for another name."""
    if fmt == "text":
        return TextFormatter(secrets)
    if fmt == "kv":
        return KvFormatter(secrets)
    if fmt == "json":
        return JsonFormatter(secrets)
    raise ValueError(f"unknown log format {fmt!r} (expected one of {list(FORMATS)})")


_HANDLER_NAME = "agi-voice"


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (as logging's last-resort handler
    does), so a handler set up once never holds on to a replaced or closed stream."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr


def setup_logging(fmt: str | None = None, *, verbose: bool = False,
                  config: LoggingConfig | None = None, secrets: Iterable[str] = (),
                  stream: Any = None) -> logging.Handler:
    """Configure the root logger: one stderr handler (replacing one set up here before) in the
    format ``fmt`` (else ``$AGI_VOICE_LOG_FORMAT``, else ``config.format``, else text), the
    root level from ``config`` (DEBUG when ``verbose``), and the per-logger levels of
    ``config``. Returns the handler. Raises ValueError for an unknown format."""
    fmt = fmt or os.environ.get(FORMAT_ENV) or (config.format if config else "") or "text"
    formatter = make_formatter(fmt, secrets)
    root = logging.getLogger()
    for h in list(root.handlers):
        if h.get_name() == _HANDLER_NAME:
            root.removeHandler(h)
            h.close()
    handler: logging.StreamHandler[Any] = (logging.StreamHandler(stream) if stream is not None
                                           else _Stderr())
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    level = "DEBUG" if verbose else (config.level.upper() if config else "INFO")
    root.setLevel(level)
    if config is not None and not verbose:
        for name, lv in config.levels:
            logging.getLogger(name).setLevel(lv.upper())
    return handler
