"""Who may see the dashboard: the login, its session cookie, and the headers on every answer.

- **When a login is required.** Bound to a loopback address the dashboard needs no login,
  unless ``$AGI_VOICE_DASHBOARD_PASSWORD`` is set (then it asks for it there too). Bound to any
  other address it always asks, and refuses to start without that password
  (:func:`check_listen`): call transcripts and recordings are personal data.
- **The session.** The login form posts the user and password; both are compared in constant
  time (:func:`hmac.compare_digest`). A right pair gets a session cookie: the user and an expiry
  signed with HMAC-SHA256 under a secret from ``$AGI_VOICE_DASHBOARD_SECRET`` (sessions then
  survive a restart) or random per start; ``HttpOnly`` (no script reads it) and
  ``SameSite=Strict`` (no other site's page can send it, which is the CSRF defence for the
  logout form and every GET).
- **Without a login** (loopback, no password) only a ``Host`` header naming a loopback address
  is served: a DNS-rebinding page cannot read calls through the browser of someone on the
  host.
- **Headers** on every answer: a Content-Security-Policy without inline script or style
  (``script-src 'self'``), ``X-Frame-Options: DENY``, ``nosniff``, ``no-referrer``.

Nothing here logs a password, a secret or a cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PASSWORD_ENV = "AGI_VOICE_DASHBOARD_PASSWORD"
SECRET_ENV = "AGI_VOICE_DASHBOARD_SECRET"
COOKIE = "agi_voice_session"
SESSION_SECONDS = 12 * 3600
"""A login lasts this long."""
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "media-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


class DashboardError(Exception):
    """The dashboard cannot start as configured (one line for the operator)."""


def is_loopback(host: str) -> bool:
    """True for a loopback address or name (``127.0.0.1``, ``::1``, ``localhost``)."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(host: str, port: int, password: str) -> bool:
    """Whether a login is required on ``host``; raises :class:`DashboardError` for a
    non-loopback address without a password."""
    if is_loopback(host):
        return bool(password)
    if not password:
        raise DashboardError(
            f"dashboard.listen is {host}:{port}, not a loopback address: a login is required "
            f"there; set {PASSWORD_ENV} (and {SECRET_ENV} to keep sessions across restarts), "
            f"or listen on 127.0.0.1")
    return True


@dataclass(frozen=True)
class Auth:
    """The login policy of one dashboard process."""

    user: str
    password: str = field(repr=False)
    required: bool
    secret: bytes = field(repr=False)

    @classmethod
    def from_env(cls, user: str, host: str, port: int,
                 env: Mapping[str, str] | None = None) -> Auth:
        """From ``$AGI_VOICE_DASHBOARD_PASSWORD`` and ``$AGI_VOICE_DASHBOARD_SECRET``; raises
        :class:`DashboardError` as :func:`check_listen` does."""
        env = os.environ if env is None else env
        password = env.get(PASSWORD_ENV, "")
        required = check_listen(host, port, password)
        given = env.get(SECRET_ENV, "")
        secret = given.encode() if given else secrets.token_bytes(32)
        return cls(user, password, required, secret)

    def check(self, user: str, password: str) -> bool:
        """Constant-time comparison of both (no early exit on the user)."""
        ok_user = hmac.compare_digest(user.encode(), self.user.encode())
        ok_password = hmac.compare_digest(password.encode(), self.password.encode())
        return bool(self.password) and ok_user and ok_password

    def _mac(self, body: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self.secret, body, hashlib.sha256).digest()
                                        ).decode().rstrip("=")

    def issue(self, now: float | None = None) -> str:
        """A session cookie value for the configured user."""
        now = time.time() if now is None else now
        body = base64.urlsafe_b64encode(json.dumps(
            {"u": self.user, "exp": int(now + SESSION_SECONDS)}).encode()).decode().rstrip("=")
        return f"{body}.{self._mac(body.encode())}"

    def verify(self, value: str, now: float | None = None) -> bool:
        """True for a cookie this process (or one with the same secret) issued, unexpired."""
        body, sep, mac = value.partition(".")
        if not sep or not hmac.compare_digest(mac, self._mac(body.encode())):
            return False
        try:
            data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            return False
        now = time.time() if now is None else now
        return (isinstance(data, dict) and data.get("u") == self.user
                and isinstance(data.get("exp"), int) and data["exp"] > now)

    def cookie_header(self, value: str, max_age: int = SESSION_SECONDS) -> str:
        return (f"{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict")


class LoginThrottle:
    """Failed logins per client address: after :attr:`limit` failures within :attr:`window`
    seconds the address may not try again until the window has passed since its first counted
    failure (the login answers 429). A success clears the address. At most :attr:`max_addresses`
    are remembered (the oldest forgotten first), so a flood of addresses costs bounded
    memory."""

    def __init__(self, limit: int = 5, window: float = 900.0, max_addresses: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.max_addresses = limit, window, max_addresses
        self.clock = clock
        self._failures: dict[str, list[float]] = {}

    def _recent(self, address: str) -> list[float]:
        now = self.clock()
        times = [t for t in self._failures.get(address, ()) if now - t < self.window]
        if times:
            self._failures[address] = times
        else:
            self._failures.pop(address, None)
        return times

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again; 0 when it may now."""
        times = self._recent(address)
        if len(times) < self.limit:
            return 0.0
        return max(0.0, times[0] + self.window - self.clock())

    def failed(self, address: str) -> None:
        times = self._recent(address)
        times.append(self.clock())
        self._failures.pop(address, None)
        self._failures[address] = times[-self.limit:]  # most recently used last
        while len(self._failures) > self.max_addresses:
            del self._failures[next(iter(self._failures))]

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


def _cookies(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                k, _, v = part.strip().partition("=")
                out.setdefault(k, v)
    return out


def _host(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"host":
            host = value.decode("latin-1")
            return host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return ""


OPEN_PATHS = ("/login", "/static/")


class Guard:
    """ASGI middleware: the security headers on every answer, and the login (or the loopback
    ``Host`` check) before anything but the login page and the static files."""

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *SECURITY_HEADERS]
            await send(message)

        path: str = scope.get("path", "/")
        if not self.auth.required:
            if not is_loopback(_host(scope)):
                await _plain(send_with_headers, 421, b"this dashboard answers only to a "
                             b"loopback Host (set a password to serve it elsewhere)\n")
                return
        elif not path.startswith(OPEN_PATHS) and not self.auth.verify(
                _cookies(scope).get(COOKIE, "")):
            if path.startswith(("/api/", "/events/", "/recordings/")):
                await _plain(send_with_headers, 401, b"login required\n")
                return
            query = scope.get("query_string", b"").decode("latin-1")
            target = path + (f"?{query}" if query else "")
            location = "/login?next=" + quote(target, safe="")
            await send_with_headers({"type": "http.response.start", "status": 303,
                                     "headers": [(b"location", location.encode()),
                                                 (b"content-length", b"0")]})
            await send_with_headers({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send_with_headers)


async def _plain(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def safe_next(target: str) -> str:
    """Where to go after the login: a local path only (no ``//host`` or scheme: no open
    redirect)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
