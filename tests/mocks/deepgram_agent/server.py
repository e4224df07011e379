"""The mock's network shell: the WebSocket upgrade (path, auth, scripted rejection) and serving."""

from __future__ import annotations

import json
import uuid
from http import HTTPStatus
from urllib.parse import urlsplit

import trio
import trio_websocket

from tests.mocks.common import MockWsServer

from .audio import Clip, render_clip
from .script import AgentScript, SessionLog
from .session import Session

__all__ = ["PATH", "MockAgentServer"]

PATH = "/v1/agent/converse"
HEADERS_OF_INTEREST = ("authorization", "sec-websocket-protocol", "user-agent", "x-dg-tag")


class MockAgentServer(MockWsServer):
    """Serves the mock over TCP or over given streams; one :class:`SessionLog` per session.
    The reply audio is rendered once per output format and shared by all sessions."""

    def __init__(self, api_key: str = "test-key", *, script: AgentScript | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.script = script if script is not None else AgentScript()
        self.sessions: list[SessionLog] = []
        self.rejected: list[SessionLog] = []
        self._clips: dict[tuple[str, int], Clip] = {}

    def clip(self, encoding: str, rate: int) -> Clip:
        key = (encoding, rate)
        if key not in self._clips:
            s = self.script
            self._clips[key] = render_clip(
                encoding=encoding,
                rate=rate,
                reply_ms=s.reply_ms,
                chunk_ms=s.chunk_ms,
                tone_hz=s.tone_hz,
                tone_amplitude=s.tone_amplitude,
                pcm16=s.reply_pcm16,
                pcm16_rate=s.reply_pcm16_rate,
            )
        return self._clips[key]

    async def handle_request(self, request: trio_websocket.WebSocketRequest) -> None:
        """Check the upgrade, then run the session until either side closes. Refusals answer
        HTTP 404 (path), the scripted status, or 401 (auth) with a Deepgram JSON error body."""
        raw = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
        log = SessionLog(path=request.path, request_id=str(uuid.uuid4()))
        log.headers = {k: raw[k] for k in HEADERS_OF_INTEREST if k in raw}
        if "authorization" in log.headers:
            log.headers["authorization"] = log.headers["authorization"].split(" ")[0] + " ***"
        if "sec-websocket-protocol" in log.headers:
            log.headers["sec-websocket-protocol"] = "***"
        dg_id = [(b"dg-request-id", log.request_id.encode())]
        rejection = self._check(request, raw, log)
        if rejection is not None:
            status, code, message = rejection
            log.rejected_status = status
            self.rejected.append(log)
            body = {"err_code": code, "err_msg": message, "request_id": log.request_id}
            await request.reject(
                status,
                extra_headers=[(b"Content-Type", b"application/json"), *dg_id],
                body=json.dumps(body).encode(),
            )
            log._close("rejected")
            return
        subprotocol = "token" if log.auth_scheme == "subprotocol" else None
        ws = await request.accept(subprotocol=subprotocol, extra_headers=dg_id)
        await self.run_accepted(
            ws, log, lambda nursery: Session(self, ws, log, nursery, _transport(request)).run())

    def _check(
        self, request: trio_websocket.WebSocketRequest, headers: dict[str, str], log: SessionLog
    ) -> tuple[int, str, str] | None:
        """(status, err_code, err_msg) of a refused upgrade, or None; sets ``log.auth_scheme``."""
        path = urlsplit(request.path).path
        if path.rstrip("/") != PATH:
            return 404, "NOT_FOUND", f"Not found: {path}"
        status = self.script.reject_with_status
        if status is not None:
            phrase = HTTPStatus(status).phrase
            return status, phrase.upper().replace(" ", "_"), f"{phrase} (scripted)."
        scheme, _, key = headers.get("authorization", "").partition(" ")
        if scheme in ("Token", "Bearer") and key == self.api_key:
            log.auth_scheme = scheme
            return None
        if list(request.proposed_subprotocols) == ["token", self.api_key]:  # browser style
            log.auth_scheme = "subprotocol"
            return None
        return 401, "INVALID_AUTH", "Invalid credentials."


def _transport(request: trio_websocket.WebSocketRequest) -> trio.abc.Stream:
    # trio-websocket has no public way to drop the TCP connection without a close frame, which is
    # exactly the fault disconnect_mid_turn simulates; 0.12.x keeps the stream here.
    return request._connection._stream  # type: ignore[attr-defined, no-any-return]
