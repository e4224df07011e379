"""Webhook tools over real loopback HTTP (a stdlib server in a thread, real time)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from media_sidecar.config.schema import WebhookTool
from media_sidecar.tools.webhook import call_webhook


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append(  # type: ignore[attr-defined]
            {"method": self.command, "path": self.path, "headers": dict(self.headers),
             "body": body})
        path = urlsplit(self.path).path
        status, ctype, out = 200, "application/json", b'{"status": "shipped"}'
        if path == "/slow":
            time.sleep(1.0)
        elif path == "/text":
            ctype, out = "text/plain", b"order 7 shipped"
        elif path == "/fail":
            status = 500
        elif path == "/big":
            out = b'"' + b"x" * 10000 + b'"'
        elif path == "/moved":
            status, out = 302, b""
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if status == 302:
            self.send_header("Location", "/ok")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = _answer


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.requests = []  # type: ignore[attr-defined]
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    t.join(5)


def hook(srv, path: str, **kw) -> WebhookTool:
    # the mock service is plain http on loopback: both need the tool's permission
    return WebhookTool(name="order_status", url=f"http://127.0.0.1:{srv.server_port}{path}",
                       allow_http=True, allow_private=True, **kw)


CALL = {"uuid": "u-1", "caller_id": "5551234", "variables": {"ACCOUNT": "A-42"}}


async def test_post_sends_arguments_context_and_env_headers(server):
    tool = hook(server, "/ok", headers=(("X-Source", "agi-voice"),),
                headers_env=(("Authorization", "CRM_AUTH"), ("X-Missing", "NOT_SET")))
    reply = await call_webhook(tool, {"order": "7"}, CALL, env={"CRM_AUTH": "Bearer s3cret"})
    assert json.loads(reply.output) == {"status": "shipped"}
    (req,) = server.requests
    assert req["method"] == "POST" and req["path"] == "/ok"
    assert json.loads(req["body"]) == {"tool": "order_status", "arguments": {"order": "7"},
                                       "call": CALL}
    assert req["headers"]["Authorization"] == "Bearer s3cret"
    assert req["headers"]["X-Source"] == "agi-voice"
    assert "X-Missing" not in req["headers"]


async def test_get_sends_arguments_as_query(server):
    reply = await call_webhook(hook(server, "/ok", method="GET"), {"order": "7", "n": 2}, CALL)
    assert reply.respond and json.loads(reply.output)["status"] == "shipped"
    (req,) = server.requests
    assert parse_qs(urlsplit(req["path"]).query) == {"order": ["7"], "n": ["2"],
                                                      "call_uuid": ["u-1"]}


@pytest.mark.parametrize(("path", "kw", "expect"), [
    ("/slow", {"timeout": 0.2}, "did not answer in time"),
    ("/fail", {}, "HTTP 500"),
    ("/moved", {}, "HTTP 302"),
])
async def test_failures_become_an_error_for_the_model(server, path, kw, expect):
    t0 = time.monotonic()
    reply = await call_webhook(hook(server, path, **kw), {}, CALL)
    body = json.loads(reply.output)
    assert body["ok"] is False and expect in body["error"]
    assert time.monotonic() - t0 < 0.9  # the timeout is honoured
    assert [r["path"] for r in server.requests] == [path]  # the redirect was not followed


async def test_unreachable_service_is_an_error_not_an_exception():
    tool = WebhookTool(name="crm", url="http://127.0.0.1:9/x", timeout=1.0, allow_http=True,
                       allow_private=True)
    body = json.loads((await call_webhook(tool, {}, CALL)).output)
    assert body == {"ok": False, "error": "the crm service could not be reached"}


async def test_text_bodies_are_wrapped_and_big_ones_truncated(server):
    text = json.loads((await call_webhook(hook(server, "/text"), {}, CALL)).output)
    assert text == {"ok": True, "result": "order 7 shipped"}
    big = await call_webhook(hook(server, "/big", max_result_bytes=100), {}, CALL)
    assert len(big.output) < 200 and "[truncated]" in big.output
