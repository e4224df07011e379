"""The listen mock's network shell: the upgrade (path, auth, query, scripted rejection), and the
Deepgram upgrade helpers the speak mock shares (:func:`authenticate`, :func:`refuse`, ...)."""

from __future__ import annotations

import json
import uuid
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import trio
import trio_websocket

from tests.mocks.common import MockWsServer

from .script import ListenLog, ListenScript
from .session import ListenSession
from .wire import QueryError, parse_query

__all__ = [
    "PATH",
    "MockListenServer",
    "authenticate",
    "redacted_headers",
    "refuse",
    "request_headers",
    "scripted_refusal",
    "transport_of",
]

PATH = "/v1/listen"
HEADERS_OF_INTEREST = ("authorization", "sec-websocket-protocol", "user-agent", "x-dg-tag")


def request_headers(request: trio_websocket.WebSocketRequest) -> dict[str, str]:
    """The upgrade's headers, lower-case names."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}


def redacted_headers(headers: dict[str, str]) -> dict[str, str]:
    """The headers worth logging, the credential redacted (``Token ***``)."""
    out = {k: headers[k] for k in HEADERS_OF_INTEREST if k in headers}
    if "authorization" in out:
        out["authorization"] = out["authorization"].split(" ")[0] + " ***"
    if "sec-websocket-protocol" in out:
        out["sec-websocket-protocol"] = "***"
    return out


def authenticate(
    request: trio_websocket.WebSocketRequest, headers: dict[str, str], api_key: str
) -> str | None:
    """``Token`` | ``Bearer`` (``Authorization: <scheme> <key>``) or ``subprotocol``
    (``Sec-WebSocket-Protocol: token, <key>``, the browser style); None if refused."""
    scheme, _, key = headers.get("authorization", "").partition(" ")
    if scheme in ("Token", "Bearer") and key == api_key:
        return scheme
    if list(request.proposed_subprotocols) == ["token", api_key]:
        return "subprotocol"
    return None


def scripted_refusal(status: int) -> tuple[int, str, str]:
    """(status, err_code, err_msg) of a scripted refusal (503 -> SERVICE_UNAVAILABLE)."""
    phrase = HTTPStatus(status).phrase
    return status, phrase.upper().replace(" ", "_"), f"{phrase} (scripted)."


async def refuse(
    request: trio_websocket.WebSocketRequest, request_id: str, status: int, code: str, message: str
) -> None:
    """Answer the upgrade with an HTTP error as Deepgram does: a JSON body
    ``{"err_code", "err_msg", "request_id"}`` and the ``dg-request-id`` / ``dg-error`` headers."""
    body = {"err_code": code, "err_msg": message, "request_id": request_id}
    await request.reject(
        status,
        extra_headers=[
            (b"Content-Type", b"application/json"),
            (b"dg-request-id", request_id.encode()),
            (b"dg-error", message.encode("utf-8")),
        ],
        body=json.dumps(body, separators=(",", ":")).encode(),
    )


def transport_of(request: trio_websocket.WebSocketRequest) -> trio.abc.Stream:
    """The connection's byte stream, to drop it without a close frame (a scripted fault)."""
    # trio-websocket has no public way to drop the TCP connection without a close frame;
    # 0.12.x keeps the stream here.
    return request._connection._stream  # type: ignore[attr-defined, no-any-return]


class MockListenServer(MockWsServer):
    """Serves the mock over TCP or given streams; one :class:`ListenLog` per upgrade
    (``sessions`` accepted, ``rejected`` refused)."""

    def __init__(self, api_key: str = "test-key", *, script: ListenScript | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.script = script if script is not None else ListenScript()
        self.sessions: list[ListenLog] = []
        self.rejected: list[ListenLog] = []

    async def handle_request(self, request: trio_websocket.WebSocketRequest) -> None:
        """Check the upgrade, then run the session until either side closes. Refusals: 404
        (path), the scripted status, 401 INVALID_AUTH, 400 INVALID_QUERY_PARAMETER."""
        headers = request_headers(request)
        target = urlsplit(request.path)
        log = ListenLog(path=target.path, request_id=str(uuid.uuid4()))
        log.headers = redacted_headers(headers)
        log.query = parse_qs(target.query, keep_blank_values=True)
        refusal: tuple[int, str, str] | None = None
        if target.path.rstrip("/") != PATH:
            refusal = 404, "NOT_FOUND", f"Not found: {target.path}"
        elif self.script.reject_with_status is not None:
            refusal = scripted_refusal(self.script.reject_with_status)
        elif (scheme := authenticate(request, headers, self.api_key)) is None:
            refusal = 401, "INVALID_AUTH", "Invalid credentials."
        else:
            log.auth_scheme = scheme
            try:
                log.params = parse_query(log.query)
            except QueryError as exc:
                refusal = 400, "INVALID_QUERY_PARAMETER", str(exc)
        if refusal is not None:
            status, code, message = refusal
            log.rejected_status, log.rejected_reason = status, message
            self.rejected.append(log)
            await refuse(request, log.request_id, status, code, message)
            log._close("rejected")
            return
        subprotocol = "token" if log.auth_scheme == "subprotocol" else None
        ws = await request.accept(
            subprotocol=subprotocol, extra_headers=[(b"dg-request-id", log.request_id.encode())]
        )
        await self.run_accepted(
            ws,
            log,
            lambda nursery: ListenSession(
                self.script, ws, log, nursery, transport_of(request)
            ).run(),
        )
