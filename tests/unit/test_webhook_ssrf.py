"""Webhooks against server-side request forgery: https only unless allowed, no private,
loopback, link-local or metadata address after DNS resolution unless allowed, the request
pinned to the checked address, no redirect followed (media_sidecar.tools.webhook).

A loopback HTTP server stands in for the CRM where a connection is expected; a resolver
passed to ``call_webhook`` stands in for DNS (no network but loopback)."""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from media_sidecar.config.loader import ConfigError, parse_config
from media_sidecar.config.schema import WebhookTool
from media_sidecar.tools.webhook import call_webhook, refusal

CALL = {"uuid": "u-1"}


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append({"path": self.path,  # type: ignore[attr-defined]
                                     "host": self.headers.get("Host")})
        status = 302 if self.path == "/moved" else 200
        out = b"" if status == 302 else b'{"ok": true}'
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


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


def fixed(*addresses: str):
    """A resolver that answers ``addresses`` for any name (what a hostile DNS could say)."""
    asked: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return list(addresses)

    resolve.asked = asked  # type: ignore[attr-defined]
    return resolve


def error_of(reply) -> str:
    body = json.loads(reply.output)
    assert body["ok"] is False
    return body["error"]


@pytest.mark.parametrize(("address", "private_ok", "metadata"), [
    ("127.0.0.1", True, False),
    ("127.8.9.10", True, False),
    ("10.1.2.3", True, False),
    ("172.16.5.4", True, False),
    ("192.168.1.1", True, False),
    ("100.64.0.1", True, False),  # shared address space (CGNAT)
    ("169.254.1.1", True, False),  # link-local
    ("::1", True, False),
    ("fe80::1", True, False),
    ("fc00::5", True, False),
    ("::ffff:127.0.0.1", True, False),  # IPv4-mapped loopback
    ("::ffff:10.0.0.1", True, False),
    ("169.254.169.254", False, True),  # the metadata service: never
    ("fd00:ec2::254", False, True),
    ("::ffff:169.254.169.254", False, True),
    ("64:ff9b::a9fe:a9fe", False, True),  # NAT64 of 169.254.169.254
    ("100.100.100.200", False, True),
    ("0.0.0.0", False, False),
    ("224.0.0.1", False, False),
])
def test_non_public_addresses_are_refused(address, private_ok, metadata):
    ip = ipaddress.ip_address(address)
    assert refusal(ip, allow_private=False) != ""
    assert (refusal(ip, allow_private=True) == "") is private_ok
    assert (refusal(ip, allow_private=True) == "a cloud metadata address") is metadata


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address):
    assert refusal(ipaddress.ip_address(address), allow_private=False) == ""


async def test_plain_http_is_refused_unless_the_tool_allows_it(server, caplog):
    url = f"http://127.0.0.1:{server.server_port}/ok"
    tool = WebhookTool(name="crm", url=url, allow_private=True)
    assert error_of(await call_webhook(tool, {}, CALL)) == "the crm service is not allowed"
    assert server.requests == []
    assert "webhook crm refused: http:// without allow_http" in caplog.text
    allowed = WebhookTool(name="crm", url=url, allow_private=True, allow_http=True)
    assert json.loads((await call_webhook(allowed, {}, CALL)).output) == {"ok": True}


async def test_loopback_is_refused_unless_the_tool_allows_private(server, caplog):
    tool = WebhookTool(name="crm", url=f"http://127.0.0.1:{server.server_port}/ok",
                       allow_http=True)
    assert error_of(await call_webhook(tool, {}, CALL)) == "the crm service is not allowed"
    assert server.requests == []
    assert "resolves to 127.0.0.1, a loopback address without allow_private" in caplog.text


async def test_a_name_is_checked_after_resolution(server):
    # "localhost" through the system resolver (/etc/hosts): loopback
    tool = WebhookTool(name="crm", url=f"http://localhost:{server.server_port}/ok",
                       allow_http=True)
    assert error_of(await call_webhook(tool, {}, CALL)) == "the crm service is not allowed"
    # a public-looking name whose DNS answers a private address, or the metadata service
    for answer in (["10.0.0.7"], ["93.184.216.34", "192.168.0.1"], ["169.254.169.254"]):
        hook = WebhookTool(name="crm", url="https://crm.example.com/hook")
        reply = await call_webhook(hook, {}, CALL, resolver=fixed(*answer))
        assert error_of(reply) == "the crm service is not allowed"
    # allow_private does not open the metadata service
    hook = WebhookTool(name="crm", url="https://crm.example.com/hook", allow_private=True)
    reply = await call_webhook(hook, {}, CALL, resolver=fixed("fd00:ec2::254"))
    assert error_of(reply) == "the crm service is not allowed"
    assert server.requests == []


async def test_the_request_goes_to_the_address_that_was_checked(server):
    """DNS rebinding: the name is resolved once, checked, and the connection made to that
    address; the Host header keeps the name."""
    resolver = fixed("127.0.0.1")
    tool = WebhookTool(name="crm", url=f"http://crm.test:{server.server_port}/ok",
                       allow_http=True, allow_private=True)
    assert json.loads((await call_webhook(tool, {}, CALL, resolver=resolver)).output) == \
        {"ok": True}
    assert resolver.asked == [("crm.test", server.server_port)]  # type: ignore[attr-defined]
    assert server.requests == [{"path": "/ok", "host": f"crm.test:{server.server_port}"}]


async def test_https_is_pinned_with_the_host_name_for_tls():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    tool = WebhookTool(name="crm", url="https://crm.example.com/hook?x=1")
    reply = await call_webhook(tool, {"a": 1}, CALL, transport=httpx.MockTransport(handler),
                               resolver=fixed("93.184.216.34"))
    assert json.loads(reply.output) == {"ok": True}
    (req,) = seen
    assert req.url.host == "93.184.216.34" and req.url.path == "/hook"
    assert req.headers["Host"] == "crm.example.com"
    # the TLS server name, and so the certificate check, is the configured host name
    assert req.extensions["sni_hostname"] == "crm.example.com"


async def test_a_redirect_is_not_followed(server):
    tool = WebhookTool(name="crm", url=f"http://127.0.0.1:{server.server_port}/moved",
                       allow_http=True, allow_private=True)
    assert "HTTP 302" in error_of(await call_webhook(tool, {}, CALL))
    assert [r["path"] for r in server.requests] == ["/moved"]


async def test_a_name_that_does_not_resolve_is_an_error_for_the_model(caplog):
    async def fails(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    tool = WebhookTool(name="crm", url="https://nowhere.invalid/hook")
    reply = await call_webhook(tool, {}, CALL, resolver=fails)
    assert error_of(reply) == "the crm service could not be reached"
    assert caplog.records[-1].levelno == logging.WARNING


def test_config_refuses_http_without_allow_http():
    text = ("assistants:\n  a:\n    provider: openai_realtime\n    tools:\n      webhooks:\n"
            "        - {name: crm, url: 'http://crm.lan/hook'%s}\n")
    with pytest.raises(ConfigError) as info:
        parse_config(text % "", "t.yaml")
    assert "assistants.a.tools.webhooks[0].url" in str(info.value)
    assert "allow_http: true" in str(info.value)
    cfg = parse_config(text % ", allow_http: true, allow_private: true", "t.yaml")
    hook = cfg.assistants[0].tools.webhooks[0]
    assert hook.allow_http and hook.allow_private
