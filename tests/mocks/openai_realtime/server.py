"""The mock's server shell: the WebSocket upgrade (path, credentials, model; HTTP 401/404/400 with
an OpenAI JSON error body), one :class:`SessionLog` per connection, and the reply audio rendered
once per output format and shared by all sessions."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trio
import trio_websocket

from tests.mocks.common import MockWsServer
from tests.mocks.openai_realtime.script import RealtimeScript, SessionLog
from tests.mocks.openai_realtime.session import _Session
from tests.mocks.openai_realtime.wire import HEADERS_OF_INTEREST, Clip, render_clip


class MockRealtimeServer(MockWsServer):
    """Serves the mock over TCP or over given streams; one :class:`SessionLog` per session."""

    def __init__(self, api_key: str = "test-key", *, script: RealtimeScript | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.script = script if script is not None else RealtimeScript()
        self.sessions: list[SessionLog] = []
        self.rejected: list[SessionLog] = []
        self._clips: dict[str, Clip] = {}

    def clip(self, fmt: dict[str, Any]) -> Clip:
        kind = fmt.get("type", "audio/pcm")
        if kind not in self._clips:
            self._clips[kind] = render_clip(self.script, kind)
        return self._clips[kind]

    async def handle_request(self, request: trio_websocket.WebSocketRequest) -> None:
        """Check the upgrade (path, auth, model), then run the session until either side closes.
        Rejections answer HTTP 401/404/400 with an OpenAI JSON error body."""
        raw = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
        url = urlsplit(request.path)
        log = SessionLog(path=request.path)
        log.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        log.model = log.query.get("model")
        log.headers = {k: raw[k] for k in HEADERS_OF_INTEREST if k in raw}
        for secret in ("authorization", "api-key"):
            if secret in log.headers:
                log.headers[secret] = log.headers[secret].split(" ")[0] + " ***"
        log.beta_header = raw.get("openai-beta")
        rejection = self._check(url.path, log.query, raw)
        if rejection is not None:
            status, body = rejection
            log.rejected_status = status
            self.rejected.append(log)
            await request.reject(
                status,
                extra_headers=[(b"Content-Type", b"application/json")],
                body=json.dumps(body).encode(),
            )
            log._close("rejected")
            return
        ws = await request.accept()
        await self.run_accepted(
            ws, log, lambda nursery: _Session(self, ws, log, nursery, _transport(request)).run())

    def _check(
        self, path: str, query: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]] | None:
        def err(message: str, code: str | None) -> dict[str, Any]:
            return {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": code,
                }
            }

        if not path.rstrip("/").endswith("/v1/realtime"):
            return 404, err(f"Invalid URL (GET {path})", None)
        auth = headers.get("authorization", "")
        if not (auth == f"Bearer {self.api_key}" or headers.get("api-key") == self.api_key):
            shown = (auth.removeprefix("Bearer ") or headers.get("api-key", ""))[-4:]
            return 401, err(f"Incorrect API key provided: ...{shown}.", "invalid_api_key")
        if not (query.get("model") or query.get("call_id") or query.get("intent")):
            return 400, err("Missing required parameter: 'model'.", "missing_required_parameter")
        return None


def _transport(request: trio_websocket.WebSocketRequest) -> trio.abc.Stream:
    # trio-websocket has no public way to drop the TCP connection without a close frame, which is
    # exactly the fault disconnect_mid_response simulates; 0.12.x keeps the stream here.
    return request._connection._stream  # type: ignore[attr-defined, no-any-return]
