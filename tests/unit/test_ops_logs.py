"""Log formats, structured fields, per-logger levels, secret redaction, and their config keys."""

from __future__ import annotations

import io
import json
import logging

import pytest

from fastagi_server.cli import build_parser
from media_sidecar.config.loader import ConfigError, load_config, parse_config
from media_sidecar.config.schema import LoggingConfig
from media_sidecar.ops.logs import (
    FORMAT_ENV,
    KvFormatter,
    make_formatter,
    secret_values,
    setup_logging,
)
from media_sidecar.ops.logs import fields as kv


def record(msg: str = "call ended", *args: object, exc: bool = False,
           **values: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            import sys
            exc_info = sys.exc_info()
    rec = logging.LogRecord("agi_voice.audiosocket", logging.INFO, __file__, 1, msg, args,
                            exc_info)
    rec.created = 1767348672.345
    for k, v in kv(**values).items():
        setattr(rec, k, v)
    return rec


FIELDS = dict(uuid="3f1c", assistant="receptionist", outcome="COMPLETED", duration=12.5,
              reason="caller said goodbye")


def test_text_appends_fields():
    line = make_formatter("text").format(record(**FIELDS))
    assert line.endswith("INFO agi_voice.audiosocket: call ended uuid=3f1c assistant=receptionist"
                         ' outcome=COMPLETED duration=12.5 reason="caller said goodbye"')


def test_kv_is_one_logfmt_line():
    line = make_formatter("kv").format(record(**FIELDS))
    assert line == ('ts=2026-01-02T10:11:12.345Z level=INFO logger=agi_voice.audiosocket '
                    'msg="call ended" uuid=3f1c assistant=receptionist outcome=COMPLETED '
                    'duration=12.5 reason="caller said goodbye"')


def test_json_is_one_object_per_line():
    line = make_formatter("json").format(record(**FIELDS))
    assert json.loads(line) == {"ts": "2026-01-02T10:11:12.345Z", "level": "INFO",
                                "logger": "agi_voice.audiosocket", "msg": "call ended",
                                **FIELDS}


@pytest.mark.parametrize("fmt", ["kv", "json"])
def test_a_traceback_and_a_hostile_value_stay_on_one_line(fmt):
    line = make_formatter(fmt).format(record("failed %s", "x", exc=True,
                                             caller='Bob\nagi_x: "y"'))
    assert "\n" not in line and "RuntimeError: boom" in line
    if fmt == "json":
        assert json.loads(line)["caller"] == 'Bob\nagi_x: "y"'
    else:
        assert 'caller="Bob\\nagi_x: \\"y\\""' in line


@pytest.mark.parametrize("fmt", ["text", "kv", "json"])
def test_secrets_are_redacted_in_every_format(fmt):
    secret = 's3cr"et-value'
    f = make_formatter(fmt, [secret])
    line = f.format(record("login with %s", secret, token=secret, exc=False))
    assert "s3cr" not in line and "***" in line


def test_secret_values_come_from_the_config_and_secret_looking_variables(tmp_path):
    cfg = load_config(None, env={"AMI_HOST": "h", "AMI_USERNAME": "u",
                                 "AMI_SECRET": "ami-pass-123"})
    env = {"OPENAI_API_KEY": "sk-abc123", "MY_TOKEN": "tok-999", "HOME": "/root",
           "X_PASSWORD": "1"}
    found = secret_values(cfg, env)
    assert found == {"ami-pass-123", "sk-abc123", "tok-999"}  # a 1-char value is not redacted


def test_setup_uses_the_format_and_per_logger_levels(monkeypatch):
    monkeypatch.delenv(FORMAT_ENV, raising=False)
    out = io.StringIO()
    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    ami, quiet = logging.getLogger("agi_voice.ami_test"), logging.getLogger("agi_voice.quiet")
    try:
        handler = setup_logging(None, config=LoggingConfig(
            level="WARNING", format="kv",
            levels=(("agi_voice.ami_test", "DEBUG"), ("agi_voice.quiet", "ERROR"))), stream=out)
        assert isinstance(handler.formatter, KvFormatter)
        logging.getLogger("agi_voice.other").info("not shown")
        logging.getLogger("agi_voice.other").warning("shown")
        ami.debug("ami detail")
        quiet.warning("hidden")
        lines = out.getvalue().splitlines()
        assert [ln.split("msg=")[1] for ln in lines] == ["shown", '"ami detail"']
        # the command-line format wins over the config's; -v makes everything DEBUG
        setup_logging("json", verbose=True, config=LoggingConfig(format="kv"), stream=out)
        assert root.level == logging.DEBUG
        assert isinstance(root.handlers[-1].formatter, type(make_formatter("json")))
        assert sum(h.get_name() == "agi-voice" for h in root.handlers) == 1  # replaced
    finally:
        for h in list(root.handlers):
            if h not in saved[1]:
                root.removeHandler(h)
        root.setLevel(saved[0])
        ami.setLevel(logging.NOTSET)
        quiet.setLevel(logging.NOTSET)


def test_log_format_flag_before_or_after_the_command():
    p = build_parser()
    assert p.parse_args(["--log-format", "json", "serve"]).log_format == "json"
    assert p.parse_args(["serve", "--log-format", "kv"]).log_format == "kv"
    assert p.parse_args(["check-config"]).log_format is None
    with pytest.raises(SystemExit):
        p.parse_args(["serve", "--log-format", "xml"])


def test_logging_config_keys():
    cfg = parse_config("""
logging:
  level: warning
  format: json
  levels: {agi_voice.ami: DEBUG, agi_voice.records: WARNING}
assistants: {a: {}}
""", "t.yaml", env={})
    assert cfg.logging == LoggingConfig(level="warning", format="json", levels=(
        ("agi_voice.ami", "DEBUG"), ("agi_voice.records", "WARNING")))


@pytest.mark.parametrize(("text", "path"), [
    ("logging: {level: LOUD}", "logging.level"),
    ("logging: {levels: {agi_voice.ami: chatty}}", "logging.levels.agi_voice.ami"),
    ("logging: {format: xml}", "logging.format"),
    ("logging: {colour: true}", "logging.colour"),
    ("health: {listen: {port: 70000}}", "health.listen.port"),
    ("health: {enabled: maybe}", "health.enabled"),
    ("sidecar: {records: {max_bytes: 100}}", "sidecar.records.max_bytes"),
    ("sidecar: {records: {backups: -1}}", "sidecar.records.backups"),
    ("sidecar: {records: {max_age_days: -2}}", "sidecar.records.max_age_days"),
    ("sidecar: {records: {transcripts: sometimes}}", "sidecar.records.transcripts"),
])
def test_config_errors_name_the_key(text, path):
    with pytest.raises(ConfigError) as err:
        parse_config(text + "\nassistants: {a: {}}\n", "t.yaml", env={})
    assert err.value.path == path
