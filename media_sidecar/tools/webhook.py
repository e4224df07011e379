"""HTTP webhook tools: the model's arguments and the call context go to the administrator's URL,
the response body comes back to the model.

One request per tool call with its own timeout; redirects are not followed (the URL is the one
configured, nothing else); secret headers are read from the environment per call and never
logged. Whatever goes wrong (timeout, refused connection, HTTP error, a huge body) becomes a
short JSON error for the model, so it can tell the caller, and the call goes on.

Against server-side request forgery (the model chooses the arguments, a caller talks to the
model): the URL must be ``https://`` unless the tool sets ``allow_http: true``; its host is
resolved here and every address it resolves to is checked (:func:`refusal`): loopback,
private, link-local, shared (CGNAT) and other non-global addresses are refused unless the tool
sets ``allow_private: true``, and cloud metadata addresses (:data:`METADATA`), multicast and
unspecified ones always. The request then goes to the checked address itself (the ``Host``
header and, for https, the TLS server name and certificate check keep the URL's host name), so
a second DNS answer (rebinding) cannot send it elsewhere. Redirects are never followed. A
refused URL is a WARNING naming the tool and why, and an error for the model.

``httpx`` is the HTTP client (it runs on trio through anyio, streams responses and is the
client the pipeline's REST stages use too).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
import trio

from ..config.schema import WebhookTool
from .spec import ToolReply

log = logging.getLogger("agi_voice.webhook")

USER_AGENT = "agi-voice-webhook/1"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
    "169.254.170.2",  # AWS ECS task metadata
    "169.254.169.253",  # AWS DNS
    "169.254.169.123",  # AWS time
    "100.100.100.200",  # Alibaba Cloud
    "fd00:ec2::254",  # AWS IPv6 metadata
    "fd00:ec2::253",
    "fd00:ec2::23",
))
"""Refused even with ``allow_private``: no webhook needs the instance's credentials."""

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class WebhookRefused(Exception):
    """The URL is not allowed (scheme, or where its host resolves)."""


def _embedded(ip: IpAddress) -> IpAddress:
    """The IPv4 address inside an IPv4-mapped, 6to4 or NAT64 IPv6 address, else ``ip``."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def refusal(ip: IpAddress, allow_private: bool) -> str:
    """Why a webhook may not connect to ``ip`` ("" when it may)."""
    inner = _embedded(ip)
    if ip in METADATA or inner in METADATA:
        return "a cloud metadata address"
    if inner.is_multicast or inner.is_unspecified:
        return "not a unicast address"
    if allow_private:
        return ""
    if inner.is_loopback:
        return "a loopback address"
    if inner.is_link_local:
        return "a link-local address"
    if not inner.is_global:
        return "a private or reserved address"
    return ""


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (an address is itself). Raises OSError."""
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def _pinned(tool: WebhookTool, resolver: Resolver) -> tuple[httpx.URL, dict[str, str],
                                                                   dict[str, Any]]:
    """The URL to request (its host replaced by the checked address), the ``Host`` header and
    the request extensions (the TLS server name). Raises WebhookRefused, OSError."""
    url = httpx.URL(tool.url)
    if url.scheme == "http" and not tool.allow_http:
        raise WebhookRefused("http:// without allow_http")
    if url.scheme not in ("http", "https"):
        raise WebhookRefused(f"scheme {url.scheme!r}")
    port = url.port or (443 if url.scheme == "https" else 80)
    host = url.raw_host.decode("ascii")  # IDNA-encoded: what DNS and TLS see
    addresses = await resolver(host, port)
    if not addresses:
        raise OSError(f"{host} did not resolve")
    for text in addresses:
        why = refusal(ipaddress.ip_address(text.split("%", 1)[0]), tool.allow_private)
        if why:
            suffix = "" if why == "a cloud metadata address" or tool.allow_private else \
                " without allow_private"
            raise WebhookRefused(f"{host} resolves to {text}, {why}{suffix}")
    host_header = url.netloc.decode("ascii")
    extensions: dict[str, Any] = {}
    if url.scheme == "https":
        extensions["sni_hostname"] = host
    return url.copy_with(host=addresses[0]), {"Host": host_header}, extensions


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


