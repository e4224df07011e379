"""The mock's HTTP handlers: routing, auth, scripted faults, timing, and the per-request logs.
The wire shell (h11, chunked bodies, memory transport) is :mod:`tests.mocks.http`."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import TypeVar

import trio

from tests.mocks.http import Disconnect, HttpRequest, HttpResponse, MockHttpServer

from . import speech, transcription
from .script import ApiError, AudioScript, RequestLog, SpeechLog, TranscriptionLog

__all__ = ["ROUTES", "MockAudioServer"]

ROUTES = {("POST", speech.PATH): "speech", ("POST", transcription.PATH): "transcription"}

L = TypeVar("L", bound=RequestLog)


class MockAudioServer(MockHttpServer):
    """OpenAI ``POST /v1/audio/speech`` and ``POST /v1/audio/transcriptions`` (reference/
    providers.md 5.2, 5.3). One :class:`SpeechLog` / :class:`TranscriptionLog` per authenticated
    request, in ``speeches`` / ``transcriptions``."""

    def __init__(self, api_key: str = "test-key", *, script: AudioScript | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.script = script if script is not None else AudioScript()
        self.speeches: list[SpeechLog] = []
        self.transcriptions: list[TranscriptionLog] = []
        self.transcripts_used = 0
        """Scripted transcripts consumed (non-silent successful transcriptions)."""
        self._log_added = trio.Event()
        self._audio: dict[tuple[str, str, float], speech.SpeechAudio] = {}

    # -- waiting ------------------------------------------------------------------------------

    async def wait_for_speech(self, n: int = 1) -> SpeechLog:
        """The n-th speech request's log (1-based) once its response ended."""
        return await self._wait(self.speeches, n)

    async def wait_for_transcription(self, n: int = 1) -> TranscriptionLog:
        """The n-th transcription request's log (1-based) once its response ended."""
        return await self._wait(self.transcriptions, n)

    async def _wait(self, logs: list[L], n: int) -> L:
        while len(logs) < n:
            await self._log_added.wait()
        await logs[n - 1].wait_finished()
        return logs[n - 1]

    # -- dispatch -----------------------------------------------------------------------------

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Route, authenticate, log, answer. Errors are OpenAI error bodies, never raised."""
        record = self.records[-1]  # appended by the shell just before this call
        request_id = f"req_{uuid.uuid4().hex}"
        headers = [("x-request-id", request_id)]
        if self.script.reject_status is not None:
            status = self.script.reject_status
            kind = "server_error" if status >= 500 else "invalid_request_error"
            return _error(ApiError(status, f"Scripted rejection ({status}).", type=kind), headers)
        route = (request.method, request.path.rstrip("/"))
        if route not in ROUTES:
            return _error(ApiError(404, f"Invalid URL ({request.method} {request.path})"),
                          headers)
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or not key:
            return _error(ApiError(401, "You didn't provide an API key. You need to provide your "
                                   "API key in an Authorization header using Bearer auth (i.e. "
                                   "Authorization: Bearer YOUR_KEY).", code="invalid_api_key"),
                          headers)
        if key != self.api_key:
            return _error(ApiError(401, f"Incorrect API key provided: {_redact(key)}.",
                                   code="invalid_api_key"), headers)
        now = trio.current_time()
        log: SpeechLog | TranscriptionLog
        if ROUTES[route] == "speech":
            log = SpeechLog(len(self.speeches) + 1, now, request_id, record=record)
            self.speeches.append(log)
            work = self._speech(request, log)
        else:
            log = TranscriptionLog(len(self.transcriptions) + 1, now, request_id, record=record)
            self.transcriptions.append(log)
            work = self._transcription(request, log)
        self._log_added.set()
        self._log_added = trio.Event()
        try:
            response = await work
        except ApiError as exc:
            log.error = exc.error
            response = _error(exc, [])
        log.status = response.status
        response.headers[:0] = headers
        return response

    def _fault(self, endpoint: str, n: int) -> str | None:
        s = self.script
        if endpoint not in s.faults_on:
            return None
        return "fail" if n == s.fail_request else "disconnect" if n == s.disconnect_request else None

    def _fail(self, log: RequestLog) -> ApiError:
        log.fault = "fail"
        return ApiError(500, "The server had an error while processing your request. Sorry "
                        "about that!", type="server_error")

    # -- speech -------------------------------------------------------------------------------

    async def _speech(self, request: HttpRequest, log: SpeechLog) -> HttpResponse:
        try:
            log.body = request.json()
        except ValueError:
            raise ApiError(400, "We could not parse the JSON body of your request. (HINT: This "
                           "likely means you aren't using your HTTP library correctly.)") from None
        req = speech.validate_speech(log.body)
        log.response_format, log.stream_format = req.response_format, req.stream_format
        audio = self._render(req)
        log.rendered, log.audio_ms_total = audio.rendered, audio.total_ms
        chunks, chunk_ms = audio.chunks, audio.chunk_ms
        ctype = audio.content_type
        if req.stream_format == "sse":
            chunks, chunk_ms, ctype = speech.sse_events(req, audio), (*chunk_ms, 0.0), \
                "text/event-stream"
        log.audio_bytes_total = sum(len(c) for c in chunks)
        await trio.sleep_until(log.started_at + self.script.first_byte_delay)
        fault = self._fault("speech", log.n)
        if fault == "fail":
            raise self._fail(log)
        stop = len(chunks) // 2 if fault == "disconnect" else None
        log.fault = fault
        body = self._paced(log, chunks, chunk_ms, self.script.send_rate, stop)
        return HttpResponse(200, [("Content-Type", ctype)], body)

    def _render(self, req: speech.SpeechRequest) -> speech.SpeechAudio:
        key = (req.response_format, req.input if self.script.pcm16 is None else "", req.speed)
        if key not in self._audio:
            if len(self._audio) >= 64:
                self._audio.clear()
            self._audio[key] = speech.render_speech(self.script, req)
        return self._audio[key]

    async def _paced(self, log: SpeechLog, chunks: Sequence[bytes], chunk_ms: Sequence[float],
                     send_rate: float, stop: int | None) -> AsyncIterator[bytes]:
        """Yield ``chunks`` paced on absolute deadlines (``send_rate`` x real time from now);
        raise Disconnect before chunk ``stop``."""
        deadline = trio.current_time()
        for i, chunk in enumerate(chunks):
            if i == stop:
                raise Disconnect
            if i and send_rate > 0:
                deadline += chunk_ms[i - 1] / 1000 / send_rate
                await trio.sleep_until(deadline)
            yield chunk
            if log.first_byte_at is None:
                log.first_byte_at = trio.current_time()
            log.bytes_sent += len(chunk)
            log.chunks_sent += 1

    # -- transcription ------------------------------------------------------------------------

    async def _transcription(self, request: HttpRequest, log: TranscriptionLog) -> HttpResponse:
        try:
            fields, files = request.form()
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "Could not parse multipart form.") from None
        log.fields = dict(fields)
        if "file" in files:
            log.filename, log.content_type, data = files["file"]
            log.file_bytes = len(data)
        req = transcription.validate_transcription(fields, files)
        log.response_format, log.streamed = req.response_format, req.stream
        if req.extension == "wav":
            self._measure(log, files["file"][2])
        await trio.sleep_until(log.started_at + self.script.transcribe_delay)
        fault = self._fault("transcription", log.n)
        if fault == "fail":
            raise self._fail(log)
        log.fault = fault
        text = self._transcript(log, consume=fault is None)
        if req.stream:
            events = transcription.stream_events(req, text, log.audio_seconds)
            gaps = (self.script.stream_delta_delay * 1000,) * len(events)
            stop = len(events) // 2 if fault else None
            body = self._paced_bytes(log, events, gaps, stop)
            return HttpResponse(200, [("Content-Type", "text/event-stream; charset=utf-8")], body)
        ctype, data = transcription.render_response(req, text, log.audio_seconds)
        if fault:
            half = data[: len(data) // 2]
            return HttpResponse(200, [("Content-Type", ctype)],
                                self._paced_bytes(log, (half, b""), (0.0, 0.0), 1))
        log.first_byte_at, log.bytes_sent = trio.current_time(), len(data)
        return HttpResponse(200, [("Content-Type", ctype)], data)

    async def _paced_bytes(self, log: TranscriptionLog, chunks: Sequence[bytes],
                           gaps_ms: Sequence[float], stop: int | None) -> AsyncIterator[bytes]:
        deadline = trio.current_time()
        for i, chunk in enumerate(chunks):
            if i == stop:
                raise Disconnect
            if i:
                deadline += gaps_ms[i - 1] / 1000
                await trio.sleep_until(deadline)
            yield chunk
            if log.first_byte_at is None:
                log.first_byte_at = trio.current_time()
            log.bytes_sent += len(chunk)

    def _measure(self, log: TranscriptionLog, data: bytes) -> None:
        try:
            info = transcription.parse_wav(data)
        except transcription.WavError as exc:
            raise ApiError(400, f"Audio file might be corrupted or unsupported ({exc}).",
                           param="file", code="invalid_value") from None
        log.audio_seconds, log.rate, log.channels = info.seconds, info.rate, info.channels
        log.encoding, log.rms = info.encoding, info.rms
        log.silent = info.rms < self.script.vad_rms
        transcription.check_duration(info.seconds)

    def _transcript(self, log: TranscriptionLog, *, consume: bool) -> str:
        """The next scripted transcript (``""`` for silence); a faulted request peeks only."""
        if log.silent and self.script.silence_is_empty:
            text = ""
        else:
            i = self.transcripts_used
            ts = self.script.transcripts
            text = ts[i] if i < len(ts) else f"utterance {i + 1}"
            if consume:
                self.transcripts_used += 1
        if consume:
            log.text = text
        return text


def _error(exc: ApiError, headers: list[tuple[str, str]]) -> HttpResponse:
    body = json.dumps(exc.body()).encode()
    return HttpResponse(exc.status, [*headers, ("Content-Type", "application/json")], body)


def _redact(key: str) -> str:
    return key[:3] + "*" * max(0, len(key) - 7) + key[-4:] if len(key) > 8 else "*" * len(key)

