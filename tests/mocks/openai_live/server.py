"""The mock's server shell: the WebSocket upgrade (path, no query, Bearer key; HTTP 404/400/401
or a scripted status with an OpenAI JSON error body), one :class:`SessionLog` per connection,
and the reply audio rendered once per format and shared by all sessions."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import trio
import trio_websocket

from tests.mocks.common import MockWsServer
from tests.mocks.deepgram_agent.audio import Clip, render_clip
from tests.mocks.openai_live.script import LiveScript, SessionLog
from tests.mocks.openai_live.session import _Session
from tests.mocks.openai_live.wire import HEADERS_OF_INTEREST, PATH


class MockLiveServer(MockWsServer):
    """Serves the mock over TCP or over given streams; one :class:`SessionLog` per session."""

    def __init__(self, api_key: str = "test-key", *, script: LiveScript | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.script = script if script is not None else LiveScript()
        self.sessions: list[SessionLog] = []
        self.rejected: list[SessionLog] = []
        self._clips: dict[tuple[str, int], Clip] = {}

    def clip(self, encoding: str, rate: int) -> Clip:
        key = (encoding, rate)
        if key not in self._clips:
            s = self.script
            self._clips[key] = render_clip(encoding=encoding, rate=rate, reply_ms=s.reply_ms,
                                           chunk_ms=s.chunk_ms, tone_hz=s.tone_hz,
                                           tone_amplitude=s.tone_amplitude)
        return self._clips[key]

    async def handle_request(self, request: trio_websocket.WebSocketRequest) -> None:
        """Check the upgrade, then run the session until either side closes."""
        raw = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
        url = urlsplit(request.path)
        log = SessionLog(path=url.path, query=url.query)
        log.headers = {k: raw[k] for k in HEADERS_OF_INTEREST if k in raw}
        if "authorization" in log.headers:
            log.headers["authorization"] = log.headers["authorization"].split(" ")[0] + " ***"
        rejection = self._check(url.path, url.query, raw)
        if rejection is not None:
            status, body = rejection
            log.rejected_status = status
            self.rejected.append(log)
            await request.reject(status, extra_headers=[(b"Content-Type", b"application/json")],
                                 body=json.dumps(body).encode())
            log._close("rejected")
            return
        ws = await request.accept()
        await self.run_accepted(
            ws, log, lambda nursery: _Session(self, ws, log, nursery, _transport(request)).run())

    def _check(self, path: str, query: str, headers: dict[str, str]
               ) -> tuple[int, dict[str, Any]] | None:
        def err(message: str, code: str | None) -> dict[str, Any]:
            return {"error": {"message": message, "type": "invalid_request_error",
                              "param": None, "code": code}}

        if path.rstrip("/") != PATH:
            return 404, err(f"Invalid URL (GET {path})", None)
        if query:
            return 400, err("The Live API takes no query parameters (the model goes in "
                            "session.start).", "unknown_parameter")
        status = self.script.reject_with_status
        if status is not None:
            return status, err(f"{HTTPStatus(status).phrase} (scripted).", None)
        auth = headers.get("authorization", "")
        if auth != f"Bearer {self.api_key}":
            shown = auth.removeprefix("Bearer ")[-4:]
            return 401, err(f"Incorrect API key provided: ...{shown}.", "invalid_api_key")
        return None


def _transport(request: trio_websocket.WebSocketRequest) -> trio.abc.Stream:
    # trio-websocket has no public way to drop the TCP connection without a close frame, which is
    # exactly the fault disconnect_mid_turn simulates; 0.12.x keeps the stream here.
    return request._connection._stream  # type: ignore[attr-defined, no-any-return]