async def call_webhook(tool: WebhookTool, arguments: dict[str, Any], call: dict[str, Any],
                       env: Mapping[str, str] | None = None,
                       transport: httpx.AsyncBaseTransport | None = None,
                       resolver: Resolver = resolve) -> ToolReply:
    """Call ``tool`` with ``arguments`` and the ``call`` context; never raises for I/O (a
    refused URL, module doc, is an error for the model too). Cancellation ends the request."""
    env = os.environ if env is None else env
    try:
        with trio.fail_after(tool.timeout):
            url, pin_headers, extensions = await _pinned(tool, resolver)
    except WebhookRefused as exc:
        log.warning("webhook %s refused: %s", tool.name, exc)
        return ToolReply.error(f"the {tool.name} service is not allowed")
    except (OSError, UnicodeError, httpx.InvalidURL, trio.TooSlowError) as exc:
        log.warning("webhook %s: cannot resolve its host: %s", tool.name,
                    type(exc).__name__)
        return ToolReply.error(f"the {tool.name} service could not be reached")
    headers = {"User-Agent": USER_AGENT, **dict(tool.headers), **pin_headers}
    for name, var in tool.headers_env:
        value = env.get(var, "")
        if not value:
            log.warning("webhook %s: environment variable %s for header %s is not set",
                        tool.name, var, name)
            continue
        headers[name] = value
    try:
        async with httpx.AsyncClient(timeout=tool.timeout, follow_redirects=False,
                                     transport=transport) as client:
            if tool.method == "GET":
                params = {k: _scalar(v) for k, v in arguments.items()}
                params["call_uuid"] = str(call.get("uuid", ""))
                req = client.build_request("GET", url, params=params, headers=headers,
                                           extensions=extensions)
            else:
                body = {"tool": tool.name, "arguments": arguments, "call": call}
                req = client.build_request("POST", url, json=body, headers=headers,
                                           extensions=extensions)
            data = bytearray()
            with trio.fail_after(tool.timeout * 2):  # a body that never ends
                async with client.stream(req.method, req.url, headers=req.headers,
                                         content=req.content,
                                         extensions=extensions) as resp:
                    # read to the end (an early break leaves httpx's generators unclosed);
                    # only the first max_result_bytes + 1 are kept
                    async for chunk in resp.aiter_bytes():
                        if len(data) <= tool.max_result_bytes:
                            data += chunk[:tool.max_result_bytes + 1 - len(data)]
    except trio.TooSlowError:
        log.warning("webhook %s: the answer did not end within %.1f s", tool.name,
                    tool.timeout * 2)
        return ToolReply.error(f"the {tool.name} service did not answer in time")
    except httpx.TimeoutException:
        log.warning("webhook %s: no answer within %.1f s", tool.name, tool.timeout)
        return ToolReply.error(f"the {tool.name} service did not answer in time")
    except httpx.HTTPError as exc:
        log.warning("webhook %s: %s", tool.name, type(exc).__name__)
        return ToolReply.error(f"the {tool.name} service could not be reached")
    if not 200 <= resp.status_code < 300:
        log.warning("webhook %s: HTTP %d", tool.name, resp.status_code)
        return ToolReply.error(f"the {tool.name} service answered with an error "
                               f"(HTTP {resp.status_code})")
    text = bytes(data[:tool.max_result_bytes]).decode("utf-8", "replace")
    if len(data) > tool.max_result_bytes:
        text += " [truncated]"
    try:
        json.loads(text)
        return ToolReply(text)
    except (ValueError, RecursionError):  # not JSON, or nested too deeply to parse
        return ToolReply(json.dumps({"ok": True, "result": text}))
