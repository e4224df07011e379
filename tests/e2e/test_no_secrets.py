"""Secrets never reach a log line or a call record, even at DEBUG.

A speech-to-speech call runs through the whole product on loopback (emulator -> FastAGI ->
authenticated control link -> sidecar -> the OpenAI Realtime mock, a webhook with a secret
header, the fake AMI with its login secret) with every logger at DEBUG (third-party libraries
included: websockets and httpx log request headers there). Each secret has a known value; the
lines as the product's three formats write them, and the call-record file, must hold none of
them. Product loggers (``agi_voice.*``) must not even hand one to the formatter: redaction is
the last line of defence, not the way product code keeps secrets out.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trio

from fastagi_server.emulator.caller import AgentQuiet, CallerScript
from media_sidecar.config.loader import parse_config
from media_sidecar.config.schema import AmiConfig
from media_sidecar.ops.logs import FORMATS, make_formatter, secret_values
from tests.e2e.stack import AMI_SECRET, open_stack
from tests.fakes import tone
from tests.mocks.openai_realtime import MockRealtimeServer, RealtimeScript

pytestmark = pytest.mark.e2e

API_KEY = "sk-test-apikey-5f0c1d8e2b7a4c39"
CONTROL_SECRET = "ctl-secret-9a8b7c6d5e4f3a2b1c0d"
CRM_TOKEN = "crm-token-0f1e2d3c4b5a6978"
SECRETS = {"API key": API_KEY, "control secret": CONTROL_SECRET, "webhook header": CRM_TOKEN,
           "AMI secret": AMI_SECRET}


class _Crm(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.auth.append(self.headers.get("Authorization"))  # type: ignore[attr-defined]
        out = b'{"status": "shipped"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def debug_logs() -> Iterator[tuple[_Capture, dict[str, io.StringIO]]]:
    """Every logger at DEBUG; the raw records, and the lines each product format writes."""
    root = logging.getLogger()
    old_level = root.level
    raw = _Capture()
    streams = {fmt: io.StringIO() for fmt in FORMATS}
    handlers: list[logging.Handler] = [raw]
    for stream in streams.values():
        h = logging.StreamHandler(stream)
        h.setLevel(logging.DEBUG)
        handlers.append(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(logging.DEBUG)
    try:
        yield raw, streams
    finally:
        for h in handlers:
            root.removeHandler(h)
        root.setLevel(old_level)


async def test_no_secret_in_any_log_line_or_record(tmp_path, monkeypatch, debug_logs):
    raw, streams = debug_logs
    monkeypatch.setenv("E2E_KEY", API_KEY)
    monkeypatch.setenv("AGI_VOICE_CONTROL_SECRET", CONTROL_SECRET)
    monkeypatch.setenv("CRM_AUTH", f"Bearer {CRM_TOKEN}")
    crm = ThreadingHTTPServer(("127.0.0.1", 0), _Crm)
    crm.auth = []  # type: ignore[attr-defined]
    threading.Thread(target=crm.serve_forever, daemon=True).start()
    mock = MockRealtimeServer(API_KEY, script=RealtimeScript(
        reply_ms=400, transcripts=["where is order seven"],
        function_calls={"order": ("order_status", {"order": "7"})},
        after_tool_reply="Your order has shipped."))
    rec_path = tmp_path / "calls.jsonl"
    try:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(mock.serve)
            cfg = parse_config(
                "routing: {default: sts}\nassistants:\n  sts:\n    provider: openai_realtime\n"
                f"    realtime: {{url: 'ws://127.0.0.1:{port}/v1/realtime', api_key_env: E2E_KEY,"
                " silence_ms: 400}\n"
                "    greeting: Hello.\n"
                "    tools:\n      webhooks:\n        - name: order_status\n"
                f"          url: http://127.0.0.1:{crm.server_port}/orders\n"
                "          allow_http: true\n          allow_private: true\n"
                "          headers_env: {Authorization: CRM_AUTH}\n"
                "          parameters: {type: object, properties: {order: {type: string}}}\n",
                "nosecrets.yaml")
            # what cli.py installs: the secrets the config names (the AMI secret, which the
            # stack sets as ${AMI_SECRET} would) and secret-looking environment variables
            named = dataclasses.replace(cfg, ami=AmiConfig(secret=AMI_SECRET))
            for fmt, h in zip(FORMATS, raw_handlers(streams), strict=True):
                h.setFormatter(make_formatter(fmt, secret_values(named)))
            async with open_stack(cfg, str(rec_path)) as stack:
                script = (CallerScript().speak_after_agent_quiet(tone(500, 0.8), quiet_ms=400)
                          .hangup(at=AgentQuiet(600)))
                await stack.call(script, seconds=30)
                await stack.wait_records(1)
                assert stack.fastagi.server.control.clients[0].secret == CONTROL_SECRET
            nursery.cancel_scope.cancel()
    finally:
        crm.shutdown()
        crm.server_close()
    # the secrets were really used: the webhook got its header, the provider its key
    assert crm.auth == [f"Bearer {CRM_TOKEN}"]  # type: ignore[attr-defined]
    assert mock.sessions, "the provider was never reached"
    assert len(raw.records) > 100, "DEBUG logging was not on"
    for fmt, stream in streams.items():
        text = stream.getvalue()
        assert text.count("\n") > 100
        for what, value in SECRETS.items():
            assert value not in text, f"the {what} is in a {fmt} log line"
    for record in raw.records:
        if record.name.startswith("agi_voice"):
            line = record.getMessage() + str(record.__dict__.get("agi_voice_fields", ""))
            for what, value in SECRETS.items():
                assert value not in line, f"{record.name} logged the {what}: {line[:200]}"
    text = rec_path.read_text()
    assert text.strip()
    for what, value in SECRETS.items():
        assert value not in text, f"the {what} is in the call record"


def raw_handlers(streams: dict[str, io.StringIO]) -> list[logging.Handler]:
    """The root's stream handlers writing to ``streams``, in FORMATS order."""
    by_stream = {id(getattr(h, "stream", None)): h for h in logging.getLogger().handlers}
    return [by_stream[id(streams[fmt])] for fmt in FORMATS]
