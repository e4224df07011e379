"""The listen mock's network shell: the upgrade (path, auth, query, scripted rejection)."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs, urlsplit

import trio_websocket

from tests.mocks.common import MockWsServer
from tests.mocks.deepgram_ws import (
    authenticate,
    redacted_headers,
    refuse,
    request_headers,
    scripted_refusal,
    transport_of,
)

from .script import ListenLog, ListenScript
from .session import ListenSession
from .wire import QueryError, parse_query

__all__ = ["PATH", "MockListenServer"]

PATH = "/v1/listen"
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
