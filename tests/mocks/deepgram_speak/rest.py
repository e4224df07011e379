"""``POST /v1/speak``: Deepgram's REST TTS (reference/providers.md 4.1, openapi ``/v1/speak``)
on the shared HTTP shell, with the WebSocket mock's rendering and script."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

import trio

from tests.mocks.http import Disconnect, HttpRequest, HttpResponse, MockHttpServer, json_response

from .audio import FormatError, Renderer, SpeakParams, parse_params, wav_header
from .script import RestSpeech, SpeakScript

__all__ = ["PATH", "MockSpeakRestServer"]

PATH = "/v1/speak"


class MockSpeakRestServer(MockHttpServer):
    """``POST /v1/speak?model=&encoding=&sample_rate=&container=`` with ``{"text": ...}``:
    after ``first_byte_delay`` the headers (``dg-request-id``, ``dg-model-name``,
    ``dg-model-uuid``, ``dg-char-count``, Content-Type) and the audio, chunked, one
    ``chunk_ms`` chunk per write paced at ``send_rate`` (a WAV header in front of the first with
    ``container=wav``, openapi's default). Errors are Deepgram's legacy JSON body
    ``{"err_code", "err_msg", "request_id"}``: 401 INVALID_AUTH, 400 INVALID_QUERY_PARAMETER /
    UNSUPPORTED_IN_MOCK (mp3, opus, flac, aac, or no ``encoding``) / INVALID_INPUT (no text),
    404 / 405, the scripted status. One :class:`RestSpeech` per request in ``speeches``."""

    def __init__(self, api_key: str = "test-key", *, script: SpeakScript | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.script = script if script is not None else SpeakScript()
        self.renderer = Renderer(self.script)
        self.speeches: list[RestSpeech] = []

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one request (see the class docstring); a refusal is recorded in its
        RestSpeech (``status``, ``error``)."""
        speech = RestSpeech(len(self.speeches) + 1, str(uuid.uuid4()), request.query, None)
        self.speeches.append(speech)
        refusal = self._check(request, speech)
        if refusal is not None:
            return self._error(speech, *refusal)
        assert speech.params is not None and speech.text is not None
        clip = self.renderer.clip(speech.params, speech.text)
        speech.audio_ms_total = clip.total_ms
        await trio.sleep(self.script.first_byte_delay)
        p = speech.params
        headers = [
            ("Content-Type", p.content_type),
            ("dg-request-id", speech.request_id),
            ("dg-model-name", p.model),
            ("dg-model-uuid", self.script.model_uuid),
            ("dg-char-count", str(len(speech.text))),
        ]
        return HttpResponse(200, headers, self._body(speech, p, clip.frames, clip.frame_ms))

    def _check(self, request: HttpRequest, speech: RestSpeech) -> tuple[int, str, str] | None:
        """(status, err_code, err_msg) of a refused request, or None (then ``speech.params``
        and ``speech.text`` are set)."""
        script = self.script
        if request.path.rstrip("/") != PATH:
            return 404, "NOT_FOUND", f"Not found: {request.path}"
        if request.method != "POST":
            return 405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed."
        if script.reject_with_status is not None:
            phrase = HTTPStatus(script.reject_with_status).phrase
            return (
                script.reject_with_status,
                phrase.upper().replace(" ", "_"),
                f"{phrase} (scripted).",
            )
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme not in ("Token", "Bearer") or key != self.api_key:
            return 401, "INVALID_AUTH", "Invalid credentials."
        if script.fail_request == speech.n:
            return script.fail_status, "INTERNAL_SERVER_ERROR", "Internal error (scripted)."
        try:
            speech.params = parse_params(request.query, rest=True)
        except FormatError as exc:
            return 400, exc.code, str(exc)
        try:
            body: Any = request.json()
        except ValueError:
            body = None
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip():
            return 400, "INVALID_INPUT", "The request body must be JSON with a non-empty 'text'."
        speech.text = text
        return None

    def _error(self, speech: RestSpeech, status: int, code: str, message: str) -> HttpResponse:
        speech.status = status
        speech.error = {"err_code": code, "err_msg": message, "request_id": speech.request_id}
        return json_response(
            status, speech.error, [("dg-request-id", speech.request_id), ("dg-error", message)]
        )

    async def _body(
        self,
        speech: RestSpeech,
        p: SpeakParams,
        frames: tuple[bytes, ...],
        frame_ms: tuple[float, ...],
    ) -> AsyncIterator[bytes]:
        """The audio chunks, paced; raises Disconnect halfway for ``disconnect_request``."""
        script = self.script
        step = script.chunk_ms / 1000 / script.send_rate if script.send_rate > 0 else 0.0
        header = b""
        if p.container == "wav":
            header = wav_header(p.encoding, p.sample_rate, sum(map(len, frames)))
        disconnect = script.disconnect_request == speech.n
        t0 = trio.current_time()
        try:
            for k, (frame, ms) in enumerate(zip(frames, frame_ms, strict=True)):
                if k and step:
                    await trio.sleep_until(t0 + k * step)
                if disconnect and k == len(frames) // 2:
                    speech.disconnected = True
                    raise Disconnect
                chunk = header + frame if k == 0 else frame
                if speech.first_byte_at is None:
                    speech.first_byte_at = trio.current_time()
                yield chunk
                speech.bytes_sent += len(chunk)
                speech.audio_ms_sent += ms
        finally:
            speech.finished_at = trio.current_time()
